//! The benchmark figure: one panel per group, a horizontal bar per case (median, with the
//! min–max range of the repeats as a line), labelled with its ratio to the group's reference.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cases::Group;

/// One case as drawn.
pub struct Bar {
    pub group: Group,
    pub label: &'static str,
    /// Nanoseconds per operation.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The first ratio of the case (value, reference id).
    pub ratio: Option<(f64, &'static str)>,
}

const ROW_PIXELS: u32 = 26;
const PANEL_EXTRA_PIXELS: u32 = 80;
const WIDTH: u32 = 1100;

fn colour(label: &str) -> RGBColor {
    if label.contains("floor") {
        RGBColor(120, 120, 120)
    } else if label.starts_with("rtrb") {
        RGBColor(52, 101, 164)
    } else if label.starts_with("crossbeam") {
        RGBColor(230, 140, 40)
    } else if label.contains("Device") {
        RGBColor(115, 170, 60)
    } else {
        RGBColor(40, 120, 60)
    }
}

fn describe(bar: &Bar) -> String {
    let ratio = match bar.ratio {
        Some((value, reference)) => match bar.group {
            Group::RoundTrip => format!(", {value:.2} × {reference} time"),
            _ => format!(", {value:.2} × {reference} speed"),
        },
        None => String::new(),
    };
    format!("{}: {:.1} ns{ratio}", bar.label, bar.median)
}

/// Draws `bars` as an SVG file at `path`.
pub fn draw(path: &Path, title: &str, bars: &[Bar]) -> Result<(), String> {
    let failed = |error: &dyn std::fmt::Display| format!("{}: {error}", path.display());
    let groups = [Group::RoundTrip, Group::Stream8, Group::Stream64];
    let panel_height = |group: Group| {
        let rows = bars.iter().filter(|bar| bar.group == group).count() as u32;
        rows * ROW_PIXELS + PANEL_EXTRA_PIXELS
    };
    let height = 40 + groups.iter().map(|group| panel_height(*group)).sum::<u32>();
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| failed(&error))?;
    let (header, mut rest) = root.split_vertically(40);
    header
        .draw_text(
            title,
            &("sans-serif", 15).into_font().color(&BLACK),
            (12, 14),
        )
        .map_err(|error| failed(&error))?;
    for group in groups {
        let (panel, below) = rest.split_vertically(panel_height(group));
        rest = below;
        let entries: Vec<&Bar> = bars.iter().filter(|bar| bar.group == group).collect();
        if entries.is_empty() {
            continue;
        }
        // Logarithmic: chunked and per-element figures differ by up to two decades. The axis
        // covers the medians with room for the labels; longer min–max lines are clipped.
        let shortest = entries
            .iter()
            .map(|bar| bar.min)
            .fold(f64::INFINITY, f64::min);
        let longest = entries.iter().map(|bar| bar.median).fold(0.0, f64::max);
        let (low, high) = (shortest.max(0.01) / 2.0, longest * 40.0);
        let unit = match group {
            Group::RoundTrip => "ns per round trip, log scale (lower is better)",
            _ => "ns per message, log scale (lower is better)",
        };
        let rows = entries.len() as f64;
        let mut chart = ChartBuilder::on(&panel)
            .caption(group.name(), ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(4)
            .build_cartesian_2d((low..high).log_scale(), 0.0..rows)
            .map_err(|error| failed(&error))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc(unit)
            .x_labels(8)
            .draw()
            .map_err(|error| failed(&error))?;
        let row = |index: usize| rows - 1.0 - index as f64;
        chart
            .draw_series(entries.iter().enumerate().map(|(index, bar)| {
                let y = row(index);
                Rectangle::new(
                    [(low, y + 0.18), (bar.median, y + 0.82)],
                    colour(bar.label).filled(),
                )
            }))
            .map_err(|error| failed(&error))?;
        chart
            .draw_series(entries.iter().enumerate().map(|(index, bar)| {
                let y = row(index) + 0.5;
                let end = bar.max.min(longest * 4.0);
                PathElement::new(vec![(bar.min, y), (end, y)], BLACK.stroke_width(1))
            }))
            .map_err(|error| failed(&error))?;
        let text = ("sans-serif", 12)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(entries.iter().enumerate().map(|(index, bar)| {
                let at = (bar.max.min(longest * 4.0) * 1.08, row(index) + 0.5);
                Text::new(describe(bar), at, text.clone())
            }))
            .map_err(|error| failed(&error))?;
    }
    root.present().map_err(|error| failed(&error))
}
