//! The image descriptions inside an archive: docker's `manifest.json` (legacy `docker save`, and
//! the same file in the OCI-layout variant newer engines write) or an OCI `index.json` →
//! manifest → config. Every digest that names a blob is checked before the blob is trusted.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{archive::Source, digest_hex, hex, ImageError};

/// One image found in an archive, ready to import.
#[derive(Debug, Clone)]
pub struct ImageDesc {
    /// `sha256:…` of the config blob: the image ID, its identity.
    pub id: String,
    /// `sha256:…` of the OCI manifest, when the archive has one.
    pub manifest_digest: Option<String>,
    /// Tags found with it (mutable names: they can be moved to another image at any time).
    pub tags: Vec<String>,
    pub config: Config,
    pub layers: Vec<LayerRef>,
}

#[derive(Debug, Clone)]
pub struct LayerRef {
    /// Name of the blob inside the archive.
    pub blob: String,
    /// Expected digest of the blob as stored (compressed or not), when known.
    pub blob_digest: Option<String>,
    /// Expected digest of the uncompressed tar stream (from the config's `rootfs.diff_ids`).
    pub diff_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub created: Option<String>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct History {
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn bad(src: &Source, reason: impl Into<String>) -> ImageError {
    ImageError::Archive {
        archive: src.display(),
        reason: reason.into(),
    }
}

fn json<'a, T: Deserialize<'a>>(
    src: &Source,
    name: &str,
    bytes: &'a [u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| bad(src, format!("{name}: invalid JSON: {e}")))
}

/// The blob path for a digest in an OCI layout.
fn blob_path(src: &Source, digest: &str) -> Result<String, ImageError> {
    digest_hex(digest)
        .map(|h| format!("blobs/sha256/{h}"))
        .ok_or_else(|| {
            bad(
                src,
                format!("unsupported or malformed digest {digest:?} (only sha256 is accepted)"),
            )
        })
}

/// Reads a metadata blob and checks it against `digest`.
fn verified(src: &Source, name: &str, digest: &str) -> Result<Vec<u8>, ImageError> {
    let bytes = src.read_small(name)?;
    let actual = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    if actual != digest {
        return Err(ImageError::Digest {
            blob: name.to_owned(),
            what: "content",
            expected: digest.to_owned(),
            actual,
        });
    }
    Ok(bytes)
}

fn parse_config(src: &Source, name: &str, bytes: &[u8]) -> Result<Config, ImageError> {
    let c: Config = json(src, name, bytes)?;
    for d in &c.rootfs.diff_ids {
        if digest_hex(d).is_none() {
            return Err(bad(src, format!("{name}: malformed diff_id {d:?}")));
        }
    }
    Ok(c)
}

/// All images the archive or layout holds.
pub fn read_images(src: &Source) -> Result<Vec<ImageDesc>, ImageError> {
    if src.exists("manifest.json") {
        return docker_images(src);
    }
    if src.exists("index.json") {
        return oci_images(src);
    }
    Err(bad(
        src,
        "neither manifest.json (docker save) nor index.json (OCI layout) found; not an image archive",
    ))
}

fn docker_images(src: &Source) -> Result<Vec<ImageDesc>, ImageError> {
    let bytes = src.read_small("manifest.json")?;
    let entries: Vec<DockerManifestEntry> = json(src, "manifest.json", &bytes)?;
    let mut out = Vec::new();
    for e in entries {
        // Legacy: "<hex>.json"; OCI-layout variant: "blobs/sha256/<hex>". Either way the name
        // carries the digest, which is the image ID.
        let stem = e
            .config
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".json");
        let id = format!("sha256:{stem}");
        if digest_hex(&id).is_none() {
            return Err(bad(
                src,
                format!(
                    "manifest.json: config name {:?} does not carry a sha256 digest",
                    e.config
                ),
            ));
        }
        let cbytes = verified(src, &e.config, &id)?;
        let config = parse_config(src, &e.config, &cbytes)?;
        if config.rootfs.diff_ids.len() != e.layers.len() {
            return Err(bad(
                src,
                format!(
                    "{}: {} layers listed but the config has {} diff_ids",
                    e.config,
                    e.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let layers = e
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(blob, diff_id)| LayerRef {
                blob: blob.clone(),
                // A blob stored under its digest is checked against it too.
                blob_digest: blob
                    .strip_prefix("blobs/sha256/")
                    .map(|h| format!("sha256:{h}")),
                diff_id: diff_id.clone(),
            })
            .collect();
        out.push(ImageDesc {
            id,
            manifest_digest: None,
            tags: e.repo_tags.unwrap_or_default(),
            config,
            layers,
        });
    }
    if out.is_empty() {
        return Err(bad(src, "manifest.json lists no image"));
    }
    Ok(out)
}

fn oci_images(src: &Source) -> Result<Vec<ImageDesc>, ImageError> {
    let bytes = src.read_small("index.json")?;
    let index: Index = json(src, "index.json", &bytes)?;
    let mut out = Vec::new();
    for top in index.manifests {
        let tag = top
            .annotations
            .get("org.opencontainers.image.ref.name")
            .cloned();
        let mut desc = top;
        // A nested index (multi-platform): take linux/amd64, else the first entry. Bounded depth.
        for _ in 0..4 {
            if !desc.media_type.contains("index") && !desc.media_type.contains("manifest.list") {
                break;
            }
            let name = blob_path(src, &desc.digest)?;
            let b = verified(src, &name, &desc.digest)?;
            let nested: Index = json(src, &name, &b)?;
            let pick = nested
                .manifests
                .iter()
                .position(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .unwrap_or(0);
            desc = nested
                .manifests
                .into_iter()
                .nth(pick)
                .ok_or_else(|| bad(src, format!("{name}: empty index")))?;
        }
        let mname = blob_path(src, &desc.digest)?;
        let mbytes = verified(src, &mname, &desc.digest)?;
        let m: OciManifest = json(src, &mname, &mbytes)?;
        let cname = blob_path(src, &m.config.digest)?;
        let cbytes = verified(src, &cname, &m.config.digest)?;
        let config = parse_config(src, &cname, &cbytes)?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(bad(
                src,
                format!(
                    "{mname}: {} layers but the config has {} diff_ids",
                    m.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            let _ = l.size;
            layers.push(LayerRef {
                blob: blob_path(src, &l.digest)?,
                blob_digest: Some(l.digest.clone()),
                diff_id: diff_id.clone(),
            });
        }
        out.push(ImageDesc {
            id: m.config.digest.clone(),
            manifest_digest: Some(desc.digest.clone()),
            tags: tag.into_iter().collect(),
            config,
            layers,
        });
    }
    if out.is_empty() {
        return Err(bad(src, "index.json lists no manifest"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn put(dir: &std::path::Path, bytes: &[u8]) -> String {
        let d = format!("sha256:{}", hex(&Sha256::digest(bytes)));
        let p = dir.join("blobs/sha256").join(&d[7..]);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
        d
    }

    fn config(diff_ids: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "ADD rootfs"}, {"created_by": "ENV x=1", "empty_layer": true}],
        }))
        .unwrap()
    }

    const DIFF: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn docker_manifest_legacy_and_oci_variant() {
        let t = tempfile::tempdir().unwrap();
        let c = config(&[DIFF]);
        let id = put(t.path(), &c);
        // Legacy name for the config, OCI-variant name for the layer.
        fs::write(t.path().join(format!("{}.json", &id[7..])), &c).unwrap();
        let m = serde_json::json!([{"Config": format!("{}.json", &id[7..]), "RepoTags": ["a:1"],
            "Layers": [format!("blobs/sha256/{}", "b".repeat(64))]}]);
        fs::write(
            t.path().join("manifest.json"),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        let imgs = read_images(&Source::open(t.path()).unwrap()).unwrap();
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0].id, id);
        assert_eq!(imgs[0].tags, ["a:1"]);
        assert_eq!(imgs[0].layers[0].diff_id, DIFF);
        assert_eq!(
            imgs[0].layers[0].blob_digest.as_deref(),
            Some(format!("sha256:{}", "b".repeat(64)).as_str())
        );
        assert_eq!(
            imgs[0]
                .config
                .history
                .iter()
                .filter(|h| !h.empty_layer)
                .count(),
            1
        );
    }

    #[test]
    fn docker_manifest_layer_count_must_match_config() {
        let t = tempfile::tempdir().unwrap();
        let c = config(&[DIFF, DIFF]);
        let id = put(t.path(), &c);
        fs::write(t.path().join(format!("{}.json", &id[7..])), &c).unwrap();
        let m = serde_json::json!([{"Config": format!("{}.json", &id[7..]), "Layers": ["x/layer.tar"]}]);
        fs::write(
            t.path().join("manifest.json"),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        let e = read_images(&Source::open(t.path()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1 layers listed but the config has 2 diff_ids"),
            "{e}"
        );
    }

    #[test]
    fn oci_nested_index_picks_linux_amd64() {
        let t = tempfile::tempdir().unwrap();
        let mk = |diff: &str| {
            let c = config(&[diff]);
            let cd = put(t.path(), &c);
            let m = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": format!("sha256:{}", "c".repeat(64))}]}))
            .unwrap();
            (put(t.path(), &m), cd)
        };
        let (arm, _) = mk(DIFF);
        let amd_diff = format!("sha256:{}", "d".repeat(64));
        let (amd, amd_cfg) = mk(&amd_diff);
        let nested = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "platform": {"os": "linux", "architecture": "amd64"}}]}))
        .unwrap();
        let nd = put(t.path(), &nested);
        fs::write(
            t.path().join("index.json"),
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
                {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd,
                 "annotations": {"org.opencontainers.image.ref.name": "multi:latest"}}]}))
            .unwrap(),
        )
        .unwrap();
        let imgs = read_images(&Source::open(t.path()).unwrap()).unwrap();
        assert_eq!(imgs[0].id, amd_cfg);
        assert_eq!(imgs[0].manifest_digest.as_deref(), Some(amd.as_str()));
        assert_eq!(imgs[0].tags, ["multi:latest"]);
        assert_eq!(imgs[0].layers[0].diff_id, amd_diff);
        assert_eq!(
            imgs[0].layers[0].blob,
            format!("blobs/sha256/{}", "c".repeat(64))
        );
    }

    #[test]
    fn oci_digests_are_checked_and_malformed_ones_refused() {
        let t = tempfile::tempdir().unwrap();
        let good = put(t.path(), b"{}");
        // A manifest descriptor whose blob content does not match.
        fs::write(
            t.path().join("blobs/sha256").join(&good[7..]),
            b"{\"tampered\":1}",
        )
        .unwrap();
        let index = |d: &str| {
            serde_json::to_vec(&serde_json::json!({"manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d}]})).unwrap()
        };
        fs::write(t.path().join("index.json"), index(&good)).unwrap();
        let e = read_images(&Source::open(t.path()).unwrap()).unwrap_err();
        assert!(matches!(e, ImageError::Digest { .. }), "{e}");
        fs::write(
            t.path().join("index.json"),
            index("sha256:../../../etc/passwd"),
        )
        .unwrap();
        let e = read_images(&Source::open(t.path()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed digest"), "{e}");
    }
}
