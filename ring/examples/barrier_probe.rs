//! Out-of-line instances of the hot paths, for reading their machine code (barrier count).
//!
//! ```text
//! cargo build --release -p sramlink-ring --example barrier_probe --target aarch64-unknown-linux-musl
//! aarch64-linux-gnu-objdump -d --no-show-raw-insn target/aarch64-unknown-linux-musl/release/examples/barrier_probe \
//!     | awk '/<probe_/,/^$/'
//! ```
//!
//! Each `probe_*` function is one operation on [`VolatileMemory`]; `docs/ABI.md` §4 quotes the
//! `dmb` count of each. Running it (any target) does one round of each operation as a check.

use sramlink_ring::{
    Consumer, Geometry, MemoryType, Producer, Region, Role, SendError, VolatileMemory,
};

/// One 8-byte message: reserve, write, commit, publish (one record per publish).
#[unsafe(no_mangle)]
#[inline(never)]
pub fn probe_send8(producer: &mut Producer<VolatileMemory>, message: &[u8; 8]) -> bool {
    producer.send(message).is_ok()
}

/// One message received into `buf`, released and handed back (one record per publish).
#[unsafe(no_mangle)]
#[inline(never)]
pub fn probe_recv8(consumer: &mut Consumer<VolatileMemory>, buf: &mut [u8; 8]) -> Option<usize> {
    consumer.recv(buf).ok().flatten()
}

/// Up to 64 records of 64 bytes committed, then one publish.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn probe_send_batch64(
    producer: &mut Producer<VolatileMemory>,
    messages: &[[u8; 64]; 64],
) -> usize {
    let mut sent = 0;
    for message in messages {
        match producer.reserve(64) {
            Ok(mut slot) => {
                slot.write(message);
                slot.commit();
                sent += 1;
            }
            Err(SendError::Full) | Err(_) => break,
        }
    }
    producer.publish();
    sent
}

/// Up to 64 records read in place and released, then one publish.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn probe_recv_batch64(
    consumer: &mut Consumer<VolatileMemory>,
    out: &mut [[u8; 64]; 64],
) -> usize {
    let mut received = 0;
    for buf in out.iter_mut() {
        match consumer.read() {
            Ok(Some(slot)) => {
                slot.read(0, buf);
                slot.release();
                received += 1;
            }
            _ => break,
        }
    }
    consumer.publish();
    received
}

/// An empty poll: nothing published.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn probe_empty_poll(consumer: &mut Consumer<VolatileMemory>) -> bool {
    matches!(consumer.read(), Ok(None))
}

fn main() {
    for memory_type in [MemoryType::Device, MemoryType::Normal] {
        let geometry = Geometry::with_ring_bytes(0x11000, [0x8000, 0x8000]).unwrap();
        let mut backing = vec![0u64; geometry.region_bytes / 8];
        // SAFETY: `backing` outlives both regions and is only accessed through them; a heap
        // buffer is Normal memory.
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
        let (mut producer, _) = guest.endpoints(Role::Guest);
        let (_, mut consumer) = peer.endpoints(Role::Peer);
        assert!(probe_empty_poll(&mut consumer));
        assert!(probe_send8(&mut producer, b"sramlink"));
        let mut buf = [0u8; 8];
        assert_eq!(probe_recv8(&mut consumer, &mut buf), Some(8));
        assert_eq!(&buf, b"sramlink");
        let messages: [[u8; 64]; 64] = core::array::from_fn(|index| [index as u8; 64]);
        assert_eq!(probe_send_batch64(&mut producer, &messages), 64);
        let mut out = [[0u8; 64]; 64];
        assert_eq!(probe_recv_batch64(&mut consumer, &mut out), 64);
        assert_eq!(out, messages);
    }
    println!("barrier_probe: send/recv, batches and the empty poll work on both memory types");
}
