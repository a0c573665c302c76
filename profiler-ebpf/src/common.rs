//! Shared by every program: the maps, the event layout helpers, the dentry walk and the
//! constants of the kernel ABI. Struct offsets come from `CONFIG` (read from BTF in user space).

pub(crate) use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes, bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, fentry, kprobe, kretprobe, map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, RetProbeContext,
    },
};
pub(crate) use aya_log_ebpf::warn;
pub(crate) use profiler_common::{
    backend, class, config_flags, counter, flags, kind, mount_flags, Config, CowEvent, InodeKey,
    MountEvent, Offsets, SyscallEnd, NAME_MAX_COPY, PATH_BUF, PATH_MAX_DEPTH, RECORD_COW,
    RECORD_MOUNT, RECORD_SYSCALL_END,
};

pub(crate) const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFCHR: u32 = 0o020_000;
pub(crate) const RENAME_EXCHANGE: u64 = 2;
pub(crate) const RENAME_WHITEOUT: u64 = 4;
pub(crate) const OVERLAY_SUPER_MAGIC: u64 = 0x794c_7630;
/// `mount(2)` on x86_64; its arguments are captured at entry (target, data).
pub(crate) const NR_MOUNT: i32 = 165;
/// x86_64 `struct pt_regs` offsets of the syscall arguments 2, 3 and 5 (si, dx, r8).
pub(crate) const REGS_SI: u32 = 104;
pub(crate) const REGS_DX: u32 = 96;
pub(crate) const REGS_R8: u32 = 72;
/// x86_64 `struct pt_regs` offset of `orig_ax` (the syscall number at `sys_exit`).
pub(crate) const REGS_ORIG_AX: u32 = 120;
/// Overlay inodes a syscall can remember (each one instantiated or updated in it): the
/// copy-up's or removal's own overlay inode is among them when its lookup happened here.
pub(crate) const MAX_CANDS: usize = 4;
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
/// `BPF_F_MMAPABLE`: user space maps [`COUNTERS`] and reads it without a `bpf()` call.
const BPF_F_MMAPABLE: u32 = 1 << 10;
/// What was lost, by `counter::*`. One array for every CPU, added to atomically, and mapped
/// by user space: reading it takes no `bpf()` map operation, which would hold the per-CPU guard
/// every kprobe program shares (see `profiler/src/pipeline/probe/counters.rs`).
#[map]
pub(crate) static COUNTERS: Array<u64> = Array::with_max_entries(counter::COUNT, BPF_F_MMAPABLE);
/// Tracepoint backend: the work directories (`<workdir>/work`) of the overlay mounts, with
/// their mount serial. LRU: keys of mounts that are gone (which never match again, see
/// `ovl_inuse`) make room for new ones however many mounts a session sees.
#[map]
pub(crate) static WORKDIRS: LruHashMap<InodeKey, u32> = LruHashMap::with_max_entries(16384, 0);
/// Upper root directories, with their mount serial: the tracepoint backend's dentry walk stops
/// there; the kprobe backend finds an overlay superblock's serial there (`mount_serial`).
#[map]
pub(crate) static UPPER_ROOTS: LruHashMap<InodeKey, u32> = LruHashMap::with_max_entries(16384, 0);
/// Tracepoint backend: superblocks that hold an upper layer (s_dev).
#[map]
pub(crate) static UPPER_DEVS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);
/// tid -> the `mount(2)` arguments captured at its entry (sent with the mount record).
#[map]
pub(crate) static MOUNT_ARGS: HashMap<u32, MountEvent> = HashMap::with_max_entries(256, 0);
/// tid -> the overlay superblock its `ovl_fill_super` is filling (kprobe backend).
#[map]
pub(crate) static FILL_SB: HashMap<u32, u64> = HashMap::with_max_entries(256, 0);
/// The source of a new `MOUNT_ARGS` entry, filled in place afterwards (see `insert_blank`):
/// never written, all zeros.
#[map]
pub(crate) static MOUNT_BLANK: PerCpuArray<MountEvent> = PerCpuArray::with_max_entries(1, 0);
/// Per CPU, per ctime hook (`tracepoint::HOOK_*`; four slots, so that an index masked with 3 is
/// always in bounds), per copy: 1 while that copy runs there. The
/// kernel skips a copy on a CPU while it is preempted there (7.0+), so a copy's slot set when
/// another task's hit reaches the checker is a copy that skipped the hit. One byte a copy: each is
/// written only by the one task inside that copy on that CPU, never read-modified-written by two.
#[map]
pub(crate) static CTIME_BUSY: PerCpuArray<[[u8; 4]; 4]> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU counter behind the kernel's mount serials.
#[map]
pub(crate) static MOUNT_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

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
    /// Mount serial of the work directory the temp was made in (0 for whiteouts).
    pub(crate) mount_id: u32,
    /// Whiteouts: set once the inode was seen linked into a registered work directory
    /// (overlay makes every whiteout there); unlinking an existing whiteout file outside
    /// overlay (an engine's clean-up, `rm -rf` of a layer) never is.
    pub(crate) via_work: u32,
    /// Whiteouts: the inode's newest alias (`i_dentry.first`) at the previous ctime update.
    pub(crate) alias_before: u64,
    /// Whiteouts: this syscall's own link of the (shared) whiteout inode, found at its
    /// rename into the upper dir; 0 = not found (the newest alias is used).
    pub(crate) whiteout_dentry: u64,
    /// Temps: the work dir dentry the temp was last seen in (its later ctime updates under the
    /// same parent skip the work-dir lookup).
    pub(crate) work_parent: u64,
    /// Source layer read from the operation's overlay inode at syscall exit (0 = unknown),
    /// and `flags::LOWER_FROM_KERNEL` when known.
    pub(crate) lower_idx: u32,
    pub(crate) lower_flag: u32,
}

