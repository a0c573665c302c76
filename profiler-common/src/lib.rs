//! Wire types shared by the eBPF programs (`profiler-ebpf`) and the collector (`profiler`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of `bool`s, enums and implicit padding, and pinned
//! by size: a change of layout fails the build on both sides instead of corrupting events.
//! Numeric ids (record tags, kinds, backends, flags) never change meaning; new ones get new numbers.
#![no_std]

use core::mem::size_of;

/// First field of every ring-buffer record: which struct follows.
pub const RECORD_COW: u32 = 1;
pub const RECORD_SYSCALL_END: u32 = 2;
pub const RECORD_MOUNT: u32 = 3;

/// What happened (the `kind` field of [`CowEvent`]).
pub mod kind {
    /// A regular file's data was copied from a lower layer into the upper layer.
    pub const DATA_COPY_UP: u32 = 1;
    /// `metacopy=on`: only the metadata of a regular file was copied up.
    pub const METACOPY: u32 = 2;
    /// A directory was copied up (created in the upper layer with the lower's attributes).
    pub const DIR_COPY_UP: u32 = 3;
    /// A lower entry was hidden by a whiteout (char 0/0) in the upper layer.
    pub const WHITEOUT: u32 = 4;
    /// A directory was created over a whiteout and marked opaque.
    pub const OPAQUE_DIR: u32 = 5;
    /// A non-directory was created where a whiteout was.
    pub const CREATE_OVER_WHITEOUT: u32 = 6;
    /// A symlink, fifo, socket or device node was copied up.
    pub const SPECIAL_COPY_UP: u32 = 7;
    /// The deferred data copy of a file that an earlier metacopy left data-less.
    pub const DEFERRED_DATA_COPY_UP: u32 = 8;
    /// Tracepoint backend: a regular file made in the work directory; user space decides between
    /// data copy-up and metacopy from the mount's options and the syscall.
    pub const TP_REGULAR_COPY_UP: u32 = 9;
}

/// Which kernel mechanism produced an event (the `backend` field).
pub mod backend {
    pub const FENTRY: u32 = 1;
    pub const KPROBE: u32 = 2;
    pub const TRACEPOINT: u32 = 3;
}

/// Bits of [`CowEvent::flags`].
pub mod flags {
    /// The dentry walk stopped at its depth or buffer limit before the root.
    pub const PATH_TRUNCATED: u32 = 1;
    /// `dev`/`root_ino` name the upper filesystem and upper root (tracepoint backend), not the
    /// overlay superblock.
    pub const DEV_IS_UPPER: u32 = 1 << 1;
    /// The kernel latency spans only part of the operation (see README, "Backends").
    pub const LATENCY_PARTIAL: u32 = 1 << 2;
    /// The operation ran inside a tracked syscall window (`syscall_nr`, `syscall_enter_ns` valid).
    pub const IN_SYSCALL: u32 = 1 << 3;
    /// `lower_idx` was read from the kernel's overlay entry.
    pub const LOWER_FROM_KERNEL: u32 = 1 << 4;
    /// kprobe backend without overlay's types: a regular file's copy-up that placed no new
    /// upper (`DEFERRED_DATA_COPY_UP`) is a deferred data copy only on a `metacopy=on` mount;
    /// elsewhere it is a copy-up that failed.
    pub const NO_OVL_TYPES: u32 = 1 << 5;
    /// Emitted at the exit of its syscall (tracepoint backend): `end_ns` is the syscall's exit
    /// time and `syscall_ret` its return value; no [`SyscallEnd`](super::SyscallEnd) follows.
    pub const SYSCALL_EXITED: u32 = 1 << 6;
}

/// Syscall classes stored as values of the `SYSCALLS` map (indexed by syscall number).
pub mod class {
    pub const OPEN: u8 = 1;
    pub const CREATE: u8 = 1 << 1;
    pub const REMOVE: u8 = 1 << 2;
    pub const RENAME: u8 = 1 << 3;
    pub const META: u8 = 1 << 4;
    pub const MKDIR: u8 = 1 << 5;
    /// Makes a superblock (`mount`, `fsconfig`): an overlay made in it is registered
    /// kernel-side at the syscall's exit, before any copy-up on it can happen.
    pub const MOUNT: u8 = 1 << 6;
}

pub const COMM_LEN: usize = 16;

