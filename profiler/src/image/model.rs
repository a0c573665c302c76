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
use crate::lab::{
    results::{Cell, Results, RunResult},
    run::BenchOptions,
    spec::Op,
};

/// The calibration's spec: one lower layer, the file in it; the second option set gives
/// `chmod` its metadata-only copy-up.
pub const CALIBRATION_SPEC: &str = r#"layers = 1
sizes = ["4K", "64K", "1M", "4M", "16M"]
file_layers = [1]
repetitions = 5
filesystems = ["FS"]
mount_options = [[], ["metacopy=on"]]
ops = ["first_write", "chmod", "unlink", "chmod_dir"]
cache = ["warm"]
"#;

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
        let mut pts: BTreeMap<u64, u64> = BTreeMap::new();
        for c in run.cells.iter().filter(|c| c.op == Op::FirstWrite) {
            let e = pts.entry(c.size_bytes).or_insert_with(|| p50(c));
            if c.layer_depth == 1 {
                *e = p50(c);
            }
        }
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
                points: pts.into_iter().collect(),
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
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim();
    let fs_type = rustix::fs::statfs(&store.root).map_or(0, |s| s.f_type);
    let mut params = String::new();
    if let Ok(rd) = fs::read_dir("/sys/module/overlay/parameters") {
        let mut v: Vec<(String, String)> = rd
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                )
            })
            .collect();
        v.sort();
        for (k, val) in v {
            let _ = write!(params, "{k}={val};");
        }
    }
    format!(
        "kernel={kernel}\nstore_fs_magic={fs_type:#x}\nupper_fs={upper_fs}\noverlay={params}\nspec={}\n",
        crate::lab::run::sha256_hex(CALIBRATION_SPEC)
    )
}

/// The calibration directory for this environment.
fn dir_for(store: &Store, env: &str) -> PathBuf {
    store
        .root
        .join("calibration")
        .join(&crate::lab::run::sha256_hex(env)[..16])
}

/// The model measured on this host: the cached calibration when its environment still holds,
/// else (or when `again`) a new lab run (about 10 s; needs root). `upper_fs` is a lab filesystem kind: `dir`
/// (the store's own filesystem), `tmpfs`, `ext4`, `xfs` or `btrfs`.
pub fn calibrated(
    store: &Store,
    upper_fs: &str,
    again: bool,
    mut progress: impl FnMut(&str),
) -> Result<CostModel, ImageError> {
    let env = environment(store, upper_fs);
    let dir = dir_for(store, &env);
    let results = dir.join("results.json");
    if !again
        && fs::read_to_string(dir.join("environment")).is_ok_and(|e| e == env)
        && results.exists()
    {
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
    let opts = BenchOptions {
        spec: Some(spec),
        out: dir.clone(),
        workdir: store.tmp_dir(),
        quick: false,
        expect_kernel: false,
        no_charts: true,
        table: crate::lab::summary::TableMode::default(),
    };
    let report = crate::lab::run::bench(&opts)?;
    fs::write(dir.join("environment"), &env).map_err(io_err("writing", &dir))?;
    let mut m =
        CostModel::from_results(&report.results, &report.results_path.display().to_string())?;
    m.source = format!("calibrated now: {}", m.source);
    Ok(m)
}
