//! The host device tree of a boot: the board's DTB as QEMU edits it (dumped), recipe step 1 in
//! the form that survives QEMU's direct-kernel boot, then, for the boot only, the QEMU-only
//! fragment of `xen-config/qemu-only/` and the `/chosen` dom0less nodes.

use super::config::{MemoryNode, Region, compile_source, shrink_memory_fragment, tool};
use super::xen_config_dir;
use crate::board::Board;
use crate::dtb;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Recipe step 1 as an overlay (`xen-config/host-sram-overlay.dtso`).
const HOST_OVERLAY: &str = "host-sram-overlay";

/// The QEMU-only fragments' directory under `xen-config/`.
pub const QEMU_ONLY_DIR: &str = "qemu-only";

/// How recipe step 1 carves the region out of RAM in a boot's host tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CarveOut {
    /// The seed's literal form: `/memory` shrunk to end below the region.
    ShrinkMemory,
    /// `/memory` kept, the range a `/reserved-memory` `no-map` child (for loaders that rewrite
    /// `/memory`: QEMU's `-dtb`, u-boot's `booti`).
    ReservedMemory,
}

impl CarveOut {
    /// The form's name in reports.
    pub(super) fn name(self) -> &'static str {
        match self {
            CarveOut::ShrinkMemory => "shrink-memory",
            CarveOut::ReservedMemory => "reserved-memory",
        }
    }
}

/// The config's `DEVICE_TREE` as built, and why it has the form it has.
pub(super) struct HostTree {
    /// The form of recipe step 1 in it.
    pub carve_out: CarveOut,
    /// RAM banks in the shrunk tree given to QEMU, and in the tree QEMU then passes to Xen.
    pub shrink_written: Vec<(u64, u64)>,
    pub shrink_passed: Vec<(u64, u64)>,
}

/// Banks as `start+size` texts.
fn banks_list(banks: &[(u64, u64)]) -> Vec<String> {
    banks
        .iter()
        .map(|(start, size)| format!("{start:#x}+{size:#x}"))
        .collect()
}

/// Banks as one text: `0x0+0x7f000000, …`.
pub(super) fn banks_text(banks: &[(u64, u64)]) -> String {
    banks_list(banks).join(", ")
}

impl HostTree {
    /// The report's `carve_out` object.
    pub(super) fn report(&self) -> Value {
        let banks = banks_list;
        json!({
            "form": self.carve_out.name(),
            "shrink_probe": {
                "memory_given_to_qemu": banks(&self.shrink_written),
                "memory_qemu_passes_to_xen": banks(&self.shrink_passed),
                "survives": self.carve_out == CarveOut::ShrinkMemory,
            },
        })
    }
}

