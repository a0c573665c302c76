//! A peer tracer to compare `cowprof record` with: any command line that attaches probes of its
//! own, says so with a line on stdout or stderr, and prints its results when SIGINT stops it,
//! such as `bpftrace SCRIPT` ("Attaching 2 probes...", then its maps, e.g. a latency histogram).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    check_stop,
    child::{exit_code, rusage_cpu, TracerChild},
};

/// The peer as a child process, run as `/bin/sh -c "exec CMD"` (so that the process the bench
/// signals and reaps is the tracer itself). stdout and stderr go to one file (on a tmpfs), read
/// for the ready line while it attaches and in full after it exited.
pub struct Peer {
    child: TracerChild,
    out_path: PathBuf,
    ready: String,
    spawned: Instant,
    attach_time: Duration,
    cpu_at_start: Option<Duration>,
}

/// What one run of the peer produced, read after it exited.
#[derive(Debug, Clone)]
pub struct PeerRun {
    /// Everything it printed (stdout and stderr).
    pub output: String,
    /// The sum of the counts of the histogram rows it printed (bpftrace's `hist()`/`lhist()`
    /// rows `[lo, hi)   N |@@@|`), None if it printed none.
    pub histogram_count: Option<u64>,
    /// Peak RSS, KiB: its `VmHWM` last read before it exited (see `TracerChild::peak_rss_kib`).
    pub maxrss_kib: u64,
    /// User + system CPU time, from `wait4`'s rusage.
    pub cpu: Duration,
    /// `cpu` less what it had used when it printed the ready line.
    pub cpu_after_start: Option<Duration>,
    /// From spawn to the ready line (compile, load, attach).
    pub attach_time: Duration,
    /// From SIGINT to its exit (reading and printing its maps).
    pub stop_time: Duration,
    /// SIGTERMs sent after the SIGINT because it had not exited yet (see [`Peer::stop`]).
    pub nudges: u32,
    pub exit_status: i32,
}

/// How long the peer has after SIGINT (and after each nudge) before the next SIGTERM.
const NUDGE_AFTER: Duration = Duration::from_secs(1);

