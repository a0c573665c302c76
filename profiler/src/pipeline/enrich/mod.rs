//! Stage 4: raw kernel facts to the words users think in: the overlay mount, the layer the file
//! came from, the syscall and its latency, wall-clock time.

pub mod container;
pub mod containerd;
pub mod docker;
pub mod layers;
pub mod pod;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use profiler_common::SyscallEnd;

use crate::host::{lower::DirStacks, mountinfo::OverlayMount, syscalls};
use crate::{
    event::{CopyUpPhases, Event, Kind, Text},
    pipeline::decode::{RawEvent, SyscallExit, WireKind},
};
use container::CgroupCache;
use layers::LayerNames;

/// The per-event maps: keyed by small integers from the kernel (serials, pids, cgroup ids),
/// hashed with foldhash instead of the standard library's `SipHash` (that was about 4 % of the
/// collector's CPU with `--quiet --metrics-addr`, where each event looks its mount up twice).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Remembers every overlay mount seen during the session (a mount may be gone by the time its
/// last events are read) and joins events with the exit of their syscall.
pub struct Enricher {
    mounts: Vec<OverlayMount>,
    /// Mount serial (the kernel side's key, never reused in a session) -> index in
    /// `mounts`. Mounts are never forgotten: events of a mount that is gone keep their mount.
    by_serial: FastMap<u32, usize>,
    /// (kernel dev, inode) of each mount's upper root, read once when the mount is added.
    upper_roots: Vec<Option<(u32, u64)>>,
    /// Per mount (same index): the merged lower layers of directories already looked up.
    dir_stacks: Vec<DirStacks>,
    /// Per mount (same index): the texts its events carry, made once.
    texts: Vec<MountTexts>,
    /// Syscall names by number, made at a syscall's first event.
    syscall_texts: FastMap<i32, Text>,
    /// Monotonic-to-wall-clock offset, ns.
    wall_offset_ns: i128,
    /// Events waiting for their syscall's exit, by (tid, syscall enter time).
    pending: FastMap<(u32, u64), Vec<RawEvent>>,
    /// Pid → container, read at first sight of each process.
    containers: CgroupCache,
    layer_names: LayerNames,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Default for Enricher {
    fn default() -> Self {
        Self::new()
    }
}

impl Enricher {
    pub fn new() -> Self {
        Self {
            mounts: Vec::new(),
            by_serial: FastMap::default(),
            upper_roots: Vec::new(),
            dir_stacks: Vec::new(),
            texts: Vec::new(),
            syscall_texts: FastMap::default(),
            wall_offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
            pending: FastMap::default(),
            containers: CgroupCache::default(),
            layer_names: LayerNames::default(),
        }
    }

    /// Pid → container attribution, e.g. to teach it the running containers' namespaces.
    pub fn containers_mut(&mut self) -> &mut CgroupCache {
        &mut self.containers
    }

    /// Adds mounts not seen before. Returns true if any was new.
    pub fn add_mounts(&mut self, mounts: &[OverlayMount]) -> bool {
        let mut new = false;
        for m in mounts {
            if !self
                .mounts
                .iter()
                .any(|k| k.mount_id == m.mount_id && k.kdev == m.kdev)
            {
                self.upper_roots.push(
                    m.upperdir
                        .as_deref()
                        .and_then(crate::host::mountinfo::upper_root_key),
                );
                self.by_serial.insert(
                    profiler_common::USER_MOUNT_SERIAL | m.mount_id,
                    self.mounts.len(),
                );
                self.texts.push(MountTexts::of(m));
                self.mounts.push(m.clone());
                self.dir_stacks.push(DirStacks::default());
                new = true;
            }
        }
        new
    }

    /// An overlay mount the kernel side saw being made (either backend). It arrives before
    /// any event of the mount, so the mount is known even if it is gone before user space could
    /// read mountinfo. Relative paths are resolved against the mounting process's cwd while
    /// it lives; the new mount API gives no arguments, so its mount is looked up in mountinfo.
    pub fn add_kernel_mount(&mut self, rec: &crate::pipeline::decode::MountRecord) {
        let kdev = rec.ovl_dev;
        let (major, minor) = (kdev >> 20, kdev & 0xf_ffff);
        let mount = match &rec.args {
            Some((target, data)) => {
                let cwd = std::fs::read_link(format!("/proc/{}/cwd", rec.pid)).ok();
                crate::host::mountinfo::from_mount_args(target, data, cwd.as_deref(), kdev)
            }
            // By its upper root, which no other live mount shares (the device number is
            // handed to the next mount as soon as this one is gone).
            None => crate::host::mountinfo::read_overlay_mounts()
                .ok()
                .and_then(|all| {
                    all.into_iter().rev().find(|m| {
                        m.kdev == kdev
                            && m.upperdir
                                .as_deref()
                                .and_then(crate::host::mountinfo::upper_root_key)
                                == Some((rec.upper_dev, rec.upper_root_ino))
                    })
                }),
        };
        let Some(mut mount) = mount else {
            log::debug!(
                "overlay mount {major}:{minor} (serial {}) not resolved",
                rec.serial
            );
            return;
        };
        mount.kdev = kdev;
        mount.major = major;
        mount.minor = minor;
        self.by_serial.insert(rec.serial, self.mounts.len());
        self.upper_roots
            .push(Some((rec.upper_dev, rec.upper_root_ino)));
        self.texts.push(MountTexts::of(&mount));
        self.mounts.push(mount);
        self.dir_stacks.push(DirStacks::default());
    }