/// Size of the kernel side's record of an operation in progress (kprobe backend: `COPY_UPS`,
/// `DIR_OPS`), which user space counts at the end of a recording (operations never ended).
pub const PENDING_SIZE: usize = 48;
/// Path components, leaf first, each NUL-terminated.
pub const PATH_BUF: usize = 512;
pub const PATH_MAX_DEPTH: u32 = 16;
/// Longest component copied (longer names are cut and the event marked truncated).
pub const NAME_MAX_COPY: usize = 255;

/// One copy-up, whiteout or create-over-whiteout.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CowEvent {
    pub record: u32,
    pub kind: u32,
    pub backend: u32,
    pub flags: u32,
    /// `bpf_ktime_get_ns()` at the end of the operation.
    pub end_ns: u64,
    pub latency_ns: u64,
    /// Enter time of the syscall that triggered it (join key with [`SyscallEnd`] unless
    /// `flags::SYSCALL_EXITED`).
    pub syscall_enter_ns: u64,
    pub size_bytes: u64,
    pub bytes_copied: u64,
    pub cgroup_id: u64,
    /// Inode number of the overlay root (kprobe/fentry) or of the upper root (tracepoint).
    pub root_ino: u64,
    pub pid: u32,
    pub tid: u32,
    pub mnt_ns: u32,
    /// `s_dev` (kernel encoding: major << 20 | minor) of the overlay or upper superblock.
    pub dev: u32,
    pub syscall_nr: i32,
    /// 0 or a negative errno.
    pub result: i32,
    /// 1 = topmost lower layer, 0 = unknown (resolved in user space).
    pub lower_idx: u32,
    pub mode: u32,
    pub path_len: u32,
    pub depth: u32,
    /// The mount serial of the overlay the operation happened on (0 = unknown): tracepoint
    /// backend, the mount whose work dir or upper root it was found under; kprobe backend, the
    /// registration of its superblock's upper root. Serials are never reused within a session:
    /// kernel-side registrations (see [`MountEvent`]) have bit 31 clear, user-space ones
    /// (mounts that existed before `record` started) have it set.
    pub mount_id: u32,
    pub _pad: u32,
    /// The syscall's return value when `flags::SYSCALL_EXITED` is set, else 0.
    pub syscall_ret: i64,
    /// Where the copy-up's time went (zero for whiteouts and creates).
    pub phases: Phases,
    pub comm: [u8; COMM_LEN],
    pub path: [u8; PATH_BUF],
}

/// Bits of [`Phases::seen`]: which phases the backend measured for this event. A phase whose
/// bit is clear was not visible (user space reports it as unknown, not as zero).
pub mod phase_seen {
    pub const METADATA: u32 = 1;
    pub const DATA: u32 = 1 << 1;
    pub const FSYNC: u32 = 1 << 2;
    pub const LINK: u32 = 1 << 3;
    /// `offcpu_block_ns` and `offcpu_other_ns` (scheduler tracepoints).
    pub const OFFCPU: u32 = 1 << 4;
    /// `data_clone_bytes` and `data_splice_bytes` are known (the method is seen or implied
    /// by an upper filesystem without reflink).
    pub const DATA_BYTES: u32 = 1 << 5;
}

/// Time of one copy-up, by phase. Function phases (`metadata` .. `link`) count on-CPU time
/// only; time off the CPU, wherever it happened, is in `offcpu_*`. So the phases never
/// overlap and their sum is at most the latency (user space adds the remainder as `other`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Copying xattrs and attributes (`ovl_copy_xattr`, `ovl_set_attr`).
    pub metadata_ns: u64,
    /// Copying data (`vfs_clone_file_range`, `do_splice_direct`).
    pub data_ns: u64,
    pub fsync_ns: u64,
    /// Placing the result in the upper dir (`vfs_link`, `vfs_rename`).
    pub link_ns: u64,
    /// Off the CPU in `io_schedule` (the task's `in_iowait`): waiting for block I/O.
    pub offcpu_block_ns: u64,
    /// Off the CPU otherwise: locks, journal commits, run-queue waits.
    pub offcpu_other_ns: u64,
    pub data_clone_bytes: u64,
    pub data_splice_bytes: u64,
    pub seen: u32,
    pub _pad: u32,
}

/// Sent at the exit of a tracked syscall that produced at least one [`CowEvent`] before its exit
/// (kprobe backend; the tracepoint backend's events carry their syscall's exit themselves).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallEnd {
    pub record: u32,
    pub tid: u32,
    pub syscall_nr: i32,
    pub _pad: u32,
    pub ret: i64,
    pub enter_ns: u64,
    pub exit_ns: u64,
}

