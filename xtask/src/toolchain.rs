//! The Rust toolchain's parts that the build needs: the two AArch64 targets' standard
//! libraries and the `rustfmt`/`clippy` components, added with rustup when missing.
//!
//! `rust-toolchain.toml` names them, but rustup applies its `targets` and `components` only when
//! it *installs* the toolchain: a machine that already has the pinned version (for example as a
//! link to its stable toolchain) runs it without them, and the first AArch64 build fails with
//! "can't find crate for `core`". So every xtask command that builds checks the active
//! toolchain's sysroot first.

use crate::process::{output_within, status_within};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The targets `rust-toolchain.toml` lists: the bare-metal guest and the static dom0 peer.
pub const TARGETS: &[&str] = &[
    crate::artifacts::GUEST_TARGET,
    crate::artifacts::DOM0_TARGET,
];

/// A rustup component and the file it puts in the sysroot's `bin/`.
struct Component {
    name: &'static str,
    binary: &'static str,
}

/// The components the tests use (`cargo fmt --check`, `cargo clippy`).
const COMPONENTS: &[Component] = &[
    Component {
        name: "rustfmt",
        binary: "rustfmt",
    },
    Component {
        name: "clippy",
        binary: "cargo-clippy",
    },
];

/// `rustc --print sysroot` (local).
const QUERY_LIMIT: Duration = Duration::from_secs(120);
/// `rustup target add` / `rustup component add` (a download of about 50 MB).
const RUSTUP_LIMIT: Duration = Duration::from_secs(900);

/// What the active toolchain lacks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Missing {
    pub targets: Vec<&'static str>,
    pub components: Vec<&'static str>,
}

impl Missing {
    fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.components.is_empty()
    }

    /// The rustup commands that add what is missing.
    fn commands(&self) -> Vec<String> {
        let mut commands = Vec::new();
        if !self.targets.is_empty() {
            commands.push(format!("rustup target add {}", self.targets.join(" ")));
        }
        if !self.components.is_empty() {
            commands.push(format!(
                "rustup component add {}",
                self.components.join(" ")
            ));
        }
        commands
    }
}

/// Whether `sysroot` holds the standard library for `target` (`lib/rustlib/TARGET/lib/libcore-*`).
fn has_target(sysroot: &Path, target: &str) -> bool {
    let lib = sysroot.join("lib").join("rustlib").join(target).join("lib");
    std::fs::read_dir(lib).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}

/// What `sysroot` lacks of [`TARGETS`] and [`COMPONENTS`].
pub fn missing_in(sysroot: &Path) -> Missing {
    Missing {
        targets: TARGETS
            .iter()
            .copied()
            .filter(|target| !has_target(sysroot, target))
            .collect(),
        components: COMPONENTS
            .iter()
            .filter(|component| !sysroot.join("bin").join(component.binary).is_file())
            .map(|component| component.name)
            .collect(),
    }
}

/// The sysroot of the toolchain the workspace builds with (`rust-toolchain.toml` applies, since
/// rustc runs in the workspace root).
fn sysroot() -> Result<PathBuf> {
    let output = output_within(
        Command::new("rustc")
            .args(["--print", "sysroot"])
            .current_dir(crate::paths::workspace_root()),
        "find the toolchain's sysroot (rustc --print sysroot)",
        QUERY_LIMIT,
    )?;
    if !output.status.success() {
        bail!(
            "rustc --print sysroot failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let path = String::from_utf8(output.stdout).context("rustc printed a non-UTF-8 sysroot")?;
    Ok(PathBuf::from(path.trim()))
}

/// Makes sure the active toolchain has the AArch64 targets and rustfmt/clippy: adds them with
/// rustup (saying so) when missing; without rustup, fails with the commands to run.
pub fn ensure() -> Result<()> {
    let sysroot = sysroot()?;
    let missing = missing_in(&sysroot);
    if missing.is_empty() {
        return Ok(());
    }
    let commands = missing.commands();
    if !crate::deps::have("rustup") {
        bail!(
            "the Rust toolchain at {} lacks {}; rustup is not on PATH, so add them with your \
             toolchain installer (with rustup: {})",
            sysroot.display(),
            missing
                .targets
                .iter()
                .chain(&missing.components)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            commands.join(" && ")
        );
    }
    let workspace = crate::paths::workspace_root();
    if !missing.targets.is_empty() {
        println!(
            "xtask: the toolchain lacks the {} standard library: rustup target add {}",
            missing.targets.join(" and "),
            missing.targets.join(" ")
        );
        status_within(
            Command::new("rustup")
                .args(["target", "add"])
                .args(&missing.targets)
                .current_dir(&workspace),
            "add the AArch64 targets (rustup target add)",
            RUSTUP_LIMIT,
        )?;
    }
    if !missing.components.is_empty() {
        println!(
            "xtask: the toolchain lacks {}: rustup component add {}",
            missing.components.join(" and "),
            missing.components.join(" ")
        );
        status_within(
            Command::new("rustup")
                .args(["component", "add"])
                .args(&missing.components)
                .current_dir(&workspace),
            "add the rustfmt and clippy components (rustup component add)",
            RUSTUP_LIMIT,
        )?;
    }
    let still = missing_in(&sysroot);
    if !still.is_empty() {
        bail!(
            "rustup ran, but the toolchain at {} still lacks {:?} {:?}; run {} by hand",
            sysroot.display(),
            still.targets,
            still.components,
            still.commands().join(" && ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysroot(targets: &[&str], binaries: &[&str]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "sramlink-sysroot-{}-{}",
            std::process::id(),
            targets.len() * 10 + binaries.len()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for target in targets {
            let lib = root.join("lib/rustlib").join(target).join("lib");
            std::fs::create_dir_all(&lib).expect("mkdir");
            std::fs::write(lib.join("libcore-0123abcd.rlib"), b"").expect("write");
        }
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        for binary in binaries {
            std::fs::write(root.join("bin").join(binary), b"").expect("write");
        }
        root
    }

    #[test]
    fn a_sysroot_without_the_aarch64_libraries_is_reported_with_the_command() {
        let root = fake_sysroot(&["x86_64-unknown-linux-gnu"], &["rustfmt"]);
        let missing = missing_in(&root);
        assert_eq!(
            missing.targets,
            ["aarch64-unknown-none", "aarch64-unknown-linux-musl"]
        );
        assert_eq!(missing.components, ["clippy"]);
        assert_eq!(
            missing.commands(),
            [
                "rustup target add aarch64-unknown-none aarch64-unknown-linux-musl",
                "rustup component add clippy"
            ]
        );
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    #[test]
    fn a_complete_sysroot_lacks_nothing() {
        let root = fake_sysroot(TARGETS, &["rustfmt", "cargo-clippy"]);
        assert_eq!(missing_in(&root), Missing::default());
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    #[test]
    fn an_empty_target_directory_does_not_count() {
        let root = fake_sysroot(&[], &["rustfmt", "cargo-clippy"]);
        std::fs::create_dir_all(root.join("lib/rustlib/aarch64-unknown-none/lib")).expect("mkdir");
        assert_eq!(missing_in(&root).targets.len(), 2);
        std::fs::remove_dir_all(root).expect("cleanup");
    }
}
