//! Overlaid latency CDFs of both files, one chart per gated op and matched run: each cell (size,
//! depth) in its own colour, base solid, new dashed; drawn by [`crate::plot`] like the lab's
//! own CDFs.

use crate::fmt;
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use hdrhistogram::Histogram;

use super::{diff::Comparison, CompareError};
use crate::{
    lab::results::{decode_histogram, Cell, Results, RunResult},
    plot::{
        cdf_points, color, ensure_font, min_max, slug, write_chart, Axis, Body, Legend, Plan,
        Series, SeriesKind, Unit, XyChart, CHART_HEIGHT,
    },
};

fn hist(file: &str, cell: &Cell) -> Result<Histogram<u64>, CompareError> {
    decode_histogram(&cell.latency.histogram).map_err(|source| CompareError::Histogram {
        path: file.to_owned(),
        cell: format!(
            "{} {} depth {}",
            cell.op,
            fmt::bytes_label(cell.size_bytes),
            cell.layer_depth
        ),
        source,
    })
}

/// Writes `cdf-<op>-<run>.svg` and `.png` into `dir` for every op with a gated metric; returns
/// the SVG paths.
pub fn render_cdfs(
    cmp: &Comparison,
    base: &Results,
    new: &Results,
    dir: &Path,
) -> Result<Vec<PathBuf>, CompareError> {
    let gated: BTreeSet<(&str, &str)> = cmp
        .rows
        .iter()
        .filter(|r| r.gated())
        .map(|r| (r.run.as_str(), r.op.as_str()))
        .collect();
    let mut written = Vec::new();
    for (label, br, nr) in super::diff::matched_runs(base, new) {
        let ops: BTreeSet<&str> = gated
            .iter()
            .filter(|(run, _)| *run == label)
            .map(|(_, op)| *op)
            .collect();
        for op in ops {
            let series = series_for(op, (&cmp.base_file, br), (&cmp.new_file, nr))?;
            let Some((lo, hi)) = min_max(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
            else {
                continue;
            };
            let Some(x) = Axis::decades("latency (log scale)", lo, hi, Unit::Nanos) else {
                continue;
            };
            ensure_font()?;
            let plan = Plan {
                id: format!("cdf-{}-{}", slug(op), slug(&label)),
                title: format!("{op}: base (solid) vs new (dashed) · {label}"),
                height: CHART_HEIGHT,
                body: Body::Xy(XyChart {
                    x,
                    y: Axis::fraction("fraction of ops ≤ latency"),
                    series,
                    hlines: Vec::new(),
                    legend: Legend::LowerRight,
                }),
            };
            let (svg, _png) = write_chart(&plan, dir)?;
            written.push(svg);
        }
    }
    Ok(written)
}

fn series_for(
    op: &str,
    (base_file, br): (&str, &RunResult),
    (new_file, nr): (&str, &RunResult),
) -> Result<Vec<Series>, CompareError> {
    let mut lines = Vec::new();
    let cells = br
        .cells
        .iter()
        .filter(|c| c.op.as_str() == op && c.latency.count > 0);
    for (i, bc) in cells.enumerate() {
        let Some(nc) = nr.cells.iter().find(|c| {
            c.op == bc.op && c.size_bytes == bc.size_bytes && c.layer_depth == bc.layer_depth
        }) else {
            continue;
        };
        let color = color(i);
        let name = format!("{} d{}", fmt::bytes_label(bc.size_bytes), bc.layer_depth);
        lines.push(Series {
            name: format!("{name} base"),
            color,
            kind: SeriesKind::Plain,
            points: cdf_points(&hist(base_file, bc)?),
        });
        lines.push(Series {
            name: format!("{name} new"),
            color,
            kind: SeriesKind::Dashed,
            points: cdf_points(&hist(new_file, nc)?),
        });
    }
    lines.retain(|l| !l.points.is_empty());
    Ok(lines)
}
