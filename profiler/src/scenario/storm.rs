//! The lifecycle storm: many short-lived overlay stacks, each mounted, written at once (within
//! microseconds of the mount's return), unmounted and removed, one after another and several at
//! a time, so the kernel hands the same anonymous device numbers and mount ids to new mounts
//! right after the old ones go. Recorded end to end by `cowprof selftest --storm N` (the VM
//! matrix runs it in each kernel, under each backend) and checked per stack against its upper
//! dir, read before the unmount: exact kinds, paths and source layers, the stack's own mount
//! point on every event, nothing from the removals, nothing dropped.
//!
//! The workload runs as `cowprof __storm ...` in a process of its own (the recorder never
//! traces itself) and writes each stack's ground truth to a JSON file for the checker. Removals
//! run under the thread name [`REMOVER_COMM`], so an event they cause is recognised as such.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use crate::{
    event::{Event, Kind},
    host::mounts::{mount, umount},
    pipeline::{
        probe::ProbeOptions,
        record::{self, Outcome, RecordOptions},
        report::Exporter,
    },
    scenario::{selftest::SelftestError, StackError, UpperEntry, UpperTruth},
};

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

/// Copy-on-write operations each stack's workload makes (3 data copy-ups, a directory copy-up,
/// a chmod copy-up, 2 whiteouts), as its upper dir must show.
pub const PER_STACK: usize = 7;

/// Thread name (comm) of the workload while it unmounts and removes a stack.
pub const REMOVER_COMM: &str = "storm-rm";

/// One event as the storm compares it: (kind, path, source layer).
pub type StormKey = (Kind, String, Option<u32>);

/// A stack's ground truth, written by the workload before the stack is removed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StackTruth {
    pub mount_point: String,
    pub expected: BTreeSet<StormKey>,
    /// From the mount's return to the start of the first write.
    pub mount_to_write_ns: u64,
}

fn ctx(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let msg = format!("{what} {}", path.display());
    move |e| std::io::Error::new(e.kind(), format!("{msg}: {e}"))
}

/// Sets the calling thread's name (comm), as events report it.
fn set_thread_name(name: &str) {
    let n = CString::new(name).expect("no NUL");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, n.as_ptr()) };
}