    pub fn mounts(&self) -> &[OverlayMount] {
        &self.mounts
    }

    /// True if `ev`'s overlay mount is among the mounts seen so far.
    pub fn knows_mount(&self, ev: &RawEvent) -> bool {
        self.mount_for(ev).is_some()
    }

    fn mount_for(&self, ev: &RawEvent) -> Option<usize> {
        if ev.dev_is_upper {
            // Tracepoint backend: the work dir's mount id, else the upper root the walk reached.
            if let Some(serial) = ev.mount_id {
                return self.by_serial.get(&serial).copied();
            }
            let key = Some((ev.kdev, ev.root_ino));
            self.upper_roots.iter().rposition(|r| *r == key)
        } else {
            // kprobe backend: the mount serial of the superblock's upper root; a mount the
            // kernel side knows nothing of (or whose record was lost) by its device number,
            // newest first.
            ev.mount_id
                .and_then(|serial| self.by_serial.get(&serial).copied())
                .or_else(|| self.mounts.iter().rposition(|m| m.kdev == ev.kdev))
        }
    }

    /// Takes a raw event; appends to `out` the events that are complete (now, or held until
    /// their syscall exits).
    pub fn push(&mut self, ev: RawEvent, out: &mut Vec<Event>) {
        // Now, not at the syscall's exit: the process may be gone by then.
        let origin = self
            .containers
            .container_of(ev.pid, u64::from(ev.mnt_ns), ev.cgroup_id);
        match (ev.syscall_enter_ns, ev.syscall_exit) {
            // Emitted at its syscall's exit: complete now.
            (Some(enter), Some(exit)) => out.push(self.finish(ev, origin, Some((enter, exit)))),
            (Some(enter), None) => self.pending.entry((ev.tid, enter)).or_default().push(ev),
            (None, _) => out.push(self.finish(ev, origin, None)),
        }
    }

    /// Appends to `out` the events that waited for this syscall's exit.
    pub fn syscall_end(&mut self, end: &SyscallEnd, out: &mut Vec<Event>) {
        let Some(evs) = self.pending.remove(&(end.tid, end.enter_ns)) else {
            return;
        };
        let exit = SyscallExit {
            exit_ns: end.exit_ns,
            ret: end.ret,
        };
        for ev in evs {
            let origin = self.origin_of(&ev);
            out.push(self.finish(ev, origin, Some((end.enter_ns, exit))));
        }
    }

    /// Events whose syscall never exited while we listened (e.g. stopped mid-syscall).
    pub fn flush(&mut self) -> Vec<Event> {
        let all: Vec<RawEvent> = self.pending.drain().flat_map(|(_, v)| v).collect();
        let mut out: Vec<Event> = all
            .into_iter()
            .map(|ev| {
                let origin = self.origin_of(&ev);
                self.finish(ev, origin, None)
            })
            .collect();
        out.sort_by_key(|e| e.time_ns);
        out
    }

    /// The event's container, from the cache [`Self::push`] filled when it arrived.
    fn origin_of(&mut self, ev: &RawEvent) -> Option<container::Origin> {
        self.containers
            .container_of(ev.pid, u64::from(ev.mnt_ns), ev.cgroup_id)
    }

    /// The name of syscall `nr` (`name`, or `syscall_NR` for one not in the table).
    fn syscall_text(&mut self, nr: i32, name: Option<&str>) -> Text {
        self.syscall_texts
            .entry(nr)
            .or_insert_with(|| match name {
                Some(n) => n.into(),
                None => format!("syscall_{nr}").into(),
            })
            .clone()
    }

