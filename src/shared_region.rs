//! Validation of the shared region against the guest's memory and the ring's needs.
//!
//! The region found in the device tree is usable when it is page aligned, identity-mappable,
//! clear of the guest image, the device tree blob, the console and the guest's usable RAM
//! (it must be carved out of RAM with `/reserved-memory` `no-map`, or lie outside `/memory`),
//! and large enough for the ring's default [`Geometry`]. Each failure names the numbers.

// Errors carry the offending node's path in a fixed-capacity string (no allocator), so they
// are larger than clippy likes; they are built at most once per boot, never on a hot path.
#![allow(clippy::result_large_err)]

use core::fmt;

use sramlink_ring::{Error as RingError, Geometry};

use crate::devicetree::{NodePath, RegionNode, Uart};
use crate::paging::{PAGE_SIZE, VA_LIMIT};
use sramlink_devicetree::PhysRange;

/// A region ready to be mapped and handed to the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRegion {
    /// Its device-tree node.
    pub path: NodePath,
    /// Physical (= virtual) range.
    pub range: PhysRange,
    /// Map Normal write-back instead of Device-nGnRE.
    pub cacheable: bool,
    /// The ring geometry it gets.
    pub geometry: Geometry,
}

/// What else the region must not overlap.
#[derive(Clone, Copy, Debug)]
pub enum Occupant {
    /// The guest image (code, data, BSS, stacks, page tables).
    Image,
    /// The device tree blob.
    DeviceTree,
    /// The console UART's registers.
    Console,
    /// A usable RAM range (RAM minus `/reserved-memory`).
    Ram,
}

impl fmt::Display for Occupant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Occupant::Image => "the guest image",
            Occupant::DeviceTree => "the device tree blob",
            Occupant::Console => "the console UART",
            Occupant::Ram => "guest RAM",
        })
    }
}

/// Why the region cannot be used.
#[derive(Clone, Debug)]
pub enum RegionError {
    /// Base or size not a multiple of the page size.
    NotPageAligned {
        /// The node.
        path: NodePath,
        /// The range.
        range: PhysRange,
    },
    /// Beyond the 39-bit identity map.
    OutOfReach {
        /// The node.
        path: NodePath,
        /// The range.
        range: PhysRange,
    },
    /// Overlaps something the guest owns.
    Overlaps {
        /// The node.
        path: NodePath,
        /// The range.
        range: PhysRange,
        /// What it overlaps.
        occupant: Occupant,
        /// Where that is.
        occupied: PhysRange,
    },
    /// The ring does not fit.
    TooSmall {
        /// The node.
        path: NodePath,
        /// The range.
        range: PhysRange,
        /// The ring's reason.
        reason: RingError,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::NotPageAligned { path, range } => write!(
                f,
                "shared region {path} at {:#x}+{:#x} is not page-aligned: base and size must be \
                 multiples of {PAGE_SIZE:#x}",
                range.start(),
                range.size()
            ),
            RegionError::OutOfReach { path, range } => write!(
                f,
                "shared region {path} {range} ends beyond {VA_LIMIT:#x}, the end of the guest's \
                 identity map"
            ),
            RegionError::Overlaps {
                path,
                range,
                occupant,
                occupied,
            } => {
                write!(
                    f,
                    "shared region {path} {range} overlaps {occupant} {occupied}"
                )?;
                if let Occupant::Ram = occupant {
                    write!(
                        f,
                        " (list it under /reserved-memory with no-map, or outside /memory)"
                    )?;
                }
                Ok(())
            }
            RegionError::TooSmall {
                path,
                range,
                reason,
            } => {
                write!(
                    f,
                    "shared region {path} {range} cannot hold the ring: {reason}"
                )
            }
        }
    }
}

/// Everything the region is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Surroundings<'a> {
    /// Usable RAM (RAM minus reserved memory).
    pub usable_memory: &'a [PhysRange],
    /// The guest image.
    pub image: PhysRange,
    /// The device tree blob.
    pub device_tree: PhysRange,
    /// The console, if any.
    pub console: Option<&'a Uart>,
}

