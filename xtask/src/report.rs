//! Run reports: the peer's `SRAMLINK-REPORT {json}` line and the guest's `sramlink: stats:`
//! console line, checked against each other and written as one JSON file.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// The marker that starts the peer's one-line JSON report.
pub const PEER_REPORT_MARKER: &str = "SRAMLINK-REPORT ";
/// The guest's statistics line.
pub const GUEST_STATS_MARKER: &str = "sramlink: stats: ";

/// Finds the peer's last JSON report in `text` (a console log or the peer's stdout).
pub fn find_peer_report(text: &str) -> Option<Result<Map<String, Value>>> {
    text.lines().rev().find_map(parse_report_line)
}

/// Every JSON report the peer printed in `text`, in order.
pub fn find_peer_reports(text: &str) -> Result<Vec<Map<String, Value>>> {
    text.lines().filter_map(parse_report_line).collect()
}

fn parse_report_line(line: &str) -> Option<Result<Map<String, Value>>> {
    let at = line.find(PEER_REPORT_MARKER)?;
    let json = &line[at + PEER_REPORT_MARKER.len()..];
    Some(
        serde_json::from_str::<Map<String, Value>>(json.trim())
            .with_context(|| format!("the peer's report is not a JSON object: {json}")),
    )
}

/// Round trips of the same boot under the two idle policies of the peer (spin-then-sleep and
/// busy-poll), side by side with their ratios, for the report.
pub fn idle_comparison(first: &Map<String, Value>, second: &Map<String, Value>) -> Value {
    let policy = |report: &Map<String, Value>| {
        report
            .get("idle_policy")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string()
    };
    let rtt = |report: &Map<String, Value>, key: &str| {
        report
            .get("rtt")
            .and_then(|rtt| rtt.get(key))
            .and_then(Value::as_f64)
    };
    let mut comparison = Map::new();
    for report in [first, second] {
        comparison.insert(
            policy(report),
            json!({
                "rtt": report.get("rtt").cloned().unwrap_or(Value::Null),
                "messages_per_second": report.get("messages_per_second").cloned().unwrap_or(Value::Null),
                "messages_sent": counter(report, "messages_sent"),
                "messages_received": counter(report, "messages_received"),
                "lost": counter(report, "lost"),
                "corrupted": counter(report, "corrupted"),
            }),
        );
    }
    let (sleep, busy) = if policy(first) == "busy-poll" {
        (second, first)
    } else {
        (first, second)
    };
    for key in ["p50", "p99", "mean"] {
        if let (Some(a), Some(b)) = (rtt(sleep, key), rtt(busy, key)) {
            if b > 0.0 {
                comparison.insert(format!("{key}_ratio_sleep_over_busy_poll"), json!(a / b));
            }
        }
    }
    Value::Object(comparison)
}

/// Parses `sramlink: stats: received=1 sent=2 …` (anywhere in the line) into numbers.
pub fn parse_guest_stats(line: &str) -> Option<Map<String, Value>> {
    let at = line.find(GUEST_STATS_MARKER)?;
    let mut stats = Map::new();
    for field in line[at + GUEST_STATS_MARKER.len()..].split_whitespace() {
        let (key, value) = field.split_once('=')?;
        stats.insert(key.to_string(), json!(value.parse::<u64>().ok()?));
    }
    Some(stats)
}

