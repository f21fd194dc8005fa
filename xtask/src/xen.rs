//! Xen on QEMU: the guest as a dom0less domU, the peer in a Linux dom0, all driven by the
//! ImageBuilder config `xen-config/qemu-virt.config` and the region in `xen-config/region.env`.
//!
//! ```text
//!  qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -smp 2 -m 2G
//!  ┌──────────────────────────── Xen 4.17 (EL2), console on PL011 ───────────────────────────┐
//!  │  dom0: Debian Linux, 1 vCPU, 512 MiB          domU1: sramlink guest, 1 vCPU, vpl011      │
//!  │   /init → sramlink-peer (/dev/mem, O_SYNC)     partial DT: passthrough/sram@7f000000     │
//!  │          │                                      xen,reg identity  │                      │
//!  │          └──────────────► region 0x7f00_0000 + 16 MiB ◄───────────┘                      │
//!  │                  host DT: /reserved-memory no-map + sram@7f000000 (mmio-sram)             │
//!  └──────────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Run flow: fetch Debian's arm64 Xen/kernel/busybox ([`crate::debs`]) → build guest and peer →
//! lay the files out in a work directory under the config's names (an ImageBuilder `-d` root) →
//! the config's `DEVICE_TREE` = QEMU's dumped DTB with `host-sram-overlay.dtso` applied
//! (fdtoverlay) → that plus the `/chosen` dom0less nodes with the real file sizes → boot with
//! each module loaded by QEMU's generic loader → follow the console stage by stage.
//!
//! The device-tree sources in `xen-config/` are generated from `region.env` by
//! [`config_files`]; a unit test fails when they drift, and
//! `UPDATE_XEN_CONFIG=1 cargo test -p xtask xen_config_files` rewrites them.

use crate::GuestIdle;
use crate::imagebuilder::{self, Config};
use crate::qemu::Qemu;
use crate::test::SystemTest;
use crate::{artifacts, debs, deps, dtb, initramfs, paths, plan, report};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

/// QEMU machine (EL2 for Xen, GICv3 which Debian's Xen supports).
const MACHINE: &str = "virt,virtualization=on,gic-version=3";
/// CPU, cores and RAM. Two cores: dom0 (1 vCPU, pinned) and the domU each get one.
const CPU_ARGS: &[&str] = &["-cpu", "cortex-a57", "-smp", "2", "-m", "2G"];
/// First module address: above Xen (QEMU loads it at 0x4020_0000) and QEMU's DTB
/// (0x4800_0000).
const MODULES_START: u64 = 0x5000_0000;
/// Module alignment (ImageBuilder's `offset`).
const MODULE_ALIGN: u64 = 0x20_0000;
/// The ImageBuilder config the QEMU run uses.
pub const QEMU_CONFIG: &str = "qemu-virt.config";
/// QEMU's own DTB as dumped, before recipe step 1 is applied.
const QEMU_DUMPED_DTB: &str = "qemu-virt-dumped.dtb";
/// Recipe step 1 as an overlay (`xen-config/host-sram-overlay.dtso`).
const HOST_OVERLAY: &str = "host-sram-overlay";
/// The file holding the region's base and size (the one place to change them).
pub const REGION_FILE: &str = "region.env";

/// Console markers the dom0 init script prints.
const DOM0_INIT_MARKER: &str = "SRAMLINK-DOM0: init";
const DOM0_DONE_MARKER: &str = "SRAMLINK-DOM0: done rc=";

/// Options of `cargo xtask demo --mode xen`.
pub struct DemoOptions {
    pub count: u64,
    pub size: u32,
    pub busy_poll: bool,
    /// A user's own Xen binary instead of Debian's.
    pub xen: Option<PathBuf>,
    /// A user's own dom0 kernel Image instead of Debian's.
    pub dom0_kernel: Option<PathBuf>,
    /// The guest's idle policy in the main boot (the demo boots once more with the other).
    pub guest_idle: GuestIdle,
}

/// `xen-config/` in the workspace.
pub fn xen_config_dir() -> PathBuf {
    paths::workspace_root().join("xen-config")
}

