//! kprobe backend: overlay's own functions bracket each copy-up, whiteout and create over a
//! whiteout.

use crate::common::*;

/// The overlay inode's `ovl_inode` (container of the embedded `struct inode`).
#[inline(always)]
pub(crate) fn ovl_inode(off: &Offsets, inode: u64) -> u64 {
    if inode == 0 {
        0
    } else {
        inode - u64::from(off.ovl_inode_vfs_inode)
    }
}

/// The overlay entry (lower stack) of a positive overlay dentry.
#[inline(always)]
pub(crate) fn ovl_entry(off: &Offsets, dentry: u64) -> u64 {
    if off.ovl_inode_oe != u32::MAX {
        let inode = ptr(dentry, off.dentry_d_inode);
        ptr(ovl_inode(off, inode), off.ovl_inode_oe)
    } else {
        ptr(dentry, off.dentry_d_fsdata)
    }
}

#[inline(always)]
pub(crate) fn numlower(off: &Offsets, dentry: u64) -> u32 {
    read::<u32>(ovl_entry(off, dentry), off.ovl_entry_numlower).unwrap_or(0)
}

/// Index of the topmost lower layer of `dentry` (1 = topmost lower), 0 if none.
#[inline(always)]
pub(crate) fn lower_idx(off: &Offsets, dentry: u64) -> u32 {
    let oe = ovl_entry(off, dentry);
    if read::<u32>(oe, off.ovl_entry_numlower).unwrap_or(0) == 0 {
        return 0;
    }
    let layer = ptr(oe + u64::from(off.ovl_entry_lowerstack), off.ovl_path_layer);
    read::<i32>(layer, off.ovl_layer_idx).unwrap_or(0) as u32
}

#[inline(always)]
pub(crate) fn upperdentry(off: &Offsets, dentry: u64) -> u64 {
    let inode = ptr(dentry, off.dentry_d_inode);
    ptr(ovl_inode(off, inode), off.ovl_inode_upperdentry)
}

/// Overlay's own types are in BTF: the `ovl_*` offsets may be read. Every read of an overlay
/// structure is behind this test, so a kernel without them never reads at an offset it lacks.
#[inline(always)]
pub(crate) fn ovl_types(cfg: &Config) -> bool {
    cfg.flags & config_flags::OVL_TYPES != 0
}

#[inline(always)]
pub(crate) fn start(map: &HashMap<u32, Pending>, dentry: u64, arg: u64, kind_id: u32, op: u32) {
    let Some(cfg) = config() else { return };
    let Some((_, tid)) = wanted(cfg) else { return };
    let off = &cfg.off;
    let inode = ptr(dentry, off.dentry_d_inode);
    let p = Pending {
        dentry,
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        arg,
        size: read::<u64>(inode, off.inode_i_size).unwrap_or(0),
        kind: kind_id,
        mode: inode_mode(off, inode),
        lower_idx: if inode != 0 && ovl_types(cfg) {
            lower_idx(off, dentry)
        } else {
            0
        },
        op,
    };
    // The task's previous operation in this map never reached its end probe (`ovl_copy_up_end`,
    // or the return of a directory operation): not reported, counted. Each end removes its
    // entry whatever the outcome (and a copy-up start that returned non-zero, in
    // `cowprof_kp_copy_up_start_ret`), so an entry still here is one whose end did not run. A
    // directory operation without overlay's types is armed for every removal and create, most
    // of which report nothing: not counted then.
    // SAFETY: read-only lookup of this tid's entry.
    if let Some(old) = unsafe { map.get(&tid) } {
        if old.op == OP_COPY_UP || ovl_types(cfg) {
            bump(counter::UNPAIRED);
        }
    }
    if map.insert(&tid, &p, 0).is_err() {
        bump(counter::OP_TABLE_FULL);
    }
}

