//! Stage-1 translation tables for the guest's identity map: 4 KiB granule, 39-bit VA, L1–L3.
//!
//! ```text
//!  VA (= PA) bits   38..30      29..21      20..12      11..0
//!                  L1 index    L2 index    L3 index    page offset
//!                  (1 GiB)     (2 MiB)     (4 KiB)
//! ```
//! `TCR_EL1.T0SZ = 25` gives a 39-bit (512 GiB) space whose walk starts at level 1, so one L1
//! table is the root. L1 entries always point to L2 tables; an L2 entry is a 2 MiB block when
//! the range covers it whole and both addresses are 2 MiB aligned, else it points to an L3
//! table of 4 KiB pages. Mapping over an existing block splits it into pages that keep the
//! block's attributes, so later, finer mappings (image sections, the stack guard) can refine
//! earlier coarse ones (all of RAM).
//!
//! Tables come from a caller-provided pool (a `static` in the guest, a `Vec` in host tests).
//! The builder runs with the MMU off and identity addressing, so a table's physical address is
//! its address in the pool.

use core::fmt;

use sramlink_devicetree::PhysRange;

/// Translation granule and page size.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a level-2 block.
pub const BLOCK_SIZE: u64 = 2 * 1024 * 1024;
/// Descriptors per table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Width of the virtual address space.
pub const VA_BITS: u32 = 39;
/// `TCR_EL1.T0SZ` for [`VA_BITS`].
pub const T0SZ: u64 = 64 - VA_BITS as u64;
/// First address the identity map cannot reach.
pub const VA_LIMIT: u64 = 1 << VA_BITS;

/// `MAIR_EL1` attribute index of Device-nGnRE memory.
pub const MAIR_INDEX_DEVICE: u64 = 0;
/// `MAIR_EL1` attribute index of Normal memory, inner and outer write-back, read/write-allocate.
pub const MAIR_INDEX_NORMAL: u64 = 1;
/// `MAIR_EL1` value matching the two indices: Attr0 = 0x04 (Device-nGnRE), Attr1 = 0xff
/// (Normal, Inner/Outer Write-Back Non-transient, Read-Allocate, Write-Allocate).
pub const MAIR_EL1_VALUE: u64 =
    (0xff << (8 * MAIR_INDEX_NORMAL)) | (0x04 << (8 * MAIR_INDEX_DEVICE));

// Descriptor fields (Arm ARM D8.3, VMSAv8-64 translation table format descriptors).
const DESCRIPTOR_VALID: u64 = 1 << 0;
/// At L1/L2: 1 = table, 0 = block. At L3: must be 1 for a page.
const DESCRIPTOR_TABLE_OR_PAGE: u64 = 1 << 1;
const ATTR_INDEX_SHIFT: u64 = 2;
const ATTR_INDEX_MASK: u64 = 0b111 << ATTR_INDEX_SHIFT;
/// `AP[2]`: read-only. `AP[1]` stays 0: no EL0 access.
const AP_READ_ONLY: u64 = 1 << 7;
/// SH = 0b11: inner shareable.
const SH_INNER_SHAREABLE: u64 = 0b11 << 8;
/// Access flag: set, so the first access does not fault (no hardware AF management needed).
const ACCESS_FLAG: u64 = 1 << 10;
const PRIVILEGED_EXECUTE_NEVER: u64 = 1 << 53;
const UNPRIVILEGED_EXECUTE_NEVER: u64 = 1 << 54;
/// Output address bits 47:12.
const OUTPUT_ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Every attribute bit of a block or page descriptor (lower 11:2, upper 63:52).
const LEAF_ATTRIBUTE_MASK: u64 = 0xfff0_0000_0000_0ffc;

/// One translation table: 512 descriptors, 4 KiB aligned as the walker requires.
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct Table {
    entries: [u64; ENTRIES_PER_TABLE],
}

impl Table {
    /// A table of invalid descriptors.
    pub const EMPTY: Table = Table {
        entries: [0; ENTRIES_PER_TABLE],
    };
}

