//! What can be wrong with a device tree, precisely: the blob, a `reg`/`ranges`, the region.

// Errors carry the offending node's path in a fixed-capacity string (no allocator), so they
// are larger than clippy likes; they are built at most once per boot, never on a hot path.
#![allow(clippy::result_large_err)]

use core::fmt;

use heapless::String;

use crate::blob::{FDT_HEADER_SIZE, FDT_MAGIC, LayoutError, MAX_DTB_SIZE};
use crate::cells::Cells;
use crate::discovery::MAX_DEPTH;
use crate::interrupts::InterruptProblem;
use crate::platform::{PsciConduit, Uart};

/// Capacity of a node path.
pub const PATH_CAPACITY: usize = 128;
/// A node's full path, e.g. `/passthrough/sram@7f000000`.
pub type NodePath = String<PATH_CAPACITY>;

/// What is wrong with a `reg` property.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RegProblem {
    /// No `reg` property.
    Missing,
    /// The parent's cell counts cannot describe a 64-bit address and size.
    UnsupportedCells(Cells),
    /// The length is not a whole number of (address, size) entries.
    LengthMismatch {
        /// Length of `reg` in bytes.
        bytes: usize,
        /// The parent's cells.
        cells: Cells,
    },
    /// More or fewer than one entry where exactly one is required.
    EntryCount {
        /// Entries found.
        entries: usize,
    },
    /// An ancestor bus' `ranges` does not cover the address.
    OutsideRanges {
        /// The address in the bus' child address space.
        address: u64,
        /// Which ancestor: 1 = the parent.
        levels_up: usize,
    },
    /// An ancestor bus' `ranges` cannot be decoded with its cell counts.
    BadRanges {
        /// Length of `ranges` in bytes.
        bytes: usize,
        /// Which ancestor: 1 = the parent.
        levels_up: usize,
    },
    /// `address + size` does not fit in 64 bits.
    Overflow {
        /// Address cell value.
        address: u64,
        /// Size cell value.
        size: u64,
    },
}

/// A device-tree problem: the blob, a node, the region or the interrupt nodes.
///
/// The first two variants are the arm64 boot protocol's checks of the guest's `x0`, made
/// before there is a blob to read; the peer, which reads a file, never meets them.
#[derive(Clone, PartialEq, Debug)]
pub enum DtError {
    /// `x0` was zero at entry.
    NoDeviceTree,
    /// `x0` is not 8-byte aligned, as the arm64 boot protocol requires of the DTB address.
    Misaligned {
        /// The address in `x0`.
        address: u64,
    },
    /// The header's magic is wrong: the address (the guest's `x0`) holds no DTB.
    BadMagic {
        /// Where the DTB was expected.
        address: u64,
        /// The big-endian word found there.
        found: u32,
    },
    /// The header's `totalsize` is implausible.
    BadSize {
        /// Where the DTB is.
        address: u64,
        /// `totalsize`.
        total_size: usize,
    },
    /// The header's fields, or the blocks they describe, cannot be trusted (see [`crate::blob`]).
    Layout(LayoutError),
    /// The `fdt` crate rejected the blob (not expected once [`crate::check_dtb`] passed).
    Malformed(fdt::FdtError),
    /// No enabled `device_type = "memory"` node with a usable `reg`.
    NoMemory,
    /// A fixed-capacity table overflowed.
    TooMany {
        /// What overflowed.
        what: &'static str,
        /// Its capacity.
        limit: usize,
    },
    /// Nodes nested deeper than [`MAX_DEPTH`].
    TooDeep {
        /// The node at the limit.
        path: NodePath,
    },
    /// A `reg` property the guest cannot interpret.
    Reg {
        /// The node.
        path: NodePath,
        /// The problem.
        problem: RegProblem,
    },
    /// No enabled `mmio-sram` node.
    NoRegion,
    /// Several enabled `mmio-sram` nodes and nothing to choose between them.
    AmbiguousRegion {
        /// How many candidates.
        count: usize,
        /// The first candidate.
        first: NodePath,
        /// The second candidate.
        second: NodePath,
    },
    /// `/chosen/sramlink,region` names no enabled `mmio-sram` node.
    ChosenRegionNotFound {
        /// The value of `sramlink,region`.
        path: NodePath,
    },
    /// No enabled GIC node (`arm,gic-v3`, `arm,gic-400`, `arm,cortex-a15-gic`).
    NoInterruptController,
    /// A GIC or `/hypervisor` node the guest cannot take its interrupts from.
    Interrupts {
        /// The node.
        path: NodePath,
        /// The problem.
        problem: InterruptProblem,
    },
}

impl DtError {
    /// The blob could not be read or walked at all (no tree at `x0`, bad header, a block layout
    /// or structure block [`crate::blob`] rejects): nothing in it, not even a console or a PSCI
    /// conduit, is known.
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            DtError::NoDeviceTree
                | DtError::Misaligned { .. }
                | DtError::BadMagic { .. }
                | DtError::BadSize { .. }
                | DtError::Layout(_)
                | DtError::Malformed(_)
        )
    }
}

/// The parent path of `path` (`/` for top-level nodes).
pub(crate) fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(index) => &path[..index],
    }
}

