//! Loading the backend's programs, which is where the kernel verifies them: on several cores at
//! once, before [`super::load_and_attach`] attaches them one by one in its order.
//!
//! Verifying is most of the time `record` takes to start (docs/performance.md, "Attaching"), and
//! the kernel verifies programs that different threads load at the same time (its verifier lock
//! is taken for unprivileged loads only). Loading only verifies: a loaded program runs nowhere
//! until it is attached, so the order that matters (copies before their checker, the syscall
//! programs last) is kept by attaching in order.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use aya::{
    programs::{BtfTracePoint, KProbe, Program, ProgramError, RawTracePoint},
    Btf, Ebpf,
};

use super::ProbeError;

/// How a program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind<'t> {
    /// A `tp_btf` program for this tracepoint.
    TpBtf(&'t str),
    /// A raw tracepoint program.
    RawTp,
    /// A kprobe or kretprobe program.
    KProbe,
}

/// How long a program took to load, and how it went.
type Loaded = (Duration, Result<(), ProgramError>);

/// At most this many threads: each verification holds kernel memory of its own.
const MAX_THREADS: usize = 4;

/// The kernel keeps this many bytes of a program's name (`BPF_OBJ_NAME_LEN` − 1).
const KERNEL_NAME_LEN: usize = 15;

/// The name the kernel shows for program `name`.
fn kernel_name(name: &str) -> &str {
    name.get(..KERNEL_NAME_LEN).unwrap_or(name)
}

/// The groups `wanted` is loaded in, as indexes into it: programs that the kernel names alike
/// (the same first 15 bytes) form one group, loaded one after another in `wanted`'s order, so
/// their program ids keep that order (the kernel numbers a program when its verification ends,
/// and the benches tell such programs apart by their ids). Groups in the order of their first
/// program.
fn groups(wanted: &[(String, Kind<'_>)]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, (name, _)) in wanted.iter().enumerate() {
        let k = kernel_name(name);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// How many threads load `groups` groups on this machine.
fn threads(groups: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_THREADS)
        .min(groups)
        .max(1)
}

/// Loads every program of `wanted` (name, how), on up to [`MAX_THREADS`] threads; `btf` is the
/// kernel's BTF, needed for `tp_btf` programs. On failure, the error of the first program in
/// `wanted`'s order that failed. A program already loaded is an error (`AlreadyLoaded`).
pub(super) fn load_all(
    ebpf: &mut Ebpf,
    wanted: &[(String, Kind<'_>)],
    btf: Option<&Btf>,
) -> Result<(), ProbeError> {
    let mut slots: Vec<Option<&mut Program>> = wanted.iter().map(|_| None).collect();
    for (name, prog) in ebpf.programs_mut() {
        if let Some(i) = wanted.iter().position(|(w, _)| w == name) {
            slots[i] = Some(prog);
        }
    }
    let mut work: Vec<Vec<(usize, &mut Program)>> = Vec::new();
    for members in groups(wanted) {
        let mut group = Vec::with_capacity(members.len());
        for i in members {
            let prog = slots[i].take().unwrap_or_else(|| {
                panic!("program {} in object", wanted[i].0);
            });
            group.push((i, prog));
        }
        work.push(group);
    }
    let n = threads(work.len());
    let queue = Mutex::new(work.into_iter());
    let results: Mutex<Vec<Option<Loaded>>> = Mutex::new(wanted.iter().map(|_| None).collect());
    let worker = || loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
        let Some(group) = next else { break };
        for (i, prog) in group {
            let start = Instant::now();
            let r = load_one(prog, wanted[i].1, btf);
            results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some((start.elapsed(), r));
        }
    };
    if n == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..n {
                s.spawn(worker);
            }
        });
    }
    let results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    for ((name, kind), r) in wanted.iter().zip(results) {
        let (took, r) = r.expect("every group is loaded");
        log::debug!("attach phase verify {name}: {took:?} ({n} threads)");
        r.map_err(|source| ProbeError::Program {
            what: match kind {
                Kind::TpBtf(tp) => format!("loading {name} for tp_btf/{tp}"),
                Kind::RawTp | Kind::KProbe => format!("loading {name}"),
            },
            source,
        })?;
    }
    Ok(())
}

/// Loads one program as `kind` says.
fn load_one(prog: &mut Program, kind: Kind<'_>, btf: Option<&Btf>) -> Result<(), ProgramError> {
    match kind {
        Kind::TpBtf(tp) => {
            let p: &mut BtfTracePoint = prog.try_into()?;
            p.load(tp, btf.expect("kernel BTF for tp_btf programs"))
        }
        Kind::RawTp => {
            let p: &mut RawTracePoint = prog.try_into()?;
            p.load()
        }
        Kind::KProbe => {
            let p: &mut KProbe = prog.try_into()?;
            p.load()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(names: &[&str]) -> Vec<(String, Kind<'static>)> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), Kind::RawTp))
            .collect()
    }

    #[test]
    fn programs_the_kernel_names_alike_load_in_one_group_in_order() {
        let wanted = w(&[
            "cowprof_tp_ctime_ns_xchg",
            "cowprof_tp_ctime_ns_xchg_fb",
            "cowprof_tp_ctime_ns_xchg_chk",
            "cowprof_tp_ctime_xchg_skip",
            "cowprof_tp_set_ctime",
            "cowprof_tp_set_ctime_fb",
            "cowprof_sys_enter_tp",
            "cowprof_sys_exit_tp",
            "cowprof_sys_enter_tp_fb",
        ]);
        assert_eq!(
            groups(&wanted),
            vec![vec![0, 1, 2, 3], vec![4, 5], vec![6, 8], vec![7]]
        );
    }

    #[test]
    fn short_names_are_their_own_kernel_names() {
        assert_eq!(kernel_name("cowprof_x"), "cowprof_x");
        assert_eq!(kernel_name("cowprof_sys_exit_tp"), "cowprof_sys_exi");
    }

    #[test]
    fn never_more_threads_than_groups() {
        assert_eq!(threads(1), 1);
        assert_eq!(threads(0), 1);
        assert!(threads(64) <= MAX_THREADS);
    }
}