    /// `origin`: the acting process's container; `end`: the syscall's enter time and its exit,
    /// when known.
    fn finish(
        &mut self,
        ev: RawEvent,
        origin: Option<container::Origin>,
        end: Option<(u64, SyscallExit)>,
    ) -> Event {
        let pod = origin.as_ref().and_then(|o| o.pod.clone());
        let mount_idx = self.mount_for(&ev);
        let mount = mount_idx.and_then(|i| self.mounts.get(i));
        let syscall_name = ev.syscall_nr.and_then(syscalls::name);
        let (kind, result) = resolve_kind(&ev, mount);
        let bytes_copied = if kind == Kind::Metacopy {
            0
        } else {
            ev.bytes_copied
        };
        // A create over a whiteout makes something new: it comes from no layer.
        let from_layer = !matches!(kind, Kind::OpaqueDir | Kind::CreateOverWhiteout);
        let texts = mount_idx.and_then(|i| self.texts.get_mut(i));
        let lower_layer = match (
            ev.lower_idx.filter(|_| from_layer),
            mount.filter(|_| from_layer),
        ) {
            (Some(idx), _) => Some(idx),
            (None, Some(m)) => mount_idx
                .and_then(|i| self.dir_stacks.get_mut(i))
                .and_then(|c| m.lower_layer_cached(Path::new(&ev.path), c))
                .map(|(idx, _)| idx),
            (None, None) => None,
        };
        // The layer's directory and image layer, found once per mount and layer.
        let (lower_layer_dir, layer_digest) = match (lower_layer, texts) {
            (Some(idx), Some(t)) => t.layer(idx, &mut self.layer_names),
            _ => (None, None),
        };
        // None when nothing was measured (`record --no-phases`, or the task could not be armed).
        let phases = (kind.is_copy_up() && ev.phases.seen != 0).then(|| {
            let has_data = matches!(kind, Kind::DataCopyUp | Kind::DeferredDataCopyUp);
            CopyUpPhases::from_wire(&ev.phases, ev.latency_ns, has_data)
        });
        let (dev, mount_point) = match mount_idx.and_then(|i| self.texts.get(i)) {
            Some(t) => (Some(t.dev.clone()), Some(t.mount_point.clone())),
            None => (None, None),
        };
        let mut out = Event {
            kind,
            backend: ev.backend,
            time_ns: u64::try_from(i128::from(ev.end_ns) + self.wall_offset_ns).unwrap_or(0),
            latency_ns: ev.latency_ns,
            latency_partial: ev.latency_partial,
            errno: -result,
            pid: ev.pid,
            tid: ev.tid,
            comm: ev.comm,
            cgroup_id: ev.cgroup_id,
            mnt_ns: u64::from(ev.mnt_ns),
            dev,
            mount_point,
            path: ev.path,
            path_truncated: ev.path_truncated,
            size_bytes: ev.size_bytes,
            bytes_copied,
            lower_layer,
            lower_layer_dir,
            syscall: ev.syscall_nr.map(|nr| self.syscall_text(nr, syscall_name)),
            syscall_latency_ns: end.map(|(enter, exit)| exit.exit_ns.saturating_sub(enter)),
            syscall_ret: end.map(|(_, exit)| exit.ret),
            container_id: origin.map(|o| o.id),
            container_name: None,
            image: None,
            image_id: None,
            layer_digest,
            pod_name: None,
            pod_namespace: None,
            pod_qos: pod.as_ref().map(|p| p.qos.as_str().to_owned()),
            pod_uid: pod.map(|p| p.uid),
            phases,
        };
        // podman / CRI-O: the image id from the containers-storage root of the layer.
        if let (Some(dir), Some(id)) = (out.lower_layer_dir.as_deref(), out.container_id.as_deref())
        {
            out.image_id = self.layer_names.image_of(dir, id);
        }
        out
    }
}

/// The texts every event of one mount carries, made when the mount is added instead of per
/// event.
struct MountTexts {
    /// `major:minor`.
    dev: Text,
    mount_point: Text,
    /// Per layer (index `idx - 1`): its directory and its image layer (see
    /// [`LayerNames::name_of`]), looked up at the first event from it.
    layers: Vec<Option<(Text, Option<Text>)>>,
    /// Layer directories, in [`OverlayMount::layer_dir`] order.
    dirs: Vec<PathBuf>,
}

impl MountTexts {
    fn of(m: &OverlayMount) -> Self {
        let dirs: Vec<PathBuf> = m.lowerdirs.iter().chain(&m.datadirs).cloned().collect();
        Self {
            dev: format!("{}:{}", m.major, m.minor).into(),
            mount_point: m.mount_point.display().to_string().into(),
            layers: vec![None; dirs.len()],
            dirs,
        }
    }

