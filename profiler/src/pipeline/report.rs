//! Stage 6: output. Two exporters behind one trait: a human table and JSON lines
//! (`{"schema":1,"type":"event",...}` per event, `{"schema":1,"type":"summary",...}` at the end).

use crate::fmt;
use std::io::{self, Write};

use crate::{event::Event, pipeline::aggregate::Summary};

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
    pub backend: crate::event::Backend,
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
            "{:<21} {:>9} {:>7} {:<15} {:<12} {:>9} {:>9} {:>5} {:<16} {:<32} PATH",
            "KIND",
            "LATENCY",
            "PID",
            "COMM",
            "SYSCALL",
            "SYS_LAT",
            "BYTES",
            "LAYER",
            "CONTAINER",
            "MOUNT",
        )
    }

    fn event(&mut self, out: &mut dyn Write, ev: &Event) -> io::Result<()> {
        self.rows += 1;
        let lat = if ev.latency_partial {
            format!("~{}", fmt::ns(ev.latency_ns))
        } else {
            fmt::ns(ev.latency_ns)
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
            "{:<21} {:>9} {:>7} {:<15} {:<12} {:>9} {:>9} {:>5} {:<16} {:<32} {}{}",
            ev.kind.as_str(),
            lat,
            ev.pid,
            ev.comm,
            ev.syscall.as_deref().unwrap_or("-"),
            ev.syscall_latency_ns.map_or_else(|| "-".into(), fmt::ns),
            fmt::bytes(ev.bytes_copied),
            ev.lower_layer.map_or_else(|| "-".into(), |l| l.to_string()),
            match (&ev.container_name, &ev.container_id) {
                (Some(n), _) => ev
                    .pod_name
                    .as_ref()
                    .map_or_else(|| n.clone(), |p| format!("{p}/{n}")),
                (None, Some(id)) => fmt::short_id(id),
                (None, None) => "-".into(),
            },
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
            ("container", &s.by_container),
            ("image layer", &s.by_image_layer),
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
                    fmt::bytes(st.bytes_copied),
                    fmt::ns(st.p50_ns),
                    fmt::ns(st.p90_ns),
                    fmt::ns(st.p99_ns),
                    fmt::ns(st.max_ns)
                )?;
            }
        }
        let d = s.drops;
        writeln!(
            out,
            "\n  dropped: {} (ring buffer full {}, op table full {}, window map full {}, malformed {}, whiteout unnamed {}){}",
            d.total(),
            d.ringbuf,
            d.op_table,
            d.windows,
            d.malformed,
            d.whiteout_unnamed,
            if d.syscall_ends > 0 {
                format!(
                    "; {} syscall-end markers lost (their events kept, latency partial)",
                    d.syscall_ends
                )
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{event::Kind, pipeline::aggregate::Aggregate};

    fn sample_event() -> Event {
        Event {
            kind: Kind::DataCopyUp,
            backend: crate::event::Backend::Kprobe,
            time_ns: 1_795_857_779_000_000_000,
            latency_ns: 528_100,
            latency_partial: false,
            errno: 0,
            pid: 42,
            tid: 43,
            comm: "bash".into(),
            cgroup_id: 7,
            mnt_ns: 4_026_531_841,
            dev: Some("0:39".into()),
            mount_point: Some("/m".into()),
            path: "etc/app.conf".into(),
            path_truncated: false,
            size_bytes: 4096,
            bytes_copied: 4096,
            lower_layer: Some(3),
            lower_layer_dir: Some("/l3".into()),
            syscall: Some("openat".into()),
            syscall_latency_ns: Some(919_600),
            syscall_ret: Some(3),
            container_id: Some(
                "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970".into(),
            ),
            container_name: Some("web".into()),
            image: Some("app:1".into()),
            image_id: Some("sha256:0b9c".into()),
            layer_digest: Some("sha256:d2".into()),
            pod_name: None,
            pod_namespace: None,
            pod_uid: None,
            pod_qos: None,
        }
    }

    /// The JSON line is a contract with scripts: field names, units and order are pinned here.
    #[test]
    fn json_event_line_snapshot() {
        let mut out = Vec::new();
        JsonLines.event(&mut out, &sample_event()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"schema":1,"type":"event","kind":"data_copy_up","backend":"kprobe","#,
                r#""time_ns":1795857779000000000,"latency_ns":528100,"latency_partial":false,"#,
                r#""errno":0,"pid":42,"tid":43,"comm":"bash","cgroup_id":7,"mnt_ns":4026531841,"#,
                r#""dev":"0:39","mount_point":"/m","path":"etc/app.conf","path_truncated":false,"#,
                r#""size_bytes":4096,"bytes_copied":4096,"lower_layer":3,"lower_layer_dir":"/l3","#,
                r#""syscall":"openat","syscall_latency_ns":919600,"syscall_ret":3,"#,
                r#""container_id":"4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970","#,
                r#""container_name":"web","image":"app:1","image_id":"sha256:0b9c","#,
                r#""layer_digest":"sha256:d2","pod_name":null,"pod_namespace":null,"#,
                r#""pod_uid":null,"pod_qos":null}"#,
                "\n"
            )
        );
    }

    #[test]
    fn table_row_snapshot() {
        let mut out = Vec::new();
        let mut ev = sample_event();
        Table::new().event(&mut out, &ev).unwrap();
        ev.latency_partial = true;
        ev.path_truncated = true;
        ev.errno = 28;
        Table::new().event(&mut out, &ev).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data_copy_up            528.1µs      42 bash            openat         919.6µs    4.0KiB     3 web              /m                               etc/app.conf\n\
             data_copy_up           ~528.1µs      42 bash            openat         919.6µs    4.0KiB     3 web              /m                               .../etc/app.conf  (errno 28)\n"
        );
    }

    #[test]
    fn summary_json_round_trips() {
        let mut agg = Aggregate::default();
        agg.record(&sample_event());
        let summary = agg.summary(crate::pipeline::aggregate::Drops {
            ringbuf: 1,
            ..Default::default()
        });
        let mut out = Vec::new();
        JsonLines.summary(&mut out, &summary).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["type"], "summary");
        assert_eq!(v["drops"]["ringbuf"], 1);
        assert_eq!(v["by_container"]["web (4f797c539e6c)"]["count"], 1);
        assert_eq!(v["by_image_layer"]["sha256:d2"]["count"], 1);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(fmt::ns(999), "999ns");
        assert_eq!(fmt::ns(12_345), "12.3µs");
        assert_eq!(fmt::ns(12_345_678), "12.35ms");
        assert_eq!(fmt::ns(2_500_000_000), "2.50s");
        assert_eq!(fmt::bytes(4096), "4.0KiB");
        assert_eq!(fmt::bytes(3 << 20), "3.0MiB");
    }
}
