//! The sramlink dom0 module (`dom0-module/`), cross-built for the exact dom0 kernel a Xen run
//! boots, from Debian packages alone.
//!
//! Steps, each with a time limit ([`crate::process`]):
//! 1. Read the kernel's identity from the Image itself: its `Linux version` banner names the
//!    release (`6.1.0-57-arm64`) and Debian's package version (`6.1.192-3`). The headers are
//!    resolved from that version, so they match the Image booted even when apt's lists have
//!    moved on since it was downloaded (MODVERSIONS refuses a module built against others).
//! 2. Cross compiler and make: `gcc-aarch64-linux-gnu` (and the versioned `gcc-N` the
//!    headers name) installed with apt-get when missing ([`crate::deps::apt_install`]).
//! 3. `apt-get download` (never install) `linux-headers-<release>:arm64=<version>` and what it
//!    depends on at that version: `linux-headers-<abi>-common` (all) and `linux-kbuild-<x.y>`
//!    for this host's architecture (its `fixdep`/`modpost` run here); `dpkg-deb -x` them into
//!    `target/sramlink/cache/kernel-headers/<release>/`, and point the arm64 headers' one-line
//!    `Makefile` at the unpacked `-common` tree. The host libraries `linux-kbuild` links
//!    against are installed when missing.
//! 4. `make -C <headers> M=<copy of dom0-module> ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-
//!    modules` with `-Werror` (the `Kbuild` default), then check the `.ko`'s `vermagic`.

use crate::process::{output_within, status_within};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The cross toolchain prefix Debian's `gcc-aarch64-linux-gnu` provides.
pub const CROSS_COMPILE: &str = "aarch64-linux-gnu-";
/// The Debian package with `aarch64-linux-gnu-gcc`.
const CROSS_GCC_PACKAGE: &str = "gcc-aarch64-linux-gnu";
/// The module's source files, copied into the build directory.
const SOURCES: &[&str] = &["Kbuild", "sramlink.c", "sramlink.h"];
/// The built module's file name.
pub const MODULE_FILE: &str = "sramlink.ko";

/// `apt-get download` of the three header packages (about 14 MB).
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(600);
/// `dpkg-deb -x`, `apt-cache show`, `dpkg-query`.
const LOCAL_LIMIT: Duration = Duration::from_secs(300);
/// The module build itself (seconds when the machine is idle).
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// `dom0-module/` in the workspace.
pub fn source_dir() -> PathBuf {
    crate::paths::workspace_root().join("dom0-module")
}

/// What a Debian kernel Image says about itself in its `Linux version` banner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelIdentity {
    /// `uname -r`: `6.1.0-57-arm64`.
    pub release: String,
    /// The Debian package version it was built as: `6.1.192-3`.
    pub debian_version: String,
}

impl KernelIdentity {
    /// Reads the banner out of an uncompressed arm64 Image.
    pub fn of_image(image: &Path) -> Result<Self> {
        let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
        Self::from_image_bytes(&bytes).with_context(|| {
            format!(
                "{}: cannot tell which Debian kernel this is, so the sramlink module cannot be \
                 built for it automatically; build it for your kernel as dom0-module/README.md \
                 describes",
                image.display()
            )
        })
    }

