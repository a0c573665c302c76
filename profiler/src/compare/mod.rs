//! `cowprof compare BASE.json NEW.json`: regression gates over two `results.json` of the lab.
//!
//! [`load_results`] reads a file and refuses other schema versions; [`diff::compare`] matches
//! runs and cells and judges every metric present in both (bootstrap intervals from the raw
//! histograms, [`stats`]); [`gates`] holds the thresholds (`.cowprof-ci.toml`, `--threshold`);
//! [`render`] writes the table, markdown, `JUnit` and JSON reports; [`chart`] the overlaid CDFs.
//! [`execute`] is the command itself, shared by `compare` and `bench --baseline` ([`bench_gate`]).

pub mod chart;
pub mod diff;
pub mod gates;
pub mod render;
pub mod stats;

use std::{
    io::{IsTerminal as _, Write},
    path::{Path, PathBuf},
};

pub use diff::{compare, Basis, Comparison, Row, Verdict, COMPARE_SCHEMA};
pub use gates::{GateError, Gates, Metric};
pub use render::Format;

use crate::{
    lab::results::{HistogramError, Results, RESULTS_SCHEMA},
    plot::PlotError,
};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{path}: cannot read it: {source}; pass the results.json that `cowprof bench` wrote")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON ({source}); pass the results.json that `cowprof bench` wrote")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: no numeric `schema` field, so not a cowprof results.json; pass the results.json that `cowprof bench` wrote"
    )]
    NotResults { path: String },
    #[error("{path}: results schema {found}, this cowprof reads schema {expected}; {hint}")]
    Schema {
        path: String,
        found: u64,
        expected: u32,
        hint: &'static str,
    },
    #[error("{path}: {source}; the file does not match results schema 1: re-run `cowprof bench`")]
    Layout {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: cell {cell}: {source}")]
    Histogram {
        path: String,
        cell: String,
        #[source]
        source: HistogramError,
    },
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("cannot write {path}: {source}; pick an --out directory you can write to")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Chart(#[from] PlotError),
}

/// Reads a `results.json`; another schema version is refused with both numbers.
pub fn load_results(path: &Path) -> Result<Results, CompareError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CompareError::Read {
        path: name.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| CompareError::Json {
            path: name.clone(),
            source,
        })?;
    let Some(found) = value.get("schema").and_then(serde_json::Value::as_u64) else {
        return Err(CompareError::NotResults { path: name });
    };
    if found != u64::from(RESULTS_SCHEMA) {
        return Err(CompareError::Schema {
            path: name,
            found,
            expected: RESULTS_SCHEMA,
            hint: if found > u64::from(RESULTS_SCHEMA) {
                "use the newer cowprof that wrote it"
            } else {
                "re-run `cowprof bench` with this cowprof to make a new baseline"
            },
        });
    }
    serde_json::from_value(value).map_err(|source| CompareError::Layout { path: name, source })
}

/// What `cowprof compare` (and `bench --baseline`) was asked to do.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub base: PathBuf,
    pub new: PathBuf,
    pub config: Option<PathBuf>,
    pub thresholds: Vec<String>,
    pub format: Format,
    /// Also write every report and the CDF charts here.
    pub out: Option<PathBuf>,
}

/// Loads the gates (config file or flags) from the current directory's point of view.
pub fn load_gates(config: Option<&Path>, thresholds: &[String]) -> Result<Gates, CompareError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    Ok(Gates::load(config, &cwd, thresholds)?)
}

/// Colors on when stdout is a terminal and `NO_COLOR` is unset or empty.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs the comparison and writes the reports; the result decides the exit code.
pub fn execute(opts: &CompareOptions, out: &mut dyn Write) -> Result<Comparison, CompareError> {
    let gates = load_gates(opts.config.as_deref(), &opts.thresholds)?;
    let base = load_results(&opts.base)?;
    let new = load_results(&opts.new)?;
    let cmp = compare(
        &base,
        &new,
        &opts.base.display().to_string(),
        &opts.new.display().to_string(),
        &gates,
    )?;
    let text = render::render(
        &cmp,
        opts.format,
        opts.format == Format::Table && use_color(),
    );
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir).map_err(|source| CompareError::Write {
            path: dir.clone(),
            source,
        })?;
        for (format, name) in [
            (Format::Markdown, "compare.md"),
            (Format::Junit, "compare-junit.xml"),
            (Format::Json, "compare.json"),
            (Format::Table, "compare.txt"),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, render::render(&cmp, format, false))
                .map_err(|source| CompareError::Write { path, source })?;
        }
        chart::render_cdfs(&cmp, &base, &new, dir)?;
    }
    Ok(cmp)
}