/// Mount serials user space assigns (bit 31 set) never collide with the kernel's.
pub const USER_MOUNT_SERIAL: u32 = 1 << 31;
pub const MOUNT_TARGET_LEN: usize = 256;
pub const MOUNT_DATA_LEN: usize = 1024;

/// Bits of [`MountEvent::flags`].
pub mod mount_flags {
    /// `target`/`data` hold the `mount(2)` arguments (the new mount API gives neither).
    pub const ARGS: u32 = 1;
}

/// An overlay superblock made by a `mount`/`fsconfig` syscall (both backends), sent at the
/// syscall's exit after its work dir and upper root were registered kernel-side. In the ring
/// buffer it comes before every event of the mount.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MountEvent {
    pub record: u32,
    pub serial: u32,
    /// `s_dev` of the overlay superblock.
    pub ovl_dev: u32,
    /// `s_dev` of the upper filesystem.
    pub upper_dev: u32,
    pub upper_root_ino: u64,
    pub work_ino: u64,
    pub pid: u32,
    pub flags: u32,
    pub end_ns: u64,
    pub target: [u8; MOUNT_TARGET_LEN],
    pub data: [u8; MOUNT_DATA_LEN],
}

/// Offsets (bytes) of kernel structure members, read from the running kernel's BTF at start-up.
/// `u32::MAX` = member absent on this kernel.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Offsets {
    pub dentry_d_parent: u32,
    pub dentry_d_name_name: u32,
    pub dentry_d_name_len: u32,
    pub dentry_d_inode: u32,
    pub dentry_d_alias: u32,
    pub inode_i_mode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub inode_i_size: u32,
    pub inode_i_nlink: u32,
    pub inode_i_rdev: u32,
    pub inode_i_dentry: u32,
    pub sb_s_dev: u32,
    pub task_cred: u32,
    pub task_real_cred: u32,
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// Offset of `struct inode vfs_inode` inside `struct ovl_inode`.
    pub ovl_inode_vfs_inode: u32,
    pub ovl_inode_upperdentry: u32,
    /// `ovl_inode.oe` (6.5+); `u32::MAX` before, when the entry hangs off `dentry.d_fsdata`.
    pub ovl_inode_oe: u32,
    pub ovl_inode_flags: u32,
    pub dentry_d_fsdata: u32,
    pub ovl_entry_numlower: u32,
    pub ovl_entry_lowerstack: u32,
    pub ovl_path_layer: u32,
    pub ovl_layer_idx: u32,
    /// Bit number of `OVL_UPPERDATA` in `ovl_inode.flags`.
    pub ovl_flag_upperdata: u32,
    /// Bit number of `OVL_E_OPAQUE` in the dentry's overlay flags (in `ovl_entry.flags` before
    /// 6.5, in the `d_fsdata` word itself since).
    pub ovl_e_opaque: u32,
    pub dentry_d_sb: u32,
    pub sb_s_magic: u32,
    pub sb_s_root: u32,
    pub sb_s_fs_info: u32,
    pub ovl_fs_workdir: u32,
    pub inode_i_state: u32,
    /// `I_OVL_INUSE` (a mask of `i_state`): overlay holds the inode as a live mount's upper
    /// root or work base dir. Registered keys of mounts that are gone never match.
    pub i_ovl_inuse: u32,
    /// `struct renamedata` (the argument of `vfs_rename` since 5.12): read by the kprobe
    /// backend when overlay's own types are not in BTF (see [`config_flags::OVL_TYPES`]).
    pub renamedata_old_dentry: u32,
    pub renamedata_new_dentry: u32,
    pub renamedata_flags: u32,
    /// Bit offset of the `task_struct.in_iowait` bitfield (set by `io_schedule`).
    pub task_in_iowait_bit: u32,
}

impl Offsets {
    /// Every member absent: the value of an offsets table nobody has filled in.
    pub const ABSENT: Offsets =
        // SAFETY: `Offsets` is `repr(C)` and made of `u32`s only (its size is asserted below).
        unsafe { core::mem::transmute([u32::MAX; size_of::<Offsets>() / 4]) };
}

