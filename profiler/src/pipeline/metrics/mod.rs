//! `record --metrics-addr`: the events as Prometheus/OpenMetrics metrics on `/metrics`, so that a
//! fleet of nodes is collected and queried by the Prometheus server users already run.
//!
//! Label cardinality is bounded (docs/metrics.md, "Label set and cardinality bound"): a *label set*
//! is one combination of `mount`, `container`, `pod`, `namespace`, `image` and `layer_digest`. At
//! most `max_series` label sets have series of their own; events of any further label set are
//! counted under `container="other"` (all six labels `other`). A label set with no event for
//! [`IDLE_EVICT`] gives its place to the next new one (its series are removed, as for a stopped
//! container). Paths are never labels.

mod process;
mod server;
pub mod skipped;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

pub use server::{parse_addr, MetricsServer};

use crate::{
    event::{Event, Kind},
    pipeline::aggregate::Drops,
    pipeline::report::RunInfo,
};

/// Default number of label sets with series of their own (`--metrics-max-series`).
pub const DEFAULT_MAX_SERIES: usize = 50;
/// A label set idle this long may be replaced by a new one when the budget is full.
pub const IDLE_EVICT: Duration = Duration::from_mins(5);
/// The label value of everything beyond the budget.
pub const OTHER: &str = "other";
/// Latency buckets: 1 µs × 2^k, k = 0..23 (1 µs … 8.4 s).
pub const LATENCY_BUCKETS: u16 = 24;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics-addr {addr}: {reason}; give HOST:PORT or PORT, e.g. 127.0.0.1:9464")]
    Addr { addr: String, reason: String },
    #[error("--metrics-addr {addr}: cannot listen: {source}; pick a free port")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--metrics-max-series must be at least 1")]
    Budget,
}

/// What the metrics know of one event. Built from an [`Event`] by [`EventLabels::from_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLabels {
    pub kind: Kind,
    pub mount: Option<String>,
    pub container: Option<String>,
    /// The pod's name where containerd told it, else its UID from the cgroup path.
    pub pod: Option<String>,
    /// The pod's namespace (known only with its name, from containerd).
    pub namespace: Option<String>,
    pub image: Option<String>,
    pub layer_digest: Option<String>,
}

impl EventLabels {
    pub fn from_event(ev: &Event) -> Self {
        Self {
            kind: ev.kind,
            mount: ev.mount_point.as_deref().map(str::to_owned),
            // The name where the engine told it, else the short id (as `docker ps` shows it).
            container: ev.container_name.clone().or_else(|| {
                ev.container_id
                    .as_ref()
                    .map(|id| id.chars().take(12).collect())
            }),
            pod: ev.pod_name.clone().or_else(|| ev.pod_uid.clone()),
            namespace: ev.pod_name.as_ref().and(ev.pod_namespace.clone()),
            image: ev.image.clone(),
            layer_digest: ev.layer_digest.as_deref().map(str::to_owned),
        }
    }
}

/// An event's six label values, borrowed (`""` for none), in [`Source`]'s field order: what
/// the hot path compares without allocating.
#[derive(Debug, Clone, Copy)]
struct LabelRefs<'a> {
    mount: &'a str,
    container: &'a str,
    pod: &'a str,
    namespace: &'a str,
    image: &'a str,
    layer_digest: &'a str,
}

impl<'a> LabelRefs<'a> {
    /// The same values as [`EventLabels::from_event`].
    fn of_event(ev: &'a Event) -> Self {
        let s = |v: &'a Option<String>| v.as_deref().unwrap_or_default();
        let t = |v: &'a Option<crate::event::Text>| v.as_deref().unwrap_or_default();
        let container = match (&ev.container_name, &ev.container_id) {
            (Some(name), _) => name.as_str(),
            // The short id: its first 12 characters.
            (None, Some(id)) => &id[..id.char_indices().nth(12).map_or(id.len(), |(i, _)| i)],
            (None, None) => "",
        };
        Self {
            mount: t(&ev.mount_point),
            container,
            pod: ev
                .pod_name
                .as_deref()
                .or(ev.pod_uid.as_deref())
                .unwrap_or_default(),
            namespace: ev
                .pod_name
                .as_ref()
                .and(ev.pod_namespace.as_deref())
                .unwrap_or_default(),
            image: s(&ev.image),
            layer_digest: t(&ev.layer_digest),
        }
    }

