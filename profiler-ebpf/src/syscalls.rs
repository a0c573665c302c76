//! Syscall windows (raw tracepoints `sys_enter`/`sys_exit`, every backend): which syscall
//! triggered an operation, and that syscall's own latency.

use crate::{common::*, kprobe::ovl_inode, tracepoint::emit_tp_ops};

// Two copies. Where the kernel runs tracepoint programs preemptibly (7.x), a program preempted
// on a CPU makes the kernel skip that same program for every other task that hits its
// tracepoint on that CPU until it resumes (the program's `recursion_misses`): a lost
// `sys_enter` or `sys_exit` loses a syscall window (a mount's registration, a syscall's CoW
// temps). There each syscall and ctime program is loaded twice, as separate programs with
// their own recursion guard, attached in order. `sys_enter`: the first opens the window and
// marks it, the second opens it only when it finds no mark. `sys_exit`: the first closes the
// window, the second closes one still open. The ctime programs: both process the hit
// (idempotent, see `tracepoint.rs`). A hit is lost only when both copies are busy on that
// CPU; what both miss is recovered where it can be seen (`stale_window`, `late_window`) and
// counted when it cannot. Elsewhere only the first copy is loaded (user space decides:
// `pipeline::probe`).

/// Syscall entry for the kprobe backend: opens the window.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn cowprof_sys_enter(ctx: RawTracePointContext) -> i32 {
    sys_enter(&ctx, false, false)
}

/// The second copy of `cowprof_sys_enter` (see "Two copies").
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn cowprof_sys_enter_fb(ctx: RawTracePointContext) -> i32 {
    sys_enter(&ctx, true, false)
}

/// Syscall entry for the tracepoint backend: also emits the CoW temps of a window whose exit
/// was never seen (see `stale_window`). A separate program for the same reason as
/// `cowprof_sys_exit_tp`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn cowprof_sys_enter_tp(ctx: RawTracePointContext) -> i32 {
    sys_enter(&ctx, false, true)
}

/// The second copy of `cowprof_sys_enter_tp` (see "Two copies").
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn cowprof_sys_enter_tp_fb(ctx: RawTracePointContext) -> i32 {
    sys_enter(&ctx, true, true)
}

