//! What an image's layers do to each other: adds, modifies, deletes, wasted bytes, dive's
//! efficiency score, and the files a running container will most likely copy up, with their
//! predicted copy-up cost.
//!
//! Definitions (docs/images.md, "Inspect"):
//! - wasted bytes: regular-file bytes stored in some layer but invisible in the final view,
//!   because a later layer overwrote them, deleted them (whiteout) or hid them (opaque dir).
//! - efficiency (dive's, `dive/filetree/efficiency.go`): for every path seen as a leaf in any
//!   layer, sum the sizes of all its versions (a whiteout of a directory counts what it hid, of a
//!   file 0) and the smallest version; score = Σ smallest / Σ all (1.0 = no path stored twice).
//!   `dive_wasted_bytes` is dive's figure: Σ all versions of paths seen in two or more layers.

use crate::fmt;
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::{io_err, store::ImageRecord, ImageError};

/// One entry of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir { opaque: bool },
    File { size: u64 },
    Symlink,
    Whiteout,
    Other,
}

/// A layer's entries by absolute path (`/etc/passwd`).
pub type LayerTree = BTreeMap<String, Kind>;

/// Reads an overlay-format layer directory (whiteouts as char 0/0, opaque as xattr).
pub fn read_layer(dir: &Path) -> Result<LayerTree, ImageError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_err("reading layer", &d))? {
            let e = e.map_err(io_err("reading layer", &d))?;
            let m = fs::symlink_metadata(e.path()).map_err(io_err("reading", e.path()))?;
            let path = format!("{rel}/{}", e.file_name().to_string_lossy());
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                let opaque =
                    rustix::fs::lgetxattr(e.path(), "trusted.overlay.opaque", &mut [0u8; 4])
                        .is_ok_and(|n| n == 1);
                stack.push((e.path(), path.clone()));
                Kind::Dir { opaque }
            } else if ft.is_file() {
                Kind::File { size: m.len() }
            } else if ft.is_symlink() {
                Kind::Symlink
            } else if ft.is_char_device() && m.rdev() == 0 {
                Kind::Whiteout
            } else {
                Kind::Other
            };
            out.insert(path, kind);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub diff_id: String,
    pub created_by: Option<String>,
    /// Regular-file bytes in this layer.
    pub size_bytes: u64,
    pub blob_bytes: u64,
    /// Non-directory entries (whiteouts excluded).
    pub files: u64,
    pub added: u64,
    pub modified: u64,
    /// Non-directory paths of lower layers this layer removes (whiteouts, opaque dirs).
    pub deleted: u64,
    /// Lower-layer bytes this layer makes invisible.
    pub wasted_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyUpCandidate {
    pub path: String,
    pub size_bytes: u64,
    pub why: String,
    pub predicted_copy_up_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub layers: Vec<LayerReport>,
    /// Regular-file bytes stored over all layers.
    pub total_bytes: u64,
    /// Regular-file bytes visible in the final view.
    pub final_bytes: u64,
    /// Non-directory entries in the final view.
    pub final_files: u64,
    pub wasted_bytes: u64,
    pub efficiency: f64,
    pub dive_wasted_bytes: u64,
}

/// The final view of the stack (non-directory entries only): path → (size if regular, layer).
pub type View = BTreeMap<String, (Kind, usize)>;

fn remove_subtree(view: &mut View, path: &str) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    let prefix = format!("{path}/");
    let keys: Vec<String> = view
        .range(path.to_owned()..)
        .take_while(|(k, _)| *k == path || k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in keys {
        if let Some((kind, _)) = view.remove(&k) {
            if !matches!(kind, Kind::Dir { .. }) {
                n += 1;
            }
            if let Kind::File { size } = kind {
                bytes += size;
            }
        }
    }
    (n, bytes)
}

