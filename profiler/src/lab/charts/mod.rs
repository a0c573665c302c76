//! Charts (plotters, SVG and PNG) from `results.json`.
//!
//! [`render_all`] writes every chart twice, `<id>.svg` and `<id>.png`, into one directory:
//!
//! - `first-write-by-config`: a bar per run (fs, options, cache): `first_write` p50 at the largest
//!   size that every run measured, with a p99 whisker;
//! - `copy-up-<run>`: `first_write` latency vs file size, log-log, one line per layer depth (p50,
//!   solid with dots) and its p99 (dashed, same colour);
//! - `phases-<run>`: where the copy-up's time goes: the mean time per copy-up of each phase
//!   (`metadata`, `data`, `fsync`, `link`, `offcpu_block`, `offcpu_other`, `other`; see
//!   docs/phases.md) of `first_write`, stacked, vs file size, at the smallest layer depth; only
//!   runs whose cells carry phases (kernel-side timings); and `phases-share-<run>`, the same
//!   bands as shares of the copy-up time (0..100 %), which keeps the small sizes readable;
//! - `efficiency-<op>`: reference p50 / op p50 vs file size, one line per run (1.0 = the copy-up is
//!   as fast as a plain copy of the same bytes);
//! - `cdf-<op>-<run>`: the latency CDF of each op, one line per file size, decoded from the cells'
//!   hdrhistograms.
//!
//! The plans are drawn by [`crate::plot`].

// Chart coordinates are f64 (see `plot`).
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use crate::fmt;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::event::PHASE_NAMES;
pub use crate::lab::results::run_label;
use crate::lab::results::{decode_histogram, Cell, HistogramError, Results, RunResult};
use crate::lab::spec::Op;
use crate::plot::{
    cdf_points, color, ensure_font, min_max, slug, svg_string, write_chart, Axis, Bar, BarChart,
    Body, Legend, Plan, PlotError, Series, SeriesKind, Unit, XyChart,
};
pub use crate::plot::{
    linear_ticks, log_bounds, log_minor_ticks, log_ticks, CHART_HEIGHT, CHART_WIDTH,
    FONT_CANDIDATES, FONT_ENV,
};