    #[cfg(test)]
    fn of_labels(l: &'a EventLabels) -> Self {
        let s = |v: &'a Option<String>| v.as_deref().unwrap_or_default();
        Self {
            mount: s(&l.mount),
            container: s(&l.container),
            pod: s(&l.pod),
            namespace: s(&l.namespace),
            image: s(&l.image),
            layer_digest: s(&l.layer_digest),
        }
    }
}

/// `a == b`, without calling `memcmp` for two empty strings: an empty `String`'s pointer is
/// dangling, and glibc's AVX-512 `memcmp` does a masked load from it that costs a fault
/// assist (about 75 ns each on the reference machine, where it made `observe` ten times slower;
/// most label values are empty).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// One label set: the unit of the cardinality budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Source {
    mount: String,
    container: String,
    pod: String,
    namespace: String,
    image: String,
    layer_digest: String,
}

impl Source {
    fn of(l: LabelRefs<'_>) -> Self {
        Self {
            mount: l.mount.to_owned(),
            container: l.container.to_owned(),
            pod: l.pod.to_owned(),
            namespace: l.namespace.to_owned(),
            image: l.image.to_owned(),
            layer_digest: l.layer_digest.to_owned(),
        }
    }

    fn is(&self, l: LabelRefs<'_>) -> bool {
        same(&self.mount, l.mount)
            && same(&self.container, l.container)
            && same(&self.pod, l.pod)
            && same(&self.namespace, l.namespace)
            && same(&self.image, l.image)
            && same(&self.layer_digest, l.layer_digest)
    }

    fn other() -> Self {
        Self {
            mount: OTHER.into(),
            container: OTHER.into(),
            pod: OTHER.into(),
            namespace: OTHER.into(),
            image: OTHER.into(),
            layer_digest: OTHER.into(),
        }
    }

    fn series(&self, kind: Kind) -> SeriesLabels {
        SeriesLabels {
            kind: kind.as_str().to_owned(),
            container: self.container.clone(),
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            layer_digest: self.layer_digest.clone(),
            mount: self.mount.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SeriesLabels {
    kind: String,
    container: String,
    pod: String,
    namespace: String,
    image: String,
    layer_digest: String,
    mount: String,
}

/// The copy-up phase histogram has this one label: 7 values, so at most 7 × 27 series
/// whatever the label budget (see docs/phases.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
    kernel: String,
    version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CanaryLabels {
    backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CanaryOpLabels {
    backend: String,
    op: &'static str,
}

/// Which label sets have series of their own.
#[derive(Debug)]
struct Budget {
    max: usize,
    /// Label set → last event time (for those in `hot`, the time they entered it: theirs is
    /// in `hot` until [`Budget::sync_hot`]).
    admitted: HashMap<Source, Instant>,
    /// No idle label set was found before this.
    next_scan: Instant,
    /// The admitted label sets of the latest events with their series' handles, newest last:
    /// an event of one of them is counted without building, hashing or looking up its labels.
    hot: Vec<Hot>,
    /// The phase histogram of each phase, once observed (their series are never removed).
    phases: [Option<Histogram>; 7],
}

/// How many label sets keep their handles in [`Budget::hot`].
const HOT_SETS: usize = 8;

/// An admitted label set, the time of its latest event and its series' handles per kind
/// ([`Kind::ALL`] order), made at the first event of each kind.
#[derive(Debug)]
struct Hot {
    src: Source,
    seen: Instant,
    series: [Option<Series>; 8],
}

/// The handles of one kind's series of one label set (they share the registry's metrics).
#[derive(Debug, Clone)]
enum Series {
    CopyUp {
        count: Counter,
        bytes: Counter,
        latency: Histogram,
    },
    Whiteout(Counter),
}

impl Series {
    fn count(&self, ev: &Event) {
        match self {
            Self::CopyUp {
                count,
                bytes,
                latency,
            } => {
                count.inc();
                bytes.inc_by(ev.bytes_copied);
                #[expect(clippy::cast_precision_loss, reason = "ns to seconds for a histogram")]
                latency.observe(ev.latency_ns as f64 / 1e9);
            }
            Self::Whiteout(count) => {
                count.inc();
            }
        }
    }
}

enum Admission {
    Own,
    /// Admitted in place of this idle label set.
    Replaces(Source),
    Folded,
}

impl Budget {
    fn admit(&mut self, src: &Source, now: Instant) -> Admission {
        if let Some(seen) = self.admitted.get_mut(src) {
            *seen = now;
            return Admission::Own;
        }
        if self.admitted.len() < self.max {
            self.admitted.insert(src.clone(), now);
            return Admission::Own;
        }
        // A full budget of busy label sets is the steady state under a flood: look for an idle
        // one at most once a second, not on every folded event (the scan is O(max)).
        if now < self.next_scan {
            return Admission::Folded;
        }
        self.sync_hot();
        let idlest = self
            .admitted
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(**seen) >= IDLE_EVICT)
            .min_by_key(|(_, seen)| **seen)
            .map(|(s, _)| s.clone());
        if let Some(old) = idlest {
            self.admitted.remove(&old);
            self.hot.retain(|h| h.src != old);
            self.admitted.insert(src.clone(), now);
            Admission::Replaces(old)
        } else {
            self.next_scan = now + Duration::from_secs(1);
            Admission::Folded
        }
    }

    /// Writes the event times kept in `hot` back to `admitted`.
    fn sync_hot(&mut self) {
        for h in &self.hot {
            if let Some(seen) = self.admitted.get_mut(&h.src) {
                *seen = (*seen).max(h.seen);
            }
        }
    }

    /// Makes `src` (just admitted as its own label set) the newest hot one.
    fn heat(&mut self, src: Source, now: Instant) -> &mut Hot {
        if let Some(i) = self.hot.iter().position(|h| h.src == src) {
            let h = self.hot.remove(i);
            self.hot.push(h);
        } else {
            if self.hot.len() >= HOT_SETS {
                let cold = self.hot.remove(0);
                if let Some(seen) = self.admitted.get_mut(&cold.src) {
                    *seen = (*seen).max(cold.seen);
                }
            }
            self.hot.push(Hot {
                src,
                seen: now,
                series: Default::default(),
            });
        }
        let hot = self.hot.last_mut().expect("just pushed");
        hot.seen = now;
        hot
    }
}

/// The `reason` label values of `cowprof_dropped_events_total`, each exported from the start
/// (at 0).
pub const DROP_REASONS: [&str; 7] = Drops::REASONS;

/// Registers metrics in order: `"name" [in Unit]: "help" => metric;` each.
macro_rules! register {
    ($reg:expr; $($name:literal $(in $unit:ident)?: $help:literal => $metric:expr;)*) => {
        $( register!(@one $reg, $name, $help, $metric $(, $unit)?); )*
    };
    (@one $reg:expr, $name:literal, $help:literal, $metric:expr) => {
        $reg.register($name, $help, $metric)
    };
    (@one $reg:expr, $name:literal, $help:literal, $metric:expr, $unit:ident) => {
        $reg.register_with_unit($name, $help, Unit::$unit, $metric)
    };
}

type HistogramFamily = Family<SeriesLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 2.0, LATENCY_BUCKETS))
}

