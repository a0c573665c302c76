//! The four images `scripts/images` builds with a real dockerd (debian minbase, busybox,
//! distroless-like, scratch; each with layers that add, delete, chmod a large file and make a
//! directory opaque), saved with `docker save`, imported by `cowprof image import`, and checked
//! against `docker export` of a container created from the same image: exact file lists, sizes,
//! modes, owners and symlink targets, seen through cowprof's own overlay mount of the layers.
//! Then `image inspect` and `image compare` on them, against ground truth.
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use cowprof::image::{
    compare::ImageStack,
    store::{ImageRecord, Store},
};

const IMAGES: [&str; 4] = ["debian", "busybox", "distroless", "scratch"];
/// old.bin (deleted), the first copy of big.bin (chmodded: copied whole), /var/cache/app/{a,b}
/// (hidden by the opaque directory): what every test image wastes by construction.
const WASTED: u64 = (2 << 20) + (8 << 20) + 2 + 3;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache() -> PathBuf {
    std::env::var_os("COWPROF_IMAGE_CACHE")
        .map_or_else(|| repo().join("target/image-cache"), PathBuf::from)
}

fn sh(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// (kind, mode with setuid bits, uid, gid, size of regular files, symlink target)
type Entry = (char, u32, u32, u32, u64, String);

/// What the runtime adds to every container (its init layer and mounts), not from the image.
fn runtime_owned(p: &str) -> bool {
    ["/dev", "/proc", "/sys"]
        .iter()
        .any(|d| p == *d || p.starts_with(&format!("{d}/")))
        || [
            "/.dockerenv",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/mtab",
        ]
        .contains(&p)
}

fn from_export(tar_bytes: &[u8]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut links = Vec::new();
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().expect("export tar") {
        let e = e.expect("entry");
        let h = e.header();
        let raw = String::from_utf8(e.path_bytes().into_owned()).expect("utf8");
        let p = format!("/{}", raw.trim_start_matches("./").trim_end_matches('/'));
        if p == "/" || runtime_owned(&p) {
            continue;
        }
        let mode = h.mode().expect("mode") & 0o7777;
        let (uid, gid) = (
            u32::try_from(h.uid().expect("uid")).expect("uid"),
            u32::try_from(h.gid().expect("gid")).expect("gid"),
        );
        let target = e
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular => 'f',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => {
                links.push((p, format!("/{}", target.trim_start_matches("./"))));
                continue;
            }
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            other => panic!("{p}: unexpected type {other:?} in docker export"),
        };
        let size = if kind == 'f' { e.size() } else { 0 };
        out.insert(
            p,
            (
                kind,
                mode,
                uid,
                gid,
                size,
                if kind == 'l' { target } else { String::new() },
            ),
        );
    }
    for (p, t) in links {
        let e = out
            .get(&t)
            .unwrap_or_else(|| panic!("hardlink {p} -> {t} without target"))
            .clone();
        out.insert(p, e);
    }
    out
}

/// The tree under `root`; `image_only` leaves out what a runtime would own (for the export).
fn from_dir(root: &Path, image_only: bool) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let m = fs::symlink_metadata(e.path()).expect("stat");
            let p = format!(
                "/{}",
                e.path().strip_prefix(root).expect("under root").display()
            );
            if image_only && runtime_owned(&p) {
                continue;
            }
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(e.path());
                'd'
            } else if ft.is_file() {
                'f'
            } else if ft.is_symlink() {
                'l'
            } else {
                'o'
            };
            let target = if kind == 'l' {
                fs::read_link(e.path())
                    .expect("readlink")
                    .display()
                    .to_string()
            } else {
                String::new()
            };
            let size = if kind == 'f' { m.len() } else { 0 };
            out.insert(p, (kind, m.mode() & 0o7777, m.uid(), m.gid(), size, target));
        }
    }
    out
}

fn diff(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in a {
        match b.get(p) {
            None => out.push(format!("only in docker export: {p} {e:?}")),
            Some(f) if f != e => out.push(format!("{p}: docker {e:?} cowprof {f:?}")),
            _ => {}
        }
    }
    for (p, e) in b {
        if !a.contains_key(p) {
            out.push(format!("only in cowprof: {p} {e:?}"));
        }
    }
    out
}

