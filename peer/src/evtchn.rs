//! A Xen event channel to the guest through Linux's `/dev/xen/evtchn` (module `xen-evtchn`).
//!
//! The guest allocates an unbound port for dom0 and publishes it in the ring header; dom0 binds
//! it with `IOCTL_EVTCHN_BIND_INTERDOMAIN` (Linux `include/uapi/xen/evtchn.h`), which returns a
//! local port. `read()` returns fired local ports (u32 each; the port is then masked until the
//! same u32 is written back), `IOCTL_EVTCHN_NOTIFY` sends, `poll()` waits. Closing the file
//! unbinds: the guest's port becomes unbound again, so a later peer can bind it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::PeerError;

/// Where Linux puts the event-channel device.
pub const DEVICE: &str = "/dev/xen/evtchn";
/// The module that provides it (Debian: `CONFIG_XEN_DEV_EVTCHN=m`).
pub const MODULE: &str = "xen-evtchn";
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: `_IOC(_IOC_NONE, 'E', 1, sizeof(struct
/// ioctl_evtchn_bind_interdomain))`.
const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 = 0x0008_4501;
/// `IOCTL_EVTCHN_NOTIFY`: `_IOC(_IOC_NONE, 'E', 4, sizeof(struct ioctl_evtchn_notify))`.
const IOCTL_EVTCHN_NOTIFY: u64 = 0x0004_4504;

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
struct BindInterdomain {
    remote_domain: u32,
    remote_port: u32,
}

/// `struct ioctl_evtchn_notify`.
#[repr(C)]
struct Notify {
    port: u32,
}

/// An open `/dev/xen/evtchn`, not yet bound.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
}

/// A bound channel to the guest's port.
#[derive(Debug)]
pub struct EventChannel {
    file: File,
    /// Our local port.
    pub local_port: u32,
    /// The guest's port.
    pub remote_port: u32,
    /// The guest's domain id.
    pub remote_domain: u32,
}

fn missing_device(path: &Path, error: &io::Error) -> PeerError {
    PeerError::events(format!(
        "cannot open {}: {error}; the Xen event-channel device comes from the {MODULE} kernel \
         module: load it (modprobe {MODULE}, or insmod \
         /lib/modules/$(uname -r)/kernel/drivers/xen/{MODULE}.ko) or run without --events \
         to poll",
        path.display()
    ))
}

impl Device {
    /// Opens the event-channel device at `path` (normally [`DEVICE`]).
    pub fn open(path: &Path) -> Result<Device, PeerError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| missing_device(path, &error))?;
        Ok(Device {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Binds to `remote_port` of domain `remote_domain`.
    pub fn bind(self, remote_domain: u32, remote_port: u32) -> Result<EventChannel, PeerError> {
        let mut bind = BindInterdomain {
            remote_domain,
            remote_port,
        };
        // SAFETY: the ioctl reads a `struct ioctl_evtchn_bind_interdomain` (two u32, the
        // layout of `BindInterdomain`) from a live, exclusive value; the fd is open.
        let result = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                IOCTL_EVTCHN_BIND_INTERDOMAIN as _,
                &mut bind as *mut BindInterdomain,
            )
        };
        if result < 0 {
            let error = io::Error::last_os_error();
            return Err(PeerError::events(format!(
                "binding the guest's event-channel port {remote_port} (domain {remote_domain}) \
                 through {} failed: {error} (is the guest domain id right? see --guest-domid; \
                 another process may hold the port)",
                self.path.display()
            )));
        }
        Ok(EventChannel {
            file: self.file,
            local_port: result as u32,
            remote_port,
            remote_domain,
        })
    }
}

impl EventChannel {
    /// Sends an event to the guest.
    pub fn notify(&self) -> Result<(), PeerError> {
        let mut notify = Notify {
            port: self.local_port,
        };
        // SAFETY: the ioctl reads a `struct ioctl_evtchn_notify` (one u32) from a live value;
        // the fd is open and bound.
        let result = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                IOCTL_EVTCHN_NOTIFY as _,
                &mut notify as *mut Notify,
            )
        };
        if result < 0 {
            return Err(PeerError::events(format!(
                "IOCTL_EVTCHN_NOTIFY on local port {} failed: {}",
                self.local_port,
                io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Blocks until the guest notifies or `timeout` passes; whether an event came. A fired
    /// port is unmasked again (written back) before returning.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, PeerError> {
        let mut poll = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid `pollfd` for an open fd.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(PeerError::events(format!(
                "poll on {DEVICE} failed: {error}"
            )));
        }
        if ready == 0 {
            return Ok(false);
        }
        self.take()
    }

    /// Reads the fired ports (only ours is bound) and unmasks them.
    fn take(&mut self) -> Result<bool, PeerError> {
        let mut ports = [0u8; 4 * 16];
        let read = self
            .file
            .read(&mut ports)
            .map_err(|error| PeerError::events(format!("read from {DEVICE} failed: {error}")))?;
        let fired = &ports[..read - read % 4];
        if !fired.is_empty() {
            self.file.write_all(fired).map_err(|error| {
                PeerError::events(format!("unmasking through {DEVICE} failed: {error}"))
            })?;
        }
        Ok(!fired.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_encode_type_number_and_size() {
        // _IOC(dir=NONE(0), type='E', nr, size) = size << 16 | 'E' << 8 | nr.
        let ioc = |nr: u64, size: usize| (size as u64) << 16 | (b'E' as u64) << 8 | nr;
        assert_eq!(
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
            ioc(1, size_of::<BindInterdomain>())
        );
        assert_eq!(IOCTL_EVTCHN_NOTIFY, ioc(4, size_of::<Notify>()));
    }

    #[test]
    fn a_missing_device_names_the_module() {
        let error = Device::open(Path::new("/nonexistent/xen/evtchn")).unwrap_err();
        assert_eq!(error.kind, crate::error::ErrorKind::Events);
        assert!(error.message.contains("xen-evtchn"), "{}", error.message);
        assert!(error.message.contains("insmod"), "{}", error.message);
    }
}
