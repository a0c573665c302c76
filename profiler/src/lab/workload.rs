//! The lab's operations: what the worker process (`cowprof __lab-worker`) does and times, what the
//! bench process prepares before each measured op, and what the upper directory must hold after.
//!
//! The measured ops run in a child process because the kernel side ignores the recording process
//! itself. The bench process sends one JSON request per line on the worker's stdin and reads one
//! JSON reply per line: the op's duration on the monotonic clock, around its syscalls only.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    io::{BufRead as _, Write as _},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::Barrier,
    time::Instant,
};

use serde::{Deserialize, Serialize};

pub use crate::scenario::UpperEntry;

use super::spec::{Op, Shape};

/// Mode of every lower file (chmod changes it to [`CHMOD_MODE`]).
pub const FILE_MODE: u32 = 0o644;
pub const CHMOD_MODE: u32 = 0o640;
/// Read and copy buffer of the worker (overlay copies in 1 MiB chunks too).
const BUF: usize = 1 << 20;

/// One line on the worker's stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum Request {
    /// Run `op` on `path` (a path in the merged directory); `size` is the file's size.
    Op { op: Op, path: PathBuf, size: u64 },
    /// The physical-limit reference: read `src` and write it to the new file `dst`, fsync.
    Reference { src: PathBuf, dst: PathBuf },
    /// One thread per path, released together: each appends one byte to its path (paths may
    /// repeat: a race on one file).
    Parallel { paths: Vec<PathBuf> },
}

/// One line on the worker's stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The op's duration (for `Parallel`: wall time from the threads' release to the last one's
    /// end).
    pub ns: Option<u64>,
    pub error: Option<String>,
    /// What happened when an op has more than one legal result (`rename_dir`: `redirect` or
    /// `exdev`).
    #[serde(default)]
    pub outcome: Option<String>,
    /// `Parallel`: each thread's own op duration, in path order.
    #[serde(default)]
    pub per_thread_ns: Vec<u64>,
}

/// A timed op: its duration and, for ops with more than one legal result, which one happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    pub ns: u64,
    pub outcome: Option<&'static str>,
}

/// `rename_dir` moved the directory (the kernel wrote a redirect).
pub const OUTCOME_REDIRECT: &str = "redirect";
/// `rename_dir` failed with EXDEV (`redirect_dir` off: user space must copy the tree itself).
pub const OUTCOME_EXDEV: &str = "exdev";

/// The second name of ops that make one: `rename_file`, `rename_dir`, `link`.
pub fn second_rel(op: Op, rel: &str) -> Option<String> {
    match op {
        Op::RenameFile => Some(format!("{rel}.renamed")),
        Op::RenameDir => Some(format!("{rel}.moved")),
        Op::Link => Some(format!("{rel}.link")),
        _ => None,
    }
}

fn elapsed_ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("lab paths have no NUL")
}