/// The ancestor `levels_up` levels above `path`.
fn ancestor_of(mut path: &str, levels_up: usize) -> &str {
    for _ in 0..levels_up {
        path = parent_of(path);
    }
    path
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::NoDeviceTree => write!(f, "no device tree: x0 was 0 at entry"),
            DtError::Misaligned { address } => {
                write!(
                    f,
                    "device tree address {address:#x} (x0 at entry) is not 8-byte aligned"
                )
            }
            DtError::BadMagic { address, found } => write!(
                f,
                "no device tree at {address:#x}: magic {found:#010x}, expected {FDT_MAGIC:#010x}"
            ),
            DtError::BadSize {
                address,
                total_size,
            } => write!(
                f,
                "device tree at {address:#x} has totalsize {total_size:#x} \
                 (must be {FDT_HEADER_SIZE:#x}..={MAX_DTB_SIZE:#x})"
            ),
            DtError::Layout(error) => error.fmt(f),
            DtError::Malformed(error) => write!(f, "malformed device tree: {error}"),
            DtError::NoMemory => {
                write!(
                    f,
                    "device tree has no enabled node with device_type = \"memory\""
                )
            }
            DtError::TooMany { what, limit } => {
                write!(f, "device tree has more than {limit} {what}")
            }
            DtError::TooDeep { path } => {
                write!(
                    f,
                    "device tree nests deeper than {MAX_DEPTH} levels at {path}"
                )
            }
            DtError::Reg { path, problem } => {
                let parent = parent_of(path);
                match problem {
                    RegProblem::Missing => write!(f, "{path} has no reg property"),
                    RegProblem::UnsupportedCells(cells) => write!(
                        f,
                        "{path}: parent {parent} has #address-cells = <{}>, #size-cells = <{}>; \
                         need 1 or 2 address cells and 1 or 2 size cells",
                        cells.address, cells.size
                    ),
                    RegProblem::LengthMismatch { bytes, cells } => {
                        let per_entry = cells.address + cells.size;
                        write!(
                            f,
                            "{path}: reg is {bytes} bytes ({} cells{}), not a multiple of \
                             {per_entry} cells per entry (parent {parent} has \
                             #address-cells = <{}>, #size-cells = <{}>{})",
                            bytes / 4,
                            if bytes % 4 == 0 {
                                ""
                            } else {
                                " and a partial cell"
                            },
                            cells.address,
                            cells.size,
                            if cells.defaulted {
                                ", the defaults, as it sets neither"
                            } else {
                                ""
                            }
                        )
                    }
                    RegProblem::EntryCount { entries } => write!(
                        f,
                        "{path}: reg has {entries} (address, size) entries, expected exactly 1"
                    ),
                    RegProblem::OutsideRanges { address, levels_up } => write!(
                        f,
                        "{path}: address {address:#x} is outside every entry of the ranges \
                         property of {}",
                        ancestor_of(path, *levels_up)
                    ),
                    RegProblem::BadRanges { bytes, levels_up } => write!(
                        f,
                        "{path}: the ranges property of {} ({bytes} bytes) does not fit its \
                         #address-cells/#size-cells and its parent's #address-cells",
                        ancestor_of(path, *levels_up)
                    ),
                    RegProblem::Overflow { address, size } => write!(
                        f,
                        "{path}: reg address {address:#x} + size {size:#x} overflows 64 bits"
                    ),
                }
            }
            DtError::NoRegion => write!(
                f,
                "no enabled node with compatible = \"mmio-sram\" in the device tree"
            ),
            DtError::AmbiguousRegion {
                count,
                first,
                second,
            } => write!(
                f,
                "{count} enabled mmio-sram nodes ({first}, {second}{}) and no \
                 /chosen/sramlink,region to choose one",
                if *count > 2 { ", ..." } else { "" }
            ),
            DtError::ChosenRegionNotFound { path } => write!(
                f,
                "/chosen/sramlink,region = \"{path}\" names no enabled mmio-sram node"
            ),
            DtError::NoInterruptController => write!(
                f,
                "no enabled interrupt controller compatible with arm,gic-v3, arm,gic-400 or \
                 arm,cortex-a15-gic in the device tree"
            ),
            DtError::Interrupts { path, problem } => match problem {
                InterruptProblem::TooFewFrames { entries, needed } => write!(
                    f,
                    "{path}: reg has {entries} (address, size) entries, expected at least \
                     {needed} (distributor, then redistributors or CPU interface)"
                ),
                InterruptProblem::BadSpecifier { bytes } => write!(
                    f,
                    "{path}: interrupts is {bytes} bytes, expected one 3-cell GIC specifier \
                     (12 bytes)"
                ),
                InterruptProblem::NotAPpi { kind, number } => write!(
                    f,
                    "{path}: interrupts = <{kind} {number} ...> is not a PPI (type 1, number \
                     0..15)"
                ),
            },
        }
    }
}

pub(crate) fn truncated_path(path: &str) -> NodePath {
    let mut owned = NodePath::new();
    for character in path.chars() {
        if owned.push(character).is_err() {
            break;
        }
    }
    owned
}

/// A device tree the guest cannot boot with, and what it still says about reporting that.
#[derive(Clone, PartialEq, Debug)]
pub struct UnusableTree {
    /// The (first) problem.
    pub error: DtError,
    /// The console UART, found even so (`None` when the blob could not be walked at all).
    pub console: Option<Uart>,
    /// The PSCI conduit, found even so (`None` when the blob could not be walked at all).
    pub psci: Option<PsciConduit>,
}

impl From<DtError> for UnusableTree {
    /// A problem that leaves nothing of the tree readable.
    fn from(error: DtError) -> Self {
        UnusableTree {
            error,
            console: None,
            psci: None,
        }
    }
}

impl fmt::Display for UnusableTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}
