//! Measuring: latency histograms (hdrhistogram, serialized V2 + base64 into the results), the
//! worker process that runs the timed ops, and the in-process kernel tap that joins copy-up and
//! whiteout events to the op that caused them (by mount and path).

use std::path::Path;

use crate::{
    event::{Event, Kind, PHASE_NAMES},
    host::child::JsonChild,
    pipeline::tap::KernelTap,
};

use super::{
    results::{Cell, Hist},
    spec::Op,
    stack::{LabError, LabStack, Layers},
    workload::{Reply, Request},
};

/// Everything measured for one cell, turned into a [`Cell`] at the end.
pub struct CellAcc {
    pub op: Op,
    pub size: u64,
    pub depth: u32,
    pub threads: u32,
    pub repetitions: u64,
    pub user: Hist,
    /// Concurrent ops: wall time per repetition.
    pub wall: Hist,
    pub outcomes: std::collections::BTreeMap<String, u64>,
    pub kernel: Hist,
    pub copy_ups: u64,
    pub bytes_copied: u64,
    /// Kernel time of the copy-ups that moved bytes, for MB/s.
    pub copy_ns: u64,
    /// Whiteouts at the file's path (`unlink`).
    pub whiteouts: u64,
    pub phases: crate::pipeline::phases::PhaseGroup,
    /// Per phase (by name) the time of each copy-up, for `compare`'s intervals.
    pub phase_hists: std::collections::BTreeMap<&'static str, Hist>,
}

impl CellAcc {
    pub fn new(op: Op, size: u64, depth: u32, threads: u32) -> Self {
        Self {
            op,
            size,
            depth,
            threads,
            repetitions: 0,
            user: Hist::default(),
            wall: Hist::default(),
            outcomes: std::collections::BTreeMap::new(),
            kernel: Hist::default(),
            copy_ups: 0,
            bytes_copied: 0,
            copy_ns: 0,
            whiteouts: 0,
            phases: crate::pipeline::phases::PhaseGroup::default(),
            phase_hists: std::collections::BTreeMap::new(),
        }
    }

    /// Adds the kernel events of one repetition (already filtered to this op's mount and path).
    pub fn add_events(&mut self, events: &[Event]) {
        for e in events {
            self.kernel.record(e.latency_ns);
            if let Some(p) = &e.phases {
                self.phases.record(e.latency_ns, p);
                for (name, v) in PHASE_NAMES.iter().zip(p.values()) {
                    if let Some(v) = v {
                        self.phase_hists.entry(name).or_default().record(v);
                    }
                }
            }
            if e.kind.is_copy_up() {
                self.copy_ups += 1;
            }
            if e.kind == Kind::Whiteout {
                self.whiteouts += 1;
            }
            if e.bytes_copied > 0 {
                self.bytes_copied += e.bytes_copied;
                self.copy_ns += e.latency_ns;
            }
        }
    }

    /// `reference_p50`: the plain-copy reference of this size on this filesystem;
    /// `data_copy`: whether this op copies the file's data (efficiency is only meaningful then).
    pub fn finish(&self, reference_p50: Option<u64>, data_copy: bool) -> Cell {
        let p50 = self.user.p50();
        #[allow(clippy::cast_precision_loss)]
        let mb_per_s = (self.bytes_copied > 0 && self.copy_ns > 0)
            .then(|| self.bytes_copied as f64 / (self.copy_ns as f64 / 1e9) / 1e6);
        #[allow(clippy::cast_precision_loss)]
        let efficiency = reference_p50
            .filter(|_| data_copy && p50 > 0)
            .map(|r| r as f64 / p50 as f64);
        Cell {
            op: self.op,
            size_bytes: self.size,
            layer_depth: self.depth,
            latency: self.user.stats(),
            kernel: (!self.kernel.is_empty()).then(|| self.kernel.stats()),
            copy_ups: self.copy_ups,
            bytes_copied: self.bytes_copied,
            mb_per_s,
            reference_p50_ns: reference_p50,
            efficiency,
            threads: self.threads,
            repetitions: self.repetitions,
            wall: (!self.wall.is_empty()).then(|| self.wall.stats()),
            outcomes: self.outcomes.clone(),
            whiteouts: self.whiteouts,
            phases: (!self.phases.is_empty()).then(|| self.phases.stats()),
            phase_latency: self
                .phase_hists
                .iter()
                .map(|(name, h)| ((*name).to_owned(), h.stats()))
                .collect(),
        }
    }
}

