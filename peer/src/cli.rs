//! The command line (clap derive) and its validation into a region source and a mode.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::backoff::BackoffPolicy;
use crate::devicetree::PhysRange;
use crate::error::PeerError;
use crate::numbers::parse_number;

/// The Linux end of the sramlink ring: ping, echo or stream with the guest over a shared
/// region.
///
/// The region is, in this order of preference: the sramlink dom0 module's device
/// (`--device /dev/sramlinkN`, or the only /dev/sramlinkN found; base and size come from the
/// module, any user with access to the device node may use it); a physical range of /dev/mem
/// (`--dev-mem`, or when no sramlink device exists; needs root and, while the sram driver claims
/// the range, `iomem=relaxed`); or a host file (`--file PATH --offset N --size N`, e.g. QEMU's
/// RAM backing file in /dev/shm). `--base ADDR --size N` names the range: it must equal the
/// region of a sramlink device, or for /dev/mem the reg of an enabled "mmio-sram" node of the
/// device tree (or of a /reserved-memory entry when the tree has no enabled "mmio-sram" node).
/// Without it /dev/mem maps the "mmio-sram" node of the device tree Linux booted with
/// (/sys/firmware/fdt).
/// Numbers are hex (0x..) or decimal.
#[derive(Debug, Clone, Parser)]
#[command(name = "sramlink-peer", version)]
pub struct Cli {
    /// Map this file (MAP_SHARED) instead of the sramlink device or /dev/mem.
    #[arg(long, value_name = "PATH", conflicts_with = "base")]
    pub file: Option<PathBuf>,

    /// Map the region this sramlink module device serves (base and size come from the
    /// module); by default the only /dev/sramlinkN is used when there is one.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["file", "base", "size", "dev_mem"])]
    pub device: Option<PathBuf>,

    /// Map through /dev/mem even when a sramlink device exists (needs root, and
    /// `iomem=relaxed` on dom0's command line while the sram driver claims the range).
    #[arg(long, conflicts_with = "file")]
    pub dev_mem: bool,

    /// Byte offset of the region in --file (page-aligned).
    #[arg(long, value_name = "N", value_parser = parse_number, requires = "file")]
    pub offset: Option<u64>,

    /// Physical address of the region (page-aligned); --base/--size must equal a sramlink
    /// device's region or, for /dev/mem, a range of the --device-tree.
    #[arg(long, value_name = "ADDR", value_parser = parse_number)]
    pub base: Option<u64>,

    /// Size of the region in bytes (with --file or --base).
    #[arg(long, value_name = "N", value_parser = parse_number)]
    pub size: Option<u64>,

    /// Device-tree blob used for discovery and for checking --base/--size (which must equal
    /// an enabled "mmio-sram" node's reg, or a /reserved-memory entry's reg if there is no
    /// enabled "mmio-sram" node).
    #[arg(long, value_name = "FILE", default_value = crate::devicetree::SYS_FIRMWARE_FDT)]
    pub device_tree: PathBuf,

    /// Directory searched for sramlink devices (`sramlinkN`) when no route is given.
    #[arg(long, value_name = "DIR", default_value = crate::device::DEV_DIR, hide = true)]
    pub device_dir: PathBuf,

    /// Also print the report as one line `SRAMLINK-REPORT {json}`.
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds to wait for the guest (header + Ready at start, each reply afterwards).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_seconds, global = true)]
    pub timeout: Duration,

    /// While messages move, print `sramlink-peer: progress: …` to stderr at most every SECS
    /// seconds (for a supervisor that judges a run by its console, like `cargo xtask`).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, global = true)]
    pub progress: Option<Duration>,

    /// Seconds the guest's heartbeat may stand still before the guest counts as dead rather
    /// than slow (ABI 1.1 guests; at most --timeout).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_seconds, global = true)]
    pub liveness: Duration,

    /// At the end, send Stop, wait for the guest's Stats and include them in the report.
    #[arg(long, global = true)]
    pub stop_guest: bool,

    /// Never sleep while waiting (spin, then yield): to measure the cost of the backoff.
    #[arg(long, global = true)]
    pub busy_poll: bool,

    /// Require waiting on the guest's Xen event channel: fail (naming the cause) when the port
    /// the guest publishes in the ring header cannot be bound through /dev/xen/evtchn (module
    /// xen-evtchn). Without it the peer does the same whenever it can (spin for --spin-us, then
    /// block in poll()) and polls otherwise, saying which.
    #[arg(long, global = true, conflicts_with_all = ["busy_poll", "poll"])]
    pub events: bool,

    /// Never wait on the event channel: poll (spin, yield, sleep) even when the guest's port
    /// could be bound. The port is still bound when possible, to wake a guest asleep on events.
    #[arg(long, global = true, alias = "no-events")]
    pub poll: bool,

    /// The guest's Xen domain id (dom0less domUs are numbered from 1 in /chosen order).
    #[arg(long, value_name = "ID", default_value_t = 1, global = true)]
    pub guest_domid: u32,

    /// The event-channel device.
    #[arg(long, value_name = "PATH", default_value = crate::evtchn::DEVICE, global = true)]
    pub events_device: PathBuf,

    /// When waiting on events: microseconds to keep polling after the last progress before
    /// arming and sleeping on the event channel (0: sleep at once).
    #[arg(long, value_name = "US", default_value_t = 50, global = true)]
    pub spin_us: u64,

    /// What to exchange with the guest.
    #[command(subcommand)]
    pub mode: Mode,
}

