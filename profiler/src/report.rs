//! Stage 6: output. Two exporters behind one trait: a human table and JSON lines
//! (`{"schema":1,"type":"event",...}` per event, `{"schema":1,"type":"summary",...}` at the end).

use std::io::{self, Write};

use crate::{aggregate::Summary, enrich::Event};

/// Version of the JSON lines format; bumped on any incompatible change.
pub const JSON_SCHEMA: u32 = 1;

pub trait Exporter {
    fn header(&mut self, out: &mut dyn Write, info: &RunInfo) -> io::Result<()>;
    fn event(&mut self, out: &mut dyn Write, ev: &Event) -> io::Result<()>;
    fn summary(&mut self, out: &mut dyn Write, s: &Summary) -> io::Result<()>;
}

/// Printed once at start: what is attached where.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub backend: String,
    pub kernel: String,
    pub attached: Vec<String>,
    pub skipped: Vec<String>,
}

#[derive(serde::Serialize)]
struct Tagged<'a, T: serde::Serialize> {
    schema: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

pub struct JsonLines;

impl Exporter for JsonLines {
    fn header(&mut self, out: &mut dyn Write, info: &RunInfo) -> io::Result<()> {
        serde_json::to_writer(
            &mut *out,
            &Tagged {
                schema: JSON_SCHEMA,
                kind: "start",
                body: info,
            },
        )?;
        out.write_all(b"\n")
    }
    fn event(&mut self, out: &mut dyn Write, ev: &Event) -> io::Result<()> {
        serde_json::to_writer(
            &mut *out,
            &Tagged {
                schema: JSON_SCHEMA,
                kind: "event",
                body: ev,
            },
        )?;
        out.write_all(b"\n")
    }
    fn summary(&mut self, out: &mut dyn Write, s: &Summary) -> io::Result<()> {
        serde_json::to_writer(
            &mut *out,
            &Tagged {
                schema: JSON_SCHEMA,
                kind: "summary",
                body: s,
            },
        )?;
        out.write_all(b"\n")
    }
}

pub struct Table {
    rows: u64,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    pub fn new() -> Self {
        Self { rows: 0 }
    }
}

/// `12.3µs`-style durations, as hyperfine prints them.
pub fn fmt_ns(ns: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else {
        format!("{:.2}s", f / 1e9)
    }
}

pub fn fmt_bytes(b: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = b as f64;
    if b < 1024 {
        format!("{b}B")
    } else if b < 1 << 20 {
        format!("{:.1}KiB", f / 1024.0)
    } else if b < 1 << 30 {
        format!("{:.1}MiB", f / 1_048_576.0)
    } else {
        format!("{:.2}GiB", f / 1_073_741_824.0)
    }
}

impl Exporter for Table {
    fn header(&mut self, out: &mut dyn Write, info: &RunInfo) -> io::Result<()> {
        writeln!(
            out,
            "cowprof: backend {} on {} ({} hooks)",
            info.backend,
            info.kernel,
            info.attached.len()
        )?;
        for s in &info.skipped {
            writeln!(out, "cowprof: skipped {s}")?;
        }
        writeln!(
            out,
            "{:<21} {:>9} {:>7} {:<15} {:<12} {:>9} {:>9} {:>5} {:<32} PATH",
            "KIND", "LATENCY", "PID", "COMM", "SYSCALL", "SYS_LAT", "BYTES", "LAYER", "MOUNT",
        )
    }

    fn event(&mut self, out: &mut dyn Write, ev: &Event) -> io::Result<()> {
        self.rows += 1;
        let lat = if ev.latency_partial {
            format!("~{}", fmt_ns(ev.latency_ns))
        } else {
            fmt_ns(ev.latency_ns)
        };
        let path = if ev.path_truncated {
            format!(".../{}", ev.path)
        } else {
            ev.path.clone()
        };
        let err = if ev.errno == 0 {
            String::new()
        } else {
            format!("  (errno {})", ev.errno)
        };
        writeln!(
            out,
            "{:<21} {:>9} {:>7} {:<15} {:<12} {:>9} {:>9} {:>5} {:<32} {}{}",
            ev.kind.as_str(),
            lat,
            ev.pid,
            ev.comm,
            ev.syscall.as_deref().unwrap_or("-"),
            ev.syscall_latency_ns.map_or_else(|| "-".into(), fmt_ns),
            fmt_bytes(ev.bytes_copied),
            ev.lower_layer.map_or_else(|| "-".into(), |l| l.to_string()),
            ev.mount_point.as_deref().unwrap_or("?"),
            path,
            err
        )
    }

    fn summary(&mut self, out: &mut dyn Write, s: &Summary) -> io::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "Summary: {} events, {} dropped",
            s.events,
            s.drops.total()
        )?;
        for (title, groups) in [
            ("kind", &s.by_kind),
            ("source layer", &s.by_layer),
            ("mount", &s.by_mount),
        ] {
            writeln!(out, "\n  by {title}:")?;
            writeln!(
                out,
                "    {:<48} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
                title.to_uppercase(),
                "COUNT",
                "BYTES",
                "P50",
                "P90",
                "P99",
                "MAX"
            )?;
            for (k, st) in groups {
                writeln!(
                    out,
                    "    {:<48} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
                    k,
                    st.count,
                    fmt_bytes(st.bytes_copied),
                    fmt_ns(st.p50_ns),
                    fmt_ns(st.p90_ns),
                    fmt_ns(st.p99_ns),
                    fmt_ns(st.max_ns)
                )?;
            }
        }
        let d = s.drops;
        writeln!(
            out,
            "\n  dropped: {} (ring buffer full {}, op table full {}, window map full {}, malformed {})",
            d.total(),
            d.ringbuf,
            d.op_table,
            d.windows,
            d.malformed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_ns(12_345), "12.3µs");
        assert_eq!(fmt_ns(12_345_678), "12.35ms");
        assert_eq!(fmt_ns(2_500_000_000), "2.50s");
        assert_eq!(fmt_bytes(4096), "4.0KiB");
        assert_eq!(fmt_bytes(3 << 20), "3.0MiB");
    }
}
