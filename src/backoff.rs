//! Idle backoff for the serving loop: poll hot for a short while, then wait for events.
//!
//! [`sramlink_ring::service::Service::run`] calls its idle hook after every pass that found
//! nothing to do. What it does there is the [`IdlePolicy`], chosen on the command line
//! (`sramlink.idle=`, see [`crate::bootargs`]) so the demo can measure both:
//!
//! - [`IdlePolicy::Wfe`] (the default): right after traffic the next message is probably close,
//!   so the first [`SPIN_PASSES`] idle passes only pause briefly (`spin_loop`) and poll again;
//!   after that each idle pass waits for an event (`wfe`), which yields the CPU under Xen and
//!   QEMU and sleeps until the timer's event stream on hardware, so the loop never spins flat
//!   out forever.
//! - [`IdlePolicy::Irq`]: the same short spin, then each idle pass sleeps in `wfi` until an
//!   interrupt (the Xen event-channel upcall the peer raises) arrives: the vCPU is descheduled
//!   and costs nothing while idle. Needs Xen events; without them the kernel falls back to
//!   [`IdlePolicy::Wfe`] and says so.
//! - [`IdlePolicy::BusyPoll`]: every idle pass only pauses briefly; the guest never waits.
//!
//! The hook cannot see whether the passes between two idle calls did work, so it infers it
//! from time: when more than [`RESET_MICROSECONDS`] passed between returning from one idle call
//! and entering the next, that pass did work (an empty pass is far shorter), and the streak of
//! idle passes starts over.

/// Idle passes that only spin before passes start waiting for events.
pub const SPIN_PASSES: u32 = 256;
/// A pass longer than this (between two idle calls) counts as having done work.
pub const RESET_MICROSECONDS: u64 = 20;

/// What the serving loop does when a pass found nothing to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum IdlePolicy {
    /// Spin for [`SPIN_PASSES`] idle passes, then wait for events (`wfe`).
    #[default]
    Wfe,
    /// Spin for [`SPIN_PASSES`] idle passes, then sleep until an interrupt (`wfi`).
    Irq,
    /// Never wait for events: only a short CPU-relax pause between polls.
    BusyPoll,
}

impl IdlePolicy {
    /// Every policy, in the order the accepted values are listed.
    pub const ALL: [IdlePolicy; 3] = [IdlePolicy::Wfe, IdlePolicy::Irq, IdlePolicy::BusyPoll];

    /// The policy's name on the command line and in the boot log.
    pub const fn name(self) -> &'static str {
        match self {
            IdlePolicy::Wfe => "wfe",
            IdlePolicy::Irq => "irq",
            IdlePolicy::BusyPoll => "busy-poll",
        }
    }

    /// The policy called `name`, if any.
    pub fn from_name(name: &[u8]) -> Option<IdlePolicy> {
        Self::ALL
            .into_iter()
            .find(|policy| policy.name().as_bytes() == name)
    }
}

/// How an idle pass should pause.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pause {
    /// A short CPU-relax pause, then poll again.
    Spin,
    /// Wait for an event (`wfe`).
    WaitForEvent,
    /// Sleep until an interrupt (`wfi`).
    WaitForInterrupt,
}

/// Idle-pass bookkeeping, driven by counter readings.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: IdlePolicy,
    reset_ticks: u64,
    streak: u32,
    last_return: Option<u64>,
}

impl Backoff {
    /// A backoff following `policy`, for a counter running at `counter_hz`.
    pub fn new(counter_hz: u64, policy: IdlePolicy) -> Self {
        Backoff {
            policy,
            reset_ticks: (counter_hz / (1_000_000 / RESET_MICROSECONDS)).max(1),
            streak: 0,
            last_return: None,
        }
    }

    /// Called on entering an idle pass at counter value `now`: how to pause.
    pub fn pause(&mut self, now: u64) -> Pause {
        if self.policy == IdlePolicy::BusyPoll {
            return Pause::Spin;
        }
        match self.last_return {
            Some(last) if now.wrapping_sub(last) <= self.reset_ticks => {}
            _ => self.streak = 0,
        }
        if self.streak < SPIN_PASSES {
            self.streak += 1;
            Pause::Spin
        } else if self.policy == IdlePolicy::Irq {
            Pause::WaitForInterrupt
        } else {
            Pause::WaitForEvent
        }
    }

    /// Called when the pause is over, at counter value `now`.
    pub fn resumed(&mut self, now: u64) {
        self.last_return = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 62_500_000;

    #[test]
    fn spins_first_then_waits_while_idle() {
        let mut backoff = Backoff::new(HZ, IdlePolicy::Wfe);
        let mut now = 1_000;
        for pass in 0..SPIN_PASSES + 10 {
            let expected = if pass < SPIN_PASSES {
                Pause::Spin
            } else {
                Pause::WaitForEvent
            };
            assert_eq!(backoff.pause(now), expected, "pass {pass}");
            // A waiting pass may sleep long; the next empty pass still follows right away.
            now += if expected == Pause::WaitForEvent {
                10 * HZ / 1000
            } else {
                10
            };
            backoff.resumed(now);
            now += 10;
        }
    }

    #[test]
    fn a_long_pass_restarts_the_spin_phase() {
        let mut backoff = Backoff::new(HZ, IdlePolicy::Wfe);
        let mut now = 0;
        for _ in 0..SPIN_PASSES {
            backoff.pause(now);
            backoff.resumed(now);
        }
        assert_eq!(backoff.pause(now), Pause::WaitForEvent);
        backoff.resumed(now);
        // 20 µs at 62.5 MHz is 1250 ticks: a 2000-tick pass did work.
        now += 2_000;
        assert_eq!(backoff.pause(now), Pause::Spin);
        backoff.resumed(now);
        now += 1_000;
        assert_eq!(backoff.pause(now), Pause::Spin);
    }

    #[test]
    fn irq_spins_first_then_sleeps_until_an_interrupt() {
        let mut backoff = Backoff::new(HZ, IdlePolicy::Irq);
        let now = 1_000;
        for _ in 0..SPIN_PASSES {
            assert_eq!(backoff.pause(now), Pause::Spin);
            backoff.resumed(now);
        }
        assert_eq!(backoff.pause(now), Pause::WaitForInterrupt);
        backoff.resumed(now);
        // A pass that did work starts the spin phase over.
        assert_eq!(backoff.pause(now + 2_000), Pause::Spin);
    }

    #[test]
    fn busy_poll_never_waits_for_events() {
        let mut backoff = Backoff::new(HZ, IdlePolicy::BusyPoll);
        let mut now = 1_000;
        for pass in 0..4 * SPIN_PASSES {
            assert_eq!(backoff.pause(now), Pause::Spin, "pass {pass}");
            now += 10;
            backoff.resumed(now);
            now += 10;
        }
    }

    #[test]
    fn policy_names_round_trip_and_wfe_is_the_default() {
        assert_eq!(IdlePolicy::default(), IdlePolicy::Wfe);
        for policy in IdlePolicy::ALL {
            assert_eq!(
                IdlePolicy::from_name(policy.name().as_bytes()),
                Some(policy)
            );
        }
        assert_eq!(IdlePolicy::Wfe.name(), "wfe");
        assert_eq!(IdlePolicy::Irq.name(), "irq");
        assert_eq!(IdlePolicy::BusyPoll.name(), "busy-poll");
        assert_eq!(IdlePolicy::from_name(b"WFE"), None);
        assert_eq!(IdlePolicy::from_name(b""), None);
    }
}
