//! `record` on uppers that differ from the default stack: `index=on` (overlay then makes its
//! copy-up temps in `<workdir>/index`) and a btrfs upper (whose `stat` device is a subvolume's,
//! not the superblock's). Exact events against what the upper directory holds afterwards.

mod common;

use std::{
    fs,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::Path,
    process::Command,
    time::Duration,
};

use common::{canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN};
use cowprof::event::Kind;

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed");
}

/// Mounts `root/m` over `root/{l,u,w}` with `extra` options, records an append to `d/g`, an
/// append to `f` and the removal of `d/g`, and checks the four events.
fn record_on(root: &Path, extra: &str) {
    for d in ["l/d", "u", "w", "m"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("l/f"), b"x").unwrap();
    fs::write(root.join("l/d/g"), b"yy").unwrap();
    let opts = format!(
        "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w{extra}",
        root.display()
    );
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(root.join("m")));
    let m = root.join("m");
    let script = format!(
        "echo z >> '{0}/f' && echo z >> '{0}/d/g' && rm '{0}/d/g'",
        m.display()
    );
    let mut running = Running::spawn(Command::new(BIN).args([
        "record",
        "--json",
        "--mount",
        m.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]));
    let start = running.next_line(common::START_TIMEOUT);
    let (status, rest, stderr) = running.wait(Duration::from_mins(2));
    let _ = Command::new("umount").arg(&m).status();
    assert!(status.success(), "record failed: {stderr}");
    let mut lines = vec![start];
    lines.extend(rest);
    let rec = parse_recording(&lines);
    let mut got: Vec<(Kind, String, Option<u32>, u64)> = rec
        .events
        .iter()
        .map(|e| (e.kind, e.path.clone(), e.lower_layer, e.bytes_copied))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (Kind::DataCopyUp, "d/g".into(), Some(1), 2),
            (Kind::DataCopyUp, "f".into(), Some(1), 1),
            (Kind::DirCopyUp, "d".into(), Some(1), 0),
            (Kind::Whiteout, "d/g".into(), Some(1), 0),
        ],
        "{extra}: {:#?}",
        rec.events
    );
    assert_eq!(rec.summary.drops.total(), 0);
    // Ground truth: f copied up (3 bytes now), d copied up, d/g a whiteout (char 0/0).
    assert_eq!(fs::read(root.join("u/f")).unwrap(), b"xz\n");
    assert!(root.join("u/d").is_dir());
    let g = fs::symlink_metadata(root.join("u/d/g")).unwrap();
    assert!(g.file_type().is_char_device() && g.rdev() == 0);
}

/// Unmounts the overlay inside and then the loop filesystem itself when dropped.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.join("s/m")).status();
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn index_on_copy_ups_are_seen() {
    if !require_root("index_on_copy_ups_are_seen") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        record_on(&canon(dir.path()).join("s"), ",index=on");
    }
    baseline.assert_clean("index_on_copy_ups_are_seen");
}

#[test]
fn btrfs_upper_copy_ups_are_seen() {
    if !require_root("btrfs_upper_copy_ups_are_seen") {
        return;
    }
    if !common::require_tool("btrfs_upper_copy_ups_are_seen", "mkfs.btrfs", "btrfs-progs") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let root = canon(dir.path());
        let img = root.join("btrfs.img");
        fs::File::create(&img).unwrap().set_len(300 << 20).unwrap();
        run(Command::new("mkfs.btrfs").arg("-q").arg(&img));
        let mnt = root.join("b");
        fs::create_dir(&mnt).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        // Unmount the loop fs (and free its loop device) even if the checks fail.
        let _guard = Unmount(&mnt);
        record_on(&mnt.join("s"), "");
    }
    baseline.assert_clean("btrfs_upper_copy_ups_are_seen");
}
