//! Hostile archives (issue #6's list): each crafted here with the tar crate or raw header bytes,
//! wrapped in a real `docker save`-format (or OCI layout) archive, imported into a fresh store.
//! Every case is refused (one line naming the entry, exit code 2) or neutralized (stated in the
//! note lines), and after each: nothing appeared outside the target (a victim directory next to
//! the store is unchanged), and no partial layer stays in the store (`tmp/` empty, `layers/`
//! holds only verified layers).

mod common;

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use cowprof::image::{
    store::{ImportReport, Store},
    unpack::Limits,
    ImageError,
};
use sha2::{Digest as _, Sha256};

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// One layer tar, built entry by entry with raw headers (so hostile names are possible).
#[derive(Default)]
struct Layer {
    out: Vec<u8>,
}

impl Layer {
    fn header(name: &[u8], kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().expect("ustar");
            let n = name.len().min(100);
            u.name[..n].copy_from_slice(&name[..n]);
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        h
    }

    fn raw(mut self, h: &tar::Header, data: &[u8]) -> Self {
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0, pad));
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_mode(name, data, 0o644)
    }

    fn file_mode(self, name: &str, data: &[u8], mode: u32) -> Self {
        let h = Self::header(
            name.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
            mode,
        );
        self.raw(&h, data)
    }

    fn dir(self, name: &str) -> Self {
        let h = Self::header(name.as_bytes(), tar::EntryType::Directory, 0, 0o755);
        self.raw(&h, &[])
    }

    fn link(self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = Self::header(name.as_bytes(), kind, 0, 0o777);
        h.as_ustar_mut().expect("ustar").linkname[..target.len()]
            .copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.raw(&h, &[])
    }

    fn device(self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = Self::header(name.as_bytes(), kind, 0, 0o666);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_cksum();
        self.raw(&h, &[])
    }

    /// A PAX extended header applying to the next entry.
    fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = format!(" {k}=").len() + v.len() + 1;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let h = Self::header(
            b"././@PaxHeader",
            tar::EntryType::XHeader,
            body.len() as u64,
            0o644,
        );
        self.raw(&h, &body)
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0, 1024));
        self.out
    }
}

/// Writes a legacy `docker save` archive with these layers: (blob as stored, diffID).
fn docker_archive(
    dir: &Path,
    layers: &[(Vec<u8>, String)],
    manifest_layers: Option<Vec<String>>,
) -> PathBuf {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
        "history": [],
    });
    let config = serde_json::to_vec(&config).expect("json");
    let config_name = format!("{}.json", hex(&Sha256::digest(&config)));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": ["hostile:latest"],
        "Layers": manifest_layers.unwrap_or_else(|| names.clone()),
    }]);
    let path = dir.join("archive.tar");
    let mut b = tar::Builder::new(fs::File::create(&path).expect("create archive"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    };
    add(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    );
    add(&config_name, &config);
    for (n, (blob, _)) in names.iter().zip(layers) {
        add(n, blob);
    }
    b.into_inner().expect("finish").flush().expect("flush");
    path
}

fn plain(tar: Vec<u8>) -> (Vec<u8>, String) {
    let d = sha(&tar);
    (tar, d)
}

fn gzip(tar: &[u8]) -> (Vec<u8>, String) {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(tar).expect("gzip");
    (e.finish().expect("gzip"), sha(tar))
}

fn zstd_c(tar: &[u8]) -> (Vec<u8>, String) {
    (zstd::encode_all(tar, 1).expect("zstd"), sha(tar))
}

/// A case's world: the store, a victim dir outside it (with one file to attack), the archive dir.
struct World {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    victim: PathBuf,
    work: PathBuf,
}

impl World {
    fn new() -> Self {
        let tmp = common::disk_tempdir();
        let store = tmp.path().join("store");
        let victim = tmp.path().join("victim");
        let work = tmp.path().join("work");
        fs::create_dir_all(&victim).expect("victim");
        fs::create_dir_all(&work).expect("work");
        fs::write(victim.join("target"), b"original").expect("victim file");
        Self {
            _tmp: tmp,
            store,
            victim,
            work,
        }
    }

