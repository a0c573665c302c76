//! Charts (plotters, SVG and PNG) from `results.json`.
//!
//! [`render_all`] writes every chart twice, `<id>.svg` and `<id>.png`, into one directory:
//!
//! - `first-write-by-config`: a bar per run (fs, options, cache): `first_write` p50 at the largest
//!   size that every run measured, with a p99 whisker;
//! - `copy-up-<run>`: `first_write` latency vs file size, log-log, one line per layer depth (p50,
//!   solid with dots) and its p99 (dashed, same colour);
//! - `efficiency-<op>`: reference p50 / op p50 vs file size, one line per run (1.0 = the copy-up is
//!   as fast as a plain copy of the same bytes);
//! - `cdf-<op>-<run>`: the latency CDF of each op, one line per file size, decoded from the cells'
//!   hdrhistograms.
//!
//! Text needs a TrueType font (plotters lays out text itself, also for SVG): the first of
//! `$COWPROF_FONT` and [`FONT_CANDIDATES`] that exists (Debian: `fonts-dejavu-core`).

// Chart coordinates are f64: nanoseconds and byte counts are exact in f64 up to 2^53 (104 days,
// 8 PiB), and beyond that no pixel would move. Casts back to integers are of rounded, clamped
// non-negative values (tick labels, bar slots).
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use crate::fmt;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use hdrhistogram::serialization::{DeserializeError, Deserializer};
use hdrhistogram::Histogram;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::lab::results::{Cell, Results, RunResult};

/// The op whose latency is the copy-up itself (a write to a file that lives in a lower layer).
pub const COPY_UP_OP: &str = "first_write";
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
pub(crate) const FONT: &str = "sans-serif";
/// CDF lines are thinned to about this many points (the SVGs stay small).
const MAX_CDF_POINTS: usize = 400;

/// One chart written by [`render_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    pub title: String,
    pub svg: PathBuf,
    pub png: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cell {cell}: {source}")]
    Histogram {
        cell: String,
        #[source]
        source: HistogramError,
    },
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
    #[error(
        "no chart of these results is named {svg}; pass the charts that render_all returned for \
         the same results"
    )]
    UnknownChart { svg: PathBuf },
}

/// Values one cell's histogram may hold: ten times the most repetitions a spec allows.
pub const MAX_RECORDED: u64 = 1_000_000;

/// Why a cell's `latency.histogram` could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error(
        "histogram holds {recorded} values, over the {MAX_RECORDED} a bench can record; \
         results.json is damaged: re-run `cowprof bench`"
    )]
    TooMany { recorded: u64 },
    #[error(
        "histogram holds {recorded} values but the cell's count is {count}; results.json is \
         damaged or was edited: re-run `cowprof bench`"
    )]
    CountMismatch { recorded: u64, count: u64 },
    #[error(
        "histogram is not valid base64 ({source}); results.json is damaged: re-run `cowprof bench`"
    )]
    Base64 {
        #[source]
        source: base64::DecodeError,
    },
    #[error(
        "histogram is truncated (header declares {declared} payload bytes, {available} present); \
         results.json is damaged: re-run `cowprof bench`"
    )]
    Truncated { declared: usize, available: usize },
    #[error(
        "histogram is not an hdrhistogram V2 serialization ({source}); results.json is damaged or \
         was written by another tool: re-run `cowprof bench`"
    )]
    Format {
        #[source]
        source: DeserializeError,
    },
}

/// Decodes a `LatencyStats::histogram` (base64, standard alphabet, of an hdrhistogram V2 or V2
/// deflate serialization). Corrupt input is an error, never a panic or a huge allocation.
pub fn decode_histogram(b64: &str) -> Result<Histogram<u64>, HistogramError> {
    const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
    const V2_HEADER_BYTES: usize = 40;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|source| HistogramError::Base64 { source })?;
    // The deserializer allocates the declared payload length before reading it: check it first.
    if bytes.len() >= 8 {
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(0) == V2_COOKIE {
            let declared = word(4) as usize;
            let available = bytes.len().saturating_sub(V2_HEADER_BYTES);
            if declared > available {
                return Err(HistogramError::Truncated {
                    declared,
                    available,
                });
            }
        }
    }
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|source| HistogramError::Format { source })?;
    // Consumers expand every recorded value (compare's bootstrap is O(values) per resample):
    // a forged count of 10^12 must be refused, not allocated or looped over (found by fuzzing).
    if h.len() > MAX_RECORDED {
        return Err(HistogramError::TooMany { recorded: h.len() });
    }
    Ok(h)
}

