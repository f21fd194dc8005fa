//! Xen hypercalls (`hvc #0xEA1`) and the guarded SMCCC probe that tells whether Xen is there.

use sramlink::xen::{SMCCC_HYPERVISOR_CALL_UID, XenError};

unsafe extern "C" {
    /// `hvc #0; ret` in `boot/vectors.s` (see there and `exception.rs`).
    static __sramlink_hvc_probe: u8;
}

/// The address of the probe's `hvc`, which the exception handler recognises.
pub fn probe_address() -> u64 {
    (&raw const __sramlink_hvc_probe) as u64
}

/// Asks the hypervisor behind `hvc` for its SMCCC service UID (w0-w3), or `None` when `hvc`
/// is undefined (no EL2) or the call is not supported.
///
/// # Safety
///
/// Only when whatever sits at EL2 follows SMCCC on `hvc` or there is no EL2: the kernel was
/// entered at EL1 and the device tree's PSCI conduit is `hvc` (Xen, KVM, QEMU emulating PSCI
/// without EL2). Never after entering at EL2 (our own EL2 has no vectors).
pub unsafe fn hypervisor_uid() -> Option<[u32; 4]> {
    let (mut x0, mut x1, mut x2, mut x3) = (SMCCC_HYPERVISOR_CALL_UID, 0u64, 0u64, 0u64);
    // SAFETY: an SMCCC fast call (function ID in x0, results in x0-x3, x4-x17 may be clobbered,
    // covered by the C ABI clobbers with x30 for the `bl`); where `hvc` is undefined the
    // exception handler resumes after it with x0 = -1. No memory of ours is touched.
    unsafe {
        core::arch::asm!(
            "bl __sramlink_hvc_probe",
            inout("x0") x0,
            inout("x1") x1,
            inout("x2") x2,
            inout("x3") x3,
            clobber_abi("C"),
        );
    }
    if x0 as i64 == -1 {
        return None;
    }
    Some([x0 as u32, x1 as u32, x2 as u32, x3 as u32])
}

/// Proof that Xen is the hypervisor: hypercalls are made through it.
#[derive(Clone, Copy, Debug)]
pub struct Xen {
    _private: (),
}

impl Xen {
    /// The token, on the caller's word.
    ///
    /// # Safety
    ///
    /// Xen is the hypervisor at EL2: its `/hypervisor` node is in the device tree Xen built,
    /// or [`hypervisor_uid`] returned Xen's UID.
    pub unsafe fn new_unchecked() -> Xen {
        Xen { _private: () }
    }

    /// One hypercall whose argument is one `#[repr(C)]` structure; negative results are
    /// errors. `argument` must be the structure Xen's headers pair with `command` (every
    /// caller passes the `sramlink::xen` type named for it).
    pub fn call<T>(
        &self,
        operation: &'static str,
        number: u64,
        command: u64,
        argument: &mut T,
    ) -> Result<u64, XenError> {
        let mut result = command;
        // SAFETY: Xen's Arm hypercall ABI (Xen is there: this token exists): number in x16,
        // arguments in x0-x4, result in x0; Xen may clobber x1-x4 and x16 (covered by the C
        // ABI clobbers). `argument` is a live, exclusive structure for the call's duration;
        // Xen reads and writes it through its IPA in Normal write-back memory, coherent with
        // this CPU's view. Not `nomem`: the compiler keeps accesses to it in order.
        unsafe {
            core::arch::asm!(
                "hvc #0xea1",
                inout("x0") result,
                in("x1") (argument as *mut T),
                in("x16") number,
                clobber_abi("C"),
            );
        }
        XenError::check(operation, result as i64)
    }
}