/// `Op::state`: an inode created in this syscall, not yet named.
pub(crate) const NEWBORN: u32 = 1;
/// Created in this syscall inside a work directory: a CoW temp.
pub(crate) const TEMP: u32 = 2;
/// A whiteout made (or linked) in this syscall.
pub(crate) const WHITEOUT: u32 = 3;
/// Created in this syscall outside any work directory: an ordinary create.
pub(crate) const IGNORE: u32 = 4;

/// A tracked syscall in progress: what every tracked syscall stores at entry. Small on
/// purpose (the common syscall never touches an overlay): the op table is allocated only when
/// the syscall first meets an overlay or upper-filesystem inode (see [`op_table`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) enter_ns: u64,
    pub(crate) nr: i32,
    pub(crate) class: u32,
    /// kprobe backend: events emitted inside the syscall (a `SyscallEnd` follows at exit).
    pub(crate) emitted: u32,
    pub(crate) nops: u32,
    /// A whiteout's ctime changed in a creating syscall: it was replaced (create over it).
    pub(crate) consumed_whiteout: u32,
    pub(crate) ncands: u32,
    /// 1 once this tid has an entry in `OP_TABLES`.
    pub(crate) has_table: u32,
    /// 1 + the index of the last op that became a temp (0: none). The create-over-whiteout
    /// temp is the syscall's last temp.
    pub(crate) last_temp: u32,
    /// Mount windows: the overlay superblock made in this syscall (its root inode's ctime
    /// is set at the end of `ovl_fill_super`).
    pub(crate) ovl_sb: u64,
    /// Set by the first copy of `sys_enter` (see "Two copies" in `syscalls.rs`), cleared by
    /// the second: 1 tells the second that the first opened this window.
    pub(crate) enter_mark: u32,
    /// Tracepoint backend: 1 + the index of the op the last ctime update in this window
    /// concerned (0: none); its next update is found without a table scan.
    pub(crate) last_op: u32,
}

