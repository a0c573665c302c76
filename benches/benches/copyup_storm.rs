//! Copy-up storm: the overhead of `cowprof record` on the cost of copy-ups.
//!
//! One lower layer of N 4 KiB files (in a directory `d`) is made once. Every round mounts a FRESH
//! overlay over it (new upper and work), so every write is a first write, a real copy-up, and
//! times (monotonic clock and the storm thread's `CLOCK_THREAD_CPUTIME_ID`, the whole loop)
//! `open(O_WRONLY|O_APPEND)` + write 1 byte + close of each file. Baseline rounds run without
//! cowprof, attached rounds with `cowprof record` running as a separate process (started after
//! the mount, its output going to a file on a tmpfs that is read after it exits; timed only once
//! it says the probes are attached, stopped with SIGINT after the storm). Both modes then `sync`
//! and idle for the same gap before the timed loop. Pairs run in ABBA order (baseline-attached,
//! attached-baseline, ...) after W discarded warm-up rounds.
//!
//! `--workload getppid` times `--calls` getppid() syscalls instead of the storm: the tax the
//! syscall hooks put on every other process of the host.
//!
//! `--peer-cmd "CMD"` adds a third mode, a peer tracer to compare cowprof with (e.g.
//! `bpftrace benches/peer/ovl_copy_up.bt`: a kprobe + kretprobe on the copy-up function keeping
//! a latency histogram): run as `/bin/sh -c "exec CMD"` after the mount like the collector, timed
//! once a line of its output contains `--peer-ready` TEXT (default "Attaching", bpftrace's
//! "Attaching N probes..."), stopped with SIGINT after the storm. Rounds then come in blocks of
//! three (baseline, attached, peer), in mirrored order (ABC, CBA, ...; `--order alternate`:
//! ABC every time), and the differences are taken within each block: each tracer's overhead
//! over the block's baseline, cowprof's minus the peer's, and the ratio of the two overheads'
//! medians, all with 95 % bootstrap intervals (the blocks resampled together). A peer that
//! prints a histogram must count every copy-up in it (N samples) or the round is a mismatch.
//! `--peer-is-floor` says the peer is the floor, not a rival: `empty_hooks` (benches/src/bin), an
//! empty program on each of the tracepoint backend's hooks, what any program there costs; the
//! report then gives cowprof's overhead as a multiple of the floor's and no target verdict.
//!
//! Reported: every round's wall and CPU time; the median of the per-pair differences (attached
//! minus baseline) with its 95 % bootstrap interval, per copy-up (or syscall) and in percent; the
//! collector's CPU per event (user + system from wait4 less what it had used when attached), its
//! peak RSS; with `--bpf-stats` (`kernel.bpf_stats_enabled=1` during the run) every cowprof
//! program's in-kernel time per run and per copy-up and its `verified_insns`; and per attached
//! round the events against the exact expectation (N data copy-ups and one directory copy-up of
//! `d`) and the drop counters. Speed targets are reported, never asserted. Exit status: 0; 1 on
//! an error or when the events did not match (the overhead of a collector that missed work means
//! little); 130 on SIGINT/SIGTERM (after cleanup).
//!
//! ```text
//! cargo bench -p cowprof-benches --bench copyup_storm -- [--files N] [--rounds PAIRS]
//!     [--warmup W] [--backend kprobe|tracepoint] [--cowprof PATH] [--record-arg ARG]... [--tmpfs] [--dir DIR]
//!     [--output json|table|metrics] [--gap-ms MS] [--bpf-stats] [--order abba|alternate]
//!     [--workload storm|getppid] [--calls N] [--peer-cmd CMD] [--peer-ready TEXT] [--peer-is-floor]
//! ```
//!
//! Environment: `COWPROF_BENCH_FILES`, `COWPROF_BENCH_ROUNDS`, `COWPROF_BENCH_WARMUP` (the options
//! win), `COWPROF_BIN` (the cowprof binary when --cowprof is not given; else the workspace's
//! target/release/cowprof, else target/debug/cowprof).
// serde_json's json! macro recurses once per field: the result line has more than the default allows.
#![recursion_limit = "256"]
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

