//! The interrupt side of the tree: the GIC's register frames and Xen's `/hypervisor` upcall.
//!
//! - GIC: the first enabled node compatible with `arm,gic-v3` (GICv3: `reg` = distributor,
//!   then redistributor region(s), then optional CPU interface/hypervisor/virtual frames) or
//!   `arm,gic-400`/`arm,cortex-a15-gic` (GICv2: `reg` = distributor, CPU interface, then
//!   optional GICH/GICV). QEMU `virt` has a GICv3, the ZynqMP a GIC-400: a guest takes the
//!   version and the frames from here, never from constants.
//! - Xen: the node compatible with `xen,xen` (Xen adds `/hypervisor` to a dom0less domU with
//!   `xen,enhanced`): its `interrupts` is the event-channel upcall, a GIC PPI
//!   (`<1 15 0xf08>`: PPI 15, INTID 31); without `interrupts` Xen's fixed upcall,
//!   [`XEN_DEFAULT_UPCALL_INTID`], applies. Its first `reg` entry, when present, is the grant
//!   table's frame.
//!
//! - Timer: the first node compatible with `arm,armv8-timer` (or `arm,armv7-timer`): its
//!   `interrupts` lists the secure physical, non-secure physical, virtual and hypervisor timer
//!   PPIs in that order; the guest uses the third, the EL1 virtual timer (QEMU and Xen: PPI 11,
//!   INTID 27).
//!
//! Interrupt specifiers are read as the GIC binding writes them: three cells (type: 0 SPI, 1
//! PPI; number; flags), the form both Xen and QEMU use.

// Errors carry the offending node's path in a fixed-capacity string (no allocator), so they
// are larger than clippy likes; they are built at most once per boot, never on a hot path.
#![allow(clippy::result_large_err)]

use crate::error::{DtError, NodePath};
use crate::range::PhysRange;

/// Xen's event-channel upcall when `/hypervisor` names none (`GUEST_EVTCHN_PPI`): INTID 31.
pub const XEN_DEFAULT_UPCALL_INTID: u32 = 31;

/// `compatible` strings of the GIC versions understood, with their version.
pub const GIC_COMPATIBLES: [(&str, GicVersion); 3] = [
    ("arm,gic-v3", GicVersion::V3),
    ("arm,gic-400", GicVersion::V2),
    ("arm,cortex-a15-gic", GicVersion::V2),
];

/// The GIC architecture version of an interrupt controller node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GicVersion {
    /// GICv2: distributor and CPU interface both memory-mapped.
    V2,
    /// GICv3: distributor and redistributors memory-mapped, CPU interface in system registers.
    V3,
}

/// The register frames a guest programs, per GIC version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GicFrames {
    /// GICv2 (`arm,gic-400`, `arm,cortex-a15-gic`).
    V2 {
        /// GICD.
        distributor: PhysRange,
        /// GICC.
        cpu_interface: PhysRange,
    },
    /// GICv3 (`arm,gic-v3`).
    V3 {
        /// GICD.
        distributor: PhysRange,
        /// The first redistributor region (GICR: RD and SGI frames of each CPU in turn).
        redistributors: PhysRange,
    },
}

impl GicFrames {
    /// The version these frames belong to.
    pub const fn version(&self) -> GicVersion {
        match self {
            GicFrames::V2 { .. } => GicVersion::V2,
            GicFrames::V3 { .. } => GicVersion::V3,
        }
    }
}

/// The interrupt controller found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InterruptController {
    /// Where it is in the tree.
    pub path: NodePath,
    /// Its frames, translated to CPU physical addresses.
    pub frames: GicFrames,
}

/// Xen's `/hypervisor` node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Hypervisor {
    /// Where it is in the tree.
    pub path: NodePath,
    /// The event-channel upcall's INTID (a PPI: 16..=31).
    pub upcall_intid: u32,
    /// The grant table's frame (the first `reg` entry), if the node has a `reg`.
    pub grant_table: Option<PhysRange>,
}

/// `compatible` strings of the generic timer's node.
pub const TIMER_COMPATIBLES: [&str; 2] = ["arm,armv8-timer", "arm,armv7-timer"];

/// The generic timer's node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Timer {
    /// Where it is in the tree.
    pub path: NodePath,
    /// The EL1 virtual timer's INTID (a PPI: 16..=31), the third `interrupts` specifier.
    pub virtual_intid: u32,
}

