//! `image forecast --verify`: the trace's operations replayed for real on an image's mounted layer
//! stack (fresh upper), each one timed, and what it left in the upper directory classified
//! against a second, untouched mount of the same layers (the kernel's own view of the image).
//!
//! Every path is opened below the merged directory as if it were `/` (`RESOLVE_IN_ROOT`), the
//! parent first, then the last component with `*at` calls that never follow a symlink.

use std::{collections::BTreeMap, fs, os::unix::fs::MetadataExt as _, path::Path, time::Instant};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};

use super::{
    compare::ImageStack,
    forecast::{KindTotal, Op, Outcome, Trace},
    io_err,
    store::{ImageRecord, Store},
    ImageError,
};
use crate::host::cancel::Cancel;

/// What one replay measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub by_kind: BTreeMap<String, KindTotal>,
    pub copy_ups: u64,
    pub whiteouts: u64,
    /// Bytes of the lower files copied up (their size in the untouched mount).
    pub bytes: u64,
    /// Wall time of the replayed syscalls, summed.
    pub total_ns: u64,
    /// Operations that failed (e.g. a delete of a path absent in this image).
    pub failed: u64,
    /// Wall time of each replayed operation, in the trace's order.
    pub op_ns: Vec<u64>,
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

/// Replays `trace` once on a fresh mount of `rec` and measures what it copied up.
pub fn verify(
    store: &Store,
    rec: &ImageRecord,
    trace: &Trace,
    cancel: Option<&Cancel>,
) -> Result<Measured, ImageError> {
    let pristine = ImageStack::mount(store, rec)?;
    let stack = ImageStack::mount(store, rec)?;
    let root = rustix::fs::open(
        &stack.merged,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("opening", &stack.merged)(e.into()))?;
    let mut m = Measured::default();
    let mut seen: BTreeMap<String, (u32, bool)> = BTreeMap::new();
    for t in &trace.ops {
        if cancel.is_some_and(Cancel::is_set) {
            return Err(ImageError::Interrupted);
        }
        let start = Instant::now();
        let result = replay_one(&root, t.op, &t.path);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        m.total_ns += ns;
        m.op_ns.push(ns);
        if result.is_err() {
            m.failed += 1;
        }
        // What this operation added to the upper directory.
        let now = scan_upper(&stack.upper);
        for (p, k) in &now {
            if seen.get(p) == Some(k) {
                continue;
            }
            let lower = fs::symlink_metadata(pristine.merged.join(p.trim_start_matches('/'))).ok();
            let outcome = match (k, &lower) {
                ((0, _), _) => Some(Outcome::Whiteout),
                ((_, true), Some(_)) => Some(Outcome::OpaqueDir),
                (_, None) => None,
                ((0o040_000, _), Some(_)) => Some(Outcome::DirCopyUp),
                ((0o100_000, _), Some(l)) if l.is_file() => Some(Outcome::DataCopyUp),
                (_, Some(_)) => Some(Outcome::SpecialCopyUp),
            };
            if let Some(o) = outcome {
                // A directory made opaque was copied up before: count the change only.
                if o == Outcome::OpaqueDir && seen.contains_key(p) {
                    let d = m
                        .by_kind
                        .entry(Outcome::DirCopyUp.name().into())
                        .or_default();
                    d.count = d.count.saturating_sub(1);
                }
                let total = m.by_kind.entry(o.name().into()).or_default();
                total.count += 1;
                if o == Outcome::DataCopyUp {
                    let b = lower.as_ref().map_or(0, fs::Metadata::len);
                    total.bytes += b;
                    m.bytes += b;
                }
            }
        }
        seen = now;
    }
    let c = |o: Outcome| m.by_kind.get(o.name()).map_or(0, |k| k.count);
    m.copy_ups = c(Outcome::DataCopyUp) + c(Outcome::DirCopyUp) + c(Outcome::SpecialCopyUp);
    m.whiteouts = c(Outcome::Whiteout) + c(Outcome::OpaqueDir);
    drop(root);
    drop(stack);
    drop(pristine);
    Ok(m)
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
    /// Counts and bytes equal in every run.
    pub counts_match: bool,
    pub predicted_total_ns: u64,
    /// Median over the runs.
    pub measured_total_ns: u64,
    pub measured_min_ns: u64,
    pub measured_max_ns: u64,
    /// (predicted − measured) / measured, percent.
    pub time_error_pct: f64,
    pub runs: Vec<Measured>,
}

impl Check {
    #[must_use]
    pub fn new(f: &super::forecast::Forecast, runs: Vec<Measured>) -> Self {
        let mut t: Vec<u64> = runs.iter().map(|m| m.total_ns).collect();
        t.sort_unstable();
        let med = t.get(t.len() / 2).copied().unwrap_or(0);
        let first = runs.first().cloned().unwrap_or_default();
        let counts_match = runs
            .iter()
            .all(|m| m.copy_ups == f.copy_ups && m.whiteouts == f.whiteouts && m.bytes == f.bytes);
        #[expect(clippy::cast_precision_loss, reason = "a percentage")]
        let err = if med == 0 {
            0.0
        } else {
            (f.predicted_total_ns as f64 - med as f64) / med as f64 * 100.0
        };
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
            time_error_pct: err,
            runs,
        }
    }
}

/// The predicted-vs-measured table.
pub fn render(checks: &[Check], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use crate::fmt;
    writeln!(
        out,
        "\nverify: {:<32} {:>13} {:>13} {:>21} {:>10} {:>22} {:>7}",
        "IMAGE", "COPY-UPS", "WHITEOUTS", "BYTES", "PREDICTED", "MEASURED (min-max)", "ERROR"
    )?;
    for c in checks {
        writeln!(
            out,
            "        {:<32} {:>13} {:>13} {:>21} {:>10} {:>22} {:>6.1}%{}",
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
            c.time_error_pct,
            if c.counts_match {
                ""
            } else {
                "  COUNTS DIFFER"
            }
        )?;
    }
    writeln!(
        out,
        "(predicted/measured; measured time: median of {} replays, syscall wall time)",
        checks.first().map_or(0, |c| c.runs.len())
    )
}
