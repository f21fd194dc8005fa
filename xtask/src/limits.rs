//! One factor that scales every time limit xtask sets (stage waits, downloads, builds), for a
//! slow or heavily loaded host: `--timeout-scale F` or `SRAMLINK_TIMEOUT_SCALE=F`.

use anyhow::{Result, bail};
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable that sets the factor when the flag is not given.
pub const ENV: &str = "SRAMLINK_TIMEOUT_SCALE";

/// The largest factor accepted (a limit of hours is no limit).
const MAX_SCALE: f64 = 100.0;

static SCALE: OnceLock<f64> = OnceLock::new();

/// Parses a factor as given on the command line or in [`ENV`]: a number in (0, 100].
pub fn parse_scale(text: &str) -> Result<f64> {
    let Ok(value) = text.trim().parse::<f64>() else {
        bail!("the timeout scale must be a number such as 2 or 0.5, got {text:?}");
    };
    if !(value > 0.0 && value <= MAX_SCALE) {
        bail!("the timeout scale must be above 0 and at most {MAX_SCALE}, got {text:?}");
    }
    Ok(value)
}

/// Sets the factor once, from the flag if given, else from [`ENV`], else 1.
pub fn init(flag: Option<f64>) -> Result<()> {
    let scale = match flag {
        Some(value) => value,
        None => match std::env::var(ENV) {
            Ok(text) => parse_scale(&text).map_err(|error| anyhow::anyhow!("{ENV}: {error}"))?,
            Err(_) => 1.0,
        },
    };
    let _ = SCALE.set(scale);
    Ok(())
}

/// The factor in force.
pub fn scale() -> f64 {
    *SCALE.get().unwrap_or(&1.0)
}

/// `limit` times the factor.
pub fn scaled(limit: Duration) -> Duration {
    limit.mul_f64(scale())
}

/// What a timeout message says about the factor, so whoever reads it knows how to loosen it.
pub fn note() -> String {
    format!(
        "limits scaled by {} (--timeout-scale or {ENV} to change)",
        scale()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_are_checked() {
        assert_eq!(parse_scale("2").expect("2"), 2.0);
        assert_eq!(parse_scale(" 0.5 ").expect("0.5"), 0.5);
        assert!(parse_scale("0").is_err());
        assert!(parse_scale("-3").is_err());
        assert!(parse_scale("1000").is_err());
        assert!(parse_scale("NaN").is_err());
        assert!(parse_scale("fast").is_err());
    }
}