/// What is wrong with an interrupt-related node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InterruptProblem {
    /// `reg` has fewer entries than the version's mandatory frames.
    TooFewFrames {
        /// Entries found.
        entries: usize,
        /// Entries needed.
        needed: usize,
    },
    /// `interrupts` is not one three-cell GIC specifier (for the timer: has fewer than
    /// three, or is not a whole number of them).
    BadSpecifier {
        /// Length of `interrupts` in bytes.
        bytes: usize,
    },
    /// The upcall is not a PPI (type 1, number 0..=15).
    NotAPpi {
        /// The specifier's type cell.
        kind: u32,
        /// The specifier's number cell.
        number: u32,
    },
}

/// The GIC version a `compatible` list names, if any.
pub(crate) fn gic_version(is_compatible: impl Fn(&str) -> bool) -> Option<GicVersion> {
    GIC_COMPATIBLES
        .iter()
        .find(|(compatible, _)| is_compatible(compatible))
        .map(|(_, version)| *version)
}

/// The frames of a GIC of `version` from its decoded, translated `reg` entries.
pub(crate) fn gic_frames(
    path: &NodePath,
    version: GicVersion,
    entries: &[PhysRange],
) -> Result<InterruptController, DtError> {
    let (first, second) = match entries {
        [first, second, ..] => (*first, *second),
        _ => {
            return Err(DtError::Interrupts {
                path: path.clone(),
                problem: InterruptProblem::TooFewFrames {
                    entries: entries.len(),
                    needed: 2,
                },
            });
        }
    };
    let frames = match version {
        GicVersion::V2 => GicFrames::V2 {
            distributor: first,
            cpu_interface: second,
        },
        GicVersion::V3 => GicFrames::V3 {
            distributor: first,
            redistributors: second,
        },
    };
    Ok(InterruptController {
        path: path.clone(),
        frames,
    })
}

/// The upcall INTID from `/hypervisor`'s `interrupts` (absent: Xen's default).
pub(crate) fn upcall_intid(path: &NodePath, interrupts: Option<&[u8]>) -> Result<u32, DtError> {
    let Some(interrupts) = interrupts else {
        return Ok(XEN_DEFAULT_UPCALL_INTID);
    };
    if interrupts.len() != SPECIFIER_BYTES {
        return Err(DtError::Interrupts {
            path: path.clone(),
            problem: InterruptProblem::BadSpecifier {
                bytes: interrupts.len(),
            },
        });
    }
    ppi_intid(path, interrupts)
}

/// The timer node at `path` from its `interrupts` (absent counts as empty: an error).
pub(crate) fn timer(path: &NodePath, interrupts: Option<&[u8]>) -> Result<Timer, DtError> {
    let interrupts = interrupts.unwrap_or(&[]);
    // Secure physical, non-secure physical, virtual (, hypervisor (, hypervisor virtual)).
    const VIRTUAL: usize = 2;
    if interrupts.len() % SPECIFIER_BYTES != 0 || interrupts.len() < (VIRTUAL + 1) * SPECIFIER_BYTES
    {
        return Err(DtError::Interrupts {
            path: path.clone(),
            problem: InterruptProblem::BadSpecifier {
                bytes: interrupts.len(),
            },
        });
    }
    let start = VIRTUAL * SPECIFIER_BYTES;
    Ok(Timer {
        path: path.clone(),
        virtual_intid: ppi_intid(path, &interrupts[start..start + SPECIFIER_BYTES])?,
    })
}

/// Bytes of one GIC interrupt specifier (three cells).
const SPECIFIER_BYTES: usize = 12;

/// The INTID of one three-cell specifier, which must name a PPI.
fn ppi_intid(path: &NodePath, specifier: &[u8]) -> Result<u32, DtError> {
    let cell = |index: usize| {
        u32::from_be_bytes([
            specifier[index * 4],
            specifier[index * 4 + 1],
            specifier[index * 4 + 2],
            specifier[index * 4 + 3],
        ])
    };
    let (kind, number) = (cell(0), cell(1));
    // GIC binding: type 1 is a PPI, numbered from INTID 16.
    if kind != 1 || number > 15 {
        return Err(DtError::Interrupts {
            path: path.clone(),
            problem: InterruptProblem::NotAPpi { kind, number },
        });
    }
    Ok(16 + number)
}

#[cfg(test)]
mod tests {
    use std::string::ToString;
    use std::vec::Vec;

    use super::*;
    use crate::discovery::DeviceTree;
    use crate::testing::{FdtWriter, fixture};

    fn range(base: u64, size: u64) -> PhysRange {
        PhysRange::from_base_size(base, size).unwrap()
    }

