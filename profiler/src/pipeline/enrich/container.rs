//! Process → container, and container → name and image.
//!
//! The container id comes from `/proc/PID/cgroup`, read when the event reaches user space
//! (container processes are often gone a few milliseconds later, so it is read before the
//! event waits for its syscall's exit). Every runtime puts the 64-hex container id into the
//! last component of its cgroup path:
//!
//! | runtime / driver                 | cgroup path (v1 controller line or v2 `0::` line)                         |
//! |----------------------------------|----------------------------------------------------------------------------|
//! | Docker, cgroupfs driver          | `/docker/<id>`                                                             |
//! | Docker, systemd driver           | `/system.slice/docker-<id>.scope`                                          |
//! | containerd CRI, systemd (k8s)    | `/kubepods.slice/…/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | any CRI runtime, cgroupfs (k8s)  | `/kubepods/burstable/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`             |
//! | podman (systemd / cgroupfs)      | `…/libpod-<id>.scope` (maybe `/container` below it), `/libpod_parent/libpod-<id>` |
//! | CRI-O                            | `…/crio-<id>.scope`                                                        |
//!
//! Monitor processes sit in look-alike scopes (`crio-conmon-<id>.scope`,
//! `libpod-conmon-<id>.scope`): they run on the host's behalf and are not the container.
//!
//! When `/proc/PID/cgroup` is already gone, two keys that the event carries are used: the v2
//! cgroup id (only where the container's cgroup is a v2 one, learnt from earlier events) and
//! the mount namespace inode (learnt from earlier events and from the Docker engine's
//! container pids). The engine (see [`super::docker`]) then gives the name and image; for a
//! container it does not know, containerd's API ([`super::containerd`]) gives the Kubernetes
//! container and pod names. The pod's UID and `QoS` class come from the cgroup path itself
//! ([`super::pod`]), so they are there without any runtime socket.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{
    containerd::{ContainerdClient, ContainerdError, ContainerdInfo, ImageLayers},
    docker::{ContainerInfo, DockerClient, DockerError},
    pod, Event, FastMap,
};

/// Which convention the cgroup path followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    /// containerd's CRI plugin (`cri-containerd-<id>.scope`).
    Containerd,
    /// A Kubernetes pod cgroup with the cgroupfs driver: the runtime is not in the path.
    Kubernetes,
    Podman,
    CriO,
}

/// A container as its cgroup names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupContainer {
    pub runtime: Runtime,
    /// Full 64-hex id.
    pub id: String,
    /// Found on the cgroup v2 (`0::`) line: the event's `cgroup_id` then identifies it too.
    pub v2: bool,
    /// The Kubernetes pod around it, when the path is a kubepods one.
    pub pod: Option<PodRef>,
}

/// A Kubernetes pod as the kubelet's cgroup path names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// With dashes, as the API server shows it (a static pod's 32-hex hash as it is).
    pub uid: String,
    pub qos: pod::Qos,
}

/// What attribution keeps of one process: its container and, for a Kubernetes container, its
/// pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Full 64-hex container id.
    pub id: String,
    pub pod: Option<PodRef>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container named by one cgroup path component, given its parent component.
fn component_container(comp: &str, parent: &str) -> Option<(Runtime, String)> {
    let scoped = |prefix: &str| {
        comp.strip_prefix(prefix)
            .map(|rest| rest.strip_suffix(".scope").unwrap_or(rest))
            .filter(|id| is_container_id(id))
            .map(str::to_owned)
    };
    for (prefix, runtime) in [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ] {
        // `crio-conmon-<id>` and `libpod-conmon-<id>` fail the id check: monitors are skipped.
        if let Some(id) = scoped(prefix) {
            return Some((runtime, id));
        }
    }
    if is_container_id(comp) {
        if parent == "docker" {
            return Some((Runtime::Docker, comp.to_owned()));
        }
        if parent.starts_with("pod") {
            return Some((Runtime::Kubernetes, comp.to_owned()));
        }
    }
    None
}

/// The innermost container in one cgroup path (Docker in Docker nests `/docker/<a>/docker/<b>`:
/// the process belongs to `<b>`). Components below the container's own (podman's
/// `libpod-<id>.scope/container`, a payload's own sub-cgroups) are allowed.
pub fn container_of_path(path: &str) -> Option<(Runtime, String)> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    (0..comps.len()).rev().find_map(|i| {
        let parent = if i == 0 { "" } else { comps[i - 1] };
        component_container(comps[i], parent)
    })
}

