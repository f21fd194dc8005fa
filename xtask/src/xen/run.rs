//! One Xen boot: the ImageBuilder root laid out from the config, the initramfs and DTBs built,
//! QEMU started and its console followed stage by stage; the good run and the negative run.

use super::checks::{
    check_region, dom0_rc, guest_region, hex_field, peer_output, region_stage_error, report_number,
    seen_or_expect, xen_version,
};
use super::chosen::chosen_fragment;
use super::config::{DomUTree, Region, check_config_files, compile_source};
use super::dom0_init::{
    DOM0_DONE_MARKER, DOM0_INIT_MARKER, Dom0Run, IDLE_BEGIN, IDLE_END, NEGATIVE_OK,
    dom0_init_script,
};
use super::host_dt::{self, HostTree};
use super::layout::{ModuleKind, layout, qemu_args};
use super::{DemoOptions, xen_config_dir};
use crate::board::{Board, BoardId, DtbOrigin};
use crate::imagebuilder;
use crate::qemu::Qemu;
use crate::{GuestIdle, artifacts, debs, dtb, initramfs, module, paths, report};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which Xen run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// The guest with the region; the peer exchanges messages.
    Good,
    /// The domU partial DT without the mmio-sram node.
    NoSram,
}

/// The binaries a run boots.
pub(super) struct Inputs {
    xen: PathBuf,
    dom0_kernel: PathBuf,
    busybox: PathBuf,
    guest_image: PathBuf,
    peer: PathBuf,
    /// `sramlink.ko` built for `dom0_kernel`, and the helper that runs the peer unprivileged.
    module: PathBuf,
    helper: PathBuf,
    /// `xen-evtchn.ko` of the dom0 kernel's package (absent for `--dom0-kernel`).
    evtchn_module: Option<PathBuf>,
    /// The DTB of each board whose tree comes from Debian's kernel package.
    board_dtbs: Vec<(BoardId, PathBuf)>,
}

impl Inputs {
    /// The user's Xen and dom0 kernel where given (`--xen`, `--dom0-kernel`, checked to
    /// exist), Debian's otherwise (only those downloaded), Debian's busybox, the guest and the
    /// peer built, and the board DTBs `options.boards` take from Debian's kernel package.
    pub(super) fn gather(options: &DemoOptions) -> Result<Self> {
        let debian_dtbs: Vec<(BoardId, &str)> = options
            .boards
            .iter()
            .filter_map(|id| match id.board().dtb {
                DtbOrigin::DebianKernel(path) => Some((*id, path)),
                DtbOrigin::Qemu => None,
            })
            .collect();
        let paths: Vec<&str> = debian_dtbs.iter().map(|(_, path)| *path).collect();
        let binaries = debs::fetch(
            &debs::Own {
                xen: options.xen.clone(),
                dom0_kernel: options.dom0_kernel.clone(),
            },
            &paths,
        )?;
        let peer = artifacts::peer_aarch64()?;
        Ok(Self {
            module: match &options.dom0_module {
                Some(own) => module::own_module(own, &binaries.dom0_kernel)?,
                None => module::build_for_kernel(&binaries.dom0_kernel)?,
            },
            helper: peer.with_file_name(module::DOM0_HELPER),
            evtchn_module: debs::xen_module(&binaries.dom0_kernel, "xen-evtchn"),
            xen: binaries.xen,
            dom0_kernel: binaries.dom0_kernel,
            busybox: binaries.busybox,
            guest_image: artifacts::guest_image()?,
            peer,
            board_dtbs: debian_dtbs
                .iter()
                .map(|(id, _)| *id)
                .zip(binaries.board_dtbs)
                .collect(),
        })
    }