/// Builds stack `root` (layers, upper, work, merged), mounts it and at once appends to a file of
/// each layer, copies up a directory (a new file in it), chmods a file, deletes a lower file
/// and removes a lower directory. Reads the upper dir, then unmounts and removes the stack.
fn lifecycle(root: &Path) -> std::io::Result<StackTruth> {
    for d in ["l1", "l2", "l3", "upper", "work", "merged"] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(ctx("creating", &p))?;
    }
    for &(layer, path, size) in LOWER {
        let p = root.join(format!("l{layer}")).join(path);
        if path.ends_with('/') {
            fs::create_dir_all(&p).map_err(ctx("creating", &p))?;
        } else {
            fs::write(&p, vec![b'x'; size]).map_err(ctx("writing", &p))?;
        }
    }
    let merged = root.join("merged");
    let options = format!(
        "lowerdir={}:{}:{},upperdir={},workdir={}",
        root.join("l1").display(),
        root.join("l2").display(),
        root.join("l3").display(),
        root.join("upper").display(),
        root.join("work").display()
    );
    mount("overlay", &merged, "overlay", &options).map_err(ctx("mounting overlay on", &merged))?;
    let mounted = Instant::now();
    let m = &merged;
    let append = |name: &str| -> std::io::Result<()> {
        let p = m.join(name);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .map_err(ctx("opening", &p))?;
        f.write_all(b"more").map_err(ctx("appending to", &p))
    };
    let first = mounted.elapsed();
    let writes = (|| {
        append("a1")?;
        append("a2")?;
        append("a3")?;
        fs::write(m.join("cp3/new"), b"n")?;
        fs::set_permissions(m.join("c3"), fs::Permissions::from_mode(0o600))?;
        fs::remove_file(m.join("del2"))?;
        fs::remove_dir(m.join("ddir"))
    })();
    let truth = writes.and_then(|()| UpperTruth::read(&root.join("upper")));
    set_thread_name(REMOVER_COMM);
    let unmounted = umount(&merged);
    let removed = fs::remove_dir_all(root).map_err(ctx("removing", root));
    set_thread_name("storm");
    let truth = truth?;
    if !unmounted {
        return Err(std::io::Error::other(format!(
            "unmounting {} failed",
            merged.display()
        )));
    }
    removed?;
    let mut expected = BTreeSet::new();
    for (path, entry) in &truth.entries {
        // The topmost lower layer with the path; a path in no layer is new: no copy-up.
        let Some(layer) = LOWER
            .iter()
            .filter(|(_, p, _)| p.trim_end_matches('/') == path)
            .map(|(l, _, _)| *l as u32)
            .min()
        else {
            continue;
        };
        let kind = match entry {
            UpperEntry::Whiteout => Kind::Whiteout,
            UpperEntry::Dir => Kind::DirCopyUp,
            UpperEntry::File => Kind::DataCopyUp,
            other => {
                return Err(std::io::Error::other(format!(
                    "{}: unexpected upper entry {path} ({other:?})",
                    root.display()
                )))
            }
        };
        expected.insert((kind, path.clone(), Some(layer)));
    }
    if expected.len() != PER_STACK {
        return Err(std::io::Error::other(format!(
            "{}: the upper dir shows {} CoW operations, the workload makes {PER_STACK}: {truth:?}",
            root.display(),
            expected.len()
        )));
    }
    Ok(StackTruth {
        mount_point: merged.display().to_string(),
        expected,
        mount_to_write_ns: u64::try_from(first.as_nanos()).unwrap_or(u64::MAX),
    })
}

/// The stacks' directories: `base/s<i>`, the same names in every run (two backends' streams are
/// compared by mount point).
fn stack_root(base: &Path, i: usize) -> PathBuf {
    base.join(format!("s{i}"))
}

/// The workload (`cowprof __storm`): `stacks` lifecycles under `base`, the first half one at a
/// time, the rest `parallel` at once (threads released together by a barrier each round);
/// writes every stack's [`StackTruth`] to `truth_out` as JSON.
pub fn run_workload(
    base: &Path,
    stacks: usize,
    parallel: usize,
    truth_out: &Path,
) -> std::io::Result<()> {
    set_thread_name("storm");
    let parallel = parallel.max(1);
    let sequential = stacks / 2;
    let mut truths = Vec::with_capacity(stacks);
    for i in 0..sequential {
        truths.push(lifecycle(&stack_root(base, i))?);
    }
    let rest = stacks - sequential;
    let rounds = rest.div_ceil(parallel);
    let barrier = Arc::new(Barrier::new(parallel));
    let workers: Vec<_> = (0..parallel)
        .map(|t| {
            let (barrier, base) = (Arc::clone(&barrier), base.to_owned());
            std::thread::spawn(move || {
                set_thread_name("storm");
                let mut out = Vec::new();
                for r in 0..rounds {
                    barrier.wait();
                    let i = r * parallel + t;
                    if i < rest {
                        out.push(lifecycle(&stack_root(&base, sequential + i)));
                    }
                }
                out
            })
        })
        .collect();
    for w in workers {
        for t in w
            .join()
            .map_err(|_| std::io::Error::other("a storm thread panicked"))?
        {
            truths.push(t?);
        }
    }
    let json = serde_json::to_vec(&truths).map_err(std::io::Error::other)?;
    fs::write(truth_out, json).map_err(ctx("writing", truth_out))
}

