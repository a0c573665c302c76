//! `cowprof bench` charts and HTML report, from a realistic `Results` built here: every SVG parses
//! and names its series, every PNG decodes at the right size, the report parses as XML, and a
//! real headless Chromium renders it (DOM dump and screenshot).
#![allow(
    clippy::too_many_lines,
    reason = "a test or bench reads as one story: set-up, workload, exact assertions"
)]
// Synthetic latencies and sizes move between u64 and f64 freely; all are far below 2^52.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cowprof::lab::charts::{
    self, linear_ticks, log_bounds, log_minor_ticks, log_ticks, render_all, run_label, Chart,
    ChartError, CHART_HEIGHT, CHART_WIDTH,
};
use cowprof::lab::html::write_report;
use cowprof::lab::results::{
    decode_histogram, Cell, Environment, HistogramError, LatencyStats, Results, RunResult, Skipped,
    RESULTS_SCHEMA,
};
use cowprof::pipeline::phases::{PhaseStat, PhaseStats};
use hdrhistogram::serialization::{Serializer as _, V2Serializer};
use hdrhistogram::Histogram;

const SIZES: [u64; 8] = [
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];
const DEPTHS: [u32; 4] = [1, 2, 3, 4];
const OPS: [&str; 4] = ["first_write", "rewrite", "read_lower", "chmod"];
const SAMPLES: usize = 200;
const SKIP_REASON: &str = "mkfs.btrfs not found <install btrfs-progs> & retry \"now\"";

/// xorshift64*: deterministic samples without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gauss(&mut self) -> f64 {
        let u1 = self.next_f64().max(1e-12);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

struct Config {
    fs: &'static str,
    features: &'static [&'static str],
    options: &'static [&'static str],
    cache: &'static str,
    /// Copy bandwidth, bytes per ns (= GB/s).
    bw: f64,
    reflink: bool,
}

const CONFIGS: [Config; 3] = [
    Config {
        fs: "tmpfs",
        features: &[],
        options: &[],
        cache: "warm",
        bw: 3.0,
        reflink: false,
    },
    Config {
        fs: "ext4",
        features: &[],
        options: &["metacopy=on"],
        cache: "warm",
        bw: 1.2,
        reflink: false,
    },
    Config {
        fs: "xfs",
        features: &["reflink"],
        options: &[],
        cache: "cold",
        bw: 0.6,
        reflink: true,
    },
];

/// Typical user-side latency of one op, ns.
fn model_ns(cfg: &Config, op: &str, size: u64, depth: u32) -> f64 {
    let size = size as f64;
    let lookup = 4_000.0 * f64::from(depth);
    let copy = |bw: f64| {
        if cfg.reflink {
            60_000.0 + size / 400.0
        } else {
            size / bw
        }
    };
    match op {
        "first_write" => 25_000.0 + lookup + copy(cfg.bw),
        "rewrite" => 2_500.0 + 4096.0 / cfg.bw,
        "read_lower" => 1_000.0 + lookup / 4.0 + size / (cfg.bw * 3.0),
        "chmod" if cfg.options.contains(&"metacopy=on") => 30_000.0 + lookup,
        "chmod" => 28_000.0 + lookup + copy(cfg.bw),
        other => panic!("no model for {other}"),
    }
}

fn histogram_of(rng: &mut Rng, typical: f64) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for _ in 0..SAMPLES {
        let mut v = typical * (0.12 * rng.gauss()).exp();
        if rng.next_f64() < 0.03 {
            v *= 2.0 + 6.0 * rng.next_f64(); // a tail: writeback, a cold dentry, ...
        }
        h.record(v.max(1.0) as u64).unwrap();
    }
    h
}

fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).unwrap();
    base64::engine::general_purpose::STANDARD.encode(buf)
}

