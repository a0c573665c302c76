//! Copy-up phases against ground truth: every copy-up's phases sum exactly to its latency; a
//! data copy-up of N bytes (the upper file's size minus the appended byte) reports N bytes by
//! splice on ext4 and tmpfs; fsync is 0 under `volatile` and > 0 otherwise on a disk-backed
//! (loop ext4) upper; a metacopy has no data phase; a copy-up on a write-throttled device
//! (blkio throttle on the loop device) spends its wait in the block-I/O phase.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{
    canon, disk_tempdir, lock, parse_recording, require_root, skip, Recording, Running, BIN,
};
use cowprof::event::{Backend, DataMethod, Event, Kind};

fn run(cmd: &mut Command) {
    let status = cmd.status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed");
}

/// Everything a case mounted or made, undone on drop (also when an assertion fails).
#[derive(Default)]
struct Cleanup {
    mounts: Vec<PathBuf>,
    cgroup: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        if let Some(cg) = &self.cgroup {
            let _ = fs::remove_dir(cg);
        }
    }
}

/// A 256 MiB ext4 image loop-mounted at `root/disk` (or tmpfs when `ext4` is false).
fn backing(root: &Path, ext4: bool, c: &mut Cleanup) -> PathBuf {
    let disk = root.join("disk");
    fs::create_dir_all(&disk).unwrap();
    if ext4 {
        let img = root.join("img");
        let f = fs::File::create(&img).unwrap();
        f.set_len(256 << 20).unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&disk));
    } else {
        run(Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&disk));
    }
    c.mounts.push(disk.clone());
    disk
}

/// Layers under `disk` with `files` (name, size) in the lower, mounted with `extra` options.
fn overlay(disk: &Path, files: &[(&str, usize)], extra: &str, c: &mut Cleanup) -> PathBuf {
    for d in ["l/d", "u", "w", "m"] {
        fs::create_dir_all(disk.join(d)).unwrap();
    }
    for (name, size) in files {
        let data: Vec<u8> = (0..*size).map(|i| (i % 251) as u8).collect();
        fs::write(disk.join("l").join(name), data).unwrap();
    }
    run(&mut Command::new("sync"));
    let opts = format!(
        "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w{extra}",
        disk.display()
    );
    let m = disk.join("m");
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&m));
    c.mounts.push(m.clone());
    canon(&m)
}

fn record(m: &Path, script: &str) -> Recording {
    record_with(m, script, &[])
}

fn record_with(m: &Path, script: &str, extra: &[&str]) -> Recording {
    let mut running = Running::spawn(
        Command::new(BIN)
            .args(["record", "--json", "--mount", m.to_str().unwrap()])
            .args(extra)
            .args(["--", "sh", "-c", script]),
    );
    let start = running.next_line(common::START_TIMEOUT);
    let (status, rest, stderr) = running.wait(Duration::from_mins(2));
    assert!(status.success(), "record failed: {stderr}");
    let mut lines = vec![start];
    lines.extend(rest);
    parse_recording(&lines)
}

/// Every copy-up's phases add up to its latency exactly; returns the copy-ups by path.
fn checked(rec: &Recording) -> Vec<&Event> {
    let copy_ups: Vec<&Event> = rec.events.iter().filter(|e| e.kind.is_copy_up()).collect();
    for ev in &copy_ups {
        let p = ev
            .phases
            .unwrap_or_else(|| panic!("copy-up without phases: {ev:?}"));
        let sum: u64 = p.values().iter().flatten().sum();
        assert_eq!(
            sum, ev.latency_ns,
            "phases of {} do not sum: {p:?}",
            ev.path
        );
        assert!(
            p.offcpu_block_ns.is_some() && p.offcpu_other_ns.is_some(),
            "{p:?}"
        );
    }
    for ev in rec.events.iter().filter(|e| !e.kind.is_copy_up()) {
        assert_eq!(ev.phases, None, "{ev:?}");
    }
    copy_ups
}

fn event<'a>(evs: &[&'a Event], kind: Kind, path: &str) -> &'a Event {
    let got: Vec<&&Event> = evs
        .iter()
        .filter(|e| e.kind == kind && e.path == path)
        .collect();
    assert_eq!(got.len(), 1, "one {kind:?} of {path} in {evs:#?}");
    got[0]
}

const FILES: &[(&str, usize)] = &[("big", 1_000_003), ("small", 5), ("d/f", 3)];
const APPEND: &str = "echo -n z >> big && echo -n z >> small && echo -n z >> d/f";

