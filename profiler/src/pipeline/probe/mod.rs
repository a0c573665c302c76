//! Stage 1 of an event's way: choose a backend, load the eBPF object and attach it.
//!
//! [`load_and_attach`] is the only loader: `record`, `demo`, the host tests and the in-VM tests
//! all go through it, so every probe that ships has passed the verifier on every kernel we test.

pub mod btf;
pub mod canary;
mod counters;
mod facts;
mod links;
mod load;
pub mod phases;

use std::{fs, os::unix::fs::MetadataExt as _};

use aya::{
    maps::{Array, HashMap, MapData, MapError, RingBuf},
    programs::{BtfTracePoint, KProbe, ProgramError, RawTracePoint},
    Btf, Ebpf, EbpfLoader,
};
use profiler_common::{counter, Config, InodeKey, USER_MOUNT_SERIAL};

pub use crate::event::Backend;
use crate::host::{mountinfo::OverlayMount, syscalls};
pub use btf::{BtfError, BtfInfo, BtfPaths, FieldSource, KernelBtf, Source};
use facts::{fentry_supported, status, Survey, TextSymbols};
pub use facts::{kernel_facts, BackendStatus, KernelFacts};

/// kprobe attach points: (program, kernel function, required). A missing optional function is
/// reported by `doctor` and loses only that kind of event.
pub const KPROBE_HOOKS: &[(&str, &str, bool)] = &[
    ("cowprof_kp_copy_up_start", "ovl_copy_up_start", true),
    ("cowprof_kp_copy_up_start_ret", "ovl_copy_up_start", true),
    ("cowprof_kp_copy_up_end", "ovl_copy_up_end", true),
    ("cowprof_kp_unlink", "ovl_unlink", false),
    ("cowprof_kp_dir_op_ret", "ovl_unlink", false),
    ("cowprof_kp_rmdir", "ovl_rmdir", false),
    ("cowprof_kp_dir_op_ret", "ovl_rmdir", false),
    ("cowprof_kp_rename", "ovl_rename", false),
    ("cowprof_kp_dir_op_ret", "ovl_rename", false),
    ("cowprof_kp_create", "ovl_create", false),
    ("cowprof_kp_dir_op_ret", "ovl_create", false),
    ("cowprof_kp_mkdir", "ovl_mkdir", false),
    ("cowprof_kp_dir_op_ret", "ovl_mkdir", false),
    ("cowprof_kp_create", "ovl_mknod", false),
    ("cowprof_kp_dir_op_ret", "ovl_mknod", false),
    ("cowprof_kp_create", "ovl_symlink", false),
    ("cowprof_kp_dir_op_ret", "ovl_symlink", false),
    ("cowprof_kp_link", "ovl_link", false),
    ("cowprof_kp_dir_op_ret", "ovl_link", false),
    // New mounts are registered kernel-side when `ovl_fill_super` returns; without it, events
    // are attributed by the overlay's device number (wrong for stacks that live milliseconds).
    ("cowprof_kp_fill_super", "ovl_fill_super", false),
    ("cowprof_kp_fill_super_ret", "ovl_fill_super", false),
];

/// kprobe attach points used only when overlay's types are not in BTF: what overlay does to the
/// upper filesystem inside its operations (see `profiler-ebpf/src/kprobe.rs`). All in vmlinux.
pub const VFS_HOOKS: &[(&str, &str)] = &[
    ("cowprof_kp_vfs_rename", "vfs_rename"),
    ("cowprof_kp_vfs_link", "vfs_link"),
    ("cowprof_kp_vfs_unlink", "vfs_unlink"),
];

/// Tracepoint backend: `tp_btf` programs and their tracepoints (all three fire from
/// `inode_set_ctime_current`/`inode_set_ctime_to_ts` since 6.13).
pub const TP_HOOKS: &[(&str, &str)] = &[
    ("cowprof_tp_ctime_ns_xchg", "ctime_ns_xchg"),
    ("cowprof_tp_ctime_xchg_skip", "ctime_xchg_skip"),
    ("cowprof_tp_set_ctime", "inode_set_ctime_to_ts"),
];

/// Suffix of a program's second copy: the same code loaded as a program of its own and
/// attached right after the first to the same tracepoint. Where the kernel runs tracepoint
/// programs preemptibly it skips a program on a CPU while that program is preempted there
/// (docs/backends.md, "Skipped program runs"); the second copy then does the work.
pub const SECOND_COPY: &str = "_fb";

/// Suffix of a ctime program's third copy: a ctime hit that every copy misses is lost for good
/// (a copy-up temp none of whose updates was seen is never known), where a lost syscall window is
/// mostly recovered later; the ctime programs are also cheap to run and verify.
pub const THIRD_COPY: &str = "_fb2";

/// Suffix of a ctime program's checker, attached after its copies where they are: it counts a
/// hit every copy skipped (`drops.ctime_skipped`), so the loss copies cannot prevent is counted.
pub const CHECKER: &str = "_chk";

/// The copies of `prog` besides itself (where the kernel can skip programs that way). kprobe
/// programs have none: they all share one per-CPU guard (`bpf_prog_active`), so a copy would
/// be skipped with the first (docs/backends.md, "Skipped program runs").
fn extra_copies(prog: &str) -> &'static [&'static str] {
    if is_kprobe_program(prog) {
        &[]
    } else if TP_HOOKS.iter().any(|&(p, _)| p == prog) {
        &[SECOND_COPY, THIRD_COPY]
    } else {
        &[SECOND_COPY]
    }
}