/// Why a worker request failed; its text goes back to the bench process in [`Reply::error`].
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A syscall of the op failed.
    #[error("{call} {}: {source}", path.display())]
    Syscall {
        call: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `rename_file`, `rename_dir` or `link` failed (other than `rename_dir`'s legal EXDEV).
    #[error("{op} {} -> {}: {source}", from.display(), to.display())]
    SecondName {
        op: Op,
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A read op read another size than the file's.
    #[error("read {}: {read} bytes, expected {expected}", path.display())]
    ShortRead {
        path: PathBuf,
        read: u64,
        expected: u64,
    },
    /// A concurrent op sent as a single one.
    #[error("{op} runs as a Parallel request")]
    NotSingle { op: Op },
    #[error("a writer thread panicked")]
    ThreadPanicked,
    #[error("no threads")]
    NoThreads,
    /// A request line that is not a [`Request`].
    #[error("bad request: {0}")]
    BadRequest(#[source] serde_json::Error),
}

/// The error of the syscall `call` on `p` that just failed.
fn last_err(call: &'static str, p: &Path) -> WorkloadError {
    WorkloadError::Syscall {
        call,
        path: p.to_owned(),
        source: std::io::Error::last_os_error(),
    }
}

fn open(p: &Path, flags: libc::c_int) -> Result<libc::c_int, WorkloadError> {
    open_c(&cstr(p), flags, p)
}

/// `open` of a path already converted (no allocation inside a timed window).
fn open_c(c: &CString, flags: libc::c_int, p: &Path) -> Result<libc::c_int, WorkloadError> {
    // SAFETY: valid C string; the fd is closed by the caller.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, FILE_MODE) };
    if fd < 0 {
        Err(last_err("open", p))
    } else {
        Ok(fd)
    }
}

fn close(fd: libc::c_int) {
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
}

fn rc(r: libc::c_int, what: &'static str, p: &Path) -> Result<(), WorkloadError> {
    if r == 0 {
        Ok(())
    } else {
        Err(last_err(what, p))
    }
}

/// Reads `fd` to its end into `buf`; returns the bytes read.
fn read_all(fd: libc::c_int, buf: &mut [u8], p: &Path) -> Result<u64, WorkloadError> {
    let mut total = 0u64;
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return Ok(total),
            n if n > 0 => total += n.unsigned_abs() as u64,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(last_err("read", p)),
        }
    }
}

fn write_all(fd: libc::c_int, mut data: &[u8], p: &Path) -> Result<(), WorkloadError> {
    while !data.is_empty() {
        // SAFETY: data is valid for data.len() bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n > 0 {
            data = &data[n.unsigned_abs()..];
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(last_err("write", p));
        }
    }
    Ok(())
}

/// `open(O_APPEND)` + write one byte + close: the first write of `first_write` and the threads.
fn append_one(c: &CString, path: &Path) -> Result<(), WorkloadError> {
    let fd = open_c(c, libc::O_WRONLY | libc::O_APPEND, path)?;
    let w = write_all(fd, b"+", path);
    close(fd);
    w
}

/// Runs one op and returns its duration in ns (monotonic clock, syscalls only).
pub fn run_op(op: Op, path: &Path, size: u64, buf: &mut [u8]) -> Result<Timed, WorkloadError> {
    // Everything that allocates happens before the clock starts.
    let c = cstr(path);
    let second = second_rel(op, &path.to_string_lossy()).map(PathBuf::from);
    let c2 = second.as_deref().map(cstr);
    let mut outcome = None;
    let t0 = Instant::now();
    match op {
        Op::FirstWrite | Op::Rewrite => append_one(&c, path)?,
        Op::OpenTrunc => close(open_c(&c, libc::O_WRONLY | libc::O_TRUNC, path)?),
        Op::Truncate => {
            let to = libc::off_t::try_from(size / 2).unwrap_or(0);
            // SAFETY: valid C string.
            rc(unsafe { libc::truncate(c.as_ptr(), to) }, "truncate", path)?;
        }
        // SAFETY: valid C string.
        Op::Chmod => rc(
            unsafe { libc::chmod(c.as_ptr(), CHMOD_MODE) },
            "chmod",
            path,
        )?,
        Op::ReadLower | Op::ReadUpper => {
            let fd = open_c(&c, libc::O_RDONLY, path)?;
            let r = read_all(fd, buf, path);
            close(fd);
            let n = r?;
            if n != size {
                return Err(WorkloadError::ShortRead {
                    path: path.to_owned(),
                    read: n,
                    expected: size,
                });
            }
        }
        Op::Create => close(open_c(
            &c,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            path,
        )?),
        // SAFETY: valid C string.
        Op::Unlink => rc(unsafe { libc::unlink(c.as_ptr()) }, "unlink", path)?,
        Op::RmdirRecreate => {
            // SAFETY: valid C string.
            rc(unsafe { libc::rmdir(c.as_ptr()) }, "rmdir", path)?;
            // SAFETY: valid C string.
            rc(unsafe { libc::mkdir(c.as_ptr(), 0o755) }, "mkdir", path)?;
        }
        Op::RenameFile | Op::RenameDir | Op::Link => {
            let (to, to_path) = (c2.as_ref().expect("a second name"), second.as_deref());
            let to_path = to_path.expect("a second name");
            // SAFETY: valid C strings.
            let r = unsafe {
                if op == Op::Link {
                    libc::link(c.as_ptr(), to.as_ptr())
                } else {
                    libc::rename(c.as_ptr(), to.as_ptr())
                }
            };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                if op == Op::RenameDir && e.raw_os_error() == Some(libc::EXDEV) {
                    outcome = Some(OUTCOME_EXDEV);
                } else {
                    return Err(WorkloadError::SecondName {
                        op,
                        from: path.to_owned(),
                        to: to_path.to_owned(),
                        source: e,
                    });
                }
            } else if op == Op::RenameDir {
                outcome = Some(OUTCOME_REDIRECT);
            }
        }
        Op::ParallelWrite | Op::RaceWrite => {
            return Err(WorkloadError::NotSingle { op });
        }
    }
    Ok(Timed {
        ns: elapsed_ns(t0),
        outcome,
    })
}