    fn import_with(&self, archive: &Path, limits: Limits) -> Result<ImportReport, ImageError> {
        let s = Store::open(&self.store).expect("store");
        s.import(archive, limits, None, |_| {})
    }

    fn import(&self, layers: &[(Vec<u8>, String)]) -> Result<ImportReport, ImageError> {
        let a = docker_archive(&self.work, layers, None);
        self.import_with(&a, Limits::default())
    }

    /// Nothing outside the store changed; no partial layer; `layers` verified layers in place.
    fn assert_contained(&self, case: &str, committed_layers: usize) {
        let names: Vec<String> = fs::read_dir(&self.victim)
            .expect("victim")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["target"],
            "{case}: something appeared in the victim dir"
        );
        let m = fs::metadata(self.victim.join("target")).expect("target");
        assert_eq!(m.nlink(), 1, "{case}: the victim file got a hard link");
        assert_eq!(
            fs::read(self.victim.join("target")).expect("read"),
            b"original",
            "{case}"
        );
        let mut around: Vec<String> = fs::read_dir(self.store.parent().expect("parent"))
            .expect("tmp")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        around.sort();
        assert_eq!(
            around,
            ["store", "victim", "work"],
            "{case}: something appeared next to the store"
        );
        if self.store.exists() {
            let tmp: Vec<_> = fs::read_dir(self.store.join("tmp")).expect("tmp").collect();
            assert!(
                tmp.is_empty(),
                "{case}: a partial layer stayed in {}/tmp",
                self.store.display()
            );
            let dirs = fs::read_dir(self.store.join("layers/sha256"))
                .expect("layers")
                .filter(|e| e.as_ref().expect("entry").path().is_dir())
                .count();
            assert_eq!(dirs, committed_layers, "{case}: layers in the store");
            assert_eq!(
                fs::metadata(&self.store)
                    .expect("store")
                    .permissions()
                    .mode()
                    & 0o777,
                0o700,
                "{case}: store must be root-only"
            );
        }
    }
}

/// Asserts a refusal: a bad-input error (exit code 2 in cli/exit.rs), one line, naming `needle`
/// (the entry or blob).
fn refused(case: &str, r: Result<ImportReport, ImageError>, needle: &str) {
    let Err(e) = r else {
        panic!("{case}: imported, but must be refused")
    };
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            ImageError::Entry { .. }
                | ImageError::Digest { .. }
                | ImageError::Stream { .. }
                | ImageError::Archive { .. }
        ),
        "{case}: not a bad-input error: {msg}"
    );
    assert!(!msg.contains('\n'), "{case}: more than one line: {msg}");
    assert!(
        msg.contains(needle),
        "{case}: {msg:?} does not name {needle:?}"
    );
    eprintln!("{case}: refused: {msg}");
}

fn layer_root(w: &World, r: &ImportReport) -> PathBuf {
    Store::open(&w.store)
        .expect("store")
        .layer_dir(&r.images[0].layers[0].diff_id)
}

fn skip() -> bool {
    !common::require_root("image_hostile")
}

#[test]
fn traversal_and_absolute_names_are_refused() {
    if skip() {
        return;
    }
    for (case, name) in [
        ("dotdot", "../victim/pwned"),
        ("nested dotdot", "a/../../victim/pwned"),
        ("absolute", "/tmp/pwned-by-cowprof-test"),
    ] {
        let w = World::new();
        let name = if case == "absolute" {
            format!("{}/pwned", w.victim.display())
        } else {
            name.to_owned()
        };
        let l = Layer::default().dir("a/").file(&name, b"x").finish();
        refused(case, w.import(&[plain(l)]), &name);
        w.assert_contained(case, 0);
    }
}

