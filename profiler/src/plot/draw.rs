//! Drawing plans with plotters: SVG strings and PNG files.

use std::error::Error as StdError;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;

use super::{
    color, Axis, BarChart, Body, Legend, Plan, PlotError, SeriesKind, XyChart, CHART_WIDTH, FONT,
    FONT_CANDIDATES, FONT_ENV,
};
use crate::fmt;
use plotters::prelude::*;
use std::{
    fs, io,
    path::{Path, PathBuf},
};

// ---------------------------------------------------------------------------------------------
// Drawing.

pub type DrawResult = Result<(), Box<dyn StdError>>;

/// A linear axis (in plotted space) whose grid lines and labels are exactly the given ticks.
#[derive(Debug, Clone)]
pub struct Ticked {
    pub lo: f64,
    pub hi: f64,
    pub bold: Vec<f64>,
    pub light: Vec<f64>,
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
pub fn ensure_font() -> Result<(), PlotError> {
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
        .map_err(|tried| PlotError::FontMissing { tried })
}

pub fn draw_plan<DB>(plan: &Plan, root: &DrawingArea<DB, Shift>) -> DrawResult
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

pub fn draw_xy<DB>(root: &DrawingArea<DB, Shift>, title: &str, c: &XyChart) -> DrawResult
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
    // The top of the stacked bands drawn so far, per point (data values).
    let mut stack: Vec<f64> = Vec::new();
    for s in &c.series {
        let col = s.color;
        if s.kind == SeriesKind::Stacked {
            draw_band(&mut chart, s, &mut stack, (x, y))?;
            continue;
        }
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

/// One band of a stacked chart: from `stack` (the top of the bands below, updated here) up by
/// the series' heights, filled, with its top edge drawn.
fn draw_band<DB>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<Ticked, Ticked>>,
    s: &super::Series,
    stack: &mut Vec<f64>,
    (x, y): (&Axis, &Axis),
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let col = s.color;
    let to_plot = |p: &(f64, f64)| (x.to_plot(p.0), y.to_plot(p.1));
    stack.resize(s.points.len(), 0.0);
    let lower: Vec<(f64, f64)> = s
        .points
        .iter()
        .zip(stack.iter())
        .map(|(p, b)| (p.0, *b))
        .collect();
    for (top, p) in stack.iter_mut().zip(&s.points) {
        *top += p.1;
    }
    let upper: Vec<(f64, f64)> = s
        .points
        .iter()
        .zip(stack.iter())
        .map(|(p, t)| (p.0, *t))
        .collect();
    let outline: Vec<(f64, f64)> = upper
        .iter()
        .chain(lower.iter().rev())
        .map(to_plot)
        .collect();
    chart
        .draw_series(std::iter::once(Polygon::new(
            outline,
            col.mix(0.8).filled(),
        )))?
        .label(s.name.as_str())
        .legend(move |(lx, ly)| {
            Rectangle::new([(lx, ly - 5), (lx + 20, ly + 5)], col.mix(0.8).filled())
        });
    chart.draw_series(LineSeries::new(
        upper.iter().map(to_plot),
        col.stroke_width(1),
    ))?;
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "plotters drawing of one chart: axes, bars, whiskers and labels in drawing order"
)]
pub fn draw_bars<DB>(root: &DrawingArea<DB, Shift>, title: &str, c: &BarChart) -> DrawResult
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

pub fn svg_string(plan: &Plan) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, (CHART_WIDTH, plan.height)).into_drawing_area();
        draw_plan(plan, &root).map_err(|e| PlotError::Draw {
            chart: plan.title.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(out)
}

pub fn write_png(plan: &Plan, path: &Path) -> Result<(), PlotError> {
    let root = BitMapBackend::new(path, (CHART_WIDTH, plan.height)).into_drawing_area();
    draw_plan(plan, &root).map_err(|e| {
        let reason = e.to_string();
        // The bitmap backend reports a failed file write as a drawing error.
        if reason.contains("I/O") || reason.contains("o error") || reason.contains("ermission") {
            PlotError::Write {
                path: path.to_path_buf(),
                source: io::Error::other(reason),
            }
        } else {
            PlotError::Draw {
                chart: plan.title.clone(),
                reason,
            }
        }
    })
}
