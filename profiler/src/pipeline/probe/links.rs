//! The kernel's own count of kprobe hits it did not run the handlers of (`missed` in a perf
//! link's `bpf_link_info`, Linux 6.7 and later): a kprobe hit while another kprobe's handler runs
//! on that CPU, or a kretprobe whose return instances ran out. aya keeps the link fds of what it
//! attached but does not expose that field, so the process's own `bpf_link` fds are read here.

use std::{fs, os::fd::RawFd};

/// `BPF_OBJ_GET_INFO_BY_FD`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_LINK_TYPE_PERF_EVENT`.
const LINK_TYPE_PERF_EVENT: u32 = 7;
/// `BPF_PERF_EVENT_KPROBE`, `BPF_PERF_EVENT_KRETPROBE`.
const PERF_EVENT_KPROBE: u32 = 3;
const PERF_EVENT_KRETPROBE: u32 = 4;

/// `bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Per kprobe or kretprobe link of this process: the probed function (`ret:` before a
/// kretprobe's) and the hits the kernel missed. Empty where the kernel does not report it.
pub fn kprobe_missed() -> Vec<(String, u64)> {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let is_link =
            fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link");
        let fd = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok());
        if let (true, Some(fd)) = (is_link, fd) {
            out.extend(missed_of(fd));
        }
    }
    out.sort();
    out
}

/// One link's kprobe misses, if it is a perf-event link of a kprobe or kretprobe.
fn missed_of(fd: RawFd) -> Option<(String, u64)> {
    // `struct bpf_link_info`: type, id, prog_id, then (8-aligned, at 16) the perf_event union:
    // type, a pad, then the kprobe struct: func_name, name_len, offset, addr, missed, cookie.
    let mut info = [0u64; 32];
    let mut name = [0u8; 128];
    info[3] = name.as_mut_ptr() as u64; // perf_event.kprobe.func_name (in/out)
    info[4] = name.len() as u64; // name_len (offset 0 in the low half)
    let attr = InfoAttr {
        bpf_fd: u32::try_from(fd).ok()?,
        info_len: u32::try_from(std::mem::size_of_val(&info)).ok()?,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: the attr points at a zeroed buffer and a name buffer that outlive the call; the
    // kernel writes at most `info_len` and `name_len` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw const attr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    let link_type = info[0] as u32;
    let perf_type = info[2] as u32;
    if rc != 0 || link_type != LINK_TYPE_PERF_EVENT {
        return None;
    }
    let ret = match perf_type {
        PERF_EVENT_KPROBE => "",
        PERF_EVENT_KRETPROBE => "ret:",
        _ => return None,
    };
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let func = String::from_utf8_lossy(&name[..len]);
    Some((format!("{ret}{func}"), info[6]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_links_no_misses() {
        // The test process holds no bpf_link fds.
        assert!(super::kprobe_missed().is_empty());
    }
}
