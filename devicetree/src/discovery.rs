//! Discovery: one walk over the tree that finds RAM, reserved memory, the console UART, the
//! PSCI conduit and the `mmio-sram` region nodes, and selects the region.
//!
//! The `fdt` crate walks the structure block, once [`crate::blob`] has checked that it can do
//! so without panicking; cells are interpreted by [`crate::cells`], which tracks the parent's
//! `#address-cells`/`#size-cells` while recursing and translates through every ancestor's
//! `ranges`.
//!
//! What is found:
//! - RAM: every enabled node with `device_type = "memory"`, all `reg` entries.
//! - Reserved memory: the `reg` of every enabled child of `/reserved-memory` (never used as RAM).
//! - Console: the node named by `/chosen/stdout-path` (path or alias, options after `:` ignored)
//!   if it is an `arm,pl011`/`arm,sbsa-uart`, else the first enabled such node.
//! - PSCI: the `method` (`hvc`/`smc`) of the node compatible with `arm,psci*`.
//! - Shared region: the enabled node(s) with `compatible = "mmio-sram"` anywhere in the tree;
//!   with several, `/chosen/sramlink,region = "/path/to/node"` picks one. The boolean property
//!   `sramlink,cacheable` on the node asks for a Normal write-back mapping. Disabled ones (a
//!   node is disabled by its own or an ancestor's `status`) are kept apart, to be named in
//!   messages.
//! - `/chosen/bootargs`, raw: what the options mean is the reader's business.
//!
//! [`DeviceTree::read`] returns all of it and every problem met; [`discover`] applies the
//! guest's rule on top (a tree without usable RAM, or with a broken RAM or reserved-memory
//! `reg`, is unusable, but still names its console and PSCI conduit).

// Errors carry the offending node's path in a fixed-capacity string (no allocator), so they
// are larger than clippy likes; they are built at most once per boot, never on a hot path.
#![allow(clippy::result_large_err)]

use fdt::{Fdt, node::FdtNode};
use heapless::Vec;

use crate::blob::check_dtb;
use crate::cells::{Bus, Cells, decode_reg, decode_single_reg, translate};
use crate::error::{DtError, NodePath, RegProblem, UnusableTree, parent_of, truncated_path};
use crate::interrupts::{
    Hypervisor, InterruptController, TIMER_COMPATIBLES, Timer, gic_frames, gic_version, timer,
    upcall_intid,
};
use crate::node::NodeInfo;
use crate::platform::{NamedRange, PsciConduit, RegionNode, Uart, UartKind, usable_memory};
use crate::range::PhysRange;

/// Most RAM banks kept (further banks are an error, not silently dropped).
pub const MAX_MEMORY_BANKS: usize = 8;
/// Most `/reserved-memory` ranges kept.
pub const MAX_RESERVED_RANGES: usize = 16;
/// Most usable RAM ranges (RAM minus reserved memory).
pub const MAX_USABLE_RANGES: usize = MAX_MEMORY_BANKS + MAX_RESERVED_RANGES;
/// Most enabled `mmio-sram` candidates remembered (more are still counted); as many disabled
/// ones are remembered apart.
pub const MAX_REGION_CANDIDATES: usize = 4;
/// Most UART candidates remembered.
pub const MAX_UARTS: usize = 4;
/// Deepest node nesting walked.
pub const MAX_DEPTH: usize = 16;

/// The `compatible` string that marks the shared region.
pub const MMIO_SRAM: &str = "mmio-sram";

/// One `mmio-sram` node as found, before any choice.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RegionCandidate {
    /// Where it is in the tree.
    pub path: NodePath,
    /// Its single `reg` entry translated to a CPU physical address, or what is wrong with it.
    pub reg: Result<PhysRange, RegProblem>,
    /// `sramlink,cacheable` is present.
    pub cacheable: bool,
}

impl RegionCandidate {
    /// The candidate as a region node, or its `reg` problem as an error naming it.
    pub fn node(&self) -> Result<RegionNode, DtError> {
        let range = self.reg.map_err(|problem| DtError::Reg {
            path: self.path.clone(),
            problem,
        })?;
        Ok(RegionNode {
            path: self.path.clone(),
            range,
            cacheable: self.cacheable,
        })
    }
}

/// Everything one walk over a device tree finds, and every problem it met.
#[derive(Clone, PartialEq, Debug)]
pub struct DeviceTree<'a> {
    /// RAM banks, in tree order.
    pub memory: Vec<PhysRange, MAX_MEMORY_BANKS>,
    /// `/reserved-memory` entries, in tree order.
    pub reserved: Vec<NamedRange, MAX_RESERVED_RANGES>,
    /// The console UART, if the tree describes one.
    pub console: Option<Uart>,
    /// The PSCI conduit, if the tree has a PSCI node with a known `method`.
    pub psci: Option<PsciConduit>,
    /// Enabled `mmio-sram` nodes, in tree order (the first [`MAX_REGION_CANDIDATES`]).
    pub regions: Vec<RegionCandidate, MAX_REGION_CANDIDATES>,
    /// How many enabled `mmio-sram` nodes there are.
    pub region_count: usize,
    /// Disabled `mmio-sram` nodes, in tree order (the first [`MAX_REGION_CANDIDATES`]).
    pub disabled_regions: Vec<RegionCandidate, MAX_REGION_CANDIDATES>,
    /// How many disabled `mmio-sram` nodes there are.
    pub disabled_region_count: usize,
    /// `/chosen/sramlink,region`.
    pub chosen_region: Option<&'a str>,
    /// `/chosen/bootargs`, raw.
    pub bootargs: Option<&'a [u8]>,
    /// The first problem that makes the tree unusable to boot with, if any: a RAM or
    /// reserved-memory `reg` that cannot be decoded, too many banks, too deep.
    pub problem: Option<DtError>,
    /// The first such problem that is not about a RAM node (what a reader that does not use
    /// the tree's RAM must still care about).
    pub problem_outside_memory: Option<DtError>,
    /// The first enabled GIC node, decoded (see [`crate::interrupts`]).
    pub interrupt_controller: Option<Result<InterruptController, DtError>>,
    /// The first enabled `xen,xen` node, decoded.
    pub hypervisor: Option<Result<Hypervisor, DtError>>,
    /// The first enabled generic-timer node, decoded.
    pub timer: Option<Result<Timer, DtError>>,
}