/// `name` is a kprobe or kretprobe program (the kprobe backend's, or a phase probe's).
#[must_use]
pub fn is_kprobe_program(name: &str) -> bool {
    name.starts_with("cowprof_kp_") || name.starts_with("cowprof_ph_")
}

/// Whether a syscall hook's programs are `tp_btf` (the tracepoint backend's `sys_exit`: it
/// reads the syscall number from the registers with a plain load, see `syscalls.rs`) rather than
/// raw tracepoints (`sys_enter`, whose number is an argument, and every hook of the kprobe
/// backend, which also runs on kernels without BTF).
fn tp_btf_syscall_hook(backend: Backend, tp: &str) -> bool {
    backend == Backend::Tracepoint && tp == "sys_exit"
}

/// `name` is a second or third copy, or a checker: a program whose skipped runs lose nothing
/// by themselves.
fn is_extra_copy(name: &str) -> bool {
    name.ends_with(SECOND_COPY) || name.ends_with(THIRD_COPY) || name.ends_with(CHECKER)
}

/// Overlay functions whose presence `doctor` reports (static ones may be inlined).
pub const OVERLAY_SYMBOLS: &[&str] = &[
    "ovl_copy_up_flags",
    "ovl_copy_up_start",
    "ovl_copy_up_end",
    "ovl_copy_up_one",
    "ovl_do_copy_up",
    "ovl_copy_up_tmpfile",
    "ovl_copy_up_workdir",
    "ovl_copy_up_meta_inode_data",
    "ovl_unlink",
    "ovl_rmdir",
    "ovl_rename",
    "ovl_create",
    "ovl_mkdir",
    "ovl_whiteout",
    "ovl_cleanup_and_whiteout",
    "ovl_create_over_whiteout",
    "ovl_fill_super",
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cowprof must run as root (it loads eBPF programs: CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN); rerun with sudo")]
    NotRoot,
    #[error("cowprof lacks {missing} (root, but with capabilities dropped; it loads eBPF programs; CAP_SYS_ADMIN also covers both); rerun with plain sudo, or add {missing} to the process or container")]
    MissingCaps { missing: String },
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("backend {backend} is not usable on this kernel: {reason}; run `cowprof doctor` to see what is")]
    Unavailable { backend: Backend, reason: String },
    #[error("no backend can attach on this kernel ({details}); run `cowprof doctor` for details")]
    NoBackend { details: String },
    #[error("loading the eBPF object failed: {source}")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("the {backend} backend attached on {kernel} but saw {seen} in its start-up check (canary: a private overlay on tmpfs); {hint}")]
    CanaryBlind {
        backend: Backend,
        kernel: String,
        seen: String,
        hint: String,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// What the caller wants traced.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// `None` = the best backend the kernel allows.
    pub backend: Option<Backend>,
    pub btf: BtfPaths,
    pub filter_tgid: u32,
    pub filter_cgroup: u64,
    /// Ring buffer size in bytes (`None` = the object's 4 MiB). A power of two and a multiple
    /// of the page size (the kernel refuses anything else); see [`check_ringbuf_size`].
    pub ringbuf_size: Option<u32>,
    /// Bound of the start-up check (`None` = [`canary::DEFAULT_TIMEOUT`]).
    pub canary_timeout: Option<std::time::Duration>,
    /// No copy-up phases: the phase probes are not attached and no task is armed (less
    /// kernel work per copy-up; events carry no phases).
    pub no_phases: bool,
    /// How many copies of each ctime program to attach where copies are (1–3; `None` = 3), for
    /// tests: with fewer, the checkers have more to count.
    pub ctime_copies: Option<u8>,
}

/// Checks a ring buffer size the way the kernel will (`BPF_MAP_TYPE_RINGBUF` wants a power of
/// two that is a multiple of the page size), so a bad size is a usage error, not a load failure.
pub fn check_ringbuf_size(bytes: u32) -> Result<u32, String> {
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    if bytes.is_power_of_two() && bytes >= page {
        Ok(bytes)
    } else {
        Err(format!(
            "ring buffer size {bytes}: give a power of two of at least the page size ({page} bytes), e.g. 4096 or 4194304"
        ))
    }
}

/// A loaded and attached eBPF object. Dropping it detaches every program (aya owns the links),
/// so nothing stays attached after cowprof exits, however it exits.
pub struct Probe {
    ebpf: Ebpf,
    pub backend: Backend,
    /// Kernel functions or tracepoints actually attached.
    pub attached: Vec<String>,
    /// Optional hooks skipped, with the reason.
    pub skipped: Vec<String>,
    /// Keys already registered in the tracepoint backend's maps.
    registered: std::collections::HashSet<u32>,
    /// eBPF-side diagnostics (aya-log), forwarded to `log` (`-v` / `RUST_LOG`).
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The start-up check: what it saw, or why it could not run.
    pub canary: Result<canary::CanaryReport, String>,
    /// The kernel side's loss counters, mapped (read without a `bpf()` call).
    counters: counters::Counters,
    /// Counters at the end of the start-up check: [`Probe::counters`] counts from there.
    counters_base: [u64; counter::COUNT as usize],
    /// Each program's skipped runs at the end of the start-up check (see
    /// [`Probe::recursion_misses_by_program`]).
    misses_base: std::collections::HashMap<String, u64>,
    /// The second and third copies attached (see [`SECOND_COPY`], [`THIRD_COPY`]).
    second_copies: Vec<String>,
    /// Overlay's types were found (kprobe backend: only then is a directory operation armed
    /// only where it makes or replaces a whiteout).
    ovl_types: bool,
}