/// What one recorded storm showed, per stack against its upper dir.
pub struct StormRun {
    pub outcome: Outcome,
    pub stacks: usize,
    pub parallel: usize,
    /// Events on the storm's stacks, or on no known mount (those fail the check).
    pub events: Vec<Event>,
    pub expected: usize,
    pub exact: usize,
    pub missing: usize,
    /// Events on a stack that its upper dir does not explain (wrong kind, path, layer, or a
    /// neighbour's event with this stack's mount point), plus events on no stack.
    pub misattributed: usize,
    /// Expected copy-ups reported on the right stack, kind and path but with no source layer
    /// (neither in `missing` nor in `misattributed`): the kernel skipped the runs that would
    /// have named the lower inode, and the stack was gone before user space could look it up.
    pub layer_unknown: usize,
    pub duplicates: usize,
    pub from_removal: usize,
    pub max_mount_to_write: Duration,
    /// A few stacks that differ, for the failure message.
    pub examples: Vec<String>,
}

impl StormRun {
    /// Every stack exact, nothing else, nothing dropped.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.exact == self.expected
            && self.missing == 0
            && self.misattributed == 0
            && self.layer_unknown == 0
            && self.duplicates == 0
            && self.from_removal == 0
            && self.outcome.summary.drops.total() == 0
    }

    /// Nothing wrong, duplicated or from a removal, and every event not delivered exactly
    /// covered by a counted loss: a drop, or an inode update every ctime copy skipped
    /// (`ctime_skipped`, an upper bound).
    #[must_use]
    pub fn accounted(&self) -> bool {
        let d = &self.outcome.summary.drops;
        self.misattributed == 0
            && self.duplicates == 0
            && self.from_removal == 0
            && (self.missing + self.layer_unknown) as u64 <= d.total() + d.ctime_skipped
    }
}

/// A tmpfs mounted for the storm's stacks, unmounted on drop (also on the error paths).
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        umount(&self.0);
    }
}

/// Records the storm (`stacks` lifecycles, the second half `parallel` at once) with `backend`
/// and checks every stack. The stacks live under `base/cowprof-storm-<pid>` (a tmpfs of their
/// own with `on_tmpfs`), so runs of one process under two backends use the same mount points.
pub async fn run_storm(
    probe: ProbeOptions,
    base: &Path,
    stacks: usize,
    parallel: usize,
    on_tmpfs: bool,
    exporter: &mut dyn Exporter,
    out: &mut dyn std::io::Write,
) -> Result<StormRun, SelftestError> {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StackError + use<> {
        let f = crate::host::io::io_err(what, path.to_owned());
        move |e| StackError::Io(f(e))
    }
    let exe = std::env::current_exe().map_err(SelftestError::Exe)?;
    let dir = base.join(format!("cowprof-storm-{}", std::process::id()));
    let truth_file = base.join(format!("cowprof-storm-{}.json", std::process::id()));
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let tmpfs = if on_tmpfs {
        mount("cowprof", &dir, "tmpfs", "size=64m").map_err(io("mounting tmpfs on", &dir))?;
        Some(Tmpfs(dir.clone()))
    } else {
        None
    };
    let opts = RecordOptions {
        probe,
        command: vec![
            exe.display().to_string(),
            "__storm".into(),
            dir.display().to_string(),
            stacks.to_string(),
            parallel.to_string(),
            truth_file.display().to_string(),
        ],
        ..Default::default()
    };
    let recorded = record::record(&opts, exporter, out).await;
    drop(tmpfs);
    let _ = fs::remove_dir_all(&dir);
    let truths = fs::read(&truth_file);
    let _ = fs::remove_file(&truth_file);
    let outcome = recorded?;
    if outcome.interrupted {
        return Err(SelftestError::Interrupted);
    }
    if outcome.command_status != Some(0) {
        return Err(SelftestError::Workload(outcome.command_status));
    }
    let truths: Vec<StackTruth> = serde_json::from_slice(&truths.map_err(SelftestError::Truth)?)
        .map_err(|e| SelftestError::Truth(std::io::Error::other(e)))?;
    Ok(check(outcome, &dir, &truths, parallel))
}

