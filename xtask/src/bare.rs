//! Bare QEMU bench: the guest alone on QEMU `virt` (no Xen), its RAM backed by a shared file
//! that the host peer maps at the region's offset, plus the bad-input runs.
//!
//! ```text
//!  host                                   qemu-system-aarch64 -M virt
//!  ┌──────────────────────┐               ┌─────────────────────────────┐
//!  │ sramlink-peer        │  mmap offset  │ guest RAM 0x4000_0000 (1 GiB)│
//!  │  --file /dev/shm/…   │◄─────────────►│  region  0x7f00_0000 (16 MiB)│
//!  └──────────────────────┘ 0x3f00_0000   └─────────────────────────────┘
//! ```

use crate::qemu::Qemu;
use crate::test::SystemTest;
use crate::{artifacts, deps, dtb, paths, report};
use anyhow::{Context, Result, bail};
use serde_json::{Map, json};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Guest RAM on QEMU `virt` starts here.
const RAM_BASE: u64 = 0x4000_0000;
/// Guest RAM size (`-m 1G`); the region sits at its top.
const RAM_BYTES: u64 = 0x4000_0000;
/// The shared region (the same physical range as under Xen).
pub const REGION_BASE: u64 = 0x7f00_0000;
/// Size of the shared region.
pub const REGION_BYTES: u64 = 0x0100_0000;

/// How long the guest may take from QEMU start to its banner.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `cargo xtask demo --mode bare`.
pub struct DemoOptions {
    pub count: u64,
    pub size: u32,
    pub busy_poll: bool,
}

/// Which CPU exception level QEMU starts the guest in.
#[derive(Clone, Copy)]
enum EntryLevel {
    /// `-machine virt`: EL1, PSCI over HVC.
    El1,
    /// `-machine virt,virtualization=on`: EL2, PSCI over SMC; the guest drops to EL1.
    El2,
}

impl EntryLevel {
    fn machine(self) -> &'static str {
        match self {
            EntryLevel::El1 => "virt,gic-version=3",
            EntryLevel::El2 => "virt,gic-version=3,virtualization=on",
        }
    }
}

const CPU_ARGS: &[&str] = &["-cpu", "cortex-a57", "-smp", "1", "-m", "1G"];

/// The device-tree change for the bare runs: the region is part of QEMU's RAM, so it is kept
/// out of the guest's RAM with `/reserved-memory` `no-map`, and described as `mmio-sram`.
fn region_fragment(sram_node: &str) -> String {
    format!(
        r#"/ {{
    reserved-memory {{
        #address-cells = <2>;
        #size-cells = <2>;
        ranges;
        shm@{base:x} {{
            reg = <0x0 {base:#x} 0x0 {size:#x}>;
            no-map;
        }};
    }};
{sram_node}
}};
"#,
        base = REGION_BASE,
        size = REGION_BYTES,
    )
}

/// The well-formed `mmio-sram` node, as the seed's host device-tree change writes it.
fn good_sram_node() -> String {
    format!(
        r#"    sram@{base:x} {{
        compatible = "mmio-sram";
        reg = <0x0 {base:#x} 0x0 {size:#x}>;
    }};"#,
        base = REGION_BASE,
        size = REGION_BYTES,
    )
}

/// A bare QEMU test case: which DTB it boots and what it must show.
struct Case {
    name: &'static str,
    sram_node: String,
    entry: EntryLevel,
    /// Substring the guest's `sramlink: error:` line must contain; `None` for a good run.
    expected_error: Option<&'static str>,
    /// Write garbage over the ring's control words once the ring is ready.
    garbage: bool,
}

/// The bad-input runs of `cargo xtask test`.
fn negative_cases() -> Vec<Case> {
    vec![
        Case {
            name: "bare-no-sram-node",
            sram_node: String::new(),
            entry: EntryLevel::El2,
            expected_error: Some("mmio-sram"),
            garbage: false,
        },
        Case {
            name: "bare-misaligned-region",
            sram_node: format!(
                r#"    sram@{base:x} {{
        compatible = "mmio-sram";
        reg = <0x0 {base:#x} 0x0 0x800000>;
    }};"#,
                base = REGION_BASE + 0x800,
            ),
            entry: EntryLevel::El1,
            expected_error: Some("aligned"),
            garbage: false,
        },
        Case {
            // The seed's own domU snippet: #size-cells = <1> with a four-cell reg.
            name: "bare-reg-cells-mismatch",
            sram_node: format!(
                r#"    passthrough {{
        compatible = "simple-bus";
        ranges;
        #address-cells = <2>;
        #size-cells = <1>;
        sram@{base:x} {{
            compatible = "mmio-sram";
            reg = <0x0 {base:#x} 0x0 {size:#x}>;
        }};
    }};"#,
                base = REGION_BASE,
                size = REGION_BYTES,
            ),
            entry: EntryLevel::El1,
            expected_error: Some("cells"),
            garbage: false,
        },
        Case {
            name: "bare-garbage-header",
            sram_node: good_sram_node(),
            entry: EntryLevel::El1,
            expected_error: Some(""),
            garbage: true,
        },
    ]
}