    /// The board's DTB when it comes from Debian (`None`: QEMU builds the board's tree).
    fn board_dtb(&self, board: &Board) -> Result<Option<&Path>> {
        match board.dtb {
            DtbOrigin::Qemu => Ok(None),
            DtbOrigin::DebianKernel(path) => self
                .board_dtbs
                .iter()
                .find(|(id, _)| *id == board.id)
                .map(|(_, dtb)| Some(dtb.as_path()))
                .with_context(|| format!("{path} of board {} was not fetched", board.name)),
        }
    }
}

/// Everything prepared for one boot.
struct Prepared {
    args: Vec<String>,
    region: Region,
    host_tree: HostTree,
    /// Xen's console as the config's `XEN_CMD` names it (`dtuart=`).
    xen_console: Option<String>,
}

/// `dir/name`, refusing names that leave `dir`.
fn in_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let relative = Path::new(name);
    if relative.is_absolute() || relative.components().any(|c| c.as_os_str() == "..") {
        bail!("config file name {name:?} must be relative to the ImageBuilder root");
    }
    Ok(dir.join(relative))
}

/// Makes `dir/name` a symbolic link to `target` (replacing an old one).
fn link(target: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let path = in_dir(dir, name)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(&path);
    let target = std::fs::canonicalize(target)
        .with_context(|| format!("{} does not exist", target.display()))?;
    std::os::unix::fs::symlink(&target, &path)
        .with_context(|| format!("linking {} to {}", path.display(), target.display()))?;
    Ok(path)
}

