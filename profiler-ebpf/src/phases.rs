//! Copy-up phases: where a copy-up's time goes.
//!
//! A task doing a copy-up is *armed*: it gets an entry in `PHASE_TASKS` (keyed by its
//! `task_struct`, so the scheduler tracepoint can find it from `prev`/`next` without reading
//! pids). While armed, its time is split without overlap:
//!
//! * on the CPU inside a probed function: that function's phase (kprobe backend:
//!   `ovl_copy_xattr`/`ovl_set_attr`, `vfs_clone_file_range`/`do_splice_direct`,
//!   `vfs_fsync_range`, `vfs_link`/`vfs_rename`; tracepoint backend: ext4's fsync
//!   tracepoints);
//! * off the CPU (`sched_switch` out, then in): block-I/O wait when the task slept in
//!   `io_schedule` (its `in_iowait` bit), other wait otherwise.
//!
//! Totals only grow while armed. The kprobe backend arms at `ovl_copy_up_start` with zero
//! totals and reads them at `ovl_copy_up_end`; the tracepoint backend snapshots them at each
//! CoW operation's first and last ctime update and reports the difference.

use crate::common::*;
use profiler_common::phase_seen;

const PH_NONE: u32 = 0;
const PH_METADATA: u32 = 1;
const PH_DATA: u32 = 2;
const PH_FSYNC: u32 = 3;
const PH_LINK: u32 = 4;

const EXT4_SUPER_MAGIC: u64 = 0xEF53;
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Running totals of one armed task.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Totals {
    /// On-CPU time per function phase, indexed by `PH_*` (slot 0 unused). An array with a
    /// masked index: a `match` on the phase compiles to an index the verifier cannot bound.
    pub(crate) fn_ns: [u64; 8],
    pub(crate) offcpu_block: u64,
    pub(crate) offcpu_other: u64,
    pub(crate) clone_bytes: u64,
    pub(crate) splice_bytes: u64,
}

const ZERO: Totals = Totals {
    fn_ns: [0; 8],
    offcpu_block: 0,
    offcpu_other: 0,
    clone_bytes: 0,
    splice_bytes: 0,
};

/// Tracepoint backend: the totals it can see, at an operation's first and latest update.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TpTotals {
    pub(crate) fsync: u64,
    pub(crate) offcpu_block: u64,
    pub(crate) offcpu_other: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Snap {
    pub(crate) start: TpTotals,
    pub(crate) end: TpTotals,
}

