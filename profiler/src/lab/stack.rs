//! The lab's filesystem plumbing: the run directory and its state file, backing filesystems
//! (a host directory, tmpfs, loop-mounted ext4/xfs/btrfs images), lower layers built once per
//! backing filesystem, and overlay stacks mounted Docker-overlay2 style with a fresh upper and
//! work directory for every measured repetition.
//!
//! Everything lives under one run directory, `<workdir>/cowprof-lab-<pid>`, and loop images are
//! named `cowprof-lab-<pid>-<fs>.img` (so `losetup -a` shows whose they are). The state file
//! `/run/cowprof/lab-<pid>.json` names the run directory and the backing mounts, images and loop
//! devices, each recorded *before* it is made, so `cowprof clean` can remove what a `SIGKILL`ed run
//! left. Every guard here undoes its own work on drop (also on errors and on Ctrl-C): overlay
//! stacks, then backing mounts, then loop devices and images, then the run directory.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use serde::{Deserialize, Serialize};

use crate::host::{
    cancel::Cancel,
    io::PathIoError,
    loopdev::{loop_attach, loop_detach, loop_devices, loop_set_autoclear},
    mounts::{
        cstr, mount, overlay_mount_err, overlay_param, remove_tree, umount, unmount_all_under,
        OverlayMountError,
    },
};

use super::{
    spec::{FsKind, SpecError},
    workload::{
        conc_rel, empty_dir_rel, file_rel, moved_dir_rel, DATA_DIR, FILE_MODE, MOVED_DIR_FILE,
    },
};

/// Where run state files live.
pub const STATE_DIR: &str = "/run/cowprof";
/// Prefix of every run directory, image and state file.
pub const TAG: &str = "cowprof-lab-";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot read the spec {path}: {source}; give a readable TOML file to --spec")]
    SpecFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cowprof bench must run as root (it mounts filesystems and loads eBPF programs); rerun with sudo")]
    NotRoot,
    #[error("interrupted; the lab's mounts, loop devices and files were removed")]
    Interrupted,
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Mount(#[from] OverlayMountError),
    #[error("no space left on a backing filesystem ({detail}); give the spec a larger backing_size or free space under --workdir; results.json holds the runs finished before")]
    NoSpace { detail: String },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Tap(#[from] crate::pipeline::tap::TapError),
    #[error(transparent)]
    Child(#[from] crate::host::child::ChildError),
    /// `bench --expect-kernel` on a run whose kernel-side numbers are missing or inexact.
    #[error("--expect-kernel: kernel-side timings missing or inexact (backend {backend}, {unseen} runs unseen, {cells_off} cells off)")]
    KernelInexact {
        backend: &'static str,
        unseen: usize,
        cells_off: usize,
    },
    /// Repetitions whose upper directory disagreed with their op (results were written).
    #[error("{repetitions} repetitions left an upper directory that disagrees with their op (see above); results written anyway")]
    UpperMismatch { repetitions: u64 },
}

impl From<crate::host::cancel::Interrupted> for LabError {
    fn from(_: crate::host::cancel::Interrupted) -> Self {
        Self::Interrupted
    }
}

impl LabError {
    /// ENOSPC, from the worker or from the lab's own writes (layers, upper dirs).
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::NoSpace { .. } => true,
            Self::Io(e) => e.source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

pub use crate::host::io::io_err;

/// Removes what `dir` holds but keeps `dir` itself (and its inode: see [`LabStack`]).
fn empty_dir(dir: &Path, keep: &[&str]) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if keep.iter().any(|k| e.file_name() == *k) {
            continue;
        }
        let p = e.path();
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
            _ => fs::remove_file(&p),
        };
    }
}

// ---------------------------------------------------------------------------------------------
// The run directory and its state file

/// What a run has made, recorded before it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A backing filesystem mounted here (tmpfs or a loop image).
    Mount {
        path: PathBuf,
    },
    Image {
        path: PathBuf,
    },
    Loop {
        device: Option<PathBuf>,
        image: PathBuf,
    },
}