use std::{
    collections::BTreeMap,
    env,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use cowprof_benches::{
    self as b, Collector, CollectorRun, Output, Overlay, Peer, PeerRun, ProgInfo, Scratch, Timed,
};
use serde_json::json;

const USAGE: &str =
    "usage: copyup_storm [--files N] [--rounds PAIRS] [--warmup W] [--backend kprobe|tracepoint] \
                     [--cowprof PATH] [--record-arg ARG]... [--tmpfs] [--dir DIR] [--output json|table|metrics] [--gap-ms MS] \
                     [--bpf-stats] [--order abba|alternate] [--workload storm|getppid] [--calls N] \
                     [--peer-cmd CMD] [--peer-ready TEXT] [--peer-is-floor]";
/// Attaching in a TCG VM (BTF parsing, the verifier) is slow; so is draining 10k events there.
const START_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(180);

struct Args {
    files: usize,
    pairs: usize,
    warmup: usize,
    backend: Option<String>,
    cowprof: Option<PathBuf>,
    /// More `record` options, one per `--record-arg` (e.g. `--no-phases`).
    record_args: Vec<String>,
    tmpfs: bool,
    dir: Option<PathBuf>,
    output: Output,
    gap: Duration,
    bpf_stats: bool,
    abba: bool,
    getppid: bool,
    calls: usize,
    peer_cmd: Option<String>,
    peer_ready: String,
    /// The peer is `empty_hooks`, the floor: no target verdict, the overhead as a multiple of it.
    peer_is_floor: bool,
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
        pairs: env_num("COWPROF_BENCH_ROUNDS", 10)?,
        warmup: env_num("COWPROF_BENCH_WARMUP", 1)?,
        backend: None,
        cowprof: None,
        record_args: Vec::new(),
        tmpfs: false,
        dir: None,
        output: Output::Json,
        gap: Duration::from_millis(500),
        bpf_stats: false,
        abba: true,
        getppid: false,
        calls: 1_000_000,
        peer_cmd: None,
        peer_ready: "Attaching".to_owned(),
        peer_is_floor: false,
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
            "--record-arg" => a.record_args.push(value("a cowprof record option")?),
            "--dir" => a.dir = Some(value("a directory")?.into()),
            "--tmpfs" => a.tmpfs = true,
            "--output" => {
                let v = value("json, table or metrics")?;
                a.output = Output::parse(&v)
                    .with_context(|| format!("--output {v}: json, table or metrics"))?;
            }
            "--gap-ms" => a.gap = Duration::from_millis(num(value("milliseconds")?)? as u64),
            "--bpf-stats" => a.bpf_stats = true,
            "--order" => match value("abba or alternate")?.as_str() {
                "abba" => a.abba = true,
                "alternate" => a.abba = false,
                v => bail!("--order {v}: abba or alternate"),
            },
            "--workload" => match value("storm or getppid")?.as_str() {
                "storm" => a.getppid = false,
                "getppid" => a.getppid = true,
                v => bail!("--workload {v}: storm or getppid"),
            },
            "--calls" => a.calls = num(value("a number of syscalls")?)?,
            "--peer-cmd" => a.peer_cmd = Some(value("a command line (run with /bin/sh -c)")?),
            "--peer-ready" => a.peer_ready = value("the text of the peer's ready line")?,
            "--peer-is-floor" => a.peer_is_floor = true,
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
    if a.peer_is_floor && a.peer_cmd.is_none() {
        bail!("--peer-is-floor needs --peer-cmd (e.g. target/release/empty_hooks, ready line \"attached\")");
    }
    if a.peer_cmd.as_deref().is_some_and(|c| c.trim().is_empty()) || a.peer_ready.is_empty() {
        bail!("--peer-cmd and --peer-ready must not be empty");
    }
    Ok(a)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Baseline,
    /// `cowprof record`.
    Attached,
    /// The `--peer-cmd` tracer.
    Peer,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Attached => "attached",
            Self::Peer => "peer",
        }
    }
}

/// The order of the measured rounds: blocks of one round per mode (baseline + attached, + peer
/// with `--peer-cmd`); `mirrored` reverses every other block (ABBA, or ABC CBA), which cancels a
/// linear drift over each two blocks. Warm-up rounds come first: attached, then the peer, then
/// baseline, cycling.
fn schedule(blocks: usize, warmup: usize, peer: bool, mirrored: bool) -> Vec<(Mode, bool)> {
    let block: &[Mode] = if peer {
        &[Mode::Baseline, Mode::Attached, Mode::Peer]
    } else {
        &[Mode::Baseline, Mode::Attached]
    };
    let warm: &[Mode] = if peer {
        &[Mode::Attached, Mode::Peer, Mode::Baseline]
    } else {
        &[Mode::Attached, Mode::Baseline]
    };
    let mut s: Vec<(Mode, bool)> = (0..warmup).map(|i| (warm[i % warm.len()], true)).collect();
    for k in 0..blocks {
        if mirrored && k % 2 == 1 {
            s.extend(block.iter().rev().map(|&m| (m, false)));
        } else {
            s.extend(block.iter().map(|&m| (m, false)));
        }
    }
    s
}

struct Round {
    mode: Mode,
    warmup: bool,
    t: Timed,
    collector: Option<CollectorRun>,
    peer: Option<PeerRun>,
    /// Per program of the tracer of the round (cowprof's or the peer's): (name, run time ns, runs, verified insns) during the timed loop.
    bpf: Vec<(String, u64, u64, u64)>,
    /// Other cowprof/bpftrace processes seen just before the storm.
    tracers: Vec<String>,
    load: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Where the collector's output file goes: a tmpfs (so writing it costs no disk I/O).
fn collector_dir(scratch: &Scratch) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        scratch.root.clone()
    }
}