fn stats(h: &Histogram<u64>) -> LatencyStats {
    LatencyStats {
        count: h.len(),
        p50_ns: h.value_at_quantile(0.50),
        p25_ns: h.value_at_quantile(0.25),
        p75_ns: h.value_at_quantile(0.75),
        p90_ns: h.value_at_quantile(0.90),
        p99_ns: h.value_at_quantile(0.99),
        max_ns: h.max(),
        mean_ns: h.mean() as u64,
        histogram: encode(h),
    }
}

/// Phases of `count` first writes of `typical` ns: run 0 (tmpfs) shows no off-CPU phases (as
/// a backend without the scheduler tracepoints), run 1 (ext4) shows all seven.
fn phase_model(run: usize, typical: f64, size: u64, count: u64) -> PhaseStats {
    let data = typical * 0.5 * (size as f64 / (size as f64 + 65_536.0));
    let mut shown = vec![
        ("metadata", 3_000.0),
        ("data", data),
        ("fsync", typical * 0.2),
        ("link", 2_000.0),
    ];
    if run == 1 {
        shown.extend([("offcpu_block", typical * 0.1), ("offcpu_other", 1_000.0)]);
    }
    let measured: f64 = shown.iter().map(|(_, v)| v).sum();
    shown.push(("other", (typical - measured).max(500.0)));
    PhaseStats {
        count,
        latency_sum_ns: (shown.iter().map(|(_, v)| v).sum::<f64>() * count as f64) as u64,
        splice_bytes: size * count,
        clone_bytes: 0,
        phases: shown
            .iter()
            .map(|(name, v)| {
                (
                    (*name).to_string(),
                    PhaseStat {
                        p50_ns: *v as u64,
                        p99_ns: (*v * 1.3) as u64,
                        sum_ns: (*v * count as f64) as u64,
                    },
                )
            })
            .collect(),
    }
}

fn sample_results() -> Results {
    let mut rng = Rng(0x00c0_ffee_d00d_f00d);
    let mut runs = Vec::new();
    for (i, cfg) in CONFIGS.iter().enumerate() {
        let mut cells = Vec::new();
        for op in OPS {
            for depth in DEPTHS {
                for size in SIZES {
                    let typical = model_ns(cfg, op, size, depth);
                    let latency = stats(&histogram_of(&mut rng, typical));
                    let copies = op == "first_write"
                        || (op == "chmod" && !cfg.options.contains(&"metacopy=on"));
                    let count = latency.count;
                    let p50 = latency.p50_ns;
                    let reference = (op == "first_write")
                        .then(|| (20_000.0 + size as f64 / (cfg.bw * 0.9)) as u64);
                    cells.push(Cell {
                        op: op.parse().expect("a known op"),
                        size_bytes: size,
                        layer_depth: depth,
                        kernel: (i == 0 && copies)
                            .then(|| stats(&histogram_of(&mut rng, typical * 0.8))),
                        copy_ups: if copies { count } else { 0 },
                        bytes_copied: if copies { count * size } else { 0 },
                        mb_per_s: copies.then(|| size as f64 / p50 as f64 * 1_000.0),
                        reference_p50_ns: reference,
                        efficiency: reference.map(|r| r as f64 / p50 as f64),
                        threads: 1,
                        repetitions: count,
                        wall: None,
                        outcomes: BTreeMap::new(),
                        whiteouts: 0,
                        phases: (op == "first_write" && i < 2)
                            .then(|| phase_model(i, typical, size, count)),
                        phase_latency: BTreeMap::new(),
                        latency,
                    });
                }
            }
        }
        runs.push(RunResult {
            fs: cfg.fs.to_string(),
            fs_features: cfg.features.iter().map(ToString::to_string).collect(),
            mount_options: cfg.options.iter().map(ToString::to_string).collect(),
            cache: cfg.cache.to_string(),
            layers: 4,
            cells,
            plain_create: None,
        });
    }
    Results {
        elapsed_s: 60.0,
        schema: RESULTS_SCHEMA,
        environment: Environment {
            kernel: "6.12.33-cowprof-test #1 SMP PREEMPT_DYNAMIC".to_string(),
            cowprof_version: "0.1.0".to_string(),
            cpus: 2,
            overlay_params: BTreeMap::from([
                ("index".to_string(), "N".to_string()),
                ("metacopy".to_string(), "N".to_string()),
                ("redirect_dir".to_string(), "Y".to_string()),
                ("xino_auto".to_string(), "N".to_string()),
            ]),
            backend: Some(cowprof::event::Backend::Kprobe),
            started_unix_s: 1_767_225_600,
        },
        spec_hash: "9f2c".repeat(16),
        runs,
        skipped: vec![
            Skipped {
                what: "fs=btrfs".to_string(),
                reason: SKIP_REASON.to_string(),
            },
            Skipped {
                what: "option=volatile".to_string(),
                reason: "needs kernel >= 5.10".to_string(),
            },
        ],
    }
}

