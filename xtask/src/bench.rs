//! `cargo xtask bench`: runs the host benchmark (`bench/`, crate `sramlink-bench`) in release
//! mode; it prints the ratios and writes `bench.json` and `bench.svg` into the reports dir.

use anyhow::Result;

use crate::{artifacts, paths};

/// Builds and runs `sramlink-bench`; `quick` is the short CI variant.
pub fn run(quick: bool) -> Result<()> {
    let reports = paths::reports_dir();
    let reports = reports.to_string_lossy();
    let mut args = vec![
        "run",
        "--quiet",
        "--release",
        "--package",
        "sramlink-bench",
        "--",
        "--out",
        &reports,
    ];
    if quick {
        args.push("--quick");
    }
    artifacts::cargo(&args)
}