/// Emits one kprobe-backend event for a finished operation.
#[inline(always)]
pub(crate) fn emit_kprobe(cfg: &Config, p: &Pending, kind_id: u32, result: i32) {
    let id = bpf_get_current_pid_tgid();
    let off = &cfg.off;
    let Some(mut entry) = EVENTS.reserve::<CowEvent>(0) else {
        bump(counter::RINGBUF_DROPS);
        return;
    };
    // SAFETY: the entry is ours until submit; every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_common(cfg, ev, (id >> 32) as u32, id as u32, backend::KPROBE);
    // Mid-syscall: its exit is sent later as a `SyscallEnd` that user space joins.
    if let Some(w) = WINDOWS.get_ptr_mut(&(id as u32)) {
        // SAFETY: only this tid touches its window.
        unsafe {
            ev.syscall_nr = (*w).nr;
            ev.syscall_enter_ns = (*w).enter_ns;
            (*w).emitted += 1;
        }
        ev.flags |= flags::IN_SYSCALL;
    }
    // SAFETY: plain helper call.
    ev.end_ns = unsafe { bpf_ktime_get_ns() };
    ev.latency_ns = ev.end_ns - p.start_ns;
    ev.kind = kind_id;
    ev.result = result;
    let dentry = p.dentry;
    let inode = ptr(dentry, off.dentry_d_inode);
    let sb = ptr(dentry, off.dentry_d_sb);
    ev.dev = read::<u32>(sb, off.sb_s_dev).unwrap_or(0);
    // Without overlay's types the superblock cannot be followed to its upper root: user space
    // attributes the event by device number (the documented fallback).
    ev.mount_id = if ovl_types(cfg) {
        mount_serial(off, sb)
    } else {
        0
    };
    // A removed dentry is negative by now: use what was read at the start.
    ev.mode = p.mode;
    ev.size_bytes = p.size;
    ev.lower_idx = p.lower_idx;
    if inode != 0 {
        ev.mode = inode_mode(off, inode);
        ev.size_bytes = read::<u64>(inode, off.inode_i_size).unwrap_or(0);
        if ovl_types(cfg) {
            ev.lower_idx = lower_idx(off, dentry);
        }
    }
    if ev.lower_idx != 0 {
        ev.flags |= flags::LOWER_FROM_KERNEL;
    }
    if !ovl_types(cfg) {
        ev.flags |= flags::NO_OVL_TYPES;
    }
    // TP_REGULAR_COPY_UP (no overlay types): user space zeroes it if it was a metacopy.
    if kind_id == kind::DATA_COPY_UP
        || kind_id == kind::DEFERRED_DATA_COPY_UP
        || kind_id == kind::TP_REGULAR_COPY_UP
    {
        ev.bytes_copied = ev.size_bytes;
    }
    if p.kind == 0 {
        // A copy-up (armed at its start): where its time went.
        crate::phases::kp_fill(ev);
    }
    cowprof_walk_kp(ev, dentry);
    entry.submit(rb_flags());
}

/// The path walk of a kprobe event. A global BPF function (exported from the object, see
/// build.rs), verified once by itself: inlined in each caller, the walk was verified again
/// for every state a program reached it in, and `cowprof_kp_copy_up_end` (two emission paths,
/// nine kinds) took 281,776 instructions and 2.4 s to verify on 6.1 under qemu TCG.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn cowprof_walk_kp(ev: *mut CowEvent, dentry: u64) -> i32 {
    let Some(cfg) = config() else { return 0 };
    // SAFETY: a live ring-buffer record of the caller, or null (the verifier treats a global
    // function's pointer argument as possibly null).
    let Some(ev) = (unsafe { ev.as_mut() }) else {
        return 0;
    };
    i32::from(walk(&cfg.off, ev, dentry, 0))
}

