//! GIC driver (GICv3 with the system-register CPU interface, GICv2 memory-mapped) for the
//! boot CPU's PPIs (the Xen upcall, then the virtual timer's), and the IRQ dispatch
//! `exception.rs` calls.
//!
//! The frames come from the device tree ([`sramlink::devicetree::GicFrames`]), never from
//! constants;
//! `kernel_init` maps them Device-nGnRE. Interrupts are masked in PSTATE everywhere except in
//! [`super::cpu::wait_for_interrupt`], so the handler never races normal code.

use core::fmt;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{MPIDR_EL1, Readable};
use spin::Once;
use tock_registers::interfaces::{ReadWriteable, Writeable};

use sramlink::devicetree::{GicFrames, PhysRange};
use sramlink::gic::{
    CpuInterface, Distributor, GICC_CTLR, GICD_CTLR, GICR_WAKER, PRIORITY_MASK_ALL,
    RedistributorControl, RedistributorSgi, SGI_FRAME_OFFSET, bit_position, intid, is_spurious,
    redistributor_affinity, redistributor_step,
};

/// Polls of a GIC "write pending" / "children asleep" bit before giving up.
const SETTLE_POLLS: u32 = 1_000_000;

/// Why the GIC cannot deliver the interrupt.
#[derive(Clone, Copy, Debug)]
pub enum GicError {
    /// No redistributor in the region has this CPU's affinity.
    NoRedistributor {
        /// The affinity looked for.
        affinity: u32,
    },
    /// A status bit did not settle.
    Stuck(&'static str),
    /// Only PPIs (16-31) are supported.
    NotPpi(u32),
    /// [`enable_ppi`] before [`init`].
    NotStarted,
    /// [`enable_ppi`] for a PPI that already has a handler, or a second time.
    Taken(u32),
}

impl fmt::Display for GicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GicError::NoRedistributor { affinity } => write!(
                f,
                "gic: no redistributor with affinity {affinity:#x} in the device tree's region"
            ),
            GicError::Stuck(what) => write!(f, "gic: {what} did not settle"),
            GicError::NotPpi(intid) => write!(f, "gic: interrupt {intid} is not a PPI"),
            GicError::NotStarted => f.write_str("gic: not set up (no Xen events)"),
            GicError::Taken(intid) => write!(f, "gic: interrupt {intid} already has a handler"),
        }
    }
}

