//! Loom model of the ring protocol on a tiny ring, barriers modelled as fences.
//!
//! Loom explores every interleaving (no preemption bound: the models are small) of a
//! producer and a consumer, or of a creator and an attacher.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p sramlink-ring --release --test loom`.
//!
//! The model memory keeps the header in loom `AtomicU32`s accessed with `Relaxed` loads and
//! stores (what plain aligned word accesses are on AArch64), and each data area in loom
//! `UnsafeCell<u64>`s, so loom reports any payload or record-header access that is not
//! ordered after the other side's by the barriers (a data race), as well as wrong data.
//! Barriers map to fences: `Acquire` (`dmb ishld` after an index load) → `fence(Acquire)`,
//! `StoreStore` (`dmb ishst` before publishing) and `LoadStore` (`dmb ishld` before releasing)
//! → `fence(Release)`, `Full` (`dmb ish`) → `fence(SeqCst)`. A C++ release fence also orders
//! earlier loads, which `dmb ishst` does not; the producer's publish only needs its earlier
//! stores ordered, so the model does not lean on that difference.
//!
//! Every ring model runs twice, once per memory backend: payload copies as one `u64` access
//! per word in order (Device) and as a copy in any order (Normal: `memcpy` may go backwards;
//! the model copies last word first).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering, fence};
use loom::thread;

use sramlink_ring::layout::HEADER_BYTES;
use sramlink_ring::{Error, Fence, Geometry, Region, Role, SendError, SharedMemory, SideState};

const RING_BYTES: usize = 64;
const RING0: usize = 0x1000;
const RING1: usize = 0x2000;

struct Inner {
    header: Vec<AtomicU32>,
    /// The reserved words: written (zero) by the creator, never read by the protocol.
    reserved: Vec<std::sync::atomic::AtomicU32>,
    rings: [Vec<UnsafeCell<u64>>; 2],
}

/// How payload copies are modelled, after the two backends of `sramlink_ring::memory`.
#[derive(Clone, Copy, Debug)]
enum Copies {
    /// One `store_u64`/`load_u64` per word, in order (Device memory).
    Words,
    /// Any order (Normal memory, `memcpy`): last word first.
    Reversed,
}

/// Whether the header word at `off` is one the protocol reads (modelled with loom atomics);
/// the reserved words are only ever written, by the creator, and are kept out of the model so
/// that a re-creation (some 130 stores) stays tractable.
fn modelled(off: usize) -> bool {
    matches!(off, 0x000..0x048 | 0x080 | 0x0c0 | 0x100 | 0x140 | 0x180..0x198 | 0x1c0..0x1d4)
}

/// The region as loom objects; offsets outside the header and the two data areas panic.
#[derive(Clone)]
struct LoomMemory(Arc<Inner>, Copies);

impl LoomMemory {
    fn new(copies: Copies) -> Self {
        let cells = || (0..RING_BYTES / 8).map(|_| UnsafeCell::new(0)).collect();
        LoomMemory(
            Arc::new(Inner {
                header: (0..HEADER_BYTES / 4).map(|_| AtomicU32::new(0)).collect(),
                reserved: (0..HEADER_BYTES / 4)
                    .map(|_| std::sync::atomic::AtomicU32::new(0))
                    .collect(),
                rings: [cells(), cells()],
            }),
            copies,
        )
    }

    /// A memory whose header words start with the values `initial` gives (each word has one
    /// initial value instead of a history of stores for loom to choose from); payloads are
    /// copied word by word.
    fn with_header(initial: impl Fn(usize) -> u32) -> Self {
        let cells = || (0..RING_BYTES / 8).map(|_| UnsafeCell::new(0)).collect();
        LoomMemory(
            Arc::new(Inner {
                header: (0..HEADER_BYTES / 4)
                    .map(|index| AtomicU32::new(initial(4 * index)))
                    .collect(),
                reserved: (0..HEADER_BYTES / 4)
                    .map(|_| std::sync::atomic::AtomicU32::new(0))
                    .collect(),
                rings: [cells(), cells()],
            }),
            Copies::Words,
        )
    }