    /// A root with 2/2 cells and `body` inside it.
    fn tree(body: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
        let mut writer = FdtWriter::new();
        writer
            .begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2]);
        body(&mut writer);
        writer.end();
        writer.finish()
    }

    #[test]
    fn qemu_virt_has_a_gic_v3_and_no_hypervisor_node() {
        let blob = std::fs::read(fixture("qemu-virt-sram.dtb")).unwrap();
        let tree = DeviceTree::read(&blob).unwrap();
        let gic = tree.interrupt_controller().unwrap();
        assert_eq!(gic.path, "/intc@8000000");
        assert_eq!(
            gic.frames,
            GicFrames::V3 {
                distributor: range(0x0800_0000, 0x1_0000),
                redistributors: range(0x080a_0000, 0xf6_0000),
            }
        );
        assert_eq!(gic.frames.version(), GicVersion::V3);
        assert_eq!(tree.hypervisor(), Ok(None));
        // <1 13 4>, <1 14 4>, <1 11 4>, <1 10 4>: the virtual timer is PPI 11.
        let timer = tree.timer().unwrap().unwrap();
        assert_eq!(timer.path, "/timer");
        assert_eq!(timer.virtual_intid, 27);
    }

    fn timer_tree(compatible: &str, interrupts: Option<&[u32]>) -> Vec<u8> {
        tree(|writer| {
            writer.begin("timer").string("compatible", compatible);
            if let Some(interrupts) = interrupts {
                writer.cells("interrupts", interrupts);
            }
            writer.end();
        })
    }

    #[test]
    fn the_virtual_timer_is_the_third_specifier() {
        // Xen's domU timer node: secure, non-secure physical, virtual (GIC-400 flags 0xf08).
        let xen = [1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08];
        let blob = timer_tree("arm,armv8-timer", Some(&xen));
        let timer = DeviceTree::read(&blob).unwrap().timer().unwrap().unwrap();
        assert_eq!(timer.virtual_intid, 27);
        let blob = timer_tree(
            "arm,armv7-timer",
            Some(&[1, 13, 8, 1, 14, 8, 1, 9, 8, 1, 10, 8]),
        );
        let timer = DeviceTree::read(&blob).unwrap().timer().unwrap().unwrap();
        assert_eq!(timer.virtual_intid, 25);
        // Another compatible is not the generic timer.
        let blob = timer_tree("arm,sp804", Some(&xen));
        assert_eq!(DeviceTree::read(&blob).unwrap().timer(), Ok(None));
    }

    #[test]
    fn bad_timer_specifiers_are_named() {
        let problem = |interrupts: Option<&[u32]>| {
            let blob = timer_tree("arm,armv8-timer", interrupts);
            match DeviceTree::read(&blob).unwrap().timer() {
                Err(DtError::Interrupts { path, problem }) => {
                    assert_eq!(path, "/timer");
                    problem
                }
                other => panic!("expected an interrupts error, got {other:?}"),
            }
        };
        assert_eq!(problem(None), InterruptProblem::BadSpecifier { bytes: 0 });
        assert_eq!(
            problem(Some(&[1, 13, 8, 1, 14, 8])),
            InterruptProblem::BadSpecifier { bytes: 24 }
        );
        assert_eq!(
            problem(Some(&[1, 13, 8, 1, 14, 8, 1, 11, 8, 1])),
            InterruptProblem::BadSpecifier { bytes: 40 }
        );
        // An SPI as the virtual timer.
        assert_eq!(
            problem(Some(&[1, 13, 8, 1, 14, 8, 0, 11, 8])),
            InterruptProblem::NotAPpi {
                kind: 0,
                number: 11
            }
        );
        assert_eq!(
            problem(Some(&[1, 13, 8, 1, 14, 8, 1, 16, 8])),
            InterruptProblem::NotAPpi {
                kind: 1,
                number: 16
            }
        );
    }

    /// What Xen writes into a dom0less domU with `xen,enhanced` on QEMU virt (GICv3).
    fn xen_domu(interrupts: Option<&[u32]>) -> Vec<u8> {
        tree(|writer| {
            writer
                .begin("interrupt-controller@3001000")
                .string("compatible", "arm,gic-v3")
                .cells("#interrupt-cells", &[3])
                .property("interrupt-controller", &[]);
            writer
                .cells(
                    "reg",
                    &[0, 0x0300_1000, 0, 0x1_0000, 0, 0x0302_0000, 0, 0x2_0000],
                )
                .end();
            writer
                .begin("hypervisor")
                .strings("compatible", &["xen,xen-4.17", "xen,xen"]);
            writer.cells("reg", &[0, 0x3800_0000, 0, 0x100_0000]);
            if let Some(interrupts) = interrupts {
                writer.cells("interrupts", interrupts);
            }
            writer.end();
        })
    }

    #[test]
    fn xen_domu_gives_the_upcall_ppi_and_the_vgic() {
        let blob = xen_domu(Some(&[1, 15, 0xf08]));
        let tree = DeviceTree::read(&blob).unwrap();
        let hypervisor = tree.hypervisor().unwrap().unwrap();
        assert_eq!(hypervisor.path, "/hypervisor");
        assert_eq!(hypervisor.upcall_intid, 31);
        assert_eq!(hypervisor.grant_table, Some(range(0x3800_0000, 0x100_0000)));
        assert_eq!(
            tree.interrupt_controller().unwrap().frames,
            GicFrames::V3 {
                distributor: range(0x0300_1000, 0x1_0000),
                redistributors: range(0x0302_0000, 0x2_0000),
            }
        );
        // Another PPI is taken as written; without `interrupts`, Xen's fixed PPI applies.
        let blob = xen_domu(Some(&[1, 14, 0xf08]));
        let tree = DeviceTree::read(&blob).unwrap();
        assert_eq!(tree.hypervisor().unwrap().unwrap().upcall_intid, 30);
        let blob = xen_domu(None);
        let tree = DeviceTree::read(&blob).unwrap();
        assert_eq!(
            tree.hypervisor().unwrap().unwrap().upcall_intid,
            XEN_DEFAULT_UPCALL_INTID
        );
    }

    #[test]
    fn bad_upcall_specifiers_are_named() {
        let message = |interrupts: &[u32]| {
            let blob = xen_domu(Some(interrupts));
            DeviceTree::read(&blob)
                .unwrap()
                .hypervisor()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message(&[0, 5, 4]),
            "/hypervisor: interrupts = <0 5 ...> is not a PPI (type 1, number 0..15)"
        );
        assert_eq!(
            message(&[1, 15]),
            "/hypervisor: interrupts is 8 bytes, expected one 3-cell GIC specifier (12 bytes)"
        );
    }

    #[test]
    fn gic_v2_under_a_bus_is_translated() {
        // ZynqMP-like: GIC-400 under /axi, whose ranges move child 0xf900_0000 to CPU
        // 0x1_f900_0000 (a made-up offset, so that translation shows).
        for compatible in ["arm,gic-400", "arm,cortex-a15-gic"] {
            let blob = tree(|writer| {
                writer
                    .begin("axi")
                    .cells("#address-cells", &[1])
                    .cells("#size-cells", &[1]);
                writer.cells("ranges", &[0xf900_0000, 0x1, 0xf900_0000, 0x10_0000]);
                writer
                    .begin("interrupt-controller@f9010000")
                    .strings("compatible", &[compatible, "arm,gic-400"]);
                writer.cells(
                    "reg",
                    &[
                        0xf901_0000,
                        0x1_0000,
                        0xf902_f000,
                        0x2000,
                        0xf904_0000,
                        0x2_0000,
                        0xf906_f000,
                        0x2000,
                    ],
                );
                writer.end().end();
            });
            let gic = DeviceTree::read(&blob)
                .unwrap()
                .interrupt_controller()
                .unwrap();
            assert_eq!(gic.path, "/axi/interrupt-controller@f9010000");
            assert_eq!(
                gic.frames,
                GicFrames::V2 {
                    distributor: range(0x1_f901_0000, 0x1_0000),
                    cpu_interface: range(0x1_f902_f000, 0x2000),
                },
                "{compatible}"
            );
        }
    }

    #[test]
    fn missing_or_short_gic_is_an_error() {
        let blob = tree(|_| {});
        assert_eq!(
            DeviceTree::read(&blob).unwrap().interrupt_controller(),
            Err(DtError::NoInterruptController)
        );
        let blob = tree(|writer| {
            writer
                .begin("intc@8000000")
                .string("compatible", "arm,gic-v3")
                .cells("reg", &[0, 0x0800_0000, 0, 0x1_0000])
                .end();
        });
        assert_eq!(
            DeviceTree::read(&blob)
                .unwrap()
                .interrupt_controller()
                .unwrap_err()
                .to_string(),
            "/intc@8000000: reg has 1 (address, size) entries, expected at least 2 \
             (distributor, then redistributors or CPU interface)"
        );
        // A disabled GIC is not the interrupt controller.
        let blob = tree(|writer| {
            writer
                .begin("intc@8000000")
                .string("compatible", "arm,gic-v3")
                .string("status", "disabled");
            writer
                .cells(
                    "reg",
                    &[0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0x1000],
                )
                .end();
        });
        assert_eq!(
            DeviceTree::read(&blob).unwrap().interrupt_controller(),
            Err(DtError::NoInterruptController)
        );
    }
}