/// Runs one appending thread per path, all released by one barrier. Returns the wall time (from
/// the first thread's start to the last thread's end, each read in its own thread) and each
/// thread's own op time, in path order.
pub fn run_parallel(paths: &[PathBuf]) -> Result<(u64, Vec<u64>), WorkloadError> {
    let barrier = Barrier::new(paths.len());
    let spans: Vec<Result<(Instant, Instant), WorkloadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| {
                let barrier = &barrier;
                s.spawn(move || {
                    let c = cstr(p);
                    barrier.wait();
                    let t0 = Instant::now();
                    append_one(&c, p).map(|()| (t0, Instant::now()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(WorkloadError::ThreadPanicked)))
            .collect()
    });
    let spans = spans.into_iter().collect::<Result<Vec<_>, _>>()?;
    let first = spans
        .iter()
        .map(|s| s.0)
        .min()
        .ok_or(WorkloadError::NoThreads)?;
    let last = spans
        .iter()
        .map(|s| s.1)
        .max()
        .ok_or(WorkloadError::NoThreads)?;
    let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    Ok((
        ns(last - first),
        spans.iter().map(|(a, b)| ns(*b - *a)).collect(),
    ))
}

/// The reference: a plain copy (read + write, 1 MiB at a time) into a new file, then fsync.
pub fn run_reference(src: &Path, dst: &Path, buf: &mut [u8]) -> Result<u64, WorkloadError> {
    let t0 = Instant::now();
    let s = open(src, libc::O_RDONLY)?;
    let d = match open(dst, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL) {
        Ok(d) => d,
        Err(e) => {
            close(s);
            return Err(e);
        }
    };
    let r = (|| {
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::read(s, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                break;
            }
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(last_err("read", src));
            }
            write_all(d, &buf[..n.unsigned_abs()], dst)?;
        }
        // SAFETY: d is open.
        rc(unsafe { libc::fsync(d) }, "fsync", dst)
    })();
    close(s);
    close(d);
    r?;
    Ok(elapsed_ns(t0))
}

/// The worker's main loop: requests on stdin, replies on stdout, until stdin closes. Dies with
/// its parent (`PR_SET_PDEATHSIG`), so a killed bench leaves no worker holding a mount busy.
pub fn worker_main(parent: u32) -> std::io::Result<()> {
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The parent may have died before the prctl took effect.
    // SAFETY: getppid has no preconditions.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        return Ok(());
    }
    let mut buf = vec![0u8; BUF];
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Op { op, path, size }) => {
                run_op(op, &path, size, &mut buf).map(|t| Reply {
                    ns: Some(t.ns),
                    outcome: t.outcome.map(str::to_owned),
                    ..Reply::default()
                })
            }
            Ok(Request::Reference { src, dst }) => {
                run_reference(&src, &dst, &mut buf).map(|ns| Reply {
                    ns: Some(ns),
                    ..Reply::default()
                })
            }
            Ok(Request::Parallel { paths }) => run_parallel(&paths).map(|(ns, per)| Reply {
                ns: Some(ns),
                per_thread_ns: per,
                ..Reply::default()
            }),
            Err(e) => Err(WorkloadError::BadRequest(e)),
        };
        let reply = result.unwrap_or_else(|e| Reply {
            error: Some(e.to_string()),
            ..Reply::default()
        });
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

