//! Copy-up storm: the overhead of `cowprof record` on the cost of copy-ups.
//!
//! One lower layer of N 4 KiB files (in a directory `d`) is made once. Every round mounts a FRESH
//! overlay over it (new upper and work), so every write is a first write, a real copy-up, and
//! times (monotonic clock, the whole loop) `open(O_WRONLY|O_APPEND)` + write 1 byte + close of
//! each file. Baseline rounds run without cowprof, attached rounds with `cowprof record --json
//! [--backend B]` running as a separate process (started after the mount, timed only once its
//! "start" line says the probes are attached, stopped with SIGINT after the storm). Rounds
//! alternate baseline/attached after W discarded warm-up rounds.
//!
//! Reported: every round's time, the median, min and max per mode, the overhead
//! `median(attached) / median(baseline) - 1`, the cost per copy-up, the collector's peak RSS
//! (wait4 rusage `ru_maxrss`, and `VmHWM` just before SIGINT), its CPU time, and per attached
//! round the events it printed for this round's mount against the exact expectation (N data
//! copy-ups and one directory copy-up of `d`) and its drop counters. Speed targets (≤ 1 % with
//! kprobe, ≤ 32 MiB RSS) are reported, never asserted. Exit status: 0; 1 on an error or when the
//! events did not match (the overhead of a collector that missed work means little); 130 on
//! SIGINT/SIGTERM (after cleanup).
//!
//! ```text
//! cargo bench -p cowprof-benches --bench copyup_storm -- [--files N] [--rounds PAIRS]
//!     [--warmup W] [--backend kprobe|tracepoint] [--cowprof PATH] [--tmpfs] [--dir DIR]
//! ```
//!
//! Environment: `COWPROF_BENCH_FILES`, `COWPROF_BENCH_ROUNDS`, `COWPROF_BENCH_WARMUP` (the options
//! win), `COWPROF_BIN` (the cowprof binary when --cowprof is not given; else the workspace's
//! target/release/cowprof, else target/debug/cowprof).
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

use std::{
    env,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use cowprof_benches::{self as b, Collector, CollectorRun, Interrupted, Overlay, Scratch};
use serde_json::json;

const USAGE: &str =
    "usage: copyup_storm [--files N] [--rounds PAIRS] [--warmup W] [--backend kprobe|tracepoint] \
                     [--cowprof PATH] [--tmpfs] [--dir DIR]";
/// Attaching in a TCG VM (BTF parsing, the verifier) is slow; so is draining 10k events there.
const START_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(180);

struct Args {
    files: usize,
    pairs: usize,
    warmup: usize,
    backend: Option<String>,
    cowprof: Option<PathBuf>,
    tmpfs: bool,
    dir: Option<PathBuf>,
}

fn env_num(name: &str, default: usize) -> Result<usize> {
    match env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v}: not a number")),
        Err(_) => Ok(default),
    }
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        files: env_num("COWPROF_BENCH_FILES", 10_000)?,
        pairs: env_num("COWPROF_BENCH_ROUNDS", 5)?,
        warmup: env_num("COWPROF_BENCH_WARMUP", 1)?,
        backend: None,
        cowprof: None,
        tmpfs: false,
        dir: None,
    };
    let mut it = env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{name} needs {what}; {USAGE}"))
        };
        let num = |s: String| -> Result<usize> {
            s.parse()
                .with_context(|| format!("{name} {s}: not a number"))
        };
        match name.as_str() {
            "--files" => a.files = num(value("a number of files")?)?,
            "--rounds" => a.pairs = num(value("a number of baseline/attached pairs")?)?,
            "--warmup" => a.warmup = num(value("a number of warm-up rounds")?)?,
            "--backend" => a.backend = Some(value("kprobe or tracepoint")?),
            "--cowprof" => a.cowprof = Some(value("the path of the cowprof binary")?.into()),
            "--dir" => a.dir = Some(value("a directory")?.into()),
            "--tmpfs" => a.tmpfs = true,
            // cargo bench passes --bench to harness=false benches.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?}; {USAGE}"),
        }
    }
    if a.files == 0 || a.pairs == 0 {
        bail!("--files and --rounds must be at least 1");
    }
    Ok(a)
}

