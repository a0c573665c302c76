//! Shared by every program: the maps, the event layout helpers, the dentry walk and the
//! constants of the kernel ABI. Struct offsets come from `CONFIG` (read from BTF in user space).

pub(crate) use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, fentry, kprobe, kretprobe, map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, RetProbeContext,
    },
};
pub(crate) use aya_log_ebpf::warn;
pub(crate) use profiler_common::{
    backend, class, counter, flags, kind, Config, CowEvent, InodeKey, Offsets, SyscallEnd,
    NAME_MAX_COPY, PATH_BUF, PATH_MAX_DEPTH, RECORD_COW, RECORD_SYSCALL_END,
};

pub(crate) const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFCHR: u32 = 0o020_000;
pub(crate) const RENAME_EXCHANGE: u64 = 2;
/// CoW operations the tracepoint backend can hold for one syscall (a deep path copies up
/// one directory per level; each extra one is counted in `OP_TABLE_FULL`).
pub(crate) const MAX_OPS: usize = 16;

#[map]
pub(crate) static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
/// Syscall number -> `class` bits; 0 = not tracked.
#[map]
pub(crate) static SYSCALLS: Array<u8> = Array::with_max_entries(512, 0);
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// Tracepoint backend: the work directories (`<workdir>/work`) of the overlay mounts.
#[map]
pub(crate) static WORKDIRS: HashMap<InodeKey, u32> = HashMap::with_max_entries(4096, 0);
/// Tracepoint backend: upper root directories; the dentry walk stops there.
#[map]
pub(crate) static UPPER_ROOTS: HashMap<InodeKey, u32> = HashMap::with_max_entries(4096, 0);
/// Tracepoint backend: superblocks that hold an upper layer (s_dev).
#[map]
pub(crate) static UPPER_DEVS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Op {
    pub(crate) inode: u64,
    pub(crate) first_ns: u64,
    pub(crate) last_ns: u64,
    pub(crate) dev: u32,
    pub(crate) mode: u32,
    pub(crate) nlink: u32,
    pub(crate) state: u32,
    /// i_size when the temp last changed inside the work directory (before a later truncate
    /// or write in the same syscall changes it).
    pub(crate) size: u64,
    /// Mount id of the work directory the temp was made in (0 for whiteouts).
    pub(crate) mount_id: u32,
    pub(crate) _pad: u32,
    /// Whiteouts: the inode's newest alias (`i_dentry.first`) at the previous ctime update.
    pub(crate) alias_before: u64,
    /// Whiteouts: this syscall's own link of the (shared) whiteout inode, found at its
    /// rename into the upper dir; 0 = not found (the newest alias is used).
    pub(crate) whiteout_dentry: u64,
}

/// `Op::state`: an inode created in this syscall, not yet named.
pub(crate) const NEWBORN: u32 = 1;
/// Created in this syscall inside a work directory: a CoW temp.
pub(crate) const TEMP: u32 = 2;
/// A whiteout made (or linked) in this syscall.
pub(crate) const WHITEOUT: u32 = 3;
/// Created in this syscall outside any work directory: an ordinary create.
pub(crate) const IGNORE: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) enter_ns: u64,
    pub(crate) nr: i32,
    pub(crate) class: u32,
    pub(crate) emitted: u32,
    pub(crate) nops: u32,
    /// A whiteout's ctime changed in a creating syscall: it was replaced (create over it).
    pub(crate) consumed_whiteout: u32,
    pub(crate) _pad: u32,
    pub(crate) ops: [Op; MAX_OPS],
}

#[map]
pub(crate) static WINDOW_SCRATCH: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);

/// tid -> the tracked syscall it is in.
#[map]
pub(crate) static WINDOWS: HashMap<u32, Window> = HashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) dentry: u64,
    pub(crate) start_ns: u64,
    /// kprobe copy-up: the dentry already had an upper (deferred metacopy data);
    /// remove/rename: a whiteout will be made; create: the name is a whiteout.
    pub(crate) arg: u64,
    pub(crate) size: u64,
    pub(crate) kind: u32,
    pub(crate) mode: u32,
    pub(crate) lower_idx: u32,
    pub(crate) _pad: u32,
}

/// kprobe backend: tid -> operation in progress (copy-ups of one dentry do not nest).
#[map]
pub(crate) static COPY_UPS: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);
#[map]
pub(crate) static DIR_OPS: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);

/// `bpf_ringbuf_submit`/`output` flags and `bpf_ringbuf_query` selectors (uapi `BPF_RB_*`).
pub(crate) const RB_NO_WAKEUP: u64 = 1;
pub(crate) const RB_FORCE_WAKEUP: u64 = 2;
const RB_AVAIL_DATA: u64 = 0;
const RB_RING_SIZE: u64 = 1;

/// Flags for a ring-buffer submit: the reader is not woken per record (it drains on a short
/// timer, see `pipeline::record`), except once an eighth of the buffer is waiting, so that a
/// burst never fills it while the reader sleeps. A wakeup per record cost an irq_work (an IPI
/// on a VM) and a reader pass per event.
#[inline(always)]
pub(crate) fn rb_flags() -> u64 {
    if EVENTS.query(RB_AVAIL_DATA) >= EVENTS.query(RB_RING_SIZE) / 8 {
        RB_FORCE_WAKEUP
    } else {
        RB_NO_WAKEUP
    }
}