fn cell_count(results: &Results) -> usize {
    results.runs.iter().map(|r| r.cells.len()).sum()
}

fn parse_xml(text: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(text, opts)
        .unwrap_or_else(|e| panic!("not well-formed: {e}"))
}

fn all_text(doc: &roxmltree::Document<'_>) -> String {
    doc.descendants()
        .filter(roxmltree::Node::is_text)
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Width, height and the number of distinct RGB(A) pixel values of a PNG.
fn png_facts(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(BufReader::new(File::open(path).unwrap()));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let distinct: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    (info.width, info.height, distinct.len())
}

fn render(dir: &Path) -> (Results, Vec<Chart>, PathBuf) {
    let results = sample_results();
    let charts = render_all(&results, &dir.join("charts")).expect("render charts");
    let report = dir.join("report.html");
    write_report(&results, &charts, &report).expect("write report");
    (results, charts, report)
}

#[test]
fn charts_and_report_are_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let (results, charts, report) = render(dir.path());
    let labels: Vec<String> = results.runs.iter().map(run_label).collect();

    // 1 bar chart, a copy-up chart per run, two phase charts (time, shares) per run with phases
    // (2), 1 efficiency chart, a CDF per (run, op).
    assert_eq!(
        charts.len(),
        1 + 3 + 2 * 2 + 1 + 3 * OPS.len(),
        "{charts:#?}"
    );
    let index = charts::chart_index(&results).unwrap();
    assert_eq!(index.len(), charts.len());
    let mut titles: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
    titles.sort_unstable();
    titles.dedup();
    assert_eq!(titles.len(), charts.len(), "titles are unique");

    for chart in &charts {
        let stem = chart.svg.file_stem().unwrap().to_str().unwrap().to_string();
        assert_eq!(index.get(&stem), Some(&chart.title));
        let svg = fs::read_to_string(&chart.svg).unwrap();
        let doc = parse_xml(&svg);
        assert_eq!(doc.root_element().tag_name().name(), "svg", "{stem}");
        let text = all_text(&doc);
        assert!(text.contains(&chart.title), "{stem}: no title in\n{text}");
        let expect: Vec<String> = if stem.starts_with("copy-up-") {
            let mut v: Vec<String> = DEPTHS.iter().map(|d| format!("depth {d} p50")).collect();
            v.extend(DEPTHS.iter().map(|d| format!("depth {d} p99")));
            v.extend(
                [
                    "file size (bytes, log scale)",
                    "first_write latency (log scale)",
                    "4 KiB",
                    "64 MiB",
                ]
                .map(String::from),
            );
            v
        } else if stem.starts_with("phases-") {
            // A band per phase the run shows, bottom to top in the phases' order; the legend
            // names them, and the y axis says what is stacked.
            let all = cowprof::event::PHASE_NAMES;
            let shown: &[&str] = if chart.title.contains(&labels[1]) {
                &all
            } else {
                assert!(chart.title.contains(&labels[0]), "{}", chart.title);
                &["metadata", "data", "fsync", "link", "other"]
            };
            for absent in all.iter().filter(|p| !shown.contains(p)) {
                assert!(!text.contains(absent), "{stem}: {absent} is not shown");
            }
            let bands = doc
                .descendants()
                .filter(|n| n.has_tag_name("polygon"))
                .count();
            assert_eq!(bands, shown.len(), "{stem}: one band per phase");
            let share = stem.starts_with("phases-share-");
            let (title, y) = if share {
                (
                    "Where the time goes (shares): first_write",
                    "share of the mean copy-up time, stacked by phase",
                )
            } else {
                (
                    "Where the time goes: first_write",
                    "mean time per copy-up, stacked by phase",
                )
            };
            assert!(chart.title.starts_with(title), "{}", chart.title);
            let mut v: Vec<String> = shown.iter().map(|p| (*p).to_string()).collect();
            v.extend(["file size (bytes, log scale)", y, "4 KiB", "64 MiB"].map(String::from));
            if share {
                v.push("100 %".to_string());
            }
            v
        } else if stem.starts_with("cdf-") {
            let mut v: Vec<String> = SIZES
                .iter()
                .map(|s| cowprof::fmt::bytes_label(*s))
                .collect();
            v.extend(
                [
                    "p50",
                    "p99",
                    "fraction of ops at most this latency",
                    "50 %",
                    "100 %",
                ]
                .map(String::from),
            );
            v
        } else if stem == "efficiency-first-write" {
            let mut v: Vec<String> = labels.iter().map(|l| format!("{l} (depth 1)")).collect();
            v.push("1.0 = as fast as a plain copy".to_string());
            v
        } else if stem == "first-write-by-config" {
            let mut v = labels.clone();
            v.extend(
                ["p50", "p99", "first_write latency (bar: p50, whisker: p99)"].map(String::from),
            );
            assert!(chart.title.contains("64 MiB, depth 1"), "{}", chart.title);
            v
        } else {
            panic!("unexpected chart {stem}");
        };
        for e in &expect {
            assert!(text.contains(e.as_str()), "{stem}: no {e:?} in\n{text}");
        }

        let (w, h, colors) = png_facts(&chart.png);
        let want_h = if stem == "first-write-by-config" {
            CHART_HEIGHT.max(160 + 48 * 3)
        } else {
            CHART_HEIGHT
        };
        assert_eq!((w, h), (CHART_WIDTH, want_h), "{}", chart.png.display());
        assert!(
            colors > 20,
            "{}: only {colors} colours, blank?",
            chart.png.display()
        );

        // The inline copy is the same drawing as the file.
        assert_eq!(
            charts::render_svg_string(&results, chart).unwrap(),
            svg,
            "{stem}"
        );
    }
    for run in &results.runs {
        for op in OPS {
            let id = format!("cdf-{}-", op.replace('_', "-"));
            assert!(
                charts.iter().any(|c| c
                    .svg
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&id)
                    && c.title.contains(&run_label(run))),
                "no CDF of {op} for {}",
                run_label(run)
            );
        }
    }

    let html = fs::read_to_string(&report).unwrap();
    let doc = parse_xml(&html);
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "html");
    let svgs = doc.descendants().filter(|n| n.has_tag_name("svg")).count();
    assert_eq!(svgs, charts.len());
    let table = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("cells-table"))
        .expect("cells table");
    let rows = table
        .descendants()
        .filter(|n| n.has_tag_name("tbody"))
        .flat_map(|b| b.children().filter(|n| n.has_tag_name("tr")))
        .count();
    assert_eq!(rows, cell_count(&results));
    assert_eq!(rows, 3 * OPS.len() * DEPTHS.len() * SIZES.len());
    let headers: Vec<String> = table
        .descendants()
        .filter(|n| n.has_tag_name("th"))
        .filter_map(|n| n.text())
        .map(String::from)
        .collect();
    for h in [
        "op",
        "size",
        "depth",
        "fs",
        "options",
        "p50",
        "p90",
        "p99",
        "max",
        "copy-ups",
        "MB/s",
        "efficiency",
    ] {
        assert!(headers.iter().any(|x| x == h), "no column {h}: {headers:?}");
    }
    // The "what dominates" reading: the three slowest cells with phases, one item each, the
    // same lines the terminal summary prints.
    let items: Vec<String> = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("dominates"))
        .expect("a \"what dominates\" section (cells have phases)")
        .descendants()
        .filter(|n| n.has_tag_name("li"))
        .map(|n| n.text().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(items, cowprof::lab::summary::dominates(&results, 3));
    assert_eq!(items.len(), 3, "{items:?}");
    let (dominates_at, cells_at) = (
        html.find("id=\"dominates\"").expect("section"),
        html.find("id=\"cells-table\"").expect("table"),
    );
    assert!(dominates_at > cells_at, "the report ends with the reading");
    assert!(
        items
            .iter()
            .all(|l| l.contains(" copy-ups, mean ") && l.contains(" % ")),
        "{items:?}"
    );
    // Text survives escaping exactly, and escaping made no markup of it.
    let text = all_text(&doc);
    for needle in [
        SKIP_REASON,
        "option=volatile",
        "kprobe",
        &"9f2c".repeat(16),
        "6.12.33-cowprof-test #1 SMP PREEMPT_DYNAMIC",
        "redirect_dir",
        "2026-01-01T00:00:00Z",
    ] {
        assert!(text.contains(needle), "report lacks {needle:?}");
    }
    assert!(!html.contains("<install"), "unescaped skip reason");
    for n in doc.descendants().filter(roxmltree::Node::is_element) {
        let name = n.tag_name().name();
        assert!(
            !["script", "img", "link", "iframe", "object", "embed"].contains(&name),
            "<{name}> in report"
        );
        for a in n.attributes() {
            assert!(
                !a.name().starts_with("on"),
                "event handler {} in report",
                a.name()
            );
            if a.name() == "href" || a.name() == "src" {
                assert!(
                    a.value().starts_with('#'),
                    "external reference {}",
                    a.value()
                );
            }
        }
    }
    // A cell with values that are easy to check.
    let first = &results.runs[0].cells[0];
    assert!(text.contains(&cowprof::fmt::ns_label(first.latency.p50_ns as f64)));
}

