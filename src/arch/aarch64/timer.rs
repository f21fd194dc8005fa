//! The generic timer's virtual counter and its event stream.

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTKCTL_EL1, CNTVCT_EL0, ReadWriteable, Readable};

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
