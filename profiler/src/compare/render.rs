//! The reports of a [`Comparison`]: terminal table (optionally colored), markdown (PR comment or
//! CI job summary), `JUnit` XML (one test case per gated metric) and JSON.

use crate::fmt;
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use super::{
    diff::{Comparison, Row, Verdict},
    gates::Metric,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Markdown,
    Junit,
    Json,
}

impl Format {
    pub const ALL: [Self; 4] = [Self::Table, Self::Markdown, Self::Junit, Self::Json];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Markdown => "markdown",
            Self::Junit => "junit",
            Self::Json => "json",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown report format {s:?}"))
    }
}

pub fn render(cmp: &Comparison, format: Format, color: bool) -> String {
    match format {
        Format::Table => table(cmp, color),
        Format::Markdown => markdown(cmp),
        Format::Junit => junit(cmp),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(cmp).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

/// A metric's value in its unit.
pub fn format_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::P50 | Metric::P90 | Metric::P99 | Metric::Max | Metric::Phase(..) => {
            fmt::ns_label(v)
        }
        Metric::MbPerS => format!("{v:.0} MB/s"),
        Metric::Efficiency => format!("{v:.2}"),
        Metric::CopyUps => format!("{v:.2}/op"),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Metric::BytesCopied => format!("{}/op", fmt::bytes_label(v.round().max(0.0) as u64)),
    }
}

fn pct(v: f64) -> String {
    format!("{:+.1}%", v * 100.0)
}

/// `+12.3% [+8.0%, +16.9%]`, or the bare change when untested; beyond doubling, as factors
/// (`×74.2 [×22.6, ×81.3]`).
pub fn format_change(r: &Row) -> String {
    let big = [Some(r.change), r.change_hi]
        .into_iter()
        .flatten()
        .any(|c| c >= 1.0);
    let f = |v: f64| {
        if big {
            format!("×{:.1}", 1.0 + v)
        } else {
            pct(v)
        }
    };
    match (r.change_lo, r.change_hi) {
        (Some(lo), Some(hi)) => format!("{} [{}, {}]", f(r.change), f(lo), f(hi)),
        _ => f(r.change),
    }
}

fn gate_text(r: &Row) -> String {
    match (&r.threshold, r.passed) {
        (Some(t), Some(true)) => format!("pass ({t})"),
        (Some(t), Some(false)) => format!("FAIL ({t})"),
        _ => "-".to_owned(),
    }
}

fn headline(cmp: &Comparison) -> String {
    let c = &cmp.counts;
    format!(
        "{}: {} gated metrics, {} beyond threshold; all metrics: {} improved, {} regressed, {} no significant change, {} not tested",
        if cmp.passed() { "PASS" } else { "FAIL" },
        c.gated,
        c.failed,
        c.improved,
        c.regressed,
        c.unchanged,
        c.not_tested
    )
}

fn method(cmp: &Comparison) -> String {
    let gates: Vec<&str> = cmp
        .gates
        .thresholds
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    format!(
        "gates: {} (from {}{}); {}% bootstrap intervals ({} resamples, fixed seed); normalized = divided by the same run's plain-copy reference",
        if gates.is_empty() { "none".to_owned() } else { gates.join(" ") },
        cmp.gates.source,
        cmp.gates
            .ops
            .as_ref()
            .map(|o| format!(", ops {}", o.join(",")))
            .unwrap_or_default(),
        cmp.confidence * 100.0,
        cmp.resamples
    )
}

fn table(cmp: &Comparison, color: bool) -> String {
    let paint = |style: Style, text: &str| {
        if color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    };
    let red = Style::new().fg_color(Some(AnsiColor::Red.into()));
    let green = Style::new().fg_color(Some(AnsiColor::Green.into()));
    let bold = Style::new().bold();
    let dim = Style::new().dimmed();
    let yellow = Style::new().fg_color(Some(AnsiColor::Yellow.into()));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cowprof compare: base {} → new {}",
        cmp.base_file, cmp.new_file
    );
    for n in &cmp.notes {
        let _ = writeln!(s, "{} {n}", paint(yellow.bold(), "NOTE:"));
    }
    let _ = writeln!(s, "{}", method(cmp));
    let mut run = None;
    for r in &cmp.rows {
        if run != Some(&r.run) {
            run = Some(&r.run);
            let _ = writeln!(s, "\n{}", paint(bold, &format!("run {}", r.run)));
            let _ = writeln!(
                s,
                "  {:<22} {:<12} {:<10} {:>12} {:>12}  {:<28} {:<21} GATE",
                "CELL", "METRIC", "BASIS", "BASE", "NEW", "CHANGE [CI]", "VERDICT"
            );
        }
        let verdict = format!("{:<21}", r.verdict.as_str());
        let verdict = match r.verdict {
            Verdict::Regressed => paint(red, &verdict),
            Verdict::Improved => paint(green, &verdict),
            Verdict::NoSignificantChange | Verdict::NotTested => paint(dim, &verdict),
        };
        let gate = gate_text(r);
        let gate = if r.passed == Some(false) {
            paint(red.bold(), &gate)
        } else {
            gate
        };
        let _ = writeln!(
            s,
            "  {:<22} {:<12} {:<10} {:>12} {:>12}  {:<28} {verdict} {gate}",
            r.cell_label(),
            r.metric.as_str(),
            r.basis.as_str(),
            format_value(r.metric, r.base),
            format_value(r.metric, r.new),
            format_change(r),
        );
    }
    for (side, list) in [("base", &cmp.only_in_base), ("new", &cmp.only_in_new)] {
        if !list.is_empty() {
            let _ = writeln!(s, "\nonly in {side} ({}):", list.len());
            for item in list {
                let _ = writeln!(s, "  {item}");
            }
        }
    }
    let head = headline(cmp);
    let _ = writeln!(
        s,
        "\n{}",
        paint(
            if cmp.passed() {
                green.bold()
            } else {
                red.bold()
            },
            &head
        )
    );
    s
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn md_row(r: &Row) -> String {
    let verdict = match r.verdict {
        Verdict::Regressed => "**regressed**",
        other => other.as_str(),
    };
    let gate = match r.passed {
        Some(false) => format!("**{}**", gate_text(r)),
        _ => gate_text(r),
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
        md_escape(&r.cell_label()),
        r.metric,
        r.basis.as_str(),
        format_value(r.metric, r.base),
        format_value(r.metric, r.new),
        format_change(r),
        verdict,
        md_escape(&gate)
    )
}