#[inline(always)]
fn sys_enter(ctx: &RawTracePointContext, second: bool, tp_backend: bool) -> i32 {
    let nr: i64 = ctx.arg(1);
    let cls = syscall_class(nr);
    if cls == 0 {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    // Mounts are registered whoever makes them (a container engine, not the traced
    // process); only cowprof's own are left out.
    let tid = if cls & class::MOUNT != 0 {
        let id = bpf_get_current_pid_tgid();
        if (id >> 32) as u32 == cfg.self_tgid {
            return 0;
        }
        id as u32
    } else {
        let Some((_, tid)) = wanted(cfg) else {
            return 0;
        };
        tid
    };
    // The filter above is the same for both copies; only here does the second learn whether
    // the first ran (a window it opened for this syscall still carries its mark).
    if second {
        if let Some(w) = WINDOWS.get_ptr_mut(&tid) {
            // SAFETY: only this tid touches its window.
            unsafe {
                // The number too: a window whose exit was lost may still carry the mark of
                // a first copy whose second was skipped then (most often a mount followed by
                // other syscalls; the same syscall again is taken as this one).
                if (*w).enter_mark != 0 && (*w).nr == nr as i32 {
                    (*w).enter_mark = 0;
                    return 0;
                }
                // Not opened by the first copy for this syscall: the previous one's, whose
                // exit was never seen.
                stale_window(&*w, tid, tp_backend);
            }
        }
    }
    if nr as i32 == NR_MOUNT {
        capture_mount_args(ctx.arg::<u64>(0), tid);
    }
    // SAFETY: plain helper call.
    let enter_ns = unsafe { bpf_ktime_get_ns() };
    let mark = u32::from(!second);
    // A window already there (the first copy inserts only a new one) is the previous
    // syscall's, whose exit was never seen: counted if it mattered, then replaced.
    let mut res = open_window(tid, nr, cls, mark, enter_ns);
    if res == EEXIST {
        if let Some(old) = WINDOWS.get_ptr(&tid) {
            // SAFETY: only this tid touches its window.
            stale_window(unsafe { &*old }, tid, tp_backend);
        }
        res = open_window(tid, nr, cls, 2, enter_ns);
    }
    if res != 0 {
        bump(counter::WINDOW_DROPS);
        warn!(
            ctx,
            "syscall window map full: tid {} traced without its syscall", tid
        );
    }
    0
}

/// Inserts `tid`'s new window: only where none is (`mark` 1, the first copy), or over any
/// (0, the second copy; 2, replacing a stale one, marked as the first copy's). Out of line so
/// that the entry program's frame does not carry the window while it emits a stale one's temps
/// (the emission's frames leave little of the verifier's 512-byte combined stack).
#[inline(never)]
fn open_window(tid: u32, nr: i64, cls: u8, mark: u32, enter_ns: u64) -> i32 {
    let w = Window::opened(nr, cls, u32::from(mark != 0), enter_ns);
    let flags = if mark == 1 { BPF_NOEXIST } else { BPF_ANY };
    match WINDOWS.insert(&tid, &w, flags) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

/// Whether a window's op table holds a CoW temp or a whiteout (its other entries are
/// ordinary creates, lost with nothing to report).
#[inline(always)]
fn held_cow(w: &Window, tid: u32) -> bool {
    if w.has_table == 0 {
        return false;
    }
    let Some(t) = OP_TABLES.get_ptr(&tid) else {
        return false;
    };
    for i in 0..MAX_OPS {
        if i as u32 >= w.nops {
            break;
        }
        // SAFETY: read of this tid's own table.
        let state = unsafe { (*t).ops[i].state };
        if state == TEMP || state == WHITEOUT {
            return true;
        }
    }
    false
}

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = -17;

/// A window whose syscall exit was never seen (the kernel skipped both copies of `sys_exit`;
/// or the thread exited inside a tracked syscall), found at the thread's next tracked syscall:
/// its overlay is registered late and its CoW temps emitted late (tracepoint backend); what
/// cannot be recovered is counted as lost.
#[inline(always)]
fn stale_window(w: &Window, tid: u32, tp_backend: bool) {
    if w.class & u32::from(class::MOUNT) != 0 && w.ovl_sb != 0 {
        // Tracepoint backend: the overlay this mount made is registered now, late (its
        // operations by other threads before this are lost; this thread's next operations
        // are seen). A mount that failed after making its superblock has nothing in use to
        // register (see `register_overlay`).
        if let Some(cfg) = config() {
            // SAFETY: plain helper call.
            let now = unsafe { bpf_ktime_get_ns() };
            register_overlay(cfg, w.ovl_sb, tid, now);
        }
    } else if tp_backend && w.nops != 0 {
        // Tracepoint backend: its temps have their final names by now; they are emitted
        // here, with a return value of 0 (the syscall's own is gone) and this entry as their
        // syscall's end. Read in place (a copy would cost the stack 48 bytes, and the
        // entry's stack already carries the new window and the emission's frames).
        // SAFETY: plain helper call.
        emit_tp_ops(w, tid, 0, unsafe { bpf_ktime_get_ns() });
    } else if held_cow(w, tid) {
        bump(counter::WINDOWS_LOST);
    } else if w.emitted != 0 {
        // kprobe backend: its events were sent; only their syscall's end is missing.
        bump(counter::SYSCALL_END_DROPS);
    }
}

/// Captures `mount(2)`'s target and data (overlay mounts only) for the mount record. The
/// entry is inserted blank and filled in place: a shared per-CPU slot filled and then copied
/// in could be overwritten in between by the other copy of `sys_enter` where programs run
/// preemptibly (see "Two copies").
#[inline(never)]
pub(crate) fn capture_mount_args(regs: u64, tid: u32) {
    let fstype = read::<u64>(regs, REGS_DX).unwrap_or(0);
    // SAFETY: user memory read, faults safely.
    let ty = unsafe { bpf_probe_read_user(fstype as *const [u8; 8]) }.unwrap_or([0; 8]);
    if &ty != b"overlay\0" {
        return;
    }
    let Some(blank) = MOUNT_BLANK.get_ptr(0) else {
        return;
    };
    // SAFETY: the slot is never written: a valid all-zero MountEvent.
    if MOUNT_ARGS.insert(&tid, unsafe { &*blank }, 0).is_err() {
        return;
    }
    let Some(m) = MOUNT_ARGS.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: only this tid touches its entry.
    let m = unsafe { &mut *m };
    m.record = RECORD_MOUNT;
    m.flags = mount_flags::ARGS;
    let target = read::<u64>(regs, REGS_SI).unwrap_or(0);
    let data = read::<u64>(regs, REGS_R8).unwrap_or(0);
    // SAFETY: user strings into bounded buffers; a fault leaves them empty.
    unsafe {
        let _ = bpf_probe_read_user_str_bytes(target as *const u8, &mut m.target);
        let _ = bpf_probe_read_user_str_bytes(data as *const u8, &mut m.data);
    }
}

/// Registers the overlay superblock `sb` made by this syscall: its work directory and
/// upper root go into the maps the CoW probes look in (so the mount's first copy-up is
/// already seen), and a mount record goes into the ring buffer ahead of its events.
#[inline(never)]
pub(crate) fn register_overlay(cfg: &Config, sb: u64, tid: u32, now: u64) {
    let off = &cfg.off;
    let root_inode = ptr(ptr(sb, off.sb_s_root), off.dentry_d_inode);
    let upper_root = ptr(ovl_inode(off, root_inode), off.ovl_inode_upperdentry);
    let upper_inode = ptr(upper_root, off.dentry_d_inode);
    if upper_inode == 0 {
        return; // a read-only overlay: no copy-up, no whiteout
    }
    let upper_dev = read::<u32>(ptr(upper_inode, off.inode_i_sb), off.sb_s_dev).unwrap_or(0);
    let upper_ino = ptr(upper_inode, off.inode_i_ino);
    let work = ptr(ptr(sb, off.sb_s_fs_info), off.ovl_fs_workdir);
    let work_ino = ptr(ptr(work, off.dentry_d_inode), off.inode_i_ino);
    let Some(seq) = MOUNT_SEQ.get_ptr_mut(0) else {
        return;
    };
    // Read once into `n`: where programs run preemptibly, a registration preempted between
    // this load and store could share its serial with one made meanwhile on the same CPU by
    // the other copy of `sys_exit`; the window is two instructions (the bpf target's generic
    // CPU has no fetch-and-add).
    // SAFETY: per-CPU slot; plain helper call.
    let serial = unsafe {
        let n = *seq + 1;
        *seq = n;
        ((n << 6) | (bpf_get_smp_processor_id() & 63)) & 0x7fff_ffff
    };
    let key = |ino| InodeKey {
        dev: upper_dev,
        _pad: 0,
        ino,
    };
    if work_ino != 0 {
        let _ = WORKDIRS.insert(&key(work_ino), &serial, 0);
    }
    let _ = UPPER_ROOTS.insert(&key(upper_ino), &serial, 0);
    let _ = UPPER_DEVS.insert(&upper_dev, &1, 0);
    let Some(mut entry) = EVENTS.reserve::<MountEvent>(0) else {
        bump(counter::RINGBUF_DROPS);
        let _ = MOUNT_ARGS.remove(&tid);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the entry is ours until submit; the args (if any) are copied in whole, then
    // every other field is written.
    unsafe {
        if let Some(args) = MOUNT_ARGS.get_ptr(&tid) {
            let _ = aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                ev.cast(),
                core::mem::size_of::<MountEvent>() as u32,
                args.cast(),
            );
        } else {
            (*ev).flags = 0;
            (*ev).target[0] = 0;
            (*ev).data[0] = 0;
        }
        (*ev).record = RECORD_MOUNT;
        (*ev).serial = serial;
        (*ev).ovl_dev = read::<u32>(sb, off.sb_s_dev).unwrap_or(0);
        (*ev).upper_dev = upper_dev;
        (*ev).upper_root_ino = upper_ino;
        (*ev).work_ino = work_ino;
        (*ev).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*ev).end_ns = now;
    }
    entry.submit(0);
    let _ = MOUNT_ARGS.remove(&tid);
}

/// The `class` bits of syscall `nr` when it is tracked for the current task (0 otherwise):
/// the filter `sys_enter` applies.
#[inline(always)]
pub(crate) fn traced_class(cfg: &Config, nr: i64) -> u8 {
    let cls = syscall_class(nr);
    if cls == 0 {
        return 0;
    }
    let traced = if cls & class::MOUNT != 0 {
        (bpf_get_current_pid_tgid() >> 32) as u32 != cfg.self_tgid
    } else {
        wanted(cfg).is_some()
    };
    if traced {
        cls
    } else {
        0
    }
}

/// Tracepoint backend, where the kernel may skip `sys_enter` (two copies): an inode on an
/// overlay or upper filesystem changed in a syscall that has no window. If the syscall
/// (`orig_ax` of the task's registers) is tracked, its window is opened now, at this first
/// operation, so nothing of it is lost but the time before it (its latency is partial).
#[inline(never)]
pub(crate) fn late_window(tid: u32, inode: u64) -> bool {
    let Some(cfg) = config() else { return false };
    if cfg.flags & config_flags::TWO_COPIES == 0 {
        return false;
    }
    let off = &cfg.off;
    let sb = ptr(inode, off.inode_i_sb);
    if read::<u64>(sb, off.sb_s_magic) != Some(OVERLAY_SUPER_MAGIC) {
        let dev = read::<u32>(sb, off.sb_s_dev).unwrap_or(0);
        // SAFETY: read-only lookup.
        if unsafe { UPPER_DEVS.get(&dev) }.is_none() {
            return false;
        }
    }
    // SAFETY: plain helper calls; the registers are read with bpf_probe_read_kernel.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let nr = read::<i64>(regs, REGS_ORIG_AX).unwrap_or(-1);
    let cls = traced_class(cfg, nr);
    if cls == 0 {
        return false;
    }
    if nr as i32 == NR_MOUNT {
        // The mount record's target and options, as `sys_enter` would have taken them.
        capture_mount_args(regs, tid);
    }
    // SAFETY: plain helper call.
    let w = Window::opened(nr, cls, 0, unsafe { bpf_ktime_get_ns() });
    WINDOWS.insert(&tid, &w, BPF_NOEXIST).is_ok()
}

/// Syscall exit for the kprobe backend: closes the window.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn cowprof_sys_exit(ctx: RawTracePointContext) -> i32 {
    sys_exit(ctx.arg(1), false)
}