/// Memory type of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemoryType {
    /// Device-nGnRE: uncached, no gathering or reordering, early write acknowledgement.
    Device,
    /// Normal memory, write-back cacheable, inner shareable.
    Normal,
}

/// What a mapping allows. EL0 never has access.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Attributes {
    /// Memory type.
    pub memory: MemoryType,
    /// Writable at EL1 (else read-only).
    pub writable: bool,
    /// Executable at EL1 (else execute-never).
    pub executable: bool,
}

impl Attributes {
    /// Kernel code: read-only, executable.
    pub const TEXT: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: false,
        executable: true,
    };
    /// Read-only data: read-only, execute-never.
    pub const RODATA: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: false,
        executable: false,
    };
    /// RAM, data, BSS and stacks: read-write, execute-never.
    pub const DATA: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: true,
        executable: false,
    };
    /// Device registers and the uncached shared region: Device-nGnRE, read-write, execute-never.
    pub const DEVICE: Attributes = Attributes {
        memory: MemoryType::Device,
        writable: true,
        executable: false,
    };

    fn descriptor_bits(self) -> u64 {
        let type_bits = match self.memory {
            MemoryType::Device => MAIR_INDEX_DEVICE << ATTR_INDEX_SHIFT,
            // Shareability is ignored for Device memory (always outer shareable), so it is only
            // set for Normal memory.
            MemoryType::Normal => (MAIR_INDEX_NORMAL << ATTR_INDEX_SHIFT) | SH_INNER_SHAREABLE,
        };
        let write_bits = if self.writable { 0 } else { AP_READ_ONLY };
        let execute_bits = if self.executable {
            0
        } else {
            PRIVILEGED_EXECUTE_NEVER
        };
        type_bits | write_bits | execute_bits | UNPRIVILEGED_EXECUTE_NEVER | ACCESS_FLAG
    }

    fn from_descriptor(descriptor: u64) -> Attributes {
        Attributes {
            memory: if (descriptor & ATTR_INDEX_MASK) >> ATTR_INDEX_SHIFT == MAIR_INDEX_NORMAL {
                MemoryType::Normal
            } else {
                MemoryType::Device
            },
            writable: descriptor & AP_READ_ONLY == 0,
            executable: descriptor & PRIVILEGED_EXECUTE_NEVER == 0,
        }
    }
}

/// Why a mapping could not be built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapError {
    /// Addresses or size not multiples of [`PAGE_SIZE`].
    Unaligned {
        /// Virtual address.
        va: u64,
        /// Physical address.
        pa: u64,
        /// Size.
        size: u64,
    },
    /// The range reaches beyond [`VA_LIMIT`] (VA) or the 48-bit output address range (PA).
    OutOfRange {
        /// Virtual address.
        va: u64,
        /// Physical address.
        pa: u64,
        /// Size.
        size: u64,
    },
    /// The table pool is used up.
    PoolExhausted {
        /// Tables in the pool.
        tables: usize,
    },
    /// The pool is empty or not 4 KiB aligned (a programming error in the caller).
    BadPool,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Unaligned { va, pa, size } => write!(
                f,
                "cannot map {size:#x} bytes at VA {va:#x} -> PA {pa:#x}: not {PAGE_SIZE:#x}-aligned"
            ),
            MapError::OutOfRange { va, pa, size } => write!(
                f,
                "cannot map {size:#x} bytes at VA {va:#x} -> PA {pa:#x}: beyond the {VA_BITS}-bit \
                 address space"
            ),
            MapError::PoolExhausted { tables } => {
                write!(f, "page-table pool exhausted (all {tables} tables used)")
            }
            MapError::BadPool => write!(f, "page-table pool is empty or misaligned"),
        }
    }
}

/// A resolved translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Translation {
    /// Output (physical) address.
    pub pa: u64,
    /// Attributes of the mapping.
    pub attributes: Attributes,
    /// Level of the leaf descriptor: 2 (2 MiB block) or 3 (4 KiB page).
    pub level: u8,
}