/// Lays out the ImageBuilder root for the board's config, builds the initramfs and DTBs, returns
/// the QEMU arguments.
fn prepare(
    board: &Board,
    case: Case,
    inputs: &Inputs,
    run: &Dom0Run,
    work: &Path,
) -> Result<Prepared> {
    let config_dir = xen_config_dir();
    let config_name = board.config;
    let mut config = imagebuilder::load(&config_dir.join(config_name))?;
    let region = Region::load()?;
    check_config_files(&config_dir, &region)?;
    if config.domus.len() != 1 {
        bail!("{config_name} must define exactly one domU (NUM_DOMUS=1), the sramlink guest");
    }
    if case == Case::NoSram {
        config.domus[0].passthrough_dtb = Some(format!("{}.dtb", DomUTree::NoSram.stem()));
    }
    // The guest takes the last `sramlink.idle=` word of its command line.
    let guest_cmd = &mut config.domus[0].cmd;
    *guest_cmd = format!("{guest_cmd} {}", run.guest_idle.bootarg());
    if region.base < config.memory_start || region.end() > config.memory_end {
        bail!(
            "the region {:#x}+{:#x} is outside RAM {:#x}..{:#x} of {config_name}",
            region.base,
            region.size,
            config.memory_start,
            config.memory_end
        );
    }
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;

    // The binaries under the config's names: `work` is an ImageBuilder `-d` root.
    let xen = link(&inputs.xen, work, &config.xen)?;
    let dom0_kernel_name = config
        .dom0_kernel
        .clone()
        .context("the config has no DOM0_KERNEL; the Xen run needs dom0 for the peer")?;
    let dom0_ramdisk_name = config
        .dom0_ramdisk
        .clone()
        .context("the config has no DOM0_RAMDISK; the peer runs from dom0's initramfs")?;
    let dom0_kernel = link(&inputs.dom0_kernel, work, &dom0_kernel_name)?;
    let domu = config.domus[0].clone();
    let guest = link(&inputs.guest_image, work, &domu.kernel)?;
    let ramdisk = in_dir(work, &dom0_ramdisk_name)?;
    let modules: Vec<PathBuf> = if run.guest_idle.events() {
        vec![inputs.evtchn_module.clone().with_context(|| {
            format!(
                "the events run needs xen-evtchn.ko from the dom0 kernel's package, next to {} \
                 (lib/modules/VERSION/kernel/drivers/xen/); an own --dom0-kernel has none",
                inputs.dom0_kernel.display()
            )
        })?]
    } else {
        Vec::new()
    };
    initramfs::build(
        &initramfs::Contents {
            busybox: &inputs.busybox,
            peer: &inputs.peer,
            helper: &inputs.helper,
            module: &inputs.module,
            init_script: &dom0_init_script(run),
            modules: &modules,
        },
        &ramdisk,
    )?;

    // The domU partial device tree named by DOMU_PASSTHROUGH_DTB[0], from xen-config/.
    let partial_name = domu
        .passthrough_dtb
        .clone()
        .context("DOMU_PASSTHROUGH_DTB[0] is not set: the guest would get no region")?;
    let partial = in_dir(work, &partial_name)?;
    let partial_source = config_dir.join(Path::new(&partial_name).with_extension("dts"));
    compile_source(&partial_source, &partial, false)?;

    // Host DTB (the config's DEVICE_TREE): the board's tree as QEMU edits it, with recipe step
    // 1 applied on this host, as a board user prepares theirs (u-boot's `fdt apply` is not
    // relied on: Debian's qemu_arm64 u-boot lacks it and ImageBuilder's script then boots
    // without it).
    let host = in_dir(work, &config.device_tree)?;
    let host_tree = host_dt::build(board, inputs.board_dtb(board)?, &xen, &region, work, &host)?;
    println!(
        "xtask: {}: recipe step 1 in its {} form (the shrunk /memory {} reaches Xen as {})",
        board.name,
        host_tree.carve_out.name(),
        host_dt::banks_text(&host_tree.shrink_written),
        host_dt::banks_text(&host_tree.shrink_passed),
    );

    let size = |path: &Path| -> Result<u64> {
        Ok(std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len())
    };
    let files = vec![
        (
            ModuleKind::Dom0Kernel,
            dom0_kernel.clone(),
            size(&dom0_kernel)?,
        ),
        (ModuleKind::Dom0Ramdisk, ramdisk.clone(), size(&ramdisk)?),
        (ModuleKind::DomUKernel(0), guest.clone(), size(&guest)?),
        (ModuleKind::DomUDtb(0), partial.clone(), size(&partial)?),
    ];
    let limit = region.base.min(config.memory_end);
    let modules = layout(&files, board.modules_start.max(config.memory_start), limit)?;
    // The boot's tree: DEVICE_TREE, then what only QEMU's model of the board needs (kept out of
    // DEVICE_TREE, which is what a user of the real board would prepare), then /chosen.
    let mut host_dts = dtb::decompile(&host)?;
    if let Some((path, fragment)) = host_dt::qemu_only_fragment(board)? {
        host_dts = dtb::merge(
            &host_dts,
            &format!("/* QEMU only, from {}: */\n{fragment}", path.display()),
        );
    }
    let host_dts = dtb::merge(&host_dts, &chosen_fragment(&config, &modules));
    let host_dtb = work.join("host.dtb");
    dtb::compile(&host_dts, &host_dtb)?;

    Ok(Prepared {
        args: qemu_args(board, &xen, &host_dtb, &modules)?,
        region,
        host_tree,
        xen_console: config
            .xen_cmd
            .split_whitespace()
            .find_map(|word| word.strip_prefix("dtuart="))
            .map(str::to_string),
    })
}

/// Stage timeouts. Generous: CI machines are slow and share two cores.
const XEN_BANNER_TIMEOUT: Duration = Duration::from_secs(60);
const GUEST_BANNER_TIMEOUT: Duration = Duration::from_secs(60);
const DOM0_INIT_TIMEOUT: Duration = Duration::from_secs(240);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Stage times of a run, seconds since QEMU started.
#[derive(Default)]
struct Timeline(Map<String, Value>);

impl Timeline {
    fn mark(&mut self, qemu: &Qemu, stage: &str) {
        self.0.insert(
            stage.to_string(),
            json!((qemu.elapsed().as_secs_f64() * 100.0).round() / 100.0),
        );
    }
}

