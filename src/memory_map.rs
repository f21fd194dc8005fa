//! The guest's memory map: what is mapped, where, and with which attributes.
//!
//! ```text
//!  identity map (VA = PA)                       attributes
//!  ─────────────────────────────────────────────────────────────────────────
//!  console UART page(s)                         Device-nGnRE, RW, XN
//!  usable RAM (memory − /reserved-memory)       Normal WB, RW, XN
//!    0x40200000 guest image (inside RAM):
//!      .text (Image header first)               Normal WB, RO, executable
//!      .rodata                                  Normal WB, RO, XN
//!      .data .bss (page-table pool)             Normal WB, RW, XN
//!      guard page                               unmapped
//!      boot stack                               Normal WB, RW, XN
//!      guard page                               unmapped
//!      exception stack                          Normal WB, RW, XN
//!  shared region (reserved, not RAM)            Device-nGnRE, RW, XN
//!                                               (Normal WB if `sramlink,cacheable`)
//!  GIC frames (distributor, CPU interface or    Device-nGnRE, RW, XN
//!    redistributors, from the device tree)
//! ```
//! Xen's `shared_info` page needs no entry of its own: it replaces a page-aligned page of the
//! image's BSS (Normal WB inner-shareable, as Xen requires) through `XENMEM_add_to_physmap`.
//! Reserved memory is left unmapped (it may be another agent's, mapped with other attributes),
//! except the shared region itself.

use crate::devicetree::Uart;
use crate::paging::{Attributes, MapError, PAGE_SIZE, PageTables, VA_LIMIT};
use sramlink_devicetree::PhysRange;

/// Where the linker put the guest image's parts (all page aligned).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ImageLayout {
    /// The whole image, Image header to the end of the exception stack.
    pub image: PhysRange,
    /// `.text`.
    pub text: PhysRange,
    /// `.rodata` and other read-only sections.
    pub rodata: PhysRange,
    /// Guard pages below the boot stack and below the exception stack.
    pub guards: [PhysRange; 2],
}

/// The shared region as it is to be mapped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RegionMapping {
    /// Physical (= virtual) range.
    pub range: PhysRange,
    /// Map Normal write-back instead of Device-nGnRE.
    pub cacheable: bool,
}

/// RAM is mapped in whole pages: a bank's partial first/last pages are left out.
fn whole_pages_inside(range: PhysRange) -> Option<PhysRange> {
    let start = range.start().checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    let end = range.end().min(VA_LIMIT) & !(PAGE_SIZE - 1);
    PhysRange::new(start, end).filter(|pages| !pages.is_empty())
}

