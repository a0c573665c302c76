//! `cowprof compare` on real results files measured on this kind of machine (tests/data/compare:
//! `cowprof bench` of dir-default.toml and dir-volatile.toml, and two runs of same.toml):
//! snapshots of the markdown and `JUnit` reports, the `JUnit` structure parsed back, the JSON parsed
//! back, the charts, thresholds and config files, and every input error with exit code 2.
//!
//! Snapshots: `COWPROF_BLESS=1 cargo test -p profiler --test compare_report` rewrites them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use cowprof::compare::{
    compare, load_results, render, Basis, Comparison, Format, Gates, Metric, Verdict,
};

const BIN: &str = env!("CARGO_BIN_EXE_cowprof");
const DATA: &str = "tests/data/compare";

fn data(name: &str) -> String {
    format!("{DATA}/{name}")
}

fn cowprof(args: &[&str], cwd: Option<&Path>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("NO_COLOR");
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    c.output().expect("run cowprof")
}

fn stderr_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(e.lines().count(), 1, "one error line expected: {e:?}");
    e.trim_end().to_owned()
}

fn snapshot(name: &str, got: &str) {
    let path = PathBuf::from(DATA).join(name);
    let want = fs::read_to_string(&path);
    if std::env::var_os("COWPROF_BLESS").is_some() && want.as_deref().ok() != Some(got) {
        // Blessing writes the new snapshot and still fails this run, so a stray COWPROF_BLESS
        // can never turn a changed output into a pass: review the diff, then run again.
        fs::write(&path, got).unwrap();
        panic!(
            "{name}: snapshot rewritten (COWPROF_BLESS is set); review `git diff {}` and re-run",
            path.display()
        );
    }
    let want = want.unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with COWPROF_BLESS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        got, want,
        "{name} changed; if intended, re-run with COWPROF_BLESS=1"
    );
}

fn ab() -> Comparison {
    let base = load_results(Path::new(&data("dir-default.json"))).unwrap();
    let new = load_results(Path::new(&data("dir-volatile.json"))).unwrap();
    compare(
        &base,
        &new,
        &data("dir-default.json"),
        &data("dir-volatile.json"),
        &Gates::default(),
    )
    .unwrap()
}

fn row<'a>(c: &'a Comparison, op: &str, size: u64, m: Metric) -> &'a cowprof::compare::Row {
    c.rows
        .iter()
        .find(|r| r.op == op && r.size_bytes == size && r.metric == m)
        .unwrap_or_else(|| panic!("no row {op} {size} {m}"))
}

#[test]
fn volatile_ab_verdicts_and_notes() {
    let c = ab();
    // Both files hold one run of different configurations: compared with each other, announced.
    assert!(
        c.notes.iter().any(|n| n.starts_with("configurations differ: dir (fstype=ext4) · default options · warm (base) vs dir (fstype=ext4) · volatile · warm (new)")),
        "{:?}",
        c.notes
    );
    // No fsync on copy-up: a 64 KiB first write is much faster, also relative to the reference.
    let p50 = row(&c, "first_write", 64 << 10, Metric::P50);
    assert_eq!(p50.basis, Basis::Normalized);
    assert_eq!(p50.verdict, Verdict::Improved);
    assert!(p50.change_hi.unwrap() < -0.5, "{p50:?}");
    let eff = row(&c, "first_write", 64 << 10, Metric::Efficiency);
    assert_eq!(eff.verdict, Verdict::Improved);
    // Exactly one copy-up of exactly the file's bytes per op on both sides.
    let bytes = row(&c, "first_write", 64 << 10, Metric::BytesCopied);
    assert_eq!(
        (bytes.base, bytes.new, bytes.basis),
        (65536.0, 65536.0, Basis::Exact)
    );
    assert_eq!(bytes.verdict, Verdict::NoSignificantChange);
    // `create` has no reference: judged on absolute latency, no efficiency or MB/s row.
    assert_eq!(row(&c, "create", 0, Metric::P50).basis, Basis::Absolute);
    assert!(!c
        .rows
        .iter()
        .any(|r| r.op == "create" && r.metric == Metric::Efficiency));
    // max has no distribution behind it.
    assert_eq!(
        row(&c, "first_write", 65536, Metric::Max).verdict,
        Verdict::NotTested
    );
    // Counts add up.
    assert_eq!(c.rows.len(), 2 * 8 + 6);
    assert_eq!(
        c.counts.improved + c.counts.regressed + c.counts.unchanged + c.counts.not_tested,
        c.rows.len()
    );
    // Swapped, the same differences are regressions.
    let base = load_results(Path::new(&data("dir-volatile.json"))).unwrap();
    let new = load_results(Path::new(&data("dir-default.json"))).unwrap();
    let back = compare(&base, &new, "v", "d", &Gates::default()).unwrap();
    assert_eq!(
        row(&back, "first_write", 65536, Metric::P50).verdict,
        Verdict::Regressed
    );
    assert_eq!(
        row(&back, "first_write", 65536, Metric::P50).passed,
        Some(false)
    );
    assert!(!back.passed());
}

