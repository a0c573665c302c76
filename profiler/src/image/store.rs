//! The layer store: `<store>/layers/sha256/<diffID hex>/` are overlay-format layer roots (usable
//! as `lowerdir`s as they are), `<store>/layers/sha256/<hex>.json` their [`LayerStats`],
//! `<store>/images/<image ID hex>.json` the imported images. A layer is unpacked into
//! `<store>/tmp/<pid>-<n>/` and renamed into place only once its diffID is verified, so no partial
//! layer is ever visible under `layers/`; a killed import's temp dir is removed by the next one.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::{
    archive::Source,
    digest_hex, io_err,
    manifest::{read_images, History, ImageDesc},
    progress::{Counting, ImportStep},
    unpack::{unpack_layer, LayerStats, Limits},
    ImageError,
};
use crate::host::cancel::Cancel;

pub const DEFAULT_STORE: &str = "/var/lib/cowprof";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:…` of the config: the image's identity.
    pub id: String,
    pub manifest_digest: Option<String>,
    /// Mutable names seen with this image at import time.
    pub tags: Vec<String>,
    pub os: String,
    pub architecture: String,
    pub created: Option<String>,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
    pub history: Vec<History>,
    /// Where it was imported from.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub diff_id: String,
    pub blob_digest: Option<String>,
    pub stats: LayerStats,
}

/// What one import did, for the user.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub images: Vec<ImageRecord>,
    /// diffIDs unpacked by this import.
    pub unpacked: Vec<String>,
    /// diffIDs that were already in the store.
    pub reused: Vec<String>,
}

pub struct Store {
    pub root: PathBuf,
}

impl Store {
    /// Opens (creating, mode 0700) the store.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        for d in ["", "layers/sha256", "images", "tmp", "run"] {
            let p = root.join(d);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(io_err("creating the store directory", &p))?;
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(io_err("securing", root))?;
        let s = Self {
            root: root.to_owned(),
        };
        for p in s.remove_stale_temps() {
            eprintln!(
                "cowprof image: removed {} (left by a killed run)",
                p.display()
            );
        }
        Ok(s)
    }

    /// The overlay-format directory of a layer.
    #[must_use]
    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root
            .join("layers/sha256")
            .join(digest_hex(diff_id).unwrap_or("invalid"))
    }

    fn layer_meta(&self, diff_id: &str) -> PathBuf {
        self.root
            .join("layers/sha256")
            .join(format!("{}.json", digest_hex(diff_id).unwrap_or("invalid")))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Temp layers of imports and mounted stacks (`run/`) of compares/benches whose process is
    /// gone (SIGKILL, power loss): unmounted and removed. Returns what was removed.
    pub fn remove_stale_temps(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for dir in [self.tmp_dir(), self.root.join("run")] {
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
                    && crate::host::mounts::remove_tree(&e.path()).is_ok()
                {
                    removed.push(e.path());
                }
            }
        }
        removed
    }

    pub fn images(&self) -> Vec<ImageRecord> {
        let Ok(rd) = fs::read_dir(self.root.join("images")) else {
            return Vec::new();
        };
        let mut out: Vec<ImageRecord> = rd
            .flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Finds an image by digest (full or a unique hex prefix of 12+) or by tag.
    pub fn find(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let all = self.images();
        let hexref = reference.strip_prefix("sha256:").unwrap_or(reference);
        let by_id: Vec<&ImageRecord> = all
            .iter()
            .filter(|i| {
                hexref.len() >= 12 && i.id.trim_start_matches("sha256:").starts_with(hexref)
            })
            .collect();
        if by_id.len() == 1 {
            return Ok(by_id[0].clone());
        }
        // A tag may have moved: the newest import that carries it wins.
        all.iter()
            .filter(|i| {
                i.tags.iter().any(|t| {
                    t == reference
                        || t.split(':').next() == Some(reference) && t.ends_with(":latest")
                })
            })
            .max_by_key(|i| {
                fs::metadata(
                    self.root
                        .join("images")
                        .join(format!("{}.json", i.id.trim_start_matches("sha256:"))),
                )
                .and_then(|m| m.modified())
                .ok()
            })
            .cloned()
            .ok_or_else(|| ImageError::NotFound {
                reference: reference.to_owned(),
                store: self.root.clone(),
            })
    }

    /// Imports every image of an archive or layout, unpacking only layers not yet in the store.
    pub fn import(
        &self,
        path: &Path,
        limits: Limits,
        cancel: Option<&Cancel>,
        mut progress: impl FnMut(ImportStep<'_>),
    ) -> Result<ImportReport, ImageError> {
        if !super::is_root() {
            return Err(ImageError::NotRoot {
                what: "unpacking layers (whiteouts are device nodes, opaque dirs trusted.* xattrs)",
            });
        }
        let src = Source::open(path)?;
        let descs = read_images(&src)?;
        let mut report = ImportReport::default();
        for desc in &descs {
            let mut layers = Vec::new();
            for (i, l) in desc.layers.iter().enumerate() {
                if cancel.is_some_and(Cancel::is_set) {
                    return Err(ImageError::Interrupted);
                }
                let dir = self.layer_dir(&l.diff_id);
                let stats = if dir.is_dir() && self.layer_meta(&l.diff_id).is_file() {
                    if !report.reused.contains(&l.diff_id) && !report.unpacked.contains(&l.diff_id)
                    {
                        report.reused.push(l.diff_id.clone());
                    }
                    let b = fs::read(self.layer_meta(&l.diff_id))
                        .map_err(io_err("reading", self.layer_meta(&l.diff_id)))?;
                    serde_json::from_slice(&b).unwrap_or_default()
                } else {
                    let s = self.unpack_one(
                        &src,
                        l,
                        limits,
                        cancel,
                        (i + 1, desc.layers.len()),
                        &mut progress,
                    )?;
                    report.unpacked.push(l.diff_id.clone());
                    s
                };
                layers.push(LayerRecord {
                    diff_id: l.diff_id.clone(),
                    blob_digest: l.blob_digest.clone(),
                    stats,
                });
            }
            let rec = record(desc, layers, &src.display());
            let p = self
                .root
                .join("images")
                .join(format!("{}.json", rec.id.trim_start_matches("sha256:")));
            write_atomic(&p, &serde_json::to_vec_pretty(&rec).unwrap_or_default())?;
            report.images.push(rec);
        }
        Ok(report)
    }

    fn unpack_one(
        &self,
        src: &Source,
        l: &super::manifest::LayerRef,
        limits: Limits,
        cancel: Option<&Cancel>,
        (index, count): (usize, usize),
        progress: &mut dyn FnMut(ImportStep<'_>),
    ) -> Result<LayerStats, ImageError> {
        let tmp = TempLayer::create(self)?;
        let fd = rustix::fs::open(
            &tmp.path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening", &tmp.path)(e.into()))?;
        let (blob, blob_bytes) = src.open_blob(&l.blob)?;
        progress(ImportStep::Layer {
            index,
            count,
            diff_id: &l.diff_id,
            blob_bytes,
        });
        let blob = Counting {
            inner: blob,
            report: progress,
        };
        let done = unpack_layer(blob, &l.blob, &fd, limits, cancel)?;
        if let Some(expected) = &l.blob_digest {
            if &done.blob_digest != expected {
                return Err(ImageError::Digest {
                    blob: l.blob.clone(),
                    what: "blob",
                    expected: expected.clone(),
                    actual: done.blob_digest,
                });
            }
        }
        if done.diff_id != l.diff_id {
            return Err(ImageError::Digest {
                blob: l.blob.clone(),
                what: "diffID (uncompressed)",
                expected: l.diff_id.clone(),
                actual: done.diff_id,
            });
        }
        // The layer root itself: as Docker's diff dirs.
        fs::set_permissions(&tmp.path, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &tmp.path))?;
        write_atomic(
            &self.layer_meta(&l.diff_id),
            &serde_json::to_vec_pretty(&done.stats).unwrap_or_default(),
        )?;
        tmp.commit(&self.layer_dir(&l.diff_id))?;
        Ok(done.stats)
    }
}

/// A layer being unpacked: removed on drop unless committed.
struct TempLayer {
    path: PathBuf,
    committed: bool,
}

impl TempLayer {
    fn create(store: &Store) -> Result<Self, ImageError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = store.tmp_dir().join(format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err("creating", &path))?;
        Ok(Self {
            path,
            committed: false,
        })
    }

    fn commit(mut self, to: &Path) -> Result<(), ImageError> {
        match fs::rename(&self.path, to) {
            Ok(()) => {
                self.committed = true;
                Ok(())
            }
            // Another import finished the same layer first: keep theirs.
            Err(_) if to.is_dir() => Ok(()),
            Err(e) => Err(io_err("moving the finished layer to", to)(e).into()),
        }
    }
}

impl Drop for TempLayer {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn write_atomic(p: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, p).map_err(io_err("writing", p))?;
    Ok(())
}

fn record(desc: &ImageDesc, layers: Vec<LayerRecord>, source: &str) -> ImageRecord {
    ImageRecord {
        id: desc.id.clone(),
        manifest_digest: desc.manifest_digest.clone(),
        tags: desc.tags.clone(),
        os: desc.config.os.clone(),
        architecture: desc.config.architecture.clone(),
        created: desc.config.created.clone(),
        layers,
        history: desc.config.history.clone(),
        source: source.to_owned(),
    }
}
