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
