//! `cowprof bench`: runs the spec's matrix (filesystem × mount options × cache state × op × size
//! × layer depth × repetition), writes `results.json` and prints a summary table.
//!
//! One process does the plumbing and holds the eBPF probes; a worker child runs the timed ops
//! (the kernel side ignores the process that loaded it). Every repetition gets a fresh overlay
//! stack (new upper and work directories over the same lower layers), is checked against what
//! the upper directory must hold afterwards, and is unmounted before the next one.

use std::{
    fs,
    io::{IsTerminal as _, Read as _, Write},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    host::{
        cancel::Cancel,
        mounts::{overlay_param, private_mount_namespace, OverlayMountError},
    },
    pipeline::tap::KernelTap,
};

use super::{
    measure::Worker,
    results::{Environment, Results, RunResult, Skipped, RESULTS_SCHEMA},
    rounds::{measure_interleaved, prewarm, reference_items, settle, total_steps, Ctx, TRACE_ENV},
    spec::{format_size, Cache, FsKind, Op, Shape, Spec, DEFAULT_SPEC, KNOWN_OPTIONS},
    stack::{io_err, Backing, LabError, LabRoot, LabStack, Layers},
    summary::TableMode,
    workload::OUTCOME_REDIRECT,
};

pub use super::results::sha256_hex;

/// Set to `1`: mount the lab's filesystems and stacks in the caller's mount namespace instead of
/// a private one.
pub const HOST_MOUNTS_ENV: &str = "COWPROF_LAB_HOST_MOUNTS";

/// What `cowprof bench` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// TOML spec; the built-in one if `None`.
    pub spec: Option<PathBuf>,
    /// Output directory (`results.json` goes there).
    pub out: PathBuf,
    /// Where the run directory is made.
    pub workdir: PathBuf,
    /// Tiny sizes and two repetitions.
    pub quick: bool,
    /// Fail (exit 1) unless a backend attached and every copy-up cell's kernel count is exact.
    pub expect_kernel: bool,
    /// Write results.json only (no charts, no report.html).
    pub no_charts: bool,
    /// What to print on the terminal: the summary or every cell.
    pub table: super::summary::TableMode,
}

/// A finished run.
pub struct BenchReport {
    pub results: Results,
    pub results_path: PathBuf,
    /// Repetitions whose upper directory was checked, and how many disagreed with the op.
    pub upper_checked: u64,
    pub upper_mismatches: u64,
    /// Copy-up cells whose kernel copy-up count differs from their repetitions.
    pub kernel_mismatches: Vec<String>,
    pub elapsed: Duration,
}

/// Reads and parses the spec; returns it with the text it came from.
pub fn load_spec(path: Option<&Path>, quick: bool) -> Result<(Spec, String), LabError> {
    let (text, name) = match path {
        Some(p) => {
            let mut s = String::new();
            fs::File::open(p)
                .and_then(|mut f| f.read_to_string(&mut s))
                .map_err(|source| LabError::SpecFile {
                    path: p.to_owned(),
                    source,
                })?;
            (s, p.display().to_string())
        }
        None => (DEFAULT_SPEC.to_owned(), "(built-in)".to_owned()),
    };
    let mut spec = Spec::parse(&text, &name)?;
    let mut hashed = text;
    if quick {
        spec = spec.quick();
        // --quick measures something else: it must not hash like the full spec.
        hashed.push_str("\n# cowprof bench --quick\n");
    }
    Ok((spec, hashed))
}

/// `a,b` for an option set; `-` for none.
pub fn options_label(set: &[String]) -> String {
    if set.is_empty() {
        "-".to_owned()
    } else {
        set.join(",")
    }
}

/// True if the stack copies metadata only on chmod (`metacopy=on`, or the module default).
pub(super) fn metacopy_on(set: &[String]) -> bool {
    set.iter().any(|o| o == "metacopy=on")
        || (overlay_param("metacopy").as_deref() == Some("Y")
            && !set.iter().any(|o| o == "metacopy=off"))
}

