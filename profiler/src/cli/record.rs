//! `cowprof record`: attach, print every copy-up and whiteout, summarise.

use std::{io::Write, path::PathBuf, time::Duration};

use cowprof::pipeline::{
    probe::{self, Backend, ProbeOptions},
    record::{self, RecordOptions},
};

use super::{exporter, BtfArgs, Exit};

/// What to trace and how to name it: shared by `record` and `top`.
#[derive(clap::Args)]
pub struct FilterArgs {
    /// Kernel mechanism (default: the best one this kernel allows; see `cowprof doctor`).
    #[arg(long, value_parser = super::backend_arg(), value_name = "BACKEND")]
    pub backend: Option<Backend>,
    /// Only this process (tgid).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only tasks whose comm is exactly this.
    #[arg(long)]
    pub comm: Option<String>,
    /// Only this cgroup (v2): a path under /sys/fs/cgroup or a numeric cgroup id.
    #[arg(long, value_name = "PATH|ID")]
    pub cgroup: Option<String>,
    /// Only events on the overlay mounted here.
    #[arg(long, value_name = "PATH")]
    pub mount: Option<PathBuf>,
    /// Only this container's events (Docker name, full or short id): its processes, and
    /// writes through its overlay mount by host processes (those stay attributed to the host).
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,
    #[arg(
        long,
        value_name = "PATH",
        help = "containerd's API socket, for Kubernetes pod and container names (default: \
                $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock; absent = names \
                from cgroups and the Docker engine only)"
    )]
    pub containerd_socket: Option<PathBuf>,
    /// Only events at least this slow (e.g. 100us, 5ms).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub min_latency: Option<Duration>,
    #[command(flatten)]
    pub btf: BtfArgs,
}

impl FilterArgs {
    /// The recording these filters ask for; the caller sets what is its own (duration, command,
    /// metrics, tick, ring size, canary bound). A bad `--cgroup` is the error line.
    pub fn record_options(self) -> Result<RecordOptions, String> {
        let filter_cgroup = self
            .cgroup
            .as_deref()
            .map(cgroup_id)
            .transpose()?
            .unwrap_or(0);
        Ok(RecordOptions {
            probe: ProbeOptions {
                backend: self.backend,
                btf: self.btf.paths(),
                filter_tgid: self.pid.unwrap_or(0),
                filter_cgroup,
                ringbuf_size: None,
                canary_timeout: None,
                no_phases: false,
                ctime_copies: None,
            },
            comm: self.comm,
            mount: self.mount,
            container: self.container,
            containerd_socket: self.containerd_socket,
            min_latency_ns: self
                .min_latency
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            duration: None,
            command: Vec::new(),
            discard_events: true,
            metrics: None,
            tick: None,
        })
    }
}

#[derive(clap::Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Stop after this long (e.g. 10s, 2m).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// JSON lines (schema-versioned) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Serve Prometheus/OpenMetrics metrics on http://HOST:PORT/metrics (PORT alone binds
    /// 127.0.0.1; 0.0.0.0:PORT exposes them to the network).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Label sets (mount, container, pod, namespace, image, layer digest) with series of
    /// their own; the rest are counted under "other".
    #[arg(long, value_name = "N", default_value_t = cowprof::pipeline::metrics::DEFAULT_MAX_SERIES)]
    pub metrics_max_series: usize,
    /// Print nothing on stdout (a daemon serving --metrics-addr).
    #[arg(long, short)]
    pub quiet: bool,
    /// Ring buffer size in bytes (advanced: a power of two, at least a page; default 4 MiB).
    #[arg(long, hide = true, value_name = "BYTES", value_parser = ringbuf_size)]
    pub ringbuf_size: Option<u32>,
    /// Bound of the start-up check (canary) that proves the backend sees copy-ups and
    /// whiteouts before recording starts (default 20s; it ends as soon as it has seen them).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub canary_timeout: Option<std::time::Duration>,
    /// Do not split copy-ups into phases: fewer probes and less kernel work per copy-up
    /// (events and the summary then carry no phases).
    #[arg(long)]
    pub no_phases: bool,
    /// Run this command once attached and stop when it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(args: RecordArgs, out: &mut dyn Write) -> Exit {
    let RecordArgs {
        filters,
        duration,
        json,
        metrics_addr,
        metrics_max_series,
        quiet,
        ringbuf_size,
        canary_timeout,
        no_phases,
        command,
    } = args;
    // Bound before anything is loaded: a bad address leaves nothing behind.
    let (metrics, _server) = match metrics_addr
        .map(|addr| cowprof::pipeline::metrics::serve(&addr, metrics_max_series))
        .transpose()
    {
        Ok(Some((rec, server))) => (Some(rec), Some(server)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("cowprof: {e}");
            return Exit::from(&e);
        }
    };
    let mut opts = match filters.record_options() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("cowprof: {msg}");
            return Exit::Usage;
        }
    };
    opts.probe.ringbuf_size = ringbuf_size;
    opts.probe.canary_timeout = canary_timeout;
    opts.probe.no_phases = no_phases;
    opts.duration = duration;
    opts.command = command;
    opts.metrics = metrics;
    let mut exp = if quiet {
        Box::new(cowprof::pipeline::metrics::Quiet)
    } else {
        exporter(json)
    };
    match record::record(&opts, exp.as_mut(), out).await {
        Ok(o) if o.overlay_unloaded => {
            eprintln!("cowprof: {}", record::OVERLAY_UNLOADED);
            Exit::OverlayUnloaded
        }
        Ok(_) => Exit::Ok,
        Err(e) => {
            eprintln!("cowprof: {e}");
            Exit::from(&e)
        }
    }
}

fn ringbuf_size(s: &str) -> Result<u32, String> {
    let bytes: u32 = s
        .parse()
        .map_err(|e| format!("{e}; give a number of bytes"))?;
    probe::check_ringbuf_size(bytes)
}

fn cgroup_id(spec: &str) -> Result<u64, String> {
    if let Ok(id) = spec.parse::<u64>() {
        return Ok(id);
    }
    std::fs::metadata(spec)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| format!("--cgroup {spec}: {e}; give a cgroup v2 directory (under /sys/fs/cgroup) or a numeric id"))
}