impl Window {
    /// A syscall's window as its entry opens it. Small: the op table is allocated only if the
    /// syscall meets an overlay (see `op_table`).
    #[inline(always)]
    pub(crate) fn opened(nr: i64, cls: u8, enter_mark: u32, enter_ns: u64) -> Self {
        Self {
            enter_ns,
            nr: nr as i32,
            class: u32::from(cls),
            emitted: 0,
            nops: 0,
            consumed_whiteout: 0,
            ncands: 0,
            has_table: 0,
            last_temp: 0,
            ovl_sb: 0,
            enter_mark,
            last_op: 0,
        }
    }
}

/// Tracepoint backend: the CoW operations and overlay inodes one syscall met. Only the first
/// `Window::nops` / `Window::ncands` entries are meaningful (stale ones are never read).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct OpTable {
    pub(crate) ops: [Op; MAX_OPS],
    pub(crate) cands: [Cand; MAX_CANDS],
    /// 1 + the index of the op whose phase snapshot (`phases::tp_op_advanced`) was taken last
    /// (0: none; a new table from `OP_SCRATCH` is all zero), on which CPU, at which value of
    /// that CPU's `PHASE_GEN`. Kept across syscalls: it speaks of the thread's phase totals,
    /// not of the syscall.
    pub(crate) phase_op: u32,
    pub(crate) phase_cpu: u32,
    pub(crate) phase_gen: u64,
}

/// An overlay inode seen in a syscall window (tracepoint backend).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Cand {
    pub(crate) inode: u64,
    /// Its name while its dentry was alive: length and first 24 bytes (0 = not read yet).
    pub(crate) name_len: u32,
    pub(crate) _pad: u32,
    pub(crate) name: [u64; 3],
}

/// The source of a new `OP_TABLES` entry (too big for the 512-byte BPF stack). Its contents
/// do not matter: the window's counts say which entries are valid.
#[map]
pub(crate) static OP_SCRATCH: PerCpuArray<OpTable> = PerCpuArray::with_max_entries(1, 0);

/// tid -> the tracked syscall it is in.
#[map]
pub(crate) static WINDOWS: HashMap<u32, Window> = HashMap::with_max_entries(16384, 0);

/// tid -> the op table of its syscalls (allocated at the first syscall that needs one, kept
/// for the thread's next ones; LRU: threads that stopped making them give their entries up).
#[map]
pub(crate) static OP_TABLES: LruHashMap<u32, OpTable> = LruHashMap::with_max_entries(4096, 0);

/// The op table of `tid`'s syscall window `w`: the thread's table from an earlier syscall as
/// it is (the window's counts say which entries are valid), else a new one. `None` when none
/// can be had, or the table was given up while in use (more than the map's threads made
/// operations since): counted as a window drop, the syscall's operations are lost.
#[inline(always)]
pub(crate) fn op_table(w: &mut Window, tid: u32) -> Option<&'static mut OpTable> {
    if w.has_table == 0 {
        w.has_table = 1;
        if let Some(t) = OP_TABLES.get_ptr_mut(&tid) {
            // SAFETY: only this tid touches its table.
            return Some(unsafe { &mut *t });
        }
        let scratch = OP_SCRATCH.get_ptr(0)?;
        // SAFETY: per-CPU slot, read-only here.
        if OP_TABLES.insert(&tid, unsafe { &*scratch }, 0).is_err() {
            bump(counter::WINDOW_DROPS);
            return None;
        }
    }
    // SAFETY: only this tid touches its table.
    if let Some(t) = OP_TABLES.get_ptr_mut(&tid) {
        return Some(unsafe { &mut *t });
    }
    bump(counter::WINDOW_DROPS);
    None
}

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
    /// kprobe backend without overlay's types: which overlay operation armed it (`OP_*`).
    pub(crate) op: u32,
}

const _: () = assert!(core::mem::size_of::<Pending>() == profiler_common::PENDING_SIZE);

