//! The Kubernetes `DaemonSet` (deploy/daemonset.yaml) parsed and checked field by field, and the
//! container image (deploy/Dockerfile) built from the static musl binary with the local dockerd.
//! (That the `DaemonSet`'s two capabilities are enough is shown by `metrics_prometheus.rs`, whose
//! `record` runs with `CAP_BPF` and `CAP_PERFMON` alone.)
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::lock;

use serde::Deserialize as _;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every YAML document of the manifest, as JSON values.
fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/daemonset.yaml")).expect("read");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .collect()
}

fn strs(v: &Value) -> BTreeSet<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn daemonset_asks_for_what_it_needs_and_no_more() {
    let docs = manifest();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Namespace", "DaemonSet"]);
    let ds = &docs[1];
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["namespace"], docs[0]["metadata"]["name"]);
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"],
        "the selector must match the pod template"
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "hostPID: host /proc for attribution");
    assert_eq!(
        pod["hostNetwork"], false,
        "metrics on the pod IP, not the node's"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(pod.get("hostIPC").is_none_or(|v| v == false));

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strs(&sc["capabilities"]["drop"]), BTreeSet::from(["ALL"]));
    // Measured: CAP_BPF + CAP_PERFMON attach and record on 6.18 (README); nothing else.
    assert_eq!(
        strs(&sc["capabilities"]["add"]),
        BTreeSet::from(["BPF", "PERFMON"])
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    // Metrics: bound to the pod IP from the downward API; the port everywhere the same; no
    // hostPort (which would open the node's own address).
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "record");
    assert!(args.contains(&"--quiet"));
    let addr = args[args
        .iter()
        .position(|a| *a == "--metrics-addr")
        .expect("flag")
        + 1];
    assert_eq!(addr, "$(POD_IP):9464");
    // containerd's API socket for pod names: reached through the read-only /run/containerd
    // mount (checked below; tests/record_containerd.rs connects through a read-only bind mount).
    let socket = args[args
        .iter()
        .position(|a| *a == "--containerd-socket")
        .expect("--containerd-socket")
        + 1];
    assert_eq!(socket, "/run/containerd/containerd.sock");
    let socket_mount = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|p| Path::new(socket).starts_with(p))
        })
        .expect("a mount holding the containerd socket");
    assert_eq!(socket_mount["readOnly"], true);
    let env = c["env"].as_array().expect("env");
    assert!(env.iter().any(
        |e| e["name"] == "POD_IP" && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    ));
    let ports = c["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"], 9464);
    assert!(ports[0].get("hostPort").is_none(), "no hostPort");
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], "9464");
    assert_eq!(ann["prometheus.io/path"], "/metrics");

    // Resources: requests and limits for both.
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}");
        }
    }

    // Host mounts: exactly these, all read-only, each backed by a hostPath volume.
    let allowed = BTreeSet::from([
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/run/containerd",
        "/var/lib/containerd",
        "/var/lib/docker",
    ]);
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    assert_eq!(volumes.len(), mounts.len());
    let mut host_paths = BTreeSet::new();
    for m in mounts {
        assert_eq!(m["readOnly"], true, "read-only: {m}");
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume for {m}"));
        let host = v["hostPath"]["path"].as_str().expect("hostPath");
        assert_eq!(m["mountPath"], host, "mounted at the host's own path");
        host_paths.insert(host);
        if host.starts_with("/sys") {
            assert!(m.get("mountPropagation").is_none(), "{m}");
        } else {
            // Runtime mounts made after start must show up in cowprof's mountinfo.
            assert_eq!(m["mountPropagation"], "HostToContainer", "{m}");
        }
    }
    assert_eq!(host_paths, allowed);
}