// ---------------------------------------------------------------------------------------------
// The shared region and the device-tree sources generated from it.
// ---------------------------------------------------------------------------------------------

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
fn cells2(value: u64) -> String {
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
        "{note}\n/ {{\n{reserved}\n{sram}}};\n",
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
        "/dts-v1/;\n/plugin/;\n\n{note}\n&{{/}} {{\n{cells}\n{reserved}\n{sram}}};\n",
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

/// `host-sram-shrink-memory.dtsi`: the recipe's literal step 1 — the range cut out of the
/// memory node — for boards whose loader passes the DTB's /memory unchanged.
pub fn host_shrink_memory_dtsi(region: &Region, banks: &[(u64, u64)]) -> Result<String> {
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
         }};\n\n{sram}}};\n",
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

// ---------------------------------------------------------------------------------------------
// Boot modules, /chosen and the QEMU command line.
// ---------------------------------------------------------------------------------------------

/// What a boot module is to Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    Dom0Kernel,
    Dom0Ramdisk,
    /// Kernel of domU number `i` (ImageBuilder's index).
    DomUKernel(usize),
    /// Partial device tree of domU `i`.
    DomUDtb(usize),
}

/// A file QEMU loads at `addr` and `/chosen` describes with its exact size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub kind: ModuleKind,
    pub path: PathBuf,
    pub addr: u64,
    pub size: u64,
}

/// Places modules one after another from `start`, each at a 2 MiB boundary (as ImageBuilder
/// does), and checks they end below `limit` (the region, or the end of RAM).
pub fn layout(files: &[(ModuleKind, PathBuf, u64)], start: u64, limit: u64) -> Result<Vec<Module>> {
    let mut addr = start;
    let mut modules = Vec::with_capacity(files.len());
    for (kind, path, size) in files {
        if *size == 0 {
            bail!("boot module {} is empty", path.display());
        }
        let end = addr + size;
        if end > limit {
            bail!(
                "boot module {} ({size:#x} bytes at {addr:#x}) would end above {limit:#x}",
                path.display()
            );
        }
        modules.push(Module {
            kind: *kind,
            path: path.clone(),
            addr,
            size: *size,
        });
        addr = end.next_multiple_of(MODULE_ALIGN);
    }
    Ok(modules)
}

