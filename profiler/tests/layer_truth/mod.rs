//! The expected image layer of a path, read from an image archive (`docker save` format, as
//! `scripts/images` writes it) on its own, without any runtime: `manifest.json` names the config
//! and the layer tars bottom first, the config's `rootfs.diff_ids` are the layers' diffIDs, and
//! the image id is the sha256 of the config's bytes.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    io::Read as _,
    path::Path,
};

use sha2::{Digest as _, Sha256};

pub struct ArchiveLayers {
    /// `sha256:…` of the config blob.
    pub image_id: String,
    /// diffID and the paths (no leading `./` or `/`, no trailing `/`) of each layer, bottom first.
    pub layers: Vec<(String, BTreeSet<String>)>,
}

fn clean(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

impl ArchiveLayers {
    pub fn read(archive: &Path) -> Self {
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("archive"));
        for e in tar.entries().expect("tar entries") {
            let mut e = e.expect("tar entry");
            let name = clean(&e.path().expect("entry path").to_string_lossy());
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("entry data");
            files.insert(name, data);
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
        let config_name = manifest[0]["Config"].as_str().expect("Config");
        let config_bytes = &files[config_name];
        let config: serde_json::Value = serde_json::from_slice(config_bytes).expect("config");
        let image_id = format!(
            "sha256:{}",
            Sha256::digest(config_bytes)
                .iter()
                .fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                })
        );
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
            .iter()
            .map(|d| d.as_str().expect("diff id").to_owned())
            .collect();
        let tars: Vec<&str> = manifest[0]["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|l| l.as_str().expect("layer"))
            .collect();
        assert_eq!(tars.len(), diff_ids.len(), "one diffID per layer tar");
        let layers = tars
            .iter()
            .zip(diff_ids)
            .map(|(t, d)| {
                let mut paths = BTreeSet::new();
                let mut layer = tar::Archive::new(&files[&clean(t)][..]);
                for e in layer.entries().expect("layer entries") {
                    let e = e.expect("layer entry");
                    paths.insert(clean(&e.path().expect("path").to_string_lossy()));
                }
                (d, paths)
            })
            .collect();
        Self { image_id, layers }
    }

    /// The diffID of the topmost layer that has `path` (what overlay copies up from); `None` if
    /// a layer above deleted it or none has it.
    pub fn layer_of(&self, path: &str) -> Option<&str> {
        let path = clean(path);
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let whiteout = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        for (d, paths) in self.layers.iter().rev() {
            if paths.contains(&path) {
                return Some(d);
            }
            if paths.contains(&whiteout) {
                return None;
            }
        }
        None
    }
}
