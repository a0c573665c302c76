//! cowprof: an eBPF profiler for overlayfs copy-on-write.
//!
//! An event's way through the crate, one module per stage:
//! [`probe`] (choose a backend, load, attach) → ring buffer ([`record`]) → [`decode`] →
//! [`enrich`] (mount, layer, syscall, container) → [`aggregate`] (hdrhistogram) → [`report`] (table,
//! JSON) and [`metrics`] (Prometheus `/metrics`).
//! [`compare`] gates two results files of the [`lab`] against each other (CI regression tests).
//! [`scenario`] is the embedded default stack and workload that `demo`, the tests and the VM
//! self-test share; [`selftest`] runs it under every backend the kernel allows.

pub mod aggregate;
pub mod compare;
pub mod crosscheck;
pub mod decode;
pub mod enrich;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod lab;
pub mod metrics;
pub mod ownership;
pub mod probe;
pub mod record;
pub mod report;
pub mod scenario;
pub mod selftest;

/// The eBPF object, built by `build.rs` with the pinned nightly and bpf-linker.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cowprof"));
