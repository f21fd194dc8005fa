//! Access to the shared region: aligned word loads/stores and the barriers that order them.
//!
//! The ring never touches shared memory except through [`SharedMemory`]. Implementations:
//! [`VolatileMemory`] (the real thing: a raw mapping, volatile accesses, `dmb` barriers) and
//! [`AtomicMemory`] (relaxed atomics over a heap buffer, for host tests free of data races).
//! The loom model test provides a third one whose fences are loom fences.

use core::ops::Deref;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::error::Error;

/// The barriers the ring protocol uses, named by what they order.
///
/// On AArch64 the default [`SharedMemory::fence`] issues the `dmb` given with each variant.
/// The inner-shareable (`ISH`) domain suffices because both ends of the ring are PEs of the
/// same inner-shareable domain (the cores one Xen — or one Linux — runs on); the Device
/// attribute of the memory (outer-shareable) is about the memory, while a barrier's domain is
/// about which *observers* it orders accesses for. A peer outside that domain (a non-SMP core
/// such as a Cortex-R5, or a DMA master) would need `OSH` barriers instead; see `docs/ABI.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Earlier loads before later loads and stores (acquire after reading the peer's index or
    /// state). AArch64: `dmb ishld`. Model: `fence(Acquire)`.
    Acquire,
    /// Earlier stores before later stores (producer: payload and record headers before the
    /// producer index; creator: header before magic). AArch64: `dmb ishst`. Model:
    /// `fence(Release)`.
    StoreStore,
    /// Earlier loads before later stores (consumer: payload reads before the consumer index
    /// that lets the producer overwrite them). AArch64: `dmb ishld`. Model: `fence(Release)`.
    LoadStore,
    /// All earlier accesses before all later ones (state changes). AArch64: `dmb ish`.
    /// Model: `fence(SeqCst)`.
    Full,
}

/// Word access to the shared region, by byte offset from its start.
///
/// All offsets the ring passes are aligned to the access size and inside `0..len()`;
/// implementations must still check and panic rather than access out of bounds (the ring
/// validates every value it reads from the other side before using it as an offset, so such a
/// panic would be a bug in this crate, not the peer's doing).
pub trait SharedMemory {
    /// Size of the region in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty (never true for a usable region).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Loads the little-endian `u32` at `off` (4-byte aligned).
    fn load_u32(&self, off: usize) -> u32;
    /// Stores `v` as a little-endian `u32` at `off` (4-byte aligned).
    fn store_u32(&self, off: usize, v: u32);
    /// Loads the little-endian `u64` at `off` (8-byte aligned).
    fn load_u64(&self, off: usize) -> u64;
    /// Stores `v` as a little-endian `u64` at `off` (8-byte aligned).
    fn store_u64(&self, off: usize, v: u64);
    /// Issues the barrier `kind` (see [`Fence`]); the default is the hardware barrier.
    fn fence(&self, kind: Fence) {
        hardware_fence(kind);
    }
}

/// The hardware barrier for `kind`: `dmb` on AArch64, `core::sync::atomic::fence` elsewhere.
#[inline(always)]
pub fn hardware_fence(kind: Fence) {
    #[cfg(target_arch = "aarch64")]
    match kind {
        // SAFETY: `dmb` only orders memory accesses; it reads and writes no memory or register.
        // No `nomem` option, so the compiler also keeps memory accesses on their side of it.
        // ISH: both endpoints are PEs in the same inner-shareable domain (see `Fence`).
        Fence::Acquire | Fence::LoadStore => unsafe {
            core::arch::asm!("dmb ishld", options(nostack, preserves_flags))
        },
        // SAFETY: as above; `dmb ishst` orders earlier stores before later stores, in ISH.
        Fence::StoreStore => unsafe {
            core::arch::asm!("dmb ishst", options(nostack, preserves_flags))
        },
        // SAFETY: as above; `dmb ish` orders all earlier accesses before all later ones, in ISH.
        Fence::Full => unsafe { core::arch::asm!("dmb ish", options(nostack, preserves_flags)) },
    }
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(match kind {
        Fence::Acquire => Ordering::Acquire,
        Fence::StoreStore | Fence::LoadStore => Ordering::Release,
        Fence::Full => Ordering::SeqCst,
    });
}