/// How interrupts are acknowledged and ended.
enum Interface {
    /// Memory-mapped GICC.
    V2(&'static CpuInterface),
    /// ICC_* system registers.
    V3,
}

/// Where a PPI is given its priority and enabled (banked per CPU).
enum Enabler {
    /// GICv2: the distributor's banked SGI/PPI registers.
    V2(&'static Distributor),
    /// GICv3: this CPU's redistributor SGI frame.
    V3(&'static RedistributorSgi),
}

impl Enabler {
    /// Gives PPI `intid` (checked: 16..32) its priority, then enables it.
    fn enable(&self, intid: u32) {
        let (bit_index, bit) = bit_position(intid);
        match self {
            // Xen's vGICv2 has group 0 only (signalled as IRQ: no security extensions, FIQ
            // bypass off).
            Enabler::V2(distributor) => {
                distributor.ipriorityr[intid as usize].set(sramlink::gic::UPCALL_PRIORITY);
                distributor.isenabler[bit_index].set(bit);
            }
            // Group 1 (the only group a Non-secure guest has), then priority, then enable.
            Enabler::V3(sgi) => {
                sgi.igroupr0.set(sgi.igroupr0.get() | bit);
                sgi.ipriorityr[intid as usize].set(sramlink::gic::UPCALL_PRIORITY);
                sgi.isenabler0.set(bit);
            }
        }
    }
}

/// The GIC and the interrupt `init` set it up for.
struct Driver {
    interface: Interface,
    enabler: Enabler,
    intid: u32,
    handler: fn(),
}

/// A second PPI and its handler ([`enable_ppi`]).
struct Extra {
    intid: u32,
    handler: fn(),
}

// SAFETY: the driver holds MMIO register references (shared by design: every access is one
// volatile register access) and plain values; only the boot CPU runs, and after `init` the
// registers are touched only by `handle_irq`, with interrupts masked.
unsafe impl Send for Driver {}
// SAFETY: as for `Send`.
unsafe impl Sync for Driver {}

static DRIVER: Once<Driver> = Once::new();
static EXTRA: Once<Extra> = Once::new();

/// A register block at a physical (= virtual) address.
///
/// # Safety
///
/// `address` is mapped Device-nGnRE for the kernel's life and holds a `T` register block.
unsafe fn registers<T>(address: u64) -> &'static T {
    // SAFETY: forwarded from this function's contract; register blocks are accessed only
    // through tock-registers' volatile cells.
    unsafe { &*(address as *const T) }
}

fn settle(what: &'static str, mut busy: impl FnMut() -> bool) -> Result<(), GicError> {
    for _ in 0..SETTLE_POLLS {
        if !busy() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(GicError::Stuck(what))
}

/// Sets up the GIC described by `node` to deliver PPI `intid` to this CPU and calls `handler`
/// for each of its occurrences (from the IRQ vector, interrupts masked).
///
/// # Safety
///
/// Called once; `frames` (distributor, and GICv2 CPU interface or GICv3 redistributor region)
/// are mapped Device-nGnRE for the kernel's life.
pub unsafe fn init(frames: &GicFrames, intid: u32, handler: fn()) -> Result<(), GicError> {
    if !(16..32).contains(&intid) {
        return Err(GicError::NotPpi(intid));
    }
    let (interface, enabler) = match *frames {
        GicFrames::V2 {
            distributor,
            cpu_interface,
        } => {
            // SAFETY: this function's contract.
            let distributor: &'static Distributor = unsafe { registers(distributor.start()) };
            // SAFETY: this function's contract.
            let cpu: &'static CpuInterface = unsafe { registers(cpu_interface.start()) };
            // Banked per-CPU registers for SGIs/PPIs.
            let enabler = Enabler::V2(distributor);
            enabler.enable(intid);
            distributor
                .ctlr
                .modify(GICD_CTLR::ENABLE_GRP0::SET + GICD_CTLR::ENABLE_GRP1::SET);
            cpu.pmr.set(PRIORITY_MASK_ALL);
            cpu.bpr.set(0);
            cpu.ctlr
                .modify(GICC_CTLR::ENABLE_GRP0::SET + GICC_CTLR::ENABLE_GRP1::SET);
            (Interface::V2(cpu), enabler)
        }
        GicFrames::V3 {
            distributor,
            redistributors,
        } => {
            // SAFETY: this function's contract.
            let distributor: &'static Distributor = unsafe { registers(distributor.start()) };
            let sgi = find_redistributor(redistributors)?;
            distributor
                .ctlr
                .modify(GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_GRP1::SET);
            settle("GICD_CTLR.RWP", || distributor.ctlr.is_set(GICD_CTLR::RWP))?;
            let enabler = Enabler::V3(sgi);
            enabler.enable(intid);
            // The GICv3 CPU interface in system registers (ICC_SRE_EL1.SRE selects them; Xen and
            // QEMU provide them, the tree says GICv3); each write affects only interrupt
            // delivery to this CPU, and is synchronised by the `isb` after it.
            // SAFETY: sets ICC_SRE_EL1.SRE; no memory access.
            unsafe {
                core::arch::asm!("mrs {v}, icc_sre_el1", "orr {v}, {v}, #1", "msr icc_sre_el1, {v}", v = out(reg) _, options(nostack, nomem));
            }
            barrier::isb(barrier::SY);
            // SAFETY: ICC_PMR_EL1 = let every priority through; no memory access.
            unsafe {
                core::arch::asm!("msr icc_pmr_el1, {v}", v = in(reg) PRIORITY_MASK_ALL as u64, options(nostack, nomem));
            }
            // SAFETY: no binary-point grouping, then enable Group 1 interrupts at this CPU
            // interface; no memory access.
            unsafe {
                core::arch::asm!("msr icc_bpr1_el1, xzr", "msr icc_igrpen1_el1, {v}", v = in(reg) 1u64, options(nostack, nomem));
            }
            barrier::isb(barrier::SY);
            (Interface::V3, enabler)
        }
    };
    DRIVER.call_once(|| Driver {
        interface,
        enabler,
        intid,
        handler,
    });
    Ok(())
}

/// Has the GIC [`init`] set up also deliver PPI `intid` to this CPU, calling `handler` for each
/// of its occurrences (from the IRQ vector, interrupts masked). One such PPI at most.
pub fn enable_ppi(intid: u32, handler: fn()) -> Result<(), GicError> {
    if !(16..32).contains(&intid) {
        return Err(GicError::NotPpi(intid));
    }
    let driver = DRIVER.get().ok_or(GicError::NotStarted)?;
    if intid == driver.intid || EXTRA.is_completed() {
        return Err(GicError::Taken(intid));
    }
    // The handler is in place before the interrupt can be delivered.
    EXTRA.call_once(|| Extra { intid, handler });
    driver.enabler.enable(intid);
    Ok(())
}

/// This CPU's redistributor SGI frame, found by affinity in the device tree's region, awake.
fn find_redistributor(region: PhysRange) -> Result<&'static RedistributorSgi, GicError> {
    let affinity = redistributor_affinity(MPIDR_EL1.get());
    let mut offset = 0;
    while offset + sramlink::gic::REDISTRIBUTOR_FRAMES <= region.size() {
        let base = region.start() + offset;
        // SAFETY: inside the redistributor region, mapped Device for the kernel's life
        // (`init`'s contract); a frame pair starts at each step GICR_TYPER gives.
        let control: &'static RedistributorControl = unsafe { registers(base) };
        let (found, next) = redistributor_step(control.typer.get());
        if found == affinity {
            control.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
            settle("GICR_WAKER.ChildrenAsleep", || {
                control.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP)
            })?;
            // SAFETY: SGI_base follows RD_base in the same mapped frame pair.
            return Ok(unsafe { registers(base + SGI_FRAME_OFFSET) });
        }
        match next {
            Some(step) => offset += step,
            None => break,
        }
    }
    Err(GicError::NoRedistributor { affinity })
}

/// Acknowledges and handles every pending interrupt; `false` if the GIC was never set up.
pub fn handle_irq() -> bool {
    let Some(driver) = DRIVER.get() else {
        return false;
    };
    loop {
        let (iar, version_3) = match driver.interface {
            Interface::V2(cpu) => (cpu.iar.get(), false),
            Interface::V3 => {
                let iar: u64;
                // SAFETY: reading ICC_IAR1_EL1 acknowledges the highest-priority pending
                // Group 1 interrupt; no memory access.
                unsafe {
                    core::arch::asm!("mrs {v}, icc_iar1_el1", v = out(reg) iar, options(nostack, nomem))
                };
                (iar as u32, true)
            }
        };
        let number = intid(iar, version_3);
        if is_spurious(number) {
            return true;
        }
        if number == driver.intid {
            (driver.handler)();
        } else if let Some(extra) = EXTRA.get()
            && number == extra.intid
        {
            (extra.handler)();
        }
        // Completes the handler's memory accesses before the end of interrupt lets another
        // occurrence in (SY: the GIC is outside the inner-shareable domain).
        barrier::dsb(barrier::SY);
        match driver.interface {
            Interface::V2(cpu) => cpu.eoir.set(iar),
            // SAFETY: ends (drops priority and deactivates, EOImode 0) the interrupt just
            // acknowledged; no memory access.
            Interface::V3 => unsafe {
                core::arch::asm!("msr icc_eoir1_el1, {v}", v = in(reg) iar as u64, options(nostack, nomem))
            },
        }
    }
}
