//! The generic timer: the virtual counter, its event stream, and the EL1 virtual timer that
//! bounds an `irq` sleep.

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTKCTL_EL1, CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVCT_EL0, ReadWriteable, Readable,
    Writeable,
};

/// Times the virtual timer's interrupt was taken.
static FIRED: AtomicU64 = AtomicU64::new(0);

/// Counter frequency in Hz (CNTFRQ_EL0, set by firmware/QEMU/Xen).
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Current virtual counter value (CNTVCT_EL0).
pub fn counter() -> u64 {
    CNTVCT_EL0.get()
}

/// Milliseconds between two counter values.
pub fn ticks_to_ms(ticks: u64) -> u64 {
    match frequency() {
        0 => 0,
        hz => (ticks as u128 * 1000 / hz as u128) as u64,
    }
}

/// Turns on the virtual counter's event stream so that `wfe` wakes up at least every ~100 µs
/// even when nothing else sends an event (real hardware; Xen and QEMU yield on `wfe` anyway).
///
/// An event is generated when counter bit `EVNTI` toggles, i.e. every 2^(EVNTI+1) ticks.
pub fn enable_event_stream() {
    // 10 kHz target: 2^(n+1) ≈ frequency / 10_000.
    let ticks = (frequency() / 10_000).max(2);
    let bit = (63 - ticks.leading_zeros()).saturating_sub(1).min(15);
    CNTKCTL_EL1.modify(CNTKCTL_EL1::EVNTI.val(bit as u64) + CNTKCTL_EL1::EVNTEN::Enable);
}

/// Counter ticks in `ms` milliseconds (at least 1).
pub fn ms_to_ticks(ms: u32) -> u64 {
    (frequency() as u128 * ms as u128 / 1000).clamp(1, u64::MAX as u128) as u64
}

/// Arms the EL1 virtual timer to raise its interrupt `ticks` from now (CNTV_CVAL_EL0, an
/// absolute compare value, so the time spent here does not stretch the bound).
pub fn arm(ticks: u64) {
    CNTV_CVAL_EL0.set(counter().wrapping_add(ticks));
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    // The compare value and enable take effect before the caller's `wfi` (system registers are
    // synchronised by a context synchronisation event, not by program order).
    barrier::isb(barrier::SY);
}

/// Stops the EL1 virtual timer, which also drops its (level-sensitive) interrupt.
pub fn disarm() {
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR + CNTV_CTL_EL0::IMASK::SET);
    barrier::isb(barrier::SY);
}

/// The virtual timer's interrupt handler (IRQ vector, interrupts masked): stops the timer, so
/// the interrupt is not taken again, and counts it. The sleeper re-arms it.
pub fn on_interrupt() {
    disarm();
    FIRED.fetch_add(1, Ordering::Relaxed);
}

/// Times the virtual timer's interrupt was taken.
pub fn fired() -> u64 {
    FIRED.load(Ordering::Relaxed)
}