#[test]
fn writes_through_symlinks_are_refused() {
    if skip() {
        return;
    }
    let w = World::new();
    let victim = w.victim.display().to_string();
    // symlink to outside, then a file through it
    let l = Layer::default()
        .link(tar::EntryType::Symlink, "evil", &victim)
        .file("evil/pwned", b"x")
        .finish();
    refused("symlink then write", w.import(&[plain(l)]), "evil/pwned");
    w.assert_contained("symlink then write", 0);

    // a chain: a -> b -> victim
    let w = World::new();
    let l = Layer::default()
        .link(tar::EntryType::Symlink, "b", &victim)
        .link(tar::EntryType::Symlink, "a", "b")
        .file("a/pwned", b"x")
        .finish();
    refused("symlink chain", w.import(&[plain(l)]), "a/pwned");
    w.assert_contained("symlink chain", 0);

    // relative escape: up -> ../../.. then a dir entry through it
    let w = World::new();
    let l = Layer::default()
        .link(tar::EntryType::Symlink, "up", "../../../../../../../..")
        .dir("up/victim/")
        .finish();
    refused(
        "relative symlink then mkdir",
        w.import(&[plain(l)]),
        "up/victim/",
    );
    w.assert_contained("relative symlink then mkdir", 0);

    // A symlink in one layer, the write in the next: each layer unpacks into its own empty
    // directory, so the upper layer gets a real directory `evil` (which overlay then shows
    // instead of the lower symlink). Contained by construction.
    let w = World::new();
    let l0 = Layer::default()
        .link(tar::EntryType::Symlink, "evil", &victim)
        .finish();
    let l1 = Layer::default().file("evil/pwned", b"x").finish();
    let r = w.import(&[plain(l0), plain(l1)]).expect("separate layers");
    let s = Store::open(&w.store).expect("store");
    let upper = s.layer_dir(&r.images[0].layers[1].diff_id);
    assert!(fs::symlink_metadata(upper.join("evil"))
        .expect("evil")
        .is_dir());
    assert_eq!(fs::read(upper.join("evil/pwned")).expect("pwned"), b"x");
    w.assert_contained("symlink in a lower layer", 2);
}

#[test]
fn hardlinks_outside_the_layer_are_refused() {
    if skip() {
        return;
    }
    let w = World::new();
    let target = w.victim.join("target").display().to_string();
    for (case, l, needle) in [
        (
            "hardlink absolute",
            Layer::default().link(tar::EntryType::Link, "hl", &target),
            "hl",
        ),
        (
            "hardlink dotdot",
            Layer::default().link(tar::EntryType::Link, "hl", "../victim/target"),
            "hl",
        ),
        (
            "hardlink through symlink",
            Layer::default()
                .link(
                    tar::EntryType::Symlink,
                    "evil",
                    &w.victim.display().to_string(),
                )
                .link(tar::EntryType::Link, "hl", "evil/target"),
            "hl",
        ),
        (
            "hardlink to nothing",
            Layer::default().link(tar::EntryType::Link, "hl", "missing"),
            "hl",
        ),
    ] {
        let w = World::new();
        refused(case, w.import(&[plain(l.finish())]), needle);
        w.assert_contained(case, 0);
    }
    // A legitimate hardlink inside the layer works and shares the inode.
    let w = World::new();
    let l = Layer::default()
        .file("a", b"data")
        .link(tar::EntryType::Link, "b", "a")
        .finish();
    let r = w.import(&[plain(l)]).expect("in-layer hardlink");
    let root = layer_root(&w, &r);
    assert_eq!(
        fs::metadata(root.join("a")).expect("a").ino(),
        fs::metadata(root.join("b")).expect("b").ino()
    );
    w.assert_contained("in-layer hardlink", 1);
}

