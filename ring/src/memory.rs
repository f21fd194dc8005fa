//! Access to the shared region: aligned word loads/stores and the barriers that order them.
//!
//! The ring never touches shared memory except through [`SharedMemory`]. Implementations:
//! [`VolatileMemory`] (the real thing: a raw mapping, volatile word accesses, `dmb` barriers,
//! and payload copies chosen by the mapping's [`MemoryType`]) and [`AtomicMemory`] (relaxed
//! atomics over a heap buffer, for host tests free of data races). The loom model test provides
//! a third one whose fences are loom fences.
//!
//! Two memory backends, one ring algorithm: on [`MemoryType::Device`] every shared access is
//! an aligned volatile `u32`/`u64` (what Device memory tolerates); on [`MemoryType::Normal`]
//! (a cacheable mapping, such as a host file or a `sramlink,cacheable` guest) the payload
//! copies of [`SharedMemory::store_words`]/[`SharedMemory::load_words`] are plain
//! `copy_nonoverlapping`, the fastest correct copy. Indices and record headers stay aligned
//! volatile words on both, so the ordering protocol and its barriers are the same.

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
    /// Stores `bytes` (a whole number of 8-byte little-endian words) at `off` (8-byte
    /// aligned): the same bytes as one [`SharedMemory::store_u64`] per word.
    ///
    /// The ring calls it once per payload, so an implementation checks the range once, not
    /// per word. The default does one `store_u64` per word.
    fn store_words(&self, off: usize, bytes: &[u8]) {
        for_each_word(bytes, |index, word| self.store_u64(off + 8 * index, word));
    }
    /// Loads `buf.len()` bytes (a whole number of 8-byte words) from `off` (8-byte aligned):
    /// the same bytes as one [`SharedMemory::load_u64`] per word. The default does exactly that.
    fn load_words(&self, off: usize, buf: &mut [u8]) {
        fill_words(buf, |index| self.load_u64(off + 8 * index));
    }
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

/// Calls `f(index, word)` for each 8-byte little-endian word of `bytes` (`len % 8 == 0`),
/// reading the local buffer as whole aligned words when it is 8-aligned (strict-alignment
/// targets would otherwise assemble each word from bytes).
#[inline(always)]
fn for_each_word(bytes: &[u8], mut f: impl FnMut(usize, u64)) {
    debug_assert!(bytes.len() % 8 == 0);
    // SAFETY: `u8` and `u64` are plain integers: any 8 initialised bytes are a valid `u64`,
    // and `align_to` only puts in-bounds, 8-aligned words into the middle slice.
    let (prefix, words, _) = unsafe { bytes.align_to::<u64>() };
    if prefix.is_empty() {
        for (index, word) in words.iter().enumerate() {
            f(index, u64::from_le(*word));
        }
    } else {
        for (index, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            f(index, u64::from_le_bytes(word));
        }
    }
}

/// Fills `buf` (`len % 8 == 0`) with the little-endian words `f(0)`, `f(1)`, …, writing
/// whole aligned words when `buf` is 8-aligned.
#[inline(always)]
fn fill_words(buf: &mut [u8], mut f: impl FnMut(usize) -> u64) {
    debug_assert!(buf.len() % 8 == 0);
    // SAFETY: `u8` and `u64` are plain integers: any bit pattern is valid for both, and
    // `align_to_mut` only puts in-bounds, 8-aligned words into the middle slice.
    let (prefix, words, _) = unsafe { buf.align_to_mut::<u64>() };
    if prefix.is_empty() {
        for (index, word) in words.iter_mut().enumerate() {
            *word = f(index).to_le();
        }
    } else {
        for (index, chunk) in buf.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&f(index).to_le_bytes());
        }
    }
}

/// Payloads up to this many bytes are copied word by word even on Normal memory: below it a
/// call to `memcpy` costs more than the copy.
const SMALL_COPY_BYTES: usize = 64;

/// How this side maps the region; it decides how payload bytes may be copied.
///
/// Both sides must still map the region with the same cacheability (`docs/ABI.md` §1.1);
/// the type only changes which instructions this side may use on its own mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    /// Device memory (a guest's `xen,reg` range, dom0's `/dev/mem` opened `O_SYNC`): only
    /// aligned 32/64-bit accesses; payloads move as aligned volatile `u64` words.
    Device,
    /// Normal memory, cacheable or not (a host file mapped `MAP_SHARED`, a guest region
    /// mapped Normal write-back because of `sramlink,cacheable`): payloads are copied with
    /// `copy_nonoverlapping`, which may use any access size and alignment.
    Normal,
}

