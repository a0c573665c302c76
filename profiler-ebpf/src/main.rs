//! cowprof's kernel side: one object, three backends that share the syscall windows, the event
//! layout and the dentry walk.
//!
//! * syscall windows (raw tracepoints `sys_enter`/`sys_exit`, every backend): which syscall
//!   triggered an operation, and that syscall's own latency.
//! * kprobe backend: `ovl_copy_up_start`/`ovl_copy_up_end` bracket every copy-up of one dentry;
//!   `ovl_unlink`/`ovl_rmdir`/`ovl_rename` (inode operations, so never inlined) give whiteouts;
//!   `ovl_create`/`ovl_mkdir`/`ovl_mknod`/`ovl_symlink`/`ovl_link` give creates over whiteouts.
//! * tracepoint backend (kernels without kprobes and fentry): the ctime tracepoints of 6.13+
//!   (`ctime_ns_xchg`, `ctime_xchg_skip`, `inode_set_ctime_to_ts`) fire on every inode whose
//!   ctime changes, on any filesystem. Overlay builds every copy-up and whiteout in its work
//!   directory (an O_TMPFILE or a temp entry there), and only overlay makes char 0/0 inodes on an
//!   upper filesystem. So an inode touched inside a syscall window whose alias lives in a known
//!   work directory is a CoW temp, and a char 0/0 inode on an upper filesystem is a whiteout.
//!
//! No struct layout is compiled in: every offset comes from the running kernel's BTF through
//! `CONFIG` (see `profiler/src/probe/btf.rs`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        helpers::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
            bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_ns,
            bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
            bpf_probe_read_user_str_bytes,
        },
        macros::{btf_tracepoint, fentry, kprobe, kretprobe, map, raw_tracepoint},
        maps::{Array, HashMap, PerCpuArray, RingBuf},
        programs::{
            BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext,
            RetProbeContext,
        },
    };
    use aya_log_ebpf::warn;
    use profiler_common::{
        backend, class, counter, flags, kind, mount_flags, Config, CowEvent, InodeKey, MountEvent,
        Offsets, SyscallEnd, NAME_MAX_COPY, PATH_BUF, PATH_MAX_DEPTH, RECORD_COW, RECORD_MOUNT,
        RECORD_SYSCALL_END,
    };

    const S_IFMT: u32 = 0o170_000;
    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFCHR: u32 = 0o020_000;
    const RENAME_EXCHANGE: u64 = 2;
    const OVERLAY_SUPER_MAGIC: u64 = 0x794c_7630;
    /// `mount(2)` on x86_64; its arguments are captured at entry (target, data).
    const NR_MOUNT: i32 = 165;
    /// x86_64 `struct pt_regs` offsets of the syscall arguments 2, 3 and 5 (si, dx, r8).
    const REGS_SI: u64 = 104;
    const REGS_DX: u64 = 96;
    const REGS_R8: u64 = 72;
    /// Overlay inodes a syscall can remember (each one instantiated or updated in it): the
    /// copy-up's or removal's own overlay inode is among them when its lookup happened here.
    const MAX_CANDS: usize = 4;
    /// CoW operations the tracepoint backend can hold for one syscall (a deep path copies up
    /// one directory per level; each extra one is counted in `OP_TABLE_FULL`).
    const MAX_OPS: usize = 16;

    #[map]
    static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
    /// Syscall number -> `class` bits; 0 = not tracked.
    #[map]
    static SYSCALLS: Array<u8> = Array::with_max_entries(512, 0);
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);
    #[map]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
    /// Tracepoint backend: the work directories (`<workdir>/work`) of the overlay mounts.
    #[map]
    static WORKDIRS: HashMap<InodeKey, u32> = HashMap::with_max_entries(4096, 0);
    /// Tracepoint backend: upper root directories; the dentry walk stops there.
    #[map]
    static UPPER_ROOTS: HashMap<InodeKey, u32> = HashMap::with_max_entries(4096, 0);
    /// Tracepoint backend: superblocks that hold an upper layer (s_dev).
    #[map]
    static UPPER_DEVS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);
    /// tid -> the `mount(2)` arguments captured at its entry (sent with the mount record).
    #[map]
    static MOUNT_ARGS: HashMap<u32, MountEvent> = HashMap::with_max_entries(256, 0);
    #[map]
    static MOUNT_SCRATCH: PerCpuArray<MountEvent> = PerCpuArray::with_max_entries(1, 0);
    /// Per-CPU counter behind the kernel's mount serials.
    #[map]
    static MOUNT_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Op {
        inode: u64,
        first_ns: u64,
        last_ns: u64,
        dev: u32,
        mode: u32,
        nlink: u32,
        state: u32,
        /// i_size when the temp last changed inside the work directory (before a later truncate
        /// or write in the same syscall changes it).
        size: u64,
        /// Mount serial of the work directory the temp was made in (0 for whiteouts).
        mount_id: u32,
        /// Whiteouts: set once the inode was seen linked into a registered work directory
        /// (overlay makes every whiteout there); unlinking an existing whiteout file outside
        /// overlay (an engine's clean-up, `rm -rf` of a layer) never is.
        via_work: u32,
        /// Whiteouts: the inode's newest alias (`i_dentry.first`) at the previous ctime update.
        alias_before: u64,
        /// Whiteouts: this syscall's own link of the (shared) whiteout inode, found at its
        /// rename into the upper dir; 0 = not found (the newest alias is used).
        whiteout_dentry: u64,
        /// Source layer read from the operation's overlay inode at syscall exit (0 = unknown),
        /// and `flags::LOWER_FROM_KERNEL` when known.
        lower_idx: u32,
        lower_flag: u32,
    }

    /// `Op::state`: an inode created in this syscall, not yet named.
    const NEWBORN: u32 = 1;
    /// Created in this syscall inside a work directory: a CoW temp.
    const TEMP: u32 = 2;
    /// A whiteout made (or linked) in this syscall.
    const WHITEOUT: u32 = 3;
    /// Created in this syscall outside any work directory: an ordinary create.
    const IGNORE: u32 = 4;

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Window {
        enter_ns: u64,
        nr: i32,
        class: u32,
        emitted: u32,
        nops: u32,
        /// A whiteout's ctime changed in a creating syscall: it was replaced (create over it).
        consumed_whiteout: u32,
        ncands: u32,
        /// Mount windows: the overlay superblock made in this syscall (its root inode's ctime
        /// is set at the end of `ovl_fill_super`).
        ovl_sb: u64,
        ops: [Op; MAX_OPS],
        cands: [Cand; MAX_CANDS],
    }

    /// An overlay inode seen in a syscall window (tracepoint backend).
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Cand {
        inode: u64,
        /// Its name while its dentry was alive: length and first 24 bytes (0 = not read yet).
        name_len: u32,
        _pad: u32,
        name: [u64; 3],
    }

    #[map]
    static WINDOW_SCRATCH: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);

    /// tid -> the tracked syscall it is in.
    #[map]
    static WINDOWS: HashMap<u32, Window> = HashMap::with_max_entries(16384, 0);

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Pending {
        dentry: u64,
        start_ns: u64,
        /// kprobe copy-up: the dentry already had an upper (deferred metacopy data);
        /// remove/rename: a whiteout will be made; create: the name is a whiteout.
        arg: u64,
        size: u64,
        kind: u32,
        mode: u32,
        lower_idx: u32,
        _pad: u32,
    }

    /// kprobe backend: tid -> operation in progress (copy-ups of one dentry do not nest).
    #[map]
    static COPY_UPS: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);
    #[map]
    static DIR_OPS: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);

    #[inline(always)]
    fn config() -> Option<&'static Config> {
        CONFIG.get(0)
    }

    #[inline(always)]
    fn bump(idx: u32) {
        if let Some(c) = COUNTERS.get_ptr_mut(idx) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
            unsafe { *c += 1 };
        }
    }

    #[inline(always)]
    fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
        if base == 0 || off == u32::MAX {
            return None;
        }
        // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
        unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.ok()
    }

    #[inline(always)]
    fn ptr(base: u64, off: u32) -> u64 {
        read::<u64>(base, off).unwrap_or(0)
    }

    /// The process filter and self filter. Returns (tgid, tid).
    #[inline(always)]
    fn wanted(cfg: &Config) -> Option<(u32, u32)> {
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
    fn ovl_inuse(off: &Offsets, inode: u64) -> bool {
        read::<u32>(inode, off.inode_i_state).unwrap_or(0) & off.i_ovl_inuse != 0
    }

    /// The work dir registration of `dir` (a dentry), if it is the work dir of a live mount.
    #[inline(never)]
    fn workdir_serial(off: &Offsets, dev: u32, dir: u64) -> u32 {
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
    fn inode_mode(off: &Offsets, inode: u64) -> u32 {
        u32::from(read::<u16>(inode, off.inode_i_mode).unwrap_or(0))
    }

    /// Walks `dentry` towards the root, writing names leaf first into `ev.path`.
    /// Stops at the filesystem root, or at an upper root when `upper_dev` is non-zero.
    /// Not inlined: as a BPF subprogram it is verified once per call site instead of being
    /// unrolled into every caller's loop.
    /// Returns false if the walk never reached its root (an upper root when `upper_dev` is set).
    #[inline(never)]
    fn walk(off: &Offsets, ev: &mut CowEvent, mut dentry: u64, upper_dev: u32) -> bool {
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
                if let Some(serial) =
                    unsafe { UPPER_ROOTS.get(&key) }.filter(|_| ovl_inuse(off, inode))
                {
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

    /// Fills the fields every event has. Returns the window's enter time, if in one.
    #[inline(always)]
    fn fill_common(cfg: &Config, ev: &mut CowEvent, tgid: u32, tid: u32, backend_id: u32) {
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

    // ---------------------------------------------------------------- syscall windows

    #[raw_tracepoint(tracepoint = "sys_enter")]
    pub fn cowprof_sys_enter(ctx: RawTracePointContext) -> i32 {
        let nr: i64 = ctx.arg(1);
        if !(0..512).contains(&nr) {
            return 0;
        }
        let Some(&cls) = SYSCALLS.get(nr as u32) else {
            return 0;
        };
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
            if nr as i32 == NR_MOUNT {
                capture_mount_args(ctx.arg::<u64>(0), id as u32);
            }
            id as u32
        } else {
            let Some((_, tid)) = wanted(cfg) else {
                return 0;
            };
            tid
        };
        // The window is too big for the 512-byte BPF stack: build it in a per-CPU scratch slot.
        // Stale `ops` there are harmless: only the first `nops` entries are ever read.
        let Some(w) = WINDOW_SCRATCH.get_ptr_mut(0) else {
            return 0;
        };
        // SAFETY: per-CPU slot, this program is its only user while it runs.
        let w = unsafe { &mut *w };
        // SAFETY: plain helper call.
        w.enter_ns = unsafe { bpf_ktime_get_ns() };
        w.nr = nr as i32;
        w.class = u32::from(cls);
        w.emitted = 0;
        w.nops = 0;
        w.consumed_whiteout = 0;
        w.ncands = 0;
        w.ovl_sb = 0;
        if WINDOWS.insert(&tid, &*w, 0).is_err() {
            bump(counter::WINDOW_DROPS);
            warn!(
                &ctx,
                "syscall window map full: tid {} traced without its syscall", tid
            );
        }
        0
    }

    /// Captures `mount(2)`'s target and data (overlay mounts only) for the mount record.
    #[inline(never)]
    fn capture_mount_args(regs: u64, tid: u32) {
        let Some(m) = MOUNT_SCRATCH.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: per-CPU slot, this program is its only user while it runs.
        let m = unsafe { &mut *m };
        let fstype = read::<u64>(regs, REGS_DX as u32).unwrap_or(0);
        // SAFETY: user memory read, faults safely.
        let ty = unsafe { bpf_probe_read_user(fstype as *const [u8; 8]) }.unwrap_or([0; 8]);
        if &ty != b"overlay\0" {
            return;
        }
        m.record = RECORD_MOUNT;
        m.flags = mount_flags::ARGS;
        m.target[0] = 0;
        m.data[0] = 0;
        let target = read::<u64>(regs, REGS_SI as u32).unwrap_or(0);
        let data = read::<u64>(regs, REGS_R8 as u32).unwrap_or(0);
        // SAFETY: user strings into bounded buffers; a fault leaves them empty.
        unsafe {
            let _ = bpf_probe_read_user_str_bytes(target as *const u8, &mut m.target);
            let _ = bpf_probe_read_user_str_bytes(data as *const u8, &mut m.data);
        }
        let _ = MOUNT_ARGS.insert(&tid, &*m, 0);
    }

    /// Registers the overlay superblock `sb` made by this syscall: its work directory and
    /// upper root go into the maps the CoW probes look in (so the mount's first copy-up is
    /// already seen), and a mount record goes into the ring buffer ahead of its events.
    #[inline(never)]
    fn register_overlay(cfg: &Config, sb: u64, tid: u32, now: u64) {
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
        // SAFETY: per-CPU slot; plain helper call.
        let serial = unsafe {
            *seq += 1;
            ((*seq << 6) | (bpf_get_smp_processor_id() & 63)) & 0x7fff_ffff
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

    /// Syscall exit for the kprobe backend: closes the window.
    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn cowprof_sys_exit(ctx: RawTracePointContext) -> i32 {
        sys_exit(&ctx, false)
    }

    /// Syscall exit for the tracepoint backend: also emits the window's CoW temps. A separate
    /// program so kernels without the ctime tracepoints (6.1's verifier finds the emission loop
    /// too complex) never load that code.
    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn cowprof_sys_exit_tp(ctx: RawTracePointContext) -> i32 {
        sys_exit(&ctx, true)
    }

    #[inline(always)]
    fn sys_exit(ctx: &RawTracePointContext, tp_backend: bool) -> i32 {
        let tid = bpf_get_current_pid_tgid() as u32;
        let Some(w) = WINDOWS.get_ptr_mut(&tid) else {
            return 0;
        };
        let ret: i64 = ctx.arg(1);
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: only this tid touches its window.
        let (cls, ovl_sb) = unsafe { ((*w).class, (*w).ovl_sb) };
        if cls & u32::from(class::MOUNT) != 0 {
            // A mount makes temps and whiteouts in its work dir to probe the upper fs: never
            // CoW events.
            if tp_backend && ret == 0 && ovl_sb != 0 {
                if let Some(cfg) = config() {
                    register_overlay(cfg, ovl_sb, tid, now);
                }
            }
            let _ = MOUNT_ARGS.remove(&tid);
            let _ = WINDOWS.remove(&tid);
            return 0;
        }
        if tp_backend {
            if let Some(cfg) = config() {
                // SAFETY: only this tid touches its window.
                unsafe {
                    prepare_tp_ops(cfg, &mut *w);
                    emit_tp_ops(cfg, &mut *w, ret, now);
                }
            }
        }
        // SAFETY: as above.
        let (emitted, nr, enter_ns) = unsafe { ((*w).emitted, (*w).nr, (*w).enter_ns) };
        if emitted != 0 {
            let end = SyscallEnd {
                record: RECORD_SYSCALL_END,
                tid,
                syscall_nr: nr,
                _pad: 0,
                ret,
                enter_ns,
                exit_ns: now,
            };
            if EVENTS.output::<SyscallEnd>(&end, 0).is_err() {
                bump(counter::SYSCALL_END_DROPS);
            }
        }
        let _ = WINDOWS.remove(&tid);
        0
    }

    // ---------------------------------------------------------------- tracepoint backend

    /// One ctime update of `inode` inside a syscall window.
    ///
    /// A CoW temp is an inode *born* in this syscall (its first ctime update comes before it
    /// has a dentry) whose dentry then appears in an overlay work directory. Requiring the birth
    /// keeps out inodes that only pass through the work directory (the old upper directory that
    /// a whiteout replaces is moved there and removed).
    #[inline(always)]
    fn tp_inode(ctx: &BtfTracePointContext, inode: u64) -> i32 {
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
            }
            return 0;
        }
        let is_whiteout =
            mode & S_IFMT == S_IFCHR && read::<u32>(inode, off.inode_i_rdev) == Some(0);
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
            via_work: 0,
            alias_before: alias,
            whiteout_dentry: 0,
            lower_idx: 0,
            lower_flag: 0,
        };
        w.nops += 1;
        0
    }

    /// An overlay inode's ctime was set in a window: in a mount window it is the new
    /// superblock's root; otherwise remember it (it may be the inode being copied up or
    /// removed: the source layer is read from it at syscall exit).
    #[inline(never)]
    fn overlay_inode(w: &mut Window, sb: u64, inode: u64) {
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
    fn name_key(off: &Offsets, dentry: u64) -> (u32, [u64; 3]) {
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
    fn name_cands(off: &Offsets, w: &mut Window) {
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
    fn inode_lower_idx(off: &Offsets, inode: u64) -> u32 {
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
    fn op_lower_idx(off: &Offsets, w: &Window, op_inode: u64, whiteout: u64) -> u32 {
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

    /// Before emission: drops whiteouts that never went through a work dir (a whiteout file
    /// unlinked outside overlay: an engine's clean-up, `rm -rf` of a layer) and reads each
    /// operation's source layer. A pass of its own keeps the emission simple for the verifier.
    #[inline(always)]
    fn prepare_tp_ops(cfg: &Config, w: &mut Window) {
        for i in 0..MAX_OPS {
            if i >= w.nops as usize {
                break;
            }
            prepare_tp_op(&cfg.off, w, i);
        }
    }

    #[inline(never)]
    fn prepare_tp_op(off: &Offsets, w: &mut Window, i: usize) {
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

    /// Aliases a syscall can find ahead of its own link of the shared whiteout inode: one per
    /// other syscall that linked it between this one's link and rename (at most one per CPU
    /// in practice; the work dir lock serializes the links).
    const ALIAS_SCAN: usize = 16;

    /// The node of an inode's alias list (`hlist`, newest first, starting at `head`) whose
    /// successor is `before`: the alias added right after `before` was the newest. 0 if not
    /// within `ALIAS_SCAN` nodes.
    #[inline(never)]
    fn added_after(head: u64, before: u64) -> u64 {
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
    fn name_dentry(off: &Offsets, inode: u64, whiteout_dentry: u64) -> u64 {
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
    fn count_unnamed(state: u32) {
        if state == WHITEOUT {
            bump(counter::WHITEOUT_UNNAMED);
        }
    }

    /// Emits the window's CoW operations at syscall exit, when each temp has reached its final
    /// name in the upper directory.
    #[inline(always)]
    fn emit_tp_ops(cfg: &Config, w: &mut Window, ret: i64, now: u64) {
        let n = w.nops as usize;
        for i in 0..MAX_OPS {
            if i >= n {
                break;
            }
            emit_tp_op(cfg, w, i, ret, now);
        }
    }

    #[inline(never)]
    fn emit_tp_op(cfg: &Config, w: &mut Window, i: usize, ret: i64, now: u64) {
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
        let dentry = name_dentry(off, op.inode, op.whiteout_dentry);
        ev.lower_idx = op.lower_idx;
        ev.flags |= op.lower_flag;
        if walk(off, ev, dentry, op.dev) {
            entry.submit(0);
            return;
        }
        // Never reached the upper dir. A temp: an intermediate directory of a removal (overlay
        // swaps in an empty opaque dir made in the work dir before whiting out a directory that
        // held whiteouts), not a copy-up. A whiteout: made, but its name in the upper dir cannot
        // be read (no dentry: an upper filesystem's own RENAME_WHITEOUT), so lost and counted.
        entry.discard(0);
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

    // ---------------------------------------------------------------- kprobe backend

    /// The overlay inode's `ovl_inode` (container of the embedded `struct inode`).
    #[inline(always)]
    fn ovl_inode(off: &Offsets, inode: u64) -> u64 {
        if inode == 0 {
            0
        } else {
            inode - u64::from(off.ovl_inode_vfs_inode)
        }
    }

    /// The overlay entry (lower stack) of a positive overlay dentry.
    #[inline(always)]
    fn ovl_entry(off: &Offsets, dentry: u64) -> u64 {
        if off.ovl_inode_oe != u32::MAX {
            let inode = ptr(dentry, off.dentry_d_inode);
            ptr(ovl_inode(off, inode), off.ovl_inode_oe)
        } else {
            ptr(dentry, off.dentry_d_fsdata)
        }
    }

    #[inline(always)]
    fn numlower(off: &Offsets, dentry: u64) -> u32 {
        read::<u32>(ovl_entry(off, dentry), off.ovl_entry_numlower).unwrap_or(0)
    }

    /// Index of the topmost lower layer of `dentry` (1 = topmost lower), 0 if none.
    #[inline(always)]
    fn lower_idx(off: &Offsets, dentry: u64) -> u32 {
        let oe = ovl_entry(off, dentry);
        if read::<u32>(oe, off.ovl_entry_numlower).unwrap_or(0) == 0 {
            return 0;
        }
        let layer = ptr(oe + u64::from(off.ovl_entry_lowerstack), off.ovl_path_layer);
        read::<i32>(layer, off.ovl_layer_idx).unwrap_or(0) as u32
    }

    #[inline(always)]
    fn upperdentry(off: &Offsets, dentry: u64) -> u64 {
        let inode = ptr(dentry, off.dentry_d_inode);
        ptr(ovl_inode(off, inode), off.ovl_inode_upperdentry)
    }

    #[inline(always)]
    fn start(map: &HashMap<u32, Pending>, dentry: u64, arg: u64, kind_id: u32) {
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
    fn emit_kprobe(cfg: &Config, p: &Pending, kind_id: u32, result: i32) {
        let id = bpf_get_current_pid_tgid();
        let off = &cfg.off;
        let Some(mut entry) = EVENTS.reserve::<CowEvent>(0) else {
            bump(counter::RINGBUF_DROPS);
            return;
        };
        // SAFETY: the entry is ours until submit; every field is written.
        let ev = unsafe { &mut *entry.as_mut_ptr() };
        fill_common(cfg, ev, (id >> 32) as u32, id as u32, backend::KPROBE);
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
        entry.submit(0);
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
        let upperdata =
            off.ovl_flag_upperdata < 64 && oflags & (1u64 << off.ovl_flag_upperdata) != 0;
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
    fn remove_start(dentry: u64) {
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
    fn is_whiteout_dentry(off: &Offsets, dentry: u64) -> bool {
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
    fn create_start(dentry: u64, is_dir: u32) {
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

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
