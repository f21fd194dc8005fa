//! Turning the MMU on with the identity map built by [`sramlink::paging`].

use core::fmt;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    ID_AA64MMFR0_EL1, MAIR_EL1, ReadWriteable, Readable, SCTLR_EL1, TCR_EL1, TTBR0_EL1, Writeable,
};

use sramlink::paging::{MAIR_EL1_VALUE, T0SZ};
use sramlink_devicetree::PhysRange;

/// Why the MMU cannot be turned on.
#[derive(Clone, Copy, Debug)]
pub enum MmuError {
    /// ID_AA64MMFR0_EL1.TGran4 says the 4 KiB granule is not implemented.
    NoFourKiBGranule,
    /// A mapped address is beyond what the CPU's physical address size can output.
    BeyondPhysicalAddressSize {
        /// The highest address the map needs (exclusive).
        end: u64,
        /// ID_AA64MMFR0_EL1.PARange in bits.
        bits: u32,
    },
}

impl fmt::Display for MmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmuError::NoFourKiBGranule => write!(f, "the CPU does not support the 4 KiB granule"),
            MmuError::BeyondPhysicalAddressSize { end, bits } => write!(
                f,
                "mapping up to {end:#x} needs more than the CPU's {bits}-bit physical addresses"
            ),
        }
    }
}

/// PARange encoding → bits (Arm ARM, ID_AA64MMFR0_EL1.PARange), capped at the 48 bits the
/// descriptors carry.
fn physical_address_bits(pa_range: u64) -> (u64, u32) {
    match pa_range {
        0 => (0, 32),
        1 => (1, 36),
        2 => (2, 40),
        3 => (3, 42),
        4 => (4, 44),
        _ => (5, 48),
    }
}

/// Programs MAIR/TCR/TTBR0 and enables the MMU and both caches.
///
/// `highest_end` is the end of the highest mapped range, checked against the CPU's physical
/// address size; `written_with_mmu_off` is invalidated from the data cache first (see
/// [`super::cpu::invalidate_data_cache`]): it must cover the tables and everything else the
/// kernel has written so far, i.e. the image (data, BSS with the table pool, stacks).
///
/// # Safety
///
/// - Runs once, at EL1, with the MMU off.
/// - `root` is an L1 table of a complete identity map built by `sramlink::paging` that maps
///   the whole image (code executable), the stacks and everything the kernel touches next.
/// - The caller's contract for `invalidate_data_cache` holds for `written_with_mmu_off`.
pub unsafe fn enable(
    root: u64,
    highest_end: u64,
    written_with_mmu_off: PhysRange,
) -> Result<(), MmuError> {
    if ID_AA64MMFR0_EL1.matches_all(ID_AA64MMFR0_EL1::TGran4::NotSupported) {
        return Err(MmuError::NoFourKiBGranule);
    }
    let (ips, bits) = physical_address_bits(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange));
    if highest_end > 1u64 << bits {
        return Err(MmuError::BeyondPhysicalAddressSize {
            end: highest_end,
            bits,
        });
    }

    MAIR_EL1.set(MAIR_EL1_VALUE);
    TTBR0_EL1.set_baddr(root);
    TCR_EL1.write(
        TCR_EL1::TBI0::Used
            + TCR_EL1::IPS.val(ips)
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::A1::TTBR0
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::SH0::Inner
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::EPD0::EnableTTBR0Walks
            + TCR_EL1::T0SZ.val(T0SZ),
    );

    // SAFETY: forwarded from this function's contract.
    unsafe { super::cpu::invalidate_data_cache(written_with_mmu_off) };

    // Orders the table stores (made with the MMU off, straight to memory) before the walks the
    // MMU will start below. ISH suffices: the only walker is this CPU's, in its inner domain.
    barrier::dsb(barrier::ISHST);
    // SAFETY: drops this CPU's stale EL1&0 TLB entries (from reset or a previous owner); no
    // memory access. `vmalle1` is local, so its completion below needs only this CPU's domain.
    unsafe { core::arch::asm!("tlbi vmalle1", options(nostack, nomem)) };
    // Completes the invalidation; ISH covers this CPU (a local TLBI needs no wider domain).
    barrier::dsb(barrier::ISH);
    // The MAIR/TCR/TTBR0 writes and the invalidation take effect before SCTLR is changed.
    barrier::isb(barrier::SY);

    SCTLR_EL1.modify(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable + SCTLR_EL1::I::Cacheable);
    // The next instruction is fetched with translation on (identity map: same address).
    barrier::isb(barrier::SY);
    Ok(())
}
