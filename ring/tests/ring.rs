//! Functional tests of the region and the ring, and garbage injected by a hostile peer.

mod common;

use common::{HeapMemory, Rng, heap_memory, linked_pair, small_geometry};
use sramlink_ring::layout::{
    self, HEADER_BYTES, KIND_PADDING, MAGIC, OFF_GUEST_STATE, OFF_HEADER_BYTES, OFF_PEER_STATE,
    OFF_REGION_BYTES, OFF_RING_COUNT, OFF_VERSION_MAJOR,
};
use sramlink_ring::{
    Direction, Error, Geometry, MemoryType, RecvError, Region, Role, SendError, SharedMemory,
    SideState, VolatileMemory,
};

const RING0_DATA: usize = 0x1000;

fn message(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| seed.wrapping_mul(31).wrapping_add(index as u8))
        .collect()
}

#[test]
fn default_geometry_of_16_mib() {
    let geometry = Geometry::for_region(0x100_0000).unwrap();
    assert_eq!(geometry.rings[0].data_offset, 0x1000);
    assert_eq!(geometry.rings[0].data_bytes, 0x40_0000);
    assert_eq!(geometry.rings[1].data_offset, 0x40_1000);
    assert_eq!(geometry.rings[1].data_bytes, 0x40_0000);
    assert_eq!(geometry.rings[0].max_message_len(), 0x20_0000 - 8);
    assert!(matches!(
        Geometry::for_region(0x2fff),
        Err(Error::RegionTooSmall { .. })
    ));
    let smallest = Geometry::for_region(0x3000).unwrap();
    assert_eq!(smallest.rings[1].data_offset, 0x2000);
    assert_eq!(smallest.rings[1].data_bytes, 0x1000);
}

#[test]
fn geometry_rules_are_enforced() {
    let good = small_geometry(64);
    let mut bad = good;
    bad.rings[0].data_bytes = 96;
    assert!(matches!(bad.validate(), Err(Error::BadGeometry { .. })));
    let mut bad = good;
    bad.rings[1].data_offset = 0x1800;
    assert!(matches!(bad.validate(), Err(Error::BadGeometry { .. })));
    let mut bad = good;
    bad.rings[1].data_offset = 0x1000;
    assert!(matches!(bad.validate(), Err(Error::BadGeometry { .. })));
    let mut bad = good;
    bad.rings[0].data_offset = 0;
    assert!(matches!(bad.validate(), Err(Error::BadGeometry { .. })));
    let mut bad = good;
    bad.region_bytes = 0x2020;
    assert!(matches!(bad.validate(), Err(Error::RegionTooSmall { .. })));
    assert!(Geometry::with_ring_bytes(0x3000, [32, 64]).is_err());
}

