//! `cowprof bench --image ARCHIVE|REF`: the lab's `first_write`, `chmod` and `unlink` ops on an
//! imported image's own files, on its real layer stack, written as a lab `results.json`
//! (schema 1) so that the lab's readers (charts, compare, `image inspect --lab`) take it as is.
//!
//! Files are sampled per size bucket (< 4 KiB, 4–64 KiB, 64 KiB–1 MiB, 1–16 MiB, ≥ 16 MiB) and
//! per layer depth; a cell's `size_bytes` is its bucket's lower bound. Each op runs on a fresh
//! mount; `copy_ups` is the ground truth counted in the upper dir afterwards (regular files for
//! writes and chmods, whiteouts for unlinks), not a kernel event count.

use crate::fmt;
use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use super::{
    compare::{open_in, upper_truth, ImageStack},
    inspect::{self, Curve, Kind},
    io_err,
    store::Store,
    ImageError,
};
use crate::host::cancel::Cancel;
use crate::lab::results::{
    sha256_hex, Cell, Environment, Hist, Op, Results, RunResult, RESULTS_SCHEMA,
};

pub struct ImageBenchOptions {
    /// An archive/layout path (imported first) or an imported image's digest or tag.
    pub image: String,
    pub store: PathBuf,
    pub out: PathBuf,
    /// Files sampled per (size bucket, layer depth).
    pub files_per_cell: usize,
}

const BUCKETS: [u64; 5] = [0, 4 << 10, 64 << 10, 1 << 20, 16 << 20];
const OPS: [Op; 3] = [Op::FirstWrite, Op::Chmod, Op::Unlink];

fn bucket(size: u64) -> u64 {
    BUCKETS
        .iter()
        .rev()
        .copied()
        .find(|b| size >= *b)
        .unwrap_or(0)
}

