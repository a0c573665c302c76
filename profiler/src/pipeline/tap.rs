//! The tap: an attached [`Probe`], its ring buffer, the decoder and the drop counters. `record`
//! (and through it `demo` and `selftest`) reads it from tokio (it is an [`AsRawFd`] for
//! `AsyncFd`), the lab's kernel-side timings read it between repetitions.
//!
//! The kernel side wakes a reader only once the ring buffer is an eighth full
//! (`BPF_RB_NO_WAKEUP` below that): an async reader also drains on a [`DRAIN_INTERVAL`] tick.

use std::{os::fd::AsRawFd, time::Duration};

use aya::maps::{MapData, RingBuf};
use profiler_common::counter;

use crate::{
    event::Event,
    host::mountinfo::{self, OverlayMount},
    pipeline::aggregate::Drops,
    pipeline::decode::{self, Record},
    pipeline::enrich::Enricher,
    pipeline::probe::{self, Probe, ProbeError, ProbeOptions},
};

/// How often a reader drains the ring buffer without being woken: the most an event waits
/// before it is printed (a burst wakes the reader at once, see the eBPF side's `rb_flags`).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// An attached probe and its ring buffer. Dropping it detaches every program.
pub struct Tap {
    // The ring buffer first: it is a map of the probe's object.
    ring: RingBuf<MapData>,
    probe: Probe,
    /// Samples that did not decode (counted, skipped).
    malformed: u64,
}

impl Tap {
    /// Loads and attaches the probes (see [`probe::load_and_attach`]) and takes their ring
    /// buffer.
    pub fn attach(opts: &ProbeOptions) -> Result<Self, ProbeError> {
        Self::new(probe::load_and_attach(opts)?)
    }

    /// Takes the ring buffer of an attached probe.
    pub fn new(mut probe: Probe) -> Result<Self, ProbeError> {
        let ring = probe.take_events()?;
        Ok(Self {
            ring,
            probe,
            malformed: 0,
        })
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn probe_mut(&mut self) -> &mut Probe {
        &mut self.probe
    }

    /// Reads every sample currently in the ring buffer into `enricher` and returns the events
    /// it completed. With `new_mounts`: if an event names a mount not seen yet, mountinfo is
    /// read again (once per call) and, if that found new mounts, `new_mounts` gets them (the
    /// caller registers them with the probe). Without it the caller registers every mount
    /// itself (the lab, with mount ids of its own).
    pub fn drain(
        &mut self,
        enricher: &mut Enricher,
        mut new_mounts: Option<&mut Vec<OverlayMount>>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let mut refreshed = false;
        while let Some(item) = self.ring.next() {
            match decode::decode(&item) {
                Ok(Record::Cow(ev)) => {
                    // A mount made since the last poll of mountinfo (every 200 ms): read it
                    // now, once per batch, so that its first events name it while it still
                    // exists.
                    if let Some(mounts) = new_mounts.as_deref_mut() {
                        if !refreshed && !enricher.knows_mount(&ev) {
                            refreshed = true;
                            if let Ok(now) = mountinfo::read_overlay_mounts() {
                                if enricher.add_mounts(&now) {
                                    *mounts = now;
                                }
                            }
                        }
                    }
                    out.extend(enricher.push(*ev));
                }
                Ok(Record::SyscallEnd(end)) => out.extend(enricher.syscall_end(&end)),
                Ok(Record::Mount(m)) => enricher.add_kernel_mount(&m),
                Err(e) => {
                    self.malformed += 1;
                    log::debug!("skipping malformed sample: {e}");
                }
            }
        }
        out
    }

    /// Everything lost so far: the kernel side's counters and the samples that did not decode.
    pub fn drops(&self) -> Drops {
        let c = self.probe.counters();
        Drops {
            ringbuf: c[counter::RINGBUF_DROPS as usize],
            op_table: c[counter::OP_TABLE_FULL as usize],
            windows: c[counter::WINDOW_DROPS as usize],
            malformed: self.malformed,
            syscall_ends: c[counter::SYSCALL_END_DROPS as usize],
            whiteout_unnamed: c[counter::WHITEOUT_UNNAMED as usize],
        }
    }
}

/// The ring buffer's fd: readable when the kernel side woke it.
impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}