/// The metric handles (shared with the registry the server encodes) and the label budget.
/// Cheap to clone: clones share everything.
#[derive(Debug, Clone)]
pub struct Recorder {
    copy_ups: Family<SeriesLabels, Counter>,
    whiteouts: Family<SeriesLabels, Counter>,
    copied_bytes: Family<SeriesLabels, Counter>,
    latency: HistogramFamily,
    phases: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    events: Counter,
    folded: Counter,
    dropped: Family<ReasonLabels, Counter>,
    ctime_skipped: Counter,
    backend: Family<BackendLabels, Gauge>,
    canary_ok: Family<CanaryLabels, Gauge>,
    canary_events: Family<CanaryOpLabels, Gauge>,
    label_sets: Gauge,
    skipped_runs: skipped::SkippedRuns,
    budget: Arc<Mutex<Budget>>,
}

impl Recorder {
    /// A recorder and the registry that exposes it (`max_series` ≥ 1 label sets of their own).
    pub fn new(max_series: usize) -> Result<(Self, Registry), MetricsError> {
        if max_series == 0 {
            return Err(MetricsError::Budget);
        }
        let rec = Self {
            copy_ups: Family::default(),
            whiteouts: Family::default(),
            copied_bytes: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            phases: Family::new_with_constructor(latency_histogram),
            events: Counter::default(),
            folded: Counter::default(),
            dropped: Family::default(),
            ctime_skipped: Counter::default(),
            backend: Family::default(),
            canary_ok: Family::default(),
            canary_events: Family::default(),
            label_sets: Gauge::default(),
            skipped_runs: skipped::SkippedRuns::default(),
            budget: Arc::new(Mutex::new(Budget {
                max: max_series,
                admitted: HashMap::new(),
                next_scan: Instant::now(),
                hot: Vec::new(),
                phases: Default::default(),
            })),
        };
        for reason in DROP_REASONS {
            let _ = rec.dropped.get_or_create(&ReasonLabels { reason });
        }
        let mut root = Registry::default();
        process::register(&mut root);
        let reg = root.sub_registry_with_prefix("cowprof");
        let max = Gauge::<i64>::default();
        max.set(i64::try_from(max_series).unwrap_or(i64::MAX));
        // In exposition order (the snapshot tests pin it).
        register!(reg;
            "copy_ups": "Copy-ups (data, metacopy, dir, special, deferred data) by kind and label set" => rec.copy_ups.clone();
            "whiteouts": "Whiteouts, opaque dirs and creates over whiteouts by kind and label set" => rec.whiteouts.clone();
            "copied" in Bytes: "Bytes copied up into the upper layer" => rec.copied_bytes.clone();
            "copy_up_latency" in Seconds: "Kernel latency of copy-ups (partial on the tracepoint backend)" => rec.latency.clone();
            "copy_up_phase" in Seconds: "Copy-up time by phase, all kinds and label sets (phases the backend cannot see are not observed)" => rec.phases.clone();
            "events": "Every event delivered (all kinds, all label sets)" => rec.events.clone();
            "folded_events": "Events counted under the label set `other` (the label budget was full)" => rec.folded.clone();
            "dropped_events": "Events lost: ring buffer full, op table full, syscall windows, malformed samples, whiteouts whose name could not be read" => rec.dropped.clone();
            "ctime_updates_skipped": "Tracepoint backend, 7.0 and later: inode updates on an overlay or upper filesystem that every copy of a ctime program skipped; an upper bound of the copy-ups and whiteouts lost that way, not part of dropped_events" => rec.ctime_skipped.clone();
            "backend_info": "The kernel mechanism in use (value 1)" => rec.backend.clone();
            "canary_ok": "Start-up check: 1 = the backend saw a data copy-up, a directory copy-up and a whiteout on a private overlay before recording; 0 = the check could not run (e.g. no CAP_SYS_ADMIN for a mount namespace)" => rec.canary_ok.clone();
            "canary_events": "Start-up check: events the backend saw of each operation of the check (not counted anywhere else)" => rec.canary_events.clone();
            "label_sets": "Label sets (mount, container, pod, namespace, image, layer_digest) with series of their own" => rec.label_sets.clone();
            "label_sets_max": "The label-set budget (--metrics-max-series)" => max;
        );
        reg.register_collector(Box::new(rec.skipped_runs.clone()));
        Ok((rec, root))
    }

