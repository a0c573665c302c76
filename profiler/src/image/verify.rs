//! `image forecast --verify`: the trace's operations replayed for real on an image's mounted
//! layer stack (fresh upper) by a child process (`cowprof __replay`: the probes ignore cowprof's
//! own process), recorded by the eBPF probes as `record` records (the lab's kernel tap), and what
//! the replay left in the upper directory classified against a second, untouched mount of the
//! same layers (the kernel's own view of the image) as an independent check of the counts.
//!
//! Every path is opened below the merged directory as if it were `/` (`RESOLVE_IN_ROOT`), the
//! parent first, then the last component with `*at` calls that never follow a symlink.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Instant,
};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};

use super::{
    compare::ImageStack,
    forecast::{Op, Outcome, Trace},
    store::{ImageRecord, Store},
    ImageError,
};
use crate::{
    event::Kind,
    host::{cancel::Cancel, child::JsonChild},
    pipeline::tap::KernelTap,
};

/// One kind of event the probes recorded during a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindMeasured {
    pub count: u64,
    pub bytes: u64,
    /// Kernel-side latency of these events, summed.
    pub latency_ns: u64,
}

/// One event the probes recorded during a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredEvent {
    pub path: String,
    pub kind: String,
    pub bytes: u64,
    pub latency_ns: u64,
}

/// What the upper directory shows after the replay, classified against the untouched mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpperCounts {
    pub copy_ups: u64,
    pub whiteouts: u64,
    pub bytes: u64,
}

/// What one replay measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The probes' events on this replay's mount, by kind (`deferred_data_copy_up` counts as
    /// `data_copy_up`).
    pub by_kind: BTreeMap<String, KindMeasured>,
    /// Copy-ups the probes recorded (data, metacopy, special, directory).
    pub copy_ups: u64,
    /// Whiteouts and opaque directories the probes recorded.
    pub whiteouts: u64,
    /// Bytes the probes saw copied up.
    pub bytes: u64,
    /// Kernel-side latency of every copy-up and whiteout, summed: what the forecast predicts.
    pub total_ns: u64,
    /// Wall time of the replayed syscalls, summed (user side, in the replaying process).
    pub syscall_ns: u64,
    /// Operations that failed (e.g. a delete of a path absent in this image).
    pub failed: u64,
    /// Events lost by the probes during this replay (ring buffer or tables full).
    pub drops: u64,
    /// The upper directory's own account, an independent check of the probes' counts.
    pub upper: UpperCounts,
    /// Every event, in the order recorded.
    pub events: Vec<MeasuredEvent>,
}

/// One operation sent to the replaying child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayRequest {
    pub op: Op,
    pub path: String,
}

/// The child's answer to one operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayReply {
    /// Wall time of the operation's syscalls.
    pub ns: u64,
    pub error: Option<String>,
}

