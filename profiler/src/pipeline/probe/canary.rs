//! The start-up check ("canary"): right after attaching, prove on this kernel that the attached
//! backend sees the three kinds of operation every report rests on, before anything says it is
//! attached.
//!
//! A forked child makes a private mount namespace (`unshare(CLONE_NEWNS)`, `/` made private, so
//! no other process and no mountinfo reader of the host sees its mounts), mounts a tmpfs over the
//! temp directory there, an overlay on that tmpfs, and then does one data copy-up (an open for
//! writing of a lower file), one directory copy-up (a chmod of a lower directory) and one whiteout
//! (an unlink of a lower file). The parent reads the ring buffer until it has seen the child's
//! three events or the child has finished. Every event of that window is consumed here (the
//! child's, and anything else before the start line), so none reaches the output, the summary or
//! the metrics; the drop counters are read afterwards as the baseline of the run. The namespace
//! and its mounts die with the child, however it ends.
//!
//! Test hook: with `COWPROF_TEST_BLIND_CANARY=1` in the environment, the kernel-side pid filter
//! is set to a pid that no task has during the check, so the attached programs run but emit
//! nothing: the check must fail (exit code 6).

use std::{
    ffi::CString,
    fmt::Write as _,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, HashMap, MapData, RingBuf},
    Ebpf,
};
use profiler_common::{Config, InodeKey};

use super::Backend;
use crate::{
    event::Kind,
    pipeline::decode::{self, Record, WireKind},
};

/// How long the check may take by default. It ends as soon as the child's three operations are
/// done (milliseconds on hardware); the bound only matters when the child cannot finish, and
/// is generous for emulated machines (TCG), where one syscall can take tens of milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable of the test hook (module docs).
pub const BLIND_ENV: &str = "COWPROF_TEST_BLIND_CANARY";

/// Test hook: with `COWPROF_TEST_DETACH_AFTER_CANARY=PROGRAM` (a kprobe program of the object,
/// e.g. `cowprof_kp_copy_up_start`) that program is detached once the check has passed, so the
/// run loses what it would have seen the way a probe the kernel missed loses it (the accounting
/// test of `scripts/vm-kprobe-unpaired.sh`).
pub const DETACH_ENV: &str = "COWPROF_TEST_DETACH_AFTER_CANARY";

/// Applies [`DETACH_ENV`], if set.
pub fn detach_for_test(ebpf: &mut Ebpf) -> Result<(), String> {
    let Some(name) = std::env::var_os(DETACH_ENV) else {
        return Ok(());
    };
    let name = name.to_string_lossy();
    let prog: &mut aya::programs::KProbe = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("{DETACH_ENV}: no program {name}"))?
        .try_into()
        .map_err(|e| format!("{DETACH_ENV}: {name}: {e}"))?;
    prog.unload()
        .map_err(|e| format!("{DETACH_ENV}: detaching {name}: {e}"))?;
    log::warn!("{DETACH_ENV}: {name} detached (a test hook)");
    Ok(())
}

/// Mount id given to the canary's overlay in the tracepoint backend's maps; no real mount has it
/// (the lab's synthetic ids start at `0x7000_0000` and stay far below).
const CANARY_MOUNT_ID: u32 = u32::MAX - 1;

/// What the check saw of its own operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CanaryReport {
    pub data_copy_up: u32,
    pub dir_copy_up: u32,
    pub whiteout: u32,
    /// Other events of the child (e.g. a metacopy); not required, reported for diagnosis.
    pub other: u32,
    /// The child finished its operations within the timeout.
    pub workload_done: bool,
    pub elapsed_ms: u64,
}

