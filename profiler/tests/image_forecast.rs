//! `image forecast`: a workload recorded with `cowprof record --json` on the debian test image's
//! real layer stack, forecast on all four test images (`scripts/images`) and replayed on each
//! (`--verify`): the forecast for the recording's own image equals what the probes recorded, and
//! on every image the predicted copy-ups, bytes and whiteouts equal the replay's exactly. Bad
//! input: one line and exit 2.
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

use common::{canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Running, BIN};
use cowprof::{
    event::Kind,
    image::{
        compare::ImageStack,
        store::{ImageRecord, Store},
    },
};

const IMAGES: [&str; 4] = ["debian", "busybox", "distroless", "scratch"];

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

    // The workload, recorded by the probes on debian's own layer stack: appends to a file of the
    // top layer and to one of the base, a chmod of the 8 MiB file, a touch of the binary, a
    // delete, and a fresh file.
    let trace = tmp.path().join("trace.jsonl");
    {
        let store = Store::open(&store_dir).expect("store");
        let stack = ImageStack::mount(&store, &recs[0]).expect("mount debian");
        let m = canon(&stack.merged).display().to_string();
        let script = format!(
            "set -e; printf x >> {m}/etc/app.conf; printf x >> {m}/etc/debian_version; \
             chmod 600 {m}/var/lib/app/big.bin; touch {m}/usr/local/bin/cowtool; \
             rm {m}/var/cache/app/fresh; echo new > {m}/var/lib/app/new.log"
        );
        let running = Running::spawn(
            Command::new(BIN).args(["record", "--json", "--mount", &m, "--", "sh", "-c", &script]),
        );
        let (status, lines, stderr) = running.wait(Duration::from_mins(3));
        assert_eq!(status.code(), Some(0), "record failed: {stderr}");
        std::fs::write(&trace, lines.join("\n")).expect("write trace");
        drop(stack);
        let rec = parse_recording(&lines);
        let count = |k: Kind| rec.events.iter().filter(|e| e.kind == k).count() as u64;
        // The recording itself, against the workload's steps.
        assert_eq!(count(Kind::DataCopyUp), 4, "{:#?}", rec.events);
        assert_eq!(count(Kind::Whiteout), 1);
        let recorded_dirs = count(Kind::DirCopyUp);
        let recorded_bytes: u64 = rec
            .events
            .iter()
            .filter(|e| e.kind == Kind::DataCopyUp)
            .map(|e| e.bytes_copied)
            .sum();

        // Forecast on the recording's own image = what the probes saw.
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
        assert_eq!(d["by_kind"]["data_copy_up"]["count"], 4);
        assert_eq!(d["by_kind"]["dir_copy_up"]["count"], recorded_dirs);
        assert_eq!(d["by_kind"]["whiteout"]["count"], 1);
        assert_eq!(d["bytes"], recorded_bytes);
        assert_eq!(d["missing"].as_array().expect("missing").len(), 0);
    }

    // Every image: forecast and one replay each, counts exact.
    let mut args = vec!["forecast", trace.to_str().expect("utf8")];
    let ids: Vec<String> = recs.iter().map(|r| r.id.clone()).collect();
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--verify", "--runs", "1", "--json"]);
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
        let debian = *name == "debian";
        assert_eq!(
            d["by_kind"]["data_copy_up"]["count"],
            if debian { 4 } else { 3 },
            "{name}"
        );
        let missing: Vec<&str> = d["missing"]
            .as_array()
            .expect("missing")
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        if debian {
            assert!(missing.is_empty(), "{name}: {missing:?}");
        } else {
            // A file the trace wrote that this image lacks is listed, not guessed.
            assert_eq!(missing, ["/etc/debian_version"], "{name}");
            assert_eq!(d["bytes"], (8u64 << 20) + 12 + cowtool, "{name}");
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
    for (trace, img, want) in [
        (&not_trace, "any", "not a `cowprof record --json` line"),
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