// ---------------------------------------------------------------------------------------------
// Axis helpers (log-spaced and linear ticks, unit formatting).

fn log_exponent(value: f64, base: f64) -> f64 {
    let e = value.ln() / base.ln();
    // 1000 is 10^2.9999999999999996 in floating point: snap near-integers.
    if (e - e.round()).abs() < 1e-9 {
        e.round()
    } else {
        e
    }
}

/// The smallest power-of-`base` range enclosing `[min, max]`; `None` unless
/// `0 < min <= max` are finite and `base > 1`. A single value gets one step on each side.
pub fn log_bounds(min: f64, max: f64, base: f64) -> Option<(f64, f64)> {
    if !(min.is_finite() && max.is_finite() && base.is_finite())
        || min <= 0.0
        || max < min
        || base <= 1.0
    {
        return None;
    }
    let mut lo = log_exponent(min, base).floor();
    let mut hi = log_exponent(max, base).ceil();
    if hi <= lo {
        lo -= 1.0;
        hi += 1.0;
    }
    Some((base.powf(lo), base.powf(hi)))
}

/// Powers of `base` within `[lo, hi]`, thinned to every k-th exponent (multiples of k) so that
/// there are at most `max_ticks` of them.
pub fn log_ticks(lo: f64, hi: f64, base: f64, max_ticks: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi >= lo && base > 1.0 && lo.is_finite() && hi.is_finite()) || max_ticks == 0 {
        return Vec::new();
    }
    let first = log_exponent(lo, base).ceil() as i64;
    let last = log_exponent(hi, base).floor() as i64;
    if last < first {
        return Vec::new();
    }
    let count = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
    let stride = i64::try_from(count.div_ceil(max_ticks))
        .unwrap_or(i64::MAX)
        .max(1);
    (first..=last)
        .filter(|e| e.rem_euclid(stride) == 0)
        .map(|e| base.powi(e as i32))
        .collect()
}

/// 2..9 × 10^k within `[lo, hi]` (the light grid lines of a decade axis).
pub fn log_minor_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return Vec::new();
    }
    let first = log_exponent(lo, 10.0).floor() as i32;
    let last = log_exponent(hi, 10.0).ceil() as i32;
    let mut out = Vec::new();
    for e in first..=last {
        for m in 2..=9 {
            let v = f64::from(m) * 10f64.powi(e);
            if v > lo && v < hi {
                out.push(v);
            }
        }
    }
    out
}

/// "Nice" linear ticks (1, 2 or 5 × 10^k apart) from `lo` through at least `hi`, at most about
/// `max_ticks` of them.
pub fn linear_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) || max_ticks < 2 {
        return Vec::new();
    }
    let raw = (hi - lo) / (max_ticks - 1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let start = (lo / step).ceil() as i64;
    let end = (hi / step).floor() as i64;
    (start..=end).map(|i| i as f64 * step).collect()
}

// ---------------------------------------------------------------------------------------------
// Chart plans: what to draw, independent of the backend.

#[derive(Debug, Clone, Copy)]
enum Unit {
    Bytes,
    Nanos,
    Percent,
    Ratio,
}

/// One axis. Log axes are drawn in log10 space (so every chart uses the same linear coordinate
/// type); `lo`, `hi`, ticks and points are data values.
#[derive(Debug, Clone)]
struct Axis {
    label: String,
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    minor: Vec<f64>,
    unit: Unit,
}

impl Axis {
    fn to_plot(&self, v: f64) -> f64 {
        if self.log {
            v.max(f64::MIN_POSITIVE).log10()
        } else {
            v
        }
    }

    fn unplot(&self, v: f64) -> f64 {
        if self.log {
            10f64.powf(v)
        } else {
            v
        }
    }

    fn format(&self, plotted: f64) -> String {
        let v = self.unplot(plotted);
        match self.unit {
            Unit::Bytes => fmt::bytes_label(v.round().max(0.0) as u64),
            Unit::Nanos => fmt::ns_label(if self.log { v.round() } else { v }),
            Unit::Percent => format!("{} %", fmt::trim_number(v * 100.0, 1)),
            Unit::Ratio if v != 0.0 && v.abs() < 0.01 => format!("{v:.0e}"),
            Unit::Ratio => fmt::trim_number(v, 2),
        }
    }