    /// Finds `Linux version <release> (...) #1 SMP Debian <version> (...)` in `bytes`.
    pub fn from_image_bytes(bytes: &[u8]) -> Result<Self> {
        const NEEDLE: &[u8] = b"Linux version ";
        let mut rest = bytes;
        while let Some(at) = find(rest, NEEDLE) {
            let line_start = &rest[at + NEEDLE.len()..];
            let end = line_start
                .iter()
                .position(|&byte| byte == b'\n' || byte == 0)
                .unwrap_or(line_start.len().min(512));
            let line = String::from_utf8_lossy(&line_start[..end]).into_owned();
            rest = &rest[at + NEEDLE.len()..];
            // The banner itself, not the `%s version %s` format string.
            let Some(release) = line.split_whitespace().next() else {
                continue;
            };
            if !release.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let Some((_, after_hash)) = line.rsplit_once(" #") else {
                continue;
            };
            let Some((_, after_debian)) = after_hash.split_once("Debian ") else {
                bail!("the kernel banner names no Debian package version: {line}");
            };
            let Some(version) = after_debian.split_whitespace().next() else {
                continue;
            };
            return Ok(Self {
                release: release.to_string(),
                debian_version: version.to_string(),
            });
        }
        bail!("no `Linux version` banner in the Image")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Builds `sramlink.ko` for the kernel Image `kernel` and returns its path.
pub fn build_for_kernel(kernel: &Path) -> Result<PathBuf> {
    let identity = KernelIdentity::of_image(kernel)?;
    println!(
        "xtask: dom0 kernel {} (Debian {}): building the sramlink module for it",
        identity.release, identity.debian_version
    );
    ensure_tool(&format!("{CROSS_COMPILE}gcc"), &[CROSS_GCC_PACKAGE])?;
    ensure_tool("make", &["make"])?;
    let headers = fetch_headers(&identity)?;
    let compiler = headers_compiler(&headers)?;
    if compiler != "gcc" {
        // Debian's headers call `$(CROSS_COMPILE)gcc-12`, the version the kernel was built with.
        let package = format!("{compiler}-{}", CROSS_COMPILE.trim_end_matches('-'));
        ensure_tool(&format!("{CROSS_COMPILE}{compiler}"), &[&package])?;
    }
    build(&headers, &identity.release)
}

/// A user's own `sramlink.ko` (`--dom0-module`): must exist and carry a `vermagic`, which
/// must name the kernel `kernel` when its banner is readable (any kernel's, Debian's or not).
pub fn own_module(module: &Path, kernel: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(module).with_context(|| {
        format!(
            "--dom0-module {}: cannot read it (build it as dom0-module/README.md describes)",
            module.display()
        )
    })?;
    let vermagic = vermagic(&bytes)
        .with_context(|| format!("--dom0-module {} is not a kernel module", module.display()))?;
    let kernel_bytes =
        std::fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    if let Some(release) = kernel_release(&kernel_bytes) {
        check_vermagic(&vermagic, &release)
            .with_context(|| format!("--dom0-module {}", module.display()))?;
    }
    println!(
        "xtask: using your dom0 module {} (vermagic {vermagic})",
        module.display()
    );
    std::fs::canonicalize(module).with_context(|| format!("--dom0-module {}", module.display()))
}

/// The release (`uname -r`) in a kernel Image's `Linux version` banner, Debian's or not.
fn kernel_release(image: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"Linux version ";
    let mut rest = image;
    while let Some(at) = find(rest, NEEDLE) {
        rest = &rest[at + NEEDLE.len()..];
        let end = rest
            .iter()
            .position(|byte| byte.is_ascii_whitespace() || *byte == 0)
            .unwrap_or(rest.len());
        let release = String::from_utf8_lossy(&rest[..end]).into_owned();
        if release.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(release);
        }
    }
    None
}

/// A module loads only into the kernel its `vermagic` names.
fn check_vermagic(vermagic: &str, release: &str) -> Result<()> {
    if vermagic.split_whitespace().next() != Some(release) {
        bail!("has vermagic {vermagic:?}, but the dom0 kernel is {release}");
    }
    Ok(())
}

/// Installs `packages` when `command` is not on `PATH`.
fn ensure_tool(command: &str, packages: &[&str]) -> Result<()> {
    if crate::deps::have(command) {
        return Ok(());
    }
    println!("xtask: {command} is missing (needed to build the dom0 module)");
    crate::deps::apt_install(packages)
}

/// `target/sramlink/cache/kernel-headers/<release>/`: the unpacked header packages.
fn headers_root(release: &str) -> PathBuf {
    crate::debs::cache_dir()
        .parent()
        .map_or_else(crate::paths::out_dir, Path::to_path_buf)
        .join("kernel-headers")
        .join(release)
}

/// Downloads and unpacks the headers of `identity` unless already there; returns the
/// directory to give `make -C`.
fn fetch_headers(identity: &KernelIdentity) -> Result<PathBuf> {
    let root = headers_root(&identity.release);
    let unpacked = root.join("root");
    let arch_headers = unpacked
        .join("usr/src")
        .join(format!("linux-headers-{}", identity.release));
    let ready = root.join(format!("ready-{}", identity.debian_version));
    if ready.is_file() && arch_headers.join("Makefile").is_file() {
        println!(
            "xtask: using cached kernel headers in {}",
            arch_headers.display()
        );
        return Ok(arch_headers);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&unpacked)
        .with_context(|| format!("creating {}", unpacked.display()))?;
    let version = &identity.debian_version;
    let arch_package = format!("linux-headers-{}", identity.release);
    let show = apt_show(&format!("{arch_package}:arm64={version}"))?;
    let depends = depends_of(&show);
    let common = depends
        .iter()
        .find(|name| name.starts_with("linux-headers-") && name.ends_with("-common"))
        .with_context(|| {
            format!("{arch_package} {version} depends on no linux-headers-*-common")
        })?;
    let kbuild = depends
        .iter()
        .find(|name| name.starts_with("linux-kbuild-"))
        .with_context(|| format!("{arch_package} {version} depends on no linux-kbuild-*"))?;
    let host_arch = host_architecture()?;
    let packages = [
        format!("{arch_package}:arm64={version}"),
        format!("{common}={version}"),
        format!("{kbuild}:{host_arch}={version}"),
    ];
    println!(
        "xtask: apt-get download {} (into {})",
        packages.join(" "),
        root.display()
    );
    status_within(
        Command::new("apt-get")
            .args(["download", "-q"])
            .args(&packages)
            .current_dir(&root),
        "download the dom0 kernel's headers (apt-get download)",
        DOWNLOAD_LIMIT,
    )?;
    let kbuild_show = apt_show(&format!("{kbuild}:{host_arch}={version}"))?;
    for deb in std::fs::read_dir(&root)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|extension| extension == "deb") {
            status_within(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
                &format!("unpack {} (dpkg-deb -x)", deb.display()),
                LOCAL_LIMIT,
            )?;
        }
    }
    // The arm64 headers' Makefile includes /usr/src/linux-headers-<abi>-common/Makefile.
    let makefile = arch_headers.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("reading {}", makefile.display()))?;
    let common_dir = unpacked.join("usr/src").join(common);
    let patched = point_makefile_at(&text, common, &common_dir)?;
    std::fs::write(&makefile, patched)
        .with_context(|| format!("writing {}", makefile.display()))?;
    ensure_installed(&depends_of(&kbuild_show), kbuild)?;
    std::fs::write(&ready, b"")?;
    Ok(arch_headers)
}