/// The cells of `op`, in results order: (size, depth, threads) for every size and file layer,
/// every file layer (directory ops), the single `create` cell, or every concurrency size, file
/// layer and thread count.
pub fn cells_of(op: Op, spec: &Spec) -> Vec<(u64, u32, u32)> {
    match op.shape() {
        Shape::PerFile => spec
            .sizes
            .iter()
            .flat_map(|&s| spec.file_layers.iter().map(move |&d| (s, d, 1)))
            .collect(),
        Shape::PerDir => spec.file_layers.iter().map(|&d| (0, d, 1)).collect(),
        Shape::Single => vec![(0, 0, 1)],
        Shape::Concurrent => spec
            .concurrency
            .sizes
            .iter()
            .flat_map(|&s| {
                spec.file_layers
                    .iter()
                    .flat_map(move |&d| spec.concurrency.threads.iter().map(move |&t| (s, d, t)))
            })
            .collect(),
    }
}

/// Copy-ups one repetition of `op` must cause (`redirect`: `rename_dir` moved the directory).
pub fn copy_ups_per_repetition(op: Op, threads: u32, redirect: bool) -> u64 {
    match op {
        Op::ParallelWrite => u64::from(threads),
        Op::RenameDir => u64::from(redirect),
        _ => u64::from(op.copies_up()),
    }
}

fn progress(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// Runs the bench; writes `results.json` into `opts.out`.
#[expect(
    clippy::too_many_lines,
    reason = "the run's guards (root, namespace, state file, backing filesystems) are opened and dropped in one scope, in order"
)]
pub fn bench(opts: &BenchOptions) -> Result<BenchReport, LabError> {
    let t0 = Instant::now();
    let started = SystemTime::now();
    // First: a Ctrl-C from here on ends the run through its cleanup.
    let cancel = Cancel::install()
        .map_err(|e| LabError::Other(format!("installing signal handlers: {e}")))?;
    let (spec, text) = load_spec(opts.spec.as_deref(), opts.quick)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    // Our mounts then vanish with the process, however it ends; the state file and
    // `cowprof clean` cover the rest (loop devices, images, directories). With
    // COWPROF_LAB_HOST_MOUNTS=1 the stacks are mounted where everyone sees them (to watch them
    // with `cowprof record` or findmnt from outside); then only the guards and `clean` help.
    if std::env::var_os(HOST_MOUNTS_ENV).is_some_and(|v| v == "1") {
        log::info!("{HOST_MOUNTS_ENV}=1: mounting in the caller's mount namespace");
    } else if !private_mount_namespace() {
        log::info!("no private mount namespace; cleanup relies on guards and `cowprof clean`");
    }
    let mut skipped = Vec::new();
    let pb = progress(total_steps(&spec));
    pb.set_message("loading and attaching the eBPF probes");
    let tap = match KernelTap::attach() {
        Ok(t) => Some(t),
        Err(e) => {
            pb.suspend(|| {
                eprintln!(
                    "cowprof: no kernel-side timings ({e}); measuring user-side latency only"
                );
            });
            skipped.push(Skipped {
                what: "kernel-side timings".into(),
                reason: e.to_string(),
            });
            None
        }
    };
    let backend = tap.as_ref().map(KernelTap::backend);
    // Attaching takes a while: a Ctrl-C during it ends the run here.
    cancel.check()?;
    let mut root = LabRoot::create(&opts.workdir)?;
    let mut ctx = Ctx {
        spec: &spec,
        cancel: &cancel,
        worker: Worker::spawn()?,
        tap,
        pb,
        stacks: 0,
        upper_checked: 0,
        upper_mismatches: 0,
        trace: std::env::var_os(TRACE_ENV).and_then(|p| {
            fs::File::create(&p)
                .map_err(|e| eprintln!("cowprof: {TRACE_ENV}: {}: {e}", p.to_string_lossy()))
                .ok()
                .map(std::io::BufWriter::new)
        }),
        started: t0,
    };
    let mut runs = Vec::new();
    let result = run_matrix(&mut ctx, &mut root, &mut skipped, &mut runs);
    ctx.pb.finish_and_clear();
    let drops = ctx.tap.as_ref().map_or(0, KernelTap::drops);
    let (upper_checked, upper_mismatches) = (ctx.upper_checked, ctx.upper_mismatches);
    // Worker first (it may hold a file open in a stack), then the tap, then the run directory.
    drop(ctx);
    drop(root);
    // Out of space on a backing filesystem: the runs finished before are still written (and
    // the failure is named in `skipped`), then the error ends the command.
    let no_space = match result {
        Ok(()) => None,
        Err(e) if e.is_no_space() => {
            skipped.push(Skipped {
                what: "the rest of the matrix".into(),
                reason: e.to_string(),
            });
            Some(e)
        }
        Err(e) => return Err(e),
    };
    if drops > 0 {
        eprintln!("cowprof: the kernel side lost {drops} events; kernel-side numbers may be low");
    }
    let kernel_mismatches = if backend.is_some() {
        kernel_check(&runs, &mut skipped)
    } else {
        Vec::new()
    };
    let results = Results {
        schema: RESULTS_SCHEMA,
        environment: Environment::capture(backend, started),
        spec_hash: sha256_hex(&text),
        runs,
        skipped,
        elapsed_s: t0.elapsed().as_secs_f64(),
    };
    fs::create_dir_all(&opts.out).map_err(io_err("creating", &opts.out))?;
    let results_path = opts.out.join("results.json");
    let tmp = opts.out.join(".results.json.tmp");
    let json = serde_json::to_string_pretty(&results).expect("results serialize");
    fs::write(&tmp, json + "\n").map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, &results_path).map_err(io_err("writing", &results_path))?;
    // Charts (SVG + PNG) and the one-file HTML report next to results.json. A chart failure
    // (e.g. no font) is reported but does not lose the measurements already written.
    let charts_dir = opts.out.join("charts");
    if !opts.no_charts {
        match crate::lab::charts::render_all(&results, &charts_dir) {
            Ok(charts) => {
                let report = opts.out.join("report.html");
                if let Err(e) = crate::lab::html::write_report(&results, &charts, &report) {
                    eprintln!("cowprof bench: writing {}: {e}", report.display());
                }
            }
            Err(e) => eprintln!("cowprof bench: charts not written: {e}"),
        }
    }
    if let Some(e) = no_space {
        return Err(e);
    }
    Ok(BenchReport {
        results,
        results_path,
        upper_checked,
        upper_mismatches,
        kernel_mismatches,
        elapsed: t0.elapsed(),
    })
}