/// The mount serial of the overlay superblock `sb`: the registration of its upper root (made
/// kernel-side when the mount was made, see `syscalls::register_overlay`, or by user space for
/// mounts older than the session), if that upper root is still held by a live overlay. 0 when
/// unknown: user space then falls back to the overlay's device number.
///
/// The device number alone is not a key: the kernel hands a freed anonymous device to the
/// next mount at once, so the events of a short-lived stack would land on whichever mount
/// user space last saw with that number.
#[inline(never)]
pub(crate) fn mount_serial(off: &Offsets, sb: u64) -> u32 {
    let root_inode = ptr(ptr(sb, off.sb_s_root), off.dentry_d_inode);
    let upper_root = ptr(ovl_inode(off, root_inode), off.ovl_inode_upperdentry);
    let upper_inode = ptr(upper_root, off.dentry_d_inode);
    if upper_inode == 0 {
        return 0;
    }
    let key = InodeKey {
        dev: read::<u32>(ptr(upper_inode, off.inode_i_sb), off.sb_s_dev).unwrap_or(0),
        _pad: 0,
        ino: ptr(upper_inode, off.inode_i_ino),
    };
    // SAFETY: read-only lookup.
    match unsafe { UPPER_ROOTS.get(&key) } {
        Some(serial) if ovl_inuse(off, upper_inode) => *serial,
        _ => 0,
    }
}

/// `ovl_fill_super(sb, ...)` (6.1: `(sb, data, silent)`; since 6.5: `(sb, fc)`; the superblock
/// comes first in both): the overlay a `mount`/`fsconfig` syscall is making. It is registered
/// when `ovl_fill_super` returns 0 (`cowprof_kp_fill_super_ret`), not at the syscall's exit:
/// kprobes are not skipped the way tracepoint programs can be (see "Two copies" in
/// `syscalls.rs`), only while the CPU's `bpf_prog_active` is held (docs/backends.md, "Missed
/// kprobes"). The tracepoint backend learns the superblock from its root inode's ctime and
/// registers it at the syscall's exit.
#[kprobe]
pub fn cowprof_kp_fill_super(ctx: ProbeContext) -> u32 {
    let Some(sb) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let id = bpf_get_current_pid_tgid();
    // cowprof's own mounts (the start-up check) are left out, as at syscall entry.
    if config().is_none_or(|cfg| (id >> 32) as u32 == cfg.self_tgid) {
        return 0;
    }
    let tid = id as u32;
    // `mount(2)`'s arguments, if its entry did not capture them (both copies of `sys_enter`
    // skipped on 7.x, or its user memory not yet faulted in there): the kernel has copied them
    // by now, and the task's registers still point at them. Without them user space would
    // have to find the mount in mountinfo, where a stack already gone is not.
    // SAFETY: read-only lookup.
    if unsafe { MOUNT_ARGS.get(&tid) }.is_none() {
        // SAFETY: plain helper calls; the registers are read with bpf_probe_read_kernel.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
        if read::<i64>(regs, REGS_ORIG_AX).unwrap_or(-1) as i32 == NR_MOUNT {
            crate::syscalls::capture_mount_args(regs, tid);
        }
    }
    let _ = FILL_SB.insert(&tid, &sb, 0);
    0
}

/// `ovl_fill_super` returned: on success the superblock's root, upper root and work dir are
/// set; the overlay is registered now, before the mount is attached.
#[kretprobe]
pub fn cowprof_kp_fill_super_ret(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: read-only lookup of this tid's entry.
    let Some(&sb) = (unsafe { FILL_SB.get(&tid) }) else {
        return 0;
    };
    let _ = FILL_SB.remove(&tid);
    if ret as i32 != 0 {
        return 0;
    }
    if let Some(cfg) = config() {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        crate::syscalls::register_overlay(cfg, sb, tid, now);
    }
    0
}

#[kprobe]
pub fn cowprof_kp_copy_up_start(ctx: ProbeContext) -> u32 {
    let Some(dentry) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let Some(cfg) = config() else { return 0 };
    // Without overlay's types the upper is not readable; the vfs_link/vfs_rename probes tell
    // instead whether this copy-up placed a new upper (see `cowprof_kp_copy_up_end`).
    let had_upper = if ovl_types(cfg) {
        u64::from(upperdentry(&cfg.off, dentry) != 0)
    } else {
        0
    };
    start(&COPY_UPS, dentry, had_upper, 0, OP_COPY_UP);
    if wanted(cfg).is_some() {
        crate::phases::arm(1);
    }
    0
}

