//! What `cowprof bench` prints on the terminal: by default a summary a person reads (the
//! copy-up curve per filesystem and option set, the slowest cells, the reference efficiency,
//! what disagreed or was skipped); `--table full` prints every cell. `results.json` and the
//! report always hold everything.

use std::{fmt::Write as _, io::Write};

use anstyle::Style;

use crate::fmt::{self, Layout};

use super::{
    results::{Cell, Results, RunResult},
    run::options_label,
    spec::format_size,
};

/// Which table `bench` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableMode {
    /// The copy-up curve, the slowest cells, efficiency, disagreements and skips.
    #[default]
    Summary,
    /// Every cell of the matrix, one row each.
    Full,
}

/// Cells listed under "slowest cells".
const SLOWEST: usize = 5;

/// What went wrong during the run that `results.json` does not hold.
#[derive(Debug, Default)]
pub struct Disagreements<'a> {
    /// Repetitions whose upper directory disagreed with their op.
    pub upper_mismatches: u64,
    /// Copy-up cells whose kernel count differs from their repetitions.
    pub kernel_mismatches: &'a [String],
}

const HEADER: [&str; 13] = [
    "FS", "OPTIONS", "CACHE", "OP", "SIZE", "DEPTH", "THR", "P50", "IQR", "P99", "COPY-UPS",
    "MB/S", "EFF",
];

fn header_line() -> String {
    let h = HEADER;
    format!(
        "{:<6} {:<22} {:<5} {:<14} {:>6} {:>5} {:>3} {:>10} {:>10} {:>10} {:>8} {:>9} {:>6}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12]
    )
}

/// True if the backend saw this run's copy-ups (else its kernel numbers are absent).
fn kernel_seen(r: &Results, run: &RunResult) -> bool {
    let unseen = format!(
        "kernel-side timings fs={} options={} cache={}",
        run.fs,
        options_label(&run.mount_options),
        run.cache
    );
    r.environment.backend.is_some() && !r.skipped.iter().any(|s| s.what == unseen)
}

fn cell_line(run: &RunResult, c: &Cell, kernel: bool) -> String {
    let op = if c.outcomes.is_empty() {
        c.op.to_string()
    } else {
        let o: Vec<&str> = c.outcomes.keys().map(String::as_str).collect();
        format!("{}:{}", c.op, o.join("+"))
    };
    format!(
        "{:<6} {:<22} {:<5} {:<14} {:>6} {:>5} {:>3} {:>10} {:>10} {:>10} {:>8} {:>9} {:>6}",
        run.fs,
        options_label(&run.mount_options),
        run.cache,
        op,
        format_size(c.size_bytes),
        c.layer_depth,
        c.threads,
        fmt::ns(c.latency.p50_ns),
        fmt::ns(c.latency.p75_ns.saturating_sub(c.latency.p25_ns)),
        fmt::ns(c.latency.p99_ns),
        if kernel {
            c.copy_ups.to_string()
        } else {
            "-".into()
        },
        c.mb_per_s.map_or("-".into(), |v| format!("{v:.0}")),
        c.efficiency.map_or("-".into(), |v| format!("{v:.2}")),
    )
}

/// The full table (`--table full`): one row per cell, then what was skipped.
pub fn print_full(out: &mut dyn Write, r: &Results) -> std::io::Result<()> {
    writeln!(out, "{}", header_line())?;
    for run in &r.runs {
        let kernel = kernel_seen(r, run);
        for c in &run.cells {
            writeln!(out, "{}", cell_line(run, c, kernel))?;
        }
    }
    for s in &r.skipped {
        writeln!(out, "skipped {}: {}", s.what, s.reason)?;
    }
    Ok(())
}

/// The single-thread `first_write` cells of a run at its shallowest depth, by size.
fn curve(run: &RunResult) -> Vec<&Cell> {
    let fw = || {
        run.cells
            .iter()
            .filter(|c| c.op == crate::lab::spec::Op::FirstWrite && c.threads == 1)
    };
    let Some(depth) = fw().map(|c| c.layer_depth).min() else {
        return Vec::new();
    };
    let mut cells: Vec<&Cell> = fw().filter(|c| c.layer_depth == depth).collect();
    cells.sort_by_key(|c| c.size_bytes);
    cells
}

