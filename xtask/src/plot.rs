//! The demo's round-trip figure: a cumulative distribution (CDF) per timed peer run, drawn as
//! SVG from the power-of-two histogram in the peer's report.

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde_json::{Map, Value};
use std::path::Path;

/// One curve: its label and its points (microseconds, fraction of samples at or below).
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// The CDF of a run's `rtt_histogram` (buckets `[low, high)` of counter ticks at `hz`), in
/// microseconds: the exact cumulative fraction at every bucket bound, straight lines between
/// (the samples' places inside a bucket are not in the report). A last bucket open to
/// `u64::MAX` ends at the run's `rtt.max`. `None` when the run has no timed samples.
pub fn cdf(run: &Map<String, Value>, hz: u64) -> Option<Vec<(f64, f64)>> {
    let buckets = run.get("rtt_histogram")?.as_array()?;
    let max = run
        .get("rtt")
        .and_then(|rtt| rtt.get("max"))
        .and_then(Value::as_u64);
    let bounds: Vec<(u64, u64, u64)> = buckets
        .iter()
        .map(|bucket| {
            let field = |key: &str| bucket.get(key).and_then(Value::as_u64);
            Some((field("low")?, field("high")?, field("count")?))
        })
        .collect::<Option<_>>()?;
    let total: u64 = bounds.iter().map(|(_, _, count)| count).sum();
    if total == 0 || hz == 0 {
        return None;
    }
    let micros = |ticks: u64| ticks as f64 * 1e6 / hz as f64;
    let mut points = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0;
    for &(low, high, count) in &bounds {
        if points.is_empty() {
            // A zero-tick bucket starts the axis at its upper bound (the axis is logarithmic).
            points.push((micros(low.max(1)), 0.0));
        }
        below += count;
        let high = if high == u64::MAX {
            max.unwrap_or(low).max(low)
        } else {
            high
        };
        points.push((micros(high), below as f64 / total as f64));
    }
    Some(points)
}

/// The curves of the timed runs (`ping`, `echo`) of one report, labelled by mode and idle
/// policy (`events` is the Xen event-channel notification mode).
pub fn curves(runs: &[Map<String, Value>], hz: u64) -> Vec<Curve> {
    runs.iter()
        .filter_map(|run| {
            let field = |key: &str| run.get(key).and_then(Value::as_str).unwrap_or("-");
            let mut label = format!("{} ({} idle)", field("mode"), field("idle_policy"));
            if let Some(samples) = run
                .get("rtt")
                .and_then(|rtt| rtt.get("samples"))
                .and_then(Value::as_u64)
            {
                label += &format!(", {samples} round trips");
            }
            Some(Curve {
                label,
                points: cdf(run, hz)?,
            })
        })
        .collect()
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(52, 101, 164),
    RGBColor(230, 140, 40),
    RGBColor(40, 120, 60),
    RGBColor(180, 40, 40),
    RGBColor(120, 80, 160),
    RGBColor(120, 120, 120),
];

/// Draws `curves` as an SVG CDF at `path` (logarithmic time axis).
pub fn draw_cdf(path: &Path, title: &str, curves: &[Curve]) -> Result<()> {
    let failed = |error: &dyn std::fmt::Display| anyhow!("{}: {error}", path.display());
    let all = || curves.iter().flat_map(|curve| curve.points.iter());
    let low = all().map(|point| point.0).fold(f64::INFINITY, f64::min);
    let high = all().map(|point| point.0).fold(0.0, f64::max);
    if !(low.is_finite() && high > 0.0) {
        return Err(anyhow!("{}: no round trips to draw", path.display()));
    }
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| failed(&error))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 15))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((low / 1.5..high * 1.5).log_scale(), 0.0..1.0)
        .map_err(|error| failed(&error))?;
    chart
        .configure_mesh()
        .x_desc("round trip, µs (log scale; TCG emulation time, compare curves only)")
        .y_desc("fraction of round trips ≤ x")
        .x_labels(10)
        .draw()
        .map_err(|error| failed(&error))?;
    for (index, curve) in curves.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|error| failed(&error))?
            .label(curve.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|error| failed(&error))?;
    root.present().map_err(|error| failed(&error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(value: Value) -> Map<String, Value> {
        value.as_object().expect("object").clone()
    }

    #[test]
    fn cdf_is_cumulative_at_bucket_bounds_in_microseconds() {
        let ping = run(json!({"mode": "ping", "rtt": {"max": 700, "samples": 4},
            "rtt_histogram": [{"low": 128, "high": 256, "count": 3},
                              {"low": 512, "high": 1024, "count": 1}]}));
        let points = cdf(&ping, 1_000_000).expect("timed run");
        assert_eq!(points, vec![(128.0, 0.0), (256.0, 0.75), (1024.0, 1.0)]);
    }

    #[test]
    fn open_last_bucket_ends_at_the_max_and_untimed_runs_have_no_curve() {
        let ping = run(json!({"rtt": {"max": 3000},
            "rtt_histogram": [{"low": 2048, "high": u64::MAX, "count": 2}]}));
        assert_eq!(
            cdf(&ping, 2_000_000).expect("timed run"),
            vec![(1024.0, 0.0), (1500.0, 1.0)]
        );
        let stream = run(json!({"mode": "stream", "rtt": null, "rtt_histogram": []}));
        assert!(cdf(&stream, 1_000_000).is_none());
        assert!(curves(&[stream], 1_000_000).is_empty());
    }
}
