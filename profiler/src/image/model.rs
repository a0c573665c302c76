//! The cost model of `image inspect` and `image forecast`, measured on this host: a short lab
//! run (`first_write` across sizes, `unlink`, `create` in a lower directory) on the filesystem
//! that holds the store (or the one `--upper-fs` names), cached under the store with the
//! environment it was measured in and measured again when the kernel, the filesystem or the
//! overlay module's options change. `--lab results.json` gives one instead.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use super::{forecast::Outcome, inspect::Curve, io_err, store::Store, ImageError};
use crate::lab::results::{sha256_hex, Op, Results};

/// The calibration's spec: one lower layer, the file in it, user-side p50 of the op.
pub const CALIBRATION_SPEC: &str = r#"layers = 1
sizes = ["4K", "64K", "1M", "4M", "16M"]
file_layers = [1]
repetitions = 5
filesystems = ["FS"]
mount_options = [[]]
ops = ["first_write", "unlink", "create"]
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

impl CostModel {
    #[must_use]
    pub fn predict(&self, o: Outcome, bytes: u64) -> u64 {
        match o {
            Outcome::DataCopyUp => self.data.predict_ns(bytes),
            o => self.fixed_ns.get(&o).copied().unwrap_or(0),
        }
    }

    /// From a lab results.json: data copy-ups from `first_write` p50 by size (layer 1
    /// preferred), whiteouts from `unlink` p50 (smallest size), directory copy-ups from `create`
    /// in a lower directory minus a create on the plain filesystem. Special copy-ups, metacopy
    /// and opaque directories take the whiteout's figure (one inode, no data).
    pub fn from_results(r: &Results, origin: &str) -> Result<Self, ImageError> {
        let run = r
            .runs
            .iter()
            .find(|run| run.cells.iter().any(|c| c.op == Op::FirstWrite))
            .ok_or_else(|| ImageError::Archive {
                archive: origin.to_owned(),
                reason: "no first_write cells; run `cowprof bench` with ops = [\"first_write\", \"unlink\", \"create\"]".into(),
            })?;
        let mut pts: BTreeMap<u64, u64> = BTreeMap::new();
        for c in run.cells.iter().filter(|c| c.op == Op::FirstWrite) {
            let e = pts.entry(c.size_bytes).or_insert(c.latency.p50_ns);
            if c.layer_depth == 1 {
                *e = c.latency.p50_ns;
            }
        }
        let smallest = |op: Op| {
            run.cells
                .iter()
                .filter(|c| c.op == op)
                .min_by_key(|c| c.size_bytes)
                .map(|c| c.latency.p50_ns)
        };
        let mut fixed_ns = BTreeMap::new();
        if let Some(u) = smallest(Op::Unlink) {
            for o in [
                Outcome::Whiteout,
                Outcome::SpecialCopyUp,
                Outcome::Metacopy,
                Outcome::OpaqueDir,
            ] {
                fixed_ns.insert(o, u);
            }
        }
        if let Some(c) = smallest(Op::Create) {
            let plain = run.plain_create.as_ref().map_or(0, |p| p.p50_ns);
            fixed_ns.insert(Outcome::DirCopyUp, c.saturating_sub(plain));
        }
        let source = format!(
            "{origin} (fs {}{}, kernel {}, user-side p50: first_write by size, unlink, create)",
            run.fs,
            if run.mount_options.is_empty() {
                String::new()
            } else {
                format!(", {}", run.mount_options.join(","))
            },
            r.environment.kernel
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