    pub fn observe(&self, ev: &Event) {
        self.observe_in_batch(ev, Instant::now());
    }

    /// [`Self::observe`] for an event of a batch read at `now`: the label-set budget's clock
    /// ([`IDLE_EVICT`], minutes) needs no finer grain than a batch, and a clock read per event
    /// was about 3 % of the collector's CPU with `--quiet --metrics-addr`.
    pub fn observe_in_batch(&self, ev: &Event, now: Instant) {
        self.observe_refs(ev.kind, LabelRefs::of_event(ev), ev, now);
    }

    #[cfg(test)]
    fn observe_at(&self, labels: &EventLabels, ev: &Event, now: Instant) {
        self.observe_refs(labels.kind, LabelRefs::of_labels(labels), ev, now);
    }

    fn observe_refs(&self, kind: Kind, labels: LabelRefs<'_>, ev: &Event, now: Instant) {
        let mut guard = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        let budget = &mut *guard;
        self.events.inc();
        if kind.is_copy_up() {
            if let Some(p) = &ev.phases {
                for ((phase, v), slot) in crate::event::PHASE_NAMES
                    .into_iter()
                    .zip(p.values())
                    .zip(&mut budget.phases)
                {
                    if let Some(v) = v {
                        #[expect(clippy::cast_precision_loss, reason = "ns to seconds")]
                        slot.get_or_insert_with(|| {
                            self.phases.get_or_create(&PhaseLabels { phase }).clone()
                        })
                        .observe(v as f64 / 1e9);
                    }
                }
            }
        }
        let kind_idx = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        if let Some(hot) = budget.hot.iter_mut().rev().find(|h| h.src.is(labels)) {
            hot.seen = now;
            let series = hot.series[kind_idx].get_or_insert_with(|| self.series(&hot.src, kind));
            series.count(ev);
            return;
        }
        let src = Source::of(labels);
        match budget.admit(&src, now) {
            Admission::Folded => {
                self.folded.inc();
                self.series(&Source::other(), kind).count(ev);
            }
            admission => {
                if let Admission::Replaces(old) = admission {
                    for kind in Kind::ALL {
                        let l = old.series(kind);
                        self.copy_ups.remove(&l);
                        self.whiteouts.remove(&l);
                        self.copied_bytes.remove(&l);
                        self.latency.remove(&l);
                    }
                }
                let hot = budget.heat(src, now);
                let series =
                    hot.series[kind_idx].get_or_insert_with(|| self.series(&hot.src, kind));
                series.count(ev);
            }
        }
        self.label_sets
            .set(i64::try_from(budget.admitted.len()).unwrap_or(i64::MAX));
    }

