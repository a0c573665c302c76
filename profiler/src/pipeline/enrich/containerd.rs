//! Container → pod and container names through containerd's API (gRPC on its Unix socket,
//! `/run/containerd/containerd.sock` by default), with the maintained `containerd-client` crate.
//!
//! The kubelet's CRI plugin stores every container in containerd's `k8s.io` namespace with the
//! pod's labels (`io.kubernetes.pod.name`, `…pod.namespace`, `…pod.uid`,
//! `…container.name`); Docker keeps its containers in `moby`, `ctr` and nerdctl in `default`.
//! One `Containers.Get` per namespace, in that order, per container id never seen before; the
//! caller caches the answer. Every call is bounded by [`LOOKUP_TIMEOUT`] so a stuck daemon
//! cannot hold up the ring-buffer reader for long.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use containerd_client::{
    services::v1::{containers_client::ContainersClient, GetContainerRequest},
    tonic::{self, metadata::MetadataValue, transport::Channel, Code},
};

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
