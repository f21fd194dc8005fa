//! `cargo xtask fuzz`: builds the libFuzzer targets of `fuzz/` on the stable toolchain and runs each.
//!
//! No nightly and no cargo-fuzz: libfuzzer-sys brings libFuzzer (compiled with the system
//! C++ compiler, installed here when missing), and rustc's stable codegen options add the
//! SanitizerCoverage instrumentation libFuzzer needs (`-Cpasses=sancov-module` and its LLVM
//! arguments: inline 8-bit counters, PC table, comparison tracing). Without AddressSanitizer,
//! which needs nightly's `-Zsanitizer`: the targets are safe Rust, where a bounds or overflow
//! check panics and a panic is a finding. Debug assertions and overflow checks are on.
//!
//! Each target keeps its corpus in `target/sramlink/fuzz/corpus/TARGET/` across runs; a
//! finding is written to `target/sramlink/fuzz/findings/` and fails the run.

use crate::{deps, paths};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The targets (binaries of `fuzz/`), each with what it exercises.
pub const TARGETS: [(&str, &str); 3] = [
    (
        "service",
        "the guest's serving loop, every load adversarial",
    ),
    (
        "peer",
        "the peer's attach, session and endpoints, every load adversarial",
    ),
    ("devicetree", "the guest's DTB reading on arbitrary bytes"),
];

/// rustc flags of the instrumented build (all stable).
const RUSTFLAGS: &str = "--cfg fuzzing -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions -Coverflow-checks";

/// Longest one input may run before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// What one target's run did.
#[derive(Debug)]
struct TargetRun {
    /// The target's name.
    name: &'static str,
    /// Inputs executed.
    executions: u64,
    /// Seconds libFuzzer reported.
    seconds: u64,
}

fn fuzz_dir() -> PathBuf {
    paths::out_dir().join("fuzz")
}

