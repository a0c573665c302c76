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
//!
//! podman and CRI-O share containers-storage: each layer in `<root>/overlay/<id>/diff`
//! (mountinfo shows `<root>/overlay/l/<short>` symlinks), and `<root>/overlay-layers/layers.json`
//! (plus `volatile-layers.json` for layers kept out of the durable file) lists every layer's
//! `id` with its `diff-digest`, the diffID. The layer id is the chain ID, not the diffID, so the
//! table is needed. Read without any daemon; the root (`/var/lib/containers/storage` by
//! default, anything `--root` gives) again comes from the path. `overlay-containers/
//! containers.json` names each container's image id ([`LayerNames::image_of`]).

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
    /// Docker layerdb dir, or containers-storage `overlay-layers` dir → (dir id → diffID).
    stores: HashMap<PathBuf, HashMap<String, String>>,
    /// containers-storage root → (container id → image id), for [`Self::image_of`].
    containers: HashMap<PathBuf, HashMap<String, String>>,
    /// Layer directory → its containers-storage root (`None`: another store or none), so that
    /// [`Self::image_of`] resolves and stats each directory once, not once per event.
    storage_roots: HashMap<String, Option<PathBuf>>,
}

/// Where the table for one layer directory lives.
enum Store {
    /// Docker's `image/<driver>/layerdb/sha256`.
    Docker(PathBuf),
    /// containers-storage's `overlay-layers` directory.
    Containers(PathBuf),
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
        let (cache_id, store) = store_of(&dir)?;
        if cache_id.ends_with("-init") {
            return Some(INIT_LAYER.to_owned());
        }
        let key = match &store {
            Store::Docker(p) | Store::Containers(p) => p.clone(),
        };
        if let Some(d) = self.stores.get(&key).and_then(|s| s.get(&cache_id)) {
            return Some(d.clone());
        }
        // Unknown here: the image may be newer than our table; read the store again.
        let table = match &store {
            Store::Docker(p) => read_layerdb(p),
            Store::Containers(p) => read_layers_json(p),
        };
        let found = table.get(&cache_id).cloned();
        self.stores.insert(key, table);
        found
    }

    /// The image id (`sha256:…`) of a podman / CRI-O container whose layer `layer_dir` is, from
    /// `overlay-containers/containers.json` of the same containers-storage root; `None` for
    /// other stores or unknown containers.
    pub fn image_of(&mut self, layer_dir: &str, container_id: &str) -> Option<String> {
        if !self.storage_roots.contains_key(layer_dir) {
            if self.storage_roots.len() > 4096 {
                self.storage_roots.clear();
            }
            let dir = Path::new(layer_dir)
                .canonicalize()
                .unwrap_or_else(|_| PathBuf::from(layer_dir));
            let root = match store_of(&dir) {
                Some((_, Store::Containers(layers))) => layers.parent().map(Path::to_path_buf),
                _ => None,
            };
            self.storage_roots.insert(layer_dir.to_owned(), root);
        }
        let root = self.storage_roots.get(layer_dir)?.clone()?;
        if !self
            .containers
            .get(&root)
            .is_some_and(|t| t.contains_key(container_id))
        {
            let table = read_containers_json(&root.join("overlay-containers/containers.json"));
            self.containers.insert(root.clone(), table);
        }
        self.containers.get(&root)?.get(container_id).cloned()
    }
}

/// `<root>/<driver>/<cache-id>/diff` → (cache-id, `<root>/image/<driver>/layerdb/sha256`) if
/// that layerdb exists, else (id, `<root>/<driver>-layers`) if that has a `layers.json`.
fn store_of(dir: &Path) -> Option<(String, Store)> {
    if dir.file_name()? != "diff" {
        return None;
    }
    let id_dir = dir.parent()?;
    let cache_id = id_dir.file_name()?.to_str()?.to_owned();
    let driver_dir = id_dir.parent()?;
    let driver = driver_dir.file_name()?;
    let root = driver_dir.parent()?;
    let layerdb = root.join("image").join(driver).join("layerdb/sha256");
    if layerdb.is_dir() {
        return Some((cache_id, Store::Docker(layerdb)));
    }
    let mut name = driver.to_os_string();
    name.push("-layers");
    let layers = root.join(name);
    layers
        .join("layers.json")
        .is_file()
        .then_some((cache_id, Store::Containers(layers)))
}

