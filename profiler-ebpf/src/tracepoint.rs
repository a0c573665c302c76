//! Tracepoint backend: the ctime tracepoints of 6.13+ on inodes in work directories and char 0/0
//! whiteouts on upper filesystems.

use aya_ebpf::helpers::generated::bpf_loop;

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
    let w = match WINDOWS.get_ptr_mut(&tid) {
        Some(w) => w,
        // A tracked syscall whose entry was skipped (two copies only): its window now.
        None if crate::syscalls::late_window(tid, inode) => match WINDOWS.get_ptr_mut(&tid) {
            Some(w) => w,
            None => return 0,
        },
        None => return 0,
    };
    let Some(cfg) = config() else { return 0 };
    let off = &cfg.off;
    // SAFETY: only this tid touches its window.
    let w = unsafe { &mut *w };
    // The syscall's op table, if it has one: looked up once for both passes below.
    let table = if w.has_table != 0 {
        OP_TABLES.get_ptr_mut(&tid)
    } else {
        None
    };
    // The next update of the inode the previous one concerned (a data copy-up changes its
    // temp's ctime about ten times in a row): no superblock reads, no table scan. One index
    // the verifier does not know, so `update_op` is verified once here, not once per slot.
    if w.last_op != 0 {
        // SAFETY: only this tid touches its table.
        if let Some(t) = table.map(|t| unsafe { &mut *t }) {
            let i = (w.last_op - 1) as usize & (MAX_OPS - 1);
            if t.ops[i].inode == inode {
                if w.class & u32::from(class::REMOVE | class::RENAME) != 0 {
                    name_cands(off, t, w.ncands);
                }
                // SAFETY: plain helper call.
                let now = unsafe { bpf_ktime_get_ns() };
                let op = &mut t.ops[i];
                // The mode is kept from the first update after the birth (as below).
                let mode = if op.state == NEWBORN {
                    btf_mode(inode)
                } else {
                    op.mode
                };
                let dev = op.dev;
                let alias = field::<u64>(inode, known_off!(inode_i_dentry));
                if update_op(off, w, op, i, inode, dev, mode, alias, now) {
                    crate::phases::tp_op_advanced(i as u32, t);
                }
                return 0;
            }
        }
    }
    let sb = field::<u64>(inode, known_off!(inode_i_sb));
    if field::<u64>(sb, known_off!(sb_s_magic)) == OVERLAY_SUPER_MAGIC {
        overlay_inode(w, tid, sb, inode);
        return 0;
    }
    if w.class & u32::from(class::MOUNT) != 0 {
        return 0;
    }
    let dev = field::<u32>(sb, known_off!(sb_s_dev));
    // SAFETY: read-only lookup.
    if unsafe { UPPER_DEVS.get(&dev) }.is_none() {
        return 0;
    }
    let mode = btf_mode(inode);
    let alias = field::<u64>(inode, known_off!(inode_i_dentry));
    if w.has_table != 0 {
        // SAFETY: only this tid touches its table.
        let Some(t) = table.map(|t| unsafe { &mut *t }) else {
            return 0;
        };
        if w.class & u32::from(class::REMOVE | class::RENAME) != 0 {
            name_cands(off, t, w.ncands);
        }
        let n = w.nops as usize;
        for i in 0..MAX_OPS {
            if i >= n {
                break;
            }
            // An index the verifier bounds itself: LLVM otherwise walks a pointer from a
            // negative offset into the table, which 7.x's verifier refuses.
            let i = core::hint::black_box(i) & (MAX_OPS - 1);
            if t.ops[i].inode == inode {
                w.last_op = i as u32 + 1;
                // SAFETY: plain helper call.
                let now = unsafe { bpf_ktime_get_ns() };
                if update_op(off, w, &mut t.ops[i], i, inode, dev, mode, alias, now) {
                    crate::phases::tp_op_advanced(i as u32, t);
                }
                return 0;
            }
        }
    }
    let is_whiteout =
        mode & S_IFMT == S_IFCHR && field::<u32>(inode, known_off!(inode_i_rdev)) == 0;
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
    let n = w.nops as usize;
    if n >= MAX_OPS {
        bump(counter::OP_TABLE_FULL);
        warn!(
            ctx,
            "more than {} CoW operations in one syscall (nr {}): one lost", MAX_OPS, w.nr
        );
        return 0;
    }
    let Some(t) = op_table(w, tid) else {
        return 0;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    t.ops[n & (MAX_OPS - 1)] = Op {
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
        work_parent: 0,
        lower_idx: 0,
        lower_flag: 0,
    };
    w.nops += 1;
    w.last_op = n as u32 + 1;
    crate::phases::tp_op_started(n as u32, t);
    0
}