/// `/run/cowprof/lab-<pid>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    /// Process start time (clock ticks since boot, /proc/PID/stat field 22): tells a reused pid
    /// from the run's own process.
    pub start_ticks: Option<u64>,
    /// The run directory: everything the run makes is below it.
    pub root: PathBuf,
    pub resources: Vec<Resource>,
}

/// Start time of `pid` in clock ticks since boot, if it is alive.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

pub fn state_path(pid: u32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("lab-{pid}.json"))
}

/// The run directory; removes itself (after unmounting anything left below it) and its state
/// file on drop. Must outlive every other guard of the run.
pub struct LabRoot {
    pub dir: PathBuf,
    state: State,
    state_file: PathBuf,
}

impl LabRoot {
    pub fn create(workdir: &Path) -> Result<Self, LabError> {
        let pid = std::process::id();
        fs::create_dir_all(workdir).map_err(io_err("creating --workdir", workdir))?;
        let workdir = workdir
            .canonicalize()
            .map_err(io_err("resolving --workdir", workdir))?;
        let dir = workdir.join(format!("{TAG}{pid}"));
        let root = Self {
            state: State {
                pid,
                start_ticks: start_ticks(pid),
                root: dir.clone(),
                resources: Vec::new(),
            },
            state_file: state_path(pid),
            dir,
        };
        root.save()?;
        if root.dir.exists() {
            // Only a dead run with our pid can have left it (clean would remove it too).
            remove_tree(&root.dir).map_err(io_err("removing the stale", &root.dir))?;
        }
        fs::create_dir(&root.dir).map_err(io_err("creating", &root.dir))?;
        Ok(root)
    }

    fn save(&self) -> Result<(), LabError> {
        let dir = Path::new(STATE_DIR);
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let tmp = self.state_file.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.state).expect("state serializes");
        fs::write(&tmp, text).map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &self.state_file).map_err(io_err("writing", &self.state_file))?;
        Ok(())
    }

    /// Records a resource before it is made.
    pub fn record(&mut self, r: Resource) -> Result<(), LabError> {
        if !self.state.resources.contains(&r) {
            self.state.resources.push(r);
            self.save()?;
        }
        Ok(())
    }
}

