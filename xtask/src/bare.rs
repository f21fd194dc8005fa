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
use crate::xen::Region;
use crate::{GuestIdle, artifacts, deps, dtb, paths, plan, report};
use anyhow::{Context, Result, bail};
use serde_json::{Map, json};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Guest RAM on QEMU `virt` starts here.
const RAM_BASE: u64 = 0x4000_0000;
/// Guest RAM below this stays free for the Image (0x4020_0000) and QEMU's DTB (0x4800_0000).
const RAM_RESERVED_FOR_BOOT: u64 = 0x1000_0000;
/// RAM comes in whole GiB (`-m NG`).
const GIB: u64 = 0x4000_0000;

/// How long the guest may take from QEMU start to its banner.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `cargo xtask demo --mode bare`.
#[derive(Clone, Copy)]
pub struct DemoOptions {
    pub count: u64,
    pub size: u32,
    pub busy_poll: bool,
    pub guest_idle: GuestIdle,
}

/// The bare machine: the region of `xen-config/region.env` (the same range as under Xen) inside
/// QEMU's RAM, which is made large enough to hold it.
#[derive(Clone, Copy)]
struct Layout {
    region: Region,
    ram_bytes: u64,
}

impl Layout {
    fn load() -> Result<Self> {
        let region = Region::load()?;
        if region.base < RAM_BASE + RAM_RESERVED_FOR_BOOT {
            bail!(
                "the region {:#x}+{:#x} (xen-config/region.env) must start at or above {:#x} for \
                 the bare QEMU runs: below that lie the guest Image and QEMU's DTB",
                region.base,
                region.size,
                RAM_BASE + RAM_RESERVED_FOR_BOOT
            );
        }
        let ram_bytes = (region.base + region.size - RAM_BASE).next_multiple_of(GIB);
        Ok(Self { region, ram_bytes })
    }

    /// Where the region lies in the RAM backing file.
    fn file_offset(self) -> u64 {
        self.region.base - RAM_BASE
    }

    fn cpu_args(self) -> Vec<String> {
        ["-cpu", "cortex-a57", "-smp", "1", "-m"]
            .iter()
            .map(|arg| arg.to_string())
            .chain([format!("{}G", self.ram_bytes / GIB)])
            .collect()
    }

    /// The device-tree change for the bare runs: the region is part of QEMU's RAM, so it is kept
    /// out of the guest's RAM with `/reserved-memory` `no-map`, and described by `sram_node`.
    fn fragment(self, sram_node: &str, bootargs: &str) -> String {
        format!(
            r#"/ {{
    chosen {{
        bootargs = "{bootargs}";
    }};
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
            base = self.region.base,
            size = self.region.size,
        )
    }

    /// The well-formed `mmio-sram` node, as the seed's host device-tree change writes it.
    fn good_sram_node(self) -> String {
        format!(
            r#"    sram@{base:x} {{
        compatible = "mmio-sram";
        reg = <0x0 {base:#x} 0x0 {size:#x}>;
    }};"#,
            base = self.region.base,
            size = self.region.size,
        )
    }
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

/// A bare QEMU test case: which DTB it boots and what it must show.
struct Case {
    name: &'static str,
    sram_node: String,
    entry: EntryLevel,
    /// The guest's `sramlink: error:` line must contain one of these; `None` for a good run.
    expected_error: Option<&'static [&'static str]>,
    /// Write garbage over the ring's control words once the ring is ready.
    garbage: bool,
    /// The guest's idle policy, given on its command line (`/chosen/bootargs`).
    guest_idle: GuestIdle,
}

/// Console text of a guest panic or CPU exception: never a clean stop.
pub const GUEST_CRASH_PATTERNS: &[&str] = &["sramlink: error: panic", "exception: ESR_EL1="];

