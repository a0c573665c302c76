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
    time::Instant,
};

use serde::{Deserialize, Serialize};

pub use crate::scenario::UpperEntry;

use super::spec::Op;

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
}

/// One line on the worker's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ns: Option<u64>,
    pub error: Option<String>,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("lab paths have no NUL")
}

fn last_err(what: &str, p: &Path) -> String {
    format!(
        "{what} {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    )
}

fn open(p: &Path, flags: libc::c_int) -> Result<libc::c_int, String> {
    let c = cstr(p);
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

fn rc(r: libc::c_int, what: &str, p: &Path) -> Result<(), String> {
    if r == 0 {
        Ok(())
    } else {
        Err(last_err(what, p))
    }
}

/// Reads `fd` to its end into `buf`; returns the bytes read.
fn read_all(fd: libc::c_int, buf: &mut [u8], p: &Path) -> Result<u64, String> {
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

fn write_all(fd: libc::c_int, mut data: &[u8], p: &Path) -> Result<(), String> {
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

/// Runs one op and returns its duration in ns (monotonic clock, syscalls only).
pub fn run_op(op: Op, path: &Path, size: u64, buf: &mut [u8]) -> Result<u64, String> {
    let c = cstr(path);
    let t0 = Instant::now();
    match op {
        Op::FirstWrite | Op::Rewrite => {
            let fd = open(path, libc::O_WRONLY | libc::O_APPEND)?;
            let w = write_all(fd, b"+", path);
            close(fd);
            w?;
        }
        Op::OpenTrunc => close(open(path, libc::O_WRONLY | libc::O_TRUNC)?),
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
            let fd = open(path, libc::O_RDONLY)?;
            let r = read_all(fd, buf, path);
            close(fd);
            let n = r?;
            if n != size {
                return Err(format!(
                    "read {}: {n} bytes, expected {size}",
                    path.display()
                ));
            }
        }
        Op::Create => close(open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?),
        // SAFETY: valid C string.
        Op::Unlink => rc(unsafe { libc::unlink(c.as_ptr()) }, "unlink", path)?,
    }
    Ok(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// The reference: a plain copy (read + write, 1 MiB at a time) into a new file, then fsync.
pub fn run_reference(src: &Path, dst: &Path, buf: &mut [u8]) -> Result<u64, String> {
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
    Ok(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX))
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
            Ok(Request::Op { op, path, size }) => run_op(op, &path, size, &mut buf),
            Ok(Request::Reference { src, dst }) => run_reference(&src, &dst, &mut buf),
            Err(e) => Err(format!("bad request: {e}")),
        };
        let reply = match result {
            Ok(ns) => Reply {
                ns: Some(ns),
                error: None,
            },
            Err(e) => Reply {
                ns: None,
                error: Some(e),
            },
        };
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

/// The new file `create` makes (in the merged root, which is always upper: no copy-up).
pub const CREATE_REL: &str = "created.bin";

/// Done by the bench process (which the kernel side ignores) before the measured op: copies up
/// the parent directory, so the op's cell holds exactly one file's copy-up, and for the
/// controls that need it, the file itself.
pub fn prepare(op: Op, merged: &Path, rel: &str) -> std::io::Result<()> {
    if op.per_file() && op != Op::ReadLower {
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

/// What the upper directory must hold after one repetition of `op` on `rel`.
pub fn expected_upper(op: Op, rel: &str, metacopy: bool) -> BTreeMap<String, UpperEntry> {
    let mut m = BTreeMap::new();
    match op {
        Op::ReadLower => {}
        Op::Create => {
            m.insert(rel.to_owned(), UpperEntry::File);
        }
        _ => {
            m.insert(DATA_DIR.to_owned(), UpperEntry::Dir);
            let file = match op {
                Op::Unlink => UpperEntry::Whiteout,
                Op::Chmod if metacopy => UpperEntry::MetacopyFile,
                _ => UpperEntry::File,
            };
            m.insert(rel.to_owned(), file);
        }
    }
    m
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
        assert!(run_op(Op::FirstWrite, &f, 10_000, &mut buf).unwrap() > 0);
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
    }

    #[test]
    fn expectations() {
        let rel = file_rel(4096, 2);
        assert_eq!(rel, "data/s4096-l2.bin");
        assert!(expected_upper(Op::ReadLower, &rel, false).is_empty());
        assert_eq!(
            expected_upper(Op::Chmod, &rel, true)[&rel],
            UpperEntry::MetacopyFile
        );
        assert_eq!(expected_upper(Op::Unlink, &rel, false).len(), 2);
    }
}
