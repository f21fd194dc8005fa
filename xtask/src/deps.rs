//! Host tools the QEMU runs need, installed from Debian when missing (as root) or explained.

use crate::process::status_within;
use anyhow::{Result, bail};
use std::process::Command;
use std::time::Duration;

/// `apt-get update` (all lists, over the network).
const APT_UPDATE_LIMIT: Duration = Duration::from_secs(600);
/// `apt-get install` of QEMU and dtc with their dependencies.
const APT_INSTALL_LIMIT: Duration = Duration::from_secs(1200);

/// A command-line tool and the Debian package that provides it.
struct Tool {
    command: &'static str,
    package: &'static str,
}

const QEMU_TOOLS: &[Tool] = &[
    Tool {
        command: "qemu-system-aarch64",
        package: "qemu-system-arm",
    },
    Tool {
        command: "dtc",
        package: "device-tree-compiler",
    },
];

/// Whether `command` is found on `PATH`.
pub fn have(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

/// Whether this process runs as root (apt-get may then be used).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Makes sure QEMU and dtc are installed: installs them with apt-get when root, otherwise
/// fails with the exact command to run.
pub fn ensure_qemu_tools() -> Result<()> {
    let missing: Vec<&Tool> = QEMU_TOOLS
        .iter()
        .filter(|tool| !have(tool.command))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
    apt_install(&packages)
}

/// Installs Debian packages, saying so; fails with the command to run when not root.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    if !is_root() {
        bail!("missing Debian packages: {list}; install them with: sudo apt-get install -y {list}");
    }
    println!("xtask: installing Debian packages: {list}");
    apt_update()?;
    status_within(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("install {list} (apt-get install)"),
        APT_INSTALL_LIMIT,
    )
}

/// `apt-get update`, quietly, within [`APT_UPDATE_LIMIT`].
pub fn apt_update() -> Result<()> {
    status_within(
        Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "update the apt package lists (apt-get update)",
        APT_UPDATE_LIMIT,
    )
}
