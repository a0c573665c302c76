//! The start-up check (canary): a backend that attaches but sees nothing makes `record` and
//! `doctor` fail with one line and exit code 6; a passing check leaves no trace in the output,
//! the summary or the metrics (only its own metrics).

#![expect(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    reason = "exact small counts scraped as OpenMetrics floats"
)]

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use common::{
    build_stacks, canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN,
};
use cowprof::{pipeline::probe::canary::BLIND_ENV, scenario};

const EXIT_CANARY_BLIND: i32 = 6;

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("osrelease")
        .trim()
        .to_owned()
}

/// The test hook makes the kernel-side pid filter match nothing during the check: the
/// programs are attached and run, and emit nothing.
#[test]
fn blind_backend_fails_record_and_doctor_with_one_line_exit_6() {
    if !require_root("blind_backend_fails_record_and_doctor_with_one_line_exit_6") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let out = Command::new(BIN)
        .args(["record", "--json", "--duration", "30s"])
        .env(BLIND_ENV, "1")
        .output()
        .expect("run cowprof");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CANARY_BLIND),
        "stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no start line may be printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    let kernel = release();
    let want = format!(
        "cowprof: the tracepoint backend attached on {kernel} but saw no event at all (expected a data copy-up, a directory copy-up and a whiteout) in its start-up check (canary"
    );
    assert!(
        lines[0].starts_with(&want),
        "{}\nwant prefix {want}",
        lines[0]
    );
    assert!(lines[0].ends_with("run `cowprof doctor`"), "{}", lines[0]);
    baseline.assert_clean("record with a blind canary");

    let out = Command::new(BIN)
        .arg("doctor")
        .env(BLIND_ENV, "1")
        .output()
        .expect("run cowprof doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(EXIT_CANARY_BLIND), "{stdout}");
    assert!(
        stdout.contains("  canary tracepoint: FAILED: attached, but saw no event at all"),
        "{stdout}"
    );
    baseline.assert_clean("doctor with a blind canary");
}

#[test]
fn doctor_reports_the_canary_per_backend() {
    if !require_root("doctor_reports_the_canary_per_backend") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .output()
        .expect("run cowprof doctor");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    let canaries = v["canary"].as_array().expect("canary array");
    let tp = canaries
        .iter()
        .find(|c| c["backend"] == "tracepoint")
        .expect("tracepoint entry");
    assert_eq!(tp["ok"], true, "{tp}");
    // Exactly its three operations, one event each.
    assert_eq!(tp["report"]["data_copy_up"], 1, "{tp}");
    assert_eq!(tp["report"]["dir_copy_up"], 1, "{tp}");
    assert_eq!(tp["report"]["whiteout"], 1, "{tp}");
    assert_eq!(tp["report"]["other"], 0, "{tp}");
    baseline.assert_clean("doctor");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    resp
}

/// Sum of a metric's samples whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Without `--mount` or any filter, the JSON stream holds the scenario's events and nothing
/// else: the check's copy-ups and whiteout (made just before the start line by a child of
/// cowprof) appear in no event, no summary count and no event metric.
#[test]
fn canary_events_never_reach_output_summary_or_metrics() {
    if !require_root("canary_events_never_reach_output_summary_or_metrics") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let dir = disk_tempdir();
    let (main, meta) = build_stacks(&canon(dir.path()));
    let main_mount = canon(&main.merged).display().to_string();
    let meta_mount = meta
        .as_ref()
        .map(|m| canon(&m.merged).display().to_string());
    let port = free_port();
    let mut rec = Running::spawn(Command::new(BIN).args([
        "record",
        "--json",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]));
    let start_line = rec.next_line(Duration::from_mins(2));
    let before = scrape(port);
    let mut workload = Command::new(BIN);
    workload.args(["__workload", &main_mount]);
    if let Some(m) = &meta_mount {
        workload.arg(m);
    }
    assert!(workload.status().expect("workload").success());
    // The events are read within milliseconds; give the reader a moment, then stop.
    std::thread::sleep(Duration::from_millis(500));
    let after = scrape(port);
    rec.signal(libc::SIGTERM);
    let (status, mut lines, stderr) = rec.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "record: {stderr}");
    lines.insert(0, start_line);
    let recording = parse_recording(&lines);
    drop(meta);
    drop(main);

    let ours = [Some(main_mount.clone()), meta_mount.clone()];
    let strays: Vec<_> = recording
        .events
        .iter()
        .filter(|e| {
            !ours
                .iter()
                .any(|m| m.as_deref() == e.mount_point.as_deref())
        })
        .collect();
    // Other processes on this machine could write to overlays of their own; the canary's
    // events would carry no known mount (its overlay is in a private namespace).
    assert!(
        strays.iter().all(|e| e.mount_point.is_some()),
        "events on no known mount (the canary's?): {strays:?}"
    );
    let expected = scenario::expected(cowprof::event::Backend::Tracepoint, meta_mount.is_some());
    let on_ours = recording.events.len() - strays.len();
    assert_eq!(on_ours, expected.len(), "{:#?}", recording.events);
    assert_eq!(
        recording.summary.events,
        recording.events.len() as u64,
        "summary count"
    );
    assert_eq!(
        recording.summary.drops.total(),
        0,
        "{:?}",
        recording.summary.drops
    );

    // Metrics: the check's result under its own names; the event counters start at 0.
    assert_eq!(sample(&before, "cowprof_events_total"), 0.0, "{before}");
    assert_eq!(
        sample(&before, r#"cowprof_canary_ok{backend="tracepoint"}"#),
        1.0,
        "{before}"
    );
    for op in ["data_copy_up", "dir_copy_up", "whiteout"] {
        assert_eq!(
            sample(
                &before,
                &format!(r#"cowprof_canary_events{{backend="tracepoint",op="{op}"}}"#)
            ),
            1.0,
            "{op}: {before}"
        );
    }
    assert_eq!(
        sample(&after, "cowprof_events_total"),
        recording.events.len() as f64,
        "{after}"
    );
    baseline.assert_clean("record with the canary");
}
