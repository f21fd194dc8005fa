//! CPU helpers: waiting for events or interrupts, parking, and data-cache maintenance by address.

use aarch64_cpu::asm;
use aarch64_cpu::asm::barrier;

use sramlink_devicetree::PhysRange;

/// Waits for an event (`wfe`).
///
/// Bounded everywhere the guest runs: under Xen, `wfe` traps (HCR_EL2.TWE) and the vCPU
/// yields; QEMU TCG treats it as a yield; on hardware the generic timer's event stream (see
/// [`crate::arch::timer::enable_event_stream`]) wakes it at least every ~100 µs.
pub fn wait_for_event() {
    asm::wfe();
}

/// Sleeps until an interrupt is pending (`wfi`), then lets it be taken.
///
/// Interrupts stay masked in PSTATE while the caller checks whether to sleep and through the
/// `wfi` itself: a masked pending interrupt still ends `wfi` (Arm ARM; Xen, which traps `wfi`,
/// checks pending interrupts ignoring PSTATE.I right after blocking the vCPU), so an interrupt
/// that arrives after the caller's last check cannot be slept through. Only then are IRQs
/// unmasked for the instant needed to take it (its handler runs in `exception.rs`).
pub fn wait_for_interrupt() {
    asm::wfi();
    // SAFETY: unmasking IRQs lets the vector run the GIC handler, which saves and restores
    // everything it uses; `isb` makes the unmask take effect (the pending IRQ is taken there)
    // before it is masked again. No memory access of ours.
    unsafe {
        core::arch::asm!(
            "msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            options(nostack)
        )
    };
}

/// Stops this CPU for good, without touching memory.
pub fn park() -> ! {
    loop {
        asm::wfe();
    }
}

/// Smallest data-cache line size of the system, in bytes (CTR_EL0.DminLine).
fn data_cache_line() -> u64 {
    let ctr: u64;
    // SAFETY: reads the read-only cache type register; no memory access.
    unsafe { core::arch::asm!("mrs {ctr}, ctr_el0", ctr = out(reg) ctr, options(nomem, nostack)) };
    // DminLine (bits 19:16): log2 of the line size in 4-byte words.
    4 << ((ctr >> 16) & 0xf)
}

/// Invalidates the data cache to the point of coherency over `range` (`dc ivac`).
///
/// Used before the MMU and caches are switched on: everything written so far went straight to
/// memory (with the MMU off all data accesses are Device-nGnRnE), so any line the caches hold
/// for these addresses is stale and must not be hit (or written back) once they are cacheable.
///
/// # Safety
///
/// The range holds no data that exists only in the cache (true while the data caches have
/// never been enabled by this kernel and the loader cleaned what it wrote, as the boot protocol
/// requires).
pub unsafe fn invalidate_data_cache(range: PhysRange) {
    let line = data_cache_line();
    let mut address = range.start() & !(line - 1);
    while address < range.end() {
        // SAFETY: `dc ivac` only discards cache lines; by the contract of this function none of
        // them holds data that memory lacks.
        unsafe {
            core::arch::asm!("dc ivac, {address}", address = in(reg) address, options(nostack))
        };
        address += line;
    }
    // Completes the invalidations before the MMU/cache enable that follows. ISH suffices: only
    // this CPU runs, and its inner-shareable domain contains every observer of these lines.
    barrier::dsb(barrier::ISH);
}
