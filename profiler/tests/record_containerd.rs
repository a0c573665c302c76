//! Kubernetes pods through a real containerd (Debian's 1.6, as on a node): a private daemon
//! (own root, state and socket in a temp dir, overlayfs snapshotter, CRI plugin off) runs three
//! containers of the busybox test image with kubepods cgroup paths as the kubelet names them.
//! Pod A is in namespace `k8s.io` with the kubelet's labels (cgroupfs driver, besteffort); pod B
//! is a plain `default`-namespace container in a burstable pod cgroup, with no labels; pod C has
//! the labels and the systemd driver's names (`kubepods.slice/…/cri-containerd-<id>.scope`,
//! Guaranteed).
//! `record --containerd-socket` (through a read-only bind mount of the socket's directory, as
//! the `DaemonSet` mounts /run/containerd) must give every event its pod name, namespace, UID,
//! `QoS` and container name, and `/metrics` exact counts per `pod` label. The upper directories
//! are the ground truth. Everything is stopped and removed at the end, also on failure.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{lock, parse_recording, require_root, Baseline, Running, BIN, START_TIMEOUT};
use cowprof::{
    event::Kind,
    scenario::{UpperEntry, UpperTruth},
};

const IMAGE: &str = "docker.io/library/cowprof-test-busybox:latest";

/// (kind, path, container id, container name, pod name, pod namespace, pod UID, `QoS`)
type Row<'a> = (
    Kind,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).expect("a hex digit"))
        .collect()
}

fn uid() -> String {
    let h = hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One container of the test: its containerd namespace, id and pod cgroup.
struct Pod {
    namespace: &'static str,
    id: String,
    uid: String,
    /// `guaranteed` (directly under kubepods), `burstable` or `besteffort`.
    qos: &'static str,
    /// The kubelet's systemd-driver names (`….slice/cri-containerd-<id>.scope`) instead of its
    /// cgroupfs ones. runc here uses cgroupfs: the names are plain directories, but
    /// /proc/PID/cgroup shows them exactly as on a systemd node.
    systemd: bool,
}

impl Pod {
    fn cgroup(&self) -> String {
        let qos = (self.qos != "guaranteed").then_some(self.qos);
        if self.systemd {
            let uid = self.uid.replace('-', "_");
            match qos {
                Some(q) => format!(
                    "/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid}.slice/cri-containerd-{}.scope",
                    self.id
                ),
                None => format!(
                    "/kubepods.slice/kubepods-pod{uid}.slice/cri-containerd-{}.scope",
                    self.id
                ),
            }
        } else {
            match qos {
                Some(q) => format!("/kubepods/{q}/pod{}/{}", self.uid, self.id),
                None => format!("/kubepods/pod{}/{}", self.uid, self.id),
            }
        }
    }
}

/// A private containerd and what it made; dropping it removes all of it (containers and their
/// shims, the daemon, mounts under its dirs, the pod cgroups, the temp dir).
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
    sock: PathBuf,
    /// The socket's directory bind-mounted read-only, as the `DaemonSet` mounts /run/containerd.
    ro_dir: PathBuf,
    pods: Vec<Pod>,
}

impl Containerd {
    fn start() -> Self {
        for tool in ["containerd", "ctr", "containerd-shim-runc-v2", "runc"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{tool} is not installed; run scripts/setup"
            );
        }
        // /tmp, not the target dir: the socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("cowprof-ctrd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        for sub in ["root", "state", "run", "ro-run", "opt"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let sock = d.join("run/containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n\
             [plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\n  root_path = \"{snap}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = sock.display(),
            opt = d.join("opt").display(),
            snap = d.join("root/overlayfs").display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut me = Self {
            ro_dir: d.join("ro-run"),
            dir,
            daemon,
            sock,
            pods: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me
            .ctr("default")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 30 s: {}",
                std::fs::read_to_string(me.dir.path().join("containerd.log")).unwrap_or_default()
            );
            if let Ok(Some(s)) = me.daemon.try_wait() {
                panic!(
                    "containerd exited ({s}): {}",
                    std::fs::read_to_string(me.dir.path().join("containerd.log"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        run(Command::new("mount")
            .args(["--bind"])
            .arg(me.sock.parent().expect("socket dir"))
            .arg(&me.ro_dir));
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&me.ro_dir));
        me
    }

    fn ctr(&self, namespace: &str) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.sock).args(["-n", namespace]);
        c.stdin(Stdio::null());
        c
    }