/// `Pending::op` values (kprobe backend without overlay's types).
pub(crate) const OP_COPY_UP: u32 = 1;
pub(crate) const OP_REMOVE: u32 = 2;
pub(crate) const OP_RENAME: u32 = 3;
pub(crate) const OP_CREATE: u32 = 4;
/// `Pending::arg` bits set by the `vfs_*` probes (kprobe backend without overlay's types).
/// A copy-up linked or renamed its new upper into place.
pub(crate) const ARG_PLACED: u64 = 1 << 1;
/// A removal or rename left a whiteout, or a create replaced one.
pub(crate) const ARG_WHITEOUT_SEEN: u64 = 1 << 2;

/// kprobe backend: tid -> operation in progress (copy-ups of one dentry do not nest).
#[map]
pub(crate) static COPY_UPS: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);
#[map]
pub(crate) static DIR_OPS: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);

/// `bpf_ringbuf_submit`/`output` flags and `bpf_ringbuf_query` selectors (uapi `BPF_RB_*`).
pub(crate) const RB_FORCE_WAKEUP: u64 = 2;
const RB_AVAIL_DATA: u64 = 0;
const RB_RING_SIZE: u64 = 1;

/// Flags for a ring-buffer submit. Below an eighth full: none, so the kernel wakes the reader
/// only for a record that finds every earlier one consumed (the first of a batch); the reader
/// then waits a short interval before it drains (`pipeline::record`), so the records of a burst
/// wake it once, and an idle reader is never woken. From an eighth full: a forced wakeup, so
/// that a burst never fills the buffer while the reader waits. A wakeup per record cost an
/// irq_work (an IPI on a VM) and a reader pass per event.
#[inline(always)]
pub(crate) fn rb_flags() -> u64 {
    if EVENTS.query(RB_AVAIL_DATA) >= EVENTS.query(RB_RING_SIZE) / 8 {
        RB_FORCE_WAKEUP
    } else {
        0
    }
}

#[inline(always)]
pub(crate) fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// The offsets of `CONFIG`, as constants the verifier knows: a read-only global (`.rodata`,
/// which aya creates with `BPF_F_RDONLY_PROG` and freezes) that user space sets before loading
/// the object. The verifier reads a frozen read-only map's values at load time, so a pointer it
/// knows the type of (a tracing program's `struct inode *` argument, and the pointers loaded
/// from it) plus one of these offsets is a field it can check against the kernel's BTF, and
/// [`field`] loads it directly.
#[unsafe(no_mangle)]
pub(crate) static TP_OFFSETS: Offsets = Offsets::ABSENT;

/// A member's offset from [`TP_OFFSETS`] (a volatile read: LLVM must not fold the placeholder
/// the object carries).
macro_rules! known_off {
    ($member:ident) => {
        // SAFETY: a read of an immutable global.
        unsafe { core::ptr::read_volatile(&raw const $crate::common::TP_OFFSETS.$member) }
    };
}
pub(crate) use known_off;

/// The field at `base + off` of a kernel object whose type the verifier knows from BTF (a
/// `tp_btf` program's pointer argument, or a pointer member loaded from one by this function),
/// `off` from [`known_off!`]: a plain load, which the JIT guards with an exception-table entry
/// (a fault or a NULL `base` reads 0), instead of a `bpf_probe_read_kernel` call, about a fifth of
/// the ctime programs' time. Anything else (a pointer kept in a map, a `container_of` from a
/// list node: the verifier refuses a negative offset) is read with [`read`].
#[inline(always)]
pub(crate) fn field<T: Copy>(base: u64, off: u32) -> T {
    // SAFETY: the verifier checks the access against the BTF type of `base`; the JIT makes a
    // faulting load read 0.
    unsafe { core::ptr::read_volatile((base + u64::from(off)) as *const T) }
}

#[inline(always)]
pub(crate) fn bump(idx: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        // Every writer adds atomically: programs on other CPUs, or one that preempted this one
        // on kernels that run them preemptibly.
        // SAFETY: a live, aligned slot of the array.
        unsafe { add_one(c) };
    }
}

