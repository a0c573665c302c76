//! `cowprof clean`: removes what dead `cowprof bench` runs left behind (a SIGKILL gives no process
//! a chance to clean up): mounts below their run directories, loop devices on their images, the
//! images, the run directories and the state files. Runs whose process is still alive are left
//! alone.
//!
//! Runs are found three ways, so that a lost state file hides nothing: the state files in
//! `/run/cowprof`, `cowprof-lab-<pid>` directories in the given work directories, and mount points
//! and loop backing files with a `cowprof-lab-<pid>` path component.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::stack::{start_ticks, state_path, Resource, State, STATE_DIR, TAG};
use crate::host::{
    loopdev::{loop_detach, loop_devices},
    mounts::{mount_points, umount},
};

/// What `clean` did, one line per action.
#[derive(Debug, Default)]
pub struct CleanReport {
    pub removed: Vec<String>,
    /// Runs left alone because their process is alive.
    pub alive: Vec<u32>,
    pub errors: Vec<String>,
}

/// The pid in a `cowprof-lab-<pid>` or `cowprof-lab-<pid>-...` name.
pub fn tag_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TAG)?;
    let digits = rest.split(['-', '.']).next()?;
    digits.parse().ok()
}

/// The run directory a path belongs to: the path up to its `cowprof-lab-<pid>` component.
fn run_dir_of(path: &Path) -> Option<(u32, PathBuf)> {
    let mut acc = PathBuf::new();
    for c in path.components() {
        acc.push(c);
        if let Some(pid) = c.as_os_str().to_str().and_then(tag_pid) {
            return Some((pid, acc));
        }
    }
    None
}

#[derive(Default)]
struct Run {
    state: Option<State>,
    /// Run directories (normally one).
    dirs: BTreeSet<PathBuf>,
}

fn alive(pid: u32, state: Option<&State>) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match (start_ticks(pid), state.and_then(|s| s.start_ticks)) {
        (None, _) => false,
        // The pid was reused by another process: the run is dead.
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
    }
}

fn find_runs(workdirs: &[PathBuf]) -> BTreeMap<u32, Run> {
    let mut runs: BTreeMap<u32, Run> = BTreeMap::new();
    if let Ok(rd) = fs::read_dir(STATE_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("lab-")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let state = fs::read_to_string(e.path())
                .ok()
                .and_then(|t| serde_json::from_str::<State>(&t).ok());
            let run = runs.entry(pid).or_default();
            if let Some(s) = &state {
                run.dirs.insert(s.root.clone());
            }
            run.state = state;
        }
    }
    for w in workdirs {
        let Ok(rd) = fs::read_dir(w) else { continue };
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(tag_pid) {
                runs.entry(pid).or_default().dirs.insert(e.path());
            }
        }
    }
    for (mp, _) in mount_points() {
        if let Some((pid, dir)) = run_dir_of(&mp) {
            runs.entry(pid).or_default().dirs.insert(dir);
        }
    }
    for (_, back) in loop_devices() {
        if let Some((pid, dir)) = run_dir_of(&back) {
            runs.entry(pid).or_default().dirs.insert(dir);
        }
    }
    runs
}

/// Cleans up after every dead run. `workdirs` are where to look for run directories besides
/// what state files, mountinfo and loop devices name (bench's `--workdir`, default /tmp).
pub fn clean(workdirs: &[PathBuf]) -> CleanReport {
    let mut report = CleanReport::default();
    for (pid, run) in find_runs(workdirs) {
        if alive(pid, run.state.as_ref()) {
            report.alive.push(pid);
            continue;
        }
        clean_run(pid, &run, &mut report);
    }
    report
}

fn clean_run(pid: u32, run: &Run, report: &mut CleanReport) {
    let errors_before = report.errors.len();
    let mut extra_mounts = BTreeSet::new();
    if let Some(s) = &run.state {
        for r in &s.resources {
            if let Resource::Mount { path } = r {
                extra_mounts.insert(path.clone());
            }
        }
    }
    // Mounts: innermost and newest first, and again until none is left (a lazily detached
    // mount can uncover another at the same point).
    for _ in 0..8 {
        let under: Vec<PathBuf> = mount_points()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| run.dirs.iter().any(|d| p.starts_with(d)) || extra_mounts.contains(p))
            .collect();
        if under.is_empty() {
            break;
        }
        for p in under.iter().rev() {
            if umount(p) {
                report.removed.push(format!("unmounted {}", p.display()));
            } else {
                report.errors.push(format!(
                    "cannot unmount {}: {}",
                    p.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    // Loop devices on the run's images. An autoclear device goes by itself once its filesystem
    // is unmounted, a moment later: give it that moment before detaching by hand.
    let ours = |back: &Path| {
        run.dirs.iter().any(|d| back.starts_with(d))
            || back.file_name().and_then(|n| n.to_str()).and_then(tag_pid) == Some(pid)
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let loops: Vec<(PathBuf, PathBuf)> = loop_devices()
            .into_iter()
            .filter(|(_, b)| ours(b))
            .collect();
        if loops.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for (dev, back) in loops {
                if loop_detach(&dev) {
                    report
                        .removed
                        .push(format!("detached {} ({})", dev.display(), back.display()));
                } else {
                    report.errors.push(format!(
                        "cannot detach {} ({}): {}",
                        dev.display(),
                        back.display(),
                        std::io::Error::last_os_error()
                    ));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in &run.dirs {
        if !d.exists() {
            continue;
        }
        // Never delete through a mount that is still there.
        if mount_points().iter().any(|(p, _)| p.starts_with(d)) {
            report.errors.push(format!(
                "{} still has mounts below it; not removed",
                d.display()
            ));
            continue;
        }
        match fs::remove_dir_all(d) {
            Ok(()) => report.removed.push(format!("removed {}", d.display())),
            Err(e) => report
                .errors
                .push(format!("cannot remove {}: {e}", d.display())),
        }
    }
    let sp = state_path(pid);
    if sp.exists() && report.errors.len() == errors_before {
        match fs::remove_file(&sp) {
            Ok(()) => report.removed.push(format!("removed {}", sp.display())),
            Err(e) => report
                .errors
                .push(format!("cannot remove {}: {e}", sp.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(tag_pid("cowprof-lab-123"), Some(123));
        assert_eq!(tag_pid("cowprof-lab-123-ext4.img"), Some(123));
        assert_eq!(tag_pid("cowprof-123-main"), None);
        assert_eq!(tag_pid("cowprof-lab-x"), None);
        assert_eq!(
            run_dir_of(Path::new("/tmp/cowprof-lab-42/tmpfs/S/3/merged")),
            Some((42, PathBuf::from("/tmp/cowprof-lab-42")))
        );
        assert_eq!(run_dir_of(Path::new("/tmp/other")), None);
    }
}