    fn import(&self, namespace: &str, archive: &Path) {
        run(self
            .ctr(namespace)
            .args(["images", "import", "--snapshotter", "overlayfs"])
            .arg(archive));
    }

    /// `ctr run -d` in the pod's cgroup with these labels; the container sleeps until removed.
    fn run_pod(&mut self, pod: Pod, labels: &[(&str, &str)]) {
        let mut c = self.ctr(pod.namespace);
        c.args(["run", "-d", "--snapshotter", "overlayfs"]);
        c.args(["--cgroup", &pod.cgroup()]);
        for (k, v) in labels {
            c.args(["--label", &format!("{k}={v}")]);
        }
        c.args([IMAGE, &pod.id, "sleep", "3600"]);
        self.pods.push(pod);
        run(&mut c);
    }

    fn exec(&self, pod: &Pod, script: &str) {
        run(self.ctr(pod.namespace).args([
            "task",
            "exec",
            "--exec-id",
            &format!("w{}", hex(8)),
            &pod.id,
            "sh",
            "-c",
            script,
        ]));
    }

    fn rootfs(&self, pod: &Pod) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(pod.namespace)
            .join(&pod.id)
            .join("rootfs")
    }

    /// The container's upper dir, from its rootfs mount's options.
    fn upper(&self, pod: &Pod) -> PathBuf {
        let rootfs = self.rootfs(pod);
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(rootfs.to_str().expect("utf-8")))
            .unwrap_or_else(|| panic!("no mount at {}", rootfs.display()));
        let upper = line
            .split(',')
            .find_map(|o| o.strip_prefix("upperdir="))
            .expect("upperdir");
        PathBuf::from(upper)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for pod in &self.pods {
            let _ = self
                .ctr(pod.namespace)
                .args(["task", "kill", "-s", "KILL", &pod.id])
                .output();
            let _ = self
                .ctr(pod.namespace)
                .args(["task", "delete", "-f", &pod.id])
                .output();
            let _ = self
                .ctr(pod.namespace)
                .args(["container", "delete", &pod.id])
                .output();
        }
        // SAFETY: kill(2) of our own child, not yet reaped.
        unsafe { libc::kill(i32::try_from(self.daemon.id()).expect("pid"), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Whatever is still mounted below the temp dir (the read-only socket dir, a rootfs left
        // by a failed delete), deepest first.
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).output();
        }
        // The pod cgroups runc made in every hierarchy (the container's own is normally gone
        // with it), deepest first; a parent another pod still uses stays until its turn.
        for pod in &self.pods {
            let path = pod.cgroup();
            let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
            for h in cgroup_hierarchies() {
                for depth in (1..=comps.len()).rev() {
                    let _ = std::fs::remove_dir(Path::new(&h).join(comps[..depth].join("/")));
                }
            }
        }
        for pod in &self.pods {
            if let Some(top) = pod.cgroup().split('/').nth(1) {
                for h in cgroup_hierarchies() {
                    let _ = std::fs::remove_dir(Path::new(&h).join(top));
                }
            }
        }
    }
}

/// Mount points of every cgroup hierarchy (v1 controllers and the v2 tree) in this namespace.
fn cgroup_hierarchies() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .expect("mounts")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            matches!(f.get(2), Some(&("cgroup" | "cgroup2"))).then(|| f[1].to_owned())
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.contains(" 200 "), "{head}");
    body.to_owned()
}

