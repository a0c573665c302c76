//! The ground truth checked on its own: `UpperTruth::read_with` on upper directories built by hand
//! (char 0/0 whiteouts, a shared whiteout inode, xattr whiteouts, opaque, redirect and metacopy
//! xattrs, in the `trusted.overlay.*` and the `user.overlay.*` (userxattr) spelling), compared
//! with truths written out by hand; and `scenario::verify` shown to fail, with the exact problem
//! lines, on a missing event, an extra event, a wrong-layer event, an errno and an event whose
//! path the upper dir does not have.
//!
//! No overlay is mounted and no BPF program loaded: the directories are plain ones on the target
//! dir's filesystem. Root is needed for `trusted.*` xattrs and mknod.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use common::{disk_tempdir, require_root};
use cowprof::{
    event::{Event, Kind},
    scenario::{verify, Expected, UpperEntry, UpperTruth},
};
use rustix::fs::{mknodat, setxattr, FileType, Mode, XattrFlags, CWD};

fn mknod_char(path: &Path, major: u32, minor: u32) {
    mknodat(
        CWD,
        path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

fn xattr(path: &Path, name: &str, value: &[u8]) {
    setxattr(path, name, value, XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn file(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
}

fn truth(entries: &[(&str, UpperEntry)]) -> UpperTruth {
    UpperTruth {
        entries: entries
            .iter()
            .map(|(p, e)| ((*p).to_owned(), *e))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// An upper dir as overlay leaves it with `trusted.overlay.*` marks, with `prefix` the xattr
/// namespace of the marks ("trusted.overlay." or "user.overlay."), and marks of the OTHER
/// namespace on extra entries that must be ignored.
fn build_upper(u: &Path, prefix: &str, other: &str) {
    dir(u);
    // A whiteout: char 0/0, and a second name hard-linked to it (overlay shares one inode).
    mknod_char(&u.join("gone"), 0, 0);
    fs::hard_link(u.join("gone"), u.join("gone-too")).unwrap();
    // A copied-up device node is not a whiteout.
    mknod_char(&u.join("null"), 1, 3);
    // An xattr whiteout: an empty file marked `whiteout`.
    file(&u.join("xwh"), b"");
    xattr(&u.join("xwh"), &format!("{prefix}whiteout"), b"");
    // Empty without the mark, or marked but not empty: plain files.
    file(&u.join("empty"), b"");
    file(&u.join("marked-but-full"), b"data");
    xattr(
        &u.join("marked-but-full"),
        &format!("{prefix}whiteout"),
        b"",
    );
    // An opaque directory with a new file and a whiteout inside.
    dir(&u.join("opq"));
    xattr(&u.join("opq"), &format!("{prefix}opaque"), b"y");
    file(&u.join("opq/new"), b"n");
    mknod_char(&u.join("opq/wh"), 0, 0);
    // opaque=x only says the directory holds xattr whiteouts: not opaque.
    dir(&u.join("xdir"));
    xattr(&u.join("xdir"), &format!("{prefix}opaque"), b"x");
    // A renamed lower directory (redirect_dir): a merge directory, not opaque, and a metacopy
    // file inside it (sparse, the lower's size) that was also renamed.
    dir(&u.join("moved"));
    xattr(&u.join("moved"), &format!("{prefix}redirect"), b"/orig");
    let inner = u.join("moved/inner");
    fs::File::create(&inner).unwrap().set_len(32 << 10).unwrap();
    xattr(&inner, &format!("{prefix}metacopy"), b"");
    xattr(&inner, &format!("{prefix}redirect"), b"/orig/inner");
    // A metacopy file of an empty lower file: size 0, but no whiteout mark.
    file(&u.join("meta-empty"), b"");
    xattr(&u.join("meta-empty"), &format!("{prefix}metacopy"), b"");
    // A copied-up symlink to a directory: a symlink, never followed.
    symlink("opq", u.join("to-opq")).unwrap();
    // Nested plain entries.
    file(&u.join("etc/sub/deep"), b"deep");
    // Marks in the other namespace mean nothing.
    dir(&u.join("other-opaque"));
    xattr(&u.join("other-opaque"), &format!("{other}opaque"), b"y");
    file(&u.join("other-whiteout"), b"");
    xattr(&u.join("other-whiteout"), &format!("{other}whiteout"), b"");
    file(&u.join("other-meta"), b"m");
    xattr(&u.join("other-meta"), &format!("{other}metacopy"), b"");
}

/// What [`build_upper`] made, written out by hand.
fn hand_truth() -> UpperTruth {
    use UpperEntry::{Dir, File, MetacopyFile, OpaqueDir, Symlink, Whiteout};
    truth(&[
        ("empty", File),
        ("etc", Dir),
        ("etc/sub", Dir),
        ("etc/sub/deep", File),
        ("gone", Whiteout),
        ("gone-too", Whiteout),
        ("marked-but-full", File),
        ("meta-empty", MetacopyFile),
        ("moved", Dir),
        ("moved/inner", MetacopyFile),
        ("null", File),
        ("opq", OpaqueDir),
        ("opq/new", File),
        ("opq/wh", Whiteout),
        ("other-meta", File),
        ("other-opaque", Dir),
        ("other-whiteout", File),
        ("to-opq", Symlink),
        ("xdir", Dir),
        ("xwh", Whiteout),
    ])
}

#[test]
fn trusted_overlay_marks_read_exactly() {
    if !require_root("trusted_overlay_marks_read_exactly") {
        return;
    }
    let tmp = disk_tempdir();
    let upper = tmp.path().join("upper");
    build_upper(&upper, "trusted.overlay.", "user.overlay.");
    assert_eq!(UpperTruth::read(&upper).expect("read"), hand_truth());
    assert_eq!(
        UpperTruth::read_with(&upper, false).expect("read"),
        hand_truth()
    );
}

#[test]
fn user_overlay_marks_read_exactly_with_userxattr() {
    if !require_root("user_overlay_marks_read_exactly_with_userxattr") {
        return;
    }
    let tmp = disk_tempdir();
    let upper = tmp.path().join("upper");
    build_upper(&upper, "user.overlay.", "trusted.overlay.");
    assert_eq!(
        UpperTruth::read_with(&upper, true).expect("read"),
        hand_truth()
    );
    // Read as a trusted-xattr mount, the user marks are nothing: only char 0/0 whiteouts stay.
    let mut plain = hand_truth();
    for (p, e) in [
        ("xwh", UpperEntry::File),
        ("opq", UpperEntry::Dir),
        ("meta-empty", UpperEntry::File),
        ("moved/inner", UpperEntry::File),
        ("other-opaque", UpperEntry::OpaqueDir),
        ("other-whiteout", UpperEntry::Whiteout),
        ("other-meta", UpperEntry::MetacopyFile),
    ] {
        plain.entries.insert(p.to_owned(), e);
    }
    assert_eq!(UpperTruth::read_with(&upper, false).expect("read"), plain);
}

#[test]
fn empty_and_missing_upper_dirs() {
    let tmp = disk_tempdir();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    assert_eq!(
        UpperTruth::read(&upper).expect("read"),
        UpperTruth::default()
    );
    let missing = tmp.path().join("missing");
    let e = UpperTruth::read(&missing).expect_err("a missing upper dir is an error");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

// ---------------------------------------------------------------- scenario::verify

/// Lower layer `l1` with `etc/hosts` and `old`; the upper dir after appending to `etc/hosts`,
/// removing `old` and creating `new` (not in any lower).
fn verify_case() -> (tempfile::TempDir, Vec<PathBuf>, UpperTruth) {
    let tmp = tempfile::tempdir().unwrap();
    let l1 = tmp.path().join("l1");
    file(&l1.join("etc/hosts"), &[b'h'; 200]);
    file(&l1.join("old"), b"old");
    let t = truth(&[
        ("etc", UpperEntry::Dir),
        ("etc/hosts", UpperEntry::File),
        ("old", UpperEntry::Whiteout),
        ("new", UpperEntry::File),
    ]);
    (tmp, vec![l1], t)
}

const EXPECTED: &[Expected] = &[
    (Kind::DirCopyUp, "etc", Some(1), 0),
    (Kind::DataCopyUp, "etc/hosts", Some(1), 200),
    (Kind::Whiteout, "old", Some(1), 0),
];

fn event(kind: Kind, path: &str, layer: Option<u32>, bytes: u64) -> Event {
    Event {
        path: path.to_owned(),
        lower_layer: layer,
        bytes_copied: bytes,
        ..Event::new(kind, cowprof::event::Backend::Tracepoint)
    }
}

/// The events that match [`EXPECTED`], in the order the workload makes them.
fn good_events() -> Vec<Event> {
    EXPECTED
        .iter()
        .map(|(k, p, l, b)| event(*k, p, *l, *b))
        .collect()
}

#[test]
fn verify_passes_the_matching_events() {
    let (_tmp, lowers, t) = verify_case();
    assert_eq!(
        verify(&good_events(), EXPECTED, &t, &lowers),
        Vec::<String>::new()
    );
}

#[test]
fn verify_fails_on_a_missing_event() {
    let (_tmp, lowers, t) = verify_case();
    let mut events = good_events();
    events.pop();
    assert_eq!(
        verify(&events, EXPECTED, &t, &lowers),
        [
            "missing event (Whiteout, \"old\", Some(1), 0)",
            "upper entry old (Whiteout) disagrees with its last event None",
        ]
    );
}

#[test]
fn verify_fails_on_an_extra_event() {
    let (_tmp, lowers, t) = verify_case();
    let mut events = good_events();
    events.push(event(Kind::DataCopyUp, "new", Some(1), 3));
    assert_eq!(
        verify(&events, EXPECTED, &t, &lowers),
        [
            "unexpected event (DataCopyUp, \"new\", Some(1), 3)",
            "upper entry new (File) disagrees with its last event Some(DataCopyUp)",
        ]
    );
    // The same event twice: the multiset has one too many.
    let mut events = good_events();
    events.insert(1, event(Kind::DataCopyUp, "etc/hosts", Some(1), 200));
    assert_eq!(
        verify(&events, EXPECTED, &t, &lowers),
        ["unexpected event (DataCopyUp, \"etc/hosts\", Some(1), 200)"]
    );
}

#[test]
fn verify_fails_on_a_wrong_layer_or_size() {
    let (_tmp, lowers, t) = verify_case();
    let mut events = good_events();
    events[2].lower_layer = Some(2);
    assert_eq!(
        verify(&events, EXPECTED, &t, &lowers),
        [
            "missing event (Whiteout, \"old\", Some(1), 0)",
            "unexpected event (Whiteout, \"old\", Some(2), 0)",
        ]
    );
    let mut events = good_events();
    events[1].bytes_copied = 199;
    assert_eq!(
        verify(&events, EXPECTED, &t, &lowers),
        [
            "missing event (DataCopyUp, \"etc/hosts\", Some(1), 200)",
            "unexpected event (DataCopyUp, \"etc/hosts\", Some(1), 199)",
        ]
    );
}

#[test]
fn verify_fails_on_a_wrong_kind_against_the_upper_dir() {
    let (_tmp, lowers, t) = verify_case();
    // Expected and recorded agree, but the upper dir holds a whiteout, not a copied-up file.
    let expected: &[Expected] = &[
        (Kind::DirCopyUp, "etc", Some(1), 0),
        (Kind::DataCopyUp, "etc/hosts", Some(1), 200),
        (Kind::DataCopyUp, "old", Some(1), 3),
    ];
    let events: Vec<Event> = expected
        .iter()
        .map(|(k, p, l, b)| event(*k, p, *l, *b))
        .collect();
    assert_eq!(
        verify(&events, expected, &t, &lowers),
        ["upper entry old (Whiteout) disagrees with its last event Some(DataCopyUp)"]
    );
}

#[test]
fn verify_fails_on_errno_and_on_paths_the_upper_dir_lacks() {
    let (_tmp, lowers, t) = verify_case();
    let mut events = good_events();
    events[0].errno = 28;
    assert_eq!(
        verify(&events, EXPECTED, &t, &lowers),
        ["event with errno 28: DirCopyUp etc"]
    );
    let expected: Vec<Expected> = EXPECTED
        .iter()
        .copied()
        .chain([(Kind::DataCopyUp, "etc/gone", Some(1), 5)])
        .collect();
    let mut events = good_events();
    events.push(event(Kind::DataCopyUp, "etc/gone", Some(1), 5));
    assert_eq!(
        verify(&events, &expected, &t, &lowers),
        ["event DataCopyUp at etc/gone, but the upper dir has no such entry"]
    );
}

#[test]
fn verify_fails_on_a_copy_up_neither_expected_nor_recorded() {
    let (_tmp, lowers, t) = verify_case();
    // `etc` is in the lower layer and in the upper dir: something copied it up. If the expected
    // list forgot it too, the upper dir still catches it.
    let expected = &EXPECTED[1..];
    let events: Vec<Event> = good_events().into_iter().skip(1).collect();
    assert_eq!(
        verify(&events, expected, &t, &lowers),
        ["upper entry etc (Dir) disagrees with its last event None"]
    );
}
