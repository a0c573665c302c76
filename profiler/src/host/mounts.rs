//! Mounting and unmounting: `mount(2)`, unmounting everything under a directory, removing a tree
//! that may have mounts in it, overlay module parameters, private mount namespaces and the page
//! cache. Every tool that mounts (the lab, image comparison, the scenario) uses these.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

/// A refused overlay mount, with its options (the kernel's EINVAL says nothing more).
#[derive(Debug, thiserror::Error)]
#[error("mount -t overlay on {path} failed: {source} (options: {options})")]
pub struct OverlayMountError {
    pub path: PathBuf,
    pub options: String,
    #[source]
    pub source: std::io::Error,
}

/// For `map_err` of an overlay `mount` on `path` with `options`.
pub fn overlay_mount_err<'a>(
    path: &'a Path,
    options: &'a str,
) -> impl FnOnce(std::io::Error) -> OverlayMountError + 'a {
    move |source| OverlayMountError {
        path: path.to_owned(),
        options: options.to_owned(),
        source,
    }
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("lab paths have no NUL")
}

pub fn mount(source: &str, target: &Path, fstype: &str, data: &str) -> std::io::Result<()> {
    let src = CString::new(source).expect("no NUL");
    let fs_c = CString::new(fstype).expect("no NUL");
    let data_c = CString::new(data).expect("no NUL");
    let tgt = cstr(target);
    // SAFETY: valid NUL-terminated strings for the duration of the call.
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
        Err(std::io::Error::last_os_error())
    }
}

/// Unmounts `target`; a busy mount is detached lazily (`MNT_DETACH`) instead. True if something
/// was unmounted.
pub fn umount(target: &Path) -> bool {
    let tgt = cstr(target);
    // SAFETY: valid C string.
    unsafe {
        libc::umount2(tgt.as_ptr(), 0) == 0 || libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) == 0
    }
}

/// Mount points in this mount namespace, in mountinfo order (parents before children), with
/// their filesystem type.
pub fn mount_points() -> Vec<(PathBuf, String)> {
    super::mountinfo::mount_entries()
        .into_iter()
        .map(|m| (m.mount_point, m.fstype))
        .collect()
}

/// Unmounts everything mounted at or below `dir`, innermost and newest first. Returns the mount
/// points that were unmounted.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let mut done = Vec::new();
    // A detached mount can reveal an older one at the same point: go round until none is left.
    for _ in 0..8 {
        let under: Vec<PathBuf> = mount_points()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.starts_with(dir))
            .collect();
        if under.is_empty() {
            break;
        }
        for p in under.iter().rev() {
            if umount(p) {
                done.push(p.clone());
            }
        }
    }
    done
}

/// Removes `dir` and everything in it, after unmounting whatever is mounted below it (a plain
/// recursive delete would walk into a mount). Missing is fine.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    unmount_all_under(dir);
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// True if this kernel's overlay has the module parameter (e.g. `index`, `metacopy`).
pub fn overlay_param(name: &str) -> Option<String> {
    fs::read_to_string(Path::new("/sys/module/overlay/parameters").join(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Drops the page cache, dentries and inodes (after a sync), for `cache = "cold"`.
pub fn drop_caches() -> std::io::Result<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let p = Path::new("/proc/sys/vm/drop_caches");
    fs::write(p, "3")
}

/// Moves this process into a mount namespace of its own whose mounts do not propagate back:
/// whatever happens to the process (even SIGKILL), its mounts go away with the namespace. Best
/// effort: false (with the reason logged) if it could not.
pub fn private_mount_namespace() -> bool {
    // SAFETY: plain syscalls with constant arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            log::info!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
            return false;
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            log::warn!(
                "making / private in the lab's mount namespace: {}",
                std::io::Error::last_os_error()
            );
            return false;
        }
    }
    true
}
