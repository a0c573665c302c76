//! Unpacks one layer tar into an overlay-format layer directory, safely.
//!
//! Every write is relative to a directory fd: parents are opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` and leaves are created with
//! `*at` calls on a single name (no `/` in it), with `O_NOFOLLOW`/`O_EXCL`. So `..`, absolute
//! names, symlinks (in the tar or planted earlier in it) and hardlinks cannot reach outside the
//! layer root. Policy (docs/images.md, "Safety policy"):
//! - `..` components, absolute names, NUL, over-long names, bare `.wh.`: refused.
//! - writing through a symlink inside the layer: refused (no legitimate layer needs it).
//! - hardlinks: only to an entry already unpacked in the same layer.
//! - char/block devices: never created (skipped, with a note); the runtime provides /dev.
//!   FIFOs are created (harmless).
//! - setuid/setgid: kept (the image must behave the same) except on group/world-writable files,
//!   where they are dropped; the store is 0700, so nothing outside root reaches them.
//! - xattrs: `trusted.overlay.*` / `user.overlay.*` refuse the layer; `user.*` and
//!   `security.capability` are kept; any other namespace is dropped with a note.
//! - duplicate entries: the later one wins, as with tar; a note is kept.
//! - limits: total uncompressed bytes, entries, path length, decompression ratio.
//!
//! Whiteouts become overlay's own form: `.wh.<name>` → char device 0/0 at `<name>`,
//! `.wh..wh..opq` → `trusted.overlay.opaque=y` on its directory, other `.wh..wh.*` skipped.

use std::{
    cell::Cell,
    collections::HashSet,
    fs::File,
    io::{BufRead, BufReader, Read},
    os::fd::{AsFd, OwnedFd},
    rc::Rc,
};

use rustix::{
    fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags},
    io::Errno,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{hex, ImageError};
use crate::host::cancel::Cancel;

/// Bounds on what one layer may make the unpacker do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Uncompressed bytes of one layer's tar stream.
    pub max_layer_bytes: u64,
    pub max_entries: u64,
    /// Bytes of a whole entry path.
    pub max_path: usize,
    /// Uncompressed/compressed ratio allowed once past `ratio_floor` bytes (bomb guard).
    pub max_ratio: u64,
    pub ratio_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_layer_bytes: 16 << 30,
            max_entries: 1_000_000,
            max_path: 4096,
            max_ratio: 1000,
            ratio_floor: 64 << 20,
        }
    }
}

/// What one layer held, kept next to it in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub fifos: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Bytes of regular file data.
    pub file_bytes: u64,
    /// Uncompressed tar stream bytes.
    pub tar_bytes: u64,
    /// Blob bytes as stored (compressed, if it was).
    pub blob_bytes: u64,
    /// `none`, `gzip` or `zstd`.
    pub compression: String,
    /// One line each: devices skipped, xattrs dropped, duplicates, setuid dropped.
    pub notes: Vec<String>,
}

/// What a finished unpack proved about the stream.
pub struct Unpacked {
    pub stats: LayerStats,
    /// `sha256:…` of the uncompressed stream (the diffID).
    pub diff_id: String,
    /// `sha256:…` of the raw blob.
    pub blob_digest: String,
}

/// Counts and hashes what passes through; stops with a recorded reason at a limit.
struct Hashing<R> {
    inner: R,
    /// None once it is known the digest is not needed (a plain blob is its own diffID).
    hasher: Option<Sha256>,
    count: Rc<Cell<u64>>,
    /// For the decompressed side: the compressed count to compare with, and the limits.
    guard: Option<(Rc<Cell<u64>>, Limits)>,
    tripped: Rc<Cell<Option<&'static str>>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        let total = self.count.get() + n as u64;
        self.count.set(total);
        if let Some((compressed, limits)) = &self.guard {
            if total > limits.max_layer_bytes {
                self.tripped.set(Some("size"));
                return Err(std::io::Error::other("layer size limit"));
            }
            if total > limits.ratio_floor && total / compressed.get().max(1) > limits.max_ratio {
                self.tripped.set(Some("ratio"));
                return Err(std::io::Error::other("decompression ratio limit"));
            }
        }
        Ok(n)
    }
}

/// Reads the stream to its end so that the hash covers every byte (tar padding included).
fn drain(r: &mut impl Read) -> std::io::Result<()> {
    std::io::copy(r, &mut std::io::sink()).map(|_| ())
}

