//! Exception handling: IRQs go to the GIC driver, a probe's undefined `hvc` is skipped,
//! everything else is fatal (printed with ESR/ELR/FAR, then the guest stops).

use aarch64_cpu::registers::{ELR_EL1, ESR_EL1, FAR_EL1, Readable, SP_EL0, Writeable};

use super::{layout, psci};

/// The vector group and type `boot/vectors.s` passes in `x0`.
fn describe(kind: u64) -> &'static str {
    match kind {
        0 => "synchronous",
        1 => "IRQ",
        2 => "FIQ",
        3 => "SError",
        8..=11 => "lower-EL AArch64",
        12..=15 => "lower-EL AArch32",
        _ => "unknown",
    }
}

/// ESR_EL1.EC meanings the guest may hit (Arm ARM D17.2.37).
fn exception_class(class: u64) -> &'static str {
    match class {
        0x00 => "unknown reason",
        0x01 => "trapped WFI/WFE",
        0x07 => "FP/SIMD access trap",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "trapped system register access",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// `boot/vectors.s`'s `kind` of a synchronous exception from normal execution.
const KIND_SYNCHRONOUS: u64 = 0;
/// `boot/vectors.s`'s `kind` of an IRQ from normal execution.
const KIND_IRQ: u64 = 1;
/// ESR_EL1.EC of an undefined instruction.
const EC_UNKNOWN: u64 = 0;

/// The interrupted code's general-purpose registers, as `boot/vectors.s` saved them.
#[repr(C)]
pub struct ExceptionFrame {
    /// x0-x18.
    pub x: [u64; 19],
    /// x29 (frame pointer).
    pub x29: u64,
    /// x30 (link register).
    pub x30: u64,
    _pad: u64,
}

/// Called by `boot/vectors.s` on the exception stack (SP_EL1) for every exception taken from
/// normal execution. Returns when execution may resume: an IRQ (handled by the GIC driver), or
/// a probe's `hvc` that nothing at EL2 serves (undefined: skipped, x17 = 1).
/// Anything else is reported and the guest stops. With the MMU still off the report goes to the
/// UART recorded from the device tree (see `console::emergency`); before the tree is parsed,
/// or without a console in it, nothing is printed. Likewise the power-off uses the recorded
/// PSCI conduit, and parks without one.
#[unsafe(no_mangle)]
extern "C" fn sramlink_exception(kind: u64, frame: &mut ExceptionFrame) {
    let esr = ESR_EL1.get();
    let elr = ELR_EL1.get();
    if kind == KIND_IRQ && super::gic::handle_irq() {
        return;
    }
    if kind == KIND_SYNCHRONOUS
        && (esr >> 26) & 0x3f == EC_UNKNOWN
        && super::hypercall::is_probe(elr)
    {
        frame.x[17] = super::hypercall::PROBE_UNDEFINED;
        ELR_EL1.set(elr + 4);
        return;
    }
    fatal(kind, esr, elr)
}

/// Reports an exception nothing handles and stops.
fn fatal(kind: u64, esr: u64, elr: u64) -> ! {
    let far = FAR_EL1.get();
    let stack_pointer = SP_EL0.get();
    let class = (esr >> 26) & 0x3f;
    let layout = layout::image();
    let hint = if layout.guards[0].contains(far) {
        " (stack overflow: FAR is in the boot stack's guard page)"
    } else {
        ""
    };
    crate::console::emergency(format_args!(
        "sramlink: error: {} exception: ESR_EL1={esr:#x} (EC {class:#x}: {}) ELR_EL1={elr:#x} \
         FAR_EL1={far:#x} SP_EL0={stack_pointer:#x}{hint}\n",
        describe(kind),
        exception_class(class),
    ));
    crate::console::emergency(format_args!("sramlink: stopping\n"));
    psci::system_off()
}
