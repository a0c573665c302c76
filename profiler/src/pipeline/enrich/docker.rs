//! A small Docker Engine API client over the Unix socket (`/var/run/docker.sock`): the few
//! read-only calls attribution needs (container inspect, the running containers), as typed
//! structs. HTTP/1.1 is hyper's; nothing here runs or parses the `docker` CLI.
//!
//! Requests use unversioned paths, which the engine serves at its own API version, so one
//! client works with Debian's 20.10 engine (API 1.41) and newer ones alike.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt as _, Empty};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Where the engine listens unless `DOCKER_HOST=unix://…` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// One API call may take this long (the engine answers inspect in milliseconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot connect to the Docker engine at {}: {source} (is dockerd running?)", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Docker API {path}: {source}")]
    Http {
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("Docker API {path}: HTTP {status}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("Docker API {path}: unexpected JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Docker API {path}: no answer within {}s", CALL_TIMEOUT.as_secs())]
    Timeout { path: String },
}

/// What attribution needs to know about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full 64-hex id.
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    /// The image reference the container was created from (`Config.Image`), e.g. `app:1.2`.
    pub image: String,
    /// The image id, `sha256:…` (the digest of the image config).
    pub image_id: String,
    /// Host pid of the container's init process while it runs.
    pub pid: Option<u32>,
    /// The overlay mount point (GraphDriver.Data.MergedDir), when the driver reports one.
    pub merged_dir: Option<PathBuf>,
    pub upper_dir: Option<PathBuf>,
    /// GraphDriver.Data.LowerDir, top first (the `-init` layer, then the image's layers).
    pub lower_dirs: Vec<PathBuf>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectJson {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    config: Option<ConfigJson>,
    state: Option<StateJson>,
    graph_driver: Option<GraphDriverJson>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigJson {
    image: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StateJson {
    #[serde(default)]
    pid: i64,
    #[serde(default)]
    running: bool,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GraphDriverJson {
    data: Option<HashMap<String, String>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListEntry {
    id: String,
}

#[derive(serde::Deserialize)]
struct ErrorJson {
    message: String,
}

impl From<InspectJson> for ContainerInfo {
    fn from(j: InspectJson) -> Self {
        let data = j.graph_driver.and_then(|g| g.data).unwrap_or_default();
        let dir = |k: &str| data.get(k).filter(|s| !s.is_empty()).map(PathBuf::from);
        let running = j.state.as_ref().is_some_and(|s| s.running);
        Self {
            id: j.id,
            name: j.name.trim_start_matches('/').to_owned(),
            image: j.config.and_then(|c| c.image).unwrap_or_default(),
            image_id: j.image,
            pid: j
                .state
                .and_then(|s| u32::try_from(s.pid).ok())
                .filter(|p| running && *p > 0),
            merged_dir: dir("MergedDir"),
            upper_dir: dir("UpperDir"),
            lower_dirs: data
                .get("LowerDir")
                .map(|l| {
                    l.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Docker's container names and ids use these characters only; anything else cannot name a
/// container and is not put into a request path.
fn valid_ref(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `DOCKER_HOST` if it is a `unix://` address, else [`DEFAULT_SOCKET`].
pub fn socket_from_env() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

pub struct DockerClient {
    socket: PathBuf,
}

impl DockerClient {
    /// The client for `DOCKER_HOST` (if it is a `unix://` address) or the default socket, if
    /// that socket exists. No connection is made here.
    pub fn from_env() -> Option<Self> {
        let socket = socket_from_env();
        socket.exists().then_some(Self { socket })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET path`; `Ok(None)` on 404.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, DockerError> {
        tokio::time::timeout(CALL_TIMEOUT, self.get_json_inner(path))
            .await
            .unwrap_or_else(|_| {
                Err(DockerError::Timeout {
                    path: path.to_owned(),
                })
            })
    }

    async fn get_json_inner<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, DockerError> {
        let http = |source| DockerError::Http {
            path: path.to_owned(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let req = Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .expect("a GET with a valid path and header");
        // The connection future must run while the request is in flight; it ends once the
        // sender (moved into `fetch`) is dropped.
        let fetch = async move {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let (res, _conn) = tokio::join!(fetch, conn);
        let (status, body) = res.map_err(http)?;
        if status == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorJson>(&body).map_or_else(
                |_| String::from_utf8_lossy(&body).into_owned(),
                |e| e.message,
            );
            return Err(DockerError::Status {
                path: path.to_owned(),
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|source| DockerError::Json {
                path: path.to_owned(),
                source,
            })
    }

    /// `docker inspect` of a name, a full id or a unique id prefix; `Ok(None)` if the engine
    /// knows no such container.
    pub async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        if !valid_ref(name_or_id) {
            return Ok(None);
        }
        let j: Option<InspectJson> = self
            .get_json(&format!("/containers/{name_or_id}/json"))
            .await?;
        Ok(j.map(ContainerInfo::from))
    }

    /// Ids of the running containers.
    pub async fn running(&self) -> Result<Vec<String>, DockerError> {
        let list: Option<Vec<ListEntry>> = self.get_json("/containers/json").await?;
        Ok(list.unwrap_or_default().into_iter().map(|e| e.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `GET /containers/{id}/json` of Debian's engine 20.10.24 on this
    /// host (overlay2 driver).
    #[test]
    fn inspect_json_to_info() {
        let j = r#"{"Id":"4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970",
            "Name":"/web","Image":"sha256:0b9c1e5f","State":{"Status":"running","Running":true,"Pid":4242},
            "Config":{"Image":"cowprof-attr:1"},
            "GraphDriver":{"Name":"overlay2","Data":{
              "LowerDir":"/var/lib/docker/overlay2/abc-init/diff:/var/lib/docker/overlay2/def/diff",
              "MergedDir":"/var/lib/docker/overlay2/abc/merged",
              "UpperDir":"/var/lib/docker/overlay2/abc/diff",
              "WorkDir":"/var/lib/docker/overlay2/abc/work"}}}"#;
        let info = ContainerInfo::from(serde_json::from_str::<InspectJson>(j).unwrap());
        assert_eq!(info.name, "web");
        assert_eq!(info.image, "cowprof-attr:1");
        assert_eq!(info.image_id, "sha256:0b9c1e5f");
        assert_eq!(info.pid, Some(4242));
        assert_eq!(
            info.merged_dir.as_deref(),
            Some(Path::new("/var/lib/docker/overlay2/abc/merged"))
        );
        assert_eq!(info.lower_dirs.len(), 2);
    }

    #[test]
    fn stopped_container_has_no_pid_and_null_graph_data() {
        let j = r#"{"Id":"ab","Name":"/x","Image":"sha256:1","State":{"Running":false,"Pid":0},
            "Config":{"Image":"i"},"GraphDriver":{"Name":"overlayfs","Data":null}}"#;
        let info = ContainerInfo::from(serde_json::from_str::<InspectJson>(j).unwrap());
        assert_eq!(info.pid, None);
        assert_eq!(info.merged_dir, None);
        assert!(info.lower_dirs.is_empty());
    }

    #[test]
    fn refs_that_cannot_name_a_container_are_not_sent() {
        assert!(valid_ref("web_1.a-b"));
        assert!(!valid_ref("../images"));
        assert!(!valid_ref("a/b"));
        assert!(!valid_ref("a?b"));
        assert!(!valid_ref(""));
    }
}