impl<'a> DeviceTree<'a> {
    /// Walks a DTB: any blob, checked first with [`check_dtb`]. Only a blob that cannot be
    /// walked at all is an error here; everything else is in the result.
    pub fn read(dtb: &'a [u8]) -> Result<Self, DtError> {
        let dtb = check_dtb(dtb)?;
        Self::read_checked(dtb)
    }

    /// Walks a blob [`check_dtb`] (or [`crate::check_dtb_at`]) accepted.
    pub fn read_checked(dtb: &'a [u8]) -> Result<Self, DtError> {
        let fdt = Fdt::new(dtb).map_err(DtError::Malformed)?;
        let root = fdt
            .find_node("/")
            .ok_or(DtError::Malformed(fdt::FdtError::BadPtr))?;
        let mut discovery = Discovery {
            memory: Vec::new(),
            reserved: Vec::new(),
            uarts: Vec::new(),
            psci: None,
            regions: Vec::new(),
            region_count: 0,
            disabled_regions: Vec::new(),
            disabled_region_count: 0,
            stdout_path: None,
            aliases: None,
            chosen_region: None,
            bootargs: None,
            problem: None,
            problem_outside_memory: None,
            interrupt_controller: None,
            hypervisor: None,
            timer: None,
        };
        // The root's own reg (none) would use the defaults; its children use its cells.
        discovery.visit(root, "/", Cells::DEFAULT, None, 0, true);
        Ok(DeviceTree {
            console: discovery.console(),
            memory: discovery.memory,
            reserved: discovery.reserved,
            psci: discovery.psci,
            regions: discovery.regions,
            region_count: discovery.region_count,
            disabled_regions: discovery.disabled_regions,
            disabled_region_count: discovery.disabled_region_count,
            chosen_region: discovery.chosen_region,
            bootargs: discovery.bootargs,
            problem: discovery.problem,
            problem_outside_memory: discovery.problem_outside_memory,
            interrupt_controller: discovery.interrupt_controller,
            hypervisor: discovery.hypervisor,
            timer: discovery.timer,
        })
    }

    /// The region: the only enabled `mmio-sram` node, or the one `/chosen/sramlink,region`
    /// names; its `reg` must be a single entry inside every ancestor's `ranges`.
    pub fn region(&self) -> Result<RegionNode, DtError> {
        let chosen = match (self.regions.as_slice(), self.chosen_region) {
            ([], _) => return Err(DtError::NoRegion),
            (_, Some(wanted)) => self
                .regions
                .iter()
                .find(|candidate| candidate.path == wanted)
                .ok_or_else(|| DtError::ChosenRegionNotFound {
                    path: truncated_path(wanted),
                })?,
            // Capacity is at least 2, so one stored candidate means exactly one exists.
            ([only], None) => only,
            ([first, second, ..], None) => {
                return Err(DtError::AmbiguousRegion {
                    count: self.region_count,
                    first: first.path.clone(),
                    second: second.path.clone(),
                });
            }
        };
        chosen.node()
    }

    /// The interrupt controller (GICv2 or GICv3) and its frames.
    pub fn interrupt_controller(&self) -> Result<InterruptController, DtError> {
        self.interrupt_controller
            .clone()
            .unwrap_or(Err(DtError::NoInterruptController))
    }

    /// Xen's `/hypervisor` node, if the tree has one (a dom0less domU has it only with
    /// `xen,enhanced`); its upcall INTID is Xen's default unless its `interrupts` names one.
    pub fn hypervisor(&self) -> Result<Option<Hypervisor>, DtError> {
        self.hypervisor.clone().transpose()
    }

    /// The generic timer's node (`arm,armv8-timer`), if the tree has one.
    pub fn timer(&self) -> Result<Option<Timer>, DtError> {
        self.timer.clone().transpose()
    }

    /// The `/reserved-memory` ranges alone.
    pub fn reserved_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.reserved.iter().map(|entry| entry.range)
    }
}

/// Everything a guest takes from the device tree to boot.
#[derive(Clone, PartialEq, Debug)]
pub struct Platform<'a> {
    /// RAM banks, in tree order.
    pub memory: Vec<PhysRange, MAX_MEMORY_BANKS>,
    /// `/reserved-memory` ranges, in tree order.
    pub reserved: Vec<PhysRange, MAX_RESERVED_RANGES>,
    /// The console UART, if the tree describes one.
    pub console: Option<Uart>,
    /// The PSCI conduit, if the tree has a PSCI node with a known `method`.
    pub psci: Option<PsciConduit>,
    /// The shared-region node, or why there is none to use.
    pub region: Result<RegionNode, DtError>,
    /// `/chosen/bootargs`, raw.
    pub bootargs: Option<&'a [u8]>,
    /// The first enabled GIC, decoded (for the guest's event-channel upcall).
    pub interrupt_controller: Option<Result<InterruptController, DtError>>,
    /// The first enabled `xen,xen` node, decoded.
    pub hypervisor: Option<Result<Hypervisor, DtError>>,
    /// The first enabled generic-timer node, decoded (for the guest's wake-up tick).
    pub timer: Option<Result<Timer, DtError>>,
}

