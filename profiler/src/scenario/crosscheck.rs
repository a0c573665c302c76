//! Two backends on one kernel must tell the same story: `selftest --compare-backends` records the
//! scenario under each and requires their event streams to agree exactly on what happened (kind,
//! mount, path, source layer, syscall, errno, comm), ignoring what differs by mechanism (times,
//! latencies, pids, the backend's name).

use std::collections::BTreeMap;

use crate::event::{Backend, Event, Kind};

/// What two backends must agree on for one event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fact {
    pub kind: Kind,
    pub mount_point: Option<String>,
    pub path: String,
    pub lower_layer: Option<u32>,
    pub syscall: Option<String>,
    pub errno: i32,
    pub comm: String,
}

impl Fact {
    #[must_use]
    pub fn of(e: &Event) -> Self {
        Self {
            kind: e.kind,
            mount_point: e.mount_point.as_deref().map(str::to_owned),
            path: e.path.clone(),
            lower_layer: e.lower_layer,
            syscall: e.syscall.as_deref().map(str::to_owned),
            errno: e.errno,
            comm: e.comm.clone(),
        }
    }
}

impl std::fmt::Display for Fact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (mount {}, layer {}, syscall {}, errno {}, comm {})",
            self.kind.as_str(),
            self.path,
            self.mount_point.as_deref().unwrap_or("-"),
            self.lower_layer
                .map_or_else(|| "-".to_owned(), |l| l.to_string()),
            self.syscall.as_deref().unwrap_or("-"),
            self.errno,
            self.comm
        )
    }
}

/// Differences a backend is documented not to see (docs/backends.md): `(backend, kind, why)`.
/// Only a missing event of that kind on that backend is excused; anything else is a difference.
pub const KNOWN_GAPS: &[(Backend, Kind, &str)] = &[(
    Backend::Tracepoint,
    Kind::DeferredDataCopyUp,
    "a metacopy file's deferred data copy-up changes no ctime, so the tracepoint backend cannot see it",
)];

/// The differences between the streams of backend `a` and backend `b` (as multisets of facts),
/// one line each; empty when they agree. Known gaps are returned apart, as notes.
#[must_use]
pub fn compare(a: (Backend, &[Event]), b: (Backend, &[Event])) -> (Vec<String>, Vec<String>) {
    compare_runs(a, b, [false, false])
}

/// Why an event may lack the syscall the other backend names: the kernel skipped every copy of
/// that run's `sys_enter` program (kernels 7.0 and later, docs/backends.md).
const ENTRY_SKIPPED: &str = "the kernel skipped every copy of this run's sys_enter program, so an event of the syscall it missed has none";

/// [`compare`], where `entry_skipped[i]` says that the kernel skipped runs of every copy of
/// stream `i`'s `sys_enter` program: an event of that stream with no syscall, matched by the
/// same event with one in the other stream, is then a note, not a difference.
#[must_use]
pub fn compare_runs(
    a: (Backend, &[Event]),
    b: (Backend, &[Event]),
    entry_skipped: [bool; 2],
) -> (Vec<String>, Vec<String>) {
    let count = |evs: &[Event]| {
        let mut m: BTreeMap<Fact, i64> = BTreeMap::new();
        for e in evs {
            *m.entry(Fact::of(e)).or_default() += 1;
        }
        m
    };
    let (mut ca, mut cb) = (count(a.1), count(b.1));
    let mut diffs = Vec::new();
    let mut notes = Vec::new();
    if entry_skipped[0] {
        excuse_lost_syscalls(&mut ca, &mut cb, (a.0, b.0), &mut notes);
    }
    if entry_skipped[1] {
        excuse_lost_syscalls(&mut cb, &mut ca, (b.0, a.0), &mut notes);
    }
    let keys: std::collections::BTreeSet<&Fact> = ca.keys().chain(cb.keys()).collect();
    for fact in keys {
        let (na, nb) = (
            ca.get(fact).copied().unwrap_or(0),
            cb.get(fact).copied().unwrap_or(0),
        );
        if na == nb {
            continue;
        }
        // The backend with fewer of this fact misses them.
        let (missing_in, n) = if na > nb {
            (b.0, na - nb)
        } else {
            (a.0, nb - na)
        };
        let line = format!("{} {}: {} has {na}, {} has {nb}", n, fact, a.0, b.0);
        if let Some((_, _, why)) = KNOWN_GAPS
            .iter()
            .find(|(backend, kind, _)| *backend == missing_in && *kind == fact.kind)
        {
            notes.push(format!("{line} (known: {why})"));
        } else {
            diffs.push(line);
        }
    }
    (diffs, notes)
}