/// One layer of containers-storage's `layers.json`.
#[derive(serde::Deserialize)]
struct StorageLayer {
    id: String,
    #[serde(rename = "diff-digest", default)]
    diff_digest: Option<String>,
}

/// layer id → diffID from `layers.json` and `volatile-layers.json` in an `overlay-layers`
/// directory. A file missing or being rewritten counts as empty (read again on the next miss).
pub fn read_layers_json(dir: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for file in ["layers.json", "volatile-layers.json"] {
        let Ok(text) = std::fs::read(dir.join(file)) else {
            continue;
        };
        let Ok(layers) = serde_json::from_slice::<Vec<StorageLayer>>(&text) else {
            continue;
        };
        for l in layers {
            if let Some(d) = l.diff_digest.filter(|d| !d.is_empty()) {
                out.insert(l.id, d);
            }
        }
    }
    out
}

/// One container of containers-storage's `containers.json`.
#[derive(serde::Deserialize)]
struct StorageContainer {
    id: String,
    #[serde(default)]
    image: String,
}

/// container id → `sha256:<image id>` from `overlay-containers/containers.json`.
fn read_containers_json(file: &Path) -> HashMap<String, String> {
    std::fs::read(file)
        .ok()
        .and_then(|t| serde_json::from_slice::<Vec<StorageContainer>>(&t).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !c.image.is_empty())
        .map(|c| (c.id, format!("sha256:{}", c.image)))
        .collect()
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

    /// A miniature containers-storage root (podman, CRI-O): layer ids are chain IDs, the
    /// diffIDs come from layers.json and volatile-layers.json; containers.json names images.
    #[test]
    fn containers_storage_layers() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let ov = r.join("overlay");
        for id in ["c1", "c2", "c3"] {
            std::fs::create_dir_all(ov.join(id).join("diff")).unwrap();
        }
        std::fs::create_dir_all(ov.join("l")).unwrap();
        std::os::unix::fs::symlink("../c2/diff", ov.join("l/SHORT2")).unwrap();
        let ls = r.join("overlay-layers");
        std::fs::create_dir_all(&ls).unwrap();
        std::fs::write(
            ls.join("layers.json"),
            r#"[{"id":"c1","diff-digest":"sha256:d1","uidset":[0]},
                {"id":"c2","parent":"c1","diff-digest":"sha256:d2"}]"#,
        )
        .unwrap();
        std::fs::write(
            ls.join("volatile-layers.json"),
            r#"[{"id":"c3","parent":"c2","diff-digest":"sha256:d3"}]"#,
        )
        .unwrap();
        std::fs::create_dir_all(r.join("overlay-containers")).unwrap();
        std::fs::write(
            r.join("overlay-containers/containers.json"),
            r#"[{"id":"k1","names":["web"],"image":"abc","layer":"c9"}]"#,
        )
        .unwrap();
        let mut names = LayerNames::default();
        let s = |p: PathBuf| p.display().to_string();
        assert_eq!(
            names.name_of(&s(ov.join("c1/diff"))).as_deref(),
            Some("sha256:d1")
        );
        assert_eq!(
            names.name_of(&s(ov.join("l/SHORT2"))).as_deref(),
            Some("sha256:d2")
        );
        assert_eq!(
            names.name_of(&s(ov.join("c3/diff"))).as_deref(),
            Some("sha256:d3")
        );
        assert_eq!(names.name_of(&s(ov.join("c4/diff"))), None);
        assert_eq!(
            names.image_of(&s(ov.join("c1/diff")), "k1").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(names.image_of(&s(ov.join("c1/diff")), "k2"), None);
    }
}