impl Platform<'_> {
    /// RAM the guest may treat as its own: every bank minus every reserved range, in order.
    pub fn usable_memory(&self) -> Vec<PhysRange, MAX_USABLE_RANGES> {
        usable_memory(&self.memory, self.reserved.iter().copied())
    }
}

/// Interprets a DTB for booting: any blob, checked first with [`check_dtb`] (the guest passes
/// the `totalsize` bytes [`crate::dtb_total_size`] accepted).
///
/// A blob that fails the check gives an unreadable error (no console, no conduit). A tree that
/// cannot be used (no RAM, a RAM or reserved-memory `reg` that cannot be decoded, too many
/// banks, too deep) is still walked to the end: the error carries the console and PSCI
/// conduit, so that the guest can say what is wrong and power off.
pub fn discover(dtb: &[u8]) -> Result<Platform<'_>, UnusableTree> {
    let tree = DeviceTree::read(dtb)?;
    let problem = tree
        .problem
        .clone()
        .or_else(|| tree.memory.is_empty().then_some(DtError::NoMemory));
    if let Some(error) = problem {
        return Err(UnusableTree {
            error,
            console: tree.console,
            psci: tree.psci,
        });
    }
    Ok(Platform {
        region: tree.region(),
        reserved: tree.reserved_ranges().collect(),
        memory: tree.memory,
        console: tree.console,
        psci: tree.psci,
        bootargs: tree.bootargs,
        interrupt_controller: tree.interrupt_controller,
        hypervisor: tree.hypervisor,
        timer: tree.timer,
    })
}

struct UartCandidate {
    path: NodePath,
    uart: Uart,
}

/// Accumulates what the walk finds.
struct Discovery<'b, 'a> {
    memory: Vec<PhysRange, MAX_MEMORY_BANKS>,
    reserved: Vec<NamedRange, MAX_RESERVED_RANGES>,
    uarts: Vec<UartCandidate, MAX_UARTS>,
    psci: Option<PsciConduit>,
    regions: Vec<RegionCandidate, MAX_REGION_CANDIDATES>,
    region_count: usize,
    disabled_regions: Vec<RegionCandidate, MAX_REGION_CANDIDATES>,
    disabled_region_count: usize,
    stdout_path: Option<&'a str>,
    /// `/aliases`, found by the walk (not `Fdt::find_node`, whose search stops early at an
    /// `FDT_NOP` between the root's children).
    aliases: Option<FdtNode<'b, 'a>>,
    chosen_region: Option<&'a str>,
    bootargs: Option<&'a [u8]>,
    problem: Option<DtError>,
    problem_outside_memory: Option<DtError>,
    interrupt_controller: Option<Result<InterruptController, DtError>>,
    hypervisor: Option<Result<Hypervisor, DtError>>,
    timer: Option<Result<Timer, DtError>>,
}

fn child_path(parent: &str, name: &str) -> NodePath {
    let mut path = NodePath::new();
    // A path longer than PATH_CAPACITY is truncated; it is only used in messages and compared
    // with `stdout-path`/`sramlink,region`, which are then equally unmatchable.
    if parent != "/" {
        let _ = path.push_str(parent);
    }
    let _ = path.push('/');
    let _ = path.push_str(name);
    path
}

impl<'b, 'a> Discovery<'b, 'a> {
    fn visit(
        &mut self,
        node: FdtNode<'b, 'a>,
        path: &str,
        parent_cells: Cells,
        bus: Option<&Bus<'_, 'a>>,
        depth: usize,
        parent_enabled: bool,
    ) {
        if depth > MAX_DEPTH {
            if parent_enabled {
                self.fail(
                    DtError::TooDeep {
                        path: truncated_path(path),
                    },
                    false,
                );
            }
            return;
        }
        let info = NodeInfo::read(node);
        // A disabled node disables its whole subtree: only its mmio-sram nodes are noted.
        let enabled = parent_enabled && info.status_ok;
        let path_owned = truncated_path(path);
        if info.is_compatible(MMIO_SRAM) {
            let candidate = RegionCandidate {
                path: path_owned.clone(),
                reg: decode_single_reg(info.reg, parent_cells)
                    .and_then(|range| translate(range, bus)),
                cacheable: info.cacheable,
            };
            if enabled {
                self.region_count += 1;
                let _ = self.regions.push(candidate);
            } else {
                self.disabled_region_count += 1;
                let _ = self.disabled_regions.push(candidate);
            }
        }
        if enabled {
            self.visit_enabled(node, path, &path_owned, &info, parent_cells, bus, depth);
        }

        // The root's children need no translation; any other node is a bus for its children.
        let child_bus = Bus {
            ranges: info.ranges,
            cells: info.cells,
            parent_address_cells: parent_cells.address,
            outer: bus,
        };
        let child_bus = (depth > 0).then_some(&child_bus);
        for child in node.children() {
            let path = child_path(path, child.name);
            self.visit(child, &path, info.cells, child_bus, depth + 1, enabled);
        }
    }

