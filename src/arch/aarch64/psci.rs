//! PSCI calls (Arm DEN 0022): SYSTEM_OFF through the conduit named by the device tree.

use spin::Once;

use sramlink::devicetree::PsciConduit;

/// PSCI 0.2+ SYSTEM_OFF function ID (SMC32 fast call).
const SYSTEM_OFF: u64 = 0x8400_0008;

static CONDUIT: Once<Option<PsciConduit>> = Once::new();

/// Records the conduit for [`system_off`]. Call with the MMU on (it uses an atomic).
pub fn init(conduit: Option<PsciConduit>) {
    CONDUIT.call_once(|| conduit);
}

/// The recorded conduit, if [`init`] ran and the tree named one.
pub fn conduit() -> Option<PsciConduit> {
    CONDUIT.get().copied().flatten()
}

/// Issues one PSCI call with no arguments and returns its status.
fn call(conduit: PsciConduit, function: u64) -> i64 {
    let mut result = function;
    match conduit {
        // SAFETY: an SMCCC call: x0 carries the function ID and the result, x1-x17 may be
        // clobbered (covered by the C ABI clobbers); no memory of ours is touched.
        PsciConduit::Hvc => unsafe {
            core::arch::asm!("hvc #0", inout("x0") result, clobber_abi("C"), options(nostack));
        },
        // SAFETY: as for `hvc`.
        PsciConduit::Smc => unsafe {
            core::arch::asm!("smc #0", inout("x0") result, clobber_abi("C"), options(nostack));
        },
    }
    result as i64
}

/// Powers the guest off (PSCI SYSTEM_OFF) through `conduit`; parks the CPU if that returns or
/// no conduit is known. Usable with the MMU off.
pub fn system_off_with(conduit: Option<PsciConduit>) -> ! {
    if let Some(conduit) = conduit {
        // SYSTEM_OFF does not return on success; a returned error leaves parking.
        let _ = call(conduit, SYSTEM_OFF);
    }
    super::cpu::park()
}

/// Powers the guest off through the conduit recorded by [`init`].
pub fn system_off() -> ! {
    system_off_with(conduit())
}
