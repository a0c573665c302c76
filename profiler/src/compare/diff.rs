//! Matching two results files and judging every metric present in both.
//!
//! Runs are matched by (filesystem, mount options, cache); when each file holds exactly one run
//! and they differ, the two are compared with each other (an A/B of configurations, announced at
//! the top). Cells are matched by (op, size, layer depth).

// Ratios of nanoseconds and byte counts: exact enough in f64 (see lab/charts.rs).
#![allow(clippy::cast_precision_loss)]

use crate::fmt;
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    gates::{Gates, Metric, PhaseQuantile, Threshold, Tolerance},
    stats::{bootstrap_ratio, seed_for, RatioCi, Sample, Statistic, RESAMPLES},
    CompareError,
};
use crate::lab::results::{
    decode_histogram, run_label, Cell, HistogramError, LatencyStats, Results, RunResult,
};

/// Version of `cowprof compare --format json`.
pub const COMPARE_SCHEMA: u32 = 1;

/// How a verdict's change was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The metric itself, bootstrap interval from the histograms.
    Absolute,
    /// The metric divided by the same run's physical-limit reference (plain copy + fsync of the
    /// same bytes), bootstrap interval from the histograms: a slower runner cancels out.
    Normalized,
    /// Counts per operation, compared exactly (they do not vary between runs of one config).
    Exact,
    /// A single value with no distribution behind it (max): no test.
    Point,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Absolute => "absolute",
            Self::Normalized => "normalized",
            Self::Exact => "exact",
            Self::Point => "point",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    NoSignificantChange,
    /// Too few values for a test, or a single value (max) that is not gated.
    NotTested,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Improved => "improved",
            Self::Regressed => "regressed",
            Self::NoSignificantChange => "no significant change",
            Self::NotTested => "not tested",
        }
    }
}

/// One metric of one matched cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The run's label (`base label → new label` for an A/B of two configurations).
    pub run: String,
    pub op: String,
    pub size_bytes: u64,
    pub layer_depth: u32,
    pub metric: Metric,
    pub basis: Basis,
    /// The metric's values as measured (ns, MB/s, ratio, or per op for counts).
    pub base: f64,
    pub new: f64,
    /// Relative change new/base − 1 on the verdict's basis (normalized when `basis` is).
    pub change: f64,
    /// Confidence interval of `change`, when tested.
    pub change_lo: Option<f64>,
    pub change_hi: Option<f64>,
    pub verdict: Verdict,
    /// The gate on this row, if its metric and op are gated.
    pub threshold: Option<String>,
    /// `Some(false)` when the gate fails.
    pub passed: Option<bool>,
}

impl Row {
    /// `first_write 64 KiB d1`.
    pub fn cell_label(&self) -> String {
        format!(
            "{} {} d{}",
            self.op,
            fmt::bytes_label(self.size_bytes),
            self.layer_depth
        )
    }

    pub fn gated(&self) -> bool {
        self.passed.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub gated: usize,
    pub failed: usize,
    pub improved: usize,
    pub regressed: usize,
    pub unchanged: usize,
    pub not_tested: usize,
}

/// The whole comparison: what every report renders.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub schema: u32,
    pub base_file: String,
    pub new_file: String,
    pub confidence: f64,
    pub resamples: usize,
    pub gates: Gates,
    /// Differences of environment and configuration, announced first.
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
    /// Metrics, cells or runs present in one file only.
    pub only_in_base: Vec<String>,
    pub only_in_new: Vec<String>,
    pub counts: Counts,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.counts.failed == 0
    }
}

fn run_key(r: &RunResult) -> (String, Vec<String>, String) {
    let mut opts = r.mount_options.clone();
    opts.sort();
    (r.fs.clone(), opts, r.cache.clone())
}

fn cell_key(c: &Cell) -> (String, u64, u32) {
    (c.op.to_string(), c.size_bytes, c.layer_depth)
}

