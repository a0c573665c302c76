//! Reproducibility of `cowprof bench`: runs the same spec twice (the built-in default unless
//! --spec) with the release `cowprof`, or reads two existing results.json (--a/--b), and compares
//! the per-cell medians. A cell is (fs, options, cache, op, size, depth, threads); its change is
//! `p50(b) / p50(a) - 1` (for the concurrent ops the p50 of the wall time per repetition: the
//! per-thread latencies of a race are bimodal, one copy-up and N-1 waiters). Reported: the
//! distribution of |change| over cells (median, p90, max), the worst cells, and the within-run
//! spread (IQR / p50) for comparison.
//!
//! The check: a cell agrees when `|p50(b) - p50(a)| <= max(tolerance * p50(a), IQR(a), IQR(b))`.
//! The IQR term is the sampling noise of a median: for n samples its standard error is about
//! 0.93 IQR / sqrt(n), so with the default 10 repetitions the difference of two medians has a
//! standard error of about 0.41 IQR and one IQR is about 2.4 of them. The check passes when at
//! least --quorum of the cells (default 0.9) agree; the share within the plain ±tolerance
//! (default 0.25) is printed too.
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
use cowprof::lab::results::{Results, RunResult};
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
        out: PathBuf::from("target/lab-repro"),
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

fn cells(r: &Results) -> BTreeMap<Key, (u64, u64, u64)> {
    use cowprof::lab::results::Cell;
    let pick = |c: &Cell| {
        let l = c.wall.as_ref().unwrap_or(&c.latency);
        (l.p50_ns, l.p25_ns, l.p75_ns)
    };
    let mut m = BTreeMap::new();
    for run in &r.runs {
        let RunResult {
            fs,
            mount_options,
            cache,
            ..
        } = run;
        for c in &run.cells {
            m.insert(
                (
                    fs.clone(),
                    mount_options.join(","),
                    cache.clone(),
                    c.op.clone(),
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

#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
fn run(a: &Args) -> Result<(bool, serde_json::Value)> {
    let (pa, pb, secs) = match (&a.a, &a.b) {
        (Some(x), Some(y)) => (x.clone(), y.clone(), vec![]),
        _ => {
            let (x, s1) = bench_once(a, &a.out.join("run-1"), true)?;
            let (y, s2) = bench_once(a, &a.out.join("run-2"), false)?;
            (x, y, vec![s1, s2])
        }
    };
    let (ra, rb) = (read(&pa)?, read(&pb)?);
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "lab_repro: load average now {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
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
    let mut agree = 0usize;
    for (k, (p50a, p25a, p75a)) in &ca {
        let Some((p50b, p25b, p75b)) = cb.get(k) else {
            continue;
        };
        if *p50a == 0 {
            continue;
        }
        changes.push((*p50b as f64 / *p50a as f64 - 1.0, k, *p50a, *p50b));
        let iqr = p75a.saturating_sub(*p25a).max(p75b.saturating_sub(*p25b));
        let band = (a.tolerance * *p50a as f64).max(iqr as f64);
        if (p50b.abs_diff(*p50a) as f64) <= band {
            agree += 1;
        }
        spreads.push(p75a.saturating_sub(*p25a) as f64 / *p50a as f64);
    }
    if changes.is_empty() {
        bail!("no cells in common");
    }
    let mut abs: Vec<f64> = changes.iter().map(|c| c.0.abs()).collect();
    abs.sort_by(f64::total_cmp);
    spreads.sort_by(f64::total_cmp);
    let within = changes.iter().filter(|c| c.0.abs() <= a.tolerance).count();
    let frac = agree as f64 / changes.len() as f64;
    let pass = frac >= a.quorum;
    // The same, for the cells slower than 100 µs (copy-ups of larger files, fsync-bound ops).
    let big: Vec<f64> = changes
        .iter()
        .filter(|c| c.2 >= 100_000)
        .map(|c| c.0.abs())
        .collect();
    let big_within = big.iter().filter(|d| **d <= a.tolerance).count();
    println!(
        "lab_repro: {} cells; |p50 change| median {:.1} %, p90 {:.1} %, max {:.1} %; within ±{:.0} %: {within} ({:.1} %); within max(±{:.0} %, IQR): {agree} ({:.1} %, need {:.0} %) -> {}",
        changes.len(),
        100.0 * quantile(&abs, 0.5),
        100.0 * quantile(&abs, 0.9),
        100.0 * abs.last().copied().unwrap_or(0.0),
        100.0 * a.tolerance,
        100.0 * within as f64 / changes.len() as f64,
        100.0 * a.tolerance,
        100.0 * frac,
        100.0 * a.quorum,
        if pass { "PASS" } else { "FAIL" }
    );
    println!(
        "lab_repro: cells with p50 >= 100 µs: {} of which {big_within} within ±{:.0} %; within-run spread (IQR/p50): median {:.1} %, p90 {:.1} %",
        big.len(),
        100.0 * a.tolerance,
        100.0 * quantile(&spreads, 0.5),
        100.0 * quantile(&spreads, 0.9)
    );
    if !secs.is_empty() {
        println!("lab_repro: run times {:.1} s and {:.1} s", secs[0], secs[1]);
    }
    changes.sort_by(|x, y| y.0.abs().total_cmp(&x.0.abs()));
    for (d, k, x, y) in changes.iter().take(8) {
        println!(
            "  {:+6.1} %  {} {} {} {} {}B l{} x{}: {x} -> {y} ns",
            100.0 * d,
            k.0,
            if k.1.is_empty() { "-" } else { &k.1 },
            k.2,
            k.3,
            k.4,
            k.5,
            k.6
        );
    }
    Ok((
        pass,
        json!({"bench": "lab_repro", "a": pa, "b": pb, "cells": changes.len(),
        "tolerance": a.tolerance, "quorum": a.quorum, "within": within, "agree": agree, "pass": pass,
        "abs_change_p50": quantile(&abs, 0.5), "abs_change_p90": quantile(&abs, 0.9),
        "abs_change_max": abs.last(), "cells_over_100us": big.len(),
        "cells_over_100us_within": big_within, "spread_iqr_rel_p50": quantile(&spreads, 0.5),
        "spread_iqr_rel_p90": quantile(&spreads, 0.9), "run_seconds": secs}),
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