/// Compares the kernel's copy-up counts with the repetitions of the ops that must copy up. A run
/// in which the backend saw none of them goes to `skipped` (its kernel-side numbers are absent,
/// not zero: e.g. the tracepoint backend on btrfs or with index=on); otherwise each cell that
/// disagrees is returned for a warning.
fn kernel_check(runs: &[RunResult], skipped: &mut Vec<Skipped>) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        let copying: Vec<_> = r.cells.iter().filter(|c| c.op.copies_up()).collect();
        let label = format!(
            "fs={} options={} cache={}",
            r.fs,
            options_label(&r.mount_options),
            r.cache
        );
        if !copying.is_empty()
            && copying.iter().all(|c| c.copy_ups == 0)
            && copying.iter().any(|c| !c.outcomes.contains_key("exdev"))
        {
            skipped.push(Skipped {
                what: format!("kernel-side timings {label}"),
                reason: "the backend saw none of this run's copy-ups (a limit of the backend on this filesystem or with these options); copy_ups and kernel are not measurements here".into(),
            });
            continue;
        }
        for c in &copying {
            let op = c.op;
            let redirect = c.outcomes.get(OUTCOME_REDIRECT).copied().unwrap_or(0);
            // rename_dir: only the repetitions that moved the directory copy it up.
            let want = if op == Op::RenameDir {
                redirect
            } else {
                c.repetitions * copy_ups_per_repetition(op, c.threads, true)
            };
            if c.copy_ups != want {
                out.push(format!(
                    "{label} {} {} layer {} threads {}: {} copy-ups in {} repetitions, expected {want}",
                    c.op,
                    format_size(c.size_bytes),
                    c.layer_depth,
                    c.threads,
                    c.copy_ups,
                    c.repetitions
                ));
            }
        }
    }
    out
}

