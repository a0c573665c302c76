//! Pieces shared by cowprof's benchmarks (see `benches/copyup_storm.rs`): a scratch directory
//! (optionally a tmpfs of its own), a lower layer of many small files, fresh overlay mounts over
//! it, the copy-up storm itself, and `cowprof record` run as a separate collector process.
//!
//! Everything that changes the system is a guard that undoes itself on drop, so a panic, an
//! early return or Ctrl-C (which only sets a flag, see [`install_stop_handlers`]; the loops poll
//! it and return [`Interrupted`]) leaves no mount, no directory and no collector process behind.
//! A peer tracer (e.g. bpftrace) to compare the collector with runs the same way ([`Peer`]).

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    io::{self, Read as _},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

mod child;
pub mod floor;
mod peer;
mod stats;

use child::{exit_code, rusage_cpu, TracerChild};
pub use peer::{histogram_count, Peer, PeerRun};
pub use stats::{bootstrap_ci, max, median, median_ci, min, ratio_of_medians_ci};

// ------------------------------------------------------------------------------------ signals --

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// A bench's `main`: installs the stop handlers, parses its options (exit 2 on an error),
/// runs it (exit 0 when it says its figures are valid, 1 when not or on an error, 130 when
/// interrupted, after every guard has cleaned up).
pub fn bench_main<A>(
    name: &str,
    parse: impl FnOnce() -> Result<A>,
    run: impl FnOnce(&A) -> Result<bool>,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    if let Err(e) = install_stop_handlers() {
        eprintln!("{name}: {e:#}");
        return ExitCode::FAILURE;
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Every guard (mounts, scratch directory, collector) is dropped inside run().
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!(
                "{name}: interrupted; mounts, scratch files and the collector are cleaned up"
            );
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP only set a flag; the long loops poll it ([`check_stop`]) and unwind
/// through the guards, so cleanup always runs.
pub fn install_stop_handlers() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&raw mut sa.sa_mask);
            if libc::sigaction(sig, &raw const sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error()).context("installing a signal handler");
            }
        }
    }
    Ok(())
}

/// The run was stopped by a signal (the caller exits 130 after cleanup).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

