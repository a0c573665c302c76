//! `cowprof compare` on real `cowprof bench` runs made here: two runs of one tmpfs spec (the
//! second through `bench --baseline`) show no significant change on any gated metric; the
//! default mount vs `volatile` (no fsync on copy-up, host ext4) is detected with the right sign
//! both ways, on latency and on the copy-up's fsync phase (`fsync.p50`); a bad baseline stops
//! `bench` before it measures anything.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{lock, require_root, Baseline, BIN};

const DATA: &str = "tests/data/compare";

/// The gates of the same-config check, as a config file. The check is stricter than the gate
/// (every gated metric must be "no significant change", improvements included), so its
/// tolerances sit well above the run-to-run drift scripts/compare-fp measured on this shared
/// 2-core machine (README, "Regression gates"); counts are exact.
const SAME_CONFIG_GATES: &str = r#"ops = ["first_write"]
[thresholds]
p50 = "+100%"
p99 = "+100%"
efficiency = "-50%"
copy_ups = "+0"
bytes_copied = "+0"
"#;

fn bench(spec: &str, out: &Path, work: &Path, extra: &[&str]) -> Output {
    let o = Command::new(BIN)
        .arg("bench")
        .arg("--spec")
        .arg(format!("{DATA}/{spec}"))
        .arg("--out")
        .arg(out)
        .arg("--workdir")
        .arg(work)
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .expect("run cowprof bench");
    // 0: every upper dir agreed (1 would mean one disagreed) and, with --baseline, the gate
    // passed.
    assert_eq!(
        o.status.code(),
        Some(0),
        "bench {spec}: {:?}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn compare_json(base: &Path, new: &Path, gates: &[&str]) -> (i32, serde_json::Value) {
    let mut c = Command::new(BIN);
    c.arg("compare")
        .arg(base)
        .arg(new)
        .args(["--format", "json"]);
    for g in gates {
        if let Some(file) = g.strip_prefix("@") {
            c.args(["--config", file]);
        } else {
            c.args(["--threshold", g]);
        }
    }
    let o = c.output().unwrap();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap(), v)
}

fn rows<'a>(v: &'a serde_json::Value, op: &str, size: u64, metric: &str) -> &'a serde_json::Value {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["op"] == op && r["size_bytes"] == size && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no row {op} {size} {metric}"))
}