/// The container a `/proc/PID/cgroup` text puts its process in; `None` for a host process.
/// Works for cgroup v1 (one `N:controllers:path` line per hierarchy), v2 (`0::path`) and
/// hybrid hosts (both).
pub fn container_of_cgroup(text: &str) -> Option<CgroupContainer> {
    let mut found = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hier), Some(_controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let Some((runtime, id)) = container_of_path(path) {
            let v2 = hier == "0";
            // Prefer the v2 line: then the event's cgroup id is a key to the container too.
            if v2 || found.is_none() {
                // The pod is taken only when the pod parser finds this same container in it.
                let pod = pod::parse(path)
                    .filter(|p| p.container_id.as_deref() == Some(id.as_str()))
                    .map(|p| PodRef {
                        uid: p.pod_uid,
                        qos: p.qos,
                    });
                found = Some(CgroupContainer {
                    runtime,
                    id,
                    v2,
                    pod,
                });
            }
            if v2 {
                break;
            }
        }
    }
    found
}

/// What one process was found to be, cached for the session.
#[derive(Debug, Clone)]
enum Seen {
    Host,
    Container(Origin),
}

impl From<CgroupContainer> for Origin {
    fn from(c: CgroupContainer) -> Self {
        Self {
            id: c.id,
            pod: c.pod,
        }
    }
}

/// Pid → container, read from /proc as early as possible and cached. Keyed by (pid, mount
/// namespace): a reused pid in another namespace is read afresh.
pub struct CgroupCache {
    proc_root: PathBuf,
    by_pid: FastMap<(u32, u64), Seen>,
    /// v2 cgroup id → container, learnt when a container was found on a `0::` line.
    by_cgroup_id: FastMap<u64, Origin>,
    /// Mount namespace inode → container, and the v2 cgroup id of the process it was learnt
    /// from when known. The kernel hands a namespace's inode number to the next namespace as
    /// soon as it is freed (a short-lived container's, to the next container's): an event
    /// whose cgroup id differs from the one learnt is not recognised by it.
    by_mnt_ns: FastMap<u64, (Origin, Option<u64>)>,
}

impl Default for CgroupCache {
    fn default() -> Self {
        Self::new(Path::new("/proc"))
    }
}

impl CgroupCache {
    pub fn new(proc_root: &Path) -> Self {
        Self {
            proc_root: proc_root.to_path_buf(),
            by_pid: FastMap::default(),
            by_cgroup_id: FastMap::default(),
            by_mnt_ns: FastMap::default(),
        }
    }

    /// The container (and pod) of the process, or `None` for a host process (or one that is
    /// gone with no key left to recognise it by).
    pub fn container_of(&mut self, pid: u32, mnt_ns: u64, cgroup_id: u64) -> Option<Origin> {
        if let Some(seen) = self.by_pid.get(&(pid, mnt_ns)) {
            return match seen {
                Seen::Host => None,
                Seen::Container(o) => Some(o.clone()),
            };
        }
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        let Ok(text) = std::fs::read_to_string(&path) else {
            // Gone already: recognise it by its keys, and do not cache a guess.
            if let Some(o) = self.by_cgroup_id.get(&cgroup_id) {
                return Some(o.clone());
            }
            return match self.by_mnt_ns.get(&mnt_ns) {
                // Another container's namespace had this inode number: not this one's.
                Some((_, Some(cg))) if cgroup_id != 0 && *cg != cgroup_id => None,
                Some((o, _)) => Some(o.clone()),
                None => None,
            };
        };
        let seen = match container_of_cgroup(&text) {
            Some(c) => {
                let v2 = c.v2;
                let origin = Origin::from(c);
                if v2 && cgroup_id != 0 {
                    self.by_cgroup_id.insert(cgroup_id, origin.clone());
                }
                if mnt_ns != 0 {
                    let cg = (v2 && cgroup_id != 0).then_some(cgroup_id);
                    self.by_mnt_ns.insert(mnt_ns, (origin.clone(), cg));
                }
                Seen::Container(origin)
            }
            None => Seen::Host,
        };
        if self.by_pid.len() > 65_536 {
            self.by_pid.clear();
        }
        self.by_pid.insert((pid, mnt_ns), seen.clone());
        match seen {
            Seen::Host => None,
            Seen::Container(o) => Some(o),
        }
    }