/// A run mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Mode {
    /// Attach and exchange nothing for --seconds, waiting with the chosen policy: measures
    /// what waiting costs (prints `SRAMLINK-IDLE: begin` and `SRAMLINK-IDLE: end`).
    Idle {
        /// Length of the idle window.
        #[arg(long, default_value = "5", value_parser = parse_seconds)]
        seconds: Duration,
    },
    /// One EchoRequest outstanding at a time; reports the round-trip distribution.
    Ping {
        /// Number of round trips.
        #[arg(long, default_value_t = 1000, value_parser = parse_count)]
        count: u64,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64, value_parser = parse_size)]
        size: u32,
    },
    /// Pipelined EchoRequests, up to --window outstanding.
    Echo {
        /// Number of messages.
        #[arg(long, default_value_t = 100_000, value_parser = parse_count)]
        count: u64,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64, value_parser = parse_size)]
        size: u32,
        /// Most requests in flight.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
        window: u32,
    },
    /// The platform's round-trip floor: asks the guest (FloorRequest, ABI §7.4) to ping-pong a
    /// bare flag word through the same region, --count rounds, and reports their round trips
    /// like ping does. Busy-polls on both sides.
    Floor {
        /// Number of round trips.
        #[arg(long, default_value_t = 5000, value_parser = parse_floor_count)]
        count: u32,
    },
    /// One-way Data messages.
    Stream {
        /// Number of messages per direction.
        #[arg(long, default_value_t = 100_000, value_parser = parse_count)]
        count: u64,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64, value_parser = parse_size)]
        size: u32,
        /// Which way the data flows.
        #[arg(long, value_enum, default_value_t = Direction::Both)]
        direction: Direction,
    },
}

impl Mode {
    /// The mode's name as in the report (`ping`, `echo`, `stream`).
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Ping { .. } => "ping",
            Mode::Echo { .. } => "echo",
            Mode::Stream { .. } => "stream",
            Mode::Idle { .. } => "idle",
            Mode::Floor { .. } => "floor",
        }
    }
}

/// Stream direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// Peer sends Data, the guest checks it.
    ToGuest,
    /// Peer asks with StreamRequest, the guest sends Data, the peer checks it.
    FromGuest,
    /// Both at once.
    Both,
}

impl Direction {
    /// The name used on the command line and in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Direction::ToGuest => "to-guest",
            Direction::FromGuest => "from-guest",
            Direction::Both => "both",
        }
    }
}

/// Where the shared region comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionSource {
    /// A host file mapped with MAP_SHARED (bare QEMU: the guest's RAM backing file).
    File {
        /// The file.
        path: PathBuf,
        /// Page-aligned offset of the region in the file.
        offset: u64,
        /// Region size in bytes.
        size: u64,
    },
    /// The sramlink module's device named with `--device`.
    Device {
        /// `/dev/sramlinkN`.
        path: PathBuf,
    },
    /// `--dev-mem`: /dev/mem, for the given range (checked against the device tree) or the
    /// device tree's single mmio-sram node.
    DevMem {
        /// `--base/--size`, if given.
        range: Option<PhysRange>,
    },
    /// Nothing asked: the sramlink device when one exists (equal to the range, if given),
    /// otherwise /dev/mem as for [`RegionSource::DevMem`].
    Auto {
        /// `--base/--size`, if given.
        range: Option<PhysRange>,
    },
}

