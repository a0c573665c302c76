//! `cowprof selftest`: the default scenario under every usable backend, checked against the upper
//! directory (the VM matrix runs it inside each kernel).

use std::io::Write;

use cowprof::{
    event::Event,
    pipeline::{
        probe::{self, Backend, BtfPaths, ProbeOptions},
        report::JsonLines,
    },
    scenario::{crosscheck, selftest, storm},
};

use super::{doctor::print_doctor, BtfArgs, Exit};

#[derive(clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
pub struct SelftestArgs {
    /// Only this backend (default: every usable one).
    #[arg(long, value_parser = super::backend_arg(), value_name = "BACKEND")]
    pub backend: Option<Backend>,
    /// Build the stacks on a tmpfs of their own (needed where /tmp is not writable disk).
    #[arg(long)]
    pub tmpfs: bool,
    /// Also print `doctor` first.
    #[arg(long)]
    pub doctor: bool,
    /// Fail unless `doctor` would choose this backend (checks backend detection per kernel).
    #[arg(long, value_parser = super::backend_arg(), value_name = "BACKEND")]
    pub expect_chosen: Option<Backend>,
    /// Where two or more backends run, print each one's events (JSON lines) and fail unless
    /// they agree exactly: kinds, mounts, paths, layers, syscalls (not times or pids).
    #[arg(long)]
    pub compare_backends: bool,
    /// Fail unless exactly these backends run (comma-separated): a backend this kernel
    /// cannot use is then a failure, not a skip.
    #[arg(long, value_parser = super::backend_arg(), value_name = "BACKENDS", value_delimiter = ',')]
    pub expect_backends: Option<Vec<Backend>>,
    /// Fail unless the metacopy=on stack is part of every run (the kernel has metacopy).
    #[arg(long)]
    pub expect_metacopy: bool,
    /// Also run the lifecycle storm under each backend: N short-lived overlay stacks (half one at
    /// a time, half three at once), each mounted, written at once, unmounted and removed; every
    /// stack's events must match its upper dir exactly, on its own mount point.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub storm: Option<u32>,
    /// Run the lifecycle storm only under these backends (comma-separated; default: every
    /// backend that runs).
    #[arg(long, value_parser = super::backend_arg(), value_name = "BACKENDS", value_delimiter = ',', requires = "storm")]
    pub storm_backends: Option<Vec<Backend>>,
    /// Up to N attempts in all for a scenario or storm run that only missed events while the
    /// kernel skipped runs of every copy of one of its programs (the one loss cowprof cannot
    /// avoid, and counts only as an upper bound, on kernels that run tracepoint programs
    /// preemptibly: see docs/backends.md, "Skipped program runs"). Every attempt is reported; a wrong,
    /// duplicate or dropped event, or a miss without such skips, fails at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub attempts_on_skips: u32,
    /// Attach N copies of each ctime program (1–3; default 3) where the kernel skips preempted
    /// programs (7.0 and later, tracepoint backend), for testing the checkers that count what
    /// every copy skipped: with one copy, storms lose events there.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=3))]
    pub ctime_copies: Option<u8>,
    /// A storm passes when every event it did not deliver exactly is covered by a counted
    /// loss (`dropped`, or `ctime_skipped`: inode updates every ctime copy skipped), instead of
    /// only when it is exact; anything wrong, duplicated or from a removal still fails.
    #[arg(long, requires = "storm", conflicts_with = "compare_backends")]
    pub accounted: bool,
    /// Run only the lifecycle storm, not the scenario (e.g. with `--accounted` under a test
    /// hook that loses events on purpose).
    #[arg(long, requires = "storm", conflicts_with = "compare_backends")]
    pub storm_only: bool,
    #[command(flatten)]
    pub btf: BtfArgs,
}