impl Peer {
    /// Starts `cmd` under `/bin/sh`; `ready` is the text of the line that says it is attached;
    /// `dir` holds its output file.
    pub fn spawn(cmd: &str, ready: &str, dir: &Path) -> Result<Self> {
        let out_path = dir.join("peer.out");
        let file = fs::File::create(&out_path)
            .with_context(|| format!("creating {}", out_path.display()))?;
        let err = file
            .try_clone()
            .context("duplicating the peer's output file")?;
        let mut c = Command::new("/bin/sh");
        c.args(["-c", &format!("exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        let child = TracerChild::spawn(c, &format!("the peer tracer ({cmd})"))?;
        Ok(Self {
            child,
            out_path,
            ready: ready.to_owned(),
            spawned: Instant::now(),
            attach_time: Duration::ZERO,
            cpu_at_start: None,
        })
    }

    fn output(&self) -> String {
        fs::read(&self.out_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits for the ready line, polling the stop flag. An exit before it is an error that
    /// quotes what the peer printed.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            if self.output().lines().any(|l| l.contains(&self.ready)) {
                self.attach_time = self.spawned.elapsed();
                self.cpu_at_start = self.child.cpu_so_far();
                return Ok(self.attach_time);
            }
            if let Some((status, _)) = self.child.try_reap() {
                bail!(
                    "the peer tracer exited (status {}) before printing {:?}; it printed: {}",
                    exit_code(status),
                    self.ready,
                    self.output().trim()
                );
            }
            check_stop()?;
            if t0.elapsed() > timeout {
                bail!(
                    "the peer tracer did not print {:?} within {timeout:?}; it printed: {}",
                    self.ready,
                    self.output().trim()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGINT (bpftrace prints its maps and exits), wait for the exit, read what it printed.
    ///
    /// bpftrace 0.17 (Debian 12's) leaves its poll loop only when a signal interrupts its
    /// `epoll_wait`: a SIGINT that lands while it is anywhere else (reading a buffer, between
    /// two 100 ms waits) sets its exit flag, which nothing reads again, and it runs for ever.
    /// So a peer still running a second after SIGINT gets a SIGTERM, once a second: bpftrace
    /// handles SIGTERM like SIGINT but keeps that handler while it prints its maps (SIGINT's
    /// is reset to the default there, so a second SIGINT could kill it mid-print).
    pub fn stop(mut self, timeout: Duration) -> Result<PeerRun> {
        let t0 = Instant::now();
        self.child.signal(libc::SIGINT);
        let mut nudges = 0u32;
        let mut last = Instant::now();
        let (status, ru) = loop {
            if let Some(r) = self.child.try_reap() {
                break r;
            }
            if t0.elapsed() > timeout {
                self.child.signal(libc::SIGKILL);
                self.child.reap_blocking();
                bail!(
                    "the peer tracer did not exit within {timeout:?} of SIGINT and {nudges} SIGTERM(s) (killed); it printed: {}",
                    self.output().trim()
                );
            }
            if last.elapsed() >= NUDGE_AFTER {
                self.child.signal(libc::SIGTERM);
                nudges += 1;
                last = Instant::now();
            }
            thread::sleep(Duration::from_millis(1));
        };
        let stop_time = t0.elapsed();
        let output = self.output();
        let cpu = rusage_cpu(&ru);
        Ok(PeerRun {
            histogram_count: histogram_count(&output),
            output,
            maxrss_kib: self
                .child
                .peak_rss_kib()
                .unwrap_or_else(|| u64::try_from(ru.ru_maxrss).unwrap_or(0)),
            cpu,
            cpu_after_start: self.cpu_at_start.map(|c| cpu.saturating_sub(c)),
            attach_time: self.attach_time,
            stop_time,
            nudges,
            exit_status: exit_code(status),
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The child stops itself (SIGTERM, then SIGKILL) when it is dropped after this.
        let _ = fs::remove_file(&self.out_path);
    }
}

/// The sum of the counts of bpftrace histogram rows in `text`: lines such as
/// `[128K, 256K)   12 |@@@@   |`, `[0]   3 |@|`, `(..., 0)  1 |  |` or `[100, ...)  2 |@|`
/// (what `hist()` and `lhist()` print). None if there is no such row.
pub fn histogram_count(text: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        let l = line.trim();
        if !(l.starts_with('[') || l.starts_with('(')) || !l.ends_with('|') {
            continue;
        }
        let Some(bar) = l.find('|') else { continue };
        // The bucket ends with its closing bracket; the count is what follows it.
        let head = &l[..bar];
        let Some(close) = head.rfind([')', ']']) else {
            continue;
        };
        let Ok(n) = head[close + 1..].trim().parse::<u64>() else {
            continue;
        };
        *total.get_or_insert(0) += n;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftrace_histograms_are_summed() {
        let out = "Attaching 2 probes...\n\n\n@lat: \n\
                   [128K, 256K)        1500 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|\n\
                   [256K, 512K)         480 |@@@@@@@@@@@@@@@@                                    |\n\
                   [512K, 1M)            19 |                                                    |\n\
                   [1M, 2M)               1 |                                                    |\n\n";
        assert_eq!(histogram_count(out), Some(2000));
        let lhist = "@x:\n(..., 0)   2 |@@  |\n[0, 5)   7 |@@@@|\n[5, ...)   1 |@   |\n";
        assert_eq!(histogram_count(lhist), Some(10));
        assert_eq!(
            histogram_count("@n: 3\n[0]   4 |@@@@|\n[1]   0 |    |\n"),
            Some(4)
        );
        assert_eq!(histogram_count("Attaching 2 probes...\n"), None);
        assert_eq!(histogram_count("@start[1234]: 5678\n[oops] |\n"), None);
    }
}
