//! The machine cowprof runs on: its facts (kernel, CPUs, overlay parameters), mount tables, mounting and loop devices, cancellation by signal,
//! the syscall table, file ownership under sudo.
//! Nothing here knows about events or tools.

pub mod cancel;
pub mod child;
pub mod io;
pub mod loopdev;
pub mod lower;
pub mod machine;
pub mod mountinfo;
pub mod mounts;
pub mod overlay_options;
pub mod ownership;
pub mod syscalls;