/// The mode of the ctime programs' `inode` argument (see [`field`]).
#[inline(always)]
fn btf_mode(inode: u64) -> u32 {
    u32::from(field::<u16>(inode, known_off!(inode_i_mode)))
}

/// A later ctime update of the window's operation `op` (index `i`), whose inode is the ctime
/// program's argument `inode` (read directly, see [`field`]). True when the temp advanced in
/// its work directory: the caller then takes the phase snapshot (`phases::tp_op_advanced`,
/// which needs the whole table).
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "the facts one ctime update carries"
)]
fn update_op(
    off: &Offsets,
    w: &mut Window,
    op: &mut Op,
    i: usize,
    inode: u64,
    dev: u32,
    mode: u32,
    alias: u64,
    now: u64,
) -> bool {
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
            op.whiteout_dentry = ours - u64::from(known_off!(dentry_d_alias));
        }
        op.alias_before = alias;
        // Linked into a work dir (ours, or under concurrency the newest link): made by
        // overlay.
        let linked = if ours != 0 { ours } else { alias };
        if linked != 0 {
            let wd = linked - u64::from(known_off!(dentry_d_alias));
            if workdir_serial(off, dev, ptr(wd, off.dentry_d_parent)) != 0 {
                op.via_work = 1;
            }
        }
        return false;
    }
    if alias == 0 || (op.state != NEWBORN && op.state != TEMP) {
        return false;
    }
    // The temp's operation lasts while its newest name is in the work directory; the
    // link or rename into the upper dir still counts (its ctime update comes before
    // the new name is attached), later changes in the same syscall do not.
    let dentry = alias - u64::from(known_off!(dentry_d_alias));
    let parent = ptr(dentry, off.dentry_d_parent);
    // A temp seen in a work dir before, still under the same parent: still there (a data
    // copy-up changes the temp's ctime about ten times before it is linked into the upper dir).
    let serial = if op.state == TEMP && parent != 0 && parent == op.work_parent {
        op.mount_id
    } else {
        workdir_serial(off, dev, parent)
    };
    let in_workdir = serial != 0;
    if op.state == NEWBORN {
        op.state = if in_workdir { TEMP } else { IGNORE };
        op.mount_id = serial;
        op.mode = mode;
        op.nlink = field::<u32>(inode, known_off!(inode_i_nlink));
        if in_workdir && w.last_temp < i as u32 + 1 {
            w.last_temp = i as u32 + 1;
        }
    }
    if in_workdir {
        op.work_parent = parent;
        op.last_ns = now;
        op.size = field::<u64>(inode, known_off!(inode_i_size));
    }
    in_workdir
}

