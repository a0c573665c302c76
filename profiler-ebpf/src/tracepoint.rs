//! Tracepoint backend: the ctime tracepoints of 6.13+ on inodes in work directories and char 0/0
//! whiteouts on upper filesystems.

use crate::{common::*, kprobe::ovl_inode};

/// One ctime update of `inode` inside a syscall window.
///
/// A CoW temp is an inode *born* in this syscall (its first ctime update comes before it
/// has a dentry) whose dentry then appears in an overlay work directory. Requiring the birth
/// keeps out inodes that only pass through the work directory (the old upper directory that
/// a whiteout replaces is moved there and removed).
#[inline(always)]
pub(crate) fn tp_inode(ctx: &BtfTracePointContext, inode: u64) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(w) = WINDOWS.get_ptr_mut(&tid) else {
        return 0;
    };
    let Some(cfg) = config() else { return 0 };
    let off = &cfg.off;
    let sb = ptr(inode, off.inode_i_sb);
    // SAFETY: only this tid touches its window.
    let w = unsafe { &mut *w };
    if read::<u64>(sb, off.sb_s_magic) == Some(OVERLAY_SUPER_MAGIC) {
        overlay_inode(w, sb, inode);
        return 0;
    }
    if w.class & u32::from(class::MOUNT) != 0 {
        return 0;
    }
    let dev = read::<u32>(sb, off.sb_s_dev).unwrap_or(0);
    // SAFETY: read-only lookup.
    if unsafe { UPPER_DEVS.get(&dev) }.is_none() {
        return 0;
    }
    if w.class & u32::from(class::REMOVE | class::RENAME) != 0 {
        name_cands(off, w);
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let n = w.nops as usize;
    let mut slot = MAX_OPS;
    for i in 0..MAX_OPS {
        if i >= n {
            break;
        }
        if w.ops[i].inode == inode {
            slot = i;
            break;
        }
    }
    let mode = inode_mode(off, inode);
    let alias = ptr(inode, off.inode_i_dentry);
    if slot < MAX_OPS {
        let op = &mut w.ops[slot];
        if op.state == WHITEOUT {
            op.last_ns = now;
            // Overlay links its one shared whiteout inode into the work dir (this update
            // comes before the new dentry is added to the alias list), then renames that
            // link into the upper dir (this update, with the work dir locked). Other
            // syscalls may have linked the inode in between, so the newest alias is not
            // necessarily ours: ours is the one added right in front of the alias that was
            // newest at the previous update. `d_move` keeps the dentry, so at syscall exit
            // it carries the whiteout's final name.
            let ours = added_after(alias, op.alias_before);
            if ours != 0 {
                op.whiteout_dentry = ours - u64::from(off.dentry_d_alias);
            }
            op.alias_before = alias;
            // Linked into a work dir (ours, or under concurrency the newest link): made by
            // overlay.
            let linked = if ours != 0 { ours } else { alias };
            if linked != 0 {
                let wd = linked - u64::from(off.dentry_d_alias);
                if workdir_serial(off, dev, ptr(wd, off.dentry_d_parent)) != 0 {
                    op.via_work = 1;
                }
            }
            return 0;
        }
        if alias == 0 || (op.state != NEWBORN && op.state != TEMP) {
            return 0;
        }
        // The temp's operation lasts while its newest name is in the work directory; the
        // link or rename into the upper dir still counts (its ctime update comes before
        // the new name is attached), later changes in the same syscall do not.
        let dentry = alias - u64::from(off.dentry_d_alias);
        let serial = workdir_serial(off, dev, ptr(dentry, off.dentry_d_parent));
        let workdir_mount = (serial != 0).then_some(serial);
        let in_workdir = workdir_mount.is_some();
        if op.state == NEWBORN {
            op.state = if in_workdir { TEMP } else { IGNORE };
            op.mount_id = workdir_mount.unwrap_or(0);
            op.mode = mode;
            op.nlink = read::<u32>(inode, off.inode_i_nlink).unwrap_or(0);
        }
        if in_workdir {
            op.last_ns = now;
            op.size = read::<u64>(inode, off.inode_i_size).unwrap_or(0);
            crate::phases::tp_op_advanced(slot as u32);
        }
        return 0;
    }
    let is_whiteout = mode & S_IFMT == S_IFCHR && read::<u32>(inode, off.inode_i_rdev) == Some(0);
    let state = if is_whiteout {
        // Whiteouts are made by remove and rename; in other syscalls a whiteout's ctime
        // changes because something is created over it.
        if w.class & u32::from(class::REMOVE | class::RENAME) == 0 {
            w.consumed_whiteout = 1;
            return 0;
        }
        WHITEOUT
    } else if alias == 0 {
        NEWBORN
    } else {
        return 0; // an existing inode: not a CoW temp
    };
    if n >= MAX_OPS {
        bump(counter::OP_TABLE_FULL);
        warn!(
            ctx,
            "more than {} CoW operations in one syscall (nr {}): one lost", MAX_OPS, w.nr
        );
        return 0;
    }
    w.ops[n & (MAX_OPS - 1)] = Op {
        inode,
        first_ns: now,
        last_ns: now,
        dev,
        mode,
        nlink: 0,
        state,
        size: 0,
        mount_id: 0,
        // A whiteout inode born in this remove or rename (no dentry yet) is new: an upper
        // filesystem's own RENAME_WHITEOUT inside overlay's rename, never an engine deleting an
        // existing whiteout file. Overlay's shared whiteout is instead seen linked into a work
        // dir (below).
        via_work: u32::from(is_whiteout && alias == 0),
        alias_before: alias,
        whiteout_dentry: 0,
        lower_idx: 0,
        lower_flag: 0,
    };
    w.nops += 1;
    crate::phases::tp_op_started(n as u32);
    0
}

