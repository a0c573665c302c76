//! The hooks of `empty_hooks` (`src/bin/empty_hooks.rs`), the floor under any tracer on them: the
//! ones `record` attaches, per backend. `tests/floor_hooks.rs` holds them to the profiler's own
//! lists.

/// The hooks `record --backend tracepoint` attaches (phases included): the syscall entry and exit,
/// the three ctime tracepoints, the scheduler switch and process exit, ext4's fsync.
pub const TRACEPOINT_HOOKS: &[&str] = &[
    "sys_enter",
    "sys_exit",
    "ctime_ns_xchg",
    "ctime_xchg_skip",
    "inode_set_ctime_to_ts",
    "sched_switch",
    "sched_process_exit",
    "ext4_sync_file_enter",
    "ext4_sync_file_exit",
];

/// The hooks `record --backend kprobe` attaches on a kernel with overlay's BTF, without the phases
/// (profiler's `pipeline::probe`: the copy-up, directory-operation and mount probes, the syscall
/// tracepoints).
pub const KPROBE_HOOKS: &[&str] = &[
    "sys_enter",
    "sys_exit",
    "kprobe:ovl_copy_up_start",
    "kretprobe:ovl_copy_up_start",
    "kprobe:ovl_copy_up_end",
    "kprobe:ovl_unlink",
    "kretprobe:ovl_unlink",
    "kprobe:ovl_rmdir",
    "kretprobe:ovl_rmdir",
    "kprobe:ovl_rename",
    "kretprobe:ovl_rename",
    "kprobe:ovl_create",
    "kretprobe:ovl_create",
    "kprobe:ovl_mkdir",
    "kretprobe:ovl_mkdir",
    "kprobe:ovl_mknod",
    "kretprobe:ovl_mknod",
    "kprobe:ovl_symlink",
    "kretprobe:ovl_symlink",
    "kprobe:ovl_link",
    "kretprobe:ovl_link",
    "kprobe:ovl_fill_super",
    "kretprobe:ovl_fill_super",
];

/// The kprobe backend's phase hooks (profiler's `pipeline::probe::phases`: `PHASE_KPROBES` and
/// `PHASE_RAW_TRACEPOINTS`; ext4's fsync tracepoints are the tracepoint backend's only). Before
/// Linux 6.8 `record` probes `do_clone_file_range` in place of `vfs_clone_file_range`.
pub const KPROBE_PHASE_HOOKS: &[&str] = &[
    "kprobe:ovl_copy_xattr",
    "kretprobe:ovl_copy_xattr",
    "kprobe:ovl_set_attr",
    "kretprobe:ovl_set_attr",
    "kprobe:vfs_clone_file_range",
    "kretprobe:vfs_clone_file_range",
    "kprobe:do_splice_direct",
    "kretprobe:do_splice_direct",
    "kprobe:vfs_fsync",
    "kretprobe:vfs_fsync",
    "kprobe:vfs_fsync_range",
    "kretprobe:vfs_fsync_range",
    "kprobe:vfs_link",
    "kretprobe:vfs_link",
    "kprobe:vfs_rename",
    "kretprobe:vfs_rename",
    "sched_switch",
    "sched_process_exit",
];