/// A region reached through a raw pointer with volatile, naturally aligned word accesses.
///
/// This is what the guest (identity-mapped Device or Normal memory) and the Linux peer (an
/// `mmap` of a file or of `/dev/mem`) use. It never uses `memcpy`, slices or
/// `copy_nonoverlapping` on the region, so it is safe for Device memory, where unaligned
/// accesses and `DC ZVA` fault.
#[derive(Debug, Clone)]
pub struct VolatileMemory {
    base: *mut u8,
    len: usize,
}

// SAFETY: `VolatileMemory` is a pointer to memory that is shared by design with another
// agent; every access is a volatile aligned word access and the ring protocol (one producer
// and one consumer per ring, ordered by barriers) decides who may write which word when.
// Moving the handle to another thread changes nothing about that.
unsafe impl Send for VolatileMemory {}
// SAFETY: as for `Send`: shared use from several threads is the same situation as shared use
// with the peer, which the protocol already handles.
unsafe impl Sync for VolatileMemory {}

impl VolatileMemory {
    /// Wraps the region `base..base + len`.
    ///
    /// Errors: `base` null or not 8-byte aligned, `len` smaller than 8 or not a multiple of 8.
    ///
    /// # Safety
    ///
    /// - `base..base + len` is mapped readable and writable for as long as this value and
    ///   its clones exist, and nothing else in this program accesses it except through
    ///   `VolatileMemory`/`SharedMemory` (the other agent may, that is the point).
    /// - The mapping's memory type tolerates aligned 32- and 64-bit accesses.
    pub unsafe fn new(base: *mut u8, len: usize) -> Result<Self, Error> {
        if base.is_null() || (base as usize) % 8 != 0 {
            return Err(Error::Misaligned {
                what: "region base address",
                value: base as usize as u64,
                align: 8,
            });
        }
        if len < 8 || len % 8 != 0 {
            return Err(Error::Misaligned {
                what: "region length",
                value: len as u64,
                align: 8,
            });
        }
        Ok(Self { base, len })
    }

    /// The base address given to [`VolatileMemory::new`].
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    #[inline(always)]
    fn check(&self, off: usize, size: usize) {
        assert!(
            off % size == 0 && off <= self.len - size,
            "sramlink-ring: bad shared access at {off:#x}"
        );
    }
}

impl SharedMemory for VolatileMemory {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn load_u32(&self, off: usize) -> u32 {
        self.check(off, 4);
        // SAFETY: `check` proved `off` 4-aligned and `off + 4 <= len`; `base` is 8-aligned, so
        // the address is aligned and inside the region `new`'s contract keeps mapped.
        unsafe { self.base.add(off).cast::<u32>().read_volatile() }
    }

    #[inline]
    fn store_u32(&self, off: usize, v: u32) {
        self.check(off, 4);
        // SAFETY: as in `load_u32`; the region is writable by `new`'s contract.
        unsafe { self.base.add(off).cast::<u32>().write_volatile(v) }
    }

    #[inline]
    fn load_u64(&self, off: usize) -> u64 {
        self.check(off, 8);
        // SAFETY: `check` proved `off` 8-aligned and `off + 8 <= len`; `base` is 8-aligned.
        unsafe { self.base.add(off).cast::<u64>().read_volatile() }
    }

    #[inline]
    fn store_u64(&self, off: usize, v: u64) {
        self.check(off, 8);
        // SAFETY: as in `load_u64`; the region is writable by `new`'s contract.
        unsafe { self.base.add(off).cast::<u64>().write_volatile(v) }
    }
}

/// A region made of `AtomicU32` words (e.g. `Arc<[AtomicU32]>`), accessed with relaxed
/// atomics; the ring's fences turn them into the protocol's ordering.
///
/// For host tests (threads, no data races in the Rust memory model). A `u64` access is two
/// `u32` accesses, low word first, so it is not single-copy atomic; the protocol never relies
/// on that (indices are `u32`, payload words are ordered by the index protocol, and a torn
/// magic only reads as "not yet created").
#[derive(Debug, Clone)]
pub struct AtomicMemory<B> {
    words: B,
}

