//! `cowprof record --json --container NAME` on a real Docker container: a `docker exec` appends
//! to a file from one image layer and deletes a file from another, then a host process appends
//! through the container's merged dir. The events must name the container (host: none) and the
//! image layer each file came from, checked against `docker inspect`, `docker image inspect`
//! (`.RootFS.Layers`) and the container's upper dir.
//!
//! The image is built here (offline): a static busybox imported as a one-layer base, then a
//! `docker build` adding two COPY layers. Both are cached by tag, so only the first run builds.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use common::docker::{docker, docker_ok, run, static_busybox};

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{lock, parse_recording, require_root, Baseline, Running, BIN};
use cowprof::{
    event::Kind,
    scenario::{UpperEntry, UpperTruth},
};

const BASE: &str = "cowprof-attr-base:1";
const IMAGE: &str = "cowprof-attr-test:1";

/// Builds the test image unless it exists: base layer = busybox, layer 1 = /data/app.log,
/// layer 2 = /data/cache.bin and /data/host.txt.
fn ensure_image() {
    if docker_ok(&["image", "inspect", IMAGE]) {
        return;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cowprof-attr-busybox");
    let busybox = static_busybox(&cache);
    let work = tempfile::tempdir().expect("tempdir");
    if !docker_ok(&["image", "inspect", BASE]) {
        let root = work.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).expect("rootfs");
        std::fs::create_dir_all(root.join("tmp")).expect("rootfs");
        std::fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "echo", "rm", "sleep", "cat", "ls"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
        }
        let tar = work.path().join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        run(Command::new("docker").arg("import").arg(&tar).arg(BASE));
    }
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(ctx.join("app.log"), "from layer 1\n").expect("write");
    std::fs::write(ctx.join("cache.bin"), vec![7u8; 8192]).expect("write");
    std::fs::write(ctx.join("host.txt"), "from layer 2\n").expect("write");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {BASE}\nCOPY app.log /data/app.log\nCOPY cache.bin host.txt /data/\n\
             CMD [\"/bin/sleep\", \"600\"]\n"
        ),
    )
    .expect("Dockerfile");
    run(Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0"));
}