fn environment_notes(base: &Results, new: &Results) -> Vec<String> {
    let (b, n) = (&base.environment, &new.environment);
    let mut notes = Vec::new();
    let mut differ = |what: &str, x: String, y: String| {
        if x != y {
            notes.push(format!("{what} differs: {x} (base) vs {y} (new)"));
        }
    };
    differ("kernel", b.kernel.clone(), n.kernel.clone());
    differ("cpus", b.cpus.to_string(), n.cpus.to_string());
    differ(
        "kernel-side backend",
        b.backend
            .map_or_else(|| "none".to_owned(), |b| b.to_string()),
        n.backend
            .map_or_else(|| "none".to_owned(), |b| b.to_string()),
    );
    differ(
        "cowprof version",
        b.cowprof_version.clone(),
        n.cowprof_version.clone(),
    );
    for (k, v) in &b.overlay_params {
        let other = n
            .overlay_params
            .get(k)
            .cloned()
            .unwrap_or_else(|| "(absent)".to_owned());
        differ(&format!("overlay module parameter {k}"), v.clone(), other);
    }
    for (k, v) in &n.overlay_params {
        if !b.overlay_params.contains_key(k) {
            differ(
                &format!("overlay module parameter {k}"),
                "(absent)".to_owned(),
                v.clone(),
            );
        }
    }
    if base.spec_hash != new.spec_hash {
        notes.push(
            "the bench specs differ (spec_hash): only cells measured by both are compared"
                .to_owned(),
        );
    }
    notes
}

/// Pairs of runs to compare, with notes on configuration differences, and runs left over.
fn pair_runs<'a>(
    base: &'a Results,
    new: &'a Results,
    notes: &mut Vec<String>,
    only_base: &mut Vec<String>,
    only_new: &mut Vec<String>,
) -> Vec<(&'a RunResult, &'a RunResult, String)> {
    if let ([b], [n]) = (base.runs.as_slice(), new.runs.as_slice()) {
        if run_key(b) != run_key(n) {
            let (lb, ln) = (run_label(b), run_label(n));
            notes.push(format!(
                "configurations differ: {lb} (base) vs {ln} (new); this is an A/B of two setups, not of two builds"
            ));
            if b.layers != n.layers {
                notes.push(format!(
                    "lower layers differ: {} (base) vs {} (new)",
                    b.layers, n.layers
                ));
            }
            return vec![(b, n, format!("{lb} → {ln}"))];
        }
    }
    let mut pairs = Vec::new();
    for b in &base.runs {
        match new.runs.iter().find(|n| run_key(n) == run_key(b)) {
            Some(n) => {
                if b.layers != n.layers || b.fs_features != n.fs_features {
                    notes.push(format!(
                        "run {}: layers {} vs {}, fs features [{}] vs [{}]",
                        run_label(b),
                        b.layers,
                        n.layers,
                        b.fs_features.join(","),
                        n.fs_features.join(",")
                    ));
                }
                pairs.push((b, n, run_label(b)));
            }
            None => only_base.push(format!("run {}", run_label(b))),
        }
    }
    for n in &new.runs {
        if !base.runs.iter().any(|b| run_key(b) == run_key(n)) {
            only_new.push(format!("run {}", run_label(n)));
        }
    }
    let unmatched = |side: &str, runs: &[RunResult]| -> Option<String> {
        let labels: Vec<String> = runs
            .iter()
            .filter(|r| {
                !pairs
                    .iter()
                    .any(|(b, n, _)| std::ptr::eq(*b, *r) || std::ptr::eq(*n, *r))
            })
            .map(run_label)
            .collect();
        (!labels.is_empty()).then(|| format!("{side}: {}", labels.join("; ")))
    };
    let missing: Vec<String> = [
        unmatched("only in base", &base.runs),
        unmatched("only in new", &new.runs),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "the files measured different filesystems or options; not compared: {}",
            missing.join("; ")
        ));
    }
    pairs
}