/// The good run: returns the report path.
pub(super) fn run_good(
    board: &Board,
    inputs: &Inputs,
    run: &Dom0Run,
    name: &str,
) -> Result<PathBuf> {
    let work = paths::work_dir(name);
    let prepared = prepare(board, Case::Good, inputs, run, &work)?;
    println!("xtask: qemu-system-aarch64 {}", prepared.args.join(" "));
    let mut qemu = Qemu::spawn(&prepared.args, name)?;
    let mut timeline = Timeline::default();
    qemu.set_fatal_patterns(&[
        "Kernel panic",
        "(XEN) Panic",
        "panicked at",
        "sramlink: exception",
        "sramlink: error:",
    ]);
    let banner = qemu.expect("Xen starts", "Xen version", XEN_BANNER_TIMEOUT)?;
    timeline.mark(&qemu, "xen_banner");
    seen_or_expect(
        &mut qemu,
        "guest banner on vpl011",
        "sramlink: booted",
        GUEST_BANNER_TIMEOUT,
    )?;
    timeline.mark(&qemu, "guest_banner");
    let region_line = seen_or_expect(
        &mut qemu,
        "guest region",
        "sramlink: region ",
        GUEST_BANNER_TIMEOUT,
    )?;
    // The guest's view of the region must be the configured one, or the run is not testing
    // what xen-config/ describes.
    let guest = guest_region(&region_line);
    let guest_mapping = guest
        .as_ref()
        .map(|(_, _, mapping)| mapping.clone())
        .unwrap_or_default();
    let (guest_base, guest_size) = check_region(
        "the guest",
        &prepared.region,
        guest.map(|(base, size, _)| (base, size)),
        region_line.trim(),
    )
    .map_err(|error| region_stage_error(&qemu, "guest region", &error))?;
    seen_or_expect(
        &mut qemu,
        "guest idle policy from its command line",
        &format!("sramlink: idle policy: {}", run.guest_idle.name()),
        GUEST_BANNER_TIMEOUT,
    )?;
    if run.guest_idle.events() {
        seen_or_expect(
            &mut qemu,
            "guest event channel for dom0",
            "sramlink: events: Xen",
            GUEST_BANNER_TIMEOUT,
        )?;
        seen_or_expect(
            &mut qemu,
            "guest bounds its irq sleeps with the virtual timer",
            "sramlink: irq sleeps end within",
            GUEST_BANNER_TIMEOUT,
        )?;
    }
    seen_or_expect(
        &mut qemu,
        "guest ring ready",
        "sramlink: ring ready",
        GUEST_BANNER_TIMEOUT,
    )?;
    seen_or_expect(
        &mut qemu,
        "dom0 reaches /init",
        DOM0_INIT_MARKER,
        DOM0_INIT_TIMEOUT,
    )?;
    timeline.mark(&qemu, "dom0_init");
    let mut extra = Map::new();
    if run.guest_idle.events() {
        seen_or_expect(
            &mut qemu,
            "peer asked for events without xen-evtchn fails clearly",
            NEGATIVE_OK,
            Duration::from_secs(run.timeout_seconds + 60),
        )?;
        let lines = qemu.lines_seen();
        let error = lines
            .iter()
            .find(|line| line.contains("sramlink-peer: error:") && line.contains("xen-evtchn"))
            .with_context(|| {
                format!(
                    "the peer without xen-evtchn failed without naming the module; full console \
                     log: {}",
                    qemu.log_path().display()
                )
            })?;
        println!("xtask: negative case: {}", error.trim());
        extra.insert("events_negative_case".into(), json!(error.trim()));
    }
    if run.idle_seconds > 0 {
        let limit = Duration::from_secs(run.timeout_seconds * 8 + 120 + run.count / 200);
        seen_or_expect(&mut qemu, "peer idle window begins", IDLE_BEGIN, limit)?;
        let before = process_cpu_seconds(qemu.pid())?;
        let begun = std::time::Instant::now();
        seen_or_expect(
            &mut qemu,
            "peer idle window ends",
            IDLE_END,
            Duration::from_secs(run.idle_seconds + 60),
        )?;
        let cpu = process_cpu_seconds(qemu.pid())? - before;
        let wall = begun.elapsed().as_secs_f64();
        println!(
            "xtask: idle window: QEMU used {cpu:.2} CPU s in {wall:.2} s (guest {}, peer {})",
            run.guest_idle.name(),
            if run.guest_idle.events() {
                "events"
            } else if run.busy_poll {
                "busy-poll"
            } else {
                "sleep"
            }
        );
        extra.insert(
            "idle_window".into(),
            json!({ "qemu_cpu_seconds": cpu, "wall_seconds": wall,
                    "note": "host CPU time of the whole QEMU process (TCG emulation: all vCPUs, Xen, dom0 and the guest) while both sides waited" }),
        );
    }
    // The peer's own timeout bounds each wait; the exchange itself gets 1 ms per round trip on
    // top, so a stall is reported rather than waited out forever.
    let exchange_timeout = Duration::from_secs(run.timeout_seconds * 2 + 60 + run.count / 1000);
    let done = seen_or_expect(
        &mut qemu,
        "peer exchange in dom0",
        DOM0_DONE_MARKER,
        exchange_timeout,
    )?;
    timeline.mark(&qemu, "dom0_done");
    if dom0_rc(&done) != Some(0) {
        bail!(
            "stage 'peer exchange in dom0' failed: the peer exited with {}; its output:\n    {}\n  full console log: {}",
            dom0_rc(&done).map_or("no exit code".to_string(), |rc| format!("code {rc}")),
            peer_output(qemu.lines_seen()).join("\n    "),
            qemu.log_path().display()
        );
    }
    seen_or_expect(
        &mut qemu,
        "guest stops",
        "sramlink: stopping",
        GUEST_BANNER_TIMEOUT,
    )?;
    let status = qemu.wait_exit("dom0 power-off", EXIT_TIMEOUT)?;
    timeline.mark(&qemu, "qemu_exit");
    crate::qemu::check_clean_exit(status, "Xen run")?;

    let console = qemu.lines_seen().join("\n");
    let runs = report::find_peer_reports(&console)?;
    let Some(peer_report) = runs.last() else {
        bail!(
            "the peer printed no report in dom0 ({}); full console log: {}",
            done.trim(),
            qemu.log_path().display()
        )
    };
    let dom0_base = report_number(peer_report.get("region_base"));
    let dom0_size = report_number(peer_report.get("region_size"));
    check_region(
        "the peer in dom0",
        &prepared.region,
        dom0_base.zip(dom0_size),
        &format!(
            "its report has region_base {} and region_size {}",
            peer_report.get("region_base").unwrap_or(&Value::Null),
            peer_report.get("region_size").unwrap_or(&Value::Null)
        ),
    )
    .map_err(|error| region_stage_error(&qemu, "dom0 region", &error))?;
    let dom0_module = module::check_dom0_console(
        qemu.lines_seen(),
        &runs,
        prepared.region.base,
        prepared.region.size,
    )
    .map_err(|error| region_stage_error(&qemu, "dom0 module", &error))?;
    let guest_stats = qemu
        .lines_seen()
        .iter()
        .find_map(|line| report::parse_guest_stats(line));

    extra.insert("board".into(), json!(board.name));
    extra.insert("platform".into(), json!(board.description));
    extra.insert(
        "config".into(),
        json!(format!("xen-config/{}", board.config)),
    );
    extra.insert("xen_console".into(), json!(prepared.xen_console));
    extra.insert("carve_out".into(), prepared.host_tree.report());
    extra.insert("xen_version".into(), json!(xen_version(&banner)));
    extra.insert("guest_idle".into(), json!(run.guest_idle.name()));
    extra.insert(
        "region_guest".into(),
        json!({ "base": format!("{guest_base:#x}"), "size": format!("{guest_size:#x}"), "mapping": guest_mapping }),
    );
    extra.insert(
        "region_dom0".into(),
        json!({
            "base": hex_field(peer_report.get("region_base")),
            "size": hex_field(peer_report.get("region_size")),
        }),
    );
    extra.insert(
        "region_configured".into(),
        json!({ "base": format!("{:#x}", prepared.region.base), "size": format!("{:#x}", prepared.region.size) }),
    );
    extra.insert("dom0_module".into(), dom0_module);
    extra.insert("seconds".into(), Value::Object(timeline.0));
    extra.insert("qemu_exit".into(), json!(status.code()));
    extra.insert(
        "console_log".into(),
        json!(qemu.log_path().display().to_string()),
    );
    report::finish(name, runs, guest_stats, extra)
}