    /// What an enabled node can hold besides a region.
    #[allow(clippy::too_many_arguments)]
    fn visit_enabled(
        &mut self,
        node: FdtNode<'b, 'a>,
        path: &str,
        path_owned: &NodePath,
        info: &NodeInfo<'a>,
        parent_cells: Cells,
        bus: Option<&Bus<'_, 'a>>,
        depth: usize,
    ) {
        if path == "/aliases" {
            self.aliases = Some(node);
        }
        if path == "/chosen" {
            for property in node.properties() {
                match property.name {
                    "stdout-path" | "linux,stdout-path" if self.stdout_path.is_none() => {
                        self.stdout_path = property.as_str()
                    }
                    "sramlink,region" => self.chosen_region = property.as_str(),
                    "bootargs" => self.bootargs = Some(property.value),
                    _ => {}
                }
            }
        }
        if info.device_type == Some("memory") && depth == 1 {
            let added = self.add_memory(info.reg, parent_cells, path_owned);
            if let Err(error) = added {
                self.fail(error, true);
            }
        }
        if parent_of(path) == "/reserved-memory" && depth == 2 {
            // A reserved-memory child without reg is a dynamic allocation request: nothing fixed.
            if let Some(reg) = info.reg {
                let added = self.add_reserved(reg, parent_cells, bus, path_owned);
                if let Err(error) = added {
                    self.fail(error, false);
                }
            }
        }
        for kind in [UartKind::Pl011, UartKind::SbsaUart] {
            if info.is_compatible(kind.compatible()) {
                // A UART whose reg cannot be decoded is skipped: it cannot be the console.
                if let Ok(registers) = decode_reg(info.reg.unwrap_or(&[]), parent_cells)
                    .map_err(|_| ())
                    .and_then(|mut entries| {
                        entries.next().ok_or(()).and_then(|e| e.map_err(|_| ()))
                    })
                    .and_then(|registers| translate(registers, bus).map_err(|_| ()))
                {
                    let _ = self.uarts.push(UartCandidate {
                        path: path_owned.clone(),
                        uart: Uart { registers, kind },
                    });
                }
                break;
            }
        }
        if info.is_compatible_prefix("arm,psci") && self.psci.is_none() {
            self.psci = match info.method {
                Some("hvc") => Some(PsciConduit::Hvc),
                Some("smc") => Some(PsciConduit::Smc),
                _ => None,
            };
        }
        if self.interrupt_controller.is_none()
            && let Some(version) = gic_version(|compatible| info.is_compatible(compatible))
        {
            let frames = translated_reg(info.reg, parent_cells, bus, path_owned)
                .and_then(|entries| gic_frames(path_owned, version, &entries));
            self.interrupt_controller = Some(frames);
        }
        if self.hypervisor.is_none() && info.is_compatible("xen,xen") {
            let hypervisor = upcall_intid(path_owned, info.interrupts).and_then(|upcall_intid| {
                let grant_table = match info.reg {
                    None => None,
                    Some(reg) => translated_reg(Some(reg), parent_cells, bus, path_owned)?
                        .first()
                        .copied(),
                };
                Ok(Hypervisor {
                    path: path_owned.clone(),
                    upcall_intid,
                    grant_table,
                })
            });
            self.hypervisor = Some(hypervisor);
        }
        if self.timer.is_none()
            && TIMER_COMPATIBLES
                .iter()
                .any(|compatible| info.is_compatible(compatible))
        {
            self.timer = Some(timer(path_owned, info.interrupts));
        }
    }

    /// Keeps the first problem that makes the tree unusable (and the first not about RAM); the
    /// walk goes on regardless, so that the console and PSCI conduit are still found to report
    /// it with.
    fn fail(&mut self, error: DtError, about_memory: bool) {
        if !about_memory && self.problem_outside_memory.is_none() {
            self.problem_outside_memory = Some(error.clone());
        }
        if self.problem.is_none() {
            self.problem = Some(error);
        }
    }

    /// Adds the banks of the memory node at `path`.
    fn add_memory(
        &mut self,
        reg: Option<&[u8]>,
        parent_cells: Cells,
        path: &NodePath,
    ) -> Result<(), DtError> {
        let reg_error = |problem| DtError::Reg {
            path: path.clone(),
            problem,
        };
        let entries = decode_reg(reg.ok_or(reg_error(RegProblem::Missing))?, parent_cells)
            .map_err(reg_error)?;
        for entry in entries {
            let bank = entry.map_err(reg_error)?;
            if !bank.is_empty() {
                self.memory.push(bank).map_err(|_| DtError::TooMany {
                    what: "RAM banks",
                    limit: MAX_MEMORY_BANKS,
                })?;
            }
        }
        Ok(())
    }

    /// Adds the ranges of the `/reserved-memory` child at `path`.
    fn add_reserved(
        &mut self,
        reg: &[u8],
        parent_cells: Cells,
        bus: Option<&Bus<'_, 'a>>,
        path: &NodePath,
    ) -> Result<(), DtError> {
        let reg_error = |problem| DtError::Reg {
            path: path.clone(),
            problem,
        };
        for entry in decode_reg(reg, parent_cells).map_err(reg_error)? {
            let range = entry
                .and_then(|range| translate(range, bus))
                .map_err(reg_error)?;
            let entry = NamedRange {
                path: path.clone(),
                range,
            };
            self.reserved.push(entry).map_err(|_| DtError::TooMany {
                what: "reserved-memory ranges",
                limit: MAX_RESERVED_RANGES,
            })?;
        }
        Ok(())
    }

    fn console(&self) -> Option<Uart> {
        let by_stdout = self.stdout_path.and_then(|stdout| {
            let target = stdout.split(':').next().unwrap_or(stdout);
            let target = if target.starts_with('/') {
                target
            } else {
                self.aliases?.property(target)?.as_str()?
            };
            self.uarts
                .iter()
                .find(|candidate| candidate.path == target)
                .or_else(|| {
                    // `stdout-path` may leave out unit addresses, as `find_node` allows.
                    self.uarts
                        .iter()
                        .find(|candidate| path_matches_loosely(&candidate.path, target))
                })
        });
        by_stdout
            .or_else(|| self.uarts.first())
            .map(|candidate| candidate.uart)
    }
}