/// The pairs of runs that [`compare`] compares: (label, base run, new run).
pub fn matched_runs<'a>(
    base: &'a Results,
    new: &'a Results,
) -> Vec<(String, &'a RunResult, &'a RunResult)> {
    let (mut notes, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
    pair_runs(base, new, &mut notes, &mut a, &mut b)
        .into_iter()
        .map(|(br, nr, label)| (label, br, nr))
        .collect()
}

/// Decoded samples of a cell, or a one-line error naming the file and cell.
fn sample(file: &str, run: &RunResult, cell: &Cell, kernel: bool) -> Result<Sample, CompareError> {
    let stats = if kernel {
        cell.kernel.as_ref()
    } else {
        Some(&cell.latency)
    };
    decode_stats(file, run, cell, stats)
}

/// Per phase, the decoded time of each copy-up (cells that store `phase_latency`).
fn phase_samples(
    file: &str,
    run: &RunResult,
    cell: &Cell,
) -> Result<BTreeMap<String, Sample>, CompareError> {
    cell.phase_latency
        .iter()
        .map(|(name, stats)| Ok((name.clone(), decode_stats(file, run, cell, Some(stats))?)))
        .collect()
}

fn decode_stats(
    file: &str,
    run: &RunResult,
    cell: &Cell,
    stats: Option<&LatencyStats>,
) -> Result<Sample, CompareError> {
    let Some(stats) = stats else {
        return Ok(Sample::from_values(Vec::new()));
    };
    decode_histogram(&stats.histogram)
        .and_then(|h| {
            if h.len() == stats.count {
                Ok(Sample::from_histogram(&h))
            } else {
                Err(HistogramError::CountMismatch {
                    recorded: h.len(),
                    count: stats.count,
                })
            }
        })
        .map_err(|source| CompareError::Histogram {
            path: file.to_owned(),
            cell: format!(
                "{} {} depth {} of run {}",
                cell.op,
                fmt::bytes_label(cell.size_bytes),
                cell.layer_depth,
                run_label(run)
            ),
            source,
        })
}

/// Verdict of a relative change with interval `[lo, hi]` (on the "higher is worse" scale)
/// against a tolerance `t`: regressed when the whole interval lies beyond +t, improved when it
/// lies beyond −t on the other side.
fn judge(lo: f64, hi: f64, t: f64) -> Verdict {
    if lo > t {
        Verdict::Regressed
    } else if hi < -t {
        Verdict::Improved
    } else {
        Verdict::NoSignificantChange
    }
}

/// Everything known about one side of one cell.
struct Side<'a> {
    cell: &'a Cell,
    user: Sample,
    kernel: Sample,
    /// Per phase, the time of each copy-up (empty in cells without `phase_latency`).
    phases: BTreeMap<String, Sample>,
    /// Whether the file had a kernel-side backend (copy-up counts are meaningful).
    counted: bool,
}

impl Side<'_> {
    fn per_op(&self, total: u64) -> f64 {
        total as f64 / self.cell.latency.count.max(1) as f64
    }

    fn value(&self, m: Metric) -> Option<f64> {
        let l = &self.cell.latency;
        match m {
            Metric::P50 => Some(l.p50_ns as f64),
            Metric::P90 => Some(l.p90_ns as f64),
            Metric::P99 => Some(l.p99_ns as f64),
            Metric::Max => Some(l.max_ns as f64),
            Metric::MbPerS => self.cell.mb_per_s.filter(|_| self.counted),
            Metric::Efficiency => self.cell.efficiency,
            Metric::CopyUps => self.counted.then(|| self.per_op(self.cell.copy_ups)),
            Metric::BytesCopied => self.counted.then(|| self.per_op(self.cell.bytes_copied)),
            Metric::Phase(_, q) => {
                let p = self.cell.phases.as_ref()?.phases.get(m.phase_name()?)?;
                Some(match q {
                    PhaseQuantile::P50 => p.p50_ns,
                    PhaseQuantile::P99 => p.p99_ns,
                } as f64)
            }
        }
    }

    fn reference(&self) -> Option<f64> {
        reference_ns(self.cell)
    }
}

/// The same run's physical-limit reference of `cell` (the median of a plain copy + fsync of the
/// same bytes on the same filesystem), when the run measured one: what normalized verdicts
/// divide by.
pub fn reference_ns(cell: &Cell) -> Option<f64> {
    cell.reference_p50_ns.filter(|r| *r > 0).map(|r| r as f64)
}

/// `p50 / reference`: the cell's median in units of its own run's reference. Two runs on a disk
/// that changed speed between them differ less in this than in the p50 itself; a normalized
/// p50 verdict is the change of this value (`lab_repro` judges reproducibility with it too).
pub fn normalized_p50(cell: &Cell) -> Option<f64> {
    reference_ns(cell).map(|r| cell.latency.p50_ns as f64 / r)
}

struct Judged {
    basis: Basis,
    change: f64,
    ci: Option<(f64, f64)>,
}