impl Cli {
    /// The region source the arguments describe, or a usage error saying what is missing.
    pub fn region_source(&self) -> Result<RegionSource, PeerError> {
        if self.offset.is_some() && self.file.is_none() {
            return Err(PeerError::usage(
                "--offset is an offset into --file and means nothing without it; with --base, \
                 give the region's physical address itself",
            ));
        }
        if let Some(path) = &self.file {
            return match (self.size, self.base) {
                (Some(size), None) => Ok(RegionSource::File {
                    path: path.clone(),
                    offset: self.offset.unwrap_or(0),
                    size,
                }),
                (None, None) => Err(PeerError::usage(
                    "--file needs --size N (and --offset N unless the region starts the file)",
                )),
                (_, Some(_)) => Err(PeerError::usage("--file and --base exclude each other")),
            };
        }
        if let Some(path) = &self.device {
            if self.base.is_some() || self.size.is_some() || self.dev_mem {
                return Err(PeerError::usage(
                    "--device takes base and size from the sramlink module; drop --base, --size \
                     and --dev-mem",
                ));
            }
            return Ok(RegionSource::Device { path: path.clone() });
        }
        let range = match (self.base, self.size) {
            (Some(base), Some(size)) => {
                Some(PhysRange::from_base_size(base, size).ok_or_else(|| {
                    PeerError::usage(format!(
                        "--base {base:#x} + --size {size:#x} runs past the end of the address \
                         space"
                    ))
                })?)
            }
            (Some(_), None) => return Err(PeerError::usage("--base needs --size N")),
            (None, Some(_)) => {
                return Err(PeerError::usage(
                    "--size needs --file PATH or --base ADDR (without either, the region is \
                     discovered)",
                ));
            }
            (None, None) => None,
        };
        Ok(if self.dev_mem {
            RegionSource::DevMem { range }
        } else {
            RegionSource::Auto { range }
        })
    }

    /// Whether to wait on the guest's event channel when it is bound (the default; `--poll`
    /// and `--busy-poll` opt out).
    pub fn waits_on_events(&self) -> bool {
        !self.poll && !self.busy_poll
    }

