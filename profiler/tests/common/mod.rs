//! Shared helpers for the host integration tests: a cross-process lock (the tests attach eBPF
//! programs and mount overlays, which is shared kernel state), the state checks run after every
//! test (no overlay mount left, no cowprof BPF link or program left), and child-process helpers
//! that never leave a process behind.
#![allow(dead_code)]

pub mod docker;

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    io::{BufRead as _, BufReader},
    os::unix::io::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use cowprof::{event::Event, pipeline::aggregate::Summary, pipeline::report::RunInfo};

pub const BIN: &str = env!("CARGO_BIN_EXE_cowprof");

/// How long `record` may take to load and attach (BTF parsing in a debug build takes seconds).
pub const START_TIMEOUT: Duration = Duration::from_mins(1);

/// Exclusive lock on /tmp/cowprof-tests.lock, held until dropped. flock locks belong to the open
/// file description, so this serialises tests across threads and across test binaries.
pub struct TestLock(File);

pub fn lock() -> TestLock {
    let f = File::options()
        .create(true)
        .append(true)
        .open("/tmp/cowprof-tests.lock")
        .expect("open /tmp/cowprof-tests.lock");
    // SAFETY: valid fd owned by `f` for the duration of the call.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    TestLock(f)
}

pub fn is_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Records that `test` did not run (or ran only in part) because of `id`, a stable skip id
/// (`not-root`, `kprobes-absent`, ...), and `reason`. Prints `SKIP <test>: <id>: <reason>` and
/// appends it to the skip file (`COWPROF_TEST_SKIP_FILE`, default `target/test-skips.txt`), which
/// the test command prints at the end: cargo hides a passing test's stderr. Under
/// `COWPROF_TEST_STRICT=1` (set by `scripts/test`) the skip is a failure unless `id` is in the
/// comma-separated `COWPROF_TEST_ALLOW_SKIP`.
pub fn skip(test: &str, id: &str, reason: &str) {
    let line = format!("SKIP {test}: {id}: {reason}");
    eprintln!("{line}");
    let file = std::env::var_os("COWPROF_TEST_SKIP_FILE").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-skips.txt"),
        PathBuf::from,
    );
    if let Ok(mut f) = File::options().create(true).append(true).open(&file) {
        // One write(2) of a short line to an O_APPEND file: lines of parallel tests never mix.
        let _ = std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes());
    }
    if std::env::var("COWPROF_TEST_STRICT").is_ok_and(|v| v == "1") {
        let allow = std::env::var("COWPROF_TEST_ALLOW_SKIP").unwrap_or_default();
        assert!(
            allow.split(',').any(|a| a.trim() == id),
            "{line}: a skip under COWPROF_TEST_STRICT=1 whose id is not in \
             COWPROF_TEST_ALLOW_SKIP={allow:?}; fix the host or allow '{id}'"
        );
    }
}

/// Returns false (after recording a `not-root` skip) when the test cannot run here.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        true
    } else {
        skip(
            test,
            "not-root",
            "needs root (loads eBPF programs and mounts overlays)",
        );
        false
    }
}

/// True if `tool` can be started (it is on PATH); else records a `no-<tool>` skip of `test`.
pub fn require_tool(test: &str, tool: &str, package: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        true
    } else {
        skip(
            test,
            &format!("no-{tool}"),
            &format!("`{tool}` is not on PATH (Debian package {package})"),
        );
        false
    }
}

pub fn kprobes_missing() -> bool {
    !Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// A directory on disk (the target dir) for overlay layers; removed on drop.
pub fn disk_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cowprof-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}

/// Overlay mounts in this mount namespace: (mount id, mount point).
pub fn overlay_mounts() -> BTreeSet<(String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "overlay" {
                return None;
            }
            let f: Vec<&str> = pre.split_whitespace().collect();
            Some((f[0].to_owned(), f[4].to_owned()))
        })
        .collect()
}

fn bpftool_json(args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new("bpftool").arg("-j").args(args).output().ok()?;
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("bpftool JSON"))
}

