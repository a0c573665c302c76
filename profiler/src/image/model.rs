//! The cost model of `image inspect` and `image forecast`, measured on this host: a short lab
//! run (`first_write` across sizes, `chmod` with and without `metacopy=on`, `unlink` and
//! `chmod_dir`) on the filesystem that holds the store (or the one `--upper-fs` names), cached
//! under the store with the environment it was measured in and measured again when the kernel,
//! the filesystem, the overlay module's options or the calibration spec change. `--lab
//! results.json` gives one instead.
//!
//! The figures are the kernel-side copy-up and whiteout latencies the probes joined to each op
//! (what `record` reports per event and what `--verify` measures), the user-side syscall time
//! only where a results file has no kernel figures.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use super::{forecast::Outcome, inspect::Curve, io_err, store::Store, ImageError};
use crate::lab::results::{sha256_hex, Cell, Op, Results, RunResult};

/// The calibration's spec: one lower layer, the file in it; the second option set gives
/// `chmod` its metadata-only copy-up. Sizes are dense (a factor of 2 above 1 MiB): the cost per
/// byte is not constant (on tmpfs here it grows about four times past 4 MiB), so a sparse grid
/// mispredicts the sizes between its points.
pub const CALIBRATION_SPEC: &str = r#"layers = 1
sizes = ["4K", "64K", "256K", "1M", "2M", "4M", "8M", "16M", "32M"]
file_layers = [1]
repetitions = 9
filesystems = ["FS"]
mount_options = [[], ["metacopy=on"]]
ops = ["first_write", "chmod", "unlink", "chmod_dir"]
cache = ["warm"]
"#;

/// One lab run of a calibration: the spec file to run, where its `results.json` goes, where the
/// lab makes its run directory. The caller runs it (the lab's `bench`), so the image tools do not
/// reach into the lab's run.
#[derive(Debug, Clone)]
pub struct CalibrationRun {
    pub spec: PathBuf,
    pub out: PathBuf,
    pub workdir: PathBuf,
}

/// The latency of each kind of copy-up.
#[derive(Debug, Clone)]
pub struct CostModel {
    /// Data copy-ups by size.
    pub data: Curve,
    /// p50 of the other kinds, ns.
    pub fixed_ns: BTreeMap<Outcome, u64>,
    /// Where the figures came from.
    pub source: String,
}

/// A cell's p50: kernel-side when the probes measured it, else user-side.
fn p50(c: &Cell) -> u64 {
    c.kernel.as_ref().map_or(c.latency.p50_ns, |k| k.p50_ns)
}

/// Data copy-up time by size: the samples of every cell that copies a whole file (`first_write`
/// under every option set of `run`'s filesystem and cache, `chmod` without `metacopy=on`) pooled
/// per size, their median, then made non-decreasing in size (pool adjacent violators, weighted
/// by samples): a copy-up of more bytes is never cheaper, and on a disk the fixed cost of the
/// copy-up's fsync is noisy enough to invert neighbouring medians.
fn data_points(r: &Results, run: &RunResult) -> Vec<(u64, u64)> {
    let mut pooled: BTreeMap<u64, Option<hdrhistogram::Histogram<u64>>> = BTreeMap::new();
    let mut medians: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for other in r
        .runs
        .iter()
        .filter(|o| o.fs == run.fs && o.cache == run.cache)
    {
        let metacopy = other.mount_options.iter().any(|o| o == "metacopy=on");
        for c in other
            .cells
            .iter()
            .filter(|c| c.op == Op::FirstWrite || (c.op == Op::Chmod && !metacopy))
        {
            medians.entry(c.size_bytes).or_default().push(p50(c));
            let stats = c.kernel.as_ref().unwrap_or(&c.latency);
            let h = crate::lab::results::decode_histogram(&stats.histogram).ok();
            let slot = pooled.entry(c.size_bytes).or_insert_with(|| {
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 3).ok()
            });
            let added = match (slot.as_mut(), h) {
                (Some(acc), Some(h)) => acc.add(&h).is_ok(),
                _ => false,
            };
            if !added {
                *slot = None;
            }
        }
    }
    let points: Vec<(u64, u64, u64)> = medians
        .into_iter()
        .map(|(size, p50s)| match pooled.get(&size) {
            Some(Some(h)) if !h.is_empty() => (size, h.value_at_quantile(0.5), h.len()),
            // Without histograms: the median of the cells' medians.
            _ => {
                let mut v = p50s;
                v.sort_unstable();
                (size, v[v.len() / 2], v.len() as u64)
            }
        })
        .collect();
    non_decreasing(&points)
}

