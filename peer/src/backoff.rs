//! How the peer waits for the guest: a bounded spin, then yields, then short sleeps.
//!
//! Never an unbounded pure spin: under QEMU's TCG a spinning vCPU steals time from the side it
//! waits for (with single-threaded TCG a busy-polling domU froze the whole machine). With
//! `--busy-poll` the sleeping stage is disabled (spin, then `yield_now` forever) so the cost of
//! the backoff can be measured.

use std::time::Duration;

/// Spins (with `spin_loop` hints) before the first yield.
pub const SPIN_ROUNDS: u32 = 256;
/// Yields before the first sleep.
pub const YIELD_ROUNDS: u32 = 64;
/// First sleep; doubles up to [`MAX_SLEEP`].
pub const FIRST_SLEEP: Duration = Duration::from_micros(10);
/// Longest single sleep.
pub const MAX_SLEEP: Duration = Duration::from_millis(1);

/// Whether the waiter may sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffPolicy {
    /// Spin, yield, then sleep with exponential growth up to [`MAX_SLEEP`].
    Sleep,
    /// Spin, then `yield_now` (never sleeps): `--busy-poll`.
    BusyPoll,
}

/// The state of one wait; call [`Backoff::reset`] when progress was made.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    rounds: u32,
    sleep: Duration,
}

impl Backoff {
    /// A fresh waiter.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            rounds: 0,
            sleep: FIRST_SLEEP,
        }
    }

    /// Starts over with spinning (after progress).
    pub fn reset(&mut self) {
        self.rounds = 0;
        self.sleep = FIRST_SLEEP;
    }

    /// Waits a little; each call waits at least as long as the previous one.
    pub fn idle(&mut self) {
        if self.rounds < SPIN_ROUNDS {
            self.rounds += 1;
            core::hint::spin_loop();
        } else if self.rounds < SPIN_ROUNDS + YIELD_ROUNDS || self.policy == BackoffPolicy::BusyPoll
        {
            self.rounds = self.rounds.saturating_add(1);
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.sleep);
            self.sleep = (self.sleep * 2).min(MAX_SLEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_only_when_allowed_and_grows_to_the_cap() {
        let mut sleeping = Backoff::new(BackoffPolicy::Sleep);
        let mut busy = Backoff::new(BackoffPolicy::BusyPoll);
        for _ in 0..(SPIN_ROUNDS + YIELD_ROUNDS + 10) {
            sleeping.idle();
            busy.idle();
        }
        assert_eq!(sleeping.sleep, MAX_SLEEP);
        assert_eq!(busy.sleep, FIRST_SLEEP);
        sleeping.reset();
        assert_eq!(sleeping.rounds, 0);
        assert_eq!(sleeping.sleep, FIRST_SLEEP);
    }
}
