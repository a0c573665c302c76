//! Lifecycle storm: many short-lived overlay stacks, each mounted, written at once, unmounted and
//! removed, one after another and several at a time, so the kernel hands the same anonymous
//! device numbers and mount ids to new mounts right after the old ones go. `record --json`
//! runs throughout. Per stack, the events must be exactly what its upper dir says happened
//! (captured before the unmount): same kinds, paths, source layers, and the stack's own mount
//! point; the `rm -rf` of its directories (which unlinks the whiteouts overlay left in the upper
//! dir) must produce nothing; nothing may be dropped.
#![allow(
    clippy::too_many_lines,
    reason = "a test reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Barrier,
    },
    time::{Duration, Instant},
};

use common::{canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN};
use cowprof::{
    event::{Event, Kind},
    scenario::{UpperEntry, UpperTruth},
};

/// Stacks per phase; four phases (tmpfs and disk, one at a time and [`PARALLEL`] at once).
const PER_PHASE: usize = 15;
const PARALLEL: usize = 3;

/// Lower content: (layer, path, size); a path ending in `/` is a directory. Layer 1 is the
/// topmost lower layer.
const LOWER: &[(usize, &str, usize)] = &[
    (1, "a1", 1000),
    (2, "a2", 2000),
    (3, "a3", 3000),
    (3, "c3", 300),
    (3, "cp3/", 0),
    (3, "cp3/inner", 10),
    (2, "del2", 20),
    (2, "ddir/", 0),
];

/// One event as the test compares it: (kind, path, source layer, mount point).
type Key = (Kind, String, Option<u32>, Option<String>);

struct Stack {
    root: PathBuf,
    merged: PathBuf,
    upper: PathBuf,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL")
}

/// Builds the layers of stack `root` (not mounted yet).
fn build(root: &Path) -> Stack {
    for d in ["l1", "l2", "l3", "upper", "work", "merged"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for &(layer, path, size) in LOWER {
        let p = root.join(format!("l{layer}")).join(path);
        if path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
        } else {
            fs::write(&p, vec![b'x'; size]).unwrap();
        }
    }
    Stack {
        merged: root.join("merged"),
        upper: root.join("upper"),
        root: root.to_owned(),
    }
}

/// Mounts the stack and at once appends to a file of each layer, copies up a directory (a new
/// file in it), chmods a file, deletes a lower file and removes a lower directory. Returns the
/// time from the mount's return to the first write's start.
fn mount_and_write(s: &Stack) -> Duration {
    let r = &s.root;
    let opts = format!(
        "lowerdir={}:{}:{},upperdir={},workdir={}",
        r.join("l1").display(),
        r.join("l2").display(),
        r.join("l3").display(),
        r.join("upper").display(),
        r.join("work").display()
    );
    let (src, target, fstype, data) = (
        CString::new("overlay").unwrap(),
        cstr(&s.merged),
        CString::new("overlay").unwrap(),
        CString::new(opts).unwrap(),
    );
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount: {}", std::io::Error::last_os_error());
    let mounted = Instant::now();
    let m = &s.merged;
    let append = |name: &str| {
        use std::io::Write as _;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.join(name))
            .unwrap();
        f.write_all(b"more").unwrap();
    };
    let first = mounted.elapsed();
    append("a1");
    append("a2");
    append("a3");
    fs::write(m.join("cp3/new"), b"n").unwrap();
    fs::set_permissions(m.join("c3"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(m.join("del2")).unwrap();
    fs::remove_dir(m.join("ddir")).unwrap();
    first
}

/// The expected events of a stack, from its upper dir: every entry a lower layer also has
/// (copy-ups and whiteouts), with the topmost lower layer that has it.
fn expected(s: &Stack, mount_point: &str) -> BTreeSet<Key> {
    let truth = UpperTruth::read(&s.upper).expect("read upper");
    let mut out = BTreeSet::new();
    for (path, entry) in &truth.entries {
        let layer = LOWER
            .iter()
            .filter(|(_, p, _)| p.trim_end_matches('/') == path)
            .map(|(l, _, _)| *l as u32)
            .min();
        let Some(layer) = layer else {
            continue; // a new file: no copy-up
        };
        let kind = match entry {
            UpperEntry::Whiteout => Kind::Whiteout,
            UpperEntry::Dir => Kind::DirCopyUp,
            UpperEntry::File => Kind::DataCopyUp,
            other => panic!("{path}: unexpected upper entry {other:?}"),
        };
        out.insert((
            kind,
            path.clone(),
            Some(layer),
            Some(mount_point.to_owned()),
        ));
    }
    assert_eq!(
        out.len(),
        7,
        "ground truth of {}: {truth:?}",
        s.root.display()
    );
    out
}

/// Unmounts the stack and removes its directories with `rm -rf` (as an engine's clean-up does).
/// A transient `EBUSY` (another task's path walk holding the mount for a moment) is tried again,
/// up to 1 s, as containerd does; a mount still busy after that fails the test.
fn unmount_and_remove(s: &Stack) {
    let target = cstr(&s.merged);
    let mut busy = 0;
    let rc = loop {
        // SAFETY: valid NUL-terminated string.
        let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
        if rc == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::EBUSY)
            || busy == 50
        {
            break rc;
        }
        busy += 1;
        std::thread::sleep(Duration::from_millis(20));
    };
    if busy > 0 {
        eprintln!(
            "{}: umount busy {busy} time(s) before it went",
            s.merged.display()
        );
    }
    assert_eq!(rc, 0, "umount: {}", std::io::Error::last_os_error());
    let st = Command::new("rm").arg("-rf").arg(&s.root).status().unwrap();
    assert!(st.success());
}