/// Adds 1 to `*c` with BPF's atomic add, which `core`'s atomics do not offer on this target.
///
/// # Safety
/// `c` points to a live, aligned `u64` (a map value from a lookup).
#[inline(always)]
pub(crate) unsafe fn add_one(c: *mut u64) {
    // SAFETY: the caller's guarantee.
    unsafe { atomic_add(c, 1) };
}

/// Subtracts 1 from `*c` atomically (see [`add_one`]).
///
/// # Safety
/// As [`add_one`].
#[inline(always)]
pub(crate) unsafe fn sub_one(c: *mut u64) {
    // SAFETY: the caller's guarantee.
    unsafe { atomic_add(c, u64::MAX) };
}

/// Adds `v` to `*c` atomically, wrapping.
///
/// # Safety
/// As [`add_one`].
#[inline(always)]
unsafe fn atomic_add(c: *mut u64, v: u64) {
    // SAFETY: the caller's guarantee.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) c,
            v = in(reg) v,
            options(nostack),
        );
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

/// A pointer-sized field at `base + off`, `off` known present (0 when `base` is 0 or the read
/// faults).
#[inline(always)]
pub(crate) fn peek(base: u64, off: u32) -> u64 {
    if base == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const u64) }.unwrap_or(0)
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

/// Is `inode` held by a live overlay mount (its upper root or work base dir)?
#[inline(always)]
pub(crate) fn ovl_inuse(off: &Offsets, inode: u64) -> bool {
    read::<u32>(inode, off.inode_i_state).unwrap_or(0) & off.i_ovl_inuse != 0
}

