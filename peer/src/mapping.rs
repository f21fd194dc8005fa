//! Maps the shared region — a host file, the sramlink module's device, or `/dev/mem` — as a
//! raw mapping, and hands out memory handles that cannot outlive it.
//!
//! The region is written concurrently by another party (the guest, or QEMU for a RAM file),
//! so no Rust reference (`&[u8]`, `&mut [u8]`) is ever formed over it: the mapping is kept
//! as a base pointer and a length, and every access goes through the ring's volatile
//! [`SharedMemory`] handle, [`RegionMemory`], which borrows the [`MappedRegion`] and so
//! cannot be used after the region is unmapped.

use std::fs::OpenOptions;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use sramlink_ring::{Fence, MemoryType, SharedMemory, VolatileMemory};

use crate::device::{OpenDevice, RegionInfo};
use crate::devicetree::PhysRange;
use crate::error::PeerError;

/// The device that exposes physical memory.
const DEV_MEM: &str = "/dev/mem";

/// What the module route is called in messages that point to it.
pub const MODULE_ROUTE: &str = "the sramlink dom0 module (dom0-module/: load sramlink.ko; the \
    peer then finds /dev/sramlink0 by itself, or takes --device /dev/sramlink0; no root, no \
    iomem=relaxed)";

/// How the region was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A host file, mapped `MAP_SHARED` (QEMU's RAM backing file).
    File {
        /// The file.
        path: PathBuf,
        /// Offset of the region in it.
        offset: u64,
    },
    /// The sramlink module's character device.
    Device {
        /// `/dev/sramlinkN`.
        path: PathBuf,
        /// The region as the module reports it.
        info: RegionInfo,
    },
    /// A physical range of `/dev/mem` (`O_SYNC`: uncached).
    DevMem {
        /// The range.
        range: PhysRange,
    },
}

impl std::fmt::Display for Route {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::File { path, offset } => {
                write!(formatter, "file {} at offset {offset:#x}", path.display())
            }
            Route::Device { path, info } => write!(
                formatter,
                "{} through {} (the sramlink module, {})",
                info.range.base_size(),
                path.display(),
                info.mapping_name()
            ),
            Route::DevMem { range } => write!(
                formatter,
                "{} through /dev/mem (uncached)",
                range.base_size()
            ),
        }
    }
}

/// A shared mapping of the region, unmapped when dropped. Never dereferenced as a slice.
#[derive(Debug)]
pub struct MappedRegion {
    base: NonNull<u8>,
    len: usize,
    route: Route,
}

