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

/// A string field of a report, `"-"` when absent.
fn text<'a>(report: &'a Map<String, Value>, key: &str) -> &'a str {
    report.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// Reads a counter from a JSON object, 0 when absent.
fn counter(object: &Map<String, Value>, key: &str) -> u64 {
    object.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// One peer run as it goes into the combined report's `runs` list.
fn run_summary(run: &Map<String, Value>) -> Value {
    let keys = [
        "mode",
        "direction",
        "idle_policy",
        "count",
        "payload_bytes",
        "window",
        "messages_sent",
        "messages_received",
        "lost",
        "corrupted",
        "protocol_errors",
        "rtt",
        "rtt_histogram",
        "messages_per_second",
        "payload_bytes_per_second",
        "cpu_seconds",
        "events_received",
        "events_sent",
    ];
    let mut summary: Map<String, Value> = keys
        .iter()
        .filter_map(|key| run.get(*key).map(|value| (key.to_string(), value.clone())))
        .collect();
    if let Some(per_message) = cpu_us_per_message(run) {
        summary.insert("cpu_us_per_message".into(), json!(per_message));
    }
    Value::Object(summary)
}

/// The peer's CPU time (getrusage, user + system) per message it sent, in microseconds.
fn cpu_us_per_message(run: &Map<String, Value>) -> Option<f64> {
    let cpu = run.get("cpu_seconds").and_then(Value::as_f64)?;
    let sent = counter(run, "messages_sent");
    (sent > 0).then(|| cpu * 1e6 / sent as f64)
}

/// Checks one run's own figures: nothing lost or corrupted, no protocol error, and as many
/// messages as it was asked for in each direction its mode uses.
fn check_run(run: &Map<String, Value>) -> Result<()> {
    let (mode, direction) = (text(run, "mode"), text(run, "direction"));
    let what = format!("the peer's {mode} run ({} idle)", text(run, "idle_policy"));
    let (lost, corrupted, errors) = (
        counter(run, "lost"),
        counter(run, "corrupted"),
        counter(run, "protocol_errors"),
    );
    if lost != 0 || corrupted != 0 || errors != 0 {
        bail!(
            "{what} saw {lost} lost, {corrupted} corrupted messages and {errors} protocol errors"
        );
    }
    let (asked, sent, received) = (
        counter(run, "count"),
        counter(run, "messages_sent"),
        counter(run, "messages_received"),
    );
    if mode == "idle" {
        // An idle window exchanges nothing; anything crossing would be an error.
        let (sent, received) = (
            counter(run, "messages_sent"),
            counter(run, "messages_received"),
        );
        if sent != 0 || received != 0 {
            bail!("{what} exchanged {sent}/{received} messages in an idle window");
        }
        return Ok(());
    }
    if mode == "floor" {
        // One FloorRequest over the ring, then `count` timed rounds on the flag words.
        let rounds = run
            .get("rtt")
            .and_then(|rtt| rtt.get("samples"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if asked == 0 || sent != 1 || received != 0 || rounds != asked {
            bail!(
                "{what} was asked for {asked} rounds but timed {rounds} (messages: sent {sent}, \
                 received {received})"
            );
        }
        return Ok(());
    }
    // A stream one way has the other way carry only its request (or nothing).
    let needs_sent = mode != "stream" || direction != "from-guest";
    let needs_received = mode != "stream" || direction != "to-guest";
    if asked == 0 || (needs_sent && sent < asked) || (needs_received && received < asked) {
        bail!("{what} was asked for {asked} messages but sent {sent} and received {received}");
    }
    Ok(())
}

/// Adds `{p50,p99,mean}_ratio_{name}` (round trips of `slow` over `fast`) to `into`; returns
/// them as text for the summary line.
fn rtt_ratios(
    slow: &Map<String, Value>,
    fast: &Map<String, Value>,
    name: &str,
    into: &mut Map<String, Value>,
) -> String {
    let rtt = |report: &Map<String, Value>, key: &str| {
        report
            .get("rtt")
            .and_then(|rtt| rtt.get(key))
            .and_then(Value::as_f64)
    };
    let mut text = String::new();
    for key in ["p50", "p99", "mean"] {
        if let (Some(a), Some(b)) = (rtt(slow, key), rtt(fast, key)) {
            if b > 0.0 {
                into.insert(format!("{key}_ratio_{name}"), json!(a / b));
                text += &format!(" {key} {:.2}", a / b);
            }
        }
    }
    text
}

/// The ring's round trip over the platform's own floor in the same boot: the busy-polling
/// ping run (the floor busy-polls too; else the main run) over the `floor` run, with both
/// figures. `None` without a floor run.
fn floor_comparison(runs: &[Map<String, Value>]) -> Option<Value> {
    let floor = runs.iter().find(|run| text(run, "mode") == "floor")?;
    let pings = || runs.iter().filter(|run| text(run, "mode") == "ping");
    let ping = pings()
        .find(|run| text(run, "idle_policy") == "busy-poll")
        .or_else(|| pings().next_back())?;
    let mut comparison = Map::new();
    comparison.insert("floor".into(), run_summary(floor));
    comparison.insert("ping".into(), run_summary(ping));
    rtt_ratios(ping, floor, "ping_over_floor", &mut comparison);
    Some(Value::Object(comparison))
}

/// The main run and the earlier ping run with the other idle policy of the peer
/// (spin-then-sleep, or events, versus busy-poll), side by side with their round-trip ratios
/// (`…_ratio_POLICY_over_busy_poll`) and the ratio of the peer's CPU time per message. Ping
/// runs with a third policy (`events-only`: events without the spin, next to the hybrid
/// `events` and pure polling) are added the same way and listed in `also_compared`.
fn idle_comparison(runs: &[Map<String, Value>]) -> Option<Value> {
    let main = runs.last()?;
    let other = runs.iter().find(|run| {
        text(run, "mode") == "ping" && text(run, "idle_policy") != text(main, "idle_policy")
    })?;
    let mut comparison = Map::new();
    for run in [other, main] {
        comparison.insert(text(run, "idle_policy").to_string(), run_summary(run));
    }
    let (waiting, busy) = if text(main, "idle_policy") == "busy-poll" {
        (other, main)
    } else {
        (main, other)
    };
    let compare = |waiting: &Map<String, Value>, comparison: &mut Map<String, Value>| {
        let name = format!(
            "{}_over_busy_poll",
            text(waiting, "idle_policy").replace('-', "_")
        );
        rtt_ratios(waiting, busy, &name, comparison);
        if let (Some(a), Some(b)) = (cpu_us_per_message(waiting), cpu_us_per_message(busy)) {
            if b > 0.0 {
                comparison.insert(format!("cpu_per_message_ratio_{name}"), json!(a / b));
            }
        }
        name
    };
    let name = compare(waiting, &mut comparison);
    comparison.insert("compared".into(), json!(name));
    if text(busy, "idle_policy") == "busy-poll" {
        let mut also = Vec::new();
        for run in runs.iter().filter(|run| text(run, "mode") == "ping") {
            let policy = text(run, "idle_policy");
            if comparison.contains_key(policy) || policy == "-" {
                continue;
            }
            comparison.insert(policy.to_string(), run_summary(run));
            also.push(json!(compare(run, &mut comparison)));
        }
        if !also.is_empty() {
            comparison.insert("also_compared".into(), Value::Array(also));
        }
    }
    Some(Value::Object(comparison))
}

/// Combines the peer's runs of one boot (`runs`, in order; the last one stopped the guest and
/// is the report's main figures) with the guest's console statistics, writes
/// `target/sramlink/reports/NAME.json`, prints a summary, and fails on any loss, corruption or
/// protocol error, a run short of its count, or when the two sides disagree on how many
/// messages crossed.
pub fn finish(
    name: &str,
    runs: Vec<Map<String, Value>>,
    guest_console: Option<Map<String, Value>>,
    extra: Map<String, Value>,
) -> Result<PathBuf> {
    let Some(mut report) = runs.last().cloned() else {
        bail!("the peer printed no report");
    };
    for (key, value) in extra {
        report.insert(key, value);
    }
    report.insert("runs".into(), runs.iter().map(run_summary).collect());
    if let Some(comparison) = idle_comparison(&runs) {
        report.insert("idle_comparison".into(), comparison);
    }
    if let Some(comparison) = floor_comparison(&runs) {
        report.insert("floor_comparison".into(), comparison);
    }
    if let Some(stats) = &guest_console {
        report.insert("guest_console".to_string(), Value::Object(stats.clone()));
    }
    let dir = crate::paths::reports_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    let hz = report
        .get("counter_hz")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let curves = crate::plot::curves(&runs, hz);
    let figure = dir.join(format!("{name}-rtt-cdf.svg"));
    if !curves.is_empty() {
        report.insert("rtt_cdf_svg".into(), json!(figure.display().to_string()));
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    if !curves.is_empty() {
        let platform = report
            .get("platform")
            .and_then(Value::as_str)
            .unwrap_or(name);
        crate::plot::draw_cdf(
            &figure,
            &format!("{name}: round trips, {platform}"),
            &curves,
        )?;
    }

    println!("report {}:", path.display());
    if !curves.is_empty() {
        println!(
            "  round-trip distribution (CDF per run): {}",
            figure.display()
        );
    }
    for run in &runs {
        let mut line = format!(
            "  peer {} {}{} ({} idle): sent {}, received {}, lost {}, corrupted {}",
            text(run, "mode"),
            counter(run, "count"),
            match text(run, "direction") {
                "-" => String::new(),
                direction => format!(" {direction}"),
            },
            text(run, "idle_policy"),
            counter(run, "messages_sent"),
            counter(run, "messages_received"),
            counter(run, "lost"),
            counter(run, "corrupted"),
        );
        if let Some(rate) = run.get("messages_per_second").and_then(Value::as_f64) {
            line += &format!(", {rate:.0} msg/s");
        }
        println!("{line}");
    }
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
        report.get("rtt").and_then(Value::as_object),
        report.get("counter_hz").and_then(Value::as_u64),
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
    if let Some(comparison) = report.get("floor_comparison").and_then(Value::as_object) {
        let ping = comparison.get("ping").and_then(Value::as_object);
        let mut line = format!(
            "  ring round trip / bare-flag floor, same boot ({}-byte ping, {} idle; TCG \
             emulation: compare ratios only):",
            ping.map_or(0, |ping| counter(ping, "payload_bytes")),
            ping.map_or("-", |ping| text(ping, "idle_policy")),
        );
        for key in ["p50", "p99", "mean"] {
            let ratio = comparison.get(&format!("{key}_ratio_ping_over_floor"));
            if let Some(ratio) = ratio.and_then(Value::as_f64) {
                line += &format!(" {key} {ratio:.2}");
            }
        }
        println!("{line}");
    }
    if let Some(comparison) = report.get("idle_comparison").and_then(Value::as_object) {
        let main_name = comparison
            .get("compared")
            .and_then(Value::as_str)
            .unwrap_or("sleep_over_busy_poll");
        let also = comparison
            .get("also_compared")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        for name in std::iter::once(main_name).chain(also) {
            let mut line = format!(
                "  peer idle policy, round-trip ratio {}:",
                name.replacen("_over_", " / ", 1).replace('_', "-")
            );
            for key in ["p50", "p99", "mean"] {
                let ratio = comparison.get(&format!("{key}_ratio_{name}"));
                if let Some(ratio) = ratio.and_then(Value::as_f64) {
                    line += &format!(" {key} {ratio:.2}");
                }
            }
            if let Some(ratio) = comparison
                .get(&format!("cpu_per_message_ratio_{name}"))
                .and_then(Value::as_f64)
            {
                line += &format!("; peer CPU per message {ratio:.2}");
            }
            println!("{line}");
        }
        for run in runs.iter().filter(|run| text(run, "mode") == "ping") {
            if let Some(per_message) = cpu_us_per_message(run) {
                println!(
                    "  peer CPU per round trip, ping ({} idle): {per_message:.1} us",
                    text(run, "idle_policy")
                );
            }
        }
    }

    let see = || format!("see {}", path.display());
    for run in &runs {
        check_run(run).with_context(see)?;
    }
    let Some(stats) = &guest_console else {
        bail!("the guest printed no statistics line; {}", see());
    };
    let guest_bad =
        counter(stats, "lost") + counter(stats, "corrupted") + counter(stats, "protocol_errors");
    if guest_bad != 0 {
        bail!("the guest reported errors: {stats:?}; {}", see());
    }
    // The guest counts over the whole boot, so compare with all runs' totals: every message the
    // peer sent reached the guest, which also counts the final Stop; the guest sent every
    // message the peer received, its Stats reply coming after them.
    let total_sent: u64 = runs.iter().map(|run| counter(run, "messages_sent")).sum();
    let total_received: u64 = runs
        .iter()
        .map(|run| counter(run, "messages_received"))
        .sum();
    let (guest_received, guest_sent) = (counter(stats, "received"), counter(stats, "sent"));
    if guest_received != total_sent + 1 || guest_sent != total_received {
        bail!(
            "the two sides disagree: the peer sent {total_sent} (+1 Stop) and received \
             {total_received}, the guest received {guest_received} and sent {guest_sent}; {}",
            see()
        );
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
    let mut comparison = Map::new();
    for report in [&main_report, &other_report] {
        comparison.insert(
            policy(report),
            json!({ "rtt": report.get("rtt").cloned().unwrap_or(Value::Null) }),
        );
    }
    let (waiting, busy) = if policy(&main_report) != "busy-poll" {
        (&main_report, &other_report)
    } else {
        (&other_report, &main_report)
    };
    let name = format!("{}_over_busy_poll", policy(waiting).replace('-', "_"));
    let ratios = rtt_ratios(waiting, busy, &name, &mut comparison);
    let mut line = format!(
        "guest idle policy, round-trip ratio {} / busy-poll (two boots):{ratios}",
        policy(waiting)
    );
    // The idle windows: host CPU seconds QEMU used while both sides waited.
    let idle_cpu = |report: &Map<String, Value>| {
        report
            .get("idle_window")
            .and_then(|window| window.get("qemu_cpu_seconds"))
            .and_then(Value::as_f64)
    };
    if let (Some(a), Some(b)) = (idle_cpu(waiting), idle_cpu(busy)) {
        comparison.insert(
            format!(
                "idle_qemu_cpu_seconds_{}",
                policy(waiting).replace('-', "_")
            ),
            json!(a),
        );
        comparison.insert("idle_qemu_cpu_seconds_busy_poll".into(), json!(b));
        if b > 0.0 {
            comparison.insert(format!("idle_qemu_cpu_ratio_{name}"), json!(a / b));
            line += &format!(
                "\n  idle window, QEMU host CPU: {a:.2} s ({}) vs {b:.2} s (busy-poll): {:.1} %",
                policy(waiting),
                100.0 * a / b
            );
        }
    }
    // The figure of the main boot, redrawn with the other boot's curves: one per guest idle
    // policy and peer run.
    let mut curves = Vec::new();
    for report in [&main_report, &other_report] {
        let runs: Vec<Map<String, Value>> = report
            .get("runs")
            .and_then(Value::as_array)
            .map(|runs| {
                runs.iter()
                    .filter_map(|run| run.as_object().cloned())
                    .collect()
            })
            .unwrap_or_default();
        for mut curve in crate::plot::curves(&runs, counter(report, "counter_hz")) {
            curve.label = format!("guest {} idle, peer {}", policy(report), curve.label);
            curves.push(curve);
        }
    }
    if let Some(figure) = main_report.get("rtt_cdf_svg").and_then(Value::as_str) {
        let title = format!(
            "round trips, two boots (guest idle {} and {})",
            policy(&main_report),
            policy(&other_report)
        );
        crate::plot::draw_cdf(Path::new(figure), &title, &curves)?;
        line += &format!("\n  round-trip distribution, both boots: {figure}");
    }
    comparison.insert("other_report".into(), json!(other.display().to_string()));
    main_report.insert("guest_idle_comparison".into(), Value::Object(comparison));
    std::fs::write(main, serde_json::to_string_pretty(&main_report)? + "\n")?;
    println!("{line}");
    Ok(())
}

/// A report's round-trip figure `key` in microseconds (its ticks over its counter frequency,
/// so boards with different counters compare).
fn rtt_micros(report: &Map<String, Value>, key: &str) -> Option<f64> {
    let ticks = report.get("rtt")?.get(key)?.as_f64()?;
    let hz = report.get("counter_hz")?.as_f64()?;
    (hz > 0.0).then(|| ticks * 1e6 / hz)
}

/// The main runs of two boards' reports side by side: each board's round trips (microseconds
/// of emulated time) and the ratios of the second board's over the first's.
fn board_comparison(first: &Map<String, Value>, second: &Map<String, Value>) -> Value {
    let board = |report: &Map<String, Value>| text(report, "board").to_string();
    let mut comparison = Map::new();
    for report in [first, second] {
        let rtt: Map<String, Value> = ["p50", "p99", "mean"]
            .iter()
            .filter_map(|key| rtt_micros(report, key).map(|us| (format!("{key}_us"), json!(us))))
            .collect();
        comparison.insert(board(report), Value::Object(rtt));
    }
    let name = format!("{}_over_{}", board(second), board(first));
    for key in ["p50", "p99", "mean"] {
        if let (Some(a), Some(b)) = (rtt_micros(second, key), rtt_micros(first, key)) {
            if b > 0.0 {
                comparison.insert(format!("{key}_ratio_{name}"), json!(a / b));
            }
        }
    }
    Value::Object(comparison)
}

/// Adds to both reports the comparison of their boards' round trips (the main ping of each,
/// TCG figures: only the ratio means anything) and prints it.
pub fn add_board_comparison(first: &Path, second: &Path) -> Result<()> {
    let read = |path: &Path| -> Result<Map<String, Value>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let (mut first_report, mut second_report) = (read(first)?, read(second)?);
    let comparison = board_comparison(&first_report, &second_report);
    let (a, b) = (text(&first_report, "board"), text(&second_report, "board"));
    let mut line = format!("boards, round trip (TCG, emulated time): {b} / {a}:");
    for key in ["p50", "p99", "mean"] {
        let ratio = comparison.get(format!("{key}_ratio_{b}_over_{a}"));
        if let Some(ratio) = ratio.and_then(Value::as_f64) {
            line += &format!(" {key} {ratio:.2}");
        }
    }
    let mut side = String::new();
    for board in [a, b] {
        if let Some(figures) = comparison.get(board).and_then(Value::as_object) {
            side += &format!("\n  {board:>8}:");
            for key in ["p50", "p99", "mean"] {
                if let Some(us) = figures.get(&format!("{key}_us")).and_then(Value::as_f64) {
                    side += &format!(" {key} {us:.2} us");
                }
            }
        }
    }
    for (path, report) in [(first, &mut first_report), (second, &mut second_report)] {
        report.insert("board_comparison".into(), comparison.clone());
        std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")?;
    }
    println!("{line}{side}");
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

    fn run(json: Value) -> Map<String, Value> {
        json.as_object().expect("object").clone()
    }

    #[test]
    fn a_run_must_reach_its_count_cleanly() {
        let ping =
            json!({"mode": "ping", "count": 10, "messages_sent": 10, "messages_received": 10});
        assert!(check_run(&run(ping.clone())).is_ok());
        let mut short = ping.clone();
        short["messages_received"] = json!(9);
        assert!(check_run(&run(short)).is_err());
        let mut lossy = ping;
        lossy["lost"] = json!(1);
        let error = check_run(&run(lossy)).expect_err("lost");
        assert!(format!("{error}").contains("1 lost"));
        // A one-way stream carries only its request the other way.
        let from_guest = json!({"mode": "stream", "direction": "from-guest", "count": 10,
                                "messages_sent": 1, "messages_received": 10});
        assert!(check_run(&run(from_guest)).is_ok());
        let to_guest = json!({"mode": "stream", "direction": "to-guest", "count": 10,
                              "messages_sent": 10, "messages_received": 0});
        assert!(check_run(&run(to_guest)).is_ok());
        let asked_nothing = json!({"mode": "ping", "count": 0});
        assert!(check_run(&run(asked_nothing)).is_err());
    }

    #[test]
    fn a_floor_run_must_time_every_round_and_is_compared_with_the_busy_ping() {
        let floor = json!({"mode": "floor", "count": 10, "messages_sent": 1,
            "messages_received": 0, "rtt": {"samples": 10, "p50": 100, "p99": 200, "mean": 120.0}});
        assert!(check_run(&run(floor.clone())).is_ok());
        let mut short = floor.clone();
        short["rtt"]["samples"] = json!(9);
        assert!(check_run(&run(short)).is_err());
        let busy = json!({"mode": "ping", "idle_policy": "busy-poll",
            "rtt": {"p50": 150, "p99": 500, "mean": 180.0}});
        let events = json!({"mode": "ping", "idle_policy": "events",
            "rtt": {"p50": 900, "p99": 900, "mean": 900.0}});
        let comparison = floor_comparison(&[run(busy), run(floor), run(events)]).expect("floor");
        assert_eq!(comparison["p50_ratio_ping_over_floor"], json!(1.5));
        assert_eq!(comparison["p99_ratio_ping_over_floor"], json!(2.5));
        assert!(floor_comparison(&[]).is_none());
    }

    #[test]
    fn boards_are_compared_in_time_not_ticks() {
        let virt = json!({"board": "virt", "counter_hz": 1_000_000,
                          "rtt": {"p50": 100.0, "p99": 400.0, "mean": 200.0}});
        let zcu102 = json!({"board": "zcu102", "counter_hz": 2_000_000,
                            "rtt": {"p50": 300.0, "p99": 800.0}});
        let comparison = board_comparison(&run(virt), &run(zcu102));
        assert_eq!(comparison["p50_ratio_zcu102_over_virt"], json!(1.5));
        assert_eq!(comparison["p99_ratio_zcu102_over_virt"], json!(1.0));
        assert!(comparison.get("mean_ratio_zcu102_over_virt").is_none());
        assert_eq!(comparison["virt"]["p50_us"], json!(100.0));
        assert_eq!(comparison["zcu102"]["p50_us"], json!(150.0));
    }

    #[test]
    fn idle_policies_are_compared_as_ratios() {
        let busy = json!({"mode": "ping", "idle_policy": "busy-poll",
                          "rtt": {"p50": 100.0, "p99": 200.0, "mean": 120.0}});
        let echo = json!({"mode": "echo", "idle_policy": "sleep", "rtt": {"p50": 1.0}});
        let sleep = json!({"mode": "ping", "idle_policy": "sleep",
                           "rtt": {"p50": 150.0, "p99": 200.0, "mean": 60.0}});
        let comparison = idle_comparison(&[run(busy), run(echo), run(sleep)]).expect("compared");
        assert_eq!(comparison["p50_ratio_sleep_over_busy_poll"], json!(1.5));
        assert_eq!(comparison["p99_ratio_sleep_over_busy_poll"], json!(1.0));
        assert_eq!(comparison["mean_ratio_sleep_over_busy_poll"], json!(0.5));
        assert!(comparison.get("sleep").is_some() && comparison.get("busy-poll").is_some());
        let single = json!({"mode": "ping", "idle_policy": "sleep"});
        assert!(idle_comparison(&[run(single)]).is_none());
    }

    #[test]
    fn pure_polling_pure_events_and_the_hybrid_are_compared() {
        let busy = json!({"mode": "ping", "idle_policy": "busy-poll",
                          "rtt": {"p50": 100.0, "p99": 200.0, "mean": 100.0},
                          "cpu_seconds": 2.0, "messages_sent": 10});
        let only = json!({"mode": "ping", "idle_policy": "events-only",
                          "rtt": {"p50": 300.0, "p99": 400.0, "mean": 300.0},
                          "cpu_seconds": 0.5, "messages_sent": 10});
        let hybrid = json!({"mode": "ping", "idle_policy": "events",
                            "rtt": {"p50": 120.0, "p99": 200.0, "mean": 110.0},
                            "cpu_seconds": 1.0, "messages_sent": 10});
        let comparison = idle_comparison(&[run(busy), run(only), run(hybrid)]).expect("compared");
        assert_eq!(comparison["compared"], json!("events_over_busy_poll"));
        assert_eq!(comparison["p50_ratio_events_over_busy_poll"], json!(1.2));
        assert_eq!(
            comparison["also_compared"],
            json!(["events_only_over_busy_poll"])
        );
        assert_eq!(
            comparison["p50_ratio_events_only_over_busy_poll"],
            json!(3.0)
        );
        assert_eq!(
            comparison["cpu_per_message_ratio_events_only_over_busy_poll"],
            json!(0.25)
        );
        for policy in ["busy-poll", "events-only", "events"] {
            assert!(comparison.get(policy).is_some(), "{policy}");
        }
    }
}
