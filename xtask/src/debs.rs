//! Debian's arm64 Xen, Linux kernel and busybox, downloaded (never installed) and unpacked into
//! `target/sramlink/cache/debs/`, reused on later runs. Only what the run needs is fetched: a
//! user's own Xen (`--xen`) or dom0 kernel (`--dom0-kernel`) replaces Debian's, which is then
//! neither downloaded nor unpacked; busybox always comes from Debian. A board whose device tree
//! Debian's kernel package ships (the ZCU102's) needs that package whatever the dom0 kernel.
//!
//! Steps, each skipped when its result is already there: `dpkg --add-architecture arm64` and
//! `apt-get update` (root only), resolve the kernel package from the metapackage
//! `linux-image-arm64`, `apt-get download PKG:arm64`, `dpkg-deb -x`. Every step runs with a
//! time limit ([`crate::process`]) and fails naming the step when it is hit.

use crate::process::{output_within, status_within};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Debian package of the hypervisor (bookworm).
pub const XEN_PACKAGE: &str = "xen-hypervisor-4.17-arm64";
/// Path of the hypervisor inside [`XEN_PACKAGE`].
const XEN_FILE: &str = "boot/xen-4.17-arm64";
/// The metapackage whose `Depends` names the current kernel package.
pub const KERNEL_METAPACKAGE: &str = "linux-image-arm64";
/// Debian package of the static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Path of busybox inside [`BUSYBOX_PACKAGE`].
const BUSYBOX_FILE: &str = "bin/busybox";

/// One `apt-get download` (the kernel package is the largest, about 70 MB).
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(900);
/// One `dpkg-deb -x` (local decompression).
const UNPACK_LIMIT: Duration = Duration::from_secs(300);
/// Local queries: `dpkg --print-foreign-architectures`, `dpkg --add-architecture`,
/// `apt-cache show`.
const LOCAL_LIMIT: Duration = Duration::from_secs(120);

/// The user's own binaries, replacing Debian's (`--xen`, `--dom0-kernel`).
#[derive(Clone, Debug, Default)]
pub struct Own {
    /// A Xen hypervisor Image; Debian's [`XEN_PACKAGE`] is then not fetched.
    pub xen: Option<PathBuf>,
    /// A dom0 Linux Image; Debian's kernel package is then not fetched.
    pub dom0_kernel: Option<PathBuf>,
}

/// The arm64 binaries a Xen run boots, each the user's own or unpacked from Debian.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The Xen hypervisor (an arm64 Image).
    pub xen: PathBuf,
    /// dom0's Linux kernel (`boot/vmlinuz-*`, an uncompressed arm64 Image).
    pub dom0_kernel: PathBuf,
    /// Static busybox for dom0's initramfs.
    pub busybox: PathBuf,
    /// The board DTBs asked for, in order, from the kernel package's `usr/lib/linux-image-*/`.
    pub board_dtbs: Vec<PathBuf>,
}

/// `target/sramlink/cache/debs/`.
pub fn cache_dir() -> PathBuf {
    crate::paths::out_dir().join("cache").join("debs")
}

/// A user-given file: must exist and be a non-empty regular file (following links).
fn own_file(option: &str, path: &Path) -> Result<PathBuf> {
    let metadata = std::fs::metadata(path).with_context(|| {
        format!(
            "{option} {}: no such file (give the path of your own binary, or leave {option} \
             out to use Debian's)",
            path.display()
        )
    })?;
    if !metadata.is_file() {
        bail!("{option} {}: not a regular file", path.display());
    }
    if metadata.len() == 0 {
        bail!("{option} {}: the file is empty", path.display());
    }
    std::fs::canonicalize(path).with_context(|| format!("{option} {}", path.display()))
}

/// Which Debian binaries are wanted (busybox always).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wanted {
    xen: bool,
    kernel: bool,
}