/// Most `reg` entries kept of a node that has several frames (a GIC).
const MAX_FRAMES: usize = 8;

/// Every `reg` entry of the node at `path` (at most [`MAX_FRAMES`]), translated to CPU
/// physical addresses; a missing `reg` is an error.
fn translated_reg(
    reg: Option<&[u8]>,
    parent_cells: Cells,
    bus: Option<&Bus<'_, '_>>,
    path: &NodePath,
) -> Result<Vec<PhysRange, MAX_FRAMES>, DtError> {
    let reg_error = |problem| DtError::Reg {
        path: path.clone(),
        problem,
    };
    let entries =
        decode_reg(reg.ok_or(reg_error(RegProblem::Missing))?, parent_cells).map_err(reg_error)?;
    let mut frames = Vec::new();
    for entry in entries.take(MAX_FRAMES) {
        let range = entry
            .and_then(|range| translate(range, bus))
            .map_err(reg_error)?;
        // `take` keeps this within capacity.
        let _ = frames.push(range);
    }
    Ok(frames)
}

/// `/a@1/b@2` matches `/a/b`: components compared without unit addresses where `target` omits them.
fn path_matches_loosely(path: &str, target: &str) -> bool {
    let mut path_parts = path.split('/');
    let mut target_parts = target.split('/');
    loop {
        match (path_parts.next(), target_parts.next()) {
            (None, None) => return true,
            (Some(have), Some(want)) => {
                let have_base = have.split('@').next().unwrap_or(have);
                if have != want && (want.contains('@') || have_base != want) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::string::ToString;
    use std::vec::Vec;

    use super::*;
    use crate::blob::{FDT_HEADER_SIZE, dtb_total_size};
    use crate::testing::{FdtWriter, fixture, insert_nop, node_offset};

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    /// A domU-like tree as Xen builds it: root cells 2/2, vpl011, PSCI, one RAM bank.
    fn guest_tree(body: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
        let mut writer = FdtWriter::new();
        writer
            .begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2]);
        writer.begin("chosen").end();
        writer
            .begin("memory@40000000")
            .string("device_type", "memory");
        writer.cells("reg", &[0, 0x4000_0000, 0, 0x1000_0000]).end();
        writer
            .begin("psci")
            .strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"]);
        writer.string("method", "hvc").end();
        writer
            .begin("sbsa-uart@22000000")
            .string("compatible", "arm,sbsa-uart");
        writer.cells("reg", &[0, 0x2200_0000, 0, 0x1000]).end();
        body(&mut writer);
        writer.end();
        writer.finish()
    }

    fn passthrough(writer: &mut FdtWriter, size_cells: u32, reg: &[u32]) {
        writer
            .begin("passthrough")
            .string("compatible", "simple-bus")
            .property("ranges", &[]);
        writer
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[size_cells]);
        writer
            .begin("sram@7f000000")
            .string("compatible", "mmio-sram")
            .cells("reg", reg)
            .end();
        writer.end();
    }

    fn header(blob: &[u8]) -> [u8; FDT_HEADER_SIZE] {
        blob[..FDT_HEADER_SIZE].try_into().unwrap()
    }

    #[test]
    fn qemu_virt_fixture_gives_ram_console_psci_and_region() {
        let blob = std::fs::read(fixture("qemu-virt-sram.dtb")).unwrap();
        assert_eq!(dtb_total_size(0x4800_0000, &header(&blob)), Ok(blob.len()));
        let platform = discover(&blob).unwrap();
        assert_eq!(
            platform.memory.as_slice(),
            &[range(0x4000_0000, 0x8000_0000)]
        );
        assert_eq!(
            platform.reserved.as_slice(),
            &[range(0x7f00_0000, 0x8000_0000)]
        );
        assert_eq!(
            platform.usable_memory().as_slice(),
            &[range(0x4000_0000, 0x7f00_0000)]
        );
        assert_eq!(
            platform.console,
            Some(Uart {
                registers: range(0x0900_0000, 0x0900_1000),
                kind: UartKind::Pl011
            })
        );
        assert_eq!(platform.psci, Some(PsciConduit::Hvc));
        let region = platform.region.unwrap();
        assert_eq!(region.path, "/sram@7f000000");
        assert_eq!(region.range, range(0x7f00_0000, 0x8000_0000));
        assert!(!region.cacheable);
        assert_eq!(platform.bootargs, None);
    }

    #[test]
    fn nested_region_uses_its_parents_cells_not_the_roots() {
        // Root says 2/2 (16-byte entries); the parent says 2/1, so a 12-byte reg is right.
        let blob = guest_tree(|writer| passthrough(writer, 1, &[0, 0x7f00_0000, 0x100_0000]));
        let region = discover(&blob).unwrap().region.unwrap();
        assert_eq!(region.path, "/passthrough/sram@7f000000");
        assert_eq!(region.range, range(0x7f00_0000, 0x8000_0000));
    }

    #[test]
    fn seed_snippet_cell_mismatch_is_reported_with_the_numbers() {
        let blob = guest_tree(|writer| passthrough(writer, 1, &[0, 0x7f00_0000, 0, 0x100_0000]));
        let error = discover(&blob).unwrap().region.unwrap_err();
        assert_eq!(
            error.to_string(),
            "/passthrough/sram@7f000000: reg is 16 bytes (4 cells), not a multiple of 3 cells \
             per entry (parent /passthrough has #address-cells = <2>, #size-cells = <1>)"
        );
    }

    #[test]
    fn parent_without_cell_properties_uses_the_defaults_and_says_so() {
        let blob = guest_tree(|writer| {
            writer
                .begin("bus")
                .begin("sram@0")
                .string("compatible", "mmio-sram");
            writer
                .cells("reg", &[0, 0x7f00_0000, 0, 0x100_0000])
                .end()
                .end();
        });
        let message = discover(&blob).unwrap().region.unwrap_err().to_string();
        assert!(
            message.contains("the defaults, as it sets neither"),
            "{message}"
        );
        assert!(
            message.starts_with("/bus/sram@0: reg is 16 bytes (4 cells)"),
            "{message}"
        );
    }

    #[test]
    fn unsupported_cells_and_entry_counts_are_errors() {
        let blob = guest_tree(|writer| {
            writer
                .begin("pci")
                .cells("#address-cells", &[3])
                .cells("#size-cells", &[2]);
            writer.begin("sram@0").string("compatible", "mmio-sram");
            writer.cells("reg", &[0, 0, 0, 0, 0x1000]).end().end();
        });
        let error = discover(&blob).unwrap().region.unwrap_err();
        assert!(matches!(
            error,
            DtError::Reg {
                problem: RegProblem::UnsupportedCells(_),
                ..
            }
        ));

        let blob = guest_tree(|writer| {
            writer
                .begin("sram@7f000000")
                .string("compatible", "mmio-sram");
            writer
                .cells(
                    "reg",
                    &[0, 0x7f00_0000, 0, 0x1000, 0, 0x7f10_0000, 0, 0x1000],
                )
                .end();
        });
        let message = discover(&blob).unwrap().region.unwrap_err().to_string();
        assert_eq!(
            message,
            "/sram@7f000000: reg has 2 (address, size) entries, expected exactly 1"
        );
    }

    #[test]
    fn addresses_are_translated_through_every_ancestor_ranges() {
        let blob = guest_tree(|writer| {
            // /soc: child 0x0 -> CPU 0x7000_0000 (16 MiB window); /soc/bus: 1:1 (empty ranges);
            // /soc/bus/sram@f000000 reg 0x0f00_0000 -> CPU 0x7f00_0000.
            writer
                .begin("soc")
                .cells("#address-cells", &[1])
                .cells("#size-cells", &[1]);
            writer.cells("ranges", &[0x0, 0x0, 0x7000_0000, 0x1000_0000]);
            writer
                .begin("bus")
                .cells("#address-cells", &[1])
                .cells("#size-cells", &[1]);
            writer.property("ranges", &[]);
            writer
                .begin("sram@f000000")
                .string("compatible", "mmio-sram");
            writer.cells("reg", &[0x0f00_0000, 0x100_0000]).end();
            writer.end().end();
        });
        let region = discover(&blob).unwrap().region.unwrap();
        assert_eq!(region.range, range(0x7f00_0000, 0x8000_0000));
    }

    #[test]
    fn addresses_outside_ranges_are_reported() {
        let blob = guest_tree(|writer| {
            writer
                .begin("soc")
                .cells("#address-cells", &[1])
                .cells("#size-cells", &[1]);
            writer.cells("ranges", &[0x0, 0x0, 0x7000_0000, 0x100_0000]);
            writer
                .begin("bus")
                .cells("#address-cells", &[1])
                .cells("#size-cells", &[1]);
            writer
                .begin("sram@f000000")
                .string("compatible", "mmio-sram");
            writer.cells("reg", &[0x0f00_0000, 0x100_0000]).end();
            writer.end().end();
        });
        assert_eq!(
            discover(&blob).unwrap().region.unwrap_err().to_string(),
            "/soc/bus/sram@f000000: address 0xf000000 is outside every entry of the ranges \
             property of /soc"
        );
    }

    #[test]
    fn cacheable_property_is_seen() {
        let blob = guest_tree(|writer| {
            writer
                .begin("sram@7f000000")
                .string("compatible", "mmio-sram");
            writer
                .cells("reg", &[0, 0x7f00_0000, 0, 0x100_0000])
                .property("sramlink,cacheable", &[]);
            writer.end();
        });
        assert!(discover(&blob).unwrap().region.unwrap().cacheable);
    }

    #[test]
    fn missing_region_is_reported_and_the_rest_still_found() {
        let blob = guest_tree(|_| {});
        let platform = discover(&blob).unwrap();
        assert_eq!(platform.region, Err(DtError::NoRegion));
        assert_eq!(platform.console.unwrap().kind, UartKind::SbsaUart);
        assert_eq!(platform.psci, Some(PsciConduit::Hvc));
    }

    fn two_regions(writer: &mut FdtWriter) {
        for (name, base) in [
            ("sram@70000000", 0x7000_0000),
            ("sram@7f000000", 0x7f00_0000),
        ] {
            writer.begin(name).string("compatible", "mmio-sram");
            writer.cells("reg", &[0, base, 0, 0x100_0000]).end();
        }
        writer
            .begin("sram@60000000")
            .string("compatible", "mmio-sram")
            .string("status", "disabled");
        writer.cells("reg", &[0, 0x6000_0000, 0, 0x100_0000]).end();
    }

    #[test]
    fn two_candidates_without_a_choice_are_ambiguous() {
        let error = discover(&guest_tree(two_regions))
            .unwrap()
            .region
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "2 enabled mmio-sram nodes (/sram@70000000, /sram@7f000000) and no \
             /chosen/sramlink,region to choose one"
        );
    }

    #[test]
    fn chosen_property_picks_one_candidate() {
        let mut writer = FdtWriter::new();
        writer
            .begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2]);
        writer
            .begin("chosen")
            .string("sramlink,region", "/sram@7f000000")
            .end();
        writer.begin("memory").string("device_type", "memory");
        writer.cells("reg", &[0, 0x4000_0000, 0, 0x1000_0000]).end();
        two_regions(&mut writer);
        writer.end();
        let region = discover(&writer.finish()).unwrap().region.unwrap();
        assert_eq!(region.range.start(), 0x7f00_0000);

        let mut writer = FdtWriter::new();
        writer
            .begin("")
            .begin("chosen")
            .string("sramlink,region", "/sram@60000000")
            .end();
        writer.begin("memory").string("device_type", "memory");
        writer.cells("reg", &[0, 0x4000_0000, 0x1000_0000]).end();
        two_regions(&mut writer);
        writer.end();
        let error = discover(&writer.finish()).unwrap().region.unwrap_err();
        assert_eq!(
            error.to_string(),
            "/chosen/sramlink,region = \"/sram@60000000\" names no enabled mmio-sram node"
        );
    }

    /// A tree whose `/chosen` holds `bootargs` (when given), and another node holding
    /// `other_bootargs`, which must be ignored.
    fn tree_with_bootargs(bootargs: Option<&str>, other_bootargs: &str) -> Vec<u8> {
        let mut writer = FdtWriter::new();
        writer.begin("");
        writer.begin("chosen");
        if let Some(bootargs) = bootargs {
            writer.string("bootargs", bootargs);
        }
        writer
            .begin("domU1")
            .string("bootargs", other_bootargs)
            .end();
        writer.end();
        writer.begin("memory").string("device_type", "memory");
        writer.cells("reg", &[0, 0x4000_0000, 0x1000_0000]).end();
        writer.end();
        writer.finish()
    }

    #[test]
    fn bootargs_come_from_chosen_only() {
        let bootargs = |bootargs| {
            let blob = tree_with_bootargs(bootargs, "sramlink.idle=bogus");
            discover(&blob).unwrap().bootargs.map(<[u8]>::to_vec)
        };
        assert_eq!(bootargs(None), None);
        assert_eq!(
            bootargs(Some("console=hvc0")).as_deref(),
            Some(&b"console=hvc0\0"[..])
        );
    }

    #[test]
    fn stdout_path_alias_with_options_selects_the_console() {
        let mut writer = FdtWriter::new();
        writer
            .begin("")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1]);
        writer
            .begin("aliases")
            .string("serial1", "/soc/serial@2000")
            .end();
        writer
            .begin("chosen")
            .string("stdout-path", "serial1:115200n8")
            .end();
        writer
            .begin("memory@80000000")
            .string("device_type", "memory");
        writer
            .cells("reg", &[0x8000_0000, 0x1000_0000, 0xa000_0000, 0x1000_0000])
            .end();
        writer
            .begin("soc")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1]);
        for base in [0x1000u32, 0x2000] {
            writer.begin(&std::format!("serial@{base:x}"));
            writer
                .strings("compatible", &["arm,pl011", "arm,primecell"])
                .cells("reg", &[base, 0x1000]);
            writer.end();
        }
        writer.end().end();
        let blob = writer.finish();
        let platform = discover(&blob).unwrap();
        assert_eq!(platform.console.unwrap().registers, range(0x2000, 0x3000));
        assert_eq!(platform.memory.len(), 2);
        assert_eq!(platform.psci, None);
    }

    #[test]
    fn bad_blobs_are_rejected_precisely() {
        let mut blob = guest_tree(|_| {});
        blob[0] = 0xde;
        assert_eq!(
            dtb_total_size(0x4800_0000, &header(&blob))
                .unwrap_err()
                .to_string(),
            "no device tree at 0x48000000: magic 0xde0dfeed, expected 0xd00dfeed"
        );
        let mut blob = guest_tree(|_| {});
        blob[4..8].copy_from_slice(&0x1000_0000u32.to_be_bytes());
        assert!(matches!(
            dtb_total_size(0, &header(&blob)),
            Err(DtError::BadSize { .. })
        ));
        let mut writer = FdtWriter::new();
        writer.begin("").begin("chosen").end().end();
        assert_eq!(
            discover(&writer.finish()),
            Err(UnusableTree::from(DtError::NoMemory))
        );
        // Shorter than its header's totalsize: nothing of it is walked.
        let blob = guest_tree(|_| {});
        let unusable = discover(&blob[..blob.len() - 4]).unwrap_err();
        assert_eq!(
            unusable.to_string(),
            std::format!(
                "dtb: blob is {:#x} bytes, shorter than its totalsize ({:#x} bytes)",
                blob.len() - 4,
                blob.len()
            )
        );
        assert!(unusable.error.is_unreadable());
        assert_eq!((unusable.console, unusable.psci), (None, None));
        assert!(DtError::NoDeviceTree.is_unreadable());
        assert!(DtError::Misaligned { address: 4 }.is_unreadable());
    }

    #[test]
    fn unusable_tree_still_names_the_console_and_psci_conduit() {
        // The RAM node comes first and is broken, and a subtree nests too deep: the walk must
        // still reach the UART, the PSCI node and /chosen after both.
        let mut writer = FdtWriter::new();
        writer
            .begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2]);
        writer
            .begin("memory@40000000")
            .string("device_type", "memory");
        writer.cells("reg", &[0, 0x4000_0000, 0x1000_0000]).end();
        for level in 0..=MAX_DEPTH {
            writer.begin(&std::format!("deep{level}"));
        }
        for _ in 0..=MAX_DEPTH {
            writer.end();
        }
        for base in [0x0900_0000u32, 0x0a00_0000] {
            writer.begin(&std::format!("pl011@{base:x}"));
            writer
                .string("compatible", "arm,pl011")
                .cells("reg", &[0, base, 0, 0x1000]);
            writer.end();
        }
        writer
            .begin("psci")
            .string("compatible", "arm,psci-1.0")
            .string("method", "smc")
            .end();
        writer
            .begin("chosen")
            .string("stdout-path", "/pl011@a000000")
            .end();
        writer.end();
        let unusable = discover(&writer.finish()).unwrap_err();
        assert_eq!(
            unusable.to_string(),
            "/memory@40000000: reg is 12 bytes (3 cells), not a multiple of 4 cells per entry \
             (parent / has #address-cells = <2>, #size-cells = <2>)"
        );
        assert_eq!(
            unusable.console,
            Some(Uart {
                registers: range(0x0a00_0000, 0x0a00_1000),
                kind: UartKind::Pl011
            })
        );
        assert_eq!(unusable.psci, Some(PsciConduit::Smc));
        // Readable: its console and conduit (or their absence) are to be believed.
        assert!(!unusable.error.is_unreadable());
        assert!(!DtError::NoMemory.is_unreadable());

        // Without the broken RAM node, the depth is the (first) problem.
        let mut writer = FdtWriter::new();
        writer.begin("");
        for level in 0..=MAX_DEPTH {
            writer.begin(&std::format!("deep{level}"));
        }
        for _ in 0..=MAX_DEPTH {
            writer.end();
        }
        writer.begin("psci").string("compatible", "arm,psci-0.2");
        writer.string("method", "hvc").end().end();
        let unusable = discover(&writer.finish()).unwrap_err();
        assert!(
            matches!(unusable.error, DtError::TooDeep { .. }),
            "{unusable:?}"
        );
        assert_eq!(unusable.psci, Some(PsciConduit::Hvc));
    }

    #[test]
    fn malformed_layouts_are_unreadable_errors_from_the_header_on() {
        let fixture = std::fs::read(fixture("qemu-virt-sram.dtb")).unwrap();
        // off_dt_strings 0x1c2c moved so that its 0x1db bytes end past totalsize 0x1e07.
        let mut blob = fixture.clone();
        blob[12..16].copy_from_slice(&0x1c40u32.to_be_bytes());
        let expected = "dtb: off_dt_strings 0x1c40 + size 0x1db exceeds totalsize 0x1e07";
        // The kernel's first check, on the header alone...
        let error = dtb_total_size(0x4800_0000, &header(&blob)).unwrap_err();
        assert_eq!(error.to_string(), expected);
        assert!(error.is_unreadable());
        // ...and the same from `discover`, which checks any blob it is given.
        let unusable = discover(&blob).unwrap_err();
        assert_eq!(unusable.to_string(), expected);
        assert_eq!((unusable.console, unusable.psci), (None, None));

        // A structure block the parser would panic on: a property length past its end.
        let mut blob = fixture;
        let first_property = 0x38 + 8;
        blob[first_property + 4..first_property + 8].copy_from_slice(&0x10_0000u32.to_be_bytes());
        let unusable = discover(&blob).unwrap_err();
        assert_eq!(
            unusable.to_string(),
            "dtb: structure block offset 0x4c (in /): property value of 0x100000 bytes runs past \
             the block's end"
        );
        assert!(unusable.error.is_unreadable());
        assert!(discover(&[]).unwrap_err().error.is_unreadable());
    }

    #[test]
    fn nop_nodes_among_the_roots_children_hide_nothing() {
        // What libfdt's fdt_nop_node leaves of removed top-level nodes, before /aliases.
        let mut writer = FdtWriter::new();
        writer
            .begin("")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1]);
        writer.begin("memory").string("device_type", "memory");
        writer.cells("reg", &[0x4000_0000, 0x1000_0000]).end();
        writer
            .begin("aliases")
            .string("serial1", "/serial@2000")
            .end();
        writer
            .begin("chosen")
            .string("stdout-path", "serial1")
            .end();
        for base in [0x1000u32, 0x2000] {
            writer.begin(&std::format!("serial@{base:x}"));
            writer
                .string("compatible", "arm,pl011")
                .cells("reg", &[base, 0x1000]);
            writer.end();
        }
        writer.end();
        let mut blob = writer.finish();
        // Two NOPs before /memory, one after it (before /aliases).
        let aliases = node_offset(&blob, "aliases");
        insert_nop(&mut blob, aliases);
        for _ in 0..2 {
            let memory = node_offset(&blob, "memory");
            insert_nop(&mut blob, memory);
        }
        // `Fdt::find_node` stops at the first NOP among the root's children...
        assert!(
            fdt::Fdt::new(&blob)
                .unwrap()
                .find_node("/aliases")
                .is_none()
        );
        // ...the walk does not: the alias names the console.
        let platform = discover(&blob).unwrap();
        assert_eq!(
            platform.memory.as_slice(),
            &[range(0x4000_0000, 0x5000_0000)]
        );
        assert_eq!(platform.console.unwrap().registers, range(0x2000, 0x3000));
    }

    #[test]
    fn loose_path_matching_ignores_only_omitted_unit_addresses() {
        assert!(path_matches_loosely("/soc/serial@2000", "/soc/serial"));
        assert!(path_matches_loosely(
            "/soc@0/serial@2000",
            "/soc/serial@2000"
        ));
        assert!(!path_matches_loosely(
            "/soc/serial@2000",
            "/soc/serial@1000"
        ));
        assert!(!path_matches_loosely("/soc/serial@2000", "/soc"));
    }
}
