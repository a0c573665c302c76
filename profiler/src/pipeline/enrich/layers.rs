//! Lower-layer directory → image layer digest, from Docker's graph driver store on disk.
//!
//! Docker's overlay2 driver keeps each layer in `<root>/overlay2/<cache-id>/diff` (mountinfo
//! may show it through a relative `l/<short>` symlink, which the mount parser made absolute);
//! the image store maps layers back in `<root>/image/overlay2/layerdb/sha256/<chainID>/`, whose
//! `cache-id` file names the directory and whose `diff` file holds the layer's diffID (the
//! sha256 of its uncompressed tar: what `docker image inspect` lists in `.RootFS.Layers`).
//! A container's topmost lower layer is its own `<id>-init` layer (/etc/hosts, resolv.conf …),
//! which is in no image: it is named [`INIT_LAYER`].
//!
//! The store's location comes from the layer path itself (`<root>/<driver>/<cache-id>/diff`),
//! so any Docker root works without asking the engine.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// The name given to a container's `-init` layer instead of a digest.
pub const INIT_LAYER: &str = "init";

/// Caches both the answer per layer directory and each layer store's cache-id → diffID table.
#[derive(Default)]
pub struct LayerNames {
    by_dir: HashMap<String, Option<String>>,
    /// layerdb dir → (cache-id → diffID).
    stores: HashMap<PathBuf, HashMap<String, String>>,
}

impl LayerNames {
    /// The diffID (`sha256:…`) of the image layer stored in `layer_dir`, [`INIT_LAYER`] for a
    /// container's init layer, `None` for a directory in no known image store.
    pub fn name_of(&mut self, layer_dir: &str) -> Option<String> {
        if let Some(known) = self.by_dir.get(layer_dir) {
            return known.clone();
        }
        let name = self.lookup(Path::new(layer_dir));
        if self.by_dir.len() > 4096 {
            self.by_dir.clear();
        }
        self.by_dir.insert(layer_dir.to_owned(), name.clone());
        name
    }

    fn lookup(&mut self, layer_dir: &Path) -> Option<String> {
        let dir = layer_dir
            .canonicalize()
            .unwrap_or_else(|_| layer_dir.to_path_buf());
        let (cache_id, layerdb) = store_of(&dir)?;
        if cache_id.ends_with("-init") {
            return Some(INIT_LAYER.to_owned());
        }
        if let Some(d) = self.stores.get(&layerdb).and_then(|s| s.get(&cache_id)) {
            return Some(d.clone());
        }
        // Unknown here: the image may be newer than our table; read the store again.
        let table = read_layerdb(&layerdb);
        let found = table.get(&cache_id).cloned();
        self.stores.insert(layerdb, table);
        found
    }
}

/// `<root>/<driver>/<cache-id>/diff` → (cache-id, `<root>/image/<driver>/layerdb/sha256`), if
/// that layerdb exists.
fn store_of(dir: &Path) -> Option<(String, PathBuf)> {
    if dir.file_name()? != "diff" {
        return None;
    }
    let id_dir = dir.parent()?;
    let cache_id = id_dir.file_name()?.to_str()?.to_owned();
    let driver_dir = id_dir.parent()?;
    let driver = driver_dir.file_name()?;
    let layerdb = driver_dir
        .parent()?
        .join("image")
        .join(driver)
        .join("layerdb/sha256");
    layerdb.is_dir().then_some((cache_id, layerdb))
}

/// cache-id → diffID for every layer in a layerdb directory. Unreadable entries are skipped
/// (a layer being deleted while we read).
pub fn read_layerdb(layerdb: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(layerdb) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let (Ok(cache_id), Ok(diff)) = (
            std::fs::read_to_string(p.join("cache-id")),
            std::fs::read_to_string(p.join("diff")),
        ) else {
            continue;
        };
        out.insert(cache_id.trim().to_owned(), diff.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A miniature Docker root: two image layers, one container init layer, and the `l/`
    /// symlinks mountinfo shows.
    #[test]
    fn layer_dirs_to_diff_ids() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let ov = r.join("overlay2");
        for id in ["aaa", "bbb", "ccc-init"] {
            std::fs::create_dir_all(ov.join(id).join("diff")).unwrap();
        }
        std::fs::create_dir_all(ov.join("l")).unwrap();
        std::os::unix::fs::symlink("../bbb/diff", ov.join("l/SHORTB")).unwrap();
        let db = r.join("image/overlay2/layerdb/sha256");
        for (chain, cache, diff) in [("c1", "aaa", "sha256:d1"), ("c2", "bbb", "sha256:d2")] {
            std::fs::create_dir_all(db.join(chain)).unwrap();
            std::fs::write(db.join(chain).join("cache-id"), cache).unwrap();
            std::fs::write(db.join(chain).join("diff"), format!("{diff}\n")).unwrap();
        }
        let mut names = LayerNames::default();
        let s = |p: PathBuf| p.display().to_string();
        assert_eq!(
            names.name_of(&s(ov.join("aaa/diff"))).as_deref(),
            Some("sha256:d1")
        );
        assert_eq!(
            names.name_of(&s(ov.join("l/SHORTB"))).as_deref(),
            Some("sha256:d2")
        );
        assert_eq!(
            names.name_of(&s(ov.join("ccc-init/diff"))).as_deref(),
            Some(INIT_LAYER)
        );
        // A plain directory (a hand-made overlay's lower) is in no image.
        assert_eq!(names.name_of(&s(r.join("lower"))), None);
        // A layer added after the first read is found on a re-read.
        std::fs::create_dir_all(ov.join("ddd/diff")).unwrap();
        std::fs::create_dir_all(db.join("c3")).unwrap();
        std::fs::write(db.join("c3/cache-id"), "ddd").unwrap();
        std::fs::write(db.join("c3/diff"), "sha256:d3").unwrap();
        assert_eq!(
            names.name_of(&s(ov.join("ddd/diff"))).as_deref(),
            Some("sha256:d3")
        );
    }
}
