//! While `record` runs, the collector makes no `bpf()` system call: every one comes while it
//! loads and attaches, or after it stopped (unless an overlay mount appears meanwhile: its
//! registration is one). A `bpf()` map operation of any process holds the per-CPU guard that all
//! kprobe programs share, and kernels that preempt a task inside it make the kernel skip every
//! kprobe program on that CPU (docs/backends.md, "Missed kprobes"): a collector that polled its
//! own maps would make itself lose events. The loss counters are therefore a mapped array
//! (`pipeline/probe/counters.rs`), read with memory loads.
//!
//! Checked under `strace -f -e trace=bpf` with timestamps: `record` runs a command (which starts
//! once the probes are attached) that marks the time, scrapes the metrics endpoint (which reads
//! the loss counters and the skipped-runs metric) over two seconds, and marks the time again;
//! no `bpf()` call may fall between the marks, for `--quiet --metrics-addr` (which refreshed the
//! loss counters every 200 ms) and for `--json`. strace must have seen the loader's calls, or
//! the check proves nothing.

mod common;

use std::{net::TcpListener, path::Path, process::Command};

use common::{lock, require_root, skip, BIN};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `bpf()` calls strace logged (`-ttt`: seconds since the epoch), as (time, line).
fn bpf_calls(log: &Path) -> Vec<(f64, String)> {
    std::fs::read_to_string(log)
        .expect("strace's log")
        .lines()
        .filter(|l| l.contains(" bpf("))
        .filter_map(|l| {
            let t = l.split_whitespace().nth(1)?.parse::<f64>().ok()?;
            Some((t, l.to_owned()))
        })
        .collect()
}

fn read_mark(p: &Path) -> f64 {
    std::fs::read_to_string(p)
        .expect("the command's time mark")
        .trim()
        .parse()
        .expect("a time in seconds")
}

/// One `record` under strace with `args`; returns the `bpf()` calls between the marks, the
/// number of calls in all, and the scrapes that found the loss counters on the page.
fn record_under_strace(args: &[&str], scrape_port: Option<u16>) -> (Vec<String>, usize, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, m1, m2, pages) = (
        dir.path().join("strace.log"),
        dir.path().join("mark1"),
        dir.path().join("mark2"),
        dir.path().join("pages"),
    );
    // Marks with the same clock as strace's -ttt (CLOCK_REALTIME); scrapes in between (bash's
    // /dev/tcp: one GET each, the loss counters' lines counted).
    let scrape = scrape_port.map_or_else(String::new, |port| {
        format!(
            "for i in 1 2 3 4; do exec 3<>/dev/tcp/127.0.0.1/{port}; \
             printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; \
             grep -c '^cowprof_dropped_events_total' <&3 >> {pages}; exec 3<&-; sleep 0.5; done;",
            pages = pages.display()
        )
    });
    let script = format!(
        "date +%s.%N > {m1}; {scrape} sleep 2; date +%s.%N > {m2}",
        m1 = m1.display(),
        m2 = m2.display()
    );
    let out = Command::new("strace")
        .args(["-f", "-ttt", "-e", "trace=bpf", "-o"])
        .arg(&log)
        .arg(BIN)
        .arg("record")
        .args(args)
        .args(["--", "/bin/bash", "-c", &script])
        .output()
        .expect("strace runs");
    assert!(
        out.status.success(),
        "record {args:?} under strace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (t1, t2) = (read_mark(&m1), read_mark(&m2));
    let calls = bpf_calls(&log);
    let during = calls
        .iter()
        .filter(|(t, _)| (t1..=t2).contains(t))
        .map(|(_, l)| l.clone())
        .collect();
    let scrapes = std::fs::read_to_string(&pages)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim().parse::<u32>().is_ok_and(|n| n > 0))
        .count();
    (during, calls.len(), scrapes)
}

#[test]
fn no_bpf_call_while_recording() {
    if !require_root("no_bpf_call_while_recording") {
        return;
    }
    if Command::new("strace").arg("-V").output().is_err() {
        skip(
            "no_bpf_call_while_recording",
            "no-strace",
            "strace is not installed (scripts/setup installs it)",
        );
        return;
    }
    let _l = lock();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    for (what, args, scrape_port) in [
        (
            "--quiet --metrics-addr",
            vec!["--quiet", "--metrics-addr", addr.as_str()],
            Some(port),
        ),
        ("--json", vec!["--json"], None),
    ] {
        let (during, total, scrapes) = record_under_strace(&args, scrape_port);
        if scrape_port.is_some() {
            assert_eq!(
                scrapes, 4,
                "record {what}: 4 scrapes with the loss counters on the page"
            );
        }
        assert!(
            total >= 10,
            "record {what}: strace saw only {total} bpf() calls in all: it did not trace the loader"
        );
        assert!(
            during.is_empty(),
            "record {what}: {} bpf() call(s) while recording (each holds the guard kprobe programs share):\n{}",
            during.len(),
            during.join("\n")
        );
        eprintln!("record {what}: {total} bpf() calls in all, none while recording");
    }
}