/// Replaces `/usr/src/<common>` in the headers' Makefile with the unpacked copy.
fn point_makefile_at(text: &str, common: &str, common_dir: &Path) -> Result<String> {
    let installed = format!("/usr/src/{common}");
    if !text.contains(&installed) {
        bail!("the headers' Makefile does not include {installed}: {text}");
    }
    Ok(text.replace(&installed, &common_dir.display().to_string()))
}

/// `apt-cache show PACKAGE` (with its `:arch=version`), failing when apt does not know it.
fn apt_show(package: &str) -> Result<String> {
    let out = output_within(
        Command::new("apt-cache").args(["show", package]),
        &format!("look up {package} (apt-cache show)"),
        LOCAL_LIMIT,
    )?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "apt does not know {package} (run as root: apt-get update): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Package names in the first `Depends:` field, without versions or architectures.
fn depends_of(show: &str) -> Vec<String> {
    show.lines()
        .find_map(|line| line.strip_prefix("Depends:"))
        .map(|depends| {
            depends
                .split([',', '|'])
                .filter_map(|item| item.split_whitespace().next())
                .map(|name| name.split(':').next().unwrap_or(name).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `dpkg --print-architecture`: the architecture of this host's `linux-kbuild`.
fn host_architecture() -> Result<String> {
    let out = output_within(
        Command::new("dpkg").arg("--print-architecture"),
        "ask dpkg for this host's architecture",
        LOCAL_LIMIT,
    )?;
    let arch = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || arch.is_empty() {
        bail!("dpkg --print-architecture failed ({})", out.status);
    }
    Ok(arch)
}

/// Installs the host libraries `what` depends on (e.g. `libelf1`) that are missing.
fn ensure_installed(packages: &[String], what: &str) -> Result<()> {
    let mut missing = Vec::new();
    for package in packages {
        let out = output_within(
            Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Status}", package]),
            &format!("check whether {package} is installed (dpkg-query)"),
            LOCAL_LIMIT,
        )?;
        if String::from_utf8_lossy(&out.stdout).trim() != "installed" {
            missing.push(package.as_str());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "xtask: {what}'s tools need {}, which is not installed",
        missing.join(", ")
    );
    crate::deps::apt_install(&missing)
}

/// The compiler the headers call (`gcc-12` in `CC = ... $(CROSS_COMPILE)gcc-12`), from their
/// `.kernelvariables`; plain `gcc` when they name none.
fn headers_compiler(headers: &Path) -> Result<String> {
    let path = headers.join(".kernelvariables");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok("gcc".to_string());
    };
    Ok(compiler_of(&text).unwrap_or_else(|| "gcc".to_string()))
}

fn compiler_of(kernel_variables: &str) -> Option<String> {
    let line = kernel_variables.lines().find(|line| {
        line.trim_start().starts_with("CC ") || line.trim_start().starts_with("CC=")
    })?;
    let (_, after) = line.split_once("$(CROSS_COMPILE)")?;
    after.split_whitespace().next().map(str::to_string)
}

/// Copies the sources to `target/sramlink/module/<release>/`, runs Kbuild there with
/// `-Werror`, and checks the result was built for `release`.
fn build(headers: &Path, release: &str) -> Result<PathBuf> {
    let build_dir = crate::paths::out_dir().join("module").join(release);
    let _ = std::fs::remove_dir_all(&build_dir);
    std::fs::create_dir_all(&build_dir)
        .with_context(|| format!("creating {}", build_dir.display()))?;
    for name in SOURCES {
        let from = source_dir().join(name);
        std::fs::copy(&from, build_dir.join(name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    let out = output_within(
        Command::new("make")
            .arg("-C")
            .arg(headers)
            .arg(format!("M={}", build_dir.display()))
            .args([
                "ARCH=arm64",
                &format!("CROSS_COMPILE={CROSS_COMPILE}"),
                "SRAMLINK_WERROR=1",
                "modules",
            ]),
        "build the sramlink dom0 module (make modules, -Werror)",
        BUILD_LIMIT,
    )?;
    if !out.status.success() {
        bail!(
            "building the sramlink dom0 module failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let module = build_dir.join(MODULE_FILE);
    let bytes = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
    let vermagic = vermagic(&bytes)?;
    check_vermagic(&vermagic, release).with_context(|| format!("{}", module.display()))?;
    println!(
        "xtask: built {} (vermagic {vermagic}, -Werror)",
        module.display()
    );
    Ok(module)
}

/// The `vermagic=` entry of a module's `.modinfo` section.
fn vermagic(module: &[u8]) -> Result<String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(module).context("the module is not an ELF file")?;
    let modinfo = file
        .section_by_name(".modinfo")
        .context("the module has no .modinfo section")?
        .data()
        .context("reading .modinfo")?;
    modinfo
        .split(|&byte| byte == 0)
        .find_map(|entry| entry.strip_prefix(b"vermagic="))
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .context("the module's .modinfo has no vermagic")
}

// ---------------------------------------------------------------------------------------------
// dom0's side: the initramfs files, the init lines that load the module and check it, and the
// launcher's verdict on what they printed.
// ---------------------------------------------------------------------------------------------

/// The unprivileged user (and group) dom0's init runs the peer as.
pub const PEER_UID: u32 = 1000;
/// The module's path in dom0's initramfs.
pub const MODULE_IN_INITRAMFS: &str = "lib/modules/sramlink.ko";
/// The helper binary `cargo build` leaves next to the peer (`peer/src/bin/dom0_helper.rs`).
pub const DOM0_HELPER: &str = "sramlink-dom0-helper";
/// Its path in dom0's initramfs.
pub const HELPER_IN_INITRAMFS: &str = "bin/sramlink-dom0-helper";
/// What each check line of dom0's init starts with.
const CHECK_MARKER: &str = "SRAMLINK-DOM0: check ";
/// dom0's kernel command line as init prints it.
const CMDLINE_MARKER: &str = "SRAMLINK-DOM0: cmdline ";

/// The command prefix that runs a program as [`PEER_UID`] (group too, no other groups).
pub fn run_as_peer_user() -> String {
    format!("/{HELPER_IN_INITRAMFS} run-as --uid {PEER_UID} --gid {PEER_UID}")
}

/// dom0 init lines run before the peer: print the command line, try loading the module with
/// a range in System RAM (must be refused), load it for the device tree's region, give
/// `/dev/sramlink0` to [`PEER_UID`], and check that `/dev/mem` is refused (as root and as the
/// user, the peer's error naming the module route) and that an `mmap` past the region is
/// refused. Each check prints its output and kernel messages as `SRAMLINK-DOM0: check NAME:
/// …` and ends with `SRAMLINK-DOM0: check NAME rc=N`; [`check_dom0_console`] judges them.
pub fn dom0_setup_script() -> String {
    let as_user = run_as_peer_user();
    format!(
        r#"# The sramlink dom0 module (generated by xtask/src/module.rs).
check() {{
    name=$1
    shift
    "$@" >/tmp/check.out 2>&1
    check_rc=$?
    dmesg -c 2>/dev/null | grep sramlink >>/tmp/check.out
    while IFS= read -r line; do echo "{CHECK_MARKER}$name: $line"; done </tmp/check.out
    echo "{CHECK_MARKER}$name rc=$check_rc"
    return $check_rc
}}
echo "{CMDLINE_MARKER}$(cat /proc/cmdline)"
dmesg -c >/dev/null 2>&1
ram=$(grep -m1 'System RAM' /proc/iomem | sed 's/^ *//; s/-.*//')
check ram-param insmod /{MODULE_IN_INITRAMFS} base=0x$ram size=0x1000 && rmmod sramlink
check load insmod /{MODULE_IN_INITRAMFS}
chgrp {PEER_UID} /dev/sramlink0
chmod 0660 /dev/sramlink0
check device sh -c 'ls -ln /dev/sramlink0; for name in base size cacheable of_node; do echo "$name=$(cat /sys/class/misc/sramlink0/$name)"; done'
check dev-mem-root /bin/sramlink-peer --dev-mem --timeout 5 ping --count 1
check dev-mem-user {as_user} /bin/sramlink-peer --dev-mem --timeout 5 ping --count 1
check mmap-beyond {as_user} /{HELPER_IN_INITRAMFS} mmap-beyond /dev/sramlink0
"#
    )
}

/// dom0 init lines run after the peer: unload the module, its device must be gone.
pub fn dom0_teardown_script() -> String {
    r#"check unload sh -c 'rmmod sramlink && if [ -e /dev/sramlink0 ]; then echo "/dev/sramlink0 still exists"; exit 1; fi; echo "unloaded; /dev/sramlink0 is gone"'
"#
    .to_string()
}

/// One check's output lines and exit code, from the console.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Check {
    lines: Vec<String>,
    rc: Option<i32>,
}

impl Check {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// The checks dom0's init printed, by name.
fn parse_checks(lines: &[String]) -> BTreeMap<String, Check> {
    let mut checks: BTreeMap<String, Check> = BTreeMap::new();
    for line in lines {
        let Some((_, rest)) = line.split_once(CHECK_MARKER) else {
            continue;
        };
        if let Some((name, output)) = rest.split_once(": ") {
            if !name.contains(' ') {
                let check = checks.entry(name.to_string()).or_default();
                check.lines.push(output.trim_end().to_string());
                continue;
            }
        }
        if let Some((name, rc)) = rest.trim_end().split_once(" rc=") {
            checks.entry(name.to_string()).or_default().rc = rc.parse().ok();
        }
    }
    checks
}

/// Judges the module checks of a good Xen run: dom0 booted without `iomem=relaxed`; the RAM
/// range was refused at load with a clear message; the module served `base`+`size` as
/// `/dev/sramlink0` (mode 0660, group [`PEER_UID`]); `/dev/mem` was refused with an error
/// naming the module route; an `mmap` past the region was refused; every peer run went
/// through the device as [`PEER_UID`]; the module unloaded cleanly. Returns a summary for
/// the report.
pub fn check_dom0_console(
    lines: &[String],
    runs: &[Map<String, Value>],
    base: u64,
    size: u64,
) -> Result<Value> {
    let cmdline = lines
        .iter()
        .find_map(|line| line.split_once(CMDLINE_MARKER).map(|(_, rest)| rest.trim()))
        .context("dom0's init printed no command line")?;
    if cmdline
        .split_whitespace()
        .any(|word| word == "iomem=relaxed")
    {
        bail!("dom0 booted with iomem=relaxed ({cmdline}); the module route must not need it");
    }
    let checks = parse_checks(lines);
    let get = |name: &str| -> Result<&Check> {
        checks
            .get(name)
            .filter(|check| check.rc.is_some())
            .with_context(|| format!("dom0's init did not finish the module check {name:?}"))
    };
    let expect = |name: &str, succeed: bool, needles: &[&str]| -> Result<String> {
        let check = get(name)?;
        let text = check.text();
        let rc = check.rc.unwrap_or(-1);
        if succeed != (rc == 0) {
            bail!(
                "module check {name:?} {} (rc={rc}); its output:\n    {}",
                if succeed {
                    "failed"
                } else {
                    "succeeded but must fail"
                },
                check.lines.join("\n    ")
            );
        }
        for needle in needles {
            if !text.contains(needle) {
                bail!(
                    "module check {name:?} does not say {needle:?}; its output:\n    {}",
                    check.lines.join("\n    ")
                );
            }
        }
        Ok(text)
    };
    let region = format!("{base:#x}+{size:#x}");
    let ram = expect("ram-param", false, &["overlaps System RAM"])?;
    let load = expect("load", true, &["/dev/sramlink0: ", &region, "uncached"])?;
    let device = expect(
        "device",
        true,
        &[
            "crw-rw----",
            &format!(" {PEER_UID} "),
            &format!("base={base:#x}"),
            &format!("size={size:#x}"),
            "cacheable=0",
        ],
    )?;
    let dev_mem_root = expect("dev-mem-root", false, &["sramlink dom0 module"])?;
    let dev_mem_user = expect(
        "dev-mem-user",
        false,
        &["needs root", "sramlink dom0 module"],
    )?;
    let mmap = expect("mmap-beyond", true, &["refused"])?;
    if mmap.matches(" refused: ").count() != 3 {
        bail!("module check \"mmap-beyond\" did not see all three refusals: {mmap}");
    }
    expect("unload", true, &["/dev/sramlink0 is gone"])?;
    if !lines
        .iter()
        .any(|line| line.contains("through /dev/sramlink0 (the sramlink module"))
    {
        bail!("the peer did not say it used /dev/sramlink0");
    }
    for run in runs {
        let source = run.get("region_source").and_then(Value::as_str);
        let euid = run.get("euid").and_then(Value::as_u64);
        if source != Some("device") || euid != Some(u64::from(PEER_UID)) {
            bail!(
                "a peer run used region_source {source:?} as euid {euid:?}; every run must go                  through the sramlink device as uid {PEER_UID}"
            );
        }
    }
    let first = |text: &str, needle: &str| {
        text.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut summary = Map::new();
    summary.insert("dom0_cmdline".into(), json!(cmdline));
    summary.insert(
        "ram_parameter_refused".into(),
        json!(first(&ram, "overlaps System RAM")),
    );
    summary.insert("loaded".into(), json!(first(&load, "/dev/sramlink0: ")));
    summary.insert("device".into(), json!(first(&device, "sramlink0")));
    summary.insert(
        "dev_mem_root_refused".into(),
        json!(first(&dev_mem_root, "error:")),
    );
    summary.insert(
        "dev_mem_user_refused".into(),
        json!(first(&dev_mem_user, "error:")),
    );
    summary.insert(
        "mmap_beyond_refused".into(),
        json!(
            mmap.lines()
                .filter(|line| line.contains(" refused: "))
                .collect::<Vec<_>>()
        ),
    );
    summary.insert("peer_uid".into(), json!(PEER_UID));
    summary.insert("unloaded".into(), json!(true));
    Ok(Value::Object(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &[u8] = b"junk\0%s version %s (debian-kernel@lists.debian.org) (gcc-12)\0\
        Linux version 6.1.0-57-arm64 (debian-kernel@lists.debian.org) (gcc-12 (Debian \
        12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian \
        6.1.192-3 (2026-11-26)\n\0more";

    #[test]
    fn kernel_identity_comes_from_the_banner() {
        let identity = KernelIdentity::from_image_bytes(BANNER).expect("banner");
        assert_eq!(identity.release, "6.1.0-57-arm64");
        assert_eq!(identity.debian_version, "6.1.192-3");
        let backports = b"Linux version 6.12.12+bpo-arm64 (debian-kernel@lists.debian.org) \
            (aarch64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP Debian 6.12.12-1~bpo12+1 \
            (2025-02-23)\n";
        let identity = KernelIdentity::from_image_bytes(backports).expect("backports banner");
        assert_eq!(identity.release, "6.12.12+bpo-arm64");
        assert_eq!(identity.debian_version, "6.12.12-1~bpo12+1");
        let own = b"Linux version 6.6.40-xilinx (me@host) (gcc 13) #1 SMP PREEMPT\n";
        let error = KernelIdentity::from_image_bytes(own).expect_err("not Debian's");
        assert!(format!("{error:#}").contains("no Debian package version"));
        assert!(KernelIdentity::from_image_bytes(b"no banner here").is_err());
    }

    #[test]
    fn own_modules_must_match_the_kernel() {
        assert_eq!(kernel_release(BANNER).as_deref(), Some("6.1.0-57-arm64"));
        let own = b"Linux version 6.6.40-xilinx-v2024.2 (me@host) (gcc 13) #1 SMP\n";
        assert_eq!(
            kernel_release(own).as_deref(),
            Some("6.6.40-xilinx-v2024.2")
        );
        assert_eq!(kernel_release(b"nothing"), None);
        let vermagic = "6.1.0-57-arm64 SMP mod_unload modversions aarch64";
        assert!(check_vermagic(vermagic, "6.1.0-57-arm64").is_ok());
        let error = check_vermagic(vermagic, "6.1.0-58-arm64").expect_err("other kernel");
        assert!(format!("{error:#}").contains("but the dom0 kernel is 6.1.0-58-arm64"));
        assert!(check_vermagic(vermagic, "6.1.0-5").is_err());
        let dir = std::env::temp_dir().join(format!("sramlink-own-module-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let kernel = dir.join("Image");
        std::fs::write(&kernel, BANNER).expect("write");
        let not_elf = dir.join("sramlink.ko");
        std::fs::write(&not_elf, b"text").expect("write");
        let error = own_module(&not_elf, &kernel).expect_err("not a module");
        assert!(format!("{error:#}").contains("is not a kernel module"));
        let missing = own_module(&dir.join("absent.ko"), &kernel).expect_err("missing");
        assert!(format!("{missing:#}").contains("cannot read it"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn headers_metadata_is_parsed() {
        let show = "Package: linux-headers-6.1.0-57-arm64\nVersion: 6.1.192-3\n\
                    Depends: linux-headers-6.1.0-57-common (= 6.1.192-3), linux-kbuild-6.1 (>= \
                    6.1.192-3), gcc-12\n";
        assert_eq!(
            depends_of(show),
            [
                "linux-headers-6.1.0-57-common",
                "linux-kbuild-6.1",
                "gcc-12"
            ]
        );
        let variables = "override ARCH = arm64\nCCACHE = ccache\n\
                         CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-12\n";
        assert_eq!(compiler_of(variables).as_deref(), Some("gcc-12"));
        assert_eq!(compiler_of("ARCH = arm64\n"), None);
        let makefile = "include /usr/src/linux-headers-6.1.0-57-common/Makefile\n";
        let patched = point_makefile_at(
            makefile,
            "linux-headers-6.1.0-57-common",
            Path::new("/cache/root/usr/src/linux-headers-6.1.0-57-common"),
        )
        .expect("patched");
        assert_eq!(
            patched,
            "include /cache/root/usr/src/linux-headers-6.1.0-57-common/Makefile\n"
        );
        assert!(point_makefile_at("include other\n", "x-common", Path::new("/y")).is_err());
    }

    /// What a good boot prints (trimmed to the lines the checks read).
    fn good_console() -> Vec<String> {
        [
            "SRAMLINK-DOM0: cmdline console=hvc0 earlycon=xen rdinit=/init root=/dev/ram0",
            "SRAMLINK-DOM0: check ram-param: insmod: can't insert '/lib/modules/sramlink.ko': invalid parameters",
            "SRAMLINK-DOM0: check ram-param: [    5.1] sramlink: refusing base=0x40000000 size=0x1000: the range overlaps System RAM (see /proc/iomem)",
            "SRAMLINK-DOM0: check ram-param rc=1",
            "SRAMLINK-DOM0: check load: [    5.2] sramlink: /dev/sramlink0: /sram@7f000000 0x7f000000+0x1000000, uncached (/chosen/sramlink,region)",
            "SRAMLINK-DOM0: check load rc=0",
            "SRAMLINK-DOM0: check device: crw-rw----    1 0        1000      10, 124 Jan  1 00:00 /dev/sramlink0",
            "SRAMLINK-DOM0: check device: base=0x7f000000",
            "SRAMLINK-DOM0: check device: size=0x1000000",
            "SRAMLINK-DOM0: check device: cacheable=0",
            "SRAMLINK-DOM0: check device rc=0",
            "SRAMLINK-DOM0: check dev-mem-root: sramlink-peer: error: mmap of /dev/mem at 0x7f000000+0x1000000 failed with EPERM: ...; use the sramlink dom0 module (...)",
            "SRAMLINK-DOM0: check dev-mem-root rc=1",
            "SRAMLINK-DOM0: check dev-mem-user: sramlink-peer: error: mapping 0x7f000000+0x1000000 through /dev/mem needs root (running as uid 1000); without root, use the sramlink dom0 module (...)",
            "SRAMLINK-DOM0: check dev-mem-user rc=1",
            "SRAMLINK-DOM0: check mmap-beyond: sramlink-dom0-helper: mmap of /dev/sramlink0 at offset 0x0 length 0x1000000 (the region 0x7f000000+0x1000000): ok",
            "SRAMLINK-DOM0: check mmap-beyond: sramlink-dom0-helper: mmap of /dev/sramlink0 at offset 0x0 length 0x1001000 (one page longer than the region) refused: Invalid argument (os error 22)",
            "SRAMLINK-DOM0: check mmap-beyond: sramlink-dom0-helper: mmap of /dev/sramlink0 at offset 0x1000000 length 0x1000 (the page after the region) refused: Invalid argument (os error 22)",
            "SRAMLINK-DOM0: check mmap-beyond: sramlink-dom0-helper: mmap of /dev/sramlink0 at offset 0xfff000 length 0x2000 (the last page and the one after it) refused: Invalid argument (os error 22)",
            "SRAMLINK-DOM0: check mmap-beyond rc=0",
            "sramlink-peer: note: region: 0x7f000000+0x1000000 through /dev/sramlink0 (the sramlink module, uncached)",
            "SRAMLINK-DOM0: check unload: unloaded; /dev/sramlink0 is gone",
            "SRAMLINK-DOM0: check unload rc=0",
        ]
        .iter()
        .map(|line| line.to_string())
        .collect()
    }

    fn device_run(euid: u64) -> Vec<Map<String, Value>> {
        let run = json!({"region_source": "device", "euid": euid});
        vec![run.as_object().expect("object").clone()]
    }

    #[test]
    fn dom0_checks_pass_on_a_good_console_and_fail_on_each_gap() {
        let lines = good_console();
        let summary =
            check_dom0_console(&lines, &device_run(1000), 0x7f00_0000, 0x100_0000).expect("good");
        assert_eq!(summary["peer_uid"], 1000);
        assert!(
            summary["ram_parameter_refused"]
                .as_str()
                .expect("text")
                .contains("overlaps System RAM")
        );
        assert_eq!(
            summary["mmap_beyond_refused"]
                .as_array()
                .expect("list")
                .len(),
            3
        );
        // A peer run as root, or through /dev/mem, fails the run.
        assert!(check_dom0_console(&lines, &device_run(0), 0x7f00_0000, 0x100_0000).is_err());
        // A different region fails it.
        assert!(check_dom0_console(&lines, &device_run(1000), 0x7e00_0000, 0x100_0000).is_err());
        // iomem=relaxed on the command line fails it.
        let mut relaxed = lines.clone();
        relaxed[0] += " iomem=relaxed";
        let error = check_dom0_console(&relaxed, &device_run(1000), 0x7f00_0000, 0x100_0000)
            .expect_err("iomem=relaxed");
        assert!(format!("{error:#}").contains("iomem=relaxed"));
        // Dropping any check line, or flipping its exit code, fails it.
        for index in 1..lines.len() {
            let mut changed = lines.clone();
            if changed[index].ends_with("rc=0") {
                changed[index] = changed[index].replace("rc=0", "rc=1");
            } else if changed[index].ends_with("rc=1") {
                changed[index] = changed[index].replace("rc=1", "rc=0");
            } else if changed[index].contains("refused") || changed[index].contains("error:") {
                changed.remove(index);
            } else {
                continue;
            }
            assert!(
                check_dom0_console(&changed, &device_run(1000), 0x7f00_0000, 0x100_0000).is_err(),
                "changed line {index}: {}",
                lines[index]
            );
        }
    }

    #[test]
    fn setup_script_loads_checks_and_drops_privileges() {
        let script = dom0_setup_script();
        assert!(script.contains("check ram-param insmod /lib/modules/sramlink.ko base=0x$ram"));
        assert!(script.contains("check load insmod /lib/modules/sramlink.ko\n"));
        assert!(script.contains("chgrp 1000 /dev/sramlink0\nchmod 0660 /dev/sramlink0\n"));
        assert!(script.contains(
            "check dev-mem-user /bin/sramlink-dom0-helper run-as --uid 1000 --gid 1000 \
             /bin/sramlink-peer --dev-mem"
        ));
        assert!(dom0_teardown_script().contains("rmmod sramlink"));
    }
}