/// Data copy-ups of `FILES` by `APPEND`: N bytes (the upper file's size minus the appended
/// byte, ground truth) by splice; fsync as `fsync_check` says.
fn check_data(rec: &Recording, disk: &Path, fsync_check: impl Fn(Option<u64>, &str)) {
    let evs = checked(rec);
    assert_eq!(evs.len(), 4, "3 data copy-ups and the dir d: {evs:#?}");
    event(&evs, Kind::DirCopyUp, "d");
    for (name, _) in FILES {
        let ev = event(&evs, Kind::DataCopyUp, name);
        let upper = fs::metadata(disk.join("u").join(name)).unwrap().len();
        let p = ev.phases.unwrap();
        assert_eq!(p.data_bytes, Some(upper - 1), "{name}: {p:?}");
        assert_eq!(p.data_method, Some(DataMethod::Splice), "{name}: {p:?}");
        fsync_check(p.fsync_ns, name);
    }
}

#[test]
fn phases_on_ext4_tmpfs_volatile_metacopy_and_a_throttled_disk() {
    if !require_root("record_phases") {
        return;
    }
    let _l = lock();
    let dir = disk_tempdir();
    let root = dir.path();

    // ext4 upper: fsync measured (> 0: it writes the copied data).
    {
        let mut c = Cleanup::default();
        let disk = backing(&root.join("ext4"), true, &mut c);
        let m = overlay(&disk, FILES, "", &mut c);
        let rec = record(&m, &format!("cd '{}' && {APPEND}", m.display()));
        check_data(&rec, &disk, |fsync, name| {
            assert!(fsync.is_some_and(|f| f > 0), "{name}: fsync {fsync:?}");
        });
        // The summary has the phases of both kinds and a reading.
        assert!(rec.summary.phases_by_kind.contains_key("data_copy_up"));
        assert!(!rec.summary.explain.is_empty());
    }
    // ext4 upper with `volatile`: overlay skips the fsync.
    {
        let mut c = Cleanup::default();
        let disk = backing(&root.join("volatile"), true, &mut c);
        let m = overlay(&disk, FILES, ",volatile", &mut c);
        let rec = record(&m, &format!("cd '{}' && {APPEND}", m.display()));
        check_data(&rec, &disk, |fsync, name| {
            assert_eq!(fsync, Some(0), "{name}: fsync under volatile");
        });
        // volatile leaves its marker dir in the work dir: unmount before the image goes.
    }
    // tmpfs upper: bytes by splice; the tracepoint backend has no fsync tracepoint there.
    let backend;
    {
        let mut c = Cleanup::default();
        let disk = backing(&root.join("tmpfs"), false, &mut c);
        let m = overlay(&disk, FILES, "", &mut c);
        let rec = record(&m, &format!("cd '{}' && {APPEND}", m.display()));
        backend = rec.start.backend;
        check_data(&rec, &disk, |fsync, name| {
            if backend == Backend::Tracepoint {
                assert_eq!(fsync, None, "{name}: no fsync tracepoint on tmpfs");
            }
        });
    }
    // --no-phases: the same copy-ups, exact, none with phases, and no phase table.
    {
        let mut c = Cleanup::default();
        let disk = backing(&root.join("nophases"), false, &mut c);
        let m = overlay(&disk, FILES, "", &mut c);
        let rec = record_with(
            &m,
            &format!("cd '{}' && {APPEND}", m.display()),
            &["--no-phases"],
        );
        let mut got: Vec<(Kind, &str)> = rec
            .events
            .iter()
            .map(|e| (e.kind, e.path.as_str()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (Kind::DataCopyUp, "big"),
                (Kind::DataCopyUp, "d/f"),
                (Kind::DataCopyUp, "small"),
                (Kind::DirCopyUp, "d"),
            ],
            "{:#?}",
            rec.events
        );
        assert!(
            rec.events.iter().all(|e| e.phases.is_none()),
            "{:#?}",
            rec.events
        );
        assert!(
            rec.summary.phases_by_kind.is_empty(),
            "{:?}",
            rec.summary.phases_by_kind
        );
        assert_eq!(rec.summary.drops.total(), 0);
    }
    metacopy_case(root);
    throttled_case(root);
}

/// metacopy: a chmod copies metadata only, no data phase.
fn metacopy_case(root: &Path) {
    if cowprof::host::mounts::overlay_param("metacopy").is_some() {
        let mut c = Cleanup::default();
        let disk = backing(&root.join("meta"), false, &mut c);
        let m = overlay(&disk, &[("f", 4096)], ",metacopy=on", &mut c);
        let rec = record(&m, &format!("chmod 600 '{}/f'", m.display()));
        let evs = checked(&rec);
        let ev = event(&evs, Kind::Metacopy, "f");
        let p = ev.phases.unwrap();
        assert!(matches!(p.data_ns, None | Some(0)), "{p:?}");
        assert!(matches!(p.data_bytes, None | Some(0)), "{p:?}");
        assert_eq!(p.data_method, None, "{p:?}");
    } else {
        skip(
            "record_phases",
            "no-metacopy",
            "overlay has no metacopy parameter on this kernel",
        );
    }
}

