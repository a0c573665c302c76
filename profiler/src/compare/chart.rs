//! Overlaid latency CDFs of both files, one chart per gated op and matched run: each cell (size,
//! depth) in its own colour, base solid, new dashed. SVG and PNG through plotters, with the
//! lab's font lookup and formatting helpers.

// Chart coordinates are f64 (see lab/charts.rs).
#![allow(clippy::cast_precision_loss)]

use crate::fmt;
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::{diff::Comparison, CompareError};
use crate::lab::{
    charts::{cdf_points, color, ensure_font, slug, ChartError, CHART_HEIGHT, CHART_WIDTH, FONT},
    results::decode_histogram,
    results::{Cell, Results, RunResult},
};

struct Line {
    name: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

fn draw<DB>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    lines: &[Line],
) -> Result<(), String>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let (lo, hi) = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold((f64::MAX, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    if !(lo > 0.0 && hi >= lo) {
        return Err("no latencies to draw".to_owned());
    }
    // A little air around the data, not whole decades: the curves use the width.
    let (lo, hi) = (lo / 1.15, hi * 1.15);
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(12)
        .x_desc("latency (log scale)")
        .y_desc("fraction of ops ≤ latency")
        .x_label_formatter(&|v| fmt::ns_label(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(|e| e.to_string())?;
    for l in lines {
        let col = l.color;
        let series = if l.dashed {
            chart.draw_series(DashedLineSeries::new(
                l.points.clone(),
                7,
                5,
                col.stroke_width(2),
            ))
        } else {
            chart.draw_series(LineSeries::new(l.points.clone(), col.stroke_width(2)))
        };
        let dashed = l.dashed;
        series
            .map_err(|e| e.to_string())?
            .label(l.name.as_str())
            .legend(move |(x, y)| {
                if dashed {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (7, 0)], col.stroke_width(2))
                        + PathElement::new(vec![(12, 0), (20, 0)], col.stroke_width(2))
                } else {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (20, 0)], col.stroke_width(2))
                        + PathElement::new(vec![(0, 0), (0, 0)], col.stroke_width(2))
                }
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .margin(10)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.88))
        .border_style(RGBColor(170, 170, 170))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

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
            let lines = lines_for(op, (&cmp.base_file, br), (&cmp.new_file, nr))?;
            if lines.is_empty() {
                continue;
            }
            ensure_font()?;
            let title = format!("{op}: base (solid) vs new (dashed) · {label}");
            let stem = format!("cdf-{}-{}", slug(op), slug(&label));
            let svg = dir.join(format!("{stem}.svg"));
            let png = dir.join(format!("{stem}.png"));
            let mut text = String::new();
            {
                let root = SVGBackend::with_string(&mut text, (CHART_WIDTH, CHART_HEIGHT))
                    .into_drawing_area();
                draw(&root, &title, &lines).map_err(|reason| ChartError::Draw {
                    chart: title.clone(),
                    reason,
                })?;
            }
            std::fs::write(&svg, text).map_err(|source| CompareError::Write {
                path: svg.clone(),
                source,
            })?;
            let root = BitMapBackend::new(&png, (CHART_WIDTH, CHART_HEIGHT)).into_drawing_area();
            draw(&root, &title, &lines).map_err(|reason| ChartError::Write {
                path: png.clone(),
                source: std::io::Error::other(reason),
            })?;
            written.push(svg);
        }
    }
    Ok(written)
}

fn lines_for(
    op: &str,
    (base_file, br): (&str, &RunResult),
    (new_file, nr): (&str, &RunResult),
) -> Result<Vec<Line>, CompareError> {
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
        lines.push(Line {
            name: format!("{name} base"),
            color,
            dashed: false,
            points: cdf_points(&hist(base_file, bc)?),
        });
        lines.push(Line {
            name: format!("{name} new"),
            color,
            dashed: true,
            points: cdf_points(&hist(new_file, nc)?),
        });
    }
    lines.retain(|l| !l.points.is_empty());
    Ok(lines)
}
