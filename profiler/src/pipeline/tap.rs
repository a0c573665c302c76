//! The tap: an attached [`Probe`], its ring buffer, the decoder and the drop counters. `record`
//! (and through it `demo` and `selftest`) reads it from tokio (it is an [`AsRawFd`] for
//! `AsyncFd`); [`KernelTap`] wraps it for tools that mount their own overlays (the lab's
//! kernel-side timings, `image forecast --verify`) and read it between writes.
//!
//! The kernel side wakes a reader for the first record of a batch (one that finds every earlier
//! record consumed) and again once the ring buffer is an eighth full: an async reader drains
//! [`DRAIN_INTERVAL`] after the first wakeup, or at once on the second.

use std::{
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use profiler_common::counter;

use crate::{
    event::Event,
    host::mountinfo::{self, MountinfoError, OverlayMount},
    pipeline::aggregate::Drops,
    pipeline::decode::{self, Record},
    pipeline::enrich::Enricher,
    pipeline::probe::{self, Probe, ProbeError, ProbeOptions},
};

/// How long a reader woken for the first record of a batch waits before it drains: the most
/// an event waits before it is printed (an eighth-full buffer wakes the reader again at once,
/// see the eBPF side's `rb_flags`).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// The most records `record` reads before it delivers them: the events it holds at once stay
/// few whatever the rate (the ring buffer holds about 5,700), so the memory of one chunk's
/// events is still in the CPU's caches when the next chunk reuses it (with 512, glibc's
/// allocator spent a tenth of the collector's time waiting on cache misses over freed chunks).
/// The output is written once per drain, not per chunk.
pub const BATCH_MAX: usize = 64;

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

    /// Reads the samples currently in the ring buffer, at most `limit` of them, into `enricher`
    /// and appends the events it completed to `out` (a buffer the caller keeps, so that
    /// batches do not regrow one). Returns true if it stopped at `limit` (more may wait). With
    /// `new_mounts`: if an event names a mount not seen yet, mountinfo is read again (once per
    /// call) and, if that found new mounts, `new_mounts` gets them (the caller registers them
    /// with the probe). Without it the caller registers every mount itself (the lab, with
    /// mount ids of its own).
    pub fn drain(
        &mut self,
        enricher: &mut Enricher,
        mut new_mounts: Option<&mut Vec<OverlayMount>>,
        out: &mut Vec<Event>,
        limit: usize,
    ) -> bool {
        let mut refreshed = false;
        let mut read = 0;
        while let Some(item) = self.ring.next() {
            read += 1;
            match decode::decode(&item) {
                Ok(Record::Cow(ev)) => {
                    // A mount made since mountinfo was last read (on its change): read it
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
                    enricher.push(ev, out);
                }
                Ok(Record::SyscallEnd(end)) => enricher.syscall_end(&end, out),
                Ok(Record::Mount(m)) => enricher.add_kernel_mount(&m),
                Err(e) => {
                    self.malformed += 1;
                    log::debug!("skipping malformed sample: {e}");
                }
            }
            if read >= limit {
                return true;
            }
        }
        false
    }

    /// [`Self::drops`] at the end of a recording, with the kprobe backend's operations that
    /// started and never ended ([`Probe::unfinished_ops`]) in `unpaired`.
    pub fn final_drops(&self) -> Drops {
        let mut d = self.drops();
        d.unpaired += self.probe.unfinished_ops();
        d
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
            recursion: c[counter::WINDOWS_LOST as usize],
            ctime_skipped: c[counter::CTIME_SKIPPED as usize],
            unpaired: c[counter::UNPAIRED as usize],
        }
    }
}

/// The ring buffer's fd: readable when the kernel side woke it.
impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

