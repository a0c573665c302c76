//! `cowprof_program_runs_skipped_total{program}`: the runs of each attached program that the
//! kernel skipped since the start-up check, read from the program's `recursion_misses`
//! (`/proc/self/fdinfo`) at each scrape, so nothing is read between scrapes. A skipped run can
//! lose an event without any other trace (docs/backends.md, "Skipped program runs" and "Missed
//! kprobes"): this is the sign to alert on.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, MetricType},
};

/// One attached program: its name, a duplicate of its fd (kept open, so the number stays
/// this program's), and its skipped runs at the end of the start-up check.
pub type Program = (String, OwnedFd, u64);

/// Filled once the probes are attached; empty (no series) before.
#[derive(Debug, Clone, Default)]
pub struct SkippedRuns(Arc<Mutex<Vec<Program>>>);

impl SkippedRuns {
    pub fn set(&self, programs: Vec<Program>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = programs;
    }
}

impl Collector for SkippedRuns {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let programs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if programs.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "program_runs_skipped",
            "Runs of each attached BPF program the kernel skipped since the start-up check because a BPF program held its CPU (recursion_misses); each can have lost an event (7.0 and later, or while other BPF programs or bpf() map calls run)",
            None,
            MetricType::Counter,
        )?;
        for (name, fd, base) in programs.iter() {
            let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
            let Some(n) = std::fs::read_to_string(path)
                .ok()
                .and_then(|info| crate::pipeline::probe::parse_recursion_misses(&info))
            else {
                continue;
            };
            let c = ConstCounter::new(n.saturating_sub(*base));
            c.encode(family.encode_family(&[("program", name.as_str())])?)?;
        }
        Ok(())
    }
}
