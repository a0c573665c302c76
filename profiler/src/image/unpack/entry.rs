//! Writing one entry, relative to the layer root's directory fd (`openat2` with `RESOLVE_BENEATH`,
//! `*at` calls on single names, `O_NOFOLLOW`/`O_EXCL`).

use std::{
    collections::HashSet,
    fs::File,
    io::Read,
    os::fd::{AsFd, OwnedFd},
};

use rustix::{
    fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags},
    io::Errno,
};

use super::super::ImageError;

use super::{
    names::{classify, filter_xattrs, safe_mode, split_path, Whiteout},
    LayerStats, Limits,
};

pub(super) struct Ctx<'a> {
    pub(super) layer: &'a str,
    pub(super) root: &'a OwnedFd,
    pub(super) limits: Limits,
    pub(super) stats: LayerStats,
    pub(super) seen: HashSet<Vec<u8>>,
    /// Directories whose metadata is applied at the end (so a read-only one can still be filled).
    pub(super) dirs: Vec<(Vec<String>, Meta)>,
}

#[derive(Clone)]
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: u64,
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
}

pub(super) const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

impl Ctx<'_> {
    pub(super) fn refuse(&self, entry: &str, reason: impl Into<String>) -> ImageError {
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

    pub(super) fn io(&self, entry: &str, what: &str, e: impl std::fmt::Display) -> ImageError {
        self.refuse(entry, format!("{what}: {}", super::super::one_line(e)))
    }

    /// Opens (creating as needed) the directory `comps` beneath the root; never follows a symlink.
    pub(super) fn open_dir(&self, entry: &str, comps: &[String]) -> Result<OwnedFd, ImageError> {
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
    pub(super) fn remove_at(
        &self,
        entry: &str,
        dir: &OwnedFd,
        name: &str,
    ) -> Result<(), ImageError> {
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

    pub(super) fn set_xattrs(
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

pub(super) fn apply_meta(
    ctx: &Ctx<'_>,
    name: &str,
    fd: &OwnedFd,
    m: &Meta,
) -> Result<(), ImageError> {
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
pub(super) fn unpack_entry(
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