/// Before emission: drops whiteouts that were neither born in the syscall nor went through a
/// work dir (a whiteout file unlinked outside overlay: an engine's clean-up, `rm -rf` of a
/// layer) and reads each
/// operation's source layer. A pass of its own keeps the emission simple for the verifier.
#[inline(always)]
pub(crate) fn prepare_tp_ops(cfg: &Config, w: &mut Window) {
    for i in 0..MAX_OPS {
        if i >= w.nops as usize {
            break;
        }
        prepare_tp_op(&cfg.off, w, i);
    }
}

#[inline(never)]
pub(crate) fn prepare_tp_op(off: &Offsets, w: &mut Window, i: usize) {
    let i = i & (MAX_OPS - 1);
    let op = w.ops[i];
    if op.state == WHITEOUT && op.via_work == 0 {
        w.ops[i].state = IGNORE;
        return;
    }
    if op.state != TEMP && op.state != WHITEOUT {
        return;
    }
    let whiteout = if op.state == WHITEOUT {
        name_dentry(off, op.inode, op.whiteout_dentry)
    } else {
        0
    };
    let idx = op_lower_idx(off, w, op.inode, whiteout);
    w.ops[i].lower_idx = idx;
    w.ops[i].lower_flag = if idx != 0 {
        flags::LOWER_FROM_KERNEL
    } else {
        0
    };
}

/// An overlay inode's ctime was set in a window: in a mount window it is the new
/// superblock's root; otherwise remember it (it may be the inode being copied up or
/// removed: the source layer is read from it at syscall exit).
#[inline(never)]
pub(crate) fn overlay_inode(w: &mut Window, sb: u64, inode: u64) {
    if w.class & u32::from(class::MOUNT) != 0 {
        w.ovl_sb = sb;
        return;
    }
    let n = w.ncands as usize;
    for i in 0..MAX_CANDS {
        if i < n && w.cands[i].inode == inode {
            return;
        }
    }
    if n >= MAX_CANDS {
        return;
    }
    w.cands[n & (MAX_CANDS - 1)] = Cand {
        inode,
        name_len: 0,
        _pad: 0,
        name: [0; 3],
    };
    w.ncands += 1;
}

/// Length and first 24 bytes (zero-padded) of a dentry's name.
#[inline(always)]
pub(crate) fn name_key(off: &Offsets, dentry: u64) -> (u32, [u64; 3]) {
    let len = read::<u32>(dentry, off.dentry_d_name_len).unwrap_or(0);
    let mut words = read::<[u64; 3]>(ptr(dentry, off.dentry_d_name_name), 0).unwrap_or([0; 3]);
    for (i, word) in words.iter_mut().enumerate() {
        let start = (i * 8) as u32;
        if len <= start {
            *word = 0;
        } else if len < start + 8 {
            *word &= (1u64 << ((len - start) * 8)) - 1;
        }
    }
    (len, words)
}

