//! The shared region (`xen-config/region.env`) and the device-tree sources of `xen-config/`
//! generated from it: the host change of recipe step 1 in its forms, the domU partial trees of
//! recipe step 2; compiling them with dtc.

use super::xen_config_dir;
use crate::imagebuilder;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// The file holding the region's base and size (the one place to change them).
pub const REGION_FILE: &str = "region.env";

/// The shared region as `region.env` defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Physical base address (host) = guest physical address (identity `xen,reg`).
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Region {
    /// Reads `SRAMLINK_REGION_BASE` and `SRAMLINK_REGION_SIZE` from shell-assignment text.
    pub fn parse(text: &str) -> Result<Self> {
        let assignments = imagebuilder::parse_assignments(text)?;
        let get = |name: &str| -> Result<u64> {
            let found = assignments
                .iter()
                .rev()
                .find(|a| a.name == name && a.index.is_none())
                .with_context(|| format!("{name} is not set"))?;
            imagebuilder::parse_number(&found.value).with_context(|| {
                format!(
                    "line {}: {name}={:?} is not a number",
                    found.line, found.value
                )
            })
        };
        let region = Self {
            base: get("SRAMLINK_REGION_BASE")?,
            size: get("SRAMLINK_REGION_SIZE")?,
        };
        region.validate()?;
        Ok(region)
    }

    /// Reads `xen-config/region.env`.
    pub fn load() -> Result<Self> {
        let path = xen_config_dir().join(REGION_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Page alignment (Xen maps whole pages), a size that fits the partial DT's one size cell.
    fn validate(&self) -> Result<()> {
        const PAGE: u64 = 0x1000;
        if self.size == 0 || self.size > u64::from(u32::MAX) {
            bail!(
                "region size {:#x} must be non-zero and below 4 GiB",
                self.size
            );
        }
        if self.base % PAGE != 0 || self.size % PAGE != 0 {
            bail!(
                "region {:#x}+{:#x} must be 4 KiB aligned in base and size",
                self.base,
                self.size
            );
        }
        if self.base.checked_add(self.size).is_none() {
            bail!("region {:#x}+{:#x} wraps around", self.base, self.size);
        }
        Ok(())
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// `0x0 0x7f000000 0x0 0x1000000`: two address and two size cells.
    fn cells_2_2(&self) -> String {
        format!("{} {}", cells2(self.base), cells2(self.size))
    }
}

/// A 64-bit number as two device-tree cells.
pub(super) fn cells2(value: u64) -> String {
    format!("{:#x} {:#x}", value >> 32, value & 0xffff_ffff)
}

/// Header comment of every generated file.
fn generated_note(what: &str) -> String {
    format!(
        "/*\n * {what}\n *\n * Generated from xen-config/region.env: change the region there, then run\n \
         * `UPDATE_XEN_CONFIG=1 cargo test -p xtask xen_config_files` (the launcher refuses files\n \
         * that do not match region.env).\n */\n"
    )
}

/// The seed's `mmio-sram` node (recipe step 1), in a tree with two address and size cells.
fn host_sram_node(region: &Region, indent: &str) -> String {
    format!(
        "{indent}/* Recipe step 1: the range as an mmio-sram device. Dom0 gets it mapped by Xen\n\
         {indent} * automatically; add `xen,passthrough;` here to keep it away from dom0. */\n\
         {indent}sram@{base:x} {{\n\
         {indent}    compatible = \"mmio-sram\";\n\
         {indent}    reg = <{cells}>;\n\
         {indent}}};\n",
        base = region.base,
        cells = region.cells_2_2(),
    )
}

/// The body of `/chosen` naming the sram node as the shared region (`sramlink,region`).
fn host_chosen_region(region: &Region, indent: &str) -> String {
    format!(
        "{indent}/* Names the sram node as the shared region for dom0's sramlink module (the guest\n\
         {indent} * reads the same property): a board with on-chip SRAM has other mmio-sram nodes. */\n\
         {indent}sramlink,region = \"/sram@{base:x}\";\n",
        base = region.base,
    )
}

/// The carve-out as a `/reserved-memory` `no-map` child.
fn host_reserved_node(region: &Region, indent: &str) -> String {
    format!(
        "{indent}/* The carve-out: RAM that neither Xen nor dom0 may allocate or map as RAM.\n\
         {indent} * Survives QEMU and u-boot rewriting /memory. */\n\
         {indent}reserved-memory {{\n\
         {indent}    #address-cells = <0x2>;\n\
         {indent}    #size-cells = <0x2>;\n\
         {indent}    ranges;\n\n\
         {indent}    sramlink@{base:x} {{\n\
         {indent}        reg = <{cells}>;\n\
         {indent}        no-map;\n\
         {indent}    }};\n\
         {indent}}};\n",
        base = region.base,
        cells = region.cells_2_2(),
    )
}

/// `host-sram-reserved-memory.dtsi`: the carve-out as `/reserved-memory` + the sram node, to
/// append to (or `/include/` at the end of) a board's `.dts`.
pub fn host_reserved_memory_dtsi(region: &Region) -> String {
    format!(
        "{note}\n/ {{\n{reserved}\n{sram}\n    chosen {{\n{chosen}    }};\n}};\n",
        chosen = host_chosen_region(region, "        "),
        note = generated_note(
            "sramlink host device-tree change (recipe step 1), /reserved-memory form.\n * \
             Append to the board's .dts or `/include/` it at the end. Use it wherever the\n * \
             loader rewrites /memory: QEMU `-dtb`, u-boot `booti` (ImageBuilder boards).\n * \
             Assumes the root has #address-cells = <2> and #size-cells = <2> (arm64 boards)."
        ),
        reserved = host_reserved_node(region, "    "),
        sram = host_sram_node(region, "    "),
    )
}

/// `host-sram-overlay.dtso`: the same change as a device-tree overlay, applied on the build
/// host with `fdtoverlay` (the launcher does so on every run).
pub fn host_overlay_dtso(region: &Region) -> String {
    format!(
        "/dts-v1/;\n/plugin/;\n\n{note}\n&{{/}} {{\n{cells}\n{reserved}\n{sram}}};\n\n\
         &{{/chosen}} {{\n{chosen}}};\n",
        chosen = host_chosen_region(region, "    "),
        cells = "    /* The root's cells on both boards (QEMU virt and ZynqMP have 2 and 2). An overlay does\n     \
                 * not see the tree it is applied to: stated here, dtc checks the reg values\n     \
                 * below and compiles this without warnings. A board whose root has other cell\n     \
                 * counts needs the reg values rewritten, not just these two lines. */\n    \
                 #address-cells = <0x2>;\n    #size-cells = <0x2>;\n",
        note = generated_note(
            "sramlink host device-tree change (recipe step 1) as an overlay: the same nodes as\n * \
             host-sram-reserved-memory.dtsi. Compile: dtc -@ -I dts -O dtb -o host-sram-overlay.dtbo\n * \
             host-sram-overlay.dtso; apply: fdtoverlay -i board.dtb -o out.dtb host-sram-overlay.dtbo.\n * \
             (ImageBuilder's DT_OVERLAY needs a u-boot with `fdt apply`; Debian's qemu_arm64 u-boot\n * \
             lacks it and the script then boots without the change, so apply it beforehand.)"
        ),
        reserved = host_reserved_node(region, "    "),
        sram = host_sram_node(region, "    "),
    )
}

/// ZCU102 RAM banks (start, size): 2 GiB low, 2 GiB at 32 GiB.
pub const ZCU102_MEMORY_BANKS: &[(u64, u64)] = &[(0x0, 0x8000_0000), (0x8_0000_0000, 0x8000_0000)];

/// A memory node of a host tree: its name and its banks (start, size).
pub(super) type MemoryNode = (String, Vec<(u64, u64)>);

/// RAM banks (start, size) with `region` cut out, and whether it was inside one of them; a
/// region straddling a bank's edge is an error.
pub(super) fn cut_banks(region: &Region, banks: &[(u64, u64)]) -> Result<(Vec<(u64, u64)>, bool)> {
    let mut kept = Vec::new();
    let mut inside = false;
    for &(start, size) in banks {
        let end = start + size;
        if region.base >= start && region.end() <= end {
            inside = true;
            if region.base > start {
                kept.push((start, region.base - start));
            }
            if region.end() < end {
                kept.push((region.end(), end - region.end()));
            }
        } else if region.end() > start && region.base < end {
            bail!(
                "region {:#x}+{:#x} straddles the memory bank {start:#x}+{size:#x}",
                region.base,
                region.size
            );
        } else {
            kept.push((start, size));
        }
    }
    Ok((kept, inside))
}

/// Recipe step 1 in its literal form for a tree whose memory nodes are `memory_nodes` (name,
/// banks; two address and size cells): the region cut out of the node holding it and the
/// `mmio-sram` node, as a fragment to merge into that tree.
pub(super) fn shrink_memory_fragment(
    region: &Region,
    memory_nodes: &[MemoryNode],
) -> Result<String> {
    let mut text = String::from("/ {\n");
    let mut inside_any = false;
    for (name, banks) in memory_nodes {
        let (kept, inside) = cut_banks(region, banks)?;
        if inside {
            inside_any = true;
            let reg = kept
                .iter()
                .map(|&(start, size)| format!("{} {}", cells2(start), cells2(size)))
                .collect::<Vec<_>>()
                .join(" ");
            text += &format!(
                "    /* Recipe step 1: the region cut out of RAM. */\n    {name} {{\n        reg = <{reg}>;\n    }};\n"
            );
        }
    }
    if !inside_any {
        bail!(
            "region {:#x}+{:#x} is not inside any memory node of the host device tree",
            region.base,
            region.size
        );
    }
    text += &host_sram_node(region, "    ");
    text += "};\n";
    Ok(text)
}

/// `host-sram-shrink-memory.dtsi`: the recipe's literal step 1 — the range cut out of the
/// memory node — for boards whose loader passes the DTB's /memory unchanged.
pub fn host_shrink_memory_dtsi(region: &Region, banks: &[(u64, u64)]) -> Result<String> {
    let (kept, inside) = cut_banks(region, banks)?;
    if !inside {
        bail!(
            "region {:#x}+{:#x} is not inside any memory bank",
            region.base,
            region.size
        );
    }
    let reg = kept
        .iter()
        .map(|&(start, size)| format!("<{} {}>", cells2(start), cells2(size)))
        .collect::<Vec<_>>()
        .join(",\n              ");
    Ok(format!(
        "{note}\n/ {{\n    \
         /* The recipe's own form: the range removed from RAM. The node name must be your\n     \
          * board's memory node (`memory` in PetaLinux system.dtb, as in the recipe;\n     \
          * `memory@0` in Linux's zynqmp-zcu102-rev1.0.dts) or dtc adds a second one.\n     \
          * Banks written for a ZCU102 (2 GiB at 0, 2 GiB at 32 GiB). */\n    \
         memory {{\n        \
         device_type = \"memory\";\n        \
         reg = {reg};\n    \
         }};\n\n{sram}\n    chosen {{\n{chosen}    }};\n}};\n",
        chosen = host_chosen_region(region, "        "),
        note = generated_note(
            "sramlink host device-tree change (recipe step 1), shrink-the-memory-node form.\n * \
             Only for loaders that pass /memory unchanged: QEMU `-dtb` and u-boot `booti`\n * \
             rewrite it from their own RAM size, undoing the cut (then Xen gives dom0 the range\n * \
             as RAM). Use host-sram-reserved-memory.dtsi there."
        ),
        sram = host_sram_node(region, "    "),
    ))
}

/// Which domU partial device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomUTree {
    /// Recipe step 2: `xen,reg` identity mapping (upstream Xen: Device memory in the guest).
    Sram,
    /// `xen,reg-cacheable` (Xilinx's Xen fork only) and `sramlink,cacheable`.
    SramCacheable,
    /// Negative test: no mmio-sram node at all.
    NoSram,
}

impl DomUTree {
    /// File stem in `xen-config/`.
    pub fn stem(self) -> &'static str {
        match self {
            DomUTree::Sram => "domU-sram",
            DomUTree::SramCacheable => "domU-sram-cacheable",
            DomUTree::NoSram => "domU-no-sram",
        }
    }
}

/// The lines of the domU's `sram@…` node that both variants share, up to the mapping property.
fn domu_sram_node_start(region: &Region) -> String {
    format!(
        "        /* The region as the guest sees it; the node name carries its base address. */\n        \
         sram@{base:x} {{\n            \
         /* What the guest (and Linux's sram driver) looks for, anywhere in the tree. */\n            \
         compatible = \"mmio-sram\";\n            \
         /* What the guest reads: base (2 cells) and size (1 cell). */\n            \
         reg = <{cells} {size:#x}>;\n",
        base = region.base,
        cells = cells2(region.base),
        size = region.size,
    )
}

/// `xen,force-assign-without-iommu` with its reason.
const FORCE_ASSIGN: &str = "            \
    /* A memory range has no `iommus` stream ID, so Xen must be told to assign it without\n             \
     * the IOMMU; required whether or not the board has an SMMU. */\n            \
    xen,force-assign-without-iommu = <0x1>;\n";

/// A domU partial device tree (recipe step 2) as DTS, commented line by line.
pub fn domu_dts(region: &Region, tree: DomUTree) -> String {
    let identity = format!(
        "{} {:#x} {}",
        cells2(region.base),
        region.size,
        cells2(region.base)
    );
    let (what, node) = match tree {
        DomUTree::Sram => (
            "sramlink domU partial device tree (recipe step 2): the region mapped into the domU\n * \
             at the same address. Upstream Xen maps `xen,reg` as Device memory (p2m_mmio_direct_dev),\n * \
             so the guest uses it as Device-nGnRE with aligned 32/64-bit accesses."
                .to_string(),
            format!(
                "{start}            \
                 /* Host range (2+1 cells) -> guest address (2 cells): identity mapping, as\n             \
                  * Device memory. */\n            \
                 xen,reg = <{identity}>;\n\
                 {FORCE_ASSIGN}        \
                 }};\n",
                start = domu_sram_node_start(region),
            ),
        ),
        DomUTree::SramCacheable => (
            "sramlink domU partial device tree, cacheable variant. `xen,reg-cacheable` exists only\n * \
             in Xilinx's Xen fork (the recipe's \"map it as cacheable\"); upstream Xen ignores it and\n * \
             then maps nothing. `sramlink,cacheable` tells our guest to map the region Normal\n * \
             write-back (Xen strips `xen,*` properties, so the guest cannot see the former). Both\n * \
             sides must then agree on cacheability: dom0's /dev/mem mapping is uncached."
                .to_string(),
            format!(
                "{start}            \
                 /* Xilinx's Xen fork only: host range (2+1 cells) -> guest address (2 cells),\n             \
                  * identity, mapped Normal write-back cacheable. Upstream Xen ignores it. */\n            \
                 xen,reg-cacheable = <{identity}>;\n\
                 {FORCE_ASSIGN}            \
                 /* For our guest: map the region Normal write-back too (it cannot see the\n             \
                  * xen,* properties, which Xen strips). */\n            \
                 sramlink,cacheable;\n        \
                 }};\n",
                start = domu_sram_node_start(region),
            ),
        ),
        DomUTree::NoSram => (
            "sramlink domU partial device tree WITHOUT the mmio-sram node: the negative test.\n * \
             The guest must print a clear error and stop; dom0 must stay up."
                .to_string(),
            "        /* Deliberately empty: no sram@… node, so the guest finds no region. */\n"
                .to_string(),
        ),
    };
    format!(
        "/dts-v1/;\n\n{note}\n/ {{\n    \
         /* Cells of the nodes below: 2 for addresses, 1 for sizes (as in the recipe). */\n    \
         #address-cells = <0x2>;\n    \
         #size-cells = <0x1>;\n\n    \
         /* Xen copies this bus and its children into the domU's device tree. */\n    \
         passthrough {{\n        \
         /* A plain bus with no translation of its own (Linux probes its children). */\n        \
         compatible = \"simple-bus\";\n        \
         /* Empty ranges: child addresses are domU physical addresses, untranslated. */\n        \
         ranges;\n        \
         /* The children use the same cells as the root. */\n        \
         #address-cells = <0x2>;\n        \
         #size-cells = <0x1>;\n{node}    }};\n}};\n",
        note = generated_note(&what),
    )
}

/// Every generated file of `xen-config/` with its contents.
pub fn config_files(region: &Region) -> Result<Vec<(String, String)>> {
    let mut files = vec![
        (
            "host-sram-reserved-memory.dtsi".to_string(),
            host_reserved_memory_dtsi(region),
        ),
        (
            "host-sram-overlay.dtso".to_string(),
            host_overlay_dtso(region),
        ),
        (
            "host-sram-shrink-memory.dtsi".to_string(),
            host_shrink_memory_dtsi(region, ZCU102_MEMORY_BANKS)?,
        ),
    ];
    for tree in [DomUTree::Sram, DomUTree::SramCacheable, DomUTree::NoSram] {
        files.push((format!("{}.dts", tree.stem()), domu_dts(region, tree)));
    }
    Ok(files)
}

/// Fails when a committed file differs from what `region.env` generates.
pub fn check_config_files(dir: &Path, region: &Region) -> Result<()> {
    for (name, text) in config_files(region)? {
        let path = dir.join(&name);
        let committed = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if committed != text {
            bail!(
                "{} does not match xen-config/{REGION_FILE}; regenerate the device-tree sources \
                 with: UPDATE_XEN_CONFIG=1 cargo test -p xtask xen_config_files",
                path.display()
            );
        }
    }
    Ok(())
}

/// Runs `dtc`/`fdtoverlay`, failing with its stderr.
pub(super) fn tool(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Compiles `xen-config/STEM.dts` (or `.dtso` as an overlay) to `out`.
pub(super) fn compile_source(source: &Path, out: &Path, overlay: bool) -> Result<()> {
    let mut command = Command::new("dtc");
    command.args(["-q", "-I", "dts", "-O", "dtb"]);
    if overlay {
        command.arg("-@");
    }
    tool(command.arg("-o").arg(out).arg(source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::BoardId;
    use crate::deps;

    const REGION: Region = Region {
        base: 0x7f00_0000,
        size: 0x100_0000,
    };

    /// Writes the generated files into `dir`.
    pub fn write_config_files(dir: &Path, region: &Region) -> Result<()> {
        for (name, text) in config_files(region)? {
            std::fs::write(dir.join(&name), text).with_context(|| format!("writing {name}"))?;
        }
        Ok(())
    }

    #[test]
    fn xen_config_files() {
        let dir = xen_config_dir();
        let region = Region::load().expect("region.env");
        if std::env::var_os("UPDATE_XEN_CONFIG").is_some() {
            write_config_files(&dir, &region).expect("write");
        }
        check_config_files(&dir, &region).expect("committed files match region.env");
        for id in BoardId::ALL {
            let name = id.board().config;
            let config = imagebuilder::load(&dir.join(name)).expect(name);
            assert_eq!(config.domus.len(), 1, "{name}");
        }
    }

    #[test]
    fn generated_sources_compile_with_dtc() {
        // dtc is a host tool every QEMU run needs; `cargo xtask test` installs it first.
        assert!(
            deps::have("dtc"),
            "dtc is not installed (apt-get install device-tree-compiler)"
        );
        let dir = std::env::temp_dir().join(format!("sramlink-xen-dtc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (name, text) in config_files(&REGION).expect("generates") {
            let source = dir.join(&name);
            std::fs::write(&source, &text).expect("write");
            let out = dir.join(format!("{name}.dtb"));
            if name.ends_with(".dtsi") {
                // A fragment: compile it on top of a minimal arm64 root with a memory node.
                let base = "/dts-v1/;\n/ {\n    #address-cells = <2>;\n    #size-cells = <2>;\n    \
                            memory {\n        device_type = \"memory\";\n        \
                            reg = <0x0 0x0 0x0 0x80000000>;\n    };\n};\n";
                std::fs::write(&source, format!("{base}{text}")).expect("write");
            }
            compile_source(&source, &out, name.ends_with(".dtso"))
                .unwrap_or_else(|error| panic!("{name} does not compile: {error:#}"));
        }
        // The overlay compiles without a warning with the command the README gives users.
        let overlay = dir.join("host-sram-overlay.dtso");
        let output = Command::new("dtc")
            .args(["-@", "-I", "dts", "-O", "dtb", "-o"])
            .arg(dir.join("warnings.dtbo"))
            .arg(&overlay)
            .output()
            .expect("dtc runs");
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stderr), "");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn region_is_read_and_checked() {
        let region =
            Region::parse("SRAMLINK_REGION_BASE=0x7f000000\nSRAMLINK_REGION_SIZE=16777216\n")
                .expect("parses");
        assert_eq!(region, REGION);
        let misaligned =
            Region::parse("SRAMLINK_REGION_BASE=0x7f000800\nSRAMLINK_REGION_SIZE=0x1000\n");
        assert!(format!("{:#}", misaligned.expect_err("misaligned")).contains("aligned"));
        let missing = Region::parse("SRAMLINK_REGION_BASE=0x7f000000\n");
        assert!(format!("{:#}", missing.expect_err("missing")).contains("SRAMLINK_REGION_SIZE"));
    }

    #[test]
    fn domu_tree_follows_the_recipe() {
        let dts = domu_dts(&REGION, DomUTree::Sram);
        assert!(dts.contains("reg = <0x0 0x7f000000 0x1000000>;"));
        assert!(dts.contains("xen,reg = <0x0 0x7f000000 0x1000000 0x0 0x7f000000>;"));
        assert!(dts.contains("xen,force-assign-without-iommu = <0x1>;"));
        assert!(dts.contains("compatible = \"simple-bus\";"));
        let cacheable = domu_dts(&REGION, DomUTree::SramCacheable);
        assert!(
            cacheable.contains("xen,reg-cacheable = <0x0 0x7f000000 0x1000000 0x0 0x7f000000>;")
        );
        assert!(cacheable.contains("sramlink,cacheable;"));
        assert!(!domu_dts(&REGION, DomUTree::NoSram).contains("mmio-sram\""));
    }

    #[test]
    fn shrink_fragment_cuts_the_node_holding_the_region() {
        let nodes = vec![
            ("memory@0".to_string(), vec![(0, 0x8000_0000)]),
            (
                "memory@800000000".to_string(),
                vec![(0x8_0000_0000, 0x8000_0000)],
            ),
        ];
        let fragment = shrink_memory_fragment(&REGION, &nodes).expect("inside");
        assert!(fragment.contains("memory@0 {\n        reg = <0x0 0x0 0x0 0x7f000000>;"));
        assert!(!fragment.contains("memory@800000000"));
        assert!(fragment.contains("sram@7f000000 {"));
        let elsewhere = vec![("memory@40000000".to_string(), vec![(0x4000_0000, 0x1000)])];
        assert!(shrink_memory_fragment(&REGION, &elsewhere).is_err());
    }

    #[test]
    fn shrink_form_cuts_the_region_out_of_its_bank() {
        let dtsi = host_shrink_memory_dtsi(&REGION, ZCU102_MEMORY_BANKS).expect("inside");
        // The recipe's own numbers: 0..0x7f000000 and the 32 GiB bank.
        assert!(
            dtsi.contains(
                "reg = <0x0 0x0 0x0 0x7f000000>,\n              <0x8 0x0 0x0 0x80000000>;"
            )
        );
        let middle = Region {
            base: 0x4000_0000,
            size: 0x1000,
        };
        let dtsi = host_shrink_memory_dtsi(&middle, &[(0, 0x8000_0000)]).expect("inside");
        assert!(
            dtsi.contains(
                "<0x0 0x0 0x0 0x40000000>,\n              <0x0 0x40001000 0x0 0x3ffff000>;"
            )
        );
        let straddling = Region {
            base: 0x7fff_f000,
            size: 0x2000,
        };
        assert!(host_shrink_memory_dtsi(&straddling, &[(0, 0x8000_0000)]).is_err());
        let outside = Region {
            base: 0x9000_0000,
            size: 0x1000,
        };
        assert!(host_shrink_memory_dtsi(&outside, &[(0, 0x8000_0000)]).is_err());
    }
}