/// The ids of the tracer's programs (the collector's or the peer's): those that appeared since
/// `before` (the bench holds the test lock, so no other cowprof loads any meanwhile).
fn collector_progs(before: &BTreeMap<u64, ProgInfo>, now: &BTreeMap<u64, ProgInfo>) -> Vec<u64> {
    now.keys()
        .filter(|id| !before.contains_key(id))
        .copied()
        .collect()
}

/// One round: fresh overlay, sync, (collector or peer attached,) sync + idle gap, timed loop,
/// (collector or peer stopped,) checks.
fn run_round(
    idx: usize,
    mode: Mode,
    a: &Args,
    bin: &Path,
    scratch: &Scratch,
    lower: &Path,
    problems: &mut Vec<String>,
) -> Result<Round> {
    let ov = Overlay::mount(&scratch.root.join(format!("r{idx}")), lower)?;
    let paths = if a.getppid {
        Vec::new()
    } else {
        ov.storm_paths(a.files)
    };
    b::sync();
    let progs_before = if a.bpf_stats && mode != Mode::Baseline {
        b::bpf_progs()?
    } else {
        BTreeMap::new()
    };
    let collector = match mode {
        Mode::Attached => {
            let mut c = Collector::spawn(
                bin,
                a.backend.as_deref(),
                &a.record_args,
                a.output,
                &collector_dir(scratch),
            )?;
            c.wait_start(START_TIMEOUT)?;
            Some(c)
        }
        Mode::Baseline | Mode::Peer => None,
    };
    let peer = match (mode, a.peer_cmd.as_deref()) {
        (Mode::Peer, Some(cmd)) => {
            let mut p = Peer::spawn(cmd, &a.peer_ready, &collector_dir(scratch))?;
            p.wait_ready(START_TIMEOUT)?;
            Some(p)
        }
        _ => None,
    };
    // The same quiet start in both modes: dirty pages written, the attach's work settled.
    b::sync();
    std::thread::sleep(a.gap);
    b::check_stop()?;
    let tracers = b::other_tracers();
    let load = b::load_average();
    let (ids, snap0) = match (mode, a.bpf_stats) {
        (Mode::Attached | Mode::Peer, true) => {
            let now = b::bpf_progs()?;
            (collector_progs(&progs_before, &now), now)
        }
        _ => (Vec::new(), BTreeMap::new()),
    };
    let t = if a.getppid {
        b::getppid_loop(a.calls)?
    } else {
        b::storm(&paths)?
    };
    let bpf = if ids.is_empty() {
        Vec::new()
    } else {
        b::bpf_delta(&snap0, &b::bpf_progs()?, &ids)
    };
    let run = match collector {
        Some(c) => Some(c.stop(&ov.merged, STOP_TIMEOUT)?),
        None => None,
    };
    let peer = match peer {
        Some(p) => Some(p.stop(STOP_TIMEOUT)?),
        None => None,
    };
    let copied = ov.copied_up()?;
    let label = format!("round {idx} ({})", mode.name());
    let expect_files = if a.getppid { 0 } else { a.files };
    if copied != expect_files {
        problems.push(format!(
            "{label}: {copied} files in the upper layer, expected {expect_files}"
        ));
    }
    if let Some(r) = run.as_ref().filter(|r| r.counted) {
        let expected = if a.getppid { 0 } else { a.files as u64 + 1 };
        let data = r.ours_by_kind.get("data_copy_up").copied().unwrap_or(0);
        let dirs = r.ours_by_kind.get("dir_copy_up").copied().unwrap_or(0);
        let kinds_ok =
            a.output == Output::Metrics || a.getppid || (data == a.files as u64 && dirs == 1);
        if r.ours != expected || !kinds_ok {
            problems.push(format!(
                "{label}: {} events on the storm's mount, expected {expected} ({} data_copy_up + 1 dir_copy_up); by kind: {:?}",
                r.ours, expect_files, r.ours_by_kind
            ));
        }
    }
    if let Some(r) = &run {
        problems.extend(r.problems(&label));
    }
    if let Some(p) = &peer {
        if p.exit_status != 0 {
            problems.push(format!(
                "{label}: the peer tracer exited with status {}; it printed: {}",
                p.exit_status,
                p.output.trim()
            ));
        }
        // A histogram of the copy-ups holds one sample per file (the directory is copied up
        // inside the first file's copy-up call).
        match p.histogram_count {
            Some(n) if !a.getppid && n != a.files as u64 => problems.push(format!(
                "{label}: the peer's histogram counts {n} samples, expected {} (one per copy-up)",
                a.files
            )),
            _ => {}
        }
    }
    drop(ov);
    Ok(Round {
        mode,
        warmup: false,
        t,
        collector: run,
        peer,
        bpf,
        tracers,
        load,
    })
}

/// A median with its 95 % bootstrap interval, printed as `m [lo, hi]`.
fn ci(v: &[f64]) -> (f64, f64, f64) {
    b::median_ci(v, 4000)
}