pub fn check_stop() -> Result<()> {
    if stop_requested() {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

// ------------------------------------------------------------------------------------- mounts --

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths made here have no NUL")
}

fn mount(source: &str, target: &Path, fstype: &str, data: &str) -> io::Result<()> {
    let (src, fs_c, data_c) = (
        CString::new(source)?,
        CString::new(fstype)?,
        CString::new(data)?,
    );
    let tgt = cpath(target);
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs_c.as_ptr(),
            0,
            data_c.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn umount(target: &Path) {
    let tgt = cpath(target);
    // SAFETY: a valid path; MNT_DETACH as the fallback so a busy mount is still released.
    unsafe {
        if libc::umount2(tgt.as_ptr(), 0) != 0 {
            libc::umount2(tgt.as_ptr(), libc::MNT_DETACH);
        }
    }
}

pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
}

/// `base/cowprof-bench-<pid>`, on a tmpfs of its own if asked; unmounted and removed on drop.
pub struct Scratch {
    pub root: PathBuf,
    tmpfs: bool,
}

impl Scratch {
    pub fn create(base: &Path, tmpfs_bytes: Option<u64>) -> Result<Self> {
        let base = base
            .canonicalize()
            .with_context(|| format!("scratch base {}", base.display()))?;
        let root = base.join(format!("cowprof-bench-{}", std::process::id()));
        fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        let mut s = Self { root, tmpfs: false };
        if let Some(bytes) = tmpfs_bytes {
            mount(
                "cowprof-bench",
                &s.root,
                "tmpfs",
                &format!("size={bytes},mode=0755"),
            )
            .with_context(|| format!("mounting a tmpfs on {}", s.root.display()))?;
            s.tmpfs = true;
        }
        Ok(s)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.tmpfs {
            umount(&self.root);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

// ------------------------------------------------------------------------------ layer + storm --

pub const FILE_SIZE: usize = 4096;
/// The storm's files live in this directory of the lower layer, so the first write of a round
/// also copies up this directory: one `dir_copy_up` plus one `data_copy_up` per file.
pub const SUBDIR: &str = "d";

pub fn file_name(i: usize) -> String {
    format!("f{i:06}")
}

/// Fills `lower/d` with `n` files of 4 KiB (distinct, non-repeating content), then syncs.
pub fn make_lower(lower: &Path, n: usize) -> Result<()> {
    let dir = lower.join(SUBDIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut block = vec![0u8; FILE_SIZE];
    for i in 0..n {
        if i % 256 == 0 {
            check_stop()?;
        }
        let seed = (i as u32).wrapping_mul(0x9e37_79b9);
        for (j, b) in block.iter_mut().enumerate() {
            *b = ((j as u32 ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        let p = dir.join(file_name(i));
        fs::write(&p, &block).with_context(|| format!("writing {}", p.display()))?;
    }
    sync();
    Ok(())
}

/// A fresh overlay (new upper and work, the given lower) at `dir/merged`; unmounted and `dir`
/// removed on drop.
pub struct Overlay {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    pub fn mount(dir: &Path, lower: &Path) -> Result<Self> {
        fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ov = Self {
            dir: dir.to_owned(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            mounted: false,
        };
        for d in [&ov.upper, &ov.work, &ov.merged] {
            fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // Like Docker's overlay2 (and cowprof's own scenario): index=off where the kernel has it.
        let mut options = Vec::new();
        if Path::new("/sys/module/overlay/parameters/index").exists() {
            options.push("index=off".to_owned());
        }
        options.push(format!("lowerdir={}", lower.display()));
        options.push(format!("upperdir={}", ov.upper.display()));
        options.push(format!("workdir={}", ov.work.display()));
        let options = options.join(",");
        mount("overlay", &ov.merged, "overlay", &options)
            .with_context(|| format!("mount -t overlay on {} ({options})", ov.merged.display()))?;
        ov.mounted = true;
        Ok(ov)
    }

    /// The storm's targets, as C strings made before the clock starts.
    pub fn storm_paths(&self, n: usize) -> Vec<CString> {
        let dir = self.merged.join(SUBDIR);
        (0..n).map(|i| cpath(&dir.join(file_name(i)))).collect()
    }

    /// How many files of the storm's directory are in the upper layer now.
    pub fn copied_up(&self) -> Result<usize> {
        let d = self.upper.join(SUBDIR);
        match fs::read_dir(&d) {
            Ok(rd) => Ok(rd
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_file()))
                })
                .count()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).with_context(|| format!("reading {}", d.display())),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            umount(&self.merged);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Wall (monotonic) and CPU time (`CLOCK_THREAD_CPUTIME_ID`, user + system of the calling
/// thread) of one timed loop.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub wall: Duration,
    pub cpu: Duration,
}

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    // SAFETY: a zeroed timespec is valid; the clock id is a constant.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `n` getppid() calls: an unrelated process's syscalls, which every syscall hook sees.
pub fn getppid_loop(n: usize) -> Result<Timed> {
    let (c0, start) = (thread_cpu(), Instant::now());
    for i in 0..n {
        if i % 65536 == 0 {
            check_stop()?;
        }
        // SAFETY: no arguments; the raw syscall avoids any libc caching.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    Ok(Timed {
        wall: start.elapsed(),
        cpu: thread_cpu().saturating_sub(c0),
    })
}

/// The storm: for each path, open(O_WRONLY|O_APPEND) + write 1 byte + close; the first open of
/// a lower file for write is its copy-up. Returns the wall and thread CPU time of the loop.
pub fn storm(paths: &[CString]) -> Result<Timed> {
    let c0 = thread_cpu();
    let start = Instant::now();
    for (i, p) in paths.iter().enumerate() {
        if i % 256 == 0 {
            check_stop()?;
        }
        // SAFETY: a NUL-terminated path; the fd is closed below on every path.
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("open {p:?}"));
        }
        // SAFETY: a 1-byte buffer that lives across the call; fd is ours.
        let n = unsafe { libc::write(fd, b"+".as_ptr().cast(), 1) };
        let err = io::Error::last_os_error();
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        if n != 1 {
            return Err(err).with_context(|| format!("write {p:?}"));
        }
    }
    Ok(Timed {
        wall: start.elapsed(),
        cpu: thread_cpu().saturating_sub(c0),
    })
}

/// --cowprof, else $COWPROF_BIN, else the workspace's target/release/cowprof, else target/debug.
pub fn cowprof_bin(arg: Option<&Path>) -> Result<PathBuf> {
    let explicit = arg
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("COWPROF_BIN").map(PathBuf::from));
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("cowprof binary {} does not exist", p.display());
        }
        return Ok(p);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for rel in ["target/release/cowprof", "target/debug/cowprof"] {
        let p = ws.join(rel);
        if p.is_file() {
            return Ok(p.canonicalize().unwrap_or(p));
        }
    }
    bail!("no cowprof binary: run `cargo build --release -p profiler`, or give --cowprof PATH or COWPROF_BIN")
}

// ---------------------------------------------------------------------------------- collector --

/// What one `cowprof record --json` session produced, read after it exited.
#[derive(Debug, Clone)]
pub struct CollectorRun {
    pub start: Value,
    pub summary: Option<Value>,
    /// All `"type":"event"` lines.
    pub event_lines: u64,
    /// Event lines on the overlay this round mounted, and by kind.
    pub ours: u64,
    pub ours_by_kind: BTreeMap<String, u64>,
    /// Lines that were not JSON, or JSON of an unknown type.
    pub odd_lines: u64,
    /// Sum of the summary's `drops` counters (ring buffer, op table, windows, malformed).
    pub dropped: u64,
    /// `VmHWM` of the collector just before SIGINT, KiB.
    pub vmhwm_kib: Option<u64>,
    /// `VmRSS` just before SIGINT (steady state after the storm), KiB.
    pub vmrss_kib: Option<u64>,
    /// Peak RSS of the collector, KiB: its `VmHWM` last read before it exited (see
    /// `TracerChild::peak_rss_kib`; `wait4`'s `ru_maxrss` only if it was never read).
    pub maxrss_kib: u64,
    /// User + system CPU time, from `wait4`'s rusage.
    pub cpu: Duration,
    /// `cpu` less what it had used when it said it was attached: the cost of the events.
    pub cpu_after_start: Option<Duration>,
    /// [`Output::Metrics`]: the collector's CPU time spent answering the bench's own scrapes
    /// after the storm (which check the counts), part of `cpu_after_start`.
    pub scrape_cpu: Option<Duration>,
    /// Events and drops were counted (JSON lines or the metrics page; not for the table).
    pub counted: bool,
    pub output: Output,
    /// CPU time (user + system) the collector used between its "start" line and SIGINT, i.e.
    /// while the storm ran (None if /proc could not be read).
    pub storm_cpu: Option<Duration>,
    /// From spawn to the "start" line (load, verify, attach).
    pub attach_time: Duration,
    /// From SIGINT to the collector's exit (reading what is left of the ring buffer, the summary).
    pub stop_time: Duration,
    pub exit_status: i32,
}

impl CollectorRun {
    /// What is wrong with the session itself, whatever the workload: events dropped, with JSON
    /// no summary line or one that does not count every event line, lines that are not the
    /// collector's, an exit status other than 0. Each line begins with `label`.
    pub fn problems(&self, label: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.counted && self.dropped != 0 {
            out.push(format!(
                "{label}: the collector dropped {} events: {}",
                self.dropped,
                self.summary
                    .as_ref()
                    .map_or(Value::Null, |s| s["drops"].clone())
            ));
        }
        if self.output == Output::Json {
            match &self.summary {
                None => out.push(format!("{label}: no summary line from the collector")),
                Some(s) if s["events"].as_u64() != Some(self.event_lines) => out.push(format!(
                    "{label}: the summary says {} events, the collector printed {} event lines",
                    s["events"], self.event_lines
                )),
                Some(_) => {}
            }
            if self.odd_lines != 0 {
                out.push(format!(
                    "{label}: {} unparsable or unknown lines from the collector",
                    self.odd_lines
                ));
            }
        }
        if self.exit_status != 0 {
            out.push(format!(
                "{label}: the collector exited with status {}",
                self.exit_status
            ));
        }
        out
    }
}

/// What the collector prints, and so what it spends its CPU on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `record --json`: every event as a JSON line (checked exactly after the round).
    Json,
    /// `record`: the table.
    Table,
    /// `record --quiet --metrics-addr 127.0.0.1:PORT`: nothing on stdout; the counters are
    /// scraped once after the storm and checked.
    Metrics,
}

impl Output {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "table" => Some(Self::Table),
            "metrics" => Some(Self::Metrics),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Table => "table",
            Self::Metrics => "metrics",
        }
    }
}

/// `cowprof record [--json | --quiet --metrics-addr] [--backend B]` as a child process (own
/// process group, SIGTERM if this process dies). Its stdout goes to a file that is read only
/// after it exited, so no reader competes with the storm for the CPU. Killed and reaped on drop
/// if still running.
pub struct Collector {
    child: TracerChild,
    output: Output,
    out_path: PathBuf,
    ready_path: PathBuf,
    metrics_port: u16,
    start: Option<Value>,
    spawned: Instant,
    attach_time: Duration,
    cpu_at_start: Option<Duration>,
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl Collector {
    /// `dir` holds the output file (and the readiness file of [`Output::Metrics`]).
    /// `extra`: more `record` options (e.g. `--no-phases`).
    pub fn spawn(
        bin: &Path,
        backend: Option<&str>,
        extra: &[String],
        output: Output,
        dir: &Path,
    ) -> Result<Self> {
        let out_path = dir.join("collector.out");
        let ready_path = dir.join("collector.ready");
        let _ = fs::remove_file(&ready_path);
        let mut metrics_port = 0;
        let mut cmd = Command::new(bin);
        cmd.arg("record");
        match output {
            Output::Json => {
                cmd.arg("--json");
            }
            Output::Table => {}
            Output::Metrics => {
                metrics_port = free_port()?;
                cmd.args([
                    "--quiet",
                    "--metrics-addr",
                    &format!("127.0.0.1:{metrics_port}"),
                ]);
            }
        }
        if let Some(b) = backend {
            cmd.args(["--backend", b]);
        }
        cmd.args(extra);
        if output == Output::Metrics {
            // Nothing is printed in quiet mode: the command record runs once attached says so.
            cmd.args([
                "--",
                "/bin/sh",
                "-c",
                &format!(": > '{}'; exec sleep 86400", ready_path.display()),
            ]);
        }
        let file = fs::File::create(&out_path)
            .with_context(|| format!("creating {}", out_path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::inherit());
        let child = TracerChild::spawn(cmd, &format!("{} record", bin.display()))?;
        Ok(Self {
            child,
            output,
            out_path,
            ready_path,
            metrics_port,
            start: None,
            spawned: Instant::now(),
            attach_time: Duration::ZERO,
            cpu_at_start: None,
        })
    }

    /// The start line (JSON), the table's header line, or the readiness file, if there yet.
    fn started(&self) -> Option<Value> {
        match self.output {
            Output::Metrics => self
                .ready_path
                .exists()
                .then(|| serde_json::json!({"type": "start"})),
            Output::Json => fs::read_to_string(&self.out_path)
                .ok()?
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v.get("type").and_then(Value::as_str) == Some("start")),
            Output::Table => {
                let s = fs::read_to_string(&self.out_path).ok()?;
                let l = s.lines().find(|l| l.starts_with("cowprof: backend "))?;
                let backend = l["cowprof: backend ".len()..].split(' ').next()?.to_owned();
                Some(serde_json::json!({"type": "start", "backend": backend}))
            }
        }
    }

    /// Waits for the collector to say its probes are attached, polling the stop flag.
    pub fn wait_start(&mut self, timeout: Duration) -> Result<&Value> {
        let t0 = Instant::now();
        loop {
            if let Some(v) = self.started() {
                self.attach_time = self.spawned.elapsed();
                self.cpu_at_start = self.child.cpu_so_far();
                return Ok(self.start.insert(v));
            }
            if let Some((status, _)) = self.child.try_reap() {
                bail!(
                    "cowprof record exited (status {}) before attaching; see its message above",
                    exit_code(status)
                );
            }
            check_stop()?;
            if t0.elapsed() > timeout {
                bail!("cowprof record did not attach within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.pid()
    }

    /// Sum of the samples of each named counter on the collector's /metrics page.
    fn scrape(&self, names: &[&str]) -> Result<Vec<f64>> {
        use std::io::Write as _;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .context("connecting to the collector's metrics endpoint")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(names
            .iter()
            .map(|n| {
                body.lines()
                    .filter(|l| {
                        l.strip_prefix(n)
                            .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .collect())
    }

    /// User + system CPU time of the whole collector so far.
    pub fn cpu_so_far(&self) -> Option<Duration> {
        self.child.cpu_so_far()
    }

    /// A `/proc/PID/status` field in KiB (`VmHWM` = peak RSS so far, `VmRSS` = now).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        self.child.status_kib(field)
    }

    /// SIGINT, wait for the summary and the exit, and count what came out. Events on the mount
    /// at `merged` are "ours"; others (another overlay on this machine) are counted apart. With
    /// [`Output::Metrics`] the counters are scraped just before SIGINT (all mounts: `ours` is the
    /// total); with [`Output::Table`] nothing is counted.
    pub fn stop(mut self, merged: &Path, timeout: Duration) -> Result<CollectorRun> {
        let (vmhwm_kib, vmrss_kib) = (self.status_kib("VmHWM"), self.status_kib("VmRSS"));
        let storm_cpu = self
            .cpu_so_far()
            .zip(self.cpu_at_start)
            .map(|(now, then)| now.saturating_sub(then));
        // The page lags the kernel by what the collector has not read yet: scrape until the
        // counts stop changing (100 ms apart, at most 5 s).
        let before_scrapes = self.cpu_so_far();
        let scraped = if self.output == Output::Metrics {
            let names = [
                "cowprof_copy_ups_total",
                "cowprof_whiteouts_total",
                "cowprof_dropped_events_total",
            ];
            let mut last = self.scrape(&names)?;
            let t = Instant::now();
            loop {
                thread::sleep(Duration::from_millis(100));
                let now = self.scrape(&names)?;
                if now == last || t.elapsed() > Duration::from_secs(5) {
                    break Some(now);
                }
                last = now;
            }
        } else {
            None
        };
        let scrape_cpu = scraped
            .as_ref()
            .and_then(|_| Some(self.cpu_so_far()?.saturating_sub(before_scrapes?)));
        let t0 = Instant::now();
        let Some((status, ru)) = self.child.stop(libc::SIGINT, timeout) else {
            bail!("cowprof record did not exit within {timeout:?} of SIGINT (killed)");
        };
        let stop_time = t0.elapsed();
        let out = fs::read(&self.out_path)
            .with_context(|| format!("reading {}", self.out_path.display()))?;
        let _ = fs::remove_file(&self.out_path);
        let start = self
            .start
            .take()
            .ok_or_else(|| anyhow!("stop() before a start line"))?;
        let cpu = rusage_cpu(&ru);
        let mut run = CollectorRun {
            start,
            summary: None,
            event_lines: 0,
            ours: 0,
            ours_by_kind: BTreeMap::new(),
            odd_lines: 0,
            dropped: 0,
            vmhwm_kib,
            vmrss_kib,
            maxrss_kib: self
                .child
                .peak_rss_kib()
                .unwrap_or_else(|| u64::try_from(ru.ru_maxrss).unwrap_or(0)),
            cpu,
            cpu_after_start: self.cpu_at_start.map(|c| cpu.saturating_sub(c)),
            scrape_cpu,
            storm_cpu,
            attach_time: self.attach_time,
            stop_time,
            exit_status: exit_code(status),
            counted: self.output != Output::Table,
            output: self.output,
        };
        if let Some(v) = scraped {
            run.ours = (v[0] + v[1]) as u64;
            run.event_lines = run.ours;
            run.dropped = v[2] as u64;
            return Ok(run);
        }
        if self.output == Output::Table {
            return Ok(run);
        }
        let merged = merged
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 mount point"))?;
        for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                run.odd_lines += 1;
                continue;
            };
            match v.get("type").and_then(Value::as_str) {
                Some("start") => {}
                Some("event") => {
                    run.event_lines += 1;
                    if v.get("mount_point").and_then(Value::as_str) == Some(merged) {
                        run.ours += 1;
                        let kind = v
                            .get("kind")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_owned();
                        *run.ours_by_kind.entry(kind).or_default() += 1;
                    }
                }
                Some("summary") => {
                    run.dropped = v
                        .get("drops")
                        .and_then(Value::as_object)
                        .map_or(0, |d| d.values().filter_map(Value::as_u64).sum());
                    run.summary = Some(v);
                }
                _ => run.odd_lines += 1,
            }
        }
        Ok(run)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // The child stops itself (SIGTERM, then SIGKILL) when it is dropped after this.
        let _ = fs::remove_file(&self.out_path);
        let _ = fs::remove_file(&self.ready_path);
    }
}

// ----------------------------------------------------------------------------------- tracers --

/// Other tracers running on this machine (processes named cowprof or bpftrace, other than this
/// process's own children): their probes slow down baseline and attached rounds alike.
pub fn other_tracers() -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1).unwrap_or("");
        if (comm == "cowprof" || comm == "bpftrace") && ppid != me {
            out.push(format!("{comm}[{pid}]"));
        }
    }
    out.sort();
    out
}

/// Tracing programs loaded now (kprobe, tracepoint, perf event, raw tracepoint, tracing: the kinds a
/// tracer attaches), by name: called before anything of the bench's own is loaded, each is another
/// tracer's, whatever its process is called (a cowprof binary renamed, a bpftrace run elsewhere).
pub fn foreign_tracing_programs() -> Vec<String> {
    // BPF_PROG_TYPE_KPROBE, TRACEPOINT, PERF_EVENT, RAW_TRACEPOINT, RAW_TRACEPOINT_WRITABLE, TRACING.
    const TRACING_TYPES: [u32; 6] = [2, 5, 7, 17, 24, 26];
    let mut out: Vec<String> = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| TRACING_TYPES.contains(&(p.program_type() as u32)))
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect();
    out.sort();
    out
}

// ------------------------------------------------------------------------------ BPF statistics --

/// BPF run-time statistics on while this lives (`BPF_ENABLE_STATS`, the same switch as
/// `kernel.bpf_stats_enabled=1`, released with its fd even if this process dies): the kernel
/// then times every program run (`run_time_ns`, `run_cnt` in its prog info).
pub struct BpfStats {
    _fd: std::os::fd::OwnedFd,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|e| anyhow!("enabling BPF run-time statistics: {e}"))?;
        Ok(Self { _fd: fd })
    }
}