/// Stacks the layers (bottom first) and measures what each does to the ones below.
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "one walk over the layer trees that fills the waste, copy-up and view tables together"
)]
pub fn analyze(trees: &[LayerTree]) -> (Analysis, View) {
    let mut view: View = BTreeMap::new();
    let mut layers = Vec::new();
    // dive's efficiency bookkeeping: path → (cumulative, min, versions)
    let mut eff: HashMap<String, (u64, u64, u32)> = HashMap::new();
    let mut total_bytes = 0;
    for (idx, tree) in trees.iter().enumerate() {
        let mut r = LayerReport::default();
        // Opaque dirs and whiteouts first: they act on the layers below only.
        for (p, k) in tree {
            match k {
                Kind::Dir { opaque: true } => {
                    let (n, b) = remove_subtree(&mut view, p);
                    // The directory itself stays (it is in this layer).
                    r.deleted += n;
                    r.wasted_bytes += b;
                }
                Kind::Whiteout => {
                    // dive sizes a whiteout of a directory by what it hid, of a file as 0.
                    let was_dir = matches!(view.get(p), Some((Kind::Dir { .. }, _)));
                    let (n, b) = remove_subtree(&mut view, p);
                    r.deleted += n;
                    r.wasted_bytes += b;
                    let dive_size = if was_dir { b } else { 0 };
                    let e = eff.entry(p.clone()).or_insert((0, u64::MAX, 0));
                    e.0 += dive_size;
                    e.1 = e.1.min(dive_size);
                    e.2 += 1;
                }
                _ => {}
            }
        }
        for (p, k) in tree {
            match k {
                Kind::Whiteout => {}
                Kind::Dir { .. } => {
                    // A directory over a lower non-directory replaces it.
                    if let Some((old, _)) = view.get(p) {
                        if !matches!(old, Kind::Dir { .. }) {
                            let (n, b) = remove_subtree(&mut view, p);
                            r.deleted += n;
                            r.wasted_bytes += b;
                        }
                    }
                    view.insert(p.clone(), (*k, idx));
                }
                _ => {
                    let size = if let Kind::File { size } = k {
                        *size
                    } else {
                        0
                    };
                    r.files += 1;
                    r.size_bytes += size;
                    match view.get(p) {
                        Some((Kind::Dir { .. }, _)) => {
                            let (n, b) = remove_subtree(&mut view, p);
                            r.deleted += n;
                            r.wasted_bytes += b;
                            r.added += 1;
                        }
                        Some((old, _)) => {
                            r.modified += 1;
                            if let Kind::File { size } = old {
                                r.wasted_bytes += size;
                            }
                        }
                        None => r.added += 1,
                    }
                    view.insert(p.clone(), (*k, idx));
                    let e = eff.entry(p.clone()).or_insert((0, u64::MAX, 0));
                    e.0 += size;
                    e.1 = e.1.min(size);
                    e.2 += 1;
                }
            }
        }
        total_bytes += r.size_bytes;
        layers.push(r);
    }
    let (mut min_sum, mut cum_sum, mut dive_wasted) = (0u64, 0u64, 0u64);
    for (cum, min, n) in eff.values() {
        cum_sum += cum;
        min_sum += min;
        if *n >= 2 {
            dive_wasted += cum;
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
    let efficiency = if cum_sum == 0 {
        1.0
    } else {
        min_sum as f64 / cum_sum as f64
    };
    view.retain(|_, (k, _)| !matches!(k, Kind::Dir { .. }));
    let final_bytes = view
        .values()
        .map(|(k, _)| {
            if let Kind::File { size } = k {
                *size
            } else {
                0
            }
        })
        .sum();
    let wasted_bytes = layers.iter().map(|l| l.wasted_bytes).sum();
    let a = Analysis {
        final_files: view.len() as u64,
        layers,
        total_bytes,
        final_bytes,
        wasted_bytes,
        efficiency,
        dive_wasted_bytes: dive_wasted,
    };
    (a, view)
}

/// Copy-up latency as a function of file size: points (bytes, ns), interpolated linearly and
/// extended past the last point with the last segment's slope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub source: String,
    pub points: Vec<(u64, u64)>,
}

impl Curve {
    /// No prediction (every size costs 0): for callers that only want the analysis.
    #[must_use]
    pub fn none() -> Self {
        Self {
            source: "no cost model".into(),
            points: Vec::new(),
        }
    }

    #[must_use]
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "interpolation in f64, result in whole ns"
    )]
    pub fn predict_ns(&self, size: u64) -> u64 {
        let p = &self.points;
        match p.len() {
            0 => return 0,
            1 => return p[0].1,
            _ => {}
        }
        let seg = p
            .windows(2)
            .find(|w| size <= w[1].0)
            .unwrap_or(&p[p.len() - 2..]);
        let ((x0, y0), (x1, y1)) = (seg[0], seg[1]);
        if size <= x0 {
            return y0;
        }
        let slope = (y1 as f64 - y0 as f64) / (x1 as f64 - x0 as f64).max(1.0);
        (y0 as f64 + slope * (size - x0) as f64).max(0.0) as u64
    }
}

