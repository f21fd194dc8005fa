//! Two threads, both directions at once, thousands of messages with checksums and sequence
//! numbers, over a heap buffer (atomic words, and the real `VolatileMemory`).

mod common;

use std::thread;

use common::{Rng, heap_memory, small_geometry};
use sramlink_ring::proto::{self, HEADER_LEN, Header, Op};
use sramlink_ring::{
    Consumer, MemoryType, Producer, Region, Role, SendError, SharedMemory, SideState,
    VolatileMemory,
};

const MESSAGES: u64 = 100_000;
const RING_BYTES: usize = 1024;

/// Payload length of message `seq` (a function of `seq`, so the receiver can check it).
fn length_of(seq: u64, max_payload: usize) -> usize {
    (Rng(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).next() % (max_payload as u64 + 1)) as usize
}

/// Sends `MESSAGES` pattern messages, in batches of random size, and receives as many.
fn side<M: SharedMemory>(
    mut producer: Producer<M>,
    mut consumer: Consumer<M>,
    seed: u64,
) -> (u64, u64) {
    let max_payload = producer.max_message_len() - HEADER_LEN;
    let mut rng = Rng(seed);
    let mut next_send = 0u64;
    let mut next_receive = 0u64;
    let mut message = vec![0u8; producer.max_message_len()];
    let mut buf = vec![0u8; consumer.max_message_len()];
    while next_send < MESSAGES || next_receive < MESSAGES {
        let mut progress = false;
        // A batch: reserve/commit several, publish once.
        let batch = 1 + rng.below(6);
        for _ in 0..batch {
            if next_send == MESSAGES {
                break;
            }
            let len = length_of(next_send, max_payload);
            match producer.reserve(HEADER_LEN + len) {
                Ok(mut slot) => {
                    proto::fill_payload(next_send, &mut message[..len]);
                    let header = Header::for_payload(Op::Data, next_send, &message[..len]);
                    slot.write(&header.encode());
                    slot.write(&message[..len]);
                    slot.commit();
                    next_send += 1;
                    progress = true;
                }
                Err(SendError::Full) => break,
                Err(error) => panic!("send: {error}"),
            }
        }
        producer.publish();
        // Receive some, alternating recv and zero-copy reads.
        for _ in 0..1 + rng.below(6) {
            let received = if rng.below(2) == 0 {
                match consumer.recv(&mut buf) {
                    Ok(Some(len)) => Some(buf[..len].to_vec()),
                    Ok(None) => None,
                    Err(error) => panic!("recv: {error}"),
                }
            } else {
                match consumer.read() {
                    Ok(Some(slot)) => {
                        let mut bytes = vec![0u8; slot.len()];
                        assert_eq!(slot.read(0, &mut bytes), slot.len());
                        slot.release();
                        Some(bytes)
                    }
                    Ok(None) => None,
                    Err(error) => panic!("read: {error}"),
                }
            };
            let Some(bytes) = received else { break };
            let header = Header::decode(&bytes).expect("a header");
            assert_eq!(header.seq, next_receive, "sequence");
            assert_eq!(header.op(), Some(Op::Data));
            let payload = &bytes[HEADER_LEN..];
            assert_eq!(payload.len(), length_of(next_receive, max_payload));
            assert_eq!(header.payload_len as usize, payload.len());
            assert_eq!(proto::checksum(payload), header.checksum, "checksum");
            assert!(proto::check_payload(header.seq, payload), "pattern");
            next_receive += 1;
            progress = true;
        }
        consumer.publish();
        if !progress {
            thread::yield_now();
        }
    }
    (next_send, next_receive)
}

fn exchange<M: SharedMemory + Clone + Send + 'static>(memory: M) {
    let geometry = small_geometry(RING_BYTES);
    let guest = Region::create(memory.clone(), geometry).unwrap();
    guest.set_state(Role::Guest, SideState::Ready);
    let peer = Region::attach(memory).unwrap();
    let (guest_tx, guest_rx) = guest.endpoints(Role::Guest);
    let (peer_tx, peer_rx) = peer.endpoints(Role::Peer);
    let guest_thread = thread::spawn(move || side(guest_tx, guest_rx, 1));
    let peer_thread = thread::spawn(move || side(peer_tx, peer_rx, 2));
    assert_eq!(guest_thread.join().unwrap(), (MESSAGES, MESSAGES));
    assert_eq!(peer_thread.join().unwrap(), (MESSAGES, MESSAGES));
}

#[test]
fn two_threads_over_atomic_words() {
    exchange(heap_memory(small_geometry(RING_BYTES).region_bytes));
}

#[test]
fn two_threads_over_volatile_memory() {
    exchange(leaked_volatile_memory(MemoryType::Device));
}

#[test]
fn two_threads_over_normal_memory() {
    exchange(leaked_volatile_memory(MemoryType::Normal));
}

fn leaked_volatile_memory(memory_type: MemoryType) -> VolatileMemory {
    let geometry = small_geometry(RING_BYTES);
    // Leaked so that the region outlives both threads, as a real mapping would.
    let backing: &'static mut [u64] = Vec::leak(vec![0u64; geometry.region_bytes / 8]);
    // The two threads access it as the guest and the peer do: payload words ordered by the
    // index protocol, index words with concurrent plain volatile accesses (formally a data
    // race in Rust's model, exactly as with a real peer in another address space; the
    // `AtomicMemory` variant above checks the same protocol free of that caveat).
    // SAFETY: `backing` is leaked (lives forever) and only accessed through `VolatileMemory`.
    // A heap buffer is Normal memory, so either memory type is right for it.
    unsafe {
        VolatileMemory::with_type(
            backing.as_mut_ptr().cast(),
            geometry.region_bytes,
            memory_type,
        )
    }
    .unwrap()
}
