//! Loop devices: find, attach, mark auto-clearing, detach. Used by the lab's filesystem images
//! and by `cowprof clean`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Loop devices and the files behind them, from sysfs: (device, backing file). A deleted
/// backing file shows with a " (deleted)" suffix, which is stripped.
pub fn loop_devices() -> Vec<(PathBuf, PathBuf)> {
    let Ok(rd) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let Ok(back) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let back = back.trim_end_matches('\n');
        let back = back.strip_suffix(" (deleted)").unwrap_or(back);
        out.push((PathBuf::from(format!("/dev/{name}")), PathBuf::from(back)));
    }
    out.sort();
    out
}

/// Attaches `image` to a free loop device (`losetup --find --show`).
pub fn loop_attach(image: &Path) -> std::io::Result<PathBuf> {
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(image)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "losetup --find --show {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// Marks a loop device (already held by a mount) to detach itself when its last user goes, so
/// even a namespace torn down after SIGKILL releases it.
pub fn loop_set_autoclear(dev: &Path) {
    let Ok(f) = fs::File::open(dev) else { return };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: LoopInfo64 is plain old data; the ioctls read/write exactly one of them.
    unsafe {
        let mut info: LoopInfo64 = std::mem::zeroed();
        if libc::ioctl(fd, LOOP_GET_STATUS64 as _, &raw mut info) == 0 {
            info.flags |= LO_FLAGS_AUTOCLEAR;
            libc::ioctl(fd, LOOP_SET_STATUS64 as _, &raw const info);
        }
    }
}

/// Detaches a loop device; true if it was detached now or is already free.
pub fn loop_detach(dev: &Path) -> bool {
    let Ok(f) = fs::File::open(dev) else {
        return true;
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(fd, LOOP_CLR_FD as _, 0) };
    // ENXIO: not attached (any more).
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)
}