/// Why a path looks written at run time, or None.
#[must_use]
pub fn writable_reason(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    let ends = |s: &[&str]| s.iter().any(|e| lower.ends_with(e));
    if ends(&[
        ".db", ".sqlite", ".sqlite3", ".mdb", ".ibd", "-wal", ".wal", ".journal",
    ]) {
        return Some("database file");
    }
    if ends(&[".log", ".pid", ".lock"]) {
        return Some("log/pid/lock file");
    }
    for (prefix, why) in [
        ("/var/lib/", "state under /var/lib"),
        ("/var/log/", "log under /var/log"),
        ("/var/cache/", "cache under /var/cache"),
        ("/var/spool/", "spool under /var/spool"),
        ("/etc/", "config under /etc (edited at start-up)"),
        ("/data/", "data directory"),
        ("/srv/", "service data"),
        ("/tmp/", "temp file in the image"),
    ] {
        if lower.starts_with(prefix) {
            return Some(why);
        }
    }
    lower.contains("/cache/").then_some("cache directory")
}

/// The likeliest copy-ups: large regular files on writable-looking paths, largest first.
#[must_use]
pub fn copy_up_candidates(view: &View, curve: &Curve, n: usize) -> Vec<CopyUpCandidate> {
    let mut c: Vec<CopyUpCandidate> = view
        .iter()
        .filter_map(|(p, (k, _))| {
            let Kind::File { size } = k else { return None };
            let why = writable_reason(p)?;
            Some(CopyUpCandidate {
                path: p.clone(),
                size_bytes: *size,
                why: why.to_owned(),
                predicted_copy_up_ns: curve.predict_ns(*size),
            })
        })
        .collect();
    c.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.path.cmp(&b.path)));
    c.truncate(n);
    c
}

/// Everything `image inspect` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    /// `sha256:…` of the config: the identity.
    pub id: String,
    pub manifest_digest: Option<String>,
    /// Mutable: a tag can be moved to another image at any time; the id cannot.
    pub tags_mutable: Vec<String>,
    pub os: String,
    pub architecture: String,
    pub analysis: Analysis,
    pub copy_up_candidates: Vec<CopyUpCandidate>,
    pub curve_source: String,
}

pub fn inspect(
    store: &super::store::Store,
    rec: &ImageRecord,
    curve: &Curve,
) -> Result<(Inspection, View), ImageError> {
    let trees = rec
        .layers
        .iter()
        .map(|l| read_layer(&store.layer_dir(&l.diff_id)))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut a, view) = analyze(&trees);
    let non_empty: Vec<&super::manifest::History> =
        rec.history.iter().filter(|h| !h.empty_layer).collect();
    for (i, (l, r)) in rec.layers.iter().zip(a.layers.iter_mut()).enumerate() {
        r.diff_id.clone_from(&l.diff_id);
        r.blob_bytes = l.stats.blob_bytes;
        r.created_by = non_empty.get(i).and_then(|h| h.created_by.clone());
    }
    Ok((
        Inspection {
            id: rec.id.clone(),
            manifest_digest: rec.manifest_digest.clone(),
            tags_mutable: rec.tags.clone(),
            os: rec.os.clone(),
            architecture: rec.architecture.clone(),
            copy_up_candidates: copy_up_candidates(&view, curve, 10),
            analysis: a,
            curve_source: curve.source.clone(),
        },
        view,
    ))
}

