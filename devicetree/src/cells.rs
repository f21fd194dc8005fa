//! Cell decoding: `#address-cells`/`#size-cells`, `reg` entries, translation through `ranges`.
//!
//! Every `reg` is decoded with the `#address-cells`/`#size-cells` of the node's *parent*
//! (defaults `<2>`/`<1>` when the parent has none, as the Devicetree Specification says), and
//! its length is checked against them: the Xen wiki's domU snippet declares
//! `#size-cells = <0x1>` with a four-cell `reg`, which is reported, never guessed at.
//!
//! Addresses are translated to CPU physical addresses through every ancestor bus' `ranges`
//! (empty `ranges;`, as Xen's `passthrough` node has, is 1:1). A bus without `ranges` is
//! taken as 1:1 too, leniently: the Xen wiki's `passthrough` example omits it.

use crate::error::RegProblem;
use crate::range::PhysRange;

/// `#address-cells`/`#size-cells` in effect for a node's children.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cells {
    /// `#address-cells`.
    pub address: u32,
    /// `#size-cells`.
    pub size: u32,
    /// Neither property was present: these are the specification's defaults.
    pub defaulted: bool,
}

impl Cells {
    /// The Devicetree Specification's defaults (`<2>`, `<1>`).
    pub const DEFAULT: Cells = Cells {
        address: 2,
        size: 1,
        defaulted: true,
    };
}

pub(crate) fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Reads one big-endian number of `cells` cells (at most 2) from the front of `bytes`.
fn read_cells(bytes: &[u8], cells: u32) -> u64 {
    bytes[..cells as usize * 4]
        .iter()
        .fold(0, |value, byte| (value << 8) | u64::from(*byte))
}

/// Decodes a `reg` property with the parent's `cells` into (address, size) pairs.
pub fn decode_reg(
    reg: &[u8],
    cells: Cells,
) -> Result<impl Iterator<Item = Result<PhysRange, RegProblem>> + '_, RegProblem> {
    if !(1..=2).contains(&cells.address) || !(1..=2).contains(&cells.size) {
        return Err(RegProblem::UnsupportedCells(cells));
    }
    let entry_bytes = (cells.address + cells.size) as usize * 4;
    if reg.is_empty() || reg.len() % entry_bytes != 0 {
        return Err(RegProblem::LengthMismatch {
            bytes: reg.len(),
            cells,
        });
    }
    Ok(reg.chunks_exact(entry_bytes).map(move |entry| {
        let (address_bytes, size_bytes) = entry.split_at(cells.address as usize * 4);
        let address = read_cells(address_bytes, cells.address);
        let size = read_cells(size_bytes, cells.size);
        PhysRange::from_base_size(address, size).ok_or(RegProblem::Overflow { address, size })
    }))
}

/// Decodes a `reg` that must hold exactly one entry.
pub(crate) fn decode_single_reg(reg: Option<&[u8]>, cells: Cells) -> Result<PhysRange, RegProblem> {
    let mut entries = decode_reg(reg.ok_or(RegProblem::Missing)?, cells)?;
    let first = entries
        .next()
        .ok_or(RegProblem::EntryCount { entries: 0 })?;
    let rest = entries.count();
    if rest != 0 {
        return Err(RegProblem::EntryCount { entries: rest + 1 });
    }
    first
}

/// A bus between a node and the root: how its children's addresses map to its own.
pub(crate) struct Bus<'b, 'a> {
    /// Its `ranges`: `None` when absent, empty for 1:1.
    pub(crate) ranges: Option<&'a [u8]>,
    /// Its own `#address-cells`/`#size-cells` (its children's address space).
    pub(crate) cells: Cells,
    /// Its parent's `#address-cells` (the space `ranges` maps into).
    pub(crate) parent_address_cells: u32,
    /// The next bus towards the root (`None` below the root).
    pub(crate) outer: Option<&'b Bus<'b, 'a>>,
}

/// Translates `range` from the child address space of `bus` to a CPU physical address.
pub(crate) fn translate(
    range: PhysRange,
    mut bus: Option<&Bus<'_, '_>>,
) -> Result<PhysRange, RegProblem> {
    let mut address = range.start();
    let mut levels_up = 1;
    while let Some(current) = bus {
        if let Some(ranges) = current.ranges.filter(|ranges| !ranges.is_empty()) {
            let (child, parent, size) = (
                current.cells.address,
                current.parent_address_cells,
                current.cells.size,
            );
            let entry_bytes = (child + parent + size) as usize * 4;
            if ![child, parent, size]
                .iter()
                .all(|cells| (1..=2).contains(cells))
                || ranges.len() % entry_bytes != 0
            {
                return Err(RegProblem::BadRanges {
                    bytes: ranges.len(),
                    levels_up,
                });
            }
            address = ranges
                .chunks_exact(entry_bytes)
                .find_map(|entry| {
                    let child_base = read_cells(entry, child);
                    let parent_base = read_cells(&entry[child as usize * 4..], parent);
                    let length = read_cells(&entry[(child + parent) as usize * 4..], size);
                    let offset = address.checked_sub(child_base)?;
                    (offset.checked_add(range.size())? <= length)
                        .then(|| parent_base.checked_add(offset))
                        .flatten()
                })
                .ok_or(RegProblem::OutsideRanges { address, levels_up })?;
        }
        bus = current.outer;
        levels_up += 1;
    }
    PhysRange::from_base_size(address, range.size()).ok_or(RegProblem::Overflow {
        address,
        size: range.size(),
    })
}
