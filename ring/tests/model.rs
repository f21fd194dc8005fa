//! Property tests: random sizes and interleavings of the ring's operations against a model.
//!
//! The model is a `VecDeque` of published messages plus a byte-exact account of the indices
//! as `docs/ABI.md` specifies them (records of `8 + round_up(len, 8)` bytes, a padding record
//! when a record would cross the end), so `Full` must be returned exactly when the
//! specification says the message does not fit.

mod common;

use std::collections::VecDeque;

use common::{linked_pair, small_geometry};
use proptest::prelude::*;
use sramlink_ring::{MemoryType, Region, Role, SendError, SharedMemory, VolatileMemory};

#[derive(Debug, Clone)]
enum Op {
    /// `send` of a message of this length.
    Send(usize),
    /// reserve/write/commit each length (until Full), then one publish.
    Batch(Vec<usize>),
    /// reserve and drop the slot without commit.
    ReserveDrop(usize),
    /// `recv`.
    Recv,
    /// read/release up to this many messages, then one publish.
    ReadBatch(usize),
}

#[derive(Debug)]
enum Item {
    Message(Vec<u8>, u32),
    Padding(u32),
}

/// The specification of one ring, byte by byte.
struct Model {
    size: u32,
    max: usize,
    queue: VecDeque<Item>,
    unpublished: Vec<Item>,
    head: u32,
    consumer_local: u32,
    consumer_shared: u32,
}

impl Model {
    fn new(size: usize) -> Self {
        Model {
            size: size as u32,
            max: size / 2 - 8,
            queue: VecDeque::new(),
            unpublished: Vec::new(),
            head: 0,
            consumer_local: 0,
            consumer_shared: 0,
        }
    }

    /// Reserves like the spec says; `None` when full. Returns whether padding was needed.
    fn reserve(&mut self, len: usize) -> Option<()> {
        let record = 8 + len.next_multiple_of(8) as u32;
        let offset = self.head % self.size;
        let contiguous = self.size - offset;
        let needed = if record <= contiguous {
            record
        } else {
            contiguous + record
        };
        if self.head.wrapping_sub(self.consumer_shared) + needed > self.size {
            return None;
        }
        if record > contiguous {
            self.head = self.head.wrapping_add(contiguous);
            self.unpublished.push(Item::Padding(self.head));
        }
        Some(())
    }

    fn commit(&mut self, message: Vec<u8>) {
        self.head = self
            .head
            .wrapping_add(8 + message.len().next_multiple_of(8) as u32);
        self.unpublished.push(Item::Message(message, self.head));
    }

    fn publish(&mut self) {
        self.queue.extend(self.unpublished.drain(..));
    }

    fn take(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.queue.pop_front()? {
                Item::Padding(end) => self.consumer_local = end,
                Item::Message(message, end) => {
                    self.consumer_local = end;
                    return Some(message);
                }
            }
        }
    }

    fn consumer_publish(&mut self) {
        self.consumer_shared = self.consumer_local;
    }
}

fn payload(counter: &mut u32, len: usize) -> Vec<u8> {
    *counter += 1;
    let seed = counter.to_le_bytes();
    (0..len)
        .map(|index| seed[index % 4] ^ (index as u8).wrapping_mul(13))
        .collect()
}

fn op_strategy(max_len: usize) -> impl Strategy<Value = Op> {
    let len = 0..=max_len + 9;
    prop_oneof![
        3 => len.clone().prop_map(Op::Send),
        2 => proptest::collection::vec(len.clone(), 1..8).prop_map(Op::Batch),
        1 => len.prop_map(Op::ReserveDrop),
        3 => Just(Op::Recv),
        2 => (1usize..8).prop_map(Op::ReadBatch),
    ]
}

/// The same operations on each memory backend: atomic words, and a raw buffer mapped as
/// Device (volatile words) and as Normal memory (plain payload copies).
fn run(ring_bytes: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let (guest, peer) = linked_pair(ring_bytes);
    run_on(&guest, &peer, ring_bytes, ops)?;
    for memory_type in [MemoryType::Device, MemoryType::Normal] {
        let geometry = small_geometry(ring_bytes);
        let mut backing = vec![0u64; geometry.region_bytes / 8];
        // SAFETY: `backing` outlives both regions (dropped at the end of this iteration, after
        // them) and is accessed only through `memory`; a heap buffer is Normal memory.
        let memory = unsafe {
            VolatileMemory::with_type(
                backing.as_mut_ptr().cast(),
                geometry.region_bytes,
                memory_type,
            )
        }
        .unwrap();
        let guest = Region::create(memory.clone(), geometry).unwrap();
        let peer = Region::attach(memory).unwrap();
        run_on(&guest, &peer, ring_bytes, ops)?;
    }
    Ok(())
}