#[test]
fn devices_fifos_and_setuid_follow_the_policy() {
    if skip() {
        return;
    }
    let w = World::new();
    let l = Layer::default()
        .device("mem", tar::EntryType::Char, 1, 1)
        .device("sda", tar::EntryType::Block, 8, 0)
        .device("fifo", tar::EntryType::Fifo, 0, 0)
        .file_mode("suid-ok", b"x", 0o4755)
        .file_mode("suid-writable", b"x", 0o4777)
        .file_mode("sgid-writable", b"x", 0o2775)
        .finish();
    let r = w.import(&[plain(l)]).expect("neutralized, not refused");
    let root = layer_root(&w, &r);
    assert!(
        !root.join("mem").exists() && fs::symlink_metadata(root.join("mem")).is_err(),
        "char device created"
    );
    assert!(
        fs::symlink_metadata(root.join("sda")).is_err(),
        "block device created"
    );
    assert!(fs::symlink_metadata(root.join("fifo"))
        .expect("fifo")
        .file_type()
        .is_fifo());
    let mode = |n: &str| fs::metadata(root.join(n)).expect(n).permissions().mode() & 0o7777;
    assert_eq!(mode("suid-ok"), 0o4755);
    assert_eq!(mode("suid-writable"), 0o777);
    assert_eq!(mode("sgid-writable"), 0o775);
    let notes = &r.images[0].layers[0].stats.notes;
    assert_eq!(notes.len(), 4, "{notes:?}");
    for n in ["mem", "sda", "suid-writable", "sgid-writable"] {
        assert!(
            notes.iter().any(|l| l.starts_with(&format!("{n}:"))),
            "{n} not noted: {notes:?}"
        );
    }
    w.assert_contained("devices/setuid", 1);
}

#[test]
fn overlay_xattrs_are_refused_and_others_filtered() {
    if skip() {
        return;
    }
    for x in [
        "trusted.overlay.redirect",
        "trusted.overlay.metacopy",
        "trusted.overlay.opaque",
        "trusted.overlay.whiteout",
        "user.overlay.redirect",
        "user.overlay.opaque",
    ] {
        let w = World::new();
        let key = format!("SCHILY.xattr.{x}");
        let l = Layer::default()
            .pax(&[(&key, b"/etc")])
            .file("f", b"x")
            .finish();
        refused(x, w.import(&[plain(l)]), x);
        w.assert_contained(x, 0);
    }
    // security.capability and user.* are kept; security.selinux is dropped with a note.
    let w = World::new();
    let cap: &[u8] = &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let l = Layer::default()
        .pax(&[
            ("SCHILY.xattr.security.capability", cap),
            ("SCHILY.xattr.user.note", b"hi"),
            ("SCHILY.xattr.security.selinux", b"system_u:object_r:bin_t"),
        ])
        .file("ping", b"x")
        .finish();
    let r = w.import(&[plain(l)]).expect("filtered");
    let p = layer_root(&w, &r).join("ping");
    let mut buf = [0u8; 64];
    assert_eq!(
        rustix::fs::getxattr(&p, "user.note", &mut buf[..]).expect("user.note"),
        2
    );
    assert_eq!(
        rustix::fs::getxattr(&p, "security.capability", &mut buf[..]).expect("cap"),
        cap.len()
    );
    assert!(rustix::fs::getxattr(&p, "security.selinux", &mut buf[..]).is_err());
    assert_eq!(r.images[0].layers[0].stats.notes.len(), 1);
    w.assert_contained("xattr filter", 1);
}

#[test]
fn duplicates_and_type_changes_end_as_the_last_entry() {
    if skip() {
        return;
    }
    let w = World::new();
    let l = Layer::default()
        .file("dup", b"first")
        .file("dup", b"second")
        .file("x", b"file")
        .dir("x/")
        .file("x/child", b"c")
        .file("x", b"file again")
        .link(tar::EntryType::Symlink, "s", "/etc/passwd")
        .file("s", b"not a link")
        .finish();
    let r = w.import(&[plain(l)]).expect("duplicates are tar semantics");
    let root = layer_root(&w, &r);
    assert_eq!(fs::read(root.join("dup")).expect("dup"), b"second");
    assert_eq!(fs::read(root.join("x")).expect("x"), b"file again");
    assert_eq!(fs::read(root.join("s")).expect("s"), b"not a link");
    let notes = &r.images[0].layers[0].stats.notes;
    assert_eq!(notes.len(), 3, "{notes:?}");
    w.assert_contained("duplicates", 1);
}

