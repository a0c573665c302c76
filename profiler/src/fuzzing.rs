//! Entry points for the cargo-fuzz targets in `fuzz/` and for the corpus replay test
//! (`profiler/tests/fuzz_corpus.rs`): one function per parser that reads outside input, each
//! taking raw bytes and returning whether the parser accepted them (the replay test checks that
//! against the seed's name); a panic, in a parser or in an invariant checked here, is a finding.
//! Not part of the supported API.
//!
//! Scratch files and directories go to a fresh temporary directory that is removed again.

use std::{
    fmt::Write as _,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::Path,
};

use rustix::fs::{Mode, OFlags};
use sha2::{Digest as _, Sha256};

use crate::{
    compare::{self, render::Format, Gates},
    host::mountinfo,
    image::{archive::Source, manifest, unpack},
    lab::spec::Spec,
    pipeline::decode::{self, Record},
    pipeline::enrich::container,
};

/// A target's body: raw input in, whether the parser accepted it out.
pub type Target = fn(&[u8]) -> bool;

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("layer_tar", layer_tar),
    ("image_archive", image_archive),
    ("docker_manifest", docker_manifest),
    ("oci_layout", oci_layout),
    ("mountinfo", mountinfo),
    ("cgroup", cgroup),
    ("bench_spec", bench_spec),
    ("thresholds", thresholds),
    ("results", results),
    ("decode", decode),
];

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cowprof-fuzz.")
        .tempdir()
        .expect("creating a scratch directory")
}

/// Nesting between the scratch root and the layer root: a `..` escape of up to this many levels
/// lands inside the scratch root, where [`layer_tar`] sees it.
const LAYER_DEPTH: &[&str] = &["a", "b", "c", "layer"];

/// A layer blob (tar, gzip or zstd) unpacked by the real unpacker into a fresh directory, with
/// small limits. Checks: nothing appears beside the layer root; no device node other than
/// overlay's whiteout (char 0/0); no `.wh.` name survives the whiteout conversion.
pub fn layer_tar(data: &[u8]) -> bool {
    let dir = scratch();
    let mut path = dir.path().to_owned();
    for c in LAYER_DEPTH {
        path.push(c);
    }
    std::fs::create_dir_all(&path).expect("creating the layer root");
    let root = rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("opening the layer root");
    let limits = unpack::Limits {
        max_layer_bytes: 16 << 20,
        max_entries: 10_000,
        max_path: 4096,
        max_ratio: 1000,
        ratio_floor: 1 << 20,
    };
    let ok = unpack::unpack_layer(data, "fuzz", &root, limits, None).is_ok();
    drop(root);
    // Outside the layer root: exactly the nesting directories, nothing else.
    let mut at = dir.path().to_owned();
    for c in LAYER_DEPTH {
        let names: Vec<_> = std::fs::read_dir(&at)
            .expect("listing the scratch directory")
            .map(|e| e.expect("reading the scratch directory").file_name())
            .collect();
        assert_eq!(
            names,
            [std::ffi::OsString::from(c)],
            "unpack wrote outside the layer root, in {}",
            at.display()
        );
        at.push(c);
    }
    check_layer_tree(&path);
    ok
}

fn check_layer_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("listing the layer") {
        let e = e.expect("reading the layer");
        let name = e.file_name();
        let md = e.metadata().expect("lstat in the layer");
        let ft = md.file_type();
        let p = e.path();
        assert!(
            !name.as_encoded_bytes().starts_with(b".wh."),
            "whiteout name left unconverted: {}",
            p.display()
        );
        assert!(
            !ft.is_block_device(),
            "block device created: {}",
            p.display()
        );
        assert!(
            !ft.is_char_device() || md.rdev() == 0,
            "char device other than a whiteout created: {}",
            p.display()
        );
        if ft.is_dir() {
            check_layer_tree(&p);
        }
    }
}

/// Raw bytes as an image archive file (`docker save` or OCI layout in tar form): the archive
/// index, then the image descriptions.
pub fn image_archive(data: &[u8]) -> bool {
    let dir = scratch();
    let path = dir.path().join("image.tar");
    std::fs::write(&path, data).expect("writing the archive");
    Source::open(&path).is_ok_and(|src| manifest::read_images(&src).is_ok())
}

