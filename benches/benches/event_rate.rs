//! Event rate: the highest rate of CoW events the machine's cores produce, and whether `cowprof
//! record` takes all of them with its default ring buffer.
//!
//! One lower layer holds a directory per writer (`w0`, `w1`, ...) of N 4 KiB files. Every round
//! mounts a FRESH overlay over it on the bench's own tmpfs and forks one writer process per
//! online CPU (`--writers`), each pinned to its own CPU. At one signal they all start; each goes
//! through its directory alternating a first write (open `O_WRONLY|O_APPEND`, write 1 byte,
//! close: a data copy-up) and an unlink (a whiteout). The round's rate is its events (N/2 data
//! copy-ups and N/2 whiteouts per writer, and each writer's directory copy-up) over the time from
//! the first writer's start to the last one's end. Baseline rounds run untraced, attached rounds
//! under `cowprof record` (a separate process started after the mount, output to a file read
//! after it exits, stopped with SIGINT after the writers), in ABBA order after W warm-up rounds.
//!
//! Checked in every round: the upper layer holds exactly N/2 copied-up files and N/2 whiteouts
//! per writer's directory (the ground truth); in attached rounds the collector reported exactly
//! those events by kind on this mount, its summary counts every line, it dropped nothing and
//! exited 0. Reported: the rate of each mode (median with a 95 % bootstrap interval), the median
//! per-pair difference in percent, the collector's CPU per event (user + system after it said it
//! was attached) and its share of a core while the writers ran, its peak RSS. Exit status: 0; 1 on
//! an error, a mismatch or a drop; 2 on bad options; 130 on SIGINT/SIGTERM (after cleanup).
//!
//! ```text
//! cargo bench -p cowprof-benches --bench event_rate -- [--files N] [--writers W] [--rounds PAIRS]
//!     [--warmup W] [--backend kprobe|tracepoint] [--cowprof PATH] [--output json|metrics] [--gap-ms MS]
//! ```
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt as _, fs::FileTypeExt as _},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use cowprof_benches::{self as b, Collector, CollectorRun, Output, Overlay, Scratch};
use serde_json::json;

const USAGE: &str = "usage: event_rate [--files N] [--writers W] [--rounds PAIRS] [--warmup W] \
                     [--backend kprobe|tracepoint] [--cowprof PATH] [--output json|metrics] [--gap-ms MS]";
const START_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(180);

struct Args {
    /// Files per writer.
    files: usize,
    writers: usize,
    pairs: usize,
    warmup: usize,
    backend: String,
    cowprof: Option<std::path::PathBuf>,
    output: Output,
    gap: Duration,
}

fn online_cpus() -> usize {
    // SAFETY: a plain sysconf query.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        files: 20_000,
        writers: online_cpus(),
        pairs: 10,
        warmup: 1,
        backend: "tracepoint".to_owned(),
        cowprof: None,
        output: Output::Json,
        gap: Duration::from_millis(500),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .with_context(|| format!("{arg} needs {what}; {USAGE}"))
        };
        let num = |v: String, what: &str| -> Result<usize> {
            v.parse()
                .with_context(|| format!("{what} {v}: not a number; {USAGE}"))
        };
        match arg.as_str() {
            "--files" => a.files = num(value("a number")?, "--files")?,
            "--writers" => a.writers = num(value("a number")?, "--writers")?,
            "--rounds" => a.pairs = num(value("a number")?, "--rounds")?,
            "--warmup" => a.warmup = num(value("a number")?, "--warmup")?,
            "--gap-ms" => {
                a.gap = Duration::from_millis(num(value("milliseconds")?, "--gap-ms")? as u64)
            }
            "--backend" => a.backend = value("kprobe or tracepoint")?,
            "--cowprof" => a.cowprof = Some(value("a path")?.into()),
            "--output" => {
                a.output = match Output::parse(&value("json or metrics")?) {
                    Some(o @ (Output::Json | Output::Metrics)) => o,
                    _ => bail!("--output: json or metrics; {USAGE}"),
                }
            }
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown option {arg}; {USAGE}"),
        }
    }
    if a.files < 2 || a.writers == 0 || a.pairs == 0 {
        bail!("--files must be at least 2, --writers and --rounds at least 1; {USAGE}");
    }
    Ok(a)
}