/// Returns the binaries of a Xen run: the user's own where given (checked to exist), Debian's
/// otherwise, downloading and unpacking only the packages the cache lacks and the run needs.
/// A board DTB (a path under the kernel package's `usr/lib/linux-image-*/`, such as
/// `xilinx/zynqmp-zcu102-rev1.0.dtb`) makes the kernel package needed even with `--dom0-kernel`.
pub fn fetch(own: &Own, board_dtbs: &[&str]) -> Result<Binaries> {
    let own_xen = own
        .xen
        .as_deref()
        .map(|path| own_file("--xen", path))
        .transpose()?;
    let own_kernel = own
        .dom0_kernel
        .as_deref()
        .map(|path| own_file("--dom0-kernel", path))
        .transpose()?;
    let wanted = Wanted {
        xen: own_xen.is_none(),
        kernel: own_kernel.is_none() || !board_dtbs.is_empty(),
    };

    let cache = cache_dir();
    let root = cache.join("root");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let mut found = Found::scan(&root)?;
    let missing = found.missing(wanted);
    if missing.is_empty() {
        println!(
            "xtask: using cached Debian arm64 binaries in {}",
            root.display()
        );
    } else {
        ensure_arm64_lists()?;
        let mut packages = Vec::new();
        for piece in &missing {
            packages.push(match piece {
                Piece::Xen => XEN_PACKAGE.to_string(),
                Piece::Kernel => resolve_kernel_package()?,
                Piece::Busybox => BUSYBOX_PACKAGE.to_string(),
            });
        }
        for package in &packages {
            let deb = download(package, &cache)?;
            println!(
                "xtask: unpacking {} into {}",
                file_name(&deb),
                root.display()
            );
            status_within(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
                &format!("unpack {} (dpkg-deb -x)", file_name(&deb)),
                UNPACK_LIMIT,
            )?;
        }
        found = Found::scan(&root)?;
        let still = found.missing(wanted);
        if !still.is_empty() {
            let names: Vec<&str> = still.iter().map(|piece| piece.file()).collect();
            bail!(
                "unpacked {} into {}, but {} is missing",
                packages.join(", "),
                root.display(),
                names.join(", ")
            );
        }
    }
    let pick = |own: Option<PathBuf>, debian: Option<PathBuf>, what: &str| {
        own.or(debian)
            .with_context(|| format!("no {what} (neither given nor unpacked)"))
    };
    let board_dtbs = board_dtbs
        .iter()
        .map(|relative| kernel_package_file(&root, found.kernel.as_deref(), relative))
        .collect::<Result<Vec<_>>>()?;
    Ok(Binaries {
        xen: pick(own_xen, found.xen, "Xen")?,
        dom0_kernel: pick(own_kernel, found.kernel, "dom0 kernel")?,
        busybox: found.busybox.context("no busybox unpacked")?,
        board_dtbs,
    })
}

/// `usr/lib/linux-image-VERSION/RELATIVE` of the unpacked kernel `boot/vmlinuz-VERSION`.
fn kernel_package_file(root: &Path, kernel: Option<&Path>, relative: &str) -> Result<PathBuf> {
    let kernel = kernel.context("no Debian kernel package unpacked for the board's DTB")?;
    let name = file_name(kernel);
    let version = name.strip_prefix("vmlinuz-").unwrap_or(&name);
    let path = root
        .join("usr/lib")
        .join(format!("linux-image-{version}"))
        .join(relative);
    if !path.is_file() {
        bail!(
            "Debian's kernel package {version} has no {relative} (looked for {})",
            path.display()
        );
    }
    Ok(path)
}

/// One binary Debian provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Xen,
    Kernel,
    Busybox,
}

impl Piece {
    /// Its path under the unpack root, for messages.
    fn file(self) -> &'static str {
        match self {
            Piece::Xen => XEN_FILE,
            Piece::Kernel => "boot/vmlinuz-*",
            Piece::Busybox => BUSYBOX_FILE,
        }
    }
}

/// What an unpack root holds.
#[derive(Clone, Debug, Default)]
struct Found {
    xen: Option<PathBuf>,
    kernel: Option<PathBuf>,
    busybox: Option<PathBuf>,
}

impl Found {
    fn scan(root: &Path) -> Result<Self> {
        let existing = |path: PathBuf| path.is_file().then_some(path);
        Ok(Self {
            xen: existing(root.join(XEN_FILE)),
            kernel: newest_kernel(&root.join("boot"))?,
            busybox: existing(root.join(BUSYBOX_FILE)),
        })
    }

    /// The wanted pieces not found, in download order.
    fn missing(&self, wanted: Wanted) -> Vec<Piece> {
        let mut missing = Vec::new();
        if wanted.xen && self.xen.is_none() {
            missing.push(Piece::Xen);
        }
        if wanted.kernel && self.kernel.is_none() {
            missing.push(Piece::Kernel);
        }
        if self.busybox.is_none() {
            missing.push(Piece::Busybox);
        }
        missing
    }
}

/// The kernel module `name` (e.g. `xen-evtchn`) of the Debian kernel `kernel`
/// (`ROOT/boot/vmlinuz-VERSION`): `ROOT/lib/modules/VERSION/kernel/drivers/xen/NAME.ko`, if
/// the package has it uncompressed (bookworm's 6.1 does; busybox `insmod` takes no `.ko.xz`).
pub fn xen_module(kernel: &Path, name: &str) -> Option<PathBuf> {
    let version = file_name(kernel).strip_prefix("vmlinuz-")?.to_string();
    let root = kernel.parent()?.parent()?;
    let module = root
        .join("lib/modules")
        .join(version)
        .join("kernel/drivers/xen")
        .join(format!("{name}.ko"));
    module.is_file().then_some(module)
}

