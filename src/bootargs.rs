//! The guest's command line: `/chosen/bootargs`.
//!
//! Xen copies a dom0less domU node's `bootargs` into the guest's `/chosen/bootargs`; on bare
//! QEMU it is whatever the DTB's `/chosen` holds (`-append`). The words are separated by
//! whitespace; the guest reads only its own options and ignores every other word:
//!
//! - `sramlink.idle=irq` (default; `wfe` without Xen events), `sramlink.idle=wfe` or
//!   `sramlink.idle=busy-poll`: the serving loop's [`IdlePolicy`]. Any other value is an error. When the option appears more than once, every
//!   occurrence must be valid and the last one wins, as for Linux's `key=value` parameters.
//! - `sramlink.spin=N`: idle passes that only spin before the policy waits (default
//!   [`crate::backoff::SPIN_PASSES`], at most [`MAX_SPIN_PASSES`]); decimal. Same rules.
//! - `sramlink.tick=MS`: with `sramlink.idle=irq`, the longest the guest sleeps before it looks
//!   at the ring again even when no event comes (the EL1 virtual timer wakes it; default
//!   [`crate::backoff::TICK_MS`], at most [`MAX_TICK_MS`]; `0`: no timer, sleep until an
//!   event); decimal milliseconds. Same rules.

use core::fmt;

use heapless::String;

use crate::backoff::IdlePolicy;

/// The option that selects the idle policy.
pub const IDLE_OPTION: &str = "sramlink.idle";

/// The option that sets the spin phase's length.
pub const SPIN_OPTION: &str = "sramlink.spin";

/// Largest accepted `sramlink.spin=`.
pub const MAX_SPIN_PASSES: u32 = 1_000_000;

/// The option that bounds an `irq` sleep.
pub const TICK_OPTION: &str = "sramlink.tick";

/// Largest accepted `sramlink.tick=` (milliseconds).
pub const MAX_TICK_MS: u32 = 60_000;

/// Most characters of a rejected value repeated in an error message (escaped), so that the
/// error line stays well under the 128-byte line buffer of Xen's vpl011.
pub const MAX_SHOWN_VALUE: usize = 20;

/// Room for a shown value: the characters, then `...` when cut.
type ShownValue = String<{ MAX_SHOWN_VALUE + 3 }>;

/// A guest option on the command line that the guest cannot follow.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BootArgsError {
    /// `sramlink.idle=` with a value that names no [`IdlePolicy`].
    UnknownIdlePolicy {
        /// The value, escaped and cut to [`MAX_SHOWN_VALUE`] characters.
        value: ShownValue,
    },
    /// `sramlink.idle` without `=value`.
    MissingIdlePolicy,
    /// `sramlink.spin=` with a value that is not a decimal number up to [`MAX_SPIN_PASSES`].
    BadSpin {
        /// The value, escaped and cut to [`MAX_SHOWN_VALUE`] characters.
        value: ShownValue,
    },
    /// `sramlink.tick=` with a value that is not a decimal number up to [`MAX_TICK_MS`].
    BadTick {
        /// The value, escaped and cut to [`MAX_SHOWN_VALUE`] characters.
        value: ShownValue,
    },
}

/// Writes the accepted idle-policy names, comma-separated.
fn accepted_policies(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (index, policy) in IdlePolicy::ALL.iter().enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        f.write_str(policy.name())?;
    }
    Ok(())
}

impl fmt::Display for BootArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootArgsError::UnknownIdlePolicy { value } => {
                write!(f, "bootargs: {IDLE_OPTION}=\"{value}\" is unknown")?
            }
            BootArgsError::MissingIdlePolicy => write!(f, "bootargs: {IDLE_OPTION} has no value")?,
            BootArgsError::BadSpin { value } => {
                return write!(
                    f,
                    "bootargs: {SPIN_OPTION}=\"{value}\" is not a number of idle passes \
                     (0..={MAX_SPIN_PASSES})"
                );
            }
            BootArgsError::BadTick { value } => {
                return write!(
                    f,
                    "bootargs: {TICK_OPTION}=\"{value}\" is not a number of milliseconds \
                     (0..={MAX_TICK_MS})"
                );
            }
        }
        f.write_str(" (accepted values: ")?;
        accepted_policies(f)?;
        f.write_str(")")
    }
}

/// `value` escaped (non-printable and non-ASCII bytes as `\xNN`), cut to [`MAX_SHOWN_VALUE`]
/// characters with `...` appended when longer.
fn shown(value: &[u8]) -> ShownValue {
    let mut shown = ShownValue::new();
    let mut escaped = value.escape_ascii();
    for character in escaped.by_ref().take(MAX_SHOWN_VALUE) {
        // Capacity is MAX_SHOWN_VALUE + 3: these pushes cannot fail.
        let _ = shown.push(char::from(character));
    }
    if escaped.next().is_some() {
        let _ = shown.push_str("...");
    }
    shown
}