/// Tested change of `m` (relative, on the metric's own scale) and its interval.
fn measure(m: Metric, b: &Side, n: &Side, bv: f64, nv: f64, gates: &Gates, key: &str) -> Judged {
    let seed = seed_for(key);
    let conf = gates.confidence;
    let refs = b.reference().zip(n.reference());
    let rel = |x: f64| if bv > 0.0 { x / bv - 1.0 } else { 0.0 };
    let from_ci = |ci: Option<RatioCi>, scale: f64, invert: bool, basis: Basis| {
        let f = |r: f64| {
            let r = r * scale;
            if invert {
                1.0 / r.max(f64::MIN_POSITIVE) - 1.0
            } else {
                r - 1.0
            }
        };
        match ci {
            Some(ci) => {
                let (lo, hi) = if invert {
                    (f(ci.hi), f(ci.lo))
                } else {
                    (f(ci.lo), f(ci.hi))
                };
                Judged {
                    basis,
                    change: f(ci.ratio),
                    ci: Some((lo, hi)),
                }
            }
            None => Judged {
                basis,
                change: rel(nv),
                ci: None,
            },
        }
    };
    match m {
        Metric::P50 | Metric::P90 | Metric::P99 => {
            let p = match m {
                Metric::P50 => 50,
                Metric::P90 => 90,
                _ => 99,
            };
            let ci = bootstrap_ratio(&b.user, &n.user, Statistic::Quantile(p), conf, seed);
            match refs.filter(|_| gates.normalize) {
                Some((rb, rn)) => from_ci(ci, rb / rn, false, Basis::Normalized),
                None => from_ci(ci, 1.0, false, Basis::Absolute),
            }
        }
        Metric::Efficiency => {
            // reference / p50: its ratio is (rn/rb) / (p50 ratio).
            let ci = bootstrap_ratio(&b.user, &n.user, Statistic::Quantile(50), conf, seed);
            let (rb, rn) = refs.unwrap_or((1.0, 1.0));
            from_ci(ci, rb / rn, true, Basis::Normalized)
        }
        Metric::MbPerS => {
            // bytes per op / mean kernel copy time: the inverse of the kernel mean's ratio.
            let ci = bootstrap_ratio(&b.kernel, &n.kernel, Statistic::Mean, conf, seed);
            let bytes = n.value(Metric::BytesCopied).unwrap_or(1.0)
                / b.value(Metric::BytesCopied)
                    .unwrap_or(1.0)
                    .max(f64::MIN_POSITIVE);
            match refs.filter(|_| gates.normalize) {
                Some((rb, rn)) => from_ci(ci, rb / rn / bytes, true, Basis::Normalized),
                None => from_ci(ci, 1.0 / bytes, true, Basis::Absolute),
            }
        }
        Metric::Phase(_, q) => {
            // Kernel-side time of one phase per copy-up: no same-run reference divides it.
            let name = m.phase_name().unwrap_or_default();
            match (b.phases.get(name), n.phases.get(name)) {
                (Some(bs), Some(ns)) => {
                    let ci = bootstrap_ratio(bs, ns, Statistic::Quantile(q.percent()), conf, seed);
                    from_ci(ci, 1.0, false, Basis::Absolute)
                }
                // Cells without per-phase histograms: the recorded quantiles alone.
                _ => Judged {
                    basis: Basis::Point,
                    change: rel(nv),
                    ci: None,
                },
            }
        }
        Metric::Max => Judged {
            basis: Basis::Point,
            change: rel(nv),
            ci: None,
        },
        Metric::CopyUps | Metric::BytesCopied => Judged {
            basis: Basis::Exact,
            change: rel(nv),
            ci: None,
        },
    }
}

fn row_for(m: Metric, b: &Side, n: &Side, run: &str, gates: &Gates) -> Option<Row> {
    let (bv, nv) = (b.value(m)?, n.value(m)?);
    let cell = b.cell;
    let key = format!(
        "{run}|{}|{}|{}|{m}",
        cell.op, cell.size_bytes, cell.layer_depth
    );
    let judged = measure(m, b, n, bv, nv, gates, &key);
    let threshold: Option<&Threshold> = gates
        .threshold(m)
        .filter(|_| gates.gates_op(cell.op.as_str()));
    // Work on the "higher is worse" scale.
    let sign = if m.higher_is_worse() { 1.0 } else { -1.0 };
    let tol_rel = match threshold.map(|t| t.tolerance) {
        Some(Tolerance::Relative { fraction }) => fraction,
        _ => 0.0,
    };
    let verdict = match (judged.basis, judged.ci) {
        (Basis::Exact, _) => {
            let worse = sign * (nv - bv);
            let limit = match threshold.map(|t| t.tolerance) {
                Some(Tolerance::Absolute { amount }) => amount,
                Some(Tolerance::Relative { fraction }) => fraction * bv,
                None => 0.0,
            };
            if worse > limit {
                Verdict::Regressed
            } else if worse < -limit {
                Verdict::Improved
            } else {
                Verdict::NoSignificantChange
            }
        }
        (_, Some((lo, hi))) => {
            let (lo, hi) = if sign > 0.0 { (lo, hi) } else { (-hi, -lo) };
            judge(lo, hi, tol_rel)
        }
        (Basis::Point, None) if threshold.is_some() => {
            let c = sign * judged.change;
            judge(c, c, tol_rel)
        }
        _ => Verdict::NotTested,
    };
    Some(Row {
        run: run.to_owned(),
        op: cell.op.to_string(),
        size_bytes: cell.size_bytes,
        layer_depth: cell.layer_depth,
        metric: m,
        basis: judged.basis,
        base: bv,
        new: nv,
        change: judged.change,
        change_lo: judged.ci.map(|c| c.0),
        change_hi: judged.ci.map(|c| c.1),
        verdict,
        threshold: threshold.map(|t| t.text.clone()),
        passed: threshold.map(|_| verdict != Verdict::Regressed),
    })
}