/// `boot/vmlinuz-*` with the greatest name (one kernel is unpacked; a later download of a
/// newer one sorts after it).
fn newest_kernel(boot: &Path) -> Result<Option<PathBuf>> {
    if !boot.is_dir() {
        return Ok(None);
    }
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(boot)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| file_name(path).starts_with("vmlinuz-") && path.is_file())
        .collect();
    kernels.sort();
    Ok(kernels.pop())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `apt-cache show --no-all-versions PACKAGE:arm64`: its text, or `None` when apt does not
/// know the package.
fn apt_show(package: &str) -> Result<Option<String>> {
    let out = output_within(
        Command::new("apt-cache").args(["show", "--no-all-versions", &format!("{package}:arm64")]),
        &format!("look up {package}:arm64 (apt-cache show)"),
        LOCAL_LIMIT,
    )?;
    Ok((out.status.success() && !out.stdout.is_empty())
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Makes apt know arm64 packages: adds the architecture and updates the lists when needed.
fn ensure_arm64_lists() -> Result<()> {
    let foreign = output_within(
        Command::new("dpkg").arg("--print-foreign-architectures"),
        "list dpkg's foreign architectures",
        LOCAL_LIMIT,
    )?;
    if !foreign.status.success() {
        bail!(
            "dpkg --print-foreign-architectures failed ({}): {}",
            foreign.status,
            String::from_utf8_lossy(&foreign.stderr).trim()
        );
    }
    let foreign = String::from_utf8_lossy(&foreign.stdout).into_owned();
    let root = crate::deps::is_root();
    if !foreign.split_whitespace().any(|arch| arch == "arm64") {
        if !root {
            bail!(
                "apt does not know arm64 packages yet; run as root once: \
                 dpkg --add-architecture arm64 && apt-get update"
            );
        }
        println!(
            "xtask: dpkg --add-architecture arm64 (to download arm64 packages, none is installed)"
        );
        status_within(
            Command::new("dpkg").args(["--add-architecture", "arm64"]),
            "add the arm64 architecture (dpkg --add-architecture arm64)",
            LOCAL_LIMIT,
        )?;
        crate::deps::apt_update()?;
        return Ok(());
    }
    if apt_show(KERNEL_METAPACKAGE)?.is_none() {
        if !root {
            bail!("apt has no arm64 package lists; run as root: apt-get update");
        }
        println!("xtask: apt-get update (arm64 package lists are missing)");
        crate::deps::apt_update()?;
    }
    Ok(())
}

/// The kernel package `linux-image-arm64` depends on, preferring its `-unsigned` twin (same
/// Image, not wrapped for Secure Boot).
fn resolve_kernel_package() -> Result<String> {
    let show = apt_show(KERNEL_METAPACKAGE)?.with_context(|| {
        format!("apt does not know {KERNEL_METAPACKAGE}:arm64 (run as root: apt-get update)")
    })?;
    let signed = kernel_from_depends(&show).with_context(|| {
        format!("{KERNEL_METAPACKAGE}:arm64 names no linux-image-* package in its Depends")
    })?;
    let unsigned = format!("{signed}-unsigned");
    let chosen = if apt_show(&unsigned)?.is_some() {
        unsigned
    } else {
        signed
    };
    println!("xtask: {KERNEL_METAPACKAGE}:arm64 resolves to {chosen}");
    Ok(chosen)
}

/// The first `linux-image-…` name in the `Depends:` field of `apt-cache show` output.
fn kernel_from_depends(show: &str) -> Option<String> {
    let depends = show
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))?;
    depends
        .split([',', '|'])
        .map(|item| item.split_whitespace().next().unwrap_or(""))
        .map(|name| name.split(':').next().unwrap_or(name))
        .find(|name| name.starts_with("linux-image-") && *name != KERNEL_METAPACKAGE)
        .map(str::to_string)
}

