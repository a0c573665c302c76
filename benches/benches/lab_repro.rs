//! Reproducibility of `cowprof bench`: runs the same spec twice (the built-in default unless
//! --spec) with the release `cowprof`, or reads two existing results.json (--a/--b), and compares
//! the per-cell medians. A cell is (fs, options, cache, op, size, depth, threads); its change is
//! `p50(b) / p50(a) - 1` (for the concurrent ops the p50 of the wall time per repetition: the
//! per-thread latencies of a race are bimodal, one copy-up and N-1 waiters).
//!
//! The check: a cell agrees when `|p50(b) - p50(a)| <= max(tolerance * p50(a), IQR(a), IQR(b))`.
//! The IQR term is the sampling noise of a median: for n samples its standard error is about
//! 0.93 IQR / sqrt(n), so with the default 10 repetitions the difference of two medians has a
//! standard error of about 0.41 IQR and one IQR is about 2.4 of them. The check passes when at
//! least --quorum of the cells (default 0.9) agree on their absolute medians.
//!
//! Also reported, as `cowprof compare` would see the same two files: the disk-backed cells that
//! have a same-run reference (plain copy + fsync of the same bytes) compared on their
//! normalized median (`compare::diff::normalized_p50`, the same band relative to the p50), and
//! the share "as compare judges" (in-memory filesystems absolute, disk-backed normalized where a
//! reference exists; the disk-backed metadata ops without a size, `create`, `rmdir_recreate`
//! and `rename_dir`, normalized by the run's `create` on the plain backing fs, listed apart as
//! that is not what `compare` does). Per backing fs: agreement and |Δp50| (median, p90, max); the within-run
//! spread (IQR / p50); per run: wall time, load average before and after, and the host disk's
//! speed before and after (64 MiB O_DIRECT write, 4 KiB O_DIRECT|O_DSYNC writes in /tmp).
//!
//! ```text
//! cargo bench -p cowprof-benches --bench lab_repro -- [--spec FILE] [--out DIR] [--cowprof PATH]
//!     [--tolerance 0.25] [--quorum 0.9] [--a A.json --b B.json]
//! ```
//!
//! Run as root (the bench mounts). Prints a summary, the worst cells and one JSON line
//! (`"bench":"lab_repro"`). Exit 0 if the check passed, 1 if not or on an error, 2 on usage.

use std::{
    collections::BTreeMap,
    env, fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _, Result};
use cowprof::{
    compare::diff::normalized_p50,
    lab::results::{Results, RunResult},
};
use serde_json::json;

const USAGE: &str = "usage: cargo bench -p cowprof-benches --bench lab_repro -- [--spec FILE] [--out DIR] [--cowprof PATH] [--tolerance F] [--quorum F] [--a A.json --b B.json]";

