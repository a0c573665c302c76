//! The machine cowprof runs on: mount tables, mounting and loop devices, cancellation by signal,
//! the syscall table, file ownership under sudo.
//! Nothing here knows about events or tools.

pub mod cancel;
pub mod loopdev;
pub mod mountinfo;
pub mod mounts;
pub mod overlay_options;
pub mod ownership;
pub mod syscalls;
