//! Concurrent unlinks on one overlay (issue 6): overlay links ONE shared whiteout inode for every
//! whiteout of a mount, so the tracepoint backend must name each whiteout by its own link, not
//! by the inode's newest alias (another thread's link, still in the work dir or already renamed
//! to another name). Threads remove distinct lower files at once, on tmpfs and on disk; the
//! upper dir's char 0/0 entries are the ground truth: whiteout events + counted unnamed
//! whiteouts = ground truth, exactly, and every event names a distinct removed file. A churn
//! (remove, create over the whiteout, remove again, as `scripts/stress` does) checks the same
//! against the number of removals the threads made.

mod common;

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    process::Command,
    sync::{Arc, Barrier},
    time::Duration,
};

use common::{canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN};
use cowprof::{
    event::Kind,
    scenario::{FileSpec, Stack, UpperEntry, UpperTruth},
};

const THREADS: usize = 4;
const FILES: usize = 4000;

/// `n` empty lower files `f0..f{n-1}` in one layer.
fn lower_files(n: usize) -> Vec<FileSpec> {
    (0..n)
        .map(|i| FileSpec {
            layer: 1,
            path: Box::leak(format!("f{i}").into_boxed_str()),
            size: 0,
        })
        .collect()
}

/// `record --json` of this process, started (its first line read).
fn start_record() -> (Running, String) {
    let me = std::process::id().to_string();
    let mut rec = Running::spawn(Command::new(BIN).args(["record", "--json", "--pid", &me]));
    let start = rec.next_line(common::START_TIMEOUT);
    assert!(start.contains("\"start\""), "{start}");
    (rec, start)
}