/// Reads a counter from a JSON object, 0 when absent.
fn counter(object: &Map<String, Value>, key: &str) -> u64 {
    object.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Combines the peer's report with the guest's console statistics, writes
/// `target/sramlink/reports/NAME.json`, prints a summary, and fails on any loss, corruption or
/// protocol error, or when the two sides disagree on how many messages crossed.
pub fn finish(
    name: &str,
    mut peer: Map<String, Value>,
    guest_console: Option<Map<String, Value>>,
    extra: Map<String, Value>,
) -> Result<PathBuf> {
    for (key, value) in extra {
        peer.insert(key, value);
    }
    if let Some(stats) = &guest_console {
        peer.insert("guest_console".to_string(), Value::Object(stats.clone()));
    }
    let dir = crate::paths::reports_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&peer)? + "\n")?;

    let sent = counter(&peer, "messages_sent");
    let received = counter(&peer, "messages_received");
    let lost = counter(&peer, "lost");
    let corrupted = counter(&peer, "corrupted");
    let protocol_errors = counter(&peer, "protocol_errors");
    println!("report {}:", path.display());
    println!(
        "  peer : sent {sent}, received {received}, lost {lost}, corrupted {corrupted}, protocol errors {protocol_errors}"
    );
    if let Some(stats) = &guest_console {
        println!(
            "  guest: received {}, sent {}, lost {}, corrupted {}, protocol errors {}",
            counter(stats, "received"),
            counter(stats, "sent"),
            counter(stats, "lost"),
            counter(stats, "corrupted"),
            counter(stats, "protocol_errors")
        );
    }
    if let (Some(rtt), Some(hz)) = (
        peer.get("rtt").and_then(Value::as_object),
        peer.get("counter_hz").and_then(Value::as_u64),
    ) {
        let ticks = |key: &str| rtt.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let micros = |key: &str| ticks(key) * 1e6 / hz as f64;
        println!(
            "  round trip: p50 {:.0} ticks ({:.2} us), p99 {:.0} ticks ({:.2} us), max {:.0} ticks ({:.2} us) at {hz} Hz",
            ticks("p50"),
            micros("p50"),
            ticks("p99"),
            micros("p99"),
            ticks("max"),
            micros("max"),
        );
    }
    if let Some(comparison) = peer.get("idle_comparison").and_then(Value::as_object) {
        let mut line = String::from("  peer idle policy, round-trip ratio sleep / busy-poll:");
        for key in ["p50", "p99", "mean"] {
            let ratio = comparison.get(&format!("{key}_ratio_sleep_over_busy_poll"));
            if let Some(ratio) = ratio.and_then(Value::as_f64) {
                line += &format!(" {key} {ratio:.2}");
            }
        }
        println!("{line}");
    }

    if sent == 0 || received == 0 {
        bail!(
            "no messages crossed (sent {sent}, received {received}); see {}",
            path.display()
        );
    }
    let asked = counter(&peer, "count");
    if sent < asked || received < asked {
        bail!(
            "the peer was asked for {asked} round trips but sent {sent} and received {received}; see {}",
            path.display()
        );
    }
    if lost != 0 || corrupted != 0 || protocol_errors != 0 {
        bail!(
            "the peer saw {lost} lost, {corrupted} corrupted messages and {protocol_errors} protocol errors; see {}",
            path.display()
        );
    }
    if let Some(stats) = &guest_console {
        let guest_bad = counter(stats, "lost")
            + counter(stats, "corrupted")
            + counter(stats, "protocol_errors");
        if guest_bad != 0 {
            bail!(
                "the guest reported errors: {stats:?}; see {}",
                path.display()
            );
        }
        // The guest counts over the whole boot: with an idle-policy comparison, the peer ran
        // twice against it, so compare with both runs' totals.
        let (total_sent, total_received) = match peer.get("idle_comparison") {
            Some(Value::Object(runs)) => {
                runs.values()
                    .filter_map(Value::as_object)
                    .fold((0, 0), |(s, r), run| {
                        (
                            s + counter(run, "messages_sent"),
                            r + counter(run, "messages_received"),
                        )
                    })
            }
            _ => (sent, received),
        };
        // Every message the peer sent reached the guest, which also counts Stop; the guest
        // sent every reply the peer counted, and its Stats reply after them.
        let (guest_received, guest_sent) = (counter(stats, "received"), counter(stats, "sent"));
        if guest_received != total_sent + 1 || guest_sent != total_received {
            bail!(
                "the two sides disagree: the peer sent {total_sent} (+1 Stop) and received {total_received}, \
                 the guest received {guest_received} and sent {guest_sent}"
            );
        }
    } else {
        bail!("the guest printed no statistics line");
    }
    Ok(path)
}

/// Adds to the report at `main` the round trips of a second boot that differed only in the
/// guest's idle policy (report `other`), with the ratios, and prints them.
pub fn add_guest_idle_comparison(main: &Path, other: &Path) -> Result<()> {
    let read = |path: &Path| -> Result<Map<String, Value>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let (mut main_report, other_report) = (read(main)?, read(other)?);
    let policy = |report: &Map<String, Value>| {
        report
            .get("guest_idle")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string()
    };
    let rtt = |report: &Map<String, Value>, key: &str| {
        report
            .get("rtt")
            .and_then(|rtt| rtt.get(key))
            .and_then(Value::as_f64)
    };
    let mut comparison = Map::new();
    for report in [&main_report, &other_report] {
        comparison.insert(
            policy(report),
            json!({ "rtt": report.get("rtt").cloned().unwrap_or(Value::Null) }),
        );
    }
    let (wfe, busy) = if policy(&main_report) == "wfe" {
        (&main_report, &other_report)
    } else {
        (&other_report, &main_report)
    };
    let mut line = String::from("guest idle policy, round-trip ratio wfe / busy-poll (two boots):");
    for key in ["p50", "p99", "mean"] {
        if let (Some(a), Some(b)) = (rtt(wfe, key), rtt(busy, key)) {
            if b > 0.0 {
                comparison.insert(format!("{key}_ratio_wfe_over_busy_poll"), json!(a / b));
                line += &format!(" {key} {:.2}", a / b);
            }
        }
    }
    comparison.insert("other_report".into(), json!(other.display().to_string()));
    main_report.insert("guest_idle_comparison".into(), Value::Object(comparison));
    std::fs::write(main, serde_json::to_string_pretty(&main_report)? + "\n")?;
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_report_is_found_in_a_console_line() {
        let log = "(XEN) noise\n[   3.1] SRAMLINK-REPORT {\"messages_sent\": 5}\nafter\n";
        let report = find_peer_report(log).expect("found").expect("parsed");
        assert_eq!(report["messages_sent"], json!(5));
    }

    #[test]
    fn broken_peer_report_is_an_error() {
        assert!(
            find_peer_report("SRAMLINK-REPORT {oops")
                .expect("found")
                .is_err()
        );
        assert!(find_peer_report("nothing here").is_none());
    }

    #[test]
    fn guest_stats_line_is_parsed_with_a_console_prefix() {
        let stats = parse_guest_stats("(XEN) DOM1: sramlink: stats: received=10 sent=9 lost=0")
            .expect("parsed");
        assert_eq!(stats["received"], json!(10));
        assert_eq!(stats["sent"], json!(9));
        assert!(parse_guest_stats("sramlink: stats: received=x").is_none());
    }
}
