//! The Grafana dashboard `deploy/grafana/cowprof.json`: its targets, its variables made concrete
//! for a plain Prometheus query, the conventions of Grafana's dashboard JSON model, and a PNG of
//! its panels drawn with plotters from real range queries (Grafana itself is not in Debian).

use std::{collections::BTreeSet, path::Path};

use plotters::prelude::*;

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct Target {
    pub panel: String,
    pub unit: String,
    pub ref_id: String,
    pub expr: String,
    pub legend: String,
}

pub fn load() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/cowprof.json");
    let text = std::fs::read_to_string(&p).expect("read deploy/grafana/cowprof.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

pub fn targets(d: &serde_json::Value) -> Vec<Target> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push(Target {
                panel: p["title"].as_str().expect("title").to_owned(),
                unit: p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or("short")
                    .to_owned(),
                ref_id: t["refId"].as_str().expect("refId").to_owned(),
                expr: t["expr"].as_str().expect("expr").to_owned(),
                legend: t["legendFormat"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    out
}

/// The template variables (node, namespace, pod, container) as "All" (`.*`, the dashboard's
/// `allValue`) and Grafana's `$__rate_interval` as `interval`.
pub fn concrete(expr: &str, interval: &str) -> String {
    let mut e = expr.replace("$__rate_interval", interval);
    for v in ["$node", "$namespace", "$pod", "$container"] {
        e = e.replace(v, ".*");
    }
    assert!(!e.contains('$'), "an unknown variable left in {e}");
    e
}

/// Conventions of Grafana's dashboard JSON model that an import relies on; returns the problems.
pub fn problems(d: &serde_json::Value) -> Vec<String> {
    let mut bad = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            bad.push(what);
        }
    };
    let schema = d["schemaVersion"].as_u64();
    need(
        schema.is_some_and(|v| (36..=41).contains(&v)),
        format!("schemaVersion {schema:?}: an integer Grafana 9-11 migrates from"),
    );
    need(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40),
        "uid: 1-40 characters".into(),
    );
    need(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title".into(),
    );
    need(d["version"].is_u64(), "version: an integer".into());
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| v["name"].as_str().expect("variable name"))
        .collect();
    for want in ["datasource", "node", "namespace", "pod", "container"] {
        need(vars.contains(&want), format!("template variable {want}"));
    }
    for v in d["templating"]["list"].as_array().expect("list") {
        if v["type"] == "query" {
            need(
                v["datasource"]["uid"] == "${datasource}" && v["query"]["query"].is_string(),
                format!("variable {}: a query on ${{datasource}}", v["name"]),
            );
        }
    }
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("?");
        need(
            p["id"].as_u64().is_some_and(|id| ids.insert(id)),
            format!("{title}: a unique integer id"),
        );
        need(
            ["timeseries", "table", "stat"].contains(&p["type"].as_str().unwrap_or("")),
            format!("{title}: a known panel type"),
        );
        let grid = &p["gridPos"];
        let (x, w, h) = (grid["x"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64());
        need(
            matches!((x, w, h), (Some(x), Some(w), Some(h)) if x + w <= 24 && w > 0 && h > 0 && grid["y"].is_u64()),
            format!("{title}: gridPos within 24 columns"),
        );
        need(
            p["datasource"]["uid"] == "${datasource}",
            format!("{title}: datasource ${{datasource}}"),
        );
        let mut refs = BTreeSet::new();
        for t in p["targets"].as_array().into_iter().flatten() {
            need(
                t["refId"]
                    .as_str()
                    .is_some_and(|r| refs.insert(r.to_owned())),
                format!("{title}: unique refIds"),
            );
            let expr = t["expr"].as_str().unwrap_or("");
            for var in expr.split('$').skip(1) {
                let name: String = var
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                need(
                    name == "__rate_interval" || vars.contains(&name.as_str()),
                    format!("{title}: ${name} is not a template variable"),
                );
            }
        }
        need(!refs.is_empty(), format!("{title}: at least one target"));
    }
    bad
}

/// One panel's series for the PNG: (legend, [(t, value)]).
pub type Series = (String, Vec<(f64, f64)>);

/// Draws the panels in a grid of two columns, the way the dashboard lays them out.
pub fn render_png(path: &Path, panels: &[(String, String, Vec<Series>)], t0: f64) {
    let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .expect("a font (fonts-dejavu-core, scripts/setup)");
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, font);
    let rows = panels.len().div_ceil(2);
    let root = BitMapBackend::new(path, (1400, 260 * rows as u32)).into_drawing_area();
    root.fill(&RGBColor(24, 27, 31)).expect("fill");
    let grid = root.split_evenly((rows, 2));
    let fg = RGBColor(204, 204, 220);
    for ((title, unit, series), area) in panels.iter().zip(grid.iter()) {
        let area = area.margin(8, 8, 8, 8);
        let t_max = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0 - t0))
            .fold(1.0_f64, f64::max);
        let y_max = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max)
            * 1.15;
        let y_max = if y_max > 0.0 { y_max } else { 1.0 };
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!("{} ({unit})", title.replace(" per second", ", total")),
                ("sans-serif", 15).into_font().color(&fg),
            )
            .x_label_area_size(22)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .expect("chart");
        chart
            .configure_mesh()
            .axis_style(fg.mix(0.5))
            .light_line_style(fg.mix(0.05))
            .bold_line_style(fg.mix(0.12))
            .label_style(("sans-serif", 11).into_font().color(&fg))
            .x_desc("s")
            .y_label_formatter(&|v| {
                if *v >= 1e6 {
                    format!("{:.0}M", v / 1e6)
                } else if *v >= 100.0 || *v == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.4}")
                }
            })
            .draw()
            .expect("mesh");
        for (i, (legend, pts)) in series.iter().enumerate() {
            let c = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = pts
                .iter()
                .filter(|p| p.1.is_finite())
                .map(|p| (p.0 - t0, p.1))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .expect("line")
                .label(if legend.is_empty() {
                    "(none)".to_owned()
                } else {
                    legend.clone()
                })
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2))
                });
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(RGBColor(24, 27, 31).mix(0.8))
                .label_font(("sans-serif", 11).into_font().color(&fg))
                .draw()
                .expect("legend");
        }
    }
    root.present().expect("write the PNG");
}
