//! The sramlink dom0 module's character devices (`/dev/sramlinkN`): finding them and asking
//! one for the region it serves (`dom0-module/sramlink.h` is the contract).
//!
//! A character device has no file length, so the region's base and size come from the
//! module's `SRAMLINK_IOC_REGION_INFO` ioctl, read once and validated before use.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::devicetree::PhysRange;
use crate::error::PeerError;

/// Where the devices appear.
pub const DEV_DIR: &str = "/dev";
/// `sramlink0`, `sramlink1`, ...
pub const DEVICE_PREFIX: &str = "sramlink";

/// `struct sramlink_region_info` of `sramlink.h`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawRegionInfo {
    base: u64,
    size: u64,
    flags: u32,
    version: u32,
}

const _: () = assert!(size_of::<RawRegionInfo>() == 24);

/// `SRAMLINK_INFO_VERSION`: the layout above.
const INFO_VERSION: u32 = 1;
/// `SRAMLINK_REGION_CACHEABLE`.
const REGION_CACHEABLE: u32 = 1 << 0;

/// Linux's `_IOR(type, nr, size)` on arm64 and x86_64 (the generic ioctl encoding).
const fn ioctl_read(kind: u32, number: u32, size: usize) -> u32 {
    (2 << 30) | ((size as u32) << 16) | (kind << 8) | number
}

/// `SRAMLINK_IOC_REGION_INFO = _IOR(0xb5, 1, struct sramlink_region_info)`.
pub const REGION_INFO_IOCTL: u32 = ioctl_read(0xb5, 1, size_of::<RawRegionInfo>());

/// What the module says about the region one device serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Physical base and size.
    pub range: PhysRange,
    /// `mmap` gives a cacheable (Normal write-back) mapping; otherwise uncached.
    pub cacheable: bool,
}

impl RegionInfo {
    /// Validates what the ioctl returned (read once, then only this value is used).
    fn from_raw(raw: RawRegionInfo, path: &Path, page: u64) -> Result<Self, PeerError> {
        if raw.version != INFO_VERSION {
            return Err(PeerError::region(format!(
                "{}: the sramlink module answers with info version {}, this peer knows {}; \
                 use a peer and module from the same release",
                path.display(),
                raw.version,
                INFO_VERSION
            )));
        }
        if raw.size == 0 || raw.base % page != 0 || raw.size % page != 0 {
            return Err(PeerError::region(format!(
                "{}: the sramlink module reports the region {:#x}+{:#x}, which is empty or not \
                 page-aligned",
                path.display(),
                raw.base,
                raw.size
            )));
        }
        let range = PhysRange::from_base_size(raw.base, raw.size).ok_or_else(|| {
            PeerError::region(format!(
                "{}: the sramlink module reports the region {:#x}+{:#x}, which runs past the end \
                 of the address space",
                path.display(),
                raw.base,
                raw.size
            ))
        })?;
        Ok(Self {
            range,
            cacheable: raw.flags & REGION_CACHEABLE != 0,
        })
    }

    /// `uncached` or `cacheable`.
    pub fn mapping_name(&self) -> &'static str {
        if self.cacheable {
            "cacheable"
        } else {
            "uncached"
        }
    }
}

/// An open sramlink device and the region it serves.
#[derive(Debug)]
pub struct OpenDevice {
    /// The device file (closed on drop; a mapping made from it outlives it).
    pub file: File,
    /// Its path, for messages and the report.
    pub path: PathBuf,
    /// The region, from the module.
    pub info: RegionInfo,
}

impl OpenDevice {
    /// Opens `path` read/write and asks the module for its region.
    pub fn open(path: &Path, page: u64) -> Result<Self, PeerError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|error| open_error(path, &error))?;
        let mut raw = RawRegionInfo::default();
        // SAFETY: `file` is an open descriptor; for this request the kernel writes at most
        // size_of::<RawRegionInfo>() bytes (the size encoded in the request) into `raw`,
        // which is a valid, writable, properly aligned value of that size.
        let result = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                REGION_INFO_IOCTL as libc::Ioctl,
                &mut raw as *mut RawRegionInfo,
            )
        };
        if result != 0 {
            let error = io::Error::last_os_error();
            return Err(if error.raw_os_error() == Some(libc::ENOTTY) {
                PeerError::region(format!(
                    "{} is not a sramlink device (it does not answer the sramlink module's \
                     REGION_INFO ioctl)",
                    path.display()
                ))
            } else {
                PeerError::region(format!(
                    "{}: the sramlink module's REGION_INFO ioctl failed: {error}",
                    path.display()
                ))
            });
        }
        let info = RegionInfo::from_raw(raw, path, page)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            info,
        })
    }
}