/// The copy-up curve: `first_write` p50 by size, one line per filesystem/options/cache.
fn print_curve(
    out: &mut dyn Write,
    title: &dyn Fn(&str) -> String,
    r: &Results,
) -> std::io::Result<()> {
    let mut sizes: Vec<u64> = r
        .runs
        .iter()
        .flat_map(|run| curve(run).into_iter().map(|c| c.size_bytes))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        writeln!(
            out,
            "{}",
            title("copy-up curve: no first_write cells in this spec")
        )?;
    } else {
        let depth = r
            .runs
            .iter()
            .flat_map(curve)
            .map(|c| c.layer_depth)
            .min()
            .unwrap_or(0);
        writeln!(
            out,
            "{}",
            title(&format!(
                "copy-up curve: first_write p50 by file size (layer depth {depth}), efficiency at the largest"
            ))
        )?;
        let mut head = format!("  {:<6} {:<22} {:<5}", "FS", "OPTIONS", "CACHE");
        for s in &sizes {
            let _ = write!(head, " {:>9}", format_size(*s));
        }
        let _ = write!(head, " {:>6}", "EFF");
        writeln!(out, "{head}")?;
        for run in &r.runs {
            let cells = curve(run);
            if cells.is_empty() {
                continue;
            }
            let mut line = format!(
                "  {:<6} {:<22} {:<5}",
                run.fs,
                options_label(&run.mount_options),
                run.cache
            );
            for s in &sizes {
                let v = cells
                    .iter()
                    .find(|c| c.size_bytes == *s)
                    .map_or("-".into(), |c| fmt::ns(c.latency.p50_ns));
                let _ = write!(line, " {v:>9}");
            }
            let eff = cells
                .last()
                .and_then(|c| c.efficiency)
                .map_or("-".into(), |e| format!("{e:.2}"));
            let _ = write!(line, " {eff:>6}");
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// A cell named in one line: `ext4 metacopy=on first_write 1M depth 4`.
fn cell_name(run: &RunResult, c: &Cell) -> String {
    format!(
        "{} {} {} {} depth {}",
        run.fs,
        options_label(&run.mount_options),
        c.op,
        format_size(c.size_bytes),
        c.layer_depth
    )
}

/// How many cells the "what dominates" reading covers.
const DOMINATES: usize = 3;

/// The "what dominates" reading of the `n` slowest cells (by p99) whose copy-ups have phases:
/// one line each, computed from the phases (see [`crate::pipeline::phases::explain_one`]).
pub fn dominates(r: &Results, n: usize) -> Vec<String> {
    let mut cells: Vec<(&RunResult, &Cell, &crate::pipeline::phases::PhaseStats)> = r
        .runs
        .iter()
        .flat_map(|run| {
            run.cells.iter().filter_map(move |c| {
                c.phases
                    .as_ref()
                    .filter(|p| p.count > 0)
                    .map(|p| (run, c, p))
            })
        })
        .collect();
    cells.sort_by_key(|(_, c, _)| std::cmp::Reverse(c.latency.p99_ns));
    cells
        .iter()
        .take(n)
        .map(|(run, c, p)| crate::pipeline::phases::explain_one(&cell_name(run, c), p))
        .collect()
}

/// The summary a person reads.
pub fn print_brief(
    out: &mut dyn Write,
    layout: &Layout,
    r: &Results,
    bad: &Disagreements<'_>,
) -> std::io::Result<()> {
    let bold = Style::new().bold();
    let title = |t: &str| layout.paint(bold, t);
    print_curve(out, &title, r)?;
    // 2. The slowest cells by p99.
    let mut all: Vec<(&RunResult, &Cell)> = r
        .runs
        .iter()
        .flat_map(|run| run.cells.iter().map(move |c| (run, c)))
        .collect();
    all.sort_by_key(|(_, c)| std::cmp::Reverse(c.latency.p99_ns));
    writeln!(
        out,
        "\n{}",
        title(&format!(
            "slowest cells (p99), {} of {}:",
            SLOWEST.min(all.len()),
            all.len()
        ))
    )?;
    writeln!(out, "  {}", header_line())?;
    for (run, c) in all.iter().take(SLOWEST) {
        writeln!(out, "  {}", cell_line(run, c, kernel_seen(r, run)))?;
    }
    // 3. Reference efficiency: plain copy p50 / copy-up p50 over the cells that have one.
    let mut effs: Vec<(f64, &RunResult, &Cell)> = all
        .iter()
        .filter_map(|(run, c)| c.efficiency.map(|e| (e, *run, *c)))
        .collect();
    effs.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some(lo), Some(hi)) = (effs.first(), effs.last()) {
        let mid = effs[effs.len() / 2].0;
        let name = |(_, run, c): &(f64, &RunResult, &Cell)| cell_name(run, c);
        writeln!(
            out,
            "\n{} median {mid:.2} over {} cells, lowest {:.2} ({}), highest {:.2} ({})",
            title("reference efficiency (plain copy p50 / copy-up p50):"),
            effs.len(),
            lo.0,
            name(lo),
            hi.0,
            name(hi)
        )?;
    } else {
        writeln!(
            out,
            "\n{} none (no cell copied data)",
            title("reference efficiency:")
        )?;
    }
    // 4. What disagreed or was skipped.
    if bad.upper_mismatches == 0 && bad.kernel_mismatches.is_empty() {
        writeln!(out, "\n{} none", title("disagreed:"))?;
    } else {
        writeln!(
            out,
            "\n{} {} repetitions' upper directory, {} cells' kernel copy-up count",
            title("disagreed:"),
            bad.upper_mismatches,
            bad.kernel_mismatches.len()
        )?;
        for m in bad.kernel_mismatches {
            writeln!(out, "  {m}")?;
        }
    }
    if r.skipped.is_empty() {
        writeln!(out, "{} none", title("skipped:"))?;
    } else {
        writeln!(out, "{} {}", title("skipped:"), r.skipped.len())?;
        for s in &r.skipped {
            writeln!(out, "  {}: {}", s.what, s.reason)?;
        }
    }
    // 5. The reading it ends with: what dominates the slowest cells that have phases.
    let reading = dominates(r, DOMINATES);
    if !reading.is_empty() {
        writeln!(out, "\n{}", title("what dominates (copy-up phases):"))?;
        for line in &reading {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lab::results::{Environment, LatencyStats, Skipped};

    fn stats(p50: u64, p99: u64) -> LatencyStats {
        LatencyStats {
            count: 10,
            p50_ns: p50,
            p90_ns: p99,
            p99_ns: p99,
            max_ns: p99,
            mean_ns: p50,
            p25_ns: p50,
            p75_ns: p50,
            histogram: String::new(),
        }
    }

    fn cell(op: &str, size: u64, depth: u32, p50: u64, p99: u64, eff: Option<f64>) -> Cell {
        Cell {
            op: op.parse().expect("a known op"),
            size_bytes: size,
            layer_depth: depth,
            latency: stats(p50, p99),
            kernel: None,
            copy_ups: 10,
            bytes_copied: size * 10,
            mb_per_s: None,
            reference_p50_ns: None,
            efficiency: eff,
            threads: 1,
            repetitions: 10,
            wall: None,
            outcomes: BTreeMap::new(),
            whiteouts: 0,
            phases: None,
            phase_latency: BTreeMap::new(),
        }
    }

    fn results() -> Results {
        let run = |fs: &str, opts: &[&str], k: u64| RunResult {
            fs: fs.into(),
            fs_features: vec![],
            mount_options: opts.iter().map(|o| (*o).to_owned()).collect(),
            cache: "warm".into(),
            layers: 4,
            cells: vec![
                cell("first_write", 4096, 1, 20_000 * k, 40_000 * k, Some(0.5)),
                cell("first_write", 4096, 4, 21_000 * k, 41_000 * k, Some(0.4)),
                cell(
                    "first_write",
                    1 << 20,
                    1,
                    900_000 * k,
                    2_000_000 * k,
                    Some(0.8),
                ),
                cell(
                    "first_write",
                    1 << 20,
                    4,
                    910_000 * k,
                    2_100_000 * k,
                    Some(0.7),
                ),
                cell("chmod", 4096, 1, 5_000 * k, 9_000 * k, None),
                cell("unlink", 4096, 1, 3_000, 7_000, None),
            ],
            plain_create: None,
        };
        Results {
            schema: 1,
            environment: Environment {
                kernel: "6.18".into(),
                cowprof_version: "0".into(),
                cpus: 2,
                overlay_params: BTreeMap::new(),
                backend: Some(crate::event::Backend::Tracepoint),
                started_unix_s: 0,
            },
            spec_hash: String::new(),
            runs: vec![run("ext4", &[], 2), run("tmpfs", &["metacopy=on"], 1)],
            skipped: vec![Skipped {
                what: "fs=xfs".into(),
                reason: "mkfs.xfs missing".into(),
            }],
            elapsed_s: 1.0,
        }
    }

    fn brief(bad: &Disagreements<'_>) -> String {
        let mut out = Vec::new();
        print_brief(&mut out, &Layout::PLAIN, &results(), bad).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn brief_has_the_curve_the_slowest_and_the_rest() {
        let text = brief(&Disagreements::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "copy-up curve: first_write p50 by file size (layer depth 1), efficiency at the largest"
        );
        assert_eq!(
            lines[1..4],
            [
                "  FS     OPTIONS                CACHE        4K        1M    EFF",
                "  ext4   -                      warm     40.0µs    1.80ms   0.80",
                "  tmpfs  metacopy=on            warm     20.0µs   900.0µs   0.80",
            ]
        );
        // The five slowest by p99, slowest first: ext4's two 1M cells, then tmpfs's.
        let slow: Vec<&str> = text
            .split("slowest cells (p99), 5 of 12:\n")
            .nth(1)
            .unwrap()
            .lines()
            .skip(1)
            .take(5)
            .collect();
        assert!(
            slow[0].contains("ext4") && slow[0].contains("4.20ms"),
            "{slow:?}"
        );
        assert!(
            slow[1].contains("ext4") && slow[1].contains("4.00ms"),
            "{slow:?}"
        );
        assert!(
            slow[2].contains("tmpfs") && slow[2].contains("2.10ms"),
            "{slow:?}"
        );
        assert!(text.contains(
            "reference efficiency (plain copy p50 / copy-up p50): median 0.70 over 8 cells, lowest 0.40 (ext4 - first_write 4K depth 4), highest 0.80 (tmpfs metacopy=on first_write 1M depth 1)"
        ), "{text}");
        assert!(text.contains("\ndisagreed: none\n"));
        assert!(text.contains("skipped: 1\n  fs=xfs: mkfs.xfs missing\n"));
        assert!(
            !text.contains("unlink"),
            "the full table stays behind --table full"
        );
    }

    #[test]
    fn dominates_reads_the_slowest_cells_with_phases() {
        use crate::pipeline::phases::{PhaseStat, PhaseStats};
        let mut r = results();
        let phase = |sum_ns| PhaseStat {
            p50_ns: sum_ns / 10,
            p99_ns: sum_ns / 10,
            sum_ns,
        };
        // The slowest ext4 cell: fsync is 75 % of its copy-ups' time.
        let slow = r.runs[0]
            .cells
            .iter_mut()
            .max_by_key(|c| c.latency.p99_ns)
            .unwrap();
        slow.phases = Some(PhaseStats {
            count: 10,
            latency_sum_ns: 40_000_000,
            splice_bytes: 10 << 20,
            clone_bytes: 0,
            phases: BTreeMap::from([
                ("fsync".to_owned(), phase(30_000_000)),
                ("offcpu_other".to_owned(), phase(6_000_000)),
                ("other".to_owned(), phase(4_000_000)),
            ]),
        });
        let lines = dominates(&r, 3);
        assert_eq!(lines.len(), 1, "only cells with phases: {lines:?}");
        assert!(
            lines[0]
                .starts_with("ext4 - first_write 1M depth 4: 10 copy-ups, mean 4.00ms: 75 % fsync"),
            "{lines:?}"
        );
        assert!(lines[0].contains("`volatile`"), "{lines:?}");
        let text = brief(&Disagreements::default());
        assert!(!text.contains("what dominates"), "no phases, no reading");
        let mut out = Vec::new();
        print_brief(&mut out, &Layout::PLAIN, &r, &Disagreements::default()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(&format!(
                "\nwhat dominates (copy-up phases):\n  {}\n",
                lines[0]
            )),
            "{text}"
        );
    }

    #[test]
    fn brief_lists_disagreements() {
        let mism = vec!["tmpfs - race_write 64K: 4 copy-ups for 3 repetitions".to_owned()];
        let text = brief(&Disagreements {
            upper_mismatches: 2,
            kernel_mismatches: &mism,
        });
        assert!(text.contains(
            "disagreed: 2 repetitions' upper directory, 1 cells' kernel copy-up count\n  tmpfs - race_write 64K"
        ), "{text}");
    }

    #[test]
    fn full_table_has_every_cell() {
        let mut out = Vec::new();
        print_full(&mut out, &results()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1 + 12 + 1);
        assert_eq!(text.lines().filter(|l| l.contains("unlink")).count(), 2);
    }
}