#[inline(always)]
pub(crate) fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub(crate) fn bump(idx: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub(crate) fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == u32::MAX {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.ok()
}

#[inline(always)]
pub(crate) fn ptr(base: u64, off: u32) -> u64 {
    read::<u64>(base, off).unwrap_or(0)
}

/// The process filter and self filter. Returns (tgid, tid).
#[inline(always)]
pub(crate) fn wanted(cfg: &Config) -> Option<(u32, u32)> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if tgid == cfg.self_tgid || (cfg.filter_tgid != 0 && tgid != cfg.filter_tgid) {
        return None;
    }
    // SAFETY: plain helper call.
    if cfg.filter_cgroup != 0 && unsafe { bpf_get_current_cgroup_id() } != cfg.filter_cgroup {
        return None;
    }
    Some((tgid, id as u32))
}

#[inline(always)]
pub(crate) fn inode_mode(off: &Offsets, inode: u64) -> u32 {
    u32::from(read::<u16>(inode, off.inode_i_mode).unwrap_or(0))
}

/// Walks `dentry` towards the root, writing names leaf first into `ev.path`.
/// Stops at the filesystem root, or at an upper root when `upper_dev` is non-zero.
/// Not inlined: as a BPF subprogram it is verified once per call site instead of being
/// unrolled into every caller's loop.
/// Returns false if the walk never reached its root (an upper root when `upper_dev` is set).
#[inline(never)]
pub(crate) fn walk(off: &Offsets, ev: &mut CowEvent, mut dentry: u64, upper_dev: u32) -> bool {
    let mut pos: usize = 0;
    let mut depth: u32 = 0;
    let mut truncated = 1u32;
    let mut at_root = false;
    for _ in 0..PATH_MAX_DEPTH {
        if dentry == 0 {
            truncated = 0;
            break;
        }
        let inode = ptr(dentry, off.dentry_d_inode);
        let parent = ptr(dentry, off.dentry_d_parent);
        if upper_dev != 0 && inode != 0 {
            let key = InodeKey {
                dev: upper_dev,
                _pad: 0,
                ino: ptr(inode, off.inode_i_ino),
            };
            // SAFETY: read-only map lookup.
            if unsafe { UPPER_ROOTS.get(&key) }.is_some() {
                ev.root_ino = key.ino;
                truncated = 0;
                at_root = true;
                break;
            }
        }
        if parent == dentry || parent == 0 {
            ev.root_ino = if inode != 0 {
                ptr(inode, off.inode_i_ino)
            } else {
                0
            };
            truncated = 0;
            break;
        }
        let name = ptr(dentry, off.dentry_d_name_name);
        // black_box keeps LLVM from dropping the mask (it can prove pos < 256): older
        // verifiers (6.1) need the mask itself to bound the write offset.
        let start = core::hint::black_box(pos) & (PATH_BUF / 2 - 1);
        // SAFETY: start < PATH_BUF/2 and the slice is NAME_MAX_COPY + 1 <= PATH_BUF/2 long.
        let dst = unsafe {
            core::slice::from_raw_parts_mut(ev.path.as_mut_ptr().add(start), NAME_MAX_COPY + 1)
        };
        // SAFETY: kernel string read into a bounded buffer.
        let n = match unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, dst) } {
            Ok(s) => s.len(),
            Err(_) => break,
        };
        pos = start + n + 1; // keep the NUL as separator
        depth += 1;
        if pos >= PATH_BUF / 2 {
            break;
        }
        dentry = parent;
    }
    // The walk may have used all its levels on a path exactly that deep: if what is left
    // is the root, nothing was cut.
    if truncated != 0 && dentry != 0 && pos < PATH_BUF / 2 {
        let inode = ptr(dentry, off.dentry_d_inode);
        let ino = ptr(inode, off.inode_i_ino);
        let key = InodeKey {
            dev: upper_dev,
            _pad: 0,
            ino,
        };
        let is_root = if upper_dev != 0 {
            // SAFETY: read-only map lookup.
            unsafe { UPPER_ROOTS.get(&key) }.is_some()
        } else {
            ptr(dentry, off.dentry_d_parent) == dentry
        };
        if is_root {
            ev.root_ino = ino;
            truncated = 0;
            at_root = true;
        }
    }
    ev.path_len = pos as u32;
    ev.depth = depth;
    if truncated != 0 {
        ev.flags |= flags::PATH_TRUNCATED;
    }
    at_root || truncated != 0
}

/// Fills the fields every event has. Returns the window's enter time, if in one.
#[inline(always)]
pub(crate) fn fill_common(cfg: &Config, ev: &mut CowEvent, tgid: u32, tid: u32, backend_id: u32) {
    ev.record = RECORD_COW;
    ev.backend = backend_id;
    ev.pid = tgid;
    ev.tid = tid;
    ev.flags = 0;
    ev.result = 0;
    ev.lower_idx = 0;
    ev.root_ino = 0;
    ev.mount_id = 0;
    ev._pad = 0;
    ev.size_bytes = 0;
    ev.bytes_copied = 0;
    ev.path_len = 0;
    ev.depth = 0;
    ev.syscall_nr = -1;
    ev.syscall_enter_ns = 0;
    // SAFETY: plain helper calls.
    ev.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let off = &cfg.off;
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let ns = ptr(ptr(task, off.task_nsproxy), off.nsproxy_mnt_ns);
    ev.mnt_ns = read::<u32>(ns, off.mnt_ns_inum).unwrap_or(0);
    // SAFETY: the window map is only written by this tid.
    if let Some(w) = WINDOWS.get_ptr_mut(&tid) {
        unsafe {
            ev.syscall_nr = (*w).nr;
            ev.syscall_enter_ns = (*w).enter_ns;
            (*w).emitted += 1;
        }
        ev.flags |= flags::IN_SYSCALL;
    }
}
