//! SIGINT and SIGTERM at random moments of `bench --quick`, `image import` and `record`, and
//! SIGKILL followed by `cowprof clean` and a new run. After every delivery: the documented exit
//! code (130 for bench and import, or 0 when the run had already finished; 0 for record), and
//! nothing left: no mount, no loop device, no lab or store temp directory, no cowprof BPF link
//! or program.
//!
//! The moments come from a seeded generator; the seed is printed, and
//! `COWPROF_FAULT_SEED=<seed>` replays the same moments; `COWPROF_FAULT_ROUNDS=N` runs N times
//! the default rounds.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{disk_tempdir, lock, require_root, Baseline, Running, BIN};
use cowprof::host::loopdev::loop_devices;
use cowprof::lab::{results::Results, run::HOST_MOUNTS_ENV};

fn seed() -> u64 {
    let seed = std::env::var("COWPROF_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    eprintln!("COWPROF_FAULT_SEED={seed}");
    seed
}

fn sig_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "SIGKILL",
    }
}

/// Nothing of process `pid` or under `dirs` is mounted or on a loop device, and `dirs` are empty.
fn assert_nothing_left(what: &str, needles: &[String], empty_dirs: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts: Vec<&str> = mountinfo
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
            .collect();
        let loops: Vec<(PathBuf, PathBuf)> = loop_devices()
            .into_iter()
            .filter(|(_, b)| needles.iter().any(|n| b.display().to_string().contains(n)))
            .collect();
        let losetup = Command::new("losetup").arg("-a").output().unwrap();
        let losetup = String::from_utf8_lossy(&losetup.stdout).into_owned();
        let in_losetup = needles.iter().any(|n| losetup.contains(n.as_str()));
        let files: Vec<PathBuf> = empty_dirs
            .iter()
            .filter(|d| d.exists())
            .flat_map(|d| fs::read_dir(d).unwrap().flatten().map(|e| e.path()))
            .collect();
        if mounts.is_empty() && loops.is_empty() && !in_losetup && files.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: left mounts {mounts:?}, loops {loops:?} (losetup -a: {losetup}), files {files:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sleeps `delay` unless the child exits first; then signals it if it still runs.
/// Returns whether the signal was sent.
fn signal_after(running: &mut Running, delay: Duration, sig: libc::c_int) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if let Ok(Some(_)) = running.child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Ok(Some(_)) = running.child.try_wait() {
        return false;
    }
    running.signal(sig);
    true
}

/// Killed by `sig` itself: it arrived before cowprof installed its handlers (the first
/// milliseconds after exec), when it had made nothing yet.
fn early_death(status: std::process::ExitStatus, sig: libc::c_int) -> bool {
    std::os::unix::process::ExitStatusExt::signal(&status) == Some(sig)
}

const BENCH_SPEC: &str = "filesystems = [\"ext4\"]\nops = [\"first_write\", \"unlink\"]\n";

#[test]
fn signals_at_random_moments_leave_nothing() {
    if !require_root("signals_at_random_moments_leave_nothing") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let mut rng = fastrand::Rng::with_seed(seed());
    let sigs = [libc::SIGINT, libc::SIGTERM];
    // COWPROF_FAULT_ROUNDS=N: N times the default rounds (2 bench, 3 import, 2 record).
    let scale: usize = std::env::var("COWPROF_FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);

    // bench --quick on a loop-mounted ext4, stacks in our namespace (so a leftover shows here).
    let dir = disk_tempdir();
    let spec = dir.path().join("spec.toml");
    fs::write(&spec, BENCH_SPEC).unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    for round in 0..2 * scale {
        let sig = sigs[rng.usize(..2)];
        let delay = Duration::from_millis(rng.u64(0..2500));
        let out = dir.path().join(format!("out{round}"));
        let mut running = Running::spawn(
            Command::new(BIN)
                .env(HOST_MOUNTS_ENV, "1")
                .args(["bench", "--quick", "--spec"])
                .arg(&spec)
                .arg("--out")
                .arg(&out)
                .arg("--workdir")
                .arg(&work),
        );
        let pid = running.pid();
        let sent = signal_after(&mut running, delay, sig);
        let (status, _, stderr) = running.wait(Duration::from_mins(2));
        let what = format!("bench round {round}: {} after {delay:?}", sig_name(sig));
        eprintln!("{what}: {status}");
        if sent && early_death(status, sig) {
            // Before the handlers were installed: nothing made yet (checked below).
        } else if sent && status.code() == Some(130) {
            assert!(stderr.contains("interrupted"), "{what}: {stderr}");
            assert!(!out.join("results.json").exists(), "{what}");
        } else {
            assert_eq!(status.code(), Some(0), "{what}: {stderr}");
            let text = fs::read_to_string(out.join("results.json")).expect("results.json");
            let _: Results = serde_json::from_str(&text).expect("results.json parses");
        }
        assert_nothing_left(
            &what,
            &[format!("cowprof-lab-{pid}")],
            std::slice::from_ref(&work),
        );
        assert!(
            !Path::new(&format!("/run/cowprof/lab-{pid}.json")).exists(),
            "{what}: state file left"
        );
    }

    // image import of an archive made here: 3 gzip layers of 4000 small files each.
    let archive = make_archive(dir.path());
    let store = dir.path().join("store");
    let import = |store: &Path| {
        let mut c = Command::new(BIN);
        c.arg("image")
            .arg("--store")
            .arg(store)
            .arg("import")
            .arg(&archive);
        c
    };
    for round in 0..3 * scale {
        let sig = sigs[rng.usize(..2)];
        let delay = Duration::from_millis(rng.u64(0..1500));
        let _ = fs::remove_dir_all(&store);
        let mut running = Running::spawn(&mut import(&store));
        let sent = signal_after(&mut running, delay, sig);
        let (status, _, stderr) = running.wait(Duration::from_mins(1));
        let what = format!("import round {round}: {} after {delay:?}", sig_name(sig));
        eprintln!("{what}: {status}");
        if sent && early_death(status, sig) {
            // Before the handlers were installed: nothing made yet (checked below).
        } else if sent && status.code() == Some(130) {
            assert!(stderr.contains("interrupted"), "{what}: {stderr}");
        } else {
            assert_eq!(status.code(), Some(0), "{what}: {stderr}");
        }
        assert_nothing_left(&what, &[], &[store.join("tmp"), store.join("run")]);
        assert_layers_complete(&what, &store);
    }
    // SIGKILL mid-import: the next import removes the dead run's temp and completes.
    {
        let _ = fs::remove_dir_all(&store);
        let mut running = Running::spawn(&mut import(&store));
        let delay = Duration::from_millis(rng.u64(100..1000));
        signal_after(&mut running, delay, libc::SIGKILL);
        let _ = running.wait(Duration::from_mins(1));
        let out = Command::new(BIN)
            .arg("clean")
            .arg("--workdir")
            .arg(&work)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "clean: {out:?}");
        let out = import(&store).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "import after SIGKILL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_nothing_left(
            "import after SIGKILL",
            &[],
            &[store.join("tmp"), store.join("run")],
        );
        assert_layers_complete("import after SIGKILL", &store);
    }

    // record: a signal while loading, attaching or recording always ends it with exit 0.
    for round in 0..2 * scale {
        let sig = sigs[rng.usize(..2)];
        let delay = Duration::from_millis(rng.u64(0..2000));
        let mut running = Running::spawn(Command::new(BIN).args(["record", "--json"]));
        let sent = signal_after(&mut running, delay, sig);
        let (status, _, stderr) = running.wait(Duration::from_mins(1));
        let what = format!("record round {round}: {} after {delay:?}", sig_name(sig));
        eprintln!("{what}: {status}");
        assert!(sent, "{what}: record ended by itself: {stderr}");
        if !early_death(status, sig) {
            assert_eq!(status.code(), Some(0), "{what}: {stderr}");
        }
        baseline.assert_clean(&what);
    }
    // SIGKILL of record: the kernel releases the programs with the process's fds.
    {
        let mut running = Running::spawn(Command::new(BIN).args(["record", "--json"]));
        let delay = Duration::from_millis(rng.u64(0..3000));
        signal_after(&mut running, delay, libc::SIGKILL);
        let _ = running.wait(Duration::from_mins(1));
        baseline.assert_clean("record SIGKILL");
    }
    drop(dir);
    baseline.assert_clean("signals_at_random_moments_leave_nothing");
}

