//! `cowprof top` against the scenario workload on real overlay stacks: the plain mode's tables
//! per interval with exact counts, and the live view under tmux (a real terminal): its screen
//! rows and totals, the sort keys, and a terminal restored after `q` and after Ctrl-C.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    build_stacks, canon, disk_tempdir, lock, require_root, Baseline, Running, BIN, START_TIMEOUT,
};
use cowprof::{event::Backend, scenario};

/// Runs the scenario workload under `comm` (a symlink to cowprof named so) on both stacks.
fn workload(comm_bin: &Path, main: &str, meta: Option<&str>) {
    let mut w = Command::new(comm_bin);
    w.args(["__workload", main]);
    if let Some(m) = meta {
        w.arg(m);
    }
    let status = w.status().expect("run the workload");
    assert!(status.success(), "workload: {status}");
}

/// `(interval, events in it, events since start)` of a header line.
fn header(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix("cowprof top: interval ")?;
    let (n, rest) = rest.split_once(" (")?;
    let (_, rest) = rest.split_once("): ")?;
    let (e, rest) = rest.split_once(" events, ")?;
    let (t, _) = rest.split_once(" since start")?;
    Some((n.parse().ok()?, e.parse().ok()?, t.parse().ok()?))
}

#[test]
fn plain_mode_counts_every_interval_exactly() {
    if !require_root("plain_mode_counts_every_interval_exactly") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let dir = disk_tempdir();
    let root = canon(dir.path());
    let (main, meta) = build_stacks(&root);
    let main_mount = canon(&main.merged).display().to_string();
    let meta_mount = meta
        .as_ref()
        .map(|m| canon(&m.merged).display().to_string());
    let comm = "cowproftop1";
    let comm_bin = root.join(comm);
    std::os::unix::fs::symlink(BIN, &comm_bin).expect("symlink");

    let mut top = Running::spawn(Command::new(BIN).args([
        "top",
        "--plain",
        "--interval",
        "2s",
        "--count",
        "4",
        "--comm",
        comm,
        "--rows",
        "50",
    ]));
    // The first table comes once the probes are attached and one interval has passed.
    let first = top.next_line(START_TIMEOUT);
    assert_eq!(header(&first), Some((1, 0, 0)), "{first}");
    workload(&comm_bin, &main_mount, meta_mount.as_deref());
    let (status, rest, stderr) = top.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "top: {stderr}");
    let mut lines = vec![first];
    lines.extend(rest);
    let heads: Vec<(u64, u64, u64)> = lines.iter().filter_map(|l| header(l)).collect();
    let total = scenario::expected(Backend::Tracepoint, meta.is_some()).len() as u64;
    let main_n = scenario::expected(Backend::Tracepoint, false).len() as u64;
    // Exactly --count tables, numbered; every event in exactly one interval.
    assert_eq!(
        heads.iter().map(|h| h.0).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "{lines:#?}"
    );
    assert_eq!(heads.iter().map(|h| h.1).sum::<u64>(), total, "{lines:#?}");
    let mut since = 0;
    for h in &heads {
        since += h.1;
        assert_eq!(h.2, since, "running total: {heads:?}");
    }
    // The last table: the main mount's TOTAL is its events, the interval's COUNT is 0 unless
    // the workload ran in it.
    let last = lines
        .iter()
        .rposition(|l| l.starts_with("cowprof top: interval 4"))
        .expect("last table");
    let mount_row = lines[last..]
        .iter()
        .find(|l| l.trim_start().starts_with(&main_mount))
        .unwrap_or_else(|| panic!("no row for {main_mount}: {lines:#?}"));
    let cols: Vec<&str> = mount_row.split_whitespace().collect();
    assert_eq!(
        cols.last(),
        Some(&main_n.to_string().as_str()),
        "{mount_row}"
    );
    let interval4 = heads[3].1;
    assert_eq!(cols[1], interval4.min(main_n).to_string(), "{mount_row}");
    // Every file of the main stack appears in the file table of the last interval with total 1+.
    let files: Vec<&String> = lines[last..]
        .iter()
        .filter(|l| l.trim_start().starts_with(&format!("{main_mount}/")))
        .collect();
    assert!(!files.is_empty(), "{lines:#?}");
    drop(meta);
    drop(main);
    drop(dir);
    baseline.assert_clean("plain_mode_counts_every_interval_exactly");
}