fn run_on<M: SharedMemory + Clone>(
    guest: &Region<M>,
    peer: &Region<M>,
    ring_bytes: usize,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    let mut model = Model::new(ring_bytes);
    let mut counter = 0;
    let mut buf = vec![0u8; ring_bytes];
    for op in ops {
        match op {
            Op::Send(len) => {
                let message = payload(&mut counter, *len);
                let result = producer.send(&message);
                if *len > model.max {
                    prop_assert_eq!(
                        result,
                        Err(SendError::TooLarge {
                            len: *len,
                            max: model.max
                        })
                    );
                } else if model.reserve(*len).is_some() {
                    prop_assert_eq!(result, Ok(()));
                    model.commit(message);
                    model.publish();
                } else {
                    prop_assert_eq!(result, Err(SendError::Full));
                }
            }
            Op::Batch(lens) => {
                for len in lens {
                    if *len > model.max {
                        continue;
                    }
                    let message = payload(&mut counter, *len);
                    match producer.reserve(*len) {
                        Ok(mut slot) => {
                            prop_assert!(model.reserve(*len).is_some());
                            // In two pieces, to exercise the partial-word path.
                            let split = len / 3;
                            prop_assert_eq!(slot.write(&message[..split]), split);
                            prop_assert_eq!(slot.write(&message[split..]), len - split);
                            slot.commit();
                            model.commit(message);
                        }
                        Err(error) => {
                            prop_assert_eq!(error, SendError::Full);
                            prop_assert!(model.reserve(*len).is_none());
                            break;
                        }
                    }
                }
                producer.publish();
                model.publish();
            }
            Op::ReserveDrop(len) => {
                if *len <= model.max {
                    let reserved = producer.reserve(*len).is_ok();
                    prop_assert_eq!(reserved, model.reserve(*len).is_some());
                }
            }
            Op::Recv => {
                let result = consumer.recv(&mut buf);
                match model.take() {
                    Some(expected) => {
                        prop_assert_eq!(result, Ok(Some(expected.len())));
                        prop_assert_eq!(&buf[..expected.len()], &expected[..]);
                    }
                    None => prop_assert_eq!(result, Ok(None)),
                }
                model.consumer_publish();
            }
            Op::ReadBatch(count) => {
                for _ in 0..*count {
                    let expected = model.take();
                    let slot = consumer
                        .read()
                        .map_err(|error| TestCaseError::fail(error.to_string()))?;
                    match (slot, expected) {
                        (Some(slot), Some(expected)) => {
                            prop_assert_eq!(slot.len(), expected.len());
                            // In two pieces from an odd offset, to exercise the partial words.
                            let split = (expected.len() / 3) | 1;
                            let first = slot.read(0, &mut buf[..split]);
                            let count = first + slot.read(first, &mut buf[first..]);
                            prop_assert_eq!(count, expected.len());
                            prop_assert_eq!(&buf[..count], &expected[..]);
                            slot.release();
                        }
                        (None, None) => break,
                        (slot, expected) => {
                            return Err(TestCaseError::fail(format!(
                                "ring had {:?}, model {:?}",
                                slot.map(|slot| slot.len()),
                                expected.map(|expected| expected.len())
                            )));
                        }
                    }
                }
                consumer.publish();
                model.consumer_publish();
            }
        }
    }
    // Drain: everything published comes out in order.
    producer.publish();
    model.publish();
    while let Some(expected) = model.take() {
        prop_assert_eq!(consumer.recv(&mut buf), Ok(Some(expected.len())));
        prop_assert_eq!(&buf[..expected.len()], &expected[..]);
    }
    prop_assert_eq!(consumer.recv(&mut buf), Ok(None));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tiny_ring_matches_model(ops in proptest::collection::vec(op_strategy(24), 1..200)) {
        run(64, &ops)?;
    }

    #[test]
    fn small_ring_matches_model(ops in proptest::collection::vec(op_strategy(120), 1..200)) {
        run(256, &ops)?;
    }

    #[test]
    fn larger_ring_matches_model(ops in proptest::collection::vec(op_strategy(2040), 1..100)) {
        run(4096, &ops)?;
    }
}