/// Why `bench --baseline` ended before a comparison could pass or fail.
#[derive(Debug, thiserror::Error)]
pub enum BenchGateError<E: std::error::Error + 'static> {
    /// The baseline or the gates are unusable (checked before measuring).
    #[error("--baseline: {0}")]
    Baseline(#[source] CompareError),
    /// The measurement itself failed.
    #[error(transparent)]
    Bench(E),
    /// The comparison of a finished measurement failed.
    #[error(transparent)]
    Compare(CompareError),
}

/// `bench --baseline`: runs `bench` and compares its results with the baseline. When the gate
/// fails, measures and compares again up to `confirm` times and fails only if every attempt
/// fails: a real regression reproduces, a load burst on a shared runner rarely hits the same
/// cells twice. The baseline and the gates are checked before measuring. Returns the last
/// comparison (its [`Comparison::passed`] decides).
pub fn bench_gate<E: std::error::Error + 'static>(
    opts: &CompareOptions,
    confirm: u32,
    out: &mut dyn Write,
    mut bench: impl FnMut(&mut dyn Write) -> Result<(), E>,
) -> Result<Comparison, BenchGateError<E>> {
    load_results(&opts.base)
        .and_then(|_| load_gates(opts.config.as_deref(), &opts.thresholds))
        .map_err(BenchGateError::Baseline)?;
    let mut attempt = 1;
    loop {
        bench(out).map_err(BenchGateError::Bench)?;
        let _ = writeln!(out);
        let cmp = execute(opts, out).map_err(BenchGateError::Compare)?;
        if cmp.passed() || attempt > confirm {
            return Ok(cmp);
        }
        let _ = writeln!(
            out,
            "\ncowprof: the gate failed; measuring again to confirm ({attempt} of {confirm})\n"
        );
        let _ = out.flush();
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/compare")
            .join(name)
    }

    /// `--confirm`: a failing gate is measured again; the last measurement decides.
    #[test]
    fn confirm_measures_again_until_one_passes() {
        type Bench = Result<(), std::io::Error>;
        let dir = tempfile::tempdir().unwrap();
        let opts = CompareOptions {
            base: fixture("dir-volatile.json"),
            new: dir.path().join("results.json"),
            config: None,
            thresholds: vec!["p50=+10%".to_owned()],
            format: Format::Json,
            out: None,
        };
        // Every measurement is the slower default mount: fails 1 + 2 times.
        let mut calls = 0;
        let cmp = bench_gate(&opts, 2, &mut std::io::sink(), |_| -> Bench {
            calls += 1;
            std::fs::copy(fixture("dir-default.json"), &opts.new).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!((cmp.passed(), calls), (false, 3));
        // The second measurement is as fast as the baseline: passes after one retry.
        let mut calls = 0;
        let cmp = bench_gate(&opts, 2, &mut std::io::sink(), |_| -> Bench {
            calls += 1;
            let from = if calls == 1 {
                "dir-default.json"
            } else {
                "dir-volatile.json"
            };
            std::fs::copy(fixture(from), &opts.new).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!((cmp.passed(), calls), (true, 2));
        // A failed bench ends it with the bench's error; a bad baseline before any measuring.
        let r = bench_gate(&opts, 2, &mut std::io::sink(), |_| -> Bench {
            Err(std::io::Error::other("interrupted"))
        });
        assert!(matches!(r, Err(BenchGateError::Bench(_))), "{r:?}");
        let bad = CompareOptions {
            base: dir.path().join("missing.json"),
            ..opts.clone()
        };
        let mut calls = 0;
        let r = bench_gate(&bad, 2, &mut std::io::sink(), |_| -> Bench {
            calls += 1;
            Ok(())
        });
        assert!(matches!(r, Err(BenchGateError::Baseline(_))), "{r:?}");
        assert_eq!(calls, 0);
    }
}