fn fmt_ci((m, lo, hi): (f64, f64, f64), prec: usize) -> String {
    format!("{m:+.prec$} [{lo:+.prec$}, {hi:+.prec$}]")
}

/// The rounds of one block (one per mode), in any order.
struct Block<'r> {
    base: &'r Round,
    att: &'r Round,
    peer: Option<&'r Round>,
}

/// In-kernel time of a tracer's programs over some rounds: per program (run time ns, runs,
/// verified insns) summed over the rounds, the per-round total per op, and the rounds counted.
struct BpfSummary {
    programs: BTreeMap<String, (u64, u64, u64)>,
    per_op_us: Vec<f64>,
    rounds: usize,
}

fn bpf_summary<'r>(rounds: impl Iterator<Item = &'r Round>, per: f64) -> BpfSummary {
    let mut s = BpfSummary {
        programs: BTreeMap::new(),
        per_op_us: Vec::new(),
        rounds: 0,
    };
    for r in rounds.filter(|r| !r.bpf.is_empty()) {
        s.rounds += 1;
        for (name, t, n, v) in &r.bpf {
            let e = s.programs.entry(name.clone()).or_default();
            e.0 += t;
            e.1 += n;
            e.2 = *v;
        }
        s.per_op_us
            .push(r.bpf.iter().map(|x| x.1).sum::<u64>() as f64 / 1e3 / per);
    }
    s
}

fn print_bpf(who: &str, s: &BpfSummary, unit: &str, per: f64) {
    if s.rounds == 0 {
        return;
    }
    let n = s.rounds as f64;
    println!(
        "in-kernel, {who} (bpf_stats, {} rounds): {} µs per {unit} in all [95 %]",
        s.rounds,
        fmt_ci(ci(&s.per_op_us), 3)
    );
    println!(
        "  {:<28} {:>12} {:>10} {:>12} {:>14}",
        "program",
        "runs/round",
        "ns/run",
        format!("µs/{unit}"),
        "verified_insns"
    );
    for (name, (t, runs_, v)) in &s.programs {
        println!(
            "  {name:<28} {:>12.0} {:>10.0} {:>12.4} {:>14}",
            *runs_ as f64 / n,
            if *runs_ == 0 {
                0.0
            } else {
                *t as f64 / *runs_ as f64
            },
            *t as f64 / 1e3 / n / per,
            v
        );
    }
}

/// Whether cowprof's overhead is at most the peer's, from the interval of cowprof's minus the
/// peer's per-block difference.
fn verdict((m, lo, hi): (f64, f64, f64)) -> &'static str {
    if hi <= 0.0 {
        "met (cowprof's overhead is below the peer's)"
    } else if lo > 0.0 {
        "missed (cowprof's overhead is above the peer's)"
    } else if m <= 0.0 {
        "met at the median, not resolved (the interval spans 0)"
    } else {
        "missed at the median, not resolved (the interval spans 0)"
    }
}