/// Splits `data` at `\n--\n` into parts; part 0 is the entry file, parts 1.. are blobs stored
/// under their own sha256 (as `blobs/sha256/<hex>` and `<hex>.json`). In every part, `@N` is
/// replaced by the hex sha256 of part N (N = 1..9, replaced from the last part backwards), so
/// the digest checks pass and the fuzzer reaches the JSON behind them.
fn layout(data: &[u8], entry: &str) -> bool {
    let mut parts: Vec<Vec<u8>> =
        data.split_inclusive(|&b| b == b'\n')
            .fold(vec![Vec::new()], |mut acc, line| {
                if line == b"--\n" {
                    acc.push(Vec::new());
                } else {
                    acc.last_mut().expect("never empty").extend_from_slice(line);
                }
                acc
            });
    parts.truncate(10);
    let mut digests = vec![String::new(); parts.len()];
    for i in (0..parts.len()).rev() {
        for (j, d) in digests.iter().enumerate().skip(1) {
            if !d.is_empty() {
                parts[i] = replace(&parts[i], format!("@{j}").as_bytes(), d.as_bytes());
            }
        }
        digests[i] = Sha256::digest(&parts[i])
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
    }
    let dir = scratch();
    let root = dir.path();
    std::fs::create_dir_all(root.join("blobs/sha256")).expect("creating blobs/");
    std::fs::write(root.join(entry), &parts[0]).expect("writing the entry file");
    for (p, d) in parts.iter().zip(&digests).skip(1) {
        std::fs::write(root.join("blobs/sha256").join(d), p).expect("writing a blob");
        std::fs::write(root.join(format!("{d}.json")), p).expect("writing a blob");
    }
    Source::open(root).is_ok_and(|src| manifest::read_images(&src).is_ok())
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// `docker save`'s `manifest.json` and the config blobs it names (see [`layout`] for the
/// input's shape).
pub fn docker_manifest(data: &[u8]) -> bool {
    layout(data, "manifest.json")
}

/// An OCI layout: `index.json`, nested indexes, manifests and configs (see [`layout`]).
pub fn oci_layout(data: &[u8]) -> bool {
    layout(data, "index.json")
}

/// `/proc/PID/mountinfo` text (non-UTF-8 bytes replaced, as no real file has them in fields we
/// parse); relative layer paths resolved against nothing, so the run stays deterministic.
pub fn mountinfo(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let Ok(mounts) = mountinfo::parse_mountinfo_with(&text, |_| false) else {
        return false;
    };
    for m in &mounts {
        assert!(mountinfo::find_by_kdev(&mounts, m.kdev).is_some());
    }
    true
}

/// `/proc/PID/cgroup` text, and each line's path on its own; true if a container was found.
pub fn cgroup(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = container::container_of_path(line);
    }
    container::container_of_cgroup(&text).is_some()
}

/// A `cowprof bench --spec` TOML file.
pub fn bench_spec(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    Spec::parse(text, "fuzz.toml").is_ok_and(|spec| {
        let _ = spec.quick().layer_bytes();
        true
    })
}

/// A `.cowprof-ci.toml` gates file, or else each line as a `--threshold` string; true if the
/// file, or every line, was accepted.
pub fn thresholds(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let file = Gates::from_toml(text, "fuzz.toml").is_ok();
    let mut flags = true;
    for line in text.lines() {
        flags &= compare::gates::parse_threshold(line, "--threshold").is_ok();
    }
    file || flags
}

/// Cells with more recorded values than this are loaded but not compared by [`results`].
const FUZZ_MAX_VALUES: u64 = 1000;

/// A `results.json`, loaded as `cowprof compare` does, then compared with itself under the
/// default gates and rendered in every format.
pub fn results(data: &[u8]) -> bool {
    let dir = scratch();
    let path = dir.path().join("results.json");
    std::fs::write(&path, data).expect("writing results.json");
    let Ok(r) = compare::load_results(&path) else {
        return false;
    };
    // The bootstrap costs O(values) per resample by design (values are capped at
    // `charts::MAX_RECORDED` and must match the cell's count): keep each input to milliseconds.
    let big = r.runs.iter().flat_map(|run| &run.cells).any(|c| {
        c.latency.count > FUZZ_MAX_VALUES
            || c.kernel.as_ref().is_some_and(|k| k.count > FUZZ_MAX_VALUES)
    });
    if big {
        return true;
    }
    let Ok(cmp) = compare::compare(&r, &r, "base.json", "new.json", &Gates::default()) else {
        return false;
    };
    for f in [Format::Table, Format::Markdown, Format::Junit, Format::Json] {
        let _ = compare::render::render(&cmp, f, false);
    }
    true
}

/// Ring-buffer samples: `data` is a stream of (u16 little-endian length, sample bytes); each
/// sample is decoded as the recorder does. Every sample is either a record or an error (the
/// recorder counts errors as `malformed` and skips them): never a panic. True if none was
/// malformed.
pub fn decode(data: &[u8]) -> bool {
    let (mut ok, mut malformed, mut samples) = (0u64, 0u64, 0u64);
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (sample, tail) = rest[2..].split_at(len);
        rest = tail;
        samples += 1;
        match decode::decode(sample) {
            Ok(Record::Cow(_) | Record::SyscallEnd(_) | Record::Mount(_)) => ok += 1,
            Err(_) => malformed += 1,
        }
    }
    assert_eq!(ok + malformed, samples);
    malformed == 0
}