pub async fn run(args: SelftestArgs, out: &mut dyn Write) -> Exit {
    let SelftestArgs {
        backend,
        tmpfs,
        doctor,
        expect_chosen,
        compare_backends,
        expect_backends,
        expect_metacopy,
        storm,
        storm_backends,
        attempts_on_skips,
        ctime_copies,
        accounted,
        storm_only,
        btf,
    } = args;
    let expect = Expect {
        chosen: expect_chosen,
        backends: expect_backends,
        metacopy: expect_metacopy,
        agree: compare_backends,
        storm: storm.map_or(0, |n| n as usize),
        storm_backends,
        attempts: attempts_on_skips,
        ctime_copies,
        accounted,
        storm_only,
    };
    run_all(backend, tmpfs, doctor, &expect, &btf.paths(), out).await
}

/// One backend's events of the scenario or the storm, and whether the kernel skipped runs of
/// every copy of its `sys_enter` program in that run (see [`entry_skipped`]).
type Stream = (Backend, Vec<Event>, bool);

/// The kernel skipped runs of every copy of the run's `sys_enter` program: an event of a
/// syscall whose entry they all missed has no syscall (kprobe backend; docs/backends.md,
/// "Skipped program runs").
fn entry_skipped(outcome: &cowprof::pipeline::record::Outcome) -> bool {
    probe::all_copies_skipped(&outcome.skipped_runs)
        .iter()
        .any(|p| p.starts_with("cowprof_sys_enter"))
}

/// What `selftest --expect-*` and `--compare-backends` require beyond every scenario run passing.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
pub struct Expect {
    pub chosen: Option<Backend>,
    pub backends: Option<Vec<Backend>>,
    pub metacopy: bool,
    /// Where two or more backends run, their event streams must agree.
    pub agree: bool,
    /// Lifecycle storm stacks per backend (0 = no storm).
    pub storm: usize,
    /// The backends the storm runs under (`None`: all).
    pub storm_backends: Option<Vec<Backend>>,
    /// Attempts in all for a run that only missed events while every copy of a program was
    /// skipped (`--attempts-on-skips`; 1 = no second attempt).
    pub attempts: u32,
    /// Copies of each ctime program (`--ctime-copies`; `None` = 3).
    pub ctime_copies: Option<u8>,
    /// A storm passes when its misses are all counted (`--accounted`).
    pub accounted: bool,
    /// Only the storm runs, not the scenario (`--storm-only`).
    pub storm_only: bool,
}

/// Stacks of the storm's second half that live at once.
const STORM_PARALLEL: usize = 3;

/// `--expect-chosen`: does `doctor` pick the backend the caller expects on this kernel?
fn check_chosen(facts: &probe::KernelFacts, want: Backend, out: &mut dyn std::io::Write) -> bool {
    let ok = facts.chosen == Some(want);
    let _ = if ok {
        writeln!(
            out,
            "selftest: ok doctor chooses {want} on {}",
            facts.release
        )
    } else {
        writeln!(
            out,
            "selftest: FAIL doctor chooses {:?} on {}, expected {want}",
            facts.chosen, facts.release
        )
    };
    ok
}

/// `--expect-backends`: do exactly these backends run?
fn check_backends(backends: &[Backend], want: &[Backend], out: &mut dyn std::io::Write) -> bool {
    let (mut got, mut want) = (backends.to_vec(), want.to_vec());
    got.sort_by_key(ToString::to_string);
    want.sort_by_key(ToString::to_string);
    want.dedup();
    let list = |v: &[Backend]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let ok = got == want;
    let _ = if ok {
        writeln!(out, "selftest: ok backends={}", list(&got))
    } else {
        writeln!(
            out,
            "selftest: FAIL backends that run: {}, expected {}",
            list(&got),
            list(&want)
        )
    };
    ok
}