/// `ovl_copy_up_start` returns > 0 when another task already copied the dentry up, < 0 when
/// interrupted: no copy-up then, and no `ovl_copy_up_end`.
#[kretprobe]
pub fn cowprof_kp_copy_up_start_ret(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    if ret as i32 != 0 {
        let tid = bpf_get_current_pid_tgid() as u32;
        let _ = COPY_UPS.remove(&tid);
        crate::phases::disarm();
    }
    0
}

#[kprobe]
pub fn cowprof_kp_copy_up_end(_ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: value copied out before removal.
    let Some(p) = (unsafe { COPY_UPS.get(&tid) }).copied() else {
        // A traced task's copy-up whose start probe did not run: not reported, counted.
        if config().is_some_and(|cfg| wanted(cfg).is_some()) {
            bump(counter::UNPAIRED);
        }
        return 0;
    };
    let _ = COPY_UPS.remove(&tid);
    let Some(cfg) = config() else { return 0 };
    let off = &cfg.off;
    let inode = ptr(p.dentry, off.dentry_d_inode);
    let mode = inode_mode(off, inode);
    if !ovl_types(cfg) {
        // A full copy-up (data or metadata) links (O_TMPFILE) or renames (work dir temp) its
        // new upper into place; the deferred data copy of a metacopy file writes into the
        // upper it already has. Data or metacopy is decided in user space (mount options and
        // syscall), as for the tracepoint backend.
        let placed = p.arg & ARG_PLACED != 0;
        let kind_id = match mode & S_IFMT {
            S_IFDIR => kind::DIR_COPY_UP,
            S_IFREG if placed => kind::TP_REGULAR_COPY_UP,
            S_IFREG => kind::DEFERRED_DATA_COPY_UP,
            _ => kind::SPECIAL_COPY_UP,
        };
        // A directory or special file that was not placed failed (the errno is not visible).
        let result = if placed || mode & S_IFMT == S_IFREG {
            0
        } else {
            -5
        };
        emit_kprobe(cfg, &p, kind_id, result);
        return 0;
    }
    let oi = ovl_inode(off, inode);
    let upper = ptr(oi, off.ovl_inode_upperdentry);
    let oflags = ptr(oi, off.ovl_inode_flags);
    let upperdata = off.ovl_flag_upperdata < 64 && oflags & (1u64 << off.ovl_flag_upperdata) != 0;
    let kind_id = match mode & S_IFMT {
        S_IFDIR => kind::DIR_COPY_UP,
        S_IFREG if p.arg != 0 => kind::DEFERRED_DATA_COPY_UP,
        S_IFREG if !upperdata => kind::METACOPY,
        S_IFREG => kind::DATA_COPY_UP,
        _ => kind::SPECIAL_COPY_UP,
    };
    // The copy-up failed if the dentry still has no upper (the errno is not visible here).
    let result = if upper == 0 || (p.arg != 0 && !upperdata) {
        -5
    } else {
        0
    };
    emit_kprobe(cfg, &p, kind_id, result);
    crate::phases::disarm();
    0
}

#[inline(always)]
pub(crate) fn remove_start(dentry: u64, op: u32) {
    let Some(cfg) = config() else { return };
    if !ovl_types(cfg) {
        // Armed for every removal; only one that renames a whiteout into place is reported
        // (`cowprof_kp_vfs_rename`).
        start(&DIR_OPS, dentry, 0, kind::WHITEOUT, op);
        return;
    }
    // Overlay makes a whiteout when a lower layer has the name (the dentry has a lower).
    let lower = u64::from(numlower(&cfg.off, dentry) != 0);
    if lower != 0 {
        start(&DIR_OPS, dentry, lower, kind::WHITEOUT, op);
    }
}