#[test]
fn create_writes_the_documented_header() {
    let geometry = Geometry::for_region(0x100_0000).unwrap();
    let memory = heap_memory(0x1000 * 3);
    assert!(matches!(
        Region::create(memory, geometry),
        Err(Error::RegionTooSmall { .. })
    ));
    let memory = heap_memory(0x100_0000);
    let region = Region::create(memory.clone(), geometry).unwrap();
    let bytes: Vec<u8> = (0..0x200)
        .step_by(4)
        .flat_map(|offset| memory.load_u32(offset).to_le_bytes())
        .collect();
    assert_eq!(&bytes[0..8], b"SRAMLINK");
    assert_eq!(&bytes[8..12], &[1, 0, 1, 0]);
    assert_eq!(&bytes[12..16], &[0, 2, 0, 0]);
    assert_eq!(&bytes[16..24], &[0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(&bytes[24..28], &[2, 0, 0, 0]);
    assert_eq!(
        &bytes[0x20..0x30],
        &[0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        &bytes[0x30..0x40],
        &[0, 0x10, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0]
    );
    assert!(bytes[0x40..0x180].iter().all(|byte| *byte == 0));
    // Generation 1 (no valid header before, seed 0), then zeros (no session, no port).
    assert_eq!(&bytes[0x180..0x184], &[1, 0, 0, 0]);
    assert!(bytes[0x184..].iter().all(|byte| *byte == 0));
    assert_eq!(region.state(Role::Guest), Ok(SideState::Offline));
    region.set_state(Role::Guest, SideState::Ready);
    assert_eq!(memory.load_u32(OFF_GUEST_STATE), 1);
    let attached = Region::attach(memory).unwrap();
    assert_eq!(attached.geometry(), region.geometry());
    assert_eq!(attached.state(Role::Guest), Ok(SideState::Ready));
    assert_eq!(attached.state(Role::Peer), Ok(SideState::Offline));
}

#[test]
fn attach_rejects_bad_headers() {
    let geometry = small_geometry(64);
    let fresh = || {
        let memory = heap_memory(geometry.region_bytes);
        Region::create(memory.clone(), geometry).unwrap();
        memory
    };
    let zeroed = heap_memory(geometry.region_bytes);
    assert_eq!(
        Region::attach(zeroed).unwrap_err(),
        Error::BadMagic { found: 0 }
    );
    assert!(matches!(
        Region::attach(heap_memory(0x100)),
        Err(Error::RegionTooSmall { .. })
    ));

    type Check = fn(&Error) -> bool;
    let cases: [(&str, usize, u32, Check); 8] = [
        ("major 2", OFF_VERSION_MAJOR, 2, |e| {
            matches!(e, Error::VersionMismatch { major: 2, .. })
        }),
        ("header too small", OFF_HEADER_BYTES, 0x100, |e| {
            matches!(e, Error::BadHeader { .. })
        }),
        ("header too big", OFF_HEADER_BYTES, 0x2000, |e| {
            matches!(e, Error::BadHeader { .. })
        }),
        (
            "region bigger than memory",
            OFF_REGION_BYTES,
            0x10_0000,
            |e| matches!(e, Error::RegionTooSmall { .. }),
        ),
        ("three rings", OFF_RING_COUNT, 3, |e| {
            matches!(e, Error::BadHeader { .. })
        }),
        (
            "ring 0 misaligned",
            layout::ring_descriptor_offset(0),
            0x1040,
            |e| matches!(e, Error::BadGeometry { .. }),
        ),
        (
            "ring 1 not a power of two",
            layout::ring_descriptor_offset(1) + 8,
            100,
            |e| matches!(e, Error::BadGeometry { .. }),
        ),
        (
            "ring 1 past the end",
            layout::ring_descriptor_offset(1) + 8,
            0x1_0000,
            |e| matches!(e, Error::RegionTooSmall { .. }),
        ),
    ];
    for (name, offset, value, expected) in cases {
        let memory = fresh();
        memory.store_u32(offset, value);
        let error = Region::attach(memory).unwrap_err();
        assert!(expected(&error), "{name}: {error:?}");
        assert!(!error.to_string().is_empty());
    }

    // A minor version we do not know is accepted.
    let memory = fresh();
    memory.store_u32(OFF_VERSION_MAJOR, 1 | (7 << 16));
    assert!(Region::attach(memory).is_ok());

    // A data offset beyond any usize the region can have.
    let memory = fresh();
    memory.store_u64(layout::ring_descriptor_offset(0), u64::MAX - 0xfff);
    assert!(matches!(
        Region::attach(memory),
        Err(Error::BadGeometry { .. })
    ));
}

#[test]
fn bad_state_word_is_an_error() {
    let (guest, peer) = linked_pair(64);
    guest.memory().store_u32(OFF_PEER_STATE, 7);
    assert_eq!(
        guest.state(Role::Peer),
        Err(Error::BadState {
            role: Role::Peer,
            value: 7
        })
    );
    peer.set_state(Role::Peer, SideState::Stopped);
    assert_eq!(guest.state(Role::Peer), Ok(SideState::Stopped));
}

#[test]
fn send_and_recv_both_ways() {
    let (guest, peer) = linked_pair(4096);
    let (mut guest_tx, mut guest_rx) = guest.endpoints(Role::Guest);
    let (mut peer_tx, mut peer_rx) = peer.endpoints(Role::Peer);
    let mut buf = [0u8; 2048];
    assert_eq!(peer_rx.recv(&mut buf), Ok(None));
    for len in [0, 1, 7, 8, 9, 100, 2040] {
        let msg = message(len as u8, len);
        guest_tx.send(&msg).unwrap();
        assert_eq!(peer_rx.recv(&mut buf), Ok(Some(len)));
        assert_eq!(&buf[..len], &msg[..]);
        peer_tx.send(&msg).unwrap();
        assert_eq!(guest_rx.recv(&mut buf), Ok(Some(len)));
        assert_eq!(&buf[..len], &msg[..]);
    }
    assert_eq!(guest_tx.max_message_len(), 2040);
    assert_eq!(
        guest_tx.send(&[0; 2041]),
        Err(SendError::TooLarge {
            len: 2041,
            max: 2040
        })
    );
}

#[test]
fn batch_is_invisible_until_published() {
    let (guest, peer) = linked_pair(4096);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    for seed in 0..10u8 {
        let mut slot = producer.reserve(20).unwrap();
        assert_eq!(slot.write(&message(seed, 20)), 20);
        slot.commit();
    }
    assert_eq!(producer.unpublished_bytes(), 10 * 32);
    assert!(consumer.read().unwrap().is_none());
    producer.publish();
    assert_eq!(producer.unpublished_bytes(), 0);
    let mut buf = [0u8; 64];
    for seed in 0..10u8 {
        let slot = consumer.read().unwrap().unwrap();
        assert_eq!(slot.len(), 20);
        assert_eq!(slot.read(0, &mut buf), 20);
        assert_eq!(&buf[..20], &message(seed, 20)[..]);
        slot.release();
    }
    assert!(consumer.read().unwrap().is_none());
    // Not yet released to the producer: only the consumer's publish frees the space.
    let used = guest.memory().load_u32(layout::consumer_index_offset(
        Direction::GuestToPeer.index(),
    ));
    assert_eq!(used, 0);
    consumer.publish();
    let released = guest.memory().load_u32(layout::consumer_index_offset(
        Direction::GuestToPeer.index(),
    ));
    assert_eq!(released, 320);
}

#[test]
fn full_ring_and_space_coming_back() {
    let (guest, peer) = linked_pair(64);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    // 64 bytes: four 16-byte records (8 payload bytes each).
    for seed in 0..4 {
        producer.send(&message(seed, 8)).unwrap();
    }
    assert_eq!(producer.send(&[1]), Err(SendError::Full));
    let mut buf = [0u8; 24];
    assert_eq!(consumer.recv(&mut buf), Ok(Some(8)));
    assert_eq!(&buf[..8], &message(0, 8)[..]);
    producer.send(&message(9, 3)).unwrap();
    assert_eq!(producer.send(&[1]), Err(SendError::Full));
    for seed in [1, 2, 3] {
        assert_eq!(consumer.recv(&mut buf), Ok(Some(8)));
        assert_eq!(&buf[..8], &message(seed, 8)[..]);
    }
    assert_eq!(consumer.recv(&mut buf), Ok(Some(3)));
    assert_eq!(&buf[..3], &message(9, 3)[..]);
    assert_eq!(consumer.recv(&mut buf), Ok(None));
}

#[test]
fn records_wrap_with_padding() {
    let (guest, peer) = linked_pair(64);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    let mut buf = [0u8; 24];
    // 40 bytes used (a 24-byte payload is a 32-byte record, then 8), consumed; head at 40.
    producer.send(&message(1, 24)).unwrap();
    producer.send(&[]).unwrap();
    assert_eq!(consumer.recv(&mut buf), Ok(Some(24)));
    assert_eq!(consumer.recv(&mut buf), Ok(Some(0)));
    // 24 bytes left before the end; a 32-byte record needs padding and starts at 0.
    producer.send(&message(2, 24)).unwrap();
    let memory = guest.memory();
    assert_eq!(
        memory.load_u64(RING0_DATA + 40),
        16 | (u64::from(KIND_PADDING) << 32)
    );
    assert_eq!(memory.load_u64(RING0_DATA), 24);
    assert_eq!(consumer.recv(&mut buf), Ok(Some(24)));
    assert_eq!(&buf[..], &message(2, 24)[..]);
    // Indices count the padding: 40 + 24 + 32.
    assert_eq!(memory.load_u32(layout::producer_index_offset(0)), 96);
    assert_eq!(memory.load_u32(layout::consumer_index_offset(0)), 96);
}

#[test]
fn padding_needs_room_for_itself_and_the_record() {
    let (guest, peer) = linked_pair(64);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    let mut buf = [0u8; 24];
    producer.send(&message(0, 16)).unwrap(); // 0..24
    producer.send(&message(1, 8)).unwrap(); // 24..40
    producer.send(&[]).unwrap(); // 40..48
    // Head at 48: 16 contiguous bytes; a 32-byte record needs 16 padding + 32 = 48 free.
    assert_eq!(consumer.recv(&mut buf), Ok(Some(16))); // 40 free
    assert_eq!(producer.send(&message(2, 24)), Err(SendError::Full));
    assert_eq!(consumer.recv(&mut buf), Ok(Some(8))); // 56 free, 48 needed
    producer.send(&message(2, 24)).unwrap();
    assert_eq!(consumer.recv(&mut buf), Ok(Some(0)));
    assert_eq!(consumer.recv(&mut buf), Ok(Some(24)));
    assert_eq!(&buf[..], &message(2, 24)[..]);
    assert_eq!(consumer.recv(&mut buf), Ok(None));
}

#[test]
fn zero_copy_slots() {
    let (guest, peer) = linked_pair(4096);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    let msg = message(5, 61);
    let mut slot = producer.reserve(100).unwrap();
    assert_eq!(slot.capacity(), 100);
    // Odd pieces exercise the partial-word accumulator.
    let mut at = 0;
    for piece in [1, 3, 7, 9, 16, 2, 23] {
        assert_eq!(slot.write(&msg[at..at + piece]), piece);
        at += piece;
    }
    assert_eq!(slot.written(), 61);
    slot.commit();
    let mut slot = producer.reserve(4).unwrap();
    assert_eq!(slot.write(&[1, 2, 3, 4, 5, 6]), 4);
    slot.commit();
    // A dropped slot leaves nothing.
    {
        let mut slot = producer.reserve(8).unwrap();
        slot.write(&[9; 8]);
    }
    producer.publish();

    let slot = consumer.read().unwrap().unwrap();
    assert_eq!(slot.len(), 61);
    let mut buf = [0u8; 80];
    for start in 0..61 {
        for len in [0, 1, 5, 8, 13, 61] {
            let count = slot.read(start, &mut buf[..len]);
            assert_eq!(count, len.min(61 - start));
            assert_eq!(&buf[..count], &msg[start..start + count]);
        }
    }
    assert_eq!(slot.read(61, &mut buf), 0);
    assert_eq!(
        slot.read_u64(8),
        Some(u64::from_le_bytes(msg[8..16].try_into().unwrap()))
    );
    assert_eq!(slot.read_u64(4), None);
    assert_eq!(slot.read_u64(56), None);
    // Not released: read again.
    assert_eq!(consumer.read().unwrap().unwrap().len(), 61);
    consumer.read().unwrap().unwrap().release();
    let slot = consumer.read().unwrap().unwrap();
    assert_eq!(slot.read(0, &mut buf), 4);
    assert_eq!(&buf[..4], &[1, 2, 3, 4]);
    slot.release();
    assert!(consumer.read().unwrap().is_none());
}

#[test]
fn small_buffer_leaves_the_message() {
    let (guest, peer) = linked_pair(4096);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    producer.send(&message(3, 30)).unwrap();
    let mut small = [0u8; 29];
    assert_eq!(
        consumer.recv(&mut small),
        Err(RecvError::BufferTooSmall { needed: 30 })
    );
    let mut buf = [0u8; 30];
    assert_eq!(consumer.recv(&mut buf), Ok(Some(30)));
}

#[test]
fn endpoints_resume_from_the_shared_indices() {
    let (guest, peer) = linked_pair(64);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let mut buf = [0u8; 24];
    for round in 0..10u8 {
        // A new peer incarnation each round, continuing where the last one stopped.
        let (_, mut consumer) = peer.endpoints(Role::Peer);
        producer.send(&message(round, 20)).unwrap();
        producer.send(&message(round + 1, 4)).unwrap();
        assert_eq!(consumer.recv(&mut buf), Ok(Some(20)));
        assert_eq!(&buf[..20], &message(round, 20)[..]);
        assert_eq!(consumer.recv(&mut buf), Ok(Some(4)));
    }
}

#[test]
fn volatile_memory_carries_the_ring() {
    carries_the_ring(MemoryType::Device);
}

#[test]
fn normal_memory_carries_the_ring() {
    carries_the_ring(MemoryType::Normal);
}

fn carries_the_ring(memory_type: MemoryType) {
    let geometry = small_geometry(256);
    let mut backing = vec![0u64; geometry.region_bytes / 8];
    // SAFETY: `backing` outlives every use of `memory` below and is not otherwise accessed; a
    // heap buffer is Normal memory, so either memory type is right for it.
    let memory = unsafe {
        VolatileMemory::with_type(
            backing.as_mut_ptr().cast(),
            geometry.region_bytes,
            memory_type,
        )
    }
    .unwrap();
    assert_eq!(memory.memory_type(), memory_type);
    let guest = Region::create(memory.clone(), geometry).unwrap();
    let peer = Region::attach(memory).unwrap();
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    let mut buf = [0u8; 120];
    for round in 0..50u8 {
        let len = (round as usize * 7) % 121;
        producer.send(&message(round, len)).unwrap();
        assert_eq!(consumer.recv(&mut buf), Ok(Some(len)));
        assert_eq!(&buf[..len], &message(round, len)[..]);
    }
    assert_eq!(&backing[0].to_le_bytes(), b"SRAMLINK");
}

// ---- Garbage from a hostile or broken peer ------------------------------------------------

/// Guest producer on ring 0 has sent `count` 8-byte messages; returns the peer's consumer.
fn consumer_after(count: u8) -> (Region<HeapMemory>, sramlink_ring::Consumer<HeapMemory>) {
    let (guest, peer) = linked_pair(64);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    for seed in 0..count {
        producer.send(&message(seed, 8)).unwrap();
    }
    let (_, consumer) = peer.endpoints(Role::Peer);
    (guest, consumer)
}

fn expect_bad_record(consumer: &mut sramlink_ring::Consumer<HeapMemory>, reason_part: &str) {
    match consumer.read() {
        Err(Error::BadRecord { reason, .. }) => assert!(reason.contains(reason_part), "{reason}"),
        other => panic!("expected a bad record ({reason_part}), got {other:?}"),
    }
    // Sticky.
    assert!(consumer.read().is_err());
    let mut buf = [0u8; 64];
    assert!(matches!(
        consumer.recv(&mut buf),
        Err(RecvError::Protocol(_))
    ));
}

#[test]
fn garbage_producer_index() {
    let producer_index = layout::producer_index_offset(0);
    for (value, name) in [
        (12, "misaligned"),
        (16 + 72, "more than the ring"),
        (u32::MAX - 7, "far behind"),
    ] {
        let (guest, mut consumer) = consumer_after(1);
        // The cached producer index covers the first message: no shared read needed yet.
        consumer.read().unwrap().unwrap().release();
        guest.memory().store_u32(producer_index, value);
        assert!(
            matches!(
                consumer.read(),
                Err(Error::BadIndex {
                    which: "producer",
                    ..
                })
            ),
            "{name}"
        );
        assert!(consumer.read().is_err(), "{name}: sticky");
    }
    // Going backwards after a value was seen.
    let (guest, mut consumer) = consumer_after(2);
    consumer.read().unwrap().unwrap().release();
    consumer.read().unwrap().unwrap().release();
    guest.memory().store_u32(producer_index, 16);
    assert!(matches!(
        consumer.read(),
        Err(Error::BadIndex {
            which: "producer",
            ..
        })
    ));
}

#[test]
fn garbage_consumer_index() {
    let consumer_index = layout::consumer_index_offset(0);
    for value in [4, 72, 0xffff_fff8] {
        let (guest, peer) = linked_pair(64);
        let (mut producer, _) = guest.endpoints(Role::Guest);
        let (_, _consumer) = peer.endpoints(Role::Peer);
        for seed in 0..4 {
            producer.send(&message(seed, 8)).unwrap();
        }
        // 64 bytes published (full): claim a misaligned, impossible or backward release.
        guest.memory().store_u32(consumer_index, value);
        let error = producer.send(&message(9, 8)).unwrap_err();
        assert!(
            matches!(
                error,
                SendError::Protocol(Error::BadIndex {
                    which: "consumer",
                    ..
                })
            ),
            "{value}: {error:?}"
        );
        assert!(matches!(producer.reserve(0), Err(SendError::Protocol(_))));
    }
}

#[test]
fn inconsistent_indices_at_start() {
    let (guest, peer) = linked_pair(64);
    guest
        .memory()
        .store_u32(layout::producer_index_offset(1), 128);
    let (mut producer, _) = peer.endpoints(Role::Peer);
    assert!(matches!(producer.send(&[1]), Err(SendError::Protocol(_))));
    let (_, mut consumer) = guest.endpoints(Role::Guest);
    assert!(consumer.read().is_err());
}

#[test]
fn garbage_record_headers() {
    let data = RING0_DATA;
    let header = |len: u32, kind: u32| u64::from(len) | (u64::from(kind) << 32);
    let cases: [(u64, &str); 5] = [
        (header(25, 0), "maximum"),
        (header(16, 0), "producer index"),
        (header(0, 2), "unknown"),
        (header(56, 1), "start"),
        (header(8, 0xffff_ffff), "unknown"),
    ];
    for (value, reason) in cases {
        let (guest, mut consumer) = consumer_after(1);
        guest.memory().store_u64(data, value);
        expect_bad_record(&mut consumer, reason);
    }
    // Padding that does not reach the end / extends past the producer index.
    let (guest, peer) = linked_pair(64);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    let mut buf = [0u8; 24];
    producer.send(&message(0, 24)).unwrap();
    producer.send(&message(1, 8)).unwrap();
    assert_eq!(consumer.recv(&mut buf), Ok(Some(24)));
    assert_eq!(consumer.recv(&mut buf), Ok(Some(8)));
    producer.send(&message(2, 8)).unwrap(); // at 48..64, no padding
    guest.memory().store_u64(data + 48, header(0, 1));
    expect_bad_record(&mut consumer, "end of the data area");

    let (guest, peer) = linked_pair(64);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    producer.send(&message(0, 24)).unwrap();
    producer.send(&message(1, 8)).unwrap();
    assert_eq!(consumer.recv(&mut buf), Ok(Some(24)));
    assert_eq!(consumer.recv(&mut buf), Ok(Some(8)));
    // A record that crosses the end: header at 48 claims 16 payload bytes (32-byte record),
    // with the producer index claiming 32 more bytes.
    guest.memory().store_u64(data + 48, header(16, 0));
    guest
        .memory()
        .store_u32(layout::producer_index_offset(0), 48 + 32);
    expect_bad_record(&mut consumer, "crosses the end");

    let (guest, peer) = linked_pair(64);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    producer.send(&message(0, 24)).unwrap();
    producer.send(&message(1, 8)).unwrap();
    assert_eq!(consumer.recv(&mut buf), Ok(Some(24)));
    assert_eq!(consumer.recv(&mut buf), Ok(Some(8)));
    // Valid padding at 48 but only 8 bytes published past it.
    guest.memory().store_u64(data + 48, header(8, 1));
    guest
        .memory()
        .store_u32(layout::producer_index_offset(0), 48 + 8);
    expect_bad_record(&mut consumer, "producer index");
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut outcomes = [0usize; 3];
    for _ in 0..300 {
        let (guest, peer) = linked_pair(128);
        let (mut guest_tx, mut guest_rx) = guest.endpoints(Role::Guest);
        let (mut peer_tx, mut peer_rx) = peer.endpoints(Role::Peer);
        let memory = guest.memory().clone();
        let mut buf = [0u8; 64];
        for _ in 0..40 {
            match rng.below(8) {
                0 => {
                    // Scribble over an index or a data word.
                    let offset = match rng.below(3) {
                        0 => layout::producer_index_offset(rng.below(2) as usize),
                        1 => layout::consumer_index_offset(rng.below(2) as usize),
                        _ => 0x1000 + 4 * rng.below(64) as usize + 0x1000 * rng.below(2) as usize,
                    };
                    let value = match rng.below(3) {
                        0 => rng.next() as u32,
                        1 => (rng.below(40) * 8) as u32,
                        _ => memory.load_u32(offset).wrapping_add(8),
                    };
                    memory.store_u32(offset, value);
                }
                1 | 2 => {
                    let len = rng.below(60) as usize;
                    let _ = guest_tx.send(&buf[..len]);
                    let _ = peer_tx.send(&buf[..len]);
                }
                3 | 4 => {
                    let _ = peer_rx.recv(&mut buf);
                    let _ = guest_rx.recv(&mut buf);
                }
                _ => {
                    if let Ok(Some(slot)) = peer_rx.read() {
                        let _ = slot.read(rng.below(80) as usize, &mut buf);
                        slot.release();
                    }
                    peer_rx.publish();
                }
            }
        }
        outcomes[0] += usize::from(guest_rx.recv(&mut buf).is_err());
        outcomes[1] += usize::from(peer_rx.recv(&mut buf).is_err());
        outcomes[2] += usize::from(guest_tx.send(&[0; 8]).is_err());
        // Garbage in the header: attach must fail cleanly or succeed with a valid geometry.
        for _ in 0..4 {
            memory.store_u32(
                4 * rng.below((HEADER_BYTES / 4) as u64) as usize,
                rng.next() as u32,
            );
        }
        memory.store_u64(0, MAGIC);
        if let Ok(region) = Region::attach(memory.clone()) {
            region.geometry().validate().unwrap();
        }
    }
    // The garbage did cause errors (the test exercises the validation paths).
    assert!(outcomes.iter().sum::<usize>() > 100, "{outcomes:?}");
}

// ---- The worked examples of docs/ABI.md §8 ------------------------------------------------

fn hex_line(memory: &HeapMemory, offset: usize) -> String {
    (offset..offset + 16)
        .step_by(4)
        .flat_map(|at| memory.load_u32(at).to_le_bytes())
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn abi_worked_example() {
    let geometry = Geometry::for_region(0x100_0000).unwrap();
    let memory = heap_memory(0x100_0000);
    let guest = Region::create(memory.clone(), geometry).unwrap();
    guest.set_state(Role::Guest, SideState::Ready);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    producer.send(b"hello").unwrap();
    let expected = [
        (0x00, "53 52 41 4d 4c 49 4e 4b 01 00 01 00 00 02 00 00"),
        (0x10, "00 00 00 01 00 00 00 00 02 00 00 00 00 00 00 00"),
        (0x20, "00 10 00 00 00 00 00 00 00 00 40 00 00 00 00 00"),
        (0x30, "00 10 40 00 00 00 00 00 00 00 40 00 00 00 00 00"),
        (0x40, "01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"),
        (0x80, "10 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"),
        (0xc0, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"),
        (0x180, "01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"),
        (0x1c0, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"),
        (0x1000, "05 00 00 00 00 00 00 00 68 65 6c 6c 6f 00 00 00"),
    ];
    for (offset, line) in expected {
        assert_eq!(hex_line(&memory, offset), line, "at {offset:#x}");
    }
    let (_, mut consumer) = Region::attach(memory.clone())
        .unwrap()
        .endpoints(Role::Peer);
    let mut buf = [0u8; 8];
    assert_eq!(consumer.recv(&mut buf), Ok(Some(5)));
    assert_eq!(memory.load_u32(0xc0), 0x10);

    use sramlink_ring::proto::{self, Header, Op, StreamRequest};
    let mut payload = [0u8; 12];
    proto::fill_payload(1, &mut payload);
    let mut message = Header::for_payload(Op::EchoRequest, 1, &payload)
        .encode()
        .to_vec();
    message.extend_from_slice(&payload);
    let hex: Vec<String> = message.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(
        hex.join(" "),
        "01 00 00 00 0c 00 00 00 01 00 00 00 00 00 00 00 65 36 14 c4 00 00 00 00 \
         a8 79 a4 e5 71 78 20 75 3b 77 fe 4b"
    );
    assert_eq!(proto::pattern_word(1, 1), 0x4C09_772A_4BFE_773B);
    let request = StreamRequest {
        count: 1000,
        size: 4096,
    }
    .encode();
    assert_eq!(
        request,
        [0xe8, 3, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(proto::checksum(&request), 0x8CB7_42DE);
}

#[test]
fn copies_at_every_alignment() {
    let (guest, peer) = linked_pair(4096);
    let (mut producer, _) = guest.endpoints(Role::Guest);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    // An 8-aligned source buffer, so that `source[shift..]` has every alignment.
    let source_words: Vec<u64> = (0..40u64)
        .map(|index| 0x0101_0101_0101_0101u64.wrapping_mul(index + 1) ^ 0x8040_2010_0804_0201)
        .collect();
    let source: Vec<u8> = source_words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut target_words = [0u64; 40];
    for shift in 0..8 {
        for split in [0, 1, 5, 8, 13, 33] {
            let len = 200;
            let message = &source[shift..shift + len];
            let mut slot = producer.reserve(len + 16).unwrap();
            // Pieces of awkward sizes and alignments, plus whole words.
            assert_eq!(slot.write(&message[..split]), split);
            assert_eq!(slot.write(&message[split..split + 3]), 3);
            let word = u64::from_le_bytes(message[split + 3..split + 11].try_into().unwrap());
            assert!(slot.write_u64(word));
            assert_eq!(slot.write(&message[split + 11..]), len - split - 11);
            slot.commit();
            producer.publish();
            let slot = consumer.read().unwrap().unwrap();
            assert_eq!(slot.len(), len);
            for start in [0, 1, 7, 8, 9, 100] {
                for target_shift in 0..8 {
                    // SAFETY: reinterpreting the u64 array as bytes for the test's target
                    // buffer: any bit pattern is valid for both.
                    let (_, target, _) = unsafe { target_words.align_to_mut::<u8>() };
                    let count = slot.read(start, &mut target[target_shift..target_shift + 90]);
                    assert_eq!(count, 90.min(len - start));
                    assert_eq!(
                        &target[target_shift..target_shift + count],
                        &message[start..start + count],
                        "shift {shift} split {split} start {start} target {target_shift}"
                    );
                }
            }
            slot.release();
            consumer.publish();
        }
    }
    let mut slot = producer.reserve(7).unwrap();
    assert!(!slot.write_u64(0));
    assert_eq!(slot.written(), 0);
}

/// The start rule blames the other end's index when the two are more than a ring apart: the
/// consumer starting on a producer index far ahead names the producer, and the producer
/// starting on a consumer index far behind names the consumer.
#[test]
fn start_rule_blames_the_other_ends_index() {
    let (guest, peer) = linked_pair(64);
    // Ring 0: the guest produces, the peer consumes. A producer index 72 bytes ahead.
    guest
        .memory()
        .store_u32(layout::producer_index_offset(0), 72);
    let (_, mut consumer) = peer.endpoints(Role::Peer);
    assert!(
        matches!(
            consumer.read(),
            Err(Error::BadIndex {
                which: "producer",
                value: 72,
                ..
            })
        ),
        "the peer's consumer must blame the guest's producer index"
    );
    // Ring 1: the peer produces, the guest consumes. A consumer index 72 bytes behind.
    guest
        .memory()
        .store_u32(layout::consumer_index_offset(1), 0u32.wrapping_sub(72));
    let (mut producer, _) = peer.endpoints(Role::Peer);
    assert!(
        matches!(
            producer.send(b"x"),
            Err(SendError::Protocol(Error::BadIndex {
                which: "consumer",
                ..
            }))
        ),
        "the peer's producer must blame the guest's consumer index"
    );
}