fn cowprof(store: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(common::BIN)
        .arg("image")
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run cowprof");
    assert!(
        out.status.success(),
        "cowprof image {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn imported_layers_match_docker_export_and_compare() {
    if !common::require_root("image_docker") {
        return;
    }
    // Real images, built offline by the project's own script (idempotent; cached), and an
    // engine for the ground truth (the script does not start one when everything is cached).
    sh(&mut Command::new(repo().join("scripts/images")));
    sh(&mut Command::new(repo().join("scripts/dockerd")));
    let _lock = common::lock();
    let base = common::Baseline::take();
    let tmp = common::disk_tempdir();
    let store_dir = tmp.path().join("store");
    let mut recs: BTreeMap<&str, ImageRecord> = BTreeMap::new();
    let mut etc_files: BTreeMap<&str, u64> = BTreeMap::new();
    let mut regular_files: BTreeMap<&str, u64> = BTreeMap::new();
    for name in IMAGES {
        let archive = cache().join(format!("{name}.tar"));
        let tag = format!("cowprof-test-{name}:latest");
        let j = cowprof(
            &store_dir,
            &["import", archive.to_str().expect("utf8"), "--json"],
        );
        let rec: ImageRecord = serde_json::from_value(j["images"][0].clone()).expect("record");
        assert_eq!(rec.tags, std::slice::from_ref(&tag));
        assert_eq!(rec.layers.len(), 9, "{name}: base + 8 build steps");

        // Ground truth: docker's own view of the same image.
        sh(Command::new("docker")
            .args(["load", "-q", "-i"])
            .arg(&archive));
        let ctr = format!("cowprof-test-export-{}-{name}", std::process::id());
        sh(Command::new("docker").args(["create", "--name", &ctr, &tag, "/usr/local/bin/cowtool"]));
        let export = Command::new("docker")
            .args(["export", &ctr])
            .output()
            .expect("export");
        sh(Command::new("docker").args(["rm", "-f", &ctr]));
        assert!(export.status.success(), "docker export failed");
        let docker = from_export(&export.stdout);

        let store = Store::open(&store_dir).expect("store");
        let stack = ImageStack::mount(&store, &rec).expect("mount the image's layers");
        let ours = from_dir(&stack.merged, true);
        // The whole view, as the kernel shows it (the runtime's files included).
        let all = from_dir(&stack.merged, false);
        drop(stack);
        let d = diff(&docker, &ours);
        assert!(
            d.is_empty(),
            "{name}: {} differences, first: {:#?}",
            d.len(),
            &d[..d.len().min(20)]
        );
        // The build's own steps, spelled out.
        assert!(
            !docker.contains_key("/var/lib/app/old.bin"),
            "{name}: whiteout not applied"
        );
        assert_eq!(
            docker["/var/lib/app/big.bin"].1, 0o600,
            "{name}: chmod layer"
        );
        assert_eq!(docker["/var/lib/app/big.bin"].4, 8 << 20);
        let cache_dir: Vec<&String> = docker
            .keys()
            .filter(|k| k.starts_with("/var/cache/app/"))
            .collect();
        assert_eq!(
            cache_dir,
            ["/var/cache/app/fresh"],
            "{name}: opaque directory"
        );
        regular_files.insert(name, all.values().filter(|e| e.0 == 'f').count() as u64);
        etc_files.insert(
            name,
            all.iter()
                .filter(|(k, e)| k.starts_with("/etc/") && e.0 == 'f')
                .count() as u64,
        );
        // inspect: exact waste, one deleting layer, one chmod layer that copies 8 MiB again.
        let ins = cowprof(&store_dir, &["inspect", &tag, "--json"]);
        let a = &ins["image"]["analysis"];
        assert_eq!(a["wasted_bytes"], WASTED, "{name}");
        assert_eq!(ins["image"]["id"], rec.id.as_str());
        assert_eq!(ins["image"]["tags_mutable"][0], tag.as_str());
        let layers = a["layers"].as_array().expect("layers");
        assert_eq!(layers[5]["deleted"], 1, "{name}: rm layer");
        assert_eq!(layers[5]["wasted_bytes"], 2 << 20);
        assert_eq!(layers[6]["modified"], 1, "{name}: chmod layer");
        assert_eq!(layers[6]["wasted_bytes"], 8 << 20);
        assert_eq!(
            layers[7]["deleted"], 2,
            "{name}: opaque layer hides a and b"
        );
        assert_eq!(
            a["final_files"],
            all.values().filter(|e| e.0 != 'd').count() as u64,
            "{name}: visible files"
        );
        let top = &ins["image"]["copy_up_candidates"][0];
        if name != "debian" {
            assert_eq!(top["path"], "/var/lib/app/big.bin");
        }
        recs.insert(name, rec);
    }

    // The OCI layout form (zstd layers, written by skopeo) has the same diffIDs; a second import
    // into the same store unpacks nothing.
    let oci = cache().join("busybox.oci.tar");
    let j = cowprof(
        &store_dir,
        &["import", oci.to_str().expect("utf8"), "--json"],
    );
    let oci_rec: ImageRecord = serde_json::from_value(j["images"][0].clone()).expect("record");
    let ids = |r: &ImageRecord| {
        r.layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&oci_rec), ids(&recs["busybox"]));
    assert_eq!(j["unpacked"].as_array().expect("unpacked").len(), 0);
    assert_eq!(j["reused"].as_array().expect("reused").len(), 9);
    // The manifest the layout's index.json names (skopeo writes one, no nested index).
    let index: serde_json::Value = {
        let mut a = tar::Archive::new(fs::File::open(&oci).expect("open the OCI tar"));
        let mut entry = a
            .entries()
            .expect("tar")
            .map(|e| e.expect("tar entry"))
            .find(|e| e.path().expect("name").ends_with("index.json"))
            .expect("index.json in the layout");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).expect("read index.json");
        serde_json::from_str(&text).expect("index.json parses")
    };
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        oci_rec.manifest_digest.as_deref(),
        manifests[0]["digest"].as_str()
    );
    let fresh = tmp.path().join("store-oci");
    let j = cowprof(&fresh, &["import", oci.to_str().expect("utf8"), "--json"]);
    for l in j["images"][0]["layers"].as_array().expect("layers") {
        assert_eq!(l["stats"]["compression"], "zstd");
    }

    // compare: attack surface, waste, and the same writes on each real layer stack.
    let out_dir = tmp.path().join("compare");
    let mut args = vec![
        "compare",
        "--json",
        "--reps",
        "2",
        "--out",
        out_dir.to_str().expect("utf8"),
    ];
    // By digest: the busybox tag now names the OCI import (tags move; digests do not).
    let ids: Vec<String> = IMAGES.iter().map(|n| recs[n].id.clone()).collect();
    args.extend(ids.iter().map(String::as_str));
    let c = cowprof(&store_dir, &args);
    let imgs = c["images"].as_array().expect("images");
    assert_eq!(imgs.len(), 4);
    for (name, img) in IMAGES.iter().zip(imgs) {
        assert_eq!(img["id"], recs[name].id.as_str());
        assert_eq!(img["wasted_bytes"], WASTED, "{name}");
        let has_shell = !img["shells"].as_array().expect("shells").is_empty();
        let has_pm = !img["package_managers"].as_array().expect("pm").is_empty();
        let expect = matches!(*name, "debian" | "busybox");
        assert_eq!((has_shell, has_pm), (expect, expect), "{name}: {img}");
        let w = img["workloads"].as_array().expect("workloads");
        assert_eq!(w.len(), 2);
        // Every /etc file copied up once: exactly one upper file each.
        assert_eq!(w[0]["count"], etc_files[name], "{name}");
        assert_eq!(w[0]["upper_files"], etc_files[name], "{name}");
        assert_eq!(w[1]["count"], 2);
        assert_eq!(w[1]["upper_files"], 1);
        assert_eq!(
            w[1]["upper_bytes"],
            8 << 20,
            "{name}: the largest file is big.bin"
        );
    }
    let svg = fs::read_to_string(out_dir.join("compare.svg")).expect("chart");
    roxmltree::Document::parse(&svg).expect("chart is valid SVG");
    let png = png::Decoder::new(std::io::BufReader::new(
        fs::File::open(out_dir.join("compare.png")).expect("png"),
    ))
    .read_info()
    .expect("chart is a valid PNG");
    assert_eq!(png.info().width, 960);
    assert!(out_dir.join("compare.json").is_file());
    // bench --image: the lab's ops on busybox's own files, as a lab results.json.
    let bench_out = tmp.path().join("bench");
    let out = Command::new(common::BIN)
        .args([
            "bench",
            "--quick",
            "--image",
            &recs["busybox"].id,
            "--store",
        ])
        .arg(&store_dir)
        .arg("--out")
        .arg(&bench_out)
        .output()
        .expect("bench --image");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --image: {stderr}");
    // Every op left exactly one upper entry per sampled file (no note about a mismatch).
    assert!(!stderr.contains("note:"), "{stderr}");
    let r: cowprof::lab::results::Results =
        serde_json::from_slice(&fs::read(bench_out.join("results.json")).expect("results.json"))
            .expect("lab schema");
    let per_op = |op: &str| -> u64 {
        r.runs[0]
            .cells
            .iter()
            .filter(|c| c.op.as_str() == op)
            .map(|c| c.copy_ups + c.whiteouts)
            .sum()
    };
    // busybox's view has no (size bucket, layer) group of more than the 3 files --quick samples
    // (the base layer's two small files are the largest group): every regular file of the
    // image is sampled, once per op.
    assert_eq!(per_op("first_write"), regular_files["busybox"], "{stderr}");
    assert_eq!(per_op("first_write"), per_op("chmod"));
    assert_eq!(per_op("first_write"), per_op("unlink"));
    for c in &r.runs[0].cells {
        assert_eq!(
            c.latency.count,
            c.copy_ups + c.whiteouts,
            "{} {}",
            c.op,
            c.size_bytes
        );
        let want = if c.op.as_str() == "unlink" {
            (0, c.latency.count)
        } else {
            (c.latency.count, 0)
        };
        assert_eq!((c.copy_ups, c.whiteouts), want, "{} {}", c.op, c.size_bytes);
    }
    // and image inspect takes it as its latency curve
    let ins = cowprof(
        &store_dir,
        &[
            "inspect",
            &recs["scratch"].id,
            "--json",
            "--lab",
            bench_out.join("results.json").to_str().expect("utf8"),
        ],
    );
    assert!(ins["image"]["curve_source"]
        .as_str()
        .expect("source")
        .contains("results.json"));

    // Ctrl-C during the workloads (the flag set before the first write): Interrupted, and the
    // stack is unmounted and removed on the way out.
    {
        let store = Store::open(&store_dir).expect("store");
        let cancel = cowprof::host::cancel::Cancel::default();
        cancel.set();
        let (_, view) = cowprof::image::inspect::inspect(
            &store,
            &recs["debian"],
            &cowprof::image::inspect::Curve::none(),
        )
        .expect("inspect");
        let r = cowprof::image::compare::run_workloads(
            &store,
            &recs["debian"],
            &view,
            1,
            Some(&cancel),
        );
        assert!(
            matches!(r, Err(cowprof::image::ImageError::Interrupted)),
            "{r:?}"
        );
    }
    // A SIGKILLed compare leaves its mount: the next `cowprof image` unmounts and removes it.
    let dead = {
        let mut c = Command::new("true").spawn().expect("true");
        let pid = c.id();
        c.wait().expect("wait");
        pid
    };
    let store = Store::open(&store_dir).expect("store");
    let stale = store_dir.join(format!("run/{dead}-0"));
    for d in ["upper", "work", "merged"] {
        fs::create_dir_all(stale.join(d)).expect("stale dirs");
    }
    let lower = store.layer_dir(&recs["scratch"].layers[0].diff_id);
    cowprof::host::mounts::mount(
        "overlay",
        &stale.join("merged"),
        "overlay",
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            stale.join("upper").display(),
            stale.join("work").display()
        ),
    )
    .expect("mount a stale stack");
    let out = Command::new(common::BIN)
        .args(["image", "--store"])
        .arg(&store_dir)
        .arg("ls")
        .output()
        .expect("ls");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left by a killed run"),
        "{out:?}"
    );
    assert!(!stale.exists(), "stale stack not removed");

    let run_dir = store_dir.join("run");
    assert_eq!(
        fs::read_dir(&run_dir).expect("run").count(),
        0,
        "mount dirs left in {}",
        run_dir.display()
    );
    base.assert_clean("image import/compare");
}