/// One stack's whole life; returns its expected events and its mount-to-write delay.
fn lifecycle(root: &Path) -> (String, BTreeSet<Key>, Duration) {
    let s = build(root);
    let mount_point = s.merged.display().to_string();
    let delay = mount_and_write(&s);
    let exp = expected(&s, &mount_point);
    unmount_and_remove(&s);
    (mount_point, exp, delay)
}

struct Phase {
    base: PathBuf,
    parallel: usize,
}

fn run_phase(p: &Phase, first_id: usize, out: &mut Vec<(String, BTreeSet<Key>, Duration)>) {
    if p.parallel == 1 {
        for i in 0..PER_PHASE {
            out.push(lifecycle(&p.base.join(format!("s{}", first_id + i))));
        }
        return;
    }
    let rounds = PER_PHASE / p.parallel;
    let barrier = Arc::new(Barrier::new(p.parallel));
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..p.parallel)
        .map(|t| {
            let (barrier, base) = (Arc::clone(&barrier), p.base.clone());
            let failed = Arc::clone(&failed);
            std::thread::spawn(move || {
                // Every worker reaches the barrier once per round even after a failure
                // (a worker that stopped would leave the others waiting there for ever);
                // the first failure is raised once the rounds are over.
                let mut done = Vec::new();
                let mut panic = None;
                for r in 0..rounds {
                    barrier.wait();
                    if failed.load(Ordering::SeqCst) {
                        continue;
                    }
                    let root = base.join(format!("s{}", first_id + r * 16 + t));
                    match std::panic::catch_unwind(|| lifecycle(&root)) {
                        Ok(v) => done.push(v),
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            panic = Some(e);
                        }
                    }
                }
                if let Some(e) = panic {
                    std::panic::resume_unwind(e);
                }
                done
            })
        })
        .collect();
    for w in workers {
        out.extend(w.join().unwrap());
    }
}

struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(at: &Path) -> Self {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "storm", at.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Self(at.to_owned())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Unmounts whatever a failed run left mounted under a directory (its stacks' overlays), the
/// deepest first, so that a failure leaves no mount behind.
struct MountsUnder(PathBuf);

impl Drop for MountsUnder {
    fn drop(&mut self) {
        let mut left: Vec<String> = common::overlay_mounts()
            .into_iter()
            .map(|(_, target)| target)
            .filter(|t| Path::new(t).starts_with(&self.0))
            .collect();
        left.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in left {
            let _ = Command::new("umount").arg(&t).status();
        }
    }
}

#[test]
fn lifecycle_storm_is_exact_per_stack() {
    let test = "lifecycle_storm_is_exact_per_stack";
    if !require_root(test) {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let base = canon(dir.path());
        let tmpfs = TmpfsMount::new(&base.join("tmpfs"));
        let _left = MountsUnder(base.clone());
        fs::create_dir_all(base.join("disk")).unwrap();

        let mut rec = Running::spawn(Command::new(BIN).args(["record", "--json"]));
        let start = rec.next_line(common::START_TIMEOUT);
        assert!(start.contains("\"start\""), "{start}");

        let t0 = Instant::now();
        let mut stacks = Vec::new();
        let phases = [
            Phase {
                base: base.join("tmpfs"),
                parallel: 1,
            },
            Phase {
                base: base.join("disk"),
                parallel: 1,
            },
            Phase {
                base: base.join("tmpfs"),
                parallel: PARALLEL,
            },
            Phase {
                base: base.join("disk"),
                parallel: PARALLEL,
            },
        ];
        for (i, p) in phases.iter().enumerate() {
            run_phase(p, i * 1000, &mut stacks);
        }
        let workload = t0.elapsed();
        // Let the last syscalls' records reach the ring buffer reader.
        std::thread::sleep(Duration::from_millis(500));
        rec.signal(libc::SIGINT);
        let (status, mut lines, stderr) = rec.wait(Duration::from_mins(1));
        assert_eq!(status.code(), Some(0), "record: {stderr}");
        lines.insert(0, start);
        let recording = parse_recording(&lines);
        drop(tmpfs);

        check(test, &base, &stacks, &recording, workload);
    }
    baseline.assert_clean(test);
}

fn key(e: &Event) -> Key {
    (
        e.kind,
        e.path.clone(),
        e.lower_layer,
        e.mount_point.as_deref().map(str::to_owned),
    )
}

fn check(
    test: &str,
    base: &Path,
    stacks: &[(String, BTreeSet<Key>, Duration)],
    recording: &common::Recording,
    workload: Duration,
) {
    let me = std::process::id();
    let base_s = base.display().to_string();
    // Ours: this process's threads and the `rm` children, or anything on our mount points.
    let ours: Vec<&Event> = recording
        .events
        .iter()
        .filter(|e| {
            e.pid == me
                || e.comm == "rm"
                || e.mount_point
                    .as_deref()
                    .is_some_and(|m| m.starts_with(&base_s))
        })
        .collect();
    let from_rm = ours.iter().filter(|e| e.comm == "rm").count();
    let mut by_mount: BTreeMap<Option<String>, BTreeSet<Key>> = BTreeMap::new();
    let mut dup = 0;
    for e in ours.iter().filter(|e| e.comm != "rm") {
        if !by_mount
            .entry(e.mount_point.as_deref().map(str::to_owned))
            .or_default()
            .insert(key(e))
        {
            dup += 1;
        }
    }
    let expected_total: usize = stacks.iter().map(|s| s.1.len()).sum();
    let mut exact = 0;
    let mut missing = 0;
    let mut wrong = 0;
    let mut bad = Vec::new();
    for (mp, exp, _) in stacks {
        let got = by_mount.remove(&Some(mp.clone())).unwrap_or_default();
        missing += exp.difference(&got).count();
        wrong += got.difference(exp).count();
        exact += exp.intersection(&got).count();
        if &got != exp && bad.len() < 3 {
            bad.push(format!(
                "{mp}:\n  missing {:?}\n  unexpected {:?}",
                exp.difference(&got).collect::<Vec<_>>(),
                got.difference(exp).collect::<Vec<_>>()
            ));
        }
    }
    let elsewhere: usize = by_mount.values().map(BTreeSet::len).sum();
    let d = recording.summary.drops;
    let max_delay = stacks.iter().map(|s| s.2).max().unwrap_or_default();
    eprintln!(
        "{test}: {} stacks in {workload:?} (mount to first write <= {max_delay:?}); events expected \
         {expected_total}, delivered {} (ours {}), exact {exact}, missing {missing}, \
         misattributed/unexpected {}, duplicates {dup}, from rm {from_rm}; drops {d:?}",
        stacks.len(),
        recording.events.len(),
        ours.len(),
        wrong + elsewhere,
    );
    for b in &bad {
        eprintln!("{b}");
    }
    if elsewhere > 0 {
        eprintln!("events on no stack's mount point: {by_mount:?}");
    }
    assert_eq!(from_rm, 0, "events from the rm -rf clean-up");
    assert_eq!(d.total(), 0, "drops: {d:?}");
    assert_eq!(dup, 0, "duplicate events");
    assert_eq!(
        (exact, missing, wrong + elsewhere),
        (expected_total, 0, 0),
        "per stack: exact events, right mount point and layer"
    );
}
