//! Container → pod and container names through containerd's API (gRPC on its Unix socket,
//! `/run/containerd/containerd.sock` by default), with the maintained `containerd-client` crate.
//!
//! The kubelet's CRI plugin stores every container in containerd's `k8s.io` namespace with the
//! pod's labels (`io.kubernetes.pod.name`, `…pod.namespace`, `…pod.uid`,
//! `…container.name`); Docker keeps its containers in `moby`, `ctr` and nerdctl in `default`.
//! One `Containers.Get` per namespace, in that order, per container id never seen before; the
//! caller caches the answer. Every call is bounded by [`LOOKUP_TIMEOUT`] so a stuck daemon
//! cannot hold up the ring-buffer reader for long.
//!
//! Image layers of a container ([`ContainerdClient::layers`]): the overlayfs snapshotter keeps
//! each layer in `…/io.containerd.snapshotter.v1.overlayfs/snapshots/<N>/fs`, where `<N>` is an
//! internal number the API never shows. The container's own (active) snapshot is asked for its
//! mounts (`Snapshots.Mounts`: `lowerdir=` lists the layer dirs, topmost first) and walked up
//! its parents (`Snapshots.Stat`: a committed snapshot's name is the chain ID of the layers up
//! to it, as containerd's unpacker names them); the image (`Images.Get`, then its manifest and
//! config through `Content.Read`) lists the diffIDs, and chainID(1) = diffID(1),
//! chainID(n) = sha256(chainID(n-1) + " " + diffID(n)). So each lower dir gets its diffID, and
//! the container its image id (the config's digest). One such lookup per container, bounded by
//! [`LOOKUP_TIMEOUT`] as a whole.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use containerd_client::{
    services::v1::{
        containers_client::ContainersClient,
        content_client::ContentClient,
        images_client::ImagesClient,
        snapshots::{snapshots_client::SnapshotsClient, MountsRequest, StatSnapshotRequest},
        GetContainerRequest, GetImageRequest, ReadContentRequest,
    },
    tonic::{self, metadata::MetadataValue, transport::Channel, Code},
};
use sha2::{Digest as _, Sha256};

/// Where containerd listens unless `--containerd-socket` or `CONTAINERD_ADDRESS` say otherwise.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// containerd namespaces searched for a container id, in this order.
pub const NAMESPACES: [&str; 3] = ["k8s.io", "moby", "default"];

/// Connecting, or one whole lookup over all namespaces, may take this long. containerd answers
/// `Containers.Get` from its bolt database in about a millisecond.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// The labels the kubelet puts on every container it creates (CRI).
pub mod labels {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("no containerd socket at {}", socket.display())]
    NoSocket { socket: PathBuf },
    #[error("cannot connect to containerd at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd at {}: {source}", socket.display())]
    Transport {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd Containers.Get {id} in namespace {namespace}: {status}")]
    Call {
        id: String,
        namespace: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("containerd at {}: no answer within {} ms", socket.display(), LOOKUP_TIMEOUT.as_millis())]
    Timeout { socket: PathBuf },
    #[error("containerd {call} for container {id}: {status}")]
    LayerCall {
        id: String,
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("containerd image {image}: {what}")]
    BadImage { image: String, what: String },
}

impl ContainerdError {
    /// The socket is not there or cannot be used: no later call will do better.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::NoSocket { .. } | Self::Connect { .. } | Self::Transport { .. }
        )
    }
}

/// What containerd knows about one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerdInfo {
    pub id: String,
    /// The containerd namespace it was found in (`k8s.io` for Kubernetes pods).
    pub namespace: String,
    /// The image reference it was created from.
    pub image: String,
    /// `io.kubernetes.container.name`.
    pub container_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    /// The snapshotter (`overlayfs`) and the key of the container's active snapshot.
    pub snapshotter: String,
    pub snapshot_key: String,
}

/// What a container's image says about its layers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageLayers {
    /// The image config's digest (`sha256:…`), what `ctr`/nerdctl and Docker call the image id.
    pub image_id: String,
    /// Snapshot layer directory (`…/snapshots/<N>/fs`) → the layer's diffID.
    pub by_dir: HashMap<String, String>,
}

