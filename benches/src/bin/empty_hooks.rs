//! The floor under any tracer on given hooks: an empty BPF program (`r0 = 0; exit`) attached to
//! each of them, until SIGINT or SIGTERM.
//!
//! Used as `copyup_storm --peer-cmd "empty_hooks" --peer-ready attached`: in the same run as
//! `cowprof record`, what attaching *anything* to a backend's hooks costs the workload (the
//! kernel's dispatch to a BPF program, a kprobe's trap, and with `--bpf-stats` the statistics' own
//! clock reads), so cowprof's overhead can be read against what no program on those hooks can go
//! below. A raw tracepoint is dispatched exactly as a `tp_btf` program on the same tracepoint (both
//! run from the tracepoint's `bpf_trace_run*` stub); only the verifier's view of the arguments
//! differs.
//!
//! ```text
//! empty_hooks [HOOK ...]            # default: the tracepoint backend's hooks, phases included
//! empty_hooks --kprobe [--no-phases] # the kprobe backend's hooks (`record --backend kprobe`)
//! ```
//!
//! A HOOK is a tracepoint name (a raw tracepoint), `kprobe:FUNCTION` or `kretprobe:FUNCTION`.
//! Prints `attached N hooks` once every program is attached; exits 0 when stopped, 1 when a
//! program cannot be loaded or attached (the line names the hook and the kernel's error). Closing
//! the file descriptors at exit detaches everything. The hook lists: `cowprof_benches::floor`.

use cowprof_benches::floor;
use std::{ffi::CString, io, os::fd::FromRawFd as _, os::fd::OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
/// `_IOW('$', 8, u32)` and `_IO('$', 0)` (uapi `linux/perf_event.h`).
const PERF_EVENT_IOC_SET_BPF: u32 = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: u32 = 0x2400;
const PERF_ATTR_SIZE_VER1: u32 = 72;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// `union bpf_attr` or `struct perf_event_attr`, as large as either needs here; unused fields stay
/// zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &Attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid `bpf_attr` of the size given; the kernel reads only it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const Attr,
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads `r0 = 0; exit` as a program of type `prog_type` named `name` (15 characters kept).
fn load_empty(prog_type: u32, name: &str) -> io::Result<OwnedFd> {
    // mov64 r0, 0; exit
    let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), 0x95];
    let license = c"GPL";
    let mut a = Attr([0; 128]);
    a.put_u32(0, prog_type);
    a.put_u32(4, insns.len() as u32);
    a.put_u64(8, insns.as_ptr() as u64);
    a.put_u64(16, license.as_ptr() as u64);
    let n = name.len().min(15);
    a.0[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    bpf(BPF_PROG_LOAD, &a)
}

fn attach(prog: &OwnedFd, hook: &str) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let name = CString::new(hook).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut a = Attr([0; 128]);
    a.put_u64(0, name.as_ptr() as u64);
    a.put_u32(8, prog.as_raw_fd() as u32);
    bpf(BPF_RAW_TRACEPOINT_OPEN, &a)
}

/// The kernel's dynamic PMU type for kprobes (`/sys/bus/event_source/devices/kprobe/type`).
fn kprobe_pmu_type() -> io::Result<u32> {
    std::fs::read_to_string("/sys/bus/event_source/devices/kprobe/type")?
        .trim()
        .parse()
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Attaches `prog` (a kprobe program) to `func`'s entry or return through a perf kprobe event, as
/// libbpf does: the event is opened on CPU 0 for every process, and the kernel runs the program
/// wherever the probe is hit.
fn attach_kprobe(prog: &OwnedFd, func: &str, ret: bool, pmu: u32) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let name = CString::new(func).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // `struct perf_event_attr` up to `config2` (`PERF_ATTR_SIZE_VER1`, 72 bytes); unused fields zero.
    // At 0 `type`, 4 `size`, 8 `config` (bit 0: a retprobe, as
    // `/sys/bus/event_source/devices/kprobe/format/retprobe` says), 56 `config1` (the function's
    // name) and 64 `config2` (the offset in it: 0).
    let mut attr = Attr([0; 128]);
    attr.put_u32(0, pmu);
    attr.put_u32(4, PERF_ATTR_SIZE_VER1);
    attr.put_u64(8, u64::from(ret));
    attr.put_u64(56, name.as_ptr() as u64);
    attr.put_u64(64, 0);
    // SAFETY: `attr` is a valid perf_event_attr of the size it gives; the kernel copies the name
    // while opening.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const Attr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: plain ioctls on the event just opened, the program's fd as the argument.
    unsafe {
        if libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as libc::Ioctl,
            prog.as_raw_fd(),
        ) != 0
            || libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE as libc::Ioctl, 0) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(event)
}