struct Args {
    spec: Option<PathBuf>,
    out: PathBuf,
    cowprof: Option<PathBuf>,
    tolerance: f64,
    quorum: f64,
    a: Option<PathBuf>,
    b: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        spec: None,
        // cargo runs benches in the package directory: anchor at the workspace's target/.
        out: workspace_root().join("target/lab-repro"),
        cowprof: None,
        tolerance: 0.25,
        quorum: 0.9,
        a: None,
        b: None,
    };
    let mut it = env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value; {USAGE}"));
        match arg.as_str() {
            "--spec" => a.spec = Some(val("--spec")?.into()),
            "--out" => a.out = val("--out")?.into(),
            "--cowprof" => a.cowprof = Some(val("--cowprof")?.into()),
            "--a" => a.a = Some(val("--a")?.into()),
            "--b" => a.b = Some(val("--b")?.into()),
            "--tolerance" | "--quorum" => {
                let v: f64 = val(&arg)?
                    .parse()
                    .ok()
                    .filter(|v: &f64| *v > 0.0 && *v <= 10.0)
                    .ok_or(format!("{arg} needs a number such as 0.25; {USAGE}"))?;
                if arg == "--tolerance" {
                    a.tolerance = v;
                } else {
                    a.quorum = v.min(1.0);
                }
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if a.a.is_some() != a.b.is_some() {
        return Err(format!("--a and --b go together; {USAGE}"));
    }
    Ok(a)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// One `cowprof bench` run into `out`; returns its results.json path and wall time.
fn bench_once(a: &Args, out: &Path, charts: bool) -> Result<(PathBuf, f64)> {
    let bin = a
        .cowprof
        .clone()
        .or_else(|| env::var_os("COWPROF_BIN").map(PathBuf::from))
        .unwrap_or_else(|| workspace_root().join("target/release/cowprof"));
    let mut cmd = Command::new(&bin);
    cmd.arg("bench").arg("--out").arg(out);
    if let Some(s) = &a.spec {
        cmd.arg("--spec").arg(s);
    }
    if !charts {
        cmd.arg("--no-charts");
    }
    eprintln!("lab_repro: {cmd:?}");
    let t0 = std::time::Instant::now();
    let st = cmd
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    if !st.success() {
        bail!("{} bench exited with {st}", bin.display());
    }
    Ok((out.join("results.json"), secs))
}

fn read(p: &Path) -> Result<Results> {
    let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

type Key = (String, String, String, String, u64, u32, u32);

/// What one cell contributes: its median, quartiles (of the wall time for concurrent ops) and
/// the median normalized by its run's reference (`cowprof compare`'s notion), if it has one.
#[derive(Clone, Copy)]
struct CellStat {
    p50: u64,
    p25: u64,
    p75: u64,
    normalized: Option<(f64, Basis)>,
}

/// What a normalized median was divided by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Basis {
    /// The run's plain copy + fsync of the same bytes (`cowprof compare`'s normalization).
    Reference,
    /// The run's `create` on the plain backing fs (metadata ops, no size).
    PlainCreate,
}

/// Ops without a size to copy: their same-run reference is `create` on the plain backing fs.
const METADATA_OPS: &[&str] = &["create", "rmdir_recreate", "rename_dir"];

#[allow(clippy::cast_precision_loss)]
fn cells(r: &Results) -> BTreeMap<Key, CellStat> {
    use cowprof::lab::results::Cell;
    let mut m = BTreeMap::new();
    for run in &r.runs {
        let RunResult {
            fs,
            mount_options,
            cache,
            plain_create,
            ..
        } = run;
        let plain = plain_create.as_ref().map(|p| p.p50_ns).filter(|p| *p > 0);
        let pick = |c: &Cell| {
            let l = c.wall.as_ref().unwrap_or(&c.latency);
            // `cowprof compare`'s normalized p50 where the cell has a reference; the metadata
            // ops by the run's plain create; the wall-time cells (concurrent ops) not at all.
            let normalized = if c.wall.is_some() {
                None
            } else if let Some(n) = normalized_p50(c) {
                Some((n, Basis::Reference))
            } else if METADATA_OPS.contains(&c.op.as_str()) {
                plain.map(|p| (l.p50_ns as f64 / p as f64, Basis::PlainCreate))
            } else {
                None
            };
            CellStat {
                p50: l.p50_ns,
                p25: l.p25_ns,
                p75: l.p75_ns,
                normalized,
            }
        };
        for c in &run.cells {
            m.insert(
                (
                    fs.clone(),
                    mount_options.join(","),
                    cache.clone(),
                    c.op.to_string(),
                    c.size_bytes,
                    c.layer_depth,
                    c.threads,
                ),
                pick(c),
            );
        }
    }
    m
}

#[allow(clippy::cast_precision_loss)]
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Backing filesystems that live in memory: their absolute medians are what a user compares.
fn in_memory(fs: &str) -> bool {
    fs == "tmpfs"
}

/// The host disk's speed right now: a 64 MiB write with O_DIRECT in 1 MiB blocks (MB/s) and
/// 200 synchronous 4 KiB O_DIRECT|O_DSYNC writes (µs each, median), in a file under `dir`.
#[allow(clippy::cast_precision_loss)]
fn disk_probe(dir: &Path) -> Result<(f64, f64)> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let path = dir.join(format!(".lab-repro-disk-probe-{}", std::process::id()));
    let layout = std::alloc::Layout::from_size_align(1 << 20, 4096).expect("valid layout");
    // SAFETY: non-zero size; freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    anyhow::ensure!(!ptr.is_null(), "out of memory");
    // SAFETY: ptr is valid for 1 MiB of initialized (zeroed) bytes until dealloc.
    let buf = unsafe { std::slice::from_raw_parts(ptr, 1 << 20) };
    let result = (|| -> Result<(f64, f64)> {
        let open = |flags: i32| {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(flags)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))
        };
        let mut f = open(libc::O_DIRECT)?;
        let t = std::time::Instant::now();
        for _ in 0..64 {
            f.write_all(buf)?;
        }
        f.sync_all()?;
        let mbps = 64.0 * 1.048_576 / t.elapsed().as_secs_f64();
        let mut f = open(libc::O_DIRECT | libc::O_DSYNC)?;
        let mut us = Vec::with_capacity(200);
        for _ in 0..200 {
            let t = std::time::Instant::now();
            f.write_all(&buf[..4096])?;
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        us.sort_by(f64::total_cmp);
        Ok((mbps, quantile(&us, 0.5)))
    })();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    let _ = fs::remove_file(&path);
    result
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One side of a bench run: wall time, load before and after, disk before and after.
struct RunInfo {
    secs: f64,
    load_before: String,
    load_after: String,
    disk_before: Option<(f64, f64)>,
    disk_after: Option<(f64, f64)>,
}

fn measured_run(a: &Args, out: &Path, charts: bool) -> Result<(PathBuf, RunInfo)> {
    let probe_dir = Path::new("/tmp");
    let disk_before = disk_probe(probe_dir).ok();
    let load_before = loadavg();
    let (p, secs) = bench_once(a, out, charts)?;
    let load_after = loadavg();
    let disk_after = disk_probe(probe_dir).ok();
    Ok((
        p,
        RunInfo {
            secs,
            load_before,
            load_after,
            disk_before,
            disk_after,
        },
    ))
}

/// Share of agreeing cells and the sorted |relative change| of a set of cells.
#[derive(Default)]
struct Tally {
    cells: usize,
    agree: usize,
    abs: Vec<f64>,
    /// Within-run spread of the cells (IQR / p50 of the first run).
    spread: Vec<f64>,
}

impl Tally {
    fn add(&mut self, change: f64, agrees: bool, spread: f64) {
        self.cells += 1;
        self.agree += usize::from(agrees);
        self.abs.push(change.abs());
        self.spread.push(spread);
    }

    /// Cells whose change is within ±`tolerance` alone (no IQR term).
    fn within(&self, tolerance: f64) -> usize {
        self.abs.iter().filter(|d| **d <= tolerance).count()
    }

    #[allow(clippy::cast_precision_loss)]
    fn frac(&self) -> f64 {
        if self.cells == 0 {
            f64::NAN
        } else {
            self.agree as f64 / self.cells as f64
        }
    }

    fn finish(&mut self) {
        self.abs.sort_by(f64::total_cmp);
        self.spread.sort_by(f64::total_cmp);
    }

    #[allow(clippy::cast_precision_loss)]
    fn line(&self, what: &str, tolerance: f64) -> String {
        format!(
            "{what}: {}/{} agree ({:.1} %), {:.1} % within ±{:.0} % alone; |Δp50| median {:.1} %, p90 {:.1} %, max {:.1} %; IQR/p50 median {:.1} %",
            self.agree,
            self.cells,
            100.0 * self.frac(),
            100.0 * self.within(tolerance) as f64 / self.cells.max(1) as f64,
            100.0 * tolerance,
            100.0 * quantile(&self.abs, 0.5),
            100.0 * quantile(&self.abs, 0.9),
            100.0 * self.abs.last().copied().unwrap_or(f64::NAN),
            100.0 * quantile(&self.spread, 0.5),
        )
    }

    fn json(&self, tolerance: f64) -> serde_json::Value {
        json!({"cells": self.cells, "agree": self.agree, "frac": self.frac(),
            "within_tolerance": self.within(tolerance),
            "abs_change_p50": quantile(&self.abs, 0.5), "abs_change_p90": quantile(&self.abs, 0.9),
            "abs_change_max": self.abs.last(), "spread_iqr_rel_p50": quantile(&self.spread, 0.5),
            "spread_iqr_rel_p90": quantile(&self.spread, 0.9)})
    }
}

#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
fn run(a: &Args) -> Result<(bool, serde_json::Value)> {
    let (pa, pb, infos) = match (&a.a, &a.b) {
        (Some(x), Some(y)) => (x.clone(), y.clone(), vec![]),
        _ => {
            let (x, i1) = measured_run(a, &a.out.join("run-1"), true)?;
            let (y, i2) = measured_run(a, &a.out.join("run-2"), false)?;
            (x, y, vec![i1, i2])
        }
    };
    let (ra, rb) = (read(&pa)?, read(&pb)?);
    println!("lab_repro: load average now {}", loadavg());
    if ra.spec_hash != rb.spec_hash {
        bail!(
            "the two runs used different specs ({} vs {})",
            ra.spec_hash,
            rb.spec_hash
        );
    }
    let (ca, cb) = (cells(&ra), cells(&rb));
    let mut changes: Vec<(f64, &Key, u64, u64)> = Vec::new();
    let mut spreads = Vec::new();
    // Absolute medians, all cells and per backing fs; normalized medians of the disk-backed
    // cells with a reference; and the verdict as a user judges it: absolute on in-memory
    // filesystems, normalized on disk-backed ones where a reference exists, absolute where not.
    let mut absolute = Tally::default();
    let mut by_fs: BTreeMap<String, Tally> = BTreeMap::new();
    let mut normalized = Tally::default();
    let mut by_plain = Tally::default();
    let mut metadata_abs = Tally::default();
    let mut judged = Tally::default();
    let mut judged_by_fs: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failing: Vec<(f64, &Key, &'static str)> = Vec::new();
    let mut abs_failing: Vec<(f64, &Key)> = Vec::new();
    for (k, sa) in &ca {
        let Some(sb) = cb.get(k) else {
            continue;
        };
        if sa.p50 == 0 || sb.p50 == 0 {
            continue;
        }
        let change = sb.p50 as f64 / sa.p50 as f64 - 1.0;
        changes.push((change, k, sa.p50, sb.p50));
        let iqr_a = sa.p75.saturating_sub(sa.p25) as f64;
        let iqr_b = sb.p75.saturating_sub(sb.p25) as f64;
        let band = (a.tolerance * sa.p50 as f64).max(iqr_a).max(iqr_b);
        let abs_ok = (sb.p50.abs_diff(sa.p50) as f64) <= band;
        let spread = iqr_a / sa.p50 as f64;
        absolute.add(change, abs_ok, spread);
        if !abs_ok {
            abs_failing.push((change, k));
        }
        by_fs
            .entry(k.0.clone())
            .or_default()
            .add(change, abs_ok, spread);
        spreads.push(iqr_a / sa.p50 as f64);
        if !in_memory(&k.0) && METADATA_OPS.contains(&k.3.as_str()) {
            metadata_abs.add(change, abs_ok, spread);
        }
        // The same band, relative: max(tolerance, either run's IQR / p50).
        let rel_band = a
            .tolerance
            .max(iqr_a / sa.p50 as f64)
            .max(iqr_b / sb.p50 as f64);
        let norm = match (sa.normalized, sb.normalized) {
            (Some((x, basis)), Some((y, _))) if !in_memory(&k.0) && x > 0.0 => {
                let nc = y / x - 1.0;
                let ok = nc.abs() <= rel_band;
                match basis {
                    Basis::Reference => {
                        normalized.add(nc, ok, spread);
                        Some((nc, ok))
                    }
                    // Not what `compare` does: reported apart, not in the "as compare judges".
                    Basis::PlainCreate => {
                        by_plain.add(nc, ok, spread);
                        None
                    }
                }
            }
            _ => None,
        };
        let (jc, jok, basis) = norm.map_or((change, abs_ok, "absolute"), |(nc, ok)| {
            (nc, ok, "normalized")
        });
        judged.add(jc, jok, spread);
        judged_by_fs
            .entry(k.0.clone())
            .or_default()
            .add(jc, jok, spread);
        if !jok {
            failing.push((jc, k, basis));
        }
    }
    if changes.is_empty() {
        bail!("no cells in common");
    }
    for t in [
        &mut absolute,
        &mut normalized,
        &mut by_plain,
        &mut metadata_abs,
        &mut judged,
    ]
    .into_iter()
    .chain(by_fs.values_mut())
    .chain(judged_by_fs.values_mut())
    {
        t.finish();
    }
    spreads.sort_by(f64::total_cmp);
    let pass = absolute.frac() >= a.quorum;
    let tol = format!("max(±{:.0} %, IQR)", 100.0 * a.tolerance);
    println!(
        "lab_repro: {} cells; a cell agrees when |Δp50| <= {tol}",
        changes.len()
    );
    println!(
        "lab_repro: {} (need {:.0} %) -> {}",
        absolute.line("absolute, all cells", a.tolerance),
        100.0 * a.quorum,
        if pass { "PASS" } else { "FAIL" }
    );
    for (fs, t) in &by_fs {
        println!(
            "lab_repro:   {}",
            t.line(&format!("absolute, fs={fs}"), a.tolerance)
        );
    }
    println!(
        "lab_repro: {}",
        normalized.line(
            "normalized by the run's reference (disk-backed cells with one)",
            a.tolerance
        )
    );
    println!(
        "lab_repro: {}",
        metadata_abs.line(
            "disk-backed metadata ops (create, rmdir_recreate, rename_dir), absolute",
            a.tolerance
        )
    );
    println!(
        "lab_repro: {}",
        by_plain.line(
            "the same, normalized by the run's plain create",
            a.tolerance
        )
    );
    for (fs, t) in &judged_by_fs {
        println!(
            "lab_repro:   {}",
            t.line(&format!("as compare judges, fs={fs}"), a.tolerance)
        );
    }
    println!(
        "lab_repro: {}",
        judged.line("as compare judges (in-memory fs absolute; disk-backed normalized where a reference exists)", a.tolerance)
    );
    println!(
        "lab_repro: within-run spread (IQR/p50): median {:.1} %, p90 {:.1} %",
        100.0 * quantile(&spreads, 0.5),
        100.0 * quantile(&spreads, 0.9)
    );
    for (i, r) in infos.iter().enumerate() {
        let disk = |d: Option<(f64, f64)>| {
            d.map_or("-".to_owned(), |(mbps, us)| {
                format!("{mbps:.0} MB/s direct, 4K dsync {us:.0} µs")
            })
        };
        println!(
            "lab_repro: run {}: {:.1} s, load {} -> {}; disk before: {}; after: {}",
            i + 1,
            r.secs,
            r.load_before,
            r.load_after,
            disk(r.disk_before),
            disk(r.disk_after)
        );
    }
    changes.sort_by(|x, y| y.0.abs().total_cmp(&x.0.abs()));
    let label = |k: &Key| {
        format!(
            "{} {} {} {} {}B l{} x{}",
            k.0,
            if k.1.is_empty() { "-" } else { &k.1 },
            k.2,
            k.3,
            k.4,
            k.5,
            k.6
        )
    };
    println!("lab_repro: largest absolute changes:");
    for (d, k, x, y) in changes.iter().take(8) {
        println!("  {:+6.1} %  {}: {x} -> {y} ns", 100.0 * d, label(k));
    }
    abs_failing.sort_by(|x, y| y.0.abs().total_cmp(&x.0.abs()));
    println!(
        "lab_repro: cells whose absolute medians disagree ({}):",
        abs_failing.len()
    );
    for (d, k) in abs_failing.iter().take(12) {
        println!("  {:+6.1} %  {}", 100.0 * d, label(k));
    }
    failing.sort_by(|x, y| y.0.abs().total_cmp(&x.0.abs()));
    println!(
        "lab_repro: cells that disagree as compare judges ({}):",
        failing.len()
    );
    for (d, k, basis) in failing.iter().take(12) {
        println!("  {:+6.1} % {basis}  {}", 100.0 * d, label(k));
    }
    let runs: Vec<_> = infos
        .iter()
        .map(|r| {
            json!({"seconds": r.secs, "load_before": r.load_before, "load_after": r.load_after,
                "disk_before_mb_s": r.disk_before.map(|d| d.0),
                "disk_before_4k_dsync_us": r.disk_before.map(|d| d.1),
                "disk_after_mb_s": r.disk_after.map(|d| d.0),
                "disk_after_4k_dsync_us": r.disk_after.map(|d| d.1)})
        })
        .collect();
    Ok((
        pass,
        json!({"bench": "lab_repro", "a": pa, "b": pb, "cells": changes.len(),
        "tolerance": a.tolerance, "quorum": a.quorum, "pass": pass,
        "absolute": absolute.json(a.tolerance),
        "absolute_by_fs": by_fs.iter().map(|(k, t)| (k.clone(), t.json(a.tolerance))).collect::<serde_json::Map<_, _>>(),
        "normalized": normalized.json(a.tolerance),
        "metadata_absolute": metadata_abs.json(a.tolerance),
        "metadata_by_plain_create": by_plain.json(a.tolerance),
        "judged": judged.json(a.tolerance),
        "judged_by_fs": judged_by_fs.iter().map(|(k, t)| (k.clone(), t.json(a.tolerance))).collect::<serde_json::Map<_, _>>(),
        "spread_iqr_rel_p50": quantile(&spreads, 0.5),
        "spread_iqr_rel_p90": quantile(&spreads, 0.9), "runs": runs}),
    ))
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lab_repro: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok((pass, v)) => {
            println!("{v}");
            if pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("lab_repro: {e:#}");
            ExitCode::from(1)
        }
    }
}