/// chain IDs of a list of diffIDs (bottom layer first), as the OCI image spec defines them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let h = Sha256::digest(format!("{prev} {d}").as_bytes());
                format!("sha256:{}", hex(&h))
            }
        };
        out.push(next);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// This machine's architecture as OCI platforms name it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// The manifest digest an image index gives for `linux/<arch>`, else its first entry's.
pub fn index_entry<'a>(index: &'a serde_json::Value, arch: &str) -> Option<&'a str> {
    let list = index.get("manifests")?.as_array()?;
    list.iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .or_else(|| list.first())
        .and_then(|m| m["digest"].as_str())
}

/// The lower dirs of a snapshot's mounts (`lowerdir=a:b`, topmost first); none for a bind mount.
pub fn lower_dirs(options: &[String]) -> Vec<String> {
    options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .unwrap_or_default()
}

impl ContainerdInfo {
    fn from_record(
        namespace: &str,
        c: containerd_client::services::v1::Container,
    ) -> ContainerdInfo {
        let label = |k: &str| c.labels.get(k).filter(|v| !v.is_empty()).cloned();
        ContainerdInfo {
            namespace: namespace.to_owned(),
            image: c.image.clone(),
            container_name: label(labels::CONTAINER_NAME),
            pod_name: label(labels::POD_NAME),
            pod_namespace: label(labels::POD_NAMESPACE),
            pod_uid: label(labels::POD_UID),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: c.snapshot_key.clone(),
            id: c.id,
        }
    }
}

/// `CONTAINERD_ADDRESS` (as `ctr` reads it) if set, else [`DEFAULT_SOCKET`].
pub fn socket_from_env() -> PathBuf {
    std::env::var_os("CONTAINERD_ADDRESS")
        .filter(|a| !a.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// A lazily connected client; the channel is kept (tonic reconnects it if containerd restarts).
pub struct ContainerdClient {
    socket: PathBuf,
    channel: Option<Channel>,
}

impl ContainerdClient {
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            channel: None,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn channel(&mut self) -> Result<Channel, ContainerdError> {
        if let Some(c) = &self.channel {
            return Ok(c.clone());
        }
        let socket = self.socket.clone();
        if !socket.exists() {
            return Err(ContainerdError::NoSocket { socket });
        }
        // A plain connect first: it tells "permission denied" or "refused" in words that the
        // gRPC transport's error would bury in its source chain.
        tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(|source| ContainerdError::Connect {
                socket: socket.clone(),
                source,
            })?;
        let channel = containerd_client::connect(&socket)
            .await
            .map_err(|source| ContainerdError::Transport {
                socket: socket.clone(),
                source,
            })?;
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    /// The container with this id in the first of [`NAMESPACES`] that has it; `Ok(None)` if none
    /// does. Bounded by [`LOOKUP_TIMEOUT`] as a whole.
    pub async fn container(&mut self, id: &str) -> Result<Option<ContainerdInfo>, ContainerdError> {
        let socket = self.socket.clone();
        tokio::time::timeout(LOOKUP_TIMEOUT, self.container_inner(id))
            .await
            .unwrap_or(Err(ContainerdError::Timeout { socket }))
    }

    async fn container_inner(
        &mut self,
        id: &str,
    ) -> Result<Option<ContainerdInfo>, ContainerdError> {
        let mut client = ContainersClient::new(self.channel().await?);
        for namespace in NAMESPACES {
            let mut req = tonic::Request::new(GetContainerRequest { id: id.to_owned() });
            req.metadata_mut().insert(
                "containerd-namespace",
                MetadataValue::from_static(namespace),
            );
            match client.get(req).await {
                Ok(resp) => {
                    if let Some(c) = resp.into_inner().container {
                        return Ok(Some(ContainerdInfo::from_record(namespace, c)));
                    }
                }
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => {
                    return Err(ContainerdError::Call {
                        id: id.to_owned(),
                        namespace,
                        status: Box::new(s),
                    })
                }
            }
        }
        Ok(None)
    }
}

impl ContainerdClient {
    /// The image layers of a container containerd knows: lower dir → diffID, and the image id.
    /// Bounded by [`LOOKUP_TIMEOUT`] as a whole.
    pub async fn layers(&mut self, c: &ContainerdInfo) -> Result<ImageLayers, ContainerdError> {
        let socket = self.socket.clone();
        tokio::time::timeout(LOOKUP_TIMEOUT, self.layers_inner(c))
            .await
            .unwrap_or(Err(ContainerdError::Timeout { socket }))
    }

    async fn layers_inner(&mut self, c: &ContainerdInfo) -> Result<ImageLayers, ContainerdError> {
        let channel = self.channel().await?;
        let (image_id, by_chain) = image_chains(channel.clone(), c).await?;
        let by_dir = snapshot_dirs(channel, c, &by_chain).await?;
        Ok(ImageLayers { image_id, by_dir })
    }
}

/// The image id of a container's image and its chain ID → diffID table.
async fn image_chains(
    channel: Channel,
    c: &ContainerdInfo,
) -> Result<(String, HashMap<String, String>), ContainerdError> {
    let ns = c.namespace.as_str();
    let call_err = |call: &'static str| {
        move |s: tonic::Status| ContainerdError::LayerCall {
            id: c.id.clone(),
            call,
            status: Box::new(s),
        }
    };
    let bad = |what: String| ContainerdError::BadImage {
        image: c.image.clone(),
        what,
    };
    // The image: its target (a manifest, or an index of them) → config → diffIDs.
    let image = ImagesClient::new(channel.clone())
        .get(with_ns(
            ns,
            GetImageRequest {
                name: c.image.clone(),
            },
        ))
        .await
        .map_err(call_err("Images.Get"))?
        .into_inner()
        .image
        .ok_or_else(|| bad("no image record".into()))?;
    let target = image
        .target
        .ok_or_else(|| bad("no target descriptor".into()))?;
    let mut content = ContentClient::new(channel.clone());
    let mut read = async |digest: String| -> Result<serde_json::Value, ContainerdError> {
        let mut stream = content
            .read(with_ns(
                ns,
                ReadContentRequest {
                    digest,
                    offset: 0,
                    size: 0,
                },
            ))
            .await
            .map_err(call_err("Content.Read"))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(call_err("Content.Read"))? {
            data.extend_from_slice(&chunk.data);
        }
        serde_json::from_slice(&data).map_err(|e| bad(format!("blob is not JSON: {e}")))
    };
    let mut manifest = read(target.digest.clone()).await?;
    if manifest.get("manifests").is_some() {
        let pick = index_entry(&manifest, oci_arch())
            .ok_or_else(|| bad("empty index".into()))?
            .to_owned();
        manifest = read(pick).await?;
    }
    let image_id = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad("manifest has no config".into()))?
        .to_owned();
    let config = read(image_id.clone()).await?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| bad("config has no rootfs.diff_ids".into()))?
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    let by_chain: HashMap<String, String> =
        chain_ids(&diff_ids).into_iter().zip(diff_ids).collect();
    Ok((image_id, by_chain))
}

