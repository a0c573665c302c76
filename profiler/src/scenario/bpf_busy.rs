//! A neighbour that keeps `bpf()` busy: threads looping on `BPF_MAP_LOOKUP_ELEM` of an array
//! map of their own. Each such call holds the CPU's `bpf_prog_active` guard, which from 7.0 can
//! be preempted, and the kernel then skips every kprobe program on that CPU (docs/backends.md,
//! "Missed kprobes"). `scripts/vm-kprobe-guard.sh` runs the storm beside it and requires
//! cowprof to report those skipped runs.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// `union bpf_attr`, as much of it as the two commands use (the kernel accepts a shorter one).
#[repr(C, align(8))]
#[derive(Default)]
struct Attr([u32; 8]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> libc::c_long {
    // SAFETY: `attr` is a valid, initialised buffer of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<Attr>(),
        )
    }
}

/// Loops `threads` threads on map lookups for `duration`; the lookups made, or the error of
/// the map's creation.
pub fn run(threads: usize, duration: Duration) -> std::io::Result<u64> {
    let mut create = Attr::default();
    // map_type, key_size, value_size, max_entries
    create.0[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 8, 1]);
    let raw = bpf(BPF_MAP_CREATE, &mut create);
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let raw = i32::try_from(raw).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: a new fd that nothing else owns; closed when `map` drops.
    let map = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = map.as_raw_fd().cast_unsigned();
    let end = Instant::now() + duration;
    let lookups = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let key = 0u32;
                    let mut value = 0u64;
                    let mut n = 0u64;
                    while Instant::now() < end {
                        for _ in 0..1000 {
                            let mut a = Attr::default();
                            // map_fd, pad, key (u64), value (u64)
                            let k = std::ptr::from_ref(&key) as u64;
                            let v = std::ptr::from_mut(&mut value) as u64;
                            a.0[0] = fd;
                            a.0[2] = k as u32;
                            a.0[3] = (k >> 32) as u32;
                            a.0[4] = v as u32;
                            a.0[5] = (v >> 32) as u32;
                            bpf(BPF_MAP_LOOKUP_ELEM, &mut a);
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    drop(map);
    Ok(lookups)
}
