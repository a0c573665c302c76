//! `record` stops cleanly on SIGINT, on SIGTERM and at `--duration`: exit 0, the events seen so
//! far, a summary line, and every BPF link and program released.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    io::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    bpf_holders, canon, cowprof_bpf, disk_tempdir, lock, parse_line, parse_recording, require_root,
    Baseline, BpfObj, Line, Running, BIN, START_TIMEOUT,
};
use cowprof::{
    event::Kind,
    scenario::{self, Stack},
};

enum Stop {
    Signal(libc::c_int),
    /// `--duration 1s`
    Duration,
}

fn stop_variant(name: &str, stop: &Stop) {
    if !require_root(name) {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let bpf_before = cowprof_bpf();
    {
        let dir = disk_tempdir();
        let stack = Stack::create(
            &canon(dir.path()).join("s"),
            3,
            scenario::DEFAULT_FILES,
            &[],
            false,
        )
        .expect("stack");
        let mount = canon(&stack.merged).display().to_string();
        let mut cmd = Command::new(BIN);
        cmd.args(["record", "--json", "--mount", &mount]);
        if matches!(stop, Stop::Duration) {
            cmd.args(["--duration", "1s"]);
        }
        let spawned = Instant::now();
        let mut running = Running::spawn(&mut cmd);
        let start_line = running.next_line(START_TIMEOUT);
        let started = Instant::now();
        let Line::Start(info) = parse_line(&start_line) else {
            panic!("first line is not start: {start_line}")
        };
        assert_eq!(info.backend.as_str(), "tracepoint");

        // While recording, exactly the attached programs are linked in the kernel, held by cowprof.
        if bpf_before.is_some() {
            let holders = bpf_holders();
            let links: Vec<BpfObj> = cowprof_bpf()
                .expect("bpftool")
                .into_iter()
                .filter(|o| {
                    o.0 == "link"
                        && holders
                            .get(&(o.0, o.1))
                            .is_some_and(|p| p.contains(&running.pid()))
                })
                .collect();
            assert_eq!(
                links.len(),
                info.attached.len(),
                "links while recording: {links:?}, attached {:?}",
                info.attached
            );
        }

        // One write to a layer-1 file: copy-up of dir etc and of etc/hosts (200 bytes).
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(stack.merged.join("etc/hosts"))
            .expect("open");
        f.write_all(b"+").expect("write");
        drop(f);
        if matches!(stop, Stop::Duration) {
            // The deadline runs from just after the start line: the write must land inside it.
            let late = started.elapsed();
            assert!(late < Duration::from_millis(900), "the write took {late:?} after the start line; --duration 1s may have ended first (machine overloaded?)");
        }

        if let Stop::Signal(sig) = stop {
            running.signal(*sig);
        }
        let (status, rest, stderr) = running.wait(Duration::from_secs(30));
        let elapsed = spawned.elapsed();
        assert_eq!(
            status.code(),
            Some(0),
            "{name}: status {status:?}, stderr: {stderr}"
        );
        if matches!(stop, Stop::Duration) {
            assert!(
                elapsed >= Duration::from_secs(1),
                "--duration 1s stopped after {elapsed:?}"
            );
        }
        let mut lines = vec![start_line];
        lines.extend(rest);
        let rec = parse_recording(&lines);
        let got: Vec<(Kind, &str, Option<u32>, u64)> = rec
            .events
            .iter()
            .map(|e| (e.kind, e.path.as_str(), e.lower_layer, e.bytes_copied))
            .collect();
        assert_eq!(
            got,
            vec![
                (Kind::DirCopyUp, "etc", Some(1), 0),
                (Kind::DataCopyUp, "etc/hosts", Some(1), 200)
            ]
        );
        assert!(rec
            .events
            .iter()
            .all(|e| e.mount_point.as_deref() == Some(mount.as_str())));
        assert_eq!(rec.summary.events, 2);
        assert_eq!(rec.summary.by_kind["dir_copy_up"].count, 1);
        assert_eq!(rec.summary.by_kind["data_copy_up"].bytes_copied, 200);
        assert_eq!(
            rec.summary.drops,
            cowprof::pipeline::aggregate::Drops::default()
        );
        drop(stack);
    }
    baseline.assert_clean(name);
}

#[test]
fn sigint_stops_cleanly() {
    stop_variant("sigint_stops_cleanly", &Stop::Signal(libc::SIGINT));
}

#[test]
fn sigterm_stops_cleanly() {
    stop_variant("sigterm_stops_cleanly", &Stop::Signal(libc::SIGTERM));
}

#[test]
fn duration_stops_cleanly() {
    stop_variant("duration_stops_cleanly", &Stop::Duration);
}
