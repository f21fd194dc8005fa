//! Device trees for the QEMU runs: QEMU's own DTB dumped, changed as source, compiled with dtc.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long QEMU may take to dump its DTB (it exits right after writing it, in about a second).
const DUMP_LIMIT: Duration = Duration::from_secs(60);

/// Dumps the DTB QEMU would pass for exactly `machine_args` (everything but `-machine`'s
/// `dumpdtb=`), so the DTB we boot with describes the same machine. Fails with "dump QEMU's DTB
/// timed out after N s" if QEMU hangs instead of exiting.
pub fn dump_qemu_dtb(machine: &str, other_args: &[&str], out: &Path) -> Result<()> {
    let _ = std::fs::remove_file(out);
    let machine = format!("{machine},dumpdtb={}", out.display());
    let output = crate::process::output_within(
        Command::new("qemu-system-aarch64")
            .args(["-machine", &machine])
            .args(other_args)
            .args(crate::qemu::COMMON_ARGS)
            .args(["-display", "none"]),
        "dump QEMU's DTB",
        DUMP_LIMIT,
    )?;
    if !out.is_file() {
        bail!(
            "qemu-system-aarch64 did not dump a DTB ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Decompiles a DTB to DTS text.
pub fn decompile(dtb: &Path) -> Result<String> {
    let output = Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts"])
        .arg(dtb)
        .output()
        .context("running dtc")?;
    if !output.status.success() {
        bail!(
            "dtc could not decompile {}: {}",
            dtb.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Compiles DTS text to `out`; the source is kept beside it (`.dts`) for inspection.
pub fn compile(dts: &str, out: &Path) -> Result<()> {
    let source = out.with_extension("dts");
    std::fs::write(&source, dts)?;
    let output = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(out)
        .arg(&source)
        .output()
        .context("running dtc")?;
    if !output.status.success() {
        bail!(
            "dtc could not compile {}: {}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Appends `fragment` (device-tree source with `/ { ... };` blocks, no `/dts-v1/;`) to a
/// decompiled tree: dtc merges repeated nodes, so the fragment adds or overrides nodes.
pub fn merge(base_dts: &str, fragment: &str) -> String {
    let fragment: String = fragment
        .lines()
        .filter(|line| line.trim() != "/dts-v1/;")
        .collect::<Vec<_>>()
        .join("\n");
    format!("{base_dts}\n/* ---- added by sramlink xtask ---- */\n{fragment}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_drops_a_second_version_tag() {
        let merged = merge("/dts-v1/;\n/ { };\n", "/dts-v1/;\n/ { sram { }; };\n");
        assert_eq!(merged.matches("/dts-v1/;").count(), 1);
        assert!(merged.contains("sram { };"));
    }
}
