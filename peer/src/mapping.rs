//! Maps the shared region: a host file with `MAP_SHARED`, or a physical range of `/dev/mem`.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::ptr::NonNull;

use crate::devicetree::PhysRange;
use crate::error::PeerError;

/// The device that exposes physical memory.
const DEV_MEM: &CStr = c"/dev/mem";

/// A mapped region; unmapped when dropped.
#[derive(Debug)]
pub struct MappedRegion {
    backing: Backing,
    base: NonNull<u8>,
    len: usize,
}

#[derive(Debug)]
enum Backing {
    /// memmap2 owns the mapping (held only to keep it alive; unmapped in its Drop).
    File(#[allow(dead_code, reason = "kept for its Drop, which unmaps")] memmap2::MmapMut),
    /// A mapping of /dev/mem made with `libc::mmap`; `MappedRegion::drop` unmaps it.
    DevMem,
}

impl MappedRegion {
    /// First byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: sizes are checked to be non-zero).
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        let len = to_usize(size)?;
        // The file is mapped MAP_SHARED precisely so that another process (QEMU, i.e. the
        // guest) changes it concurrently; memmap2 calls this unsafe because such changes break
        // Rust's aliasing rules for `&[u8]`.
        // SAFETY: the peer never forms references into the mapping: all accesses go through
        // the ring's volatile SharedMemory.
        let mut mapping = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map_mut(&file)
        }
        .map_err(|error| {
            PeerError::region(format!(
                "cannot map {} at offset {offset:#x} size {size:#x}: {error}",
                path.display()
            ))
        })?;
        let base = NonNull::new(mapping.as_mut_ptr())
            .ok_or_else(|| PeerError::region("mmap returned a null mapping"))?;
        Ok(Self {
            backing: Backing::File(mapping),
            base,
            len,
        })
    }

    /// Maps the physical range through `/dev/mem` (`O_SYNC`: uncached on arm64). Needs root.
    pub fn map_dev_mem(range: PhysRange) -> Result<Self, PeerError> {
        let page = page_size();
        check_geometry("base", range.start(), range.size(), page)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        require_root(unsafe { libc::geteuid() }, range)?;
        let len = to_usize(range.size())?;
        let offset = libc::off_t::try_from(range.start()).map_err(|_| {
            PeerError::region(format!("base {:#x} does not fit in off_t", range.start()))
        })?;
        // SAFETY: DEV_MEM is a NUL-terminated path; open has no other preconditions.
        let fd = unsafe {
            libc::open(
                DEV_MEM.as_ptr(),
                libc::O_RDWR | libc::O_SYNC | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let error = io::Error::last_os_error();
            return Err(PeerError::region(format!("cannot open /dev/mem: {error}")));
        }
        // SAFETY: asks the kernel for a new shared mapping at an address of its choice
        // (null hint, no MAP_FIXED), so no existing mapping is replaced; `fd` is open.
        let address = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        let mmap_error = io::Error::last_os_error();
        // SAFETY: `fd` was opened above and is closed once; the mapping, if made, stays valid
        // after its descriptor is closed.
        unsafe { libc::close(fd) };
        if address == libc::MAP_FAILED {
            return Err(dev_mem_mmap_error(range, &mmap_error));
        }
        let base = NonNull::new(address.cast::<u8>())
            .ok_or_else(|| PeerError::region("mmap of /dev/mem returned a null mapping"))?;
        Ok(Self {
            backing: Backing::DevMem,
            base,
            len,
        })
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        if let Backing::DevMem = self.backing {
            // SAFETY: base/len describe exactly the mapping made in `map_dev_mem`, which
            // nothing uses any more (the region borrowing it is gone before the owner drops).
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        }
        // Backing::File: memmap2 unmaps in its own Drop.
    }
}

/// /dev/mem is for root only; say so before the kernel answers with a bare EACCES.
fn require_root(euid: u32, range: PhysRange) -> Result<(), PeerError> {
    if euid == 0 {
        return Ok(());
    }
    Err(PeerError::region(format!(
        "mapping {} through /dev/mem needs root (running as uid {euid})",
        range.base_size()
    )))
}

/// The message for a refused `/dev/mem` mapping; EPERM gets the strict-devmem explanation.
fn dev_mem_mmap_error(range: PhysRange, error: &io::Error) -> PeerError {
    if error.raw_os_error() == Some(libc::EPERM) {
        PeerError::region(format!(
            "mmap of /dev/mem at {} failed with EPERM (Operation not permitted): strict \
             devmem (CONFIG_IO_STRICT_DEVMEM) refused it because the range is claimed by a \
             driver (the sram driver claims mmio-sram nodes); boot dom0 with `iomem=relaxed` \
             on its command line to allow it",
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
fn page_size() -> u64 {
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
        // SAFETY: the mapping is `page` bytes long and writable; offset 0 is in bounds.
        unsafe { region.as_ptr().write_volatile(0xa5) };
        drop(region);
        let bytes = std::fs::read(file.path()).expect("read");
        assert_eq!(bytes[page], 0xa5, "write must reach the file at the offset");
        assert_eq!(bytes[0], 0);
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
    fn dev_mem_checks_alignment_and_explains_eperm() {
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
        assert!(message.contains("iomem=relaxed"), "{message}");
    }

    #[test]
    fn dev_mem_needs_root() {
        let range = PhysRange::from_base_size(0x7f00_0000, 0x1000).unwrap();
        assert!(require_root(0, range).is_ok());
        let error = require_root(1000, range).unwrap_err();
        assert!(
            error.message.contains("needs root (running as uid 1000)"),
            "{error}"
        );
    }
}