#[test]
fn same_config_no_change_and_volatile_detected() {
    if !require_root("compare_bench") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let dir = common::disk_tempdir();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = |n: &str| -> PathBuf { dir.path().join(n) };
    let results = |n: &str| out(n).join("results.json");

    // A bad baseline: exit 2 before anything is measured or written.
    let o = Command::new(BIN)
        .args([
            "bench",
            "--spec",
            &format!("{DATA}/same.toml"),
            "--baseline",
        ])
        .arg(dir.path().join("none.json"))
        .arg("--out")
        .arg(out("never"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("cowprof: --baseline: ") && err.contains("none.json: cannot read it"),
        "{err}"
    );
    assert!(!out("never").exists());

    // Same spec twice; the second run compares itself against the first.
    bench("same.toml", &out("a"), &work, &[]);
    let config = dir.path().join("gates.toml");
    std::fs::write(&config, SAME_CONFIG_GATES).unwrap();
    let (base, config) = (
        results("a").display().to_string(),
        config.display().to_string(),
    );
    let o = bench(
        "same.toml",
        &out("b"),
        &work,
        &["--baseline", &base, "--config", &config, "--confirm", "1"],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("cowprof compare: base ") && stdout.contains("\nPASS: "),
        "{stdout}"
    );
    // The reports and charts of the gate land next to results.json.
    assert!(out("b").join("compare/compare-junit.xml").is_file());
    assert!(out("b")
        .join("compare/cdf-first-write-tmpfs-default-options-warm.svg")
        .is_file());
    let (code, v) = compare_json(&results("a"), &results("b"), &[&format!("@{config}")]);
    assert_eq!(code, 0);
    assert!(v["notes"].as_array().unwrap().is_empty(), "{}", v["notes"]);
    let gated: Vec<&serde_json::Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["passed"].is_null())
        .collect();
    // first_write at 3 sizes: p50 p99 efficiency copy_ups bytes_copied.
    assert_eq!(gated.len(), 3 * 5);
    // Exact metrics are equal; a timing may move with the machine's load (a shared CI host can
    // make one run's plain-copy reference faster), but never past the wide gates into a failure.
    for r in &gated {
        if ["copy_ups", "bytes_copied"].contains(&r["metric"].as_str().unwrap()) {
            assert_eq!(r["verdict"], "no_significant_change", "{r}");
        } else {
            assert_ne!(r["verdict"], "regressed", "{r}");
        }
    }
    // One copy-up of the whole file per first write, none for create, on both sides.
    for (size, copies) in [(4096u32, 1.0), (65536, 1.0), (1 << 20, 1.0)] {
        let b = rows(&v, "first_write", u64::from(size), "bytes_copied");
        assert_eq!(
            (b["base"].as_f64(), b["new"].as_f64()),
            (Some(f64::from(size)), Some(f64::from(size)))
        );
        let c = rows(&v, "first_write", u64::from(size), "copy_ups");
        assert_eq!(
            (c["base"].as_f64(), c["new"].as_f64()),
            (Some(copies), Some(copies))
        );
    }
    assert_eq!(rows(&v, "create", 0, "copy_ups")["new"].as_f64(), Some(0.0));

    // Default vs volatile on the host filesystem: the fsync of copy-up goes away.
    bench("dir-default.toml", &out("d"), &work, &[]);
    bench("dir-volatile.toml", &out("v"), &work, &[]);
    let ab_gates = ["p50=+10%", "efficiency=-10%"];
    // The gates on first_write only: `create` makes no copy-up, volatile cannot speed it up,
    // and its timing on a shared host may drift past +10% either way.
    let first_write = dir.path().join("first-write-gates.toml");
    std::fs::write(
        &first_write,
        "ops = [\"first_write\"]\n[thresholds]\np50 = \"+10%\"\nefficiency = \"-10%\"\n",
    )
    .unwrap();
    let first_write = format!("@{}", first_write.display());
    let (code, v) = compare_json(&results("d"), &results("v"), &[&first_write]);
    assert_eq!(code, 0, "default → volatile passes the first_write gates");
    assert!(
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("configurations differ")),
        "{}",
        v["notes"]
    );
    let p50 = rows(&v, "first_write", 65536, "p50");
    assert_eq!(p50["verdict"], "improved", "{p50}");
    assert_eq!(p50["basis"], "normalized");
    assert!(p50["change_hi"].as_f64().unwrap() < 0.0, "{p50}");
    assert_eq!(
        rows(&v, "first_write", 65536, "efficiency")["verdict"],
        "improved"
    );
    assert_eq!(rows(&v, "first_write", 65536, "efficiency")["passed"], true);
    let (code, v) = compare_json(&results("v"), &results("d"), &ab_gates);
    assert_eq!(code, 1, "volatile → default must fail the gate");
    let p50 = rows(&v, "first_write", 65536, "p50");
    assert_eq!(p50["verdict"], "regressed", "{p50}");
    assert_eq!(p50["passed"], false);
    assert!(p50["change_lo"].as_f64().unwrap() > 0.1, "{p50}");

    // The same A/B gated on a copy-up phase: on the ext4 upper the fsync phase is shown by
    // both backends; under `volatile` it is 0 on every copy-up, by default it is not. The cells
    // carry per-phase histograms, so the verdict has an interval.
    let (code, v) = compare_json(&results("v"), &results("d"), &["fsync.p50=+10%"]);
    assert_eq!(code, 1, "volatile → default must fail an fsync.p50 gate");
    for size in [65536, 1 << 20] {
        let fsync = rows(&v, "first_write", size, "fsync.p50");
        assert_eq!(fsync["base"].as_f64(), Some(0.0), "{fsync}");
        assert!(fsync["new"].as_f64().unwrap() > 0.0, "{fsync}");
        assert_eq!(
            (&fsync["basis"], &fsync["verdict"], &fsync["passed"]),
            (&"absolute".into(), &"regressed".into(), &false.into()),
            "{fsync}"
        );
        assert!(fsync["change_lo"].as_f64().unwrap() > 0.1, "{fsync}");
    }
    let (code, v) = compare_json(&results("d"), &results("v"), &["fsync.p50=+10%"]);
    assert_eq!(code, 0, "default → volatile passes an fsync.p50 gate");
    let fsync = rows(&v, "first_write", 65536, "fsync.p50");
    assert_eq!(
        (&fsync["verdict"], &fsync["passed"]),
        (&"improved".into(), &true.into()),
        "{fsync}"
    );

    baseline.assert_clean("compare_bench");
}