    fn cell(&self, off: usize) -> &UnsafeCell<u64> {
        assert!(off % 8 == 0, "misaligned data access {off:#x}");
        let (ring, base) = if off >= RING1 { (1, RING1) } else { (0, RING0) };
        assert!(
            off >= base && off < base + RING_BYTES,
            "access outside the model {off:#x}"
        );
        &self.0.rings[ring][(off - base) / 8]
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0 && off < HEADER_BYTES,
            "u32 access outside the header {off:#x}"
        );
        &self.0.header[off / 4]
    }
}

impl SharedMemory for LoomMemory {
    fn len(&self) -> usize {
        RING1 + 0x1000
    }

    fn load_u32(&self, off: usize) -> u32 {
        if modelled(off) {
            self.word(off).load(Ordering::Relaxed)
        } else {
            self.word(off);
            panic!("the protocol read the reserved word at {off:#x}")
        }
    }

    fn store_u32(&self, off: usize, v: u32) {
        if modelled(off) {
            self.word(off).store(v, Ordering::Relaxed);
        } else {
            self.word(off);
            self.0.reserved[off / 4].store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn load_u64(&self, off: usize) -> u64 {
        if off < HEADER_BYTES {
            u64::from(self.load_u32(off)) | (u64::from(self.load_u32(off + 4)) << 32)
        } else {
            // SAFETY: loom's cell checks that no `with_mut` of this cell races with this read;
            // the raw pointer it hands out is valid for the duration of the closure.
            self.cell(off).with(|pointer| unsafe { *pointer })
        }
    }

    fn store_u64(&self, off: usize, v: u64) {
        if off < HEADER_BYTES {
            self.store_u32(off, v as u32);
            self.store_u32(off + 4, (v >> 32) as u32);
        } else {
            // SAFETY: loom's cell checks that no other access of this cell races with this
            // write; the raw pointer is valid for the duration of the closure.
            self.cell(off).with_mut(|pointer| unsafe { *pointer = v })
        }
    }

    fn store_words(&self, off: usize, bytes: &[u8]) {
        let words = bytes.chunks_exact(8).enumerate();
        let store = |(index, chunk): (usize, &[u8])| {
            self.store_u64(
                off + 8 * index,
                u64::from_le_bytes(chunk.try_into().unwrap()),
            )
        };
        match self.1 {
            Copies::Words => words.for_each(store),
            Copies::Reversed => words.rev().for_each(store),
        }
    }

    fn load_words(&self, off: usize, buf: &mut [u8]) {
        let words = buf.chunks_exact_mut(8).enumerate();
        let load = |(index, chunk): (usize, &mut [u8])| {
            chunk.copy_from_slice(&self.load_u64(off + 8 * index).to_le_bytes())
        };
        match self.1 {
            Copies::Words => words.for_each(load),
            Copies::Reversed => words.rev().for_each(load),
        }
    }

    fn fence(&self, kind: Fence) {
        fence(match kind {
            Fence::Acquire => Ordering::Acquire,
            Fence::StoreStore | Fence::LoadStore => Ordering::Release,
            Fence::Full => Ordering::SeqCst,
        });
    }
}

fn geometry() -> Geometry {
    let geometry = Geometry::with_ring_bytes(RING1 + 0x1000, [RING_BYTES, RING_BYTES]).unwrap();
    assert_eq!(geometry.rings[0].data_offset, RING0);
    assert_eq!(geometry.rings[1].data_offset, RING1);
    geometry
}

fn message(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|index| seed ^ (index as u8 * 3)).collect()
}

/// Runs `model` under loom once per memory backend.
fn on_both_backends(model: fn(Copies)) {
    for copies in [Copies::Words, Copies::Reversed] {
        loom::model(move || model(copies));
    }
}

/// Three messages, the third wrapping behind a padding record once the first is released;
/// the producer publishes once per message.
#[test]
fn send_recv_with_wrap() {
    // Records: 32 (24 bytes), 24 (16 bytes), then 16 (8 bytes) does not fit in the last 8:
    // padding, and the record at offset 0 reuses the first message's bytes.
    const LENS: [usize; 3] = [24, 16, 8];
    on_both_backends(|copies| {
        let memory = LoomMemory::new(copies);
        let guest = Region::create(memory.clone(), geometry()).unwrap();
        let peer = Region::attach(memory).unwrap();
        let (mut producer, _) = guest.endpoints(Role::Guest);
        let (_, mut consumer) = peer.endpoints(Role::Peer);
        let sender = thread::spawn(move || {
            for (seed, len) in LENS.into_iter().enumerate() {
                let msg = message(seed as u8, len);
                loop {
                    match producer.send(&msg) {
                        Ok(()) => break,
                        Err(SendError::Full) => thread::yield_now(),
                        Err(error) => panic!("{error}"),
                    }
                }
            }
        });
        let mut buf = [0u8; 24];
        for (seed, len) in LENS.into_iter().enumerate() {
            loop {
                match consumer.recv(&mut buf).unwrap() {
                    Some(count) => {
                        assert_eq!(count, len);
                        assert_eq!(&buf[..count], &message(seed as u8, len)[..]);
                        break;
                    }
                    None => thread::yield_now(),
                }
            }
        }
        sender.join().unwrap();
    });
}

/// Two records committed then published once; the consumer reads them in place and releases
/// both with one publish, then the producer reuses the space.
#[test]
fn batch_publish_and_zero_copy() {
    on_both_backends(|copies| {
        let memory = LoomMemory::new(copies);
        let guest = Region::create(memory.clone(), geometry()).unwrap();
        let peer = Region::attach(memory).unwrap();
        let (mut producer, _) = guest.endpoints(Role::Guest);
        let (_, mut consumer) = peer.endpoints(Role::Peer);
        let sender = thread::spawn(move || {
            for seed in 0..2u8 {
                let mut slot = producer.reserve(20).unwrap();
                slot.write(&message(seed, 20));
                slot.commit();
            }
            producer.publish();
            // 56 bytes used; this one needs the first two released.
            loop {
                match producer.send(&message(7, 24)) {
                    Ok(()) => break,
                    Err(SendError::Full) => thread::yield_now(),
                    Err(error) => panic!("{error}"),
                }
            }
        });
        let mut buf = [0u8; 24];
        let mut seen = 0u8;
        while seen < 2 {
            match consumer.read().unwrap() {
                Some(slot) => {
                    assert_eq!(slot.read(0, &mut buf), 20);
                    assert_eq!(&buf[..20], &message(seen, 20)[..]);
                    slot.release();
                    seen += 1;
                }
                None => thread::yield_now(),
            }
        }
        consumer.publish();
        loop {
            match consumer.recv(&mut buf).unwrap() {
                Some(count) => {
                    assert_eq!(&buf[..count], &message(7, 24)[..]);
                    break;
                }
                None => thread::yield_now(),
            }
        }
        sender.join().unwrap();
    });
}

/// The creator writes the header and the magic last; an attacher that sees the magic sees a
/// complete, valid header, and a Ready state word after the creator set it.
#[test]
fn attach_sees_a_complete_header() {
    loom::model(|| {
        let memory = LoomMemory::new(Copies::Words);
        let creator_memory = memory.clone();
        let creator = thread::spawn(move || {
            let region = Region::create(creator_memory, geometry()).unwrap();
            region.set_state(Role::Guest, sramlink_ring::SideState::Ready);
        });
        let region = loop {
            match Region::attach(memory.clone()) {
                Ok(region) => break region,
                Err(sramlink_ring::Error::BadMagic { .. }) => thread::yield_now(),
                Err(error) => panic!("attach saw a partial header: {error}"),
            }
        };
        assert_eq!(*region.geometry(), geometry());
        creator.join().unwrap();
        assert_eq!(
            region.state(Role::Guest),
            Ok(sramlink_ring::SideState::Ready)
        );
    });
}

// ---- Models that justify one barrier each (ABI 1.1 review) ---------------------------------
//
// Each of these fails when the barrier named in its comment is removed; that was checked by
// removing it and running the model (see the barrier's own comment in `ring/src`).

/// Loops `op` until it yields a value, yielding to loom in between.
fn until<T>(mut op: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(value) = op() {
            return value;
        }
        thread::yield_now();
    }
}