#[kprobe]
pub fn cowprof_kp_unlink(ctx: ProbeContext) -> u32 {
    if let Some(d) = ctx.arg::<u64>(1) {
        remove_start(d, OP_REMOVE);
    }
    0
}

#[kprobe]
pub fn cowprof_kp_rmdir(ctx: ProbeContext) -> u32 {
    if let Some(d) = ctx.arg::<u64>(1) {
        remove_start(d, OP_REMOVE);
    }
    0
}

/// `ovl_rename(idmap, olddir, old, newdir, new, flags)`: the old name gets a whiteout when
/// it has a lower, unless the two are exchanged.
#[kprobe]
pub fn cowprof_kp_rename(ctx: ProbeContext) -> u32 {
    let (Some(old), Some(fl)) = (ctx.arg::<u64>(2), ctx.arg::<u64>(5)) else {
        return 0;
    };
    if fl & RENAME_EXCHANGE == 0 {
        remove_start(old, OP_RENAME);
    }
    0
}

/// Is the negative overlay `dentry` a whiteout (the name is hidden, creating it goes through
/// the work directory)? That is the dentry's OVL_E_OPAQUE flag.
#[inline(always)]
pub(crate) fn is_whiteout_dentry(off: &Offsets, dentry: u64) -> bool {
    if ptr(dentry, off.dentry_d_inode) != 0 || off.ovl_e_opaque >= 64 {
        return false;
    }
    let fsdata = ptr(dentry, off.dentry_d_fsdata);
    let word = if off.ovl_inode_oe != u32::MAX {
        fsdata
    } else {
        ptr(fsdata, 0)
    };
    word & (1u64 << off.ovl_e_opaque) != 0
}

/// `ovl_create(idmap, dir, dentry, ...)`, `ovl_mkdir`, `ovl_mknod`, `ovl_symlink`: the new
/// dentry is argument 2; it is armed only when it hides a whiteout.
#[inline(always)]
pub(crate) fn create_start(dentry: u64, is_dir: u32) {
    let Some(cfg) = config() else { return };
    let k = if is_dir != 0 {
        kind::OPAQUE_DIR
    } else {
        kind::CREATE_OVER_WHITEOUT
    };
    if !ovl_types(cfg) {
        // Armed for every create; reported only if it renames over a whiteout.
        start(&DIR_OPS, dentry, 0, k, OP_CREATE);
    } else if is_whiteout_dentry(&cfg.off, dentry) {
        start(&DIR_OPS, dentry, 1, k, OP_CREATE);
    }
}

#[kprobe]
pub fn cowprof_kp_create(ctx: ProbeContext) -> u32 {
    if let Some(d) = ctx.arg::<u64>(2) {
        create_start(d, 0);
    }
    0
}

#[kprobe]
pub fn cowprof_kp_mkdir(ctx: ProbeContext) -> u32 {
    if let Some(d) = ctx.arg::<u64>(2) {
        create_start(d, 1);
    }
    0
}

/// `ovl_link(old, newdir, new)`: the new dentry is argument 2 as well.
#[kprobe]
pub fn cowprof_kp_link(ctx: ProbeContext) -> u32 {
    if let Some(d) = ctx.arg::<u64>(2) {
        create_start(d, 0);
    }
    0
}