#[test]
fn environment_differences_come_first() {
    let base = load_results(Path::new(&data("tmpfs-a.json"))).unwrap();
    let mut new = load_results(Path::new(&data("tmpfs-b.json"))).unwrap();
    let same = compare(&base, &new, "a", "b", &Gates::default()).unwrap();
    assert!(same.notes.is_empty(), "{:?}", same.notes);
    new.environment.kernel = "6.1.0-56-cloud-amd64".to_owned();
    new.environment.cpus = 8;
    new.environment.backend = None;
    new.environment
        .overlay_params
        .insert("metacopy".to_owned(), "Y".to_owned());
    let c = compare(&base, &new, "a", "b", &Gates::default()).unwrap();
    assert_eq!(
        c.notes,
        [
            "kernel differs: 6.18.44-fc-v595 (base) vs 6.1.0-56-cloud-amd64 (new)",
            "cpus differs: 2 (base) vs 8 (new)",
            "kernel-side backend differs: tracepoint (base) vs none (new)",
            "overlay module parameter metacopy differs: N (base) vs Y (new)",
        ]
    );
    // Without kernel-side timings, copy-up counts, bytes and MB/s exist in the base only.
    assert!(!c.rows.iter().any(|r| r.metric == Metric::CopyUps));
    assert!(c
        .only_in_base
        .iter()
        .any(|s| s.ends_with("first_write 4 KiB d1 copy_ups")));
    let table = render::render(&c, Format::Table, false);
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("NOTE: kernel differs"),
        "{table}"
    );
}

#[test]
fn runs_are_matched_by_configuration() {
    // dir-both.json: dir default and dir volatile in one file (first_write 64K and 1M);
    // dir-default.json: dir default alone (first_write 64K, 1M and create).
    let both = load_results(Path::new(&data("dir-both.json"))).unwrap();
    let default = load_results(Path::new(&data("dir-default.json"))).unwrap();
    let c = compare(&both, &default, "both", "default", &Gates::default()).unwrap();
    assert_eq!(
        c.only_in_base,
        ["run dir (fstype=ext4) · volatile · warm"],
        "{:?}",
        c.only_in_base
    );
    assert_eq!(
        c.only_in_new,
        ["dir (fstype=ext4) · default options · warm create 0 B d0"]
    );
    assert!(c
        .rows
        .iter()
        .all(|r| r.run == "dir (fstype=ext4) · default options · warm" && r.op == "first_write"));
    assert_eq!(c.rows.len(), 2 * 8);
    assert_eq!(
        c.notes,
        [
            "the bench specs differ (spec_hash): only cells measured by both are compared",
            "the files measured different filesystems or options; not compared: only in base: dir (fstype=ext4) · volatile · warm"
        ]
    );
    // A file against itself: nothing changes, every run matched.
    let same = compare(&both, &both, "both", "both", &Gates::default()).unwrap();
    assert_eq!(same.rows.len(), 2 * 2 * 8);
    assert!(same.only_in_base.is_empty() && same.only_in_new.is_empty() && same.notes.is_empty());
    assert!(same
        .rows
        .iter()
        .all(|r| matches!(r.verdict, Verdict::NoSignificantChange | Verdict::NotTested)));
    assert!(same.passed());
}

#[test]
fn deterministic() {
    assert_eq!(ab(), ab());
}

#[test]
fn markdown_and_junit_snapshots() {
    let c = ab();
    snapshot("ab.md", &render::render(&c, Format::Markdown, false));
    snapshot("ab.junit.xml", &render::render(&c, Format::Junit, false));
    snapshot("ab.txt", &render::render(&c, Format::Table, false));
}

