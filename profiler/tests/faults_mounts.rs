//! A watched overlay vanishing while `record` runs: `umount -l` of one of two overlay mounts,
//! while copy-ups go on through a file descriptor still open on the detached mount and on the
//! other mount. Recording goes on (no panic, exit 0 at SIGINT) and every copy-up is delivered
//! and counted exactly against the upper dirs.
//!
//! (Unloading the overlay module is not tested here: on this host overlay is built into the
//! kernel, so it cannot be unloaded.)

mod common;

use std::{
    fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, process::Command, time::Duration,
};

use common::{canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN};
use cowprof::{
    event::Kind,
    scenario::{Stack, UpperEntry, UpperTruth},
};

fn stack_with(root: &std::path::Path, files: usize) -> Stack {
    let lower = root.join("l1");
    fs::create_dir_all(lower.join("d")).unwrap();
    for i in 0..files {
        fs::write(lower.join(format!("d/f{i}")), b"lower").unwrap();
    }
    Stack::create(root, 1, &[], &[], false).expect("stack")
}

fn append(p: &std::path::Path) {
    fs::OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .write_all(b"+")
        .unwrap();
}

fn files_in(upper: &std::path::Path) -> usize {
    UpperTruth::read(upper)
        .unwrap()
        .entries
        .values()
        .filter(|e| **e == UpperEntry::File)
        .count()
}

#[test]
fn a_lazily_unmounted_overlay_does_not_stop_recording() {
    if !require_root("a_lazily_unmounted_overlay_does_not_stop_recording") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let root = canon(dir.path());
        let a = stack_with(&root.join("a"), 10);
        let b = stack_with(&root.join("b"), 10);
        let me = std::process::id().to_string();
        let mut rec = Running::spawn(Command::new(BIN).args(["record", "--json", "--pid", &me]));
        let start = rec.next_line(common::START_TIMEOUT);

        append(&a.merged.join("d/f0"));
        // A directory fd on the mount keeps the detached overlay usable after umount -l.
        let a_dir = fs::File::open(a.merged.join("d")).unwrap();
        let st = Command::new("umount")
            .arg("-l")
            .arg(&a.merged)
            .status()
            .unwrap();
        assert!(st.success());
        for i in 1..5 {
            let p = format!(
                "/proc/self/fd/{}/f{i}",
                std::os::fd::AsRawFd::as_raw_fd(&a_dir)
            );
            fs::OpenOptions::new()
                .append(true)
                .custom_flags(0)
                .open(&p)
                .unwrap_or_else(|e| panic!("{p}: {e}"))
                .write_all(b"+")
                .unwrap();
        }
        // Past the record's 200 ms mount re-scan, which now sees one overlay fewer.
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..10 {
            append(&b.merged.join(format!("d/f{i}")));
        }
        drop(a_dir);
        rec.signal(libc::SIGINT);
        let (status, mut lines, stderr) = rec.wait(Duration::from_mins(1));
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        lines.insert(0, start);
        let r = parse_recording(&lines);

        // Ground truth: 5 files (+ dir d) copied up on a, 10 (+ d) on b.
        assert_eq!(files_in(&a.upper), 5);
        assert_eq!(files_in(&b.upper), 10);
        let data = |m: &std::path::Path| {
            r.events
                .iter()
                .filter(|e| e.kind == Kind::DataCopyUp && e.mount_point.as_deref() == m.to_str())
                .count()
        };
        let all_data = r
            .events
            .iter()
            .filter(|e| e.kind == Kind::DataCopyUp)
            .count();
        assert_eq!(data(&b.merged), 10, "b's copy-ups after a vanished");
        assert_eq!(
            all_data, 15,
            "every copy-up of a is delivered too: {:?}",
            r.events
        );
        assert_eq!(r.summary.drops.total(), 0);
        assert_eq!(r.summary.events as usize, r.events.len());
        drop(a); // its umount fails quietly: already detached
        drop(b);
    }
    baseline.assert_clean("a_lazily_unmounted_overlay_does_not_stop_recording");
}