/// The idle policy `bootargs` (the raw `/chosen/bootargs` property, if any) selects.
///
/// The property is taken as bytes, not as UTF-8 text, so a stray non-UTF-8 byte in another
/// word cannot hide the option; NUL bytes (the terminator, or the separators of a string list)
/// separate words like whitespace does.
pub fn idle_policy(bootargs: Option<&[u8]>) -> Result<IdlePolicy, BootArgsError> {
    let words = bootargs
        .unwrap_or(&[])
        .split(|byte| byte.is_ascii_whitespace() || *byte == 0)
        .filter(|word| !word.is_empty());
    let mut policy = IdlePolicy::default();
    for word in words {
        let Some(rest) = word.strip_prefix(IDLE_OPTION.as_bytes()) else {
            continue;
        };
        policy = match rest {
            [] => return Err(BootArgsError::MissingIdlePolicy),
            [b'=', value @ ..] => {
                IdlePolicy::from_name(value).ok_or_else(|| BootArgsError::UnknownIdlePolicy {
                    value: shown(value),
                })?
            }
            // Another option that merely starts the same, e.g. `sramlink.idler=1`.
            _ => continue,
        };
    }
    Ok(policy)
}

/// The spin phase's length `bootargs` sets (`sramlink.spin=N`), or `default`.
pub fn spin_passes(bootargs: Option<&[u8]>, default: u32) -> Result<u32, BootArgsError> {
    number_option(bootargs, SPIN_OPTION, default, MAX_SPIN_PASSES)
        .map_err(|value| BootArgsError::BadSpin { value })
}

/// The bound of an `irq` sleep in milliseconds `bootargs` sets (`sramlink.tick=MS`), or
/// `default`.
pub fn tick_ms(bootargs: Option<&[u8]>, default: u32) -> Result<u32, BootArgsError> {
    number_option(bootargs, TICK_OPTION, default, MAX_TICK_MS)
        .map_err(|value| BootArgsError::BadTick { value })
}