/// Compares `new` against `base` under `gates`. Fails only on undecodable histograms.
pub fn compare(
    base: &Results,
    new: &Results,
    base_file: &str,
    new_file: &str,
    gates: &Gates,
) -> Result<Comparison, CompareError> {
    let mut notes = environment_notes(base, new);
    let (mut only_in_base, mut only_in_new) = (Vec::new(), Vec::new());
    let pairs = pair_runs(base, new, &mut notes, &mut only_in_base, &mut only_in_new);
    let counted = (
        base.environment.backend.is_some(),
        new.environment.backend.is_some(),
    );
    let mut rows = Vec::new();
    for (br, nr, label) in pairs {
        let new_cells: BTreeMap<_, &Cell> = nr.cells.iter().map(|c| (cell_key(c), c)).collect();
        for bc in &br.cells {
            let Some(nc) = new_cells.get(&cell_key(bc)) else {
                only_in_base.push(format!("{} {}", label, cell_name(bc)));
                continue;
            };
            let b = Side {
                cell: bc,
                user: sample(base_file, br, bc, false)?,
                kernel: sample(base_file, br, bc, true)?,
                phases: phase_samples(base_file, br, bc)?,
                counted: counted.0,
            };
            let n = Side {
                cell: nc,
                user: sample(new_file, nr, nc, false)?,
                kernel: sample(new_file, nr, nc, true)?,
                phases: phase_samples(new_file, nr, nc)?,
                counted: counted.1,
            };
            // Phase p50s are always reported; a phase p99 only when a threshold names it.
            let phase_metrics = Metric::phases().filter(|m| {
                matches!(m, Metric::Phase(_, PhaseQuantile::P50)) || gates.threshold(*m).is_some()
            });
            for m in Metric::ALL.into_iter().chain(phase_metrics) {
                match (b.value(m).is_some(), n.value(m).is_some()) {
                    (true, true) => rows.extend(row_for(m, &b, &n, &label, gates)),
                    (true, false) => only_in_base.push(format!("{label} {} {m}", cell_name(bc))),
                    (false, true) => only_in_new.push(format!("{label} {} {m}", cell_name(bc))),
                    (false, false) => {}
                }
            }
        }
        let base_cells: BTreeMap<_, &Cell> = br.cells.iter().map(|c| (cell_key(c), c)).collect();
        for nc in &nr.cells {
            if !base_cells.contains_key(&cell_key(nc)) {
                only_in_new.push(format!("{} {}", label, cell_name(nc)));
            }
        }
    }
    let mut counts = Counts::default();
    for r in &rows {
        match r.verdict {
            Verdict::Improved => counts.improved += 1,
            Verdict::Regressed => counts.regressed += 1,
            Verdict::NoSignificantChange => counts.unchanged += 1,
            Verdict::NotTested => counts.not_tested += 1,
        }
        if r.gated() {
            counts.gated += 1;
        }
        if r.passed == Some(false) {
            counts.failed += 1;
        }
    }
    Ok(Comparison {
        schema: COMPARE_SCHEMA,
        base_file: base_file.to_owned(),
        new_file: new_file.to_owned(),
        confidence: gates.confidence,
        resamples: RESAMPLES,
        gates: gates.clone(),
        notes,
        rows,
        only_in_base,
        only_in_new,
        counts,
    })
}

fn cell_name(c: &Cell) -> String {
    format!(
        "{} {} d{}",
        c.op,
        fmt::bytes_label(c.size_bytes),
        c.layer_depth
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging() {
        assert_eq!(judge(0.2, 0.4, 0.1), Verdict::Regressed);
        assert_eq!(judge(0.05, 0.4, 0.1), Verdict::NoSignificantChange);
        assert_eq!(judge(-0.4, -0.2, 0.1), Verdict::Improved);
        assert_eq!(judge(-0.01, 0.01, 0.0), Verdict::NoSignificantChange);
        assert_eq!(judge(0.01, 0.02, 0.0), Verdict::Regressed);
    }
}
