//! Ring buffer overflow, counted exactly: `record --ringbuf-size 4096` (one page, room for a
//! handful of events) is stopped with SIGSTOP while this process makes hundreds of copy-ups and
//! whiteouts in one go, then resumed. Every event the kernel produced is either delivered or
//! counted as dropped: produced (the upper dir's entries) = delivered + dropped, exactly, and the
//! summary line says so.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    fs,
    io::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use common::{canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN};
use cowprof::{
    event::Kind,
    scenario::{Stack, UpperEntry, UpperTruth},
};

const COPY_UPS: usize = 300;
const WHITEOUTS: usize = 100;

#[test]
fn tiny_ring_buffer_drops_are_counted_exactly() {
    if !require_root("tiny_ring_buffer_drops_are_counted_exactly") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let root = canon(dir.path()).join("s");
        let lower = root.join("l1");
        fs::create_dir_all(&lower).unwrap();
        for i in 0..COPY_UPS {
            fs::write(lower.join(format!("f{i}")), b"lower").unwrap();
        }
        for i in 0..WHITEOUTS {
            fs::write(lower.join(format!("w{i}")), b"gone").unwrap();
        }
        let stack = Stack::create(&root, 1, &[], &[], false).expect("stack");
        let merged = canon(&stack.merged);

        // Only this process's events (kernel-side filter): nothing else on the host can fill
        // the buffer or be counted as dropped.
        let me = std::process::id().to_string();
        let mut rec = Running::spawn(Command::new(BIN).args([
            "record",
            "--json",
            "--ringbuf-size",
            "4096",
            "--pid",
            &me,
        ]));
        let start = rec.next_line(common::START_TIMEOUT);
        assert!(start.contains("\"start\""), "{start}");
        rec.signal(libc::SIGSTOP);
        let t = Instant::now();
        for i in 0..COPY_UPS {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(merged.join(format!("f{i}")))
                .unwrap();
            f.write_all(b"+").unwrap();
        }
        for i in 0..WHITEOUTS {
            fs::remove_file(merged.join(format!("w{i}"))).unwrap();
        }
        eprintln!(
            "storm: {} operations in {:?}",
            COPY_UPS + WHITEOUTS,
            t.elapsed()
        );
        rec.signal(libc::SIGCONT);
        rec.signal(libc::SIGINT);
        let (status, mut lines, stderr) = rec.wait(Duration::from_mins(1));
        assert_eq!(status.code(), Some(0), "record: {stderr}");
        lines.insert(0, start);
        let recording = parse_recording(&lines);

        let truth = UpperTruth::read(&stack.upper).expect("read upper");
        let files = truth
            .entries
            .values()
            .filter(|e| **e == UpperEntry::File)
            .count();
        let whiteouts = truth
            .entries
            .values()
            .filter(|e| **e == UpperEntry::Whiteout)
            .count();
        assert_eq!((files, whiteouts), (COPY_UPS, WHITEOUTS), "ground truth");
        let produced = (files + whiteouts) as u64;

        let delivered = recording.events.len() as u64;
        let copy_ups = recording
            .events
            .iter()
            .filter(|e| e.kind == Kind::DataCopyUp)
            .count();
        let wh = recording
            .events
            .iter()
            .filter(|e| e.kind == Kind::Whiteout)
            .count();
        assert_eq!(
            copy_ups + wh,
            recording.events.len(),
            "{:?}",
            recording.events
        );
        let d = recording.summary.drops;
        eprintln!(
            "produced {produced}, delivered {delivered} ({copy_ups} copy-ups, {wh} whiteouts), dropped {d:?}"
        );
        // A page holds a few ~728-byte events, never hundreds, and at least the (event, syscall
        // end) pairs that fill it before the first reservation fails (5 in 4 KiB).
        assert!(
            delivered < 8,
            "a 4 KiB buffer cannot hold {delivered} events"
        );
        let least = common::min_delivered(4096, produced);
        assert_eq!(least, 5, "728-byte events in a 4 KiB ring");
        assert!(
            delivered >= least,
            "delivered {delivered}: a 4 KiB ring holds {least} events before it drops any"
        );
        assert_eq!(d.op_table + d.windows + d.malformed, 0, "{d:?}");
        assert_eq!(
            delivered + d.ringbuf,
            produced,
            "produced = delivered + dropped"
        );
        assert_eq!(d.total(), d.ringbuf);
        assert_eq!(recording.summary.events, delivered, "summary event count");
        // Every delivered event is one of ours, on this mount.
        for e in &recording.events {
            assert_eq!(e.mount_point.as_deref(), merged.to_str(), "{e:?}");
        }
        drop(stack);
    }
    baseline.assert_clean("tiny_ring_buffer_drops_are_counted_exactly");
}

#[test]
fn bad_ring_buffer_size_is_a_usage_error() {
    for bad in ["1000", "0", "6144", "lots"] {
        let out = Command::new(BIN)
            .args(["record", "--ringbuf-size", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--ringbuf-size") && stderr.contains(bad),
            "{bad}: {stderr}"
        );
    }
}