/// Where the measured files live in the merged tree: `data/` exists in every layer; the file of
/// `size` bytes in layer `depth` is `data/s<size>-l<depth>.bin`.
pub const DATA_DIR: &str = "data";

pub fn file_rel(size: u64, depth: u32) -> String {
    format!("{DATA_DIR}/s{size}-l{depth}.bin")
}

/// The empty lower directory of `rmdir_recreate` in layer `depth`.
pub fn empty_dir_rel(depth: u32) -> String {
    format!("{DATA_DIR}/d-l{depth}")
}

/// The lower directory of `rename_dir` in layer `depth`; it holds one file, [`MOVED_DIR_FILE`].
pub fn moved_dir_rel(depth: u32) -> String {
    format!("{DATA_DIR}/r-l{depth}")
}

pub const MOVED_DIR_FILE: &str = "f";

/// Thread `i`'s file of `parallel_write` (`race_write` uses thread 0's for every thread).
pub fn conc_rel(size: u64, depth: u32, i: u32) -> String {
    format!("{DATA_DIR}/c{size}-l{depth}-t{i}.bin")
}

/// The path an op of `shape` works on (thread 0's for the concurrent ones).
pub fn op_rel(op: Op, size: u64, depth: u32) -> String {
    match op {
        Op::Create => CREATE_REL.to_owned(),
        Op::RmdirRecreate => empty_dir_rel(depth),
        Op::RenameDir => moved_dir_rel(depth),
        _ if op.shape() == Shape::Concurrent => conc_rel(size, depth, 0),
        _ => file_rel(size, depth),
    }
}

/// The paths the threads of a concurrent op write to.
pub fn thread_rels(op: Op, size: u64, depth: u32, threads: u32) -> Vec<String> {
    (0..threads)
        .map(|i| conc_rel(size, depth, if op == Op::RaceWrite { 0 } else { i }))
        .collect()
}

/// The new file `create` makes (in the merged root, which is always upper: no copy-up).
pub const CREATE_REL: &str = "created.bin";