/// Shift of the address bits a level indexes (level 1..=3; level 0 unused with T0SZ = 25).
const fn level_shift(level: usize) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// Builder of the identity map over a pool of tables; table 0 is the L1 root.
pub struct PageTables<'pool> {
    pool: &'pool mut [Table],
    used: usize,
}

impl<'pool> PageTables<'pool> {
    /// Takes over `pool` (its contents are discarded) with an empty root table.
    pub fn new(pool: &'pool mut [Table]) -> Result<Self, MapError> {
        let first = pool.first_mut().ok_or(MapError::BadPool)?;
        *first = Table::EMPTY;
        // Cannot fail for a `Table` reference (align 4096), checked for the walker's sake.
        if (first as *const Table as u64) % PAGE_SIZE != 0 {
            return Err(MapError::BadPool);
        }
        Ok(Self { pool, used: 1 })
    }

    /// Physical address of the root (L1) table, for `TTBR0_EL1`.
    pub fn root_address(&self) -> u64 {
        self.table_address(0)
    }

    /// Tables handed out so far, root included.
    pub fn tables_used(&self) -> usize {
        self.used
    }

    /// The pool's address range (for cache maintenance before the walker reads it).
    pub fn pool_range(&self) -> PhysRange {
        let start = self.table_address(0);
        let bytes = core::mem::size_of_val(self.pool) as u64;
        PhysRange::from_base_size(start, bytes).unwrap_or(PhysRange::EMPTY)
    }

    fn table_address(&self, index: usize) -> u64 {
        &self.pool[index] as *const Table as u64
    }

    /// Index in the pool of the table a table descriptor points to.
    fn table_index(&self, descriptor: u64) -> Option<usize> {
        let offset = (descriptor & OUTPUT_ADDRESS_MASK).checked_sub(self.table_address(0))?;
        let index = (offset / PAGE_SIZE) as usize;
        (index < self.used).then_some(index)
    }

    fn allocate(&mut self) -> Result<usize, MapError> {
        let index = self.used;
        let tables = self.pool.len();
        let table = self
            .pool
            .get_mut(index)
            .ok_or(MapError::PoolExhausted { tables })?;
        *table = Table::EMPTY;
        self.used += 1;
        Ok(index)
    }

    /// Maps `range` at VA = PA with `attributes`, replacing earlier mappings of the same pages.
    pub fn map_identity(
        &mut self,
        range: PhysRange,
        attributes: Attributes,
    ) -> Result<(), MapError> {
        self.map(range.start(), range.start(), range.size(), attributes)
    }

    /// Maps `size` bytes at `va` to `pa` with `attributes`, replacing earlier mappings.
    pub fn map(
        &mut self,
        va: u64,
        pa: u64,
        size: u64,
        attributes: Attributes,
    ) -> Result<(), MapError> {
        Self::check(va, pa, size)?;
        self.set(0, 1, va, va + size, Some(pa.wrapping_sub(va)), attributes)
    }

    /// Removes the mapping of `range` (page granular), splitting blocks as needed.
    pub fn unmap(&mut self, range: PhysRange) -> Result<(), MapError> {
        Self::check(range.start(), range.start(), range.size())?;
        self.set(0, 1, range.start(), range.end(), None, Attributes::DATA)
    }