    /// The handles of `src`'s series of `kind` (created in the registry if new).
    fn series(&self, src: &Source, kind: Kind) -> Series {
        let labels = src.series(kind);
        if kind.is_copy_up() {
            Series::CopyUp {
                count: self.copy_ups.get_or_create(&labels).clone(),
                bytes: self.copied_bytes.get_or_create(&labels).clone(),
                latency: self.latency.get_or_create(&labels).clone(),
            }
        } else {
            Series::Whiteout(self.whiteouts.get_or_create(&labels).clone())
        }
    }

    /// The drop counters are the kernel's and the decoder's own running totals.
    pub fn set_drops(&self, d: &Drops) {
        for (reason, v) in d.by_reason() {
            let c = self.dropped.get_or_create(&ReasonLabels { reason });
            // Monotonic by construction; never move a counter backwards.
            c.inner().fetch_max(v, std::sync::atomic::Ordering::Relaxed);
        }
        self.ctime_skipped
            .inner()
            .fetch_max(d.ctime_skipped, std::sync::atomic::Ordering::Relaxed);
    }

    /// The attached programs whose skipped runs each scrape reads
    /// (`cowprof_program_runs_skipped_total`).
    pub fn set_programs(&self, programs: Vec<skipped::Program>) {
        self.skipped_runs.set(programs);
    }

