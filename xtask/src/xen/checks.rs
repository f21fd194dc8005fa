//! Reading a run's console and reports: Xen's version, the region each side saw checked against
//! `region.env`, dom0's exit code and the peer's output.

use super::config::{REGION_FILE, Region};
use super::dom0_init::DOM0_DONE_MARKER;
use crate::imagebuilder;
use crate::qemu::Qemu;
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::time::Duration;

/// Waits for a line containing `needle`, also accepting one already seen (guest and dom0
/// lines interleave in any order).
pub(super) fn seen_or_expect(
    qemu: &mut Qemu,
    stage: &str,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    if let Some(line) = qemu.lines_seen().iter().find(|line| line.contains(needle)) {
        return Ok(line.clone());
    }
    qemu.expect(stage, needle, timeout)
}

/// `4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1)` from Xen's banner line.
pub(super) fn xen_version(banner: &str) -> Option<String> {
    let rest = banner.split_once("Xen version ")?.1;
    let end = rest.find(')').map_or(rest.len(), |at| at + 1);
    Some(rest[..end].trim().to_string())
}

/// `0x7f000000+0x1000000 (device)` from `sramlink: region …`.
pub(super) fn guest_region(line: &str) -> Option<(u64, u64, String)> {
    let rest = line.split_once("sramlink: region ")?.1;
    let (range, attributes) = rest.split_once(' ').unwrap_or((rest, ""));
    let (base, size) = range.split_once('+')?;
    Some((
        imagebuilder::parse_number(base)?,
        imagebuilder::parse_number(size)?,
        attributes.trim_matches(['(', ')', ' ']).to_string(),
    ))
}

/// A number in the peer's JSON report: a JSON number, or a `0x…`/decimal string.
pub(super) fn report_number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => imagebuilder::parse_number(text),
        _ => None,
    }
}

/// Checks the region one side reports (`seen`, `None` when it reported none or it could not
/// be read; `source` is what was read, for the message) against `region.env`'s.
pub(super) fn check_region(
    side: &str,
    configured: &Region,
    seen: Option<(u64, u64)>,
    source: &str,
) -> Result<(u64, u64)> {
    let Some((base, size)) = seen else {
        bail!(
            "{side} reported no readable region base and size ({source}); expected {:#x}+{:#x} \
             from xen-config/{REGION_FILE}",
            configured.base,
            configured.size
        );
    };
    if (base, size) != (configured.base, configured.size) {
        bail!(
            "{side} sees the region at {base:#x}+{size:#x}, but xen-config/{REGION_FILE} \
             configures {:#x}+{:#x} ({source}); are the device trees out of date?",
            configured.base,
            configured.size
        );
    }
    Ok((base, size))
}

/// A failed region check as a stage failure with the console log's path.
pub(super) fn region_stage_error(qemu: &Qemu, stage: &str, error: &anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "stage '{stage}' failed after {:.1} s: {error:#}\n  full console log: {}",
        qemu.elapsed().as_secs_f64(),
        qemu.log_path().display()
    )
}

/// The return code in `SRAMLINK-DOM0: done rc=N …`.
pub(super) fn dom0_rc(line: &str) -> Option<i32> {
    let rest = line.split_once(DOM0_DONE_MARKER)?.1;
    rest.split_whitespace().next()?.parse().ok()
}

/// A report number as `0x…` (the peer prints numbers; the guest's console prints hex).
pub(super) fn hex_field(value: Option<&Value>) -> Value {
    match value {
        Some(Value::Number(number)) => number
            .as_u64()
            .map_or(Value::Number(number.clone()), |n| json!(format!("{n:#x}"))),
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// dom0's console lines from the peer's start to init's done line (the peer's output and
/// whatever the guest printed meanwhile).
pub(super) fn peer_output(lines: &[String]) -> Vec<String> {
    let start = lines
        .iter()
        .position(|line| line.contains("SRAMLINK-DOM0: running"))
        .unwrap_or(0);
    lines[start..]
        .iter()
        .take_while(|line| !line.contains(DOM0_DONE_MARKER))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_parsed() {
        let banner = "(XEN) Xen version 4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1) (pkg-xen-devel@lists.alioth.debian.org) (gcc) debug=n";
        assert_eq!(
            xen_version(banner).as_deref(),
            Some("4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1)")
        );
        assert_eq!(
            guest_region("(XEN) DOM1: sramlink: region 0x7f000000+0x1000000 (device)"),
            Some((0x7f00_0000, 0x100_0000, "device".to_string()))
        );
        assert_eq!(dom0_rc("SRAMLINK-DOM0: done rc=3 uptime=9.1s"), Some(3));
        assert_eq!(dom0_rc("SRAMLINK-DOM0: done rc="), None);
        assert_eq!(
            hex_field(Some(&json!(2_130_706_432u64))),
            json!("0x7f000000")
        );
        assert_eq!(hex_field(Some(&json!("0x10"))), json!("0x10"));
        assert_eq!(hex_field(None), Value::Null);
    }
}
