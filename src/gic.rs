//! The GIC's memory-mapped registers (Arm IHI 0048B GICv2, IHI 0069 GICv3) and the pure
//! arithmetic around them; the driver that touches them is `arch/aarch64/gic.rs`.
//!
//! Only what the guest uses is named: enabling one PPI (the Xen upcall) on its own CPU,
//! acknowledging and ending it. The distributor's first 4 KiB have the same layout in both
//! versions for those registers; GICv3 adds the redistributors (one 128 KiB frame pair per CPU:
//! RD_base with control registers, then SGI_base with the SGI/PPI registers) and moves the CPU
//! interface into system registers.

use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_bitfields! {u32,
    /// GICD_CTLR (GICv2, and GICv3 with one security state as Xen's vGIC presents it).
    pub GICD_CTLR [
        /// Group 0 forwarding (GICv2: all interrupts of a guest without security extensions).
        ENABLE_GRP0 OFFSET(0) NUMBITS(1) [],
        /// Group 1 forwarding.
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) [],
        /// GICv3 affinity routing (RAO under Xen's vGICv3).
        ARE OFFSET(4) NUMBITS(1) [],
        /// GICv3: a write to CTLR is still taking effect.
        RWP OFFSET(31) NUMBITS(1) []
    ],
    /// GICC_CTLR (GICv2 CPU interface).
    pub GICC_CTLR [
        /// Signal group 0 interrupts.
        ENABLE_GRP0 OFFSET(0) NUMBITS(1) [],
        /// Signal group 1 interrupts.
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) []
    ],
    /// GICR_WAKER (GICv3 redistributor power state).
    pub GICR_WAKER [
        /// Software says the CPU is asleep.
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) [],
        /// The redistributor says its interface is quiescent.
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) []
    ]
}

register_structs! {
    /// Distributor (GICD), first 4 KiB: the registers common to GICv2 and GICv3.
    pub Distributor {
        (0x000 => pub ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x004 => pub typer: ReadOnly<u32>),
        (0x008 => pub iidr: ReadOnly<u32>),
        (0x00c => _reserved0),
        (0x080 => pub igroupr: [ReadWrite<u32>; 32]),
        (0x100 => pub isenabler: [ReadWrite<u32>; 32]),
        (0x180 => pub icenabler: [ReadWrite<u32>; 32]),
        (0x200 => _reserved1),
        (0x400 => pub ipriorityr: [ReadWrite<u8>; 1020]),
        (0x7fc => _reserved2),
        (0x1000 => @END),
    }
}

register_structs! {
    /// GICv2 CPU interface (GICC), first 4 KiB (EOImode 0: no GICC_DIR needed).
    pub CpuInterface {
        (0x000 => pub ctlr: ReadWrite<u32, GICC_CTLR::Register>),
        (0x004 => pub pmr: ReadWrite<u32>),
        (0x008 => pub bpr: ReadWrite<u32>),
        (0x00c => pub iar: ReadOnly<u32>),
        (0x010 => pub eoir: WriteOnly<u32>),
        (0x014 => pub rpr: ReadOnly<u32>),
        (0x018 => pub hppir: ReadOnly<u32>),
        (0x01c => _reserved0),
        (0x1000 => @END),
    }
}

register_structs! {
    /// GICv3 redistributor, RD_base frame (64 KiB).
    pub RedistributorControl {
        (0x0000 => pub ctlr: ReadWrite<u32>),
        (0x0004 => pub iidr: ReadOnly<u32>),
        (0x0008 => pub typer: ReadOnly<u64>),
        (0x0010 => pub statusr: ReadWrite<u32>),
        (0x0014 => pub waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => _reserved0),
        (0x10000 => @END),
    }
}