/// Dumps the tree QEMU passes for `board` (given `dtb` as `-dtb` when there is one, and `xen`
/// as `-kernel` when given: the direct-kernel boot's path through QEMU).
fn dump(board: &Board, dtb: Option<&Path>, xen: Option<&Path>, out: &Path) -> Result<()> {
    let mut args: Vec<String> = board.dump_args().iter().map(|a| a.to_string()).collect();
    if let Some(dtb) = dtb {
        args.extend(["-dtb".to_string(), dtb.display().to_string()]);
    }
    if let Some(xen) = xen {
        args.extend(["-kernel".to_string(), xen.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dtb::dump_qemu_dtb(board.machine, &args, out)
}

/// `fdtget OPTIONS… DTB NODE [PROPERTY]`'s output.
fn fdtget(options: &[&str], dtb: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("fdtget")
        .args(options)
        .arg(dtb)
        .args(args)
        .output()
        .context("running fdtget (device-tree-compiler)")?;
    if !output.status.success() {
        bail!(
            "fdtget {} {} {} failed: {}",
            options.join(" "),
            dtb.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `(start, size)` pairs from `fdtget -t x` words of a `reg` with two address and size cells.
pub(super) fn banks_from_words(words: &str) -> Result<Vec<(u64, u64)>> {
    let cells = words
        .split_whitespace()
        .map(|word| u64::from_str_radix(word, 16))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("not hex cells: {words:?}"))?;
    if cells.is_empty() || cells.len() % 4 != 0 {
        bail!("a reg of two address and two size cells has a multiple of 4 cells: {words:?}");
    }
    Ok(cells
        .chunks(4)
        .map(|c| ((c[0] << 32) | c[1], (c[2] << 32) | c[3]))
        .collect())
}

/// The root's memory nodes (`memory`, `memory@…`) and their banks; the root must have two
/// address and two size cells (every arm64 board here). Reads a copy rewritten by dtc: fdtget
/// stops at the NOP tags QEMU leaves where it removed nodes.
fn memory_nodes(dtb: &Path) -> Result<Vec<MemoryNode>> {
    let clean = dtb.with_extension("clean.dtb");
    tool(
        Command::new("dtc")
            .args(["-q", "-I", "dtb", "-O", "dtb", "-o"])
            .arg(&clean)
            .arg(dtb),
    )?;
    let dtb = clean.as_path();
    for cells in ["#address-cells", "#size-cells"] {
        let value = fdtget(&["-t", "x"], dtb, &["/", cells])?;
        if value.trim() != "2" {
            bail!(
                "{}: the root's {cells} is {}, not 2",
                dtb.display(),
                value.trim()
            );
        }
    }
    let mut nodes = Vec::new();
    for name in fdtget(&["-l"], dtb, &["/"])?.lines() {
        if name == "memory" || name.starts_with("memory@") {
            let reg = fdtget(&["-t", "x"], dtb, &[&format!("/{name}"), "reg"])?;
            nodes.push((name.to_string(), banks_from_words(&reg)?));
        }
    }
    if nodes.is_empty() {
        bail!("{} has no memory node", dtb.display());
    }
    Ok(nodes)
}

/// Whether any bank overlaps the region.
fn overlaps(banks: &[(u64, u64)], region: &Region) -> bool {
    banks
        .iter()
        .any(|&(start, size)| start < region.end() && region.base < start + size)
}

/// Writes `host` (the config's `DEVICE_TREE`): the board's tree (`board_dtb`, or QEMU's own)
/// as QEMU edits it, with recipe step 1 applied. The seed's literal form is tried first: the
/// shrunk tree is handed to QEMU exactly as the boot will (`-dtb`, `-kernel xen`) and dumped
/// back; if QEMU still describes the region as RAM the form cannot work on this board and the
/// `/reserved-memory` overlay is applied instead.
pub(super) fn build(
    board: &Board,
    board_dtb: Option<&Path>,
    xen: &Path,
    region: &Region,
    work: &Path,
    host: &Path,
) -> Result<HostTree> {
    let dumped = work.join(format!("qemu-{}-dumped.dtb", board.name));
    dump(board, board_dtb, None, &dumped)?;

    let nodes = memory_nodes(&dumped)?;
    let described: Vec<(u64, u64)> = nodes.iter().flat_map(|(_, banks)| banks.clone()).collect();
    if described != board.ram {
        bail!(
            "QEMU describes the {} board's RAM as {}, its description in xtask/src/board.rs says \
             {} (a different -m?)",
            board.name,
            banks_text(&described),
            banks_text(board.ram)
        );
    }
    let shrunk = work.join("host-sram-shrink-memory.dtb");
    let fragment = shrink_memory_fragment(region, &nodes)
        .with_context(|| format!("cutting the region out of {}", dumped.display()))?;
    dtb::compile(&dtb::merge(&dtb::decompile(&dumped)?, &fragment), &shrunk)?;
    let written: Vec<(u64, u64)> = memory_nodes(&shrunk)?
        .into_iter()
        .flat_map(|(_, banks)| banks)
        .collect();
    let passed_dtb = work.join("host-sram-shrink-memory-as-qemu-passes-it.dtb");
    dump(board, Some(&shrunk), Some(xen), &passed_dtb)?;
    let passed: Vec<(u64, u64)> = memory_nodes(&passed_dtb)?
        .into_iter()
        .flat_map(|(_, banks)| banks)
        .collect();

    let carve_out = if overlaps(&passed, region) {
        let overlay = work.join(format!("{HOST_OVERLAY}.dtbo"));
        compile_source(
            &xen_config_dir().join(format!("{HOST_OVERLAY}.dtso")),
            &overlay,
            true,
        )?;
        tool(
            Command::new("fdtoverlay")
                .arg("-i")
                .arg(&dumped)
                .arg("-o")
                .arg(host)
                .arg(&overlay),
        )?;
        CarveOut::ReservedMemory
    } else {
        std::fs::copy(&shrunk, host)
            .with_context(|| format!("copying {} to {}", shrunk.display(), host.display()))?;
        CarveOut::ShrinkMemory
    };
    Ok(HostTree {
        carve_out,
        shrink_written: written,
        shrink_passed: passed,
    })
}

/// The board's QEMU-only fragment (`xen-config/qemu-only/NAME`), or nothing.
pub(super) fn qemu_only_fragment(board: &Board) -> Result<Option<(PathBuf, String)>> {
    let Some(name) = board.qemu_only_fragment else {
        return Ok(None);
    };
    let path = xen_config_dir().join(QEMU_ONLY_DIR).join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some((path, text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reg_words_become_banks() {
        assert_eq!(
            banks_from_words("0 0 0 80000000 8 0 0 80000000\n").expect("banks"),
            [(0, 0x8000_0000), (0x8_0000_0000, 0x8000_0000)]
        );
        assert!(banks_from_words("0 0 0").is_err());
        assert!(banks_from_words("zz 0 0 1").is_err());
        let region = Region {
            base: 0x7f00_0000,
            size: 0x100_0000,
        };
        assert!(overlaps(&[(0, 0x8000_0000)], &region));
        assert!(!overlaps(&[(0, 0x7f00_0000)], &region));
    }

    #[test]
    fn qemu_only_fragments_stay_out_of_the_board_files() {
        let dir = xen_config_dir();
        let fragment = qemu_only_fragment(crate::board::BoardId::Zcu102.board())
            .expect("reads")
            .expect("the emulated ZCU102 has one");
        assert!(
            fragment.1.starts_with("/*\n * QEMU ONLY"),
            "{}",
            fragment.0.display()
        );
        assert!(fragment.1.contains("0xf902f000"));
        // No board file (device-tree sources, ImageBuilder configs) carries or includes it.
        for entry in std::fs::read_dir(&dir).expect("xen-config") {
            let path = entry.expect("entry").path();
            let board_file = path.extension().is_some_and(|ext| {
                ["dts", "dtsi", "dtso", "config"].contains(&ext.to_str().unwrap_or(""))
            });
            if board_file {
                let text = std::fs::read_to_string(&path).expect("readable");
                assert!(
                    !text.contains("f902f000") && !text.contains(QEMU_ONLY_DIR),
                    "{} carries QEMU-only device-tree content",
                    path.display()
                );
            }
        }
    }
}
