//! The embedded default: a small overlay2-style layer stack, a scripted workload with a known
//! number of copy-ups and whiteouts in known layers, and the checks that compare what `record`
//! saw with the upper directory's contents afterwards. Used by `cowprof demo`, the host
//! integration tests and the in-VM self-test alike.

pub mod bpf_busy;
pub mod crosscheck;
pub mod phases;
pub mod selftest;
pub mod storm;

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    io::Write as _,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
};

use crate::{
    event::Event,
    event::{Backend, Kind},
    host::io::io_err as io,
    host::mounts::{mount, overlay_param, umount},
};

/// A mounted overlay that unmounts and deletes itself on drop (also on panic and on the error
/// paths), so no test or demo leaves a mount behind.
pub struct Stack {
    pub root: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// tmpfs mounted at `root` (when asked for), unmounted last.
    tmpfs: bool,
    mounted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Io(#[from] crate::host::io::PathIoError),
    #[error(transparent)]
    Mount(#[from] crate::host::mounts::OverlayMountError),
}

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths made here have no NUL")
}

/// One file to place in a lower layer: (layer 1-based, relative path, size, mode).
pub struct FileSpec {
    pub layer: usize,
    pub path: &'static str,
    pub size: usize,
}

impl Stack {
    /// Creates `root/{l1..lN,upper,work,merged}`, fills the layers and mounts the overlay the way
    /// Docker's overlay2 does (`lowerdir` top first, `index=off` where the kernel has it).
    pub fn create(
        root: &Path,
        layers: usize,
        files: &[FileSpec],
        extra_options: &[&str],
        on_tmpfs: bool,
    ) -> Result<Self, StackError> {
        fs::create_dir_all(root).map_err(io("creating", root))?;
        let mut stack = Self {
            root: root.to_owned(),
            lowers: (1..=layers).map(|i| root.join(format!("l{i}"))).collect(),
            upper: root.join("upper"),
            work: root.join("work"),
            merged: root.join("merged"),
            tmpfs: false,
            mounted: false,
        };
        if on_tmpfs {
            mount("cowprof", root, "tmpfs", "size=256m").map_err(io("mounting tmpfs on", root))?;
            stack.tmpfs = true;
        }
        for d in stack
            .lowers
            .iter()
            .chain([&stack.upper, &stack.work, &stack.merged])
        {
            fs::create_dir_all(d).map_err(io("creating", d))?;
        }
        for f in files {
            let p = stack.lowers[f.layer - 1].join(f.path);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            if f.path.ends_with('@') {
                continue;
            }
            let mut file = fs::File::create(&p).map_err(io("creating", &p))?;
            // Non-repeating content so no filesystem can dedupe or compress it away.
            let block: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let mut left = f.size;
            while left > 0 {
                let n = left.min(block.len());
                file.write_all(&block[..n]).map_err(io("writing", &p))?;
                left -= n;
            }
        }
        let lowerdir: Vec<String> = stack
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut options = vec![
            format!("lowerdir={}", lowerdir.join(":")),
            format!("upperdir={}", stack.upper.display()),
            format!("workdir={}", stack.work.display()),
        ];
        if overlay_param("index").is_some() {
            options.insert(0, "index=off".into());
        }
        options.extend(extra_options.iter().map(|s| (*s).to_owned()));
        let options = options.join(",");
        mount("overlay", &stack.merged, "overlay", &options).map_err(
            crate::host::mounts::overlay_mount_err(&stack.merged, &options),
        )?;
        stack.mounted = true;
        Ok(stack)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount(&self.merged);
        }
        if self.tmpfs {
            let _ = umount(&self.root);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The default stack's layers (1 = topmost lower).
pub const DEFAULT_FILES: &[FileSpec] = &[
    FileSpec {
        layer: 1,
        path: "bin/tool",
        size: 32 << 10,
    },
    FileSpec {
        layer: 1,
        path: "etc/hosts",
        size: 200,
    },
    FileSpec {
        layer: 2,
        path: "etc/passwd",
        size: 1024,
    },
    FileSpec {
        layer: 2,
        path: "data/mid.bin",
        size: 16 << 10,
    },
    FileSpec {
        layer: 2,
        path: "tmpdel/x",
        size: 100,
    },
    FileSpec {
        layer: 3,
        path: "etc/app.conf",
        size: 4 << 10,
    },
    FileSpec {
        layer: 3,
        path: "var/log/app.log",
        size: 64 << 10,
    },
    FileSpec {
        layer: 3,
        path: "data/big.bin",
        size: 1 << 20,
    },
    FileSpec {
        layer: 3,
        path: "data/old.bin",
        size: 8 << 10,
    },
    FileSpec {
        layer: 3,
        path: "data/gone.bin",
        size: 2 << 10,
    },
];

/// The metacopy stack (a second mount with `metacopy=on`).
pub const META_FILES: &[FileSpec] = &[FileSpec {
    layer: 1,
    path: "meta/m.bin",
    size: 32 << 10,
}];

/// Makes the symlink the workload copies up (a special file).
pub fn add_symlink(stack: &Stack) -> std::io::Result<()> {
    std::os::unix::fs::symlink("bin/tool", stack.lowers[0].join("link"))
}

fn cpath(base: &Path, rel: &str) -> CString {
    cstring(&base.join(rel))
}

fn check(rc: libc::c_int, what: &str) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// The scripted workload, run in its own process (the recorder never traces itself). Each step
/// is one syscall of a known kind; the comments name what overlay does.
pub fn run_workload(merged: &Path, meta_merged: Option<&Path>) -> std::io::Result<()> {
    let append = |rel: &str| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().append(true).open(merged.join(rel))?;
        f.write_all(b"+")
    };
    // 1. open for write: copy up dir etc (all layers have it: layer 1) and etc/app.conf (layer 3).
    append("etc/app.conf")?;
    // 2. etc is up already: only etc/hosts (layer 1).
    append("etc/hosts")?;
    // 3. truncate(2): var, var/log and var/log/app.log (layer 3), data copied then cut.
    // SAFETY: valid C string.
    check(
        unsafe { libc::truncate(cpath(merged, "var/log/app.log").as_ptr(), 100) },
        "truncate",
    )?;
    // 4. chmod: data (layers 2 and 3: layer 2) and data/mid.bin (layer 2), data copied.
    // SAFETY: valid C string.
    check(
        unsafe { libc::chmod(cpath(merged, "data/mid.bin").as_ptr(), 0o600) },
        "chmod",
    )?;
    // 5. unlink a layer-3 file: one whiteout.
    fs::remove_file(merged.join("data/old.bin"))?;
    // 6. empty and remove a layer-2 directory (dir copy-up, whiteout x, whiteout tmpdel),
    //    then create it again: an opaque directory.
    fs::remove_file(merged.join("tmpdel/x"))?;
    fs::remove_dir(merged.join("tmpdel"))?;
    fs::create_dir(merged.join("tmpdel"))?;
    // 7. delete a file and create it again: a whiteout, then a create over that whiteout.
    fs::remove_file(merged.join("data/gone.bin"))?;
    fs::File::create_new(merged.join("data/gone.bin"))?;
    // 8. lchown a symlink: a special-file copy-up (layer 1).
    // SAFETY: valid C string.
    check(
        unsafe { libc::lchown(cpath(merged, "link").as_ptr(), 0, 0) },
        "lchown",
    )?;
    // Controls, which must produce nothing: rewrite an upper file, read a lower file, create a
    // new file, chmod an upper file.
    append("etc/hosts")?;
    let _ = fs::read(merged.join("data/big.bin"))?;
    fs::write(merged.join("newfile"), b"new")?;
    fs::set_permissions(merged.join("etc/hosts"), fs::Permissions::from_mode(0o644))?;
    if let Some(m) = meta_merged {
        // 9. chmod with metacopy=on: dir meta (layer 1) and metadata-only copy of meta/m.bin.
        // SAFETY: valid C string.
        check(
            unsafe { libc::chmod(cpath(m, "meta/m.bin").as_ptr(), 0o600) },
            "chmod",
        )?;
        // 10. open for write: the deferred data copy of meta/m.bin.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.join("meta/m.bin"))?;
        f.write_all(b"+")?;
    }
    Ok(())
}

/// An expected event: (kind, path, lower layer, bytes copied).
pub type Expected = (Kind, &'static str, Option<u32>, u64);

/// What the workload must produce on `backend`. The tracepoint
/// backend cannot see the deferred data copy of a metacopy file (no new inode is made).
pub fn expected(backend: Backend, with_meta: bool) -> Vec<Expected> {
    let mut v: Vec<Expected> = vec![
        (Kind::DirCopyUp, "etc", Some(1), 0),
        (Kind::DataCopyUp, "etc/app.conf", Some(3), 4 << 10),
        (Kind::DataCopyUp, "etc/hosts", Some(1), 200),
        (Kind::DirCopyUp, "var", Some(3), 0),
        (Kind::DirCopyUp, "var/log", Some(3), 0),
        (Kind::DataCopyUp, "var/log/app.log", Some(3), 64 << 10),
        (Kind::DirCopyUp, "data", Some(2), 0),
        (Kind::DataCopyUp, "data/mid.bin", Some(2), 16 << 10),
        (Kind::Whiteout, "data/old.bin", Some(3), 0),
        (Kind::DirCopyUp, "tmpdel", Some(2), 0),
        (Kind::Whiteout, "tmpdel/x", Some(2), 0),
        (Kind::Whiteout, "tmpdel", Some(2), 0),
        (Kind::OpaqueDir, "tmpdel", None, 0),
        (Kind::Whiteout, "data/gone.bin", Some(3), 0),
        (Kind::CreateOverWhiteout, "data/gone.bin", None, 0),
        (Kind::SpecialCopyUp, "link", Some(1), 0),
    ];
    if with_meta {
        v.push((Kind::DirCopyUp, "meta", Some(1), 0));
        v.push((Kind::Metacopy, "meta/m.bin", Some(1), 0));
        if backend != Backend::Tracepoint {
            v.push((Kind::DeferredDataCopyUp, "meta/m.bin", Some(1), 32 << 10));
        }
    }
    v
}

/// What the upper directory holds after a workload, read back from disk: the ground truth.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpperTruth {
    /// Relative path -> what the entry is.
    pub entries: BTreeMap<String, UpperEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpperEntry {
    Whiteout,
    OpaqueDir,
    Dir,
    File,
    MetacopyFile,
    Symlink,
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cstring(path);
    let n = CString::new(name).expect("no NUL");
    let mut buf = [0u8; 256];
    // SAFETY: valid strings and buffer.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(len).ok().map(|l| buf[..l].to_vec())
}

impl UpperTruth {
    /// Reads `upper` with overlay's `trusted.overlay.*` xattrs.
    pub fn read(upper: &Path) -> std::io::Result<Self> {
        Self::read_with(upper, false)
    }

    /// Reads `upper`; with `userxattr` the marks are `user.overlay.*`. Whiteouts are char 0/0
    /// devices or empty files with the `whiteout` xattr; a directory is opaque when its `opaque`
    /// xattr is `y` (`x` only marks a directory holding xattr whiteouts).
    pub fn read_with(upper: &Path, userxattr: bool) -> std::io::Result<Self> {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let prefix = if userxattr {
            "user.overlay."
        } else {
            "trusted.overlay."
        };
        let mark = |path: &Path, name: &str| xattr(path, &format!("{prefix}{name}"));
        let mut truth = Self::default();
        let mut stack = vec![upper.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                let rel = path
                    .strip_prefix(upper)
                    .expect("under upper")
                    .display()
                    .to_string();
                let md = fs::symlink_metadata(&path)?;
                let ft = md.file_type();
                let kind = if (ft.is_char_device() && md.rdev() == 0)
                    || (ft.is_file() && md.len() == 0 && mark(&path, "whiteout").is_some())
                {
                    UpperEntry::Whiteout
                } else if ft.is_dir() {
                    stack.push(path.clone());
                    if mark(&path, "opaque").as_deref() == Some(b"y") {
                        UpperEntry::OpaqueDir
                    } else {
                        UpperEntry::Dir
                    }
                } else if ft.is_symlink() {
                    UpperEntry::Symlink
                } else if mark(&path, "metacopy").is_some() {
                    UpperEntry::MetacopyFile
                } else {
                    UpperEntry::File
                };
                truth.entries.insert(rel, kind);
            }
        }
        Ok(truth)
    }
}

/// Checks recorded events against the expected list (exact multiset of kind, path, layer,
/// bytes) and against the upper directory: every upper entry that a lower layer also has must
/// be explained by the last event at its path, and no event may name a path whose final upper
/// state contradicts it. Returns the list of mismatches (empty = pass).
pub fn verify(
    events: &[Event],
    expected: &[Expected],
    truth: &UpperTruth,
    lowers: &[PathBuf],
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut got: Vec<(Kind, String, Option<u32>, u64)> = events
        .iter()
        .map(|e| (e.kind, e.path.clone(), e.lower_layer, e.bytes_copied))
        .collect();
    let mut want: Vec<(Kind, String, Option<u32>, u64)> = expected
        .iter()
        .map(|(k, p, l, b)| (*k, (*p).to_owned(), *l, *b))
        .collect();
    got.sort();
    want.sort();
    for w in &want {
        if let Some(i) = got.iter().position(|g| g == w) {
            got.remove(i);
        } else {
            problems.push(format!("missing event {w:?}"));
        }
    }
    for g in got {
        problems.push(format!("unexpected event {g:?}"));
    }
    for e in events {
        if e.errno != 0 {
            problems.push(format!(
                "event with errno {}: {:?} {}",
                e.errno, e.kind, e.path
            ));
        }
    }
    // The last event at each path must agree with what that path is in the upper dir now.
    let mut last: BTreeMap<&str, Kind> = BTreeMap::new();
    for e in events {
        last.insert(&e.path, e.kind);
    }
    for (path, entry) in &truth.entries {
        let in_lower = lowers
            .iter()
            .any(|l| fs::symlink_metadata(l.join(path)).is_ok());
        let ok = match (entry, last.get(path.as_str())) {
            (UpperEntry::Whiteout, Some(Kind::Whiteout))
            | (UpperEntry::OpaqueDir, Some(Kind::OpaqueDir)) => true,
            // The tracepoint backend cannot see the deferred data copy: such a file still shows
            // as its metacopy event (checked against the backend's expected list above).
            (UpperEntry::Dir, Some(Kind::DirCopyUp))
            | (
                UpperEntry::File,
                Some(
                    Kind::DataCopyUp
                    | Kind::DeferredDataCopyUp
                    | Kind::CreateOverWhiteout
                    | Kind::Metacopy,
                ),
            )
            | (UpperEntry::MetacopyFile, Some(Kind::Metacopy))
            | (UpperEntry::Symlink, Some(Kind::SpecialCopyUp)) => in_lower,
            // New entries (not in any lower) have no CoW event.
            (UpperEntry::Dir | UpperEntry::File | UpperEntry::Symlink, None) => !in_lower,
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "upper entry {path} ({entry:?}) disagrees with its last event {:?}",
                last.get(path.as_str())
            ));
        }
    }
    for (i, e) in events.iter().enumerate() {
        if truth.entries.contains_key(&e.path) || last.get(e.path.as_str()) != Some(&e.kind) {
            continue;
        }
        // Gone from the upper dir: only fine if a later whiteout removed a directory above it.
        let removed_later = events[i + 1..].iter().any(|later| {
            later.kind == Kind::Whiteout && e.path.starts_with(&format!("{}/", later.path))
        });
        if !removed_later {
            let (path, kind) = (&e.path, e.kind);
            problems.push(format!(
                "event {kind:?} at {path}, but the upper dir has no such entry"
            ));
        }
    }
    problems
}