/// Loads an empty program for `hook` and attaches it.
fn hook_up(i: usize, hook: &str, pmu: &mut Option<u32>) -> Result<(OwnedFd, OwnedFd), String> {
    let probe = hook
        .strip_prefix("kprobe:")
        .map(|f| (f, false))
        .or_else(|| hook.strip_prefix("kretprobe:").map(|f| (f, true)));
    let prog_type = if probe.is_some() {
        BPF_PROG_TYPE_KPROBE
    } else {
        BPF_PROG_TYPE_RAW_TRACEPOINT
    };
    let prog = load_empty(prog_type, &format!("empty_{i}"))
        .map_err(|e| format!("loading an empty program for {hook} failed: {e} (run as root)"))?;
    let link = match probe {
        Some((func, ret)) => {
            let pmu = match *pmu {
                Some(t) => t,
                None => {
                    let t = kprobe_pmu_type().map_err(|e| {
                        format!("this kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe/type: {e})")
                    })?;
                    *pmu = Some(t);
                    t
                }
            };
            attach_kprobe(&prog, func, ret, pmu).map_err(|e| {
                format!("attaching to {hook} failed: {e} (is {func} in this kernel's /proc/kallsyms?)")
            })?
        }
        None => attach(&prog, hook).map_err(|e| {
            format!("attaching to tracepoint {hook} failed: {e} (is it in this kernel's /sys/kernel/tracing/available_events?)")
        })?,
    };
    Ok((prog, link))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: empty_hooks [HOOK ...] | empty_hooks --kprobe [--no-phases]\n\
             HOOK: a tracepoint, kprobe:FUNCTION or kretprobe:FUNCTION (default: {})",
            floor::TRACEPOINT_HOOKS.join(" ")
        );
        return;
    }
    let kprobe = args.iter().any(|a| a == "--kprobe");
    let no_phases = args.iter().any(|a| a == "--no-phases");
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(bad) = args
        .iter()
        .find(|a| a.starts_with("--") && *a != "--kprobe" && *a != "--no-phases")
    {
        eprintln!("empty_hooks: unknown option {bad} (see --help)");
        std::process::exit(2);
    }
    let hooks: Vec<&str> = match (kprobe, named.is_empty()) {
        (true, true) => floor::KPROBE_HOOKS
            .iter()
            .chain(if no_phases {
                &[][..]
            } else {
                floor::KPROBE_PHASE_HOOKS
            })
            .copied()
            .collect(),
        (false, true) => floor::TRACEPOINT_HOOKS.to_vec(),
        (false, false) => named,
        (true, false) => {
            eprintln!("empty_hooks: --kprobe chooses the hooks; give either it or HOOKs");
            std::process::exit(2);
        }
    };
    if let Err(e) = cowprof_benches::install_stop_handlers() {
        eprintln!("empty_hooks: {e:#}");
        std::process::exit(1);
    }
    let mut held = Vec::new();
    let mut pmu = None;
    for (i, hook) in hooks.iter().enumerate() {
        match hook_up(i, hook, &mut pmu) {
            Ok(h) => held.push(h),
            Err(e) => {
                eprintln!("empty_hooks: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("attached {} hooks: {}", held.len(), hooks.join(" "));
    while !cowprof_benches::stop_requested() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(held);
}