#[test]
fn junit_has_the_usual_structure() {
    let c = ab();
    let xml = render::render(&c, Format::Junit, false);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let attr = |n: roxmltree::Node, a: &str| -> usize { n.attribute(a).unwrap().parse().unwrap() };
    let suites: Vec<_> = root
        .children()
        .filter(roxmltree::Node::is_element)
        .collect();
    assert!(suites.iter().all(|s| s.tag_name().name() == "testsuite"));
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    for s in &suites {
        assert!(s.attribute("name").is_some_and(|n| !n.is_empty()));
        let cases: Vec<_> = s.children().filter(roxmltree::Node::is_element).collect();
        assert!(cases.iter().all(|t| t.tag_name().name() == "testcase"
            && t.attribute("name").is_some()
            && t.attribute("classname").is_some()));
        let f = cases
            .iter()
            .filter(|t| t.children().any(|n| n.tag_name().name() == "failure"))
            .count();
        let k = cases
            .iter()
            .filter(|t| t.children().any(|n| n.tag_name().name() == "skipped"))
            .count();
        assert_eq!(attr(*s, "tests"), cases.len());
        assert_eq!(attr(*s, "failures"), f);
        assert_eq!(attr(*s, "skipped"), k);
        assert_eq!(attr(*s, "errors"), 0);
        tests += cases.len();
        failures += f;
        skipped += k;
        for t in &cases {
            for fail in t.children().filter(|n| n.tag_name().name() == "failure") {
                assert!(fail
                    .attribute("message")
                    .is_some_and(|m| m.contains("beyond")));
                assert_eq!(fail.attribute("type"), Some("regression"));
            }
        }
    }
    // One test case per gated metric; failures are the gates that failed.
    assert_eq!(tests, c.counts.gated);
    assert_eq!(failures, c.counts.failed);
    assert_eq!(attr(root, "tests"), tests);
    assert_eq!(attr(root, "failures"), failures);
    assert_eq!(attr(root, "skipped"), skipped);
}