/// Why a [`KernelTap`] could not register a mount or re-attach.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("re-attaching the probes: {0}")]
    Reattach(#[source] Box<ProbeError>),
    #[error("reading mountinfo: {0}")]
    Mountinfo(#[source] MountinfoError),
    #[error("{} is not in mountinfo after mounting it", .0.display())]
    NotMounted(PathBuf),
    #[error("registering {} with the probes: {source}", mount.display())]
    Register {
        mount: PathBuf,
        #[source]
        source: Box<ProbeError>,
    },
}

/// Synthetic mount ids given to private stacks in the kernel side's maps and in the enricher:
/// real mount ids are reused right after an unmount, and a lab run mounts hundreds of stacks.
const FIRST_MOUNT_ID: u32 = 0x7000_0000;
/// The kernel side's mount maps hold 4096 entries and are never pruned: re-attach before that.
const MOUNTS_PER_ATTACH: usize = 4000;

/// The eBPF probes attached in this process (which they ignore), for tools that mount their own
/// overlays and run the writes in a child: the lab's kernel-side timings and `image forecast
/// --verify`. They register each mount themselves, under synthetic ids.
pub struct KernelTap {
    tap: Tap,
    enricher: Enricher,
    next_id: u32,
    registered: usize,
    /// Drops of earlier attachments.
    drops_before: u64,
}

impl KernelTap {
    pub fn attach() -> Result<Self, ProbeError> {
        Ok(Self {
            tap: Tap::attach(&ProbeOptions::default())?,
            enricher: Enricher::new(),
            next_id: FIRST_MOUNT_ID,
            registered: 0,
            drops_before: 0,
        })
    }

    pub fn backend(&self) -> crate::event::Backend {
        self.tap.probe().backend
    }

    /// Loads and attaches afresh: empty maps. Needed when a new backing filesystem reuses the
    /// device number of an earlier one (a loop device detached and attached again): stale
    /// (device, inode) keys of its upper roots and work dirs would match unrelated inodes.
    pub fn reattach(&mut self) -> Result<(), TapError> {
        let drops = self.drops();
        let mut fresh = Self::attach().map_err(|e| TapError::Reattach(Box::new(e)))?;
        fresh.next_id = self.next_id;
        fresh.drops_before = drops;
        *self = fresh;
        Ok(())
    }

    /// Tells the kernel side and the enricher about an overlay just mounted at `merged` with
    /// these directories (`lowerdirs` top first): private stacks and `image forecast
    /// --verify`'s image stacks.
    pub fn register_overlay(
        &mut self,
        merged: &Path,
        upper: &Path,
        work: &Path,
        lowerdirs: &[PathBuf],
    ) -> Result<(), TapError> {
        if self.registered >= MOUNTS_PER_ATTACH {
            self.reattach()?;
        }
        let mounts = mountinfo::read_overlay_mounts().map_err(TapError::Mountinfo)?;
        let mut m = mounts
            .into_iter()
            .rev()
            .find(|m| m.mount_point == merged)
            .ok_or_else(|| TapError::NotMounted(merged.to_owned()))?;
        m.mount_id = self.next_id;
        // Absolute, whatever mountinfo shows (relative when mounted with relative options).
        m.upperdir = Some(upper.to_owned());
        m.workdir = Some(work.to_owned());
        m.lowerdirs = lowerdirs.to_vec();
        self.next_id += 1;
        self.registered += 1;
        let one = [m];
        self.enricher.add_mounts(&one);
        self.tap
            .probe_mut()
            .register_mounts(&one)
            .map_err(|e| TapError::Register {
                mount: merged.to_owned(),
                source: Box::new(e),
            })
    }

    /// Every event the kernel side has produced so far, enriched (the caller registers its mounts
    /// itself, under ids of its own).
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        self.tap
            .drain(&mut self.enricher, None, &mut out, usize::MAX);
        out
    }

    /// Events lost so far (ring buffer full, tables full, malformed samples, skipped program
    /// runs). Not
    /// `WHITEOUT_UNNAMED`: whiteouts the tracepoint backend cannot name (ext4's own
    /// `RENAME_WHITEOUT` in `rename_file`) are not among a private tap's numbers.
    pub fn drops(&self) -> u64 {
        let d = self.tap.drops();
        self.drops_before + d.ringbuf + d.op_table + d.windows + d.malformed + d.recursion
    }
}