/// Every layer directory in the store is complete: its metadata file exists next to it.
fn assert_layers_complete(what: &str, store: &Path) {
    let layers = store.join("layers/sha256");
    let Ok(rd) = fs::read_dir(&layers) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains("tmp") && !name.starts_with('.'),
            "{what}: stray entry {name} in {}",
            layers.display()
        );
    }
}

fn make_archive(dir: &Path) -> PathBuf {
    use sha2::{Digest as _, Sha256};
    let hex = |b: &[u8]| {
        b.iter().fold(String::new(), |mut s, x| {
            let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{x:02x}"));
            s
        })
    };
    let mut layers = Vec::new();
    for l in 0..3 {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..4000 {
            let data = format!("layer {l} file {i}\n").repeat(8);
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, format!("d{}/f{i}", i % 40), data.as_bytes())
                .unwrap();
        }
        let tar = b.into_inner().unwrap();
        let diff_id = format!("sha256:{}", hex(&Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        layers.push((gz.finish().unwrap(), diff_id));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
        "history": [],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", hex(&Sha256::digest(&config)));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": ["faults:latest"], "Layers": names,
    }]);
    let path = dir.join("archive.tar");
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add(&config_name, &config);
    for (n, (blob, _)) in names.iter().zip(&layers) {
        add(n, blob);
    }
    b.into_inner().unwrap().flush().unwrap();
    path
}
