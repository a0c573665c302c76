//! An event's way from the kernel to the user, one module per stage:
//! [`probe`] (choose a backend, load, attach) → ring buffer ([`tap`]) → [`decode`] →
//! [`enrich`] (mount, layer, syscall, container) → [`aggregate`] (hdrhistogram, copy-up
//! [`phases`]) → [`report`]
//! (table, JSON: an event's line by [`json_event`]) and [`metrics`] (Prometheus `/metrics`); [`record`] runs them all.

pub mod aggregate;
pub mod decode;
pub mod enrich;
pub mod json_event;
pub mod metrics;
pub mod phases;
pub mod probe;
pub mod record;
pub mod report;
pub mod tap;