/// The host's target tuple (the instrumented build names it, so that RUSTFLAGS leave build
/// scripts alone).
fn host_tuple() -> Result<String> {
    let output = Command::new("rustc")
        .args(["--print", "host-tuple"])
        .current_dir(paths::workspace_root())
        .output()
        .context("running rustc --print host-tuple")?;
    if !output.status.success() {
        bail!("rustc --print host-tuple failed");
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// Builds the instrumented targets; returns the directory holding the binaries.
fn build() -> Result<PathBuf> {
    if !deps::have("g++") {
        // libfuzzer-sys compiles libFuzzer (C++).
        deps::apt_install(&["g++"])?;
    }
    let host = host_tuple()?;
    let target_dir = paths::cargo_target_dir().join("fuzz");
    let manifest = paths::workspace_root().join("fuzz").join("Cargo.toml");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(paths::workspace_root())
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .arg("build")
        .arg("--quiet")
        .arg("--release")
        .arg("--locked")
        .arg("--features")
        .arg("engine")
        .arg("--bins")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target")
        .arg(&host)
        .arg("--target-dir")
        .arg(&target_dir);
    crate::process::status_within(
        &mut command,
        "building the fuzz targets",
        Duration::from_secs(1200),
    )?;
    Ok(target_dir.join(host).join("release"))
}

/// Starting inputs for `devicetree`: real trees (the QEMU `virt` test blob and the domU
/// trees of `xen-config/`, compiled with dtc), so libFuzzer starts past the header checks.
/// Returns the directory libFuzzer reads them from (beside the corpus it writes).
fn devicetree_seeds() -> Result<PathBuf> {
    if !deps::have("dtc") {
        deps::apt_install(&["device-tree-compiler"])?;
    }
    let seeds = fuzz_dir().join("seeds").join("devicetree");
    let work = paths::work_dir("fuzz-seeds");
    std::fs::create_dir_all(&seeds)?;
    std::fs::create_dir_all(&work)?;
    let root = paths::workspace_root();
    std::fs::copy(
        root.join("devicetree/testdata/qemu-virt-sram.dtb"),
        seeds.join("qemu-virt-sram.dtb"),
    )?;
    for source in [
        "xen-config/domU-sram.dts",
        "xen-config/domU-sram-cacheable.dts",
        "xen-config/domU-no-sram.dts",
        "xen-config/captured/domU-dt-from-xen-4.17.dts",
    ] {
        let name = Path::new(source).with_extension("dtb");
        let name = name.file_name().expect("a file name");
        let dts = std::fs::read_to_string(root.join(source))
            .with_context(|| format!("reading {source}"))?;
        crate::dtb::compile(&dts, &work.join(name))?;
        std::fs::copy(work.join(name), seeds.join(name))?;
    }
    Ok(seeds)
}

/// `Done N runs in S second(s)` from libFuzzer's output.
fn parse_done(output: &str) -> Option<(u64, u64)> {
    let line = output
        .lines()
        .rev()
        .find(|line| line.starts_with("Done "))?;
    let mut words = line.split_whitespace();
    let executions = words.nth(1)?.parse().ok()?;
    let seconds = words.nth(2)?.parse().ok()?;
    Some((executions, seconds))
}

/// Runs one target for `seconds`; a crash, hang or out-of-memory is an error naming the input.
fn run_target(
    binary: &Path,
    name: &'static str,
    seconds: u64,
    seeds: Option<&Path>,
) -> Result<TargetRun> {
    let corpus = fuzz_dir().join("corpus").join(name);
    let findings = fuzz_dir().join("findings").join(name);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&findings)?;
    let mut command = Command::new(binary);
    command
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", findings.display()))
        .arg(&corpus)
        .args(seeds);
    let output = crate::process::output_within(
        &mut command,
        &format!("fuzz target {name}"),
        Duration::from_secs(seconds + 300),
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {name} found a failing input (saved under {}; replay it with the binary \
             {} and the file, then add it to fuzz/regressions/{name}/):\n{}",
            findings.display(),
            binary.display(),
            tail.join("\n")
        );
    }
    let (executions, seconds) = parse_done(&stderr)
        .with_context(|| format!("fuzz target {name}: no `Done N runs` line in its output"))?;
    Ok(TargetRun {
        name,
        executions,
        seconds,
    })
}

/// Replays the saved regression inputs (`cargo test` in `fuzz/`), builds every target and
/// runs each for `seconds`, printing the executions per target.
pub fn run(seconds: u64) -> Result<()> {
    let manifest = paths::workspace_root().join("fuzz").join("Cargo.toml");
    let mut test = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    test.current_dir(paths::workspace_root())
        .env_remove("RUSTFLAGS")
        .env(
            "CARGO_TARGET_DIR",
            paths::cargo_target_dir().join("fuzz-tests"),
        )
        .args(["test", "--quiet", "--locked", "--manifest-path"])
        .arg(&manifest);
    crate::process::status_within(
        &mut test,
        "fuzz regression inputs (cargo test)",
        Duration::from_secs(1200),
    )?;
    let binaries = build()?;
    for (name, what) in TARGETS {
        println!("fuzz {name}: {what}, {seconds} s");
        let seeds = match name {
            "devicetree" => Some(devicetree_seeds()?),
            _ => None,
        };
        let run = run_target(&binaries.join(name), name, seconds, seeds.as_deref())?;
        println!(
            "fuzz {}: {} executions in {} s ({} per second), no finding",
            run.name,
            run.executions,
            run.seconds,
            run.executions / run.seconds.max(1)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_done;

    #[test]
    fn reads_libfuzzers_final_line() {
        let output = "#1880816\tDONE   cov: 272 ft: 717\nDone 1880816 runs in 21 second(s)\n";
        assert_eq!(parse_done(output), Some((1_880_816, 21)));
        assert_eq!(parse_done("#1 INITED cov: 2\n"), None);
    }
}
