//! cowprof: an eBPF profiler for overlayfs copy-on-write.
//!
//! The crate is built in floors; every import points to a lower floor and none comes back up:
//!
//! 1. the command line (`main.rs` and `cli/` in the binary): parse, dispatch, print, exit codes;
//! 2. tools: [`lab`] (the overlay2 lab, `bench`), [`image`] (archives, inspection, image
//!    comparison), [`compare`] (regression gates over lab results) and [`scenario`] (the embedded
//!    default stack, its workload, the upper-dir truth and the self-test). Siblings import one
//!    another only through `lab::results`, the `results.json` schema (with its histogram codec);
//!    a piece two tools need lives a floor lower;
//! 3. [`pipeline`]: an event's way through the profiler, one module per stage: probe (choose a
//!    backend, load, attach) → ring buffer ([`pipeline::record`]) → decode → enrich (mount, layer,
//!    syscall, container) → aggregate (hdrhistogram) → report (table, JSON) and metrics
//!    (Prometheus `/metrics`);
//! 4. [`event`] (the event, its kind), [`fmt`] (durations, sizes, short ids as people read
//!    them) and [`plot`] (charts drawn from plans: axes, ticks, series, SVG and PNG), used by
//!    every floor above;
//! 5. [`host`]: facts and actions of the machine: kernel release, CPUs and overlay parameters,
//!    mountinfo, the syscall table, file ownership under sudo.

pub mod compare;
pub mod event;
pub mod fmt;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod image;
pub mod lab;
pub mod pipeline;
pub mod plot;
pub mod scenario;

/// The eBPF object, built by `build.rs` with the pinned nightly and bpf-linker.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cowprof"));