pub async fn run_all(
    backend: Option<Backend>,
    tmpfs: bool,
    doctor: bool,
    expect: &Expect,
    btf: &BtfPaths,
    out: &mut dyn std::io::Write,
) -> Exit {
    let mut streams: Vec<Stream> = Vec::new();
    let mut storm_streams: Vec<Stream> = Vec::new();
    let facts = probe::kernel_facts(btf);
    if doctor {
        print_doctor(out, &facts, None);
    }
    let (mut passed, mut failed) = (0, 0);
    if let Some(want) = expect.chosen {
        if check_chosen(&facts, want, out) {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    let backends: Vec<Backend> = match backend {
        Some(b) => vec![b],
        None => facts
            .backends
            .iter()
            .filter(|b| b.usable)
            .map(|b| b.backend)
            .collect(),
    };
    for b in &facts.backends {
        if !backends.contains(&b.backend) {
            let _ = writeln!(out, "selftest: skip backend={} ({})", b.backend, b.reason);
        }
    }
    if let Some(want) = &expect.backends {
        if check_backends(&backends, want, out) {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    for b in backends {
        if !expect.storm_only {
            let result = scenario_under(b, btf, tmpfs, expect, out).await;
            match judge(b, result, &facts.release, expect.metacopy, out) {
                Some(events) => {
                    passed += 1;
                    streams.push((b, events.0, events.1));
                }
                None => failed += 1,
            }
        }
        if expect.storm > 0
            && expect
                .storm_backends
                .as_ref()
                .is_none_or(|l| l.contains(&b))
        {
            match storm_under(b, btf, tmpfs, expect, &facts.release, out).await {
                Some(events) => {
                    passed += 1;
                    storm_streams.push((b, events.0, events.1));
                }
                None => failed += 1,
            }
        }
    }
    if expect.agree {
        for (what, s, print) in [
            ("scenario", &streams, true),
            ("storm", &storm_streams, false),
        ] {
            if what == "storm" && expect.storm == 0 {
                continue;
            }
            match compare_streams(what, s, print, &facts.release, out) {
                Some(true) => passed += 1,
                Some(false) => failed += 1,
                None => {}
            }
        }
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        Exit::Ok
    } else {
        Exit::Failure
    }
}

/// Records and checks the scenario under `b`, again while it only missed events that both
/// copies of a program could have lost (`--attempts-on-skips`).
async fn scenario_under(
    b: Backend,
    btf: &BtfPaths,
    tmpfs: bool,
    expect: &Expect,
    out: &mut dyn Write,
) -> Result<selftest::ScenarioRun, selftest::SelftestError> {
    let mut attempt = 1;
    loop {
        let result = selftest::run_scenario(
            Some(b),
            btf.clone(),
            &std::env::temp_dir(),
            tmpfs,
            &mut JsonLines::new(),
            &mut std::io::sink(),
        )
        .await;
        if let Ok(run) = &result {
            let lost = run.events.len() < run.expected;
            if !run.problems.is_empty() && lost && attempt < expect.attempts {
                let what = format!("{} of {} events", run.events.len(), run.expected);
                if retry_note(b, "scenario", &what, &run.outcome, attempt, expect, out) {
                    for p in &run.problems {
                        let _ = writeln!(out, "  {p}");
                    }
                    attempt += 1;
                    continue;
                }
            }
        }
        return result;
    }
}

/// Prints one backend's scenario verdict; its events when it passed.
fn judge(
    b: Backend,
    result: Result<selftest::ScenarioRun, selftest::SelftestError>,
    kernel: &str,
    want_metacopy: bool,
    out: &mut dyn Write,
) -> Option<(Vec<Event>, bool)> {
    match result {
        Ok(run) if run.problems.is_empty() && (run.with_meta || !want_metacopy) => {
            let _ = writeln!(
                out,
                "selftest: ok backend={b} kernel={kernel} events={} expected={} dropped={} metacopy={}",
                run.events.len(),
                run.expected,
                run.outcome.summary.drops.total(),
                if run.with_meta { "yes" } else { "no" }
            );
            Some((run.events, entry_skipped(&run.outcome)))
        }
        Ok(run) if run.problems.is_empty() => {
            let _ = writeln!(
                out,
                "selftest: FAIL backend={b} kernel={kernel}: no metacopy stack (this kernel's overlay has no metacopy parameter), but --expect-metacopy"
            );
            None
        }
        Ok(run) => {
            let _ = writeln!(out, "selftest: FAIL backend={b} kernel={kernel}");
            for p in &run.problems {
                let _ = writeln!(out, "  {p}");
            }
            for e in &run.events {
                let _ = writeln!(
                    out,
                    "  got {:?} {} layer={:?} bytes={} syscall={:?}",
                    e.kind, e.path, e.lower_layer, e.bytes_copied, e.syscall
                );
            }
            None
        }
        Err(e) => {
            let _ = writeln!(out, "selftest: FAIL backend={b} kernel={kernel}: {e}");
            None
        }
    }
}

/// Records and checks the lifecycle storm (`stacks` stacks) under `b`; its events when every
/// stack was exact.
async fn storm_under(
    b: Backend,
    btf: &BtfPaths,
    tmpfs: bool,
    expect: &Expect,
    kernel: &str,
    out: &mut dyn Write,
) -> Option<(Vec<Event>, bool)> {
    let mut attempt = 1;
    loop {
        let result = storm::run_storm(
            ProbeOptions {
                backend: Some(b),
                btf: btf.clone(),
                ctime_copies: expect.ctime_copies,
                ..Default::default()
            },
            &std::env::temp_dir(),
            expect.storm,
            STORM_PARALLEL,
            tmpfs,
            &mut JsonLines::new(),
            &mut std::io::sink(),
        )
        .await;
        if let Ok(run) = &result {
            // A whiteout whose name a skipped run lost is counted (`whiteout_unnamed`), and so
            // is a kprobe-backend operation whose start or end the kernel skipped (`unpaired`,
            // only while it skipped runs of a kprobe program): the same loss, counted; any
            // other drop fails at once.
            let drops = &run.outcome.summary.drops;
            let kprobe_skipped = run
                .outcome
                .skipped_runs
                .iter()
                .any(|(p, _)| probe::is_kprobe_program(p));
            let explained =
                drops.whiteout_unnamed + if kprobe_skipped { drops.unpaired } else { 0 };
            let only_missed = run.missing + run.layer_unknown > 0
                && run.misattributed == 0
                && run.duplicates == 0
                && run.from_removal == 0
                && drops.total() == explained;
            if only_missed && !expect.accounted && attempt < expect.attempts {
                let what = format!(
                    "{} of {} events ({} with no source layer; {} inode updates every ctime copy skipped)",
                    run.exact, run.expected, run.layer_unknown, drops.ctime_skipped
                );
                if retry_note(b, "storm", &what, &run.outcome, attempt, expect, out) {
                    for ex in &run.examples {
                        let _ = writeln!(out, "  {ex}");
                    }
                    attempt += 1;
                    continue;
                }
            }
        }
        return judge_storm(b, result, kernel, expect.accounted, out);
    }
}

/// When the run's programs were skipped in every copy, says that the run is attempted again
/// (and why) and returns true; false when nothing explains the miss (the run then fails).
fn retry_note(
    b: Backend,
    what: &str,
    got: &str,
    outcome: &cowprof::pipeline::record::Outcome,
    attempt: u32,
    expect: &Expect,
    out: &mut dyn Write,
) -> bool {
    let both = probe::all_copies_skipped(&outcome.skipped_runs);
    if both.is_empty() {
        return false;
    }
    let _ = writeln!(
        out,
        "selftest: again {what} backend={b}: {got}, and the kernel skipped runs of every copy of {} \
         (the loss of docs/backends.md, \"Skipped program runs\"); attempt {} of {}",
        both.join(", "),
        attempt + 1,
        expect.attempts
    );
    true
}

/// Prints one backend's storm verdict; its events when every stack was exact.
fn judge_storm(
    b: Backend,
    result: Result<storm::StormRun, selftest::SelftestError>,
    kernel: &str,
    accounted: bool,
    out: &mut dyn Write,
) -> Option<(Vec<Event>, bool)> {
    let run = match result {
        Ok(run) => run,
        Err(e) => {
            let _ = writeln!(out, "selftest: FAIL storm backend={b} kernel={kernel}: {e}");
            return None;
        }
    };
    let pass = if accounted { run.accounted() } else { run.ok() };
    let verdict = match (pass, accounted) {
        (true, false) => "ok",
        (true, true) => "ok (accounted)",
        (false, _) => "FAIL",
    };
    let _ = writeln!(
        out,
        "selftest: {verdict} storm backend={b} kernel={kernel} stacks={} ({} one at a time, the rest {} at once) \
         events expected={} exact={} missing={} misattributed={} layer_unknown={} duplicates={} from_removal={} dropped={} \
         ctime_skipped={} mount_to_first_write_max_ns={}",
        run.stacks,
        run.stacks / 2,
        run.parallel,
        run.expected,
        run.exact,
        run.missing,
        run.misattributed,
        run.layer_unknown,
        run.duplicates,
        run.from_removal,
        run.outcome.summary.drops.total(),
        run.outcome.summary.drops.ctime_skipped,
        run.max_mount_to_write.as_nanos()
    );
    for ex in &run.examples {
        let _ = writeln!(out, "  {ex}");
    }
    let drops = run.outcome.summary.drops;
    if drops.total() != 0 {
        let _ = writeln!(out, "  drops: {drops:?}");
    }
    if !run.outcome.skipped_runs.is_empty() {
        let _ = writeln!(
            out,
            "  runs the kernel skipped (program, runs): {:?}",
            run.outcome.skipped_runs
        );
    }
    let skipped = entry_skipped(&run.outcome);
    pass.then_some((run.events, skipped))
}

/// `selftest --compare-backends`: every stream as JSON lines (when `print`), then the first
/// backend's against each other one. `None` when fewer than two backends passed (nothing to
/// compare).
fn compare_streams(
    what: &str,
    streams: &[Stream],
    print: bool,
    kernel: &str,
    out: &mut dyn Write,
) -> Option<bool> {
    if streams.len() < 2 {
        let _ = writeln!(
            out,
            "selftest: skip compare-backends {what} kernel={kernel} (only {} backend(s) ran here: {})",
            streams.len(),
            streams
                .iter()
                .map(|(b, _, _)| b.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return None;
    }
    for (b, events, _) in streams.iter().filter(|_| print) {
        for e in events {
            let _ = writeln!(
                out,
                "selftest-event backend={b} {}",
                serde_json::to_string(e).unwrap_or_default()
            );
        }
    }
    let (first, first_events, first_skipped) = &streams[0];
    let mut agree = true;
    for (b, events, skipped) in &streams[1..] {
        let (diffs, notes) = crosscheck::compare_runs(
            (*first, first_events),
            (*b, events),
            [*first_skipped, *skipped],
        );
        for n in &notes {
            let _ = writeln!(out, "  note: {n}");
        }
        if diffs.is_empty() {
            let _ = writeln!(
                out,
                "selftest: ok backends {first} and {b} agree on the {what} kernel={kernel} events={}/{} known_gaps={}",
                first_events.len(),
                events.len(),
                notes.len()
            );
        } else {
            agree = false;
            let _ = writeln!(
                out,
                "selftest: FAIL backends {first} and {b} disagree on the {what} kernel={kernel}: {} difference(s)",
                diffs.len()
            );
            for d in &diffs {
                let _ = writeln!(out, "  {d}");
            }
        }
    }
    Some(agree)
}