// SAFETY: a MappedRegion owns a process-wide mapping; nothing about it is tied to the thread
// that made it (munmap may run on any thread).
unsafe impl Send for MappedRegion {}
// SAFETY: `&MappedRegion` only reads the immutable base, length and route, or makes a
// RegionMemory, whose accesses are volatile word accesses designed for concurrent use.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: sizes are checked to be non-zero).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How the region was reached.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The memory type of this mapping, which picks the ring's payload copies: a file mapping
    /// and a cacheable module mapping are Normal memory (plain copies), `/dev/mem` and an
    /// uncached module mapping Device memory (aligned volatile words only).
    pub fn memory_type(&self) -> MemoryType {
        match &self.route {
            Route::File { .. } => MemoryType::Normal,
            Route::Device { info, .. } if info.cacheable => MemoryType::Normal,
            Route::Device { .. } | Route::DevMem { .. } => MemoryType::Device,
        }
    }

    /// The handle the ring accesses the region through; it borrows `self`, so the region
    /// stays mapped for as long as any handle (or clone of it) exists.
    pub fn memory(&self) -> Result<RegionMemory<'_>, PeerError> {
        // The mapping is unmapped only in Drop, which the borrow in `RegionMemory<'_>` keeps
        // from running while a handle exists. Nothing in this program forms references into
        // it; all accesses are VolatileMemory's: aligned 32/64-bit volatile accesses, plus
        // plain payload copies only when `memory_type` says the mapping is Normal memory.
        let (base, len, memory_type) = (self.base.as_ptr(), self.len, self.memory_type());
        // SAFETY: `base..base + len` is a live read/write MAP_SHARED mapping owned by `self`,
        // of the memory type `memory_type` says, and outlives the handle (see above).
        let memory = unsafe { VolatileMemory::with_type(base, len, memory_type) }
            .map_err(|error| PeerError::region(error.to_string()))?;
        Ok(RegionMemory {
            memory,
            mapping: PhantomData,
        })
    }

    /// Maps `size` bytes at `offset` of `path`, shared with every other mapping of the file
    /// (QEMU's `memory-backend-file,share=on` RAM file).
    pub fn map_file(path: &Path, offset: u64, size: u64) -> Result<Self, PeerError> {
        let page = page_size();
        check_geometry("offset", offset, size, page)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| match error.kind() {
                io::ErrorKind::NotFound => {
                    PeerError::region(format!("no such file: {}", path.display()))
                }
                _ => PeerError::region(format!("cannot open {}: {error}", path.display())),
            })?;
        let file_len = file
            .metadata()
            .map_err(|error| PeerError::region(format!("cannot stat {}: {error}", path.display())))?
            .len();
        let end = offset.saturating_add(size);
        if file_len < end {
            return Err(PeerError::region(format!(
                "{} is too small: {file_len:#x} bytes, but offset {offset:#x} + size {size:#x} \
                 needs {end:#x}",
                path.display()
            )));
        }
        let base = map_shared(file.as_fd(), offset, size).map_err(|error| {
            PeerError::region(format!(
                "cannot map {} at offset {offset:#x} size {size:#x}: {error}",
                path.display()
            ))
        })?;
        Ok(Self {
            base,
            len: to_usize(size)?,
            route: Route::File {
                path: path.to_path_buf(),
                offset,
            },
        })
    }

    /// Maps the whole region the sramlink module's device `path` serves; its size comes from
    /// the module. Needs only access to the device node, not root.
    pub fn map_device(path: &Path) -> Result<Self, PeerError> {
        Self::map_open_device(OpenDevice::open(path, page_size())?)
    }

    /// Maps the region of a device already opened (and asked) by [`OpenDevice::open`].
    pub fn map_open_device(device: OpenDevice) -> Result<Self, PeerError> {
        let size = device.info.range.size();
        let base = map_shared(device.file.as_fd(), 0, size).map_err(|error| {
            PeerError::region(format!(
                "mmap of {} ({}) failed: {error}",
                device.path.display(),
                device.info.range
            ))
        })?;
        Ok(Self {
            base,
            len: to_usize(size)?,
            route: Route::Device {
                path: device.path,
                info: device.info,
            },
        })
    }

    /// Maps the physical range through `/dev/mem` (`O_SYNC`: uncached on arm64). Needs root,
    /// and `iomem=relaxed` when a driver (the sram driver) claims the range.
    pub fn map_dev_mem(range: PhysRange) -> Result<Self, PeerError> {
        let page = page_size();
        check_geometry("base", range.start(), range.size(), page)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        require_root(unsafe { libc::geteuid() }, Some(range))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_SYNC | libc::O_CLOEXEC)
            .open(DEV_MEM)
            .map_err(|error| dev_mem_open_error(&error))?;
        let base = map_shared(file.as_fd(), range.start(), range.size())
            .map_err(|error| dev_mem_mmap_error(range, &error))?;
        Ok(Self {
            base,
            len: to_usize(range.size())?,
            route: Route::DevMem { range },
        })
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // SAFETY: base/len describe exactly the mapping this value made; every RegionMemory
        // borrowing it is gone (the borrow checker ends them before this drop runs).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The ring's view of a [`MappedRegion`]: volatile word accesses, valid only while the
/// mapping it borrows lives.
///
/// The borrow is what keeps the region mapped: using a handle after its region is dropped
/// (unmapped) does not compile.
///
/// ```compile_fail,E0505
/// use sramlink_peer::mapping::MappedRegion;
/// use sramlink_ring::SharedMemory;
///
/// let region = MappedRegion::map_file(std::path::Path::new("/dev/shm/ram"), 0, 4096).unwrap();
/// let memory = region.memory().unwrap();
/// drop(region);
/// memory.load_u32(0);
/// ```
#[derive(Debug, Clone)]
pub struct RegionMemory<'mapping> {
    memory: VolatileMemory,
    mapping: PhantomData<&'mapping MappedRegion>,
}