/// A QEMU RAM backing file in /dev/shm, removed when dropped.
struct RamFile(PathBuf);

impl RamFile {
    fn create(name: &str) -> Result<Self> {
        let dir = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("sramlink-{}-{name}", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len(RAM_BYTES)?;
        Ok(Self(path))
    }
}

impl Drop for RamFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Builds the case's DTB from QEMU's own.
fn case_dtb(case: &Case) -> Result<PathBuf> {
    let dir = paths::work_dir(case.name);
    std::fs::create_dir_all(&dir)?;
    let qemu_dtb = dir.join("qemu-virt.dtb");
    dtb::dump_qemu_dtb(case.entry.machine(), CPU_ARGS, &qemu_dtb)?;
    let base = dtb::decompile(&qemu_dtb)?;
    let out = dir.join("guest.dtb");
    dtb::compile(&dtb::merge(&base, &region_fragment(&case.sram_node)), &out)?;
    Ok(out)
}

fn qemu_args(case: &Case, image: &Path, dtb: &Path, ram: &RamFile) -> Vec<String> {
    let mut args: Vec<String> = vec!["-machine".into(), case.entry.machine().into()];
    args.extend(CPU_ARGS.iter().map(|arg| arg.to_string()));
    args.extend([
        "-object".into(),
        format!(
            "memory-backend-file,id=ram,size={RAM_BYTES},mem-path={},share=on",
            ram.0.display()
        ),
        "-machine".into(),
        "memory-backend=ram".into(),
        "-kernel".into(),
        image.display().to_string(),
        "-dtb".into(),
        dtb.display().to_string(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-monitor".into(),
        "none".into(),
        "-no-reboot".into(),
    ]);
    args
}

/// Boots the guest and waits for its ring; the caller drives the rest.
fn boot(case: &Case, image: &Path, ram: &RamFile) -> Result<Qemu> {
    let dtb = case_dtb(case)?;
    let mut qemu = Qemu::spawn(&qemu_args(case, image, &dtb, ram), case.name)?;
    qemu.set_fatal_patterns(&["panicked at", "sramlink: exception"]);
    qemu.expect("guest banner", "sramlink: booted", BOOT_TIMEOUT)?;
    Ok(qemu)
}

/// `cargo xtask demo --mode bare`.
pub fn demo(options: &DemoOptions) -> Result<()> {
    deps::ensure_qemu_tools()?;
    let image = artifacts::guest_image()?;
    let peer = artifacts::peer_host()?;
    let path = run_good(&image, &peer, options, "bare-qemu")?;
    println!("bare QEMU demo passed; report: {}", path.display());
    Ok(())
}

/// The good run: boot, let the host peer ping the guest `count` times, stop it, check both
/// sides' figures, write `reports/NAME.json`.
fn run_good(image: &Path, peer: &Path, options: &DemoOptions, name: &str) -> Result<PathBuf> {
    let case = Case {
        name: "bare-good",
        sram_node: good_sram_node(),
        entry: EntryLevel::El1,
        expected_error: None,
        garbage: false,
    };
    let ram = RamFile::create(case.name)?;
    let mut qemu = boot(&case, image, &ram)?;
    qemu.set_fatal_patterns(&["panicked at", "sramlink: exception", "sramlink: error:"]);
    qemu.expect("guest ring ready", "sramlink: ring ready", BOOT_TIMEOUT)?;

    // First the other idle policy, leaving the guest serving; then the main run, which stops it.
    let comparison = run_peer(peer, &ram, options, !options.busy_poll, false)?;
    let peer_report = run_peer(peer, &ram, options, options.busy_poll, true)?;

    let stats_line = qemu.expect("guest statistics", report::GUEST_STATS_MARKER, BOOT_TIMEOUT)?;
    qemu.expect("guest stop", "sramlink: stopping", BOOT_TIMEOUT)?;
    let status = qemu.wait_exit("guest power-off", BOOT_TIMEOUT)?;
    crate::qemu::check_clean_exit(status, "bare QEMU run")?;

    let mut extra = Map::new();
    extra.insert("platform".into(), json!("qemu-virt (no Xen), host peer"));
    extra.insert("region_base".into(), json!(REGION_BASE));
    extra.insert(
        "idle_comparison".into(),
        report::idle_comparison(&comparison, &peer_report),
    );
    extra.insert("qemu_exit".into(), json!(status.code()));
    extra.insert(
        "guest_boot_to_stop_seconds".into(),
        json!(qemu.elapsed().as_secs_f64()),
    );
    report::finish(
        name,
        peer_report,
        report::parse_guest_stats(&stats_line),
        extra,
    )
}

/// Runs the host peer's `ping` over the RAM file; returns its report, failing when it exits
/// non-zero.
fn run_peer(
    peer: &Path,
    ram: &RamFile,
    options: &DemoOptions,
    busy_poll: bool,
    stop_guest: bool,
) -> Result<Map<String, serde_json::Value>> {
    let offset = REGION_BASE - RAM_BASE;
    let mut command = Command::new(peer);
    command
        .arg("--file")
        .arg(&ram.0)
        .args(["--offset", &format!("{offset:#x}")])
        .args(["--size", &format!("{REGION_BYTES:#x}")])
        .args(["--json", "--timeout", "30"]);
    if stop_guest {
        command.arg("--stop-guest");
    }
    if busy_poll {
        command.arg("--busy-poll");
    }
    command.args([
        "ping",
        "--count",
        &options.count.to_string(),
        "--size",
        &options.size.to_string(),
    ]);
    println!("xtask: running {command:?}");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("running the host peer")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    let report = match report::find_peer_report(&stdout) {
        Some(parsed) => parsed?,
        None => bail!("the peer printed no report ({})", output.status),
    };
    if !output.status.success() {
        bail!("the peer exited with {}", output.status);
    }
    Ok(report)
}

/// A bad-input run: the guest must print its error line and stop cleanly.
fn run_negative(case: &Case, image: &Path) -> Result<()> {
    let ram = RamFile::create(case.name)?;
    let mut qemu = boot(case, image, &ram)?;
    if case.garbage {
        qemu.set_fatal_patterns(&["panicked at", "sramlink: exception"]);
        qemu.expect("guest ring ready", "sramlink: ring ready", BOOT_TIMEOUT)?;
        write_garbage(&ram)?;
    }
    let expected = case.expected_error.unwrap_or_default();
    let line = qemu.expect("guest error line", "sramlink: error:", BOOT_TIMEOUT)?;
    if !line.contains(expected) {
        bail!(
            "{}: the guest's error line does not mention {expected:?}: {line}",
            case.name
        );
    }
    qemu.expect("guest stop", "sramlink: stopping", BOOT_TIMEOUT)?;
    let status = qemu.wait_exit("guest power-off", BOOT_TIMEOUT)?;
    crate::qemu::check_clean_exit(status, case.name)?;
    println!("ok: {} -> {}", case.name, line.trim());
    Ok(())
}

/// Overwrites the region's control area (header, states, indices) with a pattern, as a
/// misbehaving peer would.
fn write_garbage(ram: &RamFile) -> Result<()> {
    let file = OpenOptions::new().write(true).open(&ram.0)?;
    let garbage: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(0x9d) ^ 0xa5) as u8)
        .collect();
    file.write_all_at(&garbage, REGION_BASE - RAM_BASE)?;
    Ok(())
}

/// The bare QEMU system tests of `cargo xtask test`: a good run and the bad-input runs.
pub fn system_tests<'a>(image: &'a Path, peer: &'a Path) -> Vec<SystemTest<'a>> {
    let options = DemoOptions {
        count: 100_000,
        size: 64,
        busy_poll: false,
    };
    let mut tests: Vec<SystemTest<'a>> = vec![(
        "bare-good".to_string(),
        Box::new(move || {
            deps::ensure_qemu_tools()?;
            run_good(image, peer, &options, "bare-qemu-test").map(|_| ())
        }),
    )];
    for case in negative_cases() {
        tests.push((
            case.name.to_string(),
            Box::new(move || run_negative(&case, image)),
        ));
    }
    tests
}