/// Before emission: drops a whiteout that was neither born in the syscall nor went through a
/// work dir (a whiteout file unlinked outside overlay: an engine's clean-up, `rm -rf` of a
/// layer) and reads the operation's source layer.
#[inline(never)]
pub(crate) fn prepare_tp_op(off: &Offsets, t: &mut OpTable, ncands: u32, i: usize) {
    let i = i & (MAX_OPS - 1);
    let op = t.ops[i];
    if op.state == WHITEOUT && op.via_work == 0 {
        t.ops[i].state = IGNORE;
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
    let idx = op_lower_idx(off, t, ncands, op.inode, whiteout);
    t.ops[i].lower_idx = idx;
    t.ops[i].lower_flag = if idx != 0 {
        flags::LOWER_FROM_KERNEL
    } else {
        0
    };
}

/// An overlay inode's ctime was set in a window: in a mount window it is the new
/// superblock's root; otherwise remember it (it may be the inode being copied up or
/// removed: the source layer is read from it at syscall exit).
#[inline(never)]
pub(crate) fn overlay_inode(w: &mut Window, tid: u32, sb: u64, inode: u64) {
    if w.class & u32::from(class::MOUNT) != 0 {
        w.ovl_sb = sb;
        return;
    }
    let n = w.ncands as usize;
    if n >= MAX_CANDS {
        return;
    }
    let Some(t) = op_table(w, tid) else {
        return;
    };
    for i in 0..MAX_CANDS {
        if i < n && t.cands[i].inode == inode {
            return;
        }
    }
    t.cands[n & (MAX_CANDS - 1)] = Cand {
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
pub(crate) fn name_cands(off: &Offsets, t: &mut OpTable, ncands: u32) {
    let n = ncands as usize;
    for i in 0..MAX_CANDS {
        if i >= n {
            break;
        }
        let c = &mut t.cands[i];
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
pub(crate) fn op_lower_idx(
    off: &Offsets,
    t: &OpTable,
    ncands: u32,
    op_inode: u64,
    whiteout: u64,
) -> u32 {
    let n = ncands as usize;
    let (len, name) = if whiteout != 0 {
        name_key(off, whiteout)
    } else {
        (0, [0; 3])
    };
    for i in 0..MAX_CANDS {
        if i >= n {
            break;
        }
        let c = &t.cands[i];
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

/// `bpf_loop`'s context: what `cowprof_emit_op` cannot read from the window.
#[repr(C)]
struct LoopCtx {
    tid: u32,
    _pad: u32,
    ret: i64,
    now: u64,
}

/// What the emission of one operation needs from its syscall.
#[repr(C)]
struct EmitCtx {
    tid: u32,
    ncands: u32,
    consumed_whiteout: u32,
    last_temp: u32,
    nr: i32,
    _pad: u32,
    enter_ns: u64,
    ret: i64,
    now: u64,
}

/// Emits the window's CoW operations at syscall exit, when each temp has reached its final
/// name in the upper directory, with the syscall's return value and exit time (no separate
/// record for user space to join). One `bpf_loop` callback per operation: the verifier checks
/// the callback once instead of unrolling a bounded loop over 16 operations, each with its
/// path walk.
#[inline(always)]
pub(crate) fn emit_tp_ops(w: &Window, tid: u32, ret: i64, now: u64) {
    let mut c = LoopCtx {
        tid,
        _pad: 0,
        ret,
        now,
    };
    let nops = if w.nops > MAX_OPS as u32 {
        MAX_OPS as u32
    } else {
        w.nops
    };
    // SAFETY: `emit_one` has bpf_loop's callback signature; `c` outlives the call.
    unsafe {
        bpf_loop(
            nops,
            emit_one as *mut core::ffi::c_void,
            (&raw mut c).cast(),
            0,
        );
    }
}

/// `bpf_loop` callback: prepares and emits operation `i`. Returns 0 (go on) or 1 (stop).
extern "C" fn emit_one(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes `emit_tp_ops`'s context.
    let c = unsafe { &*ctx.cast::<LoopCtx>() };
    // The global function's return is an unknown scalar to the verifier, which wants a
    // callback's return in [0, 1] (`black_box` keeps LLVM from passing it through as is).
    if core::hint::black_box(cowprof_emit_op(c.tid, i as u32, c.ret, c.now)) == 0 {
        0
    } else {
        1
    }
}

/// Prepares and emits operation `i` of `tid`'s syscall window. A global BPF function
/// (exported from the object, see build.rs): the verifier checks it once, by itself, with
/// its arguments unknown, instead of once for every state it reaches it in; called from a
/// `bpf_loop` callback, the path walk inside made that product pass the verifier's
/// 1M-instruction limit on some 6.18 builds. Returns 0 (go on) or 1 (stop).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn cowprof_emit_op(tid: u32, i: u32, ret: i64, now: u64) -> i32 {
    let Some(cfg) = config() else { return 1 };
    // SAFETY: only this tid touches its window and its table.
    let Some(w) = WINDOWS.get_ptr(&tid).map(|w| unsafe { &*w }) else {
        return 1;
    };
    // SAFETY: as above.
    let Some(t) = OP_TABLES.get_ptr_mut(&tid).map(|t| unsafe { &mut *t }) else {
        // Given up while in use (see `op_table`): the syscall's operations are lost, counted.
        bump(counter::WINDOW_DROPS);
        return 1;
    };
    let c = EmitCtx {
        tid,
        ncands: w.ncands,
        consumed_whiteout: w.consumed_whiteout,
        last_temp: w.last_temp,
        nr: w.nr,
        _pad: 0,
        enter_ns: w.enter_ns,
        ret,
        now,
    };
    let i = (i as usize) & (MAX_OPS - 1);
    prepare_tp_op(&cfg.off, t, c.ncands, i);
    emit_tp_op(cfg, t, &c, i);
    0
}

#[inline(never)]
fn emit_tp_op(cfg: &Config, t: &OpTable, c: &EmitCtx, i: usize) {
    let i = i & (MAX_OPS - 1);
    let id = bpf_get_current_pid_tgid();
    let off = &cfg.off;
    let op = t.ops[i];
    if op.state != TEMP && op.state != WHITEOUT {
        return;
    }
    // The create-over-whiteout temp is the syscall's last temp.
    let last = c.last_temp <= i as u32 + 1;
    let Some(mut entry) = EVENTS.reserve::<CowEvent>(0) else {
        bump(counter::RINGBUF_DROPS);
        return;
    };
    // SAFETY: the entry is ours until submit; every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_common(cfg, ev, (id >> 32) as u32, id as u32, backend::TRACEPOINT);
    // Before the walk: it takes the upper root's serial only when this is 0.
    ev.mount_id = op.mount_id;
    // The path first, while few distinct verifier states reach this call: `walk` is a
    // static subprogram, verified again for every state it is called in, and the branches
    // below (kind, phases) multiplied those past the million-instruction limit.
    if !walk(
        off,
        ev,
        name_dentry(off, op.inode, op.whiteout_dentry),
        op.dev,
    ) {
        // Never reached the upper dir. A temp: an intermediate directory of a removal
        // (overlay swaps in an empty opaque dir made in the work dir before whiting out a
        // directory that held whiteouts), not a copy-up. A whiteout: made, but its name in
        // the upper dir cannot be read (no dentry: an upper filesystem's own
        // RENAME_WHITEOUT), so lost and counted. Flags 0, as for a submit: a record after
        // this one wakes the reader only if this one was consumed (see `rb_flags`).
        entry.discard(0);
        count_unnamed(op.state);
        return;
    }
    ev.syscall_nr = c.nr;
    ev.syscall_enter_ns = c.enter_ns;
    ev.syscall_ret = c.ret;
    ev.flags |=
        flags::IN_SYSCALL | flags::SYSCALL_EXITED | flags::DEV_IS_UPPER | flags::LATENCY_PARTIAL;
    ev.end_ns = c.now;
    ev.latency_ns = op.last_ns - op.first_ns;
    ev.dev = op.dev;
    ev.mode = op.mode;
    ev.result = if c.ret < 0 { c.ret as i32 } else { 0 };
    let over_whiteout = last && c.consumed_whiteout != 0;
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
    entry.submit(rb_flags());
}

/// The ctime hooks, in [`CTIME_BUSY`]'s order.
const HOOK_NS_XCHG: usize = 0;
const HOOK_XCHG_SKIP: usize = 1;
const HOOK_SET_CTIME: usize = 2;

/// One copy of a ctime program: marks the copy busy on this CPU while it runs (for the
/// checkers, below), and processes the hit.
#[inline(always)]
fn ctime_copy(ctx: &BtfTracePointContext, hook: usize, copy: usize) -> i32 {
    let busy = CTIME_BUSY.get_ptr_mut(0);
    if let Some(b) = busy {
        // SAFETY: per-CPU slot of this copy; only the one task running it here writes it.
        unsafe { (*b)[hook & 3][copy & 3] = 1 };
    }
    let r = tp_inode(ctx, ctx.arg::<u64>(0));
    if let Some(b) = busy {
        // SAFETY: as above.
        unsafe { (*b)[hook & 3][copy & 3] = 0 };
    }
    r
}

/// A ctime hook's checker, attached after its copies: a hit of an inode on an overlay or upper
/// filesystem that finds every attached copy busy on this CPU is one they all skipped (each is
/// preempted here by another task inside it), so it is counted (`CTIME_SKIPPED`) when it is
/// one that could lose an event (an overlay inode, or an upper inode's birth or a whiteout): an
/// upper bound of the copy-ups and whiteouts the copies lost.
#[inline(always)]
fn ctime_check(ctx: &BtfTracePointContext, hook: usize) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let n = (cfg.flags >> config_flags::CTIME_COPIES_SHIFT) & config_flags::CTIME_COPIES_MASK;
    let Some(b) = CTIME_BUSY.get(0) else { return 0 };
    let b = &b[hook & 3];
    let all_busy = match n {
        1 => b[0] != 0,
        2 => b[0] != 0 && b[1] != 0,
        3 => b[0] != 0 && b[1] != 0 && b[2] != 0,
        _ => false,
    };
    if !all_busy {
        return 0;
    }
    let inode = ctx.arg::<u64>(0);
    let off = &cfg.off;
    let sb = ptr(inode, off.inode_i_sb);
    if read::<u64>(sb, off.sb_s_magic) != Some(OVERLAY_SUPER_MAGIC) {
        let dev = read::<u32>(sb, off.sb_s_dev).unwrap_or(0);
        // SAFETY: read-only lookup.
        if unsafe { UPPER_DEVS.get(&dev) }.is_none() {
            return 0;
        }
        // On an upper filesystem only what `tp_inode` cannot learn from a later update: an
        // inode with no dentry yet (a CoW temp's birth; once it has one it is taken for an
        // existing inode) or a whiteout. A skipped update of a temp already known loses
        // nothing.
        let newborn = ptr(inode, off.inode_i_dentry) == 0;
        let whiteout = inode_mode(off, inode) & S_IFMT == S_IFCHR
            && read::<u32>(inode, off.inode_i_rdev) == Some(0);
        if !newborn && !whiteout {
            return 0;
        }
    }
    // Under a process or cgroup filter only a tracked syscall's hits count (its window is
    // opened for filtered tasks only).
    if cfg.filter_tgid != 0 || cfg.filter_cgroup != 0 {
        let tid = bpf_get_current_pid_tgid() as u32;
        // SAFETY: read-only lookup.
        if unsafe { WINDOWS.get(&tid) }.is_none() {
            return 0;
        }
    }
    bump(counter::CTIME_SKIPPED);
    0
}

#[btf_tracepoint(function = "ctime_ns_xchg")]
pub fn cowprof_tp_ctime_ns_xchg(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_NS_XCHG, 0)
}

#[btf_tracepoint(function = "ctime_xchg_skip")]
pub fn cowprof_tp_ctime_xchg_skip(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_XCHG_SKIP, 0)
}

#[btf_tracepoint(function = "inode_set_ctime_to_ts")]
pub fn cowprof_tp_set_ctime(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_SET_CTIME, 0)
}

// The second copies of the ctime programs (see "Two copies" in `syscalls.rs`). Both copies
// process a hit when both run: `tp_inode` is idempotent per hit (an inode already in the table
// is updated with the same facts, an overlay inode already remembered is not added again), so
// the second needs no mark from the first; a mark could not tell this hit from the task's
// previous one anyway (a second copy skipped there would leave it set).

#[btf_tracepoint(function = "ctime_ns_xchg")]
pub fn cowprof_tp_ctime_ns_xchg_fb(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_NS_XCHG, 1)
}

#[btf_tracepoint(function = "ctime_xchg_skip")]
pub fn cowprof_tp_ctime_xchg_skip_fb(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_XCHG_SKIP, 1)
}

