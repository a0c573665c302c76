//! Stage 6: output. Two exporters behind one trait: a human table and JSON lines
//! (`{"schema":1,"type":"event",...}` per event, `{"schema":1,"type":"summary",...}` at the end).

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};

use crate::{
    event::Event,
    fmt::{self, fit, text_width, Layout},
    pipeline::{
        aggregate::{GroupStats, Summary},
        phases::PhaseStats,
    },
};

/// Version of the JSON lines format; bumped on any incompatible change.
pub const JSON_SCHEMA: u32 = 1;

pub trait Exporter {
    fn header(&mut self, out: &mut dyn Write, info: &RunInfo) -> io::Result<()>;
    fn event(&mut self, out: &mut dyn Write, ev: &Event) -> io::Result<()>;
    fn summary(&mut self, out: &mut dyn Write, s: &Summary) -> io::Result<()>;
    /// False if [`Exporter::summary`] shows nothing: `record` then keeps no histograms (its
    /// [`crate::pipeline::record::Outcome::summary`] has the drops and no events).
    fn wants_summary(&self) -> bool {
        true
    }
    /// Called every [`crate::pipeline::record::RecordOptions::tick`] while recording, with the
    /// drops so far (live views: `top`); `Ok(false)` ends the recording as Ctrl-C would.
    fn tick(
        &mut self,
        _out: &mut dyn Write,
        _drops: &crate::pipeline::aggregate::Drops,
    ) -> io::Result<bool> {
        Ok(true)
    }
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

/// JSON lines. An event line is built in a buffer kept between events and written with one
/// `write_all`: serialising through `&mut dyn Write` costs a virtual call per token, and
/// `#[serde(flatten)]` a map serializer per field.
pub struct JsonLines {
    /// `{"schema":N,"type":"event"` and, after it, the event being written.
    line: Vec<u8>,
    prefix: usize,
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonLines {
    pub fn new() -> Self {
        let line = format!("{{\"schema\":{JSON_SCHEMA},\"type\":\"event\"").into_bytes();
        Self {
            prefix: line.len(),
            line,
        }
    }
}

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
        // The text `Tagged { schema, kind: "event", body: ev }` serialises to: the tag fields,
        // then the event's own fields (its opening brace becomes the comma after the tags).
        self.line.truncate(self.prefix);
        super::json_event::write_event(&mut self.line, ev);
        if let Some(brace) = self.line.get_mut(self.prefix) {
            *brace = b',';
        }
        self.line.push(b'\n');
        out.write_all(&self.line)
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
    layout: Layout,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// Laid out for stdout: its width (`COLUMNS` or the terminal), colours on a terminal.
    pub fn new() -> Self {
        Self::with_layout(Layout::stdout())
    }

    pub fn with_layout(layout: Layout) -> Self {
        Self { rows: 0, layout }
    }
}

/// Width of the number columns after a group table's key: COUNT, BYTES, P50, P90, P99, MAX with
/// a space before each.
const GROUP_NUMBERS: usize = 1 + 7 + 1 + 10 + 4 * (1 + 9);
/// Indent of a group table.
const GROUP_INDENT: usize = 4;
/// A key column never gets narrower than this, even on a narrow terminal.
const MIN_KEY: usize = 16;

/// Width of a phase table's columns after its key: the seven phases (the count is in the
/// group tables above).
const PHASE_NUMBERS: usize = 7 * (1 + 7);

/// A group table's heading and the width of its key column: as wide as the longest key or the
/// heading, as the terminal allows beside `numbers` columns of figures.
fn key_column<'a>(
    layout: &Layout,
    title: &str,
    keys: impl Iterator<Item = &'a String>,
    numbers: usize,
) -> (String, usize) {
    let head = title.to_uppercase();
    let longest = keys
        .map(|k| text_width(k))
        .chain([text_width(&head)])
        .max()
        .unwrap_or(0);
    let w = layout.key_width(longest, GROUP_INDENT + numbers, MIN_KEY);
    (head, w)
}

