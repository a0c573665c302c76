//! Drawing charts (plotters, SVG and PNG) from plans: axes with their ticks, series, bars. The
//! tools build the plans from their own data (the lab's `results.json` charts, `compare`'s
//! overlaid CDFs); this module knows nothing of where the numbers came from.
//!
//! Text needs a TrueType font (plotters lays out text itself, also for SVG): the first of
//! `$COWPROF_FONT` and [`FONT_CANDIDATES`] that exists (Debian: `fonts-dejavu-core`).

// Chart coordinates are f64: nanoseconds and byte counts are exact in f64 up to 2^53 (104 days,
// 8 PiB), and beyond that no pixel would move. Casts back to integers are of rounded, clamped
// non-negative values (tick labels, bar slots).
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use hdrhistogram::Histogram;
use plotters::style::RGBColor;

mod axes;
mod draw;

pub use axes::{
    linear_ticks, log_bounds, log_minor_ticks, log_ticks, Axis, Bar, BarChart, Body, Legend, Plan,
    Series, SeriesKind, Unit, XyChart, PALETTE,
};
pub use draw::{ensure_font, svg_string, write_png};

/// Size of every chart, pixels (SVG user units and PNG pixels).
pub const CHART_WIDTH: u32 = 960;
pub const CHART_HEIGHT: u32 = 560;
/// Environment variable naming a `.ttf` file to use instead of [`FONT_CANDIDATES`].
pub const FONT_ENV: &str = "COWPROF_FONT";
/// Fonts tried in order (the first is in Debian's `fonts-dejavu-core`).
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
pub const FONT: &str = "sans-serif";
/// CDF lines are thinned to about this many points (the SVGs stay small).
pub const MAX_CDF_POINTS: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(
        "no usable TrueType font for chart text (tried {tried}); install the Debian package \
         fonts-dejavu-core (scripts/setup does) or set {FONT_ENV} to a .ttf file"
    )]
    FontMissing { tried: String },
    #[error(
        "cannot create the chart directory {path}: {source}; pick an output directory you can \
         write to"
    )]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write chart file {path}: {source}; check that its directory is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "drawing chart {chart:?} failed: {reason}; this is a bug in cowprof's charts, please \
         report it with the results.json"
    )]
    Draw { chart: String, reason: String },
}

/// Draws `plan` into `<dir>/<plan.id>.svg` and `.png`; returns both paths.
pub fn write_chart(plan: &Plan, dir: &Path) -> Result<(PathBuf, PathBuf), PlotError> {
    let svg = dir.join(format!("{}.svg", plan.id));
    let png = dir.join(format!("{}.png", plan.id));
    let text = svg_string(plan)?;
    fs::write(&svg, text).map_err(|source| PlotError::Write {
        path: svg.clone(),
        source,
    })?;
    write_png(plan, &png)?;
    Ok((svg, png))
}

/// The `i`-th colour of the palette (it wraps).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A file-name part: lower-case ASCII letters and digits, runs of anything else as one `-`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "chart".to_string()
    } else {
        out
    }
}

/// The smallest and largest value; `None` for none.
pub fn min_max(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// (latency ns, cumulative fraction) of a histogram, thinned to about [`MAX_CDF_POINTS`].
pub fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = h.len();
    if total == 0 {
        return Vec::new();
    }
    let mut points = vec![(h.lowest_equivalent(h.min()).max(1) as f64, 0.0)];
    let mut cum = 0u64;
    for v in h.iter_recorded() {
        cum += v.count_since_last_iteration();
        points.push((
            v.value_iterated_to().max(1) as f64,
            cum as f64 / total as f64,
        ));
    }
    if points.len() > MAX_CDF_POINTS {
        let step = points.len().div_ceil(MAX_CDF_POINTS);
        let last = *points.last().expect("non-empty");
        points = points.into_iter().step_by(step).collect();
        if points.last() != Some(&last) {
            points.push(last);
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_points_climb_to_one() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [1_000u64, 2_000, 2_000, 3_000, 40_000] {
            h.record(v).unwrap();
        }
        let cdf = cdf_points(&h);
        assert_eq!(cdf.first().map(|p| p.1), Some(0.0));
        assert_eq!(cdf.last().map(|p| p.1), Some(1.0));
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!(cdf_points(&Histogram::<u64>::new(3).unwrap()).is_empty());
        // Many distinct values are thinned, and the end point is kept.
        let mut wide = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in 1..5_000u64 {
            wide.record(v * 997).unwrap();
        }
        let thin = cdf_points(&wide);
        assert!(thin.len() <= MAX_CDF_POINTS + 1, "{}", thin.len());
        assert_eq!(thin.last().map(|p| p.1), Some(1.0));
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("ext4 (reflink) · metacopy=on · warm"),
            "ext4-reflink-metacopy-on-warm"
        );
        assert_eq!(slug("··"), "chart");
    }
}