#[test]
fn pax_tricks_long_names_and_whiteout_names() {
    if skip() {
        return;
    }
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "PAX path with ..",
            Layer::default()
                .pax(&[("path", b"../victim/pwned")])
                .file("innocent", b"x")
                .finish(),
            "../victim/pwned".into(),
        ),
        (
            "PAX linkpath escape",
            Layer::default()
                .pax(&[("linkpath", b"../victim/target")])
                .link(tar::EntryType::Link, "hl", "a")
                .finish(),
            "hl".into(),
        ),
        (
            "over-long path",
            Layer::default()
                .pax(&[("path", "a/".repeat(2100).as_bytes())])
                .file("x", b"x")
                .finish(),
            "a/a/a/".into(),
        ),
        (
            "over-long component",
            Layer::default()
                .pax(&[("path", "n".repeat(300).as_bytes())])
                .file("x", b"x")
                .finish(),
            "nnnn".into(),
        ),
        (
            "bare .wh.",
            Layer::default().file(".wh.", b"").finish(),
            ".wh.".into(),
        ),
        (
            "whiteout of ..",
            Layer::default().file("d/.wh...", b"").finish(),
            ".wh...".into(),
        ),
        (
            "PAX size desync",
            Layer::default()
                .pax(&[("size", b"99999")])
                .file("x", b"short")
                .finish(),
            "x".into(),
        ),
    ];
    for (case, l, needle) in cases {
        let w = World::new();
        refused(case, w.import(&[plain(l)]), &needle);
        w.assert_contained(case, 0);
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if skip() {
        return;
    }
    let w = World::new();
    // The opaque marker comes after a sibling: it must still only hide lower layers.
    let l = Layer::default()
        .dir("d/")
        .file("d/new", b"n")
        .file("d/.wh..wh..opq", b"")
        .file(".wh.gone", b"")
        .file("e/.wh.nested", b"")
        .file(".wh..wh.plnk", b"")
        .finish();
    let r = w.import(&[plain(l)]).expect("whiteouts");
    let root = layer_root(&w, &r);
    let st = fs::symlink_metadata(root.join("gone")).expect("whiteout");
    assert!(
        st.file_type().is_char_device() && st.rdev() == 0,
        "whiteout is char 0/0"
    );
    assert!(fs::symlink_metadata(root.join("e/nested"))
        .expect("nested")
        .file_type()
        .is_char_device());
    let mut buf = [0u8; 4];
    assert_eq!(
        rustix::fs::getxattr(root.join("d"), "trusted.overlay.opaque", &mut buf[..])
            .expect("opaque"),
        1
    );
    assert_eq!(&buf[..1], b"y");
    assert_eq!(fs::read(root.join("d/new")).expect("sibling kept"), b"n");
    for n in ["d/.wh..wh..opq", ".wh.gone", ".wh..wh.plnk", "e/.wh.nested"] {
        assert!(
            fs::symlink_metadata(root.join(n)).is_err(),
            "{n} left as a file"
        );
    }
    let s = &r.images[0].layers[0].stats;
    assert_eq!((s.whiteouts, s.opaque_dirs, s.files), (2, 1, 1));
    w.assert_contained("whiteouts", 1);
}

