//! `cowprof record --json --mount M -- cowprof __workload M META` on real overlay stacks, checked
//! line by line against the scenario's expected events and the upper directory's contents.

mod common;

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use common::{
    build_stacks, canon, disk_tempdir, lock, parse_recording, require_root, Baseline, Recording,
    Running, BIN,
};
use cowprof::{
    event::Kind,
    scenario::{self, UpperEntry, UpperTruth},
};

/// What the main stack's upper directory holds after the workload: the ground truth the events
/// are checked against, written out by hand from the workload's steps.
fn expected_upper() -> BTreeMap<String, UpperEntry> {
    use UpperEntry::{Dir, File, OpaqueDir, Symlink, Whiteout};
    [
        ("etc", Dir),
        ("etc/app.conf", File),
        ("etc/hosts", File),
        ("var", Dir),
        ("var/log", Dir),
        ("var/log/app.log", File),
        ("data", Dir),
        ("data/mid.bin", File),
        ("data/old.bin", Whiteout),
        ("data/gone.bin", File),
        ("tmpdel", OpaqueDir),
        ("link", Symlink),
        ("newfile", File),
    ]
    .into_iter()
    .map(|(p, e)| (p.to_owned(), e))
    .collect()
}

struct Run {
    rec: Recording,
    main_mount: String,
    meta_mount: Option<String>,
    truth: UpperTruth,
    lowers: Vec<PathBuf>,
    /// `scenario::verify` of the events against the non-meta expected list and the upper dir,
    /// run while the layers still exist (it looks entries up in the lower dirs).
    problems: Vec<String>,
}

/// Builds fresh stacks, records the workload with `--mount <main>` plus `extra`, reads the main
/// upper dir back, and tears the stacks down.
fn record_workload(extra: &[&str]) -> Run {
    let dir = disk_tempdir();
    let (main, meta) = build_stacks(&canon(dir.path()));
    let main_mount = canon(&main.merged).display().to_string();
    let meta_mount = meta
        .as_ref()
        .map(|m| canon(&m.merged).display().to_string());
    let mut cmd = Command::new(BIN);
    cmd.args(["record", "--json", "--mount", &main_mount])
        .args(extra)
        .args(["--", BIN, "__workload", &main_mount]);
    if let Some(m) = &meta_mount {
        cmd.arg(m);
    }
    let running = Running::spawn(&mut cmd);
    let (status, lines, stderr) = running.wait(Duration::from_mins(3));
    assert_eq!(status.code(), Some(0), "record failed: {stderr}");
    assert!(
        !stderr.contains("cowprof workload:"),
        "the workload failed: {stderr}"
    );
    let rec = parse_recording(&lines);
    let truth = UpperTruth::read(&main.upper).expect("read upper");
    let lowers = main.lowers.clone();
    let problems = scenario::verify(
        &rec.events,
        &scenario::expected(cowprof::event::Backend::Tracepoint, false),
        &truth,
        &lowers,
    );
    drop(meta);
    drop(main);
    Run {
        rec,
        main_mount,
        meta_mount,
        truth,
        lowers,
        problems,
    }
}

fn find<'a>(rec: &'a Recording, kind: Kind, path: &str) -> &'a cowprof::event::Event {
    let hits: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.kind == kind && e.path == path)
        .collect();
    assert_eq!(hits.len(), 1, "events {kind:?} {path}: {hits:?}");
    hits[0]
}