/// The container's snapshot: its lower dirs (from its mounts) and their names (chain IDs, up
/// its parents) → diffID.
async fn snapshot_dirs(
    channel: Channel,
    c: &ContainerdInfo,
    by_chain: &HashMap<String, String>,
) -> Result<HashMap<String, String>, ContainerdError> {
    let ns = c.namespace.as_str();
    let call_err = |call: &'static str| {
        move |s: tonic::Status| ContainerdError::LayerCall {
            id: c.id.clone(),
            call,
            status: Box::new(s),
        }
    };
    let bad = |what: String| ContainerdError::BadImage {
        image: c.image.clone(),
        what,
    };
    // The container's snapshot: its lower dirs, and its parents' names (chain IDs).
    let mut snaps = SnapshotsClient::new(channel);
    let mounts = snaps
        .mounts(with_ns(
            ns,
            MountsRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            },
        ))
        .await
        .map_err(call_err("Snapshots.Mounts"))?
        .into_inner()
        .mounts;
    let dirs: Vec<String> = mounts.iter().flat_map(|m| lower_dirs(&m.options)).collect();
    let mut by_dir = HashMap::new();
    let mut key = c.snapshot_key.clone();
    for dir in dirs {
        let info = snaps
            .stat(with_ns(
                ns,
                StatSnapshotRequest {
                    snapshotter: c.snapshotter.clone(),
                    key: key.clone(),
                },
            ))
            .await
            .map_err(call_err("Snapshots.Stat"))?
            .into_inner()
            .info
            .ok_or_else(|| bad(format!("snapshot {key} has no info")))?;
        if info.parent.is_empty() {
            break;
        }
        key = info.parent;
        if let Some(d) = by_chain.get(&key) {
            by_dir.insert(dir, d.clone());
        }
    }
    Ok(by_dir)
}

