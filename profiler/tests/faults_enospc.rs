//! ENOSPC on the backing filesystem of the upper dirs during a bench: a spec with a 64 MiB tmpfs
//! (`backing_size`) and 40 MiB files, after a `dir` run that fits. The bench ends with exit 1 and
//! one line naming the cause and the fix, results.json holds the finished `dir` run and parses,
//! and nothing stays mounted or on disk.

mod common;

use std::{fs, process::Command, time::Duration};

use common::{disk_tempdir, lock, require_root, Baseline, Running, BIN};
use cowprof::lab::{results::Results, run::HOST_MOUNTS_ENV};

const SPEC: &str = r#"filesystems = ["dir", "tmpfs"]
backing_size = "64M"
sizes = ["40M"]
layers = 1
file_layers = [1]
repetitions = 2
ops = ["first_write"]
mount_options = [[]]
"#;

#[test]
fn enospc_on_the_upper_fs_is_one_line_and_keeps_finished_results() {
    if !require_root("enospc_on_the_upper_fs_is_one_line_and_keeps_finished_results") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    {
        let dir = disk_tempdir();
        let spec = dir.path().join("spec.toml");
        fs::write(&spec, SPEC).unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let out = dir.path().join("out");
        let running = Running::spawn(
            Command::new(BIN)
                .env(HOST_MOUNTS_ENV, "1")
                .args(["bench", "--spec"])
                .arg(&spec)
                .arg("--out")
                .arg(&out)
                .arg("--workdir")
                .arg(&work),
        );
        let pid = running.pid();
        let (status, _, stderr) = running.wait(Duration::from_mins(3));
        assert_eq!(status.code(), Some(1), "{stderr}");
        // Other warnings may come first (e.g. about kernel-side timings); the error is one line,
        // the last one, and the only one about space.
        let last = stderr.lines().last().unwrap_or_default();
        assert_eq!(
            stderr.matches("no space left on a backing").count(),
            1,
            "{stderr}"
        );
        assert!(
            last.starts_with("cowprof: no space left on a backing filesystem (")
                && last.contains("/tmpfs/")
                && last.contains("backing_size"),
            "{stderr}"
        );
        let text = fs::read_to_string(out.join("results.json")).expect("results.json");
        let r: Results = serde_json::from_str(&text).expect("results.json parses");
        let fss: Vec<&str> = r.runs.iter().map(|x| x.fs.as_str()).collect();
        assert_eq!(fss, ["dir"], "the run finished before ENOSPC is kept");
        assert_eq!(r.runs[0].cells.len(), 1);
        assert_eq!(r.runs[0].cells[0].latency.count, 2);
        assert_eq!(
            r.runs[0].cells[0].copy_ups, 2,
            "kernel copy-ups of the dir run"
        );
        assert!(
            r.skipped.iter().any(|s| s.reason.contains("no space left")),
            "{:?}",
            r.skipped
        );
        let tag = format!("cowprof-lab-{pid}");
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mountinfo.contains(&tag), "left mounted: {mountinfo}");
        assert_eq!(
            fs::read_dir(&work).unwrap().count(),
            0,
            "run directory left"
        );
    }
    baseline.assert_clean("enospc_on_the_upper_fs_is_one_line_and_keeps_finished_results");
}