#[test]
fn bombs_corrupt_streams_and_limits() {
    if skip() {
        return;
    }
    let small = Limits {
        max_layer_bytes: 64 << 20,
        max_entries: 50,
        max_path: 4096,
        max_ratio: 100,
        ratio_floor: 1 << 20,
    };
    // 32 MiB of zeros in one file: gzip and zstd squeeze it by ~1000x.
    let zeros = vec![0u8; 32 << 20];
    let bomb = Layer::default().file("zeros", &zeros).finish();
    for (case, blob) in [("gzip bomb", gzip(&bomb)), ("zstd bomb", zstd_c(&bomb))] {
        let w = World::new();
        let a = docker_archive(&w.work, &[blob], None);
        refused(case, w.import_with(&a, small), "decompression bomb");
        w.assert_contained(case, 0);
    }
    // Size and entry-count limits.
    let w = World::new();
    let big = plain(Layer::default().file("big", &vec![7u8; 2 << 20]).finish());
    let a = docker_archive(&w.work, &[big], None);
    refused(
        "size limit",
        w.import_with(
            &a,
            Limits {
                max_layer_bytes: 1 << 20,
                ..small
            },
        ),
        "limit",
    );
    w.assert_contained("size limit", 0);
    let w = World::new();
    let mut many = Layer::default();
    for i in 0..60 {
        many = many.file(&format!("f{i}"), b"x");
    }
    let a = docker_archive(&w.work, &[plain(many.finish())], None);
    refused("entry limit", w.import_with(&a, small), "f50");
    w.assert_contained("entry limit", 0);

    // Truncated and corrupt streams.
    let good = Layer::default()
        .file("a", &vec![b'a'; 100_000])
        .file("b", b"b")
        .finish();
    let (gz, gz_diff) = gzip(&good);
    let mut flipped = gz.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    flipped[mid + 1] ^= 0xff;
    let (zs, zs_diff) = zstd_c(&good);
    for (case, blob) in [
        (
            "truncated gzip",
            (gz[..gz.len() / 2].to_vec(), gz_diff.clone()),
        ),
        ("corrupt gzip", (flipped, gz_diff.clone())),
        ("truncated zstd", (zs[..zs.len() / 2].to_vec(), zs_diff)),
        ("truncated tar", (good[..50_000].to_vec(), sha(&good))),
        (
            "not a tar",
            (
                b"hello, this is not a tar stream at all".repeat(20),
                sha(b"x"),
            ),
        ),
    ] {
        let w = World::new();
        refused(case, w.import(&[blob]), "l0/layer.tar");
        w.assert_contained(case, 0);
    }
}

#[test]
#[expect(
    clippy::many_single_char_names,
    reason = "l(ayer), w(orld), a(rchive), d(igest): one per step"
)]
fn digests_and_manifests_are_checked() {
    if skip() {
        return;
    }
    let l = Layer::default().file("a", b"a").finish();
    // diffID mismatch: the config claims another digest.
    let w = World::new();
    refused(
        "diffID mismatch",
        w.import(&[(l.clone(), sha(b"other"))]),
        "l0/layer.tar",
    );
    w.assert_contained("diffID mismatch", 0);
    // Second layer wrong: the first is kept (complete, verified), the second never appears.
    let w = World::new();
    let l1 = Layer::default().file("b", b"b").finish();
    refused(
        "second layer mismatch",
        w.import(&[plain(l.clone()), (l1, sha(b"x"))]),
        "l1/layer.tar",
    );
    w.assert_contained("second layer mismatch", 1);
    // Manifest pointing outside the archive.
    for target in ["../../etc/passwd", "/etc/passwd"] {
        let w = World::new();
        let a = docker_archive(&w.work, &[plain(l.clone())], Some(vec![target.into()]));
        refused(
            "manifest outside",
            w.import_with(&a, Limits::default()),
            target,
        );
        w.assert_contained("manifest outside", 0);
    }
    // Config tampered: its name no longer matches its content.
    let w = World::new();
    let a = docker_archive(&w.work, &[plain(l.clone())], None);
    let mut bytes = fs::read(&a).expect("archive");
    let pos = bytes
        .windows(6)
        .position(|x| x == b"\"amd64")
        .expect("config in archive");
    bytes[pos + 1] = b'A';
    fs::write(&a, &bytes).expect("write");
    refused(
        "config digest",
        w.import_with(&a, Limits::default()),
        ".json",
    );
    w.assert_contained("config digest", 0);

    // OCI layout with a blob whose bytes do not match its digest.
    let w = World::new();
    let oci = w.work.join("oci");
    let (blob, diff) = gzip(&l);
    let put = |b: &[u8]| {
        let d = sha(b);
        let p = oci
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, b).expect("blob");
        d
    };
    let blob_digest = put(&blob);
    let config =
        serde_json::to_vec(&serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [diff]}}))
            .expect("json");
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob_digest, "size": blob.len()}],
    }))
    .expect("json");
    let manifest_digest = put(&manifest);
    fs::write(oci.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
    fs::write(
        oci.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len()}]}))
        .expect("json"),
    )
    .expect("index");
    // First the honest layout imports.
    let r = w
        .import_with(&oci, Limits::default())
        .expect("valid OCI layout");
    assert_eq!(r.images[0].id, config_digest);
    assert_eq!(r.images[0].layers[0].stats.compression, "gzip");
    w.assert_contained("valid OCI", 1);
    // Then a fresh store sees a swapped blob: same name, other bytes (a valid gzip of another tar).
    let w2 = World::new();
    let (other, _) = gzip(&Layer::default().file("a", b"evil").finish());
    fs::write(
        oci.join("blobs/sha256")
            .join(blob_digest.trim_start_matches("sha256:")),
        other,
    )
    .expect("swap");
    refused(
        "OCI blob mismatch",
        w2.import_with(&oci, Limits::default()),
        &blob_digest.trim_start_matches("sha256:")[..12],
    );
    w2.assert_contained("OCI blob mismatch", 0);
}

