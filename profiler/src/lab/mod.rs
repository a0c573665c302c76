//! `cowprof bench`, the lab: builds overlay2-style layer stacks of its own, drives copy-on-write
//! workloads through them and measures them (issue 3). Produces the same aggregates as `record`.

pub mod charts;
pub mod clean;
pub mod html;
pub mod measure;
pub mod op;
pub mod results;
mod rounds;
pub mod run;
pub mod spec;
pub mod stack;
pub mod summary;
pub mod workload;
