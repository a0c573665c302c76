//! Short-lived Docker containers under `cowprof record --json`: 20 `docker run --rm` of two
//! alternating images, each appending, chmodding and deleting at once when it starts. Each
//! container then waits (its workload done) until the test has read its upper dir through
//! `docker inspect` (the ground truth), and is killed, so dockerd removes it and its layers
//! (deleting the whiteouts overlay made). Per container the events must be exactly its upper
//! dir's copy-ups and whiteouts, on its merged dir, with its name, image and the diffID of the
//! layer each file came from; dockerd's clean-up makes no event; nothing is dropped.
#![allow(
    clippy::too_many_lines,
    reason = "a test reads as one story: set-up, workload, exact assertions"
)]

mod common;

use common::docker::{docker, docker_ok, run, static_busybox};

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{lock, parse_recording, require_root, Running, BIN};
use cowprof::{
    event::Kind,
    scenario::{UpperEntry, UpperTruth},
};

const BASE: &str = "cowprof-short-base:1";
const IMAGES: [&str; 2] = ["cowprof-short-a:1", "cowprof-short-b:1"];
const CONTAINERS: usize = 20;
/// The workload, then a marker (a new file, so no event), then wait to be killed.
const WORKLOAD: &str = "echo x >> /etc/a; chmod 600 /etc/b; rm /etc/c; \
                        echo y >> /var/lib/db/data.db; echo >/done; exec sleep 600";