/// Done by the bench process (which the kernel side ignores) before the measured op: copies up
/// the parent directory, so the op's cell holds exactly one file's copy-up, and for the
/// controls that need it, the file itself.
pub fn prepare(op: Op, merged: &Path, rel: &str) -> std::io::Result<()> {
    if op != Op::Create && op != Op::ReadLower {
        let dir = merged.join(DATA_DIR);
        let mode = fs::metadata(&dir)?.mode() & 0o7777;
        let c = cstr(&dir);
        // chmod to its own mode: a metadata change, so overlay copies the directory up.
        // SAFETY: valid C string.
        if unsafe { libc::chmod(c.as_ptr(), mode) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if op.needs_upper_copy() {
        // Opening for write copies the whole file up (also with metacopy=on).
        drop(fs::OpenOptions::new().write(true).open(merged.join(rel))?);
    }
    Ok(())
}

/// What the upper directory must hold after one repetition of `op` on `rels` (the op's path,
/// or the threads' paths). `metacopy`: the stack copies metadata only where it can;
/// `outcome`: what the op reported (`rename_dir`).
pub fn expected_upper(
    op: Op,
    rels: &[String],
    metacopy: bool,
    outcome: Option<&str>,
) -> BTreeMap<String, UpperEntry> {
    let mut m = BTreeMap::new();
    let rel = rels[0].as_str();
    let file_or_meta = if metacopy {
        UpperEntry::MetacopyFile
    } else {
        UpperEntry::File
    };
    match op {
        Op::ReadLower => return m,
        Op::Create => {
            m.insert(rel.to_owned(), UpperEntry::File);
            return m;
        }
        _ => {}
    }
    m.insert(DATA_DIR.to_owned(), UpperEntry::Dir);
    let second = second_rel(op, rel);
    match op {
        Op::Unlink => {
            m.insert(rel.to_owned(), UpperEntry::Whiteout);
        }
        Op::Chmod => {
            m.insert(rel.to_owned(), file_or_meta);
        }
        Op::RmdirRecreate => {
            m.insert(rel.to_owned(), UpperEntry::OpaqueDir);
        }
        // rename(2) and link(2) copy up with no open flags: metadata only with metacopy=on.
        Op::RenameFile => {
            m.insert(rel.to_owned(), UpperEntry::Whiteout);
            m.insert(second.expect("renamed"), file_or_meta);
        }
        Op::Link => {
            m.insert(rel.to_owned(), file_or_meta);
            m.insert(second.expect("linked"), file_or_meta);
        }
        Op::RenameDir => {
            if outcome == Some(OUTCOME_REDIRECT) {
                m.insert(rel.to_owned(), UpperEntry::Whiteout);
                m.insert(second.expect("moved"), UpperEntry::Dir);
            }
        }
        _ => {
            for r in rels {
                m.insert(r.clone(), UpperEntry::File);
            }
        }
    }
    m
}

/// Checks the ground truth cannot express as entry kinds: the redirect of a moved directory or
/// a renamed metacopy file, the shared inode of a hard link, and that every concurrent append
/// landed (`merged` is the stack's merged dir, still mounted). Returns what disagreed.
#[expect(
    clippy::too_many_arguments,
    reason = "the same facts as expected_upper plus the stack's two directories"
)]
pub fn check_details(
    op: Op,
    rels: &[String],
    size: u64,
    metacopy: bool,
    outcome: Option<&str>,
    upper: &Path,
    merged: &Path,
    userxattr: bool,
) -> Vec<String> {
    let mut bad = Vec::new();
    let rel = rels[0].as_str();
    let redirect = if userxattr {
        "user.overlay.redirect"
    } else {
        "trusted.overlay.redirect"
    };
    let has_redirect = |p: &Path| {
        let (c, n) = (cstr(p), CString::new(redirect).expect("no NUL"));
        // SAFETY: valid C strings; a NULL buffer of size 0 asks for the value's length only.
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
    };
    match op {
        Op::RenameDir if outcome == Some(OUTCOME_REDIRECT) => {
            let moved = upper.join(second_rel(op, rel).expect("moved"));
            if !has_redirect(&moved) {
                bad.push(format!("{} has no {redirect} xattr", moved.display()));
            }
            let inside = merged
                .join(second_rel(op, rel).expect("moved"))
                .join(MOVED_DIR_FILE);
            if !inside.is_file() {
                bad.push(format!("{} is not visible", inside.display()));
            }
        }
        Op::RenameFile if metacopy => {
            let renamed = upper.join(second_rel(op, rel).expect("renamed"));
            if !has_redirect(&renamed) {
                bad.push(format!("{} has no {redirect} xattr", renamed.display()));
            }
        }
        Op::Link => {
            let ino = |p: &Path| fs::symlink_metadata(p).map(|m| (m.ino(), m.nlink())).ok();
            let (a, b) = (
                ino(&upper.join(rel)),
                ino(&upper.join(second_rel(op, rel).expect("linked"))),
            );
            if a.is_none() || a != b || a.is_some_and(|(_, n)| n != 2) {
                bad.push(format!(
                    "link: upper {rel} and its link are not one inode with 2 names ({a:?}, {b:?})"
                ));
            }
        }
        Op::ParallelWrite | Op::RaceWrite => {
            let mut distinct = rels.to_vec();
            distinct.dedup();
            let appends = (rels.len() / distinct.len()) as u64;
            for r in &distinct {
                let len = fs::metadata(merged.join(r)).map(|m| m.len()).ok();
                if len != Some(size + appends) {
                    bad.push(format!(
                        "{op}: {r} is {len:?} bytes after {appends} appends to {size}"
                    ));
                }
            }
        }
        _ => {}
    }
    bad
}