#[inline(always)]
fn tp_totals(t: &Totals) -> TpTotals {
    TpTotals {
        fsync: t.fn_ns[PH_FSYNC as usize],
        offcpu_block: t.offcpu_block,
        offcpu_other: t.offcpu_other,
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TaskPhases {
    /// The function phase the task is in (`PH_*`), and since when it is on the CPU in it.
    pub(crate) cur: u32,
    /// Switched out from `io_schedule`.
    pub(crate) off_io: u32,
    pub(crate) cur_since: u64,
    /// When it was switched out; 0 = on the CPU.
    pub(crate) off_since: u64,
    pub(crate) t: Totals,
    pub(crate) snaps: [Snap; MAX_OPS],
}

/// Armed tasks. LRU: a task that dies armed (a copy-up interrupted by a fatal signal) never
/// blocks a slot.
#[map]
pub(crate) static PHASE_TASKS: LruHashMap<u64, TaskPhases> = LruHashMap::with_max_entries(4096, 0);

/// How many of [`PHASE_TASKS`]' entries hash to each bucket ([`bucket`]): `sched_switch` runs at
/// every context switch of the host, and looks a task up only when its bucket is not empty (an
/// array slot the verifier inlines, instead of two LRU hash lookups for tasks that never made a
/// copy-up). A count is raised before its entry is inserted and lowered after it is removed, by
/// `disarm` or when the task exits (`cowprof_sched_exit`), so it never undercounts; an entry the
/// LRU map evicts leaves its count raised, which only costs lookups.
#[map]
static PHASE_ARMED: Array<u64> = Array::with_max_entries(ARMED_BUCKETS, 0);
const ARMED_BUCKETS: u32 = 1 << 14;

/// The bucket of a task in [`PHASE_ARMED`]: a multiplicative hash of its `task_struct` address.
#[inline(always)]
fn bucket(task: u64) -> u32 {
    ((task >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) as u32 & (ARMED_BUCKETS - 1)
}

/// Whether `task` may be armed (its bucket is not empty).
#[inline(always)]
fn maybe_armed(task: u64) -> bool {
    PHASE_ARMED.get(bucket(task)).is_some_and(|c| *c != 0)
}

/// Removes `task`'s entry, if any, and lowers its bucket's count.
#[inline(always)]
fn forget(task: u64) {
    if PHASE_TASKS.remove(&task).is_ok() {
        if let Some(c) = PHASE_ARMED.get_ptr_mut(bucket(task)) {
            // SAFETY: a live, aligned slot of the array.
            unsafe { sub_one(c) };
        }
    }
}
#[map]
static PHASE_SCRATCH: PerCpuArray<TaskPhases> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, a count of the changes to any armed task's totals made on that CPU: a task's totals
/// change only on the CPU it runs on, or as it is switched out of or into one (both counted
/// there), or when it is armed. So while the count of the CPU a task runs on has not moved since
/// it read its totals there, they have not changed: a data copy-up's ten ctime updates in a row
/// take its phase snapshot once (`tp_op_advanced`) instead of looking its entry up ten times.
#[map]
static PHASE_GEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Counts a change of an armed task's totals on this CPU (see [`PHASE_GEN`]). Atomic: where
/// programs run preemptibly, another program on this CPU may add at the same time.
#[inline(always)]
fn changed() {
    if let Some(g) = PHASE_GEN.get_ptr_mut(0) {
        // SAFETY: this CPU's live, aligned slot.
        unsafe { add_one(g) };
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn current() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_task() }
}

#[inline(always)]
fn add(t: &mut Totals, phase: u32, d: u64) {
    let i = core::hint::black_box(phase as usize) & 7;
    t.fn_ns[i] += d;
}

/// Arms the current task with zero totals (a fresh entry, or a reset of an existing one when
/// `reset`). Returns its entry.
#[inline(never)]
pub(crate) fn arm(reset: u32) -> u32 {
    if config().is_none_or(|c| c.flags & config_flags::NO_PHASES != 0) {
        return 0;
    }
    let task = current();
    if let Some(p) = PHASE_TASKS.get_ptr_mut(&task) {
        if reset != 0 {
            // SAFETY: only this task writes its entry outside the scheduler hook, which
            // never runs while the task itself runs.
            unsafe {
                (*p).cur = PH_NONE;
                (*p).off_since = 0;
                (*p).t = ZERO;
            }
            changed();
        }
        return 1;
    }
    changed();
    let Some(s) = PHASE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let Some(count) = PHASE_ARMED.get_ptr_mut(bucket(task)) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, ours while this program runs; `count` is a live, aligned slot,
    // raised before the entry exists (see `PHASE_ARMED`) and lowered again if it cannot be made.
    unsafe {
        (*s).cur = PH_NONE;
        (*s).off_io = 0;
        (*s).cur_since = 0;
        (*s).off_since = 0;
        (*s).t = ZERO;
        add_one(count);
        if PHASE_TASKS.insert(&task, &*s, 0).is_ok() {
            1
        } else {
            sub_one(count);
            0
        }
    }
}

#[inline(always)]
pub(crate) fn disarm() {
    forget(current());
}

/// The current task enters a function phase (if armed).
#[inline(always)]
pub(crate) fn enter(phase: u32) {
    let Some(p) = PHASE_TASKS.get_ptr_mut(&current()) else {
        return;
    };
    let t = now();
    // SAFETY: see `arm`.
    unsafe {
        if (*p).cur != PH_NONE {
            add(&mut (*p).t, (*p).cur, t - (*p).cur_since);
        }
        (*p).cur = phase;
        (*p).cur_since = t;
    }
    changed();
}

/// The current task leaves its function phase; `bytes` > 0 are added to the data method of
/// `phase` (`PH_DATA` + clone = 1, splice = 2).
#[inline(always)]
pub(crate) fn leave(method: u32, bytes: i64) {
    let Some(p) = PHASE_TASKS.get_ptr_mut(&current()) else {
        return;
    };
    let t = now();
    // SAFETY: see `arm`.
    unsafe {
        if (*p).cur != PH_NONE {
            add(&mut (*p).t, (*p).cur, t - (*p).cur_since);
        }
        (*p).cur = PH_NONE;
        if bytes > 0 {
            if method == 1 {
                (*p).t.clone_bytes += bytes as u64;
            } else if method == 2 {
                (*p).t.splice_bytes += bytes as u64;
            }
        }
    }
    changed();
}

/// `sched_switch(preempt, prev, next, prev_state)`: closes `prev`'s on-CPU stretch and
/// opens its off-CPU one; closes `next`'s off-CPU stretch.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn cowprof_sched_switch(ctx: RawTracePointContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    // This runs at every context switch of the host, most of them between tasks that never
    // made a copy-up: a task is looked up only if its bucket counts armed tasks, and the clock
    // is read only for an armed one.
    if let Some(p) = maybe_armed(prev)
        .then(|| PHASE_TASKS.get_ptr_mut(&prev))
        .flatten()
    {
        let t = now();
        let io = match config() {
            Some(cfg) if cfg.off.task_in_iowait_bit != u32::MAX => {
                let bit = cfg.off.task_in_iowait_bit;
                read::<u8>(prev, bit / 8).unwrap_or(0) >> (bit % 8) & 1
            }
            _ => 0,
        };
        // SAFETY: the scheduler hook runs for `prev` only while it is not running.
        unsafe {
            if (*p).cur != PH_NONE {
                add(&mut (*p).t, (*p).cur, t - (*p).cur_since);
            }
            (*p).off_since = t;
            (*p).off_io = u32::from(io);
        }
        changed();
    }
    if let Some(p) = maybe_armed(next)
        .then(|| PHASE_TASKS.get_ptr_mut(&next))
        .flatten()
    {
        let t = now();
        // SAFETY: as above, for `next` before it runs.
        unsafe {
            if (*p).off_since != 0 {
                let d = t - (*p).off_since;
                if (*p).off_io != 0 {
                    (*p).t.offcpu_block += d;
                } else {
                    (*p).t.offcpu_other += d;
                }
                (*p).off_since = 0;
            }
            (*p).cur_since = t;
        }
        changed();
    }
    0
}

/// `sched_process_exit(p, ...)`: a task that exits armed (the tracepoint backend keeps tasks
/// armed between copy-ups) leaves `PHASE_TASKS` and its bucket's count.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn cowprof_sched_exit(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    if maybe_armed(task) {
        forget(task);
    }
    0
}