impl SharedMemory for RegionMemory<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.memory.len()
    }

    #[inline]
    fn load_u32(&self, off: usize) -> u32 {
        self.memory.load_u32(off)
    }

    #[inline]
    fn store_u32(&self, off: usize, v: u32) {
        self.memory.store_u32(off, v)
    }

    #[inline]
    fn load_u64(&self, off: usize) -> u64 {
        self.memory.load_u64(off)
    }

    #[inline]
    fn store_u64(&self, off: usize, v: u64) {
        self.memory.store_u64(off, v)
    }

    #[inline]
    fn fence(&self, kind: Fence) {
        self.memory.fence(kind)
    }
}

/// A new read/write `MAP_SHARED` mapping of `size` bytes at `offset` of `fd`.
fn map_shared(fd: BorrowedFd<'_>, offset: u64, size: u64) -> io::Result<NonNull<u8>> {
    let len = usize::try_from(size)
        .map_err(|_| io::Error::other(format!("size {size:#x} does not fit in usize")))?;
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::other(format!("offset {offset:#x} does not fit in off_t")))?;
    // SAFETY: asks the kernel for a new shared mapping at an address of its choice (null
    // hint, no MAP_FIXED), so no existing mapping is replaced; `fd` is open for the call.
    // The mapping stays valid after the descriptor is closed.
    let address = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(address.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// /dev/mem is for root only; say so (and name the module route) before the kernel answers
/// with a bare EACCES.
/// `range` is `None` while the region is still to be found (in the device tree, which Linux
/// also lets only root read).
pub fn require_root(euid: u32, range: Option<PhysRange>) -> Result<(), PeerError> {
    if euid == 0 {
        return Ok(());
    }
    let what = range.map_or("the region".to_string(), |range| {
        range.base_size().to_string()
    });
    Err(PeerError::region(format!(
        "mapping {what} through /dev/mem needs root (running as uid {euid}); without root, \
         use {MODULE_ROUTE}"
    )))
}

/// The message for `/dev/mem` failing to open (lockdown closes it even for root).
fn dev_mem_open_error(error: &io::Error) -> PeerError {
    match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => PeerError::region(format!(
            "cannot open /dev/mem: {error} (kernel lockdown, e.g. under Secure Boot, closes \
             /dev/mem even for root); use {MODULE_ROUTE}"
        )),
        _ => PeerError::region(format!("cannot open /dev/mem: {error}")),
    }
}

/// The message for a refused `/dev/mem` mapping; EPERM gets the strict-devmem explanation.
fn dev_mem_mmap_error(range: PhysRange, error: &io::Error) -> PeerError {
    if error.raw_os_error() == Some(libc::EPERM) {
        PeerError::region(format!(
            "mmap of /dev/mem at {} failed with EPERM (Operation not permitted): strict \
             devmem (CONFIG_IO_STRICT_DEVMEM) refused it because the range is claimed by a \
             driver (the sram driver claims mmio-sram nodes); use {MODULE_ROUTE}, or, as a \
             fallback, boot dom0 with `iomem=relaxed` on its command line",
            range.base_size()
        ))
    } else {
        PeerError::region(format!(
            "mmap of /dev/mem at {} failed: {error}",
            range.base_size()
        ))
    }
}

/// Checks that `start` (named `what`) is page-aligned and `size` is non-zero.
fn check_geometry(what: &str, start: u64, size: u64, page: u64) -> Result<(), PeerError> {
    if start % page != 0 {
        return Err(PeerError::region(format!(
            "{what} {start:#x} is not page-aligned (page size {page:#x})"
        )));
    }
    if size == 0 {
        return Err(PeerError::region("region size is 0"));
    }
    Ok(())
}

