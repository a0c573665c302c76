//! Files cowprof writes under `sudo` belong to the user who ran sudo (`SUDO_UID`/`SUDO_GID`),
//! not to root: results, reports and charts end up in the user's own directories.
//!
//! Only what this run wrote is given away: entries under the output directory that root owns
//! and that were modified since the run started, and the directory itself if the run created
//! it. Symbolic links are never followed (a link in the output directory cannot make cowprof
//! chown something elsewhere).

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// (uid, gid) of the user behind sudo, when running as root under sudo for someone else.
pub fn invoker() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid: u32 = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    (uid != 0).then_some((uid, gid))
}

/// Remembers the state of an output directory before a run writes into it.
pub struct Output {
    dir: PathBuf,
    existed: bool,
    since: SystemTime,
}

impl Output {
    pub fn before(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            existed: fs::symlink_metadata(dir).is_ok(),
            // mtimes have coarse granularity on some filesystems: a second of slack.
            since: SystemTime::now() - std::time::Duration::from_secs(1),
        }
    }

    /// Gives what the run wrote to the sudo user; a no-op without sudo. Errors are reported on
    /// stderr, not fatal (the results are written either way).
    pub fn give_to_invoker(&self) {
        let Some((uid, gid)) = invoker() else { return };
        let Ok(md) = fs::symlink_metadata(&self.dir) else {
            return;
        };
        if !md.is_dir() {
            return;
        }
        if !self.existed {
            chown(&self.dir, uid, gid);
        }
        self.walk(&self.dir, uid, gid, 0);
    }

    fn walk(&self, dir: &Path, uid: u32, gid: u32, depth: u32) {
        if depth > 8 {
            return;
        }
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            // DirEntry::metadata does not follow symlinks.
            if md.file_type().is_symlink() || md.uid() != 0 {
                continue;
            }
            let fresh = md.modified().is_ok_and(|m| m >= self.since);
            if fresh {
                chown(&e.path(), uid, gid);
            }
            if md.is_dir() && fresh {
                self.walk(&e.path(), uid, gid, depth + 1);
            }
        }
    }
}

fn chown(p: &Path, uid: u32, gid: u32) {
    if let Err(e) = std::os::unix::fs::lchown(p, Some(uid), Some(gid)) {
        eprintln!(
            "cowprof: cannot give {} to the sudo user ({uid}:{gid}): {e}",
            p.display()
        );
    }
}