/// The human table of `image inspect`.
pub fn render(i: &Inspection, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(out, "image  {}", i.id)?;
    if let Some(m) = &i.manifest_digest {
        writeln!(out, "manifest {m}")?;
    }
    writeln!(
        out,
        "tags   {} (mutable: a tag can be moved; the digest above cannot)",
        if i.tags_mutable.is_empty() {
            "-".into()
        } else {
            i.tags_mutable.join(", ")
        }
    )?;
    let a = &i.analysis;
    writeln!(
        out,
        "size   {} in {} layers, {} visible ({} files); wasted {}; efficiency {:.1}% (dive's score; dive wasted {})",
        fmt::bytes(a.total_bytes),
        a.layers.len(),
        fmt::bytes(a.final_bytes),
        a.final_files,
        fmt::bytes(a.wasted_bytes),
        a.efficiency * 100.0,
        fmt::bytes(a.dive_wasted_bytes)
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:>3}  {:<12}  {:>10}  {:>7}  {:>6}  {:>6}  {:>6}  {:>10}  created by",
        "#", "diffID", "size", "files", "adds", "mods", "dels", "wasted"
    )?;
    for (n, l) in a.layers.iter().enumerate() {
        let by = l.created_by.as_deref().unwrap_or("");
        let by = by
            .trim_start_matches("/bin/sh -c ")
            .trim_start_matches("#(nop) ");
        let by: String = by.chars().take(50).collect();
        writeln!(
            out,
            "{:>3}  {:<12}  {:>10}  {:>7}  {:>6}  {:>6}  {:>6}  {:>10}  {}",
            n + 1,
            fmt::short_digest(&l.diff_id),
            fmt::bytes(l.size_bytes),
            l.files,
            l.added,
            l.modified,
            l.deleted,
            fmt::bytes(l.wasted_bytes),
            by
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "likeliest copy-ups in a running container (predicted cost of the first write):"
    )?;
    if i.copy_up_candidates.is_empty() {
        writeln!(out, "  none: no regular files on writable-looking paths")?;
    }
    for c in &i.copy_up_candidates {
        writeln!(
            out,
            "  {:>10}  {:>10}  {}  ({})",
            fmt::bytes(c.size_bytes),
            fmt::ns(c.predicted_copy_up_ns),
            c.path,
            c.why
        )?;
    }
    writeln!(out, "  latency curve: {}", i.curve_source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, Kind)]) -> LayerTree {
        entries.iter().map(|(p, k)| ((*p).to_owned(), *k)).collect()
    }

    const D: Kind = Kind::Dir { opaque: false };
    fn f(size: u64) -> Kind {
        Kind::File { size }
    }

    #[test]
    fn wasted_bytes_count_overwritten_deleted_and_hidden_data() {
        let l0 = tree(&[
            ("/a", D),
            ("/a/big", f(1000)),
            ("/a/keep", f(10)),
            ("/c", D),
            ("/c/x", f(7)),
            ("/c/y", f(3)),
            ("/gone", f(500)),
        ]);
        // Overwrite big with a smaller copy, delete gone, make /c opaque with a new file.
        let l1 = tree(&[
            ("/a", D),
            ("/a/big", f(100)),
            ("/gone", Kind::Whiteout),
            ("/c", Kind::Dir { opaque: true }),
            ("/c/z", f(1)),
        ]);
        let (a, view) = analyze(&[l0, l1]);
        assert_eq!(a.layers[0].added, 5);
        assert_eq!(a.layers[1].added, 1);
        assert_eq!(a.layers[1].modified, 1);
        assert_eq!(a.layers[1].deleted, 3); // gone, c/x, c/y
        assert_eq!(a.layers[1].wasted_bytes, 1000 + 500 + 7 + 3);
        assert_eq!(a.wasted_bytes, 1510);
        assert_eq!(a.total_bytes, 1520 + 101);
        assert_eq!(a.final_bytes, 100 + 10 + 1);
        assert_eq!(a.total_bytes - a.final_bytes, a.wasted_bytes);
        assert_eq!(
            view.keys().cloned().collect::<Vec<_>>(),
            ["/a/big", "/a/keep", "/c/z"]
        );
        // dive: big (1000+100, min 100), gone (500+0, min 0): score = (100+10+7+3+0+1) / (1100+10+7+3+500+1)
        assert!(
            (a.efficiency - 121.0 / 1621.0).abs() < 1e-9,
            "{}",
            a.efficiency
        );
        assert_eq!(a.dive_wasted_bytes, 1100 + 500);
    }

    #[test]
    fn directory_whiteout_counts_everything_below() {
        let l0 = tree(&[("/d", D), ("/d/e", D), ("/d/e/f", f(40)), ("/d/g", f(2))]);
        let l1 = tree(&[("/d", Kind::Whiteout)]);
        let (a, view) = analyze(&[l0, l1]);
        assert_eq!(a.layers[1].deleted, 2);
        assert_eq!(a.wasted_bytes, 42);
        assert!(view.is_empty());
    }

    #[test]
    fn curve_interpolates_and_extrapolates() {
        let c = Curve {
            source: String::new(),
            points: vec![(0, 0), (100, 1000), (200, 3000)],
        };
        assert_eq!(c.predict_ns(50), 500);
        assert_eq!(c.predict_ns(150), 2000);
        assert_eq!(c.predict_ns(300), 5000);
    }

    #[test]
    fn writable_paths() {
        assert!(writable_reason("/var/lib/app/big.bin").is_some());
        assert!(writable_reason("/srv/x.sqlite").is_some());
        assert!(writable_reason("/usr/bin/ls").is_none());
    }
}