/// A clear message for a device that cannot be opened (missing module, missing access).
fn open_error(path: &Path, error: &io::Error) -> PeerError {
    match error.kind() {
        io::ErrorKind::NotFound => PeerError::region(format!(
            "no such device: {} (is the sramlink dom0 module loaded? insmod sramlink.ko, see \
             dom0-module/README.md)",
            path.display()
        )),
        io::ErrorKind::PermissionDenied => {
            let owner = std::fs::metadata(path)
                .map(|metadata| {
                    format!(
                        "owner uid {}, group gid {}, mode {:o}",
                        metadata.uid(),
                        metadata.gid(),
                        metadata.mode() & 0o7777
                    )
                })
                .unwrap_or_else(|_| "owner unknown".to_string());
            // SAFETY: geteuid and getegid have no preconditions and cannot fail.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            PeerError::region(format!(
                "cannot open {}: permission denied (running as uid {uid} gid {gid}; the device \
                 has {owner}): the device node's group and mode decide who may use the region, \
                 e.g. chgrp sramlink {0} && chmod 0660 {0}, or a udev rule",
                path.display()
            ))
        }
        _ => PeerError::region(format!("cannot open {}: {error}", path.display())),
    }
}

/// The `sramlinkN` character devices in `dir`, by number.
pub fn find_devices(dir: &Path) -> Result<Vec<PathBuf>, PeerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(PeerError::region(format!(
                "cannot list {}: {error}",
                dir.display()
            )));
        }
    };
    let mut devices: Vec<(u32, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let Some(number) = entry.file_name().to_str().and_then(device_number) else {
            continue;
        };
        if entry
            .file_type()
            .is_ok_and(|file_type| file_type.is_char_device())
        {
            devices.push((number, entry.path()));
        }
    }
    devices.sort();
    Ok(devices.into_iter().map(|(_, path)| path).collect())
}

/// `N` of a `sramlinkN` name (digits only).
fn device_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(DEVICE_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_number_is_the_modules() {
        // _IOR(0xb5, 1, 24 bytes), as sramlink.h says.
        assert_eq!(REGION_INFO_IOCTL, 0x8018_b501);
    }

    #[test]
    fn region_info_is_validated() {
        let path = Path::new("/dev/sramlink0");
        let good = RawRegionInfo {
            base: 0x7f00_0000,
            size: 0x100_0000,
            flags: 0,
            version: 1,
        };
        let info = RegionInfo::from_raw(good, path, 0x1000).expect("valid");
        assert_eq!(
            info.range,
            PhysRange::from_base_size(0x7f00_0000, 0x100_0000).unwrap()
        );
        assert_eq!(info.mapping_name(), "uncached");
        let cacheable = RawRegionInfo { flags: 1, ..good };
        assert!(
            RegionInfo::from_raw(cacheable, path, 0x1000)
                .expect("valid")
                .cacheable
        );
        let version = RegionInfo::from_raw(RawRegionInfo { version: 2, ..good }, path, 0x1000);
        assert!(version.unwrap_err().message.contains("info version 2"));
        for bad in [
            RawRegionInfo { size: 0, ..good },
            RawRegionInfo {
                base: 0x7f00_0800,
                ..good
            },
            RawRegionInfo {
                size: 0x1800,
                ..good
            },
        ] {
            let error = RegionInfo::from_raw(bad, path, 0x1000).unwrap_err();
            assert!(error.message.contains("not page-aligned"), "{error}");
        }
    }

    #[test]
    fn device_names_are_numbered() {
        assert_eq!(device_number("sramlink0"), Some(0));
        assert_eq!(device_number("sramlink12"), Some(12));
        for name in [
            "sramlink",
            "sramlinkx",
            "sramlink+1",
            "sramlink1a",
            "other0",
        ] {
            assert_eq!(device_number(name), None, "{name}");
        }
    }

    #[test]
    fn only_character_devices_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Regular files are not devices; /dev/null is a character device to link to.
        std::fs::write(dir.path().join("sramlink5"), b"").expect("file");
        for name in ["sramlink10", "sramlink2", "sramlinkx", "other0"] {
            std::os::unix::fs::symlink("/dev/null", dir.path().join(name)).expect("link");
        }
        // A symlink's own type is a link, not a character device: none found.
        assert!(find_devices(dir.path()).expect("lists").is_empty());
        assert!(
            find_devices(&dir.path().join("absent"))
                .expect("absent dir")
                .is_empty()
        );
    }

    #[test]
    fn opening_a_missing_or_foreign_device_is_explained() {
        let missing = OpenDevice::open(Path::new("/nonexistent/sramlink0"), 0x1000).unwrap_err();
        assert!(
            missing
                .message
                .contains("is the sramlink dom0 module loaded"),
            "{missing}"
        );
        let foreign = OpenDevice::open(Path::new("/dev/null"), 0x1000).unwrap_err();
        assert!(
            foreign.message.contains("is not a sramlink device"),
            "{foreign}"
        );
    }
}