/// A request in one containerd namespace.
fn with_ns<T>(namespace: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = MetadataValue::try_from(namespace) {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_labels_to_info() {
        let c = containerd_client::services::v1::Container {
            id: "abc".into(),
            image: "registry.k8s.io/pause:3.9".into(),
            labels: [
                (labels::POD_NAME, "web-0"),
                (labels::POD_NAMESPACE, "shop"),
                (labels::POD_UID, "0a1b2c3d-4e5f-4789-abcd-ef0123456789"),
                (labels::CONTAINER_NAME, "app"),
                ("io.cri-containerd.kind", "container"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Default::default()
        };
        let i = ContainerdInfo::from_record("k8s.io", c);
        assert_eq!(i.container_name.as_deref(), Some("app"));
        assert_eq!(i.pod_name.as_deref(), Some("web-0"));
        assert_eq!(i.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(
            i.pod_uid.as_deref(),
            Some("0a1b2c3d-4e5f-4789-abcd-ef0123456789")
        );
        assert_eq!(i.image, "registry.k8s.io/pause:3.9");
        assert_eq!(i.namespace, "k8s.io");
    }

    /// chain IDs as the OCI image spec's example computes them, and the mount option parse.
    #[test]
    fn chain_ids_and_lower_dirs() {
        let d = ["sha256:a".to_owned(), "sha256:b".to_owned()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        let h = Sha256::digest(b"sha256:a sha256:b");
        assert_eq!(c[1], format!("sha256:{}", hex(&h)));
        assert_eq!(
            lower_dirs(&["index=off".into(), "lowerdir=/s/2/fs:/s/1/fs".into()]),
            ["/s/2/fs", "/s/1/fs"]
        );
        assert!(lower_dirs(&["rbind".into(), "rw".into()]).is_empty());
    }

    #[test]
    fn index_picks_the_platform_else_the_first() {
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        assert_eq!(index_entry(&index, "amd64"), Some("sha256:amd"));
        assert_eq!(index_entry(&index, "riscv64"), Some("sha256:arm"));
        assert_eq!(
            index_entry(&serde_json::json!({"manifests": []}), "amd64"),
            None
        );
        assert_eq!(
            index_entry(&serde_json::json!({"config": {}}), "amd64"),
            None
        );
    }

    #[test]
    fn plain_container_has_no_pod() {
        let c = containerd_client::services::v1::Container {
            id: "abc".into(),
            image: "docker.io/library/busybox:latest".into(),
            ..Default::default()
        };
        let i = ContainerdInfo::from_record("default", c);
        assert_eq!(i.pod_name, None);
        assert_eq!(i.container_name, None);
    }

    /// A daemon that accepts but never answers costs one [`LOOKUP_TIMEOUT`], not a hang.
    #[tokio::test]
    async fn stuck_daemon_times_out_fast() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("containerd.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let mut c = ContainerdClient::new(sock);
        let t0 = std::time::Instant::now();
        let e = c.container("abc").await.unwrap_err();
        let took = t0.elapsed();
        assert!(matches!(e, ContainerdError::Timeout { .. }), "{e}");
        assert!(!e.is_unavailable());
        assert!(took < LOOKUP_TIMEOUT * 3, "{took:?}");
        held.abort();
    }

    /// No socket, and a path that is no socket: errors that say so, fast, and that mark
    /// containerd as unavailable (the caller then stops asking).
    #[tokio::test]
    async fn unavailable_socket_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ContainerdClient::new(dir.path().join("containerd.sock"));
        let e = c.container("abc").await.unwrap_err();
        assert!(matches!(e, ContainerdError::NoSocket { .. }), "{e}");
        assert!(e.is_unavailable());
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let mut c = ContainerdClient::new(file);
        let e = c.container("abc").await.unwrap_err();
        assert!(matches!(e, ContainerdError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("Connection refused"), "{e}");
    }
}