/// The first kernel whose tracepoint callbacks run preemptibly (under SRCU-fast, with only
/// migration disabled) instead of with preemption disabled: from here a preempted program
/// makes the kernel skip it for every other task on that CPU (docs/backends.md, "Skipped
/// program runs").
const PREEMPTIBLE_TRACEPOINTS: (u32, u32) = (7, 0);

/// Whether the syscall and ctime programs get second copies: on kernels from
/// [`PREEMPTIBLE_TRACEPOINTS`] on, or as `COWPROF_SECOND_COPIES` (`1` or `0`) says.
fn two_copies_wanted(release: &str, forced: Option<&str>) -> bool {
    match forced {
        Some("1") => return true,
        Some("0") => return false,
        _ => {}
    }
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= PREEMPTIBLE_TRACEPOINTS,
        _ => false,
    }
}

/// The programs the kernel skipped runs of in every copy (from
/// [`Probe::recursion_misses_by_program`]): the condition under which a hit can be lost
/// without a trace (docs/backends.md, "Skipped program runs").
#[must_use]
pub fn all_copies_skipped(skipped: &[(String, u64)]) -> Vec<String> {
    skipped
        .iter()
        .filter(|(p, _)| {
            !is_extra_copy(p)
                && extra_copies(p).iter().all(|suffix| {
                    skipped
                        .iter()
                        .any(|(q, _)| q.strip_suffix(suffix) == Some(p.as_str()))
                })
        })
        .map(|(p, _)| p.clone())
        .collect()
}

/// Each loaded program's `recursion_misses` so far (from its fdinfo).
fn recursion_misses_of(ebpf: &Ebpf) -> Vec<(String, u64)> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let mut out = Vec::new();
    for (name, prog) in ebpf.programs() {
        let Ok(fd) = prog.fd() else { continue };
        let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
        let Ok(info) = fs::read_to_string(path) else {
            continue;
        };
        if let Some(n) = parse_recursion_misses(&info) {
            out.push((name.to_owned(), n));
        }
    }
    out
}

