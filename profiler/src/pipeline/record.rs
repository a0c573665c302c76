//! `cowprof record`: load and attach, read the ring buffer ([`crate::pipeline::tap`]), decode,
//! enrich, aggregate and report until Ctrl-C, SIGTERM, `--duration` or the end of `-- COMMAND`.

use std::{io::Write, path::PathBuf, time::Duration};

use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    event::Event,
    host::mountinfo,
    pipeline::aggregate::{Aggregate, Summary},
    pipeline::enrich::{
        self,
        container::{self, Attributor, ContainerError},
        containerd::{self as containerd_api, ContainerdClient},
        docker::DockerClient,
        Enricher,
    },
    pipeline::probe::{self, ProbeError, ProbeOptions},
    pipeline::report::{Exporter, RunInfo},
    pipeline::tap::{Tap, BATCH_MAX, DRAIN_INTERVAL},
};

#[derive(Debug, Clone, Default)]
pub struct RecordOptions {
    pub probe: ProbeOptions,
    pub comm: Option<String>,
    /// Only events on this overlay mount (its mount point).
    pub mount: Option<PathBuf>,
    /// Only events of this container (name, full or short id): its processes, and anything
    /// written through its overlay mount (host processes included).
    pub container: Option<String>,
    /// containerd's socket for Kubernetes pod and container names (`--containerd-socket`;
    /// default: `CONTAINERD_ADDRESS`, else /run/containerd/containerd.sock).
    pub containerd_socket: Option<PathBuf>,
    pub min_latency_ns: u64,
    pub duration: Option<Duration>,
    /// Run this command after attaching; stop when it exits.
    pub command: Vec<String>,
    /// Serve the events as Prometheus metrics (`--metrics-addr`).
    pub metrics: Option<crate::pipeline::metrics::Recorder>,
    /// Call [`Exporter::tick`] this often (a live view's refresh); `None`: never.
    pub tick: Option<Duration>,
    /// Do not keep the events in [`Outcome::events`] (the CLI: a long recording would otherwise
    /// hold every event in memory; the summary's histograms stay bounded).
    pub discard_events: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("--mount {path}: not an overlay mount point (see `findmnt -t overlay`)")]
    NotOverlay { path: PathBuf },
    #[error("reading mountinfo: {0}")]
    Mountinfo(#[from] mountinfo::MountinfoError),
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--container: {0}")]
    Container(#[from] ContainerError),
    #[error("ring buffer: {source}")]
    Io {
        #[source]
        source: std::io::Error,
    },
}

/// The result of a run, for callers that check events (tests, the VM self-test, `demo`).
pub struct Outcome {
    pub info: RunInfo,
    pub events: Vec<Event>,
    pub summary: Summary,
    /// Exit status of `-- COMMAND`, if one ran to its end.
    pub command_status: Option<i32>,
    /// Stopped by SIGINT or SIGTERM.
    pub interrupted: bool,
    /// Ended because the overlay module was unloaded under the kprobe backend (its probes are
    /// gone for good: the kernel never re-arms them, even when the module is loaded again).
    pub overlay_unloaded: bool,
    /// Runs the kernel skipped, per program (see `Probe::recursion_misses_by_program`).
    pub skipped_runs: Vec<(String, u64)>,
}

/// The line `record` prints when the overlay module goes away under its probes.
pub const OVERLAY_UNLOADED: &str =
    "overlay module unloaded: its probes are gone (the kernel does not \
     re-arm them when it is loaded again); recording ended. Restart cowprof record after \
     `modprobe overlay`";

/// Identity of the loaded overlay module: the inode of `/sys/module/overlay` (sysfs gives a new
/// directory, with a new inode number, to each load), if overlay is a loadable module (only
/// those have `initstate`). `None` when overlay is built in or not loaded.
fn overlay_module_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    if !std::path::Path::new("/sys/module/overlay/initstate").exists() {
        return None;
    }
    std::fs::metadata("/sys/module/overlay")
        .ok()
        .map(|m| m.ino())
}

struct Filters {
    comm: Option<String>,
    mount_dev: Option<String>,
    /// (full container id, its merged dir).
    container: Option<(String, Option<String>)>,
    min_latency_ns: u64,
}

