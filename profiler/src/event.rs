//! The event as users see it: one JSON line, one table row, one count in the summary and the
//! metrics. Every stage of the pipeline and every tool speaks these types.

/// The kernel mechanisms cowprof can use, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// fentry/fexit on overlay functions (BTF trampolines).
    Fentry,
    /// kprobe/kretprobe on overlay functions (distro kernels, overlay as a module).
    Kprobe,
    /// Syscall windows plus the 6.13+ ctime tracepoints (kernels without kprobes and fentry).
    Tracepoint,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }

    /// The kernel side's backend id (`profiler_common::backend`).
    pub fn from_wire(id: u32) -> Option<Self> {
        match id {
            profiler_common::backend::FENTRY => Some(Self::Fentry),
            profiler_common::backend::KPROBE => Some(Self::Kprobe),
            profiler_common::backend::TRACEPOINT => Some(Self::Tracepoint),
            _ => None,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Fentry, Self::Kprobe, Self::Tracepoint]
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| format!("unknown backend {s:?}; use kprobe or tracepoint"))
    }
}

/// What an operation was, as users name it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    DataCopyUp,
    Metacopy,
    DirCopyUp,
    SpecialCopyUp,
    DeferredDataCopyUp,
    Whiteout,
    OpaqueDir,
    CreateOverWhiteout,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::DataCopyUp,
        Self::Metacopy,
        Self::DirCopyUp,
        Self::SpecialCopyUp,
        Self::DeferredDataCopyUp,
        Self::Whiteout,
        Self::OpaqueDir,
        Self::CreateOverWhiteout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataCopyUp => "data_copy_up",
            Self::Metacopy => "metacopy",
            Self::DirCopyUp => "dir_copy_up",
            Self::SpecialCopyUp => "special_copy_up",
            Self::DeferredDataCopyUp => "deferred_data_copy_up",
            Self::Whiteout => "whiteout",
            Self::OpaqueDir => "opaque_dir",
            Self::CreateOverWhiteout => "create_over_whiteout",
        }
    }

    pub fn is_copy_up(self) -> bool {
        matches!(
            self,
            Self::DataCopyUp
                | Self::Metacopy
                | Self::DirCopyUp
                | Self::SpecialCopyUp
                | Self::DeferredDataCopyUp
        )
    }
}

/// A text many events share (a mount's device and mount point, a layer's directory and image
/// layer, a syscall's name): built once, and each event holds a reference to it, so making an
/// event allocates nothing for it.
pub type Text = std::sync::Arc<str>;

/// An enriched event: one JSON line, one table row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub kind: Kind,
    pub backend: Backend,
    /// Wall-clock end time, ns since the Unix epoch.
    pub time_ns: u64,
    pub latency_ns: u64,
    /// True when the backend sees only part of the operation (see docs/backends.md).
    pub latency_partial: bool,
    /// 0 or a positive errno.
    pub errno: i32,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub mnt_ns: u64,
    /// `major:minor` of the overlay mount.
    pub dev: Option<Text>,
    pub mount_point: Option<Text>,
    /// Relative to the overlay root.
    pub path: String,
    pub path_truncated: bool,
    pub size_bytes: u64,
    pub bytes_copied: u64,
    /// 1 = topmost lower layer.
    pub lower_layer: Option<u32>,
    pub lower_layer_dir: Option<Text>,
    pub syscall: Option<Text>,
    pub syscall_latency_ns: Option<u64>,
    pub syscall_ret: Option<i64>,
    /// Full 64-hex id of the container the acting process runs in; `None` for a host process
    /// (also one writing into a container's merged dir).
    #[serde(default)]
    pub container_id: Option<String>,
    /// From the Docker engine, or containerd (a Kubernetes container: its name in the pod spec).
    #[serde(default)]
    pub container_name: Option<String>,
    /// The image reference the container was created from, e.g. `app:1.2`.
    #[serde(default)]
    pub image: Option<String>,
    /// The image id (`sha256:…`, the digest of the image config).
    #[serde(default)]
    pub image_id: Option<String>,
    /// diffID (`sha256:…`) of the image layer the copied-up file came from, `"init"` for a
    /// container's init layer; `None` when the lower layer is in no known image store.
    #[serde(default)]
    pub layer_digest: Option<Text>,
    /// The Kubernetes pod's name and namespace, from containerd's API (the kubelet's labels).
    #[serde(default)]
    pub pod_name: Option<String>,
    #[serde(default)]
    pub pod_namespace: Option<String>,
    /// The pod's UID, from the kubepods cgroup path (no runtime socket needed).
    #[serde(default)]
    pub pod_uid: Option<String>,
    /// The pod's `QoS` class from the cgroup path: `guaranteed`, `burstable` or `besteffort`.
    #[serde(default)]
    pub pod_qos: Option<String>,
    /// Copy-ups: where the latency went (see docs/phases.md). Absent for other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<CopyUpPhases>,
}

