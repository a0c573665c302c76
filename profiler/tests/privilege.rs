//! Privilege and bad use: root with capabilities dropped is refused in one sentence naming the
//! missing capabilities (exit 3); outputs written under sudo go to the sudo user, and only what
//! the run wrote; user-given paths are never followed through symlinks into places cowprof then
//! deletes or chowns. (Not root at all: `not_root_exits_3` in `cli_errors.rs`.)

mod common;

use std::{
    fs,
    os::unix::fs::{symlink, MetadataExt as _},
    process::Command,
};

use common::{disk_tempdir, lock, require_root, Baseline, BIN};

#[test]
fn dropped_capabilities_are_named_exit_3() {
    let test = "dropped_capabilities_are_named_exit_3";
    if !require_root(test) || !common::require_tool(test, "setpriv", "util-linux") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    for (drop, named) in [
        ("-bpf,-perfmon,-sys_admin", "CAP_PERFMON,CAP_BPF"),
        ("-bpf,-sys_admin", "CAP_BPF"),
    ] {
        let out = Command::new("setpriv")
            .args(["--inh-caps=-all", &format!("--bounding-set={drop}"), "--"])
            .args([BIN, "record", "--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{drop}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("cowprof: cowprof lacks {named} ")),
            "{drop}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    baseline.assert_clean("dropped_capabilities_are_named_exit_3");
}

/// `compare --out` as root with `SUDO_UID`/`SUDO_GID` set: the new directory and every file in it go
/// to that user; a file that was there before and a symlink's target stay root's.
#[test]
fn sudo_user_owns_what_compare_wrote_and_nothing_else() {
    if !require_root("sudo_user_owns_what_compare_wrote_and_nothing_else") {
        return;
    }
    let dir = disk_tempdir();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/compare");
    let run = |out: &std::path::Path| {
        let o = Command::new(BIN)
            .env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534")
            .arg("compare")
            .arg(format!("{data}/dir-default.json"))
            .arg(format!("{data}/dir-volatile.json"))
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        // No thresholds: nothing is gated, exit 0.
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // A new directory: it and all it holds.
    let fresh = dir.path().join("fresh");
    run(&fresh);
    let md = fs::metadata(&fresh).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    // The three reports, the JSON and one CDF chart (SVG + PNG) for the one op both runs share.
    let cdf = "cdf-first-write-dir-fstype-ext4-default-options-warm-dir-fstype-ext4-volatile-warm";
    let reports: Vec<String> = [
        &format!("{cdf}.png"),
        &format!("{cdf}.svg"),
        "compare-junit.xml",
        "compare.json",
        "compare.md",
        "compare.txt",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let names = |d: &std::path::Path, skip: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = walk(d)
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().display().to_string())
            .filter(|n| !skip.contains(&n.as_str()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&fresh, &[]), reports, "compare wrote its reports");
    for e in walk(&fresh) {
        let md = fs::symlink_metadata(&e).unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534), "{}", e.display());
    }

    // An existing directory with a root file and a symlink to a root file outside.
    let old = dir.path().join("old");
    fs::create_dir(&old).unwrap();
    fs::write(old.join("mine.txt"), "keep").unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "root's").unwrap();
    symlink(&victim, old.join("link")).unwrap();
    // Older than the run.
    let past = std::time::SystemTime::now() - std::time::Duration::from_hours(1);
    for p in [&old.join("mine.txt"), &victim] {
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
    run(&old);
    assert_eq!(
        fs::metadata(&old).unwrap().uid(),
        0,
        "the existing dir stays root's"
    );
    assert_eq!(fs::metadata(old.join("mine.txt")).unwrap().uid(), 0);
    assert_eq!(fs::metadata(&victim).unwrap().uid(), 0, "symlink target");
    assert_eq!(fs::symlink_metadata(old.join("link")).unwrap().uid(), 0);
    assert_eq!(names(&old, &["mine.txt", "link"]), reports);
    let written: Vec<_> = walk(&old)
        .into_iter()
        .filter(|p| !p.ends_with("mine.txt") && !p.ends_with("link"))
        .collect();
    for p in written {
        assert_eq!(
            fs::symlink_metadata(&p).unwrap().uid(),
            65534,
            "{}",
            p.display()
        );
    }
}

/// Without sudo variables nothing changes hands.
#[test]
fn without_sudo_outputs_stay_roots() {
    if !require_root("without_sudo_outputs_stay_roots") {
        return;
    }
    let dir = disk_tempdir();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/compare");
    let out = dir.path().join("o");
    let o = Command::new(BIN)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .arg("compare")
        .arg(format!("{data}/dir-default.json"))
        .arg(format!("{data}/dir-volatile.json"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(matches!(o.status.code(), Some(0 | 1)));
    for p in walk(&out) {
        assert_eq!(fs::symlink_metadata(&p).unwrap().uid(), 0);
    }
}

/// `clean --workdir W` where W holds `cowprof-lab-<dead pid>` as a symlink to a directory of
/// someone else's files: the link goes, the files stay. And W itself given as a symlink: clean
/// removes the dead run's real directory inside it, and nothing else.
#[test]
fn clean_never_deletes_through_symlinks() {
    if !require_root("clean_never_deletes_through_symlinks") {
        return;
    }
    let _lock = lock();
    let dir = disk_tempdir();
    // A pid that is certainly dead: a child we reaped.
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let victim = dir.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("precious"), "data").unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    symlink(&victim, work.join(format!("cowprof-lab-{dead}"))).unwrap();
    let out = Command::new(BIN)
        .args(["clean", "--workdir"])
        .arg(&work)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(victim.join("precious").exists(), "clean followed a symlink");
    assert!(
        fs::symlink_metadata(work.join(format!("cowprof-lab-{dead}"))).is_err(),
        "the link itself is removed"
    );

    // --workdir is a symlink to a directory with a dead run's directory and other files.
    let real = dir.path().join("real");
    fs::create_dir_all(real.join(format!("cowprof-lab-{dead}/tmpfs"))).unwrap();
    fs::write(real.join("keep"), "x").unwrap();
    let link = dir.path().join("worklink");
    symlink(&real, &link).unwrap();
    let out = Command::new(BIN)
        .args(["clean", "--workdir"])
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!real.join(format!("cowprof-lab-{dead}")).exists());
    assert!(real.join("keep").exists());
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