#[test]
fn record_json_matches_expected_events_and_upper_dir() {
    if !require_root("record_json_matches_expected_events_and_upper_dir") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let run = record_workload(&[]);
    let rec = &run.rec;

    assert_eq!(
        rec.start.backend.as_str(),
        "tracepoint",
        "start line: {:?}",
        rec.start
    );

    // The --mount filter: everything is on the main stack; the metacopy stack's events are gone.
    for e in &rec.events {
        assert_eq!(
            e.mount_point.as_deref(),
            Some(run.main_mount.as_str()),
            "event from another mount: {e:?}"
        );
        assert_eq!(e.backend.as_str(), "tracepoint", "{e:?}");
        assert_eq!(e.errno, 0, "{e:?}");
        assert!(
            !e.path.starts_with("meta"),
            "metacopy stack event not filtered out: {e:?}"
        );
        if let Some(meta) = &run.meta_mount {
            assert_ne!(e.mount_point.as_deref(), Some(meta.as_str()), "{e:?}");
        }
    }

    // Exactly the expected multiset of (kind, path, layer, bytes).
    let expected = scenario::expected(cowprof::event::Backend::Tracepoint, false);
    let mut got: Vec<(Kind, String, Option<u32>, u64)> = rec
        .events
        .iter()
        .map(|e| (e.kind, e.path.clone(), e.lower_layer, e.bytes_copied))
        .collect();
    let mut want: Vec<(Kind, String, Option<u32>, u64)> = expected
        .iter()
        .map(|(k, p, l, b)| (*k, (*p).to_owned(), *l, *b))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(rec.events.len(), 16);

    // Ground truth: the upper dir, read back from disk.
    assert_eq!(run.truth.entries, expected_upper());
    assert!(run.problems.is_empty(), "verify: {:#?}", run.problems);

    // Syscall attribution for a few known steps.
    let syscall = |kind, path| find(rec, kind, path).syscall.clone().unwrap_or_default();
    assert_eq!(&*syscall(Kind::DataCopyUp, "etc/app.conf"), "openat");
    assert_eq!(&*syscall(Kind::DataCopyUp, "var/log/app.log"), "truncate");
    assert!(["unlink", "unlinkat"].contains(&&*syscall(Kind::Whiteout, "data/old.bin")));
    assert!(["mkdir", "mkdirat"].contains(&&*syscall(Kind::OpaqueDir, "tmpdel")));
    assert_eq!(&*syscall(Kind::SpecialCopyUp, "link"), "lchown");

    // Layer directories name the right lower dir; a syscall contains its copy-up.
    for e in &rec.events {
        match e.lower_layer {
            Some(i) => assert_eq!(
                e.lower_layer_dir.as_deref(),
                Some(run.lowers[i as usize - 1].display().to_string().as_str()),
                "{e:?}"
            ),
            None => assert_eq!(e.lower_layer_dir, None, "{e:?}"),
        }
        if let Some(sys) = e.syscall_latency_ns {
            assert!(
                sys >= e.latency_ns,
                "syscall latency {sys} < event latency {}: {e:?}",
                e.latency_ns
            );
        }
    }

    // The summary agrees with the event lines, per kind, per mount, with no drops.
    let s = &rec.summary;
    assert_eq!(s.events, rec.events.len() as u64);
    assert_eq!(
        s.drops,
        cowprof::pipeline::aggregate::Drops::default(),
        "drops: {:?}",
        s.drops
    );
    let mut per_kind: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (k, _, _, b) in &expected {
        let c = per_kind.entry(k.as_str().to_owned()).or_default();
        c.0 += 1;
        c.1 += b;
    }
    let got_kinds: BTreeMap<String, (u64, u64)> = s
        .by_kind
        .iter()
        .map(|(k, st)| (k.clone(), (st.count, st.bytes_copied)))
        .collect();
    assert_eq!(got_kinds, per_kind);
    assert_eq!(s.by_kind.values().map(|st| st.errors).sum::<u64>(), 0);
    assert_eq!(s.by_mount.keys().collect::<Vec<_>>(), vec![&run.main_mount]);
    assert_eq!(s.by_mount[&run.main_mount].count, 16);
    assert_eq!(
        s.by_mount[&run.main_mount].bytes_copied,
        (4 << 10) + 200 + (64 << 10) + (16 << 10)
    );

    baseline.assert_clean("record --json --mount");
}

#[test]
fn record_comm_filter_drops_everything() {
    if !require_root("record_comm_filter_drops_everything") {
        return;
    }
    let _lock = lock();
    let baseline = Baseline::take();
    let run = record_workload(&["--comm", "nonexistent"]);
    assert_eq!(run.rec.start.backend.as_str(), "tracepoint");
    assert_eq!(run.rec.events.len(), 0, "{:?}", run.rec.events);
    assert_eq!(run.rec.summary.events, 0);
    assert!(run.rec.summary.by_kind.is_empty());
    assert!(run.rec.summary.by_mount.is_empty());
    assert_eq!(
        run.rec.summary.drops,
        cowprof::pipeline::aggregate::Drops::default()
    );
    // The workload did run: its copy-ups and whiteouts are in the upper dir.
    assert_eq!(run.truth.entries, expected_upper());
    baseline.assert_clean("record --comm nonexistent");
}