/// The negative run: the guest without its mmio-sram node must say so and stop, dom0 must stay
/// up, the peer must give up with an error, and QEMU must shut down cleanly.
pub(super) fn run_no_sram(board: &Board, inputs: &Inputs, name: &str) -> Result<()> {
    let work = paths::work_dir(name);
    let run = Dom0Run {
        count: 10,
        size: 64,
        busy_poll: false,
        every_mode: false,
        timeout_seconds: 10,
        guest_idle: GuestIdle::Wfe,
        idle_seconds: 0,
    };
    let prepared = prepare(board, Case::NoSram, inputs, &run, &work)?;
    let mut qemu = Qemu::spawn(&prepared.args, name)?;
    qemu.set_fatal_patterns(&[
        "Kernel panic",
        "(XEN) Panic",
        "panicked at",
        "sramlink: exception",
    ]);
    qemu.expect("Xen starts", "Xen version", XEN_BANNER_TIMEOUT)?;
    let error = seen_or_expect(
        &mut qemu,
        "guest error line",
        "sramlink: error:",
        GUEST_BANNER_TIMEOUT,
    )?;
    if !error.contains("mmio-sram") {
        bail!("the guest's error line does not mention the missing mmio-sram node: {error}");
    }
    seen_or_expect(
        &mut qemu,
        "guest stops",
        "sramlink: stopping",
        GUEST_BANNER_TIMEOUT,
    )?;
    seen_or_expect(
        &mut qemu,
        "dom0 reaches /init",
        DOM0_INIT_MARKER,
        DOM0_INIT_TIMEOUT,
    )?;
    let done = seen_or_expect(
        &mut qemu,
        "peer gives up in dom0",
        DOM0_DONE_MARKER,
        Duration::from_secs(run.timeout_seconds * 2 + 60),
    )?;
    match dom0_rc(&done) {
        Some(0) => bail!("the peer in dom0 succeeded although the guest has no region: {done}"),
        Some(_) => {}
        None => bail!("dom0's done line has no exit code: {done}"),
    }
    let peer_lines = peer_output(qemu.lines_seen());
    let Some(peer_error) = peer_lines
        .iter()
        .find(|line| line.contains("sramlink-peer: error:"))
    else {
        bail!(
            "the peer in dom0 failed without an `sramlink-peer: error:` line; its output:\n    {}",
            peer_lines.join("\n    ")
        );
    };
    let peer_error = peer_error.clone();
    let status = qemu.wait_exit("dom0 power-off", EXIT_TIMEOUT)?;
    crate::qemu::check_clean_exit(status, name)?;
    println!(
        "ok: {name}: guest -> {}; peer -> {}; dom0 -> {}",
        error.trim(),
        peer_error.trim(),
        done.trim()
    );
    Ok(())
}

/// User + system CPU seconds of process `pid` so far (`/proc/PID/stat` utime and stime, in
/// clock ticks of 100 Hz, as Linux reports them to user space).
fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ')' in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> Result<f64> {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
            .with_context(|| format!("field {} of /proc/{pid}/stat", index + 3))
    };
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