/// The last `option=N` in `bootargs` (decimal, at most `max`), or `default`; a bad occurrence
/// gives its value, shown.
fn number_option(
    bootargs: Option<&[u8]>,
    option: &str,
    default: u32,
    max: u32,
) -> Result<u32, ShownValue> {
    let mut number = default;
    let words = bootargs
        .unwrap_or(&[])
        .split(|byte| byte.is_ascii_whitespace() || *byte == 0)
        .filter(|word| !word.is_empty());
    for word in words {
        let Some(rest) = word.strip_prefix(option.as_bytes()) else {
            continue;
        };
        let value = match rest {
            [b'=', value @ ..] => value,
            [] => &[],
            // Another option that merely starts the same.
            _ => continue,
        };
        number = core::str::from_utf8(value)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
            .and_then(|text| text.parse::<u32>().ok())
            .filter(|number| *number <= max)
            .ok_or_else(|| shown(value))?;
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use super::*;

    fn parse(bootargs: &str) -> Result<IdlePolicy, BootArgsError> {
        idle_policy(Some(bootargs.as_bytes()))
    }

    /// The whole console line the kernel prints for `error`.
    fn error_line(error: &BootArgsError) -> std::string::String {
        std::format!("sramlink: error: {error}")
    }

    #[test]
    fn absent_bootargs_or_option_gives_the_default_irq() {
        assert_eq!(idle_policy(None), Ok(IdlePolicy::Irq));
        assert_eq!(parse(""), Ok(IdlePolicy::Irq));
        assert_eq!(parse("\0"), Ok(IdlePolicy::Irq));
        assert_eq!(parse("console=hvc0 quiet"), Ok(IdlePolicy::Irq));
    }

    #[test]
    fn both_values_are_recognised() {
        assert_eq!(parse("sramlink.idle=wfe"), Ok(IdlePolicy::Wfe));
        assert_eq!(parse("sramlink.idle=irq"), Ok(IdlePolicy::Irq));
        assert_eq!(parse("sramlink.idle=busy-poll"), Ok(IdlePolicy::BusyPoll));
        // As the property holds it: NUL-terminated.
        assert_eq!(parse("sramlink.idle=busy-poll\0"), Ok(IdlePolicy::BusyPoll));
    }

    #[test]
    fn option_among_other_words_is_found() {
        assert_eq!(
            parse("console=ttyAMA0  sramlink.idle=busy-poll\tloglevel=8\n"),
            Ok(IdlePolicy::BusyPoll)
        );
        // Non-UTF-8 bytes in other words do not hide it.
        assert_eq!(
            idle_policy(Some(b"x=\xff\xfe sramlink.idle=busy-poll\0")),
            Ok(IdlePolicy::BusyPoll)
        );
        // Look-alike options and words that merely contain it are someone else's.
        assert_eq!(
            parse("sramlink.idler=busy-poll xsramlink.idle=bogus sramlink.idle.x=1"),
            Ok(IdlePolicy::default())
        );
    }

    #[test]
    fn the_last_occurrence_wins() {
        assert_eq!(
            parse("sramlink.idle=busy-poll sramlink.idle=wfe"),
            Ok(IdlePolicy::Wfe)
        );
        assert_eq!(
            parse("sramlink.idle=wfe sramlink.idle=busy-poll"),
            Ok(IdlePolicy::BusyPoll)
        );
    }

    #[test]
    fn a_bad_value_is_an_error_listing_the_accepted_values() {
        let error = parse("console=hvc0 sramlink.idle=spin").unwrap_err();
        assert_eq!(
            error.to_string(),
            "bootargs: sramlink.idle=\"spin\" is unknown (accepted values: wfe, irq, busy-poll)"
        );
        // Values are exact: no case folding, no prefixes.
        for bad in ["WFE", "busy", "wfe,", "busy-poll2", "\"wfe\""] {
            let bootargs = std::format!("sramlink.idle={bad}");
            assert!(
                matches!(
                    parse(&bootargs),
                    Err(BootArgsError::UnknownIdlePolicy { .. })
                ),
                "{bootargs}"
            );
        }
        // A bad occurrence is an error even when a later one is good.
        assert!(parse("sramlink.idle=nope sramlink.idle=wfe").is_err());
    }

    #[test]
    fn an_empty_or_missing_value_is_an_error() {
        assert_eq!(
            parse("sramlink.idle=").unwrap_err().to_string(),
            "bootargs: sramlink.idle=\"\" is unknown (accepted values: wfe, irq, busy-poll)"
        );
        assert_eq!(
            parse("quiet sramlink.idle").unwrap_err().to_string(),
            "bootargs: sramlink.idle has no value (accepted values: wfe, irq, busy-poll)"
        );
    }

    #[test]
    fn long_or_binary_values_are_escaped_and_cut_to_keep_the_line_short() {
        let long = std::format!("sramlink.idle={}", "y".repeat(300));
        let error = parse(&long).unwrap_err();
        let expected = std::format!("\"{}...\"", "y".repeat(MAX_SHOWN_VALUE));
        assert!(error.to_string().contains(&expected), "{error}");

        let binary = idle_policy(Some(b"sramlink.idle=\x01\xff\"\x1b[2J")).unwrap_err();
        assert_eq!(
            binary.to_string(),
            "bootargs: sramlink.idle=\"\\x01\\xff\\\"\\x1b[2J\" is unknown \
             (accepted values: wfe, irq, busy-poll)"
        );

        let worst =
            idle_policy(Some(&[b"sramlink.idle=".as_slice(), &[0xff; 200]].concat())).unwrap_err();
        for error in [error, binary, worst] {
            let line = error_line(&error);
            assert!(line.len() < 120, "{} bytes: {line}", line.len());
        }
    }

    #[test]
    fn spin_passes_are_read_checked_and_defaulted() {
        let spin = |text: &str| spin_passes(Some(text.as_bytes()), 256);
        assert_eq!(spin_passes(None, 256), Ok(256));
        assert_eq!(spin("console=hvc0"), Ok(256));
        assert_eq!(spin("sramlink.spin=0"), Ok(0));
        assert_eq!(spin("sramlink.spin=4096 sramlink.idle=irq"), Ok(4096));
        assert_eq!(spin("sramlink.spin=1 sramlink.spin=2"), Ok(2));
        assert_eq!(spin("sramlink.spinner=9"), Ok(256));
        for bad in [
            "sramlink.spin=",
            "sramlink.spin",
            "sramlink.spin=-1",
            "sramlink.spin=1e3",
        ] {
            assert!(
                matches!(spin(bad), Err(BootArgsError::BadSpin { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            spin("sramlink.spin=1000001").unwrap_err().to_string(),
            "bootargs: sramlink.spin=\"1000001\" is not a number of idle passes (0..=1000000)"
        );
    }

    #[test]
    fn the_tick_is_read_checked_and_defaulted() {
        let tick = |text: &str| tick_ms(Some(text.as_bytes()), 10);
        assert_eq!(tick_ms(None, 10), Ok(10));
        assert_eq!(tick("sramlink.spin=5"), Ok(10));
        assert_eq!(tick("sramlink.tick=0"), Ok(0));
        assert_eq!(tick("sramlink.tick=1 sramlink.tick=250"), Ok(250));
        assert_eq!(tick("sramlink.ticks=9"), Ok(10));
        for bad in ["sramlink.tick=", "sramlink.tick", "sramlink.tick=1ms"] {
            assert!(
                matches!(tick(bad), Err(BootArgsError::BadTick { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            tick("sramlink.tick=60001").unwrap_err().to_string(),
            "bootargs: sramlink.tick=\"60001\" is not a number of milliseconds (0..=60000)"
        );
    }
}