/// A tmux server of our own, on a socket of our own in the system's temp dir; killed and its
/// socket removed on drop (tmux leaves the socket file behind).
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Option<Self> {
        let socket = std::env::temp_dir().join(format!("cowprof-test-tmux-{}", std::process::id()));
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .args(["bash", "--norc", "--noprofile"])
            .env("PS1", "$ ")
            .status()
            .ok()?
            .success();
        ok.then_some(Self { socket })
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "0"];
        a.extend_from_slice(keys);
        self.cmd(&a);
    }

    fn line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "0"])
    }

    /// Waits until the screen satisfies `ok`; returns it (panics with the screen on timeout).
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn alternate_on(&self) -> bool {
        self.cmd(&["display-message", "-p", "-t", "0", "#{alternate_on}"])
            .trim()
            == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
        let _ = fs::remove_file(&self.socket);
    }
}

#[test]
fn live_view_under_tmux() {
    if !require_root("live_view_under_tmux") {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIP live_view_under_tmux: no tmux (scripts/setup installs it)");
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let dir = disk_tempdir();
    let root = canon(dir.path());
    let (main, meta) = build_stacks(&root);
    let main_mount = canon(&main.merged).display().to_string();
    let meta_mount = meta
        .as_ref()
        .map(|m| canon(&m.merged).display().to_string());
    let comm = "cowproftop2";
    let comm_bin = root.join(comm);
    std::os::unix::fs::symlink(BIN, &comm_bin).expect("symlink");
    let main_n = scenario::expected(Backend::Tracepoint, false).len();

    let tmux = Tmux::start(200, 70).expect("start tmux");
    let before = root.join("stty-before");
    let after = root.join("stty-after");
    tmux.line(&format!("stty -g > {}; echo READY", before.display()));
    tmux.wait_for("the shell", |s| s.lines().any(|l| l == "READY"));
    for (round, quit) in [(1, "q"), (2, "C-c")] {
        let _ = std::fs::remove_file(&after);
        tmux.line(&format!(
            "{BIN} top --interval 1s --comm {comm}; echo EXIT$?; stty -g > {}",
            after.display()
        ));
        tmux.wait_for("the live view", |s| {
            s.contains("cowprof top: interval 1 ") && s.contains("by file")
        });
        assert!(tmux.alternate_on(), "top draws on the alternate screen");
        if round == 1 {
            workload(&comm_bin, &main_mount, meta_mount.as_deref());
            // The mount table: the main stack's row with its exact total (last column).
            let screen = tmux.wait_for("the main mount's total", |s| {
                s.lines().any(|l| {
                    let l = l.trim_start();
                    l.starts_with(&main_mount)
                        && l.split_whitespace().last() == Some(&main_n.to_string())
                })
            });
            let total = scenario::expected(Backend::Tracepoint, meta.is_some()).len();
            assert!(
                screen.contains(&format!(" {total} since start")),
                "{screen}"
            );
            assert!(screen.contains("sort by time"), "{screen}");
            tmux.keys(&["c"]);
            tmux.wait_for("sort by count", |s| s.contains("sort by count"));
            tmux.keys(&["b"]);
            tmux.wait_for("sort by bytes", |s| s.contains("sort by bytes"));
        }
        tmux.keys(&[quit]);
        let screen = tmux.wait_for("top to exit", |s| s.lines().any(|l| l == "EXIT0"));
        // Back on the primary screen, with the shell's earlier lines, in cooked mode.
        assert!(!tmux.alternate_on(), "alternate screen left on:\n{screen}");
        assert!(screen.lines().any(|l| l == "READY"), "{screen}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !after.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            std::fs::read_to_string(&before).expect("stty before"),
            std::fs::read_to_string(&after).expect("stty after"),
            "terminal settings not restored after {quit}"
        );
    }
    drop(tmux);
    drop(meta);
    drop(main);
    drop(dir);
    baseline.assert_clean("live_view_under_tmux");
}