    /// File sizes: powers of two, labelled every other power when many.
    fn sizes(label: &str, min: f64, max: f64) -> Option<Self> {
        let (lo, hi) = log_bounds(min / 1.5, max * 1.5, 2.0)?;
        Some(Self {
            label: label.to_string(),
            log: true,
            lo,
            hi,
            ticks: log_ticks(lo, hi, 2.0, 9),
            minor: Vec::new(),
            unit: Unit::Bytes,
        })
    }

    /// Latencies and ratios: whole decades, with 2..9 light lines when there are few decades.
    fn decades(label: &str, min: f64, max: f64, unit: Unit) -> Option<Self> {
        let (lo, hi) = log_bounds(min, max, 10.0)?;
        let decades = log_exponent(hi, 10.0) - log_exponent(lo, 10.0);
        Some(Self {
            label: label.to_string(),
            log: true,
            lo,
            hi,
            ticks: log_ticks(lo, hi, 10.0, 12),
            minor: if decades <= 6.0 {
                log_minor_ticks(lo, hi)
            } else {
                Vec::new()
            },
            unit,
        })
    }

    fn linear(label: &str, hi: f64, unit: Unit, max_ticks: usize) -> Self {
        let ticks = linear_ticks(0.0, hi, max_ticks);
        // End the axis on a tick when the last tick is close, else just past the data.
        let hi = ticks.last().copied().filter(|t| *t >= hi).unwrap_or(hi);
        Self {
            label: label.to_string(),
            log: false,
            lo: 0.0,
            hi,
            ticks,
            minor: Vec::new(),
            unit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeriesKind {
    /// A solid line with a dot on each point.
    Marked,
    /// A solid line through many points (a CDF).
    Plain,
    /// A dashed line (a second statistic of a marked series, e.g. p99 beside p50).
    Dashed,
}

#[derive(Debug, Clone)]
struct Series {
    name: String,
    color: RGBColor,
    kind: SeriesKind,
    points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Copy)]
enum Legend {
    UpperLeft,
    LowerRight,
}

#[derive(Debug, Clone)]
struct XyChart {
    x: Axis,
    y: Axis,
    series: Vec<Series>,
    /// Dashed horizontal reference lines (y value, label).
    hlines: Vec<(f64, String)>,
    legend: Legend,
}

#[derive(Debug, Clone)]
struct Bar {
    label: String,
    p50: f64,
    p99: f64,
}

#[derive(Debug, Clone)]
struct BarChart {
    x: Axis,
    y_label: String,
    bars: Vec<Bar>,
}

#[derive(Debug, Clone)]
enum Body {
    Xy(XyChart),
    Bars(BarChart),
}

#[derive(Debug, Clone)]
struct Plan {
    /// File stem of the chart's files, unique within one set of results.
    id: String,
    title: String,
    height: u32,
    body: Body,
}

/// Okabe–Ito (colour-blind safe), without its yellow, then black.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 94, 60),
    RGBColor(0, 0, 0),
];

pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// `ext4 (reflink) · metacopy=on · warm`: how a run is named in titles, legends and the report.
pub fn run_label(run: &RunResult) -> String {
    let mut s = run.fs.clone();
    if !run.fs_features.is_empty() {
        let _ = write!(s, " ({})", run.fs_features.join(", "));
    }
    s.push_str(" · ");
    if run.mount_options.is_empty() {
        s.push_str("default options");
    } else {
        s.push_str(&run.mount_options.join(","));
    }
    s.push_str(" · ");
    s.push_str(&run.cache);
    s
}

pub(crate) fn slug(s: &str) -> String {
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

fn cell_name(run: &RunResult, cell: &Cell) -> String {
    format!(
        "{} size {} depth {} of run {}",
        cell.op,
        fmt::bytes_label(cell.size_bytes),
        cell.layer_depth,
        run_label(run)
    )
}

fn min_max(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

fn copy_up_plan(run: &RunResult) -> Option<(String, String, XyChart)> {
    let cells: Vec<&Cell> = run
        .cells
        .iter()
        .filter(|c| c.op == COPY_UP_OP && c.latency.count > 0 && c.latency.p50_ns > 0)
        .collect();
    let (smin, smax) = min_max(cells.iter().map(|c| c.size_bytes.max(1) as f64))?;
    let (lmin, lmax) = min_max(cells.iter().flat_map(|c| {
        [
            c.latency.p50_ns as f64,
            c.latency.p99_ns.max(c.latency.p50_ns) as f64,
        ]
    }))?;
    let depths: BTreeSet<u32> = cells.iter().map(|c| c.layer_depth).collect();
    let mut series = Vec::new();
    let mut lines = Vec::new();
    for (i, depth) in depths.iter().enumerate() {
        let mut at: Vec<&&Cell> = cells.iter().filter(|c| c.layer_depth == *depth).collect();
        at.sort_by_key(|c| c.size_bytes);
        let p50: Vec<(f64, f64)> = at
            .iter()
            .map(|c| (c.size_bytes.max(1) as f64, c.latency.p50_ns as f64))
            .collect();
        let p99: Vec<(f64, f64)> = at
            .iter()
            .map(|c| {
                (
                    c.size_bytes.max(1) as f64,
                    c.latency.p99_ns.max(c.latency.p50_ns) as f64,
                )
            })
            .collect();
        series.push(Series {
            name: format!("depth {depth} p50"),
            color: color(i),
            kind: SeriesKind::Marked,
            points: p50,
        });
        lines.push(Series {
            name: format!("depth {depth} p99"),
            color: color(i),
            kind: SeriesKind::Dashed,
            points: p99,
        });
    }
    series.extend(lines);
    let label = run_label(run);
    Some((
        format!("copy-up-{}", slug(&label)),
        format!("Copy-up latency ({COPY_UP_OP}) vs file size: {label}"),
        XyChart {
            x: Axis::sizes("file size (bytes, log scale)", smin, smax)?,
            y: Axis::decades(
                &format!("{COPY_UP_OP} latency (log scale)"),
                lmin,
                lmax,
                Unit::Nanos,
            )?,
            series,
            hlines: Vec::new(),
            legend: Legend::UpperLeft,
        },
    ))
}

/// (latency ns, cumulative fraction) of a histogram, thinned to about `MAX_CDF_POINTS`.
pub(crate) fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
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

fn cdf_plans(run: &RunResult) -> Result<Vec<(String, String, XyChart)>, ChartError> {
    let label = run_label(run);
    let mut ops: Vec<&str> = Vec::new();
    for c in &run.cells {
        if !ops.contains(&c.op.as_str()) {
            ops.push(&c.op);
        }
    }
    let mut plans = Vec::new();
    for op in ops {
        let Some(depth) = run
            .cells
            .iter()
            .filter(|c| c.op == op)
            .map(|c| c.layer_depth)
            .min()
        else {
            continue;
        };
        let mut cells: Vec<&Cell> = run
            .cells
            .iter()
            .filter(|c| c.op == op && c.layer_depth == depth)
            .collect();
        cells.sort_by_key(|c| (c.size_bytes, c.threads));
        let mut series = Vec::new();
        for (i, cell) in cells.iter().enumerate() {
            // Concurrent ops have one cell per thread count at each size.
            let name = if cell.threads > 1 {
                format!(
                    "{} x{} threads",
                    fmt::bytes_label(cell.size_bytes),
                    cell.threads
                )
            } else {
                fmt::bytes_label(cell.size_bytes)
            };
            let h = decode_histogram(&cell.latency.histogram).map_err(|source| {
                ChartError::Histogram {
                    cell: cell_name(run, cell),
                    source,
                }
            })?;
            let points = cdf_points(&h);
            if points.is_empty() {
                continue;
            }
            series.push(Series {
                name,
                color: color(i),
                kind: SeriesKind::Plain,
                points,
            });
        }
        let Some((lo, hi)) = min_max(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
        else {
            continue;
        };
        let Some(x) = Axis::decades(&format!("{op} latency (log scale)"), lo, hi, Unit::Nanos)
        else {
            continue;
        };
        plans.push((
            format!("cdf-{}-{}", slug(op), slug(&label)),
            format!("{op} latency CDF by file size (depth {depth}): {label}"),
            XyChart {
                x,
                y: Axis {
                    label: "fraction of ops at most this latency".to_string(),
                    log: false,
                    lo: 0.0,
                    hi: 1.0,
                    ticks: linear_ticks(0.0, 1.0, 11),
                    minor: Vec::new(),
                    unit: Unit::Percent,
                },
                series,
                hlines: vec![(0.5, "p50".to_string()), (0.99, "p99".to_string())],
                legend: Legend::LowerRight,
            },
        ));
    }
    Ok(plans)
}

fn efficiency_plans(results: &Results) -> Vec<(String, String, XyChart)> {
    let mut ops: Vec<&str> = Vec::new();
    for c in results.runs.iter().flat_map(|r| &r.cells) {
        if c.efficiency.is_some_and(|e| e.is_finite() && e > 0.0) && !ops.contains(&c.op.as_str()) {
            ops.push(&c.op);
        }
    }
    let mut plans = Vec::new();
    for op in ops {
        let mut series = Vec::new();
        for (i, run) in results.runs.iter().enumerate() {
            let usable =
                |c: &&Cell| c.op == op && c.efficiency.is_some_and(|e| e.is_finite() && e > 0.0);
            let Some(depth) = run.cells.iter().filter(usable).map(|c| c.layer_depth).min() else {
                continue;
            };
            let mut points: Vec<(f64, f64)> = run
                .cells
                .iter()
                .filter(usable)
                .filter(|c| c.layer_depth == depth)
                .map(|c| {
                    (
                        c.size_bytes.max(1) as f64,
                        c.efficiency.unwrap_or(0.0).max(0.0),
                    )
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(Series {
                name: format!("{} (depth {depth})", run_label(run)),
                color: color(i),
                kind: SeriesKind::Marked,
                points,
            });
        }
        let all = || series.iter().flat_map(|s| s.points.iter().copied());
        let (Some((smin, smax)), Some((emin, emax))) =
            (min_max(all().map(|p| p.0)), min_max(all().map(|p| p.1)))
        else {
            continue;
        };
        let Some(x) = Axis::sizes("file size (bytes, log scale)", smin, smax) else {
            continue;
        };
        // Reflink copy-ups can beat a plain copy by orders of magnitude: a log axis then keeps
        // the other runs readable.
        let label = "efficiency = reference p50 / op p50";
        let y = if emax / emin > 20.0 {
            Axis::decades(
                &format!("{label} (log scale)"),
                emin.min(1.0),
                emax.max(1.0),
                Unit::Ratio,
            )
        } else {
            None
        }
        .unwrap_or_else(|| {
            Axis::linear(
                &format!("{label} (ratio)"),
                (emax * 1.1).max(1.25),
                Unit::Ratio,
                8,
            )
        });
        plans.push((
            format!("efficiency-{}", slug(op)),
            format!("{op} efficiency vs a plain copy (cp + fsync), by file size"),
            XyChart {
                x,
                y,
                series,
                hlines: vec![(1.0, "1.0 = as fast as a plain copy".to_string())],
                legend: Legend::UpperLeft,
            },
        ));
    }
    plans
}

fn bar_plan(results: &Results) -> Option<(String, String, BarChart)> {
    let usable = |c: &&Cell| c.op == COPY_UP_OP && c.latency.count > 0;
    let runs: Vec<&RunResult> = results
        .runs
        .iter()
        .filter(|r| r.cells.iter().any(|c| usable(&c)))
        .collect();
    let sizes_of = |r: &RunResult| -> BTreeSet<u64> {
        r.cells
            .iter()
            .filter(usable)
            .map(|c| c.size_bytes)
            .collect()
    };
    let common = runs
        .iter()
        .map(|r| sizes_of(r))
        .reduce(|a, b| a.intersection(&b).copied().collect())?;
    let size = match common.last() {
        Some(s) => *s,
        None => runs.iter().flat_map(|r| sizes_of(r)).max()?,
    };
    let mut picked = Vec::new();
    for run in &runs {
        let at = run
            .cells
            .iter()
            .filter(usable)
            .filter(|c| c.size_bytes == size);
        if let Some(cell) = at.min_by_key(|c| c.layer_depth) {
            picked.push((run_label(run), cell));
        }
    }
    let depths: BTreeSet<u32> = picked.iter().map(|(_, c)| c.layer_depth).collect();
    let one_depth = (depths.len() == 1)
        .then(|| depths.first().copied())
        .flatten();
    let bars: Vec<Bar> = picked
        .iter()
        .map(|(label, c)| Bar {
            label: match one_depth {
                Some(_) => label.clone(),
                None => format!("{label} · depth {}", c.layer_depth),
            },
            p50: c.latency.p50_ns as f64,
            p99: c.latency.p99_ns.max(c.latency.p50_ns) as f64,
        })
        .collect();
    let max = bars.iter().map(|b| b.p99).fold(0.0, f64::max);
    if bars.is_empty() || max <= 0.0 {
        return None;
    }
    let depth_note = one_depth
        .map(|d| format!(", depth {d}"))
        .unwrap_or_default();
    Some((
        "first-write-by-config".to_string(),
        format!(
            "{COPY_UP_OP} latency at {}{depth_note}, by filesystem and options",
            fmt::bytes_label(size)
        ),
        BarChart {
            x: Axis::linear(
                &format!("{COPY_UP_OP} latency (bar: p50, whisker: p99)"),
                max * 1.18,
                Unit::Nanos,
                8,
            ),
            y_label: "filesystem · overlay options · page cache".to_string(),
            bars,
        },
    ))
}

fn plans(results: &Results) -> Result<Vec<Plan>, ChartError> {
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let mut push = |id: String, title: String, height: u32, body: Body| {
        let mut unique = id.clone();
        let mut n = 2;
        while !ids.insert(unique.clone()) {
            unique = format!("{id}-{n}");
            n += 1;
        }
        out.push(Plan {
            id: unique,
            title,
            height,
            body,
        });
    };
    if let Some((id, title, bars)) = bar_plan(results) {
        let rows = u32::try_from(bars.bars.len()).unwrap_or(u32::MAX);
        let height = CHART_HEIGHT.max(160 + 48 * rows.min(40));
        push(id, title, height, Body::Bars(bars));
    }
    for run in &results.runs {
        if let Some((id, title, chart)) = copy_up_plan(run) {
            push(id, title, CHART_HEIGHT, Body::Xy(chart));
        }
    }
    for (id, title, chart) in efficiency_plans(results) {
        push(id, title, CHART_HEIGHT, Body::Xy(chart));
    }
    for run in &results.runs {
        for (id, title, chart) in cdf_plans(run)? {
            push(id, title, CHART_HEIGHT, Body::Xy(chart));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Drawing.

type DrawResult = Result<(), Box<dyn StdError>>;

/// A linear axis (in plotted space) whose grid lines and labels are exactly the given ticks.
#[derive(Debug, Clone)]
struct Ticked {
    lo: f64,
    hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        let frac = if span > 0.0 {
            (value - self.lo) / span
        } else {
            0.0
        };
        limit.0 + (f64::from(limit.1 - limit.0) * frac).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Registers the chart font once per process (plotters keeps it).
pub(crate) fn ensure_font() -> Result<(), ChartError> {
    static FONT_STATE: OnceLock<Result<(), String>> = OnceLock::new();
    FONT_STATE
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = std::env::var_os(FONT_ENV)
                .map(PathBuf::from)
                .into_iter()
                .collect();
            candidates.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
            for path in &candidates {
                let Ok(bytes) = fs::read(path) else { continue };
                // plotters keeps fonts for the life of the process: leak the one we load, once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
            Err(candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "))
        })
        .clone()
        .map_err(|tried| ChartError::FontMissing { tried })
}

fn draw_plan<DB>(plan: &Plan, root: &DrawingArea<DB, Shift>) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    match &plan.body {
        Body::Xy(chart) => draw_xy(root, &plan.title, chart)?,
        Body::Bars(chart) => draw_bars(root, &plan.title, chart)?,
    }
    root.present()?;
    Ok(())
}

fn draw_xy<DB>(root: &DrawingArea<DB, Shift>, title: &str, c: &XyChart) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let (x, y) = (&c.x, &c.y);
    let plot_ticks = |a: &Axis, v: &[f64]| v.iter().map(|t| a.to_plot(*t)).collect::<Vec<f64>>();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 19))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(86)
        .build_cartesian_2d(
            Ticked {
                lo: x.to_plot(x.lo),
                hi: x.to_plot(x.hi),
                bold: plot_ticks(x, &x.ticks),
                light: plot_ticks(x, &x.minor),
            },
            Ticked {
                lo: y.to_plot(y.lo),
                hi: y.to_plot(y.hi),
                bold: plot_ticks(y, &y.ticks),
                light: plot_ticks(y, &y.minor),
            },
        )?;
    let fx = |v: &f64| x.format(*v);
    let fy = |v: &f64| y.format(*v);
    chart
        .configure_mesh()
        .x_desc(x.label.as_str())
        .y_desc(y.label.as_str())
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .bold_line_style(RGBColor(205, 205, 205))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;

    let to_plot = |p: &(f64, f64)| (x.to_plot(p.0), y.to_plot(p.1));
    let (x0, x1) = (x.to_plot(x.lo), x.to_plot(x.hi));
    for (value, label) in &c.hlines {
        let yv = y.to_plot(*value);
        chart.draw_series(DashedLineSeries::new(
            [(x0, yv), (x1, yv)],
            6,
            4,
            RGBColor(90, 90, 90).stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(
            EmptyElement::at((x0, yv))
                + Text::new(
                    label.clone(),
                    (6, -16),
                    (FONT, 12).into_font().color(&RGBColor(70, 70, 70)),
                ),
        ))?;
    }
    for s in &c.series {
        let col = s.color;
        let points: Vec<(f64, f64)> = s.points.iter().map(to_plot).collect();
        if s.kind == SeriesKind::Dashed {
            chart
                .draw_series(DashedLineSeries::new(
                    points.clone(),
                    7,
                    5,
                    col.mix(0.85).stroke_width(2),
                ))?
                .label(s.name.as_str())
                .legend(move |(lx, ly)| {
                    EmptyElement::at((lx, ly))
                        + PathElement::new(vec![(0, 0), (7, 0)], col.stroke_width(2))
                        + PathElement::new(vec![(12, 0), (20, 0)], col.stroke_width(2))
                });
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), col.stroke_width(2)))?
            .label(s.name.as_str())
            .legend(move |(lx, ly)| {
                PathElement::new(vec![(lx, ly), (lx + 20, ly)], col.stroke_width(2))
            });
        if s.kind == SeriesKind::Marked {
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, col.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(match c.legend {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        })
        .margin(10)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.88))
        .border_style(RGBColor(170, 170, 170))
        .draw()?;
    Ok(())
}

fn draw_bars<DB>(root: &DrawingArea<DB, Shift>, title: &str, c: &BarChart) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let n = c.bars.len();
    // Bars from the top in the order of the runs: bar i sits at y = n - 1 - i.
    let row = |i: usize| (n - 1 - i) as f64;
    let longest = c
        .bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(0);
    let label_w = u32::try_from(longest * 8 + 24)
        .unwrap_or(u32::MAX)
        .clamp(120, 420);
    let centers: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 19))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(label_w)
        .build_cartesian_2d(
            Ticked {
                lo: c.x.lo,
                hi: c.x.hi,
                bold: c.x.ticks.clone(),
                light: Vec::new(),
            },
            Ticked {
                lo: 0.0,
                hi: n as f64,
                bold: centers,
                light: Vec::new(),
            },
        )?;
    let fx = |v: &f64| c.x.format(*v);
    let fy = |v: &f64| {
        let slot = (v - 0.5).round();
        if slot >= 0.0 && (slot as usize) < n {
            c.bars[n - 1 - slot as usize].label.clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(c.x.label.as_str())
        .y_desc(c.y_label.as_str())
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    let bar_color = color(0);
    chart
        .draw_series(c.bars.iter().enumerate().map(|(i, b)| {
            Rectangle::new(
                [(0.0, row(i) + 0.2), (b.p50, row(i) + 0.8)],
                bar_color.mix(0.85).filled(),
            )
        }))?
        .label("p50")
        .legend(move |(lx, ly)| {
            Rectangle::new([(lx, ly - 5), (lx + 20, ly + 5)], bar_color.filled())
        });
    let whisker = RGBColor(40, 40, 40);
    chart
        .draw_series(c.bars.iter().enumerate().map(|(i, b)| {
            PathElement::new(
                vec![(b.p50, row(i) + 0.5), (b.p99, row(i) + 0.5)],
                whisker.stroke_width(2),
            )
        }))?
        .label("p99")
        .legend(move |(lx, ly)| {
            PathElement::new(
                vec![
                    (lx, ly),
                    (lx + 20, ly),
                    (lx + 20, ly - 5),
                    (lx + 20, ly + 5),
                ],
                whisker.stroke_width(2),
            )
        });
    chart.draw_series(c.bars.iter().enumerate().map(|(i, b)| {
        PathElement::new(
            vec![(b.p99, row(i) + 0.35), (b.p99, row(i) + 0.65)],
            whisker.stroke_width(2),
        )
    }))?;
    // The numbers go above each bar, from the axis: they never run off the right edge.
    chart.draw_series(c.bars.iter().enumerate().map(|(i, b)| {
        EmptyElement::at((0.0, row(i) + 0.8))
            + Text::new(
                format!(
                    "p50 {} · p99 {}",
                    fmt::ns_label(b.p50),
                    fmt::ns_label(b.p99)
                ),
                (4, -17),
                (FONT, 12).into_font(),
            )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .margin(10)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.88))
        .border_style(RGBColor(170, 170, 170))
        .draw()?;
    Ok(())
}

fn svg_string(plan: &Plan) -> Result<String, ChartError> {
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, (CHART_WIDTH, plan.height)).into_drawing_area();
        draw_plan(plan, &root).map_err(|e| ChartError::Draw {
            chart: plan.title.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(out)
}

fn write_png(plan: &Plan, path: &Path) -> Result<(), ChartError> {
    let root = BitMapBackend::new(path, (CHART_WIDTH, plan.height)).into_drawing_area();
    draw_plan(plan, &root).map_err(|e| {
        let reason = e.to_string();
        // The bitmap backend reports a failed file write as a drawing error.
        if reason.contains("I/O") || reason.contains("o error") || reason.contains("ermission") {
            ChartError::Write {
                path: path.to_path_buf(),
                source: io::Error::other(reason),
            }
        } else {
            ChartError::Draw {
                chart: plan.title.clone(),
                reason,
            }
        }
    })
}

/// Draws every chart of `results` into `out_dir` (created if missing) as `<id>.svg` and
/// `<id>.png`, and returns them in report order. Results without usable cells give no charts.
pub fn render_all(results: &Results, out_dir: &Path) -> Result<Vec<Chart>, ChartError> {
    let plans = plans(results)?;
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    ensure_font()?;
    fs::create_dir_all(out_dir).map_err(|source| ChartError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut charts = Vec::with_capacity(plans.len());
    for plan in &plans {
        let svg = out_dir.join(format!("{}.svg", plan.id));
        let png = out_dir.join(format!("{}.png", plan.id));
        let text = svg_string(plan)?;
        fs::write(&svg, text).map_err(|source| ChartError::Write {
            path: svg.clone(),
            source,
        })?;
        write_png(plan, &png)?;
        charts.push(Chart {
            title: plan.title.clone(),
            svg,
            png,
        });
    }
    let keep: HashSet<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    remove_stale(out_dir, &keep);
    Ok(charts)
}

/// File-name prefixes of the charts [`render_all`] draws (see the module docs).
const CHART_PREFIXES: [&str; 4] = ["first-write-", "copy-up-", "efficiency-", "cdf-"];

/// Removes the charts an earlier run into the same directory drew and this one did not (another
/// spec): regular `.svg`/`.png` files named like a chart of ours that is not in `keep`. Anything
/// else (other names, symlinks, directories) is left alone; a file that cannot be removed stays.
fn remove_stale(out_dir: &Path, keep: &HashSet<&str>) {
    let Ok(entries) = fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path.extension().is_some_and(|e| e == "svg" || e == "png")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|stem| {
                    CHART_PREFIXES.iter().any(|p| stem.starts_with(p)) && !keep.contains(stem)
                });
        // `DirEntry::file_type` does not follow symlinks.
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The SVG markup of `chart` (one that [`render_all`] returned for the same `results`), drawn
/// again in memory, for inlining without reading the file back.
pub fn render_svg_string(results: &Results, chart: &Chart) -> Result<String, ChartError> {
    let stem = chart
        .svg
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let plans = plans(results)?;
    let plan = plans
        .iter()
        .find(|p| p.id == stem)
        .ok_or_else(|| ChartError::UnknownChart {
            svg: chart.svg.clone(),
        })?;
    ensure_font()?;
    svg_string(plan)
}

/// Chart ids (file stems) and titles that [`render_all`] would draw, without drawing.
pub fn chart_index(results: &Results) -> Result<BTreeMap<String, String>, ChartError> {
    Ok(plans(results)?
        .into_iter()
        .map(|p| (p.id, p.title))
        .collect())
}

#[cfg(test)]
mod tests {

    #[test]
    fn stale_charts_of_an_earlier_run_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "cdf-create-dir-warm.svg",
            "cdf-create-dir-warm.png",
            "copy-up-ext4-warm.svg",
            "notes.svg",
            "cdf-x.txt",
        ] {
            fs::write(d.join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink(d.join("notes.svg"), d.join("efficiency-link.svg")).unwrap();
        fs::create_dir(d.join("cdf-dir.svg")).unwrap();
        remove_stale(d, &HashSet::from(["copy-up-ext4-warm"]));
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "cdf-dir.svg",
                "cdf-x.txt",
                "copy-up-ext4-warm.svg",
                "efficiency-link.svg",
                "notes.svg"
            ]
        );
    }

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