/// The op whose latency is the copy-up itself (a write to a file that lives in a lower layer).
pub const COPY_UP_OP: Op = Op::FirstWrite;

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
        "no chart of these results is named {svg}; pass the charts that render_all returned for \
         the same results"
    )]
    UnknownChart { svg: PathBuf },
    #[error(transparent)]
    Plot(#[from] PlotError),
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

/// The stacked phase chart of one run: per phase a band of its mean time per copy-up (`sum_ns /
/// count`, so the bands add up to the mean kernel-side copy-up latency), in
/// [`PHASE_NAMES`] order from the bottom; a phase a cell does not show counts 0 there. `share`:
/// each band as a fraction of the cell's total instead.
fn phase_plan(run: &RunResult, share: bool) -> Option<(String, String, XyChart)> {
    let usable = |c: &&Cell| {
        c.op == COPY_UP_OP
            && c.phases
                .as_ref()
                .is_some_and(|p| p.count > 0 && !p.phases.is_empty())
    };
    let depth = run
        .cells
        .iter()
        .filter(usable)
        .map(|c| c.layer_depth)
        .min()?;
    let mut cells: Vec<&Cell> = run
        .cells
        .iter()
        .filter(usable)
        .filter(|c| c.layer_depth == depth)
        .collect();
    cells.sort_by_key(|c| c.size_bytes);
    cells.dedup_by_key(|c| c.size_bytes);
    let mean = |c: &Cell, phase: &str| -> f64 {
        c.phases.as_ref().map_or(0.0, |p| {
            p.phases
                .get(phase)
                .map_or(0.0, |s| s.sum_ns as f64 / p.count.max(1) as f64)
        })
    };
    let total_of = |c: &Cell| PHASE_NAMES.iter().map(|p| mean(c, p)).sum::<f64>();
    let value = |c: &Cell, phase: &str| {
        if share {
            mean(c, phase) / total_of(c).max(f64::MIN_POSITIVE)
        } else {
            mean(c, phase)
        }
    };
    let mut series = Vec::new();
    for (i, phase) in PHASE_NAMES.iter().enumerate() {
        if !cells.iter().any(|c| {
            c.phases
                .as_ref()
                .is_some_and(|p| p.phases.contains_key(*phase))
        }) {
            continue;
        }
        series.push(Series {
            name: (*phase).to_string(),
            color: color(i),
            kind: SeriesKind::Stacked,
            points: cells
                .iter()
                .map(|c| (c.size_bytes.max(1) as f64, value(c, phase)))
                .collect(),
        });
    }
    let total = cells.iter().map(|c| total_of(c)).fold(0.0, f64::max);
    let (smin, smax) = min_max(cells.iter().map(|c| c.size_bytes.max(1) as f64))?;
    if series.is_empty() || total <= 0.0 {
        return None;
    }
    let label = run_label(run);
    let (id, what, y) = if share {
        (
            "phases-share",
            " (shares)",
            Axis::fraction("share of the mean copy-up time, stacked by phase"),
        )
    } else {
        (
            "phases",
            "",
            Axis::linear(
                "mean time per copy-up, stacked by phase",
                total * 1.15,
                Unit::Nanos,
                8,
            ),
        )
    };
    Some((
        format!("{id}-{}", slug(&label)),
        format!(
            "Where the time goes{what}: {COPY_UP_OP} copy-up phases vs file size (depth {depth}): {label}"
        ),
        XyChart {
            x: Axis::sizes("file size (bytes, log scale)", smin, smax)?,
            y,
            series,
            hlines: Vec::new(),
            legend: Legend::UpperLeft,
        },
    ))
}

fn cdf_plans(run: &RunResult) -> Result<Vec<(String, String, XyChart)>, ChartError> {
    let label = run_label(run);
    let mut ops: Vec<Op> = Vec::new();
    for c in &run.cells {
        if !ops.contains(&c.op) {
            ops.push(c.op);
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
            format!("cdf-{}-{}", slug(op.as_str()), slug(&label)),
            format!("{op} latency CDF by file size (depth {depth}): {label}"),
            XyChart {
                x,
                y: Axis::fraction("fraction of ops at most this latency"),
                series,
                hlines: vec![(0.5, "p50".to_string()), (0.99, "p99".to_string())],
                legend: Legend::LowerRight,
            },
        ));
    }
    Ok(plans)
}

fn efficiency_plans(results: &Results) -> Vec<(String, String, XyChart)> {
    let mut ops: Vec<Op> = Vec::new();
    for c in results.runs.iter().flat_map(|r| &r.cells) {
        if c.efficiency.is_some_and(|e| e.is_finite() && e > 0.0) && !ops.contains(&c.op) {
            ops.push(c.op);
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
            format!("efficiency-{}", slug(op.as_str())),
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
    for run in &results.runs {
        for share in [false, true] {
            if let Some((id, title, chart)) = phase_plan(run, share) {
                push(id, title, CHART_HEIGHT, Body::Xy(chart));
            }
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

/// Draws every chart of `results` into `out_dir` (created if missing) as `<id>.svg` and
/// `<id>.png`, and returns them in report order. Results without usable cells give no charts.
pub fn render_all(results: &Results, out_dir: &Path) -> Result<Vec<Chart>, ChartError> {
    let plans = plans(results)?;
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    ensure_font()?;
    fs::create_dir_all(out_dir).map_err(|source| PlotError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut charts = Vec::with_capacity(plans.len());
    for plan in &plans {
        let (svg, png) = write_chart(plan, out_dir)?;
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
const CHART_PREFIXES: [&str; 5] = ["first-write-", "copy-up-", "phases-", "efficiency-", "cdf-"];

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
    Ok(svg_string(plan)?)
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
    use super::*;

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
}
