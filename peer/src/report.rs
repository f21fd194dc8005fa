//! The run report: a human summary and the one-line `SRAMLINK-REPORT {json}`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{Bucket, RttSummary};

/// The marker the launcher greps for in a console log.
pub const REPORT_MARKER: &str = "SRAMLINK-REPORT ";

/// The guest's own counters (its Stats message), present with `--stop-guest`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuestStats {
    /// Messages the guest received.
    pub received: u64,
    /// Messages the guest sent.
    pub sent: u64,
    /// Messages the guest found corrupted (checksum or pattern).
    pub corrupted: u64,
    /// Sequence gaps the guest saw.
    pub lost: u64,
    /// Malformed messages the guest saw.
    pub protocol_errors: u64,
}

/// Everything a run measured. Ticks are of the counter described by `counter_hz`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// `ping`, `echo` or `stream`.
    pub mode: &'static str,
    /// Stream direction (`to-guest`, `from-guest`, `both`); `null` for ping and echo.
    pub direction: Option<&'static str>,
    /// Messages requested (per direction for `stream`).
    pub count: u64,
    /// Payload bytes per message.
    pub payload_bytes: u32,
    /// Echo window; `null` for other modes.
    pub window: Option<u32>,
    /// Messages the peer sent (including Stop).
    pub messages_sent: u64,
    /// Messages the peer received (including Stats).
    pub messages_received: u64,
    /// Messages missing: sequence gaps plus replies that never came.
    pub lost: u64,
    /// Messages with a bad checksum or payload pattern.
    pub corrupted: u64,
    /// Malformed or unexpected messages, and ring protocol errors.
    pub protocol_errors: u64,
    /// Round-trip figures (ping, echo); `null` when nothing was timed.
    pub rtt: Option<RttSummary>,
    /// Round trips in power-of-two buckets of ticks.
    pub rtt_histogram: Vec<Bucket>,
    /// Counter frequency (ticks per second).
    pub counter_hz: u64,
    /// Ticks from the first send to the last reception of the mode.
    pub elapsed_ticks: u64,
    /// Data messages per second over `elapsed_ticks` (both directions added).
    pub messages_per_second: f64,
    /// Payload bytes per second over `elapsed_ticks` (both directions added).
    pub payload_bytes_per_second: f64,
    /// The session this run had (ABI 1.1); `null` against a 1.0 guest or before attaching.
    pub session: Option<u32>,
    /// The generation of the guest's header (ABI 1.1); `null` for a 1.0 guest.
    pub guest_generation: Option<u32>,
    /// How the region was mapped: `device` (the sramlink module), `dev-mem` or `file`.
    pub region_source: &'static str,
    /// The sramlink device (`device` source), else `null`.
    pub region_device: Option<String>,
    /// Whether the mapping is cacheable (`device`, `dev-mem`), else `null`.
    pub region_cacheable: Option<bool>,
    /// The peer's effective user id (it needs root only for `/dev/mem`).
    pub euid: Option<u32>,
    /// The mapped file (`file` source), else `null`.
    pub region_file: Option<String>,
    /// Offset of the region in the file (`file` source), else `null`.
    pub region_file_offset: Option<u64>,
    /// The device-tree node the `dev-mem` region came from, or whose `reg` its `--base/--size`
    /// range was checked to equal, else `null`.
    pub region_node: Option<String>,
    /// Physical base of the region (`device`, `dev-mem`); `null` for a file, whose
    /// physical address only the launcher knows.
    pub region_base: Option<u64>,
    /// Region size in bytes.
    pub region_size: u64,
    /// Largest message the peer→guest ring carries (bytes, protocol header included).
    pub max_message_bytes: u64,
    /// `sleep` (bounded spin, yield, sleep), `busy-poll`, `events` (bounded spin, then
    /// sleep on the Xen event channel) or `events-only` (`--spin-us 0`: sleep at once).
    pub idle_policy: &'static str,
    /// Xen events received from the guest (wake-ups of the event wait).
    pub events_received: u64,
    /// Xen events sent to the guest (it was armed when we published).
    pub events_sent: u64,
    /// CPU time (user + system, getrusage) the peer process used from attach to the end.
    pub cpu_seconds: f64,
    /// The guest's Stats (with `--stop-guest`).
    pub guest: Option<GuestStats>,
    /// The error that ended the run early, if any.
    pub error: Option<String>,
}

impl Report {
    /// Whether the run is clean: no error, no loss, no corruption, no protocol error on either
    /// side.
    pub fn passed(&self) -> bool {
        let guest_clean = self.guest.is_none_or(|guest| {
            guest.lost == 0 && guest.corrupted == 0 && guest.protocol_errors == 0
        });
        self.error.is_none()
            && self.lost == 0
            && self.corrupted == 0
            && self.protocol_errors == 0
            && guest_clean
    }