    /// The waiting policy (`--busy-poll` disables sleeping).
    pub fn backoff_policy(&self) -> BackoffPolicy {
        if self.busy_poll {
            BackoffPolicy::BusyPoll
        } else {
            BackoffPolicy::Sleep
        }
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 1.0e6 {
        return Err(format!(
            "timeout must be between 0 and 1000000 seconds, got {text}"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_count(text: &str) -> Result<u64, String> {
    match parse_number(text)? {
        0 => Err("count must be at least 1".to_string()),
        count => Ok(count),
    }
}

fn parse_floor_count(text: &str) -> Result<u32, String> {
    let count = parse_count(text)?;
    u32::try_from(count).map_err(|_| format!("count {count} does not fit in 32 bits"))
}

fn parse_size(text: &str) -> Result<u32, String> {
    let size = parse_number(text)?;
    u32::try_from(size).map_err(|_| format!("size {size} does not fit in 32 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sramlink-peer").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn file_source_with_hex_numbers() {
        let cli = parse(&[
            "--file",
            "/dev/shm/ram",
            "--offset",
            "0x3f000000",
            "--size",
            "0x1000000",
            "--json",
            "ping",
            "--count",
            "10",
        ])
        .expect("valid");
        assert_eq!(
            cli.region_source(),
            Ok(RegionSource::File {
                path: "/dev/shm/ram".into(),
                offset: 0x3f00_0000,
                size: 0x100_0000
            })
        );
        assert!(cli.json);
        assert_eq!(
            cli.mode,
            Mode::Ping {
                count: 10,
                size: 64
            }
        );
    }

    #[test]
    fn global_flags_after_the_subcommand() {
        let cli = parse(&[
            "--base",
            "0x7f000000",
            "--size",
            "16777216",
            "echo",
            "--window",
            "4",
            "--json",
            "--stop-guest",
            "--timeout",
            "2.5",
            "--busy-poll",
        ])
        .expect("valid");
        assert_eq!(
            cli.region_source(),
            Ok(RegionSource::Auto {
                range: Some(PhysRange::from_base_size(0x7f00_0000, 0x100_0000).unwrap())
            })
        );
        assert!(cli.json && cli.stop_guest);
        assert_eq!(cli.timeout, Duration::from_millis(2500));
        assert_eq!(cli.backoff_policy(), BackoffPolicy::BusyPoll);
        assert!(!cli.waits_on_events());
        assert_eq!(
            cli.mode,
            Mode::Echo {
                count: 100_000,
                size: 64,
                window: 4
            }
        );
    }

    #[test]
    fn no_source_means_discovery() {
        let cli = parse(&["stream", "--direction", "from-guest", "--count", "5"]).expect("valid");
        assert_eq!(cli.region_source(), Ok(RegionSource::Auto { range: None }));
        assert_eq!(
            cli.mode,
            Mode::Stream {
                count: 5,
                size: 64,
                direction: Direction::FromGuest
            }
        );
    }

    #[test]
    fn device_and_dev_mem_routes() {
        let device = parse(&["--device", "/dev/sramlink1", "ping"]).expect("valid");
        assert_eq!(
            device.region_source(),
            Ok(RegionSource::Device {
                path: "/dev/sramlink1".into()
            })
        );
        let dev_mem = parse(&["--dev-mem", "ping"]).expect("valid");
        assert_eq!(
            dev_mem.region_source(),
            Ok(RegionSource::DevMem { range: None })
        );
        let dev_mem_range = parse(&[
            "--dev-mem",
            "--base",
            "0x7f000000",
            "--size",
            "0x1000",
            "ping",
        ])
        .expect("valid");
        assert_eq!(
            dev_mem_range.region_source(),
            Ok(RegionSource::DevMem {
                range: Some(PhysRange::from_base_size(0x7f00_0000, 0x1000).unwrap())
            })
        );
        // The module gives the size; /dev/mem and a file are other routes.
        assert!(parse(&["--device", "/dev/sramlink0", "--size", "0x1000", "ping"]).is_err());
        assert!(parse(&["--device", "/dev/sramlink0", "--dev-mem", "ping"]).is_err());
        assert!(parse(&["--device", "/dev/sramlink0", "--file", "f", "ping"]).is_err());
        assert!(parse(&["--dev-mem", "--file", "f", "--size", "1", "ping"]).is_err());
    }

    #[test]
    fn inconsistent_sources_are_refused() {
        assert!(parse(&["--file", "f", "--base", "0x1000", "--size", "1", "ping"]).is_err());
        assert!(parse(&["--offset", "0", "--size", "1", "ping"]).is_err());
        let size_only = parse(&["--size", "4096", "ping"]).expect("clap accepts");
        assert_eq!(
            size_only.region_source().map_err(|error| error.kind),
            Err(crate::error::ErrorKind::Usage)
        );
        let offset_with_base = parse(&[
            "--base",
            "0x7f000000",
            "--offset",
            "0x1000",
            "--size",
            "0x1000",
            "ping",
        ]);
        if let Ok(cli) = offset_with_base {
            assert_eq!(
                cli.region_source().map_err(|error| error.kind),
                Err(crate::error::ErrorKind::Usage),
                "--offset must not be ignored with --base"
            );
        }
        let base_only = parse(&["--base", "0x7f000000", "ping"]).expect("clap accepts");
        assert!(base_only.region_source().is_err());
        let file_only = parse(&["--file", "f", "ping"]).expect("clap accepts");
        assert!(file_only.region_source().is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["ping", "--count", "0"]).is_err());
        assert!(parse(&["ping", "--count", "ten"]).is_err());
        assert!(parse(&["ping", "--size", "0x100000000"]).is_err());
        assert!(parse(&["echo", "--window", "0"]).is_err());
        assert!(parse(&["--timeout", "0", "ping"]).is_err());
        assert!(parse(&["--timeout", "-1", "ping"]).is_err());
        assert!(parse(&["stream", "--direction", "sideways"]).is_err());
        assert!(parse(&["--base", "0xzz", "--size", "1", "ping"]).is_err());
        assert!(parse(&[]).is_err(), "a mode is required");
    }

    #[test]
    fn events_are_the_default_wait_and_poll_or_busy_poll_opt_out() {
        let default = parse(&["ping"]).expect("valid");
        assert!(default.waits_on_events() && !default.events);
        for opt_out in ["--poll", "--no-events", "--busy-poll"] {
            let cli = parse(&[opt_out, "ping"]).expect("valid");
            assert!(!cli.waits_on_events(), "{opt_out}");
        }
        let required = parse(&["--events", "ping"]).expect("valid");
        assert!(required.events && required.waits_on_events());
        assert!(parse(&["--events", "--poll", "ping"]).is_err());
        assert!(parse(&["--events", "--busy-poll", "ping"]).is_err());
    }
}
