//! The floor under any tracer on given hooks: an empty BPF program (`r0 = 0; exit`) attached as a
//! raw tracepoint to each of them, until SIGINT or SIGTERM.
//!
//! Used as `copyup_storm --peer-cmd "empty_hooks" --peer-ready attached`: in the same run as
//! `cowprof record`, what attaching *anything* to the tracepoint backend's hooks costs the workload
//! (the kernel's dispatch to a BPF program, and with `--bpf-stats` the statistics' own clock reads),
//! so cowprof's overhead can be read against what no program on those hooks can go below. A raw
//! tracepoint is dispatched exactly as a `tp_btf` program on the same tracepoint (both run from the
//! tracepoint's `bpf_trace_run*` stub); only the verifier's view of the arguments differs.
//!
//! ```text
//! empty_hooks [HOOK ...]   # default: the tracepoint backend's hooks, phases included
//! ```
//!
//! Prints `attached N hooks` once every program is attached; exits 0 when stopped, 1 when a
//! program cannot be loaded or attached (the line names the hook and the kernel's error). Closing
//! the file descriptors at exit detaches everything.

use std::{ffi::CString, io, os::fd::FromRawFd as _, os::fd::OwnedFd};

/// The hooks `record --backend tracepoint` attaches (phases included): the syscall entry and exit,
/// the three ctime tracepoints, the scheduler switch, ext4's fsync.
const DEFAULT_HOOKS: &[&str] = &[
    "sys_enter",
    "sys_exit",
    "ctime_ns_xchg",
    "ctime_xchg_skip",
    "inode_set_ctime_to_ts",
    "sched_switch",
    "ext4_sync_file_enter",
    "ext4_sync_file_exit",
];

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `union bpf_attr`, as large as any command of it needs here; unused fields stay zero.
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

/// Loads `r0 = 0; exit` as a raw-tracepoint program named `name` (15 characters kept).
fn load_empty(name: &str) -> io::Result<OwnedFd> {
    // mov64 r0, 0; exit
    let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), 0x95];
    let license = c"GPL";
    let mut a = Attr([0; 128]);
    a.put_u32(0, BPF_PROG_TYPE_RAW_TRACEPOINT);
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: empty_hooks [HOOK ...]  (default: {})",
            DEFAULT_HOOKS.join(" ")
        );
        return;
    }
    let hooks: Vec<&str> = if args.is_empty() {
        DEFAULT_HOOKS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    if let Err(e) = cowprof_benches::install_stop_handlers() {
        eprintln!("empty_hooks: {e:#}");
        std::process::exit(1);
    }
    let mut held = Vec::new();
    for (i, hook) in hooks.iter().enumerate() {
        let prog = match load_empty(&format!("empty_{i}")) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("empty_hooks: loading an empty raw-tracepoint program failed: {e} (run as root)");
                std::process::exit(1);
            }
        };
        match attach(&prog, hook) {
            Ok(link) => held.push((prog, link)),
            Err(e) => {
                eprintln!("empty_hooks: attaching to tracepoint {hook} failed: {e} (is it in this kernel's /sys/kernel/tracing/available_events?)");
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