const MD_HEADER: &str = "| cell | metric | basis | base | new | change [CI] | verdict | gate |\n|---|---|---|---:|---:|---|---|---|\n";

fn markdown(cmp: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## cowprof compare: {}\n",
        if cmp.passed() { "pass" } else { "FAIL" }
    );
    let _ = writeln!(s, "Base `{}` → new `{}`.\n", cmp.base_file, cmp.new_file);
    for n in &cmp.notes {
        let _ = writeln!(s, "> **Note:** {}", md_escape(n));
    }
    if !cmp.notes.is_empty() {
        s.push('\n');
    }
    let _ = writeln!(s, "{}\n\n{}\n", headline(cmp), method(cmp));
    let runs: Vec<&String> = cmp.rows.iter().fold(Vec::new(), |mut v, r| {
        if !v.contains(&&r.run) {
            v.push(&r.run);
        }
        v
    });
    for run in runs {
        let rows: Vec<&Row> = cmp.rows.iter().filter(|r| &r.run == run).collect();
        let _ = writeln!(s, "### {}\n", md_escape(run));
        let gated: Vec<&&Row> = rows.iter().filter(|r| r.gated()).collect();
        if !gated.is_empty() {
            s.push_str(MD_HEADER);
            for r in &gated {
                s.push_str(&md_row(r));
            }
            s.push('\n');
        }
        let rest: Vec<&&Row> = rows.iter().filter(|r| !r.gated()).collect();
        if !rest.is_empty() {
            let _ = writeln!(
                s,
                "<details><summary>{} metrics without a gate</summary>\n\n{MD_HEADER}{}\n</details>\n",
                rest.len(),
                rest.iter().map(|r| md_row(r)).collect::<String>()
            );
        }
    }
    for (side, list) in [("base", &cmp.only_in_base), ("new", &cmp.only_in_new)] {
        if !list.is_empty() {
            let _ = writeln!(
                s,
                "Only in {side}: {}.\n",
                list.iter()
                    .map(|i| md_escape(i))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn junit(cmp: &Comparison) -> String {
    let gated: Vec<&Row> = cmp.rows.iter().filter(|r| r.gated()).collect();
    let mut runs: Vec<&String> = Vec::new();
    for r in &gated {
        if !runs.contains(&&r.run) {
            runs.push(&r.run);
        }
    }
    let count =
        |rows: &[&Row], pred: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| pred(r)).count();
    let failed = |r: &Row| r.passed == Some(false);
    let skipped = |r: &Row| r.verdict == Verdict::NotTested;
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"cowprof compare\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
        gated.len(),
        count(&gated, &failed),
        count(&gated, &skipped)
    );
    for run in runs {
        let rows: Vec<&Row> = gated.iter().copied().filter(|r| &r.run == run).collect();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
            xml_escape(run),
            rows.len(),
            count(&rows, &failed),
            count(&rows, &skipped)
        );
        for r in rows {
            let name = format!("{} {}", r.cell_label(), r.metric);
            let detail = format!(
                "{}: base {}, new {}, change {} ({} basis); verdict {}; gate {}",
                name,
                format_value(r.metric, r.base),
                format_value(r.metric, r.new),
                format_change(r),
                r.basis.as_str(),
                r.verdict.as_str(),
                r.threshold.as_deref().unwrap_or("-")
            );
            let open = format!(
                "    <testcase classname=\"cowprof.compare\" name=\"{}\"",
                xml_escape(&name)
            );
            if failed(r) {
                let _ = writeln!(
                    s,
                    "{open}>\n      <failure type=\"regression\" message=\"{}\">{}</failure>\n    </testcase>",
                    xml_escape(&format!(
                        "{} {} beyond {}",
                        r.metric,
                        format_change(r),
                        r.threshold.as_deref().unwrap_or("-")
                    )),
                    xml_escape(&detail)
                );
            } else if skipped(r) {
                let _ = writeln!(
                    s,
                    "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml_escape(&format!("not tested: {detail}"))
                );
            } else {
                let _ = writeln!(
                    s,
                    "{open}>\n      <system-out>{}</system-out>\n    </testcase>",
                    xml_escape(&detail)
                );
            }
        }
        let _ = writeln!(s, "  </testsuite>");
    }
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            xml_escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;?"
        );
        assert_eq!(md_escape("a|b"), "a\\|b");
        assert_eq!(format_value(Metric::BytesCopied, 65536.0), "64 KiB/op");
        assert_eq!(format_value(Metric::P50, 65_500.0), "65.5 µs");
        assert_eq!(pct(0.1234), "+12.3%");
    }
}