/// `name{labels} value` sample lines of one metric, as (labels, value).
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .map(|rest| {
            let (labels, value) = rest.rsplit_once("} ").expect("a sample line");
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            (labels, value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn pods_named_by_containerd() {
    if !require_root("pods_named_by_containerd") {
        return;
    }
    let _lock = lock();
    let base = Baseline::take();
    let status = Command::new(repo().join("scripts/images"))
        .status()
        .expect("scripts/images");
    assert!(status.success(), "scripts/images failed");
    let archive = std::env::var_os("COWPROF_IMAGE_CACHE")
        .map_or_else(|| repo().join("target/image-cache"), PathBuf::from)
        .join("busybox.tar");

    let mut ctrd = Containerd::start();
    ctrd.import("k8s.io", &archive);
    ctrd.import("default", &archive);
    let a = Pod {
        namespace: "k8s.io",
        id: hex(64),
        uid: uid(),
        qos: "besteffort",
        systemd: false,
    };
    let b = Pod {
        namespace: "default",
        id: hex(64),
        uid: uid(),
        qos: "burstable",
        systemd: false,
    };
    let c = Pod {
        namespace: "k8s.io",
        id: hex(64),
        uid: uid(),
        qos: "guaranteed",
        systemd: true,
    };
    let c_uid = c.uid.clone();
    let a_uid = a.uid.clone();
    ctrd.run_pod(
        a,
        &[
            ("io.kubernetes.pod.name", "web-0"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.uid", &a_uid),
            ("io.kubernetes.container.name", "app"),
        ],
    );
    ctrd.run_pod(b, &[]);
    ctrd.run_pod(
        c,
        &[
            ("io.kubernetes.pod.name", "db-0"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.uid", &c_uid),
            ("io.kubernetes.container.name", "db"),
        ],
    );
    let (a, b, c) = (&ctrd.pods[0], &ctrd.pods[1], &ctrd.pods[2]);
    let (rootfs_a, rootfs_b, rootfs_c) = (ctrd.rootfs(a), ctrd.rootfs(b), ctrd.rootfs(c));
    let (upper_a, upper_b, upper_c) = (ctrd.upper(a), ctrd.upper(b), ctrd.upper(c));
    // What the kernel shows for the systemd-style pod (every line, v2 included).
    let task_c = run(ctrd.ctr(c.namespace).args(["task", "ls"]))
        .lines()
        .find(|l| l.starts_with(&c.id))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .expect("task of pod C");
    let cg = std::fs::read_to_string(format!("/proc/{task_c}/cgroup")).expect("cgroup");
    assert!(
        cg.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&c.cgroup())),
        "{cg}"
    );
    // The snapshotter the config names made the layers and the containers' upper dirs.
    let snapshots = ctrd.dir.path().join("root/overlayfs/snapshots");
    assert!(upper_a.starts_with(&snapshots), "{}", upper_a.display());
    assert!(upper_b.starts_with(&snapshots), "{}", upper_b.display());
    let (before_a, before_b, before_c) = (
        UpperTruth::read(&upper_a).expect("upper a"),
        UpperTruth::read(&upper_b).expect("upper b"),
        UpperTruth::read(&upper_c).expect("upper c"),
    );

    let port = free_port();
    let ro_sock = ctrd.ro_dir.join("containerd.sock");
    let mut rec = Running::spawn(
        Command::new(BIN)
            .args(["record", "--json", "--containerd-socket"])
            .arg(&ro_sock)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            // No Docker engine here, whatever runs on this host.
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    );
    let start = rec.next_line(START_TIMEOUT);
    assert!(start.contains(r#""type":"start""#), "{start}");

    // Pod A: two appends to files of the image's base layer (the first copies /etc up too) and
    // an rm of the file of its `COPY app.conf` layer; pod B: an rm (its /etc copied up for the
    // whiteout) and an append to that same app.conf, in its own rootfs.
    ctrd.exec(
        a,
        "echo x >> /etc/passwd && echo y >> /etc/group && rm /etc/app.conf",
    );
    ctrd.exec(b, "rm /etc/passwd && echo z >> /etc/app.conf");
    // Pod C (systemd-style cgroup, Guaranteed): one rm, its /etc copied up for the whiteout.
    ctrd.exec(c, "rm /etc/group");
    let ours = |l: &str| {
        l.contains(&format!("\"mount_point\":\"{}\"", rootfs_a.display()))
            || l.contains(&format!("\"mount_point\":\"{}\"", rootfs_b.display()))
            || l.contains(&format!("\"mount_point\":\"{}\"", rootfs_c.display()))
    };
    // 4 events in A, 3 in B, 2 in C; wait for all 9 before scraping.
    let mut lines = vec![start];
    let deadline = Instant::now() + Duration::from_mins(1);
    while lines.iter().filter(|l| ours(l)).count() < 9 {
        assert!(Instant::now() < deadline, "events so far: {lines:#?}");
        lines.push(rec.next_line(Duration::from_mins(1)));
    }
    let metrics = scrape(port);
    rec.signal(libc::SIGINT);
    let (status, rest, stderr) = rec.wait(Duration::from_mins(1));
    assert_eq!(status.code(), Some(0), "record failed: {stderr}");
    assert_eq!(
        stderr, "",
        "containerd named every container: nothing to say"
    );
    lines.extend(rest);
    let recording = parse_recording(&lines);

    // Ground truth: the upper dirs.
    let added = |before: &UpperTruth, upper: &Path| {
        let mut after = UpperTruth::read(upper).expect("upper").entries;
        after.retain(|k, _| !before.entries.contains_key(k));
        after
    };
    let map = |v: &[(&str, UpperEntry)]| -> BTreeMap<String, UpperEntry> {
        v.iter().map(|(p, e)| ((*p).to_owned(), *e)).collect()
    };
    assert_eq!(
        added(&before_a, &upper_a),
        map(&[
            ("etc", UpperEntry::Dir),
            ("etc/passwd", UpperEntry::File),
            ("etc/group", UpperEntry::File),
            ("etc/app.conf", UpperEntry::Whiteout),
        ])
    );
    assert_eq!(
        added(&before_b, &upper_b),
        map(&[
            ("etc", UpperEntry::Dir),
            ("etc/passwd", UpperEntry::Whiteout),
            ("etc/app.conf", UpperEntry::File),
        ])
    );
    assert_eq!(
        added(&before_c, &upper_c),
        map(&[
            ("etc", UpperEntry::Dir),
            ("etc/group", UpperEntry::Whiteout)
        ])
    );

    // Every event: kind and path, container and pod exactly.
    let rows = |rootfs: &Path| -> Vec<Row<'_>> {
        let m = rootfs.display().to_string();
        recording
            .events
            .iter()
            .filter(|e| e.mount_point.as_deref() == Some(m.as_str()))
            .map(|e| {
                (
                    e.kind,
                    e.path.as_str(),
                    e.container_id.as_deref(),
                    e.container_name.as_deref(),
                    e.pod_name.as_deref(),
                    e.pod_namespace.as_deref(),
                    e.pod_uid.as_deref(),
                    e.pod_qos.as_deref(),
                )
            })
            .collect()
    };
    let pod_a = |kind, path| {
        (
            kind,
            path,
            Some(a.id.as_str()),
            Some("app"),
            Some("web-0"),
            Some("shop"),
            Some(a.uid.as_str()),
            Some("besteffort"),
        )
    };
    let pod_b = |kind, path| {
        (
            kind,
            path,
            Some(b.id.as_str()),
            None,
            None,
            None,
            Some(b.uid.as_str()),
            Some("burstable"),
        )
    };
    assert_eq!(
        rows(&rootfs_a),
        [
            pod_a(Kind::DirCopyUp, "etc"),
            pod_a(Kind::DataCopyUp, "etc/passwd"),
            pod_a(Kind::DataCopyUp, "etc/group"),
            pod_a(Kind::Whiteout, "etc/app.conf"),
        ]
    );
    assert_eq!(
        rows(&rootfs_b),
        [
            pod_b(Kind::DirCopyUp, "etc"),
            pod_b(Kind::Whiteout, "etc/passwd"),
            pod_b(Kind::DataCopyUp, "etc/app.conf"),
        ]
    );
    let pod_c = |kind, path| {
        (
            kind,
            path,
            Some(c.id.as_str()),
            Some("db"),
            Some("db-0"),
            Some("shop"),
            Some(c.uid.as_str()),
            Some("guaranteed"),
        )
    };
    assert_eq!(
        rows(&rootfs_c),
        [
            pod_c(Kind::DirCopyUp, "etc"),
            pod_c(Kind::Whiteout, "etc/group"),
        ]
    );
    for e in &recording.events {
        if e.container_id.is_some() {
            assert_eq!(e.image.as_deref(), Some(IMAGE), "{e:?}");
        }
    }
    let short = |id: &str| id[..12].to_owned();
    let s = &recording.summary;
    assert_eq!(
        s.by_container[&format!("shop/web-0/app ({})", short(&a.id))].count,
        4
    );
    assert_eq!(
        s.by_container[&format!("{}/{}", b.uid, short(&b.id))].count,
        3
    );
    assert_eq!(
        s.by_container[&format!("shop/db-0/db ({})", short(&c.id))].count,
        2
    );

    // /metrics, scraped once: exact counts per pod label (and per kind within each pod).
    let mut per_pod: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
    for metric in ["cowprof_copy_ups_total", "cowprof_whiteouts_total"] {
        for (l, v) in samples(&metrics, metric) {
            if l["pod"].is_empty() {
                continue;
            }
            *per_pod
                .entry((
                    l["pod"].clone(),
                    l["namespace"].clone(),
                    l["container"].clone(),
                    l["kind"].clone(),
                ))
                .or_default() += v;
        }
    }
    let key = |p: &str, ns: &str, c: &str, k: &str| {
        (p.to_owned(), ns.to_owned(), c.to_owned(), k.to_owned())
    };
    let want: BTreeMap<_, f64> = [
        (key("web-0", "shop", "app", "dir_copy_up"), 1.0),
        (key("web-0", "shop", "app", "data_copy_up"), 2.0),
        (key("web-0", "shop", "app", "whiteout"), 1.0),
        (key(&b.uid, "", &short(&b.id), "dir_copy_up"), 1.0),
        (key(&b.uid, "", &short(&b.id), "whiteout"), 1.0),
        (key(&b.uid, "", &short(&b.id), "data_copy_up"), 1.0),
        (key("db-0", "shop", "db", "dir_copy_up"), 1.0),
        (key("db-0", "shop", "db", "whiteout"), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(per_pod, want, "{metrics}");
    // The pod's series carry its mount and image too, in one label set per container.
    for (l, _) in samples(&metrics, "cowprof_copy_ups_total") {
        if l["pod"] == "web-0" {
            assert_eq!(l["mount"], rootfs_a.display().to_string());
            assert_eq!(l["image"], IMAGE);
        }
    }

    // No socket for names: the cgroup still gives the pod's UID and QoS; said once on stderr.
    let mut rec = Running::spawn(
        Command::new(BIN)
            .args(["record", "--json", "--mount"])
            .arg(&rootfs_c)
            .args(["--containerd-socket", "/nonexistent/containerd.sock"])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    );
    let start = rec.next_line(START_TIMEOUT);
    assert!(start.contains(r#""type":"start""#), "{start}");
    ctrd.exec(
        c,
        "echo q >> /etc/passwd && echo r >> /etc/shadow-not-there",
    );
    let mut lines = vec![start];
    while lines
        .iter()
        .filter(|l| l.contains(r#""type":"event""#))
        .count()
        < 1
    {
        lines.push(rec.next_line(Duration::from_mins(1)));
    }
    rec.signal(libc::SIGINT);
    let (status, rest, stderr) = rec.wait(Duration::from_mins(1));
    assert_eq!(status.code(), Some(0), "record failed: {stderr}");
    assert_eq!(
        stderr,
        "cowprof: no Docker engine socket at /nonexistent/docker.sock; \
         no containerd socket at /nonexistent/containerd.sock; \
         containers are named by cgroup id only\n"
    );
    lines.extend(rest);
    let unnamed = parse_recording(&lines);
    let got: Vec<Row<'_>> = unnamed
        .events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.path.as_str(),
                e.container_id.as_deref(),
                e.container_name.as_deref(),
                e.pod_name.as_deref(),
                e.pod_namespace.as_deref(),
                e.pod_uid.as_deref(),
                e.pod_qos.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(
            Kind::DataCopyUp,
            "etc/passwd",
            Some(c.id.as_str()),
            None,
            None,
            None,
            Some(c.uid.as_str()),
            Some("guaranteed"),
        )]
    );
    assert_eq!(unnamed.events[0].image, None);
    assert_eq!(
        unnamed.summary.by_container[&format!("{}/{}", c.uid, short(&c.id))].count,
        1
    );

    drop(ctrd);
    // Every cgroup hierarchy mounted here, so the check holds on v1, hybrid and v2-only hosts.
    let hierarchies = cgroup_hierarchies();
    assert!(!hierarchies.is_empty(), "no cgroup hierarchy mounted");
    for h in &hierarchies {
        for gone in ["kubepods", "kubepods.slice"] {
            assert!(
                !Path::new(h).join(gone).exists(),
                "pod cgroups removed: {h}/{gone}"
            );
        }
    }
    base.assert_clean("record --containerd-socket");
}
