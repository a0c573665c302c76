//! `cowprof compare` gates on copy-up phases (`fsync.p50`, `data.p99`, `offcpu_block.p50`), on
//! hand-written cells: exact verdicts with bootstrap intervals where the cells store per-phase
//! histograms (`phase_latency`), point verdicts on the recorded quantiles where they do not, and
//! the command's exit code on a phase gate.

use std::collections::BTreeMap;

use cowprof::{
    compare::{compare, Basis, Comparison, Gates, Verdict},
    event::Backend,
    lab::results::{Cell, Environment, Hist, LatencyStats, Op, Results, RunResult},
    pipeline::phases::{PhaseStat, PhaseStats},
};

const BIN: &str = env!("CARGO_BIN_EXE_cowprof");

fn stats(values: &[u64]) -> LatencyStats {
    let mut h = Hist::default();
    for v in values {
        h.record(*v);
    }
    h.stats()
}

/// 60 copy-ups of `phase -> ns` (each copy-up takes exactly these times; `jitter` adds 0..5 %
/// so that the bootstrap has a distribution to resample).
fn cell(size: u64, phases: &[(&str, u64)], histograms: bool) -> Cell {
    let n = 60u64;
    let spread = |base: u64| -> Vec<u64> { (0..n).map(|i| base + base * (i % 6) / 100).collect() };
    let total: u64 = phases.iter().map(|(_, v)| v).sum();
    let mut stat = BTreeMap::new();
    let mut latency = BTreeMap::new();
    for (name, ns) in phases {
        let s = stats(&spread(*ns));
        stat.insert(
            (*name).to_owned(),
            PhaseStat {
                p50_ns: s.p50_ns,
                p99_ns: s.p99_ns,
                sum_ns: spread(*ns).iter().sum(),
            },
        );
        latency.insert((*name).to_owned(), s);
    }
    Cell {
        op: Op::FirstWrite,
        size_bytes: size,
        layer_depth: 1,
        latency: stats(&spread(total + 20_000)),
        kernel: Some(stats(&spread(total))),
        copy_ups: n,
        bytes_copied: n * size,
        mb_per_s: None,
        reference_p50_ns: None,
        efficiency: None,
        threads: 1,
        repetitions: n,
        wall: None,
        outcomes: BTreeMap::new(),
        whiteouts: 0,
        phases: Some(PhaseStats {
            count: n,
            latency_sum_ns: spread(total).iter().sum(),
            splice_bytes: n * size,
            clone_bytes: 0,
            phases: stat,
        }),
        phase_latency: if histograms { latency } else { BTreeMap::new() },
    }
}

fn results(kernel: &str, cells: Vec<Cell>) -> Results {
    Results {
        schema: cowprof::lab::results::RESULTS_SCHEMA,
        environment: Environment {
            kernel: kernel.to_owned(),
            cowprof_version: "0.1.0".to_owned(),
            cpus: 2,
            overlay_params: BTreeMap::new(),
            backend: Some(Backend::Kprobe),
            started_unix_s: 0,
        },
        spec_hash: "x".to_owned(),
        runs: vec![RunResult {
            fs: "ext4".to_owned(),
            fs_features: Vec::new(),
            mount_options: Vec::new(),
            cache: "warm".to_owned(),
            layers: 1,
            cells,
            plain_create: None,
        }],
        skipped: Vec::new(),
        elapsed_s: 1.0,
    }
}

/// Base: 64 KiB copy-ups spending 100 µs in fsync, 40 µs copying data, 30 µs waiting for the
/// disk. New: fsync doubled, data the same, the disk wait a third.
fn pair(histograms: bool) -> (Results, Results) {
    let base = cell(
        65_536,
        &[
            ("metadata", 5_000),
            ("data", 40_000),
            ("fsync", 100_000),
            ("offcpu_block", 30_000),
            ("other", 10_000),
        ],
        histograms,
    );
    let new = cell(
        65_536,
        &[
            ("metadata", 5_000),
            ("data", 40_000),
            ("fsync", 200_000),
            ("offcpu_block", 10_000),
            ("other", 10_000),
        ],
        histograms,
    );
    (
        results("6.1.0-debian", vec![base]),
        results("6.12.0-debian", vec![new]),
    )
}

fn gates(flags: &[&str]) -> Gates {
    let dir = tempfile::tempdir().unwrap();
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    Gates::load(None, dir.path(), &flags).unwrap()
}

fn row<'a>(c: &'a Comparison, metric: &str) -> &'a cowprof::compare::Row {
    c.rows
        .iter()
        .find(|r| r.metric.as_str() == metric)
        .unwrap_or_else(|| panic!("no row {metric}: {:#?}", c.rows))
}