/// A peer attaches (its consumer starts from the shared indices) while the guest publishes a
/// message: the consumer's start `ACQUIRE` orders its record loads after the index load.
#[test]
fn consumer_attach_races_a_live_producer() {
    loom::model(|| {
        let memory = LoomMemory::new(Copies::Words);
        let guest = Region::create(memory.clone(), geometry()).unwrap();
        let (mut producer, _) = guest.endpoints(Role::Guest);
        let sender = thread::spawn(move || producer.send(&message(3, 16)).unwrap());
        let peer = Region::attach(memory).unwrap();
        let (_, mut consumer) = peer.endpoints(Role::Peer);
        let mut buf = [0u8; 16];
        let count = until(|| consumer.recv(&mut buf).unwrap());
        assert_eq!(&buf[..count], &message(3, 16)[..]);
        sender.join().unwrap();
    });
}

/// A new producer starts from the shared indices while the consumer reads and releases the
/// ring's only record: the producer's start `ACQUIRE` orders its stores into the released
/// space after the consumer's loads of it.
#[test]
fn producer_attach_waits_for_released_space() {
    loom::model(|| {
        let memory = LoomMemory::new(Copies::Words);
        let guest = Region::create(memory.clone(), geometry()).unwrap();
        let peer = Region::attach(memory.clone()).unwrap();
        // 56 bytes of the 64-byte ring in use: a 24-byte record needs the first one back.
        {
            let (mut old_producer, _) = peer.endpoints(Role::Peer);
            old_producer.send(&message(1, 24)).unwrap();
            old_producer.send(&message(2, 16)).unwrap();
        }
        let (_, mut consumer) = guest.endpoints(Role::Guest);
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 24];
            let count = until(|| consumer.recv(&mut buf).unwrap());
            assert_eq!(&buf[..count], &message(1, 24)[..]);
        });
        let (mut producer, _) = peer.endpoints(Role::Peer);
        until(|| match producer.send(&message(9, 8)) {
            Ok(()) => Some(()),
            Err(SendError::Full) => None,
            Err(error) => panic!("{error}"),
        });
        reader.join().unwrap();
    });
}

