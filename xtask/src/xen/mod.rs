//! Xen on QEMU: the guest as a dom0less domU, the peer in a Linux dom0, on a board of
//! [`crate::board`] (`virt`, drawn below, or the emulated ZCU102), driven by the board's
//! ImageBuilder config (`xen-config/qemu-virt.config`, `xen-config/zcu102.config`) and the region
//! in `xen-config/region.env`.
//!
//! ```text
//!  qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -smp 2 -m 2G
//!  ┌──────────────────────────── Xen 4.17 (EL2), console on PL011 ───────────────────────────┐
//!  │  dom0: Debian Linux, 1 vCPU, 512 MiB          domU1: sramlink guest, 1 vCPU, vpl011      │
//!  │   /init → sramlink-peer (/dev/mem, O_SYNC)     partial DT: passthrough/sram@7f000000     │
//!  │          │                                      xen,reg identity  │                      │
//!  │          └──────────────► region 0x7f00_0000 + 16 MiB ◄───────────┘                      │
//!  │                  host DT: /reserved-memory no-map + sram@7f000000 (mmio-sram)             │
//!  └──────────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Run flow: fetch Debian's arm64 Xen/kernel/busybox ([`crate::debs`]) → build guest and peer →
//! lay the files out in a work directory under the config's names (an ImageBuilder `-d` root) →
//! the config's `DEVICE_TREE` = the board's tree as QEMU edits it (dumped) with recipe step 1
//! in the form that survives QEMU ([`host_dt`]) → that plus the board's QEMU-only fragment, if
//! any, and the `/chosen` dom0less nodes with the real file sizes → boot with each module
//! loaded by QEMU's generic loader → follow the console stage by stage.
//!
//! The device-tree sources in `xen-config/` are generated from `region.env` by
//! [`config::config_files`]; a unit test fails when they drift, and
//! `UPDATE_XEN_CONFIG=1 cargo test -p xtask xen_config_files` rewrites them.
//!
//! Each file does one job: [`config`] the region and the device-tree sources generated from it,
//! [`layout`] where the boot modules go and the QEMU command line that loads them, [`chosen`]
//! the `/chosen` dom0less nodes, [`host_dt`] the host device tree (recipe step 1's form, the
//! QEMU-only fragment), [`dom0_init`] dom0's init script, [`run`] preparing and following a
//! boot, [`checks`] reading its console and checking what each side saw. A new board is an entry
//! in [`crate::board`] and its config; a new run type is a function in [`run`] listed in
//! [`system_tests`] or [`demo`].

mod checks;
mod chosen;
mod config;
mod dom0_init;
mod host_dt;
mod layout;
mod run;

pub use config::Region;

use crate::GuestIdle;
use crate::board::BoardId;
use crate::test::SystemTest;
use crate::{deps, paths, report};
use anyhow::Result;
use dom0_init::Dom0Run;
use run::{Inputs, run_good, run_no_sram};
use std::path::PathBuf;
use std::rc::Rc;

/// Options of `cargo xtask demo --mode xen`.
pub struct DemoOptions {
    pub count: u64,
    pub size: u32,
    pub busy_poll: bool,
    /// A user's own Xen binary instead of Debian's.
    pub xen: Option<PathBuf>,
    /// A user's own dom0 kernel Image instead of Debian's.
    pub dom0_kernel: Option<PathBuf>,
    /// A user's own `sramlink.ko` for that kernel instead of one xtask builds.
    pub dom0_module: Option<PathBuf>,
    /// The guest's idle policy in the main boot (the demo boots once more with the other).
    pub guest_idle: GuestIdle,
    /// The boards to boot, in order (each boots twice: both guest idle policies).
    pub boards: Vec<BoardId>,
}

/// `xen-config/` in the workspace.
pub fn xen_config_dir() -> PathBuf {
    paths::workspace_root().join("xen-config")
}

/// Length of the demo's idle windows.
const DEMO_IDLE_SECONDS: u64 = 5;

/// `cargo xtask demo --mode xen`.
pub fn demo(options: &DemoOptions) -> Result<()> {
    deps::ensure_qemu_tools()?;
    let inputs = Inputs::gather(options)?;
    let run = Dom0Run {
        count: options.count,
        size: options.size,
        busy_poll: options.busy_poll,
        every_mode: true,
        timeout_seconds: 30,
        guest_idle: options.guest_idle,
        // Both boots end with an idle window: the host CPU QEMU uses while both sides wait
        // is compared across the two guest policies.
        idle_seconds: DEMO_IDLE_SECONDS,
    };
    let mut reports = Vec::new();
    for id in &options.boards {
        let board = id.board();
        let path = run_good(board, &inputs, &run, &board.run_name("xen-qemu"))?;
        // A second boot with the guest's other idle policy, to measure what its back-off costs.
        let other = Dom0Run {
            guest_idle: options.guest_idle.other(),
            ..run
        };
        let other_name = board.run_name("xen-qemu-other-guest-idle");
        let other_path = run_good(board, &inputs, &other, &other_name)?;
        report::add_guest_idle_comparison(&path, &other_path)?;
        reports.push(path);
    }
    if let [first, second, ..] = reports.as_slice() {
        report::add_board_comparison(first, second)?;
    }
    for path in &reports {
        println!("Xen demo passed; report: {}", path.display());
    }
    Ok(())
}

/// The Xen system tests of `cargo xtask test`, on every board: a good run and the domU without
/// its region.
pub fn system_tests() -> Result<Vec<SystemTest<'static>>> {
    deps::ensure_qemu_tools()?;
    let inputs = Rc::new(Inputs::gather(&DemoOptions {
        count: 0,
        size: 0,
        busy_poll: false,
        xen: None,
        dom0_kernel: None,
        dom0_module: None,
        guest_idle: GuestIdle::Wfe,
        boards: BoardId::ALL.to_vec(),
    })?);
    let run = Dom0Run {
        count: 100_000,
        size: 64,
        busy_poll: false,
        every_mode: true,
        timeout_seconds: 30,
        guest_idle: GuestIdle::Wfe,
        idle_seconds: 0,
    };
    // The guest sleeping in wfi on the Xen event, the peer on /dev/xen/evtchn; first a peer
    // asked for events before xen-evtchn is loaded must fail clearly and leave the guest be.
    let events = Dom0Run {
        guest_idle: GuestIdle::Irq,
        ..run
    };
    let mut tests: Vec<SystemTest<'static>> = Vec::new();
    for id in BoardId::ALL {
        let board = id.board();
        let good_inputs = Rc::clone(&inputs);
        tests.push((
            board.run_name("xen-good"),
            Box::new(move || {
                run_good(board, &good_inputs, &run, &board.run_name("xen-qemu-test")).map(|_| ())
            }),
        ));
        let events_inputs = Rc::clone(&inputs);
        tests.push((
            board.run_name("xen-events"),
            Box::new(move || {
                run_good(
                    board,
                    &events_inputs,
                    &events,
                    &board.run_name("xen-qemu-events-test"),
                )
                .map(|_| ())
            }),
        ));
        let inputs = Rc::clone(&inputs);
        tests.push((
            board.run_name("xen-domU-without-mmio-sram"),
            Box::new(move || run_no_sram(board, &inputs, &board.run_name("xen-no-sram"))),
        ));
    }
    Ok(tests)
}
