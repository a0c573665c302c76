//! A tracer run as a child process of the bench (`cowprof record`, or a peer tracer such as
//! bpftrace): its own process group, SIGTERM if the bench dies, reaped with `wait4` for its
//! rusage, its CPU and memory read from /proc while it runs. Terminated and reaped on drop if
//! still running.

use std::{
    fs, io,
    os::unix::process::CommandExt as _,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

pub(crate) struct TracerChild {
    pid: libc::pid_t,
    reaped: bool,
    /// The highest `VmHWM` read from /proc while it ran (see [`TracerChild::peak_rss_kib`]).
    hwm_kib: Option<u64>,
}

/// A wait status as a shell shows it: the exit code, or 128 + the signal.
pub(crate) fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    }
}

/// User + system time of a `wait4` rusage.
pub(crate) fn rusage_cpu(ru: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

impl TracerChild {
    /// Starts `cmd` (stdio as the caller set it) in a process group of its own, with SIGTERM
    /// as its parent-death signal. `what` names it in the error.
    pub(crate) fn spawn(mut cmd: Command, what: &str) -> Result<Self> {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        // Reaped with wait4() below (for its rusage), never through `child`.
        let pid = libc::pid_t::try_from(child.id()).context("pid")?;
        drop(child);
        Ok(Self {
            pid,
            reaped: false,
            hwm_kib: None,
        })
    }

    /// The child's peak RSS (KiB): its `VmHWM`, read every time the bench polls it, so the
    /// last read is within a poll (1 ms while it stops) of its exit. Not `wait4`'s
    /// `ru_maxrss`: Linux carries the high-water mark of the memory a process had before
    /// `exec` into it (`setmax_mm_hiwater_rss` in `exec_mmap`), so a child forked from the
    /// bench reports at least the bench's own peak (which grows when it reads a large output).
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        self.hwm_kib
    }

    fn sample_hwm(&mut self) {
        if let Some(kib) = self.status_kib("VmHWM") {
            self.hwm_kib = Some(self.hwm_kib.map_or(kib, |h| h.max(kib)));
        }
    }

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The wait status and rusage if it has exited (then it is reaped).
    pub(crate) fn try_reap(&mut self) -> Option<(libc::c_int, libc::rusage)> {
        self.sample_hwm();
        let mut status = 0;
        // SAFETY: zeroed rusage is valid; pid is our unreaped child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(self.pid, &raw mut status, libc::WNOHANG, &raw mut ru) };
        if r == self.pid {
            self.reaped = true;
            Some((status, ru))
        } else if r < 0 {
            // ECHILD: nothing left to reap.
            self.reaped = true;
            Some((-1, ru))
        } else {
            None
        }
    }

    pub(crate) fn reap_blocking(&mut self) -> (libc::c_int, libc::rusage) {
        self.sample_hwm();
        let mut status = 0;
        // SAFETY: as in try_reap.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            let r = unsafe { libc::wait4(self.pid, &raw mut status, 0, &raw mut ru) };
            if r == self.pid
                || r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                self.reaped = true;
                return (if r == self.pid { status } else { -1 }, ru);
            }
        }
    }

    pub(crate) fn signal(&self, sig: libc::c_int) {
        if !self.reaped {
            // SAFETY: an unreaped child's pid cannot have been reused.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// `sig`, then wait up to `timeout` for the exit; SIGKILL after that (`None` then).
    pub(crate) fn stop(
        &mut self,
        sig: libc::c_int,
        timeout: Duration,
    ) -> Option<(libc::c_int, libc::rusage)> {
        let t0 = Instant::now();
        // Before the signal: a child that dies of it at once is a zombie by the first poll,
        // and a zombie's status has no VmHWM.
        self.sample_hwm();
        self.signal(sig);
        loop {
            if let Some(r) = self.try_reap() {
                return Some(r);
            }
            if t0.elapsed() > timeout {
                self.signal(libc::SIGKILL);
                self.reap_blocking();
                return None;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// User + system CPU time of the process so far, all its threads (those gone included), to
    /// the nanosecond: its CPU-time clock (`clock_getcpuclockid`). `/proc/PID/stat` counts in
    /// clock ticks (10 ms): truncated, it made the CPU used after a point read up to 10 ms high.
    pub(crate) fn cpu_so_far(&self) -> Option<Duration> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: plain calls with valid out-pointers.
        unsafe {
            if libc::clock_getcpuclockid(self.pid, &raw mut clock) != 0 {
                return None;
            }
            let mut ts: libc::timespec = std::mem::zeroed();
            if libc::clock_gettime(clock, &raw mut ts) != 0 {
                return None;
            }
            Some(Duration::new(
                u64::try_from(ts.tv_sec).ok()?,
                u32::try_from(ts.tv_nsec).ok()?,
            ))
        }
    }

    /// A `/proc/PID/status` field in KiB (`VmHWM` = peak RSS so far, `VmRSS` = now).
    pub(crate) fn status_kib(&self, field: &str) -> Option<u64> {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = s
            .lines()
            .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for TracerChild {
    fn drop(&mut self) {
        if !self.reaped {
            // Politely first (a tracer detaches and exits at once), then for sure.
            self.stop(libc::SIGTERM, Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child forked while the bench holds 128 MiB: `wait4` reports the bench's peak through
    /// `exec`, [`TracerChild::peak_rss_kib`] the child's own.
    #[test]
    fn peak_rss_is_the_childs_own() {
        const BIG: usize = 128 << 20;
        let mut ballast = vec![0u8; BIG];
        for page in ballast.chunks_mut(4096) {
            page[0] = 1;
        }
        // Long enough to be alive when it is stopped, however loaded the machine.
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut child = TracerChild::spawn(cmd, "sleep").expect("spawn sleep");
        thread::sleep(Duration::from_millis(100));
        let (status, ru) = child
            .stop(libc::SIGTERM, Duration::from_secs(5))
            .expect("sleep exits on SIGTERM");
        assert_eq!(exit_code(status), 128 + libc::SIGTERM);
        std::hint::black_box(&ballast);
        let own = child.peak_rss_kib().expect("VmHWM read while it ran");
        let carried = u64::try_from(ru.ru_maxrss).unwrap();
        assert!(
            carried >= (BIG as u64 >> 10),
            "ru_maxrss {carried} KiB: the kernel no longer carries the parent's peak through exec"
        );
        assert!(own < 16 << 10, "sleep's own peak read as {own} KiB");
    }
}
