//! The floor's hooks (`cowprof_benches::floor`) are the ones `record` attaches: the profiler's
//! own lists, program by program (a program whose name ends in `_ret` is a kretprobe, as the
//! profiler attaches it).

use cowprof::pipeline::probe::{self, phases};
use cowprof_benches::floor;

fn kprobe(prog: &str, func: &str) -> String {
    let kind = if prog.ends_with("_ret") {
        "kretprobe"
    } else {
        "kprobe"
    };
    format!("{kind}:{func}")
}

fn sorted(hooks: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = hooks.into_iter().collect();
    v.sort();
    v
}

fn owned(hooks: &[&str]) -> Vec<String> {
    sorted(hooks.iter().map(|h| (*h).to_owned()))
}

fn syscalls() -> Vec<String> {
    vec!["sys_enter".into(), "sys_exit".into()]
}

#[test]
fn kprobe_backend_hooks_are_records() {
    let want = syscalls()
        .into_iter()
        .chain(probe::KPROBE_HOOKS.iter().map(|(p, f, _)| kprobe(p, f)));
    assert_eq!(owned(floor::KPROBE_HOOKS), sorted(want));

    let want = phases::PHASE_KPROBES
        .iter()
        .map(|(p, f, _)| kprobe(p, f))
        .chain(
            phases::PHASE_RAW_TRACEPOINTS
                .iter()
                .map(|(_, t)| (*t).to_owned()),
        );
    assert_eq!(owned(floor::KPROBE_PHASE_HOOKS), sorted(want));
}

#[test]
fn tracepoint_backend_hooks_are_records() {
    let want = syscalls().into_iter().chain(
        probe::TP_HOOKS
            .iter()
            .chain(phases::PHASE_RAW_TRACEPOINTS)
            .chain(phases::PHASE_TRACEPOINTS)
            .map(|(_, t)| (*t).to_owned()),
    );
    assert_eq!(owned(floor::TRACEPOINT_HOOKS), sorted(want));
}