/// Opens the parent of `p` below `root` (`RESOLVE_IN_ROOT`), creating missing directories when
/// `create`; returns it and the last component.
fn parent_of(
    root: &rustix::fd::OwnedFd,
    p: &str,
    create: bool,
) -> std::io::Result<(rustix::fd::OwnedFd, String)> {
    let rel = p.trim_start_matches('/');
    let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let open = |d: &str| {
        rustix::fs::openat2(
            root,
            if d.is_empty() { "." } else { d },
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        )
    };
    match open(dir) {
        Err(rustix::io::Errno::NOENT) if create => {
            let mut cur = String::new();
            for c in dir.split('/') {
                if !cur.is_empty() {
                    cur.push('/');
                }
                cur.push_str(c);
                let (pd, n) = parent_of(root, &cur, false)?;
                match rustix::fs::mkdirat(&pd, n.as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((open(dir)?, name.to_owned()))
        }
        r => Ok((r?, name.to_owned())),
    }
}

/// One operation as the workload did it: writes open the file for append (and write nothing, so
/// the copied-up size is the lower size), chmod/chown keep the mode and owner.
fn replay_one(root: &rustix::fd::OwnedFd, op: Op, p: &str) -> std::io::Result<()> {
    let creates = matches!(op, Op::Write | Op::Meta | Op::Dir | Op::Create | Op::Opaque);
    let (dir, name) = parent_of(root, p, creates)?;
    let name = name.as_str();
    let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW);
    match (op, st) {
        (Op::Delete, Ok(s)) => {
            let is_dir = rustix::fs::FileType::from_raw_mode(s.st_mode).is_dir();
            rustix::fs::unlinkat(
                &dir,
                name,
                if is_dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                },
            )?;
        }
        (Op::Delete, Err(e)) => return Err(e.into()),
        (Op::Opaque, Ok(_)) => {
            rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?;
            rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))?;
        }
        (Op::Dir | Op::Opaque, Err(rustix::io::Errno::NOENT)) => {
            rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))?;
        }
        (_, Err(rustix::io::Errno::NOENT)) => {
            rustix::fs::openat(
                &dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
        }
        (_, Err(e)) => return Err(e.into()),
        (_, Ok(s)) => {
            let ft = rustix::fs::FileType::from_raw_mode(s.st_mode);
            if ft.is_file() && op != Op::Meta {
                rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
            } else if ft.is_file() || ft.is_dir() {
                rustix::fs::chmodat(
                    &dir,
                    name,
                    Mode::from_raw_mode(s.st_mode & 0o7777),
                    AtFlags::empty(),
                )?;
            } else {
                rustix::fs::chownat(&dir, name, None, None, AtFlags::SYMLINK_NOFOLLOW)?;
            }
        }
    }
    Ok(())
}

/// The upper directory's entries: path → (file type bits, is opaque).
fn scan_upper(upper: &Path) -> BTreeMap<String, (u32, bool)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(upper.to_owned(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            let p = format!("{rel}/{}", e.file_name().to_string_lossy());
            let opaque = m.is_dir()
                && rustix::fs::lgetxattr(e.path(), "trusted.overlay.opaque", &mut [0u8; 4])
                    .is_ok_and(|n| n == 1);
            if m.is_dir() {
                stack.push((e.path(), p.clone()));
            }
            let is_whiteout = m.file_type().is_char_device_zero(&m);
            out.insert(
                p,
                (if is_whiteout { 0 } else { m.mode() & 0o170_000 }, opaque),
            );
        }
    }
    out
}

trait CharZero {
    fn is_char_device_zero(&self, m: &fs::Metadata) -> bool;
}

impl CharZero for fs::FileType {
    fn is_char_device_zero(&self, m: &fs::Metadata) -> bool {
        use std::os::unix::fs::FileTypeExt as _;
        self.is_char_device() && m.rdev() == 0
    }
}

/// The replaying child's main loop: `cowprof __replay MERGED` reads [`ReplayRequest`] lines on
/// stdin and answers each with a [`ReplayReply`] line, until stdin closes.
pub fn replay_main(merged: &Path) -> std::io::Result<()> {
    let root = rustix::fs::open(
        merged,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let req: ReplayRequest = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("bad request {line:?}: {e}")))?;
        let start = Instant::now();
        let r = replay_one(&root, req.op, &req.path);
        let reply = ReplayReply {
            ns: u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
            error: r.err().map(|e| e.to_string()),
        };
        let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
        text.push('\n');
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

/// The replaying child: `cowprof __replay MERGED` (see [`JsonChild`]).
struct Replayer(JsonChild);

impl Replayer {
    fn spawn(merged: &Path) -> Result<Self, ImageError> {
        let args = [std::ffi::OsStr::new("__replay"), merged.as_os_str()];
        JsonChild::spawn("the replay", args)
            .map(Self)
            .map_err(|e| ImageError::Verify(e.to_string()))
    }

    fn call(&mut self, req: &ReplayRequest) -> Result<ReplayReply, ImageError> {
        self.0
            .call(req)
            .map_err(|e| ImageError::Verify(e.to_string()))
    }
}

/// Writes back and commits the filesystem that holds `dir` (`syncfs`).
fn settle(dir: &Path) {
    if let Ok(fd) = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let _ = rustix::fs::syncfs(&fd);
    }
}

