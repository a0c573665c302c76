//! The lab's stacks, op by op, checked against the upper directory (the ground truth): after one
//! repetition the upper dir holds exactly what the op must leave there, and nothing of the lab
//! is left afterwards (mounts, directories, state file).
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]

mod common;

use std::{collections::BTreeMap, fs, os::unix::fs::MetadataExt as _, path::Path};

use common::{lock, overlay_mounts, require_root};
use cowprof::host::{
    cancel::Cancel,
    mounts::{overlay_param, OverlayMountError},
};
use cowprof::lab::{
    spec::{FsKind, Op, Shape},
    stack::{state_path, Backing, LabError, LabRoot, LabStack, Layers},
    workload::{
        check_details, expected_upper, file_rel, op_rel, prepare, run_op, run_parallel, second_rel,
        thread_rels, upper_entries, UpperEntry, CHMOD_MODE, CREATE_REL, MOVED_DIR_FILE,
    },
};

const SIZES: [u64; 2] = [4096, 100_000];
/// Threads of the concurrency ops.
const THREADS: u32 = 3;

fn entries(pairs: &[(&str, UpperEntry)]) -> BTreeMap<String, UpperEntry> {
    pairs.iter().map(|(p, e)| ((*p).to_owned(), *e)).collect()
}

fn run_ops(fs_kind: FsKind, options: &[String], metacopy: bool) {
    let work = common::disk_tempdir();
    let mut root = LabRoot::create(work.path()).expect("lab root");
    let run_dir = root.dir.clone();
    assert!(state_path(std::process::id()).exists(), "state file first");
    let cancel = Cancel::default();
    {
        let backing = Backing::create(&mut root, fs_kind, 256 << 20, &cancel).expect("backing");
        let layers = Layers::build_with(
            &backing.dir,
            3,
            &[1, 3],
            &SIZES,
            &SIZES[..1],
            THREADS,
            &cancel,
        )
        .expect("layers");
        assert_eq!(layers.dirs.len(), 3);
        for (i, d) in layers.dirs.iter().enumerate() {
            assert!(d.join("data").join(format!("filler-l{}", i + 1)).exists());
        }
        // With metacopy=on the kernel turns redirect_dir on too (unless told otherwise).
        let redirect = metacopy || overlay_param("redirect_dir").as_deref() == Some("Y");
        let mut n = 0;
        for op in Op::ALL {
            let cells: Vec<(u64, u32)> = match op.shape() {
                Shape::PerFile => SIZES.iter().flat_map(|&s| [(s, 1), (s, 3)]).collect(),
                Shape::PerDir => vec![(0, 1), (0, 3)],
                Shape::Single => vec![(0, 0)],
                Shape::Concurrent => vec![(SIZES[0], 1), (SIZES[0], 3)],
            };
            for (size, depth) in cells {
                {
                    let rel = op_rel(op, size, depth);
                    let rels = if op.shape() == Shape::Concurrent {
                        thread_rels(op, size, depth, THREADS)
                    } else {
                        vec![rel.clone()]
                    };
                    let stack = LabStack::mount(&backing.dir, &layers, options, n).expect("mount");
                    n += 1;
                    assert!(
                        stack.options.starts_with("index=off,lowerdir=")
                            || !Path::new("/sys/module/overlay/parameters/index").exists(),
                        "{}",
                        stack.options
                    );
                    assert!(upper_entries(&stack.upper, false).unwrap().is_empty());
                    prepare(op, &stack.merged, &rel).expect("prepare");
                    let target = stack.merged.join(&rel);
                    let mut buf = vec![0u8; 1 << 20];
                    let outcome = if op.shape() == Shape::Concurrent {
                        let paths: Vec<_> = rels.iter().map(|r| stack.merged.join(r)).collect();
                        let (wall, per) = run_parallel(&paths).expect("threads");
                        assert!(wall > 0 && per.len() == THREADS as usize);
                        None
                    } else {
                        let t = run_op(op, &target, size, &mut buf).expect("op");
                        assert!(t.ns > 0);
                        t.outcome
                    };
                    let got = upper_entries(&stack.upper, false).unwrap();
                    // The lower file the op reads or copies (any lower file for the others).
                    let (lower, lower_size) = match op.shape() {
                        Shape::Concurrent => (layers.lower_file(depth, &rel), size),
                        Shape::PerFile => (layers.lower_file(depth, &file_rel(size, depth)), size),
                        Shape::PerDir | Shape::Single => {
                            (layers.lower_file(1, &file_rel(SIZES[0], 1)), SIZES[0])
                        }
                    };
                    let file = if metacopy {
                        UpperEntry::MetacopyFile
                    } else {
                        UpperEntry::File
                    };
                    let second = second_rel(op, &rel).unwrap_or_default();
                    // The expectations spelled out, not only through expected_upper().
                    let want = match op {
                        Op::ReadLower => entries(&[]),
                        Op::Create => entries(&[(CREATE_REL, UpperEntry::File)]),
                        Op::Unlink => {
                            entries(&[("data", UpperEntry::Dir), (&rel, UpperEntry::Whiteout)])
                        }
                        Op::Chmod if metacopy => {
                            entries(&[("data", UpperEntry::Dir), (&rel, UpperEntry::MetacopyFile)])
                        }
                        Op::RmdirRecreate => {
                            entries(&[("data", UpperEntry::Dir), (&rel, UpperEntry::OpaqueDir)])
                        }
                        Op::RenameFile => entries(&[
                            ("data", UpperEntry::Dir),
                            (&rel, UpperEntry::Whiteout),
                            (&second, file),
                        ]),
                        Op::Link => {
                            entries(&[("data", UpperEntry::Dir), (&rel, file), (&second, file)])
                        }
                        Op::RenameDir if redirect => entries(&[
                            ("data", UpperEntry::Dir),
                            (&rel, UpperEntry::Whiteout),
                            (&second, UpperEntry::Dir),
                        ]),
                        Op::RenameDir => entries(&[("data", UpperEntry::Dir)]),
                        Op::ParallelWrite => {
                            let mut m = entries(&[("data", UpperEntry::Dir)]);
                            for r in &rels {
                                m.insert(r.clone(), UpperEntry::File);
                            }
                            assert_eq!(m.len(), 1 + THREADS as usize);
                            m
                        }
                        _ => entries(&[("data", UpperEntry::Dir), (&rel, UpperEntry::File)]),
                    };
                    assert_eq!(got, want, "{fs_kind} {options:?} {op} {rel}");
                    assert_eq!(got, expected_upper(op, &rels, metacopy, outcome));
                    let details = check_details(
                        op,
                        &rels,
                        size,
                        metacopy,
                        outcome,
                        &stack.upper,
                        &stack.merged,
                        false,
                    );
                    assert!(details.is_empty(), "{op} {rel}: {details:?}");
                    let up = stack.upper.join(&rel);
                    match op {
                        Op::FirstWrite | Op::Rewrite => {
                            let mut expect = fs::read(&lower).unwrap();
                            // Rewrite: prepare opened it for write without writing.
                            expect.push(b'+');
                            assert_eq!(fs::read(&up).unwrap(), expect, "{op} {rel}");
                        }
                        Op::Truncate => assert_eq!(fs::metadata(&up).unwrap().len(), size / 2),
                        Op::OpenTrunc | Op::Create => {
                            assert_eq!(fs::metadata(&up).unwrap().len(), 0);
                        }
                        Op::Chmod => {
                            assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, CHMOD_MODE);
                            assert_eq!(fs::read(&target).unwrap(), fs::read(&lower).unwrap());
                        }
                        Op::ReadUpper => {
                            assert_eq!(fs::read(&up).unwrap(), fs::read(&lower).unwrap());
                        }
                        Op::Unlink => assert!(!target.exists()),
                        Op::ReadLower => {}
                        Op::RmdirRecreate => {
                            assert!(fs::read_dir(&target).unwrap().next().is_none());
                        }
                        Op::RenameFile | Op::Link => {
                            let moved = stack.merged.join(&second);
                            assert_eq!(fs::read(&moved).unwrap(), fs::read(&lower).unwrap());
                            assert_eq!(target.exists(), op == Op::Link);
                        }
                        Op::RenameDir => {
                            assert_eq!(outcome, Some(if redirect { "redirect" } else { "exdev" }));
                            let moved = stack.merged.join(&second).join(MOVED_DIR_FILE);
                            assert_eq!(moved.is_file(), redirect);
                            assert_eq!(target.join(MOVED_DIR_FILE).is_file(), !redirect);
                        }
                        Op::ParallelWrite | Op::RaceWrite => {
                            // Every append landed: one per thread on each file, THREADS on one.
                            let per_file = if op == Op::RaceWrite { THREADS } else { 1 };
                            for r in &rels {
                                let mut expect = fs::read(layers.lower_file(depth, r)).unwrap();
                                expect.extend(std::iter::repeat_n(b'+', per_file as usize));
                                let got = fs::read(stack.upper.join(r)).unwrap();
                                assert!(got == expect, "{op} {r}: {} bytes", got.len());
                            }
                        }
                    }
                    // Lower layers are never written.
                    assert_eq!(fs::metadata(&lower).unwrap().len(), lower_size, "{op}");
                    if op.shape() == Shape::PerDir {
                        assert!(layers.lower_file(depth, &rel).is_dir(), "{op}");
                    }
                    let merged = stack.merged.clone();
                    let upper = stack.upper.clone();
                    drop(stack);
                    assert!(
                        !overlay_mounts()
                            .iter()
                            .any(|(_, mp)| Path::new(mp) == merged),
                        "{} still mounted",
                        merged.display()
                    );
                    // Emptied but kept (see LabStack): no inode reuse while the probes know it.
                    assert!(upper.exists() && fs::read_dir(&upper).unwrap().next().is_none());
                }
            }
        }
    }
    drop(root);
    assert!(!run_dir.exists(), "run dir left: {}", run_dir.display());
    assert!(!state_path(std::process::id()).exists(), "state file left");
    assert!(
        !overlay_mounts()
            .iter()
            .any(|(_, mp)| mp.starts_with(&run_dir.display().to_string())),
        "mounts left under {}",
        run_dir.display()
    );
    assert!(fs::read_dir(work.path()).unwrap().next().is_none());
}