/// Pairs each event of `this` with no syscall, beyond what `other` has of it, with the same
/// event with a syscall in `other`, beyond what `this` has of that; each pair is taken out of
/// both counts and noted.
fn excuse_lost_syscalls(
    this: &mut BTreeMap<Fact, i64>,
    other: &mut BTreeMap<Fact, i64>,
    (this_name, other_name): (Backend, Backend),
    notes: &mut Vec<String>,
) {
    let bare: Vec<Fact> = this
        .keys()
        .filter(|f| f.syscall.is_none())
        .cloned()
        .collect();
    for fact in bare {
        let excess = |m: &BTreeMap<Fact, i64>, n: &BTreeMap<Fact, i64>, f: &Fact| {
            m.get(f).copied().unwrap_or(0) - n.get(f).copied().unwrap_or(0)
        };
        let candidates: Vec<Fact> = other
            .keys()
            .filter(|g| {
                g.syscall.is_some()
                    && Fact {
                        syscall: None,
                        ..(*g).clone()
                    } == fact
            })
            .cloned()
            .collect();
        for g in candidates {
            let n = excess(this, other, &fact).min(excess(other, this, &g));
            if n <= 0 {
                continue;
            }
            *this.entry(fact.clone()).or_default() -= n;
            *other.entry(g.clone()).or_default() -= n;
            notes.push(format!(
                "{n} {g}: {this_name} has it with no syscall, {other_name} with one (known: {ENTRY_SKIPPED})"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: Kind, path: &str, layer: u32, syscall: &str) -> Event {
        let mut e: Event = serde_json::from_value(serde_json::json!({
            "kind": kind, "backend": "kprobe", "time_ns": 0, "latency_ns": 1,
            "latency_partial": false, "errno": 0, "pid": 1, "tid": 1, "comm": "sh",
            "cgroup_id": 0, "mnt_ns": 0, "dev": "0:39", "mount_point": "/m", "path": path,
            "path_truncated": false, "size_bytes": 1, "bytes_copied": 1, "lower_layer": layer,
            "lower_layer_dir": "/l", "syscall": syscall, "syscall_latency_ns": null,
            "syscall_ret": null, "container_id": null,
        }))
        .expect("a valid event");
        e.latency_ns = u64::from(layer) * 7; // latencies never matter
        e
    }

    #[test]
    fn agree_ignoring_order_and_latency() {
        let a = [
            ev(Kind::DataCopyUp, "f", 1, "openat"),
            ev(Kind::Whiteout, "g", 2, "unlinkat"),
        ];
        let mut b = [a[1].clone(), a[0].clone()];
        b[0].pid = 99;
        b[0].latency_ns = 12345;
        assert_eq!(
            compare((Backend::Kprobe, &a), (Backend::Tracepoint, &b)),
            (vec![], vec![])
        );
    }

    #[test]
    fn a_different_layer_path_or_count_is_a_difference() {
        let a = [
            ev(Kind::DataCopyUp, "f", 1, "openat"),
            ev(Kind::DirCopyUp, "d", 1, "openat"),
        ];
        let b = [
            ev(Kind::DataCopyUp, "f", 2, "openat"),
            ev(Kind::DirCopyUp, "d", 1, "openat"),
            ev(Kind::DirCopyUp, "d", 1, "openat"),
        ];
        let (diffs, notes) = compare((Backend::Kprobe, &a), (Backend::Tracepoint, &b));
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert!(notes.is_empty());
    }

    /// An event with no syscall matches the same event with one only where the kernel skipped
    /// every copy of that stream's `sys_enter`; any other field must still agree.
    #[test]
    fn a_syscall_lost_to_skipped_entries_is_a_note() {
        let mut bare = ev(Kind::DataCopyUp, "a2", 2, "openat");
        bare.syscall = None;
        let a = [bare.clone(), ev(Kind::Whiteout, "g", 1, "unlinkat")];
        let b = [
            ev(Kind::DataCopyUp, "a2", 2, "open"),
            ev(Kind::Whiteout, "g", 1, "unlinkat"),
        ];
        let k = (Backend::Kprobe, &a[..]);
        let t = (Backend::Tracepoint, &b[..]);
        assert_eq!(compare(k, t).0.len(), 2, "without the skips: a difference");
        let (diffs, notes) = compare_runs(k, t, [true, false]);
        assert!(diffs.is_empty(), "{diffs:?}");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(
            compare_runs(k, t, [false, true]).0.len(),
            2,
            "the other stream's skips excuse nothing here"
        );
        // Another layer is still a difference.
        let mut wrong = bare;
        wrong.lower_layer = Some(3);
        let (diffs, _) = compare_runs((Backend::Kprobe, &[wrong]), t, [true, false]);
        assert_eq!(diffs.len(), 3, "{diffs:?}");
    }

    #[test]
    fn only_the_documented_gap_is_excused() {
        let a = [ev(Kind::DeferredDataCopyUp, "m", 1, "openat")];
        let (diffs, notes) = compare((Backend::Kprobe, &a), (Backend::Tracepoint, &[]));
        assert!(diffs.is_empty());
        assert_eq!(notes.len(), 1);
        // The other way round (kprobe missing it) is a difference.
        let (diffs, _) = compare((Backend::Kprobe, &[]), (Backend::Tracepoint, &a));
        assert_eq!(diffs.len(), 1);
    }
}
