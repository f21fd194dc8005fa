//! `cargo xtask`: builds sramlink, boots it on QEMU (bare or under Xen) and runs the tests.
//!
//! Everything a newcomer needs goes through three commands:
//!
//! ```text
//! cargo xtask build                 # guest Image + peer binaries into target/sramlink/
//! cargo xtask demo [--mode xen]     # boot Xen + Linux dom0 + the guest, exchange messages
//! cargo xtask test                  # fmt, clippy, host tests, QEMU system tests
//! ```

mod artifacts;
mod bare;
mod bench;
mod board;
mod debs;
mod deps;
mod dtb;
mod fuzz;
mod imagebuilder;
mod initramfs;
mod limits;
mod module;
mod paths;
mod plan;
mod plot;
mod process;
mod qemu;
mod report;
mod test;
mod toolchain;
mod xen;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and test sramlink")]
struct Cli {
    /// Multiply every time limit (boot stages, downloads, builds) by this factor, for a slow or
    /// loaded host; also read from SRAMLINK_TIMEOUT_SCALE.
    #[arg(long, global = true, value_parser = limits::parse_scale)]
    timeout_scale: Option<f64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the guest Image and the peer (host and static AArch64 Linux).
    Build,
    /// Boot the guest and exchange messages with the peer; writes a JSON report.
    Demo(DemoArgs),
    /// Run every check: fmt, clippy, host tests, loom, and the QEMU system tests.
    Test(TestArgs),
    /// Host benchmark: the ring against a two-flag floor, rtrb and crossbeam; JSON + SVG.
    Bench {
        /// Short run (CI): fewer messages and repeats.
        #[arg(long)]
        quick: bool,
    },
    /// Coverage-guided fuzzing (libFuzzer, stable toolchain): every target of fuzz/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

/// Where the demo runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Mode {
    /// Real Xen on QEMU, Linux dom0 runs the peer, the guest is a dom0less domU.
    Xen,
    /// The guest alone on QEMU `virt`; the peer runs on this host over QEMU's RAM file.
    Bare,
}

/// How the guest waits when the ring is idle (its `sramlink.idle=` boot argument).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug, Default)]
pub enum GuestIdle {
    /// Poll a while, then `wfe` (under Xen a trap that yields the physical CPU).
    Wfe,
    /// Poll a while, then sleep in `wfi` until the peer's Xen event or the guest's 10 ms timer
    /// (the peer waits on events too: `--events`). The default, as the guest's own; on bare
    /// QEMU (no Xen events) the guest falls back to `wfe`.
    #[default]
    Irq,
    /// Never wait: poll continuously.
    BusyPoll,
}

impl GuestIdle {
    /// The guest command-line word that selects this policy.
    pub fn bootarg(self) -> &'static str {
        match self {
            GuestIdle::Wfe => "sramlink.idle=wfe",
            GuestIdle::Irq => "sramlink.idle=irq",
            GuestIdle::BusyPoll => "sramlink.idle=busy-poll",
        }
    }

    /// The policy's name, as the guest prints it (`sramlink: idle policy: NAME`).
    pub fn name(self) -> &'static str {
        match self {
            GuestIdle::Wfe => "wfe",
            GuestIdle::Irq => "irq",
            GuestIdle::BusyPoll => "busy-poll",
        }
    }

    /// Whether the peer waits on Xen events with this guest policy.
    pub fn events(self) -> bool {
        self == GuestIdle::Irq
    }

    /// The policy the demo compares this one with.
    pub fn other(self) -> Self {
        match self {
            GuestIdle::Wfe | GuestIdle::Irq => GuestIdle::BusyPoll,
            GuestIdle::BusyPoll => GuestIdle::Wfe,
        }
    }
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Boot path.
    #[arg(long, value_enum, default_value_t = Mode::Xen)]
    mode: Mode,
    /// Number of round trips the peer makes (each message crosses both ways).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Use this Xen binary instead of Debian's xen-hypervisor-4.17-arm64 (xen mode).
    #[arg(long)]
    xen: Option<PathBuf>,
    /// Use this arm64 Linux Image for dom0 instead of Debian's (xen mode).
    #[arg(long)]
    dom0_kernel: Option<PathBuf>,
    /// Use this sramlink.ko (built for --dom0-kernel, see dom0-module/README.md) instead of
    /// building one for a Debian kernel (xen mode).
    #[arg(long)]
    dom0_module: Option<PathBuf>,
    /// Let the peer busy-poll instead of backing off when idle (the other policy is measured
    /// too, in the same boot, for comparison).
    #[arg(long)]
    busy_poll: bool,
    /// How the guest waits when idle in the main boot (the demo boots once more with the
    /// other policy and reports the ratio).
    #[arg(long, value_enum, default_value_t = GuestIdle::default())]
    guest_idle: GuestIdle,
    /// The board(s) Xen boots on (xen mode), comma-separated; with two, the summary compares
    /// their round trips.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "virt")]
    board: Vec<board::BoardId>,
}

#[derive(clap::Args)]
struct TestArgs {
    /// Skip the Xen-on-QEMU runs (they download Debian's Xen and kernel on first use).
    #[arg(long)]
    no_xen: bool,
    /// Skip every QEMU run (host checks only).
    #[arg(long)]
    no_qemu: bool,
    /// Run only the checks whose names contain this string (repeatable; for development).
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = limits::init(cli.timeout_scale).and_then(|()| match cli.command {
        Command::Build => toolchain::ensure()
            .and_then(|()| artifacts::build_all())
            .map(|built| {
                println!("guest Image : {}", built.guest_image.display());
                println!("host peer   : {}", built.peer_host.display());
                println!("dom0 peer   : {}", built.peer_aarch64.display());
            }),
        Command::Demo(args) => toolchain::ensure().and_then(|()| demo(args)),
        Command::Test(args) => test::run(!args.no_qemu, !args.no_qemu && !args.no_xen, args.only),
        Command::Bench { quick } => bench::run(quick),
        Command::Fuzz { seconds } => fuzz::run(seconds),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: DemoArgs) -> Result<()> {
    match args.mode {
        Mode::Bare => {
            if args.xen.is_some() || args.dom0_kernel.is_some() || args.dom0_module.is_some() {
                anyhow::bail!(
                    "--xen, --dom0-kernel and --dom0-module are for --mode xen; the bare run has \
                     no Xen or dom0"
                );
            }
            if args.board != [board::BoardId::Virt] {
                anyhow::bail!("--board is for --mode xen; the bare run boots QEMU virt only");
            }
            let options = bare::DemoOptions {
                count: args.count,
                size: args.size,
                busy_poll: args.busy_poll,
                guest_idle: args.guest_idle,
            };
            bare::demo(&options)
        }
        Mode::Xen => {
            let options = xen::DemoOptions {
                count: args.count,
                size: args.size,
                busy_poll: args.busy_poll,
                xen: args.xen,
                dom0_kernel: args.dom0_kernel,
                dom0_module: args.dom0_module,
                guest_idle: args.guest_idle,
                boards: dedup(args.board),
            };
            xen::demo(&options)
        }
    }
}

/// `boards` without repeats, in their first order.
fn dedup(boards: Vec<board::BoardId>) -> Vec<board::BoardId> {
    let mut kept = Vec::new();
    for board in boards {
        if !kept.contains(&board) {
            kept.push(board);
        }
    }
    kept
}