/// Builds the identity map drawn in the module documentation.
pub fn map_guest(
    tables: &mut PageTables<'_>,
    usable_memory: &[PhysRange],
    layout: &ImageLayout,
    console: Option<&Uart>,
    region: Option<&RegionMapping>,
    devices: &[PhysRange],
) -> Result<(), MapError> {
    for bank in usable_memory
        .iter()
        .filter_map(|bank| whole_pages_inside(*bank))
    {
        tables.map_identity(bank, Attributes::DATA)?;
    }
    // The image may also lie outside usable RAM (a loader's choice); it is mapped either way.
    tables.map_identity(layout.image, Attributes::DATA)?;
    tables.map_identity(layout.text, Attributes::TEXT)?;
    tables.map_identity(layout.rodata, Attributes::RODATA)?;
    for guard in layout.guards {
        tables.unmap(guard)?;
    }
    if let Some(uart) = console {
        if let Some(pages) = uart.registers.round_out(PAGE_SIZE) {
            tables.map_identity(pages, Attributes::DEVICE)?;
        }
    }
    if let Some(region) = region {
        let attributes = if region.cacheable {
            Attributes::DATA
        } else {
            Attributes::DEVICE
        };
        tables.map_identity(region.range, attributes)?;
    }
    for device in devices {
        if let Some(pages) = device.round_out(PAGE_SIZE) {
            tables.map_identity(pages, Attributes::DEVICE)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::vec;

    use super::*;
    use crate::devicetree::UartKind;
    use crate::paging::{MemoryType, Table};

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    fn layout() -> ImageLayout {
        ImageLayout {
            image: range(0x4020_0000, 0x4024_0000),
            text: range(0x4020_0000, 0x4020_8000),
            rodata: range(0x4020_8000, 0x4020_a000),
            guards: [
                range(0x4022_0000, 0x4022_1000),
                range(0x4023_1000, 0x4023_2000),
            ],
        }
    }

    #[test]
    fn qemu_like_map_has_every_attribute_in_place() {
        let mut pool = vec![Table::EMPTY; 16];
        let mut tables = PageTables::new(&mut pool).unwrap();
        // 1 GiB of RAM with the last 16 MiB reserved for the region, as on bare QEMU.
        let usable = [range(0x4000_0000, 0x7f00_0000)];
        let uart = Uart {
            registers: range(0x0900_0000, 0x0900_1000),
            kind: UartKind::Pl011,
        };
        let region = RegionMapping {
            range: range(0x7f00_0000, 0x8000_0000),
            cacheable: false,
        };
        let gic = [
            range(0x0800_0000, 0x0801_0000),
            range(0x080a_0000, 0x0900_0000),
        ];
        map_guest(
            &mut tables,
            &usable,
            &layout(),
            Some(&uart),
            Some(&region),
            &gic,
        )
        .unwrap();

        let at = |address| tables.translate(address);
        assert_eq!(at(0x4000_0000).unwrap().attributes, Attributes::DATA);
        assert_eq!(at(0x4020_0000).unwrap().attributes, Attributes::TEXT);
        assert_eq!(at(0x4020_7fff).unwrap().attributes, Attributes::TEXT);
        assert_eq!(at(0x4020_8000).unwrap().attributes, Attributes::RODATA);
        assert_eq!(at(0x4020_a000).unwrap().attributes, Attributes::DATA);
        assert_eq!(at(0x4022_0000), None, "stack guard mapped");
        assert_eq!(at(0x4023_1800), None, "exception stack guard mapped");
        assert_eq!(at(0x4023_2000).unwrap().attributes, Attributes::DATA);
        assert_eq!(at(0x4024_0000).unwrap().attributes, Attributes::DATA);
        assert_eq!(at(0x0900_0000).unwrap().attributes, Attributes::DEVICE);
        assert_eq!(at(0x0900_1000), None);
        assert_eq!(at(0x0800_0000).unwrap().attributes, Attributes::DEVICE);
        assert_eq!(at(0x080a_0000).unwrap().attributes, Attributes::DEVICE);
        assert_eq!(at(0x08ff_fff8).unwrap().attributes, Attributes::DEVICE);
        assert_eq!(at(0x0801_0000), None);
        let shared = at(0x7f00_0000).unwrap();
        assert_eq!((shared.attributes, shared.level), (Attributes::DEVICE, 2));
        assert_eq!(at(0x7fff_fff8).unwrap().pa, 0x7fff_fff8);
        assert_eq!(at(0x8000_0000), None);
        assert_eq!(at(0), None);
    }

    #[test]
    fn cacheable_region_is_normal_memory_and_reserved_memory_stays_unmapped() {
        let mut pool = vec![Table::EMPTY; 16];
        let mut tables = PageTables::new(&mut pool).unwrap();
        // RAM with an unrelated reserved hole at 0x50000000..0x50100000 and ragged bank ends.
        let usable = [
            range(0x4000_0000, 0x5000_0000),
            range(0x5010_0000, 0x7f00_0800),
        ];
        let region = RegionMapping {
            range: range(0x7f00_1000, 0x7f01_1000),
            cacheable: true,
        };
        map_guest(&mut tables, &usable, &layout(), None, Some(&region), &[]).unwrap();
        assert_eq!(tables.translate(0x5000_0000), None);
        assert_eq!(tables.translate(0x500f_ffff), None);
        assert_eq!(
            tables.translate(0x5010_0000).unwrap().attributes,
            Attributes::DATA
        );
        assert_eq!(
            tables.translate(0x7f00_0000),
            None,
            "partial RAM page mapped"
        );
        let shared = tables.translate(0x7f00_1000).unwrap();
        assert_eq!(
            (shared.attributes.memory, shared.level),
            (MemoryType::Normal, 3)
        );
        assert!(!shared.attributes.executable);
    }
}
