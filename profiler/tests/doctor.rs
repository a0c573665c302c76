//! `cowprof doctor` on this host: a kernel without kprobes where tracing programs are refused,
//! so the tracepoint backend is the one `record` uses.

mod common;

use std::process::Command;

use common::{kprobes_missing, lock, require_root, Baseline, BIN};

fn host_without_kprobes(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if !kprobes_missing() {
        common::skip(
            test,
            "kprobes-present",
            "this kernel has kprobes (/sys/bus/event_source/devices/kprobe); the assertions are for the no-kprobes host",
        );
        return false;
    }
    true
}

#[test]
fn doctor_text_on_kprobe_less_host() {
    if !host_without_kprobes("doctor_text_on_kprobe_less_host") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let out = Command::new(BIN)
        .arg("doctor")
        .output()
        .expect("run doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| -> String {
        let hits: Vec<&str> = stdout
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with(prefix))
            .collect();
        assert_eq!(hits.len(), 1, "lines starting with {prefix:?}:\n{stdout}");
        hits[0].to_owned()
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_eq!(line("kernel:"), format!("kernel: {}", release.trim()));
    assert!(
        line("fentry:").contains("refused by the kernel (EPERM"),
        "{stdout}"
    );
    assert!(
        line("kprobe:").contains("CONFIG_KPROBES is not set"),
        "{stdout}"
    );
    assert_eq!(line("tracepoint:"), "tracepoint: available");
    assert_eq!(line("record would use:"), "record would use: tracepoint");
    assert_eq!(stdout.lines().last(), Some("record would use: tracepoint"));
    baseline.assert_clean("doctor");
}

#[test]
fn doctor_json_on_kprobe_less_host() {
    if !host_without_kprobes("doctor_json_on_kprobe_less_host") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .output()
        .expect("run doctor --json");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json is JSON");
    assert_eq!(v["chosen"], "tracepoint", "{v:#}");
    assert!(v["btf_error"].is_null(), "{v:#}");
    let backends: Vec<(String, bool)> = v["backends"]
        .as_array()
        .expect("backends array")
        .iter()
        .map(|b| {
            (
                b["backend"].as_str().expect("name").to_owned(),
                b["usable"].as_bool().expect("usable"),
            )
        })
        .collect();
    assert_eq!(
        backends,
        vec![
            ("fentry".to_owned(), false),
            ("kprobe".to_owned(), false),
            ("tracepoint".to_owned(), true)
        ]
    );
    let reason = |name: &str| {
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["backend"] == name)
            .unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        reason("fentry").contains("refused by the kernel (EPERM"),
        "{v:#}"
    );
    assert!(
        reason("kprobe").contains("CONFIG_KPROBES is not set"),
        "{v:#}"
    );
    baseline.assert_clean("doctor --json");
}
