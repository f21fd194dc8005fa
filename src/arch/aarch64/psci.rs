//! PSCI calls (Arm DEN 0022): SYSTEM_OFF through the conduit named by the device tree.
//!
//! The conduit is recorded in a plain static as soon as the device tree is parsed, with the MMU
//! still off, so that every later stop (fatal error, panic, exception) powers off through it.
//! When the tree cannot be read at all, [`system_off_without_device_tree`] guesses the conduit
//! from the exception level the kernel was entered at (see there).

use core::sync::atomic::{AtomicUsize, Ordering};

use sramlink::devicetree::PsciConduit;

/// PSCI 0.2+ SYSTEM_OFF function ID (SMC32 fast call).
const SYSTEM_OFF: u64 = 0x8400_0008;

/// [`CONDUIT`] values.
const NO_CONDUIT: usize = 0;
const HVC: usize = 1;
const SMC: usize = 2;

/// The device tree's conduit: [`NO_CONDUIT`], [`HVC`] or [`SMC`].
///
/// Only plain loads and stores (`Relaxed` `load`/`store` compile to `ldr`/`str`): they work with
/// the MMU off, where all memory is Device and exclusives (`Once`, read-modify-write atomics)
/// cannot be relied on. It lives in BSS, inside the image, so the data-cache invalidation done
/// before the MMU goes on keeps the value stored with the MMU off visible afterwards. Only the
/// boot CPU runs, and it reads only after its own store, in program order: no ordering needed.
static CONDUIT: AtomicUsize = AtomicUsize::new(NO_CONDUIT);

/// Records the device tree's conduit for [`system_off`]. Works with the MMU off or on.
pub fn record(conduit: Option<PsciConduit>) {
    let value = match conduit {
        None => NO_CONDUIT,
        Some(PsciConduit::Hvc) => HVC,
        Some(PsciConduit::Smc) => SMC,
    };
    CONDUIT.store(value, Ordering::Relaxed);
}

/// The recorded conduit, if the tree named one.
pub fn conduit() -> Option<PsciConduit> {
    match CONDUIT.load(Ordering::Relaxed) {
        HVC => Some(PsciConduit::Hvc),
        SMC => Some(PsciConduit::Smc),
        _ => None,
    }
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
fn system_off_with(conduit: Option<PsciConduit>) -> ! {
    if let Some(conduit) = conduit {
        // Barrier: every store of ours (the shared region's last index and state word, the
        // console's last bytes) completes before the call that ends this guest: `dmb` only
        // orders accesses, `dsb` waits for them to finish, and SYSTEM_OFF may stop the CPU
        // with stores still in its write buffer. SY: the whole system (the hypervisor or
        // firmware behind the call included), the memory may be Device memory.
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
        // SYSTEM_OFF does not return on success; a returned error leaves parking.
        let _ = call(conduit, SYSTEM_OFF);
    }
    super::cpu::park()
}

/// Powers the guest off through the recorded conduit (parks without one). Usable with the MMU
/// off.
pub fn system_off() -> ! {
    system_off_with(conduit())
}

/// Powers off when the device tree could not be read at all (no conduit recorded), trying the
/// one conduit that the exception level at entry makes safe to try:
///
/// - Entered at EL1: `hvc`. Whatever sits at EL2 is a hypervisor, and the ones that start such
///   guests (Xen, KVM) serve PSCI on `hvc`; an SMCCC-conforming one answers an unknown function
///   with NOT_SUPPORTED, which returns here. Without EL2, `hvc` is an undefined instruction:
///   the exception vectors report it (to no console: none is known) and [`system_off`] parks,
///   nothing recorded. QEMU without EL2 (`virt`) emulates PSCI on exactly this `hvc`.
/// - Entered at EL2: `smc`, never `hvc` (that would trap to our own EL2, which has no vectors).
///   `HCR_EL2.TSC` is clear, so `smc` goes to EL3 firmware, whose standard service PSCI is (or
///   NOT_SUPPORTED returns), is emulated by QEMU (`virtualization=on`), or, without EL3, is an
///   undefined instruction that ends in parking as above.
/// - Anything else: park.
pub fn system_off_without_device_tree(entry_el: u64) -> ! {
    system_off_with(match entry_el {
        1 => Some(PsciConduit::Hvc),
        2 => Some(PsciConduit::Smc),
        _ => None,
    })
}
