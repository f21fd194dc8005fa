//! What the peer does in a good run, the same on bare QEMU and under Xen: every mode once and
//! ping with both of its idle policies, the bare-flag floor, then a last ping that stops the
//! guest.

/// Rounds of the floor run: a few thousand round trips, seconds under TCG.
pub const FLOOR_ROUNDS: u64 = 5000;

/// The peer's runs in order, each as its arguments after the region options (`--json` and the
/// timeout are the caller's). Only the last one stops the guest; the earlier ones leave it
/// serving, and the next run attaches again where the ring stands.
///
/// With `events` every run waits on Xen events (`--events`, spinning a short while first: the
/// hybrid) except the first ping, which busy-polls, and the second, which sleeps on events at
/// once (`--spin-us 0`): the same boot measures pure polling, pure events and the hybrid. With `idle_seconds` > 0 an idle window (nothing
/// exchanged, both sides waiting: the peer on events, or else busy-polling) comes before the
/// last run. The floor (`floor`, a bare flag ping-ponged through the same region, ABI §7.4)
/// plays [`FLOOR_ROUNDS`] rounds (at most `count`): the ring's round trip is reported as a
/// ratio to it.
pub fn peer_runs(
    count: u64,
    size: u32,
    busy_poll: bool,
    events: bool,
    idle_seconds: u64,
) -> Vec<Vec<String>> {
    let policy = |busy: bool| {
        if events {
            vec![if busy { "--busy-poll" } else { "--events" }.to_string()]
        } else if busy {
            vec!["--busy-poll".to_string()]
        } else {
            Vec::new()
        }
    };
    // Under events the comparison run busy-polls, the others wait on events.
    let busy_poll = busy_poll && !events;
    let sized = |mode: &[&str]| -> Vec<String> {
        mode.iter()
            .map(|arg| arg.to_string())
            .chain([
                "--count".into(),
                count.to_string(),
                "--size".into(),
                size.to_string(),
            ])
            .collect()
    };
    let mut runs = vec![
        // The other idle policy first, so one boot measures both.
        [policy(!busy_poll), sized(&["ping"])].concat(),
    ];
    if events {
        // Pure events: no spin before sleeping.
        runs.push(
            [
                vec!["--events".into(), "--spin-us".into(), "0".into()],
                sized(&["ping"]),
            ]
            .concat(),
        );
    }
    runs.extend([
        // Pipelined round trips: many messages in flight, the rings wrap.
        [policy(busy_poll), sized(&["echo", "--window", "16"])].concat(),
        // One-way streams, both directions at once.
        [policy(busy_poll), sized(&["stream", "--direction", "both"])].concat(),
        // The platform's floor; it busy-polls whatever the policy.
        vec![
            "--busy-poll".into(),
            "floor".into(),
            "--count".into(),
            count.clamp(1, FLOOR_ROUNDS).to_string(),
        ],
    ]);
    if idle_seconds > 0 {
        // Waiting on events, or (the comparison) busy-polling.
        let waiting = if events { "--events" } else { "--busy-poll" };
        runs.push(vec![
            waiting.into(),
            "idle".into(),
            "--seconds".into(),
            idle_seconds.to_string(),
        ]);
    }
    runs.push(
        [
            vec!["--stop-guest".to_string()],
            policy(busy_poll),
            sized(&["ping"]),
        ]
        .concat(),
    );
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_runs_and_only_the_last_stops_the_guest() {
        let runs = peer_runs(7, 64, false, false, 0);
        let joined: Vec<String> = runs.iter().map(|run| run.join(" ")).collect();
        assert_eq!(joined[0], "--busy-poll ping --count 7 --size 64");
        assert_eq!(joined[1], "echo --window 16 --count 7 --size 64");
        assert_eq!(joined[2], "stream --direction both --count 7 --size 64");
        assert_eq!(joined[3], "--busy-poll floor --count 7");
        assert_eq!(joined[4], "--stop-guest ping --count 7 --size 64");
        assert_eq!(
            joined
                .iter()
                .filter(|run| run.contains("--stop-guest"))
                .count(),
            1
        );
        let busy = peer_runs(7, 64, true, false, 0);
        assert_eq!(busy[0].join(" "), "ping --count 7 --size 64");
        assert_eq!(
            busy[4].join(" "),
            "--stop-guest --busy-poll ping --count 7 --size 64"
        );
    }

    #[test]
    fn events_runs_compare_with_busy_polling_and_end_with_an_idle_window() {
        let runs = peer_runs(7, 64, false, true, 5);
        let joined: Vec<String> = runs.iter().map(|run| run.join(" ")).collect();
        assert_eq!(joined[0], "--busy-poll ping --count 7 --size 64");
        assert_eq!(joined[1], "--events --spin-us 0 ping --count 7 --size 64");
        assert_eq!(joined[2], "--events echo --window 16 --count 7 --size 64");
        assert_eq!(
            joined[3],
            "--events stream --direction both --count 7 --size 64"
        );
        assert_eq!(joined[4], "--busy-poll floor --count 7");
        assert_eq!(joined[5], "--events idle --seconds 5");
        assert_eq!(joined[6], "--stop-guest --events ping --count 7 --size 64");
        let floor = peer_runs(100_000, 64, false, false, 0);
        assert_eq!(floor[3].join(" "), "--busy-poll floor --count 5000");
    }
}