impl Drop for LabRoot {
    fn drop(&mut self) {
        let mounted_before = unmount_all_under(&self.dir);
        if !mounted_before.is_empty() {
            log::warn!("unmounted leftovers: {mounted_before:?}");
        }
        for (dev, back) in loop_devices() {
            if back.starts_with(&self.dir) {
                loop_detach(&dev);
            }
        }
        match remove_tree(&self.dir) {
            Ok(()) => {
                let _ = fs::remove_file(&self.state_file);
            }
            Err(e) => eprintln!(
                "cowprof: could not remove {}: {e}; run `cowprof clean` once it is free",
                self.dir.display()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backing filesystems

/// A backing filesystem for the layers and stacks of one part of the run.
pub struct Backing {
    pub kind: FsKind,
    /// Where layers, stacks and reference copies live.
    pub dir: PathBuf,
    /// e.g. `reflink`, and for `dir` the host filesystem (`fstype=ext4`).
    pub features: Vec<String>,
    mount: Option<PathBuf>,
    loop_dev: Option<PathBuf>,
    image: Option<PathBuf>,
}

/// statfs magic numbers of the filesystems the lab names.
fn fs_name(dir: &Path) -> Option<&'static str> {
    let c = cstr(dir);
    // SAFETY: statfs writes into the zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss)]
    Some(match st.f_type as u64 {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlay",
        _ => "other",
    })
}

/// True if the filesystem at `dir` can clone file ranges (FICLONE), which overlay uses for
/// copy-up before falling back to copying.
fn can_reflink(dir: &Path) -> bool {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    let a = dir.join(".cowprof-reflink-a");
    let b = dir.join(".cowprof-reflink-b");
    let ok = (|| -> std::io::Result<bool> {
        fs::write(&a, [1u8; 4096])?;
        let fa = fs::File::open(&a)?;
        let fb = fs::File::create(&b)?;
        // SAFETY: two open fds.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&fb),
                // `as _`: the request is c_ulong on glibc and c_int on musl.
                FICLONE as _,
                std::os::fd::AsRawFd::as_raw_fd(&fa),
            )
        };
        Ok(rc == 0)
    })()
    .unwrap_or(false);
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    ok
}

fn mkfs(kind: FsKind, image: &Path) -> Result<(), LabError> {
    let (prog, args): (&str, &[&str]) = match kind {
        // Inode tables and journal initialised now, not by a background thread mid-measurement.
        FsKind::Ext4 => (
            "mkfs.ext4",
            &[
                "-F",
                "-q",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
            ],
        ),
        FsKind::Xfs => ("mkfs.xfs", &["-f", "-q", "-K", "-m", "reflink=1"]),
        FsKind::Btrfs => ("mkfs.btrfs", &["-f", "-q", "-K"]),
        FsKind::Dir | FsKind::Tmpfs => unreachable!("not an image"),
    };
    let out = Command::new(prog)
        .args(args)
        .arg(image)
        .output()
        .map_err(|e| {
            LabError::Other(format!(
                "cannot run {prog}: {e} (install it, or drop {kind} from the spec's filesystems)"
            ))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Other(format!(
            "{prog} {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Backing {
    /// Makes the backing filesystem `kind` under `root`, large enough for `bytes`.
    pub fn create(
        root: &mut LabRoot,
        kind: FsKind,
        bytes: u64,
        cancel: &Cancel,
    ) -> Result<Self, LabError> {
        let mut b = Self {
            kind,
            dir: root.dir.join(kind.as_str()),
            features: Vec::new(),
            mount: None,
            loop_dev: None,
            image: None,
        };
        fs::create_dir(&b.dir).map_err(io_err("creating", &b.dir))?;
        match kind {
            FsKind::Dir => {
                if let Some(name) = fs_name(&b.dir) {
                    b.features.push(format!("fstype={name}"));
                }
            }
            FsKind::Tmpfs => {
                root.record(Resource::Mount {
                    path: b.dir.clone(),
                })?;
                let size = bytes.max(64 << 20);
                mount(
                    "cowprof-lab",
                    &b.dir,
                    "tmpfs",
                    &format!("size={size},mode=0755"),
                )
                .map_err(io_err("mounting tmpfs on", &b.dir))?;
                b.mount = Some(b.dir.clone());
            }
            FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs => {
                let image = root
                    .dir
                    .join(format!("{TAG}{}-{kind}.img", std::process::id()));
                root.record(Resource::Image {
                    path: image.clone(),
                })?;
                b.image = Some(image.clone());
                let f = fs::File::create(&image).map_err(io_err("creating", &image))?;
                // Sparse; xfs wants at least 300 MiB.
                f.set_len(bytes.max(512 << 20))
                    .map_err(io_err("sizing", &image))?;
                drop(f);
                mkfs(kind, &image)?;
                cancel.check()?;
                root.record(Resource::Loop {
                    device: None,
                    image: image.clone(),
                })?;
                let dev =
                    loop_attach(&image).map_err(io_err("attaching a loop device to", &image))?;
                b.loop_dev = Some(dev.clone());
                root.record(Resource::Loop {
                    device: Some(dev.clone()),
                    image: image.clone(),
                })?;
                root.record(Resource::Mount {
                    path: b.dir.clone(),
                })?;
                mount(&dev.display().to_string(), &b.dir, kind.as_str(), "").map_err(io_err(
                    format!("mounting {kind} ({}) on", dev.display()),
                    &b.dir,
                ))?;
                b.mount = Some(b.dir.clone());
                loop_set_autoclear(&dev);
            }
        }
        if can_reflink(&b.dir) {
            b.features.push("reflink".into());
        }
        Ok(b)
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // Stacks are gone by now; anything still mounted below is a leftover.
        if let Some(m) = &self.mount {
            unmount_all_under(m);
        } else {
            let _ = remove_tree(&self.dir);
        }
        if let Some(dev) = &self.loop_dev {
            // With autoclear the device is usually free already.
            let ours = loop_devices()
                .into_iter()
                .any(|(d, back)| &d == dev && Some(&back) == self.image.as_ref());
            if ours {
                loop_detach(dev);
            }
        }
        if let Some(img) = &self.image {
            let _ = fs::remove_file(img);
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Lower layers

/// Lower layers on one backing filesystem: `L/1` (topmost) .. `L/N`. Every layer has `data/`
/// with a small filler file; layer `d` of `file_layers` also has `data/s<size>-l<d>.bin` for
/// every size. Written with plain writes (no reflink or `copy_file_range` shortcuts), then synced
/// so that writeback does not run during measurements.
pub struct Layers {
    pub dirs: Vec<PathBuf>,
}

/// Fills `buf` with non-repeating bytes (xorshift), so that no filesystem can dedupe or
/// compress them away.
fn fill(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

impl Layers {
    /// Layers with the measured files of `sizes` (and the directories of the directory ops) in
    /// every layer of `file_layers`.
    pub fn build(
        base: &Path,
        layers: u32,
        file_layers: &[u32],
        sizes: &[u64],
        cancel: &Cancel,
    ) -> Result<Self, LabError> {
        Self::build_with(base, layers, file_layers, sizes, &[], 0, cancel)
    }

    /// As [`Self::build`], plus `threads` files of each of `conc_sizes` per file layer for the
    /// concurrency ops.
    pub fn build_with(
        base: &Path,
        layers: u32,
        file_layers: &[u32],
        sizes: &[u64],
        conc_sizes: &[u64],
        threads: u32,
        cancel: &Cancel,
    ) -> Result<Self, LabError> {
        let dirs: Vec<PathBuf> = (1..=layers)
            .map(|i| base.join("L").join(i.to_string()))
            .collect();
        let mut buf = vec![0u8; 1 << 20];
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        for (i, dir) in dirs.iter().enumerate() {
            let layer = u32::try_from(i + 1).expect("at most 128 layers");
            let data = dir.join(DATA_DIR);
            fs::create_dir_all(&data).map_err(io_err("creating", &data))?;
            let filler = data.join(format!("filler-l{layer}"));
            fs::write(&filler, format!("layer {layer}\n")).map_err(io_err("writing", &filler))?;
            if !file_layers.contains(&layer) {
                continue;
            }
            let empty = dir.join(empty_dir_rel(layer));
            fs::create_dir_all(&empty).map_err(io_err("creating", &empty))?;
            let moved = dir.join(moved_dir_rel(layer));
            fs::create_dir_all(&moved).map_err(io_err("creating", &moved))?;
            let inside = moved.join(MOVED_DIR_FILE);
            fs::write(&inside, b"moved with its directory\n")
                .map_err(io_err("writing", &inside))?;
            let files = sizes.iter().map(|&s| (s, file_rel(s, layer))).chain(
                conc_sizes
                    .iter()
                    .flat_map(|&s| (0..threads).map(move |i| (s, conc_rel(s, layer, i)))),
            );
            for (size, rel) in files {
                let path = dir.join(rel);
                let mut f = fs::File::create(&path).map_err(io_err("creating", &path))?;
                let mut left = size;
                while left > 0 {
                    cancel.check()?;
                    let n = usize::try_from(left.min(buf.len() as u64)).expect("small");
                    fill(&mut buf[..n], &mut seed);
                    f.write_all(&buf[..n]).map_err(io_err("writing", &path))?;
                    left -= n as u64;
                }
                f.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                    .map_err(io_err("chmod", &path))?;
            }
        }
        // Flush it all now: writeback must not compete with the measurements.
        let f = fs::File::open(base).map_err(io_err("opening", base))?;
        // SAFETY: valid fd.
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
        Ok(Self { dirs })
    }

    /// The lower file `rel` in layer `depth` (1-based), outside overlay.
    pub fn lower_file(&self, depth: u32, rel: &str) -> PathBuf {
        self.dirs[depth as usize - 1].join(rel)
    }
}

// ---------------------------------------------------------------------------------------------
// Overlay stacks

/// The kernel copies at most one page of mount options.
const MOUNT_DATA_MAX: usize = 4096;

/// One overlay mount with its own fresh upper and work directory: `S/<n>/{upper,work,merged}`.
///
/// On drop it unmounts and empties upper and work but keeps those directories until the backing
/// filesystem goes: their inode numbers then cannot be reused by a later stack while the kernel
/// side still has the old ones in its maps.
pub struct LabStack {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub options: String,
    mounted: bool,
}

impl LabStack {
    pub fn mount(base: &Path, layers: &Layers, extra: &[String], n: u64) -> Result<Self, LabError> {
        let dir = base.join("S").join(n.to_string());
        let mut s = Self {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            options: String::new(),
            mounted: false,
        };
        for d in [&s.upper, &s.work, &s.merged] {
            fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        let options = |rel: bool| {
            let show = |p: &Path| {
                if rel {
                    p.strip_prefix(base).unwrap_or(p).display().to_string()
                } else {
                    p.display().to_string()
                }
            };
            let lowerdir: Vec<String> = layers.dirs.iter().map(|p| show(p)).collect();
            let mut o = Vec::new();
            // As Docker's overlay2 does, where the kernel has the option.
            if overlay_param("index").is_some() && !extra.iter().any(|x| x.starts_with("index=")) {
                o.push("index=off".to_owned());
            }
            o.push(format!("lowerdir={}", lowerdir.join(":")));
            o.push(format!("upperdir={}", show(&s.upper)));
            o.push(format!("workdir={}", show(&s.work)));
            o.extend(extra.iter().cloned());
            o.join(",")
        };
        s.options = options(false);
        let result = if s.options.len() < MOUNT_DATA_MAX {
            mount("overlay", &s.merged, "overlay", &s.options)
        } else {
            // Too long for one page (many layers): as Docker does, mount from the base
            // directory with relative paths. The lab's process is single-threaded here.
            s.options = options(true);
            if s.options.len() >= MOUNT_DATA_MAX {
                return Err(LabError::Other(format!(
                    "overlay options for {} layers are {} bytes even with relative paths, over the kernel's {MOUNT_DATA_MAX}; use fewer layers",
                    layers.dirs.len(),
                    s.options.len()
                )));
            }
            let cwd = std::env::current_dir().map_err(io_err("reading the cwd", base))?;
            std::env::set_current_dir(base).map_err(io_err("chdir", base))?;
            let r = mount("overlay", &s.merged, "overlay", &s.options);
            std::env::set_current_dir(&cwd).map_err(io_err("chdir back to", &cwd))?;
            r
        };
        result.map_err(overlay_mount_err(&s.merged, &s.options))?;
        s.mounted = true;
        Ok(s)
    }

    /// Unmounts now (the drop does the rest).
    pub fn unmount(&mut self) {
        if self.mounted {
            umount(&self.merged);
            self.mounted = false;
        }
    }
}

impl Drop for LabStack {
    fn drop(&mut self) {
        self.unmount();
        empty_dir(&self.upper, &[]);
        empty_dir(&self.work, &["work"]);
        empty_dir(&self.work.join("work"), &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_ticks() {
        assert!(start_ticks(std::process::id()).is_some());
    }
}