/// `apt-get download PACKAGE:arm64` into `dir`, unless a `PACKAGE_*_arm64.deb` is already there.
fn download(package: &str, dir: &Path) -> Result<PathBuf> {
    if let Some(deb) = cached_deb(package, dir)? {
        println!("xtask: using cached {}", file_name(&deb));
        return Ok(deb);
    }
    println!(
        "xtask: apt-get download {package}:arm64 (into {})",
        dir.display()
    );
    status_within(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{package}:arm64")])
            .current_dir(dir),
        &format!("download Debian package {package}:arm64 (apt-get download)"),
        DOWNLOAD_LIMIT,
    )?;
    cached_deb(package, dir)?.with_context(|| {
        format!(
            "apt-get download {package}:arm64 left no .deb in {}",
            dir.display()
        )
    })
}

fn cached_deb(package: &str, dir: &Path) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    Ok(std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            let name = file_name(path);
            name.starts_with(&prefix) && name.ends_with("_arm64.deb")
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package_comes_from_depends() {
        let show = "Package: linux-image-arm64\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)\nDescription: x\n";
        assert_eq!(
            kernel_from_depends(show).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        let alternatives = "Depends: foo, linux-image-6.12.9-arm64:arm64 (= 1) | bar\n";
        assert_eq!(
            kernel_from_depends(alternatives).as_deref(),
            Some("linux-image-6.12.9-arm64")
        );
        assert_eq!(kernel_from_depends("Package: x\nDepends: foo\n"), None);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sramlink-debs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn only_wanted_pieces_are_missing() {
        let root = temp_dir("cache");
        std::fs::create_dir_all(root.join("boot")).expect("mkdir");
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        let all = Wanted {
            xen: true,
            kernel: true,
        };
        let none = Wanted {
            xen: false,
            kernel: false,
        };
        let found = Found::scan(&root).expect("reads");
        assert_eq!(
            found.missing(all),
            [Piece::Xen, Piece::Kernel, Piece::Busybox]
        );
        // --xen and --dom0-kernel given: only busybox is fetched.
        assert_eq!(found.missing(none), [Piece::Busybox]);

        std::fs::write(root.join(XEN_FILE), b"xen").expect("write");
        std::fs::write(root.join("boot/vmlinuz-6.1.0-50-arm64"), b"old").expect("write");
        std::fs::write(root.join(BUSYBOX_FILE), b"bb").expect("write");
        std::fs::write(root.join("boot/vmlinuz-6.1.0-56-arm64"), b"new").expect("write");
        let found = Found::scan(&root).expect("reads");
        assert!(found.missing(all).is_empty());
        assert!(
            found
                .kernel
                .expect("kernel")
                .ends_with("vmlinuz-6.1.0-56-arm64")
        );

        std::fs::remove_file(root.join(XEN_FILE)).expect("rm");
        let found = Found::scan(&root).expect("reads");
        assert_eq!(found.missing(all), [Piece::Xen]);
        assert!(
            found
                .missing(Wanted {
                    xen: false,
                    kernel: true
                })
                .is_empty()
        );
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn board_dtb_comes_from_the_unpacked_kernels_version() {
        let root = temp_dir("dtb");
        let kernel = root.join("boot/vmlinuz-6.1.0-57-arm64");
        let dtb = root.join("usr/lib/linux-image-6.1.0-57-arm64/xilinx/board.dtb");
        std::fs::create_dir_all(dtb.parent().expect("parent")).expect("mkdir");
        std::fs::write(&dtb, b"dtb").expect("write");
        let found = kernel_package_file(&root, Some(&kernel), "xilinx/board.dtb").expect("found");
        assert_eq!(found, dtb);
        let missing = kernel_package_file(&root, Some(&kernel), "xilinx/other.dtb");
        assert!(format!("{:#}", missing.expect_err("absent")).contains("xilinx/other.dtb"));
        assert!(kernel_package_file(&root, None, "xilinx/board.dtb").is_err());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn own_files_must_exist() {
        let dir = temp_dir("own");
        let missing = fetch(
            &Own {
                xen: Some(dir.join("no-such-xen")),
                dom0_kernel: None,
            },
            &[],
        )
        .expect_err("missing --xen");
        let message = format!("{missing:#}");
        assert!(message.contains("--xen"), "{message}");
        assert!(message.contains("no such file"), "{message}");

        let empty = dir.join("empty");
        std::fs::write(&empty, b"").expect("write");
        let message = format!(
            "{:#}",
            own_file("--dom0-kernel", &empty).expect_err("empty")
        );
        assert!(message.contains("--dom0-kernel") && message.contains("empty"));
        let message = format!("{:#}", own_file("--xen", &dir).expect_err("a directory"));
        assert!(message.contains("not a regular file"));

        let image = dir.join("Image");
        std::fs::write(&image, b"image").expect("write");
        assert_eq!(
            own_file("--dom0-kernel", &image).expect("exists"),
            std::fs::canonicalize(&image).expect("canonical")
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