/// Pool adjacent violators: the non-decreasing sequence closest (weighted least squares) to
/// `points` (size, value, weight), sizes ascending.
#[must_use]
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "weighted means of nanoseconds in f64, result in whole ns"
)]
pub fn non_decreasing(points: &[(u64, u64, u64)]) -> Vec<(u64, u64)> {
    // (weighted sum, weight, points in the block)
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for &(_, v, w) in points {
        let w = w.max(1) as f64;
        blocks.push((v as f64 * w, w, 1));
        while blocks.len() > 1 {
            let (s1, w1, n1) = blocks[blocks.len() - 1];
            let (s0, w0, n0) = blocks[blocks.len() - 2];
            if s0 / w0 <= s1 / w1 {
                break;
            }
            blocks.pop();
            *blocks.last_mut().expect("two blocks") = (s0 + s1, w0 + w1, n0 + n1);
        }
    }
    let mut out = Vec::with_capacity(points.len());
    let mut i = 0;
    for (s, w, n) in blocks {
        for p in &points[i..i + n] {
            out.push((p.0, (s / w).round() as u64));
        }
        i += n;
    }
    out
}

/// The p50 of `op` at its smallest size in `run`.
fn smallest(run: &RunResult, op: Op) -> Option<u64> {
    run.cells
        .iter()
        .filter(|c| c.op == op)
        .min_by_key(|c| (c.size_bytes, c.layer_depth))
        .map(p50)
}

impl CostModel {
    #[must_use]
    pub fn predict(&self, o: Outcome, bytes: u64) -> u64 {
        match o {
            Outcome::DataCopyUp => self.data.predict_ns(bytes),
            o => self.fixed_ns.get(&o).copied().unwrap_or(0),
        }
    }

    /// From a lab results.json (the first run with `first_write` cells and no `metacopy=on`,
    /// else the first with them): data copy-ups from `first_write` p50 by size (layer 1
    /// preferred); directory copy-ups from `chmod_dir`; metadata-only copy-ups (metacopy,
    /// symlinks and devices) from `chmod` of the smallest file under `metacopy=on`; whiteouts
    /// and opaque directories from `unlink`. Results without `chmod_dir` or a `metacopy=on` run
    /// fall back to `create` in a lower directory minus a plain create, and to `unlink`.
    pub fn from_results(r: &Results, origin: &str) -> Result<Self, ImageError> {
        let has_first_write = |run: &&RunResult| run.cells.iter().any(|c| c.op == Op::FirstWrite);
        let metacopy = |run: &RunResult| run.mount_options.iter().any(|o| o == "metacopy=on");
        let run = r
            .runs
            .iter()
            .filter(has_first_write)
            .find(|run| !metacopy(run))
            .or_else(|| r.runs.iter().find(has_first_write))
            .ok_or_else(|| ImageError::Archive {
                archive: origin.to_owned(),
                reason: "no first_write cells; run `cowprof bench` with ops = [\"first_write\", \"chmod\", \"unlink\", \"chmod_dir\"]".into(),
            })?;
        let meta_run = r
            .runs
            .iter()
            .find(|m| metacopy(m) && m.fs == run.fs && m.cache == run.cache);
        let pts = data_points(r, run);
        let kernel_side = run
            .cells
            .iter()
            .filter(|c| c.op == Op::FirstWrite)
            .all(|c| c.kernel.is_some());
        let mut fixed_ns = BTreeMap::new();
        let whiteout = smallest(run, Op::Unlink);
        if let Some(u) = whiteout {
            fixed_ns.insert(Outcome::Whiteout, u);
            fixed_ns.insert(Outcome::OpaqueDir, u);
        }
        let dir = smallest(run, Op::ChmodDir).or_else(|| {
            smallest(run, Op::Create)
                .map(|c| c.saturating_sub(run.plain_create.as_ref().map_or(0, |p| p.p50_ns)))
        });
        if let Some(d) = dir {
            fixed_ns.insert(Outcome::DirCopyUp, d);
        }
        if let Some(m) = meta_run
            .and_then(|m| smallest(m, Op::Chmod))
            .or(dir)
            .or(whiteout)
        {
            fixed_ns.insert(Outcome::Metacopy, m);
            fixed_ns.insert(Outcome::SpecialCopyUp, m);
        }
        let source = format!(
            "{origin} (fs {}{}, kernel {}, {} p50: first_write by size, chmod_dir, chmod under metacopy=on, unlink)",
            run.fs,
            if run.mount_options.is_empty() {
                String::new()
            } else {
                format!(", {}", run.mount_options.join(","))
            },
            r.environment.kernel,
            if kernel_side { "kernel-side" } else { "user-side" }
        );
        Ok(Self {
            data: Curve {
                source: source.clone(),
                points: pts,
            },
            fixed_ns,
            source,
        })
    }

    /// From a given results.json.
    pub fn from_file(path: &Path) -> Result<Self, ImageError> {
        let text = fs::read(path).map_err(io_err("reading", path))?;
        let r: Results = serde_json::from_slice(&text).map_err(|e| ImageError::Archive {
            archive: path.display().to_string(),
            reason: format!("not a cowprof bench results.json: {e}"),
        })?;
        Self::from_results(&r, &path.display().to_string())
    }
}

