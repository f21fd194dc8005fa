//! Idle backoff for the serving loop: poll hot for a short while, then wait for events.
//!
//! [`sramlink_ring::service::Service::run`] calls its idle hook after every pass that found
//! nothing to do, saying whether any message was sent or handled since the previous call. What
//! it does there is the [`IdlePolicy`], chosen on the command line (`sramlink.idle=`, see
//! [`crate::bootargs`]) so the demo can measure both:
//!
//! - [`IdlePolicy::Irq`] (the default): right after traffic the next message is probably
//!   close, so the first [`SPIN_PASSES`] idle passes after any work only pause briefly
//!   (`spin_loop`) and poll again; after that each idle pass sleeps in `wfi` until an interrupt
//!   (the Xen event-channel upcall the peer raises, or the timer that bounds the sleep to
//!   [`TICK_MS`]): the vCPU is descheduled and costs nothing while idle. Needs Xen events;
//!   without them the kernel falls back to [`IdlePolicy::Wfe`] and says so.
//! - [`IdlePolicy::Wfe`]: the same short spin, then each idle pass waits for an event (`wfe`),
//!   which yields the CPU under Xen and QEMU and sleeps until the timer's event stream on
//!   hardware, so the loop never spins flat out forever.
//! - [`IdlePolicy::BusyPoll`]: every idle pass only pauses briefly; the guest never waits.

/// Idle passes that only spin before passes start waiting for events.
pub const SPIN_PASSES: u32 = 256;

/// The longest an [`IdlePolicy::Irq`] sleep lasts, in milliseconds, when no event comes (the
/// guest's generic timer bounds it, so a peer that cannot notify is still served).
pub const TICK_MS: u32 = 10;

/// What the serving loop does when a pass found nothing to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum IdlePolicy {
    /// Spin for [`SPIN_PASSES`] idle passes, then wait for events (`wfe`).
    Wfe,
    /// Spin for [`SPIN_PASSES`] idle passes, then sleep until an interrupt (`wfi`).
    #[default]
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

/// Idle-pass bookkeeping: the streak of idle passes since the last work.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: IdlePolicy,
    streak: u32,
    spin_passes: u32,
}

impl Backoff {
    /// A backoff following `policy`.
    pub fn new(policy: IdlePolicy) -> Self {
        Self::with_spin_passes(policy, SPIN_PASSES)
    }

    /// A backoff that spins `spin_passes` idle passes (instead of [`SPIN_PASSES`]) first.
    pub fn with_spin_passes(policy: IdlePolicy, spin_passes: u32) -> Self {
        Backoff {
            policy,
            streak: 0,
            spin_passes,
        }
    }

    /// Called on entering an idle pass, `progressed` when work was done since the previous
    /// idle pass (the serving loop's signal): how to pause.
    pub fn pause(&mut self, progressed: bool) -> Pause {
        if self.policy == IdlePolicy::BusyPoll {
            return Pause::Spin;
        }
        if progressed {
            self.streak = 0;
        }
        if self.streak < self.spin_passes {
            self.streak += 1;
            Pause::Spin
        } else if self.policy == IdlePolicy::Irq {
            Pause::WaitForInterrupt
        } else {
            Pause::WaitForEvent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_first_then_waits_while_idle() {
        let mut backoff = Backoff::new(IdlePolicy::Wfe);
        for pass in 0..SPIN_PASSES + 10 {
            let expected = if pass < SPIN_PASSES {
                Pause::Spin
            } else {
                Pause::WaitForEvent
            };
            // However long a waiting pass sleeps, nothing was done: the streak goes on.
            assert_eq!(backoff.pause(false), expected, "pass {pass}");
        }
    }

    #[test]
    fn irq_spins_first_then_sleeps_until_an_interrupt() {
        let mut backoff = Backoff::new(IdlePolicy::Irq);
        for _ in 0..SPIN_PASSES {
            assert_eq!(backoff.pause(false), Pause::Spin);
        }
        assert_eq!(backoff.pause(false), Pause::WaitForInterrupt);
        // Work starts the spin phase over.
        assert_eq!(backoff.pause(true), Pause::Spin);
    }

    #[test]
    fn the_spin_phase_length_is_configurable() {
        let mut backoff = Backoff::with_spin_passes(IdlePolicy::Irq, 2);
        assert_eq!(backoff.pause(false), Pause::Spin);
        assert_eq!(backoff.pause(false), Pause::Spin);
        assert_eq!(backoff.pause(false), Pause::WaitForInterrupt);
        let mut at_once = Backoff::with_spin_passes(IdlePolicy::Wfe, 0);
        assert_eq!(at_once.pause(true), Pause::WaitForEvent);
    }

    #[test]
    fn work_restarts_the_spin_phase() {
        let mut backoff = Backoff::new(IdlePolicy::Wfe);
        for _ in 0..SPIN_PASSES {
            backoff.pause(false);
        }
        assert_eq!(backoff.pause(false), Pause::WaitForEvent);
        // A message was handled since: spin again, and keep spinning for the whole phase.
        assert_eq!(backoff.pause(true), Pause::Spin);
        for pass in 1..SPIN_PASSES {
            assert_eq!(backoff.pause(false), Pause::Spin, "pass {pass}");
        }
        assert_eq!(backoff.pause(false), Pause::WaitForEvent);
    }

    #[test]
    fn busy_poll_never_waits_for_events() {
        let mut backoff = Backoff::new(IdlePolicy::BusyPoll);
        for pass in 0..4 * SPIN_PASSES {
            assert_eq!(backoff.pause(pass % 7 == 0), Pause::Spin, "pass {pass}");
        }
    }

    #[test]
    fn policy_names_round_trip_and_irq_is_the_default() {
        assert_eq!(IdlePolicy::default(), IdlePolicy::Irq);
        for policy in IdlePolicy::ALL {
            assert_eq!(
                IdlePolicy::from_name(policy.name().as_bytes()),
                Some(policy)
            );
        }
        assert_eq!(IdlePolicy::Wfe.name(), "wfe");
        assert_eq!(IdlePolicy::BusyPoll.name(), "busy-poll");
        assert_eq!(IdlePolicy::from_name(b"WFE"), None);
        assert_eq!(IdlePolicy::from_name(b""), None);
    }
}