/// The work dir registration of `dir` (a dentry), if it is the work dir of a live mount.
#[inline(never)]
pub(crate) fn workdir_serial(off: &Offsets, dev: u32, dir: u64) -> u32 {
    let key = InodeKey {
        dev,
        _pad: 0,
        ino: ptr(ptr(dir, off.dentry_d_inode), off.inode_i_ino),
    };
    // SAFETY: read-only lookup.
    let Some(serial) = (unsafe { WORKDIRS.get(&key) }).copied() else {
        return 0;
    };
    let base = ptr(ptr(dir, off.dentry_d_parent), off.dentry_d_inode);
    if ovl_inuse(off, base) {
        serial
    } else {
        0
    }
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
    // The offsets the loop reads, checked once here and read with `peek`: `read` tests its
    // offset for "absent" on every use, and the exact u32::MAX its "absent" branch leaves
    // on the stack made every level a state of its own (inside the emission callback the
    // walk passed the verifier's million-instruction limit). All are required fields.
    let d_inode = core::hint::black_box(off.dentry_d_inode);
    let d_parent = core::hint::black_box(off.dentry_d_parent);
    let d_name = core::hint::black_box(off.dentry_d_name_name);
    let i_ino = core::hint::black_box(off.inode_i_ino);
    if d_inode == u32::MAX || d_parent == u32::MAX || d_name == u32::MAX || i_ino == u32::MAX {
        ev.path_len = 0;
        ev.depth = 0;
        ev.flags |= flags::PATH_TRUNCATED;
        return false;
    }
    // An upper root is in use by its overlay (`I_OVL_INUSE` in `i_state`, as `ovl_inuse`
    // reads it): only an inode with that bit is looked up in `UPPER_ROOTS`, a flag read
    // instead of a hash lookup at every level. Not tested for "absent" here (a branch before
    // the loop doubled the states the verifier walks through it): without `i_state` the read
    // fails and gives 0, so no inode is in use, as `ovl_inuse` has it.
    let i_state = core::hint::black_box(off.inode_i_state);
    let in_use = core::hint::black_box(off.i_ovl_inuse);
    let mut pos: usize = 0;
    let mut depth: u32 = 0;
    let mut truncated = 1u32;
    let mut at_root = false;
    for _ in 0..PATH_MAX_DEPTH {
        if dentry == 0 {
            truncated = 0;
            break;
        }
        let inode = peek(dentry, d_inode);
        let parent = peek(dentry, d_parent);
        if upper_dev != 0 && inode != 0 && (peek(inode, i_state) as u32 & in_use) != 0 {
            let key = InodeKey {
                dev: upper_dev,
                _pad: 0,
                ino: peek(inode, i_ino),
            };
            // SAFETY: read-only map lookup.
            if let Some(serial) = unsafe { UPPER_ROOTS.get(&key) } {
                if ev.mount_id == 0 {
                    ev.mount_id = *serial;
                }
                ev.root_ino = key.ino;
                truncated = 0;
                at_root = true;
                break;
            }
        }
        if parent == dentry || parent == 0 {
            ev.root_ino = if inode != 0 { peek(inode, i_ino) } else { 0 };
            truncated = 0;
            break;
        }
        let name = peek(dentry, d_name);
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
        // keep the NUL as separator. Through black_box: an exact `pos` (a name the read
        // found empty gives one) makes every level a state of its own, and inside the
        // emission callback the walk then passed the verifier's million-instruction limit;
        // the checks below bound it the same.
        pos = core::hint::black_box(start + n + 1);
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
            match unsafe { UPPER_ROOTS.get(&key) } {
                Some(serial) if ovl_inuse(off, inode) => {
                    if ev.mount_id == 0 {
                        ev.mount_id = *serial;
                    }
                    true
                }
                _ => false,
            }
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

/// Zeroes each field by a volatile store (see `clear_phases`).
macro_rules! zero {
    ($($f:expr),+ $(,)?) => {
        // SAFETY: each is a field of a live, exclusively borrowed value.
        unsafe { $(core::ptr::write_volatile(&raw mut $f, 0);)+ }
    };
}

/// Zeroes `p` word by word. A plain `= Phases::default()` becomes a call to `memset`, which
/// aya-ebpf implements as a byte loop: 72 iterations the verifier walks at every call site
/// (inside `bpf_loop`'s callback that pushed `sys_exit_tp` past the verifier's 1M-insn limit).
/// Volatile stores keep LLVM from merging them back into a `memset`.
#[inline(always)]
pub(crate) fn clear_phases(p: &mut profiler_common::Phases) {
    const WORDS: usize = core::mem::size_of::<profiler_common::Phases>() / 8;
    let w = core::ptr::from_mut(p).cast::<u64>();
    for k in 0..WORDS {
        // SAFETY: `Phases` is `repr(C)`, 8-aligned, WORDS whole u64s long.
        unsafe { core::ptr::write_volatile(w.add(k), 0) };
    }
}

/// Fills the fields every event has (the caller adds its syscall, if in one).
#[inline(always)]
pub(crate) fn fill_common(cfg: &Config, ev: &mut CowEvent, tgid: u32, tid: u32, backend_id: u32) {
    ev.record = RECORD_COW;
    ev.backend = backend_id;
    ev.pid = tgid;
    ev.tid = tid;
    // Zeroed by volatile stores: LLVM merges adjacent plain zero stores into calls to
    // `memset`, a byte loop in aya-ebpf that the verifier walks byte by byte at every call
    // site (see `clear_phases`).
    zero!(
        ev.flags,
        ev.result,
        ev.lower_idx,
        ev.root_ino,
        ev.mount_id,
        ev._pad,
        ev.size_bytes,
        ev.bytes_copied,
        ev.path_len,
        ev.depth,
        ev.syscall_enter_ns,
        ev.syscall_ret
    );
    clear_phases(&mut ev.phases);
    ev.syscall_nr = -1;
    // SAFETY: plain helper calls; `comm` is 16 bytes, the helper's size.
    unsafe {
        ev.cgroup_id = bpf_get_current_cgroup_id();
        aya_ebpf::helpers::generated::bpf_get_current_comm(
            ev.comm.as_mut_ptr().cast(),
            ev.comm.len() as u32,
        );
    }
    let off = &cfg.off;
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let ns = ptr(ptr(task, off.task_nsproxy), off.nsproxy_mnt_ns);
    ev.mnt_ns = read::<u32>(ns, off.mnt_ns_inum).unwrap_or(0);
}