register_structs! {
    /// GICv3 redistributor, SGI_base frame (64 KiB, right after RD_base): SGIs and PPIs.
    pub RedistributorSgi {
        (0x0000 => _reserved0),
        (0x0080 => pub igroupr0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        (0x0100 => pub isenabler0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        (0x0180 => pub icenabler0: ReadWrite<u32>),
        (0x0184 => _reserved3),
        (0x0400 => pub ipriorityr: [ReadWrite<u8>; 32]),
        (0x0420 => _reserved4),
        (0x0c00 => pub icfgr: [ReadWrite<u32>; 2]),
        (0x0c08 => _reserved5),
        (0x10000 => @END),
    }
}

/// INTIDs 1020-1023 are special: nothing (more) to acknowledge.
pub const SPURIOUS_INTID_FIRST: u32 = 1020;
/// INTIDs below this are SGIs and PPIs (private to a CPU; banked registers).
pub const PRIVATE_INTIDS: u32 = 32;
/// Size of one GICv3 redistributor's RD_base + SGI_base frames.
pub const REDISTRIBUTOR_FRAMES: u64 = 0x2_0000;
/// Offset of SGI_base from RD_base.
pub const SGI_FRAME_OFFSET: u64 = 0x1_0000;
/// Priority given to the upcall (lower is more urgent; only one interrupt is used).
pub const UPCALL_PRIORITY: u8 = 0xa0;
/// Priority mask that lets every priority through (ICC_PMR_EL1 / GICC_PMR).
pub const PRIORITY_MASK_ALL: u32 = 0xff;

/// GICR_TYPER.Last: this is the last redistributor of its region.
const TYPER_LAST: u64 = 1 << 4;
/// GICR_TYPER.VLPIS: the redistributor has two more frames (GICv4 virtual LPIs).
const TYPER_VLPIS: u64 = 1 << 1;

/// An IAR value's INTID (bits 23:0 of ICC_IAR1_EL1, 9:0 of GICC_IAR).
pub fn intid(iar: u32, version_3: bool) -> u32 {
    if version_3 {
        iar & 0xff_ffff
    } else {
        iar & 0x3ff
    }
}

/// Whether an acknowledged INTID is a real interrupt (not 1020-1023).
pub fn is_spurious(intid: u32) -> bool {
    (SPURIOUS_INTID_FIRST..1024).contains(&intid)
}

/// The register index and bit of `intid` in a 1-bit-per-interrupt array (ISENABLER, ...).
pub fn bit_position(intid: u32) -> (usize, u32) {
    ((intid / 32) as usize, 1 << (intid % 32))
}

/// The affinity a redistributor's GICR_TYPER[63:32] must show for the CPU whose MPIDR_EL1 is
/// `mpidr`: Aff3.Aff2.Aff1.Aff0.
pub fn redistributor_affinity(mpidr: u64) -> u32 {
    let aff3 = (mpidr >> 32) & 0xff;
    let aff2_to_0 = mpidr & 0xff_ffff;
    ((aff3 << 24) | aff2_to_0) as u32
}

/// What one redistributor's GICR_TYPER says: its affinity, and the offset of the next one
/// (`None` when it is the last of its region).
pub fn redistributor_step(typer: u64) -> (u32, Option<u64>) {
    let affinity = (typer >> 32) as u32;
    if typer & TYPER_LAST != 0 {
        return (affinity, None);
    }
    let stride = if typer & TYPER_VLPIS != 0 {
        2 * REDISTRIBUTOR_FRAMES
    } else {
        REDISTRIBUTOR_FRAMES
    };
    (affinity, Some(stride))
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn register_offsets_match_the_architecture() {
        // register_structs! asserts its own offsets at compile time; these pin the ones the
        // driver relies on against the specifications' tables.
        assert_eq!(offset_of!(Distributor, isenabler), 0x100);
        assert_eq!(offset_of!(Distributor, icenabler), 0x180);
        assert_eq!(offset_of!(Distributor, ipriorityr), 0x400);
        assert_eq!(size_of::<Distributor>(), 0x1000);
        assert_eq!(offset_of!(CpuInterface, pmr), 0x004);
        assert_eq!(offset_of!(CpuInterface, iar), 0x00c);
        assert_eq!(offset_of!(CpuInterface, eoir), 0x010);
        assert_eq!(offset_of!(RedistributorControl, typer), 0x008);
        assert_eq!(offset_of!(RedistributorControl, waker), 0x014);
        assert_eq!(size_of::<RedistributorControl>() as u64, SGI_FRAME_OFFSET);
        assert_eq!(offset_of!(RedistributorSgi, igroupr0), 0x080);
        assert_eq!(offset_of!(RedistributorSgi, isenabler0), 0x100);
        assert_eq!(offset_of!(RedistributorSgi, ipriorityr), 0x400);
        assert_eq!(offset_of!(RedistributorSgi, icfgr), 0xc00);
        assert_eq!(
            (size_of::<RedistributorControl>() + size_of::<RedistributorSgi>()) as u64,
            REDISTRIBUTOR_FRAMES
        );
    }

    #[test]
    fn intids_bits_and_spurious_values() {
        assert_eq!(bit_position(31), (0, 1 << 31));
        assert_eq!(bit_position(32), (1, 1));
        assert_eq!(intid(0x1f, true), 31);
        // GICv2's IAR carries the source CPU in bits 12:10.
        assert_eq!(intid(0x1c1f, false), 31);
        assert!(is_spurious(1023) && is_spurious(1020));
        assert!(!is_spurious(31) && !is_spurious(1019) && !is_spurious(8192));
    }

    #[test]
    fn redistributor_walk_arithmetic() {
        assert_eq!(redistributor_affinity(0x8000_0000), 0);
        assert_eq!(redistributor_affinity(0x01_8001_0203), 0x0101_0203);
        assert_eq!(
            redistributor_step(0x0000_0001_0000_0000),
            (1, Some(0x2_0000))
        );
        assert_eq!(redistributor_step(TYPER_VLPIS), (0, Some(0x4_0000)));
        assert_eq!(redistributor_step(TYPER_LAST | (7 << 32)), (7, None));
    }
}