/// Checks `node` and computes its ring geometry.
pub fn validate(node: &RegionNode, around: &Surroundings<'_>) -> Result<SharedRegion, RegionError> {
    let range = node.range;
    let path = || node.path.clone();
    if range.start() % PAGE_SIZE != 0 || range.size() % PAGE_SIZE != 0 {
        return Err(RegionError::NotPageAligned {
            path: path(),
            range,
        });
    }
    if range.end() > VA_LIMIT {
        return Err(RegionError::OutOfReach {
            path: path(),
            range,
        });
    }
    let console = around.console.map(|uart| uart.registers);
    let occupants = [
        (Occupant::Image, Some(around.image)),
        (Occupant::DeviceTree, Some(around.device_tree)),
        (Occupant::Console, console),
    ];
    let ram = around
        .usable_memory
        .iter()
        .map(|bank| (Occupant::Ram, Some(*bank)));
    for (occupant, occupied) in occupants.into_iter().chain(ram) {
        if let Some(occupied) = occupied.filter(|occupied| occupied.overlaps(&range)) {
            return Err(RegionError::Overlaps {
                path: path(),
                range,
                occupant,
                occupied,
            });
        }
    }
    let geometry = usize::try_from(range.size())
        .map_err(|_| RingError::RegionTooSmall {
            len: range.size(),
            needed: 0,
        })
        .and_then(Geometry::for_region)
        .map_err(|reason| RegionError::TooSmall {
            path: path(),
            range,
            reason,
        })?;
    Ok(SharedRegion {
        path: path(),
        range,
        cacheable: node.cacheable,
        geometry,
    })
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use super::*;
    use crate::devicetree::UartKind;

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    fn node(start: u64, end: u64) -> RegionNode {
        RegionNode {
            path: "/sram@7f000000".try_into().unwrap(),
            range: range(start, end),
            cacheable: false,
        }
    }

    const USABLE: [PhysRange; 1] = [match PhysRange::new(0x4000_0000, 0x7f00_0000) {
        Some(range) => range,
        None => PhysRange::EMPTY,
    }];

    fn surroundings(uart: &Uart) -> Surroundings<'_> {
        Surroundings {
            usable_memory: &USABLE,
            image: range(0x4020_0000, 0x4026_0000),
            device_tree: range(0x4800_0000, 0x4800_2000),
            console: Some(uart),
        }
    }

    const UART: Uart = Uart {
        registers: match PhysRange::new(0x0900_0000, 0x0900_1000) {
            Some(range) => range,
            None => PhysRange::EMPTY,
        },
        kind: UartKind::Pl011,
    };

    #[test]
    fn bare_qemu_region_is_accepted_with_the_default_geometry() {
        let region = validate(&node(0x7f00_0000, 0x8000_0000), &surroundings(&UART)).unwrap();
        assert_eq!(region.geometry, Geometry::for_region(0x100_0000).unwrap());
        assert!(!region.cacheable);
    }

    #[test]
    fn misaligned_region_is_rejected_with_its_numbers() {
        let error = validate(&node(0x7f00_0800, 0x7f80_0800), &surroundings(&UART)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "shared region /sram@7f000000 at 0x7f000800+0x800000 is not page-aligned: base and \
             size must be multiples of 0x1000"
        );
    }

    #[test]
    fn overlaps_are_named() {
        let around = surroundings(&UART);
        let cases = [
            (
                node(0x4020_0000, 0x4120_0000),
                "the guest image 0x40200000-0x40260000",
            ),
            (
                node(0x4800_0000, 0x4900_0000),
                "the device tree blob 0x48000000-0x48002000",
            ),
            (
                node(0x0900_0000, 0x0a00_0000),
                "the console UART 0x9000000-0x9001000",
            ),
            (
                node(0x7e00_0000, 0x7f00_0000),
                "guest RAM 0x40000000-0x7f000000 (list it under",
            ),
        ];
        for (region, expected) in cases {
            let message = validate(&region, &around).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn too_small_and_unreachable_regions_are_rejected() {
        let message = validate(&node(0x7f00_0000, 0x7f00_1000), &surroundings(&UART)).unwrap_err();
        assert!(matches!(message, RegionError::TooSmall { .. }));
        assert!(
            message
                .to_string()
                .contains("cannot hold the ring: shared region of 0x1000 bytes")
        );
        let far = node(VA_LIMIT - 0x1000, VA_LIMIT + 0x1000);
        assert!(matches!(
            validate(&far, &surroundings(&UART)),
            Err(RegionError::OutOfReach { .. })
        ));
    }
}