/// The second copy of `cowprof_sys_exit` (see "Two copies"): the first removes the window it
/// closes, so a window still there is one the first did not run for.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn cowprof_sys_exit_fb(ctx: RawTracePointContext) -> i32 {
    sys_exit(ctx.arg(1), false)
}

/// Syscall exit for the tracepoint backend: also emits the window's CoW temps. A separate
/// program so kernels without the ctime tracepoints (6.1's verifier finds the emission loop
/// too complex) never load that code. A `tp_btf` program (every kernel with the ctime
/// tracepoints has BTF), so that it reads the syscall's number from its registers with a plain
/// load and leaves an untracked syscall without looking for a window.
#[btf_tracepoint(function = "sys_exit")]
pub fn cowprof_sys_exit_tp(ctx: BtfTracePointContext) -> i32 {
    if !exit_of_tracked(&ctx) {
        return 0;
    }
    sys_exit(ctx.arg(1), true)
}

/// The second copy of `cowprof_sys_exit_tp` (see "Two copies").
#[btf_tracepoint(function = "sys_exit")]
pub fn cowprof_sys_exit_tp_fb(ctx: BtfTracePointContext) -> i32 {
    if !exit_of_tracked(&ctx) {
        return 0;
    }
    sys_exit(ctx.arg(1), true)
}

