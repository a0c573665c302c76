//! `cowprof record --metrics-addr` scraped by a real Prometheus server (Debian's `prometheus`)
//! while the scenario's workload runs on real overlay stacks; the numbers Prometheus answers are
//! checked against cowprof's own JSON summary, the scenario's expected events and the upper dir.
//! `record` runs with `CAP_BPF` and `CAP_PERFMON` alone, the `DaemonSet`'s capabilities.
//! Also: the label budget on real mounts, bad addresses, and every query of the Grafana dashboard
//! (`deploy/grafana/cowprof.json`) run against the same Prometheus after the workload.
#![expect(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    reason = "Prometheus answers counts as floats; these small integers are exact in f64"
)]
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;
mod grafana;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    build_stacks, canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN,
    START_TIMEOUT,
};
use cowprof::{
    event::Kind,
    scenario::{self, UpperTruth},
};

/// How long Prometheus may take to show a value (it scrapes every second).
const SCRAPE_WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn http_get(port: u16, path_and_query: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_owned())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One series of a range query: its labels and (time, value) points.
type RangeSeries = (BTreeMap<String, String>, Vec<(f64, f64)>);

/// A Prometheus server of our own: temp config and data dir, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: cowprof\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("write config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (scripts/setup installs Debian's `prometheus`)");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// An instant query; the result vector as (labels, value).
    fn query_at(&self, promql: &str, time: Option<f64>) -> Vec<(BTreeMap<String, String>, f64)> {
        let mut q = format!("/api/v1/query?query={}", urlencode(promql));
        if let Some(t) = time {
            q = format!("{q}&time={t:.3}");
        }
        let body = http_get(self.port, &q).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// A range query, step 1 s: per series its labels and (time, value) points.
    fn query_range(&self, promql: &str, start: f64, end: f64) -> Vec<RangeSeries> {
        let q = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=1",
            urlencode(promql)
        );
        let body = http_get(self.port, &q).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let pts = r["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        (
                            p[0].as_f64().unwrap_or(f64::NAN),
                            p[1].as_str()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(f64::NAN),
                        )
                    })
                    .collect();
                (labels, pts)
            })
            .collect()
    }

    /// An instant query that must succeed (a typo is a `PromQL` error, not an empty answer).
    fn query_ok(&self, promql: &str, time: f64) -> Vec<(BTreeMap<String, String>, f64)> {
        let q = format!("/api/v1/query?query={}&time={time:.3}", urlencode(promql));
        let body = http_get(self.port, &q).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["status"], "success", "{promql}: {body}");
        self.query_at(promql, Some(time))
    }

    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.query_at(promql, None)
    }

    /// The single value of `promql`, once Prometheus has it equal to `want` (or the last seen).
    fn wait_for(&self, promql: &str, want: f64) -> f64 {
        let deadline = Instant::now() + SCRAPE_WAIT;
        loop {
            let got = self.query(promql).first().map_or(f64::NAN, |r| r.1);
            if got == want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn by_label(&self, promql: &str, label: &str) -> BTreeMap<String, f64> {
        self.query(promql)
            .into_iter()
            .map(|(l, v)| (l.get(label).cloned().unwrap_or_default(), v))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `histogram_quantile(q, buckets)` computes (Prometheus promql/quantile.go, classic
/// buckets): linear interpolation inside the bucket holding rank q·count.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().expect("buckets").1;
    let rank = q * total;
    let b = buckets
        .iter()
        .position(|(_, c)| *c >= rank)
        .expect("a bucket");
    if b == buckets.len() - 1 {
        return buckets[b - 1].0;
    }
    let (lower, below) = if b == 0 {
        (0.0, 0.0)
    } else {
        (buckets[b - 1].0, buckets[b - 1].1)
    };
    let (upper, cum) = buckets[b];
    lower + (upper - lower) * ((rank - below) / (cum - below))
}

#[test]
fn prometheus_scrapes_the_workload() {
    if !require_root("prometheus_scrapes_the_workload") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let dir = disk_tempdir();
    let root = canon(dir.path());
    let (main, meta) = build_stacks(&root);
    let main_mount = canon(&main.merged).display().to_string();
    let meta_mount = meta
        .as_ref()
        .map(|m| canon(&m.merged).display().to_string());
    // The workload under a comm of its own, so that only its events are counted even without
    // --mount (both stacks are recorded: the label budget is exercised on real mounts).
    let comm = "cowprofmetrics1";
    let workload_bin = root.join(comm);
    std::os::unix::fs::symlink(BIN, &workload_bin).expect("symlink");

    let port = free_port();
    let prom = Prometheus::start(port);
    // With the DaemonSet's capabilities only (deploy/daemonset.yaml): CAP_BPF and CAP_PERFMON.
    let mut rec = Running::spawn(Command::new("setpriv").args([
        "--bounding-set=-all,+bpf,+perfmon",
        BIN,
        "record",
        "--json",
        "--comm",
        comm,
        "--metrics-max-series",
        "1",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]));
    let start_line = rec.next_line(START_TIMEOUT);
    // One scrape before the workload: every counter's first sample is its zero.
    assert_eq!(
        prom.wait_for("cowprof_events_total", 0.0),
        0.0,
        "first scrape"
    );

    let mut workload = Command::new(&workload_bin);
    workload.args(["__workload", &main_mount]);
    if let Some(m) = &meta_mount {
        workload.arg(m);
    }
    let status = workload.status().expect("run the workload");
    assert!(status.success(), "workload: {status}");

    let expected = scenario::expected(cowprof::event::Backend::Tracepoint, meta.is_some());
    let n = expected.len() as f64;
    assert_eq!(
        prom.wait_for("cowprof_events_total", n),
        n,
        "events in Prometheus"
    );

    // Evaluated at the last scrape, increase() over the whole run is exact: the first sample is
    // 0 (no extrapolation before it) and there is nothing after the last one.
    let last_scrape = prom.query("timestamp(cowprof_events_total)")[0].1;
    let inc = prom.query_at("increase(cowprof_events_total[10m])", Some(last_scrape));
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert!((inc[0].1 - n).abs() < 1e-9, "increase = {}", inc[0].1);

    let copy_ups = prom.by_label("sum by (kind) (cowprof_copy_ups_total)", "kind");
    let whiteouts = prom.by_label("sum by (kind) (cowprof_whiteouts_total)", "kind");
    let bytes = prom.by_label("sum by (kind) (cowprof_copied_bytes_total)", "kind");
    let lat_count = prom.by_label(
        "sum by (kind) (cowprof_copy_up_latency_seconds_count)",
        "kind",
    );
    let lat_sum = prom.by_label(
        "sum by (kind) (cowprof_copy_up_latency_seconds_sum)",
        "kind",
    );
    let mounts = prom.by_label(
        r#"sum by (mount) ({__name__=~"cowprof_copy_ups_total|cowprof_whiteouts_total"})"#,
        "mount",
    );
    let folded = prom.query("cowprof_folded_events_total")[0].1;
    let label_sets = prom.query("cowprof_label_sets")[0].1;
    let drops = prom.by_label("cowprof_dropped_events_total", "reason");
    let backend = prom.query("cowprof_backend_info");
    // The start-up check needs CAP_SYS_ADMIN for its mount namespace: with the DaemonSet's
    // capabilities it cannot run, which the gauge says (0) while recording goes on.
    let canary = prom.query("cowprof_canary_ok");
    let canary_events = prom.query("cowprof_canary_events");
    let skipped_runs = prom.by_label("cowprof_program_runs_skipped_total", "program");
    let rss = prom.query("process_resident_memory_bytes")[0].1;
    let buckets: Vec<(f64, f64)> = {
        let mut b: Vec<(f64, f64)> = prom
            .query(r#"sum by (le) (cowprof_copy_up_latency_seconds_bucket{kind="data_copy_up"})"#)
            .into_iter()
            .map(|(l, v)| (l["le"].parse::<f64>().expect("le"), v))
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    };
    let p50 = prom.query(
        r#"histogram_quantile(0.5, sum by (le) (cowprof_copy_up_latency_seconds_bucket{kind="data_copy_up"}))"#,
    )[0]
    .1;

    // One series per loaded program, read at each scrape. Before 7.0 the kernel runs tracepoint
    // programs with preemption disabled and nothing else here runs BPF programs: no run is
    // skipped, so there every series is 0 (docs/backends.md, "Skipped program runs").
    for prog in [
        "cowprof_sys_enter_tp",
        "cowprof_sys_exit_tp",
        "cowprof_tp_ctime_ns_xchg",
        "cowprof_tp_ctime_xchg_skip",
        "cowprof_tp_set_ctime",
    ] {
        assert!(skipped_runs.contains_key(prog), "{prog}: {skipped_runs:?}");
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let before_7 = release
        .split('.')
        .next()
        .and_then(|m| m.trim().parse::<u32>().ok())
        .is_some_and(|major| major < 7);
    assert!(
        !before_7 || skipped_runs.values().all(|&v| v == 0.0),
        "skipped runs on {release}: {skipped_runs:?}"
    );

    check_dashboard(
        &prom,
        last_scrape,
        &DashboardWant {
            copy_ups: copy_ups.values().sum(),
            bytes: bytes.values().sum(),
            whiteouts: whiteouts.clone(),
            folded,
            data_p50: p50,
            backend: backend[0].0["backend"].clone(),
            before_7,
        },
    );

    eprintln!(
        "prometheus: events {n}, copy-ups {copy_ups:?}, whiteouts {whiteouts:?}, by mount {mounts:?}, folded {folded}, data_copy_up p50 {p50} s, skipped runs of {} programs all 0",
        skipped_runs.len()
    );
    rec.signal(libc::SIGTERM);
    let (status, mut lines, stderr) = rec.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "record: {stderr}");
    lines.insert(0, start_line);
    let recording = parse_recording(&lines);
    drop(prom);

    // cowprof's own view first: exactly the scenario's events, the main ones as the upper dir says.
    let truth = UpperTruth::read(&main.upper).expect("read upper");
    let main_events: Vec<_> = recording
        .events
        .iter()
        .filter(|e| e.mount_point.as_deref() == Some(main_mount.as_str()))
        .cloned()
        .collect();
    let problems = scenario::verify(
        &main_events,
        &scenario::expected(cowprof::event::Backend::Tracepoint, false),
        &truth,
        &main.lowers,
    );
    assert!(problems.is_empty(), "verify: {problems:#?}");
    assert_eq!(recording.events.len(), expected.len());
    let s = &recording.summary;

    // Per kind: Prometheus = cowprof's summary = the scenario.
    let mut want: BTreeMap<Kind, (f64, f64)> = BTreeMap::new();
    for (k, _, _, b) in &expected {
        let w = want.entry(*k).or_default();
        w.0 += 1.0;
        w.1 += *b as f64;
    }
    for (kind, (count, b)) in &want {
        let k = kind.as_str();
        let own = &s.by_kind[k];
        assert_eq!(own.count as f64, *count, "summary count {k}");
        let got = if kind.is_copy_up() {
            assert_eq!(bytes.get(k), Some(b), "bytes {k}: {bytes:?}");
            assert_eq!(own.bytes_copied as f64, *b, "summary bytes {k}");
            assert_eq!(lat_count.get(k), Some(count), "histogram count {k}");
            let sum_ns: u64 = recording
                .events
                .iter()
                .filter(|e| e.kind == *kind)
                .map(|e| e.latency_ns)
                .sum();
            let sum = lat_sum[k];
            assert!(
                (sum - sum_ns as f64 / 1e9).abs() < 1e-9,
                "latency sum {k}: {sum} vs {sum_ns} ns"
            );
            copy_ups.get(k)
        } else {
            whiteouts.get(k)
        };
        assert_eq!(
            got,
            Some(count),
            "{k}: copy-ups {copy_ups:?} whiteouts {whiteouts:?}"
        );
    }
    assert_eq!(
        copy_ups.len() + whiteouts.len(),
        want.len(),
        "no other kinds"
    );

    // The histogram's buckets hold exactly the events' latencies; histogram_quantile is the
    // interpolation inside the bucket where cowprof's own p50 lies.
    let data_ns: Vec<u64> = recording
        .events
        .iter()
        .filter(|e| e.kind == Kind::DataCopyUp)
        .map(|e| e.latency_ns)
        .collect();
    assert_eq!(buckets.len(), 25, "{buckets:?}");
    for (le, count) in &buckets {
        let below = data_ns.iter().filter(|ns| **ns as f64 / 1e9 <= *le).count();
        assert_eq!(*count, below as f64, "bucket le={le}");
    }
    let want_p50 = histogram_quantile(0.5, &buckets);
    assert!(
        (p50 - want_p50).abs() <= 1e-12 * want_p50.max(1.0),
        "p50 {p50} vs {want_p50}"
    );
    let b = buckets
        .iter()
        .position(|(le, _)| *le >= p50)
        .expect("bucket");
    let lower = if b == 0 { 0.0 } else { buckets[b - 1].0 };
    let own_p50 = s.by_kind["data_copy_up"].p50_ns as f64 / 1e9;
    // hdrhistogram keeps 3 significant digits.
    assert!(
        own_p50 >= lower * 0.999 && own_p50 <= buckets[b].0 * 1.001,
        "cowprof p50 {own_p50} outside Prometheus's bucket ({lower}, {}]",
        buckets[b].0
    );

    // The label budget of 1: the main stack (first event) has its own label set; the metacopy
    // stack is folded into "other".
    let main_n = main_events.len() as f64;
    assert_eq!(mounts.get(main_mount.as_str()), Some(&main_n), "{mounts:?}");
    if meta.is_some() {
        let other_n = n - main_n;
        assert_eq!(mounts.get("other"), Some(&other_n), "{mounts:?}");
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        assert_eq!(folded, other_n);
    } else {
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        assert_eq!(folded, 0.0);
    }
    assert_eq!(label_sets, 1.0);

    // Drops: every reason present, all zero as in the summary; the backend; our own RSS.
    assert_eq!(s.drops.total(), 0);
    assert_eq!(
        drops.len(),
        cowprof::pipeline::metrics::DROP_REASONS.len(),
        "{drops:?}"
    );
    assert!(drops.values().all(|v| *v == 0.0), "{drops:?}");
    assert_eq!(backend.len(), 1, "{backend:?}");
    assert_eq!(backend[0].0["backend"], recording.start.backend.as_str());
    assert_eq!(backend[0].1, 1.0);
    assert_eq!(canary.len(), 1, "{canary:?}");
    assert_eq!(canary[0].0["backend"], recording.start.backend.as_str());
    assert_eq!(
        canary[0].1, 0.0,
        "the check cannot run without CAP_SYS_ADMIN"
    );
    assert!(canary_events.is_empty(), "{canary_events:?}");
    assert!((1.0..4096.0).contains(&(rss / 1_048_576.0)), "rss {rss}");

    drop(meta);
    drop(main);
    drop(dir);
    baseline.assert_clean("prometheus_scrapes_the_workload");
}

fn run_bad(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("record")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cowprof");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_metrics_addresses() {
    let _lock = lock();
    let baseline = is_root_baseline();
    for addr in [
        "nonsense",
        "127.0.0.1:99999",
        "127.0.0.1:",
        "no.such.host.invalid:9464",
    ] {
        let (code, err) = run_bad(&["--metrics-addr", addr]);
        assert_eq!(code, Some(2), "{addr}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("--metrics-addr") && err.contains("HOST:PORT"),
            "{err}"
        );
    }
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, err) = run_bad(&["--metrics-addr", &addr]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("cannot listen") && err.contains("pick a free port"),
        "{err}"
    );
    let (code, err) = run_bad(&["--metrics-addr", "127.0.0.1:0", "--metrics-max-series", "0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--metrics-max-series"), "{err}");
    if let Some(b) = baseline {
        b.assert_clean("bad_metrics_addresses");
    }
}

/// Nothing must be attached when the address is refused (checked where we can see BPF objects).
fn is_root_baseline() -> Option<Baseline> {
    common::is_root().then(Baseline::take)
}

/// What the dashboard's panels must show after the workload (from the checks above).
struct DashboardWant {
    copy_ups: f64,
    bytes: f64,
    whiteouts: BTreeMap<String, f64>,
    folded: f64,
    data_p50: f64,
    backend: String,
    /// The kernel's major version is below 7: no program run is skipped.
    before_7: bool,
}

/// Every target of every panel runs (as Grafana would with every variable on "All"): it must be
/// valid `PromQL` and return series; with each `rate(X[w])` replaced by the counter `X` itself
/// (every series starts at the workload's first event) the numbers are exact. With `COWPROF_GRAFANA_PNG=FILE` the panels are also drawn to FILE.
fn check_dashboard(prom: &Prometheus, at: f64, want: &DashboardWant) {
    // A series is born with its first event, so rate() needs two more scrapes after the workload.
    let deadline = Instant::now() + SCRAPE_WAIT;
    let at = loop {
        let now = prom.query("timestamp(cowprof_events_total)")[0].1;
        if now >= at + 2.5 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let d = grafana::load();
    let targets = grafana::targets(&d);
    assert_eq!(targets.len(), 15, "targets of the dashboard");
    let sum = |r: &[(BTreeMap<String, String>, f64)]| r.iter().map(|x| x.1).sum::<f64>();
    for t in &targets {
        let live = prom.query_ok(&grafana::concrete(&t.expr, "10m"), at);
        assert!(
            !live.is_empty(),
            "{} {}: no series for {}",
            t.panel,
            t.ref_id,
            t.expr
        );
        // The same grouping, selectors and quantiles over the counters themselves: exact.
        let exact = without_rate(&grafana::concrete(&t.expr, "10m"));
        let r = prom.query_ok(&exact, at);
        let what = format!("{} {}: {exact} = {r:?}", t.panel, t.ref_id);
        let e = t.expr.as_str();
        if e.starts_with("sum by (container) (rate(cowprof_copy_ups_total")
            || e.starts_with("sum by (image) (rate(cowprof_copy_ups_total")
            || e.starts_with("sum by (layer_digest) (rate(cowprof_copy_ups_total")
        {
            assert_eq!(sum(&r), want.copy_ups, "{what}");
        } else if e.contains("cowprof_copied_bytes_total") {
            assert_eq!(sum(&r), want.bytes, "{what}");
        } else if e.contains("cowprof_whiteouts_total") {
            let by: BTreeMap<String, f64> = r
                .iter()
                .map(|(l, v)| (l.get("kind").cloned().unwrap_or_default(), *v))
                .collect();
            assert_eq!(by, want.whiteouts, "{what}");
        } else if e.contains("cowprof_dropped_events_total") {
            assert_eq!(
                r.len(),
                cowprof::pipeline::metrics::DROP_REASONS.len(),
                "{what}"
            );
            assert!(r.iter().all(|x| x.1 == 0.0), "{what}");
        } else if e.contains("cowprof_program_runs_skipped_total") {
            // A series per loaded program; none skipped before 7.0 (as checked above).
            assert!(r.len() >= 5, "{what}");
            assert!(!want.before_7 || r.iter().all(|x| x.1 == 0.0), "{what}");
        } else if e.starts_with("cowprof_backend_info") {
            assert_eq!(r.len(), 1, "{what}");
            assert_eq!(r[0].0["backend"], want.backend, "{what}");
            assert_eq!(r[0].1, 1.0, "{what}");
        } else if e.starts_with("histogram_quantile(0.5, sum by (le, kind)") {
            let data = r
                .iter()
                .find(|x| x.0.get("kind").map(String::as_str) == Some("data_copy_up"))
                .unwrap_or_else(|| panic!("{what}"));
            assert!(
                (data.1 - want.data_p50).abs() <= 1e-12 * want.data_p50.max(1.0),
                "{what}"
            );
        } else if e.starts_with("histogram_quantile(0.99") {
            assert!(r.iter().all(|x| x.1.is_finite() && x.1 > 0.0), "{what}");
        } else if e.contains("cowprof_folded_events_total") {
            assert_eq!(sum(&r), want.folded, "{what}");
        } else if e.starts_with("cowprof_label_sets") {
            assert_eq!(sum(&r), 1.0, "{what}");
        } else if e.contains("process_cpu_seconds_total") {
            // CPU seconds of the whole run: positive and below its wall time.
            assert_eq!(r.len(), 1, "{what}");
            assert!(r[0].1 > 0.0 && r[0].1 < 600.0, "{what}");
        } else if e.contains("process_resident_memory_bytes") {
            assert_eq!(r.len(), 1, "{what}");
            assert!((1.0..4096.0).contains(&(r[0].1 / 1_048_576.0)), "{what}");
        } else {
            panic!("no expectation for {} {}: {e}", t.panel, t.ref_id);
        }
    }
    // The PNG draws each panel's query over the counters themselves (totals since the start):
    // the workload is one burst and its series are born with their first event, so a rate()
    // over this short run would draw flat zeros.
    if let Some(png) = std::env::var_os("COWPROF_GRAFANA_PNG") {
        let start = at - 12.0;
        let mut panels: Vec<(String, String, Vec<grafana::Series>)> = Vec::new();
        for t in &targets {
            let series = prom
                .query_range(&without_rate(&grafana::concrete(&t.expr, "10m")), start, at)
                .into_iter()
                .map(|(l, pts)| {
                    let mut legend = t.legend.clone();
                    for (k, v) in &l {
                        legend = legend.replace(&format!("{{{{{k}}}}}"), v);
                    }
                    // Labels absent from a series (empty in cowprof) leave their placeholder.
                    while let Some(a) = legend.find("{{") {
                        let b = legend[a..].find("}}").map_or(legend.len(), |b| a + b + 2);
                        legend.replace_range(a..b, "-");
                    }
                    (legend, pts)
                })
                .collect();
            match panels.iter_mut().find(|p| p.0 == t.panel) {
                Some(p) => p.2.extend(series),
                None => panels.push((t.panel.clone(), t.unit.clone(), series)),
            }
        }
        grafana::render_png(std::path::Path::new(&png), &panels, start);
        eprintln!("dashboard panels drawn to {}", png.to_string_lossy());
    }
}

/// `rate(X[10m])` → `X`, for every rate in `expr`.
fn without_rate(expr: &str) -> String {
    let mut e = expr.to_owned();
    while let Some(a) = e.find("rate(") {
        let b = a + e[a..].find("[10m])").expect("a rate over [10m]");
        e = format!("{}{}{}", &e[..a], &e[a + 5..b], &e[b + 6..]);
    }
    e
}

/// The dashboard follows Grafana's JSON model conventions (no server needed).
#[test]
fn grafana_dashboard_is_well_formed() {
    let d = grafana::load();
    let bad = grafana::problems(&d);
    assert!(bad.is_empty(), "{bad:#?}");
    for t in grafana::targets(&d) {
        let e = grafana::concrete(&t.expr, "5m");
        assert_eq!(e.matches('(').count(), e.matches(')').count(), "{e}");
        assert_eq!(e.matches('{').count(), e.matches('}').count(), "{e}");
    }
}