/// Reads the names of the window's overlay inodes while their dentries are alive (a
/// removal's own inode loses its dentry before the syscall exits).
#[inline(never)]
pub(crate) fn name_cands(off: &Offsets, w: &mut Window) {
    let n = w.ncands as usize;
    for i in 0..MAX_CANDS {
        if i >= n {
            break;
        }
        let c = &mut w.cands[i];
        if c.name_len != 0 {
            continue;
        }
        let alias = ptr(c.inode, off.inode_i_dentry);
        if alias != 0 {
            let (len, name) = name_key(off, alias - u64::from(off.dentry_d_alias));
            c.name_len = len;
            c.name = name;
        }
    }
}

/// Source layer of an overlay inode (1 = topmost lower), from its lower stack; 0 if none.
#[inline(always)]
pub(crate) fn inode_lower_idx(off: &Offsets, inode: u64) -> u32 {
    let oe = ptr(ovl_inode(off, inode), off.ovl_inode_oe);
    if read::<u32>(oe, off.ovl_entry_numlower).unwrap_or(0) == 0 {
        return 0;
    }
    let layer = ptr(oe + u64::from(off.ovl_entry_lowerstack), off.ovl_path_layer);
    read::<i32>(layer, off.ovl_layer_idx).unwrap_or(0) as u32
}

/// The source layer of a window's operation: a copy-up's overlay inode is the one whose
/// upper is the temp; a whiteout's is the one with the whiteout's name.
#[inline(never)]
pub(crate) fn op_lower_idx(off: &Offsets, w: &Window, op_inode: u64, whiteout: u64) -> u32 {
    let n = w.ncands as usize;
    let (len, name) = if whiteout != 0 {
        name_key(off, whiteout)
    } else {
        (0, [0; 3])
    };
    for i in 0..MAX_CANDS {
        if i >= n {
            break;
        }
        let c = &w.cands[i];
        let hit = if whiteout != 0 {
            c.name_len == len && c.name == name
        } else {
            let upper = ptr(ovl_inode(off, c.inode), off.ovl_inode_upperdentry);
            upper != 0 && ptr(upper, off.dentry_d_inode) == op_inode
        };
        if hit {
            return inode_lower_idx(off, c.inode);
        }
    }
    0
}

/// Aliases a syscall can find ahead of its own link of the shared whiteout inode: one per
/// other syscall that linked it between this one's link and rename (at most one per CPU
/// in practice; the work dir lock serializes the links).
pub(crate) const ALIAS_SCAN: usize = 16;

/// The node of an inode's alias list (`hlist`, newest first, starting at `head`) whose
/// successor is `before`: the alias added right after `before` was the newest. 0 if not
/// within `ALIAS_SCAN` nodes.
#[inline(never)]
pub(crate) fn added_after(head: u64, before: u64) -> u64 {
    let mut node = head;
    for _ in 0..ALIAS_SCAN {
        if node == 0 {
            return 0;
        }
        // `hlist_node.next` is its first field.
        let next = ptr(node, 0);
        if next == before {
            return node;
        }
        node = next;
    }
    0
}

/// The dentry whose path names an operation at syscall exit: a whiteout's own link when it
/// was found, else the inode's newest alias. Not inlined: the choice stays inside, so the
/// verifier does not carry two paths through the rest of the emission.
#[inline(never)]
pub(crate) fn name_dentry(off: &Offsets, inode: u64, whiteout_dentry: u64) -> u64 {
    if whiteout_dentry != 0 {
        return whiteout_dentry;
    }
    let alias = ptr(inode, off.inode_i_dentry);
    if alias == 0 {
        0
    } else {
        alias - u64::from(off.dentry_d_alias)
    }
}

/// Counts an operation that could not be named if it was a whiteout (a lost event). Not
/// inlined, for the same reason as `name_dentry`.
#[inline(never)]
pub(crate) fn count_unnamed(state: u32) {
    if state == WHITEOUT {
        bump(counter::WHITEOUT_UNNAMED);
    }
}

