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

#[inline(always)]
pub(crate) fn start(map: &HashMap<u32, Pending>, dentry: u64, arg: u64, kind_id: u32) {
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
        lower_idx: if inode != 0 {
            lower_idx(off, dentry)
        } else {
            0
        },
        _pad: 0,
    };
    let _ = map.insert(&tid, &p, 0);
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
    // A removed dentry is negative by now: use what was read at the start.
    ev.mode = p.mode;
    ev.size_bytes = p.size;
    ev.lower_idx = p.lower_idx;
    if inode != 0 {
        ev.mode = inode_mode(off, inode);
        ev.size_bytes = read::<u64>(inode, off.inode_i_size).unwrap_or(0);
        ev.lower_idx = lower_idx(off, dentry);
    }
    if ev.lower_idx != 0 {
        ev.flags |= flags::LOWER_FROM_KERNEL;
    }
    if kind_id == kind::DATA_COPY_UP || kind_id == kind::DEFERRED_DATA_COPY_UP {
        ev.bytes_copied = ev.size_bytes;
    }
    walk(off, ev, dentry, 0);
    entry.submit(rb_flags());
}

#[kprobe]
pub fn cowprof_kp_copy_up_start(ctx: ProbeContext) -> u32 {
    let Some(dentry) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let Some(cfg) = config() else { return 0 };
    let had_upper = u64::from(upperdentry(&cfg.off, dentry) != 0);
    start(&COPY_UPS, dentry, had_upper, 0);
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
    }
    0
}

#[kprobe]
pub fn cowprof_kp_copy_up_end(_ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: value copied out before removal.
    let Some(p) = (unsafe { COPY_UPS.get(&tid) }).copied() else {
        return 0;
    };
    let _ = COPY_UPS.remove(&tid);
    let Some(cfg) = config() else { return 0 };
    let off = &cfg.off;
    let inode = ptr(p.dentry, off.dentry_d_inode);
    let mode = inode_mode(off, inode);
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
    0
}

#[inline(always)]
pub(crate) fn remove_start(dentry: u64) {
    let Some(cfg) = config() else { return };
    // Overlay makes a whiteout when a lower layer has the name (the dentry has a lower).
    let lower = u64::from(numlower(&cfg.off, dentry) != 0);
    if lower != 0 {
        start(&DIR_OPS, dentry, lower, kind::WHITEOUT);
    }
}

#[kprobe]
pub fn cowprof_kp_unlink(ctx: ProbeContext) -> u32 {
    if let Some(d) = ctx.arg::<u64>(1) {
        remove_start(d);
    }
    0
}

#[kprobe]
pub fn cowprof_kp_rmdir(ctx: ProbeContext) -> u32 {
    if let Some(d) = ctx.arg::<u64>(1) {
        remove_start(d);
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
        remove_start(old);
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
    if is_whiteout_dentry(&cfg.off, dentry) {
        let k = if is_dir != 0 {
            kind::OPAQUE_DIR
        } else {
            kind::CREATE_OVER_WHITEOUT
        };
        start(&DIR_OPS, dentry, 1, k);
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
    emit_kprobe(cfg, &p, p.kind, 0);
    0
}

/// Never attached: `doctor` loads it to learn whether the kernel accepts tracing programs
/// (some refuse them with EPERM before the verifier runs).
#[fentry(function = "ovl_copy_up_end")]
pub fn cowprof_fentry_probe(_ctx: FEntryContext) -> u32 {
    0
}
