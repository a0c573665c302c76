//! The machine cowprof runs on: mount tables, the syscall table, file ownership under sudo.
//! Nothing here knows about events or tools.

pub mod mountinfo;
pub mod ownership;
pub mod syscalls;