    /// Layer `idx`'s (1-based) directory and image layer digest.
    fn layer(&mut self, idx: u32, names: &mut LayerNames) -> (Option<Text>, Option<Text>) {
        let Some(i) = usize::try_from(idx).ok().and_then(|i| i.checked_sub(1)) else {
            return (None, None);
        };
        let Some(slot) = self.layers.get_mut(i) else {
            return (None, None);
        };
        let (dir, digest) = slot.get_or_insert_with(|| {
            let dir = self.dirs[i].display().to_string();
            let digest = names.name_of(&dir).map(Text::from);
            (dir.into(), digest)
        });
        (Some(dir.clone()), digest.clone())
    }
}

/// The overlay mount at or containing `path`, for `--mount`.
pub fn mount_at<'a>(mounts: &'a [OverlayMount], path: &Path) -> Option<&'a OverlayMount> {
    let canon: PathBuf = path.canonicalize().ok()?;
    mounts.iter().rev().find(|m| m.mount_point == canon)
}

/// The event's kind as user space decides it, and its result: what the kernel side could not
/// tell (a regular copy-up of the tracepoint backend, a kprobe copy-up without overlay's types).
fn resolve_kind(ev: &RawEvent, mount: Option<&OverlayMount>) -> (Kind, i32) {
    let mut result = ev.result;
    let kind = match ev.kind {
        // Without overlay's types, "placed no new upper" is a deferred data copy only
        // where metacopy files can exist; elsewhere the copy-up failed (errno not seen).
        WireKind::Known(Kind::DeferredDataCopyUp)
            if ev.no_ovl_types && !mount.is_some_and(OverlayMount::metacopy_on) =>
        {
            result = -libc::EIO;
            Kind::DataCopyUp
        }
        WireKind::Known(k) => k,
        // The kernel side made a regular file in the work dir; with metacopy=on a
        // metadata-only syscall copies metadata only (ovl_need_meta_copy_up).
        WireKind::TpRegular => {
            let meta_syscall = ev
                .syscall_nr
                .and_then(|nr| {
                    syscalls::TRACKED
                        .iter()
                        .find(|t| i64::from(t.0) == i64::from(nr))
                })
                .is_some_and(|t| t.2 & syscalls::META != 0);
            if meta_syscall && mount.is_some_and(OverlayMount::metacopy_on) {
                Kind::Metacopy
            } else {
                Kind::DataCopyUp
            }
        }
    };
    (kind, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Backend, pipeline::decode::MountRecord};

    fn kprobe_event(kdev: u32, serial: Option<u32>) -> RawEvent {
        RawEvent {
            kind: WireKind::Known(Kind::DataCopyUp),
            backend: Backend::Kprobe,
            end_ns: 0,
            latency_ns: 0,
            latency_partial: false,
            syscall_enter_ns: None,
            syscall_nr: None,
            size_bytes: 0,
            bytes_copied: 0,
            cgroup_id: 0,
            root_ino: 0,
            mount_id: serial,
            dev_is_upper: false,
            pid: 1,
            tid: 1,
            mnt_ns: 0,
            kdev,
            result: 0,
            lower_idx: None,
            mode: 0,
            comm: "t".into(),
            path: "f".into(),
            path_truncated: false,
            no_ovl_types: false,
            phases: profiler_common::Phases::default(),
            syscall_exit: None,
        }
    }

    /// Two short-lived mounts with the same (reused) device number: a kprobe event follows its
    /// serial; without one, or with a serial whose record never arrived, the newest mount with
    /// the device is the fallback.
    #[test]
    fn kprobe_events_follow_their_serial_and_fall_back_to_the_device() {
        let kdev = 40;
        let mut e = Enricher::new();
        let rec = |serial, target: &str| MountRecord {
            serial,
            ovl_dev: kdev,
            upper_dev: 1,
            upper_root_ino: u64::from(serial),
            work_ino: 3,
            pid: 1,
            args: Some((
                target.to_owned(),
                format!("lowerdir={target}-l,upperdir={target}-u,workdir={target}-w"),
            )),
        };
        e.add_kernel_mount(&rec(5, "/a"));
        e.add_kernel_mount(&rec(6, "/b"));
        let mount_point = |ev: RawEvent| {
            e.mount_for(&ev)
                .map(|i| e.mounts()[i].mount_point.display().to_string())
        };
        assert_eq!(
            mount_point(kprobe_event(kdev, Some(5))).as_deref(),
            Some("/a")
        );
        assert_eq!(
            mount_point(kprobe_event(kdev, Some(6))).as_deref(),
            Some("/b")
        );
        assert_eq!(mount_point(kprobe_event(kdev, None)).as_deref(), Some("/b"));
        assert_eq!(
            mount_point(kprobe_event(kdev, Some(99))).as_deref(),
            Some("/b")
        );
        assert_eq!(mount_point(kprobe_event(41, None)), None);
    }
}
