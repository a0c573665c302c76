//! `cowprof bench` end to end: `--quick` runs on dir, tmpfs and a loop-mounted ext4 write a
//! results.json that parses back, holds the expected cells and the kernel's exact copy-up counts;
//! Ctrl-C and SIGTERM at any moment end with exit 130 and nothing left; after a SIGKILL,
//! `cowprof clean` removes what is left and the next run works.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{lock, require_root, Baseline, Running, BIN};
use cowprof::host::loopdev::loop_devices;
use cowprof::lab::{
    results::decode_histogram,
    results::{Results, RESULTS_SCHEMA},
    run::{load_spec, sha256_hex, HOST_MOUNTS_ENV},
    spec::{format_size, Op, Shape, Spec},
    stack::{start_ticks, state_path, State, STATE_DIR},
};

const RUN_TIMEOUT: Duration = Duration::from_mins(5);

fn tag(pid: u32) -> String {
    format!("cowprof-lab-{pid}")
}

fn worker_alive(pid: u32) -> bool {
    let needle = format!("__lab-worker\0{pid}\0");
    fs::read_dir("/proc").unwrap().flatten().any(|p| {
        fs::read(p.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
    })
}

/// Nothing of run `pid` anywhere: mounts (ours and the host's view), loop devices, files under
/// `workdir`, the state file, the worker process.
fn assert_no_leftovers(pid: u32, workdir: &Path) {
    let t = tag(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounted: Vec<&str> = mounts.lines().filter(|l| l.contains(&t)).collect();
        let loops: Vec<(PathBuf, PathBuf)> = loop_devices()
            .into_iter()
            .filter(|(_, b)| b.display().to_string().contains(&t))
            .collect();
        let losetup = Command::new("losetup").arg("-a").output().unwrap();
        let losetup = String::from_utf8_lossy(&losetup.stdout).into_owned();
        let files: Vec<PathBuf> = fs::read_dir(workdir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let state = state_path(pid).exists();
        let worker = worker_alive(pid);
        if mounted.is_empty()
            && loops.is_empty()
            && !losetup.contains(&t)
            && files.is_empty()
            && !state
            && !worker
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {pid} left: mounts {mounted:?}, loops {loops:?} (losetup -a: {losetup}), files {files:?}, state file {state}, worker {worker}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Bench {
    dir: tempfile::TempDir,
    spec: PathBuf,
}

impl Bench {
    fn new(spec_text: &str) -> Self {
        let dir = common::disk_tempdir();
        let spec = dir.path().join("spec.toml");
        fs::write(&spec, spec_text).unwrap();
        fs::create_dir(dir.path().join("work")).unwrap();
        Self { dir, spec }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// `host_mounts`: mount in this (the test's) mount namespace instead of a private one.
    fn command(&self, quick: bool, host_mounts: bool) -> Command {
        let mut c = Command::new(BIN);
        if host_mounts {
            c.env(HOST_MOUNTS_ENV, "1");
        } else {
            c.env_remove(HOST_MOUNTS_ENV);
        }
        c.arg("bench")
            .arg("--spec")
            .arg(&self.spec)
            .arg("--out")
            .arg(self.out())
            .arg("--workdir")
            .arg(self.work());
        if quick {
            c.arg("--quick");
        }
        c
    }

    /// Runs to the end without charts (debug-build chart rendering dominates a quick run; the
    /// ext4 run and `lab_report.rs` cover them); returns the results, stdout and stderr.
    fn run_quick(&self) -> (Results, String, String) {
        self.run_quick_with(&["--no-charts"])
    }

    fn run_quick_with(&self, extra: &[&str]) -> (Results, String, String) {
        let running = Running::spawn(self.command(true, false).args(extra));
        let pid = u32::try_from(running.pid()).unwrap();
        let (status, stdout, stderr) = running.wait(RUN_TIMEOUT);
        let stdout = stdout.join("\n");
        assert_eq!(
            status.code(),
            Some(0),
            "bench failed: {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stdout.contains("disagreed") && stdout.contains("(0 disagreed)"),
            "upper-dir check failed:\n{stdout}\n{stderr}"
        );
        assert!(
            !stderr.contains("kernel copy-up count differs"),
            "kernel counts:\n{stderr}"
        );
        let text = fs::read_to_string(self.out().join("results.json")).expect("results.json");
        let results: Results = serde_json::from_str(&text).expect("results.json parses");
        assert_no_leftovers(pid, &self.work());
        (results, stdout, stderr)
    }
}

/// A cell: (op, file size, file layer, threads).
type Cell = (&'static str, u64, u32, u32);

const K4: u64 = 4 << 10;
const K64: u64 = 64 << 10;

/// The cells of the built-in op list under `--quick` with `file_layers = [4]`, written out by
/// hand: sizes 4K and 64K for per-file ops, one cell per file layer for directory ops, one for
/// `create`, and the first quick size at 1 and 4 threads for the concurrent ops.
const ALL_OPS_LAYER_4: &[Cell] = &[
    ("first_write", K4, 4, 1),
    ("first_write", K64, 4, 1),
    ("open_trunc", K4, 4, 1),
    ("open_trunc", K64, 4, 1),
    ("truncate", K4, 4, 1),
    ("truncate", K64, 4, 1),
    ("chmod", K4, 4, 1),
    ("chmod", K64, 4, 1),
    ("rewrite", K4, 4, 1),
    ("rewrite", K64, 4, 1),
    ("read_lower", K4, 4, 1),
    ("read_lower", K64, 4, 1),
    ("read_upper", K4, 4, 1),
    ("read_upper", K64, 4, 1),
    ("create", 0, 0, 1),
    ("unlink", K4, 4, 1),
    ("unlink", K64, 4, 1),
    ("rmdir_recreate", 0, 4, 1),
    ("chmod_dir", 0, 4, 1),
    ("rename_file", K4, 4, 1),
    ("rename_file", K64, 4, 1),
    ("rename_dir", 0, 4, 1),
    ("link", K4, 4, 1),
    ("link", K64, 4, 1),
    ("parallel_write", K4, 4, 1),
    ("parallel_write", K4, 4, 4),
    ("race_write", K4, 4, 1),
    ("race_write", K4, 4, 4),
];

/// The checks every `--quick` run must pass, against the spec it ran; `want_cells` are the
/// cells of every run, in order, written by hand (not by the lab's own cell generator).
fn check_results(r: &Results, spec_path: &Path, expect_fs: &[&str], want_cells: &[Cell]) {
    let (spec, text): (Spec, String) = load_spec(Some(spec_path), true).unwrap();
    assert_eq!(r.schema, RESULTS_SCHEMA);
    assert_eq!(r.spec_hash, sha256_hex(&text));
    let env = &r.environment;
    assert_eq!(
        env.kernel,
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    assert_eq!(
        u64::from(env.cpus),
        std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
    );
    assert!(env.started_unix_s > 1_600_000_000);
    if Path::new("/sys/module/overlay/parameters/index").exists() {
        assert!(env.overlay_params.contains_key("index"), "{env:?}");
    }
    let kernel = env.backend.is_some();
    if !kernel {
        common::skip(
            "lab_bench",
            "no-backend",
            "no backend attached in the bench: its kernel-side checks (copy-ups, whiteouts, kernel times) were not made",
        );
    }
    let reps = u64::from(spec.repetitions);
    let mut seen_fs = Vec::new();
    for run in &r.runs {
        if !seen_fs.contains(&run.fs) {
            seen_fs.push(run.fs.clone());
        }
        assert_eq!(run.layers, spec.layers);
        assert!(
            spec.cache.iter().any(|c| c.as_str() == run.cache),
            "{}",
            run.cache
        );
        let metacopy = run.mount_options.iter().any(|o| o == "metacopy=on");
        // Exactly the spec's cells, in spec order.
        let want: Vec<(String, u64, u32, u32)> = want_cells
            .iter()
            .map(|&(op, s, d, t)| (op.to_owned(), s, d, t))
            .collect();
        let got: Vec<(String, u64, u32, u32)> = run
            .cells
            .iter()
            .map(|c| (c.op.to_string(), c.size_bytes, c.layer_depth, c.threads))
            .collect();
        assert_eq!(got, want, "cells of {} {:?}", run.fs, run.mount_options);
        // metacopy=on turns redirect_dir on; otherwise the module default.
        let redirect = metacopy
            || run.mount_options.iter().any(|o| o == "redirect_dir=on")
            || fs::read_to_string("/sys/module/overlay/parameters/redirect_dir")
                .is_ok_and(|v| v.trim() == "Y");
        for c in &run.cells {
            let what = format!(
                "{} {:?} {} {} l{} x{}",
                run.fs,
                run.mount_options,
                c.op,
                format_size(c.size_bytes),
                c.layer_depth,
                c.threads
            );
            let op: Op = c.op;
            let threads = u64::from(c.threads);
            let concurrent = op.shape() == Shape::Concurrent;
            assert_eq!(c.repetitions, reps, "{what}");
            let per_rep = if concurrent { threads } else { 1 };
            assert_eq!(c.latency.count, reps * per_rep, "{what}");
            assert!(
                c.latency.p50_ns > 0 && c.latency.p50_ns <= c.latency.p99_ns,
                "{what}"
            );
            assert!(
                c.latency.p25_ns <= c.latency.p50_ns && c.latency.p50_ns <= c.latency.p75_ns,
                "{what}: quartiles"
            );
            assert!(c.latency.p99_ns <= c.latency.max_ns, "{what}");
            let h = decode_histogram(&c.latency.histogram).expect("histogram decodes");
            assert_eq!(h.len(), reps * per_rep, "{what}");
            assert_eq!(h.value_at_quantile(0.5), c.latency.p50_ns, "{what}");
            assert_eq!(c.reference_p50_ns.is_some(), op.per_file(), "{what}");
            assert_eq!(
                c.wall.as_ref().map(|w| w.count),
                concurrent.then_some(reps),
                "{what}"
            );
            if op == Op::FirstWrite {
                assert!(c.efficiency.is_some_and(|e| e > 0.0), "{what}");
            }
            if op == Op::RenameDir {
                let o = if redirect { "redirect" } else { "exdev" };
                assert_eq!(c.outcomes, [(o.to_owned(), reps)].into(), "{what}");
            } else {
                assert!(c.outcomes.is_empty(), "{what}");
            }
            if !kernel {
                continue;
            }
            match op {
                Op::FirstWrite | Op::Truncate => {
                    assert_eq!(c.copy_ups, reps, "{what}: one copy-up per repetition");
                    assert_eq!(c.bytes_copied, c.size_bytes * reps, "{what}");
                    assert!(c.mb_per_s.is_some_and(|v| v > 0.0), "{what}");
                    let k = c.kernel.as_ref().expect("kernel stats");
                    assert_eq!(k.count, reps, "{what}");
                    assert!(decode_histogram(&k.histogram).unwrap().len() == reps);
                    // The cell's copy-up phases: one per copy-up, adding up to the kernel time.
                    let ph = c.phases.as_ref().expect("copy-up phases");
                    assert_eq!(ph.count, reps, "{what}");
                    let sum: u64 = ph.phases.values().map(|p| p.sum_ns).sum();
                    assert_eq!(sum, ph.latency_sum_ns, "{what}: {ph:?}");
                }
                Op::OpenTrunc => assert_eq!(c.copy_ups, reps, "{what}"),
                Op::Chmod => {
                    assert_eq!(c.copy_ups, reps, "{what}");
                    if metacopy {
                        assert_eq!(c.bytes_copied, 0, "{what}: metacopy copies no data");
                        assert!(c.efficiency.is_none(), "{what}");
                    } else {
                        assert_eq!(c.bytes_copied, c.size_bytes * reps, "{what}");
                    }
                }
                Op::Rewrite | Op::ReadLower | Op::ReadUpper | Op::Create => {
                    assert_eq!(c.copy_ups, 0, "{what}: a control");
                    assert_eq!(c.bytes_copied, 0, "{what}");
                    assert!(c.kernel.is_none(), "{what}: no kernel events");
                }
                Op::Unlink => {
                    assert_eq!(c.copy_ups, 0, "{what}");
                    assert_eq!(c.whiteouts, reps, "{what}");
                    let k = c.kernel.as_ref().expect("the whiteouts");
                    assert_eq!(k.count, reps, "{what}: one whiteout per repetition");
                }
                Op::RmdirRecreate => {
                    assert_eq!(c.copy_ups, 0, "{what}");
                    assert_eq!(c.whiteouts, reps, "{what}");
                    let k = c.kernel.as_ref().expect("whiteout + opaque dir");
                    assert_eq!(k.count, 2 * reps, "{what}: a whiteout, then an opaque dir");
                }
                Op::RenameFile | Op::Link => {
                    assert_eq!(c.copy_ups, reps, "{what}: one copy-up per repetition");
                    if !metacopy {
                        assert_eq!(c.bytes_copied, c.size_bytes * reps, "{what}");
                    }
                }
                Op::ChmodDir => {
                    assert_eq!(
                        c.copy_ups, reps,
                        "{what}: a directory copy-up per repetition"
                    );
                    assert_eq!(c.bytes_copied, 0, "{what}");
                    let k = c.kernel.as_ref().expect("the directory copy-ups");
                    assert_eq!(k.count, reps, "{what}");
                }
                Op::RenameDir => {
                    let moved = if redirect { reps } else { 0 };
                    assert_eq!(c.copy_ups, moved, "{what}: a directory copy-up per move");
                    assert_eq!(c.bytes_copied, 0, "{what}");
                }
                Op::ParallelWrite | Op::RaceWrite => {
                    let files = if op == Op::RaceWrite { 1 } else { threads };
                    assert_eq!(c.copy_ups, reps * files, "{what}: one copy-up per file");
                    assert_eq!(c.bytes_copied, c.size_bytes * reps * files, "{what}");
                }
            }
        }
    }
    assert_eq!(seen_fs, expect_fs);
}

#[test]
fn quick_on_dir_and_tmpfs() {
    if !require_root("quick_on_dir_and_tmpfs") {
        return;
    }
    let _l = lock();
    let baseline = Baseline::take();
    let metacopy = Path::new("/sys/module/overlay/parameters/metacopy").exists();
    // The second set is one the kernel refuses: skipped with a reason, not a crash.
    let b = Bench::new(
        "filesystems = [\"dir\", \"tmpfs\"]\nfile_layers = [4]\nmount_options = [[], [\"metacopy=on\"], [\"metacopy=on\", \"redirect_dir=off\"]]\n",
    );
    let (r, stdout, _) = b.run_quick();
    check_results(&r, &b.spec, &["dir", "tmpfs"], ALL_OPS_LAYER_4);
    let sets: Vec<(String, Vec<String>)> = r
        .runs
        .iter()
        .map(|x| (x.fs.clone(), x.mount_options.clone()))
        .collect();
    let mut want = Vec::new();
    for fs in ["dir", "tmpfs"] {
        want.push((fs.to_owned(), vec![]));
        if metacopy {
            want.push((fs.to_owned(), vec!["metacopy=on".to_owned()]));
        }
    }
    assert_eq!(sets, want);
    let skipped: Vec<&str> = r.skipped.iter().map(|s| s.what.as_str()).collect();
    if metacopy {
        assert_eq!(
            skipped,
            [
                "fs=dir options=metacopy=on,redirect_dir=off",
                "fs=tmpfs options=metacopy=on,redirect_dir=off"
            ]
        );
        assert!(r.skipped[0].reason.contains("refused"), "{:?}", r.skipped);
    }
    let tmpfs = r.runs.iter().find(|x| x.fs == "tmpfs").unwrap();
    assert!(tmpfs.fs_features.is_empty(), "{:?}", tmpfs.fs_features);
    let dir = r.runs.iter().find(|x| x.fs == "dir").unwrap();
    assert!(dir.fs_features.iter().any(|f| f.starts_with("fstype=")));
    // The terminal summary: the copy-up curve has one line per run (both sizes in it), the five
    // slowest cells; the full table stays behind --table full.
    let curve = stdout
        .split("copy-up curve: first_write p50 by file size (layer depth 4)")
        .nth(1)
        .unwrap_or_else(|| panic!("no curve:\n{stdout}"))
        .split("\n\n")
        .next()
        .unwrap();
    let rows: Vec<&str> = curve.lines().skip(2).collect();
    assert_eq!(rows.len(), r.runs.len(), "{curve}");
    assert!(
        curve.lines().nth(1).unwrap().contains("4K") && curve.contains("64K"),
        "{curve}"
    );
    assert!(stdout.contains("slowest cells (p99), 5 of"), "{stdout}");
    assert!(stdout.contains("\ndisagreed: none\n"), "{stdout}");
    assert!(stdout.contains("every cell: --table full"), "{stdout}");
    drop(b);
    baseline.assert_clean("quick_on_dir_and_tmpfs");
}

#[test]
fn quick_on_loop_ext4() {
    if !require_root("quick_on_loop_ext4") {
        return;
    }
    let _l = lock();
    let baseline = Baseline::take();
    let b = Bench::new(
        "filesystems = [\"ext4\"]\nmount_options = [[]]\nlayers = 3\nfile_layers = [3]\nops = [\"first_write\", \"chmod\", \"read_lower\", \"unlink\", \"rename_file\", \"race_write\"]\n",
    );
    // With charts and the report: the end-to-end check that a real run renders them.
    let (r, _, _) = b.run_quick_with(&[]);
    check_results(
        &r,
        &b.spec,
        &["ext4"],
        &[
            ("first_write", K4, 3, 1),
            ("first_write", K64, 3, 1),
            ("chmod", K4, 3, 1),
            ("chmod", K64, 3, 1),
            ("read_lower", K4, 3, 1),
            ("read_lower", K64, 3, 1),
            ("unlink", K4, 3, 1),
            ("unlink", K64, 3, 1),
            ("rename_file", K4, 3, 1),
            ("rename_file", K64, 3, 1),
            ("race_write", K4, 3, 1),
            ("race_write", K4, 3, 4),
        ],
    );
    let charts = fs::read_dir(b.out().join("charts")).unwrap().count();
    assert!(
        charts > 0 && charts.is_multiple_of(2),
        "{charts} chart files (SVG + PNG each)"
    );
    assert!(b.out().join("report.html").is_file());
    assert_eq!(r.runs.len(), 1);
    assert!(!r.runs[0].fs_features.contains(&"reflink".to_owned()));
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    drop(b);
    baseline.assert_clean("quick_on_loop_ext4");
}

/// `cache = ["warm", "cold"]`: cold runs drop the page cache before every measured op (and
/// reference copy); tmpfs has no cold state and is skipped with that reason.
#[test]
fn quick_cold_cache() {
    if !require_root("quick_cold_cache") {
        return;
    }
    let _l = lock();
    let baseline = Baseline::take();
    let b = Bench::new(
        "filesystems = [\"dir\", \"tmpfs\"]\nmount_options = [[]]\nfile_layers = [4]\nops = [\"first_write\", \"read_lower\"]\ncache = [\"warm\", \"cold\"]\n",
    );
    let (r, _, _) = b.run_quick();
    check_results(
        &r,
        &b.spec,
        &["dir", "tmpfs"],
        &[
            ("first_write", K4, 4, 1),
            ("first_write", K64, 4, 1),
            ("read_lower", K4, 4, 1),
            ("read_lower", K64, 4, 1),
        ],
    );
    let runs: Vec<(&str, &str)> = r
        .runs
        .iter()
        .map(|x| (x.fs.as_str(), x.cache.as_str()))
        .collect();
    assert_eq!(runs, [("dir", "warm"), ("dir", "cold"), ("tmpfs", "warm")]);
    let skipped: Vec<&str> = r.skipped.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(skipped, ["fs=tmpfs cache=cold"]);
    assert!(
        r.skipped[0].reason.contains("page cache"),
        "{:?}",
        r.skipped
    );
    drop(b);
    baseline.assert_clean("quick_cold_cache");
}

/// True if `s` holds a frame of the bench's progress bar (`[` + 30 of `=> ` + `]`).
fn has_progress_bar(s: &str) -> bool {
    s.match_indices('[').any(|(i, _)| {
        let rest = &s.as_bytes()[i + 1..];
        rest.len() > 30 && rest[..30].iter().all(|b| b" =>".contains(b)) && rest[30] == b']'
    })
}

/// The indicatif progress bar is drawn when stderr is a terminal (here a pseudo-terminal from
/// util-linux `script`) and never when stderr is a pipe.
#[test]
fn progress_bar_only_on_a_terminal() {
    if !require_root("progress_bar_only_on_a_terminal") {
        return;
    }
    if !common::require_tool("progress_bar_only_on_a_terminal", "script", "util-linux") {
        return;
    }
    let _l = lock();
    let baseline = Baseline::take();
    let b = Bench::new(
        "layers = 1\nfile_layers = [1]\nfilesystems = [\"tmpfs\"]\nmount_options = [[]]\nops = [\"first_write\"]\n",
    );
    let (_, _, stderr) = b.run_quick();
    assert!(!has_progress_bar(&stderr), "a bar on a pipe:\n{stderr}");
    let line = format!(
        "{BIN} bench --quick --no-charts --spec {} --out {} --workdir {}",
        b.spec.display(),
        b.out().display(),
        b.work().display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove(HOST_MOUNTS_ENV)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{tty}", out.status);
    assert!(has_progress_bar(&tty), "no bar on a terminal:\n{tty}");
    drop(b);
    baseline.assert_clean("progress_bar_only_on_a_terminal");
}

/// Docker's maximum of 128 layers under a long work directory: the mount options no longer fit a
/// page with absolute paths, so the lab mounts with relative ones (as Docker does); the kernel
/// side still joins every copy-up.
#[test]
fn quick_with_128_layers() {
    if !require_root("quick_with_128_layers") {
        return;
    }
    let _l = lock();
    let baseline = Baseline::take();
    let b = Bench::new(
        "layers = 128\nfile_layers = [1, 128]\nfilesystems = [\"tmpfs\"]\nmount_options = [[]]\nops = [\"first_write\", \"unlink\"]\n",
    );
    // A long work directory inside the test's own.
    let deep = b
        .work()
        .join("a-work-directory-with-a-long-name-so-that-128-layers-overflow-a-page");
    fs::create_dir(&deep).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("bench")
        .arg("--quick")
        .arg("--spec")
        .arg(&b.spec)
        .arg("--out")
        .arg(b.out())
        .arg("--workdir")
        .arg(&deep)
        .arg("--no-charts")
        .env_remove(HOST_MOUNTS_ENV);
    let running = Running::spawn(&mut cmd);
    let pid = u32::try_from(running.pid()).unwrap();
    let (status, stdout, stderr) = running.wait(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stdout:?}\n{stderr}");
    let r: Results =
        serde_json::from_str(&fs::read_to_string(b.out().join("results.json")).unwrap()).unwrap();
    check_results(
        &r,
        &b.spec,
        &["tmpfs"],
        &[
            ("first_write", K4, 1, 1),
            ("first_write", K4, 128, 1),
            ("first_write", K64, 1, 1),
            ("first_write", K64, 128, 1),
            ("unlink", K4, 1, 1),
            ("unlink", K4, 128, 1),
            ("unlink", K64, 1, 1),
            ("unlink", K64, 128, 1),
        ],
    );
    assert_eq!(r.runs[0].layers, 128);
    assert_no_leftovers(pid, &deep);
    fs::remove_dir(&deep).unwrap();
    drop(b);
    baseline.assert_clean("quick_with_128_layers");
}

/// Mount points in the bench's own mount namespace (it makes a private one) under its run dir.
fn bench_mounts(pid: u32) -> Vec<String> {
    let t = tag(pid);
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&t))
        .map(str::to_owned)
        .collect()
}

/// Waits until `cond` holds for the running bench (which must not exit first).
fn wait_for(running: &mut Running, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_mins(2);
    while !cond() {
        if let Ok(Some(s)) = running.child.try_wait() {
            panic!("bench exited ({s}) before {what}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A matrix that takes minutes: a signal always lands mid-run.
const LONG_SPEC: &str = "filesystems = [\"ext4\", \"tmpfs\"]\nrepetitions = 50\n";

fn interrupt(name: &str, sig: libc::c_int, when: &str, host_mounts: bool) {
    if !require_root(name) {
        return;
    }
    let _l = lock();
    let baseline = Baseline::take();
    let b = Bench::new(LONG_SPEC);
    let mut running = Running::spawn(&mut b.command(false, host_mounts));
    let pid = u32::try_from(running.pid()).unwrap();
    let run_dir = b.work().join(tag(pid));
    match when {
        // As soon as the run directory exists: mkfs, loop setup or layer building.
        "early" => wait_for(&mut running, "the run dir", || run_dir.exists()),
        // While measuring on the loop-mounted ext4: overlay stacks come and go.
        "measuring" => wait_for(&mut running, "an overlay stack", || {
            bench_mounts(pid).iter().any(|l| l.contains(" - overlay "))
        }),
        _ => unreachable!(),
    }
    if host_mounts && when == "measuring" {
        // The stacks are in our namespace: whatever the guards missed would show afterwards.
        let ours = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            ours.contains(&tag(pid)),
            "the lab's mounts are not in our namespace"
        );
    }
    running.signal(sig);
    let (status, _, stderr) = running.wait(Duration::from_mins(1));
    assert_eq!(
        status.code(),
        Some(130),
        "{name}: {status:?}, stderr:\n{stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!b.out().join("results.json").exists());
    assert_no_leftovers(pid, &b.work());
    drop(b);
    baseline.assert_clean(name);
}

#[test]
fn sigint_while_measuring_cleans_up() {
    interrupt(
        "sigint_while_measuring_cleans_up",
        libc::SIGINT,
        "measuring",
        false,
    );
}

/// In the test's own mount namespace: the guards alone must unmount and detach everything.
#[test]
fn sigint_while_measuring_cleans_up_host_mounts() {
    interrupt(
        "sigint_while_measuring_cleans_up_host_mounts",
        libc::SIGINT,
        "measuring",
        true,
    );
}

#[test]
fn sigterm_while_setting_up_cleans_up() {
    interrupt(
        "sigterm_while_setting_up_cleans_up",
        libc::SIGTERM,
        "early",
        true,
    );
}

fn clean_command(workdir: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["clean", "--workdir"])
        .arg(workdir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sigkill_then_clean_then_a_new_run() {
    sigkill("sigkill_then_clean_then_a_new_run", false);
}

/// With the stacks in the test's namespace a SIGKILL leaves real mounts: clean unmounts them.
#[test]
fn sigkill_with_host_mounts_then_clean() {
    sigkill("sigkill_with_host_mounts_then_clean", true);
}

fn sigkill(name: &str, host_mounts: bool) {
    if !require_root(name) {
        return;
    }
    let _l = lock();
    let baseline = Baseline::take();
    let b = Bench::new(LONG_SPEC);
    let mut running = Running::spawn(&mut b.command(false, host_mounts));
    let pid = u32::try_from(running.pid()).unwrap();
    let run_dir = b.work().join(tag(pid));
    wait_for(&mut running, "an overlay stack on ext4", || {
        bench_mounts(pid)
            .iter()
            .any(|l| l.contains(" - overlay ") && l.contains("/ext4/"))
    });
    let image_loops = loop_devices()
        .into_iter()
        .filter(|(_, back)| back.starts_with(&run_dir))
        .count();
    assert_eq!(image_loops, 1, "the ext4 image is on a loop device");
    let state: State = serde_json::from_str(&fs::read_to_string(state_path(pid)).unwrap()).unwrap();
    assert_eq!(state.pid, pid);
    assert_eq!(state.root, run_dir.canonicalize().unwrap());
    assert_eq!(state.start_ticks, start_ticks(pid));
    running.signal(libc::SIGKILL);
    let (status, _, _) = running.wait(Duration::from_secs(30));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // The worker dies with it (PR_SET_PDEATHSIG).
    let deadline = Instant::now() + Duration::from_secs(10);
    while worker_alive(pid) {
        assert!(Instant::now() < deadline, "the worker outlived the bench");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(run_dir.exists(), "a SIGKILLed run cannot clean up itself");
    let left: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&tag(pid)))
        .map(str::to_owned)
        .collect();
    if host_mounts {
        // The ext4 image stays mounted for its whole phase; an overlay stack only while a
        // repetition runs (the kill may land between two).
        assert!(
            left.iter().any(|l| l.contains(" - ext4 ")),
            "expected the killed run's ext4 mount: {left:?}"
        );
    } else {
        // Its private mount namespace went with it.
        assert!(left.is_empty(), "{left:?}");
    }

    let (code, stdout, stderr) = clean_command(&b.work());
    assert_eq!(code, 0, "clean: {stdout}\n{stderr}");
    if host_mounts {
        assert!(stdout.contains("cowprof clean: unmounted "), "{stdout}");
    }
    let removed = format!(
        "cowprof clean: removed {}",
        run_dir.canonicalize().unwrap_or(run_dir.clone()).display()
    );
    assert!(
        stdout.contains(&removed)
            || stdout.contains(&format!("cowprof clean: removed {}", run_dir.display())),
        "clean output lacks the run dir:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("removed {STATE_DIR}/lab-{pid}.json")),
        "{stdout}"
    );
    assert_no_leftovers(pid, &b.work());
    // Idempotent.
    let (code, stdout, _) = clean_command(&b.work());
    assert_eq!(code, 0);
    assert!(!stdout.contains(&tag(pid)), "{stdout}");

    // And the next run works, in the same work directory.
    fs::write(
        &b.spec,
        "filesystems = [\"dir\"]\nops = [\"first_write\", \"unlink\"]\n",
    )
    .unwrap();
    let (r, _, _) = b.run_quick();
    check_results(
        &r,
        &b.spec,
        &["dir"],
        &[
            ("first_write", K4, 1, 1),
            ("first_write", K4, 4, 1),
            ("first_write", K64, 1, 1),
            ("first_write", K64, 4, 1),
            ("unlink", K4, 1, 1),
            ("unlink", K4, 4, 1),
            ("unlink", K64, 1, 1),
            ("unlink", K64, 4, 1),
        ],
    );
    drop(b);
    baseline.assert_clean(name);
}

/// `clean` on leftovers it can see in this mount namespace (a run without a private namespace,
/// or one whose namespace is still held): a tmpfs and a loop-mounted image under a dead run's
/// directory, plus its state file; a live run's directory is left alone.
#[test]
fn clean_removes_mounts_and_loops_of_dead_runs_only() {
    if !require_root("clean_removes_mounts_and_loops_of_dead_runs_only") {
        return;
    }
    let _l = lock();
    let baseline = Baseline::take();
    let work = common::disk_tempdir();
    let work_path = work.path().canonicalize().unwrap();
    // A pid that is certainly dead: a child we reaped.
    let dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let dead_dir = work_path.join(tag(dead_pid));
    let tmpfs_mp = dead_dir.join("tmpfs");
    let ext4_mp = dead_dir.join("ext4");
    let image = dead_dir.join(format!("{}-ext4.img", tag(dead_pid)));
    fs::create_dir_all(&tmpfs_mp).unwrap();
    fs::create_dir_all(&ext4_mp).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "cowprof-lab", tmpfs_mp.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    assert!(Command::new("mkfs.ext4")
        .args(["-F", "-q"])
        .arg(&image)
        .status()
        .unwrap()
        .success());
    let dev = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    let dev = String::from_utf8_lossy(&dev.stdout).trim().to_owned();
    assert!(dev.starts_with("/dev/loop"), "{dev}");
    assert!(Command::new("mount")
        .arg(&dev)
        .arg(&ext4_mp)
        .status()
        .unwrap()
        .success());
    fs::write(ext4_mp.join("f"), "x").unwrap();
    let state = State {
        pid: dead_pid,
        start_ticks: Some(1),
        root: dead_dir.clone(),
        resources: vec![],
    };
    fs::create_dir_all(STATE_DIR).unwrap();
    fs::write(state_path(dead_pid), serde_json::to_string(&state).unwrap()).unwrap();
    // A live "run": this test process, with its real start time.
    let me = std::process::id();
    let live_dir = work_path.join(tag(me));
    fs::create_dir_all(&live_dir).unwrap();

    let (code, stdout, stderr) = clean_command(&work_path);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for needle in [
        format!("unmounted {}", ext4_mp.display()),
        format!("unmounted {}", tmpfs_mp.display()),
        format!("removed {}", dead_dir.display()),
        format!("removed {}", state_path(dead_pid).display()),
        format!("run {me} is still running; left alone"),
    ] {
        assert!(
            stdout.contains(&needle),
            "clean output lacks {needle:?}:\n{stdout}"
        );
    }
    assert!(live_dir.exists(), "a live run's directory was removed");
    fs::remove_dir(&live_dir).unwrap();
    assert_no_leftovers(dead_pid, &work_path);
    assert!(
        !loop_devices()
            .iter()
            .any(|(d, _)| d.display().to_string() == dev),
        "{dev} still attached"
    );
    drop(work);
    baseline.assert_clean("clean_removes_mounts_and_loops_of_dead_runs_only");
}