/// The probes' name for what an event is, as the forecast names it.
fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::DeferredDataCopyUp => Outcome::DataCopyUp.name(),
        k => k.as_str(),
    }
}

/// Real-time priority for the calibration's lab worker and the replays: `SCHED_FIFO` at
/// `priority` for this process, inherited by the children it starts. On a host with more
/// runnable tasks than cores, a preempted copy-up's kernel-side time includes the wait for a CPU
/// (on tmpfs here: an 8 MiB copy-up took 3.5 ms or 7.7 ms depending on the load); under
/// `SCHED_FIFO` it does not (docs/images.md, "Measured error").
pub fn realtime(priority: i32) -> Result<(), ImageError> {
    // SAFETY: sched_param is plain data; all-zero is valid (musl has more fields than glibc).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = priority;
    // SAFETY: pid 0 is this thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(ImageError::Verify(format!(
            "--realtime {priority}: sched_setscheduler(SCHED_FIFO) failed: {e}; give a priority from 1 to 99, as root"
        )));
    }
    Ok(())
}

/// Loads and attaches the probes that record the replays (one attachment for all of them).
pub fn attach() -> Result<KernelTap, ImageError> {
    if !super::is_root() {
        return Err(ImageError::NotRoot {
            what: "--verify (it mounts each image and records the replay with the eBPF probes)",
        });
    }
    KernelTap::attach().map_err(|e| ImageError::Attach(Box::new(e)))
}

/// Replays `trace` once on a fresh mount of `rec`, recorded by `tap`.
pub fn verify(
    store: &Store,
    rec: &ImageRecord,
    trace: &Trace,
    tap: &mut KernelTap,
    cancel: Option<&Cancel>,
) -> Result<Measured, ImageError> {
    let pristine = ImageStack::mount(store, rec)?;
    let stack = ImageStack::mount(store, rec)?;
    let lowers: Vec<PathBuf> = rec
        .layers
        .iter()
        .rev()
        .map(|l| store.layer_dir(&l.diff_id))
        .collect();
    tap.register_overlay(&stack.merged, &stack.upper, &stack.work, &lowers)?;
    let mount_point = stack.merged.display().to_string();
    let drops_before = tap.drops();
    // Events from before this replay (none on this mount, but drain them).
    tap.drain();
    // Start from a committed journal and no dirty pages, as the calibration's lab does before
    // each op: else the first copy-up's fsync pays for the last replay's unmount and removal.
    settle(&stack.upper);
    let mut replayer = Replayer::spawn(&stack.merged)?;
    let mut m = Measured::default();
    let mut truth = UpperTruth::default();
    let record = |m: &mut Measured, tap: &mut KernelTap| {
        for e in tap.drain() {
            if e.mount_point.as_deref() != Some(mount_point.as_str()) {
                continue;
            }
            let name = kind_name(e.kind);
            let k = m.by_kind.entry(name.to_owned()).or_default();
            k.count += 1;
            k.bytes += e.bytes_copied;
            k.latency_ns += e.latency_ns;
            m.events.push(MeasuredEvent {
                path: format!("/{}", e.path.trim_start_matches('/')),
                kind: name.to_owned(),
                bytes: e.bytes_copied,
                latency_ns: e.latency_ns,
            });
        }
    };
    for t in &trace.ops {
        if cancel.is_some_and(Cancel::is_set) {
            return Err(ImageError::Interrupted);
        }
        let reply = replayer.call(&ReplayRequest {
            op: t.op,
            path: t.path.clone(),
        })?;
        m.syscall_ns += reply.ns;
        if reply.error.is_some() {
            m.failed += 1;
        }
        record(&mut m, tap);
        truth.observe(&stack.upper, &pristine.merged);
    }
    drop(replayer);
    record(&mut m, tap);
    m.drops = tap.drops().saturating_sub(drops_before);
    let c = |o: Outcome| m.by_kind.get(o.name()).map_or(0, |k| k.count);
    m.copy_ups = [
        Outcome::DataCopyUp,
        Outcome::Metacopy,
        Outcome::SpecialCopyUp,
        Outcome::DirCopyUp,
    ]
    .into_iter()
    .map(c)
    .sum();
    m.whiteouts = c(Outcome::Whiteout) + c(Outcome::OpaqueDir);
    m.bytes = m.by_kind.values().map(|k| k.bytes).sum();
    m.total_ns = m
        .by_kind
        .iter()
        .filter(|(k, _)| k.as_str() != Kind::CreateOverWhiteout.as_str())
        .map(|(_, v)| v.latency_ns)
        .sum();
    m.upper = truth.counts;
    drop(stack);
    drop(pristine);
    Ok(m)
}