/// The same refusal through the binary: exit code 2, exactly one stderr line naming the entry,
/// nothing on stdout, nothing left in the store.
#[test]
fn cli_refusal_is_one_line_with_exit_2() {
    if skip() {
        return;
    }
    let w = World::new();
    let l = Layer::default().file("../victim/pwned", b"x").finish();
    let a = docker_archive(&w.work, &[plain(l)], None);
    let out = std::process::Command::new(common::BIN)
        .args(["image", "--store"])
        .arg(&w.store)
        .arg("import")
        .arg(&a)
        .output()
        .expect("run cowprof");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).expect("utf8");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("unpacking layer"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("cowprof image: layer l0/layer.tar: entry \"../victim/pwned\": "),
        "{err}"
    );
    w.assert_contained("cli", 0);
}

/// `image import` shows its progress (layer n of m, bytes of the blob) on a terminal and prints
/// nothing on stderr when it is piped.
#[test]
fn import_progress_only_on_a_terminal() {
    if skip() {
        return;
    }
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: no `script` (util-linux) to give the import a terminal");
        return;
    }
    // Two layers of 48 MiB each (incompressible: a quick xorshift), so the bar draws more than once.
    let big = |seed: u64| {
        let mut x = seed;
        let data: Vec<u8> = (0..48 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Layer::default()
            .file(&format!("blob{seed}"), &data)
            .finish()
    };
    let w = World::new();
    let a = docker_archive(&w.work, &[plain(big(1)), plain(big(2))], None);
    let piped = std::process::Command::new(common::BIN)
        .args(["image", "--store"])
        .arg(&w.store)
        .arg("import")
        .arg(&a)
        .output()
        .expect("run cowprof");
    assert_eq!(piped.status.code(), Some(0));
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    // Again into a fresh store, on a terminal.
    let store2 = w.work.join("store2");
    let line = format!(
        "{} image --store {} import {}",
        common::BIN,
        store2.display(),
        a.display()
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{:?}\n{text}", tty.status);
    assert!(text.contains("layer 1/2 "), "{text}");
    assert!(text.contains("layer 2/2 "), "{text}");
    assert!(text.contains("MiB/48.00 MiB"), "{text}");
    assert!(text.contains("imported sha256:"), "{text}");
    fs::remove_dir_all(&store2).expect("remove the second store");
}