/// Bits of [`Config::flags`].
pub mod config_flags {
    /// Overlay's own types (`ovl_inode`, `ovl_entry`, `ovl_layer`, `ovl_fs`) were found in BTF:
    /// the `ovl_*` offsets are valid and the programs read overlay's structures. Without it the
    /// kprobe backend reads only vmlinux types and learns from `vfs_rename`/`vfs_link`/
    /// `vfs_unlink` what overlay did; user space resolves the source layer.
    pub const OVL_TYPES: u32 = 1;
    /// The syscall and ctime programs are loaded twice (kernels that run tracepoint programs
    /// preemptibly): the tracepoint backend opens a window late for a tracked syscall whose
    /// entry was skipped.
    pub const TWO_COPIES: u32 = 2;
    /// `record --no-phases`: copy-ups are not split into phases (no task is armed; the phase
    /// probes are not attached).
    pub const NO_PHASES: u32 = 4;
    /// Bits 4–5: how many copies of each ctime program are attached (1–3), when their checkers
    /// are (kernels that run tracepoint programs preemptibly); 0 = no checkers. A checker counts
    /// a hit that every attached copy skipped ([`super::counter::CTIME_SKIPPED`]).
    pub const CTIME_COPIES_SHIFT: u32 = 4;
    pub const CTIME_COPIES_MASK: u32 = 3;
}

/// Read by every program from the one-element `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Config {
    /// The collector's own tgid: its syscalls are never traced.
    pub self_tgid: u32,
    /// 0 = every process.
    pub filter_tgid: u32,
    /// 0 = every cgroup (v2 id, as `bpf_get_current_cgroup_id`).
    pub filter_cgroup: u64,
    /// [`config_flags`] bits.
    pub flags: u32,
    pub _pad: u32,
    pub off: Offsets,
}

/// Key of the tracepoint backend's `WORKDIRS`/`UPPER_ROOTS` maps: an inode on a filesystem.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Indexes of the per-CPU `COUNTERS` map.
pub mod counter {
    /// Ring-buffer reservations that failed: events lost.
    pub const RINGBUF_DROPS: u32 = 0;
    /// Tracepoint backend: more CoW operations in one syscall than its table holds; kprobe
    /// backend: an operation whose start could not be stored (lost).
    pub const OP_TABLE_FULL: u32 = 1;
    /// Syscall windows that could not be stored (map full), or whose op table could not be had
    /// or was given up while in use (tracepoint backend; its operations are lost).
    pub const WINDOW_DROPS: u32 = 2;
    /// Syscall-end markers the ring buffer had no room for. No event is lost: the syscall's
    /// events are delivered when recording ends, with a partial latency.
    pub const SYSCALL_END_DROPS: u32 = 3;
    /// Tracepoint backend: whiteouts seen whose name in the upper dir could not be read
    /// (lost).
    pub const WHITEOUT_UNNAMED: u32 = 4;
    /// Syscall windows lost because the kernel skipped both copies of `sys_exit` (see
    /// [`config_flags::TWO_COPIES`]): found still open at the thread's next tracked syscall,
    /// holding a CoW temp or whiteout that could not be emitted late.
    pub const WINDOWS_LOST: u32 = 5;
    /// Tracepoint backend, where the ctime programs' checkers are attached: updates of an
    /// inode on an overlay or upper filesystem that the kernel skipped in every copy of a ctime
    /// program (each copy preempted on that CPU). An upper bound: each may have been the only
    /// sign of a copy-up or whiteout, most are updates that lose nothing.
    pub const CTIME_SKIPPED: u32 = 6;
    /// kprobe backend: copy-ups and whiteouts whose pair of probes did not both run (lost): an
    /// `ovl_copy_up_end` of a traced task with no start recorded for it, or a start (of a
    /// copy-up, or of a directory operation that makes or replaces a whiteout) that found the
    /// task's previous one never ended (the kernel missed a probe, or a hit came before the
    /// probes were attached).
    pub const UNPAIRED: u32 = 7;
    pub const COUNT: u32 = 8;
}

const _: () = assert!(size_of::<CowEvent>() == 128 + 72 + COMM_LEN + PATH_BUF);
const _: () = assert!(size_of::<Phases>() == 72);
const _: () = assert!(size_of::<SyscallEnd>() == 40);
const _: () = assert!(size_of::<Offsets>() == 40 * 4);
const _: () = assert!(size_of::<MountEvent>() == 48 + MOUNT_TARGET_LEN + MOUNT_DATA_LEN);
const _: () = assert!(size_of::<Config>() == 24 + size_of::<Offsets>());
const _: () = assert!(size_of::<InodeKey>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), Copy, contain only integers and have no padding (sizes are
    // asserted above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::CowEvent {}
    unsafe impl aya::Pod for super::SyscallEnd {}
    unsafe impl aya::Pod for super::MountEvent {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::Phases {}
}