fn writer_dir(w: usize) -> String {
    format!("w{w}")
}

/// `lower/w0 .. lower/w{W-1}`, `n` files of 4 KiB each.
fn make_lower(lower: &Path, writers: usize, n: usize) -> Result<()> {
    let block = vec![0x5au8; b::FILE_SIZE];
    for w in 0..writers {
        let dir = lower.join(writer_dir(w));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for i in 0..n {
            if i % 256 == 0 {
                b::check_stop()?;
            }
            let p = dir.join(b::file_name(i));
            fs::write(&p, &block).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    b::sync();
    Ok(())
}

/// Copy-ups (even indexes) and whiteouts (odd) a writer of `n` files makes.
fn split(n: usize) -> (usize, usize) {
    (n.div_ceil(2), n / 2)
}

/// What one writer process reports: its start and end (`CLOCK_MONOTONIC`, ns), its CPU time (ns)
/// and its first failing operation (0 = none, else index + 1) with its errno.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Report {
    start_ns: u64,
    end_ns: u64,
    cpu_ns: u64,
    failed_at: u64,
    errno: u64,
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: a zeroed timespec is valid; the clock id is a constant.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The writer, in the forked child: only system calls, then `_exit`.
fn writer(paths: &[CString], cpu: usize, go: libc::c_int, out: libc::c_int) -> ! {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
    }
    let mut byte = 0u8;
    // SAFETY: a 1-byte buffer; the pipe's read end is ours.
    let started = unsafe { libc::read(go, (&raw mut byte).cast(), 1) } == 1;
    let mut r = Report {
        start_ns: clock_ns(libc::CLOCK_MONOTONIC),
        ..Report::default()
    };
    for (i, p) in paths
        .iter()
        .enumerate()
        .take(if started { usize::MAX } else { 0 })
    {
        // SAFETY: NUL-terminated paths; the fd is closed on every path.
        let ok = unsafe {
            if i % 2 == 0 {
                let fd = libc::open(
                    p.as_ptr(),
                    libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
                );
                fd >= 0 && {
                    let n = libc::write(fd, b"+".as_ptr().cast(), 1);
                    libc::close(fd);
                    n == 1
                }
            } else {
                libc::unlink(p.as_ptr()) == 0
            }
        };
        if !ok {
            r.failed_at = i as u64 + 1;
            r.errno = io::Error::last_os_error().raw_os_error().unwrap_or(0) as u64;
            break;
        }
    }
    r.end_ns = clock_ns(libc::CLOCK_MONOTONIC);
    r.cpu_ns = clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    if !started {
        r.failed_at = u64::MAX;
    }
    // SAFETY: the report's bytes, written whole (less than PIPE_BUF); then the child ends
    // without running the parent's destructors.
    unsafe {
        libc::write(out, (&raw const r).cast(), std::mem::size_of::<Report>());
        libc::_exit(0)
    }
}

/// Forks the writers, starts them together, waits for them all. Returns their reports.
fn run_writers(paths: &[Vec<CString>]) -> Result<Vec<Report>> {
    let mut go = [0; 2];
    let mut out = [0; 2];
    // SAFETY: two-element arrays for the pipe ends.
    if unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } != 0
        || unsafe { libc::pipe2(out.as_mut_ptr(), libc::O_CLOEXEC) } != 0
    {
        return Err(io::Error::last_os_error()).context("pipe2");
    }
    let ncpu = online_cpus();
    let mut pids = Vec::new();
    for (w, p) in paths.iter().enumerate() {
        // SAFETY: the child only makes system calls (`writer`) and ends with `_exit`.
        match unsafe { libc::fork() } {
            -1 => break,
            0 => writer(p, w % ncpu, go[0], out[1]),
            pid => pids.push(pid),
        }
    }
    // SAFETY: our ends; the children hold their own copies.
    unsafe {
        libc::close(go[0]);
        libc::close(out[1]);
    }
    let forked = pids.len();
    // One byte per writer starts them all; closing the write end ends any writer left waiting.
    let go_bytes = vec![1u8; forked];
    // SAFETY: `forked` bytes from a live buffer; then our end of the pipe is closed once.
    unsafe {
        libc::write(go[1], go_bytes.as_ptr().cast(), forked);
        libc::close(go[1]);
    }
    let mut reports = Vec::new();
    for _ in 0..forked {
        let mut r = Report::default();
        // SAFETY: reads one whole report (written atomically) into a live value.
        let n = unsafe { libc::read(out[0], (&raw mut r).cast(), std::mem::size_of::<Report>()) };
        if n != std::mem::size_of::<Report>() as isize {
            break;
        }
        reports.push(r);
    }
    // SAFETY: our read end, closed once; each child reaped once.
    unsafe { libc::close(out[0]) };
    for pid in pids {
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
    }
    // Ctrl-C interrupts the read above: report it as such (exit 130), after the reaping.
    b::check_stop()?;
    if forked != paths.len() {
        bail!("fork: only {forked} of {} writers started", paths.len());
    }
    if reports.len() != forked {
        bail!("only {} of {forked} writers reported", reports.len());
    }
    Ok(reports)
}

