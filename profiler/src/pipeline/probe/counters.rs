//! The kernel side's loss counters (`COUNTERS`, indexed by `counter::*`), read without a system
//! call.
//!
//! The map is a plain array created with `BPF_F_MMAPABLE`: the programs add to its slots
//! atomically and user space maps it read-only once, after loading. A read is eight memory
//! loads, not eight `bpf(BPF_MAP_LOOKUP_ELEM)` calls. That matters beyond their cost: every
//! `bpf()` map operation, of any process, holds the per-CPU guard that all kprobe programs share
//! (`bpf_prog_active`), and kernels that preempt a task there make the kernel skip every kprobe
//! program on that CPU until the task runs again (docs/backends.md, "Missed kprobes"). `record`
//! with metrics read the counters every 200 ms; now it makes no `bpf()` call between attaching
//! and stopping unless an overlay mount appears (its registration).
//!
//! Where the mapping fails, the counters are read through `bpf()` as before.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    maps::{Array, Map},
    Ebpf,
};
use memmap2::{Mmap, MmapOptions};
use profiler_common::counter;

/// Every counter, summed.
pub type Values = [u64; counter::COUNT as usize];

/// How the counters are read: the mapped array, or `bpf()` lookups where it could not be mapped.
pub enum Counters {
    Mapped(Mmap),
    Syscall,
}

impl Counters {
    /// Maps `ebpf`'s `COUNTERS` read-only.
    pub fn map(ebpf: &Ebpf) -> Self {
        let mapped = match ebpf.map("COUNTERS") {
            Some(Map::Array(data)) => {
                let fd = data.fd().as_fd().as_raw_fd();
                // SAFETY: a read-only shared mapping of the map's value area (8-byte slots from
                // offset 0), which the kernel keeps for the mapping's life; it is only read with
                // atomic loads (`read`), never through references the kernel could change under.
                unsafe {
                    MmapOptions::new()
                        .len(std::mem::size_of::<Values>())
                        .map(fd)
                }
            }
            _ => return Self::Syscall,
        };
        match mapped {
            Ok(m) => Self::Mapped(m),
            Err(e) => {
                log::debug!("COUNTERS cannot be mapped ({e}): read through bpf() instead");
                Self::Syscall
            }
        }
    }

    /// Every counter now.
    pub fn read(&self, ebpf: &Ebpf) -> Values {
        let mut out = [0u64; counter::COUNT as usize];
        match self {
            Self::Mapped(m) => {
                #[expect(
                    clippy::cast_ptr_alignment,
                    reason = "a mapping starts on a page boundary"
                )]
                let base = m.as_ptr().cast::<u64>().cast_mut();
                for (i, slot) in out.iter_mut().enumerate() {
                    // SAFETY: `i` < COUNT slots of 8 bytes inside the mapping, page-aligned
                    // (so 8-byte aligned); the kernel side writes them atomically.
                    *slot = unsafe { AtomicU64::from_ptr(base.add(i)) }.load(Ordering::Relaxed);
                }
            }
            Self::Syscall => {
                let Some(Ok(arr)) = ebpf.map("COUNTERS").map(Array::<_, u64>::try_from) else {
                    return out;
                };
                for (i, slot) in out.iter_mut().enumerate() {
                    if let Ok(v) = arr.get(&(i as u32), 0) {
                        *slot = v;
                    }
                }
            }
        }
        out
    }
}
