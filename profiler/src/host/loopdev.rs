//! Loop devices: find, attach, mark auto-clearing, detach. Used by the lab's filesystem images
//! and by `cowprof clean`.

use std::{
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
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

/// Attaches `image` to a free loop device, as `losetup --find --show` would, with the loop
/// driver's own ioctls (`LOOP_CTL_GET_FREE`, `LOOP_SET_FD`): no util-linux needed, so the lab
/// runs in a minimal initramfs too (busybox's `losetup` has no `--find --show`).
pub fn loop_attach(image: &Path) -> std::io::Result<PathBuf> {
    let with_path = |what: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", what.display()))
    };
    let control_path = Path::new("/dev/loop-control");
    let control = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(control_path)
        .map_err(|e| with_path(control_path, e))?;
    let backing = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| with_path(image, e))?;
    // Another process may take the free device between the two ioctls: ask again.
    for _ in 0..32 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(with_path(control_path, std::io::Error::last_os_error()));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let device = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .map_err(|e| with_path(&dev, e))?;
        // SAFETY: LOOP_SET_FD takes the backing file's fd, open for the call's duration.
        let rc = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_SET_FD as _,
                libc::c_ulong::try_from(backing.as_raw_fd()).unwrap_or_default(),
            )
        };
        if rc == 0 {
            set_file_name(&device, image);
            return Ok(dev);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(with_path(&dev, err));
        }
    }
    Err(std::io::Error::other(format!(
        "no free loop device for {} after 32 attempts (others kept taking them)",
        image.display()
    )))
}

/// Records the image's path in the device's status, where `losetup -a` and tools that ask the
/// device (not sysfs) read it; best effort, sysfs has the path anyway.
fn set_file_name(device: &fs::File, image: &Path) {
    let fd = device.as_raw_fd();
    // SAFETY: LoopInfo64 is plain old data; the ioctls read/write exactly one of them.
    unsafe {
        let mut info: LoopInfo64 = std::mem::zeroed();
        if libc::ioctl(fd, LOOP_GET_STATUS64 as _, &raw mut info) == 0 {
            let name = image.as_os_str().as_encoded_bytes();
            let len = name.len().min(info.file_name.len() - 1);
            info.file_name = [0; 64];
            info.file_name[..len].copy_from_slice(&name[..len]);
            libc::ioctl(fd, LOOP_SET_STATUS64 as _, &raw const info);
        }
    }
}

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
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