/// One loaded BPF program, from its prog info.
#[derive(Debug, Clone)]
pub struct ProgInfo {
    pub id: u64,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub verified_insns: u64,
}

/// Every loaded BPF program.
pub fn bpf_progs() -> Result<BTreeMap<u64, ProgInfo>> {
    let mut m = BTreeMap::new();
    for p in aya::programs::loaded_programs() {
        // A program unloaded while we iterate is skipped.
        let Ok(p) = p else { continue };
        let info = ProgInfo {
            id: u64::from(p.id()),
            name: p.name_as_str().unwrap_or("?").to_owned(),
            run_time_ns: u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX),
            run_cnt: p.run_count(),
            verified_insns: u64::from(p.verified_instruction_count().unwrap_or(0)),
        };
        m.insert(info.id, info);
    }
    Ok(m)
}

/// Per program of `ids`: (name, run time ns, runs, verified insns) spent between two snapshots.
/// The kernel keeps 15 characters of a name, so a name that several of the programs share is
/// suffixed with the program's rank among them in load order (`ids` ascending):
/// `cowprof_tp_ctim:1`. (cowprof loads programs on several threads, but those the kernel names
/// alike one after another, in a fixed order.)
pub fn bpf_delta(
    before: &BTreeMap<u64, ProgInfo>,
    after: &BTreeMap<u64, ProgInfo>,
    ids: &[u64],
) -> Vec<(String, u64, u64, u64)> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    let name_of = |id: &u64| after.get(id).map(|a| a.name.as_str());
    let mut rank: BTreeMap<&str, usize> = BTreeMap::new();
    ids.iter()
        .filter_map(|id| {
            let a = after.get(id)?;
            let b = before.get(id);
            let shared = ids
                .iter()
                .filter(|o| name_of(o) == Some(a.name.as_str()))
                .count();
            let k = rank.entry(a.name.as_str()).or_insert(0);
            let label = if shared > 1 {
                format!("{}:{k}", a.name)
            } else {
                a.name.clone()
            };
            *k += 1;
            Some((
                label,
                a.run_time_ns - b.map_or(0, |b| b.run_time_ns),
                a.run_cnt - b.map_or(0, |b| b.run_cnt),
                a.verified_insns,
            ))
        })
        .collect()
}

pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(id: u64, name: &str, t: u64, n: u64) -> (u64, ProgInfo) {
        (
            id,
            ProgInfo {
                id,
                name: name.into(),
                run_time_ns: t,
                run_cnt: n,
                verified_insns: 7,
            },
        )
    }

    #[test]
    fn shared_names_are_ranked_among_themselves() {
        let before: BTreeMap<u64, ProgInfo> =
            [prog(12, "cowprof_tp_ctim", 100, 1)].into_iter().collect();
        // Verification ended in this order: the syscall program between the two ctime ones.
        let after: BTreeMap<u64, ProgInfo> = [
            prog(12, "cowprof_tp_ctim", 600, 6),
            prog(13, "cowprof_sys_exi", 50, 5),
            prog(14, "cowprof_tp_ctim", 40, 4),
            prog(15, "other", 1, 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            bpf_delta(&before, &after, &[14, 13, 12]),
            vec![
                ("cowprof_tp_ctim:0".to_owned(), 500, 5, 7),
                ("cowprof_sys_exi".to_owned(), 50, 5, 7),
                ("cowprof_tp_ctim:1".to_owned(), 40, 4, 7),
            ]
        );
    }
}