fn to_usize(size: u64) -> Result<usize, PeerError> {
    usize::try_from(size)
        .map_err(|_| PeerError::region(format!("size {size:#x} does not fit in the address space")))
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|&size| size > 0)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(len: usize) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("tempfile");
        file.write_all(&vec![0u8; len]).expect("fill");
        file
    }

    #[test]
    fn maps_a_file_shared() {
        let page = page_size() as usize;
        let file = file_of(3 * page);
        let region = MappedRegion::map_file(file.path(), page as u64, page as u64).expect("map");
        assert_eq!(region.len(), page);
        assert_eq!(
            region.route(),
            &Route::File {
                path: file.path().to_path_buf(),
                offset: page as u64
            }
        );
        {
            let memory = region.memory().expect("handle");
            memory.store_u64(8, 0x1122_3344_5566_77a5);
            assert_eq!(memory.clone().load_u32(8), 0x5566_77a5);
        }
        drop(region);
        let bytes = std::fs::read(file.path()).expect("read");
        assert_eq!(
            bytes[page + 8],
            0xa5,
            "write must reach the file at the offset"
        );
        assert_eq!(bytes[8], 0);
    }

    #[test]
    fn file_errors_are_named() {
        let page = page_size();
        let missing = MappedRegion::map_file(Path::new("/nonexistent/ram"), 0, page).unwrap_err();
        assert_eq!(missing.message, "no such file: /nonexistent/ram");
        let file = file_of(2 * page as usize);
        let small = MappedRegion::map_file(file.path(), page, 2 * page).unwrap_err();
        assert!(small.message.contains("is too small"), "{small}");
        let unaligned = MappedRegion::map_file(file.path(), 100, page).unwrap_err();
        assert!(
            unaligned
                .message
                .contains("offset 0x64 is not page-aligned"),
            "{unaligned}"
        );
        let empty = MappedRegion::map_file(file.path(), 0, 0).unwrap_err();
        assert!(empty.message.contains("size is 0"), "{empty}");
    }

    #[test]
    fn dev_mem_checks_alignment_and_names_the_module_route() {
        let unaligned =
            MappedRegion::map_dev_mem(PhysRange::from_base_size(0x7f00_0010, 0x1000).unwrap())
                .unwrap_err();
        assert!(
            unaligned.message.contains("not page-aligned"),
            "{unaligned}"
        );
        let message = dev_mem_mmap_error(
            PhysRange::from_base_size(0x7f00_0000, 0x100_0000).unwrap(),
            &io::Error::from_raw_os_error(libc::EPERM),
        )
        .message;
        assert!(message.contains("strict devmem"), "{message}");
        assert!(message.contains("claimed by a driver"), "{message}");
        assert!(message.contains("sramlink dom0 module"), "{message}");
        assert!(message.contains("--device /dev/sramlink0"), "{message}");
        assert!(message.contains("iomem=relaxed"), "{message}");
        let lockdown = dev_mem_open_error(&io::Error::from_raw_os_error(libc::EPERM)).message;
        assert!(lockdown.contains("lockdown"), "{lockdown}");
        assert!(lockdown.contains("sramlink dom0 module"), "{lockdown}");
    }

    #[test]
    fn dev_mem_needs_root_and_names_the_module_route() {
        let range = PhysRange::from_base_size(0x7f00_0000, 0x1000).unwrap();
        assert!(require_root(0, Some(range)).is_ok());
        assert!(require_root(0, None).is_ok());
        let unknown = require_root(1000, None).unwrap_err();
        assert!(
            unknown
                .message
                .starts_with("mapping the region through /dev/mem needs root"),
            "{unknown}"
        );
        let error = require_root(1000, Some(range)).unwrap_err();
        assert!(
            error.message.contains("needs root (running as uid 1000)"),
            "{error}"
        );
        assert!(error.message.contains("sramlink dom0 module"), "{error}");
    }

    #[test]
    fn a_non_sramlink_device_is_refused() {
        let error = MappedRegion::map_device(Path::new("/dev/null")).unwrap_err();
        assert!(error.message.contains("not a sramlink device"), "{error}");
    }
}