/// The bad-input runs of `cargo xtask test`.
fn negative_cases(layout: Layout) -> Vec<Case> {
    let Region { base, size } = layout.region;
    vec![
        Case {
            name: "bare-no-sram-node",
            sram_node: String::new(),
            entry: EntryLevel::El2,
            expected_error: Some(&["no enabled node with compatible = \"mmio-sram\""]),
            garbage: false,
            guest_idle: GuestIdle::Wfe,
        },
        Case {
            name: "bare-misaligned-region",
            sram_node: format!(
                r#"    sram@{base:x} {{
        compatible = "mmio-sram";
        reg = <0x0 {base:#x} 0x0 0x800000>;
    }};"#,
                base = base + 0x800,
            ),
            entry: EntryLevel::El1,
            expected_error: Some(&["is not page-aligned"]),
            garbage: false,
            guest_idle: GuestIdle::Wfe,
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
            ),
            entry: EntryLevel::El1,
            expected_error: Some(&["not a multiple of 3 cells per entry"]),
            garbage: false,
            guest_idle: GuestIdle::Wfe,
        },
        Case {
            name: "bare-garbage-header",
            sram_node: layout.good_sram_node(),
            entry: EntryLevel::El1,
            // Whichever shared word the guest reads first: an index or the peer's state word.
            expected_error: Some(&["protocol error", "state"]),
            garbage: true,
            guest_idle: GuestIdle::BusyPoll,
        },
    ]
}

/// A QEMU RAM backing file in /dev/shm, removed when dropped.
struct RamFile(PathBuf);

impl RamFile {
    fn create(name: &str, layout: Layout) -> Result<Self> {
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
        file.set_len(layout.ram_bytes)?;
        Ok(Self(path))
    }
}

impl Drop for RamFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Builds the case's DTB from QEMU's own.
fn case_dtb(case: &Case, layout: Layout) -> Result<PathBuf> {
    let dir = paths::work_dir(case.name);
    std::fs::create_dir_all(&dir)?;
    let qemu_dtb = dir.join("qemu-virt.dtb");
    let cpu_args = layout.cpu_args();
    let cpu_args: Vec<&str> = cpu_args.iter().map(String::as_str).collect();
    dtb::dump_qemu_dtb(case.entry.machine(), &cpu_args, &qemu_dtb)?;
    let base = dtb::decompile(&qemu_dtb)?;
    let out = dir.join("guest.dtb");
    let fragment = layout.fragment(&case.sram_node, case.guest_idle.bootarg());
    dtb::compile(&dtb::merge(&base, &fragment), &out)?;
    Ok(out)
}

