//! The interrupt side of the tree: the GIC (version and register frames) and Xen's
//! `/hypervisor` node (the event-channel upcall interrupt).
//!
//! - GIC: the first enabled node whose `compatible` names a GICv3 (`arm,gic-v3`: `reg` =
//!   distributor, then the first redistributor region) or a GICv2 (`arm,gic-400`,
//!   `arm,cortex-a15-gic`, `arm,cortex-a9-gic`, `arm,cortex-a7-gic`: `reg` = distributor, then
//!   the CPU interface). Further `reg` entries (GICv2 virtualisation frames, more
//!   redistributor regions) are not used.
//! - `/hypervisor` (Xen adds it to a dom0less domU with `xen,enhanced`): `compatible` holds
//!   `xen,xen`; `interrupts = <1 N flags>` is the upcall PPI N (INTID 16 + N). Xen's guest ABI
//!   fixes the upcall at INTID 31 (`GUEST_EVTCHN_PPI`), which is what applies without the node.

use core::fmt;

use crate::cells::be_u32;
use crate::range::PhysRange;

/// `compatible` strings of GICv3 distributors.
pub const GIC_V3_COMPATIBLE: &[&str] = &["arm,gic-v3"];
/// `compatible` strings of GICv2 distributors (GIC-400 on the ZynqMP; Xen's vGICv2 says
/// `arm,cortex-a15-gic`).
pub const GIC_V2_COMPATIBLE: &[&str] = &[
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
];
/// `compatible` of Xen's `/hypervisor` node.
pub const XEN_COMPATIBLE: &str = "xen,xen";
/// Xen's event-channel upcall interrupt on Arm when the tree does not say
/// (`GUEST_EVTCHN_PPI` in Xen's `public/arch-arm.h`).
pub const DEFAULT_XEN_UPCALL_INTID: u32 = 31;
/// First PPI INTID (SGIs are 0-15).
const PPI_BASE: u32 = 16;
/// PPIs per CPU.
const PPI_COUNT: u32 = 16;
/// The first cell of a GIC `interrupts` specifier for a PPI (0 is an SPI).
const GIC_SPECIFIER_PPI: u32 = 1;

/// GIC architecture version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GicVersion {
    /// GICv2: memory-mapped distributor and CPU interface.
    V2,
    /// GICv3: memory-mapped distributor and redistributors, system-register CPU interface.
    V3,
}

impl GicVersion {
    /// The version a node's `compatible` list names, if it is a GIC the guest drives.
    pub fn from_compatible(compatible: &[u8]) -> Option<GicVersion> {
        let names = || compatible.split(|byte| *byte == 0);
        let any = |list: &[&str]| names().any(|name| list.iter().any(|g| g.as_bytes() == name));
        if any(GIC_V3_COMPATIBLE) {
            Some(GicVersion::V3)
        } else if any(GIC_V2_COMPATIBLE) {
            Some(GicVersion::V2)
        } else {
            None
        }
    }
}

impl fmt::Display for GicVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GicVersion::V2 => "GICv2",
            GicVersion::V3 => "GICv3",
        })
    }
}

/// The interrupt controller's register frames.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Gic {
    /// Architecture version.
    pub version: GicVersion,
    /// Distributor (GICD).
    pub distributor: PhysRange,
    /// GICv2: the CPU interface (GICC); GICv3: the first redistributor region (GICR).
    pub second: PhysRange,
}

/// What is wrong with `/hypervisor`'s `interrupts`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UpcallProblem {
    /// Not one 3-cell GIC specifier.
    Length {
        /// Length of `interrupts` in bytes.
        bytes: usize,
    },
    /// Not a PPI (`<1 N flags>` with N < 16): the upcall is a per-CPU interrupt.
    NotPpi {
        /// First cell (interrupt type).
        kind: u32,
        /// Second cell (number).
        number: u32,
    },
}