/// Removes the container even when the test fails.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn events_name_container_and_image_layer() {
    if !require_root("events_name_container_and_image_layer") {
        return;
    }
    let _lock = lock();
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    run(&mut Command::new(scripts.join("dockerd")));
    ensure_image();
    let base = Baseline::take();

    let name = format!("cowprof-attr-{}", std::process::id());
    let guard = ContainerGuard(name.clone());
    let id = docker(&["run", "-d", "--name", &name, IMAGE]);
    assert_eq!(id.len(), 64, "container id: {id}");
    let inspect: serde_json::Value =
        serde_json::from_str(&docker(&["inspect", &name])).expect("inspect JSON");
    let c = &inspect[0];
    let data = &c["GraphDriver"]["Data"];
    let merged = data["MergedDir"].as_str().expect("MergedDir").to_owned();
    let upper = PathBuf::from(data["UpperDir"].as_str().expect("UpperDir"));
    let image_id = c["Image"].as_str().expect("Image").to_owned();
    let image: serde_json::Value =
        serde_json::from_str(&docker(&["image", "inspect", IMAGE])).expect("image JSON");
    let layers: Vec<String> = image[0]["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|l| l.as_str().expect("diffID").to_owned())
        .collect();
    assert_eq!(layers.len(), 3, "base + 2 COPY layers: {layers:?}");
    let (copy1, copy2) = (layers[1].clone(), layers[2].clone());
    let before = UpperTruth::read(&upper).expect("read upper");

    // Unknown container: one line, exit 2, nothing attached.
    let out = Command::new(BIN)
        .args(["record", "--container", "cowprof-no-such-container"])
        .output()
        .expect("run cowprof");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "cowprof: --container: no such container: cowprof-no-such-container (see `docker ps -a`)\n"
    );

    // Without an engine a name cannot be resolved: one line, exit 2.
    let out = Command::new(BIN)
        .args(["record", "--container", &name])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run cowprof");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "cowprof: --container: {name}: no Docker engine socket at /nonexistent/docker.sock; \
             give the full 64-hex container id instead\n"
        )
    );

    // /.dockerenv lives in the container's own init layer.
    let script = format!(
        "docker exec {name} sh -c 'echo c >> /data/app.log && rm /data/cache.bin && \
         echo x >> /.dockerenv' && echo h >> {merged}/data/host.txt"
    );
    let running = Running::spawn(Command::new(BIN).args([
        "record",
        "--json",
        "--container",
        &name,
        "--",
        "sh",
        "-c",
        &script,
    ]));
    let (status, lines, stderr) = running.wait(Duration::from_mins(2));
    assert_eq!(status.code(), Some(0), "record failed: {stderr}");
    let rec = parse_recording(&lines);

    // Ground truth: what the writes left in the container's upper dir.
    let after = UpperTruth::read(&upper).expect("read upper");
    let mut added: BTreeMap<String, UpperEntry> = after.entries.clone();
    added.retain(|k, _| !before.entries.contains_key(k));
    assert_eq!(
        added,
        [
            ("data", UpperEntry::Dir),
            ("data/app.log", UpperEntry::File),
            ("data/cache.bin", UpperEntry::Whiteout),
            ("data/host.txt", UpperEntry::File),
            (".dockerenv", UpperEntry::File),
        ]
        .into_iter()
        .map(|(p, e)| (p.to_owned(), e))
        .collect::<BTreeMap<_, _>>()
    );

    // (kind, path, container id, layer digest), in the order they happened.
    let got: Vec<(Kind, &str, Option<&str>, Option<&str>)> = rec
        .events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.path.as_str(),
                e.container_id.as_deref(),
                e.layer_digest.as_deref(),
            )
        })
        .collect();
    let cid = Some(id.as_str());
    assert_eq!(
        got,
        vec![
            (Kind::DirCopyUp, "data", cid, Some(copy2.as_str())),
            (Kind::DataCopyUp, "data/app.log", cid, Some(copy1.as_str())),
            (Kind::Whiteout, "data/cache.bin", cid, Some(copy2.as_str())),
            (Kind::DataCopyUp, ".dockerenv", cid, Some("init")),
            (
                Kind::DataCopyUp,
                "data/host.txt",
                None,
                Some(copy2.as_str())
            ),
        ],
        "events: {:#?}",
        rec.events
    );
    for e in &rec.events {
        assert_eq!(e.mount_point.as_deref(), Some(merged.as_str()));
        if e.container_id.is_some() {
            assert_eq!(e.container_name.as_deref(), Some(name.as_str()));
            assert_eq!(e.image.as_deref(), Some(IMAGE));
            assert_eq!(e.image_id.as_deref(), Some(image_id.as_str()));
        } else {
            assert_eq!(e.comm, "sh");
            assert_eq!(
                (&e.container_name, &e.image, &e.image_id),
                (&None, &None, &None)
            );
        }
    }
    let s = &rec.summary;
    assert_eq!(s.events, 5);
    let key = format!("{name} ({})", &id[..12]);
    assert_eq!(s.by_container[&key].count, 4);
    assert_eq!(s.by_container["host"].count, 1);
    assert_eq!(s.by_image_layer[&copy1].count, 1);
    assert_eq!(s.by_image_layer[&copy2].count, 3);
    assert_eq!(s.by_image_layer["init"].count, 1);
    assert_eq!(s.by_image_layer.len(), 3);

    // Without an engine: the cgroup's id only, said once on stderr; layers still named.
    let running = Running::spawn(
        Command::new(BIN)
            .args(["record", "--json", "--container", &id])
            .args(["--containerd-socket", "/nonexistent/containerd.sock", "--"])
            .args(["env", "-u", "DOCKER_HOST", "docker", "exec", &name])
            .args(["rm", "/data/host.txt"])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    );
    let (status, lines, stderr) = running.wait(Duration::from_mins(2));
    assert_eq!(status.code(), Some(0), "record failed: {stderr}");
    assert_eq!(
        stderr,
        "cowprof: no Docker engine socket at /nonexistent/docker.sock; \
         no containerd socket at /nonexistent/containerd.sock; \
         containers are named by cgroup id only\n"
    );
    let rec = parse_recording(&lines);
    let got: Vec<_> = rec
        .events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.path.as_str(),
                e.container_id.as_deref(),
                e.container_name.as_deref(),
                e.layer_digest.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(
            Kind::Whiteout,
            "data/host.txt",
            cid,
            None,
            Some(copy2.as_str())
        )]
    );
    assert_eq!(
        UpperTruth::read(&upper).expect("read upper").entries["data/host.txt"],
        UpperEntry::Whiteout
    );
    assert_eq!(rec.summary.by_container[&id[..12]].count, 1);

    drop(guard);
    base.assert_clean("record --container");
}
