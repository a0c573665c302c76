//! An [`Event`]'s JSON object, written straight into a byte buffer: the same bytes
//! `serde_json::to_writer(buf, ev)` writes (a test holds the two to it), for less of the
//! cost. `serde_json` escapes every key and string value byte by byte through its `Serializer`;
//! here the keys are constants and a string that needs no escape (paths, names, ids: nearly
//! all) is copied as it is. That was about a fifth of the collector's CPU per event with `--json`
//! (docs/performance.md, "The JSON line").

use crate::event::{CopyUpPhases, DataMethod, Event};

/// Appends `,"NAME":` and the value written by `$write` (one of the functions below).
macro_rules! field {
    ($buf:expr, $name:literal, $write:ident, $value:expr) => {
        $buf.extend_from_slice(concat!(",\"", $name, "\":").as_bytes());
        $write($buf, $value);
    };
}

/// Appends `ev` as one compact JSON object (no newline).
pub fn write_event(buf: &mut Vec<u8>, ev: &Event) {
    buf.extend_from_slice(b"{\"kind\":");
    raw_string(buf, ev.kind.as_str());
    field!(buf, "backend", raw_string, ev.backend.as_str());
    field!(buf, "time_ns", int, ev.time_ns);
    field!(buf, "latency_ns", int, ev.latency_ns);
    field!(buf, "latency_partial", boolean, ev.latency_partial);
    field!(buf, "errno", int, ev.errno);
    field!(buf, "pid", int, ev.pid);
    field!(buf, "tid", int, ev.tid);
    field!(buf, "comm", string, &ev.comm);
    field!(buf, "cgroup_id", int, ev.cgroup_id);
    field!(buf, "mnt_ns", int, ev.mnt_ns);
    field!(buf, "dev", opt_string, ev.dev.as_deref());
    field!(buf, "mount_point", opt_string, ev.mount_point.as_deref());
    field!(buf, "path", string, &ev.path);
    field!(buf, "path_truncated", boolean, ev.path_truncated);
    field!(buf, "size_bytes", int, ev.size_bytes);
    field!(buf, "bytes_copied", int, ev.bytes_copied);
    field!(buf, "lower_layer", opt_int, ev.lower_layer);
    field!(
        buf,
        "lower_layer_dir",
        opt_string,
        ev.lower_layer_dir.as_deref()
    );
    field!(buf, "syscall", opt_string, ev.syscall.as_deref());
    field!(buf, "syscall_latency_ns", opt_int, ev.syscall_latency_ns);
    field!(buf, "syscall_ret", opt_int, ev.syscall_ret);
    field!(buf, "container_id", opt_string, ev.container_id.as_deref());
    field!(
        buf,
        "container_name",
        opt_string,
        ev.container_name.as_deref()
    );
    field!(buf, "image", opt_string, ev.image.as_deref());
    field!(buf, "image_id", opt_string, ev.image_id.as_deref());
    field!(buf, "layer_digest", opt_string, ev.layer_digest.as_deref());
    field!(buf, "pod_name", opt_string, ev.pod_name.as_deref());
    field!(
        buf,
        "pod_namespace",
        opt_string,
        ev.pod_namespace.as_deref()
    );
    field!(buf, "pod_uid", opt_string, ev.pod_uid.as_deref());
    field!(buf, "pod_qos", opt_string, ev.pod_qos.as_deref());
    if let Some(p) = &ev.phases {
        field!(buf, "phases", phases, p);
    }
    buf.push(b'}');
}

fn phases(buf: &mut Vec<u8>, p: &CopyUpPhases) {
    buf.extend_from_slice(b"{\"metadata_ns\":");
    opt_int(buf, p.metadata_ns);
    field!(buf, "data_ns", opt_int, p.data_ns);
    field!(
        buf,
        "data_method",
        opt_raw_string,
        p.data_method.map(|m| match m {
            DataMethod::Clone => "clone",
            DataMethod::Splice => "splice",
        })
    );
    field!(buf, "data_bytes", opt_int, p.data_bytes);
    field!(buf, "fsync_ns", opt_int, p.fsync_ns);
    field!(buf, "link_ns", opt_int, p.link_ns);
    field!(buf, "offcpu_block_ns", opt_int, p.offcpu_block_ns);
    field!(buf, "offcpu_other_ns", opt_int, p.offcpu_other_ns);
    field!(buf, "other_ns", int, p.other_ns);
    buf.push(b'}');
}