/// --cowprof, else $COWPROF_BIN, else the workspace's target/release/cowprof, else target/debug.
fn cowprof_bin(arg: Option<&Path>) -> Result<PathBuf> {
    let explicit = arg
        .map(Path::to_path_buf)
        .or_else(|| env::var_os("COWPROF_BIN").map(PathBuf::from));
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("cowprof binary {} does not exist", p.display());
        }
        return Ok(p);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for rel in ["target/release/cowprof", "target/debug/cowprof"] {
        let p = ws.join(rel);
        if p.is_file() {
            return Ok(p.canonicalize().unwrap_or(p));
        }
    }
    bail!("no cowprof binary: run `cargo build --release -p profiler`, or give --cowprof PATH or COWPROF_BIN")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Baseline,
    Attached,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Attached => "attached",
        }
    }
}

struct Round {
    mode: Mode,
    warmup: bool,
    ms: f64,
    collector: Option<CollectorRun>,
    /// Other cowprof/bpftrace processes seen just before the storm.
    tracers: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One round: fresh overlay, sync, (collector attached,) timed storm, (collector stopped,) checks.
fn run_round(
    idx: usize,
    mode: Mode,
    a: &Args,
    bin: &Path,
    scratch: &Scratch,
    lower: &Path,
    problems: &mut Vec<String>,
) -> Result<(f64, Option<CollectorRun>, Vec<String>)> {
    let ov = Overlay::mount(&scratch.root.join(format!("r{idx}")), lower)?;
    let paths = ov.storm_paths(a.files);
    b::sync();
    let collector = match mode {
        Mode::Attached => {
            let mut c = Collector::spawn(bin, a.backend.as_deref())?;
            c.wait_start(START_TIMEOUT)?;
            Some(c)
        }
        Mode::Baseline => None,
    };
    let tracers = b::other_tracers();
    let t = b::storm(&paths)?;
    let run = match collector {
        Some(c) => Some(c.stop(&ov.merged, STOP_TIMEOUT)?),
        None => None,
    };
    let copied = ov.copied_up()?;
    let label = format!("round {idx} ({})", mode.name());
    if copied != a.files {
        problems.push(format!(
            "{label}: {copied} files in the upper layer, expected {}",
            a.files
        ));
    }
    if let Some(r) = &run {
        let expected = a.files as u64 + 1;
        let data = r.ours_by_kind.get("data_copy_up").copied().unwrap_or(0);
        let dirs = r.ours_by_kind.get("dir_copy_up").copied().unwrap_or(0);
        if r.ours != expected || data != a.files as u64 || dirs != 1 {
            problems.push(format!(
                "{label}: {} events on the storm's mount, expected {expected} ({} data_copy_up + 1 dir_copy_up); by kind: {:?}",
                r.ours, a.files, r.ours_by_kind
            ));
        }
        if r.dropped != 0 {
            problems.push(format!(
                "{label}: the collector dropped {} events: {}",
                r.dropped,
                r.summary
                    .as_ref()
                    .map_or(json!(null), |s| s["drops"].clone())
            ));
        }
        match &r.summary {
            None => problems.push(format!("{label}: no summary line from the collector")),
            Some(s) if s["events"].as_u64() != Some(r.event_lines) => problems.push(format!(
                "{label}: the summary says {} events, the collector printed {} event lines",
                s["events"], r.event_lines
            )),
            Some(_) => {}
        }
        if r.exit_status != 0 {
            problems.push(format!(
                "{label}: the collector exited with status {}",
                r.exit_status
            ));
        }
        if r.odd_lines != 0 {
            problems.push(format!(
                "{label}: {} unparsable or unknown lines from the collector",
                r.odd_lines
            ));
        }
    }
    drop(ov);
    Ok((ms(t), run, tracers))
}

fn run(a: &Args) -> Result<bool> {
    let bin = cowprof_bin(a.cowprof.as_deref())?;
    let kernel = b::kernel_release();
    let base = a.dir.clone().unwrap_or_else(env::temp_dir);
    // tmpfs pages: lower 1 per file, upper 2 per file (4 KiB + the appended byte), some slack.
    let tmpfs_bytes = a.tmpfs.then(|| a.files as u64 * 16 * 1024 + (64 << 20));
    println!(
        "copyup_storm: {} files x 4 KiB, {} baseline/attached pairs after {} warm-up round(s); kernel {kernel}; \
         backend {}; collector {}; scratch {}{}",
        a.files,
        a.pairs,
        a.warmup,
        a.backend.as_deref().unwrap_or("(cowprof's choice)"),
        bin.display(),
        base.display(),
        if a.tmpfs { " (own tmpfs)" } else { "" }
    );
    if bin.components().any(|c| c.as_os_str() == "debug") {
        println!(
            "copyup_storm: note: a debug build of cowprof inflates its overhead; build --release"
        );
    }

    let scratch = Scratch::create(&base, tmpfs_bytes)?;
    let lower = scratch.root.join("lower");
    let t = Instant::now();
    b::make_lower(&lower, a.files)?;
    println!(
        "copyup_storm: lower layer made in {:.0} ms",
        ms(t.elapsed())
    );

    // Warm-up rounds start with an attached one (it warms the collector binary, BTF and the
    // lower files' page cache), then ABAB...
    let mut schedule: Vec<(Mode, bool)> = (0..a.warmup)
        .map(|i| {
            (
                if i % 2 == 0 {
                    Mode::Attached
                } else {
                    Mode::Baseline
                },
                true,
            )
        })
        .collect();
    for _ in 0..a.pairs {
        schedule.push((Mode::Baseline, false));
        schedule.push((Mode::Attached, false));
    }

    let mut rounds: Vec<Round> = Vec::new();
    let mut problems = Vec::new();
    let per_us = |ms: f64| ms * 1e3 / a.files as f64;
    for (idx, &(mode, warmup)) in schedule.iter().enumerate() {
        let mut round_problems = Vec::new();
        let (t_ms, collector, tracers) =
            run_round(idx, mode, a, &bin, &scratch, &lower, &mut round_problems)?;
        let mut line = format!(
            "round {idx:>2} {:<8}{} {:>10.1} ms {:>8.2} µs/copy-up",
            mode.name(),
            if warmup { " (warm-up, discarded)" } else { "" },
            t_ms,
            per_us(t_ms)
        );
        if let Some(c) = &collector {
            line += &format!(
                "  events {}/{} (+{} elsewhere) drops {}  peak rss {} KiB (rss {} KiB at stop)  \
                 attach {:.1} s  cpu in storm {} ms  stop {:.0} ms",
                c.ours,
                a.files + 1,
                c.event_lines - c.ours,
                c.dropped,
                c.maxrss_kib,
                c.vmrss_kib.map_or_else(|| "?".into(), |v| v.to_string()),
                c.attach_time.as_secs_f64(),
                c.storm_cpu
                    .map_or_else(|| "?".into(), |d| format!("{:.0}", ms(d))),
                ms(c.stop_time)
            );
        }
        println!("{line}");
        if !tracers.is_empty() {
            println!(
                "  NOTE: other tracers were running during this round: {}",
                tracers.join(" ")
            );
        }
        for p in &round_problems {
            println!("  MISMATCH: {p}");
        }
        problems.extend(round_problems);
        rounds.push(Round {
            mode,
            warmup,
            ms: t_ms,
            collector,
            tracers,
        });
    }
    drop(scratch);

    let measured =
        |m: Mode| -> Vec<&Round> { rounds.iter().filter(|r| !r.warmup && r.mode == m).collect() };
    let base_ms: Vec<f64> = measured(Mode::Baseline).iter().map(|r| r.ms).collect();
    let att: Vec<&Round> = measured(Mode::Attached);
    let att_ms: Vec<f64> = att.iter().map(|r| r.ms).collect();
    let runs: Vec<&CollectorRun> = att.iter().filter_map(|r| r.collector.as_ref()).collect();
    let all_runs: Vec<&CollectorRun> = rounds.iter().filter_map(|r| r.collector.as_ref()).collect();
    let (mb, ma) = (b::median(&base_ms), b::median(&att_ms));
    let overhead_pct = (ma / mb - 1.0) * 100.0;
    let peak_rss = all_runs.iter().map(|r| r.maxrss_kib).max().unwrap_or(0);
    let peak_hwm = all_runs.iter().filter_map(|r| r.vmhwm_kib).max();
    let rss_at_stop = all_runs.iter().filter_map(|r| r.vmrss_kib).max();
    let backend = runs
        .first()
        .and_then(|r| r.start["backend"].as_str())
        .unwrap_or("?")
        .to_owned();
    let cpu_ms: Vec<f64> = runs.iter().map(|r| ms(r.cpu)).collect();
    let storm_cpu_ms: Vec<f64> = runs.iter().filter_map(|r| r.storm_cpu).map(ms).collect();
    let attach_ms: Vec<f64> = runs.iter().map(|r| ms(r.attach_time)).collect();
    let stop_ms: Vec<f64> = runs.iter().map(|r| ms(r.stop_time)).collect();
    let mut tracers: Vec<String> = rounds
        .iter()
        .flat_map(|r| r.tracers.iter().cloned())
        .collect();
    tracers.sort();
    tracers.dedup();

    println!();
    println!(
        "{:<9} {:>6} {:>11} {:>11} {:>11} {:>12}",
        "mode", "rounds", "median ms", "min ms", "max ms", "µs/copy-up"
    );
    for (name, v) in [("baseline", &base_ms), ("attached", &att_ms)] {
        println!(
            "{name:<9} {:>6} {:>11.1} {:>11.1} {:>11.1} {:>12.2}",
            v.len(),
            b::median(v),
            b::min(v),
            b::max(v),
            per_us(b::median(v))
        );
    }
    println!(
        "overhead ({backend}, {kernel}): {overhead_pct:+.2} % (median attached / median baseline - 1), \
         {:+.2} µs per copy-up; target ≤ 1 % with kprobe",
        per_us(ma - mb)
    );
    println!(
        "collector: peak RSS {peak_rss} KiB ({:.1} MiB; target ≤ 32 MiB), VmHWM / VmRSS just before SIGINT {} / {} KiB, \
         CPU median {:.0} ms per attached round ({:.0} ms of it during the storm = {:.0} % of one CPU), \
         attach median {:.1} s, SIGINT-to-exit median {:.0} ms",
        peak_rss as f64 / 1024.0,
        peak_hwm.map_or_else(|| "?".into(), |h| h.to_string()),
        rss_at_stop.map_or_else(|| "?".into(), |h| h.to_string()),
        b::median(&cpu_ms),
        b::median(&storm_cpu_ms),
        b::median(&storm_cpu_ms) / ma * 100.0,
        b::median(&attach_ms) / 1e3,
        b::median(&stop_ms)
    );
    if !tracers.is_empty() {
        println!(
            "NOTE: other tracers ran during the bench ({}): they slow both modes and blur the overhead",
            tracers.join(" ")
        );
    }
    println!(
        "events per attached round: {:?} (expected {} = {} data_copy_up + 1 dir_copy_up); drops {:?}; {}",
        runs.iter().map(|r| r.ours).collect::<Vec<_>>(),
        a.files + 1,
        a.files,
        runs.iter().map(|r| r.dropped).collect::<Vec<_>>(),
        if problems.is_empty() { "all rounds match".to_owned() } else { format!("{} MISMATCH(ES), see above", problems.len()) }
    );
    let line = json!({
        "bench": "copyup_storm",
        "backend": backend,
        "kernel": kernel,
        "files": a.files,
        "rounds": a.pairs,
        "warmup": a.warmup,
        "tmpfs": a.tmpfs,
        "baseline_ms": base_ms.iter().copied().map(round3).collect::<Vec<_>>(),
        "attached_ms": att_ms.iter().copied().map(round3).collect::<Vec<_>>(),
        "baseline_median_ms": round3(mb),
        "attached_median_ms": round3(ma),
        "overhead_pct": round3(overhead_pct),
        "baseline_us_per_copyup": round3(per_us(mb)),
        "attached_us_per_copyup": round3(per_us(ma)),
        "collector_peak_rss_kib": peak_rss,
        "collector_vmhwm_kib": peak_hwm,
        "collector_rss_at_stop_kib": rss_at_stop,
        "added_us_per_copyup": round3(per_us(ma - mb)),
        "collector_cpu_ms": cpu_ms.iter().copied().map(round3).collect::<Vec<_>>(),
        "collector_storm_cpu_ms": storm_cpu_ms.iter().copied().map(round3).collect::<Vec<_>>(),
        "collector_attach_ms": attach_ms.iter().copied().map(round3).collect::<Vec<_>>(),
        "collector_stop_ms": stop_ms.iter().copied().map(round3).collect::<Vec<_>>(),
        "events": runs.iter().map(|r| r.ours).collect::<Vec<_>>(),
        "expected_events": a.files + 1,
        "dropped": runs.iter().map(|r| r.dropped).collect::<Vec<_>>(),
        "mismatches": problems,
        "other_tracers": tracers,
    });
    println!("{line}");
    Ok(problems.is_empty())
}

fn main() -> ExitCode {
    if let Err(e) = b::install_stop_handlers() {
        eprintln!("copyup_storm: {e:#}");
        return ExitCode::FAILURE;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("copyup_storm: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Every guard (mounts, scratch directory, collector) is dropped inside run().
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!(
                "copyup_storm: interrupted; mounts, scratch files and the collector are cleaned up"
            );
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("copyup_storm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