#[btf_tracepoint(function = "inode_set_ctime_to_ts")]
pub fn cowprof_tp_set_ctime_fb(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_SET_CTIME, 1)
}

// Third copies: the ctime programs are the one place where a hit both copies miss cannot be
// recovered later (a CoW temp whose updates all went unseen is never known), so they get one
// more copy (user space attaches it with the second).

#[btf_tracepoint(function = "ctime_ns_xchg")]
pub fn cowprof_tp_ctime_ns_xchg_fb2(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_NS_XCHG, 2)
}

#[btf_tracepoint(function = "ctime_xchg_skip")]
pub fn cowprof_tp_ctime_xchg_skip_fb2(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_XCHG_SKIP, 2)
}

#[btf_tracepoint(function = "inode_set_ctime_to_ts")]
pub fn cowprof_tp_set_ctime_fb2(ctx: BtfTracePointContext) -> i32 {
    ctime_copy(&ctx, HOOK_SET_CTIME, 2)
}

// The checkers (user space attaches them after the copies, where copies are attached): what
// every copy skipped is counted, not lost without a trace.

#[btf_tracepoint(function = "ctime_ns_xchg")]
pub fn cowprof_tp_ctime_ns_xchg_chk(ctx: BtfTracePointContext) -> i32 {
    ctime_check(&ctx, HOOK_NS_XCHG)
}

#[btf_tracepoint(function = "ctime_xchg_skip")]
pub fn cowprof_tp_ctime_xchg_skip_chk(ctx: BtfTracePointContext) -> i32 {
    ctime_check(&ctx, HOOK_XCHG_SKIP)
}

#[btf_tracepoint(function = "inode_set_ctime_to_ts")]
pub fn cowprof_tp_set_ctime_chk(ctx: BtfTracePointContext) -> i32 {
    ctime_check(&ctx, HOOK_SET_CTIME)
}