#[test]
fn dockerfile_is_the_static_binary_alone() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("read");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines[0], "FROM scratch");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count(),
        1,
        "one stage"
    );
    assert!(lines.contains(&"COPY cowprof /cowprof"));
    assert!(lines.contains(&r#"ENTRYPOINT ["/cowprof"]"#));
    // The default command keeps the localhost default; the DaemonSet chooses the pod IP.
    assert!(lines
        .iter()
        .any(|l| l.starts_with("CMD ") && l.contains("127.0.0.1:")));
}

/// A bind mount of a directory on itself, unmounted on drop.
struct SharedBind(PathBuf);

impl Drop for SharedBind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Builds the image from the musl binary and runs it. Needs root, dockerd and the static build,
/// so `scripts/test` runs it (with `--ignored`) right after its musl stage.
#[test]
#[ignore = "needs the musl build (cargo build --release --target x86_64-unknown-linux-musl -p profiler) and dockerd; scripts/test runs it"]
fn image_builds_and_runs() {
    let root = repo();
    let bin = root.join("target/x86_64-unknown-linux-musl/release/cowprof");
    assert!(
        bin.exists(),
        "{} missing: cargo build --release --target x86_64-unknown-linux-musl -p profiler",
        bin.display()
    );
    let up = Command::new(root.join("scripts/dockerd"))
        .status()
        .expect("scripts/dockerd");
    assert!(up.success(), "scripts/dockerd failed");
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&bin, ctx.path().join("cowprof")).expect("copy binary");
    let tag = format!("cowprof-test:{}", std::process::id());
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().expect("docker");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dockerfile = root.join("deploy/Dockerfile");
    let ctx_path = ctx.path().display().to_string();
    let (code, _, err) = docker(&[
        "build",
        "-q",
        "-f",
        &dockerfile.display().to_string(),
        "-t",
        &tag,
        &ctx_path,
    ]);
    assert_eq!(code, Some(0), "docker build: {err}");
    let version = docker(&["run", "--rm", &tag, "--version"]);
    // Docker 20.10 cannot name CAP_BPF/CAP_PERFMON: the container gets CAP_SYS_ADMIN alone
    // (what kernels before 5.8 need) and the default seccomp profile. It records and serves.
    let _lock = lock();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let name = format!("cowprof-test-{}", std::process::id());
    // The container sees every overlay on the host, other users' too: it counts only the
    // workload's own comm (a kernel-side filter), so the count is exact. The test's stacks are
    // mounted later under `dir`, which reaches the container as the DaemonSet's runtime dirs do:
    // a read-only bind with host-to-container (rslave) propagation, at the same path.
    let comm = "cowprofdeploy1";
    let dir = common::disk_tempdir();
    let root = common::canon(dir.path());
    // A shared mount of its own (the host's / may be private), unmounted on drop.
    let mount = |args: &[&str]| {
        let ok = Command::new("mount")
            .args(args)
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount {args:?} {}", root.display());
    };
    mount(&["--bind", root.to_str().expect("utf8")]);
    let _shared = SharedBind(root.clone());
    mount(&["--make-shared"]);
    let bind = format!(
        "type=bind,source={0},target={0},readonly,bind-propagation=rslave",
        root.display()
    );
    let run = docker(&[
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "--network",
        "host",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "SYS_ADMIN",
        "--mount",
        &bind,
        &tag,
        "record",
        "--quiet",
        "--comm",
        comm,
        "--duration",
        "2m",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]);
    let scrape = || {
        let mut metrics = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
            let _ = s.read_to_string(&mut metrics);
        }
        metrics
    };
    let events_total = |metrics: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("cowprof_events_total "))
            .and_then(|v| v.trim().parse().ok())
    };
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut metrics = String::new();
    while run.0 == Some(0)
        && Instant::now() < deadline
        && !metrics.contains("cowprof_backend_info{")
    {
        std::thread::sleep(Duration::from_millis(200));
        metrics = scrape();
    }
    // The default scenario under that comm, on stacks of this test.
    let (events_seen, expected_events) = {
        let (main, meta) = common::build_stacks(&root);
        // record learns new mounts from its mountinfo every 200 ms (the tracepoint backend
        // registers their work dirs then); there is no outside signal for it, so wait 5 rounds.
        std::thread::sleep(Duration::from_secs(1));
        let workload_bin = root.join(comm);
        std::os::unix::fs::symlink(common::BIN, &workload_bin).expect("symlink");
        let mut workload = Command::new(&workload_bin);
        workload.args([
            "__workload",
            &common::canon(&main.merged).display().to_string(),
        ]);
        if let Some(m) = &meta {
            workload.arg(common::canon(&m.merged));
        }
        let expected = f64::from(
            u32::try_from(
                cowprof::scenario::expected(cowprof::event::Backend::Tracepoint, meta.is_some())
                    .len(),
            )
            .expect("a few events"),
        );
        let mut seen = None;
        if run.0 == Some(0) && metrics.contains("cowprof_backend_info{") {
            assert!(workload.status().expect("workload").success(), "workload");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && seen.is_none_or(|n| n < expected) {
                std::thread::sleep(Duration::from_millis(200));
                seen = events_total(&scrape());
            }
            // Settled: nothing more arrives.
            std::thread::sleep(Duration::from_secs(1));
            metrics = scrape();
            seen = events_total(&metrics);
        }
        (seen, expected)
    };
    let logs = docker(&["logs", &name]);
    let _ = docker(&["rm", "-f", &name]);
    let layers = docker(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        &tag,
    ]);
    let _ = docker(&["rmi", "-f", &tag]);
    assert_eq!(run.0, Some(0), "docker run: {}", run.2);
    assert!(
        metrics.contains(r#"cowprof_backend_info{backend="tracepoint""#),
        "no backend_info from the container within 60 s: {metrics}\n{}{}",
        logs.1,
        logs.2
    );
    assert_eq!(
        events_seen,
        Some(expected_events),
        "the workload's events, exactly: {metrics}"
    );
    assert_eq!(logs.1, "", "--quiet: nothing on stdout");
    assert_eq!(version.0, Some(0), "--version: {}", version.2);
    assert_eq!(
        version.1.trim(),
        format!("cowprof {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(layers.1.trim(), "1", "one layer: the binary");
}