/// A region reached through a raw pointer: volatile, naturally aligned word accesses, and
/// payload copies as the mapping's [`MemoryType`] allows.
///
/// This is what the guest (identity-mapped Device or Normal memory) and the Linux peer (an
/// `mmap` of a file or of `/dev/mem`) use. Indices, states and record headers are always
/// aligned volatile words. On [`MemoryType::Device`] (the default of [`VolatileMemory::new`])
/// nothing else touches the region either: no `memcpy`, slices or `copy_nonoverlapping`, so it
/// is safe for Device memory, where unaligned accesses and `DC ZVA` fault. On
/// [`MemoryType::Normal`] payloads are copied with `copy_nonoverlapping`.
#[derive(Debug, Clone)]
pub struct VolatileMemory {
    base: *mut u8,
    len: usize,
    memory_type: MemoryType,
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
    /// Wraps the region `base..base + len`, mapped as [`MemoryType::Device`] (or as anything
    /// that takes aligned 32/64-bit accesses: this is the safe choice for every mapping).
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
        // SAFETY: the caller upholds `new`'s contract, which is `with_type`'s for Device.
        unsafe { Self::with_type(base, len, MemoryType::Device) }
    }

    /// Wraps the region `base..base + len`, mapped as `memory_type` on this side.
    ///
    /// Errors: as [`VolatileMemory::new`].
    ///
    /// # Safety
    ///
    /// As [`VolatileMemory::new`], and for [`MemoryType::Normal`]: the mapping is Normal
    /// memory (cacheable or not), so that accesses of any size and alignment work on it.
    pub unsafe fn with_type(
        base: *mut u8,
        len: usize,
        memory_type: MemoryType,
    ) -> Result<Self, Error> {
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
        Ok(Self {
            base,
            len,
            memory_type,
        })
    }

    /// The base address given to [`VolatileMemory::new`].
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// How payloads are copied (see [`MemoryType`]).
    pub fn memory_type(&self) -> MemoryType {
        self.memory_type
    }

    #[inline(always)]
    fn check(&self, off: usize, size: usize) {
        assert!(
            off % size == 0 && off <= self.len - size,
            "sramlink-ring: bad shared access at {off:#x}"
        );
    }

    /// Checks a whole-word range once: `off` 8-aligned, `count` a multiple of 8, inside.
    #[inline(always)]
    fn check_words(&self, off: usize, count: usize) {
        assert!(
            off % 8 == 0 && count % 8 == 0 && off <= self.len && count <= self.len - off,
            "sramlink-ring: bad shared access at {off:#x}+{count:#x}"
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

    #[inline]
    fn store_words(&self, off: usize, bytes: &[u8]) {
        self.check_words(off, bytes.len());
        // SAFETY: `check_words` proved `off..off + bytes.len()` inside the region, which
        // `new`'s contract keeps mapped and writable; `base + off` is 8-aligned.
        let target = unsafe { self.base.add(off) };
        match self.memory_type {
            // SAFETY: `target..+len` is in the region (above), Normal memory by `with_type`'s
            // contract, so any access size works; `bytes` is local memory, which the shared
            // region cannot overlap (nothing in this program borrows the region).
            MemoryType::Normal if bytes.len() > SMALL_COPY_BYTES => unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), target, bytes.len())
            },
            // Device memory; and short Normal payloads, where a `memcpy` call costs more than
            // the few word stores it would make.
            _ => for_each_word(bytes, |index, word| {
                // SAFETY: word `index` lies at an 8-aligned address inside the checked range.
                unsafe { target.cast::<u64>().add(index).write_volatile(word) }
            }),
        }
    }

    #[inline]
    fn load_words(&self, off: usize, buf: &mut [u8]) {
        self.check_words(off, buf.len());
        // SAFETY: as in `store_words`: the range is inside the mapped region, 8-aligned.
        let source = unsafe { self.base.add(off) }.cast_const();
        match self.memory_type {
            // SAFETY: as in `store_words`; `buf` is local memory, disjoint from the region.
            MemoryType::Normal if buf.len() > SMALL_COPY_BYTES => unsafe {
                core::ptr::copy_nonoverlapping(source, buf.as_mut_ptr(), buf.len())
            },
            // Device memory, and short Normal payloads (as in `store_words`).
            _ => fill_words(buf, |index| {
                // SAFETY: word `index` lies at an 8-aligned address inside the checked range.
                unsafe { source.cast::<u64>().add(index).read_volatile() }
            }),
        }
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

    /// Whole-word copies land where `store_u64`/`load_u64` would put them, on both memory
    /// types and from local buffers of any alignment.
    #[test]
    fn word_copies_match_word_accesses() {
        for memory_type in [MemoryType::Device, MemoryType::Normal] {
            for shift in 0..8 {
                let mut backing = [0u64; 8];
                // SAFETY: `backing` outlives `memory` and is only accessed through it; a stack
                // buffer is Normal memory.
                let memory = unsafe {
                    VolatileMemory::with_type(backing.as_mut_ptr().cast(), 64, memory_type)
                }
                .unwrap();
                let mut local = [0u8; 40];
                for (index, byte) in local.iter_mut().enumerate() {
                    *byte = index as u8 + 1;
                }
                memory.store_words(16, &local[shift..shift + 32]);
                for word in 0..4 {
                    let expected: [u8; 8] = local[shift + 8 * word..shift + 8 * word + 8]
                        .try_into()
                        .unwrap();
                    assert_eq!(memory.load_u64(16 + 8 * word), u64::from_le_bytes(expected));
                }
                assert_eq!(memory.load_u64(8), 0);
                assert_eq!(memory.load_u64(48), 0);
                let mut back = [0u8; 40];
                memory.load_words(16, &mut back[shift..shift + 32]);
                assert_eq!(back[shift..shift + 32], local[shift..shift + 32]);
            }
        }
    }

    #[test]
    #[should_panic(expected = "bad shared access")]
    fn word_copies_refuse_out_of_bounds() {
        let mut backing = [0u64; 2];
        // SAFETY: `backing` outlives `memory`; a stack buffer is Normal memory.
        let memory = unsafe {
            VolatileMemory::with_type(backing.as_mut_ptr().cast(), 16, MemoryType::Normal)
        }
        .unwrap();
        memory.store_words(8, &[0u8; 16]);
    }

    #[test]
    #[should_panic(expected = "bad shared access")]
    fn word_copies_refuse_misaligned() {
        let mut backing = [0u64; 4];
        // SAFETY: `backing` outlives `memory`.
        let memory = unsafe { VolatileMemory::new(backing.as_mut_ptr().cast(), 32) }.unwrap();
        memory.load_words(4, &mut [0u8; 8]);
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