/// A "copy-up phases by …" table: the p50 of each phase, `-` where no event showed it.
pub fn write_phase_group(
    out: &mut dyn Write,
    layout: &Layout,
    title: &str,
    groups: &std::collections::BTreeMap<String, PhaseStats>,
) -> io::Result<()> {
    use std::fmt::Write as _;
    let (head, w) = key_column(layout, title, groups.keys(), PHASE_NUMBERS);
    let mut header = fit(&head, w);
    for name in [
        "META", "DATA", "FSYNC", "LINK", "IO-WAIT", "OFF-CPU", "OTHER",
    ] {
        let _ = write!(header, " {name:>7}");
    }
    writeln!(out, "    {}", layout.paint(Style::new().bold(), &header))?;
    for (k, st) in groups {
        let mut row = fit(k, w);
        for name in crate::event::PHASE_NAMES {
            let cell = st
                .phases
                .get(name)
                .map_or_else(|| "-".to_owned(), |p| fmt::ns(p.p50_ns));
            let _ = write!(row, " {cell:>7}");
        }
        writeln!(out, "    {row}")?;
    }
    Ok(())
}

/// One "by …" table of the summary; keys longer than the terminal allows are shortened in the
/// middle, so every number stays in its column (the JSON summary keeps the full key).
pub fn write_group(
    out: &mut dyn Write,
    layout: &Layout,
    title: &str,
    groups: &std::collections::BTreeMap<String, GroupStats>,
) -> io::Result<()> {
    let (head, w) = key_column(layout, title, groups.keys(), GROUP_NUMBERS);
    let header = format!(
        "{} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
        fit(&head, w),
        "COUNT",
        "BYTES",
        "P50",
        "P90",
        "P99",
        "MAX"
    );
    writeln!(out, "    {}", layout.paint(Style::new().bold(), &header))?;
    for (k, st) in groups {
        writeln!(
            out,
            "    {} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
            fit(k, w),
            st.count,
            fmt::bytes(st.bytes_copied),
            fmt::ns(st.p50_ns),
            fmt::ns(st.p90_ns),
            fmt::ns(st.p99_ns),
            fmt::ns(st.max_ns)
        )?;
    }
    Ok(())
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
            "{:<21} {:>9} {:>7} {:<15} {:<12} {:>9} {:>9} {:>5} {} {} {}{}",
            ev.kind.as_str(),
            lat,
            ev.pid,
            ev.comm,
            ev.syscall.as_deref().unwrap_or("-"),
            ev.syscall_latency_ns.map_or_else(|| "-".into(), fmt::ns),
            fmt::bytes(ev.bytes_copied),
            ev.lower_layer.map_or_else(|| "-".into(), |l| l.to_string()),
            // Shortened in the middle past their column, so PATH starts in the same place.
            fit(
                &match (&ev.container_name, &ev.container_id) {
                    (Some(n), _) => ev
                        .pod_name
                        .as_ref()
                        .map_or_else(|| n.clone(), |p| format!("{p}/{n}")),
                    (None, Some(id)) => fmt::short_id(id),
                    (None, None) => "-".into(),
                },
                16
            ),
            fit(ev.mount_point.as_deref().unwrap_or("?"), 32),
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
            write_group(out, &self.layout, title, groups)?;
        }
        for (title, groups) in [
            ("kind", &s.phases_by_kind),
            ("source layer", &s.phases_by_layer),
        ] {
            if !groups.is_empty() {
                writeln!(
                    out,
                    "\n  copy-up phases by {title} (p50; IO-WAIT, OFF-CPU = off the CPU on block I/O, on anything else; - = not visible):"
                )?;
                write_phase_group(out, &self.layout, title, groups)?;
            }
        }
        if !s.explain.is_empty() {
            writeln!(out, "\n  what dominates:")?;
            for line in &s.explain {
                writeln!(out, "    {line}")?;
            }
        }
        let d = s.drops;
        let dropped = format!("dropped: {}", d.total());
        let dropped = if d.total() > 0 {
            self.layout
                .paint(Style::new().fg_color(Some(AnsiColor::Red.into())), &dropped)
        } else {
            dropped
        };
        writeln!(
            out,
            "\n  {dropped} (ring buffer full {}, op table full {}, window map full {}, malformed {}, whiteout unnamed {}, windows lost to skipped runs {}, operations with a probe missed {}){}",
            d.ringbuf,
            d.op_table,
            d.windows,
            d.malformed,
            d.whiteout_unnamed,
            d.recursion,
            d.unpaired,
            if d.syscall_ends > 0 {
                format!(
                    "; {} syscall-end markers lost (their events kept, latency partial)",
                    d.syscall_ends
                )
            } else {
                String::new()
            }
        )?;
        if d.ctime_skipped > 0 {
            writeln!(
                out,
                "  {} inode updates skipped by every copy of a ctime program (each may have been a copy-up or whiteout lost; most lose nothing)",
                d.ctime_skipped
            )?;
        }
        Ok(())
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
            phases: Some(crate::event::CopyUpPhases {
                metadata_ns: Some(21_000),
                data_ns: Some(300_000),
                data_method: Some(crate::event::DataMethod::Splice),
                data_bytes: Some(4096),
                fsync_ns: Some(100_000),
                link_ns: Some(7_000),
                offcpu_block_ns: Some(90_000),
                offcpu_other_ns: Some(10_000),
                other_ns: 100,
            }),
        }
    }

    /// The JSON line is a contract with scripts: field names, units and order are pinned here.
    #[test]
    fn json_event_line_snapshot() {
        let mut out = Vec::new();
        JsonLines::new().event(&mut out, &sample_event()).unwrap();
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
                r#""pod_uid":null,"pod_qos":null,"phases":{"metadata_ns":21000,"data_ns":300000,"#,
                r#""data_method":"splice","data_bytes":4096,"fsync_ns":100000,"link_ns":7000,"#,
                r#""offcpu_block_ns":90000,"offcpu_other_ns":10000,"other_ns":100}}"#,
                "\n"
            )
        );
    }

    /// The event line is built by hand around the event's own serialisation: the same text
    /// as the tagged struct the start and summary lines use.
    #[test]
    fn json_event_line_is_the_tagged_event() {
        let mut exporter = JsonLines::new();
        for ev in [
            sample_event(),
            Event::new(
                crate::event::Kind::Whiteout,
                crate::event::Backend::Tracepoint,
            ),
        ] {
            let mut out = Vec::new();
            exporter.event(&mut out, &ev).unwrap();
            exporter.event(&mut out, &ev).unwrap();
            let tagged = serde_json::to_string(&Tagged {
                schema: JSON_SCHEMA,
                kind: "event",
                body: &ev,
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{tagged}\n{tagged}\n")
            );
        }
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
            ctime_skipped: 3,
            ..Default::default()
        });
        let mut out = Vec::new();
        JsonLines::new().summary(&mut out, &summary).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["type"], "summary");
        assert_eq!(v["drops"]["ringbuf"], 1);
        assert_eq!(v["drops"]["ctime_skipped"], 3);
        assert_eq!(v["by_container"]["web (4f797c539e6c)"]["count"], 1);
        assert_eq!(v["by_image_layer"]["sha256:d2"]["count"], 1);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, summary);
    }

    /// A summary whose keys are long overlay2 paths, as docker's are.
    fn long_key_summary() -> Summary {
        let mut agg = Aggregate::default();
        let mut ev = sample_event();
        for (mount, layer_dir) in [
            (
                "/var/lib/docker/overlay2/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970/merged",
                "/var/lib/docker/overlay2/l/ZSJ4MCWQ7XSNDZ2VNVUTRI4VQJ/diff-of-a-very-long-layer",
            ),
            ("/m", "/l3"),
        ] {
            ev.mount_point = Some(mount.into());
            ev.lower_layer_dir = Some(layer_dir.into());
            agg.record(&ev);
        }
        agg.summary(crate::pipeline::aggregate::Drops::default())
    }

    /// Byte offsets of the right edges of the number columns of a group row: the end of each
    /// run of non-spaces after the key column.
    fn number_ends(line: &str, key_end: usize) -> Vec<usize> {
        let rest: Vec<char> = line.chars().collect();
        let mut ends = Vec::new();
        for i in key_end..rest.len() {
            if rest[i] != ' ' && (i + 1 == rest.len() || rest[i + 1] == ' ') {
                ends.push(i);
            }
        }
        ends
    }

    #[test]
    fn group_columns_stay_aligned_with_long_keys() {
        let summary = long_key_summary();
        for width in [Some(80), Some(100), Some(200), None] {
            let mut out = Vec::new();
            Table::with_layout(Layout {
                width,
                color: false,
            })
            .summary(&mut out, &summary)
            .unwrap();
            let text = String::from_utf8(out).unwrap();
            // Every table: header and rows end their number columns at the same characters.
            let groups = text.split("\n  by ").skip(1).map(|b| (b, " COUNT", 6));
            let phases = text
                .split("\n  copy-up phases by ")
                .skip(1)
                .map(|b| (b, " META", 7));
            let mut n = 0;
            for (block, first, columns) in groups.chain(phases) {
                n += 1;
                let block = block.split("\n\n").next().unwrap();
                let lines: Vec<&str> = block
                    .lines()
                    .skip(1)
                    .filter(|l| l.starts_with("    "))
                    .collect();
                let header = lines[0];
                let key_end = header.find(first).unwrap();
                let want = number_ends(header, key_end);
                assert_eq!(want.len(), columns, "{header}");
                for row in &lines[1..] {
                    assert_eq!(number_ends(row, key_end), want, "width {width:?}:\n{block}");
                    if let Some(w) = width {
                        assert!(row.chars().count() <= w, "row wider than {w}: {row}");
                    }
                }
            }
            assert_eq!(n, 7, "five group tables and two phase tables:\n{text}");
            if width.is_none() {
                // Unlimited (a pipe without COLUMNS): nothing is shortened.
                assert!(text.contains(
                    "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970/merged"
                ));
                assert!(!text.contains('…'));
            }
        }
    }

    #[test]
    fn long_mounts_shortened_in_the_middle_full_in_json() {
        let summary = long_key_summary();
        let mut out = Vec::new();
        Table::with_layout(Layout {
            width: Some(100),
            color: false,
        })
        .summary(&mut out, &summary)
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let mount_table = text.split("\n  by mount:").nth(1).unwrap();
        let row = mount_table.lines().find(|l| l.contains('…')).unwrap();
        // 100 columns - 4 indent - 59 number columns = 37 for the key: both ends kept.
        let key: String = row.chars().skip(4).take(37).collect();
        assert_eq!(key, "/var/lib/docker/ov…38428142970/merged");
        assert_eq!(row.chars().count(), 100);
        let mut json = Vec::new();
        JsonLines::new().summary(&mut json, &summary).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v["by_mount"]["/var/lib/docker/overlay2/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970/merged"]["count"],
            1
        );
    }

    #[test]
    fn colours_only_when_asked() {
        let mut summary = long_key_summary();
        summary.drops.ringbuf = 2;
        let mut plain = Vec::new();
        Table::with_layout(Layout::PLAIN)
            .summary(&mut plain, &summary)
            .unwrap();
        assert!(!plain.contains(&0x1b));
        let mut coloured = Vec::new();
        Table::with_layout(Layout {
            width: None,
            color: true,
        })
        .summary(&mut coloured, &summary)
        .unwrap();
        let coloured = String::from_utf8(coloured).unwrap();
        assert!(coloured.contains("\x1b[1mKIND"));
        assert!(coloured.contains("\x1b[31mdropped: 2"));
        let plain = String::from_utf8(plain).unwrap();
        assert!(!plain.contains("skipped by every copy"), "no line at 0");
        summary.drops.ctime_skipped = 4;
        let mut out = Vec::new();
        Table::with_layout(Layout::PLAIN)
            .summary(&mut out, &summary)
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("dropped: 2 "), "not in the drop total: {out}");
        assert!(
            out.contains("  4 inode updates skipped by every copy of a ctime program"),
            "{out}"
        );
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