fn run_op(merged: &Path, op: Op, path: &str) -> std::io::Result<u64> {
    let t = Instant::now();
    match op {
        Op::FirstWrite => {
            let mut f = open_in(merged, path, true)?;
            f.write_all(b"\n")?;
        }
        Op::Chmod => {
            let f = open_in_path(merged, path)?;
            rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(0o640))?;
        }
        _ => {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let d = open_in_dir(merged, dir)?;
            rustix::fs::unlinkat(&d, name, rustix::fs::AtFlags::empty())?;
        }
    }
    Ok(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

fn open_in_at(
    merged: &Path,
    p: &str,
    flags: rustix::fs::OFlags,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        merged,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let p = p.trim_start_matches('/');
    Ok(rustix::fs::openat2(
        &root,
        if p.is_empty() { "." } else { p },
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )?)
}

/// An `O_PATH` fd cannot be fchmod'ed; a read-only open does not copy up, the chmod does.
fn open_in_path(merged: &Path, p: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    open_in_at(merged, p, rustix::fs::OFlags::RDONLY)
}

fn open_in_dir(merged: &Path, p: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    open_in_at(
        merged,
        p,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
    )
}

/// Runs the ops and returns the results (also written to `out/results.json`).
#[expect(
    clippy::too_many_lines,
    reason = "one pass over an image's files: mount, time each op per size bucket, unmount; splitting it would pass the mounted stack through every piece"
)]
pub fn bench(
    opts: &ImageBenchOptions,
    cancel: Option<&Cancel>,
    log: &mut impl Write,
) -> Result<Results, ImageError> {
    let started = Instant::now();
    let store = Store::open(&opts.store)?;
    let rec = if Path::new(&opts.image).exists() {
        let bar = super::progress::ImportBar::new();
        let r = store.import(
            Path::new(&opts.image),
            super::unpack::Limits::default(),
            cancel,
            |s| bar.step(s),
        )?;
        bar.finish();
        r.images
            .into_iter()
            .next()
            .ok_or_else(|| ImageError::Archive {
                archive: opts.image.clone(),
                reason: "holds no image".into(),
            })?
    } else {
        store.find(&opts.image)?
    };
    let (_, view) = inspect::inspect(&store, &rec, &Curve::none())?;
    let n_layers = rec.layers.len();
    // (bucket, depth) -> sampled paths, spread evenly over the sorted candidates.
    let mut groups: BTreeMap<(u64, u32), Vec<(String, u64)>> = BTreeMap::new();
    for (p, (k, layer)) in &view {
        if let Kind::File { size } = k {
            let depth = u32::try_from(n_layers - layer).unwrap_or(u32::MAX);
            groups
                .entry((bucket(*size), depth))
                .or_default()
                .push((p.clone(), *size));
        }
    }
    let n = opts.files_per_cell.max(1);
    for v in groups.values_mut() {
        if v.len() > n {
            let step = v.len() / n;
            *v = v.iter().step_by(step).take(n).cloned().collect();
        }
    }
    let mut cells = Vec::new();
    let per_op: u64 = groups.values().map(|v| v.len() as u64).sum();
    let bar = super::progress::bar(
        per_op * OPS.len() as u64,
        "{elapsed_precise} [{bar:30}] {pos}/{len} files {msg}",
    );
    for op in OPS {
        bar.set_message(op.as_str());
        // One fresh mount per op: every sampled file is copied up (or whited out) exactly once.
        let stack = ImageStack::mount(&store, &rec)?;
        let mut cells_of_op = Vec::new();
        let mut ops_done = 0u64;
        for ((b, depth), files) in &groups {
            let mut h = Hist::default();
            let (mut sum_ns, mut sum_bytes) = (0u64, 0u64);
            for (p, size) in files {
                if cancel.is_some_and(Cancel::is_set) {
                    return Err(ImageError::Interrupted);
                }
                let ns = run_op(&stack.merged, op, p).map_err(io_err(
                    format!("{op} on"),
                    stack.merged.join(p.trim_start_matches('/')),
                ))?;
                h.record(ns);
                sum_ns += ns;
                sum_bytes += size;
                ops_done += 1;
                bar.inc(1);
            }
            // Without metacopy both a first write and a chmod copy the whole file up.
            let copied = if op == Op::Unlink { 0 } else { sum_bytes };
            #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
            let mb_per_s =
                (copied > 0 && sum_ns > 0).then(|| copied as f64 / (sum_ns as f64 / 1e9) / 1e6);
            cells_of_op.push(Cell {
                op,
                size_bytes: *b,
                layer_depth: *depth,
                latency: h.stats(),
                kernel: None,
                // As in the lab: an unlink is a whiteout, not a copy-up.
                copy_ups: if op == Op::Unlink {
                    0
                } else {
                    files.len() as u64
                },
                whiteouts: if op == Op::Unlink {
                    files.len() as u64
                } else {
                    0
                },
                bytes_copied: copied,
                mb_per_s,
                reference_p50_ns: None,
                efficiency: None,
                threads: 1,
                repetitions: files.len() as u64,
                wall: None,
                outcomes: BTreeMap::new(),
                phase_latency: BTreeMap::new(),
                phases: None,
            });
        }
        let (files, _, whiteouts) = upper_truth(&stack.upper);
        let truth = if op == Op::Unlink { whiteouts } else { files };
        if truth != ops_done {
            let _ = writeln!(
                log,
                "cowprof bench: note: {op}: {ops_done} ops but {truth} entries in the upper dir (hardlinked files share one copy-up)"
            );
        }
        drop(stack);
        cells.extend(cells_of_op);
    }
    let results = Results {
        schema: RESULTS_SCHEMA,
        environment: Environment::capture(None, SystemTime::now()),
        spec_hash: sha256_hex(&format!("image {} files_per_cell {n}", rec.id)),
        runs: vec![RunResult {
            fs: "dir".into(),
            fs_features: vec![format!("image={}", rec.id)],
            mount_options: Vec::new(),
            cache: "warm".into(),
            layers: u32::try_from(n_layers).unwrap_or(u32::MAX),
            cells,
            plain_create: None,
        }],
        skipped: Vec::new(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    fs::create_dir_all(&opts.out).map_err(io_err("creating", &opts.out))?;
    let p = opts.out.join("results.json");
    fs::write(&p, serde_json::to_vec_pretty(&results).unwrap_or_default())
        .map_err(io_err("writing", &p))?;
    Ok(results)
}

/// `cowprof bench --image`: runs and prints a table.
pub fn main(opts: &ImageBenchOptions, out: &mut dyn Write) -> Result<(), ImageError> {
    let cancel = Cancel::install().map_err(ImageError::Signals)?;
    let r = bench(opts, Some(&cancel), &mut std::io::stderr())?;
    let _ = writeln!(
        out,
        "{:<12}  {:>10}  {:>5}  {:>5}  {:>10}  {:>10}",
        "op", "size ≥", "depth", "n", "p50", "p99"
    );
    for c in &r.runs[0].cells {
        let _ = writeln!(
            out,
            "{:<12}  {:>10}  {:>5}  {:>5}  {:>10}  {:>10}",
            c.op,
            fmt::bytes(c.size_bytes),
            c.layer_depth,
            c.latency.count,
            fmt::ns(c.latency.p50_ns),
            fmt::ns(c.latency.p99_ns)
        );
    }
    let _ = writeln!(
        out,
        "\nbench: image {} ({}), {} cells; wrote {}",
        fmt::short_digest(r.runs[0].fs_features[0].trim_start_matches("image=")),
        opts.image,
        r.runs[0].cells.len(),
        opts.out.join("results.json").display()
    );
    let _ = out.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_lower_bound() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(4095), 0);
        assert_eq!(bucket(4096), 4096);
        assert_eq!(bucket(8 << 20), 1 << 20);
        assert_eq!(bucket(1 << 30), 16 << 20);
    }
}