/// The upper directory's account, kept operation by operation (a later delete may remove
/// what an earlier write copied up).
#[derive(Default)]
struct UpperTruth {
    seen: BTreeMap<String, (u32, bool)>,
    counts: UpperCounts,
}

impl UpperTruth {
    /// Classifies what the last operation added to `upper` against the untouched mount.
    fn observe(&mut self, upper: &Path, pristine: &Path) {
        let now = scan_upper(upper);
        for (p, k) in &now {
            if self.seen.get(p) == Some(k) {
                continue;
            }
            let lower = fs::symlink_metadata(pristine.join(p.trim_start_matches('/'))).ok();
            let outcome = match (k, &lower) {
                ((0, _), _) => Some(Outcome::Whiteout),
                ((_, true), Some(_)) => Some(Outcome::OpaqueDir),
                (_, None) => None,
                ((0o040_000, _), Some(_)) => Some(Outcome::DirCopyUp),
                ((0o100_000, _), Some(l)) if l.is_file() => Some(Outcome::DataCopyUp),
                (_, Some(_)) => Some(Outcome::SpecialCopyUp),
            };
            match outcome {
                Some(Outcome::Whiteout | Outcome::OpaqueDir) => self.counts.whiteouts += 1,
                Some(o) => {
                    self.counts.copy_ups += 1;
                    if o == Outcome::DataCopyUp {
                        self.counts.bytes += lower.as_ref().map_or(0, fs::Metadata::len);
                    }
                }
                None => {}
            }
        }
        self.seen = now;
    }
}

/// Predicted against measured for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub image: String,
    pub label: String,
    pub predicted_copy_ups: u64,
    pub measured_copy_ups: u64,
    pub predicted_whiteouts: u64,
    pub measured_whiteouts: u64,
    pub predicted_bytes: u64,
    pub measured_bytes: u64,
    /// The probes' counts and bytes, and the upper directory's, equal the forecast's in every
    /// run, with no event lost.
    pub counts_match: bool,
    pub predicted_total_ns: u64,
    /// Median over the runs of the kernel-side copy-up and whiteout time.
    pub measured_total_ns: u64,
    /// The smallest and largest run: with 5 runs, a 94 % distribution-free confidence interval
    /// of the median (1 − 2 · 0.5⁵).
    pub measured_min_ns: u64,
    pub measured_max_ns: u64,
    /// (predicted − measured median) / measured median, percent.
    pub time_error_pct: f64,
    /// The same against the largest and the smallest run: the error's interval.
    pub time_error_low_pct: f64,
    pub time_error_high_pct: f64,
    /// Per kind: predicted and median measured kernel time (where the error comes from).
    pub by_kind: BTreeMap<String, KindCheck>,
    pub runs: Vec<Measured>,
}

/// One kind of copy-up, predicted against measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCheck {
    pub predicted_count: u64,
    pub measured_count: u64,
    pub predicted_ns: u64,
    /// Median over the runs.
    pub measured_ns: u64,
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[expect(clippy::cast_precision_loss, reason = "a percentage")]
fn error_pct(predicted: u64, measured: u64) -> f64 {
    if measured == 0 {
        0.0
    } else {
        (predicted as f64 - measured as f64) / measured as f64 * 100.0
    }
}

