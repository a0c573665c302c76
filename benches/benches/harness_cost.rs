//! The lab's own cost per op: the same op run bare (the syscalls alone) and through the lab's
//! timing wrapper (`cowprof::lab::workload::run_op`, which the bench's worker calls for every
//! measured op: path conversion, two monotonic clock reads around the syscalls, the op
//! dispatch). Both loops are timed from outside, over a batch of ops, so the difference of the
//! per-op times is what the wrapper adds. The worker's request/reply round trip is not part of
//! any measured number (the clock runs inside the worker, around the syscalls), so it is not
//! counted here.
//!
//! Ops: `rewrite` (open O_APPEND + write 1 byte + close of a plain file) and `chmod`, on a plain
//! file in --dir (default: a fresh directory under /dev/shm, i.e. tmpfs, where the syscalls are
//! cheapest and the wrapper's share is largest). Rounds alternate bare/wrapped; the table gives
//! medians over rounds of the per-op time. Target: ≤ 1 µs per op (reported, never enforced).
//!
//! ```text
//! cargo bench -p cowprof-benches --bench harness_cost -- [--ops N] [--rounds R] [--dir DIR]
//! ```
//!
//! Prints a table and one JSON line (`"bench":"harness_cost"`). Exit 0; 1 on an error; 2 on usage.

use std::{
    env,
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use cowprof::lab::{spec::Op, workload::run_op};
use serde_json::json;

const USAGE: &str =
    "usage: cargo bench -p cowprof-benches --bench harness_cost -- [--ops N] [--rounds R] [--dir DIR]";

struct Args {
    ops: u32,
    rounds: u32,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        ops: 5_000,
        rounds: 61,
        dir: None,
    };
    let mut it = env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<u32, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} needs a positive number; {USAGE}"))
        };
        match arg.as_str() {
            "--ops" => a.ops = num("--ops")?,
            "--rounds" => a.rounds = num("--rounds")?,
            "--dir" => {
                a.dir = Some(
                    it.next()
                        .ok_or(format!("--dir needs a path; {USAGE}"))?
                        .into(),
                )
            }
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(a)
}

/// The syscalls of `op` alone, as run_op makes them, without the wrapper.
fn bare(op: Op, c: &CString) -> Result<()> {
    // SAFETY: valid C string; the fd is closed here.
    unsafe {
        match op {
            Op::Rewrite => {
                let fd = libc::open(
                    c.as_ptr(),
                    libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    bail!("open: {}", std::io::Error::last_os_error());
                }
                let w = libc::write(fd, b"+".as_ptr().cast(), 1);
                libc::close(fd);
                if w != 1 {
                    bail!("write: {}", std::io::Error::last_os_error());
                }
            }
            Op::Chmod => {
                if libc::chmod(c.as_ptr(), 0o640) != 0 {
                    bail!("chmod: {}", std::io::Error::last_os_error());
                }
            }
            _ => bail!("{op} is not measured here"),
        }
    }
    Ok(())
}

/// Per-op ns of one batch of `n` ops, bare or through the wrapper.
fn batch(op: Op, path: &Path, n: u32, wrapped: bool, buf: &mut [u8]) -> Result<f64> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut inside = 0u64;
    let t0 = Instant::now();
    for _ in 0..n {
        if wrapped {
            let t = run_op(op, path, 0, buf).map_err(anyhow::Error::msg)?;
            inside = inside.wrapping_add(t.ns);
        } else {
            bare(op, &c)?;
        }
    }
    let total = t0.elapsed().as_nanos();
    std::hint::black_box(inside);
    #[allow(clippy::cast_precision_loss)]
    Ok(total as f64 / f64::from(n))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn run(a: &Args) -> Result<serde_json::Value> {
    let base = a.dir.clone().unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let dir = tempfile_dir(&base)?;
    let file = dir.join("f");
    let mut buf = vec![0u8; 1 << 20];
    let mut rows = Vec::new();
    println!(
        "{:<8} {:>8} {:>6} {:>12} {:>12} {:>12}",
        "OP", "OPS", "ROUNDS", "BARE/OP", "WRAPPED/OP", "COST/OP"
    );
    for op in [Op::Rewrite, Op::Chmod] {
        fs::write(&file, b"x").with_context(|| format!("writing {}", file.display()))?;
        // Warm-up: page cache, dentry, the first clock reads.
        batch(op, &file, a.ops / 10 + 1, false, &mut buf)?;
        batch(op, &file, a.ops / 10 + 1, true, &mut buf)?;
        let (mut b, mut w, mut d) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..a.rounds {
            // Pairs run back to back, alternating which goes first, so drift favours neither.
            let (x, y) = if i % 2 == 0 {
                let x = batch(op, &file, a.ops, false, &mut buf)?;
                (x, batch(op, &file, a.ops, true, &mut buf)?)
            } else {
                let y = batch(op, &file, a.ops, true, &mut buf)?;
                (batch(op, &file, a.ops, false, &mut buf)?, y)
            };
            b.push(x);
            w.push(y);
            d.push(y - x);
            // Keep the file small: appends grow it.
            fs::write(&file, b"x")?;
        }
        let (mb, mw) = (median(&mut b.clone()), median(&mut w.clone()));
        // The cost: the median of the paired differences.
        let cost = median(&mut d);
        let (q1, q3) = (d[d.len() / 4], d[d.len() * 3 / 4]);
        println!(
            "{:<8} {:>8} {:>6} {:>10.0}ns {:>10.0}ns {:>10.0}ns  (pairs' IQR {q1:.0} .. {q3:.0} ns)",
            op.as_str(),
            a.ops,
            a.rounds,
            mb,
            mw,
            cost
        );
        rows.push(
            json!({"op": op.as_str(), "bare_ns_per_op": mb, "wrapped_ns_per_op": mw,
            "cost_ns_per_op": cost, "cost_q1_ns": q1, "cost_q3_ns": q3,
            "bare_rounds_ns": b, "wrapped_rounds_ns": w}),
        );
    }
    let worst = rows
        .iter()
        .filter_map(|r| r["cost_ns_per_op"].as_f64())
        .fold(f64::MIN, f64::max);
    println!(
        "harness cost: at most {worst:.0} ns per op (target <= 1000 ns: {})",
        if worst <= 1000.0 { "met" } else { "NOT met" }
    );
    let _ = fs::remove_dir_all(&dir);
    Ok(
        json!({"bench": "harness_cost", "dir": base, "ops": a.ops, "rounds": a.rounds,
        "results": rows, "max_cost_ns_per_op": worst}),
    )
}

/// A fresh directory under `base`, named after this process.
fn tempfile_dir(base: &Path) -> Result<PathBuf> {
    let d = base.join(format!("cowprof-harness-cost-{}", std::process::id()));
    fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("harness_cost: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harness_cost: {e:#}");
            ExitCode::from(1)
        }
    }
}