/// The Stop/Stopped handshake: the guest publishes its Stats reply, then stores Stopped. A
/// peer that sees Stopped must find the reply (the guest's FULL before the state store, the
/// peer's ACQUIRE after the state load).
#[test]
fn stopped_comes_after_the_last_reply() {
    loom::model(|| {
        let memory = LoomMemory::new(Copies::Words);
        let guest = Region::create(memory.clone(), geometry()).unwrap();
        guest.set_state(Role::Guest, SideState::Ready);
        let peer = Region::attach(memory).unwrap();
        let (mut producer, _) = guest.endpoints(Role::Guest);
        let (_, mut consumer) = peer.endpoints(Role::Peer);
        let stopper = thread::spawn(move || {
            producer.send(&message(6, 8)).unwrap();
            guest.set_state(Role::Guest, SideState::Stopped);
        });
        let mut buf = [0u8; 8];
        loop {
            if let Some(count) = consumer.recv(&mut buf).unwrap() {
                assert_eq!(&buf[..count], &message(6, 8)[..]);
                break;
            }
            if peer.state(Role::Guest) == Ok(SideState::Stopped) {
                let count = consumer
                    .recv(&mut buf)
                    .unwrap()
                    .expect("the guest said Stopped before its last reply was visible");
                assert_eq!(&buf[..count], &message(6, 8)[..]);
                break;
            }
            thread::yield_now();
        }
        stopper.join().unwrap();
    });
}

/// A guest re-creates the region over its previous header (another size) while a peer
/// attaches: the peer gets the old header or the new one, whole, never a mix.
///
/// The creator makes some 130 stores: the model bounds preemptions to 2 to stay tractable
/// (loom still explores every value each relaxed load may return).
#[test]
fn recreating_over_an_old_header() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let old = geometry();
        let new = Geometry::with_ring_bytes(RING1 + 0x800, [RING_BYTES, RING_BYTES]).unwrap();
        // The previous boot's header, created outside the model (its history is not part of
        // the race): generation 1.
        let words: Vec<std::sync::atomic::AtomicU32> = (0..(RING1 + 0x1000) / 4)
            .map(|_| std::sync::atomic::AtomicU32::new(0))
            .collect();
        let first = Region::create(sramlink_ring::AtomicMemory::new(&words[..]), old).unwrap();
        assert_eq!(first.info().generation, Some(1));
        let memory = LoomMemory::with_header(|off| {
            words[off / 4].load(std::sync::atomic::Ordering::Relaxed)
        });
        let creator_memory = memory.clone();
        let creator = thread::spawn(move || {
            let region = Region::create(creator_memory, new).unwrap();
            assert_eq!(region.info().generation, Some(2));
        });
        let region = until(|| match Region::attach(memory.clone()) {
            Ok(region) => Some(region),
            Err(Error::BadMagic { .. } | Error::Restarted { .. }) => None,
            Err(error) => panic!("attach saw a mixed header: {error}"),
        });
        let seen = (*region.geometry(), region.info().generation);
        assert!(
            seen == (old, Some(1)) || seen == (new, Some(2)),
            "attached a mix of two headers: {seen:?}"
        );
        creator.join().unwrap();
    });
}