/// What the upper directory holds, read from disk (`trusted.overlay.*` or, with `userxattr`,
/// `user.overlay.*` xattrs): the scenario's ground-truth reader.
pub fn upper_entries(
    upper: &Path,
    userxattr: bool,
) -> std::io::Result<BTreeMap<String, UpperEntry>> {
    crate::scenario::UpperTruth::read_with(upper, userxattr).map(|t| t.entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_time_their_syscalls() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, vec![7u8; 10_000]).unwrap();
        let mut buf = vec![0u8; BUF];
        assert!(run_op(Op::FirstWrite, &f, 10_000, &mut buf).unwrap().ns > 0);
        assert_eq!(fs::metadata(&f).unwrap().len(), 10_001);
        run_op(Op::Truncate, &f, 10_000, &mut buf).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().len(), 5_000);
        run_op(Op::ReadLower, &f, 5_000, &mut buf).unwrap();
        assert!(run_op(Op::ReadLower, &f, 4_999, &mut buf).is_err());
        run_op(Op::Chmod, &f, 0, &mut buf).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, CHMOD_MODE);
        let dst = dir.path().join("copy");
        run_reference(&f, &dst, &mut buf).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&f).unwrap());
        assert!(
            run_reference(&f, &dst, &mut buf).is_err(),
            "dst must be new"
        );
        run_op(Op::OpenTrunc, &f, 0, &mut buf).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().len(), 0);
        run_op(Op::Unlink, &f, 0, &mut buf).unwrap();
        assert!(!f.exists());
        run_op(Op::Create, &f, 0, &mut buf).unwrap();
        assert!(run_op(Op::Create, &f, 0, &mut buf).is_err());
        run_op(Op::Link, &f, 0, &mut buf).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().nlink(), 2);
        run_op(Op::RenameFile, &f, 0, &mut buf).unwrap();
        assert!(!f.exists() && dir.path().join("f.renamed").exists());
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        run_op(Op::RmdirRecreate, &d, 0, &mut buf).unwrap();
        assert!(d.is_dir());
        // Outside overlay a directory rename simply works.
        let t = run_op(Op::RenameDir, &d, 0, &mut buf).unwrap();
        assert_eq!(t.outcome, Some(OUTCOME_REDIRECT));
        assert!(dir.path().join("d.moved").is_dir());
    }

    #[test]
    fn threads_all_append() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one");
        fs::write(&one, b"x").unwrap();
        let (wall, per) = run_parallel(&vec![one.clone(); 4]).unwrap();
        assert_eq!(per.len(), 4);
        assert!(wall > 0 && per.iter().all(|&n| n > 0));
        assert_eq!(fs::read(&one).unwrap(), b"x++++");
        assert!(run_parallel(&[dir.path().join("missing")]).is_err());
    }

    #[test]
    fn expectations() {
        let rel = file_rel(4096, 2);
        assert_eq!(rel, "data/s4096-l2.bin");
        let one = [rel.clone()];
        assert!(expected_upper(Op::ReadLower, &one, false, None).is_empty());
        assert_eq!(
            expected_upper(Op::Chmod, &one, true, None)[&rel],
            UpperEntry::MetacopyFile
        );
        assert_eq!(expected_upper(Op::Unlink, &one, false, None).len(), 2);
        let d = [moved_dir_rel(1)];
        assert_eq!(
            expected_upper(Op::RenameDir, &d, false, Some(OUTCOME_EXDEV)).len(),
            1
        );
        assert_eq!(
            expected_upper(Op::RenameDir, &d, true, Some(OUTCOME_REDIRECT))["data/r-l1.moved"],
            UpperEntry::Dir
        );
        let race = thread_rels(Op::RaceWrite, 4096, 1, 3);
        assert_eq!(race, vec![conc_rel(4096, 1, 0); 3]);
        assert_eq!(expected_upper(Op::RaceWrite, &race, false, None).len(), 2);
        let par = thread_rels(Op::ParallelWrite, 4096, 1, 3);
        assert_eq!(expected_upper(Op::ParallelWrite, &par, true, None).len(), 4);
    }
}