/// A string known to need no escape (a name of the code's own).
fn raw_string(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
}

fn opt_raw_string(buf: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => raw_string(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

fn int<I: itoa::Integer>(buf: &mut Vec<u8>, v: I) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn opt_int<I: itoa::Integer>(buf: &mut Vec<u8>, v: Option<I>) {
    match v {
        Some(v) => int(buf, v),
        None => buf.extend_from_slice(b"null"),
    }
}

fn boolean(buf: &mut Vec<u8>, v: bool) {
    buf.extend_from_slice(if v { b"true".as_slice() } else { b"false" });
}

fn opt_string(buf: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => string(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

/// A JSON string: copied as it is when no byte needs an escape (a quote, a backslash, a
/// control character), else escaped by `serde_json` itself.
fn string(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        raw_string(buf, s);
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Backend, Kind};

    fn sample() -> Event {
        Event {
            kind: Kind::DataCopyUp,
            backend: Backend::Tracepoint,
            time_ns: 1_796_539_933_058_149_324,
            latency_ns: 294_979,
            latency_partial: true,
            errno: 0,
            pid: 24755,
            tid: 24756,
            comm: "sh".into(),
            cgroup_id: 1,
            mnt_ns: 4_026_531_832,
            dev: Some("0:41".into()),
            mount_point: Some("/tmp/js/m".into()),
            path: "etc/f".into(),
            path_truncated: false,
            size_bytes: 2,
            bytes_copied: 2,
            lower_layer: Some(1),
            lower_layer_dir: Some("/tmp/js/l".into()),
            syscall: Some("openat".into()),
            syscall_latency_ns: Some(389_148),
            syscall_ret: Some(-2),
            container_id: Some("ab".repeat(32)),
            container_name: Some("web".into()),
            image: Some("app:1.2".into()),
            image_id: Some(format!("sha256:{}", "c".repeat(64))),
            layer_digest: Some("init".into()),
            pod_name: Some("p".into()),
            pod_namespace: Some("default".into()),
            pod_uid: Some("0000-11".into()),
            pod_qos: Some("burstable".into()),
            phases: Some(CopyUpPhases {
                metadata_ns: Some(5),
                data_ns: None,
                data_method: Some(DataMethod::Splice),
                data_bytes: Some(2),
                fsync_ns: Some(78_858),
                link_ns: None,
                offcpu_block_ns: Some(163_823),
                offcpu_other_ns: Some(0),
                other_ns: u64::MAX,
            }),
        }
    }

    fn same_as_serde(ev: &Event) {
        let mut ours = Vec::new();
        write_event(&mut ours, ev);
        let theirs = serde_json::to_vec(ev).expect("serialises");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    /// Every kind, backend, data method, `None` and extreme value, and strings with every kind
    /// of escape, give `serde_json`'s bytes exactly.
    #[test]
    fn byte_for_byte_as_serde() {
        let backends = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let mut ev = sample();
            ev.kind = kind;
            ev.backend = backends[i % backends.len()];
            same_as_serde(&ev);
        }
        let mut ev = sample();
        ev.phases = None;
        ev.errno = i32::MAX;
        ev.syscall_ret = Some(i64::MIN);
        ev.lower_layer = None;
        ev.dev = None;
        ev.mount_point = None;
        ev.container_id = None;
        ev.latency_partial = false;
        ev.path_truncated = true;
        same_as_serde(&ev);
        for method in [None, Some(DataMethod::Clone)] {
            let mut ev = sample();
            ev.phases = Some(CopyUpPhases {
                data_method: method,
                ..CopyUpPhases::default()
            });
            same_as_serde(&ev);
        }
        for path in [
            "a \"quoted\" name",
            "back\\slash",
            "tab\tnew\nline\rcr",
            "\u{1}\u{1f}\u{7f}",
            "bell\u{8}feed\u{c}",
            "grüße/日本/🦀",
            "",
        ] {
            let mut ev = sample();
            ev.path = path.into();
            ev.comm = path.into();
            ev.lower_layer_dir = Some(path.into());
            same_as_serde(&ev);
        }
    }
}