#[test]
fn hostile_names_are_escaped_everywhere() {
    let mut results = sample_results();
    results.runs.truncate(1);
    results.runs[0]
        .cells
        .retain(|c| c.op.as_str() == "first_write" && c.layer_depth == 1);
    results.runs[0].fs = "<img src=x onerror=alert(1)>&amp;".to_string();
    results.runs[0].cells[0].op = cowprof::lab::spec::Op::FirstWrite;
    results.environment.kernel = "</title><script>alert(1)</script>".to_string();
    results
        .environment
        .overlay_params
        .insert("a\"b".to_string(), "<c>".to_string());
    let dir = tempfile::tempdir().unwrap();
    let charts = render_all(&results, dir.path()).unwrap();
    assert!(!charts.is_empty());
    for c in &charts {
        let svg = fs::read_to_string(&c.svg).unwrap();
        let doc = parse_xml(&svg);
        assert!(
            all_text(&doc).contains("<img src=x onerror=alert(1)>&amp;"),
            "{}",
            c.svg.display()
        );
    }
    let report = dir.path().join("r.html");
    write_report(&results, &charts, &report).unwrap();
    let html = fs::read_to_string(&report).unwrap();
    let doc = parse_xml(&html);
    assert!(!doc
        .descendants()
        .any(|n| n.has_tag_name("img") || n.has_tag_name("script")));
    let text = all_text(&doc);
    assert!(text.contains("</title><script>alert(1)</script>"));
    assert!(text.contains("<img src=x onerror=alert(1)>&amp;"));
}

