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
//! `CONFIG` (see `profiler/src/pipeline/probe/btf.rs`), and through `TP_OFFSETS`, the same
//! offsets as constants the verifier knows, for the ctime programs' direct loads (`common.rs`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// BPF inline assembly: the atomic add of `common::bump`.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod common;
#[cfg(target_arch = "bpf")]
mod kprobe;
#[cfg(target_arch = "bpf")]
mod phases;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod tracepoint;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