/// Tracepoint backend: fsync of an ext4 file (overlay's `vfs_fsync` of the copied data).
#[raw_tracepoint(tracepoint = "ext4_sync_file_enter")]
pub fn cowprof_ph_ext4_sync_enter(_ctx: RawTracePointContext) -> i32 {
    enter(PH_FSYNC);
    0
}

#[raw_tracepoint(tracepoint = "ext4_sync_file_exit")]
pub fn cowprof_ph_ext4_sync_exit(_ctx: RawTracePointContext) -> i32 {
    leave(0, 0);
    0
}

/// Tracepoint backend: operation `i` of the window (its op table `t`) began (its first
/// update).
#[inline(never)]
pub(crate) fn tp_op_started(i: u32, t: &mut OpTable) {
    if arm(0) == 0 {
        return;
    }
    tp_op_advanced(i, t);
    if let Some(p) = PHASE_TASKS.get_ptr_mut(&current()) {
        let i = i as usize & (MAX_OPS - 1);
        // SAFETY: see `arm`.
        unsafe { (*p).snaps[i].start = tp_totals(&(*p).t) };
    }
}

/// Tracepoint backend: operation `i` of the window (its op table `t`) was updated (its latest
/// update so far): its snapshot's end is the task's totals now. Unless the last snapshot was
/// this operation's, on this CPU, and this CPU's [`PHASE_GEN`] has not moved since: the totals
/// have not changed, and the snapshot already holds them.
#[inline(never)]
pub(crate) fn tp_op_advanced(i: u32, t: &mut OpTable) {
    // SAFETY: plain helper call.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // Read before the totals: a change between the two leaves an older count with newer
    // totals, which only makes the next update take its snapshot again.
    let gen = PHASE_GEN.get(0).copied().unwrap_or(0);
    if t.phase_op == i + 1 && t.phase_cpu == cpu && t.phase_gen == gen {
        return;
    }
    if let Some(p) = PHASE_TASKS.get_ptr_mut(&current()) {
        let i = i as usize & (MAX_OPS - 1);
        // SAFETY: see `arm`.
        unsafe { (*p).snaps[i].end = tp_totals(&(*p).t) };
        t.phase_op = i as u32 + 1;
        t.phase_cpu = cpu;
        t.phase_gen = gen;
    }
}