/// Runs `work(merged, i)` for every `i` in `0..n`, spread over [`THREADS`] threads that start at
/// once.
fn in_threads(merged: &Path, n: usize, work: fn(&Path, usize)) {
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (barrier, merged) = (Arc::clone(&barrier), merged.to_path_buf());
            std::thread::spawn(move || {
                barrier.wait();
                for i in (t..n).step_by(THREADS) {
                    work(&merged, i);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Stops the recording (all its events are in the ring buffer: the threads have ended) and parses it.
fn stop_record(rec: Running, start: String) -> common::Recording {
    rec.signal(libc::SIGINT);
    let (status, mut lines, stderr) = rec.wait(Duration::from_mins(1));
    assert_eq!(status.code(), Some(0), "record: {stderr}");
    lines.insert(0, start);
    parse_recording(&lines)
}

fn concurrent_unlinks(test: &str, on_tmpfs: bool) {
    if !require_root(test) {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let root = canon(dir.path()).join("s");
        let stack = Stack::create(&root, 1, &lower_files(FILES), &[], on_tmpfs).expect("stack");
        let merged = canon(&stack.merged);
        let (rec, start) = start_record();
        in_threads(&merged, FILES, |merged, i| {
            fs::remove_file(merged.join(format!("f{i}"))).unwrap();
        });
        let recording = stop_record(rec, start);

        let truth = UpperTruth::read(&stack.upper).expect("read upper");
        let ground_truth = truth
            .entries
            .values()
            .filter(|e| **e == UpperEntry::Whiteout)
            .count();
        assert_eq!(
            ground_truth, FILES,
            "ground truth: {FILES} whiteouts in the upper dir"
        );

        let whiteouts: Vec<_> = recording
            .events
            .iter()
            .filter(|e| e.kind == Kind::Whiteout)
            .collect();
        assert_eq!(whiteouts.len(), recording.events.len(), "only whiteouts");
        let named: BTreeSet<&str> = whiteouts.iter().map(|e| e.path.as_str()).collect();
        let d = recording.summary.drops;
        eprintln!(
            "{test}: ground truth {ground_truth}, whiteout events {} ({} distinct names), drops {d:?}",
            whiteouts.len(),
            named.len()
        );
        assert_eq!(
            whiteouts.len() as u64 + d.total(),
            ground_truth as u64,
            "produced = delivered + dropped"
        );
        assert_eq!(d.total(), d.whiteout_unnamed + d.ringbuf, "{d:?}");
        // Only unlink(2): overlay makes each whiteout in its work dir and renames it into place,
        // never the upper fs's own RENAME_WHITEOUT, so every whiteout has a name.
        assert_eq!(d.whiteout_unnamed, 0, "{d:?}");
        // FILES (event, syscall end) pairs fit in the default ring even if nothing is read
        // until the end: nothing may be dropped.
        assert_eq!(
            common::min_delivered(common::DEFAULT_RINGBUF, FILES as u64),
            FILES as u64,
            "the workload fits the ring"
        );
        assert_eq!((d.ringbuf, d.syscall_ends), (0, 0), "{d:?}");
        assert_eq!(whiteouts.len(), FILES, "every whiteout delivered");
        assert_eq!(named.len(), whiteouts.len(), "one event per removed name");
        for e in &whiteouts {
            assert_eq!(e.mount_point.as_deref(), merged.to_str(), "{e:?}");
            assert_eq!(
                truth.entries.get(&e.path),
                Some(&UpperEntry::Whiteout),
                "{e:?}"
            );
        }
        assert_eq!(recording.summary.events, whiteouts.len() as u64);
        drop(stack);
    }
    baseline.assert_clean(test);
}

const CHURN_FILES: usize = 2000;
const CHURN_ROUNDS: usize = 2;

#[test]
fn concurrent_whiteout_churn_is_counted_exactly() {
    let test = "concurrent_whiteout_churn_is_counted_exactly";
    if !require_root(test) {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let root = canon(dir.path()).join("s");
        let stack = Stack::create(&root, 1, &lower_files(CHURN_FILES), &[], true).expect("stack");
        let merged = canon(&stack.merged);
        let (rec, start) = start_record();
        in_threads(&merged, CHURN_FILES, |merged, i| {
            let p = merged.join(format!("f{i}"));
            for _ in 0..CHURN_ROUNDS {
                fs::remove_file(&p).unwrap();
                fs::File::create(&p).unwrap();
            }
            fs::remove_file(&p).unwrap();
        });
        let recording = stop_record(rec, start);

        let truth = UpperTruth::read(&stack.upper).expect("read upper");
        let final_whiteouts = truth
            .entries
            .values()
            .filter(|e| **e == UpperEntry::Whiteout)
            .count();
        assert_eq!(final_whiteouts, CHURN_FILES, "ground truth at the end");
        let removals = (CHURN_FILES * (CHURN_ROUNDS + 1)) as u64;
        let creates = (CHURN_FILES * CHURN_ROUNDS) as u64;
        let count = |k: Kind| recording.events.iter().filter(|e| e.kind == k).count() as u64;
        let (whiteouts, over) = (count(Kind::Whiteout), count(Kind::CreateOverWhiteout));
        let d = recording.summary.drops;
        eprintln!(
            "{test}: {removals} removals, {creates} creates; events: {whiteouts} whiteouts, \
             {over} creates over whiteouts; drops {d:?}"
        );
        assert_eq!(whiteouts + over, recording.events.len() as u64);
        assert_eq!(d.total(), d.whiteout_unnamed + d.ringbuf, "{d:?}");
        // unlink(2) and creat(2) only: no RENAME_WHITEOUT, every whiteout has a name.
        assert_eq!(d.whiteout_unnamed, 0, "{d:?}");
        assert_eq!(
            whiteouts + over + d.total(),
            removals + creates,
            "produced = delivered + dropped"
        );
        // A slow (debug) collector may lose some to a full ring buffer (counted above), but
        // never more than what overflows a full ring.
        let produced = removals + creates;
        let least = common::min_delivered(common::DEFAULT_RINGBUF, produced);
        assert!(
            whiteouts + over >= least,
            "delivered {} of {produced}, but a full ring holds {least}: {d:?}",
            whiteouts + over
        );
        assert!(
            whiteouts <= removals && over <= creates,
            "{whiteouts} {over}"
        );
        drop(stack);
    }
    baseline.assert_clean(test);
}

/// `rename(2)` of lower files: overlay copies each up, then renames it with `RENAME_WHITEOUT`, and
/// the upper fs makes the whiteout itself. tmpfs gives it a dentry (a named whiteout event); ext4
/// makes it inside `ext4_rename` with no dentry, which the tracepoint backend cannot name: each is
/// counted in `whiteout_unnamed`, exactly one per rename.
fn renames(test: &str, on_tmpfs: bool) {
    const RENAMES: usize = 50;
    if !require_root(test) {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let root = canon(dir.path()).join("s");
        let stack = Stack::create(&root, 1, &lower_files(RENAMES), &[], on_tmpfs).expect("stack");
        let merged = canon(&stack.merged);
        let (rec, start) = start_record();
        for i in 0..RENAMES {
            fs::rename(merged.join(format!("f{i}")), merged.join(format!("g{i}"))).unwrap();
        }
        let recording = stop_record(rec, start);
        let truth = UpperTruth::read(&stack.upper).expect("read upper");
        let count = |e: UpperEntry| truth.entries.values().filter(|v| **v == e).count();
        assert_eq!(
            (count(UpperEntry::File), count(UpperEntry::Whiteout)),
            (RENAMES, RENAMES),
            "ground truth: g<i> copied up, f<i> whited out"
        );
        let d = recording.summary.drops;
        let kinds = |k: Kind| recording.events.iter().filter(|e| e.kind == k).count();
        eprintln!(
            "{test}: {} events ({} copy-ups, {} whiteouts), drops {d:?}",
            recording.events.len(),
            kinds(Kind::DataCopyUp),
            kinds(Kind::Whiteout)
        );
        assert_eq!(kinds(Kind::DataCopyUp), RENAMES, "one copy-up per rename");
        assert_eq!(
            (d.ringbuf, d.op_table, d.windows, d.malformed),
            (0, 0, 0, 0),
            "{d:?}"
        );
        let (named, unnamed) =
            if recording.start.backend == cowprof::event::Backend::Tracepoint && !on_tmpfs {
                (0, RENAMES as u64)
            } else {
                (RENAMES, 0)
            };
        assert_eq!(kinds(Kind::Whiteout), named, "{d:?}");
        assert_eq!(d.whiteout_unnamed, unnamed, "{d:?}");
        assert_eq!(recording.events.len(), RENAMES + named);
        let paths = |k: Kind| -> BTreeSet<String> {
            recording
                .events
                .iter()
                .filter(|e| e.kind == k)
                .map(|e| e.path.clone())
                .collect()
        };
        let numbered =
            |p: &str, n: usize| -> BTreeSet<String> { (0..n).map(|i| format!("{p}{i}")).collect() };
        assert_eq!(
            paths(Kind::DataCopyUp),
            numbered("g", RENAMES),
            "copied up as the new name"
        );
        assert_eq!(
            paths(Kind::Whiteout),
            numbered("f", named),
            "whiteouts at the old names"
        );
        drop(stack);
    }
    baseline.assert_clean(test);
}

#[test]
fn renames_on_disk_count_the_unnamed_whiteouts() {
    renames("renames_on_disk_count_the_unnamed_whiteouts", false);
}

#[test]
fn renames_on_tmpfs_name_every_whiteout() {
    renames("renames_on_tmpfs_name_every_whiteout", true);
}

#[test]
fn concurrent_unlinks_on_tmpfs_are_all_counted() {
    concurrent_unlinks("concurrent_unlinks_on_tmpfs_are_all_counted", true);
}

#[test]
fn concurrent_unlinks_on_disk_are_all_counted() {
    concurrent_unlinks("concurrent_unlinks_on_disk_are_all_counted", false);
}