/// `recursion_misses` from a program's fdinfo (absent before 5.12).
#[must_use]
pub fn parse_recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Probe {
    /// The ring buffer; take it before events can flow (the reader starts before probes emit
    /// in `record`, since attach happens after this in `load_and_attach`'s caller order).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.ebpf.take_map("EVENTS").ok_or(ProbeError::Map {
            name: "EVENTS",
            source: aya::maps::MapError::InvalidName {
                name: "EVENTS".into(),
            },
        })?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "EVENTS",
            source,
        })
    }

    /// The aya-log reader; `record` polls it next to the event ring buffer.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Sum over CPUs of each counter in `counter::*`, since the start-up check.
    pub fn counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = self.counters_total();
        for (c, base) in out.iter_mut().zip(self.counters_base) {
            *c = c.saturating_sub(base);
        }
        out
    }

    /// Per program (by name), the runs the kernel skipped since the start-up check because
    /// that program was already running on the CPU (`recursion_misses` in the program's
    /// fdinfo; see docs/backends.md, "Skipped program runs"). Only programs with skips are
    /// listed, by name.
    pub fn recursion_misses_by_program(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .recursion_misses_total()
            .into_iter()
            .map(|(name, n)| {
                let base = self.misses_base.get(&name).copied().unwrap_or(0);
                (name, n.saturating_sub(base))
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        out.sort();
        out
    }

    /// Every attached program with a duplicate of its fd and its skipped runs at the end of
    /// the start-up check: what `cowprof_program_runs_skipped_total` reads at each scrape.
    pub fn program_fds(&self) -> Vec<crate::pipeline::metrics::skipped::Program> {
        use std::os::fd::AsFd as _;
        let mut out: Vec<_> = self
            .ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let fd = prog.fd().ok()?.as_fd().try_clone_to_owned().ok()?;
                let base = self.misses_base.get(name).copied().unwrap_or(0);
                Some((name.to_owned(), fd, base))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// One line naming every program the kernel skipped runs of (those a second copy stood
    /// in for marked) and the syscall windows lost; `None` when no run was skipped, or only
    /// second copies' runs were (their first copies ran those hits: nothing could be lost).
    pub fn recursion_note(&self) -> Option<String> {
        let by_program = self.recursion_misses_by_program();
        if by_program.iter().all(|(p, _)| is_extra_copy(p)) {
            return None;
        }
        let list: Vec<String> = by_program
            .iter()
            .map(|(p, n)| {
                let copies = extra_copies(p)
                    .iter()
                    .filter(|s| self.second_copies.contains(&format!("{p}{s}")))
                    .count();
                match copies {
                    0 => format!("{p} {n}"),
                    1 => format!("{p} {n} (its second copy stood in)"),
                    _ => format!("{p} {n} (its other copies stood in)"),
                }
            })
            .collect();
        let counters = self.counters();
        // kprobe programs share one guard per CPU with every bpf() map operation of any
        // process, which 7.x can preempt while it holds it.
        let kprobes = if by_program.iter().any(|(p, _)| is_kprobe_program(p)) {
            format!(
                "; kprobe programs skipped (another BPF program, or a bpf() map operation of any process, \
                 held their CPU): copy-ups and whiteouts lost to it: {} (drops.unpaired), and a skipped \
                 ovl_fill_super leaves its mount unknown or stale",
                counters[counter::UNPAIRED as usize] + self.unfinished_ops()
            )
        } else {
            String::new()
        };
        Some(format!(
            "the kernel skipped runs of programs already running on their CPU: {}; syscall windows lost to it: {} (drops.recursion){kprobes}",
            list.join(", "),
            counters[counter::WINDOWS_LOST as usize]
        ))
    }

    /// One line naming the kprobes and kretprobes whose hits the kernel did not run our
    /// programs for (Linux 6.7+ reports it; see `links`); `None` when it missed none.
    pub fn kprobe_missed_note(&self) -> Option<String> {
        let all = links::kprobe_missed();
        log::debug!("kprobe links and their missed hits: {all:?}");
        let missed: Vec<String> = all
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(f, n)| format!("{f} {n}"))
            .collect();
        (!missed.is_empty()).then(|| {
            format!(
                "the kernel missed hits of kprobes: {}; copy-ups and whiteouts lost to it: {} (drops.unpaired)",
                missed.join(", "),
                self.counters()[counter::UNPAIRED as usize] + self.unfinished_ops()
            )
        })
    }

    /// kprobe backend, at the end of a recording: the operations whose start probe ran and
    /// whose end never did (each end removes its start): copy-ups, and with overlay's types the
    /// directory operations that make or replace a whiteout. None of them was reported; a
    /// thread's next start counts its own (`counter::UNPAIRED`), these are the last ones.
    pub fn unfinished_ops(&self) -> u64 {
        if self.backend != Backend::Kprobe {
            return 0;
        }
        let count = |name: &str| -> u64 {
            self.ebpf
                .map(name)
                .and_then(|m| {
                    HashMap::<_, u32, [u8; profiler_common::PENDING_SIZE]>::try_from(m).ok()
                })
                .map_or(0, |m| m.keys().flatten().count() as u64)
        };
        count("COPY_UPS") + if self.ovl_types { count("DIR_OPS") } else { 0 }
    }

    fn recursion_misses_total(&self) -> Vec<(String, u64)> {
        recursion_misses_of(&self.ebpf)
    }

    fn counters_total(&self) -> [u64; counter::COUNT as usize] {
        self.counters.read(&self.ebpf)
    }

    /// Tells the kernel side about overlay mounts it did not see being made (work dirs, upper
    /// roots, upper filesystems), under a user-space serial: the tracepoint backend finds its
    /// operations through them, the kprobe backend its events' mount. Idempotent; called at
    /// start and whenever mountinfo changes.
    pub fn register_mounts(&mut self, mounts: &[OverlayMount]) -> Result<(), ProbeError> {
        if !matches!(self.backend, Backend::Tracepoint | Backend::Kprobe) {
            return Ok(());
        }
        for m in mounts {
            if !self.registered.insert(m.mount_id) {
                continue;
            }
            let (Some(upper), Some(work)) = (&m.upperdir, &m.workdir) else {
                continue;
            };
            let Some((kdev, upper_ino)) = crate::host::mountinfo::upper_root_key(upper) else {
                continue;
            };
            let key = |ino| InodeKey {
                dev: kdev,
                _pad: 0,
                ino,
            };
            let mut put = |name: &'static str, k: InodeKey| -> Result<(), ProbeError> {
                let mut map: HashMap<_, InodeKey, u32> =
                    HashMap::try_from(self.ebpf.map_mut(name).expect("map in object"))
                        .map_err(|source| ProbeError::Map { name, source })?;
                // The kernel side registers the mounts it sees being made, with its own
                // serial, before their first event: that entry stays. A key nobody holds is
                // added only if it is still free when it is written (`BPF_NOEXIST`): between
                // the read and the write the kernel side may register a new mount under it
                // (the device number and the upper root's inode number of a fresh tmpfs come
                // back as soon as the last one is unmounted), and this mount, read from
                // mountinfo a moment before, may be the one that is gone.
                let flags = match map.get(&k, 0) {
                    Ok(serial) if serial & USER_MOUNT_SERIAL == 0 => return Ok(()),
                    Ok(_) => 0,
                    Err(_) => BPF_NOEXIST,
                };
                match map.insert(k, USER_MOUNT_SERIAL | m.mount_id, flags) {
                    Err(MapError::SyscallError(e))
                        if flags == BPF_NOEXIST
                            && e.io_error.raw_os_error() == Some(libc::EEXIST) =>
                    {
                        Ok(())
                    }
                    r => r.map_err(|source| ProbeError::Map { name, source }),
                }
            };
            // Overlay makes its temps in `<workdir>/work`, or in `<workdir>/index` with
            // index=on (the index dir then serves as the copy-up work dir).
            for sub in ["work", "index"] {
                if let Ok(md) = fs::metadata(work.join(sub)) {
                    put("WORKDIRS", key(md.ino()))?;
                }
            }
            put("UPPER_ROOTS", key(upper_ino))?;
            let mut devs: HashMap<_, u32, u32> =
                HashMap::try_from(self.ebpf.map_mut("UPPER_DEVS").expect("map in object"))
                    .map_err(|source| ProbeError::Map {
                        name: "UPPER_DEVS",
                        source,
                    })?;
            devs.insert(kdev, 1, 0).map_err(|source| ProbeError::Map {
                name: "UPPER_DEVS",
                source,
            })?;
        }
        Ok(())
    }
}