/// Tracepoint backend: the phases of operation `i` (a temp `inode` on the upper fs), from its
/// snapshots. fsync is seen on ext4 (its tracepoints); the data method on filesystems
/// without reflink (overlay's clone attempt fails there and it splices every byte).
#[inline(never)]
pub(crate) fn tp_fill(off: &Offsets, ev: &mut CowEvent, i: u32, inode: u64) {
    let Some(p) = PHASE_TASKS.get_ptr(&current()) else {
        return;
    };
    let i = i as usize & (MAX_OPS - 1);
    // SAFETY: read of this task's own entry.
    let (s, e) = unsafe { ((*p).snaps[i].start, (*p).snaps[i].end) };
    let ph = &mut ev.phases;
    ph.fsync_ns = e.fsync - s.fsync;
    ph.offcpu_block_ns = e.offcpu_block - s.offcpu_block;
    ph.offcpu_other_ns = e.offcpu_other - s.offcpu_other;
    ph.seen = phase_seen::OFFCPU;
    let magic = read::<u64>(ptr(inode, off.inode_i_sb), off.sb_s_magic).unwrap_or(0);
    if magic == EXT4_SUPER_MAGIC {
        ph.seen |= phase_seen::FSYNC;
    }
    if ev.kind == kind::TP_REGULAR_COPY_UP && (magic == EXT4_SUPER_MAGIC || magic == TMPFS_MAGIC) {
        ph.data_splice_bytes = ev.bytes_copied;
        ph.seen |= phase_seen::DATA_BYTES;
    }
}

/// kprobe backend: the phases of the copy-up that ends now (armed at its start).
#[inline(never)]
pub(crate) fn kp_fill(ev: &mut CowEvent) {
    let Some(p) = PHASE_TASKS.get_ptr(&current()) else {
        return;
    };
    // SAFETY: read of this task's own entry.
    let t = unsafe { (*p).t };
    let ph = &mut ev.phases;
    ph.metadata_ns = t.fn_ns[PH_METADATA as usize];
    ph.data_ns = t.fn_ns[PH_DATA as usize];
    ph.fsync_ns = t.fn_ns[PH_FSYNC as usize];
    ph.link_ns = t.fn_ns[PH_LINK as usize];
    ph.offcpu_block_ns = t.offcpu_block;
    ph.offcpu_other_ns = t.offcpu_other;
    ph.data_clone_bytes = t.clone_bytes;
    ph.data_splice_bytes = t.splice_bytes;
    // Which phase probes user space attached.
    let attached = KP_PHASES_SEEN.get(0).copied().unwrap_or(0);
    ph.seen = phase_seen::OFFCPU | attached;
}

/// kprobe backend: the `phase_seen` bits whose probes are attached (set by user space).
#[map]
pub(crate) static KP_PHASES_SEEN: Array<u32> = Array::with_max_entries(1, 0);

#[kprobe]
pub fn cowprof_ph_metadata(_ctx: ProbeContext) -> u32 {
    enter(PH_METADATA);
    0
}

#[kprobe]
pub fn cowprof_ph_data(_ctx: ProbeContext) -> u32 {
    enter(PH_DATA);
    0
}

#[kprobe]
pub fn cowprof_ph_fsync(_ctx: ProbeContext) -> u32 {
    enter(PH_FSYNC);
    0
}

#[kprobe]
pub fn cowprof_ph_link(_ctx: ProbeContext) -> u32 {
    enter(PH_LINK);
    0
}

#[kretprobe]
pub fn cowprof_ph_ret(_ctx: RetProbeContext) -> u32 {
    leave(0, 0);
    0
}

/// `vfs_clone_file_range` returns the bytes cloned (or an errno: no reflink, then splice).
#[kretprobe]
pub fn cowprof_ph_clone_ret(ctx: RetProbeContext) -> u32 {
    leave(1, ctx.ret::<i64>());
    0
}

/// `do_splice_direct` returns the bytes of one chunk.
#[kretprobe]
pub fn cowprof_ph_splice_ret(ctx: RetProbeContext) -> u32 {
    leave(2, ctx.ret::<i64>());
    0
}