    /// Teach the cache a container's mount namespace (from its init pid). What the /proc scan
    /// already learnt (with the pod) is kept.
    pub fn learn_mnt_ns(&mut self, mnt_ns: u64, container_id: &str) {
        self.by_mnt_ns.entry(mnt_ns).or_insert_with(|| {
            (
                Origin {
                    id: container_id.to_owned(),
                    pod: None,
                },
                None,
            )
        });
    }

    /// Reads every process's cgroup once, so that each running container's mount namespace
    /// is known before its first event: a process that exits before its event is read (a
    /// `docker exec` of `rm`) is then still recognised, with or without an engine. Called at
    /// start and when a new overlay mount appears (a container starting). Returns how many
    /// container processes were seen.
    pub fn scan_proc(&mut self) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.proc_root) else {
            return 0;
        };
        let mut seen = 0;
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(e.path().join("cgroup")) else {
                continue;
            };
            let Some(c) = container_of_cgroup(&text) else {
                continue;
            };
            let Ok(ns) = std::fs::metadata(e.path().join("ns/mnt")) else {
                continue;
            };
            let cg = if c.v2 { v2_cgroup_id(&text) } else { None };
            let origin = Origin::from(c);
            self.by_mnt_ns.insert(ns.ino(), (origin.clone(), cg));
            self.by_pid.insert((pid, ns.ino()), Seen::Container(origin));
            seen += 1;
        }
        seen
    }
}

/// The v2 cgroup id of a `/proc/PID/cgroup` text's `0::` line: the inode number of its
/// directory in the cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
/// host), which is what `bpf_get_current_cgroup_id` returns.
fn v2_cgroup_id(text: &str) -> Option<u64> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find_map(|root| std::fs::metadata(format!("{root}{path}")).ok())
        .map(|m| m.ino())
}

/// The mount namespace inode of a process, as the eBPF side reads it.
pub fn mnt_ns_of(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {name} (see `docker ps -a`)")]
    NotFound { name: String },
    #[error(
        "{name}: no Docker engine socket at {socket}; give the full 64-hex container id instead"
    )]
    NoEngine { name: String, socket: String },
    #[error(transparent)]
    Docker(#[from] DockerError),
}

/// Names the containers the events' cgroups point at: the Docker engine first (name, image,
/// image id), then containerd's API for ids the engine does not know (Kubernetes container and
/// pod names, image). Each id is asked once per session, answer or not. Without either the
/// events keep the id (and the pod UID and `QoS` from the cgroup) only, said once on stderr.
pub struct Attributor {
    docker: Option<DockerClient>,
    /// Why the engine is not asked any more (its socket was there but did not answer).
    docker_down: Option<DockerError>,
    /// By full id; `None` = the engine does not know it (another runtime's container).
    known: HashMap<String, Option<ContainerInfo>>,
    containerd: Option<ContainerdClient>,
    /// Why containerd is not asked any more (its socket is absent, refused, or it timed out).
    containerd_down: Option<ContainerdError>,
    /// By full id; `None` = containerd does not know it, or could not answer.
    from_containerd: HashMap<String, Option<ContainerdInfo>>,
    /// By container id: its image's layers from containerd (`None`: could not be read).
    layers_from_containerd: HashMap<String, Option<ImageLayers>>,
    /// containerd lookups that timed out in a row; at [`MAX_TIMEOUTS`] it is given up.
    timeouts: u32,
    said_unnamed: bool,
}

/// containerd lookups may time out this many times in a row before it is no longer asked.
const MAX_TIMEOUTS: u32 = 3;

impl Attributor {
    pub fn new(docker: Option<DockerClient>, containerd: Option<ContainerdClient>) -> Self {
        Self {
            docker,
            docker_down: None,
            known: HashMap::new(),
            containerd,
            containerd_down: None,
            from_containerd: HashMap::new(),
            layers_from_containerd: HashMap::new(),
            timeouts: 0,
            said_unnamed: false,
        }
    }