/// A write-throttled upper device (1 MiB/s): the fsync of a 1 MiB copy-up waits about a
/// second for block I/O, and that wait is in the block-I/O phase.
fn throttled_case(root: &Path) {
    let blkio = Path::new("/sys/fs/cgroup/blkio");
    if blkio.join("blkio.throttle.write_bps_device").exists() {
        let cg = blkio.join(format!("cowprof-phases-{}", std::process::id()));
        fs::create_dir(&cg).unwrap();
        let mut c = Cleanup {
            mounts: vec![],
            cgroup: Some(cg.clone()),
        };
        let disk = backing(&root.join("throttled"), true, &mut c);
        let m = overlay(&disk, &[("big", 1 << 20)], "", &mut c);
        let src = String::from_utf8(
            Command::new("findmnt")
                .args(["-no", "MAJ:MIN"])
                .arg(&disk)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        fs::write(
            cg.join("blkio.throttle.write_bps_device"),
            format!("{} {}", src.trim(), 1 << 20),
        )
        .unwrap();
        let rec = record(
            &m,
            &format!(
                "echo $$ > '{}/cgroup.procs' && echo -n z >> '{}/big'",
                cg.display(),
                m.display()
            ),
        );
        let evs = checked(&rec);
        let ev = event(&evs, Kind::DataCopyUp, "big");
        let p = ev.phases.unwrap();
        let block = p.offcpu_block_ns.unwrap();
        assert!(
            block >= 500_000_000 && block * 2 > ev.latency_ns,
            "block-I/O wait {block} ns of {} ns: {p:?}",
            ev.latency_ns
        );
        assert!(
            rec.summary.explain[0].contains("waiting for block I/O"),
            "{:?}",
            rec.summary.explain
        );
    } else {
        skip(
            "record_phases",
            "no-blkio-throttle",
            "no cgroup v1 blkio throttle (/sys/fs/cgroup/blkio) to slow the upper device",
        );
    }
}

/// The values of a `bpftool -j map dump` (of a map without BTF: each value a list of hex bytes)
/// as little-endian integers of up to 8 bytes, read from `file`.
fn dumped_values(file: &Path) -> Vec<u64> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("bpftool JSON");
    v.as_array()
        .unwrap_or_else(|| panic!("{}: not a list of entries: {text}", file.display()))
        .iter()
        .map(|e| {
            let bytes: Vec<u8> = e["value"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: an entry without value bytes: {e}", file.display()))
                .iter()
                .map(|b| {
                    let b = b.as_str().expect("a hex byte");
                    u8::from_str_radix(b.trim_start_matches("0x"), 16).expect("a hex byte")
                })
                .collect();
            bytes
                .iter()
                .take(8)
                .rev()
                .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
        })
        .collect()
}

/// A task that made a copy-up stays armed only while it lives: five processes each copy a file
/// up and exit, a sixth copies one up and stays (it execs `sleep`). While `record` runs (read
/// with bpftool from inside the recorded command), its map of armed tasks holds exactly the
/// live one on the tracepoint backend, which keeps tasks armed between copy-ups (the kprobe
/// backend disarms each at its copy-up's end: none), and the per-bucket counts `sched_switch`
/// checks first add up to the same number: the exit hook removed the five and lowered their
/// counts.
#[test]
fn armed_tasks_are_forgotten_when_they_exit() {
    if !require_root("record_phases") {
        return;
    }
    if Command::new("bpftool").arg("version").output().is_err() {
        skip(
            "record_phases",
            "no-bpftool",
            "bpftool not found (Debian package bpftool): the armed tasks cannot be read",
        );
        return;
    }
    let _l = lock();
    let dir = disk_tempdir();
    let root = dir.path();
    let mut c = Cleanup::default();
    let disk = backing(&root.join("exit"), false, &mut c);
    let names = ["f1", "f2", "f3", "f4", "f5", "g"];
    let files: Vec<(&str, usize)> = names.iter().map(|f| (*f, 4096)).collect();
    let m = overlay(&disk, &files, "", &mut c);
    let out = root.join("maps");
    fs::create_dir_all(&out).unwrap();
    let script = format!(
        "cd '{m}' && for i in 1 2 3 4 5; do sh -c \"echo x >> f$i\"; done; \
         sh -c 'echo cowprof-marker >> g; exec sleep 60' & s=$!; \
         until grep -q cowprof-marker g; do sleep 0.05; done; \
         bpftool -j map dump name PHASE_TASKS > '{o}/tasks.json' && \
         bpftool -j map dump name PHASE_ARMED > '{o}/armed.json'; rc=$?; kill $s; exit $rc",
        m = m.display(),
        o = out.display()
    );
    let rec = record(&m, &script);
    let evs = checked(&rec);
    let mut paths: Vec<&str> = evs.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, names, "{evs:#?}");
    let armed = dumped_values(&out.join("tasks.json")).len() as u64;
    let counted: u64 = dumped_values(&out.join("armed.json")).iter().sum();
    let expected = u64::from(rec.start.backend == Backend::Tracepoint);
    assert_eq!(armed, expected, "armed tasks while one of six lives");
    assert_eq!(counted, expected, "bucket counts while one of six lives");
}
