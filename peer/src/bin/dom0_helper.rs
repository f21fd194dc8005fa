//! sramlink-dom0-helper: what the demo's dom0 init needs besides busybox — run a command as an
//! unprivileged user, and check that the sramlink module refuses mappings beyond its region.
//!
//! Debian's static busybox has no `su`/`chpst`, and its `setpriv` cannot change the user, so
//! the initramfs carries this instead. On a real dom0 use the system's own tools (`su`,
//! `sudo -u`, `setpriv --reuid`).

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use sramlink_peer::device::OpenDevice;
use sramlink_peer::mapping::page_size;

/// Helpers for the sramlink demo's dom0 init.
#[derive(Debug, Parser)]
#[command(name = "sramlink-dom0-helper", version)]
struct Cli {
    #[command(subcommand)]
    command: Helper,
}

#[derive(Debug, Subcommand)]
enum Helper {
    /// Drop to --uid/--gid (no supplementary groups), then exec the command.
    RunAs {
        /// User id to become.
        #[arg(long)]
        uid: u32,
        /// Group id to become.
        #[arg(long)]
        gid: u32,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Check a sramlink device: a mapping of exactly its region works, one past its end (longer,
    /// or at an offset outside it) is refused.
    MmapBeyond {
        /// The device, e.g. /dev/sramlink0.
        device: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Helper::RunAs { uid, gid, command } => run_as(uid, gid, &command),
        Helper::MmapBeyond { device } => mmap_beyond(&device),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sramlink-dom0-helper: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Becomes `uid`/`gid` for good, then replaces this process with `command`.
fn run_as(uid: u32, gid: u32, command: &[OsString]) -> Result<(), String> {
    let os_error = |what: &str| format!("{what} failed: {}", io::Error::last_os_error());
    // SAFETY: setgroups reads 0 entries from a null list (clearing the supplementary groups).
    if unsafe { libc::setgroups(0, core::ptr::null()) } != 0 {
        return Err(os_error("setgroups([])"));
    }
    // SAFETY: setgid has no memory preconditions; the group first, while still root.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(os_error(&format!("setgid({gid})")));
    }
    // SAFETY: setuid has no memory preconditions; as root it sets real, effective and saved ids.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(os_error(&format!("setuid({uid})")));
    }
    // SAFETY: the id getters have no preconditions and cannot fail.
    let ids = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if ids != (uid, uid, gid, gid) {
        return Err(format!("ids are {ids:?} after dropping to {uid}:{gid}"));
    }
    // SAFETY: as above; with every id dropped, becoming root again must fail.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err("could become root again after dropping privileges".to_string());
    }
    let (program, arguments) = command.split_first().ok_or("no command given")?;
    let error = Command::new(program).args(arguments).exec();
    Err(format!("cannot run {}: {error}", program.to_string_lossy()))
}

/// Tries `mmap(length, offset)` of `device` shared read/write; unmaps at once on success.
fn try_map(device: &OpenDevice, length: u64, offset: u64) -> io::Result<()> {
    let length = usize::try_from(length).map_err(io::Error::other)?;
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: a new mapping at an address the kernel chooses (no MAP_FIXED), so nothing
    // existing is replaced; the descriptor is open for the call. Nothing reads or writes it.
    let address = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            device.file.as_raw_fd(),
            offset,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `address`/`length` is exactly the mapping just made, used by nothing.
    unsafe { libc::munmap(address, length) };
    Ok(())
}

/// The device maps its region and refuses anything past it.
fn mmap_beyond(path: &Path) -> Result<(), String> {
    let page = page_size();
    let device = OpenDevice::open(path, page).map_err(|error| error.to_string())?;
    let size = device.info.range.size();
    try_map(&device, size, 0).map_err(|error| {
        format!(
            "mmap of the whole region ({size:#x} bytes) of {} failed: {error}",
            path.display()
        )
    })?;
    println!(
        "sramlink-dom0-helper: mmap of {} at offset 0x0 length {size:#x} (the region {}): ok",
        path.display(),
        device.info.range
    );
    let mut failures = Vec::new();
    for (length, offset, what) in [
        (size + page, 0, "one page longer than the region"),
        (page, size, "the page after the region"),
        (2 * page, size - page, "the last page and the one after it"),
    ] {
        match try_map(&device, length, offset) {
            Ok(()) => failures.push(format!(
                "mmap of {what} (offset {offset:#x} length {length:#x}) was allowed"
            )),
            Err(error) => println!(
                "sramlink-dom0-helper: mmap of {} at offset {offset:#x} length {length:#x} ({what}) \
                 refused: {error}",
                path.display()
            ),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