impl CanaryReport {
    /// Each of the three operations was seen.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.data_copy_up > 0 && self.dir_copy_up > 0 && self.whiteout > 0
    }

    /// "1 data copy-up, 0 directory copy-ups, 0 whiteouts", plus why it may be short.
    #[must_use]
    pub fn seen(&self) -> String {
        let mut s = if self.data_copy_up + self.dir_copy_up + self.whiteout + self.other == 0 {
            "no event at all (expected a data copy-up, a directory copy-up and a whiteout)"
                .to_owned()
        } else {
            format!(
                "{} data copy-up(s), {} directory copy-up(s), {} whiteout(s) (expected one of each)",
                self.data_copy_up, self.dir_copy_up, self.whiteout
            )
        };
        if !self.workload_done {
            let _ = write!(
                s,
                "; its workload did not finish within {} ms (a slow emulator? raise --canary-timeout)",
                self.elapsed_ms
            );
        }
        s
    }

    /// (op label, count) in a fixed order, for metrics and `doctor`.
    #[must_use]
    pub fn counts(&self) -> [(&'static str, u32); 3] {
        [
            ("data_copy_up", self.data_copy_up),
            ("dir_copy_up", self.dir_copy_up),
            ("whiteout", self.whiteout),
        ]
    }
}

/// Why the check could not run at all (as opposed to ran and saw too little).
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("the start-up check (canary) could not set up its private overlay: {step}: {source}")]
    Setup {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the start-up check (canary): {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the start-up check (canary): eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The child's steps, in order; a failure reports its index.
const STEPS: &[&str] = &[
    "unshare(CLONE_NEWNS) (needs CAP_SYS_ADMIN)",
    "making / private in its mount namespace",
    "mounting a tmpfs over the temp directory",
    "chdir",
    "making the layer directories",
    "writing the lower files",
    "mounting the overlay (is overlayfs available?)",
    "stat of the upper and work directories",
    "the copy-up and whiteout operations",
];

/// Paths and strings the child uses, made before `fork` (the child must not allocate).
struct ChildPlan {
    base: CString,
    dirs: [CString; 5],
    files: [CString; 2],
    fs_tmpfs: CString,
    fs_overlay: CString,
    tmpfs_opts: CString,
    overlay_opts: CString,
    merged: CString,
    upper: CString,
    work_work: CString,
    data_file: CString,
    dir: CString,
    gone: CString,
    root: CString,
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a fixed string")
}

impl ChildPlan {
    fn new(base: &Path) -> Result<Self, CanaryError> {
        use std::os::unix::ffi::OsStrExt as _;
        let base = CString::new(base.as_os_str().as_bytes()).map_err(|e| CanaryError::Setup {
            step: "temp directory path",
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        Ok(Self {
            base,
            // Relative to the tmpfs (the child chdirs there): overlay options need no escaping.
            dirs: [cstr("l"), cstr("u"), cstr("w"), cstr("m"), cstr("l/e")],
            files: [cstr("l/f"), cstr("l/g")],
            fs_tmpfs: cstr("tmpfs"),
            fs_overlay: cstr("overlay"),
            tmpfs_opts: cstr("mode=0700,size=1m"),
            overlay_opts: cstr("lowerdir=l,upperdir=u,workdir=w"),
            merged: cstr("m"),
            upper: cstr("u"),
            work_work: cstr("w/work"),
            data_file: cstr("m/f"),
            dir: cstr("m/e"),
            gone: cstr("m/g"),
            root: cstr("/"),
        })
    }
}

/// What the child sends when its overlay is mounted: `[status, st_dev, upper ino, work ino]`
/// (status 0), or `[step + 1, errno, 0, 0]`. After its operations: `[0 or step + 1, errno]`.
type Message = [u64; 4];

fn errno() -> u64 {
    u64::try_from(io::Error::last_os_error().raw_os_error().unwrap_or(0)).unwrap_or(0)
}

/// The child: raw system calls only (async-signal-safe; the parent may have other threads).
///
/// # Safety
/// Call only in the child right after `fork`; it never returns.
unsafe fn child_main(plan: &ChildPlan, report: i32, go: i32) -> ! {
    use libc::{c_void, close, mkdir, mount, open, read, write};
    let send = |msg: &Message| {
        // SAFETY: a plain write of a local buffer to our pipe.
        unsafe { write(report, msg.as_ptr().cast::<c_void>(), size_of::<Message>()) };
    };
    let fail = |step: usize| -> ! {
        send(&[step as u64 + 1, errno(), 0, 0]);
        // SAFETY: _exit is async-signal-safe and ends only this process.
        unsafe { libc::_exit(1) }
    };
    // SAFETY (the whole block): libc calls with valid NUL-terminated strings prepared by the
    // parent and local buffers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            fail(0);
        }
        if mount(
            std::ptr::null(),
            plan.root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            fail(1);
        }
        if mount(
            plan.fs_tmpfs.as_ptr(),
            plan.base.as_ptr(),
            plan.fs_tmpfs.as_ptr(),
            libc::MS_NOSUID,
            plan.tmpfs_opts.as_ptr().cast::<c_void>(),
        ) != 0
        {
            fail(2);
        }
        if libc::chdir(plan.base.as_ptr()) != 0 {
            fail(3);
        }
        for d in &plan.dirs {
            if mkdir(d.as_ptr(), 0o755) != 0 {
                fail(4);
            }
        }
        for f in &plan.files {
            let fd = open(
                f.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 || write(fd, b"canary\n".as_ptr().cast::<c_void>(), 7) != 7 {
                fail(5);
            }
            close(fd);
        }
        if mount(
            plan.fs_overlay.as_ptr(),
            plan.merged.as_ptr(),
            plan.fs_overlay.as_ptr(),
            0,
            plan.overlay_opts.as_ptr().cast::<c_void>(),
        ) != 0
        {
            fail(6);
        }
        let mut upper: libc::stat = std::mem::zeroed();
        let mut work: libc::stat = std::mem::zeroed();
        if libc::stat(plan.upper.as_ptr(), &raw mut upper) != 0
            || libc::stat(plan.work_work.as_ptr(), &raw mut work) != 0
        {
            fail(7);
        }
        send(&[0, upper.st_dev, upper.st_ino, work.st_ino]);
        let mut byte = 0u8;
        if read(go, (&raw mut byte).cast::<c_void>(), 1) != 1 {
            libc::_exit(0); // the parent gave up
        }
        // A data copy-up, a directory copy-up, a whiteout: one syscall each.
        let fd = open(
            plan.data_file.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
        );
        if fd < 0 {
            fail(8);
        }
        close(fd);
        if libc::chmod(plan.dir.as_ptr(), 0o700) != 0 || libc::unlink(plan.gone.as_ptr()) != 0 {
            fail(8);
        }
        send(&[0, 0, 0, 0]);
        libc::_exit(0);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), CanaryError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(CanaryError::Io {
            what: "pipe",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: both fds are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits up to `until` for `fd` to be readable; false on timeout.
fn wait_readable(fd: i32, until: Instant) -> bool {
    let left = until.saturating_duration_since(Instant::now());
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&raw mut p, 1, ms) };
    n > 0
}

/// Reads one message, or `None` on EOF (the child is gone) or timeout.
fn read_message(fd: &OwnedFd, until: Instant) -> Option<Message> {
    if !wait_readable(fd.as_raw_fd(), until) {
        return None;
    }
    let mut msg: Message = [0; 4];
    // SAFETY: reads at most the buffer's size into it. Messages are smaller than PIPE_BUF, so
    // each write arrives whole.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            msg.as_mut_ptr().cast::<libc::c_void>(),
            size_of::<Message>(),
        )
    };
    (usize::try_from(n).ok() == Some(size_of::<Message>())).then_some(msg)
}

fn setup_error(msg: Message) -> CanaryError {
    let step = usize::try_from(msg[0] - 1).unwrap_or(usize::MAX);
    CanaryError::Setup {
        step: STEPS.get(step).copied().unwrap_or("unknown step"),
        source: io::Error::from_raw_os_error(i32::try_from(msg[1]).unwrap_or(0)),
    }
}

fn set_config(ebpf: &mut Ebpf, cfg: Config) -> Result<(), CanaryError> {
    let map = |source| CanaryError::Map {
        name: "CONFIG",
        source,
    };
    let mut arr: Array<_, Config> =
        Array::try_from(ebpf.map_mut("CONFIG").expect("map in object")).map_err(map)?;
    arr.set(0, cfg, 0).map_err(map)
}

/// The tracepoint backend only follows overlays it was told about: the canary's, while it runs.
fn tracepoint_maps(
    ebpf: &mut Ebpf,
    keys: Option<(u32, u64, u64)>,
    add: bool,
) -> Result<(), CanaryError> {
    let Some((dev, upper_ino, work_ino)) = keys else {
        return Ok(());
    };
    for (name, ino) in [("WORKDIRS", work_ino), ("UPPER_ROOTS", upper_ino)] {
        let map_err = |source| CanaryError::Map { name, source };
        let mut map: HashMap<_, InodeKey, u32> =
            HashMap::try_from(ebpf.map_mut(name).expect("map in object")).map_err(map_err)?;
        let key = InodeKey { dev, _pad: 0, ino };
        if add {
            map.insert(key, CANARY_MOUNT_ID, 0).map_err(map_err)?;
        } else {
            let _ = map.remove(&key);
        }
    }
    let map_err = |source| CanaryError::Map {
        name: "UPPER_DEVS",
        source,
    };
    let mut devs: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut("UPPER_DEVS").expect("map in object")).map_err(map_err)?;
    if add {
        devs.insert(dev, 1, 0).map_err(map_err)?;
    } else {
        // The tmpfs is gone with the child; its anonymous device number will be handed out again.
        let _ = devs.remove(&dev);
    }
    Ok(())
}

/// Counts the child's events among everything in the ring buffer; the rest is discarded
/// (nothing before the start line is reported).
fn drain(ring: &mut RingBuf<&mut MapData>, child: u32, report: &mut CanaryReport) {
    while let Some(item) = ring.next() {
        let Ok(Record::Cow(ev)) = decode::decode(&item) else {
            continue;
        };
        if ev.pid != child {
            continue;
        }
        match ev.kind {
            WireKind::TpRegular | WireKind::Known(Kind::DataCopyUp) => report.data_copy_up += 1,
            WireKind::Known(Kind::DirCopyUp) => report.dir_copy_up += 1,
            WireKind::Known(Kind::Whiteout) => report.whiteout += 1,
            WireKind::Known(_) => report.other += 1,
        }
    }
}

/// Attempts in all for a check that missed an operation while the kernel skipped every copy of
/// one of the programs (docs/backends.md, "Missed kprobes").
pub const ATTEMPTS_ON_SKIPS: u32 = 3;

/// Runs the check on an attached object whose `CONFIG` is `cfg` (restored before returning).
///
/// Returns what the backend saw of the child's operations; [`CanaryError`] when the check could
/// not run (e.g. no `CAP_SYS_ADMIN` for a mount namespace).
pub fn run(
    ebpf: &mut Ebpf,
    backend: Backend,
    cfg: Config,
    timeout: Duration,
) -> Result<CanaryReport, CanaryError> {
    let start = Instant::now();
    let until = start + timeout;
    let plan = ChildPlan::new(&std::env::temp_dir())?;
    let (report_r, report_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the child runs `child_main` only (raw system calls on prepared data) and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(CanaryError::Io {
            what: "fork",
            source: io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: we are the child.
        unsafe { child_main(&plan, report_w.as_raw_fd(), go_r.as_raw_fd()) }
    }
    drop(report_w);
    drop(go_r);
    let child = pid.cast_unsigned();
    let result = parent(ebpf, backend, cfg, child, &report_r, go_w, until, start);
    // The child has finished, failed or is stuck: it must not outlive the check.
    // SAFETY: our own child, reaped right after.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    result
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site, the pieces of one check"
)]
fn parent(
    ebpf: &mut Ebpf,
    backend: Backend,
    cfg: Config,
    child: u32,
    report_r: &OwnedFd,
    go_w: OwnedFd,
    until: Instant,
    start: Instant,
) -> Result<CanaryReport, CanaryError> {
    let mut report = CanaryReport::default();
    let ready = read_message(report_r, until).ok_or_else(|| CanaryError::Setup {
        step: "its child process did not get its overlay mounted in time",
        source: io::Error::from(io::ErrorKind::TimedOut),
    })?;
    if ready[0] != 0 {
        return Err(setup_error(ready));
    }
    let keys = (backend == Backend::Tracepoint).then(|| {
        (
            crate::host::mountinfo::to_kdev(ready[1]),
            ready[2],
            ready[3],
        )
    });
    tracepoint_maps(ebpf, keys, true)?;
    let blind = std::env::var_os(BLIND_ENV).is_some_and(|v| v == "1");
    set_config(
        ebpf,
        Config {
            // The user's --pid/--cgroup filters would hide the child.
            filter_tgid: if blind { u32::MAX } else { 0 },
            filter_cgroup: 0,
            ..cfg
        },
    )?;
    let checked = watch(ebpf, child, report_r, go_w, until, &mut report);
    // Whatever happened, the run goes on with the user's filters and without the canary's keys.
    let restored = set_config(ebpf, cfg).and(tracepoint_maps(ebpf, keys, false));
    checked?;
    restored?;
    report.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

fn watch(
    ebpf: &mut Ebpf,
    child: u32,
    report_r: &OwnedFd,
    go_w: OwnedFd,
    until: Instant,
    report: &mut CanaryReport,
) -> Result<(), CanaryError> {
    let mut ring =
        RingBuf::try_from(ebpf.map_mut("EVENTS").expect("map in object")).map_err(|source| {
            CanaryError::Map {
                name: "EVENTS",
                source,
            }
        })?;
    // Whatever the backend emitted before this point is not ours and not reported.
    drain(&mut ring, 0, &mut CanaryReport::default());
    // SAFETY: one byte to our own pipe.
    if unsafe { libc::write(go_w.as_raw_fd(), [1u8].as_ptr().cast::<libc::c_void>(), 1) } != 1 {
        return Err(CanaryError::Io {
            what: "starting its child",
            source: io::Error::last_os_error(),
        });
    }
    drop(go_w);
    // The child's events are emitted inside its system calls: once it reports its operations
    // done, one more drain has them all.
    let done = read_message(report_r, until);
    drain(&mut ring, child, report);
    match done {
        Some([0, ..]) => report.workload_done = true,
        Some(msg) => return Err(setup_error(msg)),
        None => {}
    }
    Ok(())
}

/// One backend's result in `doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendCanary {
    pub backend: Backend,
    /// `Some(true)` passed, `Some(false)` attached but blind, `None` not run (see `summary`).
    pub ok: Option<bool>,
    pub report: Option<CanaryReport>,
    pub summary: String,
}

/// `doctor`: loads and attaches each usable backend in turn (the same path as `record`, start-up
/// check included) and says what its check saw.
#[must_use]
pub fn per_backend(facts: &super::KernelFacts, btf: &super::BtfPaths) -> Vec<BackendCanary> {
    facts
        .backends
        .iter()
        .map(|st| {
            let not_run = |summary: String| BackendCanary {
                backend: st.backend,
                ok: None,
                report: None,
                summary,
            };
            if !st.usable {
                return not_run("not run (backend unavailable)".into());
            }
            let opts = super::ProbeOptions {
                backend: Some(st.backend),
                btf: btf.clone(),
                ..Default::default()
            };
            match super::load_and_attach(&opts) {
                Ok(probe) => match &probe.canary {
                    Ok(r) => BackendCanary {
                        backend: st.backend,
                        ok: Some(true),
                        report: Some(*r),
                        summary: format!(
                            "ok: saw {} data copy-up, {} directory copy-up, {} whiteout in {} ms",
                            r.data_copy_up, r.dir_copy_up, r.whiteout, r.elapsed_ms
                        ),
                    },
                    Err(why) => not_run(format!("not run: {why}")),
                },
                Err(super::ProbeError::CanaryBlind { seen, .. }) => BackendCanary {
                    backend: st.backend,
                    ok: Some(false),
                    report: None,
                    summary: format!("FAILED: attached, but saw {seen}"),
                },
                Err(e) => not_run(format!("not run: {e}")),
            }
        })
        .collect()
}