/// How a copy-up's data was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMethod {
    /// `vfs_clone_file_range`: a reflink, no bytes moved.
    Clone,
    /// `do_splice_direct`: bytes copied through the page cache.
    Splice,
}

/// One copy-up's latency, split into phases that never overlap. The function phases
/// (`metadata`, `data`, `fsync`, `link`) count time on the CPU inside them; time off the CPU
/// is in `offcpu_block_ns` (waiting for block I/O) or `offcpu_other_ns`. `None` = the
/// backend cannot see that phase on this kernel (its time is then in `other_ns`).
/// `other_ns` is the latency minus every phase shown, so the sum is exactly `latency_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CopyUpPhases {
    pub metadata_ns: Option<u64>,
    pub data_ns: Option<u64>,
    /// `None` when no data was copied or the method is not visible.
    pub data_method: Option<DataMethod>,
    pub data_bytes: Option<u64>,
    pub fsync_ns: Option<u64>,
    pub link_ns: Option<u64>,
    pub offcpu_block_ns: Option<u64>,
    pub offcpu_other_ns: Option<u64>,
    pub other_ns: u64,
}

/// The phase names, in the order of [`CopyUpPhases::values`].
pub const PHASE_NAMES: [&str; 7] = [
    "metadata",
    "data",
    "fsync",
    "link",
    "offcpu_block",
    "offcpu_other",
    "other",
];

impl CopyUpPhases {
    /// From the kernel's phases of an event of `latency_ns`; `has_data` false for copy-ups
    /// that copy no data (metacopy, directories, special files).
    #[must_use]
    pub fn from_wire(w: &profiler_common::Phases, latency_ns: u64, has_data: bool) -> Self {
        use profiler_common::phase_seen as s;
        let shown = |bit: u32, v: u64| (w.seen & bit != 0).then_some(v);
        let bytes = w.data_clone_bytes + w.data_splice_bytes;
        let (data_method, data_bytes) = if !has_data {
            (None, shown(s::DATA_BYTES, 0))
        } else if w.data_clone_bytes > 0 {
            (Some(DataMethod::Clone), Some(bytes))
        } else if w.seen & s::DATA_BYTES != 0 {
            (Some(DataMethod::Splice), Some(bytes))
        } else {
            (None, None)
        };
        let mut p = Self {
            metadata_ns: shown(s::METADATA, w.metadata_ns),
            data_ns: shown(s::DATA, if has_data { w.data_ns } else { 0 }),
            data_method,
            data_bytes,
            fsync_ns: shown(s::FSYNC, w.fsync_ns),
            link_ns: shown(s::LINK, w.link_ns),
            offcpu_block_ns: shown(s::OFFCPU, w.offcpu_block_ns),
            offcpu_other_ns: shown(s::OFFCPU, w.offcpu_other_ns),
            other_ns: 0,
        };
        let measured: u64 = p.values()[..6].iter().flatten().sum();
        p.other_ns = latency_ns.saturating_sub(measured);
        p
    }

    /// Each phase's time, in [`PHASE_NAMES`] order (`other` always shown).
    #[must_use]
    pub fn values(&self) -> [Option<u64>; 7] {
        [
            self.metadata_ns,
            self.data_ns,
            self.fsync_ns,
            self.link_ns,
            self.offcpu_block_ns,
            self.offcpu_other_ns,
            Some(self.other_ns),
        ]
    }
}

impl Event {
    /// An event of `kind` from `backend` with every other field zero, empty or `None`: the
    /// start for tests and benches, which set what they need with struct update syntax.
    #[must_use]
    pub fn new(kind: Kind, backend: Backend) -> Self {
        Self {
            kind,
            backend,
            time_ns: 0,
            latency_ns: 0,
            latency_partial: false,
            errno: 0,
            pid: 0,
            tid: 0,
            comm: String::new(),
            cgroup_id: 0,
            mnt_ns: 0,
            dev: None,
            mount_point: None,
            path: String::new(),
            path_truncated: false,
            size_bytes: 0,
            bytes_copied: 0,
            lower_layer: None,
            lower_layer_dir: None,
            syscall: None,
            syscall_latency_ns: None,
            syscall_ret: None,
            container_id: None,
            container_name: None,
            image: None,
            image_id: None,
            layer_digest: None,
            pod_name: None,
            pod_namespace: None,
            pod_uid: None,
            pod_qos: None,
            phases: None,
        }
    }
}