#[test]
fn empty_results_give_no_charts_and_a_valid_report() {
    let mut results = sample_results();
    results.runs.clear();
    results.skipped.clear();
    let dir = tempfile::tempdir().unwrap();
    let charts = render_all(&results, &dir.path().join("charts")).unwrap();
    assert!(charts.is_empty());
    let report = dir.path().join("r.html");
    write_report(&results, &charts, &report).unwrap();
    let html = fs::read_to_string(&report).unwrap();
    let text = all_text(&parse_xml(&html));
    assert!(text.contains("Nothing was skipped"));
    assert!(text.contains("No charts"));
}

#[test]
fn corrupt_histograms_are_errors_not_panics() {
    type IsExpected = fn(&HistogramError) -> bool;
    let good = sample_results();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&good.runs[0].cells[0].latency.histogram)
        .unwrap();

    let cases: Vec<(String, IsExpected)> = vec![
        ("%%% not base64 %%%".to_string(), |e| {
            matches!(e, HistogramError::Base64 { .. })
        }),
        (b64(b"these are not histogram bytes"), |e| {
            matches!(e, HistogramError::Format { .. })
        }),
        (b64(&raw[..raw.len() - 5]), |e| {
            matches!(e, HistogramError::Truncated { .. })
        }),
        (b64(&raw[..12]), |e| {
            matches!(e, HistogramError::Truncated { .. })
        }),
        (b64(&raw[..6]), |e| {
            matches!(e, HistogramError::Format { .. })
        }),
        (String::new(), |e| {
            matches!(e, HistogramError::Format { .. })
        }),
        (
            {
                let mut huge = raw.clone();
                huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
                b64(&huge)
            },
            |e| matches!(e, HistogramError::Truncated { .. }),
        ),
    ];
    for (i, (bad, is_expected)) in cases.into_iter().enumerate() {
        let err = decode_histogram(&bad).expect_err("corrupt histogram decoded");
        assert!(is_expected(&err), "case {i}: {err:?}");
        assert!(
            err.to_string().contains("re-run `cowprof bench`"),
            "case {i}: {err}"
        );

        let mut results = good.clone();
        let cell = &mut results.runs[1].cells[5];
        cell.latency.histogram = bad;
        let (op, size, depth) = (cell.op, cell.size_bytes, cell.layer_depth);
        let dir = tempfile::tempdir().unwrap();
        match render_all(&results, dir.path()) {
            Err(ChartError::Histogram { cell, source }) => {
                assert!(is_expected(&source), "case {i}: {source:?}");
                assert!(
                    cell.contains(op.as_str())
                        && cell.contains(&cowprof::fmt::bytes_label(size))
                        && cell.contains(&format!("depth {depth}"))
                        && cell.contains("ext4"),
                    "case {i}: {cell}"
                );
            }
            other => panic!("case {i}: {other:?}"),
        }
    }
    // Every prefix of a good serialization is an error or a histogram, never a panic.
    for n in 0..raw.len() {
        let _ = decode_histogram(&b64(&raw[..n]));
    }
    let back = decode_histogram(&good.runs[0].cells[0].latency.histogram).unwrap();
    assert_eq!(back.len(), SAMPLES as u64);
    assert_eq!(
        back.value_at_quantile(0.5),
        good.runs[0].cells[0].latency.p50_ns
    );
}

