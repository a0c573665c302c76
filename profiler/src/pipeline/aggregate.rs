//! Stage 5: latency histograms (hdrhistogram) per kind, per source layer and per mount.

use crate::fmt;
use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::event::Event;
use crate::pipeline::phases::{PhaseAggregate, PhaseStats};

/// A summary latency histogram: 1 ns .. 1 hour at 2 significant digits (every value within 1 %
/// of its bucket), 36 KiB. At 3 digits one took 270 KiB: the ~26 a copy-up is recorded in
/// (5 groups, and up to 7 phases in each of 3 phase groups) made every record a cache miss and
/// every new group ~66 page faults. The lab keeps 3 digits in `results.json`.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 2).expect("valid bounds")
}

/// Count, bytes and a latency histogram for one group of events.
#[derive(Clone)]
pub struct Group {
    pub count: u64,
    pub errors: u64,
    pub bytes_copied: u64,
    hist: Histogram<u64>,
}

impl Default for Group {
    fn default() -> Self {
        Self {
            count: 0,
            errors: 0,
            bytes_copied: 0,
            hist: latency_histogram(),
        }
    }
}

impl Group {
    pub fn record(&mut self, ev: &Event) {
        self.count += 1;
        if ev.errno != 0 {
            self.errors += 1;
        }
        self.bytes_copied += ev.bytes_copied;
        // saturating_record clamps outliers to the top bucket instead of failing.
        self.hist.saturating_record(ev.latency_ns.max(1));
    }

