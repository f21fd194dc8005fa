//! `cargo xtask test`: every check the project has, in one command (what CI runs).

use crate::{artifacts, bare, deps, paths, toolchain, xen};
use anyhow::{Result, bail};
use std::sync::OnceLock;
use std::time::Instant;

/// `--only` filters: when set, only checks whose names contain one of them run.
static ONLY: OnceLock<Vec<String>> = OnceLock::new();

/// Whether the check called `name` runs under the `--only` filters.
fn selected(name: &str) -> bool {
    match ONLY.get() {
        Some(only) if !only.is_empty() => only.iter().any(|part| name.contains(part.as_str())),
        _ => true,
    }
}

/// A named system test, run when called.
pub type SystemTest<'a> = (String, Box<dyn FnOnce() -> Result<()> + 'a>);

/// One named check and how it ended.
struct Outcome {
    name: String,
    result: Result<()>,
    seconds: f64,
}

/// Runs a check, timing it and printing its verdict as it ends.
fn check(outcomes: &mut Vec<Outcome>, name: &str, body: impl FnOnce() -> Result<()>) {
    if selected(name) {
        always(outcomes, name, body);
    }
}

/// [`check`] whatever the `--only` filters say (the steps other checks need).
fn always(outcomes: &mut Vec<Outcome>, name: &str, body: impl FnOnce() -> Result<()>) {
    println!("==> {name}");
    let started = Instant::now();
    let result = body();
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok(()) => println!("<== {name}: ok ({seconds:.1} s)"),
        Err(error) => println!("<== {name}: FAILED ({seconds:.1} s)\n{error:#}"),
    }
    outcomes.push(Outcome {
        name: name.to_string(),
        result,
        seconds,
    });
}

/// Runs everything; `qemu` adds the bare QEMU system tests, `xen` the Xen-on-QEMU runs; a
/// non-empty `only` keeps the checks whose names contain one of its strings (for development:
/// the toolchain check and the build of the guest and peers run whenever a QEMU test does).
pub fn run(qemu: bool, xen: bool, only: Vec<String>) -> Result<()> {
    ONLY.set(only).expect("test::run is called once");
    let mut outcomes = Vec::new();
    let cargo = artifacts::cargo;

    always(
        &mut outcomes,
        "toolchain: AArch64 targets, rustfmt, clippy",
        toolchain::ensure,
    );
    always(
        &mut outcomes,
        "tools: qemu-system-aarch64, dtc",
        deps::ensure_qemu_tools,
    );
    check(&mut outcomes, "cargo fmt --check", || {
        cargo(&["fmt", "--all", "--", "--check"])
    });
    check(&mut outcomes, "clippy (host, all targets)", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ])
    });
    check(
        &mut outcomes,
        "clippy (guest, ring, devicetree: aarch64-unknown-none)",
        || {
            cargo(&[
                "clippy",
                "--quiet",
                "--package",
                "sramlink",
                "--package",
                "sramlink-ring",
                "--package",
                "sramlink-devicetree",
                "--target",
                artifacts::GUEST_TARGET,
                "--",
                "-D",
                "warnings",
            ])
        },
    );
    check(
        &mut outcomes,
        "clippy (peer, aarch64-unknown-linux-musl)",
        || {
            cargo(&[
                "clippy",
                "--quiet",
                "--package",
                "sramlink-peer",
                "--target",
                artifacts::DOM0_TARGET,
                "--",
                "-D",
                "warnings",
            ])
        },
    );
    check(&mut outcomes, "host tests (unit, property, stress)", || {
        cargo(&["test", "--workspace", "--quiet"])
    });
    check(&mut outcomes, "loom model of the ring", || {
        // Its own target directory: `--cfg loom` would otherwise rebuild everything twice.
        let loom_target = paths::cargo_target_dir().join("loom");
        let loom_target = loom_target.display().to_string();
        artifacts::cargo_env(
            &[
                ("RUSTFLAGS", "--cfg loom"),
                ("CARGO_TARGET_DIR", &loom_target),
            ],
            &[
                "test",
                "--quiet",
                "--release",
                "--package",
                "sramlink-ring",
                "--test",
                "loom",
            ],
        )
    });
    check(&mut outcomes, "fuzz targets, 10 s each (libFuzzer)", || {
        crate::fuzz::run(10)
    });
    check(
        &mut outcomes,
        "host benchmark --quick (runs and checks every message; figures not judged)",
        || crate::bench::run(true),
    );

    if qemu {
        let mut built = None;
        always(&mut outcomes, "build guest Image and peers", || {
            built = Some(artifacts::build_all()?);
            Ok(())
        });
        if let Some(built) = &built {
            match bare::system_tests(&built.guest_image, &built.peer_host) {
                Ok(cases) => {
                    for (name, case) in cases {
                        check(&mut outcomes, &format!("bare QEMU: {name}"), case);
                    }
                }
                Err(error) => check(&mut outcomes, "bare QEMU", || Err(error)),
            }
            if xen {
                match xen::system_tests() {
                    Ok(cases) => {
                        for (name, case) in cases {
                            check(&mut outcomes, &format!("Xen on QEMU: {name}"), case);
                        }
                    }
                    Err(error) => check(&mut outcomes, "Xen on QEMU", || Err(error)),
                }
            }
        }
    }

    println!();
    for outcome in &outcomes {
        let verdict = if outcome.result.is_ok() {
            "ok    "
        } else {
            "FAILED"
        };
        println!("{verdict} {:>7.1} s  {}", outcome.seconds, outcome.name);
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let passed = outcomes.len() - failed;
    println!("xtask: {passed} passed, {failed} failed");
    if failed != 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}