/// Regular files and whiteouts (character devices 0/0) in `dir` of the upper layer.
fn upper_truth(dir: &Path) -> Result<(usize, usize)> {
    let (mut files, mut whiteouts) = (0, 0);
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in rd {
        let t = e?.file_type()?;
        if t.is_file() {
            files += 1;
        } else if t.is_char_device() {
            whiteouts += 1;
        }
    }
    Ok((files, whiteouts))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Baseline,
    Attached,
}

struct Round {
    mode: Mode,
    warmup: bool,
    /// Events per second over the writers' common span.
    rate: f64,
    span: Duration,
    writers_cpu: Duration,
    collector: Option<CollectorRun>,
    load: String,
}

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
    let paths: Vec<Vec<CString>> = (0..a.writers)
        .map(|w| {
            let d = ov.merged.join(writer_dir(w));
            (0..a.files)
                .map(|i| CString::new(d.join(b::file_name(i)).as_os_str().as_bytes()))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()
        .context("a path with a NUL byte")?;
    b::sync();
    let collector = match mode {
        Mode::Attached => {
            let out_dir = scratch.root.join("collector");
            fs::create_dir_all(&out_dir)?;
            let mut c = Collector::spawn(bin, Some(&a.backend), &[], a.output, &out_dir)?;
            c.wait_start(START_TIMEOUT)?;
            Some(c)
        }
        Mode::Baseline => None,
    };
    b::sync();
    std::thread::sleep(a.gap);
    b::check_stop()?;
    let load = b::load_average();
    let reports = run_writers(&paths)?;
    let run = match collector {
        Some(c) => Some(c.stop(&ov.merged, STOP_TIMEOUT)?),
        None => None,
    };
    let label = format!(
        "round {idx} ({})",
        if mode == Mode::Baseline {
            "baseline"
        } else {
            "attached"
        }
    );
    for (w, r) in reports.iter().enumerate() {
        if r.failed_at == u64::MAX {
            problems.push(format!("{label}: writer {w} never got the start signal"));
        } else if r.failed_at != 0 {
            problems.push(format!(
                "{label}: writer {w} failed at file {}: {}",
                r.failed_at - 1,
                io::Error::from_raw_os_error(r.errno as i32)
            ));
        }
    }
    let (copy_ups, whiteouts) = split(a.files);
    for w in 0..a.writers {
        let got = upper_truth(&ov.upper.join(writer_dir(w)))?;
        if got != (copy_ups, whiteouts) {
            problems.push(format!(
                "{label}: upper/{} holds {} files and {} whiteouts, expected {copy_ups} and {whiteouts}",
                writer_dir(w),
                got.0,
                got.1
            ));
        }
    }
    let events = (a.writers * (a.files + 1)) as u64;
    if let Some(r) = &run {
        let by = |k: &str| r.ours_by_kind.get(k).copied().unwrap_or(0);
        let kinds_ok = a.output == Output::Metrics
            || (by("data_copy_up") == (a.writers * copy_ups) as u64
                && by("whiteout") == (a.writers * whiteouts) as u64
                && by("dir_copy_up") == a.writers as u64);
        if r.ours != events || !kinds_ok {
            problems.push(format!(
                "{label}: {} events on the mount, expected {events} ({} data_copy_up, {} whiteout, {} dir_copy_up); by kind: {:?}",
                r.ours,
                a.writers * copy_ups,
                a.writers * whiteouts,
                a.writers,
                r.ours_by_kind
            ));
        }
        problems.extend(r.problems(&label));
    }
    drop(ov);
    let start = reports.iter().map(|r| r.start_ns).min().unwrap_or(0);
    let end = reports.iter().map(|r| r.end_ns).max().unwrap_or(0);
    let span = Duration::from_nanos(end.saturating_sub(start).max(1));
    Ok(Round {
        mode,
        warmup: false,
        rate: events as f64 / span.as_secs_f64(),
        span,
        writers_cpu: Duration::from_nanos(reports.iter().map(|r| r.cpu_ns).sum()),
        collector: run,
        load,
    })
}

fn fmt_ci((m, lo, hi): (f64, f64, f64), prec: usize) -> String {
    format!("{m:.prec$} [{lo:.prec$}, {hi:.prec$}]")
}

fn run(a: &Args) -> Result<bool> {
    let bin = b::cowprof_bin(a.cowprof.as_deref())?;
    let kernel = b::kernel_release();
    // Lower 1 page per file, upper 2 per copied-up file (4 KiB + the appended byte), slack.
    let tmpfs_bytes = (a.writers * a.files) as u64 * 16 * 1024 + (64 << 20);
    let events = a.writers * (a.files + 1);
    println!(
        "event_rate: {} writers on {} CPUs, {} files x 4 KiB each (first write or unlink, alternating): \
         {events} events per round; {} pairs (ABBA) after {} warm-up round(s); kernel {kernel}; backend {}; \
         output {}; collector {}; load {}",
        a.writers,
        online_cpus(),
        a.files,
        a.pairs,
        a.warmup,
        a.backend,
        a.output.name(),
        bin.display(),
        b::load_average()
    );
    let scratch = Scratch::create(&std::env::temp_dir(), Some(tmpfs_bytes))?;
    let lower = scratch.root.join("lower");
    make_lower(&lower, a.writers, a.files)?;
    // Warm-up rounds attached; then ABBA.
    let mut schedule: Vec<(Mode, bool)> = (0..a.warmup).map(|_| (Mode::Attached, true)).collect();
    for p in 0..a.pairs {
        let pair = if p % 2 == 0 {
            [Mode::Baseline, Mode::Attached]
        } else {
            [Mode::Attached, Mode::Baseline]
        };
        schedule.extend(pair.map(|m| (m, false)));
    }
    let mut rounds = Vec::new();
    let mut problems = Vec::new();
    for (idx, &(mode, warmup)) in schedule.iter().enumerate() {
        let mut round_problems = Vec::new();
        let mut r = run_round(idx, mode, a, &bin, &scratch, &lower, &mut round_problems)?;
        r.warmup = warmup;
        let mut line =
            format!(
            "round {idx:>2} {:<8}{} {:>9.1} ms {:>9.0} events/s (writers' cpu {:.1} ms)  load {}",
            if mode == Mode::Baseline { "baseline" } else { "attached" },
            if warmup { " (warm-up, discarded)" } else { "" },
            r.span.as_secs_f64() * 1e3,
            r.rate,
            r.writers_cpu.as_secs_f64() * 1e3,
            r.load
        );
        if let Some(c) = &r.collector {
            line += &format!(
                "  events {}/{events} drops {}  collector cpu {} ms after attach, {} ms while the writers ran  peak rss {} KiB",
                c.ours,
                c.dropped,
                c.cpu_after_start.map_or("?".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3)),
                c.storm_cpu.map_or("?".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3)),
                c.maxrss_kib
            );
        }
        println!("{line}");
        for p in &round_problems {
            println!("  MISMATCH {p}");
        }
        if !warmup {
            problems.extend(round_problems);
            rounds.push(r);
        }
    }
    let rates = |m: Mode| -> Vec<f64> {
        rounds
            .iter()
            .filter(|r| r.mode == m)
            .map(|r| r.rate)
            .collect()
    };
    let (base, att) = (rates(Mode::Baseline), rates(Mode::Attached));
    // Pairs in schedule order: (baseline, attached) of each.
    let mut diffs = Vec::new();
    let mut bs = rounds.iter().filter(|r| r.mode == Mode::Baseline);
    let mut ats = rounds.iter().filter(|r| r.mode == Mode::Attached);
    while let (Some(x), Some(y)) = (bs.next(), ats.next()) {
        diffs.push((y.rate - x.rate) / x.rate * 100.0);
    }
    let colls: Vec<&CollectorRun> = rounds.iter().filter_map(|r| r.collector.as_ref()).collect();
    let cpu_per_event: Vec<f64> = colls
        .iter()
        .filter_map(|c| c.cpu_after_start)
        .map(|d| d.as_secs_f64() * 1e6 / events as f64)
        .collect();
    let core_share: Vec<f64> = rounds
        .iter()
        .filter_map(|r| {
            Some(r.collector.as_ref()?.storm_cpu?.as_secs_f64() / r.span.as_secs_f64() * 100.0)
        })
        .collect();
    let drops: Vec<u64> = colls.iter().map(|c| c.dropped).collect();
    let peak = colls.iter().map(|c| c.maxrss_kib).max().unwrap_or(0);
    let ci = |v: &[f64]| b::median_ci(v, 4000);
    println!(
        "rate, untraced: {} events/s; under cowprof record: {} events/s [95 %]",
        fmt_ci(ci(&base), 0),
        fmt_ci(ci(&att), 0)
    );
    println!(
        "per-pair difference (attached - untraced): {} % [95 %]",
        fmt_ci(ci(&diffs), 1)
    );
    println!(
        "collector ({} output, default ring buffer): drops {:?}; CPU after attach {} µs per event; \
         {} % of one core while the writers ran; peak RSS {peak} KiB",
        a.output.name(),
        drops,
        fmt_ci(ci(&cpu_per_event), 2),
        fmt_ci(ci(&core_share), 0)
    );
    let ok = problems.is_empty();
    if ok {
        println!("every round exact: the upper layers and the collector's events agree, 0 drops");
    } else {
        println!(
            "{} problem(s): the figures above are not valid",
            problems.len()
        );
    }
    let r3 = |(m, lo, hi): (f64, f64, f64)| json!([m, lo, hi]);
    println!(
        "{}",
        json!({
            "bench": "event_rate",
            "kernel": kernel,
            "backend": a.backend,
            "output": a.output.name(),
            "writers": a.writers,
            "cpus": online_cpus(),
            "files_per_writer": a.files,
            "events_per_round": events,
            "pairs": a.pairs,
            "untraced_events_per_s": base,
            "attached_events_per_s": att,
            "untraced_events_per_s_median_ci": r3(ci(&base)),
            "attached_events_per_s_median_ci": r3(ci(&att)),
            "pair_diff_pct_median_ci": r3(ci(&diffs)),
            "collector_cpu_us_per_event_median_ci": r3(ci(&cpu_per_event)),
            "collector_core_pct_median_ci": r3(ci(&core_share)),
            "dropped": drops,
            "collector_peak_rss_kib": peak,
            "problems": problems,
        })
    );
    Ok(ok)
}

fn main() -> ExitCode {
    b::bench_main("event_rate", parse_args, run)
}
