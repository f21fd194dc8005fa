//! The whole run behind `main`: find and map the region, attach, run the mode, fill the report.

use std::time::Duration;

use sramlink_ring::VolatileMemory;

use crate::cli::{Cli, Direction, Mode, RegionSource};
use crate::counter::Counter;
use crate::devicetree::{DeviceTreeRegions, PhysRange};
use crate::error::{ErrorKind, PeerError};
use crate::evtchn::Device;
use crate::mapping::MappedRegion;
use crate::report::Report;
use crate::session::{self, AttachOptions, EventsSetup, RunOptions};

/// The result of [`execute`]: the report (always, with `error` set on failure), whether the
/// peer got as far as attaching (then the human summary is worth printing), and the error.
#[derive(Debug)]
pub struct Outcome {
    /// Counters and figures; `error` holds the failure's message.
    pub report: Report,
    /// The region was attached and the mode started.
    pub attached: bool,
    /// The failure, if any (a clean run can still fail [`Report::passed`]).
    pub error: Option<PeerError>,
    /// Things worth telling the user even on success (e.g. that `--base/--size` was accepted
    /// through the `/reserved-memory` fallback); `main` prints them to stderr.
    pub notes: Vec<String>,
}

impl Outcome {
    /// Whether the process should exit with success.
    pub fn success(&self) -> bool {
        self.error.is_none() && self.report.passed()
    }
}

/// Runs everything the command line asks for.
pub fn execute(cli: &Cli) -> Outcome {
    let mut report = initial_report(cli);
    let mut attached = false;
    let mut notes = Vec::new();
    let result = run(cli, &mut report, &mut attached, &mut notes);
    let error = result.err();
    report.error = error.as_ref().map(ToString::to_string);
    Outcome {
        report,
        attached,
        error,
        notes,
    }
}

fn initial_report(cli: &Cli) -> Report {
    let (count, payload_bytes, window, direction) = match cli.mode {
        Mode::Ping { count, size } => (count, size, None, None),
        Mode::Idle { .. } => (0, 0, None, None),
        Mode::Echo {
            count,
            size,
            window,
        } => (count, size, Some(window), None),
        Mode::Stream {
            count,
            size,
            direction,
        } => (count, size, None, Some(Direction::name(&direction))),
    };
    Report {
        mode: cli.mode.name(),
        direction,
        count,
        payload_bytes,
        window,
        counter_hz: Counter::new().frequency_hz(),
        idle_policy: if cli.events {
            "events"
        } else if cli.busy_poll {
            "busy-poll"
        } else {
            "sleep"
        },
        ..Report::default()
    }
}

fn run(
    cli: &Cli,
    report: &mut Report,
    attached: &mut bool,
    notes: &mut Vec<String>,
) -> Result<(), PeerError> {
    // The device first: with --events, a missing module is reported before the ring is read.
    let device = match Device::open(&cli.events_device) {
        Ok(device) => Some(device),
        Err(error) if cli.events => return Err(error),
        Err(_) => None,
    };
    let mapping = map_region(cli, report, notes)?;
    // `memory` and the `region` built from it are declared after `mapping`, so they are
    // dropped before it at the end of this function, and the session ends inside it. File
    // mappings are normal memory and /dev/mem mappings Device memory; both take aligned 32-
    // and 64-bit accesses.
    // SAFETY: `mapping` is a live read/write mapping of `len` bytes that outlives every use of
    // `memory`, touched by nothing in this program but the VolatileMemory handle.
    let memory = unsafe { VolatileMemory::new(mapping.as_ptr(), mapping.len()) }
        .map_err(|error| PeerError::region(error.to_string()))?;
    let liveness = cli.liveness.min(cli.timeout);
    let attach_options = AttachOptions {
        timeout: cli.timeout,
        liveness,
        policy: cli.backoff_policy(),
        cacheable: mapping_cacheable(report.region_source),
    };
    let events = device.map(|device| EventsSetup {
        device,
        guest_domid: cli.guest_domid,
        required: cli.events,
    });
    let region = session::attach(memory, &attach_options, events)?;
    notes.extend(region.notes.iter().cloned());
    *attached = true;
    let options = RunOptions {
        mode: cli.mode,
        timeout: cli.timeout,
        stop_guest: cli.stop_guest,
        policy: cli.backoff_policy(),
        liveness,
        events: cli.events,
        spin: Duration::from_micros(cli.spin_us),
    };
    let cpu_before = cpu_seconds();
    let result = session::run(region, &options, report);
    report.cpu_seconds = cpu_seconds() - cpu_before;
    result
}

/// How this peer maps the region, for the comparison with the guest's `flags` (ABI §1.1):
/// `/dev/mem` opened with `O_SYNC` is uncached; a host file shared with an emulated guest
/// (bare QEMU) has no cache between the two sides, so there is nothing to compare.
/// User + system CPU time of this process so far (getrusage).
fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero `rusage` is a valid value (integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a live, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn mapping_cacheable(source: &str) -> Option<bool> {
    match source {
        "dev-mem" | "device-tree" => Some(false),
        _ => None,
    }
}

/// Maps the region the command line describes and records where it came from. A
/// `--base/--size` range is mapped only after the device tree confirms it (see
/// [`DeviceTreeRegions::check_range`]); without a device tree it is refused.
fn map_region(
    cli: &Cli,
    report: &mut Report,
    notes: &mut Vec<String>,
) -> Result<MappedRegion, PeerError> {
    match cli.region_source()? {
        RegionSource::File { path, offset, size } => {
            report.region_source = "file";
            report.region_file = Some(path.display().to_string());
            report.region_file_offset = Some(offset);
            report.region_size = size;
            MappedRegion::map_file(&path, offset, size)
        }
        RegionSource::PhysicalRange { base, size } => {
            let range = PhysRange::from_base_size(base, size).ok_or_else(|| {
                PeerError::usage(format!(
                    "--base {base:#x} + --size {size:#x} runs past the end of the address space"
                ))
            })?;
            report.region_source = "dev-mem";
            report.region_base = Some(base);
            report.region_size = size;
            let accepted = DeviceTreeRegions::check_range_at(&cli.device_tree, &range)?;
            report.region_node = Some(accepted.node.path.clone());
            if accepted.reserved_fallback {
                notes.push(accepted.to_string());
            }
            MappedRegion::map_dev_mem(range)
        }
        RegionSource::Discover => {
            let node = DeviceTreeRegions::scan(&cli.device_tree)?.discover()?;
            report.region_source = "device-tree";
            report.region_node = Some(node.path.clone());
            report.region_base = Some(node.range.start());
            report.region_size = node.range.size();
            MappedRegion::map_dev_mem(node.range)
        }
    }
}

/// Exit status for an outcome: 0 clean, 1 otherwise (clap uses 2 for usage errors).
pub fn exit_code(outcome: &Outcome) -> u8 {
    match (&outcome.error, outcome.success()) {
        (_, true) => 0,
        (Some(error), _) if error.kind == ErrorKind::Usage => 2,
        _ => 1,
    }
}
