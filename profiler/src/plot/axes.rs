//! Axes: tick positions (log and linear) and the plan types a chart is drawn from.

use plotters::style::RGBColor;

use crate::fmt;

// ---------------------------------------------------------------------------------------------
// Axis helpers (log-spaced and linear ticks, unit formatting).

pub fn log_exponent(value: f64, base: f64) -> f64 {
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
pub enum Unit {
    Bytes,
    Nanos,
    Percent,
    Ratio,
}

/// One axis. Log axes are drawn in log10 space (so every chart uses the same linear coordinate
/// type); `lo`, `hi`, ticks and points are data values.
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub log: bool,
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
    pub minor: Vec<f64>,
    pub unit: Unit,
}

impl Axis {
    pub fn to_plot(&self, v: f64) -> f64 {
        if self.log {
            v.max(f64::MIN_POSITIVE).log10()
        } else {
            v
        }
    }

    pub fn unplot(&self, v: f64) -> f64 {
        if self.log {
            10f64.powf(v)
        } else {
            v
        }
    }

    pub fn format(&self, plotted: f64) -> String {
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
    pub fn sizes(label: &str, min: f64, max: f64) -> Option<Self> {
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
    pub fn decades(label: &str, min: f64, max: f64, unit: Unit) -> Option<Self> {
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

    /// A cumulative fraction, 0 to 1, labelled in percent (a CDF's y axis).
    pub fn fraction(label: &str) -> Self {
        Self {
            label: label.to_string(),
            log: false,
            lo: 0.0,
            hi: 1.0,
            ticks: linear_ticks(0.0, 1.0, 11),
            minor: Vec::new(),
            unit: Unit::Percent,
        }
    }

    pub fn linear(label: &str, hi: f64, unit: Unit, max_ticks: usize) -> Self {
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
pub enum SeriesKind {
    /// A solid line with a dot on each point.
    Marked,
    /// A solid line through many points (a CDF).
    Plain,
    /// A dashed line (a second statistic of a marked series, e.g. p99 beside p50).
    Dashed,
    /// A filled band stacked on the stacked series drawn before it (same x values, linear y):
    /// the points are the band's own heights, the drawing adds them up.
    Stacked,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub kind: SeriesKind,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Copy)]
pub enum Legend {
    UpperLeft,
    LowerRight,
}

#[derive(Debug, Clone)]
pub struct XyChart {
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// Dashed horizontal reference lines (y value, label).
    pub hlines: Vec<(f64, String)>,
    pub legend: Legend,
}

#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone)]
pub struct BarChart {
    pub x: Axis,
    pub y_label: String,
    pub bars: Vec<Bar>,
}

#[derive(Debug, Clone)]
pub enum Body {
    Xy(XyChart),
    Bars(BarChart),
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// File stem of the chart's files, unique within one set of results.
    pub id: String,
    pub title: String,
    pub height: u32,
    pub body: Body,
}

/// Okabe–Ito (colour-blind safe), without its yellow, then black.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 94, 60),
    RGBColor(0, 0, 0),
];
