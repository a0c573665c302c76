//! `image forecast`: a workload recorded with `cowprof record --json` from a real `docker run` of
//! the debian test image (`scripts/images`): it appends to files of four layers, chmods a file of
//! the base, deletes one, appends to the 8 MiB file and writes a new 4 MiB one. The trace is
//! forecast on all four test images and replayed on each (`--verify`, recorded by the probes):
//! the forecast for the recording's own image equals what the probes recorded in the container,
//! and on every image the predicted copy-ups, bytes and whiteouts equal the replay's exactly (the
//! probes' and the upper directory's). Bad input: one line and exit 2.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{
    disk_tempdir,
    docker::{docker, docker_ok, run},
    lock, parse_recording, require_root, Baseline, Running, BIN,
};
use cowprof::{event::Kind, image::store::ImageRecord};

const IMAGES: [&str; 4] = ["debian", "busybox", "distroless", "scratch"];
const DOCKER_IMAGE: &str = "cowprof-test-debian:latest";
/// Appends to files of four layers (`app.conf`: the top one; `debian_version`: the base;
/// `cowtool`: the first added; `big.bin`, 8 MiB: the chmod layer), a chmod of a base file, a delete,
/// a new 4 MiB file; then a marker, and a wait to be removed.
const WORKLOAD: &str = "set -e; printf x >> /etc/app.conf; printf x >> /etc/debian_version; \
                        printf x >> /usr/local/bin/cowtool; chmod 640 /etc/passwd; \
                        rm /var/cache/app/fresh; printf x >> /var/lib/app/big.bin; \
                        head -c 4194304 /dev/zero > /var/lib/app/new.bin; : > /done; \
                        exec sleep 600";

/// Removed on drop, also when an assertion fails.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache() -> PathBuf {
    std::env::var_os("COWPROF_IMAGE_CACHE")
        .map_or_else(|| repo().join("target/image-cache"), PathBuf::from)
}

fn image(store: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("image")
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run cowprof")
}