#[expect(
    clippy::too_many_lines,
    reason = "one backing filesystem's matrix: layers, stacks and the probe tap live exactly as long as this loop"
)]
fn run_matrix(
    ctx: &mut Ctx<'_>,
    root: &mut LabRoot,
    skipped: &mut Vec<Skipped>,
    runs: &mut Vec<RunResult>,
) -> Result<(), LabError> {
    let spec = ctx.spec;
    let reps = u64::from(spec.repetitions);
    let cells_per_set: u64 = spec
        .ops
        .iter()
        .map(|&op| cells_of(op, spec).len() as u64)
        .sum();
    let steps_per_set = cells_per_set * reps;
    let steps_refs = reference_items(spec) * reps;

    // Options this kernel's overlay does not have at all.
    let mut sets: Vec<&Vec<String>> = Vec::new();
    for set in &spec.mount_options {
        let missing = set.iter().find_map(|o| {
            let param = KNOWN_OPTIONS.iter().find(|(k, _)| k == o)?.1?;
            overlay_param(param).is_none().then_some((o, param))
        });
        // Options without a module parameter (fsync=, uuid=, verity=, volatile, ...) and
        // refused combinations are found when each filesystem's stack is mounted.
        if let Some((o, param)) = missing {
            skipped.push(Skipped {
                what: format!("options={}", options_label(set)),
                reason: format!("this kernel's overlay has no {param} parameter, so it has no {o}"),
            });
            ctx.pb.dec_length(
                spec.filesystems.len() as u64 * spec.cache.len() as u64 * steps_per_set,
            );
        } else {
            sets.push(set);
        }
    }
    let max_size = spec.sizes.iter().copied().max().unwrap_or(0);
    // Lower files, plus a few copies of the largest file in upper dirs and reference copies.
    let bytes = spec
        .backing_size
        .unwrap_or(spec.layer_bytes() + 4 * max_size + (256 << 20));

    let mut devices = std::collections::HashSet::new();
    for &fs_kind in &spec.filesystems {
        ctx.cancel.check()?;
        let steps_fs = spec.cache.len() as u64 * (steps_refs + sets.len() as u64 * steps_per_set);
        ctx.pb
            .set_message(format!("{fs_kind}: making the filesystem"));
        let backing = match Backing::create(root, fs_kind, bytes, ctx.cancel) {
            Ok(b) => b,
            Err(e) if ctx.cancel.is_set() || matches!(e, LabError::Interrupted) => {
                return Err(LabError::Interrupted)
            }
            Err(e) => {
                ctx.warn(&format!("skipping fs={fs_kind}: {e}"));
                skipped.push(Skipped {
                    what: format!("fs={fs_kind}"),
                    reason: e.to_string(),
                });
                ctx.pb.dec_length(steps_fs);
                continue;
            }
        };
        // The kernel side keys upper roots and work dirs by (device, inode): a device number
        // that an earlier backing filesystem had (loop devices are reused) needs fresh maps.
        let dev = fs::metadata(&backing.dir)
            .map_err(io_err("stat", &backing.dir))?
            .dev();
        if !devices.insert(dev) {
            if let Some(tap) = ctx.tap.as_mut() {
                ctx.pb
                    .set_message(format!("{fs_kind}: re-attaching the probes"));
                tap.reattach()?;
            }
        }
        ctx.pb
            .set_message(format!("{fs_kind}: building {} layers", spec.layers));
        let concurrent = spec.ops.iter().any(|o| o.shape() == Shape::Concurrent);
        let layers = Layers::build_with(
            &backing.dir,
            spec.layers,
            &spec.file_layers,
            &spec.sizes,
            if concurrent {
                &spec.concurrency.sizes
            } else {
                &[]
            },
            spec.concurrency.max_threads(),
            ctx.cancel,
        )?;
        // The layers were synced as they were built; let that writeback finish before the
        // first measured repetition.
        settle(&backing);
        for cache in &spec.cache {
            if *cache == Cache::Cold && fs_kind == FsKind::Tmpfs {
                skipped.push(Skipped {
                    what: format!("fs={fs_kind} cache=cold"),
                    reason: "tmpfs lives in the page cache: there is no cold state".into(),
                });
                ctx.pb
                    .dec_length(steps_refs + sets.len() as u64 * steps_per_set);
            }
        }
        // Does this kernel accept each set on this filesystem at all?
        let mut accepted: Vec<(usize, &Vec<String>)> = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            match LabStack::mount(&backing.dir, &layers, set, ctx.stacks) {
                Ok(s) => drop(s),
                Err(LabError::Mount(OverlayMountError { source, .. })) => {
                    let what = format!("fs={fs_kind} options={}", options_label(set));
                    ctx.warn(&format!(
                        "skipping {what}: the kernel refused the mount: {source}"
                    ));
                    skipped.push(Skipped {
                        what,
                        reason: format!("the kernel refused the overlay mount: {source}"),
                    });
                    let caches = spec
                        .cache
                        .iter()
                        .filter(|c| !(**c == Cache::Cold && fs_kind == FsKind::Tmpfs))
                        .count() as u64;
                    ctx.pb.dec_length(caches * steps_per_set);
                    ctx.stacks += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            ctx.stacks += 1;
            accepted.push((i, set));
        }
        if accepted.is_empty() {
            drop(layers);
            drop(backing);
            continue;
        }
        let accepted_sets: Vec<&Vec<String>> = accepted.iter().map(|(_, s)| *s).collect();
        // Results keep their order: per option set, then per cache state.
        let mut fs_runs: Vec<(usize, usize, RunResult)> = Vec::new();
        for (ci, &cache) in spec.cache.iter().enumerate() {
            if cache == Cache::Cold && fs_kind == FsKind::Tmpfs {
                continue;
            }
            if cache == Cache::Warm {
                prewarm(&layers, spec);
                settle(&backing);
            }
            let measured = measure_interleaved(ctx, &backing, &layers, &accepted_sets, cache)?;
            fs_runs.extend(
                measured
                    .into_iter()
                    .zip(&accepted)
                    .map(|(run, (si, _))| (*si, ci, run)),
            );
        }
        fs_runs.sort_by_key(|(si, ci, _)| (*si, *ci));
        runs.extend(fs_runs.into_iter().map(|(_, _, run)| run));
        drop(layers);
        drop(backing);
    }
    Ok(())
}

/// `cowprof bench`: runs and prints the tables. A run whose results were written but whose
/// checks failed (`--expect-kernel`, upper directories that disagree) is an error too.
pub fn main(opts: &BenchOptions, out: &mut dyn Write) -> Result<(), LabError> {
    let rep = bench(opts)?;
    let _ = match opts.table {
        TableMode::Full => super::summary::print_full(out, &rep.results),
        TableMode::Summary => super::summary::print_brief(
            out,
            &crate::fmt::Layout::stdout(),
            &rep.results,
            &super::summary::Disagreements {
                upper_mismatches: rep.upper_mismatches,
                kernel_mismatches: &rep.kernel_mismatches,
            },
        ),
    };
    let backend = rep
        .results
        .environment
        .backend
        .map_or("none", crate::event::Backend::as_str);
    let _ = writeln!(
        out,
        "\nbench: {} cells in {} runs, {} repetitions checked against the upper dir ({} disagreed), backend {backend}, {:.1}s; wrote {}",
        rep.results.runs.iter().map(|r| r.cells.len()).sum::<usize>(),
        rep.results.runs.len(),
        rep.upper_checked,
        rep.upper_mismatches,
        rep.elapsed.as_secs_f64(),
        rep.results_path.display()
    );
    if opts.table == TableMode::Summary {
        let _ = writeln!(
            out,
            "bench: every cell: --table full, or {} (and report.html beside it)",
            rep.results_path.display()
        );
    }
    let _ = out.flush();
    for m in &rep.kernel_mismatches {
        eprintln!("cowprof: kernel copy-up count differs: {m}");
    }
    if opts.expect_kernel {
        let unseen = rep
            .results
            .skipped
            .iter()
            .filter(|s| s.what.starts_with("kernel-side timings"))
            .count();
        if rep.results.environment.backend.is_none()
            || unseen > 0
            || !rep.kernel_mismatches.is_empty()
        {
            return Err(LabError::KernelInexact {
                backend,
                unseen,
                cells_off: rep.kernel_mismatches.len(),
            });
        }
    }
    if rep.upper_mismatches > 0 {
        return Err(LabError::UpperMismatch {
            repetitions: rep.upper_mismatches,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmt;
    use crate::lab::measure::CellAcc;

    #[test]
    fn hash_and_labels() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(options_label(&[]), "-");
        assert_eq!(fmt::ns(1_500), "1.5µs");
        assert_eq!(fmt::ns(2_500_000), "2.50ms");
    }

    #[test]
    fn quick_hashes_differently() {
        let (_, a) = load_spec(None, false).unwrap();
        let (_, b) = load_spec(None, true).unwrap();
        assert_ne!(sha256_hex(&a), sha256_hex(&b));
        assert_eq!(sha256_hex(&a), sha256_hex(DEFAULT_SPEC));
    }

    #[test]
    fn kernel_check_expects_exact_copy_ups() {
        let cell = |op: Op, threads: u32, reps: u64, copy_ups: u64, outcome: Option<&str>| {
            let mut acc = CellAcc::new(op, 4096, 1, threads);
            acc.repetitions = reps;
            acc.copy_ups = copy_ups;
            for _ in 0..reps * u64::from(threads) {
                acc.user.record(1_000);
            }
            if let Some(o) = outcome {
                acc.outcomes.insert(o.to_owned(), reps);
            }
            acc.finish(None, false)
        };
        let run = |cells| RunResult {
            fs: "tmpfs".into(),
            fs_features: vec![],
            mount_options: vec![],
            cache: "warm".into(),
            layers: 4,
            cells,
            plain_create: None,
        };
        let exact = run(vec![
            cell(Op::FirstWrite, 1, 3, 3, None),
            cell(Op::ParallelWrite, 4, 3, 12, None),
            cell(Op::RaceWrite, 4, 3, 3, None),
            cell(Op::RenameDir, 1, 3, 0, Some("exdev")),
            cell(Op::RenameDir, 1, 3, 3, Some(OUTCOME_REDIRECT)),
            cell(Op::Unlink, 1, 3, 0, None),
        ]);
        let mut skipped = Vec::new();
        assert!(kernel_check(&[exact], &mut skipped).is_empty());
        assert!(skipped.is_empty());
        let off = run(vec![
            cell(Op::RaceWrite, 4, 3, 4, None),
            cell(Op::ParallelWrite, 4, 3, 3, None),
        ]);
        assert_eq!(kernel_check(&[off], &mut skipped).len(), 2);
        // A backend that saw none of a run's copy-ups: the run's kernel numbers are absent.
        let blind = run(vec![cell(Op::FirstWrite, 1, 3, 0, None)]);
        assert!(kernel_check(&[blind], &mut skipped).is_empty());
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].what.starts_with("kernel-side timings"));
    }

    #[test]
    fn steps_count_every_repetition() {
        let s = Spec::parse(
            "sizes=[1]\nfile_layers=[1]\nrepetitions=2\nfilesystems=[\"dir\"]\nmount_options=[[]]\nops=[\"first_write\",\"create\"]\ncache=[\"warm\"]",
            "t",
        )
        .unwrap();
        // (1 size + the plain create) x 2 reps of references + (1 + 1 cells) x 2 reps.
        assert_eq!(total_steps(&s), 4 + 4);
    }
}
