//! The default scenario recorded end to end: used by `cowprof demo` (prints it), `cowprof
//! selftest` (checks it; the VM matrix runs this inside each kernel) and the host tests.

use std::path::{Path, PathBuf};

use crate::{
    event::Event,
    pipeline::probe::{self, Backend, ProbeOptions},
    pipeline::record::{self, Outcome, RecordError, RecordOptions},
    pipeline::report::Exporter,
    scenario::{self, Stack, StackError, UpperTruth},
};

#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("reading the upper directory: {0}")]
    Truth(#[source] std::io::Error),
    #[error("interrupted; the test stacks were unmounted and removed")]
    Interrupted,
    #[error("the workload failed (exit status {0:?}); see its message above")]
    Workload(Option<i32>),
    #[error("cannot find cowprof's own executable to run the workload: {0}")]
    Exe(#[source] std::io::Error),
}

/// One run of the scenario.
pub struct ScenarioRun {
    pub outcome: Outcome,
    /// Events on the scenario's own mounts.
    pub events: Vec<Event>,
    pub problems: Vec<String>,
    pub expected: usize,
    /// The metacopy=on stack was part of the run (the kernel's overlay has metacopy).
    pub with_meta: bool,
}

/// Where the scenario's stacks live: `base/cowprof-<pid>-{a,b}`.
pub fn stack_dirs(base: &Path) -> (PathBuf, PathBuf) {
    let id = std::process::id();
    (
        base.join(format!("cowprof-{id}-main")),
        base.join(format!("cowprof-{id}-meta")),
    )
}

/// Builds the stacks, records the workload (run as `exe __workload ...` in its own process)
/// with `backend`, and checks the events against the expected list and the upper directories.
pub async fn run_scenario(
    backend: Option<Backend>,
    btf: probe::BtfPaths,
    base: &Path,
    on_tmpfs: bool,
    exporter: &mut dyn Exporter,
    out: &mut dyn std::io::Write,
) -> Result<ScenarioRun, SelftestError> {
    let exe = std::env::current_exe().map_err(SelftestError::Exe)?;
    let (dir_a, dir_b) = stack_dirs(base);
    let main = Stack::create(&dir_a, 3, scenario::DEFAULT_FILES, &[], on_tmpfs)?;
    scenario::add_symlink(&main)
        .map_err(crate::host::io::io_err("symlink in", &main.root))
        .map_err(StackError::from)?;
    let meta = if crate::host::mounts::overlay_param("metacopy").is_some() {
        Some(Stack::create(
            &dir_b,
            1,
            scenario::META_FILES,
            &["metacopy=on"],
            on_tmpfs,
        )?)
    } else {
        None
    };
    let mut command = vec![
        exe.display().to_string(),
        "__workload".into(),
        main.merged.display().to_string(),
    ];
    if let Some(m) = &meta {
        command.push(m.merged.display().to_string());
    }
    let opts = RecordOptions {
        probe: ProbeOptions {
            backend,
            btf,
            ..Default::default()
        },
        command,
        ..Default::default()
    };
    let outcome = record::record(&opts, exporter, out).await?;
    if outcome.interrupted {
        return Err(SelftestError::Interrupted);
    }
    if outcome.command_status != Some(0) {
        return Err(SelftestError::Workload(outcome.command_status));
    }
    let ours: Vec<&Stack> = std::iter::once(&main).chain(meta.as_ref()).collect();
    let mount_points: Vec<String> = ours
        .iter()
        .map(|s| s.merged.display().to_string())
        .collect();
    // Events from other mounts (e.g. containers on the same host) are not ours; events on no
    // known mount are kept, so a misattributed event fails the check instead of hiding.
    let events: Vec<Event> = outcome
        .events
        .iter()
        .filter(|e| {
            e.mount_point
                .as_ref()
                .is_none_or(|m| mount_points.iter().any(|p| **p == **m))
        })
        .cloned()
        .collect();
    let mut truth = UpperTruth::read(&main.upper).map_err(SelftestError::Truth)?;
    let mut lowers = main.lowers.clone();
    if let Some(m) = &meta {
        truth.entries.extend(
            UpperTruth::read(&m.upper)
                .map_err(SelftestError::Truth)?
                .entries,
        );
        lowers.extend(m.lowers.iter().cloned());
    }
    // The expectation follows the backend asked for, not the one the recorder reports.
    let asked = backend.unwrap_or(outcome.info.backend);
    let expected = scenario::expected(asked, meta.is_some());
    let mut problems = Vec::new();
    if outcome.info.backend != asked {
        problems.push(format!(
            "record ran backend {}, asked for {asked}",
            outcome.info.backend
        ));
    }
    if events.len() != expected.len() {
        problems.push(format!(
            "{} events, expected {}",
            events.len(),
            expected.len()
        ));
    }
    problems.extend(scenario::verify(&events, &expected, &truth, &lowers));
    problems.extend(scenario::phases::check(&events));
    Ok(ScenarioRun {
        outcome,
        events,
        problems,
        expected: expected.len(),
        with_meta: meta.is_some(),
    })
}