#[kretprobe]
pub fn cowprof_kp_dir_op_ret(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: value copied out before removal.
    let Some(p) = (unsafe { DIR_OPS.get(&tid) }).copied() else {
        return 0;
    };
    let _ = DIR_OPS.remove(&tid);
    if ret as i32 != 0 {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    if !ovl_types(cfg) && p.arg & ARG_WHITEOUT_SEEN == 0 {
        return 0;
    }
    emit_kprobe(cfg, &p, p.kind, 0);
    0
}

/// Is `dentry` a whiteout on the upper filesystem (a char device 0/0)?
#[inline(always)]
fn is_whiteout(off: &Offsets, dentry: u64) -> bool {
    let inode = ptr(dentry, off.dentry_d_inode);
    inode != 0
        && inode_mode(off, inode) & S_IFMT == S_IFCHR
        && read::<u32>(inode, off.inode_i_rdev) == Some(0)
}

/// Sets `bits` in the `arg` of this task's pending operation in `map`; false if it has none.
#[inline(always)]
fn mark(map: &HashMap<u32, Pending>, tid: u32, bits: u64) -> bool {
    match map.get_ptr_mut(&tid) {
        Some(p) => {
            // SAFETY: the entry of this tid is only written by this tid.
            unsafe { (*p).arg |= bits };
            true
        }
        None => false,
    }
}

/// `vfs_rename(struct renamedata *rd)`, attached only without overlay's types: what overlay did
/// to the upper filesystem inside one of its operations (the task's pending entry says which).
/// * in a copy-up: its new upper was renamed into place (work dir temp);
/// * in `ovl_unlink`/`ovl_rmdir`: a whiteout (the source, char 0/0) replaced the name;
/// * in `ovl_rename`: `RENAME_WHITEOUT` left one at the old name, or an exchange with a whiteout
///   moved it there (undone by `cowprof_kp_vfs_unlink` if overlay then removes it);
/// * in a create: the new entry replaced a whiteout (the target).
///
/// Copy-ups nest inside the others (parent directories first) and are matched first.
#[kprobe]
pub fn cowprof_kp_vfs_rename(ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if mark(&COPY_UPS, tid, ARG_PLACED) {
        return 0;
    }
    // SAFETY: value copied out; only this tid writes its entry.
    let Some(p) = (unsafe { DIR_OPS.get(&tid) }).copied() else {
        return 0;
    };
    let (Some(cfg), Some(rd)) = (config(), ctx.arg::<u64>(0)) else {
        return 0;
    };
    let off = &cfg.off;
    let old = ptr(rd, off.renamedata_old_dentry);
    let new = ptr(rd, off.renamedata_new_dentry);
    let fl = u64::from(read::<u32>(rd, off.renamedata_flags).unwrap_or(0));
    let whiteout = match p.op {
        OP_REMOVE => is_whiteout(off, old),
        OP_RENAME => {
            fl & RENAME_WHITEOUT != 0 || (fl & RENAME_EXCHANGE != 0 && is_whiteout(off, new))
        }
        OP_CREATE => is_whiteout(off, new),
        _ => false,
    };
    if whiteout {
        mark(&DIR_OPS, tid, ARG_WHITEOUT_SEEN);
    }
    0
}

/// `vfs_link`, attached only without overlay's types: inside a copy-up, its O_TMPFILE upper was
/// linked into place.
#[kprobe]
pub fn cowprof_kp_vfs_link(_ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    mark(&COPY_UPS, tid, ARG_PLACED);
    0
}

/// `vfs_unlink(idmap, dir, dentry, delegated)`, attached only without overlay's types: a
/// rename of a directory without lower over a whiteout exchanges the two and then removes the
/// whiteout again, leaving none.
#[kprobe]
pub fn cowprof_kp_vfs_unlink(ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(p) = DIR_OPS.get_ptr_mut(&tid) {
        let Some(cfg) = config() else { return 0 };
        let Some(d) = ctx.arg::<u64>(2) else { return 0 };
        // SAFETY: the entry of this tid is only written by this tid.
        unsafe {
            if (*p).op == OP_RENAME
                && (*p).arg & ARG_WHITEOUT_SEEN != 0
                && COPY_UPS.get(&tid).is_none()
                && is_whiteout(&cfg.off, d)
            {
                (*p).arg &= !ARG_WHITEOUT_SEEN;
            }
        }
    }
    0
}

/// Never attached: `doctor` loads it to learn whether the kernel accepts tracing programs
/// (some refuse them with EPERM before the verifier runs).
#[fentry(function = "ovl_copy_up_end")]
pub fn cowprof_fentry_probe(_ctx: FEntryContext) -> u32 {
    0
}