impl fmt::Display for UpcallProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpcallProblem::Length { bytes } => write!(
                f,
                "/hypervisor: interrupts is {bytes} bytes, expected one 3-cell GIC specifier"
            ),
            UpcallProblem::NotPpi { kind, number } => write!(
                f,
                "/hypervisor: interrupts = <{kind} {number} ...> is not a PPI \
                 (<1 N flags> with N < 16)"
            ),
        }
    }
}

/// Xen's `/hypervisor` node as the guest needs it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct XenNode {
    /// The upcall INTID (`interrupts`, or [`DEFAULT_XEN_UPCALL_INTID`] without it).
    pub upcall: Result<u32, UpcallProblem>,
}

/// The upcall INTID of a `/hypervisor` node with `interrupts` = `value` (absent: Xen's fixed
/// default).
pub fn upcall_intid(value: Option<&[u8]>) -> Result<u32, UpcallProblem> {
    let Some(value) = value else {
        return Ok(DEFAULT_XEN_UPCALL_INTID);
    };
    if value.len() != 12 {
        return Err(UpcallProblem::Length { bytes: value.len() });
    }
    let kind = be_u32(value).unwrap_or(u32::MAX);
    let number = be_u32(&value[4..]).unwrap_or(u32::MAX);
    if kind != GIC_SPECIFIER_PPI || number >= PPI_COUNT {
        return Err(UpcallProblem::NotPpi { kind, number });
    }
    Ok(PPI_BASE + number)
}

/// Whether a `compatible` list names Xen's `/hypervisor` node.
pub fn is_xen_hypervisor(compatible: &[u8]) -> bool {
    compatible
        .split(|byte| *byte == 0)
        .any(|name| name == XEN_COMPATIBLE.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(values: &[u32]) -> std::vec::Vec<u8> {
        values
            .iter()
            .flat_map(|value| value.to_be_bytes())
            .collect()
    }

    #[test]
    fn gic_versions_from_compatible_lists() {
        assert_eq!(
            GicVersion::from_compatible(b"arm,gic-v3\0"),
            Some(GicVersion::V3)
        );
        // Xen's vGICv2 and the ZynqMP's GIC-400.
        assert_eq!(
            GicVersion::from_compatible(b"arm,cortex-a15-gic\0arm,cortex-a9-gic\0"),
            Some(GicVersion::V2)
        );
        assert_eq!(
            GicVersion::from_compatible(b"arm,gic-400\0arm,cortex-a15-gic\0"),
            Some(GicVersion::V2)
        );
        assert_eq!(GicVersion::from_compatible(b"arm,gic-v3-its\0"), None);
        assert_eq!(GicVersion::from_compatible(b"arm,gic-v3x\0"), None);
        assert_eq!(GicVersion::from_compatible(b""), None);
    }

    #[test]
    fn upcall_ppi_from_interrupts_or_xens_default() {
        assert_eq!(upcall_intid(None), Ok(31));
        // What Xen 4.17 writes: <1 15 0xf08>.
        assert_eq!(upcall_intid(Some(&cells(&[1, 15, 0xf08]))), Ok(31));
        assert_eq!(upcall_intid(Some(&cells(&[1, 0, 4]))), Ok(16));
        assert_eq!(
            upcall_intid(Some(&cells(&[0, 15, 4]))),
            Err(UpcallProblem::NotPpi {
                kind: 0,
                number: 15
            })
        );
        assert_eq!(
            upcall_intid(Some(&cells(&[1, 16, 4]))),
            Err(UpcallProblem::NotPpi {
                kind: 1,
                number: 16
            })
        );
        assert_eq!(
            upcall_intid(Some(&cells(&[1, 15]))),
            Err(UpcallProblem::Length { bytes: 8 })
        );
        let message = std::string::ToString::to_string(&UpcallProblem::Length { bytes: 8 });
        assert!(message.contains("3-cell"), "{message}");
    }

    #[test]
    fn xen_hypervisor_compatible() {
        assert!(is_xen_hypervisor(b"xen,xen-4.17\0xen,xen\0"));
        assert!(!is_xen_hypervisor(b"xen,xen-4.17\0"));
        assert!(!is_xen_hypervisor(b"xen,xenvm\0"));
    }
}