/// Ctrl-C in the middle of unpacking a layer: exit 130, no temp layer, no partial layer.
#[test]
fn interrupted_import_leaves_nothing() {
    if !common::require_root("image_docker interrupted") {
        return;
    }
    sh(&mut Command::new(repo().join("scripts/images")));
    let tmp = common::disk_tempdir();
    let store = tmp.path().join("store");
    let archive = cache().join("debian.tar");
    let run = common::Running::spawn(
        Command::new(common::BIN)
            .args(["image", "--store"])
            .arg(&store)
            .arg("import")
            .arg(&archive),
    );
    // Progress goes to stderr; wait for the first (largest) layer to start, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(2);
    while !fs::read_dir(store.join("tmp")).is_ok_and(|mut d| d.next().is_some()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the import never started a layer"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run.signal(libc::SIGINT);
    let (status, _, stderr) = run.wait(std::time::Duration::from_mins(2));
    // Interrupted (130); on a very fast machine it may have finished the layer first (0).
    assert!(
        matches!(status.code(), Some(130 | 0)),
        "{status:?}: {stderr}"
    );
    eprintln!("interrupted import: exit {:?}", status.code());
    assert_eq!(
        fs::read_dir(store.join("tmp")).expect("tmp").count(),
        0,
        "temp layer left"
    );
    let layers: Vec<_> = fs::read_dir(store.join("layers/sha256"))
        .expect("layers")
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    // Whatever is there is complete: each has its stats file, written just before the rename.
    for l in layers {
        assert!(
            l.path().with_extension("json").is_file(),
            "{} has no stats",
            l.path().display()
        );
    }
}