impl Check {
    #[must_use]
    pub fn new(f: &super::forecast::Forecast, runs: Vec<Measured>) -> Self {
        let mut t: Vec<u64> = runs.iter().map(|m| m.total_ns).collect();
        let med = median(&mut t);
        let first = runs.first().cloned().unwrap_or_default();
        let counts_match = runs.iter().all(|m| {
            m.copy_ups == f.copy_ups
                && m.whiteouts == f.whiteouts
                && m.bytes == f.bytes
                && m.upper.copy_ups == f.copy_ups
                && m.upper.whiteouts == f.whiteouts
                && m.upper.bytes == f.bytes
                && m.drops == 0
        });
        let mut by_kind: BTreeMap<String, KindCheck> = BTreeMap::new();
        for (k, v) in &f.by_kind {
            if v.count > 0
                && super::forecast::Outcome::ALL
                    .iter()
                    .any(|o| o.name() == k && o.is_cow())
            {
                let e = by_kind.entry(k.clone()).or_default();
                e.predicted_count = v.count;
                e.predicted_ns = v.predicted_ns;
            }
        }
        for k in runs.iter().flat_map(|m| m.by_kind.keys()) {
            by_kind.entry(k.clone()).or_default();
        }
        for (k, e) in &mut by_kind {
            let mut ns: Vec<u64> = runs
                .iter()
                .map(|m| m.by_kind.get(k).map_or(0, |v| v.latency_ns))
                .collect();
            e.measured_ns = median(&mut ns);
            e.measured_count = first.by_kind.get(k).map_or(0, |v| v.count);
        }
        Self {
            image: f.image.clone(),
            label: f
                .tags_mutable
                .first()
                .cloned()
                .unwrap_or_else(|| crate::fmt::short_digest(&f.image).to_owned()),
            predicted_copy_ups: f.copy_ups,
            measured_copy_ups: first.copy_ups,
            predicted_whiteouts: f.whiteouts,
            measured_whiteouts: first.whiteouts,
            predicted_bytes: f.bytes,
            measured_bytes: first.bytes,
            counts_match,
            predicted_total_ns: f.predicted_total_ns,
            measured_total_ns: med,
            measured_min_ns: t.first().copied().unwrap_or(0),
            measured_max_ns: t.last().copied().unwrap_or(0),
            time_error_pct: error_pct(f.predicted_total_ns, med),
            time_error_low_pct: error_pct(f.predicted_total_ns, t.last().copied().unwrap_or(0)),
            time_error_high_pct: error_pct(f.predicted_total_ns, t.first().copied().unwrap_or(0)),
            by_kind,
            runs,
        }
    }
}

/// The predicted-vs-measured table.
pub fn render(checks: &[Check], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use crate::fmt;
    writeln!(
        out,
        "\nverify: {:<32} {:>13} {:>13} {:>21} {:>10} {:>22} {:>17}",
        "IMAGE",
        "COPY-UPS",
        "WHITEOUTS",
        "BYTES",
        "PREDICTED",
        "MEASURED (min-max)",
        "ERROR (interval)"
    )?;
    for c in checks {
        writeln!(
            out,
            "        {:<32} {:>13} {:>13} {:>21} {:>10} {:>22} {:>17}{}",
            c.label,
            format!("{}/{}", c.predicted_copy_ups, c.measured_copy_ups),
            format!("{}/{}", c.predicted_whiteouts, c.measured_whiteouts),
            format!(
                "{}/{}",
                fmt::bytes(c.predicted_bytes),
                fmt::bytes(c.measured_bytes)
            ),
            fmt::ns(c.predicted_total_ns),
            format!(
                "{} ({}-{})",
                fmt::ns(c.measured_total_ns),
                fmt::ns(c.measured_min_ns),
                fmt::ns(c.measured_max_ns)
            ),
            format!(
                "{:+.0}% ({:+.0}..{:+.0})",
                c.time_error_pct, c.time_error_low_pct, c.time_error_high_pct
            ),
            if c.counts_match {
                ""
            } else {
                "  COUNTS DIFFER"
            }
        )?;
    }
    writeln!(
        out,
        "(predicted/measured; measured: the probes' kernel-side copy-up and whiteout time, median of {} replays)",
        checks.first().map_or(0, |c| c.runs.len())
    )
}