/// The worker: `cowprof __lab-worker <our pid>`, in its own process group (a terminal's Ctrl-C
/// reaches only the bench, which then stops it), killed on drop.
pub struct Worker(JsonChild);

impl Worker {
    pub fn spawn() -> Result<Self, LabError> {
        let args = ["__lab-worker".to_owned(), std::process::id().to_string()];
        Ok(Self(JsonChild::spawn("the lab worker", args)?))
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Sends one request and waits for its duration in ns.
    pub fn call(&mut self, req: &Request) -> Result<u64, LabError> {
        self.call_full(req).map(|r| r.ns.unwrap_or_default())
    }

    /// Sends one request and returns the whole reply (an error reply is an error).
    pub fn call_full(&mut self, req: &Request) -> Result<Reply, LabError> {
        let r: Reply = self.0.call(req)?;
        match (r.ns, &r.error) {
            (Some(_), None) => Ok(r),
            // The worker's errors are io::Error texts: ENOSPC shows as "(os error 28)".
            (_, Some(e)) if e.contains(&format!("(os error {})", libc::ENOSPC)) => {
                Err(LabError::NoSpace { detail: e.clone() })
            }
            (_, Some(e)) => Err(LabError::Other(format!("{req:?}: {e}"))),
            (None, None) => Err(LabError::Other("the lab worker failed: empty reply".into())),
        }
    }
}

/// Tells the kernel side and the enricher about the lab stack just mounted.
pub fn register(tap: &mut KernelTap, stack: &LabStack, layers: &Layers) -> Result<(), LabError> {
    Ok(tap.register_overlay(&stack.merged, &stack.upper, &stack.work, &layers.dirs)?)
}

/// The events of one repetition that belong to it: on the stack mounted at `merged`, at one of
/// `rels` (the op's path, its second name, the threads' paths).
pub fn events_for<'a>(events: &'a [Event], merged: &Path, rels: &[String]) -> Vec<&'a Event> {
    let mp = merged.display().to_string();
    events
        .iter()
        .filter(|e| e.mount_point.as_deref() == Some(mp.as_str()) && rels.contains(&e.path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trips() {
        let mut h = Hist::default();
        for ns in [1_000, 2_000, 3_000, 1_000_000] {
            h.record(ns);
        }
        let s = h.stats();
        assert_eq!(s.count, 4);
        assert!(s.p50_ns >= 1_990 && s.p50_ns <= 2_010, "{s:?}");
        assert!(s.max_ns >= 999_000);
        let back = crate::lab::results::decode_histogram(&s.histogram).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.value_at_quantile(0.5), h.p50());
    }

    #[test]
    fn cell_efficiency_and_throughput() {
        let mut acc = CellAcc::new(Op::FirstWrite, 1 << 20, 1, 1);
        acc.user.record(2_000_000);
        acc.bytes_copied = 1_000_000;
        acc.copy_ns = 1_000_000;
        acc.copy_ups = 1;
        let c = acc.finish(Some(1_000_000), true);
        assert_eq!(c.op, Op::FirstWrite);
        let eff = c.efficiency.unwrap();
        assert!((eff - 0.5).abs() < 0.01, "{eff}");
        assert!((c.mb_per_s.unwrap() - 1000.0).abs() < 1e-6);
        assert!(c.kernel.is_none());
        let c = acc.finish(Some(1_000_000), false);
        assert!(c.efficiency.is_none());
        assert_eq!(c.reference_p50_ns, Some(1_000_000));
    }
}
