//! Deep paths: one first write below N never-copied directories makes N+1 copy-ups in a single
//! syscall. The path walk names 16 levels and marks deeper paths truncated; the tracepoint
//! backend holds 16 operations per syscall and counts every one beyond that as dropped.
//! Checked exactly: delivered + dropped = the upper directory's copied-up entries.

mod common;

use std::{fs, process::Command, time::Duration};

use common::{canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN};
use cowprof::{
    event::Kind,
    scenario::{Stack, UpperEntry, UpperTruth},
};

/// Lower layer with `a/b/c/...` (`depth` directories) and a file at the bottom.
fn deep_stack(root: &std::path::Path, depth: usize) -> (Stack, String) {
    let dirs: Vec<String> = (0..depth).map(|i| format!("d{i:02}")).collect();
    let rel = format!("{}/file", dirs.join("/"));
    let stack = Stack::create(root, 1, &[], &[], false).expect("stack");
    let lower_file = stack.lowers[0].join(&rel);
    fs::create_dir_all(lower_file.parent().unwrap()).unwrap();
    fs::write(&lower_file, b"x").unwrap();
    (stack, rel)
}

fn record_append(stack: &Stack, rel: &str) -> common::Recording {
    let target = stack.merged.join(rel);
    let mut running = Running::spawn(Command::new(BIN).args([
        "record",
        "--json",
        "--mount",
        stack.merged.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &format!("echo y >> '{}'", target.display()),
    ]));
    let start = running.next_line(common::START_TIMEOUT);
    let (status, rest, stderr) = running.wait(Duration::from_mins(2));
    assert!(status.success(), "record failed: {stderr}");
    // `wait` returns the lines after the start line; parse_recording wants all of them.
    let mut all = vec![start];
    all.extend(rest);
    parse_recording(&all)
}

fn copied_up(stack: &Stack) -> usize {
    UpperTruth::read(&stack.upper)
        .unwrap()
        .entries
        .values()
        .filter(|e| matches!(e, UpperEntry::Dir | UpperEntry::File))
        .count()
}

#[test]
fn sixteen_levels_are_named_and_attributed() {
    if !require_root("sixteen_levels_are_named_and_attributed") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        // 15 directories + the file = 16 copy-ups, the file 16 names deep.
        let (stack, rel) = deep_stack(&canon(dir.path()).join("s"), 15);
        let rec = record_append(&stack, &rel);
        let truth = copied_up(&stack);
        assert_eq!(truth, 16, "upper dir must hold 15 dirs and the file");
        assert_eq!(rec.events.len(), 16, "{:#?}", rec.events);
        assert_eq!(rec.summary.drops.total(), 0);
        let file = rec
            .events
            .iter()
            .find(|e| e.kind == Kind::DataCopyUp)
            .expect("file copy-up");
        assert_eq!(file.path, rel, "16 components fit the walk");
        assert!(
            !file.path_truncated,
            "a path exactly 16 deep is complete: {file:?}"
        );
        assert_eq!(
            file.mount_point.as_deref(),
            Some(stack.merged.to_str().unwrap())
        );
        assert_eq!(
            rec.events
                .iter()
                .filter(|e| e.kind == Kind::DirCopyUp)
                .count(),
            15
        );
    }
    baseline.assert_clean("sixteen_levels_are_named_and_attributed");
}

#[test]
fn beyond_the_operation_table_every_loss_is_counted() {
    if !require_root("beyond_the_operation_table_every_loss_is_counted") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        // 20 directories + the file = 21 copy-ups in one openat.
        let (stack, rel) = deep_stack(&canon(dir.path()).join("s"), 20);
        let rec = record_append(&stack, &rel);
        let truth = copied_up(&stack) as u64;
        assert_eq!(truth, 21);
        let delivered = rec.events.len() as u64;
        let backend = rec.start.backend.as_str();
        if backend == "tracepoint" {
            assert_eq!(
                delivered, 16,
                "the tracepoint backend holds 16 operations per syscall"
            );
            assert_eq!(rec.summary.drops.op_table, 5);
        } else {
            assert_eq!(delivered, 21);
        }
        assert_eq!(
            delivered + rec.summary.drops.total(),
            truth,
            "produced = delivered + dropped"
        );
        // Copy-ups go top down: d00 (1 name) .. d19 (20 names), then the file (21 names). The
        // tracepoint backend keeps the first 16, all within the walk; the others deliver all 21,
        // the last 5 deeper than the walk.
        let truncated: Vec<usize> = rec
            .events
            .iter()
            .filter(|e| e.path_truncated)
            .map(|e| e.path.split('/').count())
            .collect();
        let want_truncated = if backend == "tracepoint" { 0 } else { 5 };
        assert_eq!(truncated, vec![16; want_truncated], "{:#?}", rec.events);
        // Every delivered event is attributed to the mount, truncated paths included.
        for e in &rec.events {
            assert_eq!(
                e.mount_point.as_deref(),
                Some(stack.merged.to_str().unwrap()),
                "{e:?}"
            );
            let components = e.path.split('/').count();
            assert!(components <= 16, "{e:?}");
            if e.path_truncated {
                assert_eq!(
                    components, 16,
                    "truncated paths carry the 16 deepest names: {e:?}"
                );
            }
        }
    }
    baseline.assert_clean("beyond_the_operation_table_every_loss_is_counted");
}

/// One copy-up 21 names deep (its 20 directories were copied up before): delivered on every
/// backend, marked truncated, named by its 16 deepest components.
#[test]
fn a_copy_up_deeper_than_the_walk_has_a_truncated_path() {
    let test = "a_copy_up_deeper_than_the_walk_has_a_truncated_path";
    if !require_root(test) {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let (stack, rel) = deep_stack(&canon(dir.path()).join("s"), 20);
        // A new file next to it copies up the 20 directories, unrecorded.
        let parent = stack.merged.join(&rel).parent().unwrap().to_owned();
        fs::write(parent.join("new"), b"n").unwrap();
        assert_eq!(copied_up(&stack), 21, "20 dirs + the new file");
        let rec = record_append(&stack, &rel);
        assert_eq!(copied_up(&stack), 22, "and the file");
        assert_eq!(rec.summary.drops.total(), 0, "{:?}", rec.summary.drops);
        assert_eq!(rec.events.len(), 1, "{:#?}", rec.events);
        let e = &rec.events[0];
        assert_eq!(e.kind, Kind::DataCopyUp, "{e:?}");
        assert!(e.path_truncated, "21 names deep: truncated: {e:?}");
        let deepest: Vec<&str> = rel.split('/').collect();
        assert_eq!(deepest.len(), 21);
        assert_eq!(e.path, deepest[5..].join("/"), "the 16 deepest names");
        assert_eq!(
            e.mount_point.as_deref(),
            Some(stack.merged.to_str().unwrap())
        );
    }
    baseline.assert_clean(test);
}
