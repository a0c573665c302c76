//! `cowprof bench` specs: the built-in default, partial specs, and every kind of mistake as one
//! line that names the field and the fix (exit 2 from the command line, before anything is
//! mounted or attached).

mod common;

use std::process::Command;

use common::BIN;
use cowprof::lab::{
    run::{load_spec, sha256_hex},
    spec::{Cache, FsKind, Op, Spec, DEFAULT_SPEC},
};

#[test]
fn default_spec_is_the_documented_matrix() {
    let s = Spec::default_spec();
    assert_eq!(s.layers, 4);
    assert_eq!(
        s.sizes,
        vec![4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]
    );
    assert_eq!(s.file_layers, vec![1, 4]);
    assert_eq!(s.repetitions, 10);
    assert_eq!(s.filesystems, vec![FsKind::Ext4, FsKind::Tmpfs]);
    assert_eq!(
        s.mount_options,
        vec![Vec::<String>::new(), vec!["metacopy=on".to_owned()]]
    );
    assert_eq!(s.ops, Op::ALL.to_vec());
    assert_eq!(s.cache, vec![Cache::Warm]);
}

#[test]
fn every_field_can_be_given() {
    let text = r#"
layers = 6
sizes = [512, "8K", "2M"]
file_layers = [1, 3, 6]
repetitions = 3
filesystems = ["ext4", "xfs", "btrfs", "tmpfs", "dir"]
mount_options = [[], ["volatile"], ["redirect_dir=on", "index=on"], ["xino=on"], ["userxattr"]]
ops = ["unlink", "first_write"]
cache = ["cold", "warm"]
"#;
    let s = Spec::parse(text, "full.toml").expect("valid");
    assert_eq!(s.layers, 6);
    assert_eq!(s.sizes, vec![512, 8 << 10, 2 << 20]);
    assert_eq!(s.file_layers, vec![1, 3, 6]);
    assert_eq!(s.filesystems.len(), 5);
    assert_eq!(s.mount_options.len(), 5);
    assert_eq!(s.ops, vec![Op::Unlink, Op::FirstWrite]);
    assert_eq!(s.cache, vec![Cache::Cold, Cache::Warm]);
    // Quick keeps the matrix, shrinks sizes and repetitions.
    let q = s.clone().quick();
    assert_eq!(q.filesystems, s.filesystems);
    assert_eq!(q.repetitions, 2);
    assert!(q.sizes.iter().all(|&n| n <= 64 << 10));
}

#[test]
fn empty_spec_is_the_default() {
    let s = Spec::parse("# nothing\n", "empty.toml").expect("valid");
    assert_eq!(s, Spec::default_spec());
}

#[test]
fn mistakes_are_one_line_naming_field_and_fix() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "layrs = 3",
            "line 1",
            &["unknown field `layrs`", "layers", "remove or rename"],
        ),
        ("layers = 200", "layers", &["1 to 128"]),
        ("layers = -1", "layers (line 1)", &["invalid value"]),
        ("sizes = []", "sizes", &["at least one size"]),
        (
            "sizes = [\"4 parsecs\"]",
            "sizes (line 1)",
            &["unknown unit", "\"64M\""],
        ),
        ("sizes = [\"32G\"]", "sizes", &["16G"]),
        (
            "file_layers = [0]",
            "file_layers",
            &["does not exist", "1 (topmost lower)"],
        ),
        ("repetitions = 0", "repetitions", &["1 to 100000"]),
        (
            "filesystems = [\"zfs\"]",
            "filesystems (line 1)",
            &["unknown variant `zfs`", "ext4"],
        ),
        (
            "filesystems = [\"dir\", \"dir\"]",
            "filesystems",
            &["twice"],
        ),
        (
            "mount_options = [[\"lowerdir=/x\"]]",
            "mount_options",
            &["unknown overlay option", "metacopy=on"],
        ),
        (
            "mount_options = [[\"metacopy=on\", \"metacopy=off\"]]",
            "mount_options",
            &["twice"],
        ),
        (
            "mount_options = \"metacopy=on\"",
            "mount_options (line 1)",
            &["invalid type"],
        ),
        (
            "ops = [\"write\"]",
            "ops (line 1)",
            &["unknown variant `write`", "first_write"],
        ),
        (
            "cache = [\"lukewarm\"]",
            "cache (line 1)",
            &["unknown variant", "warm"],
        ),
        ("[layers]\nx = 1", "line 1", &[]),
        (
            "layers = 4\nlayers = 5",
            "layers (line 2)",
            &["duplicate key"],
        ),
    ];
    for (text, field, needles) in cases {
        let e = Spec::parse(text, "my.toml").expect_err(text);
        let line = e.to_string();
        assert!(!line.contains('\n'), "{text:?}: multi-line: {line}");
        assert_eq!(&e.field, field, "{text:?}: {line}");
        assert!(line.starts_with("spec my.toml: "), "{line}");
        for n in *needles {
            assert!(line.contains(n), "{text:?}: {line:?} lacks {n:?}");
        }
    }
}

#[test]
fn spec_hash_is_sha256_of_the_text() {
    let (_, text) = load_spec(None, false).unwrap();
    assert_eq!(text, DEFAULT_SPEC);
    let h = sha256_hex(&text);
    assert_eq!(h.len(), 64);
    assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    let (_, quick) = load_spec(None, true).unwrap();
    assert_ne!(
        sha256_hex(&quick),
        h,
        "--quick must not hash like the full spec"
    );
}

/// From the command line: exit 2, one line on stderr, nothing on stdout; before anything is
/// mounted or attached (so this runs without root too).
#[test]
fn bad_spec_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, "layers = 4\nfilesystems = [\"ext4\", \"ntfs\"]\n").unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(BIN)
        .arg("bench")
        .arg("--spec")
        .arg(&spec)
        .arg("--out")
        .arg(&out_dir)
        .arg("--workdir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("cowprof: spec "), "{stderr}");
    assert!(stderr.contains("filesystems (line 2)"), "{stderr}");
    assert!(stderr.contains("unknown variant `ntfs`"), "{stderr}");
    assert!(!out_dir.exists(), "nothing may be written on a spec error");

    let missing = Command::new(BIN)
        .args(["bench", "--spec", "/nonexistent/spec.toml", "--workdir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/spec.toml"), "{stderr}");
}

#[test]
fn help_shows_the_built_in_spec() {
    let out = Command::new(BIN)
        .args(["bench", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--spec",
        "--out",
        "--workdir",
        "--quick",
        "mount_options = [[], [\"metacopy=on\"]]",
    ] {
        assert!(
            text.contains(needle),
            "bench --help lacks {needle:?}:\n{text}"
        );
    }
}