    /// The running containers, asked once at start so that their mount namespaces are known
    /// before their first event. Engine errors leave the list empty (said once on stderr).
    pub async fn running(&mut self) -> Vec<ContainerInfo> {
        let Some(docker) = &self.docker else {
            return Vec::new();
        };
        let ids = match docker.running().await {
            Ok(ids) => ids,
            Err(e) => {
                // Said once with the first container event if containerd cannot name it either.
                log::debug!("Docker engine given up: {e}");
                self.docker = None;
                self.docker_down = Some(e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(info) = self.info(&id).await {
                out.push(info);
            }
        }
        out
    }

    /// `--container NAME|ID`: the container's full id and, when the engine is there, the rest.
    pub async fn resolve(&mut self, name: &str) -> Result<ContainerInfo, ContainerError> {
        let Some(docker) = &self.docker else {
            if is_container_id(name) {
                return Ok(ContainerInfo {
                    id: name.to_ascii_lowercase(),
                    name: String::new(),
                    image: String::new(),
                    image_id: String::new(),
                    pid: None,
                    merged_dir: None,
                    upper_dir: None,
                    lower_dirs: Vec::new(),
                });
            }
            return Err(ContainerError::NoEngine {
                name: name.to_owned(),
                socket: super::docker::socket_from_env().display().to_string(),
            });
        };
        let info = docker
            .inspect(name)
            .await?
            .ok_or_else(|| ContainerError::NotFound {
                name: name.to_owned(),
            })?;
        self.known.insert(info.id.clone(), Some(info.clone()));
        Ok(info)
    }

    async fn info(&mut self, id: &str) -> Option<ContainerInfo> {
        if let Some(k) = self.known.get(id) {
            return k.clone();
        }
        let docker = self.docker.as_ref()?;
        let info = match docker.inspect(id).await {
            Ok(i) => i,
            Err(e) => {
                log::debug!("inspect {id}: {e}");
                None
            }
        };
        self.known.insert(id.to_owned(), info.clone());
        info
    }

    /// containerd's record of a container: asked once per id; a socket that is absent or
    /// refused is given up at once, one that times out after [`MAX_TIMEOUTS`] tries in a row.
    async fn containerd_info(&mut self, id: &str) -> Option<ContainerdInfo> {
        if let Some(k) = self.from_containerd.get(id) {
            return k.clone();
        }
        let client = self.containerd.as_mut()?;
        let info = match client.container(id).await {
            Ok(i) => {
                self.timeouts = 0;
                i
            }
            Err(e) => {
                if self.give_up(e, id) {
                    // Not cached: the id may still be named by the engine's answer, not ours.
                    return None;
                }
                None
            }
        };
        self.from_containerd.insert(id.to_owned(), info.clone());
        info
    }

    /// Counts a failed containerd call; true if containerd is given up now.
    fn give_up(&mut self, e: ContainerdError, id: &str) -> bool {
        let timed_out = matches!(e, ContainerdError::Timeout { .. });
        self.timeouts = if timed_out { self.timeouts + 1 } else { 0 };
        if e.is_unavailable() || self.timeouts >= MAX_TIMEOUTS {
            log::debug!("containerd given up: {e}");
            self.containerd = None;
            self.containerd_down = Some(e);
            return true;
        }
        log::debug!("containerd lookup of {id}: {e}");
        false
    }

    /// The image layers of a containerd container: one lookup per container, answer or not,
    /// within the same budget as [`Self::containerd_info`].
    async fn containerd_layers(&mut self, c: &ContainerdInfo) -> Option<&ImageLayers> {
        if !self.layers_from_containerd.contains_key(&c.id) {
            let client = self.containerd.as_mut()?;
            let layers = match client.layers(c).await {
                Ok(l) => {
                    self.timeouts = 0;
                    Some(l)
                }
                Err(e) => {
                    self.give_up(e, &c.id);
                    None
                }
            };
            self.layers_from_containerd.insert(c.id.clone(), layers);
        }
        self.layers_from_containerd.get(&c.id)?.as_ref()
    }

    /// Said once: which sources of names are missing, and what the events keep instead.
    fn say_unnamed(&mut self) {
        if self.said_unnamed {
            return;
        }
        self.said_unnamed = true;
        let docker = self.docker_down.as_ref().map_or_else(
            || {
                format!(
                    "no Docker engine socket at {}",
                    super::docker::socket_from_env().display()
                )
            },
            ToString::to_string,
        );
        let containerd = self.containerd_down.as_ref().map(ToString::to_string);
        match (self.docker.is_some(), containerd) {
            (false, None) => {
                eprintln!("cowprof: {docker}; containers are named by cgroup id only");
            }
            (false, Some(c)) => {
                eprintln!("cowprof: {docker}; {c}; containers are named by cgroup id only");
            }
            (true, Some(c)) => eprintln!(
                "cowprof: {c}; containers the Docker engine does not know are named by cgroup id only"
            ),
            (true, None) => self.said_unnamed = false,
        }
    }

    /// Fills names, image, image id and pod names of events whose container id is known.
    pub async fn fill(&mut self, events: &mut [Event]) {
        for ev in events {
            let Some(id) = ev.container_id.clone() else {
                continue;
            };
            if let Some(info) = self.info(&id).await {
                ev.container_name = Some(info.name);
                ev.image = Some(info.image).filter(|s| !s.is_empty());
                ev.image_id = Some(info.image_id).filter(|s| !s.is_empty());
                continue;
            }
            if let Some(c) = self.containerd_info(&id).await {
                if let Some(layers) = self.containerd_layers(&c).await {
                    ev.image_id = Some(layers.image_id.clone()).filter(|s| !s.is_empty());
                    if ev.layer_digest.is_none() {
                        ev.layer_digest = ev
                            .lower_layer_dir
                            .as_deref()
                            .and_then(|d| layers.by_dir.get(d))
                            .map(|d| d.as_str().into());
                    }
                }
                ev.container_name = c.container_name;
                ev.image = Some(c.image).filter(|s| !s.is_empty());
                ev.pod_name = c.pod_name;
                ev.pod_namespace = c.pod_namespace;
                // The cgroup's UID stays (it is the kernel's view); the label fills it otherwise.
                if ev.pod_uid.is_none() {
                    ev.pod_uid = c.pod_uid;
                }
                continue;
            }
            if self.containerd.is_none() {
                self.say_unnamed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";

    fn id_of(text: &str) -> Option<(Runtime, String, bool)> {
        container_of_cgroup(text).map(|c| (c.runtime, c.id, c.v2))
    }

    /// This host: cgroup v1 with Docker's cgroupfs driver, plus the (unused) v2 hierarchy.
    #[test]
    fn docker_cgroupfs_v1_hybrid() {
        let text = format!(
            "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n2:cpu,cpuacct:/docker/{ID}\n\
             1:name=systemd:/docker/{ID}\n0::/\n"
        );
        assert_eq!(id_of(&text), Some((Runtime::Docker, ID.into(), false)));
    }

    /// `CentOS` 7 with Docker's systemd driver (neuvector's `cgroup_test.go` keeps this one).
    #[test]
    fn docker_systemd_v1() {
        let text = format!(
            "10:devices:/system.slice/docker-{ID}.scope\n\
             2:cpuacct,cpu:/system.slice/docker-{ID}.scope\n\
             1:name=systemd:/system.slice/docker-{ID}.scope\n"
        );
        assert_eq!(id_of(&text), Some((Runtime::Docker, ID.into(), false)));
    }

    #[test]
    fn docker_systemd_v2_and_cgroupfs_v2() {
        assert_eq!(
            id_of(&format!("0::/system.slice/docker-{ID}.scope\n")),
            Some((Runtime::Docker, ID.into(), true))
        );
        assert_eq!(
            id_of(&format!("0::/docker/{ID}\n")),
            Some((Runtime::Docker, ID.into(), true))
        );
    }

    #[test]
    fn kubernetes_containerd_systemd_v2() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(id_of(&text), Some((Runtime::Containerd, ID.into(), true)));
    }

    /// The pod around a Kubernetes container comes with it, from the same cgroup line; this
    /// host's cgroup v1 form (what `ctr run --cgroup` made in `tests/record_containerd.rs`).
    #[test]
    fn kubernetes_pod_comes_with_the_container() {
        let uid = "0a1b2c3d-4e5f-4789-abcd-ef0123456789";
        let text = format!(
            "4:memory:/kubepods/besteffort/pod{uid}/{ID}\n0::/kubepods/besteffort/pod{uid}/{ID}\n"
        );
        let c = container_of_cgroup(&text).unwrap();
        assert_eq!(
            c.pod,
            Some(PodRef {
                uid: uid.into(),
                qos: pod::Qos::BestEffort
            })
        );
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            uid.replace('-', "_")
        );
        let c = container_of_cgroup(&text).unwrap();
        assert_eq!(
            c.pod.map(|p| (p.uid, p.qos)),
            Some((uid.into(), pod::Qos::Burstable))
        );
        // Docker, podman: no pod.
        assert_eq!(
            container_of_cgroup(&format!("0::/docker/{ID}\n"))
                .unwrap()
                .pod,
            None
        );
    }

    #[test]
    fn kubernetes_cgroupfs_v1() {
        let text = format!(
            "11:memory:/kubepods/burstable/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}\n\
             1:name=systemd:/kubepods/burstable/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}\n"
        );
        assert_eq!(id_of(&text), Some((Runtime::Kubernetes, ID.into(), false)));
        // Guaranteed QoS pods sit directly under /kubepods.
        assert_eq!(
            id_of(&format!("0::/kubepods/pod0a1b2c3d-4e5f/{ID}\n")),
            Some((Runtime::Kubernetes, ID.into(), true))
        );
    }

    #[test]
    fn podman_rootless_and_cgroupfs() {
        let text = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
        );
        assert_eq!(id_of(&text), Some((Runtime::Podman, ID.into(), true)));
        assert_eq!(
            id_of(&format!("3:memory:/libpod_parent/libpod-{ID}\n")),
            Some((Runtime::Podman, ID.into(), false))
        );
    }

    #[test]
    fn crio_container_but_not_its_monitor() {
        let pod = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice";
        assert_eq!(
            id_of(&format!("0::/{pod}/crio-{ID}.scope\n")),
            Some((Runtime::CriO, ID.into(), true))
        );
        assert_eq!(id_of(&format!("0::/{pod}/crio-conmon-{ID}.scope\n")), None);
        assert_eq!(
            id_of(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n")),
            None
        );
    }

    #[test]
    fn docker_in_docker_is_the_inner_container() {
        let inner = "a".repeat(64);
        assert_eq!(
            id_of(&format!("0::/docker/{ID}/docker/{inner}\n")),
            Some((Runtime::Docker, inner, true))
        );
    }

    #[test]
    fn host_processes() {
        for text in [
            "0::/\n",
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "4:memory:/process_api/18c8a5fdac617ace96663601bbfa0ef3\n0::/\n",
            "1:name=systemd:/system.slice/docker.service\n",
            // Not 64 hex: a look-alike unit name.
            "0::/system.slice/docker-compose.scope\n",
            "",
            "garbage",
        ] {
            assert_eq!(id_of(text), None, "{text:?}");
        }
    }

    #[test]
    fn cache_reads_proc_and_falls_back_to_namespace() {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc.path().join("10")).unwrap();
        std::fs::write(proc.path().join("10/cgroup"), format!("0::/docker/{ID}\n")).unwrap();
        std::fs::create_dir_all(proc.path().join("11")).unwrap();
        std::fs::write(proc.path().join("11/cgroup"), "0::/\n").unwrap();
        let mut c = CgroupCache::new(proc.path());
        assert_eq!(
            c.container_of(10, 500, 77).map(|o| o.id).as_deref(),
            Some(ID)
        );
        assert_eq!(c.container_of(11, 1, 1), None);
        // Pid 12 is gone: its v2 cgroup id, or else its mount namespace, names it.
        assert_eq!(c.container_of(12, 0, 77).map(|o| o.id).as_deref(), Some(ID));
        assert_eq!(
            c.container_of(12, 500, 0).map(|o| o.id).as_deref(),
            Some(ID)
        );
        assert_eq!(c.container_of(13, 2, 2), None);
        // Pid 14 is gone, in a namespace with container 10's old inode number (500) but a
        // cgroup of its own (78): another container, not recognised as container 10.
        assert_eq!(c.container_of(14, 500, 78), None);
        // Cached: still answered after the process is gone.
        std::fs::remove_dir_all(proc.path().join("10")).unwrap();
        assert_eq!(
            c.container_of(10, 500, 77).map(|o| o.id).as_deref(),
            Some(ID)
        );
    }

    /// The scan learns a running container's mount namespace from any of its processes.
    #[test]
    fn scan_learns_namespaces_of_running_containers() {
        let proc = tempfile::tempdir().unwrap();
        let p = proc.path();
        for (pid, cgroup) in [
            ("20", format!("1:name=systemd:/docker/{ID}\n")),
            ("21", "0::/\n".into()),
        ] {
            std::fs::create_dir_all(p.join(pid).join("ns")).unwrap();
            std::fs::write(p.join(pid).join("cgroup"), cgroup).unwrap();
            // A regular file stands in for the namespace link: its inode is the key.
            std::fs::write(p.join(pid).join("ns/mnt"), pid).unwrap();
        }
        std::fs::create_dir_all(p.join("self")).unwrap();
        let ns_of = |pid: &str| std::fs::metadata(p.join(pid).join("ns/mnt")).unwrap().ino();
        let mut c = CgroupCache::new(p);
        assert_eq!(c.scan_proc(), 1);
        // Pid 30 (gone) in container 20's namespace; pid 31 (gone) in the host's.
        assert_eq!(
            c.container_of(30, ns_of("20"), 0).map(|o| o.id).as_deref(),
            Some(ID)
        );
        assert_eq!(c.container_of(31, ns_of("21"), 0), None);
    }
}