/// A DTS string literal.
fn dts_string(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The `/chosen` dom0less nodes for `config` and the placed `modules`, as ImageBuilder's
/// `uboot-script-gen` writes them with `fdt set`. A domU's `DOMU_CMD[i]` becomes `bootargs` of
/// its kernel module node, as ImageBuilder does: Xen takes a domU's command line from the
/// `bootargs` of a module node under the `xen,domain` node, not from the domain node itself.
pub fn chosen_fragment(config: &Config, modules: &[Module]) -> String {
    let module_node = |module: &Module, compatible: &str, indent: &str, bootargs: Option<&str>| {
        let bootargs = bootargs
            .map(|args| format!("{indent}    bootargs = {};\n", dts_string(args)))
            .unwrap_or_default();
        format!(
            "{indent}module@{addr:x} {{\n\
             {indent}    compatible = {compatible};\n\
             {indent}    reg = <{addr_cells} {size_cells}>;\n\
             {bootargs}\
             {indent}}};\n",
            addr = module.addr,
            addr_cells = cells2(module.addr),
            size_cells = cells2(module.size),
        )
    };
    let mut text = String::from("/ {\n    chosen {\n");
    text += "        #address-cells = <0x2>;\n        #size-cells = <0x2>;\n";
    text += &format!(
        "        xen,xen-bootargs = {};\n",
        dts_string(&config.xen_cmd)
    );
    text += &format!(
        "        xen,dom0-bootargs = {};\n",
        dts_string(&config.dom0_bootargs())
    );
    for module in modules {
        match module.kind {
            ModuleKind::Dom0Kernel => {
                text += &module_node(
                    module,
                    "\"multiboot,kernel\", \"multiboot,module\"",
                    "        ",
                    None,
                );
            }
            ModuleKind::Dom0Ramdisk => {
                text += &module_node(
                    module,
                    "\"multiboot,ramdisk\", \"multiboot,module\"",
                    "        ",
                    None,
                );
            }
            _ => {}
        }
    }
    let has_dom0 = config.dom0_kernel.is_some();
    for (index, domu) in config.domus.iter().enumerate() {
        text += &format!("\n        domU{index} {{\n");
        text += "            compatible = \"xen,domain\";\n";
        text += "            #address-cells = <0x2>;\n            #size-cells = <0x2>;\n";
        text += &format!("            memory = <{}>;\n", cells2(domu.mem_mib * 1024));
        text += &format!("            cpus = <{:#x}>;\n", domu.vcpus);
        text += if domu.vuart_pl011 {
            "            vpl011 = \"pl011\";\n"
        } else {
            "            vpl011;\n"
        };
        if domu.is_enhanced(has_dom0) {
            text += "            xen,enhanced = \"enabled\";\n";
        }
        for module in modules {
            let (compatible, bootargs) = match module.kind {
                ModuleKind::DomUKernel(i) if i == index => (
                    "\"multiboot,kernel\", \"multiboot,module\"",
                    Some(domu.cmd.as_str()),
                ),
                ModuleKind::DomUDtb(i) if i == index => {
                    ("\"multiboot,device-tree\", \"multiboot,module\"", None)
                }
                _ => continue,
            };
            text += &module_node(module, compatible, "            ", bootargs);
        }
        text += "        };\n";
    }
    text += "    };\n};\n";
    text
}

/// The full `qemu-system-aarch64` argument list: Xen as the kernel, the host DTB, each module
/// through the generic loader, the serial console on stdout.
pub fn qemu_args(xen: &Path, host_dtb: &Path, modules: &[Module]) -> Result<Vec<String>> {
    let mut args: Vec<String> = vec!["-machine".into(), MACHINE.into()];
    args.extend(CPU_ARGS.iter().map(|arg| arg.to_string()));
    args.extend([
        "-kernel".into(),
        xen.display().to_string(),
        "-dtb".into(),
        host_dtb.display().to_string(),
    ]);
    for module in modules {
        let file = module.path.display().to_string();
        if file.contains(',') {
            bail!("QEMU's -device option cannot name a file with a comma: {file}");
        }
        args.push("-device".into());
        args.push(format!(
            "loader,file={file},addr={:#x},force-raw=on",
            module.addr
        ));
    }
    args.extend(
        [
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .iter()
        .map(|arg| arg.to_string()),
    );
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// dom0's init.
// ---------------------------------------------------------------------------------------------

/// What dom0's init runs.
#[derive(Clone, Copy, Debug)]
pub struct Dom0Run {
    /// Round trips of `sramlink-peer ping`.
    pub count: u64,
    /// Payload bytes per message.
    pub size: u32,
    /// Pass `--busy-poll` to the peer.
    pub busy_poll: bool,
    /// Run [`plan::peer_runs`] (every mode, both peer idle policies) rather than a single ping.
    pub every_mode: bool,
    /// Seconds the peer waits for the guest's ring (and for each reply).
    pub timeout_seconds: u64,
    /// The guest's idle policy, appended to the domU's `DOMU_CMD` (its `/chosen/bootargs`).
    /// With [`GuestIdle::Irq`] the peer waits on Xen events (`--events`), dom0 loads
    /// `xen-evtchn`, and a peer asked for events before the module is loaded must fail clearly.
    pub guest_idle: GuestIdle,
    /// Seconds of an idle window (peer `idle` mode) before the last run; 0: none.
    pub idle_seconds: u64,
}

/// Marks of the peer's idle window on the console.
const IDLE_BEGIN: &str = "SRAMLINK-IDLE: begin";
const IDLE_END: &str = "SRAMLINK-IDLE: end";
/// dom0's line after the negative events case.
const NEGATIVE_OK: &str = "SRAMLINK-DOM0: negative case failed as expected";

/// dom0's `/init`: mounts, reports what dom0 sees of the region, runs the peer against the
/// region it discovers in /proc/device-tree, prints the peer's exit code and powers off.
pub fn dom0_init_script(run: &Dom0Run) -> String {
    let peer = format!(
        "/bin/sramlink-peer --json --timeout {}",
        run.timeout_seconds
    );
    let events = run.guest_idle.events();
    let runs = if run.every_mode {
        plan::peer_runs(run.count, run.size, run.busy_poll, events, run.idle_seconds)
    } else {
        let policy = if run.busy_poll { " --busy-poll" } else { "" };
        vec![vec![format!(
            "--stop-guest{policy} ping --count {} --size {}",
            run.count, run.size
        )]]
    };
    // Each run is reported; init's exit code is the first failure's.
    let commands: String = runs
        .iter()
        .map(|args| {
            let command = format!("{peer} {}", args.join(" "));
            format!(
                "echo \"SRAMLINK-DOM0: running {command}\"\n{command}\nrun_rc=$?\n\
                 [ \"$rc\" -eq 0 ] && rc=$run_rc\n"
            )
        })
        .collect();
    // Events: first a peer asked for them while xen-evtchn is not loaded (it must fail with a
    // clear error and leave the guest serving), then the module is loaded.
    let events_setup = if events {
        let negative =
            format!("{peer} --events ping --count 10 --size {}", run.size).replace(" --json", "");
        format!(
            "echo \"SRAMLINK-DOM0: negative: {negative}\"\n\
             if {negative}; then echo \"SRAMLINK-DOM0: negative case succeeded\"; rc=98; \
             else echo \"{NEGATIVE_OK}\"; fi\n\
             for module in /lib/modules/*.ko; do insmod \"$module\" && \
             echo \"SRAMLINK-DOM0: loaded $module\"; done\n\
             ls -l /dev/xen/evtchn | sed 's/^/SRAMLINK-DOM0: /'\n"
        )
    } else {
        String::new()
    };
    format!(
        r#"#!/bin/busybox sh
# dom0 init of the sramlink Xen run (generated by xtask/src/xen.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{DOM0_INIT_MARKER} uptime=$(cut -d' ' -f1 /proc/uptime)s cpus=$(grep -c ^processor /proc/cpuinfo)"
grep -i sram /proc/iomem | while read -r line; do echo "SRAMLINK-DOM0: iomem $line"; done
rc=0
{events_setup}{commands}echo "{DOM0_DONE_MARKER}$rc uptime=$(cut -d' ' -f1 /proc/uptime)s"
# Xen halts the whole machine when dom0 powers off: give the domU a moment to finish printing
# its last console lines (statistics, "stopping"), which follow the reply the peer waited for.
sleep 1
poweroff -f
# Only reached if poweroff failed: never let init exit (the kernel would panic).
echo o > /proc/sysrq-trigger
while true; do sleep 1; done
"#
    )
}

// ---------------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------------

/// Which Xen run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// The guest with the region; the peer exchanges messages.
    Good,
    /// The domU partial DT without the mmio-sram node.
    NoSram,
}

/// The binaries a run boots.
struct Inputs {
    xen: PathBuf,
    dom0_kernel: PathBuf,
    busybox: PathBuf,
    guest_image: PathBuf,
    peer: PathBuf,
    /// `xen-evtchn.ko` of the dom0 kernel's package (absent for `--dom0-kernel`).
    evtchn_module: Option<PathBuf>,
}

impl Inputs {
    /// The user's Xen and dom0 kernel where given (`--xen`, `--dom0-kernel`, checked to
    /// exist), Debian's otherwise (only those downloaded), Debian's busybox, the guest and the
    /// peer built.
    fn gather(options: &DemoOptions) -> Result<Self> {
        let binaries = debs::fetch(&debs::Own {
            xen: options.xen.clone(),
            dom0_kernel: options.dom0_kernel.clone(),
        })?;
        Ok(Self {
            evtchn_module: debs::xen_module(&binaries.dom0_kernel, "xen-evtchn"),
            xen: binaries.xen,
            dom0_kernel: binaries.dom0_kernel,
            busybox: binaries.busybox,
            guest_image: artifacts::guest_image()?,
            peer: artifacts::peer_aarch64()?,
        })
    }
}

/// Everything prepared for one boot.
struct Prepared {
    args: Vec<String>,
    region: Region,
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

/// Runs `dtc`/`fdtoverlay`, failing with its stderr.
fn tool(command: &mut Command) -> Result<()> {
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
fn compile_source(source: &Path, out: &Path, overlay: bool) -> Result<()> {
    let mut command = Command::new("dtc");
    command.args(["-q", "-I", "dts", "-O", "dtb"]);
    if overlay {
        command.arg("-@");
    }
    tool(command.arg("-o").arg(out).arg(source))
}

/// Lays out the ImageBuilder root for `config`, builds the initramfs and DTBs, returns the QEMU
/// arguments.
fn prepare(case: Case, inputs: &Inputs, run: &Dom0Run, work: &Path) -> Result<Prepared> {
    let config_dir = xen_config_dir();
    let mut config = imagebuilder::load(&config_dir.join(QEMU_CONFIG))?;
    let region = Region::load()?;
    check_config_files(&config_dir, &region)?;
    if config.domus.len() != 1 {
        bail!("{QEMU_CONFIG} must define exactly one domU (NUM_DOMUS=1), the sramlink guest");
    }
    if case == Case::NoSram {
        config.domus[0].passthrough_dtb = Some(format!("{}.dtb", DomUTree::NoSram.stem()));
    }
    // The guest takes the last `sramlink.idle=` word of its command line.
    let guest_cmd = &mut config.domus[0].cmd;
    *guest_cmd = format!("{guest_cmd} {}", run.guest_idle.bootarg());
    if region.base < config.memory_start || region.end() > config.memory_end {
        bail!(
            "the region {:#x}+{:#x} is outside RAM {:#x}..{:#x} of {QEMU_CONFIG}",
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
                "the events run needs xen-evtchn.ko from the dom0 kernel's package, next to {}                  (lib/modules/VERSION/kernel/drivers/xen/); an own --dom0-kernel has none",
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

    // Host DTB (the config's DEVICE_TREE): QEMU's own with recipe step 1 applied on this host
    // by fdtoverlay, as a board user prepares theirs (u-boot's `fdt apply` is not relied on:
    // Debian's qemu_arm64 u-boot lacks it and ImageBuilder's script then boots without it).
    let dumped = work.join(QEMU_DUMPED_DTB);
    dtb::dump_qemu_dtb(MACHINE, CPU_ARGS, &dumped)?;
    let overlay = work.join(format!("{HOST_OVERLAY}.dtbo"));
    compile_source(
        &config_dir.join(format!("{HOST_OVERLAY}.dtso")),
        &overlay,
        true,
    )?;
    let host = in_dir(work, &config.device_tree)?;
    tool(
        Command::new("fdtoverlay")
            .arg("-i")
            .arg(&dumped)
            .arg("-o")
            .arg(&host)
            .arg(&overlay),
    )?;

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
    let modules = layout(&files, MODULES_START.max(config.memory_start), limit)?;
    let host_dts = dtb::merge(&dtb::decompile(&host)?, &chosen_fragment(&config, &modules));
    let host_dtb = work.join("host.dtb");
    dtb::compile(&host_dts, &host_dtb)?;

    Ok(Prepared {
        args: qemu_args(&xen, &host_dtb, &modules)?,
        region,
    })
}

/// Stage timeouts. Generous: CI machines are slow and share two cores.
const XEN_BANNER_TIMEOUT: Duration = Duration::from_secs(60);
const GUEST_BANNER_TIMEOUT: Duration = Duration::from_secs(60);
const DOM0_INIT_TIMEOUT: Duration = Duration::from_secs(240);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for a line containing `needle`, also accepting one already seen (guest and dom0
/// lines interleave in any order).
fn seen_or_expect(qemu: &mut Qemu, stage: &str, needle: &str, timeout: Duration) -> Result<String> {
    if let Some(line) = qemu.lines_seen().iter().find(|line| line.contains(needle)) {
        return Ok(line.clone());
    }
    qemu.expect(stage, needle, timeout)
}

/// `4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1)` from Xen's banner line.
fn xen_version(banner: &str) -> Option<String> {
    let rest = banner.split_once("Xen version ")?.1;
    let end = rest.find(')').map_or(rest.len(), |at| at + 1);
    Some(rest[..end].trim().to_string())
}

/// `0x7f000000+0x1000000 (device)` from `sramlink: region …`.
fn guest_region(line: &str) -> Option<(u64, u64, String)> {
    let rest = line.split_once("sramlink: region ")?.1;
    let (range, attributes) = rest.split_once(' ').unwrap_or((rest, ""));
    let (base, size) = range.split_once('+')?;
    Some((
        imagebuilder::parse_number(base)?,
        imagebuilder::parse_number(size)?,
        attributes.trim_matches(['(', ')', ' ']).to_string(),
    ))
}

/// A number in the peer's JSON report: a JSON number, or a `0x…`/decimal string.
fn report_number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => imagebuilder::parse_number(text),
        _ => None,
    }
}

/// Checks the region one side reports (`seen`, `None` when it reported none or it could not
/// be read; `source` is what was read, for the message) against `region.env`'s.
fn check_region(
    side: &str,
    configured: &Region,
    seen: Option<(u64, u64)>,
    source: &str,
) -> Result<(u64, u64)> {
    let Some((base, size)) = seen else {
        bail!(
            "{side} reported no readable region base and size ({source}); expected {:#x}+{:#x} \
             from xen-config/{REGION_FILE}",
            configured.base,
            configured.size
        );
    };
    if (base, size) != (configured.base, configured.size) {
        bail!(
            "{side} sees the region at {base:#x}+{size:#x}, but xen-config/{REGION_FILE} \
             configures {:#x}+{:#x} ({source}); are the device trees out of date?",
            configured.base,
            configured.size
        );
    }
    Ok((base, size))
}

/// A failed region check as a stage failure with the console log's path.
fn region_stage_error(qemu: &Qemu, stage: &str, error: &anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "stage '{stage}' failed after {:.1} s: {error:#}\n  full console log: {}",
        qemu.elapsed().as_secs_f64(),
        qemu.log_path().display()
    )
}

/// The return code in `SRAMLINK-DOM0: done rc=N …`.
fn dom0_rc(line: &str) -> Option<i32> {
    let rest = line.split_once(DOM0_DONE_MARKER)?.1;
    rest.split_whitespace().next()?.parse().ok()
}

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
fn run_good(inputs: &Inputs, run: &Dom0Run, name: &str) -> Result<PathBuf> {
    let work = paths::work_dir(name);
    let prepared = prepare(Case::Good, inputs, run, &work)?;
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
                    "the peer without xen-evtchn failed without naming the module; full console                      log: {}",
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
    let guest_stats = qemu
        .lines_seen()
        .iter()
        .find_map(|line| report::parse_guest_stats(line));

    extra.insert(
        "platform".into(),
        json!("xen-on-qemu-virt, dom0 peer, dom0less domU guest"),
    );
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
    extra.insert("seconds".into(), Value::Object(timeline.0));
    extra.insert("qemu_exit".into(), json!(status.code()));
    extra.insert(
        "console_log".into(),
        json!(qemu.log_path().display().to_string()),
    );
    report::finish(name, runs, guest_stats, extra)
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

/// A report number as `0x…` (the peer prints numbers; the guest's console prints hex).
fn hex_field(value: Option<&Value>) -> Value {
    match value {
        Some(Value::Number(number)) => number
            .as_u64()
            .map_or(Value::Number(number.clone()), |n| json!(format!("{n:#x}"))),
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// dom0's console lines from the peer's start to init's done line (the peer's output and
/// whatever the guest printed meanwhile).
fn peer_output(lines: &[String]) -> Vec<String> {
    let start = lines
        .iter()
        .position(|line| line.contains("SRAMLINK-DOM0: running"))
        .unwrap_or(0);
    lines[start..]
        .iter()
        .take_while(|line| !line.contains(DOM0_DONE_MARKER))
        .cloned()
        .collect()
}

/// The negative run: the guest without its mmio-sram node must say so and stop, dom0 must stay
/// up, the peer must give up with an error, and QEMU must shut down cleanly.
fn run_no_sram(inputs: &Inputs, name: &str) -> Result<()> {
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
    let prepared = prepare(Case::NoSram, inputs, &run, &work)?;
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

/// Length of the demo's idle windows.
const DEMO_IDLE_SECONDS: u64 = 5;

/// `cargo xtask demo --mode xen`.
pub fn demo(options: &DemoOptions) -> Result<()> {
    deps::ensure_qemu_tools()?;
    let inputs = Inputs::gather(options)?;
    let run = Dom0Run {
        count: options.count,
        size: options.size,
        busy_poll: options.busy_poll,
        every_mode: true,
        timeout_seconds: 30,
        guest_idle: options.guest_idle,
        // Both boots end with an idle window: the host CPU QEMU uses while both sides wait
        // is compared across the two guest policies.
        idle_seconds: DEMO_IDLE_SECONDS,
    };
    let path = run_good(&inputs, &run, "xen-qemu")?;
    // A second boot with the guest's other idle policy, to measure what its back-off costs.
    let other = Dom0Run {
        guest_idle: options.guest_idle.other(),
        ..run
    };
    let other_path = run_good(&inputs, &other, "xen-qemu-other-guest-idle")?;
    report::add_guest_idle_comparison(&path, &other_path)?;
    println!("Xen demo passed; report: {}", path.display());
    Ok(())
}

/// The Xen system tests of `cargo xtask test`: a good run and the domU without its region.
pub fn system_tests() -> Result<Vec<SystemTest<'static>>> {
    deps::ensure_qemu_tools()?;
    let inputs = Rc::new(Inputs::gather(&DemoOptions {
        count: 0,
        size: 0,
        busy_poll: false,
        xen: None,
        dom0_kernel: None,
        guest_idle: GuestIdle::Wfe,
    })?);
    let run = Dom0Run {
        count: 100_000,
        size: 64,
        busy_poll: false,
        every_mode: true,
        timeout_seconds: 30,
        guest_idle: GuestIdle::Wfe,
        idle_seconds: 0,
    };
    // The guest sleeping in wfi on the Xen event, the peer on /dev/xen/evtchn; first a peer
    // asked for events before xen-evtchn is loaded must fail clearly and leave the guest be.
    let events = Dom0Run {
        guest_idle: GuestIdle::Irq,
        ..run
    };
    let good_inputs = Rc::clone(&inputs);
    let events_inputs = Rc::clone(&inputs);
    Ok(vec![
        (
            "xen-good".to_string(),
            Box::new(move || run_good(&good_inputs, &run, "xen-qemu-test").map(|_| ())),
        ),
        (
            "xen-events".to_string(),
            Box::new(move || run_good(&events_inputs, &events, "xen-qemu-events-test").map(|_| ())),
        ),
        (
            "xen-domU-without-mmio-sram".to_string(),
            Box::new(move || run_no_sram(&inputs, "xen-no-sram")),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let config = imagebuilder::load(&dir.join(QEMU_CONFIG)).expect("qemu config");
        assert_eq!(config.domus.len(), 1);
        imagebuilder::load(&dir.join("zcu102.config")).expect("zcu102 config");
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

    #[test]
    fn modules_are_packed_at_2_mib_boundaries_below_the_limit() {
        let files = vec![
            (ModuleKind::Dom0Kernel, PathBuf::from("k"), 0x1f6_da00),
            (ModuleKind::Dom0Ramdisk, PathBuf::from("r"), 0x40_0001),
            (ModuleKind::DomUKernel(0), PathBuf::from("g"), 0x1_0000),
            (ModuleKind::DomUDtb(0), PathBuf::from("d"), 0x190),
        ];
        let modules = layout(&files, MODULES_START, 0x7f00_0000).expect("fits");
        let addrs: Vec<u64> = modules.iter().map(|m| m.addr).collect();
        assert_eq!(addrs, [0x5000_0000, 0x5200_0000, 0x5260_0000, 0x5280_0000]);
        assert!(layout(&files, MODULES_START, 0x5280_0100).is_err());
        let empty = vec![(ModuleKind::Dom0Kernel, PathBuf::from("k"), 0)];
        assert!(layout(&empty, MODULES_START, 0x7f00_0000).is_err());
    }

    #[test]
    fn chosen_nodes_carry_exact_sizes_and_bootargs() {
        let config = imagebuilder::parse(
            "MEMORY_START=0x40000000\nMEMORY_END=0xc0000000\nDEVICE_TREE=v.dtb\nXEN=xen\n\
             XEN_CMD=\"console=dtuart dom0_mem=512M\"\nDOM0_KERNEL=k\nDOM0_RAMDISK=r\n\
             DOM0_CMD=\"console=hvc0 rdinit=/init\"\nNUM_DOMUS=1\nDOMU_KERNEL[0]=g\n\
             DOMU_PASSTHROUGH_DTB[0]=d.dtb\nDOMU_MEM[0]=256\nDOMU_ENHANCED[0]=0\n\
             DOMU_CMD[0]=\"sramlink.idle=wfe\"\n",
        )
        .expect("config");
        let modules = vec![
            Module {
                kind: ModuleKind::Dom0Kernel,
                path: "k".into(),
                addr: 0x5000_0000,
                size: 0x1f6_da00,
            },
            Module {
                kind: ModuleKind::DomUKernel(0),
                path: "g".into(),
                addr: 0x5300_0000,
                size: 0x138,
            },
            Module {
                kind: ModuleKind::DomUDtb(0),
                path: "d".into(),
                addr: 0x5280_0000,
                size: 0x190,
            },
        ];
        let chosen = chosen_fragment(&config, &modules);
        assert!(chosen.contains("xen,xen-bootargs = \"console=dtuart dom0_mem=512M\";"));
        assert!(
            chosen.contains("xen,dom0-bootargs = \"console=hvc0 rdinit=/init root=/dev/ram0\";")
        );
        assert!(chosen.contains("reg = <0x0 0x50000000 0x0 0x1f6da00>;"));
        assert!(chosen.contains("memory = <0x0 0x40000>;"));
        assert!(chosen.contains("vpl011;"));
        assert!(!chosen.contains("xen,enhanced"));
        let domu = chosen.split("domU0 {").nth(1).expect("domU node");
        assert!(domu.contains("\"multiboot,device-tree\", \"multiboot,module\";\n                reg = <0x0 0x52800000 0x0 0x190>;"));
        assert!(domu.contains("\"multiboot,kernel\", \"multiboot,module\";\n                reg = <0x0 0x53000000 0x0 0x138>;\n                bootargs = \"sramlink.idle=wfe\";\n            };"));
        // Only the domU's kernel module carries DOMU_CMD.
        assert_eq!(
            chosen.matches("bootargs = \"sramlink.idle=wfe\"").count(),
            1
        );
        let mut without = config.clone();
        without.domus[0].cmd = crate::imagebuilder::DEFAULT_DOMU_CMD.to_string();
        assert!(!chosen_fragment(&without, &modules).contains("sramlink.idle"));
        assert_eq!(dts_string("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
    }

    #[test]
    fn qemu_args_load_every_module() {
        let modules = vec![Module {
            kind: ModuleKind::Dom0Kernel,
            path: "/w/Image".into(),
            addr: 0x5000_0000,
            size: 1,
        }];
        let args =
            qemu_args(Path::new("/w/xen"), Path::new("/w/host.dtb"), &modules).expect("args");
        let joined = args.join(" ");
        assert!(joined.starts_with("-machine virt,virtualization=on,gic-version=3 -cpu cortex-a57 -smp 2 -m 2G -kernel /w/xen -dtb /w/host.dtb"));
        assert!(joined.contains("-device loader,file=/w/Image,addr=0x50000000,force-raw=on"));
        let comma = vec![Module {
            path: "/w/a,b".into(),
            ..modules[0].clone()
        }];
        assert!(qemu_args(Path::new("/w/xen"), Path::new("/w/h.dtb"), &comma).is_err());
    }

    #[test]
    fn init_script_runs_the_peer_and_reports_its_exit_code() {
        let script = dom0_init_script(&Dom0Run {
            count: 100_000,
            size: 64,
            busy_poll: true,
            every_mode: true,
            timeout_seconds: 30,
            guest_idle: GuestIdle::Wfe,
            idle_seconds: 0,
        });
        assert!(script.starts_with("#!/bin/busybox sh\n"));
        let last = "/bin/sramlink-peer --json --timeout 30 --stop-guest --busy-poll ping --count 100000 --size 64\nrun_rc=$?\n[ \"$rc\" -eq 0 ] && rc=$run_rc\n";
        assert!(script.contains(last), "{script}");
        // Every mode runs before the last ping, which alone stops the guest.
        let at = |needle: &str| script.find(needle).unwrap_or(usize::MAX);
        assert!(at(" echo --window 16 ") < at(last));
        assert!(at(" stream --direction both ") < at(last));
        assert_eq!(
            script.matches("--stop-guest").count(),
            2,
            "the echo line and the command"
        );
        assert!(script.contains("rc=0\n"));
        assert!(script.contains("echo \"SRAMLINK-DOM0: done rc=$rc"));
        assert!(script.contains("poweroff -f"));
    }

    #[test]
    fn console_lines_are_parsed() {
        let banner = "(XEN) Xen version 4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1) (pkg-xen-devel@lists.alioth.debian.org) (gcc) debug=n";
        assert_eq!(
            xen_version(banner).as_deref(),
            Some("4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1)")
        );
        assert_eq!(
            guest_region("(XEN) DOM1: sramlink: region 0x7f000000+0x1000000 (device)"),
            Some((0x7f00_0000, 0x100_0000, "device".to_string()))
        );
        assert_eq!(dom0_rc("SRAMLINK-DOM0: done rc=3 uptime=9.1s"), Some(3));
        assert_eq!(dom0_rc("SRAMLINK-DOM0: done rc="), None);
        assert_eq!(
            hex_field(Some(&json!(2_130_706_432u64))),
            json!("0x7f000000")
        );
        assert_eq!(hex_field(Some(&json!("0x10"))), json!("0x10"));
        assert_eq!(hex_field(None), Value::Null);
    }
}
