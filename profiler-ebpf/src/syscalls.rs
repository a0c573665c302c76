//! Syscall windows (raw tracepoints `sys_enter`/`sys_exit`, every backend): which syscall
//! triggered an operation, and that syscall's own latency.

use crate::{common::*, tracepoint::emit_tp_ops};

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
    let Some((_, tid)) = wanted(cfg) else {
        return 0;
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
    if WINDOWS.insert(&tid, &*w, 0).is_err() {
        bump(counter::WINDOW_DROPS);
        warn!(
            &ctx,
            "syscall window map full: tid {} traced without its syscall", tid
        );
    }
    0
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
pub(crate) fn sys_exit(ctx: &RawTracePointContext, tp_backend: bool) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(w) = WINDOWS.get_ptr_mut(&tid) else {
        return 0;
    };
    let ret: i64 = ctx.arg(1);
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if tp_backend {
        if let Some(cfg) = config() {
            // SAFETY: only this tid touches its window.
            unsafe { emit_tp_ops(cfg, &mut *w, ret, now) };
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
        if EVENTS.output::<SyscallEnd>(&end, rb_flags()).is_err() {
            bump(counter::SYSCALL_END_DROPS);
        }
    }
    let _ = WINDOWS.remove(&tid);
    0
}