/// A cowprof BPF object: `("link", id, prog name)` or `("prog", id, name)`.
pub type BpfObj = (&'static str, u64, String);

/// cowprof's BPF objects: every link whose program is named cowprof*, every cowprof* program.
/// None when bpftool is missing.
pub fn cowprof_bpf() -> Option<BTreeSet<BpfObj>> {
    let progs = bpftool_json(&["prog", "list"])?;
    let links = bpftool_json(&["link", "list"])?;
    let progs = progs.as_array().cloned().unwrap_or_default();
    let name_of = |id: u64| {
        progs
            .iter()
            .find(|p| p["id"].as_u64() == Some(id))
            .and_then(|p| p["name"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let mut out = BTreeSet::new();
    for p in &progs {
        let name = p["name"].as_str().unwrap_or("");
        if name.starts_with("cowprof") {
            out.insert(("prog", p["id"].as_u64().expect("prog id"), name.to_owned()));
        }
    }
    for l in links.as_array().into_iter().flatten() {
        let Some(prog) = l["prog_id"].as_u64() else {
            continue;
        };
        let name = name_of(prog);
        if name.starts_with("cowprof") {
            out.insert(("link", l["id"].as_u64().expect("link id"), name));
        }
    }
    Some(out)
}

/// Which processes hold which BPF links and programs, from /proc/*/fdinfo: (kind, id) -> pids.
pub fn bpf_holders() -> HashMap<(&'static str, u64), BTreeSet<i32>> {
    let mut out: HashMap<(&'static str, u64), BTreeSet<i32>> = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            let key = match (field("link_id:"), field("prog_id:")) {
                (Some(link), _) => ("link", link),
                (None, Some(prog)) => ("prog", prog),
                _ => continue,
            };
            out.entry(key).or_default().insert(pid);
        }
    }
    out
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses; split after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// True if `pid` is this test process or one of its descendants.
pub fn is_ours(pid: i32) -> bool {
    let me = i32::try_from(std::process::id()).expect("pid");
    let mut cur = pid;
    for _ in 0..64 {
        if cur == me {
            return true;
        }
        match parent_of(cur) {
            Some(p) if p > 1 => cur = p,
            _ => return false,
        }
    }
    false
}

/// Kernel state before a test, to compare with afterwards. Other people may run cowprof or mount
/// overlays on this machine at the same time, so what is left over is attributed: a new overlay
/// mount counts if it is under this test's temp root or a cowprof-<pid>- directory of a process
/// that is ours or gone; a new cowprof BPF object counts if no process holds it (pinned or
/// leaked) or one of ours does. Objects held by unrelated processes are reported, not failed.
pub struct Baseline {
    mounts: BTreeSet<(String, String)>,
    bpf: Option<BTreeSet<BpfObj>>,
}

fn mount_is_ours(mount_point: &str) -> bool {
    if mount_point.starts_with(env!("CARGO_TARGET_TMPDIR")) {
        return true;
    }
    // cowprof's own demo/selftest stacks: <tmp>/cowprof-<pid>-{main,meta}.
    let Some(rest) = mount_point.split("/cowprof-").nth(1) else {
        return false;
    };
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
        return false;
    };
    !Path::new(&format!("/proc/{pid}")).exists() || is_ours(pid)
}

impl Baseline {
    pub fn take() -> Self {
        let bpf = cowprof_bpf();
        if bpf.is_none() {
            skip(
                "Baseline",
                "no-bpftool",
                "bpftool not found (Debian package bpftool); the 'no BPF link left' checks are not made",
            );
        }
        Self {
            mounts: overlay_mounts(),
            bpf,
        }
    }

    /// New cowprof BPF objects since `take`, split into (ours or unheld, held by others).
    pub fn new_bpf(&self) -> Option<(Vec<BpfObj>, Vec<BpfObj>)> {
        let before = self.bpf.as_ref()?;
        let now = cowprof_bpf().expect("bpftool vanished");
        let holders = bpf_holders();
        let (mut ours, mut others) = (Vec::new(), Vec::new());
        for obj in now.difference(before) {
            match holders.get(&(obj.0, obj.1)) {
                Some(pids) if !pids.iter().any(|p| is_ours(*p)) => others.push(obj.clone()),
                _ => ours.push(obj.clone()),
            }
        }
        Some((ours, others))
    }

    /// Asserts that this test left no overlay mount and no cowprof BPF link/program behind.
    /// Links and programs are released asynchronously after the process exits: wait up to 5 s.
    pub fn assert_clean(&self, after: &str) {
        // Polled: a mount read from mountinfo just before its (unrelated) owner unmounts it and
        // exits would otherwise look like a dead process's leftover.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (ours, others): (Vec<_>, Vec<_>) = overlay_mounts()
                .difference(&self.mounts)
                .cloned()
                .partition(|(_, mp)| mount_is_ours(mp));
            if ours.is_empty() {
                if !others.is_empty() {
                    eprintln!("note: after {after}: new overlay mounts of other processes, ignored: {others:?}");
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after {after}: overlay mounts left behind: {ours:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.bpf.is_none() {
            skip(
                after,
                "no-bpftool",
                "bpftool not installed: no BPF link check",
            );
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (ours, others) = self.new_bpf().expect("baseline has bpf");
            if ours.is_empty() {
                if !others.is_empty() {
                    eprintln!("note: after {after}: cowprof BPF objects of other processes, ignored: {others:?}");
                }
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {after}: cowprof BPF objects left attached: {ours:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A spawned child whose stdout lines arrive on a channel; killed on drop if still running.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cowprof");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(err), &mut s);
            let _ = etx.send(s);
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) of our own child, which has not been reaped yet.
        assert_eq!(
            unsafe { libc::kill(self.pid(), sig) },
            0,
            "kill: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Next stdout line; after `timeout` (or if stdout closes) kills the child and panics with
    /// its exit status and stderr.
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(e) => {
                let status = if let Ok(Some(s)) = self.child.try_wait() {
                    format!("exited: {s}")
                } else {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    "killed by the test".to_owned()
                };
                let stderr = self
                    .stderr
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_default();
                let tail: Vec<&str> = stderr
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!(
                    "no output line within {timeout:?} ({e}); cowprof {status}; stderr (tail):\n{}",
                    tail.join("\n")
                )
            }
        }
    }

    /// Waits for exit (panics after `timeout`), then returns the status, the remaining stdout
    /// lines and all of stderr.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "cowprof did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest: Vec<String> =
            std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(10)).ok()).collect();
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        (status, rest, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One parsed JSON line of `record --json`.
#[derive(Debug)]
pub enum Line {
    Start(RunInfo),
    Event(Box<Event>),
    Summary(Summary),
}

/// Parses one line; every line must carry schema 1 and a known type.
pub fn parse_line(line: &str) -> Line {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["schema"], 1, "schema in {line}");
    let ty = v["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no type in {line}"))
        .to_owned();
    match ty.as_str() {
        "start" => Line::Start(
            serde_json::from_value(v).unwrap_or_else(|e| panic!("bad start ({e}): {line}")),
        ),
        "event" => Line::Event(Box::new(
            serde_json::from_value(v).unwrap_or_else(|e| panic!("bad event ({e}): {line}")),
        )),
        "summary" => Line::Summary(
            serde_json::from_value(v).unwrap_or_else(|e| panic!("bad summary ({e}): {line}")),
        ),
        other => panic!("unknown type {other:?} in {line}"),
    }
}

/// A whole `record --json` output: exactly one start line first, exactly one summary line last,
/// events in between.
pub struct Recording {
    pub start: RunInfo,
    pub events: Vec<Event>,
    pub summary: Summary,
}

pub fn parse_recording(lines: &[String]) -> Recording {
    let mut parsed = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_line(l));
    let Some(Line::Start(start)) = parsed.next() else {
        panic!("first line is not a start line: {lines:?}")
    };
    let mut events = Vec::new();
    let mut summary = None;
    for l in parsed {
        assert!(summary.is_none(), "a line after the summary: {l:?}");
        match l {
            Line::Event(e) => events.push(*e),
            Line::Summary(s) => summary = Some(s),
            Line::Start(_) => panic!("a second start line"),
        }
    }
    Recording {
        start,
        events,
        summary: summary.unwrap_or_else(|| panic!("no summary line: {lines:?}")),
    }
}

/// Canonical form of a path (mountinfo shows canonical mount points).
pub fn canon(p: &Path) -> PathBuf {
    p.canonicalize().expect("canonicalize")
}

/// The default stacks, as `selftest` builds them: the 3-layer main stack with the symlink, and
/// the metacopy=on stack where the kernel has metacopy.
pub fn build_stacks(dir: &Path) -> (cowprof::scenario::Stack, Option<cowprof::scenario::Stack>) {
    use cowprof::scenario::{self, Stack};
    let main = Stack::create(&dir.join("main"), 3, scenario::DEFAULT_FILES, &[], false)
        .expect("main stack");
    scenario::add_symlink(&main).expect("symlink");
    let meta = cowprof::host::mounts::overlay_param("metacopy")
        .is_some()
        .then(|| {
            Stack::create(
                &dir.join("meta"),
                1,
                scenario::META_FILES,
                &["metacopy=on"],
                false,
            )
            .expect("meta stack")
        });
    (main, meta)
}

/// Bytes one record of `payload` bytes takes in a BPF ring buffer: an 8-byte header, rounded
/// up to 8 (`BPF_RINGBUF_HDR_SZ`, kernel/bpf/ringbuf.c).
pub const fn ringbuf_record(payload: usize) -> u64 {
    ((payload + 8).div_ceil(8) * 8) as u64
}

/// The least number of events `record` delivers when `produced` syscalls each emit one
/// `CowEvent` and then (kprobe backend) one `SyscallEnd` into a ring of `ring_bytes`, however
/// slowly it reads (the tracepoint backend writes no `SyscallEnd`: the bound holds with room):
/// a reservation fails only while the unread part holds more than `ring_bytes - 1 - event`
/// bytes (kernel/bpf/ringbuf.c), and before the first failure that part is whole (event, end)
/// pairs, every one of which is read later.
pub fn min_delivered(ring_bytes: u64, produced: u64) -> u64 {
    use profiler_common::{CowEvent, SyscallEnd};
    let event = ringbuf_record(size_of::<CowEvent>());
    let pair = event + ringbuf_record(size_of::<SyscallEnd>());
    produced.min((ring_bytes - event).div_ceil(pair))
}

/// `record`'s default ring buffer (`--ringbuf-size`).
pub const DEFAULT_RINGBUF: u64 = 4 << 20;
