//! Copy-up phases: which probes show which phase on this kernel, and attaching them.
//!
//! The kernel side (`profiler-ebpf/src/phases.rs`) splits an armed copy-up's time into
//! on-CPU time inside probed functions and off-CPU time. Off-CPU time comes from the
//! `sched_switch` tracepoint on every backend; the function phases need kprobes (or, for
//! fsync on ext4, ext4's own tracepoints).

use aya::{maps::Array, programs::RawTracePoint, Ebpf};
use profiler_common::phase_seen;

use super::{facts::TextSymbols, Backend, ProbeError};

/// kprobe backend: (program, kernel function, the phase bit it serves). A phase is shown when
/// every function of its bit is attachable (static functions may be inlined).
pub const PHASE_KPROBES: &[(&str, &str, u32)] = &[
    (
        "cowprof_ph_metadata",
        "ovl_copy_xattr",
        phase_seen::METADATA,
    ),
    ("cowprof_ph_ret", "ovl_copy_xattr", phase_seen::METADATA),
    ("cowprof_ph_metadata", "ovl_set_attr", phase_seen::METADATA),
    ("cowprof_ph_ret", "ovl_set_attr", phase_seen::METADATA),
    ("cowprof_ph_data", "vfs_clone_file_range", phase_seen::DATA),
    (
        "cowprof_ph_clone_ret",
        "vfs_clone_file_range",
        phase_seen::DATA,
    ),
    ("cowprof_ph_data", "do_splice_direct", phase_seen::DATA),
    (
        "cowprof_ph_splice_ret",
        "do_splice_direct",
        phase_seen::DATA,
    ),
    // Overlay calls vfs_fsync, which may have vfs_fsync_range inlined into it (same file);
    // when it does call it out of line, the nested enter and return keep the phase exact.
    ("cowprof_ph_fsync", "vfs_fsync", phase_seen::FSYNC),
    ("cowprof_ph_ret", "vfs_fsync", phase_seen::FSYNC),
    ("cowprof_ph_fsync", "vfs_fsync_range", phase_seen::FSYNC),
    ("cowprof_ph_ret", "vfs_fsync_range", phase_seen::FSYNC),
    ("cowprof_ph_link", "vfs_link", phase_seen::LINK),
    ("cowprof_ph_ret", "vfs_link", phase_seen::LINK),
    ("cowprof_ph_link", "vfs_rename", phase_seen::LINK),
    ("cowprof_ph_ret", "vfs_rename", phase_seen::LINK),
];

/// The function that probes `func` of [`PHASE_KPROBES`] on this kernel. Before Linux 6.8
/// overlay clones with `do_clone_file_range`, which `vfs_clone_file_range` wraps; 6.8 merged the
/// two and overlay calls `vfs_clone_file_range`. Probing the inner one where it exists sees every
/// clone of copy-up on both, once (a probe on the wrapper alone misses overlay's clones on 6.1).
fn phase_function(syms: &TextSymbols, func: &'static str) -> &'static str {
    if func == "vfs_clone_file_range" && syms.contains("do_clone_file_range") {
        "do_clone_file_range"
    } else {
        func
    }
}

/// Every backend: the off-CPU phases (`sched_switch`) and the exit of an armed task.
pub const PHASE_RAW_TRACEPOINTS: &[(&str, &str)] = &[
    ("cowprof_sched_switch", "sched_switch"),
    ("cowprof_sched_exit", "sched_process_exit"),
];

/// Tracepoint backend: fsync of an ext4 upper (the only filesystem fsync tracepoints hooked).
pub const PHASE_TRACEPOINTS: &[(&str, &str)] = &[
    ("cowprof_ph_ext4_sync_enter", "ext4_sync_file_enter"),
    ("cowprof_ph_ext4_sync_exit", "ext4_sync_file_exit"),
];

/// One phase as `doctor` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseStatus {
    pub phase: &'static str,
    pub visible: bool,
    /// From what, or why not.
    pub how: String,
}

/// The phase bits a kprobe backend can show given the kernel's symbols.
pub(super) fn kprobe_bits(syms: &TextSymbols) -> u32 {
    let mut bits = 0;
    for bit in [
        phase_seen::METADATA,
        phase_seen::DATA,
        phase_seen::FSYNC,
        phase_seen::LINK,
    ] {
        if PHASE_KPROBES
            .iter()
            .filter(|(_, _, b)| *b == bit)
            .all(|(_, f, _)| syms.contains(phase_function(syms, f)))
        {
            bits |= bit;
        }
    }
    if bits & phase_seen::DATA != 0 {
        bits |= phase_seen::DATA_BYTES;
    }
    bits
}

