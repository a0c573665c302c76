//! Replays every fuzz target's committed corpus (`fuzz/corpus/<target>/`) through the same entry
//! point the cargo-fuzz target calls (`cowprof::fuzzing`), without libFuzzer or sanitizers: the
//! seeds and the reproducers of past findings must never panic again. Files named `no-*` are
//! inputs the parser must refuse (or, for `cgroup`, that hold no container); every other seed is
//! a real sample the parser must accept. README, "Fuzzing".

use std::path::Path;

#[test]
fn every_target_replays_its_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&targets)
        .expect("fuzz/fuzz_targets")
        .map(|e| {
            let name = e.expect("fuzz_targets entry").file_name();
            name.to_string_lossy().trim_end_matches(".rs").to_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = cowprof::fuzzing::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "fuzz/fuzz_targets and fuzzing::TARGETS differ"
    );

    let mut mismatches = Vec::new();
    for (target, run) in cowprof::fuzzing::TARGETS {
        let dir = corpus.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{target}: empty corpus");
        for f in files {
            let data = std::fs::read(&f).expect("reading a corpus file");
            let name = f
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let accepted = run(&data);
            if accepted == name.starts_with("no-") {
                mismatches.push(format!("{target}/{name}: accepted = {accepted}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