impl Filters {
    fn keep(&self, ev: &Event) -> bool {
        self.comm.as_ref().is_none_or(|c| &ev.comm == c)
            && self
                .mount_dev
                .as_ref()
                .is_none_or(|d| ev.dev.as_deref() == Some(d.as_str()))
            && self.container.as_ref().is_none_or(|(id, merged)| {
                ev.container_id.as_ref() == Some(id)
                    || (merged.is_some() && ev.mount_point.as_deref() == merged.as_deref())
            })
            && ev.latency_ns >= self.min_latency_ns
    }
}

/// Runs a recording session, writing through `exporter` to `out`.
#[expect(
    clippy::too_many_lines,
    reason = "the select! loop over the ring buffer, signals, the child command and mount changes"
)]
pub async fn record(
    opts: &RecordOptions,
    exporter: &mut dyn Exporter,
    out: &mut dyn Write,
) -> Result<Outcome, RecordError> {
    // Listening from the start: a Ctrl-C while the probes load (seconds) must end the run once
    // they are attached, not be lost (a tokio signal stream only sees signals after its creation).
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())
        .map_err(|source| RecordError::Io { source })?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())
        .map_err(|source| RecordError::Io { source })?;
    // Opened before the first read: a mount made after it is reported by the watch.
    let mut mount_watch = watch_mounts();
    let mounts = mountinfo::read_overlay_mounts()?;
    let mount_dev = match &opts.mount {
        Some(p) => Some(
            enrich::mount_at(&mounts, p)
                .map(|m| format!("{}:{}", m.major, m.minor))
                .ok_or_else(|| RecordError::NotOverlay { path: p.clone() })?,
        ),
        None => None,
    };
    // containerd is asked lazily (first container the engine does not know), never here.
    let mut attributor = Attributor::new(
        DockerClient::from_env(),
        Some(ContainerdClient::new(
            opts.containerd_socket
                .clone()
                .unwrap_or_else(containerd_api::socket_from_env),
        )),
    );
    let container = match &opts.container {
        Some(name) => {
            let info = attributor.resolve(name).await?;
            Some((info.id, info.merged_dir.map(|d| d.display().to_string())))
        }
        None => None,
    };
    let filters = Filters {
        comm: opts.comm.clone(),
        mount_dev,
        container,
        min_latency_ns: opts.min_latency_ns,
    };

    let mut tap = Tap::attach(&opts.probe)?;
    // kprobes on a module function do not hold the module: `rmmod overlay` succeeds under them
    // and marks them gone. Watched only for that backend (the tracepoint backend does not probe
    // overlay's code).
    let overlay_module = if tap.probe().backend == probe::Backend::Kprobe {
        overlay_module_id()
    } else {
        None
    };
    let mut enricher = Enricher::new();
    // Asked once the probes are attached (after the root check), not before.
    let running = attributor.running().await;
    // A process that exits before its event is read is still known by its mount namespace:
    // learnt from every running container's processes, and from the engine's init pids.
    let scan_start = std::time::Instant::now();
    let in_containers = enricher.containers_mut().scan_proc();
    log::debug!(
        "/proc scan: {in_containers} container processes in {:?}",
        scan_start.elapsed()
    );
    for c in &running {
        if let Some(ns) = c.pid.and_then(container::mnt_ns_of) {
            enricher.containers_mut().learn_mnt_ns(ns, &c.id);
        }
    }
    enricher.add_mounts(&mounts);
    tap.probe_mut().register_mounts(&mounts)?;
    // SAFETY (both registrations): each owns its fd and outlives its registration.
    let mut logs = match tap.probe_mut().take_logger() {
        Some(l) => Some(
            unsafe { AsyncFd::register(l) }.map_err(|e| RecordError::Io { source: e.into() })?,
        ),
        None => None,
    };
    // SAFETY: the tap owns the ring buffer's fd and outlives the registration (both live in
    // `tap`).
    let mut tap =
        unsafe { AsyncFd::register(tap) }.map_err(|e| RecordError::Io { source: e.into() })?;
    let probe = tap.get_ref().probe();

    let info = RunInfo {
        backend: probe.backend,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        attached: probe.attached.clone(),
        skipped: probe.skipped.clone(),
    };
    let _ = exporter.header(out, &info);
    if let Some(m) = &opts.metrics {
        m.set_backend(&info);
        m.set_canary(&info.backend.to_string(), &probe.canary);
        m.set_programs(probe.program_fds());
    }
    // Readers wait for this line to know the probes are attached.
    let _ = out.flush();

    let mut child = match opts.command.split_first() {
        Some((prog, args)) => Some(
            tokio::process::Command::new(prog)
                .args(args)
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| RecordError::Spawn {
                    command: prog.clone(),
                    source,
                })?,
        ),
        None => None,
    };

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    // New overlay mounts (a container started after us) must reach the kernel side's maps.
    let mut mount_check = tokio::time::interval(Duration::from_millis(200));
    let mut tick = opts.tick.map(|d| {
        let mut i = tokio::time::interval(d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    });
    // The kernel side wakes this reader for the first record of a batch (one that finds every
    // earlier record consumed) and again once the ring buffer is an eighth full. The first
    // wakeup arms this: the batch is drained DRAIN_INTERVAL later, so a burst costs one pass
    // (the kernel does not wake a reader that has records waiting), and an idle recording is
    // never woken for the ring buffer.
    let mut drain_at: Option<tokio::time::Instant> = None;
    let mut agg = Aggregate::default();
    let summarize = exporter.wants_summary();
    let mut events = Vec::new();
    let mut command_status = None;
    let mut interrupted = false;
    let mut overlay_unloaded = false;

    // One batch buffer for the session: each drain appends to it, `deliver` empties it.
    let mut batch: Vec<Event> = Vec::new();
    let mut deliver = |evs: &mut Vec<Event>, out: &mut dyn Write, exporter: &mut dyn Exporter| {
        let now = std::time::Instant::now();
        for ev in evs.drain(..) {
            if filters.keep(&ev) {
                if summarize {
                    agg.record(&ev);
                }
                if let Some(m) = &opts.metrics {
                    m.observe_in_batch(&ev, now);
                }
                // A closed stdout (e.g. `| head`) ends output, not the recording of the summary.
                let _ = exporter.event(out, &ev);
                if !opts.discard_events {
                    events.push(ev);
                }
            }
        }
    };

    // Reads what the ring buffer holds, registers the mounts it names that were not known yet,
    // and delivers the batch; evaluates to the number of events it delivered.
    // In chunks of at most BATCH_MAX records: what the collector holds at once (events,
    // their output) does not grow with the event rate.
    macro_rules! drain_batch {
        () => {{
            let mut n = 0;
            loop {
                let mut seen = Vec::new();
                let more =
                    tap.get_mut()
                        .drain(&mut enricher, Some(&mut seen), &mut batch, BATCH_MAX);
                if !seen.is_empty() {
                    tap.get_mut().probe_mut().register_mounts(&seen)?;
                }
                n += batch.len();
                if !batch.is_empty() {
                    attributor.fill(&mut batch).await;
                    deliver(&mut batch, out, exporter);
                }
                if !more {
                    break;
                }
            }
            // One write per drain, not per event or chunk.
            let _ = out.flush();
            n
        }};
    }

    // Reads the mount table and registers the overlay mounts new in it (likely a container
    // starting: its namespace is learnt early too).
    macro_rules! learn_mounts {
        () => {
            if let Ok(now) = mountinfo::read_overlay_mounts() {
                if enricher.add_mounts(&now) {
                    tap.get_mut().probe_mut().register_mounts(&now)?;
                    enricher.containers_mut().scan_proc();
                }
            }
        };
    }

    loop {
        tokio::select! {
            guard = tap.readable_mut() => {
                guard.map_err(|source| RecordError::Io { source })?.clear_ready();
                if drain_at.is_none() {
                    // The first record of a batch: drained with the rest of it.
                    drain_at = Some(tokio::time::Instant::now() + DRAIN_INTERVAL);
                    continue;
                }
                // Woken again with a drain pending: an eighth of the buffer is waiting.
                drain_at = None;
                drain_batch!();
            }
            () = sleep_until(drain_at) => {
                drain_at = None;
                drain_batch!();
            }
            guard = logs_readable(&mut logs) => {
                if let Ok(mut guard) = guard {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
            _ = sigint.recv() => { interrupted = true; break }
            _ = sigterm.recv() => { interrupted = true; break }
            () = sleep_until(deadline) => break,
            status = wait_child(&mut child) => {
                command_status = Some(status);
                break;
            }
            () = next_tick(&mut tick) => {
                if !exporter.tick(out, &tap.get_ref().drops()).unwrap_or(false) {
                    break;
                }
            }
            () = mounts_changed(&mut mount_watch) => learn_mounts!(),
            _ = mount_check.tick() => {
                if overlay_module.is_some() && overlay_module_id() != overlay_module {
                    overlay_unloaded = true;
                    break;
                }
                if let Some(m) = &opts.metrics {
                    m.set_drops(&tap.get_ref().drops());
                }
                // A safety net: records the kernel committed without a wakeup this reader
                // saw (none are expected) wait at most this tick.
                if drain_at.is_none() {
                    let n = drain_batch!();
                    if n != 0 {
                        log::debug!("{n} event(s) found by the 200 ms tick");
                    }
                }
                // Polled only where the mount table cannot be watched.
                if mount_watch.is_none() {
                    learn_mounts!();
                }
            }
        }
    }
    // Everything the kernel produced before we stopped is already in the ring buffer.
    drain_batch!();
    let mut rest = enricher.flush();
    attributor.fill(&mut rest).await;
    deliver(&mut rest, out, exporter);
    let _ = out.flush();
    let summary = agg.summary(tap.get_ref().final_drops());
    if let Some(note) = tap.get_ref().probe().recursion_note() {
        eprintln!("cowprof: {note}");
    }
    if let Some(note) = tap.get_ref().probe().kprobe_missed_note() {
        eprintln!("cowprof: {note}");
    }
    let skipped_runs = tap.get_ref().probe().recursion_misses_by_program();
    if let Some(m) = &opts.metrics {
        m.set_drops(&summary.drops);
    }
    let _ = exporter.summary(out, &summary);
    drop(tap); // detaches every program
    Ok(Outcome {
        info,
        events,
        summary,
        command_status,
        interrupted,
        overlay_unloaded,
        skipped_runs,
    })
}

async fn logs_readable<T: std::os::fd::AsRawFd>(
    logs: &mut Option<AsyncFd<T>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>> {
    match logs {
        Some(l) => l.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// The mount table of this namespace, watched: `/proc/self/mountinfo` reports `POLLPRI` each
/// time a mount is added or removed (as libmount's monitor and systemd use it), so new mounts are
/// read when they appear instead of on a 200 ms poll. `None` where it cannot be registered.
fn watch_mounts() -> Option<AsyncFd<std::fs::File>> {
    let f = std::fs::File::open("/proc/self/mountinfo").ok()?;
    // SAFETY: the AsyncFd owns the file, so the fd lives as long as the registration.
    unsafe { AsyncFd::register_with_interest(f, tokio::io::Interest::PRIORITY) }.ok()
}

/// Resolves when the mount table changed since the last call (never without a watch).
async fn mounts_changed(watch: &mut Option<AsyncFd<std::fs::File>>) {
    match watch {
        Some(w) => match w.ready(tokio::io::Interest::PRIORITY).await {
            Ok(mut g) => g.clear_ready(),
            // Not watchable after all: back to the poll.
            Err(_) => *watch = None,
        },
        None => std::future::pending().await,
    }
}

async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn wait_child(child: &mut Option<tokio::process::Child>) -> i32 {
    match child {
        Some(c) => c.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(container_id: Option<&str>, mount_point: &str) -> Event {
        let line = serde_json::json!({
            "kind": "data_copy_up", "backend": "tracepoint", "time_ns": 0, "latency_ns": 1,
            "latency_partial": false, "errno": 0, "pid": 1, "tid": 1, "comm": "sh",
            "cgroup_id": 0, "mnt_ns": 0, "dev": "0:39", "mount_point": mount_point, "path": "f",
            "path_truncated": false, "size_bytes": 1, "bytes_copied": 1, "lower_layer": 1,
            "lower_layer_dir": "/l", "syscall": null, "syscall_latency_ns": null,
            "syscall_ret": null, "container_id": container_id,
        });
        serde_json::from_value(line).expect("an event without the engine's fields")
    }

    /// `--container`: the container's own processes anywhere, and anyone writing through its
    /// overlay mount; nothing else.
    #[test]
    fn container_filter() {
        let f = Filters {
            comm: None,
            mount_dev: None,
            container: Some(("c1".into(), Some("/merged/c1".into()))),
            min_latency_ns: 0,
        };
        assert!(f.keep(&event(Some("c1"), "/elsewhere")));
        assert!(f.keep(&event(None, "/merged/c1")));
        assert!(!f.keep(&event(Some("c2"), "/merged/c2")));
        assert!(!f.keep(&event(None, "/merged/c2")));
        // Without an engine the merged dir is unknown: the processes alone.
        let f = Filters {
            container: Some(("c1".into(), None)),
            ..f
        };
        assert!(f.keep(&event(Some("c1"), "/merged/c1")));
        assert!(!f.keep(&event(None, "/merged/c1")));
    }
}
