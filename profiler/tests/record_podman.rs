//! podman (Debian's 4.3) with its own containers-storage root: the busybox test image is
//! `podman load`ed from the archive `scripts/images` makes, one container runs, and a workload
//! in it appends to files of two image layers and removes a third file. `record --json` must
//! give every event its container id, the diffID of the file's layer (read by cowprof from
//! `overlay-layers/layers.json`, no daemon) and the image id (from
//! `overlay-containers/containers.json`), each checked against the archive's own config and
//! layer tars; the upper directory is the ground truth of the kinds. Everything is removed at
//! the end, also on failure.
//!
//! What podman needs on this kind of host (cgroup v1, no systemd, a sandbox whose hard
//! `RLIMIT_NPROC`/`RLIMIT_NOFILE` are below podman's defaults): `--cgroup-manager cgroupfs`,
//! `--events-backend file`, `--network none`, and `--ulimit` values at or below the hard limits.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;
mod layer_truth;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{lock, parse_recording, require_root, Baseline, Running, BIN, START_TIMEOUT};
use cowprof::{
    event::Kind,
    scenario::{UpperEntry, UpperTruth},
};

const IMAGE: &str = "localhost/cowprof-test-busybox:latest";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private podman store (root and runroot in a temp dir); dropping it removes the container,
/// unmounts whatever is left below the temp dir and deletes it.
struct Podman {
    dir: tempfile::TempDir,
    container: Option<String>,
    /// podman's cgroupfs parent (`libpod_parent`) was made by this test: removed at the end.
    made_parent: bool,
}

/// podman's parent cgroup in each v1 hierarchy (and v2's root), with its `conmon` child.
fn libpod_parents() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|h| h.path().join("libpod_parent"))
                .chain([PathBuf::from("/sys/fs/cgroup/libpod_parent")])
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