struct Ctx<'a> {
    layer: &'a str,
    root: &'a OwnedFd,
    limits: Limits,
    stats: LayerStats,
    seen: HashSet<Vec<u8>>,
    /// Directories whose metadata is applied at the end (so a read-only one can still be filled).
    dirs: Vec<(Vec<String>, Meta)>,
}

#[derive(Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

impl Ctx<'_> {
    fn refuse(&self, entry: &str, reason: impl Into<String>) -> ImageError {
        // Hostile names can be kilobytes long: the line names them, shortened.
        let entry = if entry.chars().count() > 200 {
            format!("{}…", entry.chars().take(200).collect::<String>())
        } else {
            entry.to_owned()
        };
        ImageError::Entry {
            layer: self.layer.to_owned(),
            entry,
            reason: reason.into(),
        }
    }

    fn io(&self, entry: &str, what: &str, e: impl std::fmt::Display) -> ImageError {
        self.refuse(entry, format!("{what}: {}", super::one_line(e)))
    }

    /// Opens (creating as needed) the directory `comps` beneath the root; never follows a symlink.
    fn open_dir(&self, entry: &str, comps: &[String]) -> Result<OwnedFd, ImageError> {
        let dflags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if comps.is_empty() {
            return rustix::fs::openat2(self.root, ".", dflags, Mode::empty(), BENEATH)
                .map_err(|e| self.io(entry, "opening the layer root", e));
        }
        match rustix::fs::openat2(self.root, comps.join("/"), dflags, Mode::empty(), BENEATH) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::XDEV) => {}
            Err(e) => return Err(self.io(entry, "opening its parent", e)),
        }
        // Slow path: one component at a time, creating what is missing, naming what is wrong.
        let mut cur = rustix::fs::openat2(self.root, ".", dflags, Mode::empty(), BENEATH)
            .map_err(|e| self.io(entry, "opening the layer root", e))?;
        for (i, c) in comps.iter().enumerate() {
            let so_far = comps[..=i].join("/");
            match rustix::fs::statat(&cur, c.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {}
                    FileType::Symlink => {
                        return Err(self.refuse(
                            entry,
                            format!("its parent {so_far:?} is a symlink; writing through symlinks is refused (it could escape the layer)"),
                        ))
                    }
                    _ => {
                        return Err(self.refuse(
                            entry,
                            format!("its parent {so_far:?} is not a directory"),
                        ))
                    }
                },
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(&cur, c.as_str(), Mode::from_raw_mode(0o755))
                        .map_err(|e| self.io(entry, "creating its parent", e))?;
                }
                Err(e) => return Err(self.io(entry, "looking up its parent", e)),
            }
            cur = rustix::fs::openat2(&cur, c.as_str(), dflags, Mode::empty(), BENEATH)
                .map_err(|e| self.io(entry, "opening its parent", e))?;
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` in `dir` (a directory with everything in it).
    fn remove_at(&self, entry: &str, dir: &OwnedFd, name: &str) -> Result<(), ImageError> {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.io(entry, "replacing an earlier entry", e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = rustix::fs::openat2(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                BENEATH,
            )
            .map_err(|e| self.io(entry, "replacing an earlier directory", e))?;
            let names: Vec<String> = {
                let d = rustix::fs::Dir::read_from(&sub)
                    .map_err(|e| self.io(entry, "replacing an earlier directory", e))?;
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().ok().map(str::to_owned))
                    .filter(|n| n != "." && n != "..")
                    .collect()
            };
            for n in names {
                self.remove_at(entry, &sub, &n)?;
            }
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
        }
        .map_err(|e| self.io(entry, "replacing an earlier entry", e))
    }

    fn set_xattrs(
        &self,
        entry: &str,
        fd: impl AsFd,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ImageError> {
        for (k, v) in xattrs {
            rustix::fs::fsetxattr(fd.as_fd(), k.as_str(), v, XattrFlags::empty())
                .map_err(|e| self.io(entry, &format!("setting xattr {k}"), e))?;
        }
        Ok(())
    }
}

/// Splits a tar path into checked components; the reason is the refusal line.
pub fn split_path(raw: &[u8], max_path: usize) -> Result<Vec<String>, String> {
    if raw.len() > max_path {
        return Err(format!(
            "path is {} bytes, over the {max_path}-byte limit",
            raw.len()
        ));
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path refused (layer entries are relative to the layer root)".into());
    }
    let s = std::str::from_utf8(raw).map_err(|_| "path is not valid UTF-8".to_owned())?;
    let mut out = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("path climbs out with `..`; refused".into()),
            c if c.len() > 255 => {
                return Err(format!("name component is {} bytes, over 255", c.len()))
            }
            c => out.push(c.to_owned()),
        }
    }
    Ok(out)
}

/// What a layer entry's final name means in overlay terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    None,
    /// `.wh.<name>`: delete `<name>`.
    Delete(&'a str),
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// Another `.wh..wh.*`: reserved, skipped.
    Reserved,
}

pub fn classify(name: &str) -> Result<Whiteout<'_>, String> {
    if name == ".wh..wh..opq" {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(".wh..wh.") {
        return Ok(Whiteout::Reserved);
    }
    match name.strip_prefix(".wh.") {
        None => Ok(Whiteout::None),
        Some("") => Err("bare `.wh.` whiteout names nothing; refused".into()),
        Some("." | "..") => Err("whiteout of `.` or `..`; refused".into()),
        Some(n) => Ok(Whiteout::Delete(n)),
    }
}

/// The mode actually written to a regular file: permission bits; setuid/setgid dropped when the
/// file is group- or world-writable (anyone could then replace a privileged program).
/// Directories keep theirs (setgid on a group-writable dir such as /var/mail is normal).
pub fn safe_mode(mode: u32) -> (u32, bool) {
    let m = mode & 0o7777;
    if m & 0o6000 != 0 && m & 0o022 != 0 {
        (m & !0o6000, true)
    } else {
        (m, false)
    }
}

/// Sorts tar xattrs into kept, dropped (noted) and refused (an error line).
fn filter_xattrs(
    entry: &mut tar::Entry<'_, impl Read>,
    note: &mut Vec<String>,
    name: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut keep = Vec::new();
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Ok(keep);
    };
    for ext in exts {
        let ext = ext.map_err(|e| format!("corrupt PAX header: {}", super::one_line(&e)))?;
        let Ok(key) = ext.key() else { continue };
        let Some(x) = key.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        if x.starts_with("trusted.overlay.") || x.starts_with("user.overlay.") {
            return Err(format!(
                "carries the overlay xattr {x}; overlay metadata from an archive could redirect lookups outside the layer: refused"
            ));
        }
        if x == "security.capability" || x.starts_with("user.") {
            keep.push((x.to_owned(), ext.value_bytes().to_vec()));
        } else {
            note.push(format!(
                "{name}: xattr {x} dropped (only user.* and security.capability are kept)"
            ));
        }
    }
    Ok(keep)
}

/// Unpacks `blob` (plain, gzip or zstd, by magic bytes) into the empty directory `root`.
/// Verifies nothing itself: the caller compares the returned digests with the expected ones.
#[expect(
    clippy::too_many_lines,
    reason = "the hostile-tar state machine: every entry type and its checks in one place, so no path skips a check"
)]
pub fn unpack_layer(
    blob: impl Read,
    layer: &str,
    root: &OwnedFd,
    limits: Limits,
    cancel: Option<&Cancel>,
) -> Result<Unpacked, ImageError> {
    let stream_err = |reason: String| ImageError::Stream {
        layer: layer.to_owned(),
        reason,
    };
    let tripped = Rc::new(Cell::new(None));
    let compressed_count = Rc::new(Cell::new(0));
    let mut raw = BufReader::with_capacity(
        256 << 10,
        Hashing {
            inner: blob,
            hasher: Some(Sha256::new()),
            count: Rc::clone(&compressed_count),
            guard: None,
            tripped: Rc::clone(&tripped),
        },
    );
    let magic = raw
        .fill_buf()
        .map_err(|e| stream_err(format!("reading: {e}")))?
        .get(..4)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let (compression, decoder): (&str, Box<dyn Read + '_>) = if magic.starts_with(&[0x1f, 0x8b]) {
        (
            "gzip",
            Box::new(flate2::bufread::MultiGzDecoder::new(&mut raw)),
        )
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let d = zstd::stream::read::Decoder::with_buffer(&mut raw)
            .map_err(|e| stream_err(format!("zstd: {e}")))?;
        ("zstd", Box::new(d))
    } else {
        // Uncompressed: the blob digest is the diffID, hashed once below.
        raw.get_mut().hasher = None;
        ("none", Box::new(&mut raw))
    };
    let tar_count = Rc::new(Cell::new(0));
    let mut plain = Hashing {
        inner: decoder,
        hasher: Some(Sha256::new()),
        count: Rc::clone(&tar_count),
        guard: Some((Rc::clone(&compressed_count), limits)),
        tripped: Rc::clone(&tripped),
    };
    let mut ctx = Ctx {
        layer,
        root,
        limits,
        stats: LayerStats {
            compression: compression.to_owned(),
            ..LayerStats::default()
        },
        seen: HashSet::new(),
        dirs: Vec::new(),
    };
    let limit_err = |what: &str| match tripped.get() {
        Some("size") => stream_err(format!(
            "uncompressed size over the {}-byte limit{what}; refused",
            limits.max_layer_bytes
        )),
        Some(_) => stream_err(format!(
            "decompresses more than {}x (a decompression bomb?){what}; refused",
            limits.max_ratio
        )),
        None => stream_err(format!("corrupt or truncated stream{what}")),
    };
    {
        let mut ar = tar::Archive::new(&mut plain);
        let entries = ar
            .entries()
            .map_err(|e| stream_err(format!("not a tar stream: {}", super::one_line(&e))))?;
        let mut last = String::from("(start)");
        for entry in entries {
            if cancel.is_some_and(Cancel::is_set) {
                return Err(ImageError::Interrupted);
            }
            let entry = entry.map_err(|e| {
                let base = limit_err(&format!(" after entry {last:?}"));
                if tripped.get().is_some() {
                    base
                } else {
                    stream_err(format!(
                        "corrupt or truncated tar stream after entry {last:?}: {}",
                        super::one_line(&e)
                    ))
                }
            })?;
            let raw_path = entry.path_bytes().into_owned();
            last = String::from_utf8_lossy(&raw_path)
                .chars()
                .take(200)
                .collect();
            ctx.stats.entries += 1;
            if ctx.stats.entries > limits.max_entries {
                return Err(ctx.refuse(
                    &last,
                    format!(
                        "more than {} entries in one layer; refused",
                        limits.max_entries
                    ),
                ));
            }
            unpack_entry(&mut ctx, entry, &raw_path, &last).map_err(|e| {
                if tripped.get().is_some() {
                    limit_err(&format!(" in entry {last:?}"))
                } else {
                    e
                }
            })?;
        }
    }
    drain(&mut plain).map_err(|e| {
        if tripped.get().is_some() {
            limit_err(" at the end")
        } else {
            stream_err(format!(
                "corrupt or truncated stream at the end: {}",
                super::one_line(&e)
            ))
        }
    })?;
    let diff_id = format!(
        "sha256:{}",
        hex(&plain.hasher.take().unwrap_or_default().finalize())
    );
    drop(plain);
    drain(&mut raw).map_err(|e| stream_err(format!("reading: {e}")))?;
    let blob_digest = match raw.get_mut().hasher.take() {
        Some(h) => format!("sha256:{}", hex(&h.finalize())),
        None => diff_id.clone(),
    };
    // Directory metadata last, deepest first.
    let mut dirs = std::mem::take(&mut ctx.dirs);
    dirs.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    for (comps, meta) in &dirs {
        let name = comps.join("/");
        let fd = ctx.open_dir(&name, comps)?;
        apply_meta(&ctx, &name, &fd, meta)?;
    }
    ctx.stats.tar_bytes = tar_count.get();
    ctx.stats.blob_bytes = compressed_count.get();
    Ok(Unpacked {
        stats: ctx.stats,
        diff_id,
        blob_digest,
    })
}

fn apply_meta(ctx: &Ctx<'_>, name: &str, fd: &OwnedFd, m: &Meta) -> Result<(), ImageError> {
    // chown first: it clears setuid bits and file capabilities, which chmod and xattrs then set.
    rustix::fs::fchown(
        fd,
        Some(rustix::process::Uid::from_raw(m.uid)),
        Some(rustix::process::Gid::from_raw(m.gid)),
    )
    .map_err(|e| ctx.io(name, "chown", e))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode)).map_err(|e| ctx.io(name, "chmod", e))?;
    ctx.set_xattrs(name, fd, &m.xattrs)?;
    let t = Timespec {
        tv_sec: i64::try_from(m.mtime).unwrap_or(0),
        tv_nsec: 0,
    };
    rustix::fs::futimens(
        fd,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
    .map_err(|e| ctx.io(name, "setting times", e))
}

#[expect(
    clippy::too_many_lines,
    reason = "one match over the entry types reads best in one place"
)]
fn unpack_entry(
    ctx: &mut Ctx<'_>,
    mut entry: tar::Entry<'_, impl Read>,
    raw_path: &[u8],
    shown: &str,
) -> Result<(), ImageError> {
    let comps = split_path(raw_path, ctx.limits.max_path).map_err(|r| ctx.refuse(shown, r))?;
    let Some((leaf, parent)) = comps.split_last() else {
        return Ok(()); // the root itself: nothing to do
    };
    let header = entry.header();
    let kind = header.entry_type();
    let uid = header.uid().map_err(|e| ctx.io(shown, "bad uid", e))?;
    let gid = header.gid().map_err(|e| ctx.io(shown, "bad gid", e))?;
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Err(ctx.refuse(shown, "uid or gid out of range"));
    };
    if uid == u32::MAX || gid == u32::MAX {
        return Err(ctx.refuse(shown, "uid or gid -1 refused"));
    }
    let mode = header.mode().map_err(|e| ctx.io(shown, "bad mode", e))?;
    let mtime = header.mtime().unwrap_or(0);
    let dev = (
        header.device_major().ok().flatten().unwrap_or(0),
        header.device_minor().ok().flatten().unwrap_or(0),
    );
    let mut notes = Vec::new();
    let xattrs = filter_xattrs(&mut entry, &mut notes, shown).map_err(|r| ctx.refuse(shown, r))?;
    ctx.stats.notes.append(&mut notes);
    let is_file = matches!(
        kind,
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
    );
    let (mode, dropped) = if is_file {
        safe_mode(mode)
    } else {
        (mode & 0o7777, false)
    };
    if dropped {
        ctx.stats.notes.push(format!(
            "{shown}: setuid/setgid dropped (the file is group- or world-writable)"
        ));
    }
    let meta = Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    };

    match classify(leaf).map_err(|r| ctx.refuse(shown, r))? {
        Whiteout::Opaque => {
            let dir = ctx.open_dir(shown, parent)?;
            rustix::fs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|e| ctx.io(shown, "marking the directory opaque", e))?;
            ctx.stats.opaque_dirs += 1;
            return Ok(());
        }
        Whiteout::Reserved => {
            ctx.stats
                .notes
                .push(format!("{shown}: reserved whiteout name skipped"));
            return Ok(());
        }
        Whiteout::Delete(target) => {
            let mut gone = parent.to_vec();
            gone.push(target.to_owned());
            ctx.dirs.retain(|(c, _)| !c.starts_with(&gone));
            let dir = ctx.open_dir(shown, parent)?;
            ctx.remove_at(shown, &dir, target)?;
            rustix::fs::mknodat(
                &dir,
                target,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| ctx.io(shown, "creating the whiteout (char 0/0)", e))?;
            ctx.stats.whiteouts += 1;
            return Ok(());
        }
        Whiteout::None => {}
    }

    if !ctx.seen.insert(raw_path.to_vec()) && kind != tar::EntryType::Directory {
        ctx.stats.notes.push(format!(
            "{shown}: appears more than once; the later entry wins"
        ));
    }
    if kind != tar::EntryType::Directory {
        // A non-directory replacing a directory of this layer: its pending metadata goes too.
        ctx.dirs.retain(|(c, _)| !c.starts_with(&comps));
    }
    let dir = ctx.open_dir(shown, parent)?;
    let name = leaf.as_str();
    match kind {
        tar::EntryType::Directory => {
            match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                Ok(_) => {
                    ctx.remove_at(shown, &dir, name)?;
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| ctx.io(shown, "mkdir", e))?;
                }
                Err(Errno::NOENT) => rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| ctx.io(shown, "mkdir", e))?,
                Err(e) => return Err(ctx.io(shown, "mkdir", e)),
            }
            ctx.stats.dirs += 1;
            ctx.dirs.retain(|(c, _)| c != &comps);
            ctx.dirs.push((comps.clone(), meta));
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            ctx.remove_at(shown, &dir, name)?;
            let fd = rustix::fs::openat(
                &dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| ctx.io(shown, "creating", e))?;
            let mut f = File::from(fd);
            let n = std::io::copy(&mut entry, &mut f).map_err(|e| ctx.io(shown, "writing", e))?;
            ctx.stats.file_bytes += n;
            ctx.stats.files += 1;
            let fd = OwnedFd::from(f);
            apply_meta(ctx, shown, &fd, &meta)?;
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ctx.refuse(shown, "symlink without a target"))?;
            if target.is_empty() || target.contains(&0) || target.len() > ctx.limits.max_path {
                return Err(ctx.refuse(shown, "symlink target empty, over-long or with a NUL"));
            }
            let target = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&target);
            ctx.remove_at(shown, &dir, name)?;
            rustix::fs::symlinkat(target, &dir, name).map_err(|e| ctx.io(shown, "symlink", e))?;
            rustix::fs::chownat(
                &dir,
                name,
                Some(rustix::process::Uid::from_raw(uid)),
                Some(rustix::process::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ctx.io(shown, "chown", e))?;
            let t = Timespec {
                tv_sec: i64::try_from(mtime).unwrap_or(0),
                tv_nsec: 0,
            };
            let _ = rustix::fs::utimensat(
                &dir,
                name,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                AtFlags::SYMLINK_NOFOLLOW,
            );
            ctx.stats.symlinks += 1;
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ctx.refuse(shown, "hardlink without a target"))?;
            let tcomps = split_path(&target, ctx.limits.max_path)
                .map_err(|r| ctx.refuse(shown, format!("hardlink target: {r}")))?;
            let Some((tleaf, tparent)) = tcomps.split_last() else {
                return Err(ctx.refuse(shown, "hardlink to the layer root; refused"));
            };
            if tcomps == comps {
                return Err(ctx.refuse(shown, "hardlink to itself; refused"));
            }
            let tdir = ctx.open_dir(shown, tparent)?;
            match rustix::fs::statat(&tdir, tleaf.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    return Err(ctx.refuse(shown, "hardlink to a directory; refused"));
                }
                Ok(_) => {}
                Err(Errno::NOENT) => {
                    return Err(ctx.refuse(
                        shown,
                        format!(
                            "hardlink target {:?} is not in this layer; refused",
                            tcomps.join("/")
                        ),
                    ))
                }
                Err(e) => return Err(ctx.io(shown, "hardlink target", e)),
            }
            ctx.remove_at(shown, &dir, name)?;
            rustix::fs::linkat(&tdir, tleaf.as_str(), &dir, name, AtFlags::empty())
                .map_err(|e| ctx.io(shown, "link", e))?;
            ctx.stats.hardlinks += 1;
        }
        tar::EntryType::Fifo => {
            ctx.remove_at(shown, &dir, name)?;
            rustix::fs::mknodat(
                &dir,
                name,
                FileType::Fifo,
                Mode::from_raw_mode(mode & 0o777),
                0,
            )
            .map_err(|e| ctx.io(shown, "mkfifo", e))?;
            rustix::fs::chownat(
                &dir,
                name,
                Some(rustix::process::Uid::from_raw(uid)),
                Some(rustix::process::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ctx.io(shown, "chown", e))?;
            ctx.stats.fifos += 1;
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            let (maj, min) = dev;
            ctx.stats.notes.push(format!(
                "{shown}: device node {maj}:{min} not created (devices from images never are; the runtime provides /dev)"
            ));
        }
        other => {
            ctx.stats
                .notes
                .push(format!("{shown}: entry type {other:?} skipped"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names_convert() {
        assert_eq!(classify("a"), Ok(Whiteout::None));
        assert_eq!(classify(".wh.a"), Ok(Whiteout::Delete("a")));
        assert_eq!(classify(".wh..wh..opq"), Ok(Whiteout::Opaque));
        assert_eq!(classify(".wh..wh.plnk"), Ok(Whiteout::Reserved));
        assert!(classify(".wh.").is_err());
        assert!(classify(".wh...").is_err());
        assert_eq!(classify(".wh.a.wh.b"), Ok(Whiteout::Delete("a.wh.b")));
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(
            split_path(b"./a//b/", 4096),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(split_path(b"a/../../x", 4096).is_err());
        assert!(split_path(b"/etc/passwd", 4096).is_err());
        assert!(split_path(b"a\0b", 4096).is_err());
        assert!(split_path(&[b'a'; 300], 4096).is_err());
        assert!(split_path(&[b'a'; 20], 10).is_err());
    }

    #[test]
    fn setuid_is_dropped_only_when_writable_by_others() {
        assert_eq!(safe_mode(0o104_755), (0o4755, false));
        assert_eq!(safe_mode(0o4777), (0o777, true));
        assert_eq!(safe_mode(0o2775), (0o775, true));
        assert_eq!(safe_mode(0o1777), (0o1777, false));
    }
}
