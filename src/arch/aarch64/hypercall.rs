//! Xen hypercalls (`hvc #0xEA1`) and the guarded probes that tell whether Xen is there.

use sramlink::xen::{HYPERCALL_XEN_VERSION, SMCCC_HYPERVISOR_CALL_UID, XENVER_VERSION, XenError};

unsafe extern "C" {
    /// `hvc #0; ret` in `boot/vectors.s` (see there and `exception.rs`).
    static __sramlink_hvc_probe: u8;
    /// `hvc #0xea1; ret` in `boot/vectors.s`.
    static __sramlink_xen_probe: u8;
}

/// Whether `address` is one of the probes' `hvc`, which the exception handler skips when
/// undefined (setting x17 to [`PROBE_UNDEFINED`]).
pub fn is_probe(address: u64) -> bool {
    address == (&raw const __sramlink_hvc_probe) as u64
        || address == (&raw const __sramlink_xen_probe) as u64
}

/// x17 after a probe whose `hvc` was undefined (nothing at EL2 serves it).
pub const PROBE_UNDEFINED: u64 = 1;

/// What a probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `hvc` is undefined here: no hypervisor.
    Undefined,
    /// x0-x3 after the call.
    Answered([u64; 4]),
}

/// Runs probe `which` (0: `hvc #0`, SMCCC; 1: `hvc #0xea1`, Xen) with x0/x1/x16 set.
///
/// # Safety
///
/// Only when whatever sits at EL2 tolerates an unknown call on `hvc` or there is no EL2: the
/// kernel was entered at EL1 and the device tree's PSCI conduit is `hvc` (Xen, KVM, QEMU
/// emulating PSCI without EL2). Never after entering at EL2 (our own EL2 has no vectors).
unsafe fn probe(which: u8, x0: u64, x1: u64, x16: u64) -> Probe {
    let (mut r0, mut r1, mut r2, mut r3, mut undefined) = (x0, x1, 0u64, 0u64, 0u64);
    // An SMCCC fast call or a Xen hypercall without memory arguments: results in x0-x3;
    // x4-x17 may be clobbered, covered by the C ABI clobbers with x30 for the `bl`. Where
    // `hvc` is undefined the exception handler resumes after it with x17 set.
    // SAFETY: per the contract above, and no memory of ours is touched (a null buffer).
    unsafe {
        if which == 0 {
            core::arch::asm!(
                "bl __sramlink_hvc_probe",
                inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
                inout("x17") undefined, in("x16") x16,
                clobber_abi("C"),
            );
        } else {
            core::arch::asm!(
                "bl __sramlink_xen_probe",
                inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
                inout("x17") undefined, in("x16") x16,
                clobber_abi("C"),
            );
        }
    }
    if undefined == PROBE_UNDEFINED {
        Probe::Undefined
    } else {
        Probe::Answered([r0, r1, r2, r3])
    }
}

/// Asks the hypervisor behind `hvc` for its SMCCC service UID (x0-x3).
///
/// # Safety
///
/// As for [`probe`].
pub unsafe fn hypervisor_uid() -> Probe {
    // SAFETY: forwarded.
    unsafe { probe(0, SMCCC_HYPERVISOR_CALL_UID, 0, 0) }
}

/// Asks Xen for its version (`xen_version(XENVER_version, NULL)`): x0 = major << 16 | minor.
///
/// # Safety
///
/// As for [`probe`].
pub unsafe fn xen_version() -> Probe {
    // SAFETY: forwarded; XENVER_version takes no buffer (NULL).
    unsafe { probe(1, XENVER_VERSION, 0, HYPERCALL_XEN_VERSION) }
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
        // Xen's Arm hypercall ABI (Xen is there: this token exists): number in x16, arguments
        // in x0-x4, result in x0; Xen may clobber x1-x4 and x16 (covered by the C ABI
        // clobbers). Not `nomem`: the compiler keeps accesses to `argument` in order.
        // SAFETY: `argument` is a live, exclusive structure for the call's duration, which Xen
        // reads and writes through its IPA in Normal write-back memory, coherent with this CPU.
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
