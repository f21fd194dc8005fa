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
use sramlink_ring::{Fence, Geometry, Region, Role, SendError, SharedMemory};

const RING_BYTES: usize = 64;
const RING0: usize = 0x1000;
const RING1: usize = 0x2000;

struct Inner {
    header: Vec<AtomicU32>,
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

/// The region as loom objects; offsets outside the header and the two data areas panic.
#[derive(Clone)]
struct LoomMemory(Arc<Inner>, Copies);

impl LoomMemory {
    fn new(copies: Copies) -> Self {
        let cells = || (0..RING_BYTES / 8).map(|_| UnsafeCell::new(0)).collect();
        LoomMemory(
            Arc::new(Inner {
                header: (0..HEADER_BYTES / 4).map(|_| AtomicU32::new(0)).collect(),
                rings: [cells(), cells()],
            }),
            copies,
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
        self.word(off).load(Ordering::Relaxed)
    }

    fn store_u32(&self, off: usize, v: u32) {
        self.word(off).store(v, Ordering::Relaxed);
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