/// Emits the window's CoW operations at syscall exit, when each temp has reached its final
/// name in the upper directory.
#[inline(always)]
pub(crate) fn emit_tp_ops(cfg: &Config, w: &mut Window, ret: i64, now: u64) {
    let n = w.nops as usize;
    for i in 0..MAX_OPS {
        if i >= n {
            break;
        }
        emit_tp_op(cfg, w, i, ret, now);
    }
}

#[inline(never)]
pub(crate) fn emit_tp_op(cfg: &Config, w: &mut Window, i: usize, ret: i64, now: u64) {
    let n = w.nops as usize;
    let i = i & (MAX_OPS - 1);
    let id = bpf_get_current_pid_tgid();
    let off = &cfg.off;
    let op = w.ops[i];
    if op.state != TEMP && op.state != WHITEOUT {
        return;
    }
    // The create-over-whiteout temp is the syscall's last temp.
    let mut last = true;
    for j in 0..MAX_OPS {
        if j > i && j < n && w.ops[j].state == TEMP {
            last = false;
        }
    }
    let Some(mut entry) = EVENTS.reserve::<CowEvent>(0) else {
        bump(counter::RINGBUF_DROPS);
        return;
    };
    // SAFETY: the entry is ours until submit; every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_common(cfg, ev, (id >> 32) as u32, id as u32, backend::TRACEPOINT);
    ev.syscall_nr = w.nr;
    ev.syscall_enter_ns = w.enter_ns;
    ev.flags |= flags::IN_SYSCALL | flags::DEV_IS_UPPER | flags::LATENCY_PARTIAL;
    ev.end_ns = now;
    ev.latency_ns = op.last_ns - op.first_ns;
    ev.dev = op.dev;
    ev.mount_id = op.mount_id;
    ev.mode = op.mode;
    ev.result = if ret < 0 { ret as i32 } else { 0 };
    let over_whiteout = last && w.consumed_whiteout != 0;
    ev.kind = if op.state == WHITEOUT {
        kind::WHITEOUT
    } else if op.mode & S_IFMT == S_IFDIR {
        if over_whiteout {
            kind::OPAQUE_DIR
        } else {
            kind::DIR_COPY_UP
        }
    } else if over_whiteout {
        kind::CREATE_OVER_WHITEOUT
    } else if op.mode & S_IFMT == S_IFREG {
        kind::TP_REGULAR_COPY_UP
    } else {
        kind::SPECIAL_COPY_UP
    };
    if op.state != WHITEOUT {
        ev.size_bytes = op.size;
        if ev.kind == kind::TP_REGULAR_COPY_UP {
            ev.bytes_copied = ev.size_bytes;
        }
    }
    ev.lower_idx = op.lower_idx;
    ev.flags |= op.lower_flag;
    crate::phases::tp_fill(off, ev, i as u32, op.inode);
    if walk(
        off,
        ev,
        name_dentry(off, op.inode, op.whiteout_dentry),
        op.dev,
    ) {
        entry.submit(rb_flags());
        return;
    }
    // Never reached the upper dir. A temp: an intermediate directory of a removal (overlay
    // swaps in an empty opaque dir made in the work dir before whiting out a directory that
    // held whiteouts), not a copy-up. A whiteout: made, but its name in the upper dir cannot
    // be read (no dentry: an upper filesystem's own RENAME_WHITEOUT), so lost and counted.
    entry.discard(RB_NO_WAKEUP);
    count_unnamed(op.state);
}

#[btf_tracepoint(function = "ctime_ns_xchg")]
pub fn cowprof_tp_ctime_ns_xchg(ctx: BtfTracePointContext) -> i32 {
    tp_inode(&ctx, ctx.arg::<u64>(0))
}

#[btf_tracepoint(function = "ctime_xchg_skip")]
pub fn cowprof_tp_ctime_xchg_skip(ctx: BtfTracePointContext) -> i32 {
    tp_inode(&ctx, ctx.arg::<u64>(0))
}

#[btf_tracepoint(function = "inode_set_ctime_to_ts")]
pub fn cowprof_tp_set_ctime(ctx: BtfTracePointContext) -> i32 {
    tp_inode(&ctx, ctx.arg::<u64>(0))
}