/// A new peer starts a session while the old session's request and reply are still in the
/// rings: the guest never handles the old request after acknowledging, the peer never sees the
/// old reply, and the new message and its answer arrive exactly once.
#[test]
fn session_discards_the_old_session() {
    loom::model(|| {
        let memory = LoomMemory::new(Copies::Words);
        let guest = Region::create(memory.clone(), geometry()).unwrap();
        guest.set_state(Role::Guest, SideState::Ready);
        let peer = Region::attach(memory).unwrap();
        // What a killed peer and the guest left: an old request in ring 1, an old reply in 0.
        {
            let (mut old_peer, _) = peer.endpoints(Role::Peer);
            old_peer.send(&message(0xa0, 8)).unwrap();
            let (mut guest_producer, _) = guest.endpoints(Role::Guest);
            guest_producer.send(&message(0xb0, 8)).unwrap();
        }
        let guest_thread = thread::spawn(move || {
            let request = until(|| guest.pending_session(0));
            let (_, mut producer, mut consumer) = guest.acknowledge_session(request).unwrap();
            let mut buf = [0u8; 8];
            let count = until(|| consumer.recv(&mut buf).unwrap());
            assert_eq!(
                &buf[..count],
                &message(1, 8)[..],
                "an old request reached the guest"
            );
            producer.send(&message(2, 8)).unwrap();
            assert_eq!(consumer.recv(&mut buf).unwrap(), None);
        });
        let pending = peer.request_session().unwrap();
        let (_, mut producer, mut consumer) = until(|| peer.session_started(pending).unwrap());
        producer.send(&message(1, 8)).unwrap();
        let mut buf = [0u8; 8];
        let count = until(|| consumer.recv(&mut buf).unwrap());
        assert_eq!(
            &buf[..count],
            &message(2, 8)[..],
            "an old reply reached the new peer"
        );
        guest_thread.join().unwrap();
        assert_eq!(consumer.recv(&mut buf).unwrap(), None);
    });
}

/// The notification hold-off (ABI §4.6): the consumer arms, looks at the ring again and sleeps
/// only if it is still empty; the producer publishes, then notifies if the consumer is armed.
/// Whatever the interleaving, a consumer that goes to sleep gets a notification — or it saw
/// the message.
#[test]
fn hold_off_loses_no_wake_up() {
    use loom::sync::atomic::AtomicBool;
    loom::model(|| {
        let memory = LoomMemory::new(Copies::Words);
        let guest = Region::create(memory.clone(), geometry()).unwrap();
        let peer = Region::attach(memory).unwrap();
        let (_, mut consumer) = guest.endpoints(Role::Guest);
        let (mut producer, _) = peer.endpoints(Role::Peer);
        let notified = Arc::new(AtomicBool::new(false));
        let notifier = Arc::clone(&notified);
        let sender = thread::spawn(move || {
            producer.send(&message(4, 8)).unwrap();
            if peer.notify_needed(Role::Guest) {
                notifier.store(true, Ordering::Relaxed);
            }
        });
        let mut buf = [0u8; 8];
        let mut got = consumer.recv(&mut buf).unwrap();
        let mut slept = false;
        if got.is_none() {
            guest.arm(Role::Guest);
            got = consumer.recv(&mut buf).unwrap();
            slept = got.is_none();
            if !slept {
                guest.disarm(Role::Guest);
            }
            // A sleeper stays armed until a notification wakes it (then it disarms).
        }
        sender.join().unwrap();
        if slept {
            assert!(
                notified.load(Ordering::Relaxed),
                "the consumer went to sleep with a message pending and no notification coming"
            );
        }
    });
}