#[test]
fn upper_dir_truth_on_dir() {
    if !require_root("upper_dir_truth_on_dir") {
        return;
    }
    let _l = lock();
    run_ops(FsKind::Dir, &[], false);
}

#[test]
fn upper_dir_truth_on_tmpfs_with_metacopy() {
    if !require_root("upper_dir_truth_on_tmpfs_with_metacopy") {
        return;
    }
    if !Path::new("/sys/module/overlay/parameters/metacopy").exists() {
        common::skip(
            "upper_dir_truth_on_tmpfs_with_metacopy",
            "no-metacopy",
            "this kernel's overlay has no metacopy parameter",
        );
        return;
    }
    let _l = lock();
    run_ops(FsKind::Tmpfs, &["metacopy=on".to_owned()], true);
}

/// A combination the kernel refuses is a typed mount error (the bench skips it), not a panic,
/// and leaves nothing mounted.
#[test]
fn refused_options_are_a_mount_error() {
    if !require_root("refused_options_are_a_mount_error") {
        return;
    }
    let _l = lock();
    let work = common::disk_tempdir();
    let mut root = LabRoot::create(work.path()).unwrap();
    let cancel = Cancel::default();
    let backing = Backing::create(&mut root, FsKind::Dir, 0, &cancel).unwrap();
    let layers = Layers::build(&backing.dir, 2, &[1], &[10], &cancel).unwrap();
    let bad = ["metacopy=on".to_owned(), "redirect_dir=off".to_owned()];
    match LabStack::mount(&backing.dir, &layers, &bad, 0) {
        Err(LabError::Mount(OverlayMountError {
            source, options, ..
        })) => {
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL), "{source}");
            assert!(options.contains("metacopy=on"));
        }
        Err(e) => panic!("expected a mount error, got {e}"),
        Ok(_) => panic!("the kernel accepted {bad:?}"),
    }
    // Cancellation interrupts a layer build.
    cancel.set();
    assert!(matches!(
        Layers::build(&backing.dir.join("x"), 1, &[1], &[4 << 20], &cancel),
        Err(LabError::Interrupted)
    ));
    drop(layers);
    drop(backing);
    let dir = root.dir.clone();
    drop(root);
    assert!(!dir.exists());
}