/// Compares the recording with each stack's truth.
/// One stack's events against its upper dir.
#[derive(Debug, PartialEq, Eq)]
struct StackCount {
    exact: usize,
    missing: usize,
    unexpected: usize,
    layer_unknown: usize,
}

fn compare_stack(expected: &BTreeSet<StormKey>, got: &BTreeSet<StormKey>) -> StackCount {
    let absent: Vec<&StormKey> = expected.difference(got).collect();
    let unexpected: Vec<&StormKey> = got.difference(expected).collect();
    // An unexpected event with no layer whose kind and path an absent one has, with a layer.
    let layer_unknown = unexpected
        .iter()
        .filter(|(k, p, l)| {
            l.is_none()
                && absent
                    .iter()
                    .any(|(ak, ap, al)| ak == k && ap == p && al.is_some())
        })
        .count();
    StackCount {
        exact: expected.intersection(got).count(),
        missing: absent.len() - layer_unknown,
        unexpected: unexpected.len() - layer_unknown,
        layer_unknown,
    }
}

fn check(outcome: Outcome, dir: &Path, truths: &[StackTruth], parallel: usize) -> StormRun {
    let prefix = format!("{}/", dir.display());
    // Ours: events on the storm's mount points, from its removals, or on no known mount.
    let events: Vec<Event> = outcome
        .events
        .iter()
        .filter(|e| {
            e.comm == REMOVER_COMM
                || e.mount_point
                    .as_deref()
                    .is_none_or(|m| m.starts_with(&prefix))
        })
        .cloned()
        .collect();
    let from_removal = events.iter().filter(|e| e.comm == REMOVER_COMM).count();
    let mut by_mount: BTreeMap<Option<String>, BTreeSet<StormKey>> = BTreeMap::new();
    let mut duplicates = 0;
    let mut examples = Vec::new();
    for e in events.iter().filter(|e| e.comm != REMOVER_COMM) {
        let key = (e.kind, e.path.clone(), e.lower_layer);
        if !by_mount
            .entry(e.mount_point.as_deref().map(str::to_owned))
            .or_default()
            .insert(key)
        {
            duplicates += 1;
            // Every stack has the same paths: another stack's event on this mount point.
            if examples.len() < 3 {
                examples.push(format!(
                    "a second {} {} on {} (dev {}, tid {})",
                    e.kind.as_str(),
                    e.path,
                    e.mount_point.as_deref().unwrap_or("no known mount"),
                    e.dev.as_deref().unwrap_or("-"),
                    e.tid
                ));
            }
        }
    }
    let (mut exact, mut missing, mut wrong, mut layer_unknown) = (0, 0, 0, 0);
    for t in truths {
        let got = by_mount
            .remove(&Some(t.mount_point.clone()))
            .unwrap_or_default();
        let c = compare_stack(&t.expected, &got);
        exact += c.exact;
        missing += c.missing;
        wrong += c.unexpected;
        layer_unknown += c.layer_unknown;
        if got != t.expected && examples.len() < 3 {
            examples.push(format!(
                "{}: missing {:?}; unexpected {:?}",
                t.mount_point,
                t.expected.difference(&got).collect::<Vec<_>>(),
                got.difference(&t.expected).collect::<Vec<_>>()
            ));
        }
    }
    let elsewhere: usize = by_mount.values().map(BTreeSet::len).sum();
    for (mount, keys) in by_mount.iter().take(3) {
        examples.push(format!(
            "on no storm stack ({}): {keys:?}",
            mount.as_deref().unwrap_or("no known mount")
        ));
    }
    StormRun {
        stacks: truths.len(),
        parallel,
        expected: truths.iter().map(|t| t.expected.len()).sum(),
        exact,
        missing,
        misattributed: wrong + elsewhere,
        layer_unknown,
        duplicates,
        from_removal,
        max_mount_to_write: truths
            .iter()
            .map(|t| Duration::from_nanos(t.mount_to_write_ns))
            .max()
            .unwrap_or_default(),
        examples,
        events,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(
        missing: usize,
        layer_unknown: usize,
        drops: crate::pipeline::aggregate::Drops,
    ) -> StormRun {
        StormRun {
            outcome: Outcome {
                info: crate::pipeline::report::RunInfo {
                    backend: crate::event::Backend::Tracepoint,
                    kernel: "7.3.4".into(),
                    attached: vec![],
                    skipped: vec![],
                },
                events: vec![],
                summary: crate::pipeline::aggregate::Aggregate::default().summary(drops),
                command_status: None,
                interrupted: false,
                overlay_unloaded: false,
                skipped_runs: vec![],
            },
            stacks: 60,
            parallel: 3,
            events: vec![],
            expected: 420,
            exact: 420 - missing - layer_unknown,
            missing,
            misattributed: 0,
            layer_unknown,
            duplicates: 0,
            from_removal: 0,
            max_mount_to_write: Duration::ZERO,
            examples: vec![],
        }
    }

    /// `--accounted`: a miss passes only when counted losses cover it; a counted loss never
    /// makes a run exact.
    #[test]
    fn accounted_needs_every_miss_counted() {
        use crate::pipeline::aggregate::Drops;
        let exact = run_with(0, 0, Drops::default());
        assert!(exact.ok() && exact.accounted());
        let skipped_only = run_with(
            0,
            0,
            Drops {
                ctime_skipped: 5,
                ..Default::default()
            },
        );
        assert!(skipped_only.ok(), "an upper bound alone is no drop");
        let covered = run_with(
            9,
            2,
            Drops {
                ctime_skipped: 10,
                whiteout_unnamed: 1,
                ..Default::default()
            },
        );
        assert!(covered.accounted() && !covered.ok());
        let short = run_with(
            9,
            2,
            Drops {
                ctime_skipped: 10,
                ..Default::default()
            },
        );
        assert!(!short.accounted(), "11 lost, 10 counted");
        let blind = run_with(3, 0, Drops::default());
        assert!(!blind.accounted(), "a loss nothing counted");
        let mut wrong = run_with(
            0,
            0,
            Drops {
                ctime_skipped: 50,
                ..Default::default()
            },
        );
        wrong.misattributed = 1;
        wrong.exact -= 1;
        assert!(!wrong.accounted(), "a wrong event is never accounted for");
    }

    fn key(kind: Kind, path: &str, layer: Option<u32>) -> StormKey {
        (kind, path.to_owned(), layer)
    }

    #[test]
    fn a_copy_up_with_no_layer_is_layer_unknown_not_wrong() {
        let expected: BTreeSet<_> = [
            key(Kind::DataCopyUp, "/a", Some(0)),
            key(Kind::DataCopyUp, "/b", Some(1)),
            key(Kind::Whiteout, "/c", None),
        ]
        .into();
        let got: BTreeSet<_> = [
            key(Kind::DataCopyUp, "/a", Some(0)),
            key(Kind::DataCopyUp, "/b", None),
            key(Kind::Whiteout, "/c", None),
        ]
        .into();
        let c = compare_stack(&expected, &got);
        assert_eq!(
            c,
            StackCount {
                exact: 2,
                missing: 0,
                unexpected: 0,
                layer_unknown: 1
            }
        );
    }

    #[test]
    fn a_wrong_layer_or_path_stays_wrong() {
        let expected: BTreeSet<_> = [
            key(Kind::DataCopyUp, "/a", Some(0)),
            key(Kind::DirCopyUp, "/b", Some(1)),
        ]
        .into();
        let got: BTreeSet<_> = [
            key(Kind::DataCopyUp, "/a", Some(1)),
            key(Kind::DirCopyUp, "/x", None),
        ]
        .into();
        let c = compare_stack(&expected, &got);
        assert_eq!(
            c,
            StackCount {
                exact: 0,
                missing: 2,
                unexpected: 2,
                layer_unknown: 0
            }
        );
    }
}
