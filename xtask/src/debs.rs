//! Debian's arm64 Xen, Linux kernel and busybox, downloaded (never installed) and unpacked into
//! `target/sramlink/cache/debs/`, reused on later runs.
//!
//! Steps, each skipped when its result is already there: `dpkg --add-architecture arm64` and
//! `apt-get update` (root only), resolve the kernel package from the metapackage
//! `linux-image-arm64`, `apt-get download PKG:arm64`, `dpkg-deb -x`.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The unpacked arm64 binaries a Xen run needs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The Xen hypervisor (an arm64 Image).
    pub xen: PathBuf,
    /// dom0's Linux kernel (`boot/vmlinuz-*`, an uncompressed arm64 Image).
    pub dom0_kernel: PathBuf,
    /// Static busybox for dom0's initramfs.
    pub busybox: PathBuf,
}

/// `target/sramlink/cache/debs/`.
pub fn cache_dir() -> PathBuf {
    crate::paths::out_dir().join("cache").join("debs")
}

/// Returns the unpacked binaries, downloading and unpacking what the cache lacks.
pub fn fetch() -> Result<Binaries> {
    let cache = cache_dir();
    let root = cache.join("root");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    if let Some(found) = find_binaries(&root)? {
        println!(
            "xtask: using cached Debian arm64 binaries in {}",
            root.display()
        );
        return Ok(found);
    }

    ensure_arm64_lists()?;
    let kernel_package = resolve_kernel_package()?;
    for package in [XEN_PACKAGE, kernel_package.as_str(), BUSYBOX_PACKAGE] {
        let deb = download(package, &cache)?;
        println!(
            "xtask: unpacking {} into {}",
            file_name(&deb),
            root.display()
        );
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    }
    find_binaries(&root)?.with_context(|| {
        format!(
            "unpacked {XEN_PACKAGE}, {kernel_package} and {BUSYBOX_PACKAGE} into {}, but \
             {XEN_FILE}, boot/vmlinuz-* or {BUSYBOX_FILE} is missing",
            root.display()
        )
    })
}

/// The three binaries under an unpack root, if all are there.
fn find_binaries(root: &Path) -> Result<Option<Binaries>> {
    let xen = root.join(XEN_FILE);
    let busybox = root.join(BUSYBOX_FILE);
    let dom0_kernel = newest_kernel(&root.join("boot"))?;
    Ok(match dom0_kernel {
        Some(dom0_kernel) if xen.is_file() && busybox.is_file() => Some(Binaries {
            xen,
            dom0_kernel,
            busybox,
        }),
        _ => None,
    })
}

/// `boot/vmlinuz-*` with the greatest name (one kernel is unpacked; a later download of a
/// newer one sorts after it).
fn newest_kernel(boot: &Path) -> Result<Option<PathBuf>> {
    if !boot.is_dir() {
        return Ok(None);
    }
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(boot)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| file_name(path).starts_with("vmlinuz-"))
        .collect();
    kernels.sort();
    Ok(kernels.pop())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Makes apt know arm64 packages: adds the architecture and updates the lists when needed.
fn ensure_arm64_lists() -> Result<()> {
    let foreign = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
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
        run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        crate::deps::apt_update()?;
        return Ok(());
    }
    let known = Command::new("apt-cache")
        .args([
            "show",
            "--no-all-versions",
            &format!("{KERNEL_METAPACKAGE}:arm64"),
        ])
        .output()
        .context("running apt-cache")?;
    if !known.status.success() || known.stdout.is_empty() {
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
    let show = output(Command::new("apt-cache").args([
        "show",
        "--no-all-versions",
        &format!("{KERNEL_METAPACKAGE}:arm64"),
    ]))?;
    let signed = kernel_from_depends(&show).with_context(|| {
        format!("{KERNEL_METAPACKAGE}:arm64 names no linux-image-* package in its Depends")
    })?;
    let unsigned = format!("{signed}-unsigned");
    let exists = Command::new("apt-cache")
        .args(["show", "--no-all-versions", &format!("{unsigned}:arm64")])
        .output()
        .is_ok_and(|out| out.status.success() && !out.stdout.is_empty());
    let chosen = if exists { unsigned } else { signed };
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
    run(Command::new("apt-get")
        .args(["download", "-q", &format!("{package}:arm64")])
        .current_dir(dir))?;
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

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

    #[test]
    fn cached_binaries_are_found_only_when_complete() {
        let root = std::env::temp_dir().join(format!("sramlink-debs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("boot")).expect("mkdir");
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        std::fs::write(root.join(XEN_FILE), b"xen").expect("write");
        std::fs::write(root.join("boot/vmlinuz-6.1.0-50-arm64"), b"old").expect("write");
        assert!(find_binaries(&root).expect("reads").is_none());
        std::fs::write(root.join(BUSYBOX_FILE), b"bb").expect("write");
        std::fs::write(root.join("boot/vmlinuz-6.1.0-56-arm64"), b"new").expect("write");
        let found = find_binaries(&root).expect("reads").expect("complete");
        assert!(found.dom0_kernel.ends_with("vmlinuz-6.1.0-56-arm64"));
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
