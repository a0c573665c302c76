//! The self-contained HTML report (SVGs inline, no network).
//!
//! One file: inline CSS, the charts' SVG markup inline, no scripts, and a Content-Security-Policy
//! that forbids loading anything, so it reads the same offline, attached to a mail or archived.
//! The markup is also well-formed XML (void elements self-closed, only XML's own entities), so
//! tests and scripts can parse it with an XML parser.

#![allow(clippy::cast_precision_loss)] // nanoseconds to f64 for display only

use crate::fmt;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::lab::charts::{self, Chart, ChartError};
use crate::lab::results::run_label;
use crate::lab::results::{Cell, LatencyStats, Results};

const CSS: &str = "
:root { color-scheme: light; }
body { font-family: 'DejaVu Sans', system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
  padding: 0 1rem; color: #1d2329; background: #fff; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; }
h2 { font-size: 1.3rem; margin-top: 2.4rem; border-bottom: 1px solid #d6dbe0; padding-bottom: .25rem; }
p.lede { color: #4a545e; margin-top: 0; }
code { font-family: 'DejaVu Sans Mono', ui-monospace, monospace; font-size: .9em;
  background: #f2f4f6; padding: 0 .25em; border-radius: 3px; word-break: break-all; }
table { border-collapse: collapse; font-size: .86rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e3e7eb; text-align: left; vertical-align: top; }
th { background: #f2f4f6; }
table.kv th { width: 13rem; }
table.cells thead th { position: sticky; top: 0; }
table.cells td.num, table.cells th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.cells tbody tr:nth-child(even) { background: #fafbfc; }
.muted { color: #7a848e; }
figure { margin: 1.6rem 0; }
figure svg { max-width: 100%; height: auto; display: block; border: 1px solid #e3e7eb; }
figcaption { font-size: .85rem; color: #4a545e; margin-top: .3rem; }
nav ul { padding-left: 1.2rem; }
footer { margin-top: 3rem; font-size: .8rem; color: #7a848e; }
";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in HTML (nor XML 1.0) text.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn started(unix_s: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_s)).to_string()
}

fn num_ns(ns: u64) -> String {
    format!(
        "<td class=\"num\" title=\"{ns} ns\">{}</td>",
        escape(&fmt::ns_label(ns as f64))
    )
}

fn dash() -> &'static str {
    "<td class=\"num muted\">—</td>"
}

fn cell_row(out: &mut String, fs: &str, options: &str, cache: &str, c: &Cell) {
    let LatencyStats {
        count,
        p50_ns,
        p90_ns,
        p99_ns,
        max_ns,
        ..
    } = c.latency;
    let _ = write!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\" title=\"{} bytes\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{count}</td>",
        escape(fs),
        escape(options),
        escape(cache),
        escape(c.op.as_str()),
        c.size_bytes,
        escape(&fmt::bytes_label(c.size_bytes)),
        c.layer_depth,
    );
    for ns in [p50_ns, p90_ns, p99_ns, max_ns] {
        out.push_str(&num_ns(ns));
    }
    match &c.kernel {
        Some(k) => out.push_str(&num_ns(k.p50_ns)),
        None => out.push_str(dash()),
    }
    let _ = write!(out, "<td class=\"num\">{}</td>", c.copy_ups);
    match c.mb_per_s {
        Some(v) if v.is_finite() => {
            let _ = write!(out, "<td class=\"num\">{v:.1}</td>");
        }
        _ => out.push_str(dash()),
    }
    match c.efficiency {
        Some(v) if v.is_finite() => {
            let _ = write!(out, "<td class=\"num\">{v:.2}</td>");
        }
        _ => out.push_str(dash()),
    }
    out.push_str("</tr>\n");
}

/// The chart's SVG markup, ready to sit inside HTML: drawn again from `results` (or read from
/// `chart.svg` when these results did not make it), without an XML declaration, labelled.
fn inline_svg(results: &Results, chart: &Chart) -> io::Result<String> {
    let svg = match charts::render_svg_string(results, chart) {
        Ok(svg) => svg,
        Err(ChartError::UnknownChart { .. }) => fs::read_to_string(&chart.svg).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read chart {}: {e}", chart.svg.display()),
            )
        })?,
        Err(e) => return Err(io::Error::other(e)),
    };
    let mut svg = svg.trim_start();
    if svg.starts_with("<?xml") {
        svg = svg
            .split_once("?>")
            .map_or(svg, |(_, rest)| rest.trim_start());
    }
    let Some(rest) = svg.strip_prefix("<svg") else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("chart {} is not an SVG document", chart.svg.display()),
        ));
    };
    Ok(format!(
        "<svg role=\"img\" aria-label=\"{}\"{rest}",
        escape(&chart.title)
    ))
}

/// The whole report as a string (see [`write_report`]).
#[expect(
    clippy::too_many_lines,
    reason = "the report page top to bottom, in the order it is read"
)]
pub fn render_report(results: &Results, charts: &[Chart]) -> io::Result<String> {
    let env = &results.environment;
    let mut out = String::with_capacity(64 * 1024);
    let title = format!("cowprof bench report: {}", env.kernel);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\"/>\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let cell_count: usize = results.runs.iter().map(|r| r.cells.len()).sum();
    let _ = write!(
        out,
        "<h1>cowprof bench report</h1>\n<p class=\"lede\">Overlayfs copy-on-write latency: {} \
         configuration(s), {cell_count} measured cell(s), {} chart(s), {} skipped. Started {}.</p>\n",
        results.runs.len(),
        charts.len(),
        results.skipped.len(),
        escape(&started(env.started_unix_s)),
    );
    out.push_str(
        "<nav><ul><li><a href=\"#environment\">Environment</a></li><li><a href=\"#skipped\">Skipped</a></li>\
         <li><a href=\"#charts\">Charts</a></li><li><a href=\"#cells\">All measurements</a></li></ul></nav>\n",
    );

    // Environment.
    out.push_str("<section id=\"environment\">\n<h2>Environment</h2>\n<table class=\"kv\">\n");
    let backend = env.backend.map(crate::event::Backend::as_str).map_or_else(
        || "<span class=\"muted\">none (no kernel-side timings)</span>".to_string(),
        |b| format!("<code>{}</code>", escape(b)),
    );
    let rows = [
        ("Kernel", format!("<code>{}</code>", escape(&env.kernel))),
        ("cowprof version", escape(&env.cowprof_version)),
        ("CPUs", env.cpus.to_string()),
        ("Backend", backend),
        (
            "Spec hash (SHA-256)",
            format!("<code>{}</code>", escape(&results.spec_hash)),
        ),
        ("Started", escape(&started(env.started_unix_s))),
        ("results.json schema", results.schema.to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    out.push_str("<tr><th>Overlay module parameters</th><td>");
    if env.overlay_params.is_empty() {
        out.push_str("<span class=\"muted\">none readable</span>");
    } else {
        out.push_str("<table class=\"params\"><tbody>");
        for (k, v) in &env.overlay_params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(k),
                escape(v)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</td></tr>\n</table>\n</section>\n");

    // Skipped.
    out.push_str("<section id=\"skipped\">\n<h2>Skipped</h2>\n");
    if results.skipped.is_empty() {
        out.push_str("<p>Nothing was skipped: every entry of the matrix ran.</p>\n");
    } else {
        out.push_str(
            "<table class=\"skipped\"><thead><tr><th>What</th><th>Why</th></tr></thead><tbody>\n",
        );
        for s in &results.skipped {
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                escape(&s.what),
                escape(&s.reason)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");

    // Charts.
    out.push_str("<section id=\"charts\">\n<h2>Charts</h2>\n");
    if charts.is_empty() {
        out.push_str(
            "<p class=\"muted\">No charts: these results have no measured cells to draw.</p>\n",
        );
    }
    for chart in charts {
        let svg = inline_svg(results, chart)?;
        let file = |p: &Path| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let _ = write!(
            out,
            "<figure>\n{svg}\n<figcaption>{} <span class=\"muted\">({}, {})</span></figcaption>\n</figure>\n",
            escape(&chart.title),
            escape(&file(&chart.svg)),
            escape(&file(&chart.png)),
        );
    }
    out.push_str("</section>\n");

    // All cells.
    out.push_str(
        "<section id=\"cells\">\n<h2>All measurements</h2>\n<p class=\"lede\">User-side latency of each \
         op (monotonic clock); <em>kernel p50</em> is the copy-up time the kernel reported, when a \
         backend attached. Efficiency = plain-copy reference p50 / op p50 (1.0 = as fast as a plain copy).</p>\n\
         <table class=\"cells\" id=\"cells-table\">\n<thead><tr><th>fs</th><th>options</th><th>cache</th>\
         <th>op</th><th class=\"num\">size</th><th class=\"num\">depth</th><th class=\"num\">n</th>\
         <th class=\"num\">p50</th><th class=\"num\">p90</th><th class=\"num\">p99</th><th class=\"num\">max</th>\
         <th class=\"num\">kernel p50</th><th class=\"num\">copy-ups</th><th class=\"num\">MB/s</th>\
         <th class=\"num\">efficiency</th></tr></thead>\n<tbody>\n",
    );
    for run in &results.runs {
        let fs = if run.fs_features.is_empty() {
            run.fs.clone()
        } else {
            format!("{} ({})", run.fs, run.fs_features.join(", "))
        };
        let options = if run.mount_options.is_empty() {
            "defaults".to_string()
        } else {
            run.mount_options.join(",")
        };
        for cell in &run.cells {
            cell_row(&mut out, &fs, &options, &run.cache, cell);
        }
    }
    out.push_str("</tbody>\n</table>\n</section>\n");

    // The report ends with what dominates the slowest cells, from their copy-ups' phases.
    let reading = super::summary::dominates(results, 3);
    if !reading.is_empty() {
        out.push_str("<section id=\"dominates\">\n<h2>What dominates</h2>\n<ul>\n");
        for line in &reading {
            let _ = writeln!(out, "<li>{}</li>", escape(line));
        }
        out.push_str("</ul>\n</section>\n");
    }

    let runs: Vec<String> = results.runs.iter().map(run_label).collect();
    let _ = write!(
        out,
        "<footer>Generated by cowprof {} from results.json (schema {}). Runs: {}. \
         Self-contained: no scripts, nothing loaded from the network.</footer>\n</body>\n</html>\n",
        escape(&env.cowprof_version),
        results.schema,
        escape(&runs.join("; ")),
    );
    Ok(out)
}

/// Writes the report to `path`: one self-contained HTML file with the environment, the skipped
/// entries, the charts (inline SVG) and every cell. `charts` are those that
/// [`charts::render_all`] returned for the same `results`.
pub fn write_report(results: &Results, charts: &[Chart], path: &Path) -> io::Result<()> {
    let html = render_report(results, charts)?;
    fs::write(path, html).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write the report {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            escape(r#"<b a="1">&'x'</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;x&#39;&lt;/b&gt;"
        );
        assert_eq!(escape("a\u{1}b\tc"), "a\u{fffd}b\tc");
        assert_eq!(escape("µs · ok"), "µs · ok");
    }
}
