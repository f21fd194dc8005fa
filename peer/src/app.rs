//! The whole run behind `main`: find and map the region (sramlink device, /dev/mem or a file),
//! attach, run the mode, fill the report.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, Direction, Mode, RegionSource};
use crate::counter::Counter;
use crate::device::{OpenDevice, find_devices};
use crate::devicetree::{DeviceTreeRegions, PhysRange};
use crate::error::{ErrorKind, PeerError};
use crate::evtchn::Device;
use crate::mapping::{MappedRegion, Route, page_size};
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
        Mode::Floor { count } => (u64::from(count), 0, None, None),
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
    notes.push(format!("region: {}", mapping.route()));
    // The handle borrows `mapping`: the region stays mapped while the session uses it.
    let memory = mapping.memory()?;
    let liveness = cli.liveness.min(cli.timeout);
    let attach_options = AttachOptions {
        timeout: cli.timeout,
        liveness,
        policy: cli.backoff_policy(),
        cacheable: mapping_cacheable(mapping.route()),
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
        progress: cli.progress,
        liveness,
        events: cli.waits_on_events(),
        spin: Duration::from_micros(cli.spin_us),
    };
    // What the peer waits on, now that binding has been tried (the notes say why not).
    report.idle_policy = if cli.waits_on_events() && region.channel.is_some() {
        notes
            .push("waiting on Xen events (the guest's port, bound through /dev/xen/evtchn)".into());
        if cli.spin_us == 0 {
            "events-only"
        } else {
            "events"
        }
    } else if cli.busy_poll {
        "busy-poll"
    } else {
        notes.push("waiting by polling (spin, yield, sleep)".into());
        "sleep"
    };
    let cpu_before = cpu_seconds();
    let result = session::run(region, &options, report);
    report.cpu_seconds = cpu_seconds() - cpu_before;
    result
}

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

/// How this peer maps the region, for the comparison with the guest's `flags` (ABI §1.1):
/// `/dev/mem` opened with `O_SYNC` is uncached, the sramlink device as its module says; a host
/// file shared with an emulated guest (bare QEMU) has no cache between the two sides, so there
/// is nothing to compare.
fn mapping_cacheable(route: &Route) -> Option<bool> {
    match route {
        Route::DevMem { .. } => Some(false),
        Route::Device { info, .. } => Some(info.cacheable),
        Route::File { .. } => None,
    }
}

/// Maps the region the command line describes and records where it came from. A
/// `--base/--size` range is mapped only after the device tree (or the sramlink module)
/// confirms it (see [`DeviceTreeRegions::check_range`]); without a device tree it is refused.
fn map_region(
    cli: &Cli,
    report: &mut Report,
    notes: &mut Vec<String>,
) -> Result<MappedRegion, PeerError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    report.euid = Some(unsafe { libc::geteuid() });
    let mapping = match cli.region_source()? {
        RegionSource::File { path, offset, size } => {
            report.region_file = Some(path.display().to_string());
            report.region_file_offset = Some(offset);
            MappedRegion::map_file(&path, offset, size)?
        }
        RegionSource::Device { path } => MappedRegion::map_device(&path)?,
        RegionSource::DevMem { range } => map_dev_mem(cli, range, report, notes)?,
        RegionSource::Auto { range } => {
            match pick_device(&find_devices(&cli.device_dir)?, range)? {
                Some(device) => MappedRegion::map_open_device(device)?,
                None => {
                    notes.push(format!(
                        "no sramlink device in {} (the sramlink dom0 module is not loaded): \
                         falling back to /dev/mem",
                        cli.device_dir.display()
                    ));
                    map_dev_mem(cli, range, report, notes)?
                }
            }
        }
    };
    match mapping.route() {
        Route::File { .. } => report.region_source = "file",
        Route::Device { path, info } => {
            report.region_source = "device";
            report.region_device = Some(path.display().to_string());
            report.region_base = Some(info.range.start());
            report.region_cacheable = Some(info.cacheable);
        }
        Route::DevMem { range } => {
            report.region_source = "dev-mem";
            report.region_base = Some(range.start());
            report.region_cacheable = Some(false);
        }
    }
    report.region_size = mapping.len() as u64;
    Ok(mapping)
}

/// /dev/mem for `range` (checked against the device tree) or the tree's single node.
fn map_dev_mem(
    cli: &Cli,
    range: Option<PhysRange>,
    report: &mut Report,
    notes: &mut Vec<String>,
) -> Result<MappedRegion, PeerError> {
    // Before the device tree, which Linux lets only root read either: the error that matters
    // to a user without root is that /dev/mem is not for them, and what to use instead.
    // SAFETY: geteuid has no preconditions and cannot fail.
    crate::mapping::require_root(unsafe { libc::geteuid() }, range)?;
    let range = match range {
        Some(range) => {
            let accepted = DeviceTreeRegions::check_range_at(&cli.device_tree, &range)?;
            report.region_node = Some(accepted.node.path.clone());
            if accepted.reserved_fallback {
                notes.push(accepted.to_string());
            }
            range
        }
        None => {
            let node = DeviceTreeRegions::scan(&cli.device_tree)?.discover()?;
            report.region_node = Some(node.path.clone());
            node.range
        }
    };
    MappedRegion::map_dev_mem(range)
}

/// The sramlink device to use among `devices`: the one serving `range` when given, else
/// the only one. `None` when there is none (the module is not loaded).
fn pick_device(
    devices: &[PathBuf],
    range: Option<PhysRange>,
) -> Result<Option<OpenDevice>, PeerError> {
    if devices.is_empty() {
        return Ok(None);
    }
    let page = page_size();
    let mut opened = Vec::new();
    for path in devices {
        opened.push(OpenDevice::open(path, page)?);
    }
    let list = || {
        opened
            .iter()
            .map(|device| format!("{} ({})", device.path.display(), device.info.range))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match range {
        Some(range) => {
            let names = list();
            opened
                .into_iter()
                .find(|device| device.info.range == range)
                .map(Some)
                .ok_or_else(|| {
                    PeerError::region(format!(
                        "refusing to map {range}: no sramlink device serves it (devices: \
                         {names}); use --device PATH, or --dev-mem for /dev/mem"
                    ))
                })
        }
        None if opened.len() == 1 => Ok(opened.pop()),
        None => Err(PeerError::region(format!(
            "{} sramlink devices, cannot choose: {}; pass --device PATH",
            opened.len(),
            list()
        ))),
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