    fn check(va: u64, pa: u64, size: u64) -> Result<(), MapError> {
        if va % PAGE_SIZE != 0 || pa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return Err(MapError::Unaligned { va, pa, size });
        }
        let va_end = va.checked_add(size);
        let pa_end = pa.checked_add(size);
        match (va_end, pa_end) {
            (Some(va_end), Some(pa_end)) if va_end <= VA_LIMIT && pa_end <= 1 << 48 => Ok(()),
            _ => Err(MapError::OutOfRange { va, pa, size }),
        }
    }

    /// Sets `[va, end)` within the table `table` at `level`. `pa_delta` is PA − VA (wrapping), or
    /// `None` to unmap.
    fn set(
        &mut self,
        table: usize,
        level: usize,
        mut va: u64,
        end: u64,
        pa_delta: Option<u64>,
        attributes: Attributes,
    ) -> Result<(), MapError> {
        let entry_size = 1u64 << level_shift(level);
        while va < end {
            let index = ((va >> level_shift(level)) as usize) % ENTRIES_PER_TABLE;
            let entry_start = va & !(entry_size - 1);
            let entry_end = entry_start + entry_size;
            let chunk_end = end.min(entry_end);
            let pa = pa_delta.map(|delta| va.wrapping_add(delta));
            let covers_entry = va == entry_start && chunk_end == entry_end;
            let leaf_allowed = match level {
                3 => true,
                2 => pa.is_none_or(|pa| pa % BLOCK_SIZE == 0),
                _ => false,
            };
            if covers_entry && leaf_allowed {
                // Replacing a table descriptor leaves that table allocated but unreachable;
                // the pool is sized for it (it only happens when RAM is remapped wholesale).
                self.pool[table].entries[index] = match pa {
                    Some(pa) => {
                        let kind = if level == 3 {
                            DESCRIPTOR_TABLE_OR_PAGE
                        } else {
                            0
                        };
                        pa | attributes.descriptor_bits() | kind | DESCRIPTOR_VALID
                    }
                    None => 0,
                };
            } else {
                let next = self.next_table(table, level, index)?;
                self.set(next, level + 1, va, chunk_end, pa_delta, attributes)?;
            }
            va = chunk_end;
        }
        Ok(())
    }

    /// The table below entry `index` of `table`, created empty or by splitting a block.
    fn next_table(&mut self, table: usize, level: usize, index: usize) -> Result<usize, MapError> {
        let descriptor = self.pool[table].entries[index];
        let is_valid = descriptor & DESCRIPTOR_VALID != 0;
        let is_table = descriptor & DESCRIPTOR_TABLE_OR_PAGE != 0;
        if is_valid && is_table {
            if let Some(next) = self.table_index(descriptor) {
                return Ok(next);
            }
        }
        let next = self.allocate()?;
        if is_valid && !is_table {
            // Split the block: same attributes, output addresses stepping by the next level's size.
            let step = 1u64 << level_shift(level + 1);
            let base = descriptor & OUTPUT_ADDRESS_MASK;
            let attribute_bits = descriptor & LEAF_ATTRIBUTE_MASK;
            let kind = if level + 1 == 3 {
                DESCRIPTOR_TABLE_OR_PAGE
            } else {
                0
            };
            for (slot, entry) in self.pool[next].entries.iter_mut().enumerate() {
                *entry = (base + slot as u64 * step) | attribute_bits | kind | DESCRIPTOR_VALID;
            }
        }
        self.pool[table].entries[index] =
            self.table_address(next) | DESCRIPTOR_TABLE_OR_PAGE | DESCRIPTOR_VALID;
        Ok(next)
    }

    /// Walks the tables like the MMU does for `va`.
    pub fn translate(&self, va: u64) -> Option<Translation> {
        if va >= VA_LIMIT {
            return None;
        }
        let mut table = 0;
        for level in 1..=3 {
            let index = ((va >> level_shift(level)) as usize) % ENTRIES_PER_TABLE;
            let descriptor = self.pool[table].entries[index];
            if descriptor & DESCRIPTOR_VALID == 0 {
                return None;
            }
            let is_leaf = level == 3 || descriptor & DESCRIPTOR_TABLE_OR_PAGE == 0;
            if is_leaf {
                if level == 1 || (level == 3 && descriptor & DESCRIPTOR_TABLE_OR_PAGE == 0) {
                    // This builder never writes L1 blocks, and an L3 "block" is reserved/invalid.
                    return None;
                }
                let size = 1u64 << level_shift(level);
                return Some(Translation {
                    pa: (descriptor & OUTPUT_ADDRESS_MASK & !(size - 1)) | (va & (size - 1)),
                    attributes: Attributes::from_descriptor(descriptor),
                    level: level as u8,
                });
            }
            table = self.table_index(descriptor)?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;

    fn pool(tables: usize) -> Vec<Table> {
        vec![Table::EMPTY; tables]
    }

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    const RAM: u64 = 0x4000_0000;

    #[test]
    fn mair_value_matches_the_indices() {
        assert_eq!(MAIR_EL1_VALUE, 0xff04);
        assert_eq!(T0SZ, 25);
    }

    #[test]
    fn aligned_ranges_use_2mib_blocks() {
        let mut pool = pool(8);
        let mut tables = PageTables::new(&mut pool).unwrap();
        tables
            .map_identity(range(RAM, RAM + 0x4000_0000), Attributes::DATA)
            .unwrap();
        // Root + one L2 table; no L3 needed.
        assert_eq!(tables.tables_used(), 2);
        let translation = tables.translate(RAM + 0x12_3456).unwrap();
        assert_eq!(
            translation,
            Translation {
                pa: RAM + 0x12_3456,
                attributes: Attributes::DATA,
                level: 2
            }
        );
        assert_eq!(tables.translate(RAM - 1), None);
        assert_eq!(tables.translate(RAM + 0x4000_0000), None);
    }

    #[test]
    fn unaligned_ends_use_pages() {
        let mut pool = pool(8);
        let mut tables = PageTables::new(&mut pool).unwrap();
        let start = RAM + BLOCK_SIZE - PAGE_SIZE;
        let end = RAM + 3 * BLOCK_SIZE + PAGE_SIZE;
        tables
            .map_identity(range(start, end), Attributes::DEVICE)
            .unwrap();
        assert_eq!(tables.translate(start).unwrap().level, 3);
        assert_eq!(tables.translate(start - 1), None);
        assert_eq!(tables.translate(RAM + BLOCK_SIZE).unwrap().level, 2);
        assert_eq!(tables.translate(RAM + 3 * BLOCK_SIZE).unwrap().level, 3);
        assert_eq!(tables.translate(end - 1).unwrap().pa, end - 1);
        assert_eq!(tables.translate(end), None);
        // Root, one L2, two L3.
        assert_eq!(tables.tables_used(), 4);
    }

    #[test]
    fn finer_mappings_split_blocks_and_keep_neighbours() {
        let mut pool = pool(8);
        let mut tables = PageTables::new(&mut pool).unwrap();
        tables
            .map_identity(range(RAM, RAM + 4 * BLOCK_SIZE), Attributes::DATA)
            .unwrap();
        let text = range(RAM + BLOCK_SIZE, RAM + BLOCK_SIZE + 3 * PAGE_SIZE);
        tables.map_identity(text, Attributes::TEXT).unwrap();
        let guard = range(
            RAM + BLOCK_SIZE + 8 * PAGE_SIZE,
            RAM + BLOCK_SIZE + 9 * PAGE_SIZE,
        );
        tables.unmap(guard).unwrap();

        assert_eq!(
            tables.translate(text.start()).unwrap().attributes,
            Attributes::TEXT
        );
        assert_eq!(
            tables.translate(text.end() - 1).unwrap().attributes,
            Attributes::TEXT
        );
        let after_text = tables.translate(text.end()).unwrap();
        assert_eq!(
            (after_text.attributes, after_text.level),
            (Attributes::DATA, 3)
        );
        assert_eq!(tables.translate(guard.start()), None);
        assert_eq!(tables.translate(guard.end() - 1), None);
        assert_eq!(tables.translate(guard.end()).unwrap().pa, guard.end());
        assert_eq!(
            tables.translate(guard.start() - 1).unwrap().pa,
            guard.start() - 1
        );
        // Blocks around the split one are untouched.
        assert_eq!(tables.translate(RAM).unwrap().level, 2);
        assert_eq!(tables.translate(RAM + 2 * BLOCK_SIZE).unwrap().level, 2);
        // Every page of the split block still maps to itself.
        for page in 0..512 {
            let va = RAM + BLOCK_SIZE + page * PAGE_SIZE;
            if !guard.contains(va) {
                assert_eq!(tables.translate(va).unwrap().pa, va);
            }
        }
    }

    #[test]
    fn attributes_round_trip_through_descriptors() {
        for attributes in [
            Attributes::TEXT,
            Attributes::RODATA,
            Attributes::DATA,
            Attributes::DEVICE,
        ] {
            let bits = attributes.descriptor_bits();
            assert_eq!(Attributes::from_descriptor(bits), attributes);
            assert_ne!(bits & ACCESS_FLAG, 0);
            assert_ne!(bits & UNPRIVILEGED_EXECUTE_NEVER, 0);
        }
        assert_eq!(
            Attributes::TEXT.descriptor_bits() & PRIVILEGED_EXECUTE_NEVER,
            0
        );
        assert_eq!(Attributes::DEVICE.descriptor_bits() & ATTR_INDEX_MASK, 0);
        assert_eq!(
            Attributes::DATA.descriptor_bits() & (0b11 << 8),
            SH_INNER_SHAREABLE
        );
    }

    #[test]
    fn non_identity_mapping_translates_with_offset() {
        let mut pool = pool(8);
        let mut tables = PageTables::new(&mut pool).unwrap();
        tables
            .map(0x1000, 0x9000_0000, 0x2000, Attributes::DEVICE)
            .unwrap();
        assert_eq!(tables.translate(0x1abc).unwrap().pa, 0x9000_0abc);
        assert_eq!(tables.translate(0x2abc).unwrap().pa, 0x9000_1abc);
    }

    #[test]
    fn bad_requests_are_rejected() {
        let mut pool = pool(3);
        let mut tables = PageTables::new(&mut pool).unwrap();
        assert!(matches!(
            tables.map_identity(range(0x1001, 0x2000), Attributes::DATA),
            Err(MapError::Unaligned { .. })
        ));
        assert!(matches!(
            tables.map_identity(
                range(VA_LIMIT - PAGE_SIZE, VA_LIMIT + PAGE_SIZE),
                Attributes::DATA
            ),
            Err(MapError::OutOfRange { .. })
        ));
        // Two L3 tables in different 1 GiB ranges need 2 L2 + 2 L3 tables: more than 3 in all.
        tables
            .map_identity(range(0x1000, 0x2000), Attributes::DATA)
            .unwrap();
        assert_eq!(
            tables.map_identity(range(RAM + 0x1000, RAM + 0x2000), Attributes::DATA),
            Err(MapError::PoolExhausted { tables: 3 })
        );
        assert!(matches!(PageTables::new(&mut []), Err(MapError::BadPool)));
    }

    #[test]
    fn walk_finds_only_pool_tables_and_no_l1_blocks() {
        let mut pool = pool(16);
        let mut tables = PageTables::new(&mut pool).unwrap();
        tables
            .map_identity(range(RAM, RAM + 0x8000_0000), Attributes::DATA)
            .unwrap();
        tables
            .map_identity(range(0x0900_0000, 0x0900_1000), Attributes::DEVICE)
            .unwrap();
        tables
            .map_identity(range(RAM + 0x20_0000, RAM + 0x20_5000), Attributes::TEXT)
            .unwrap();
        let used = tables.tables_used();
        let root = &tables.pool[0];
        for descriptor in root.entries.iter().filter(|d| **d & DESCRIPTOR_VALID != 0) {
            assert_ne!(
                descriptor & DESCRIPTOR_TABLE_OR_PAGE,
                0,
                "L1 block descriptor"
            );
            let l2 = tables
                .table_index(*descriptor)
                .expect("L1 entry outside the pool");
            for l2_descriptor in tables.pool[l2]
                .entries
                .iter()
                .filter(|d| **d & DESCRIPTOR_VALID != 0)
            {
                if l2_descriptor & DESCRIPTOR_TABLE_OR_PAGE != 0 {
                    let l3 = tables
                        .table_index(*l2_descriptor)
                        .expect("L2 entry outside the pool");
                    assert!(l3 < used);
                    for page in tables.pool[l3]
                        .entries
                        .iter()
                        .filter(|d| **d & DESCRIPTOR_VALID != 0)
                    {
                        assert_ne!(page & DESCRIPTOR_TABLE_OR_PAGE, 0, "L3 entry is not a page");
                    }
                } else {
                    assert_eq!(l2_descriptor & OUTPUT_ADDRESS_MASK & (BLOCK_SIZE - 1), 0);
                }
            }
        }
    }
}