/// Two images on one busybox base, with the workload's files in different layers:
/// a: /etc/a | /etc/b, /etc/c | /var/lib/db/data.db; b: /var/lib/db/data.db | /etc/a, b, c.
fn ensure_images() {
    if IMAGES.iter().all(|i| docker_ok(&["image", "inspect", i])) {
        return;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cowprof-attr-busybox");
    let busybox = static_busybox(&cache);
    let work = tempfile::tempdir().expect("tempdir");
    if !docker_ok(&["image", "inspect", BASE]) {
        let root = work.path().join("rootfs");
        for d in ["bin", "tmp", "etc"] {
            std::fs::create_dir_all(root.join(d)).expect("rootfs");
        }
        std::fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "echo", "rm", "sleep", "chmod"] {
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
    for (f, size) in [("a", 100), ("b", 200), ("c", 300), ("data.db", 4096)] {
        std::fs::write(ctx.join(f), vec![b'z'; size]).expect("write");
    }
    let dockerfiles = [
        "COPY a /etc/a\nCOPY b c /etc/\nCOPY data.db /var/lib/db/data.db\n",
        "COPY data.db /var/lib/db/data.db\nCOPY a b c /etc/\n",
    ];
    for (image, body) in IMAGES.iter().zip(dockerfiles) {
        std::fs::write(ctx.join("Dockerfile"), format!("FROM {BASE}\n{body}")).expect("write");
        run(Command::new("docker")
            .args(["build", "-q", "-t", image])
            .arg(&ctx)
            .env("DOCKER_BUILDKIT", "0"));
    }
}

/// cache-id (the overlay2 directory name) -> diffID, from Docker's layer database.
fn layerdb() -> BTreeMap<String, String> {
    let root = Path::new("/var/lib/docker/image/overlay2/layerdb/sha256");
    std::fs::read_dir(root)
        .expect("layerdb")
        .flatten()
        .filter_map(|e| {
            let cache = std::fs::read_to_string(e.path().join("cache-id")).ok()?;
            let diff = std::fs::read_to_string(e.path().join("diff")).ok()?;
            Some((cache.trim().to_owned(), diff.trim().to_owned()))
        })
        .collect()
}

/// (kind, path, layer digest) as the test compares events of one container.
type Key = (Kind, String, Option<String>);

struct Truth {
    name: String,
    image: &'static str,
    merged: String,
    expected: BTreeSet<Key>,
    /// dockerd's own short-lived mount of the container's init layer (where it writes
    /// /etc/hosts and friends before the container starts): its merged dir and copy-ups.
    init_merged: String,
    init_expected: BTreeSet<Key>,
}

/// The copy-ups and whiteouts `upper` holds over `lowers` (top first), with the diffID of the
/// layer each entry came from.
fn expected_events(
    upper: &Path,
    lowers: &[PathBuf],
    digest: &dyn Fn(&Path) -> String,
) -> BTreeSet<Key> {
    let truth = UpperTruth::read(upper).expect("read upper");
    let mut expected = BTreeSet::new();
    for (path, entry) in &truth.entries {
        let Some(lower) = lowers
            .iter()
            .find(|l| l.join(path).symlink_metadata().is_ok())
        else {
            continue; // new: no copy-up
        };
        let kind = match entry {
            UpperEntry::Whiteout => Kind::Whiteout,
            UpperEntry::Dir => Kind::DirCopyUp,
            UpperEntry::File => Kind::DataCopyUp,
            other => panic!(
                "{}: {path}: unexpected upper entry {other:?}",
                upper.display()
            ),
        };
        expected.insert((kind, path.clone(), Some(digest(lower))));
    }
    expected
}

/// Starts a container, waits for its workload, reads its upper dir and lower layers (the
/// ground truth), then kills it (`--rm`: dockerd removes it).
fn one_container(i: usize, image: &'static str) -> Truth {
    let name = format!("cowprof-short-{}-{i}", std::process::id());
    docker(&[
        "run", "-d", "--rm", "--name", &name, image, "sh", "-c", WORKLOAD,
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&docker(&["inspect", &name])).expect("inspect JSON");
    let data = &inspect[0]["GraphDriver"]["Data"];
    let upper = PathBuf::from(data["UpperDir"].as_str().expect("UpperDir"));
    let merged = data["MergedDir"].as_str().expect("MergedDir").to_owned();
    let lowers: Vec<PathBuf> = data["LowerDir"]
        .as_str()
        .expect("LowerDir")
        .split(':')
        .map(PathBuf::from)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !upper.join("done").exists() {
        assert!(Instant::now() < deadline, "{name}: workload did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let db = layerdb();
    let digest = |lower: &Path| -> String {
        let id = lower
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .expect("overlay2 layer id");
        if id.ends_with("-init") {
            "init".to_owned()
        } else {
            db.get(id)
                .cloned()
                .unwrap_or_else(|| panic!("{id} not in layerdb"))
        }
    };
    let expected = expected_events(&upper, &lowers, &digest);
    let files: BTreeSet<&str> = expected.iter().map(|k| k.1.as_str()).collect();
    for f in ["etc/a", "etc/b", "etc/c", "var/lib/db/data.db"] {
        assert!(
            files.contains(f),
            "{name}: ground truth lacks {f}: {expected:?}"
        );
    }
    // The init layer is the container's top lower; it was dockerd's upper, over the image.
    let init_expected = expected_events(&lowers[0], &lowers[1..], &digest);
    let init_merged = lowers[0]
        .parent()
        .expect("init layer dir")
        .join("merged")
        .display()
        .to_string();
    docker(&["kill", &name]);
    Truth {
        name,
        image,
        merged,
        expected,
        init_merged,
        init_expected,
    }
}

#[test]
fn short_lived_containers_are_exact() {
    let test = "short_lived_containers_are_exact";
    if !require_root(test) {
        return;
    }
    let _lock = lock();
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    run(&mut Command::new(scripts.join("dockerd")));
    ensure_images();

    let mut rec = Running::spawn(Command::new(BIN).args(["record", "--json"]));
    let start = rec.next_line(common::START_TIMEOUT);
    assert!(start.contains("\"start\""), "{start}");
    let t0 = Instant::now();
    let truths: Vec<Truth> = (0..CONTAINERS)
        .map(|i| one_container(i, IMAGES[i % 2]))
        .collect();
    // dockerd removes each killed container and its layers (and their whiteouts).
    let deadline = Instant::now() + Duration::from_mins(1);
    for t in &truths {
        while docker_ok(&["inspect", &t.name]) {
            assert!(Instant::now() < deadline, "{} not removed", t.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let workload = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    rec.signal(libc::SIGINT);
    let (status, mut lines, stderr) = rec.wait(Duration::from_mins(1));
    assert_eq!(status.code(), Some(0), "record: {stderr}");
    lines.insert(0, start);
    let recording = parse_recording(&lines);

    // dockerd's copy-ups on the init layers are real; anything else it does (removing the
    // containers' layers and their whiteouts) must make no event.
    let from_dockerd: Vec<_> = recording
        .events
        .iter()
        .filter(|e| {
            e.comm.starts_with("dockerd")
                && !truths
                    .iter()
                    .any(|t| e.mount_point.as_deref() == Some(t.init_merged.as_str()))
        })
        .collect();
    let mut bad = Vec::new();
    let (mut expected_total, mut exact) = (0, 0);
    for t in &truths {
        let mine: Vec<_> = recording
            .events
            .iter()
            .filter(|e| e.container_name.as_deref() == Some(t.name.as_str()))
            .collect();
        for e in &mine {
            if e.mount_point.as_deref() != Some(t.merged.as_str())
                || e.image.as_deref() != Some(t.image)
            {
                bad.push(format!(
                    "{}: mount {:?} image {:?}",
                    t.name, e.mount_point, e.image
                ));
            }
        }
        let init: Vec<_> = recording
            .events
            .iter()
            .filter(|e| e.mount_point.as_deref() == Some(t.init_merged.as_str()))
            .collect();
        let init_got: BTreeSet<Key> = init
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.path.clone(),
                    e.layer_digest.as_deref().map(str::to_owned),
                )
            })
            .collect();
        expected_total += t.init_expected.len();
        exact += t.init_expected.intersection(&init_got).count();
        if init_got != t.init_expected || init_got.len() != init.len() {
            bad.push(format!(
                "{} init layer: {} events; missing {:?}; unexpected {:?}",
                t.name,
                init.len(),
                t.init_expected.difference(&init_got).collect::<Vec<_>>(),
                init_got.difference(&t.init_expected).collect::<Vec<_>>()
            ));
        }
        let got: BTreeSet<Key> = mine
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.path.clone(),
                    e.layer_digest.as_deref().map(str::to_owned),
                )
            })
            .collect();
        expected_total += t.expected.len();
        exact += t.expected.intersection(&got).count();
        if got != t.expected || got.len() != mine.len() {
            bad.push(format!(
                "{}: {} events; missing {:?}; unexpected {:?}",
                t.name,
                mine.len(),
                t.expected.difference(&got).collect::<Vec<_>>(),
                got.difference(&t.expected).collect::<Vec<_>>()
            ));
        }
    }
    let d = recording.summary.drops;
    eprintln!(
        "{test}: {CONTAINERS} containers in {workload:?}; events expected {expected_total}, \
         exact {exact}, delivered {} in all, dockerd clean-up {}; drops {d:?}",
        recording.events.len(),
        from_dockerd.len()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(
        from_dockerd.is_empty(),
        "clean-up events: {from_dockerd:#?}"
    );
    assert_eq!(d.total(), 0, "drops: {d:?}");
}