fn json(store: &Path, args: &[&str]) -> serde_json::Value {
    let out = image(store, args);
    assert!(
        out.status.success(),
        "cowprof image {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn forecast_matches_the_recording_and_every_replay() {
    if !require_root("image_forecast") {
        return;
    }
    let st = Command::new(repo().join("scripts/images"))
        .status()
        .expect("scripts/images");
    assert!(st.success(), "scripts/images failed");
    run(&mut Command::new(repo().join("scripts/dockerd")));
    if !docker_ok(&["image", "inspect", DOCKER_IMAGE]) {
        let archive = cache().join("debian.tar");
        docker(&["load", "-q", "-i", archive.to_str().expect("utf8")]);
    }
    let _lock = lock();
    let base = Baseline::take();
    let tmp = disk_tempdir();
    let store_dir = tmp.path().join("store");
    let mut recs = Vec::new();
    for name in IMAGES {
        let archive = cache().join(format!("{name}.tar"));
        let j = json(
            &store_dir,
            &["import", archive.to_str().expect("utf8"), "--json"],
        );
        let rec: ImageRecord = serde_json::from_value(j["images"][0].clone()).expect("record");
        recs.push(rec);
    }

    // The workload, in a real container of the debian image, recorded by the probes. The
    // container waits (its workload done) until the recording has stopped, so every event is
    // named with it.
    let trace = tmp.path().join("trace.jsonl");
    {
        let name = format!("cowprof-forecast-{}", std::process::id());
        let _container = Container(name.clone());
        let mut rec = Running::spawn(Command::new(BIN).args(["record", "--json"]));
        let start = rec.next_line(common::START_TIMEOUT);
        assert!(start.contains("\"start\""), "{start}");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            DOCKER_IMAGE,
            "sh",
            "-c",
            WORKLOAD,
        ]);
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        while !docker_ok(&["exec", &name, "test", "-e", "/done"]) {
            assert!(
                std::time::Instant::now() < deadline,
                "the workload did not finish"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let inspect: serde_json::Value =
            serde_json::from_str(&docker(&["inspect", &name])).expect("inspect JSON");
        let merged = inspect[0]["GraphDriver"]["Data"]["MergedDir"]
            .as_str()
            .expect("MergedDir")
            .to_owned();
        rec.signal(libc::SIGINT);
        let (status, mut lines, stderr) = rec.wait(Duration::from_mins(1));
        assert_eq!(status.code(), Some(0), "record failed: {stderr}");
        lines.insert(0, start);
        // The trace: the start line and the container's own events, as a user would cut it.
        let mine: Vec<String> = lines
            .iter()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                v["type"] == "start"
                    || (v["type"] == "event" && v["container_name"] == name.as_str())
            })
            .cloned()
            .collect();
        std::fs::write(&trace, mine.join("\n")).expect("write trace");
        let rec = parse_recording(&lines);
        let on_mount: Vec<_> = rec
            .events
            .iter()
            .filter(|e| e.mount_point.as_deref() == Some(merged.as_str()))
            .collect();
        assert!(
            on_mount
                .iter()
                .all(|e| e.container_name.as_deref() == Some(name.as_str())),
            "events on the container's mount not named with it: {on_mount:#?}"
        );
        let count = |k: Kind| on_mount.iter().filter(|e| e.kind == k).count() as u64;
        // The recording itself, against the workload's steps: five data copy-ups (app.conf,
        // debian_version, cowtool, passwd by chmod, big.bin), one whiteout, no metacopy.
        assert_eq!(count(Kind::DataCopyUp), 5, "{on_mount:#?}");
        assert_eq!(count(Kind::Whiteout), 1, "{on_mount:#?}");
        assert_eq!(count(Kind::Metacopy), 0, "{on_mount:#?}");
        let recorded_dirs = count(Kind::DirCopyUp);
        let recorded_bytes: u64 = on_mount
            .iter()
            .filter(|e| e.kind == Kind::DataCopyUp)
            .map(|e| e.bytes_copied)
            .sum();
        assert!(recorded_bytes > 8 << 20, "big.bin: {recorded_bytes}");

        // Forecast on the recording's own image = what the probes saw in the container.
        let f = json(
            &store_dir,
            &[
                "forecast",
                trace.to_str().expect("utf8"),
                "cowprof-test-debian:latest",
                "--json",
            ],
        );
        let d = &f["images"][0];
        assert_eq!(d["by_kind"]["data_copy_up"]["count"], 5, "{d:#}");
        assert_eq!(d["by_kind"]["dir_copy_up"]["count"], recorded_dirs, "{d:#}");
        assert_eq!(d["by_kind"]["whiteout"]["count"], 1);
        assert_eq!(d["bytes"], recorded_bytes);
        assert_eq!(d["missing"].as_array().expect("missing").len(), 0);
    }

    // Every image: forecast and one replay each, counts exact.
    let mut args = vec!["forecast", trace.to_str().expect("utf8")];
    let ids: Vec<String> = recs.iter().map(|r| r.id.clone()).collect();
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--verify", "--runs", "1", "--realtime", "50", "--json"]);
    let f = json(&store_dir, &args);
    let cowtool = std::fs::metadata(cache().join("cowtool"))
        .expect("cowtool")
        .len();
    for (i, name) in IMAGES.iter().enumerate() {
        let d = &f["images"][i];
        let v = &f["verify"][i];
        assert_eq!(v["counts_match"], true, "{name}: {v:#}");
        assert_eq!(d["copy_ups"], v["measured_copy_ups"], "{name}");
        assert_eq!(d["whiteouts"], v["measured_whiteouts"], "{name}");
        assert_eq!(d["bytes"], v["measured_bytes"], "{name}");
        assert_eq!(d["whiteouts"], 1, "{name}");
        assert_eq!(
            v["runs"][0]["upper"]["copy_ups"], v["measured_copy_ups"],
            "{name}"
        );
        assert_eq!(v["runs"][0]["drops"], 0, "{name}");
        // debian has every file; the others lack /etc/debian_version, scratch /etc/passwd too.
        let (data, want_missing): (u64, &[&str]) = match *name {
            "debian" => (5, &[]),
            "scratch" => (3, &["/etc/debian_version", "/etc/passwd"]),
            _ => (4, &["/etc/debian_version"]),
        };
        assert_eq!(d["by_kind"]["data_copy_up"]["count"], data, "{name}");
        assert_eq!(
            v["by_kind"]["data_copy_up"]["measured_count"], data,
            "{name}"
        );
        let missing: Vec<&str> = d["missing"]
            .as_array()
            .expect("missing")
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        // A file the trace wrote that this image lacks is listed, not guessed.
        assert_eq!(missing, want_missing, "{name}");
        if *name == "scratch" {
            assert_eq!(d["bytes"], (8u64 << 20) + 12 + cowtool, "{name}");
        }
    }

    // A trace of the first schema-1 cowprof (no container, image or layer digest fields; the
    // same docker run's events) reads and forecasts the same.
    let old = repo().join("profiler/tests/data/forecast/schema1-docker-run.jsonl");
    let mut args = vec!["forecast", old.to_str().expect("utf8")];
    args.extend(ids.iter().map(String::as_str));
    args.push("--json");
    let o = json(&store_dir, &args);
    for (i, name) in IMAGES.iter().enumerate() {
        let (new, old) = (&f["images"][i], &o["images"][i]);
        for key in ["by_kind", "copy_ups", "whiteouts", "bytes", "missing"] {
            assert_eq!(old[key], new[key], "{name}: {key} of the schema-1 trace");
        }
    }
    drop(tmp);
    base.assert_clean("image forecast");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let not_trace = tmp.path().join("notes.txt");
    std::fs::write(&not_trace, "hello\n").expect("write");
    let quiet = tmp.path().join("quiet.jsonl");
    std::fs::write(
        &quiet,
        "{\"schema\":1,\"type\":\"start\",\"backend\":\"tracepoint\"}\n{\"schema\":1,\"type\":\"summary\",\"events\":0}\n",
    )
    .expect("write");
    let good = tmp.path().join("good.jsonl");
    std::fs::write(
        &good,
        "{\"schema\":1,\"type\":\"event\",\"kind\":\"data_copy_up\",\"path\":\"etc/x\"}\n",
    )
    .expect("write");
    let absent = tmp.path().join("absent.jsonl");
    let dir = tmp.path().to_owned();
    for (trace, img, want) in [
        (&not_trace, "any", "not a `cowprof record --json` line"),
        (&absent, "any", "cannot be read"),
        (&dir, "any", "cannot be read"),
        (&quiet, "any", "has no copy-up or whiteout events"),
        (&good, "no-such-image:1", "no image \"no-such-image:1\""),
    ] {
        let out = image(&store, &["forecast", trace.to_str().expect("utf8"), img]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
        assert!(out.stdout.is_empty());
    }
}