    pub fn set_backend(&self, info: &RunInfo) {
        self.backend
            .get_or_create(&BackendLabels {
                backend: info.backend.to_string(),
                kernel: info.kernel.clone(),
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
    }

    /// The start-up check's result (a failed check ends `record` before metrics are served).
    pub fn set_canary(
        &self,
        backend: &str,
        canary: &Result<crate::pipeline::probe::canary::CanaryReport, String>,
    ) {
        self.canary_ok
            .get_or_create(&CanaryLabels {
                backend: backend.to_owned(),
            })
            .set(i64::from(canary.is_ok()));
        if let Ok(report) = canary {
            for (op, n) in report.counts() {
                self.canary_events
                    .get_or_create(&CanaryOpLabels {
                        backend: backend.to_owned(),
                        op,
                    })
                    .set(i64::from(n));
            }
        }
    }
}

/// Binds `addr` and serves a new recorder's registry on `/metrics` until the server is dropped.
pub fn serve(addr: &str, max_series: usize) -> Result<(Recorder, MetricsServer), MetricsError> {
    let (rec, registry) = Recorder::new(max_series)?;
    Ok((rec, MetricsServer::start(addr, registry)?))
}

/// The `--quiet` exporter: nothing on stdout (a daemon serving `/metrics`).
pub struct Quiet;

impl crate::pipeline::report::Exporter for Quiet {
    fn header(&mut self, _: &mut dyn std::io::Write, _: &RunInfo) -> std::io::Result<()> {
        Ok(())
    }
    fn event(&mut self, _: &mut dyn std::io::Write, _: &Event) -> std::io::Result<()> {
        Ok(())
    }
    fn summary(
        &mut self,
        _: &mut dyn std::io::Write,
        _: &crate::pipeline::aggregate::Summary,
    ) -> std::io::Result<()> {
        Ok(())
    }
    fn wants_summary(&self) -> bool {
        false
    }
}

/// The registry as `OpenMetrics` text (what `/metrics` serves).
pub fn encode(registry: &Registry) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut s, registry);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind, mount: &str, latency_ns: u64, bytes: u64) -> Event {
        Event {
            latency_ns,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            mount_point: Some(mount.into()),
            path: "secret/path".into(),
            size_bytes: bytes,
            bytes_copied: bytes,
            lower_layer: Some(1),
            ..Event::new(kind, crate::event::Backend::Tracepoint)
        }
    }

    /// Not a check: what one `observe` costs (docs/performance.md). `cargo test --release -p
    /// profiler --lib observe_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn observe_cost() {
        let (rec, _registry) = Recorder::new(DEFAULT_MAX_SERIES).unwrap();
        let ev = event(Kind::DataCopyUp, "/tmp/wl/m", 12_345, 4096);
        let n = 1_000_000;
        let t = Instant::now();
        for _ in 0..n {
            rec.observe(&ev);
        }
        eprintln!(
            "observe: {:?} per event ({n} events, no phases)",
            t.elapsed() / n
        );
    }

    #[test]
    fn same_is_string_equality() {
        for (a, b) in [
            ("", ""),
            ("", "x"),
            ("x", ""),
            ("/m", "/m"),
            ("/m", "/n"),
            ("/m", "/mm"),
        ] {
            assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
        }
        let empty = String::new();
        assert!(same(empty.as_str(), ""));
    }

    #[test]
    fn container_labels_come_from_attribution() {
        let mut ev = event(Kind::DataCopyUp, "/m", 1, 1);
        ev.container_id = Some("0123456789abcdef0123".into());
        ev.image = Some("busybox:latest".into());
        ev.layer_digest = Some("sha256:aa".into());
        let l = EventLabels::from_event(&ev);
        assert_eq!(l.container.as_deref(), Some("0123456789ab"));
        assert_eq!(l.image.as_deref(), Some("busybox:latest"));
        assert_eq!(l.layer_digest.as_deref(), Some("sha256:aa"));
        ev.container_name = Some("web".into());
        assert_eq!(
            EventLabels::from_event(&ev).container.as_deref(),
            Some("web")
        );
    }

    /// Pods: the name and namespace from containerd, else the UID from the cgroup path and no
    /// namespace; host processes and plain containers have neither.
    #[test]
    fn pod_labels_come_from_attribution() {
        let mut ev = event(Kind::DataCopyUp, "/m", 1, 1);
        assert_eq!(EventLabels::from_event(&ev).pod, None);
        ev.container_id = Some("0123456789abcdef0123".into());
        ev.pod_uid = Some("0a1b2c3d-4e5f-4789-abcd-ef0123456789".into());
        ev.pod_qos = Some("besteffort".into());
        let l = EventLabels::from_event(&ev);
        assert_eq!(
            l.pod.as_deref(),
            Some("0a1b2c3d-4e5f-4789-abcd-ef0123456789")
        );
        assert_eq!(l.namespace, None);
        ev.pod_name = Some("web-0".into());
        ev.pod_namespace = Some("shop".into());
        ev.container_name = Some("app".into());
        let l = EventLabels::from_event(&ev);
        assert_eq!(
            (
                l.container.as_deref(),
                l.pod.as_deref(),
                l.namespace.as_deref()
            ),
            (Some("app"), Some("web-0"), Some("shop"))
        );
        let (rec, reg) = Recorder::new(DEFAULT_MAX_SERIES).unwrap();
        rec.observe(&ev);
        let text = encode(&reg);
        let line = samples(&text, "cowprof_copy_ups_total{")[0];
        assert!(
            line.contains(r#"container="app",pod="web-0",namespace="shop""#),
            "{line}"
        );
    }

    fn labels(kind: Kind, mount: &str, container: &str) -> EventLabels {
        EventLabels {
            kind,
            mount: Some(mount.into()),
            container: Some(container.into()),
            pod: Some(format!("pod-{container}")),
            namespace: Some("ns".into()),
            image: Some(format!("img-{container}")),
            layer_digest: Some(format!("sha256:{container}")),
        }
    }

    /// Sample lines (not comments) of one metric name prefix.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name))
            .collect()
    }

    fn value(line: &str) -> f64 {
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn phases_have_one_bounded_histogram() {
        let (rec, reg) = Recorder::new(1).unwrap();
        for mount in ["/a", "/b", "/c"] {
            let mut ev = event(Kind::DataCopyUp, mount, 10_000, 4096);
            ev.phases = Some(crate::event::CopyUpPhases {
                fsync_ns: Some(3_000),
                offcpu_block_ns: Some(5_000),
                offcpu_other_ns: Some(0),
                other_ns: 2_000,
                ..Default::default()
            });
            rec.observe(&ev);
        }
        let text = encode(&reg);
        let counts = samples(&text, "cowprof_copy_up_phase_seconds_count{");
        // Shown phases only (fsync, offcpu_block, offcpu_other, other), whatever the mounts.
        assert_eq!(counts.len(), 4, "{text}");
        for c in &counts {
            assert!((value(c) - 3.0).abs() < f64::EPSILON, "{c}");
        }
        assert!(!text.contains(r#"phase="data""#), "{text}");
        let buckets = samples(&text, "cowprof_copy_up_phase_seconds_bucket{");
        assert_eq!(buckets.len(), 4 * (usize::from(LATENCY_BUCKETS) + 1));
    }

    #[test]
    fn counts_bytes_and_latency_by_kind() {
        let (rec, reg) = Recorder::new(DEFAULT_MAX_SERIES).unwrap();
        rec.observe(&event(Kind::DataCopyUp, "/m", 3_000, 4096));
        rec.observe(&event(Kind::DataCopyUp, "/m", 500_000, 100));
        rec.observe(&event(Kind::Whiteout, "/m", 1_000, 0));
        let text = encode(&reg);
        let copy = samples(&text, "cowprof_copy_ups_total{");
        assert_eq!(copy.len(), 1, "{text}");
        assert!(copy[0].contains(r#"kind="data_copy_up""#) && copy[0].contains(r#"mount="/m""#));
        assert!((value(copy[0]) - 2.0).abs() < f64::EPSILON);
        assert!(
            (value(samples(&text, "cowprof_copied_bytes_total{")[0]) - 4196.0).abs() < f64::EPSILON
        );
        assert!((value(samples(&text, "cowprof_whiteouts_total{")[0]) - 1.0).abs() < f64::EPSILON);
        // 3 µs falls in le=4 µs, 500 µs in le=512 µs.
        let buckets = samples(&text, "cowprof_copy_up_latency_seconds_bucket{");
        assert_eq!(buckets.len(), usize::from(LATENCY_BUCKETS) + 1);
        let at = |le: &str| {
            value(
                buckets
                    .iter()
                    .find(|l| l.contains(&format!("le=\"{le}\"")))
                    .unwrap_or_else(|| panic!("no bucket {le}: {buckets:?}")),
            )
        };
        assert!((at("0.000002") - 0.0).abs() < f64::EPSILON);
        assert!((at("0.000004") - 1.0).abs() < f64::EPSILON);
        assert!((at("0.000256") - 1.0).abs() < f64::EPSILON);
        assert!((at("0.000512") - 2.0).abs() < f64::EPSILON);
        assert!((at("+Inf") - 2.0).abs() < f64::EPSILON);
        assert!(!text.contains("secret/path"), "paths are never labels");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn drops_backend_and_process() {
        let (rec, reg) = Recorder::new(DEFAULT_MAX_SERIES).unwrap();
        let before = encode(&reg);
        assert_eq!(samples(&before, "cowprof_dropped_events_total{").len(), 7);
        rec.set_drops(&Drops {
            ringbuf: 3,
            op_table: 0,
            windows: 1,
            malformed: 2,
            syscall_ends: 5,
            whiteout_unnamed: 7,
            recursion: 4,
            ctime_skipped: 9,
            unpaired: 6,
        });
        rec.set_backend(&RunInfo {
            backend: crate::event::Backend::Tracepoint,
            kernel: "6.18".into(),
            attached: vec![],
            skipped: vec![],
        });
        let text = encode(&reg);
        let drop = |r: &str| {
            value(
                samples(&text, "cowprof_dropped_events_total{")
                    .into_iter()
                    .find(|l| l.contains(&format!("reason=\"{r}\"")))
                    .unwrap(),
            )
        };
        assert!((drop("ringbuf") - 3.0).abs() < f64::EPSILON);
        assert!((drop("windows") - 1.0).abs() < f64::EPSILON);
        assert!((drop("malformed") - 2.0).abs() < f64::EPSILON);
        assert!((drop("op_table")).abs() < f64::EPSILON);
        assert!((drop("whiteout_unnamed") - 7.0).abs() < f64::EPSILON);
        assert!((drop("recursion") - 4.0).abs() < f64::EPSILON);
        assert!((drop("unpaired") - 6.0).abs() < f64::EPSILON);
        // Not a drop reason: an upper bound, in a counter of its own.
        assert_eq!(
            samples(&text, "cowprof_dropped_events_total{").len(),
            7,
            "{text}"
        );
        assert!(
            (value(samples(&text, "cowprof_ctime_updates_skipped_total")[0]) - 9.0).abs()
                < f64::EPSILON,
            "{text}"
        );
        assert!(text.contains(r#"cowprof_backend_info{backend="tracepoint",kernel="6.18""#));
        let rss = value(samples(&text, "process_resident_memory_bytes")[0]);
        assert!(rss >= 4096.0, "{text}");
        assert_eq!(samples(&text, "process_cpu_seconds_total").len(), 1);
    }

    /// A flood of distinct containers and mounts stays within the budget; nothing is lost.
    #[test]
    fn cardinality_is_bounded() {
        let max = 50;
        let (rec, reg) = Recorder::new(max).unwrap();
        let t0 = Instant::now();
        let n = 5_000u64;
        for i in 0..n {
            let kind = if i % 2 == 0 {
                Kind::DataCopyUp
            } else {
                Kind::Whiteout
            };
            let l = labels(
                kind,
                &format!("/var/lib/docker/overlay2/{i}/merged"),
                &format!("c{i}"),
            );
            rec.observe_at(&l, &event(kind, "/x", 1_000, 1), t0);
        }
        let text = encode(&reg);
        let copy = samples(&text, "cowprof_copy_ups_total{");
        let white = samples(&text, "cowprof_whiteouts_total{");
        let sets: std::collections::HashSet<String> = copy
            .iter()
            .chain(&white)
            .map(|l| {
                let start = l.find("container=").unwrap();
                l[start..].split(',').next().unwrap().to_owned()
            })
            .collect();
        assert_eq!(sets.len(), max + 1, "{max} label sets of their own + other");
        // The documented bound: per label set 5 copy-up kinds × (count + bytes + 27 histogram
        // lines) + 3 whiteout kinds, for N + 1 label sets, plus 17 fixed series (7 of them drop
        // reasons). Here exactly: 25 sets with a data copy-up (29 each), 25 with a whiteout
        // (1), `other` with both (30).
        let all_series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(all_series <= (max + 1) * (5 * 29 + 3) + 17);
        assert_eq!(all_series, 25 * 29 + 25 + 30 + 17);
        let total: f64 = copy.iter().chain(&white).map(|l| value(l)).sum();
        assert!(
            (total - 5_000.0).abs() < f64::EPSILON,
            "every event counted once"
        );
        let other: f64 = copy
            .iter()
            .chain(&white)
            .filter(|l| l.contains(r#"container="other""#))
            .map(|l| value(l))
            .sum();
        assert!((other - (5_000.0 - 50.0)).abs() < f64::EPSILON);
        assert!(
            (value(samples(&text, "cowprof_folded_events_total")[0]) - other).abs() < f64::EPSILON
        );
        assert!((value(samples(&text, "cowprof_label_sets ")[0]) - 50.0).abs() < f64::EPSILON);
    }

    /// Every kind on more label sets than the budget: exactly the documented maximum.
    #[test]
    fn the_documented_maximum_is_reached_not_passed() {
        let (rec, reg) = Recorder::new(DEFAULT_MAX_SERIES).unwrap();
        let t0 = Instant::now();
        for set in 0..2 * DEFAULT_MAX_SERIES {
            for kind in Kind::ALL {
                let l = labels(kind, &format!("/m{set}"), &format!("c{set}"));
                rec.observe_at(&l, &event(kind, "/x", 1_000, 1), t0);
            }
        }
        let text = encode(&reg);
        let all_series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(all_series, (DEFAULT_MAX_SERIES + 1) * 148 + 17);
    }

    /// An idle label set gives its place to a new one; active ones keep theirs.
    #[test]
    fn idle_label_sets_are_replaced() {
        let (rec, reg) = Recorder::new(2).unwrap();
        let t0 = Instant::now();
        let ev = event(Kind::DataCopyUp, "/x", 1_000, 1);
        rec.observe_at(&labels(Kind::DataCopyUp, "/a", "a"), &ev, t0);
        rec.observe_at(&labels(Kind::DataCopyUp, "/b", "b"), &ev, t0);
        let later = t0 + IDLE_EVICT;
        // b stays active; a is idle when c arrives.
        rec.observe_at(&labels(Kind::DataCopyUp, "/b", "b"), &ev, later);
        rec.observe_at(&labels(Kind::DataCopyUp, "/c", "c"), &ev, later);
        // d finds no idle label set: folded.
        rec.observe_at(&labels(Kind::DataCopyUp, "/d", "d"), &ev, later);
        let text = encode(&reg);
        let copy = samples(&text, "cowprof_copy_ups_total{");
        let has = |c: &str| {
            copy.iter()
                .any(|l| l.contains(&format!("container=\"{c}\"")))
        };
        assert!(
            !has("a") && has("b") && has("c") && has("other") && !has("d"),
            "{copy:?}"
        );
        assert_eq!(copy.len(), 3);
    }

    #[test]
    fn zero_budget_is_an_error() {
        assert!(matches!(Recorder::new(0), Err(MetricsError::Budget)));
    }
}
