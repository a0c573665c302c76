//! cowprof's own resource use, read at each scrape under the conventional `process_*` names.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

#[derive(Debug)]
struct ProcessCollector {
    /// Unix time at start-up, seconds.
    start_time: f64,
}

pub(super) fn register(registry: &mut Registry) {
    let start_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    registry.register_collector(Box::new(ProcessCollector { start_time }));
}

/// User + system CPU time of the whole process, seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; RUSAGE_SELF covers every thread.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| {
        #[expect(clippy::cast_precision_loss, reason = "seconds as f64 for a metric")]
        let s = t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        s
    };
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Current and peak resident set size, bytes (`/proc/self/status`).
fn rss_bytes() -> (i64, i64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .map_or(0, |k| k * 1024)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| i64::try_from(d.count()).unwrap_or(0))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cpu = ConstCounter::new(cpu_seconds());
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time of cowprof",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let (rss, peak) = rss_bytes();
        for (name, help, v) in [
            (
                "process_resident_memory",
                "Resident set size of cowprof",
                rss,
            ),
            (
                "process_max_resident_memory",
                "Peak resident set size of cowprof",
                peak,
            ),
        ] {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Bytes),
                g.metric_type(),
            )?)?;
        }
        let fds = ConstGauge::new(open_fds());
        fds.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Open file descriptors of cowprof",
            None,
            fds.metric_type(),
        )?)?;
        let start = ConstGauge::new(self.start_time);
        start.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of cowprof since the Unix epoch",
            Some(&Unit::Seconds),
            start.metric_type(),
        )?)?;
        Ok(())
    }
}