#[test]
fn log_axis_helpers() {
    assert_eq!(
        log_bounds(4096.0, 67_108_864.0, 2.0),
        Some((4096.0, 67_108_864.0))
    );
    assert_eq!(
        log_bounds(1500.0, 2_000_000.0, 10.0),
        Some((1000.0, 10_000_000.0))
    );
    assert_eq!(
        log_bounds(1000.0, 1e6, 10.0),
        Some((1000.0, 1e6)),
        "exact powers despite ln() rounding"
    );
    assert_eq!(
        log_bounds(100.0, 100.0, 10.0),
        Some((10.0, 1000.0)),
        "one value: a step each side"
    );
    for bad in [
        (0.0, 10.0, 10.0),
        (-1.0, 10.0, 10.0),
        (10.0, 1.0, 10.0),
        (1.0, f64::NAN, 10.0),
        (1.0, 10.0, 1.0),
        (1.0, f64::INFINITY, 2.0),
    ] {
        assert_eq!(log_bounds(bad.0, bad.1, bad.2), None, "{bad:?}");
    }

    assert_eq!(log_ticks(1000.0, 1e6, 10.0, 10), vec![1e3, 1e4, 1e5, 1e6]);
    // 2^11 .. 2^27 is 17 powers: thinned to the even exponents, 4 KiB .. 64 MiB by 4x.
    let sizes = log_ticks(2048.0, 134_217_728.0, 2.0, 9);
    assert_eq!(
        sizes
            .iter()
            .map(|s| cowprof::fmt::bytes_label(*s as u64))
            .collect::<Vec<_>>(),
        ["4 KiB", "16 KiB", "64 KiB", "256 KiB", "1 MiB", "4 MiB", "16 MiB", "64 MiB"]
    );
    assert!(
        log_ticks(1500.0, 1900.0, 10.0, 5).is_empty(),
        "no power inside"
    );
    assert!(log_ticks(0.0, 10.0, 10.0, 5).is_empty());
    assert!(log_ticks(1.0, 10.0, 10.0, 0).is_empty());
    assert_eq!(
        log_ticks(1e-3, 1e3, 10.0, 4),
        vec![1e-2, 1.0, 1e2],
        "stride 2 over 7 decades"
    );

    assert_eq!(
        log_minor_ticks(10.0, 100.0),
        vec![20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
    );
    assert_eq!(log_minor_ticks(1000.0, 1e5).len(), 16);
    assert!(log_minor_ticks(0.0, 1.0).is_empty());

    assert_eq!(linear_ticks(0.0, 1.0, 11).len(), 11);
    let t = linear_ticks(0.0, 23e6, 8);
    assert_eq!(t, vec![0.0, 5e6, 10e6, 15e6, 20e6]);
    assert!(linear_ticks(1.0, 1.0, 5).is_empty());

    assert_eq!(cowprof::fmt::bytes_label(4096), "4 KiB");
    assert_eq!(cowprof::fmt::bytes_label(64 << 20), "64 MiB");
    assert_eq!(cowprof::fmt::bytes_label(1536 * 1024), "1.5 MiB");
    assert_eq!(cowprof::fmt::bytes_label(512), "512 B");
    assert_eq!(cowprof::fmt::ns_label(850.0), "850 ns");
    assert_eq!(cowprof::fmt::ns_label(12_345.0), "12.3 µs");
    assert_eq!(cowprof::fmt::ns_label(4e6), "4 ms");
    assert_eq!(cowprof::fmt::ns_label(2.5e9), "2.5 s");
    assert_eq!(cowprof::fmt::ns_label(0.0), "0");
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium.

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Runs chromium headless with `args`, stdout to `stdout`, killed after `limit`.
fn chromium(
    bin: &Path,
    profile: &Path,
    args: &[String],
    stdout: &Path,
    limit: Duration,
) -> (bool, String) {
    let stderr_path = stdout.with_extension("stderr");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    (
        status.is_some_and(|s| s.success()),
        format!("status {status:?}, stderr:\n{stderr}"),
    )
}

#[test]
fn report_in_headless_chromium() {
    let Some(bin) = find_on_path(&["chromium", "chromium-browser"]) else {
        common::skip(
            "report_in_headless_chromium",
            "no-chromium",
            "no chromium on PATH; install the Debian package `chromium` (scripts/setup installs it)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (results, charts, report) = render(dir.path());
    let url = format!("file://{}", report.display());
    let limit = Duration::from_mins(3);

    let dom_path = dir.path().join("dom.html");
    let (ok, log) = chromium(
        &bin,
        &dir.path().join("profile-dom"),
        &["--dump-dom".to_string(), url.clone()],
        &dom_path,
        limit,
    );
    assert!(ok, "chromium --dump-dom failed: {log}");
    let dom = fs::read_to_string(&dom_path).unwrap();
    assert!(
        dom.contains("id=\"cells-table\""),
        "no cells table in the DOM:\n{}",
        &dom[..dom.len().min(2000)]
    );
    assert_eq!(
        dom.matches("<svg").count(),
        charts.len(),
        "inline SVGs in the DOM"
    );
    assert!(
        dom.matches("<tr>").count() >= cell_count(&results),
        "table rows in the DOM"
    );
    assert!(
        dom.contains("&lt;install btrfs-progs&gt; &amp; retry"),
        "skip reason escaped in the DOM"
    );
    assert!(!dom.contains("<script"), "a script in the DOM");
    for c in &charts {
        assert!(
            dom.contains(
                &c.title
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            ),
            "no {:?} in the DOM",
            c.title
        );
    }

    let shot = dir.path().join("report.png");
    let (ok, log) = chromium(
        &bin,
        &dir.path().join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2400".to_string(),
            url,
        ],
        &dir.path().join("shot.out"),
        limit,
    );
    assert!(ok, "chromium --screenshot failed: {log}");
    let size = fs::metadata(&shot).map_or(0, |m| m.len());
    assert!(
        size > 10 * 1024,
        "screenshot {} is {size} bytes: blank page? {log}",
        shot.display()
    );
    let (w, h, colors) = png_facts(&shot);
    assert_eq!((w, h), (1280, 2400));
    assert!(colors > 50, "screenshot has only {colors} colours");

    // Keep the report and its screenshot where a person can look at them.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab_report");
    fs::create_dir_all(&keep).unwrap();
    fs::copy(&shot, keep.join("report.png")).unwrap();
    fs::copy(&report, keep.join("report.html")).unwrap();
    for c in &charts {
        for f in [&c.svg, &c.png] {
            fs::copy(f, keep.join(f.file_name().unwrap())).unwrap();
        }
    }
    eprintln!("screenshot: {}", keep.join("report.png").display());
}

/// `results.json` stays schema 1: files written before the fields added for issue 3's second
/// half (quartiles, threads, repetitions, wall, outcomes, whiteouts, elapsed time) still parse,
/// with the documented defaults.
#[test]
fn results_without_the_added_fields_still_parse() {
    let sample = sample_results();
    let cells: Vec<_> = sample.runs.iter().flat_map(|r| &r.cells).collect();
    // Per cell: threads, repetitions, wall, whiteouts and both quartiles; outcomes only when set.
    let want_removed = cells.len() * 6 + cells.iter().filter(|c| !c.outcomes.is_empty()).count();
    let mut v = serde_json::to_value(&sample).unwrap();
    v.as_object_mut().unwrap().remove("elapsed_s");
    let mut removed = 0;
    for run in v["runs"].as_array_mut().unwrap() {
        for cell in run["cells"].as_array_mut().unwrap() {
            let c = cell.as_object_mut().unwrap();
            for k in ["threads", "repetitions", "wall", "outcomes", "whiteouts"] {
                removed += usize::from(c.remove(k).is_some());
            }
            for k in ["p25_ns", "p75_ns"] {
                removed += usize::from(c["latency"].as_object_mut().unwrap().remove(k).is_some());
            }
        }
    }
    assert_eq!(removed, want_removed);
    let old: Results = serde_json::from_value(v).expect("an older schema-1 file parses");
    assert_eq!(old.schema, RESULTS_SCHEMA);
    assert!(old.elapsed_s.abs() < f64::EPSILON, "{}", old.elapsed_s);
    let c = &old.runs[0].cells[0];
    assert_eq!((c.threads, c.repetitions, c.whiteouts), (1, 0, 0));
    assert!(c.wall.is_none() && c.outcomes.is_empty());
    assert_eq!((c.latency.p25_ns, c.latency.p75_ns), (0, 0));
}