fn qemu_args(case: &Case, layout: Layout, image: &Path, dtb: &Path, ram: &RamFile) -> Vec<String> {
    let mut args: Vec<String> = vec!["-machine".into(), case.entry.machine().into()];
    args.extend(layout.cpu_args());
    args.extend([
        "-object".into(),
        format!(
            "memory-backend-file,id=ram,size={},mem-path={},share=on",
            layout.ram_bytes,
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
fn boot(case: &Case, layout: Layout, image: &Path, ram: &RamFile) -> Result<Qemu> {
    let dtb = case_dtb(case, layout)?;
    let mut qemu = Qemu::spawn(&qemu_args(case, layout, image, &dtb, ram), case.name)?;
    qemu.set_fatal_patterns(GUEST_CRASH_PATTERNS);
    qemu.expect("guest banner", "sramlink: booted", BOOT_TIMEOUT)?;
    Ok(qemu)
}

/// `cargo xtask demo --mode bare`.
pub fn demo(options: &DemoOptions) -> Result<()> {
    deps::ensure_qemu_tools()?;
    let image = artifacts::guest_image()?;
    let peer = artifacts::peer_host()?;
    let path = run_good(&image, &peer, options, "bare-qemu")?;
    // A second boot with the guest's other idle policy, to measure what its back-off costs.
    let other = DemoOptions {
        guest_idle: options.guest_idle.other(),
        ..*options
    };
    let other_path = run_good(&image, &peer, &other, "bare-qemu-other-guest-idle")?;
    report::add_guest_idle_comparison(&path, &other_path)?;
    println!("bare QEMU demo passed; report: {}", path.display());
    Ok(())
}

/// The good run: boot, let the host peer ping the guest `count` times, stop it, check both
/// sides' figures, write `reports/NAME.json`.
fn run_good(image: &Path, peer: &Path, options: &DemoOptions, name: &str) -> Result<PathBuf> {
    let layout = Layout::load()?;
    let case = Case {
        name: match options.guest_idle {
            GuestIdle::Wfe => "bare-good",
            GuestIdle::Irq => "bare-good-guest-irq",
            GuestIdle::BusyPoll => "bare-good-guest-busy-poll",
        },
        sram_node: layout.good_sram_node(),
        entry: EntryLevel::El1,
        expected_error: None,
        garbage: false,
        guest_idle: options.guest_idle,
    };
    let ram = RamFile::create(case.name, layout)?;
    let mut qemu = boot(&case, layout, image, &ram)?;
    qemu.set_fatal_patterns(&["sramlink: error:"]);
    // Without Xen there are no events: the guest must say so and poll (irq falls back to wfe).
    qemu.expect(
        "guest runs without events on bare QEMU",
        "sramlink: events: off (no Xen:",
        BOOT_TIMEOUT,
    )?;
    let policy = match case.guest_idle {
        GuestIdle::Irq => {
            qemu.expect(
                "guest falls back from irq to wfe without events",
                "sramlink: idle policy irq needs Xen events: waiting with wfe instead",
                BOOT_TIMEOUT,
            )?;
            GuestIdle::Wfe
        }
        other => other,
    };
    qemu.expect(
        "guest idle policy from its command line",
        &format!("sramlink: idle policy: {}", policy.name()),
        BOOT_TIMEOUT,
    )?;
    qemu.expect("guest ring ready", "sramlink: ring ready", BOOT_TIMEOUT)?;

    let mut runs = Vec::new();
    for args in plan::peer_runs(options.count, options.size, options.busy_poll, false, 0) {
        runs.push(run_peer(peer, &ram, layout, &args)?);
    }

    let stats_line = qemu.expect("guest statistics", report::GUEST_STATS_MARKER, BOOT_TIMEOUT)?;
    qemu.expect("guest stop", "sramlink: stopping", BOOT_TIMEOUT)?;
    let status = qemu.wait_exit("guest power-off", BOOT_TIMEOUT)?;
    crate::qemu::check_clean_exit(status, "bare QEMU run")?;

    let mut extra = Map::new();
    extra.insert("platform".into(), json!("qemu-virt (no Xen), host peer"));
    extra.insert("region_base".into(), json!(layout.region.base));
    // What the guest did (irq falls back to wfe here), not what it was asked.
    extra.insert("guest_idle".into(), json!(policy.name()));
    extra.insert("qemu_exit".into(), json!(status.code()));
    extra.insert(
        "guest_boot_to_stop_seconds".into(),
        json!(qemu.elapsed().as_secs_f64()),
    );
    report::finish(name, runs, report::parse_guest_stats(&stats_line), extra)
}

/// Runs the host peer over the RAM file with `args` (see [`plan::peer_runs`]); returns its
/// report, failing when it exits non-zero.
fn run_peer(
    peer: &Path,
    ram: &RamFile,
    layout: Layout,
    args: &[String],
) -> Result<Map<String, serde_json::Value>> {
    let offset = layout.file_offset();
    let mut command = Command::new(peer);
    command
        .arg("--file")
        .arg(&ram.0)
        .args(["--offset", &format!("{offset:#x}")])
        .args(["--size", &format!("{:#x}", layout.region.size)])
        .args(["--json", "--timeout", "30"])
        .args(args);
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

/// Builds the clean-room C peer (`c-peer/`, written from `docs/ABI.md` alone) with the host's C
/// compiler, warnings as errors.
fn build_c_peer() -> Result<PathBuf> {
    let source = paths::workspace_root()
        .join("c-peer")
        .join("sramlink_peer.c");
    let dir = paths::out_dir().join("c-peer");
    std::fs::create_dir_all(&dir)?;
    let binary = dir.join("sramlink_peer");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let output = Command::new(&compiler)
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .with_context(|| format!("running the C compiler {compiler:?}"))?;
    if !output.status.success() {
        bail!(
            "{compiler} could not build {}:\n{}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(binary)
}

/// The ABI document's proof: the C peer written from `docs/ABI.md` alone makes round trips with
/// the real guest, and both sides' counts agree.
fn run_c_peer(image: &Path, count: u64) -> Result<()> {
    let c_peer = build_c_peer()?;
    let layout = Layout::load()?;
    let case = Case {
        name: "bare-c-peer",
        sram_node: layout.good_sram_node(),
        entry: EntryLevel::El1,
        expected_error: None,
        garbage: false,
        guest_idle: GuestIdle::Wfe,
    };
    let ram = RamFile::create(case.name, layout)?;
    let mut qemu = boot(&case, layout, image, &ram)?;
    qemu.set_fatal_patterns(&["sramlink: error:"]);
    qemu.expect("guest ring ready", "sramlink: ring ready", BOOT_TIMEOUT)?;
    let mut command = Command::new(&c_peer);
    command
        .arg(&ram.0)
        .arg(format!("{:#x}", layout.file_offset()))
        .arg(format!("{:#x}", layout.region.size))
        .arg(count.to_string());
    println!("xtask: running {command:?}");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("running the C peer")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        bail!("the C peer exited with {}", output.status);
    }
    let field = |key: &str| -> Result<u64> {
        stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("the C peer's line has no {key}=N: {stdout}"))
    };
    let (sent, received) = (field("sent")?, field("received")?);
    let stats_line = qemu.expect("guest statistics", report::GUEST_STATS_MARKER, BOOT_TIMEOUT)?;
    qemu.expect("guest stop", "sramlink: stopping", BOOT_TIMEOUT)?;
    let status = qemu.wait_exit("guest power-off", BOOT_TIMEOUT)?;
    crate::qemu::check_clean_exit(status, case.name)?;
    let stats = report::parse_guest_stats(&stats_line)
        .with_context(|| format!("unreadable guest statistics: {stats_line}"))?;
    let guest = |key: &str| {
        stats
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(u64::MAX)
    };
    if sent != count || received != count {
        bail!("the C peer was asked for {count} round trips but sent {sent}, received {received}");
    }
    if guest("received") != sent + 1 || guest("sent") != received {
        bail!(
            "the guest's counts do not match the C peer's ({sent} sent + Stop, {received} received): {stats_line}"
        );
    }
    if guest("lost") + guest("corrupted") + guest("protocol_errors") != 0 {
        bail!("the guest reported errors with the C peer: {stats_line}");
    }
    println!(
        "ok: {}: {count} round trips, guest agrees: {}",
        case.name,
        stats_line.trim()
    );
    Ok(())
}

/// A bad-input run: the guest must print its error line and stop cleanly.
fn run_negative(case: &Case, layout: Layout, image: &Path) -> Result<()> {
    let ram = RamFile::create(case.name, layout)?;
    let mut qemu = boot(case, layout, image, &ram)?;
    if case.garbage {
        qemu.expect("guest ring ready", "sramlink: ring ready", BOOT_TIMEOUT)?;
        write_garbage(&ram, layout)?;
    }
    let expected = case.expected_error.unwrap_or_default();
    let line = qemu.expect("guest error line", "sramlink: error:", BOOT_TIMEOUT)?;
    if GUEST_CRASH_PATTERNS
        .iter()
        .any(|crash| line.contains(crash))
    {
        bail!(
            "{}: the guest crashed instead of reporting the bad input: {line}",
            case.name
        );
    }
    if !expected.iter().any(|text| line.contains(text)) {
        bail!(
            "{}: the guest's error line mentions none of {expected:?}: {line}",
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
fn write_garbage(ram: &RamFile, layout: Layout) -> Result<()> {
    let file = OpenOptions::new().write(true).open(&ram.0)?;
    let garbage: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(0x9d) ^ 0xa5) as u8)
        .collect();
    file.write_all_at(&garbage, layout.file_offset())?;
    Ok(())
}

/// Peer modes the restart test cycles through (killed runs and the runs after them).
const RESTART_MODES: &[&[&str]] = &[
    &["ping"],
    &["echo", "--window", "8"],
    &["stream", "--direction", "both"],
    &["stream", "--direction", "to-guest"],
    &["stream", "--direction", "from-guest"],
];

/// Messages each surviving session exchanges: small, so 100 restarts stay fast under TCG.
const RESTART_SESSION_COUNT: u64 = 300;

/// `--timeout` of the surviving sessions; a run longer than this plus [`RESTART_GRACE`] is a
/// failure ("no run past its timeout").
const RESTART_TIMEOUT_SECS: u64 = 10;
const RESTART_GRACE: Duration = Duration::from_secs(5);

/// Latest moment of a kill after the killed peer started (uniform in `0..=` this): from
/// before it attached to deep inside its run.
const RESTART_KILL_WITHIN_MS: u64 = 400;

/// A small xorshift generator: the kill moments, reproducible from the printed seed.
struct Moments(u64);

impl Moments {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % (bound + 1)
    }
}

/// The peer's command for one run of the restart test.
fn restart_peer_command(
    peer: &Path,
    ram: &RamFile,
    layout: Layout,
    mode: &[&str],
    count: u64,
    timeout_secs: u64,
    stop_guest: bool,
) -> Command {
    let mut command = Command::new(peer);
    command
        .arg("--file")
        .arg(&ram.0)
        .args(["--offset", &format!("{:#x}", layout.file_offset())])
        .args(["--size", &format!("{:#x}", layout.region.size)])
        .args(["--json", "--timeout", &timeout_secs.to_string()])
        .args(mode)
        .args(["--count", &count.to_string(), "--size", "64"]);
    if stop_guest {
        command.arg("--stop-guest");
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Runs one surviving session to its end (killing it past its timeout plus grace); its report.
fn run_surviving_peer(mut command: Command, what: &str) -> Result<Map<String, serde_json::Value>> {
    let started = std::time::Instant::now();
    let mut child = command.spawn().context("starting the host peer")?;
    let limit = Duration::from_secs(RESTART_TIMEOUT_SECS) + RESTART_GRACE;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what}: the peer ran past its --timeout {RESTART_TIMEOUT_SECS} s (killed at {limit:?})"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = match report::find_peer_report(&stdout) {
        Some(parsed) => parsed?,
        None => bail!(
            "{what}: the peer printed no report ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    };
    if !output.status.success() {
        bail!(
            "{what}: the peer exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(report)
}

/// A `sramlink: session S (skipped N B); session P: received=…` console line: (S, P, counters).
fn parse_session_line(line: &str) -> Option<(u64, u64, Map<String, serde_json::Value>)> {
    let rest = &line[line.find("sramlink: session ")? + "sramlink: session ".len()..];
    let (new, rest) = rest.split_once(' ')?;
    let rest = &rest[rest.find("; session ")? + "; session ".len()..];
    let (previous, rest) = rest.split_once(':')?;
    let stats = report::parse_guest_stats(&format!("{}{}", report::GUEST_STATS_MARKER, rest))?;
    Some((new.parse().ok()?, previous.parse().ok()?, stats))
}

fn field(object: &Map<String, serde_json::Value>, key: &str) -> u64 {
    object
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(u64::MAX)
}

/// The restart test (issue 8): `restarts` times, a peer in one of the modes is SIGKILLed at a
/// random moment and a new peer runs a small session in another mode. Every new session must
/// complete its count with nothing lost, corrupted, stale or duplicated and within its
/// timeout; at the end a peer stops the guest, and the guest's per-session counters (one
/// console line per new session) must add up to its totals and match every surviving peer's.
fn run_restarts(image: &Path, peer: &Path, restarts: usize) -> Result<()> {
    let layout = Layout::load()?;
    let case = Case {
        name: "bare-peer-restarts",
        sram_node: layout.good_sram_node(),
        entry: EntryLevel::El1,
        expected_error: None,
        garbage: false,
        guest_idle: GuestIdle::Wfe,
    };
    let seed = std::env::var("SRAMLINK_RESTART_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64)
                | 1
        });
    println!(
        "xtask: restart test: {restarts} kills, seed {seed} (SRAMLINK_RESTART_SEED replays it)"
    );
    let mut moments = Moments(seed);
    let ram = RamFile::create(case.name, layout)?;
    let mut qemu = boot(&case, layout, image, &ram)?;
    qemu.set_fatal_patterns(&["sramlink: error:"]);
    qemu.expect("guest ring ready", "sramlink: ring ready", BOOT_TIMEOUT)?;
    let started = std::time::Instant::now();
    // Session number -> (peer sent, peer received) of every surviving session.
    let mut survivors = std::collections::BTreeMap::new();
    for round in 0..restarts {
        let killed_mode = RESTART_MODES[round % RESTART_MODES.len()];
        let mut victim =
            restart_peer_command(peer, &ram, layout, killed_mode, 100_000_000, 30, false)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the peer to kill")?;
        let delay = moments.next(RESTART_KILL_WITHIN_MS);
        std::thread::sleep(Duration::from_millis(delay));
        // `Child::kill` is SIGKILL: the peer gets no chance to leave cleanly.
        victim.kill().context("SIGKILL")?;
        victim.wait()?;
        let mode = RESTART_MODES[(round + 2) % RESTART_MODES.len()];
        let what = format!(
            "restart {}/{restarts}: {} after a {} killed at {delay} ms",
            round + 1,
            mode.join(" "),
            killed_mode.join(" ")
        );
        let command = restart_peer_command(
            peer,
            &ram,
            layout,
            mode,
            RESTART_SESSION_COUNT,
            RESTART_TIMEOUT_SECS,
            false,
        );
        let run = run_surviving_peer(command, &what)?;
        check_surviving_session(&run, &what)?;
        survivors.insert(
            field(&run, "session"),
            (
                field(&run, "messages_sent"),
                field(&run, "messages_received"),
            ),
        );
    }
    let elapsed = started.elapsed();
    let command = restart_peer_command(
        peer,
        &ram,
        layout,
        &["ping"],
        10,
        RESTART_TIMEOUT_SECS,
        true,
    );
    let last = run_surviving_peer(command, "final stopping peer")?;
    check_surviving_session(&last, "final stopping peer")?;
    let stats_line = qemu.expect("guest statistics", report::GUEST_STATS_MARKER, BOOT_TIMEOUT)?;
    qemu.expect("guest stop", "sramlink: stopping", BOOT_TIMEOUT)?;
    let status = qemu.wait_exit("guest power-off", BOOT_TIMEOUT)?;
    crate::qemu::check_clean_exit(status, case.name)?;
    let totals = report::parse_guest_stats(&stats_line)
        .with_context(|| format!("unreadable guest statistics: {stats_line}"))?;
    for key in ["lost", "corrupted", "protocol_errors"] {
        if field(&totals, key) != 0 {
            bail!("the guest counted {key} over the restarts: {stats_line}");
        }
    }
    // Every session's counters, as the guest printed them when the next one started.
    let mut received = 0u64;
    let mut sent = 0u64;
    let mut sessions = 0usize;
    for line in qemu.lines_seen() {
        let Some((_, previous, stats)) = parse_session_line(line) else {
            continue;
        };
        sessions += 1;
        received += field(&stats, "received");
        sent += field(&stats, "sent");
        if let Some((peer_sent, peer_received)) = survivors.remove(&previous) {
            if field(&stats, "received") != peer_sent || field(&stats, "sent") != peer_received {
                bail!(
                    "the guest's counters of session {previous} differ from its peer's \
                     ({peer_sent} sent, {peer_received} received): {line}"
                );
            }
        }
    }
    if !survivors.is_empty() {
        bail!(
            "no guest session line for the surviving sessions {:?}",
            survivors.keys()
        );
    }
    // The final session: its peer's sent + Stop, and received (the Stats reply not counted).
    let (last_sent, last_received) = (
        field(&last, "messages_sent"),
        field(&last, "messages_received"),
    );
    if field(&totals, "received") != received + last_sent + 1
        || field(&totals, "sent") != sent + last_received
    {
        bail!(
            "the guest's totals ({stats_line}) are not the sum of its {sessions} session lines              (received {received}, sent {sent}) and the final session ({last_sent} + Stop sent,              {last_received} received)"
        );
    }
    println!(
        "ok: {}: {restarts} peers SIGKILLed in every mode, {restarts} new sessions of \
         {RESTART_SESSION_COUNT} messages each complete and clean, guest totals = sum of the \
         {sessions} earlier sessions and the final one ({:.1} s for the restarts, TCG)",
        case.name,
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// A surviving session's report: its count reached, nothing lost, corrupted or stale.
fn check_surviving_session(run: &Map<String, serde_json::Value>, what: &str) -> Result<()> {
    let bad: Vec<String> = ["lost", "corrupted", "protocol_errors"]
        .iter()
        .filter(|key| field(run, key) != 0)
        .map(|key| format!("{key}={}", field(run, key)))
        .collect();
    if !bad.is_empty()
        || run
            .get("session")
            .and_then(serde_json::Value::as_u64)
            .is_none()
    {
        bail!("{what}: not clean ({}); report: {run:?}", bad.join(", "));
    }
    Ok(())
}

/// The bare QEMU system tests of `cargo xtask test`: a good run and the bad-input runs.
pub fn system_tests<'a>(image: &'a Path, peer: &'a Path) -> Result<Vec<SystemTest<'a>>> {
    deps::ensure_qemu_tools()?;
    let layout = Layout::load()?;
    let options = DemoOptions {
        count: 100_000,
        size: 64,
        busy_poll: false,
        // Asks for events: bare QEMU has no Xen, so this also checks the guest says so and
        // polls (wfe) instead.
        guest_idle: GuestIdle::Irq,
    };
    let mut tests: Vec<SystemTest<'a>> = vec![(
        "bare-good".to_string(),
        Box::new(move || run_good(image, peer, &options, "bare-qemu-test").map(|_| ())),
    )];
    tests.push((
        "bare-peer-restarts".to_string(),
        Box::new(move || run_restarts(image, peer, 100)),
    ));
    tests.push((
        "bare-c-peer-from-abi-doc".to_string(),
        Box::new(move || run_c_peer(image, 20_000)),
    ));
    for case in negative_cases(layout) {
        tests.push((
            case.name.to_string(),
            Box::new(move || run_negative(&case, layout, image)),
        ));
    }
    Ok(tests)
}