    /// `SRAMLINK-REPORT {json}` (one line).
    pub fn json_line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|error| {
            format!("{{\"error\":\"report serialisation failed: {error}\"}}")
        });
        format!("{REPORT_MARKER}{json}")
    }

    /// A few lines for people.
    pub fn human_summary(&self) -> String {
        let mut text = String::new();
        let direction = self
            .direction
            .map(|direction| format!(" {direction}"))
            .unwrap_or_default();
        let window = self
            .window
            .map(|window| format!(", window {window}"))
            .unwrap_or_default();
        let region = match (&self.region_file, self.region_file_offset, self.region_base) {
            (Some(file), Some(offset), _) => format!("{file} at offset {offset:#x}"),
            (_, _, Some(base)) => format!("{base:#x}"),
            _ => "?".to_string(),
        };
        let _ = writeln!(
            text,
            "sramlink-peer: {}{direction}: {} messages of {} payload bytes{window}; region {region} \
             size {:#x} ({}), idle policy {}",
            self.mode,
            self.count,
            self.payload_bytes,
            self.region_size,
            self.region_source,
            self.idle_policy
        );
        let _ = writeln!(
            text,
            "  sent {}, received {}, lost {}, corrupted {}, protocol errors {}",
            self.messages_sent,
            self.messages_received,
            self.lost,
            self.corrupted,
            self.protocol_errors
        );
        if let Some(rtt) = &self.rtt {
            let micros = |ticks: f64| ticks * 1e6 / self.counter_hz.max(1) as f64;
            let _ = writeln!(
                text,
                "  round trip (ticks @ {} Hz): min {} p50 {} p99 {} max {} mean {:.1}  \
                 (p50 {:.2} us, p99 {:.2} us)",
                self.counter_hz,
                rtt.min,
                rtt.p50,
                rtt.p99,
                rtt.max,
                rtt.mean,
                micros(rtt.p50 as f64),
                micros(rtt.p99 as f64)
            );
            for bucket in &self.rtt_histogram {
                let _ = writeln!(
                    text,
                    "    [{:>10}, {:>10}) {}",
                    bucket.low, bucket.high, bucket.count
                );
            }
        }
        if self.elapsed_ticks > 0 {
            let _ = writeln!(
                text,
                "  throughput: {:.0} messages/s, {:.1} MB/s payload",
                self.messages_per_second,
                self.payload_bytes_per_second / 1e6
            );
        }
        if let Some(guest) = &self.guest {
            let _ = writeln!(
                text,
                "  guest: received {}, sent {}, lost {}, corrupted {}, protocol errors {}",
                guest.received, guest.sent, guest.lost, guest.corrupted, guest.protocol_errors
            );
        }
        if let Some(error) = &self.error {
            let _ = writeln!(text, "  error: {error}");
        }
        let _ = writeln!(
            text,
            "  result: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_the_marker_and_the_agreed_fields() {
        let report = Report {
            mode: "ping",
            count: 3,
            messages_sent: 3,
            messages_received: 3,
            rtt: Some(RttSummary {
                samples: 3,
                p50: 2,
                p99: 3,
                max: 3,
                min: 1,
                mean: 2.0,
            }),
            counter_hz: 1_000_000_000,
            region_source: "dev-mem",
            region_base: Some(0x7f00_0000),
            region_size: 0x100_0000,
            guest: Some(GuestStats::default()),
            ..Report::default()
        };
        let line = report.json_line();
        assert!(!line.contains('\n'));
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix(REPORT_MARKER).expect("marker")).expect("json");
        for key in [
            "mode",
            "messages_sent",
            "messages_received",
            "lost",
            "corrupted",
            "protocol_errors",
            "counter_hz",
            "region_base",
            "region_size",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["rtt"]["p99"], 3);
        assert_eq!(json["region_base"], 0x7f00_0000);
        assert_eq!(json["guest"]["protocol_errors"], 0);
        assert!(report.passed());
    }

    #[test]
    fn any_problem_fails_the_run() {
        let clean = Report::default();
        assert!(clean.passed());
        for broken in [
            Report {
                lost: 1,
                ..Report::default()
            },
            Report {
                corrupted: 1,
                ..Report::default()
            },
            Report {
                protocol_errors: 1,
                ..Report::default()
            },
            Report {
                error: Some("timeout".into()),
                ..Report::default()
            },
            Report {
                guest: Some(GuestStats {
                    lost: 1,
                    ..GuestStats::default()
                }),
                ..Report::default()
            },
        ] {
            assert!(!broken.passed(), "{broken:?}");
            assert!(broken.human_summary().contains("FAIL"));
        }
    }
}