/// Whether the syscall now exiting is one `sys_enter` (or `late_window`) may have opened a
/// window for: its number (`orig_ax`, what both read it from; the kernel fires `sys_exit`
/// before a signal's delivery may rewrite it for a restart) is in the syscall table. Every other
/// syscall of the host (nearly all of them) leaves here, without the window lookup that missed
/// for each of them: a hash of the thread id and a bucket read.
#[inline(always)]
fn exit_of_tracked(ctx: &BtfTracePointContext) -> bool {
    let regs: u64 = ctx.arg(0);
    let nr = field::<i64>(regs, REGS_ORIG_AX);
    syscall_class(nr) != 0
}

/// The `class` bits of syscall `nr` in the syscall table, whoever makes it (0: not tracked).
#[inline(always)]
fn syscall_class(nr: i64) -> u8 {
    if !(0..512).contains(&nr) {
        return 0;
    }
    SYSCALLS.get(nr as u32).copied().unwrap_or(0)
}

#[inline(always)]
pub(crate) fn sys_exit(ret: i64, tp_backend: bool) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(w) = WINDOWS.get_ptr_mut(&tid) else {
        return 0;
    };
    // SAFETY: only this tid touches its window; copied out before it is removed.
    let w = unsafe { *w };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if w.class & u32::from(class::MOUNT) != 0 {
        // A mount makes temps and whiteouts in its work dir to probe the upper fs: never
        // CoW events. Both backends register the overlay it made (the superblock comes from
        // the root inode's ctime, or from the kprobe on `ovl_fill_super`).
        if ret == 0 && w.ovl_sb != 0 {
            if let Some(cfg) = config() {
                register_overlay(cfg, w.ovl_sb, tid, now);
            }
        }
        let _ = MOUNT_ARGS.remove(&tid);
    } else if tp_backend && w.nops != 0 {
        // The task stays armed (its entry is reused by its next copy-up; the LRU map drops
        // the entries of tasks that stopped making them): an insert and a delete per
        // copy-up saved. Its totals keep growing, but each operation reports the difference
        // of its own snapshots.
        emit_tp_ops(&w, tid, ret, now);
    }
    // The op table stays, for the thread's next syscall (see `op_table`).
    // kprobe backend: its events were sent mid-syscall; this record gives them the syscall's
    // return value and latency.
    if w.emitted != 0 {
        syscall_end(tid, w.nr, ret, w.enter_ns, now);
    }
    let _ = WINDOWS.remove(&tid);
    0
}

/// The kprobe backend's syscall-end record. Out of line: the record would otherwise sit in
/// the exit program's frame, under the tracepoint emission's frames (the verifier's combined
/// stack is 512 bytes, each frame rounded up to 32).
#[inline(never)]
fn syscall_end(tid: u32, nr: i32, ret: i64, enter_ns: u64, now: u64) {
    let end = SyscallEnd {
        record: RECORD_SYSCALL_END,
        tid,
        syscall_nr: nr,
        _pad: 0,
        ret,
        enter_ns,
        exit_ns: now,
    };
    if EVENTS.output::<SyscallEnd>(&end, rb_flags()).is_err() {
        bump(counter::SYSCALL_END_DROPS);
    }
}