impl<B: Deref<Target = [AtomicU32]> + Clone> AtomicMemory<B> {
    /// Wraps `words` (`4 * words.len()` bytes).
    pub fn new(words: B) -> Self {
        Self { words }
    }

    /// The words.
    pub fn words(&self) -> &[AtomicU32] {
        &self.words
    }

    #[inline(always)]
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0, "sramlink-ring: misaligned access at {off:#x}");
        &self.words[off / 4]
    }
}

impl<B: Deref<Target = [AtomicU32]> + Clone> SharedMemory for AtomicMemory<B> {
    fn len(&self) -> usize {
        self.words.len() * 4
    }

    fn load_u32(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Relaxed)
    }

    fn store_u32(&self, off: usize, v: u32) {
        self.word(off).store(v, Ordering::Relaxed);
    }

    fn load_u64(&self, off: usize) -> u64 {
        assert!(off % 8 == 0, "sramlink-ring: misaligned access at {off:#x}");
        let low = self.word(off).load(Ordering::Relaxed);
        let high = self.word(off + 4).load(Ordering::Relaxed);
        u64::from(low) | (u64::from(high) << 32)
    }

    fn store_u64(&self, off: usize, v: u64) {
        assert!(off % 8 == 0, "sramlink-ring: misaligned access at {off:#x}");
        self.word(off).store(v as u32, Ordering::Relaxed);
        self.word(off + 4)
            .store((v >> 32) as u32, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_memory_round_trips_words() {
        let mut backing = [0u64; 4];
        // SAFETY: `backing` outlives `memory` and is only accessed through it below.
        let memory = unsafe { VolatileMemory::new(backing.as_mut_ptr().cast(), 32) }.unwrap();
        memory.store_u64(8, 0x1122_3344_5566_7788);
        memory.store_u32(20, 0xdead_beef);
        assert_eq!(memory.load_u32(8), 0x5566_7788);
        assert_eq!(memory.load_u32(12), 0x1122_3344);
        assert_eq!(memory.load_u64(16), 0xdead_beef_0000_0000);
        assert_eq!(memory.len(), 32);
        assert_eq!(backing[1], 0x1122_3344_5566_7788);
    }

    #[test]
    fn volatile_memory_rejects_bad_regions() {
        let mut backing = [0u64; 4];
        let base: *mut u8 = backing.as_mut_ptr().cast();
        // SAFETY: constructors only; the values are dropped without any access.
        unsafe {
            assert!(VolatileMemory::new(core::ptr::null_mut(), 32).is_err());
            assert!(VolatileMemory::new(base.add(4), 16).is_err());
            assert!(VolatileMemory::new(base, 12).is_err());
            assert!(VolatileMemory::new(base, 0).is_err());
        }
    }

    #[test]
    #[should_panic(expected = "bad shared access")]
    fn volatile_memory_refuses_out_of_bounds() {
        let mut backing = [0u64; 2];
        // SAFETY: `backing` outlives `memory`.
        let memory = unsafe { VolatileMemory::new(backing.as_mut_ptr().cast(), 16) }.unwrap();
        memory.load_u64(16);
    }

    #[test]
    #[should_panic(expected = "bad shared access")]
    fn volatile_memory_refuses_misaligned() {
        let mut backing = [0u64; 2];
        // SAFETY: `backing` outlives `memory`.
        let memory = unsafe { VolatileMemory::new(backing.as_mut_ptr().cast(), 16) }.unwrap();
        memory.load_u64(4);
    }

    #[test]
    fn atomic_memory_u64_is_little_endian_pair() {
        let words: [AtomicU32; 4] = Default::default();
        let memory = AtomicMemory::new(&words[..]);
        memory.store_u64(8, 0x0102_0304_0506_0708);
        assert_eq!(memory.load_u32(8), 0x0506_0708);
        assert_eq!(memory.load_u32(12), 0x0102_0304);
        assert_eq!(memory.load_u64(8), 0x0102_0304_0506_0708);
        assert_eq!(memory.len(), 16);
    }
}