fn run(a: &Args) -> Result<bool> {
    let bin = b::cowprof_bin(a.cowprof.as_deref())?;
    let kernel = b::kernel_release();
    let base = a.dir.clone().unwrap_or_else(env::temp_dir);
    // tmpfs pages: lower 1 per file, upper 2 per file (4 KiB + the appended byte), some slack.
    let tmpfs_bytes = a.tmpfs.then(|| a.files as u64 * 16 * 1024 + (64 << 20));
    let unit = if a.getppid { "syscall" } else { "copy-up" };
    let per = if a.getppid { a.calls } else { a.files } as f64;
    let with_peer = a.peer_cmd.is_some();
    println!(
        "copyup_storm: {}; {} {} ({} order) after {} warm-up round(s), {} ms idle after sync; kernel {kernel}; \
         backend {}; output {}; bpf stats {}; collector {}{}; scratch {}{}; load {}",
        if a.getppid { format!("{} getppid() calls", a.calls) } else { format!("{} files x 4 KiB", a.files) },
        a.pairs,
        if with_peer { "blocks of baseline, attached, peer" } else { "pairs" },
        match (with_peer, a.abba) {
            (false, true) => "ABBA",
            (false, false) => "AB",
            (true, true) => "ABC CBA",
            (true, false) => "ABC",
        },
        a.warmup,
        a.gap.as_millis(),
        a.backend.as_deref().unwrap_or("(cowprof's choice)"),
        a.output.name(),
        if a.bpf_stats { "on" } else { "off" },
        bin.display(),
        a.peer_cmd
            .as_deref()
            .map_or_else(String::new, |c| format!("; peer `{c}` (ready: {:?})", a.peer_ready)),
        base.display(),
        if a.tmpfs { " (own tmpfs)" } else { "" },
        b::load_average()
    );
    if bin.components().any(|c| c.as_os_str() == "debug") {
        println!(
            "copyup_storm: note: a debug build of cowprof inflates its overhead; build --release"
        );
    }
    let _stats = if a.bpf_stats {
        Some(b::BpfStats::enable()?)
    } else {
        None
    };

    let scratch = Scratch::create(&base, tmpfs_bytes)?;
    let lower = scratch.root.join("lower");
    // Before anything of the bench is loaded: tracing programs now are another tracer's.
    let foreign = b::foreign_tracing_programs();
    if !foreign.is_empty() {
        println!(
            "NOTE: tracing BPF programs are loaded by another tracer ({}): they slow both modes \
             and blur the overhead; stop it for figures worth keeping",
            foreign.join(" ")
        );
    }
    let t = Instant::now();
    b::make_lower(&lower, if a.getppid { 1 } else { a.files })?;
    println!(
        "copyup_storm: lower layer made in {:.0} ms",
        ms(t.elapsed())
    );

    // Warm-up rounds start with an attached one (it warms the collector binary, BTF and the
    // lower files' page cache), then the peer's, then baseline.
    let schedule = schedule(a.pairs, a.warmup, with_peer, a.abba);
    let block_len = if with_peer { 3 } else { 2 };

    let mut rounds: Vec<Round> = Vec::new();
    let mut problems = Vec::new();
    let per_us = |ms: f64| ms * 1e3 / per;
    for (idx, &(mode, warmup)) in schedule.iter().enumerate() {
        let mut round_problems = Vec::new();
        let mut r = run_round(idx, mode, a, &bin, &scratch, &lower, &mut round_problems)?;
        r.warmup = warmup;
        let mut line = format!(
            "round {idx:>2} {:<8}{} {:>10.1} ms {:>8.3} µs/{unit} (cpu {:>8.3})  load {}",
            mode.name(),
            if warmup { " (warm-up, discarded)" } else { "" },
            ms(r.t.wall),
            per_us(ms(r.t.wall)),
            per_us(ms(r.t.cpu)),
            r.load
        );
        if let Some(c) = &r.collector {
            line += &format!(
                "  events {}/{} drops {}  peak rss {} KiB  attach {:.2} s  collector cpu {} ms after attach",
                c.ours,
                if a.getppid { 0 } else { a.files + 1 },
                c.dropped,
                c.maxrss_kib,
                c.attach_time.as_secs_f64(),
                c.cpu_after_start
                    .map_or_else(|| "?".into(), |d| format!("{:.0}", ms(d))),
            );
        }
        if let Some(p) = &r.peer {
            line += &format!(
                "  histogram samples {}  peak rss {} KiB  attach {:.2} s  peer cpu {} ms after attach",
                p.histogram_count
                    .map_or_else(|| "none".into(), |n| n.to_string()),
                p.maxrss_kib,
                p.attach_time.as_secs_f64(),
                p.cpu_after_start
                    .map_or_else(|| "?".into(), |d| format!("{:.0}", ms(d))),
            );
            if p.nudges > 0 {
                line += &format!(
                    "  stopped after {:.1} s and {} SIGTERM(s)",
                    p.stop_time.as_secs_f64(),
                    p.nudges
                );
            }
        }
        if !r.bpf.is_empty() {
            let total: u64 = r.bpf.iter().map(|p| p.1).sum();
            line += &format!("  bpf {:.3} µs/{unit}", total as f64 / 1e3 / per);
        }
        println!("{line}");
        if !r.tracers.is_empty() {
            println!(
                "  NOTE: other tracers were running during this round: {}",
                r.tracers.join(" ")
            );
        }
        for p in &round_problems {
            println!("  MISMATCH: {p}");
        }
        problems.extend(round_problems);
        rounds.push(r);
    }
    drop(scratch);

    // Blocks in schedule order (each = one measured round per mode, consecutive).
    let measured: Vec<&Round> = rounds.iter().filter(|r| !r.warmup).collect();
    let blocks: Vec<Block> = measured
        .chunks(block_len)
        .filter(|c| c.len() == block_len)
        .filter_map(|c| {
            let of = |m: Mode| c.iter().copied().find(|r| r.mode == m);
            Some(Block {
                base: of(Mode::Baseline)?,
                att: of(Mode::Attached)?,
                peer: of(Mode::Peer),
            })
        })
        .collect();
    let peer_blocks: Vec<(&Round, &Round)> = blocks
        .iter()
        .filter_map(|k| Some((k.base, k.peer?)))
        .collect();
    let pairs: Vec<(&Round, &Round)> = blocks.iter().map(|k| (k.base, k.att)).collect();
    let wall_ms = |v: &[(&Round, &Round)], second: bool| -> Vec<f64> {
        v.iter()
            .map(|p| ms(if second { p.1.t.wall } else { p.0.t.wall }))
            .collect()
    };
    let cpu_ms = |v: &[(&Round, &Round)], second: bool| -> Vec<f64> {
        v.iter()
            .map(|p| ms(if second { p.1.t.cpu } else { p.0.t.cpu }))
            .collect()
    };
    // Per block: the tracer's round minus the baseline round, per op (µs) and in percent.
    let diffs = |v: &[(&Round, &Round)]| -> [Vec<f64>; 4] {
        [
            v.iter()
                .map(|p| per_us(ms(p.1.t.wall) - ms(p.0.t.wall)))
                .collect(),
            v.iter()
                .map(|p| (p.1.t.wall.as_secs_f64() / p.0.t.wall.as_secs_f64() - 1.0) * 100.0)
                .collect(),
            v.iter()
                .map(|p| per_us(ms(p.1.t.cpu) - ms(p.0.t.cpu)))
                .collect(),
            v.iter()
                .map(|p| (p.1.t.cpu.as_secs_f64() / p.0.t.cpu.as_secs_f64() - 1.0) * 100.0)
                .collect(),
        ]
    };
    let (base_ms, att_ms) = (wall_ms(&pairs, false), wall_ms(&pairs, true));
    let (base_cpu, att_cpu) = (cpu_ms(&pairs, false), cpu_ms(&pairs, true));
    let (peer_ms, peer_cpu) = (wall_ms(&peer_blocks, true), cpu_ms(&peer_blocks, true));
    let [d_us, d_pct, dc_us, dc_pct] = diffs(&pairs);
    let [pd_us, pd_pct, pdc_us, pdc_pct] = diffs(&peer_blocks);
    let runs: Vec<&CollectorRun> = pairs
        .iter()
        .filter_map(|p| p.1.collector.as_ref())
        .collect();
    let all_runs: Vec<&CollectorRun> = rounds.iter().filter_map(|r| r.collector.as_ref()).collect();
    let peak_rss = all_runs.iter().map(|r| r.maxrss_kib).max().unwrap_or(0);
    let peer_runs: Vec<&PeerRun> = peer_blocks
        .iter()
        .filter_map(|p| p.1.peer.as_ref())
        .collect();
    let peer_peak_rss = rounds
        .iter()
        .filter_map(|r| r.peer.as_ref())
        .map(|p| p.maxrss_kib)
        .max()
        .unwrap_or(0);
    let backend = runs
        .first()
        .and_then(|r| r.start["backend"].as_str())
        .or(a.backend.as_deref())
        .unwrap_or("?")
        .to_owned();
    let events = if a.getppid { 1.0 } else { (a.files + 1) as f64 };
    let coll_us_per_event: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.cpu_after_start)
        .map(|d| d.as_secs_f64() * 1e6 / events)
        .collect();
    // Metrics: without the CPU the collector spent answering the bench's checking scrapes.
    let coll_no_scrapes: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some(r.cpu_after_start?.saturating_sub(r.scrape_cpu?)))
        .map(|d| d.as_secs_f64() * 1e6 / events)
        .collect();
    let peer_us_per_op: Vec<f64> = peer_runs
        .iter()
        .filter_map(|r| r.cpu_after_start)
        .map(|d| d.as_secs_f64() * 1e6 / per)
        .collect();
    let coll_storm_ms: Vec<f64> = runs.iter().filter_map(|r| r.storm_cpu).map(ms).collect();
    let attach_ms: Vec<f64> = runs.iter().map(|r| ms(r.attach_time)).collect();
    let peer_attach_ms: Vec<f64> = peer_runs.iter().map(|r| ms(r.attach_time)).collect();
    let mut tracers: Vec<String> = rounds
        .iter()
        .flat_map(|r| r.tracers.iter().cloned())
        .chain(foreign.iter().map(|n| format!("bpf:{n}")))
        .collect();
    tracers.sort();
    tracers.dedup();

    println!();
    println!(
        "{:<9} {:>6} {:>11} {:>11} {:>11} {:>12} {:>12}",
        "mode",
        "rounds",
        "median ms",
        "min ms",
        "max ms",
        format!("µs/{unit}"),
        "cpu µs/op"
    );
    let mut modes = vec![
        ("baseline", &base_ms, &base_cpu),
        ("attached", &att_ms, &att_cpu),
    ];
    if with_peer {
        modes.push(("peer", &peer_ms, &peer_cpu));
    }
    for (name, v, c) in modes {
        println!(
            "{name:<9} {:>6} {:>11.1} {:>11.1} {:>11.1} {:>12.3} {:>12.3}",
            v.len(),
            b::median(v),
            b::min(v),
            b::max(v),
            per_us(b::median(v)),
            per_us(b::median(c))
        );
    }
    let block_word = if with_peer { "per-block" } else { "per-pair" };
    let (w_us, w_pct, c_us, c_pct) = (ci(&d_us), ci(&d_pct), ci(&dc_us), ci(&dc_pct));
    println!(
        "overhead ({backend}, {kernel}), median of {} {block_word} differences [95 % bootstrap interval]: \
         wall {} µs/{unit} = {} %; storm thread CPU {} µs/{unit} = {} %",
        pairs.len(),
        fmt_ci(w_us, 3),
        fmt_ci(w_pct, 2),
        fmt_ci(c_us, 3),
        fmt_ci(c_pct, 2)
    );
    // The peer against the same baselines, then cowprof against the peer, block by block.
    let (pw_us, pw_pct, pc_us, pc_pct) = (ci(&pd_us), ci(&pd_pct), ci(&pdc_us), ci(&pdc_pct));
    let minus =
        |x: &[f64], y: &[f64]| -> Vec<f64> { x.iter().zip(y).map(|(x, y)| x - y).collect() };
    let (vs_w, vs_c) = (ci(&minus(&d_us, &pd_us)), ci(&minus(&dc_us, &pdc_us)));
    let (ratio_w, ratio_c) = (
        b::ratio_of_medians_ci(&d_us, &pd_us, 4000),
        b::ratio_of_medians_ci(&dc_us, &pdc_us, 4000),
    );
    if with_peer {
        println!(
            "peer overhead, median of {} per-block differences [95 %]: wall {} µs/{unit} = {} %; \
             storm thread CPU {} µs/{unit} = {} %",
            peer_blocks.len(),
            fmt_ci(pw_us, 3),
            fmt_ci(pw_pct, 2),
            fmt_ci(pc_us, 3),
            fmt_ci(pc_pct, 2)
        );
        // +inf: the peer's overhead in (that resample of) the blocks was not above zero.
        let x = |v: f64| {
            if v.is_infinite() {
                "unbounded".to_owned()
            } else {
                format!("{v:.2}")
            }
        };
        let fmt_ratio = |(m, lo, hi): (f64, f64, f64)| format!("{}x [{}, {}]", x(m), x(lo), x(hi));
        println!(
            "cowprof vs peer, per block [95 %]: cowprof's minus the peer's overhead wall {} µs/{unit}, \
             CPU {} µs/{unit}; ratio of the median overheads (cowprof / peer) wall {}, CPU {}",
            fmt_ci(vs_w, 3),
            fmt_ci(vs_c, 3),
            fmt_ratio(ratio_w),
            fmt_ratio(ratio_c)
        );
        if a.peer_is_floor {
            println!(
                "the peer is the floor (an empty program on each hook): cowprof's overhead is {} \
                 the floor's in the storm thread's CPU, {} in wall time",
                fmt_ratio(ratio_c),
                fmt_ratio(ratio_w)
            );
        } else {
            println!(
                "target (cowprof's overhead <= the peer's): storm thread CPU {}; wall {}",
                verdict(vs_c),
                verdict(vs_w)
            );
        }
        println!(
            "peer: CPU after attach {} µs per {unit} [95 %]; peak RSS {peer_peak_rss} KiB ({:.1} MiB); \
             attach median {:.2} s; histogram samples per round {:?} (expected {})",
            fmt_ci(ci(&peer_us_per_op), 2),
            peer_peak_rss as f64 / 1024.0,
            b::median(&peer_attach_ms) / 1e3,
            peer_runs.iter().map(|r| r.histogram_count).collect::<Vec<_>>(),
            a.files,
        );
    }
    let coll = ci(&coll_us_per_event);
    println!(
        "collector ({} output): CPU after attach {} µs per {} [95 %], {:.0} ms median during the loop; \
         peak RSS {peak_rss} KiB ({:.1} MiB); attach median {:.2} s",
        a.output.name(),
        fmt_ci(coll, 2),
        if a.getppid { "round" } else { "event" },
        b::median(&coll_storm_ms),
        peak_rss as f64 / 1024.0,
        b::median(&attach_ms) / 1e3,
    );
    if !coll_no_scrapes.is_empty() {
        println!(
            "collector without the bench's checking scrapes after the storm: {} µs per {} [95 %]",
            fmt_ci(ci(&coll_no_scrapes), 2),
            if a.getppid { "round" } else { "event" },
        );
    }
    // In-kernel time: per program, summed over the measured rounds of each tracer.
    let bpf = bpf_summary(pairs.iter().map(|p| p.1), per);
    let peer_bpf = bpf_summary(peer_blocks.iter().map(|p| p.1), per);
    print_bpf("cowprof", &bpf, unit, per);
    print_bpf("peer", &peer_bpf, unit, per);
    if !tracers.is_empty() {
        println!(
            "NOTE: other tracers ran during the bench ({}): they slow both modes and blur the overhead",
            tracers.join(" ")
        );
    }
    println!(
        "events per attached round: {} (expected {}); drops {:?}; {}",
        if a.output == Output::Table {
            "not counted with the table".to_owned()
        } else {
            format!("{:?}", runs.iter().map(|r| r.ours).collect::<Vec<_>>())
        },
        if a.getppid { 0 } else { a.files + 1 },
        runs.iter().map(|r| r.dropped).collect::<Vec<_>>(),
        if problems.is_empty() {
            "all rounds match".to_owned()
        } else {
            format!("{} MISMATCH(ES), see above", problems.len())
        }
    );
    let j3 = |v: (f64, f64, f64)| json!([round3(v.0), round3(v.1), round3(v.2)]);
    let p3 = |v: (f64, f64, f64)| if with_peer { j3(v) } else { json!(null) };
    let r3 = |v: &[f64]| v.iter().copied().map(round3).collect::<Vec<_>>();
    let bpf_json = |s: &BpfSummary| {
        s.programs
            .iter()
            .map(|(n, (t, r, v))| json!({"name": n, "run_time_ns": t, "run_cnt": r, "verified_insns": v}))
            .collect::<Vec<_>>()
    };
    let per_op = |w: &[f64], c: &[f64]| json!({"wall": round3(per_us(b::median(w))), "cpu": round3(per_us(b::median(c)))});
    let mut median_us_per_op = serde_json::Map::new();
    median_us_per_op.insert("baseline".into(), per_op(&base_ms, &base_cpu));
    median_us_per_op.insert("attached".into(), per_op(&att_ms, &att_cpu));
    if with_peer {
        median_us_per_op.insert("peer".into(), per_op(&peer_ms, &peer_cpu));
    }
    let line = json!({
        "bench": "copyup_storm",
        "workload": if a.getppid { "getppid" } else { "storm" },
        "backend": backend,
        "kernel": kernel,
        "output": a.output.name(),
        "files": a.files,
        "calls": if a.getppid { Some(a.calls) } else { None },
        "rounds": a.pairs,
        "modes_per_block": block_len,
        "warmup": a.warmup,
        "tmpfs": a.tmpfs,
        "gap_ms": a.gap.as_millis() as u64,
        "loads": rounds.iter().map(|r| r.load.clone()).collect::<Vec<_>>(),
        "baseline_ms": r3(&base_ms),
        "attached_ms": r3(&att_ms),
        "baseline_cpu_ms": r3(&base_cpu),
        "attached_cpu_ms": r3(&att_cpu),
        "baseline_median_ms": round3(b::median(&base_ms)),
        "attached_median_ms": round3(b::median(&att_ms)),
        "median_us_per_op": median_us_per_op,
        "pair_diff_us_median_ci": j3(w_us),
        "pair_diff_pct_median_ci": j3(w_pct),
        "pair_cpu_diff_us_median_ci": j3(c_us),
        "pair_cpu_diff_pct_median_ci": j3(c_pct),
        "collector_cpu_us_per_event_median_ci": j3(coll),
        "collector_cpu_us_per_event_without_scrapes_median_ci":
            (!coll_no_scrapes.is_empty()).then(|| j3(ci(&coll_no_scrapes))),
        "collector_peak_rss_kib": peak_rss,
        "collector_attach_ms": r3(&attach_ms),
        "bpf_us_per_op_median_ci": if bpf.rounds > 0 { j3(ci(&bpf.per_op_us)) } else { json!(null) },
        "bpf_programs": bpf_json(&bpf),
        "events": runs.iter().map(|r| r.ours).collect::<Vec<_>>(),
        "expected_events": if a.getppid { 0 } else { a.files + 1 },
        "dropped": runs.iter().map(|r| r.dropped).collect::<Vec<_>>(),
        "peer_cmd": a.peer_cmd,
        "peer_ms": r3(&peer_ms),
        "peer_cpu_ms": r3(&peer_cpu),
        "peer_median_ms": if with_peer { json!(round3(b::median(&peer_ms))) } else { json!(null) },
        "peer_diff_us_median_ci": p3(pw_us),
        "peer_diff_pct_median_ci": p3(pw_pct),
        "peer_cpu_diff_us_median_ci": p3(pc_us),
        "peer_cpu_diff_pct_median_ci": p3(pc_pct),
        "cowprof_minus_peer_us_median_ci": p3(vs_w),
        "cowprof_minus_peer_cpu_us_median_ci": p3(vs_c),
        "overhead_ratio_median_ci": p3(ratio_w),
        "overhead_ratio_cpu_median_ci": p3(ratio_c),
        "peer_cpu_us_per_op_median_ci": p3(ci(&peer_us_per_op)),
        "peer_peak_rss_kib": if with_peer { Some(peer_peak_rss) } else { None },
        "peer_attach_ms": r3(&peer_attach_ms),
        "peer_histogram_samples": peer_runs.iter().map(|r| r.histogram_count).collect::<Vec<_>>(),
        "peer_is_floor": a.peer_is_floor,
        "peer_stop_nudges": peer_runs.iter().map(|r| r.nudges).collect::<Vec<_>>(),
        "peer_bpf_us_per_op_median_ci": if peer_bpf.rounds > 0 { j3(ci(&peer_bpf.per_op_us)) } else { json!(null) },
        "peer_bpf_programs": bpf_json(&peer_bpf),
        "mismatches": problems,
        "other_tracers": tracers,
    });
    println!("{line}");
    Ok(problems.is_empty())
}

fn main() -> ExitCode {
    b::bench_main("copyup_storm", parse_args, run)
}