#[test]
fn phase_gates_with_intervals_from_the_phase_histograms() {
    let (base, new) = pair(true);
    let g = gates(&["fsync.p50=+10%", "data.p50=+10%", "offcpu_block.p99=+10%"]);
    let c = compare(&base, &new, "base.json", "new.json", &g).unwrap();
    let fsync = row(&c, "fsync.p50");
    assert_eq!(fsync.basis, Basis::Absolute);
    assert_eq!(fsync.verdict, Verdict::Regressed);
    assert_eq!(fsync.passed, Some(false));
    assert!((fsync.change - 1.0).abs() < 0.01, "{fsync:?}");
    let (lo, hi) = (fsync.change_lo.unwrap(), fsync.change_hi.unwrap());
    assert!(lo > 0.9 && hi < 1.1 && lo <= fsync.change && fsync.change <= hi);
    let data = row(&c, "data.p50");
    assert_eq!(
        (data.basis, data.verdict, data.passed),
        (Basis::Absolute, Verdict::NoSignificantChange, Some(true))
    );
    assert!(data.change.abs() < 1e-9 && data.change_lo.is_some());
    let block = row(&c, "offcpu_block.p99");
    assert_eq!(
        (block.verdict, block.passed),
        (Verdict::Improved, Some(true))
    );
    // Ungated phase p50s are reported and tested; ungated p99s are not listed.
    let block50 = row(&c, "offcpu_block.p50");
    assert_eq!((block50.verdict, block50.passed), (Verdict::Improved, None));
    assert_eq!(
        row(&c, "metadata.p50").verdict,
        Verdict::NoSignificantChange
    );
    assert!(!c.rows.iter().any(|r| r.metric.as_str() == "fsync.p99"));
    // Phases the backends do not show are in neither file: no row, nothing "only in".
    assert!(!c.rows.iter().any(|r| r.metric.as_str() == "link.p50"));
    assert!(c.only_in_base.is_empty() && c.only_in_new.is_empty());
    assert_eq!((c.counts.gated, c.counts.failed), (3, 1));
    assert!(!c.passed());
    assert_eq!(
        c.rows
            .iter()
            .filter(|r| r.metric.phase_name().is_some())
            .count(),
        5 + 1,
        "5 phase p50s and the gated offcpu_block.p99"
    );
}

#[test]
fn cells_without_phase_histograms_are_judged_on_the_recorded_quantile() {
    let (base, new) = pair(false);
    let g = gates(&["fsync.p50=+10%", "data.p50=+10%"]);
    let c = compare(&base, &new, "base.json", "new.json", &g).unwrap();
    let fsync = row(&c, "fsync.p50");
    assert_eq!(
        (fsync.basis, fsync.verdict, fsync.passed),
        (Basis::Point, Verdict::Regressed, Some(false))
    );
    assert!(fsync.change_lo.is_none() && fsync.change_hi.is_none());
    assert!((fsync.change - 1.0).abs() < 0.01, "{fsync:?}");
    let data = row(&c, "data.p50");
    assert_eq!(
        (data.basis, data.verdict),
        (Basis::Point, Verdict::NoSignificantChange)
    );
    // Ungated and without an interval: not tested.
    assert_eq!(row(&c, "offcpu_block.p50").verdict, Verdict::NotTested);
}

#[test]
fn a_phase_one_kernel_cannot_show_is_listed_as_only_in_one_file() {
    let (base, mut new) = pair(true);
    let cell = &mut new.runs[0].cells[0];
    cell.phases.as_mut().unwrap().phases.remove("offcpu_block");
    cell.phase_latency.remove("offcpu_block");
    let c = compare(&base, &new, "b", "n", &gates(&["fsync.p50=+10%"])).unwrap();
    assert_eq!(
        c.only_in_base,
        ["ext4 · default options · warm first_write 64 KiB d1 offcpu_block.p50"]
    );
    assert!(c.only_in_new.is_empty());
}

#[test]
fn cli_exit_code_follows_a_phase_gate_and_the_json_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (base, new) = pair(true);
    let (base_path, new_path) = (dir.path().join("base.json"), dir.path().join("new.json"));
    std::fs::write(&base_path, serde_json::to_string(&base).unwrap()).unwrap();
    std::fs::write(&new_path, serde_json::to_string(&new).unwrap()).unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .arg("compare")
            .args([&base_path, &new_path])
            .args(extra)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let o = run(&["--threshold", "fsync.p50=+10%", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["passed"] == false)
        .map(|r| r["metric"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["fsync.p50"]);
    // Doubling the fsync is within a +150 % gate; the config file's dotted key works the same.
    let o = run(&["--threshold", "fsync.p50=+150%"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    std::fs::write(
        dir.path().join(".cowprof-ci.toml"),
        "[thresholds]\nfsync.p50 = \"+10%\"\n",
    )
    .unwrap();
    assert_eq!(run(&[]).status.code(), Some(1));
    let o = run(&["--threshold", "fsync.p42=+1%"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("unknown metric `fsync.p42`"), "{e}");
    // The per-phase histograms survive a round trip through the file.
    let back = cowprof::compare::load_results(&new_path).unwrap();
    assert_eq!(back.runs[0].cells[0].phase_latency.len(), 5);
}