impl Podman {
    fn new() -> Self {
        assert!(
            Command::new("sh")
                .args(["-c", "command -v podman"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "podman is not installed; run scripts/setup"
        );
        let dir = tempfile::Builder::new()
            .prefix("cowprof-podman-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        Self {
            dir,
            container: None,
            made_parent: libpod_parents().is_empty(),
        }
    }

    fn podman(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        c.stdin(Stdio::null());
        c
    }

    fn inspect(&self, format: &str) -> String {
        let id = self.container.as_deref().expect("a container");
        run(self.podman().args(["inspect", "--format", format, id]))
            .trim()
            .to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(id) = &self.container {
            let _ = self.podman().args(["rm", "-f", "-t", "0", id]).output();
        }
        // `podman rm` returns before the `podman container cleanup` that conmon starts when the
        // container exits has run; that process opens the store again, and the overlay driver
        // bind-mounts `root/overlay` on itself when it is not a mount point. So until no
        // process names the store and nothing is mounted below it (10 s at most), unmount
        // what is there.
        let dir = self.dir.path();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mounts = mounts_below(dir);
            for m in &mounts {
                let _ = Command::new("umount").arg("-l").arg(m).output();
            }
            if (mounts.is_empty() && !store_in_use(dir)) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // conmon leaves its cgroup a moment after `podman rm` returns.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.made_parent && Instant::now() < deadline {
            let left = libpod_parents();
            if left.is_empty() {
                break;
            }
            for p in left {
                let _ = std::fs::remove_dir(p.join("conmon"));
                let _ = std::fs::remove_dir(&p);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Mount points below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    mounts
}

/// A process whose command line names the store (`--root DIR/root`): podman, or conmon's
/// cleanup call of it.
fn store_in_use(dir: &Path) -> bool {
    let needle = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").is_ok_and(|d| {
        d.flatten().any(|p| {
            std::fs::read(p.path().join("cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
    })
}

#[test]
fn podman_layers_from_containers_storage() {
    if !require_root("podman_layers_from_containers_storage") {
        return;
    }
    let _lock = lock();
    let base = Baseline::take();
    let status = Command::new(repo().join("scripts/images"))
        .status()
        .expect("scripts/images");
    assert!(status.success(), "scripts/images failed");
    let archive = std::env::var_os("COWPROF_IMAGE_CACHE")
        .map_or_else(|| repo().join("target/image-cache"), PathBuf::from)
        .join("busybox.tar");

    let mut pm = Podman::new();
    run(pm.podman().arg("load").arg("-i").arg(&archive));
    let id = run(pm.podman().args([
        "run",
        "-d",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        IMAGE,
        "sleep",
        "3600",
    ]))
    .trim()
    .to_owned();
    assert_eq!(id.len(), 64, "{id}");
    pm.container = Some(id.clone());
    let merged = PathBuf::from(pm.inspect("{{.GraphDriver.Data.MergedDir}}"));
    let upper = PathBuf::from(pm.inspect("{{.GraphDriver.Data.UpperDir}}"));
    assert!(
        upper.starts_with(pm.dir.path().join("root/overlay")),
        "{}",
        upper.display()
    );
    let before = UpperTruth::read(&upper).expect("upper");

    let mut rec = Running::spawn(
        Command::new(BIN)
            .args(["record", "--json"])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("CONTAINERD_ADDRESS", "/nonexistent/containerd.sock"),
    );
    let start = rec.next_line(START_TIMEOUT);
    assert!(start.contains(r#""type":"start""#), "{start}");
    // An append to a base-layer file, an append to the file of the `COPY app.conf` layer, an rm
    // of another base-layer file. /etc is in the upper dir already: podman made the mount
    // points of /etc/hosts, /etc/hostname and /etc/resolv.conf there when it started the
    // container.
    assert_eq!(before.entries.get("etc"), Some(&UpperEntry::Dir));
    run(pm.podman().args([
        "exec",
        &id,
        "sh",
        "-c",
        "echo x >> /etc/passwd && echo z >> /etc/app.conf && rm /etc/group",
    ]));
    let ours = |l: &str| l.contains(&format!("\"mount_point\":\"{}\"", merged.display()));
    let mut lines = vec![start];
    let deadline = Instant::now() + Duration::from_mins(1);
    while lines.iter().filter(|l| ours(l)).count() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rec.lines.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(e) => panic!("{e}: events in {} so far: {lines:#?}", merged.display()),
        }
    }
    rec.signal(libc::SIGINT);
    let (status, rest, stderr) = rec.wait(Duration::from_mins(1));
    assert_eq!(status.code(), Some(0), "record failed: {stderr}");
    lines.extend(rest);
    let recording = parse_recording(&lines);

    let mut added = UpperTruth::read(&upper).expect("upper").entries;
    added.retain(|k, _| !before.entries.contains_key(k));
    let expect_upper: BTreeMap<String, UpperEntry> = [
        ("etc/passwd", UpperEntry::File),
        ("etc/app.conf", UpperEntry::File),
        ("etc/group", UpperEntry::Whiteout),
    ]
    .into_iter()
    .map(|(p, e)| (p.to_owned(), e))
    .collect();
    assert_eq!(added, expect_upper);

    let truth = layer_truth::ArchiveLayers::read(&archive);
    let m = merged.display().to_string();
    let rows: Vec<_> = recording
        .events
        .iter()
        .filter(|e| e.mount_point.as_deref() == Some(m.as_str()))
        .map(|e| {
            (
                e.kind,
                e.path.as_str(),
                e.container_id.as_deref(),
                e.layer_digest.as_deref(),
                e.image_id.as_deref(),
            )
        })
        .collect();
    let row = |kind, path| {
        (
            kind,
            path,
            Some(id.as_str()),
            truth.layer_of(path),
            Some(truth.image_id.as_str()),
        )
    };
    assert_eq!(
        rows,
        [
            row(Kind::DataCopyUp, "etc/passwd"),
            row(Kind::DataCopyUp, "etc/app.conf"),
            row(Kind::Whiteout, "etc/group"),
        ]
    );
    // Two layers: the base (passwd, group) and `COPY app.conf` (app.conf).
    let distinct: std::collections::BTreeSet<_> = rows.iter().filter_map(|r| r.3).collect();
    assert_eq!(distinct.len(), 2, "{rows:?}");
    // The per-image-layer view of the summary has them too.
    let by_layer = &recording.summary.by_image_layer;
    for d in &distinct {
        let n = rows.iter().filter(|r| r.3 == Some(*d)).count();
        assert_eq!(
            by_layer.get(*d).map(|g| g.count),
            Some(n as u64),
            "{by_layer:?}"
        );
    }

    let store = pm.dir.path().to_owned();
    drop(pm);
    // Overlay mounts are what `assert_clean` looks at; the store's own bind mount of
    // `root/overlay` (ext4 here) is not one, so it is checked by name.
    assert!(
        mounts_below(&store).is_empty() && !store.exists(),
        "the podman store {} is left behind: mounted below it: {:?}",
        store.display(),
        mounts_below(&store)
    );
    base.assert_clean("record with a podman container");
}