/// Which phases `backend` shows on this kernel, and how.
pub(super) fn visible_phases(backend: Backend, syms: &TextSymbols) -> Vec<PhaseStatus> {
    let funcs = |bit: u32| {
        let mut names: Vec<&str> = PHASE_KPROBES
            .iter()
            .filter(|(_, _, b)| *b == bit)
            .map(|(_, f, _)| phase_function(syms, f))
            .collect();
        names.dedup();
        names
    };
    let row = |phase, visible, how: String| PhaseStatus {
        phase,
        visible,
        how,
    };
    let mut rows = Vec::new();
    match backend {
        Backend::Kprobe | Backend::Fentry => {
            let bits = kprobe_bits(syms);
            for (phase, bit) in [
                ("metadata", phase_seen::METADATA),
                ("data", phase_seen::DATA),
                ("fsync", phase_seen::FSYNC),
                ("link", phase_seen::LINK),
            ] {
                let names = funcs(bit);
                let missing: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|f| !syms.contains(f))
                    .collect();
                rows.push(if bits & bit != 0 {
                    row(phase, true, format!("kprobes on {}", names.join(", ")))
                } else {
                    row(
                        phase,
                        false,
                        format!("not in /proc/kallsyms (inlined?): {}", missing.join(", ")),
                    )
                });
            }
        }
        Backend::Tracepoint => {
            let no_func = "no tracepoint inside the copy-up's function; counted in other";
            rows.push(row("metadata", false, no_func.into()));
            rows.push(row(
                "data",
                false,
                format!("{no_func}; bytes shown (by splice) on ext4 and tmpfs uppers"),
            ));
            rows.push(row(
                "fsync",
                true,
                "ext4 uppers only (ext4_sync_file_enter/exit); null on other uppers".into(),
            ));
            rows.push(row("link", false, no_func.into()));
        }
    }
    rows.push(row(
        "offcpu_block",
        true,
        "sched_switch while in io_schedule (task in_iowait)".into(),
    ));
    rows.push(row(
        "offcpu_other",
        true,
        "sched_switch otherwise (locks, journal waits, run queue)".into(),
    ));
    rows
}

/// Attaches the phase probes of `backend`: `sched_switch` and `sched_process_exit` always, then
/// the function phases.
/// Missing kprobe symbols are skipped (their phase is reported unseen).
pub(super) fn attach(
    ebpf: &mut Ebpf,
    backend: Backend,
    syms: &TextSymbols,
    attached: &mut Vec<String>,
    skipped: &mut Vec<String>,
) -> Result<(), ProbeError> {
    let program_err = |what: String| move |source| ProbeError::Program { what, source };
    let mut raw: Vec<(&str, &str)> = PHASE_RAW_TRACEPOINTS.to_vec();
    if backend == Backend::Tracepoint {
        raw.extend_from_slice(PHASE_TRACEPOINTS);
    }
    for (prog_name, tp) in raw {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(prog_name)
            .expect("program in object")
            .try_into()
            .map_err(program_err(prog_name.into()))?;
        prog.load()
            .map_err(program_err(format!("loading {prog_name}")))?;
        prog.attach(tp)
            .map_err(program_err(format!("attaching raw_tp/{tp}")))?;
        attached.push(format!("raw_tp:{tp}"));
    }
    if backend != Backend::Kprobe {
        return Ok(());
    }
    let bits = kprobe_bits(syms);
    let mut loaded = std::collections::HashSet::new();
    for &(prog_name, func, bit) in PHASE_KPROBES {
        if bits & bit == 0 {
            let func = phase_function(syms, func);
            skipped.push(format!("{func}: phase probe not attachable"));
            continue;
        }
        let func = phase_function(syms, func);
        attached.push(super::attach_kprobe(ebpf, &mut loaded, prog_name, func)?);
    }
    let mut seen: Array<_, u32> = Array::try_from(
        ebpf.map_mut("KP_PHASES_SEEN").expect("map in object"),
    )
    .map_err(|source| ProbeError::Map {
        name: "KP_PHASES_SEEN",
        source,
    })?;
    seen.set(0, bits, 0).map_err(|source| ProbeError::Map {
        name: "KP_PHASES_SEEN",
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 6.1 has both clone functions (overlay calls the inner one), 6.12 only the wrapper.
    #[test]
    fn clone_probe_follows_the_kernel() {
        let k6_1 = &TextSymbols::parse(
            "ffffffff81300000 T do_clone_file_range\nffffffff81300100 T vfs_clone_file_range\n"
                .as_bytes(),
        );
        let k6_12 = &TextSymbols::parse("ffffffff81300100 T vfs_clone_file_range\n".as_bytes());
        assert_eq!(
            phase_function(k6_1, "vfs_clone_file_range"),
            "do_clone_file_range"
        );
        assert_eq!(
            phase_function(k6_12, "vfs_clone_file_range"),
            "vfs_clone_file_range"
        );
        assert_eq!(phase_function(k6_1, "do_splice_direct"), "do_splice_direct");
        let rows = visible_phases(Backend::Kprobe, k6_1);
        let data = rows.iter().find(|r| r.phase == "data").unwrap();
        assert!(!data.visible, "do_splice_direct is missing: {}", data.how);
        assert!(data.how.contains("do_splice_direct"), "{}", data.how);
    }
}