#[test]
fn cli_json_parses_back_and_exit_code_follows_the_gates() {
    // The A/B under the built-in gates (copy-up ops only): volatile passes, and back fails.
    let o = cowprof(
        &[
            "compare",
            &data("dir-default.json"),
            &data("dir-volatile.json"),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["rows"].as_array().unwrap().len(), 22);
    let o = cowprof(
        &[
            "compare",
            &data("dir-volatile.json"),
            &data("dir-default.json"),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    // Gating only what volatile improves: pass.
    let o = cowprof(
        &[
            "compare",
            &data("dir-default.json"),
            &data("dir-volatile.json"),
            "--threshold",
            "efficiency=-5%",
            "--threshold",
            "bytes_copied=+0",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains('\x1b'), "colors when not a tty");
    assert!(
        text.contains("PASS: 5 gated metrics, 0 beyond threshold"),
        "{text}"
    );
    // Swapped: volatile → default loses efficiency beyond 5 %: exit 1.
    let o = cowprof(
        &[
            "compare",
            &data("dir-volatile.json"),
            &data("dir-default.json"),
            "--threshold",
            "efficiency=-5%",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL (efficiency=-5%)"));
}

#[test]
fn only_in_one_file_is_listed() {
    // tmpfs 4K/64K/1M vs dir 64K/1M: 4 KiB exists in base only.
    let o = cowprof(
        &["compare", &data("tmpfs-a.json"), &data("dir-default.json")],
        None,
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("only in base (1):\n  tmpfs · default options · warm → dir (fstype=ext4) · default options · warm first_write 4 KiB d1\n"), "{text}");
    assert!(text.contains("NOTE: configurations differ"), "{text}");
}

#[test]
fn report_dir_has_every_report_and_the_charts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let o = cowprof(
        &[
            "compare",
            &data("tmpfs-a.json"),
            &data("tmpfs-b.json"),
            "--out",
            out.to_str().unwrap(),
            "--threshold",
            "p50=+50%",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let run = "tmpfs-default-options-warm";
    assert_eq!(
        names,
        [
            format!("cdf-create-{run}.png"),
            format!("cdf-create-{run}.svg"),
            format!("cdf-first-write-{run}.png"),
            format!("cdf-first-write-{run}.svg"),
            "compare-junit.xml".to_owned(),
            "compare.json".to_owned(),
            "compare.md".to_owned(),
            "compare.txt".to_owned(),
        ]
    );
    let svg = fs::read_to_string(out.join(format!("cdf-first-write-{run}.svg"))).unwrap();
    roxmltree::Document::parse(&svg).expect("SVG is XML");
    // Three sizes, base and new each: six lines in the legend.
    for label in ["4 KiB d1 base", "4 KiB d1 new", "1 MiB d1 new"] {
        assert!(svg.contains(label), "{label} missing");
    }
    let png = fs::File::open(out.join(format!("cdf-first-write-{run}.png"))).unwrap();
    let info = png::Decoder::new(std::io::BufReader::new(png))
        .read_info()
        .unwrap();
    assert_eq!((info.info().width, info.info().height), (960, 560));
}

#[test]
fn config_file_is_picked_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let abs = |n: &str| fs::canonicalize(data(n)).unwrap().display().to_string();
    fs::write(
        dir.path().join(".cowprof-ci.toml"),
        "ops = [\"first_write\"]\n[thresholds]\nefficiency = \"-5%\"\n",
    )
    .unwrap();
    let o = cowprof(
        &[
            "compare",
            &abs("dir-volatile.json"),
            &abs("dir-default.json"),
            "--format",
            "json",
        ],
        Some(dir.path()),
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["gates"]["source"],
        dir.path().join(".cowprof-ci.toml").display().to_string()
    );
    let gated: Vec<&serde_json::Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["passed"].is_null())
        .collect();
    // efficiency of first_write at 64 KiB and 1 MiB only.
    assert_eq!(gated.len(), 2);
    assert!(gated
        .iter()
        .all(|r| r["metric"] == "efficiency" && r["op"] == "first_write"));
}

#[test]
fn bad_inputs_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).display().to_string();
    let (a, b) = (data("tmpfs-a.json"), data("tmpfs-b.json"));

    fs::write(path("bad.toml"), "[thresholds]\np99 = +10%\n").unwrap();
    let o = cowprof(&["compare", &a, &b, "--config", &path("bad.toml")], None);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr_line(&o);
    assert!(
        e.starts_with(&format!(
            "cowprof compare: {}: line 2 column",
            path("bad.toml")
        )),
        "{e}"
    );

    fs::write(path("metric.toml"), "[thresholds]\np95 = \"+10%\"\n").unwrap();
    let o = cowprof(&["compare", &a, &b, "--config", &path("metric.toml")], None);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr_line(&o),
        format!("cowprof compare: {}: unknown metric `p95`; known metrics: p50, p90, p99, max, mb_per_s, efficiency, copy_ups, bytes_copied, PHASE.p50, PHASE.p99 (PHASE: metadata, data, fsync, link, offcpu_block, offcpu_other, other)", path("metric.toml"))
    );

    fs::write(path("empty.toml"), "[thresholds]\n").unwrap();
    let o = cowprof(&["compare", &a, &b, "--config", &path("empty.toml")], None);
    assert_eq!(o.status.code(), Some(0), "no gates: nothing can fail");

    let o = cowprof(&["compare", &a, &b, "--threshold", "efficiency=+5%"], None);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr_line(&o),
        "cowprof compare: --threshold: threshold `efficiency=+5%`: efficiency gets worse downward; write efficiency=-5%"
    );

    let o = cowprof(
        &["compare", &a, &b, "--config", &path("missing.toml")],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("missing.toml: cannot read it"));

    let text = fs::read_to_string(&a).unwrap();
    fs::write(
        path("v2.json"),
        text.replacen("\"schema\": 1", "\"schema\": 2", 1),
    )
    .unwrap();
    let o = cowprof(&["compare", &a, &path("v2.json")], None);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr_line(&o),
        format!("cowprof compare: {}: results schema 2, this cowprof reads schema 1; use the newer cowprof that wrote it", path("v2.json"))
    );
    fs::write(
        path("v0.json"),
        text.replacen("\"schema\": 1", "\"schema\": 0", 1),
    )
    .unwrap();
    let o = cowprof(&["compare", &path("v0.json"), &a], None);
    assert!(stderr_line(&o).ends_with("results schema 0, this cowprof reads schema 1; re-run `cowprof bench` with this cowprof to make a new baseline"));

    fs::write(path("noschema.json"), "{\"runs\": []}").unwrap();
    let o = cowprof(&["compare", &path("noschema.json"), &a], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("no numeric `schema` field"));

    fs::write(
        path("layout.json"),
        text.replacen("\"runs\"", "\"rums\"", 1),
    )
    .unwrap();
    let o = cowprof(&["compare", &a, &path("layout.json")], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("missing field `runs`"), "{o:?}");

    let hist = text.find("\"histogram\": \"").unwrap() + 14;
    let mut broken = text.clone();
    broken.replace_range(hist..hist + 4, "!!!!");
    fs::write(path("hist.json"), broken).unwrap();
    let o = cowprof(&["compare", &a, &path("hist.json")], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_line(&o).contains("histogram is not valid base64"),
        "{o:?}"
    );

    let o = cowprof(&["compare", &a, &path("nothere.json")], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("nothere.json: cannot read it"));

    let o = cowprof(&["compare", &a, &b, "--format", "yaml"], None);
    assert_eq!(o.status.code(), Some(2));

    // Nothing written for a failed run.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 8);
}

