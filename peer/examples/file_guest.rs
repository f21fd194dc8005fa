//! A stand-in guest on the host: serves the ring over a shared file, for trying the peer
//! (including the AArch64 build under qemu-user) without booting QEMU.
//!
//! `cargo run -p sramlink-peer --example file_guest -- FILE OFFSET SIZE` creates FILE if
//! needed, creates the region at OFFSET (SIZE bytes), declares the guest Ready and runs the
//! ring crate's `Service` until the peer sends Stop; then prints the guest's counters.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;

use sramlink_peer::mapping::MappedRegion;
use sramlink_peer::numbers::parse_number;
use sramlink_ring::service::Service;
use sramlink_ring::{Geometry, Region, Role, SideState, VolatileMemory};

fn main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("file_guest: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, offset, size] = args.as_slice() else {
        return Err("usage: file_guest FILE OFFSET SIZE".to_string());
    };
    let path = PathBuf::from(file);
    let offset = parse_number(offset)?;
    let size = parse_number(size)?;
    let handle = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let needed = offset + size;
    if handle.metadata().map_err(|error| error.to_string())?.len() < needed {
        handle.set_len(needed).map_err(|error| error.to_string())?;
    }
    let mapping = MappedRegion::map_file(&path, offset, size).map_err(|error| error.to_string())?;
    // SAFETY: `mapping` lives until the end of this function, after the service returned, and
    // this process touches it only through the VolatileMemory handle.
    let memory = unsafe { VolatileMemory::new(mapping.as_ptr(), mapping.len()) }
        .map_err(|error| error.to_string())?;
    let geometry = Geometry::for_region(mapping.len()).map_err(|error| error.to_string())?;
    let region = Region::create(memory, geometry).map_err(|error| error.to_string())?;
    region.set_state(Role::Guest, SideState::Ready);
    println!(
        "file_guest: ring ready at {}+{offset:#x}, size {size:#x}",
        path.display()
    );
    let mut idle_rounds = 0u32;
    let stats = Service::new(region)
        .run(|_| {
            idle_rounds = idle_rounds.wrapping_add(1);
            if idle_rounds % 64 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(50));
            } else {
                std::thread::yield_now();
            }
        })
        .map_err(|error| error.to_string())?;
    println!(
        "file_guest: stats: received={} sent={} corrupted={} lost={} protocol_errors={}",
        stats.received, stats.sent, stats.corrupted, stats.lost, stats.protocol_errors
    );
    Ok(())
}