/// What a calibration depends on; a change of any of these measures again.
fn environment(store: &Store, upper_fs: &str) -> String {
    let machine = crate::host::machine::Machine::read();
    let kernel = machine.kernel;
    let fs_type = rustix::fs::statfs(&store.root).map_or(0, |s| s.f_type);
    let mut params = String::new();
    for (k, val) in machine.overlay_params {
        let _ = write!(params, "{k}={val};");
    }
    format!(
        "kernel={kernel}\nstore_fs_magic={fs_type:#x}\nupper_fs={upper_fs}\noverlay={params}\nspec={}\n",
        sha256_hex(CALIBRATION_SPEC)
    )
}

/// Whether `dir` holds a calibration measured in exactly `env`.
fn cache_fits(dir: &Path, env: &str) -> bool {
    fs::read_to_string(dir.join("environment")).is_ok_and(|e| e == env)
        && dir.join("results.json").exists()
}

/// The calibration directory for this environment.
fn dir_for(store: &Store, env: &str) -> PathBuf {
    store.root.join("calibration").join(&sha256_hex(env)[..16])
}

/// The model measured on this host: the cached calibration when its environment still holds,
/// else (or when `again`) a new lab run (about 10 s; needs root). `upper_fs` is a lab filesystem kind: `dir`
/// (the store's own filesystem), `tmpfs`, `ext4`, `xfs` or `btrfs`.
pub fn calibrated(
    store: &Store,
    upper_fs: &str,
    again: bool,
    mut progress: impl FnMut(&str),
    run_lab: impl FnOnce(&CalibrationRun) -> Result<Results, ImageError>,
) -> Result<CostModel, ImageError> {
    let env = environment(store, upper_fs);
    let dir = dir_for(store, &env);
    let results = dir.join("results.json");
    if !again && cache_fits(&dir, &env) {
        let mut m = CostModel::from_file(&results)?;
        m.source = format!("calibration cached for this environment: {}", m.source);
        return Ok(m);
    }
    if !super::is_root() {
        return Err(ImageError::NotRoot {
            what: "calibrating the cost model (a short cowprof bench run)",
        });
    }
    progress(&format!(
        "calibrating the cost model on {upper_fs} (a short cowprof bench run, cached in {})",
        dir.display()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let spec = dir.join("spec.toml");
    fs::write(&spec, CALIBRATION_SPEC.replace("FS", upper_fs)).map_err(io_err("writing", &spec))?;
    let measured = run_lab(&CalibrationRun {
        spec,
        out: dir.clone(),
        workdir: store.tmp_dir(),
    })?;
    fs::write(dir.join("environment"), &env).map_err(io_err("writing", &dir))?;
    let mut m = CostModel::from_results(&measured, &results.display().to_string())?;
    m.source = format!("calibrated now: {}", m.source);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_holds_kernel_fs_options_and_spec() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store")).unwrap();
        let env = environment(&store, "tmpfs");
        let spec = sha256_hex(CALIBRATION_SPEC);
        for want in [
            format!("spec={spec}"),
            "upper_fs=tmpfs".to_owned(),
            format!(
                "kernel={}",
                fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap()
                    .trim()
            ),
        ] {
            assert!(env.contains(&want), "{env}");
        }
        assert_ne!(
            dir_for(&store, &env),
            dir_for(&store, &environment(&store, "ext4"))
        );
        // A cached calibration is used only while every line of its environment holds.
        let dir = dir_for(&store, &env);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("results.json"), "{}").unwrap();
        fs::write(dir.join("environment"), &env).unwrap();
        assert!(cache_fits(&dir, &env));
        for (from, to) in [
            ("kernel=", "kernel=0.0.0-other-"),
            ("spec=", "spec=0"),
            ("overlay=", "overlay=metacopy=Y;"),
            ("store_fs_magic=", "store_fs_magic=0x1"),
        ] {
            fs::write(dir.join("environment"), env.replacen(from, to, 1)).unwrap();
            assert!(!cache_fits(&dir, &env), "{from} changed, cache still used");
        }
    }

    #[test]
    fn data_curve_never_decreases() {
        // ext4 here: the fsync's fixed cost makes 4K slower than 1M in a short run.
        let got = non_decreasing(&[
            (4 << 10, 10_900, 15),
            (64 << 10, 7_000, 15),
            (1 << 20, 1_800, 15),
            (4 << 20, 9_900, 15),
            (16 << 20, 34_600, 15),
        ]);
        assert_eq!(
            got,
            vec![
                (4 << 10, 6_567),
                (64 << 10, 6_567),
                (1 << 20, 6_567),
                (4 << 20, 9_900),
                (16 << 20, 34_600)
            ]
        );
        let rising = [(1, 1, 1), (2, 5, 1), (3, 9, 2)];
        assert_eq!(non_decreasing(&rising), vec![(1, 1), (2, 5), (3, 9)]);
        assert_eq!(non_decreasing(&[]), vec![]);
    }
}