/// `bpf_map_update_elem`'s flag: add the key only if it is absent.
const BPF_NOEXIST: u64 = 1;

/// The capabilities loading and attaching needs that this process lacks (effective set, from
/// /proc/self/status), e.g. `CAP_PERFMON,CAP_BPF`; `None` when it has them. The kernel accepts
/// `CAP_SYS_ADMIN` in place of either (`bpf_capable()`, `perfmon_capable()`), which is also all
/// that kernels older than 5.8 know.
fn missing_caps() -> Option<String> {
    const SYS_ADMIN: u32 = 21;
    const NEEDED: &[(u32, &str)] = &[(38, "CAP_PERFMON"), (39, "CAP_BPF")];
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())?;
    if eff & (1u64 << SYS_ADMIN) != 0 {
        return None;
    }
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, _)| *bit > last || eff & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    (!missing.is_empty()).then(|| missing.join(","))
}

/// Chooses a backend, loads the object, fills its configuration and attaches.
#[expect(
    clippy::too_many_lines,
    reason = "the one load-and-attach path of every backend: its steps share the loaded object and the attach log"
)]
pub fn load_and_attach(opts: &ProbeOptions) -> Result<Probe, ProbeError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ProbeError::NotRoot);
    }
    if let Some(missing) = missing_caps() {
        return Err(ProbeError::MissingCaps { missing });
    }
    // Where attaching spends its time (`RUST_LOG=cowprof=debug`): see docs/performance.md.
    let mut phase = std::time::Instant::now();
    let mut lap = |what: &str| {
        log::debug!(
            "attach phase {what}: {:?} (rss {} KiB: anon {}, file {}; peak {} KiB)",
            phase.elapsed(),
            own_status_kib("VmRSS").unwrap_or(0),
            own_status_kib("RssAnon").unwrap_or(0),
            own_status_kib("RssFile").unwrap_or(0),
            own_status_kib("VmHWM").unwrap_or(0)
        );
        phase = std::time::Instant::now();
    };
    // aya's `EbpfLoader::new()` parses the kernel's BTF whatever the loader is told later
    // (about 23 MiB at its peak, freed by `btf(None)`): made first, while the least else is in
    // memory, since that parse is the collector's peak.
    let mut aya_loader = EbpfLoader::new();
    aya_loader.btf(None);
    release_freed_memory();
    lap("loader (aya's kernel BTF parse, dropped)");
    let kbtf = KernelBtf::load(&opts.btf)?;
    let offsets = kbtf.offsets()?;
    let ovl_types = kbtf.has_overlay_types();
    lap("btf (offsets)");
    let syms = TextSymbols::read();
    lap("kallsyms");
    let survey = Survey::new(Some(&kbtf), None, &syms);
    let backend = if let Some(b) = opts.backend {
        let st = if b == Backend::Fentry {
            status(b, fentry_supported(&opts.btf, Some(&kbtf)))
        } else {
            survey.status(b)
        };
        if !st.usable {
            return Err(ProbeError::Unavailable {
                backend: b,
                reason: st.reason,
            });
        }
        b
    } else {
        let all = [
            survey.status(Backend::Kprobe),
            survey.status(Backend::Tracepoint),
        ];
        all.iter()
            .find(|s| s.usable)
            .map(|s| s.backend)
            .ok_or_else(|| ProbeError::NoBackend {
                details: all
                    .iter()
                    .map(|s| format!("{}: {}", s.backend, s.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            })?
    };
    lap("survey");
    let survey_other_usable = match backend {
        Backend::Tracepoint => survey.status(Backend::Kprobe).usable,
        _ => survey.status(Backend::Tracepoint).usable,
    };
    // The parsed BTF is large and not needed past this point, nor are the kernel's symbols
    // for the tracepoint backend (only kprobes look them up).
    drop(survey);
    drop(kbtf);
    let syms = if backend == Backend::Tracepoint {
        drop(syms);
        TextSymbols::default()
    } else {
        syms
    };
    release_freed_memory();
    lap("freed");

    // No kernel BTF for the loader (`btf(None)` above): it would only serve CO-RE relocations,
    // and the object has none (the programs read kernel structures at the offsets `Config`
    // carries, resolved above from BTF by btf-rs).
    let mut ebpf = {
        if let Some(bytes) = opts.ringbuf_size {
            aya_loader.map_max_entries("EVENTS", bytes);
        }
        // The same offsets as constants the verifier knows: the ctime programs load their
        // inode's fields directly (`field` in profiler-ebpf's common.rs).
        aya_loader.override_global("TP_OFFSETS", &offsets, true);
        aya_loader
            .load(crate::EBPF_OBJECT)
            .map_err(|source| ProbeError::Load { source })?
    };
    drop(aya_loader);
    release_freed_memory();
    lap("object (maps)");
    let two_copies = two_copies_wanted(
        &fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default(),
        std::env::var("COWPROF_SECOND_COPIES").ok().as_deref(),
    );
    let ctime_copies = opts.ctime_copies.unwrap_or(3).clamp(1, 3);
    if two_copies {
        log::debug!(
            "second copies of the syscall programs; ctime programs: {ctime_copies} copies and a checker (tracepoint backend)"
        );
    } else {
        log::debug!("no second copies of the syscall and ctime programs");
    }
    let cfg = Config {
        self_tgid: std::process::id(),
        filter_tgid: opts.filter_tgid,
        filter_cgroup: opts.filter_cgroup,
        flags: if ovl_types {
            profiler_common::config_flags::OVL_TYPES
        } else {
            0
        } | if two_copies {
            profiler_common::config_flags::TWO_COPIES
        } else {
            0
        } | if opts.no_phases {
            profiler_common::config_flags::NO_PHASES
        } else {
            0
        } | if two_copies && backend == Backend::Tracepoint {
            u32::from(ctime_copies) << profiler_common::config_flags::CTIME_COPIES_SHIFT
        } else {
            0
        },
        _pad: 0,
        off: offsets,
    };
    {
        let mut arr: Array<_, Config> =
            Array::try_from(ebpf.map_mut("CONFIG").expect("map in object")).map_err(|source| {
                ProbeError::Map {
                    name: "CONFIG",
                    source,
                }
            })?;
        arr.set(0, cfg, 0).map_err(|source| ProbeError::Map {
            name: "CONFIG",
            source,
        })?;
        let mut classes: Array<_, u8> = Array::try_from(
            ebpf.map_mut("SYSCALLS").expect("map in object"),
        )
        .map_err(|source| ProbeError::Map {
            name: "SYSCALLS",
            source,
        })?;
        for &(nr, _, class) in syscalls::TRACKED {
            classes
                .set(nr, class, 0)
                .map_err(|source| ProbeError::Map {
                    name: "SYSCALLS",
                    source,
                })?;
        }
    }

    let mut attached = Vec::new();
    let mut skipped = Vec::new();
    let mut second_copies = Vec::new();
    let program_err = |what: String| {
        move |source| ProbeError::Program {
            what: what.clone(),
            source,
        }
    };
    // The syscall programs, each with its second copy where there is one.
    let (sys_enter, sys_exit) = if backend == Backend::Tracepoint {
        ("cowprof_sys_enter_tp", "cowprof_sys_exit_tp")
    } else {
        ("cowprof_sys_enter", "cowprof_sys_exit")
    };
    let sys_copies: Vec<(String, &str)> = [(sys_enter, "sys_enter"), (sys_exit, "sys_exit")]
        .into_iter()
        .flat_map(|(p, tp)| {
            let second = two_copies.then(|| (format!("{p}{SECOND_COPY}"), tp));
            std::iter::once((p.to_owned(), tp)).chain(second)
        })
        .collect();
    // The ctime programs' copies, then (where copies are) each one's checker, which must run
    // after them (tracepoint backend).
    let tp_copies: Vec<(String, &str)> = TP_HOOKS
        .iter()
        .flat_map(|&(p, tp)| {
            let extra = extra_copies(p)
                .iter()
                .take(usize::from(ctime_copies).saturating_sub(1))
                .filter(|_| two_copies)
                .chain(two_copies.then_some(&CHECKER))
                .map(move |s| (format!("{p}{s}"), tp));
            std::iter::once((p.to_owned(), tp)).chain(extra)
        })
        .collect();
    // Every program of the backend is loaded (verified) first, on several cores
    // (`load.rs`); attaching below keeps the order.
    let sys_load = sys_copies.iter().map(|(p, tp)| {
        let kind = if tp_btf_syscall_hook(backend, tp) {
            load::Kind::TpBtf(tp)
        } else {
            load::Kind::RawTp
        };
        (p.clone(), kind)
    });
    let mut loaded = std::collections::HashSet::new();
    match backend {
        Backend::Kprobe => {
            let mut wanted: Vec<(String, load::Kind<'_>)> = Vec::new();
            let kprobes = KPROBE_HOOKS
                .iter()
                .filter(|&&(_, func, _)| syms.contains(func))
                .map(|&(p, _, _)| p)
                .chain(VFS_HOOKS.iter().filter(|_| !ovl_types).map(|&(p, _)| p));
            for p in kprobes {
                if loaded.insert(p) {
                    wanted.push((p.to_owned(), load::Kind::KProbe));
                }
            }
            wanted.extend(sys_load);
            load::load_all(&mut ebpf, &wanted, None)?;
        }
        Backend::Tracepoint => {
            let btf =
                Btf::parse_file(&opts.btf.vmlinux, aya::Endianness::default()).map_err(|e| {
                    ProbeError::Unavailable {
                        backend,
                        reason: format!("BTF: {e}"),
                    }
                })?;
            lap("btf (tp_btf targets)");
            let wanted: Vec<(String, load::Kind<'_>)> = tp_copies
                .iter()
                .map(|(p, tp)| (p.clone(), load::Kind::TpBtf(tp)))
                .chain(sys_load)
                .collect();
            load::load_all(&mut ebpf, &wanted, Some(&btf))?;
        }
        Backend::Fentry => {}
    }
    // What the loading threads allocated is freed in their own heaps (glibc), which the
    // collector would not reuse.
    release_freed_memory();
    lap("verify, every program of the backend");
    match backend {
        Backend::Kprobe => {
            for &(prog_name, func, required) in KPROBE_HOOKS {
                if !syms.contains(func) {
                    skipped.push(format!("{func}: not in /proc/kallsyms"));
                    if required {
                        return Err(ProbeError::Unavailable {
                            backend,
                            reason: format!("{func} is missing"),
                        });
                    }
                    continue;
                }
                attached.push(attach_kprobe(&mut ebpf, &mut loaded, prog_name, func)?);
            }
            // Without overlay's types, what overlay does to the upper filesystem tells what
            // it did (the survey checked these exist).
            for &(prog_name, func) in VFS_HOOKS.iter().filter(|_| !ovl_types) {
                attached.push(attach_kprobe(&mut ebpf, &mut loaded, prog_name, func)?);
            }
        }
        Backend::Tracepoint => {
            for (prog_name, tp) in &tp_copies {
                let prog_name = prog_name.as_str();
                let prog: &mut BtfTracePoint = ebpf
                    .program_mut(prog_name)
                    .expect("program in object")
                    .try_into()
                    .map_err(program_err(prog_name.into()))?;
                prog.attach()
                    .map_err(program_err(format!("attaching tp_btf/{tp}")))?;
                lap(&format!("attach {prog_name}"));
                if is_extra_copy(prog_name) {
                    second_copies.push(prog_name.to_owned());
                } else {
                    attached.push(format!("tp_btf:{tp}"));
                }
            }
        }
        Backend::Fentry => {
            return Err(ProbeError::Unavailable {
                backend,
                reason: "not implemented yet".into(),
            });
        }
    }
    if !opts.no_phases {
        phases::attach(&mut ebpf, backend, &syms, &mut attached, &mut skipped)?;
        lap("attach phase probes");
    }
    // Syscall windows last: a window opened before the operation probes existed is harmless,
    // but operations seen without their window would lose their syscall.
    for (prog_name, tp) in &sys_copies {
        let prog_name = prog_name.as_str();
        let program = ebpf.program_mut(prog_name).expect("program in object");
        let hook = if tp_btf_syscall_hook(backend, tp) {
            let prog: &mut BtfTracePoint =
                program.try_into().map_err(program_err(prog_name.into()))?;
            prog.attach()
                .map_err(program_err(format!("attaching tp_btf/{tp}")))?;
            format!("tp_btf:{tp}")
        } else {
            let prog: &mut RawTracePoint =
                program.try_into().map_err(program_err(prog_name.into()))?;
            prog.attach(tp)
                .map_err(program_err(format!("attaching raw_tp/{tp}")))?;
            format!("raw_tp:{tp}")
        };
        lap(&format!("attach {prog_name}"));
        if is_extra_copy(prog_name) {
            second_copies.push(prog_name.to_owned());
        } else {
            attached.push(hook);
        }
    }
    // Fails only if the object has no log call sites; diagnostics are optional either way.
    let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
    // A check that missed an operation while the kernel skipped every copy of one of the
    // programs (kprobe programs beside another process's bpf() calls on 7.x; see
    // docs/backends.md, "Missed kprobes") proves nothing about the hooks: it runs again.
    let mut attempt = 1;
    // The programs whose every copy the kernel skipped in the last attempt (named in the error).
    let mut last_lost: Vec<String> = Vec::new();
    let checked = loop {
        let before: std::collections::HashMap<String, u64> =
            recursion_misses_of(&ebpf).into_iter().collect();
        let r = canary::run(
            &mut ebpf,
            backend,
            cfg,
            opts.canary_timeout.unwrap_or(canary::DEFAULT_TIMEOUT),
        );
        if let Ok(report) = &r {
            let skipped: Vec<(String, u64)> = recursion_misses_of(&ebpf)
                .into_iter()
                .map(|(p, n)| {
                    let d = n.saturating_sub(before.get(&p).copied().unwrap_or(0));
                    (p, d)
                })
                .filter(|&(_, d)| d > 0)
                .collect();
            let lost_to = all_copies_skipped(&skipped);
            last_lost.clone_from(&lost_to);
            if !report.ok() && !lost_to.is_empty() && attempt < canary::ATTEMPTS_ON_SKIPS {
                log::warn!(
                    "start-up check saw {} while the kernel skipped every copy of {}: attempt {} of {}",
                    report.seen(),
                    lost_to.join(", "),
                    attempt + 1,
                    canary::ATTEMPTS_ON_SKIPS
                );
                attempt += 1;
                continue;
            }
        }
        break r;
    };
    let canary = match checked {
        Ok(report) if report.ok() => Ok(report),
        Ok(report) => {
            let other = if backend == Backend::Tracepoint {
                Backend::Kprobe
            } else {
                Backend::Tracepoint
            };
            let hint = if survey_other_usable {
                format!("try --backend {other} or run `cowprof doctor`")
            } else {
                "run `cowprof doctor`".to_owned()
            };
            return Err(ProbeError::CanaryBlind {
                backend,
                kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                seen: if last_lost.is_empty() {
                    report.seen()
                } else {
                    format!(
                        "{} while the kernel skipped every copy of {} ({attempt} attempts)",
                        report.seen(),
                        last_lost.join(", ")
                    )
                },
                hint,
            });
        }
        Err(e) => {
            log::warn!("{e}; recording without it");
            Err(e.to_string())
        }
    };
    canary::detach_for_test(&mut ebpf)
        .map_err(|reason| ProbeError::Unavailable { backend, reason })?;
    let counters = counters::Counters::map(&ebpf);
    let mut probe = Probe {
        counters,
        ebpf,
        backend,
        attached,
        skipped,
        registered: std::collections::HashSet::new(),
        logger,
        canary,
        ovl_types,
        counters_base: [0; counter::COUNT as usize],
        misses_base: std::collections::HashMap::new(),
        second_copies,
    };
    probe.counters_base = probe.counters_total();
    probe.misses_base = probe.recursion_misses_total().into_iter().collect();
    Ok(probe)
}
/// Loads `prog_name` (once: one program may be attached to several functions) and attaches it
/// to the kernel function `func`; returns how `-vv` and `doctor` name the attachment.
pub(super) fn attach_kprobe<'a>(
    ebpf: &mut Ebpf,
    loaded: &mut std::collections::HashSet<&'a str>,
    prog_name: &'a str,
    func: &str,
) -> Result<String, ProbeError> {
    let program_err = |what: String| move |source| ProbeError::Program { what, source };
    let prog: &mut KProbe = ebpf
        .program_mut(prog_name)
        .expect("program in object")
        .try_into()
        .map_err(program_err(prog_name.into()))?;
    let start = std::time::Instant::now();
    if loaded.insert(prog_name) {
        prog.load()
            .map_err(program_err(format!("loading {prog_name}")))?;
    }
    let verified = start.elapsed();
    prog.attach(func, 0)
        .map_err(program_err(format!("attaching {prog_name} to {func}")))?;
    log::debug!(
        "kprobe {prog_name} on {func}: load {verified:?}, attach {:?}",
        start.elapsed().saturating_sub(verified)
    );
    let kind = if prog_name.ends_with("_ret") {
        "kretprobe"
    } else {
        "kprobe"
    };
    Ok(format!("{kind}:{func}"))
}

/// Gives the memory freed so far back to the kernel. glibc keeps freed heap memory for reuse;
/// the parses that follow (the object, the `tp_btf` targets' BTF) allocate large blocks of their
/// own and would not reuse it, so without this the collector's peak RSS held both (musl returns
/// freed memory by itself).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`: the peak so far).
fn own_status_kib(field: &str) -> Option<u64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_copies_from_7_0_or_when_forced() {
        assert!(!two_copies_wanted("6.18.0-cowprof\n", None));
        assert!(!two_copies_wanted("6.1.0-42-cloud-amd64", None));
        assert!(!two_copies_wanted("6.12.74+deb13-cloud-amd64", None));
        assert!(two_copies_wanted("7.0.0", None));
        assert!(two_copies_wanted("7.3.4+bpo-cloud-amd64\n", None));
        assert!(two_copies_wanted("10.1", None));
        assert!(!two_copies_wanted("garbage", None));
        assert!(two_copies_wanted("6.18.0", Some("1")));
        assert!(!two_copies_wanted("7.3.4", Some("0")));
        assert!(
            two_copies_wanted("7.3.4", Some("yes")),
            "unknown values leave the default"
        );
    }

    #[test]
    fn both_copies() {
        let s = |v: &[(&str, u64)]| {
            v.iter()
                .map(|&(p, n)| (p.to_string(), n))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            all_copies_skipped(&s(&[
                ("cowprof_sys_enter_tp", 3),
                ("cowprof_sys_enter_tp_fb", 1),
                ("cowprof_sys_exit_tp", 2),
                ("cowprof_tp_ctime_xchg_skip", 5),
                ("cowprof_tp_ctime_xchg_skip_fb", 2),
                ("cowprof_tp_set_ctime", 1),
                ("cowprof_tp_set_ctime_fb", 4),
                ("cowprof_tp_set_ctime_fb2", 4),
                ("cowprof_tp_set_ctime_chk", 2),
                ("cowprof_tp_ctime_ns_xchg_chk", 3),
                ("cowprof_kp_copy_up_start", 1),
            ])),
            vec![
                "cowprof_sys_enter_tp".to_string(),
                "cowprof_tp_set_ctime".to_string(),
                "cowprof_kp_copy_up_start".to_string()
            ],
            "a ctime program counts only when its third copy was skipped too; a skipped checker \
             is no program of its own; a kprobe program has no copies"
        );
        assert!(all_copies_skipped(&[]).is_empty());
    }

    #[test]
    fn recursion_misses_from_fdinfo() {
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t17\nprog_jited:\t1\n\
                    run_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t12\nverified_insns:\t95\n";
        assert_eq!(parse_recursion_misses(info), Some(12));
        assert_eq!(parse_recursion_misses("pos:\t0\nprog_type:\t17\n"), None);
    }
}