#[test]
fn fields_and_ops_added_by_a_newer_lab_are_tolerated() {
    // The lab may add fields (with serde defaults) and ops within schema 1.
    let dir = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(data("tmpfs-b.json")).unwrap();
    let newer = text
        .replacen(
            "\"copy_ups\": ",
            "\"future_stat\": {\"x\": 1}, \"copy_ups\": ",
            1,
        )
        .replacen("\"op\": \"create\"", "\"op\": \"rename_dir\"", 1)
        .replacen("\"spec_hash\"", "\"host\": \"ci-7\", \"spec_hash\"", 1);
    let path = dir.path().join("newer.json");
    fs::write(&path, newer).unwrap();
    let o = cowprof(
        &["compare", &data("tmpfs-a.json"), path.to_str().unwrap()],
        None,
    );
    // No thresholds: nothing is gated, exit 0.
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("only in base (1):\n  tmpfs · default options · warm create 0 B d0\n"),
        "{text}"
    );
    assert!(
        text.contains("only in new (1):\n  tmpfs · default options · warm rename_dir 0 B d0\n"),
        "{text}"
    );
}

#[test]
fn colors_only_when_asked_for_a_terminal() {
    let c = ab();
    let colored = render::render(&c, Format::Table, true);
    assert!(colored.contains("\x1b[31m"), "regressions in red");
    let plain = render::render(&c, Format::Table, false);
    assert!(!plain.contains('\x1b'));
}

/// Exact metrics are judged exactly: one copy-up more than the base fails a `+0` gate, and a
/// relative gate on bytes is a fraction of the base's bytes (5 % more passes `+10%`, 20 % fails).
#[test]
fn exact_metric_gates_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(data("tmpfs-a.json")).unwrap()).unwrap();
    for c in v["runs"][0]["cells"].as_array_mut().unwrap() {
        if c["op"] != "first_write" {
            continue;
        }
        let (copies, bytes) = (
            c["copy_ups"].as_u64().unwrap(),
            c["bytes_copied"].as_u64().unwrap(),
        );
        match c["size_bytes"].as_u64().unwrap() {
            4096 => {
                c["copy_ups"] = (copies + 1).into();
                c["bytes_copied"] = (bytes / 5 * 6).into();
            }
            65536 => c["bytes_copied"] = (bytes / 20 * 21).into(),
            _ => {}
        }
    }
    let new = dir.path().join("new.json");
    fs::write(&new, serde_json::to_string(&v).unwrap()).unwrap();
    let o = cowprof(
        &[
            "compare",
            &data("tmpfs-a.json"),
            new.to_str().unwrap(),
            "--format",
            "json",
            "--threshold",
            "copy_ups=+0",
            "--threshold",
            "bytes_copied=+10%",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let verdict = |size: u64, metric: &str| -> String {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["op"] == "first_write" && r["size_bytes"] == size && r["metric"] == metric)
            .unwrap_or_else(|| panic!("no row {size} {metric}"))["verdict"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(verdict(4096, "copy_ups"), "regressed");
    assert_eq!(verdict(65536, "copy_ups"), "no_significant_change");
    assert_eq!(verdict(4096, "bytes_copied"), "regressed");
    assert_eq!(verdict(65536, "bytes_copied"), "no_significant_change");
    assert_eq!(verdict(1 << 20, "bytes_copied"), "no_significant_change");
}
