//! The tick counter round trips are measured with: the generic timer on AArch64, else `Instant`.
//!
//! On AArch64 Linux enables EL0 access to the virtual counter (`CNTKCTL_EL1.EL0VCTEN`), so the
//! peer reads `CNTVCT_EL0` directly (with `aarch64-cpu`'s register, as the guest does), the
//! same counter the guest can read; its frequency is `CNTFRQ_EL0`. Elsewhere (host tests)
//! ticks are nanoseconds since the counter was created.

/// A monotonic tick source with a known frequency.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    #[cfg(not(target_arch = "aarch64"))]
    origin: std::time::Instant,
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

impl Counter {
    /// A counter ready to read.
    pub fn new() -> Self {
        Self {
            #[cfg(not(target_arch = "aarch64"))]
            origin: std::time::Instant::now(),
        }
    }

    /// The current tick count.
    #[cfg(target_arch = "aarch64")]
    pub fn now(&self) -> u64 {
        use aarch64_cpu::asm::barrier;
        use aarch64_cpu::registers::{CNTVCT_EL0, Readable};
        // The counter is read out of order otherwise: the ISB makes it wait for the preceding
        // instructions (the poll that saw the reply).
        barrier::isb(barrier::SY);
        CNTVCT_EL0.get()
    }

    /// The current tick count (nanoseconds since [`Counter::new`]).
    #[cfg(not(target_arch = "aarch64"))]
    pub fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Ticks per second.
    #[cfg(target_arch = "aarch64")]
    pub fn frequency_hz(&self) -> u64 {
        use aarch64_cpu::registers::{CNTFRQ_EL0, Readable};
        CNTFRQ_EL0.get()
    }

    /// Ticks per second (nanoseconds).
    #[cfg(not(target_arch = "aarch64"))]
    pub fn frequency_hz(&self) -> u64 {
        1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn is_monotonic_with_a_frequency() {
        let counter = Counter::new();
        let first = counter.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = counter.now();
        assert!(second > first);
        assert!(counter.frequency_hz() > 0);
    }
}