    pub fn stats(&self) -> GroupStats {
        GroupStats {
            count: self.count,
            errors: self.errors,
            bytes_copied: self.bytes_copied,
            p50_ns: self.hist.value_at_quantile(0.50),
            p90_ns: self.hist.value_at_quantile(0.90),
            p99_ns: self.hist.value_at_quantile(0.99),
            max_ns: self.hist.max(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupStats {
    pub count: u64,
    pub errors: u64,
    pub bytes_copied: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// The `by_container` key of host processes.
pub const HOST: &str = "host";
/// The `by_image_layer` key of events whose source is in no known image layer.
pub const NO_IMAGE_LAYER: &str = "(no image layer)";

/// `name (short id)`, the short id alone without an engine, or [`HOST`]; a Kubernetes
/// container's key starts with `namespace/pod/` (names from containerd) or `pod-uid/` (the
/// cgroup path alone).
pub fn container_key(ev: &Event) -> String {
    let container = match (&ev.container_name, &ev.container_id) {
        (Some(n), Some(id)) => format!("{n} ({})", fmt::short_id(id)),
        (None, Some(id)) => fmt::short_id(id),
        (_, None) => return HOST.to_owned(),
    };
    match (&ev.pod_namespace, &ev.pod_name, &ev.pod_uid) {
        (Some(ns), Some(pod), _) => format!("{ns}/{pod}/{container}"),
        (_, _, Some(uid)) => format!("{uid}/{container}"),
        _ => container,
    }
}

/// The "by mount" key: the mount point, else the device.
pub fn mount_key(ev: &Event) -> String {
    ev.mount_point
        .as_deref()
        .or(ev.dev.as_deref())
        .unwrap_or("?")
        .to_owned()
}

/// The "by source layer" key: the mount, the layer's index and its directory.
pub fn layer_key(ev: &Event) -> String {
    let mount = mount_key(ev);
    match (ev.lower_layer, &ev.lower_layer_dir) {
        (Some(i), Some(d)) => format!("{mount} layer {i} ({d})"),
        (Some(i), None) => format!("{mount} layer {i}"),
        (None, _) => format!("{mount} layer ?"),
    }
}

/// Everything the end-of-run summary shows.
#[derive(Default)]
pub struct Aggregate {
    pub by_kind: BTreeMap<String, Group>,
    /// Key: "mount point · layer N (dir)".
    pub by_layer: BTreeMap<String, Group>,
    pub by_mount: BTreeMap<String, Group>,
    /// Key: [`container_key`].
    pub by_container: BTreeMap<String, Group>,
    /// Key: the image layer's diffID, `init`, or [`NO_IMAGE_LAYER`].
    pub by_image_layer: BTreeMap<String, Group>,
    pub total: u64,
    /// Copy-up phases per kind and source layer.
    pub phases: PhaseAggregate,
    /// Reused to build the `by_layer` key of each event.
    key: String,
}

/// Counts `ev` under `key`, allocating the key only the first time it is seen.
fn add(map: &mut BTreeMap<String, Group>, key: &str, ev: &Event) {
    match map.get_mut(key) {
        Some(g) => g.record(ev),
        None => map.entry(key.to_owned()).or_default().record(ev),
    }
}

impl Aggregate {
    pub fn record(&mut self, ev: &Event) {
        use std::fmt::Write as _;
        self.total += 1;
        add(&mut self.by_kind, ev.kind.as_str(), ev);
        let mount = ev
            .mount_point
            .as_deref()
            .unwrap_or_else(|| ev.dev.as_deref().unwrap_or("?"));
        // The same text as [`layer_key`], built in a reused buffer.
        let mut layer = std::mem::take(&mut self.key);
        layer.clear();
        let _ = match (ev.lower_layer, &ev.lower_layer_dir) {
            (Some(i), Some(d)) => write!(layer, "{mount} layer {i} ({d})"),
            (Some(i), None) => write!(layer, "{mount} layer {i}"),
            (None, _) => write!(layer, "{mount} layer ?"),
        };
        add(&mut self.by_layer, &layer, ev);
        self.phases.record(ev, &layer, mount);
        self.key = layer;
        add(&mut self.by_mount, mount, ev);
        if ev.container_id.is_none() {
            add(&mut self.by_container, HOST, ev);
        } else {
            add(&mut self.by_container, &container_key(ev), ev);
        }
        add(
            &mut self.by_image_layer,
            ev.layer_digest.as_deref().unwrap_or(NO_IMAGE_LAYER),
            ev,
        );
    }

    pub fn summary(&self, drops: Drops) -> Summary {
        let stats =
            |m: &BTreeMap<String, Group>| m.iter().map(|(k, g)| (k.clone(), g.stats())).collect();
        Summary {
            events: self.total,
            by_kind: stats(&self.by_kind),
            by_layer: stats(&self.by_layer),
            by_mount: stats(&self.by_mount),
            by_container: stats(&self.by_container),
            by_image_layer: stats(&self.by_image_layer),
            phases_by_kind: PhaseAggregate::stats(&self.phases.by_kind),
            phases_by_layer: PhaseAggregate::stats(&self.phases.by_layer),
            explain: self.phases.explain(3),
            drops,
        }
    }
}

/// Events lost, counted exactly where they were lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Drops {
    /// Ring-buffer reservations that failed in the kernel.
    pub ringbuf: u64,
    /// Tracepoint backend: operations beyond the per-syscall table.
    pub op_table: u64,
    /// Syscall windows the kernel side could not store.
    pub windows: u64,
    /// Samples user space could not decode.
    pub malformed: u64,
    /// Syscall-end markers lost to a full ring buffer: not events (those are kept, with a
    /// partial latency), so not part of [`Drops::total`].
    #[serde(default)]
    pub syscall_ends: u64,
    /// Tracepoint backend: whiteouts the kernel made whose name in the upper dir could not be
    /// read (lost, counted).
    #[serde(default)]
    pub whiteout_unnamed: u64,
    /// Syscall windows lost because the kernel skipped both copies of `sys_exit` (a program
    /// preempted on a CPU is skipped there for other tasks, 7.0 and later): copy-ups and
    /// whiteouts that could not be emitted late (see docs/backends.md, "Skipped program
    /// runs").
    #[serde(default)]
    pub recursion: u64,
    /// Tracepoint backend on kernels that skip preempted programs (7.0+): inode updates on an
    /// overlay or upper filesystem that every copy of a ctime program skipped. An upper bound of
    /// the copy-ups and whiteouts lost that way (most such updates lose nothing), so not part
    /// of [`Drops::total`].
    #[serde(default)]
    pub ctime_skipped: u64,
    /// kprobe backend: copy-ups and whiteouts whose pair of probes did not both run (a copy-up's
    /// end with no start, or a start that found the task's previous operation never ended):
    /// lost, counted.
    #[serde(default)]
    pub unpaired: u64,
}

impl Drops {
    /// The counters that are lost events, by the names the metrics give them (`reason`).
    pub const REASONS: [&'static str; 7] = [
        "ringbuf",
        "op_table",
        "windows",
        "malformed",
        "whiteout_unnamed",
        "recursion",
        "unpaired",
    ];

    /// Each lost-event counter with its name ([`Drops::REASONS`] order).
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        let [ringbuf, op_table, windows, malformed, whiteout_unnamed, recursion, unpaired] =
            Self::REASONS;
        [
            (ringbuf, self.ringbuf),
            (op_table, self.op_table),
            (windows, self.windows),
            (malformed, self.malformed),
            (whiteout_unnamed, self.whiteout_unnamed),
            (recursion, self.recursion),
            (unpaired, self.unpaired),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|&(_, n)| n).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub events: u64,
    pub by_kind: BTreeMap<String, GroupStats>,
    pub by_layer: BTreeMap<String, GroupStats>,
    pub by_mount: BTreeMap<String, GroupStats>,
    #[serde(default)]
    pub by_container: BTreeMap<String, GroupStats>,
    #[serde(default)]
    pub by_image_layer: BTreeMap<String, GroupStats>,
    /// Copy-up phases per kind (see docs/phases.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases_by_kind: BTreeMap<String, PhaseStats>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases_by_layer: BTreeMap<String, PhaseStats>,
    /// What dominates the slowest kinds (per mount), from their phases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<String>,
    pub drops: Drops,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    fn ev(kind: Kind, latency_ns: u64, layer: u32) -> Event {
        Event {
            latency_ns,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            dev: Some("0:40".into()),
            mount_point: Some("/m".into()),
            path: "f".into(),
            size_bytes: 10,
            bytes_copied: 10,
            lower_layer: Some(layer),
            lower_layer_dir: Some(format!("/l{layer}").into()),
            ..Event::new(kind, crate::event::Backend::Kprobe)
        }
    }

    #[test]
    fn percentiles_and_groups() {
        let mut agg = Aggregate::default();
        for i in 1..=100 {
            agg.record(&ev(Kind::DataCopyUp, i * 1000, 1));
        }
        agg.record(&ev(Kind::Whiteout, 5, 2));
        let s = agg.summary(Drops::default());
        assert_eq!(s.events, 101);
        let d = s.by_kind["data_copy_up"];
        assert_eq!(d.count, 100);
        assert_eq!(d.bytes_copied, 1000);
        // hdrhistogram at 2 significant digits: exact to within 1 %.
        assert!((49_500..=50_500).contains(&d.p50_ns), "{}", d.p50_ns);
        assert!((98_000..=100_000).contains(&d.p99_ns), "{}", d.p99_ns);
        assert!((99_000..=101_000).contains(&d.max_ns), "{}", d.max_ns);
        assert_eq!(s.by_kind["whiteout"].count, 1);
        assert_eq!(s.by_layer["/m layer 1 (/l1)"].count, 100);
        assert_eq!(s.by_layer["/m layer 2 (/l2)"].count, 1);
        assert_eq!(s.by_mount["/m"].count, 101);
        assert_eq!(s.by_container[HOST].count, 101);
        assert_eq!(s.by_image_layer[NO_IMAGE_LAYER].count, 101);
    }

    #[test]
    fn container_and_image_layer_groups() {
        let mut agg = Aggregate::default();
        let id = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";
        let mut e = ev(Kind::DataCopyUp, 10, 2);
        e.container_id = Some(id.into());
        e.container_name = Some("web".into());
        e.layer_digest = Some("sha256:d2".into());
        agg.record(&e);
        e.container_name = None;
        agg.record(&e);
        e.container_id = None;
        e.layer_digest = Some("init".into());
        agg.record(&e);
        let s = agg.summary(Drops::default());
        assert_eq!(s.by_container["web (4f797c539e6c)"].count, 1);
        assert_eq!(s.by_container["4f797c539e6c"].count, 1);
        assert_eq!(s.by_container[HOST].count, 1);
        assert_eq!(s.by_image_layer["sha256:d2"].count, 2);
        assert_eq!(s.by_image_layer["init"].count, 1);
        let mut e = ev(Kind::DataCopyUp, 1, 1);
        e.container_id = Some(id.into());
        e.pod_uid = Some("0a1b2c3d-4e5f-4789-abcd-ef0123456789".into());
        assert_eq!(
            container_key(&e),
            "0a1b2c3d-4e5f-4789-abcd-ef0123456789/4f797c539e6c"
        );
        e.container_name = Some("app".into());
        e.pod_name = Some("web-0".into());
        e.pod_namespace = Some("shop".into());
        assert_eq!(container_key(&e), "shop/web-0/app (4f797c539e6c)");
    }

    #[test]
    fn huge_latency_saturates_instead_of_failing() {
        let mut agg = Aggregate::default();
        agg.record(&ev(Kind::DataCopyUp, u64::MAX, 1));
        assert_eq!(
            agg.summary(Drops::default()).by_kind["data_copy_up"].count,
            1
        );
    }

    #[test]
    fn drops_total() {
        let d = Drops {
            ringbuf: 1,
            op_table: 2,
            windows: 3,
            malformed: 4,
            syscall_ends: 5,
            whiteout_unnamed: 6,
            recursion: 7,
            ctime_skipped: 8,
            unpaired: 9,
        };
        assert_eq!(
            d.total(),
            32,
            "syscall_ends are not events; ctime_skipped is an upper bound"
        );
    }
}
