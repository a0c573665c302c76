//! Project chores: `cargo xtask fuzz [TARGET|all] --time SECS` runs cargo-fuzz targets
//! (docs/testing.md, "Fuzzing") on the pinned nightly, one after another, and prints execs/s and
//! findings.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

/// The pinned nightly (scripts/setup links it under this name); libFuzzer needs a nightly.
const TOOLCHAIN: &str = "cowprof-nightly";
/// The cargo-fuzz release this was written against.
const CARGO_FUZZ: &str = "0.13.1";

#[derive(Parser)]
#[command(about = "cowprof project chores")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs fuzz targets with cargo-fuzz (sanitizer build under fuzz/target).
    Fuzz {
        /// A target from `fuzz/fuzz_targets`, or `all`.
        #[arg(default_value = "all")]
        target: String,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_owned();
    match cli.cmd {
        Cmd::Fuzz { target, time } => fuzz(&root, &target, time),
    }
}

/// Runs `cmd`; a failure names the command.
fn exec(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(t) = name.strip_suffix(".rs") {
            out.push(t.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// `stat::NAME: VALUE` from libFuzzer's `-print_final_stats=1` output.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
        .and_then(|v| v.trim().parse().ok())
}

fn fuzz(root: &Path, which: &str, secs: u64) -> Result<bool> {
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = if which == "all" {
        all
    } else if all.iter().any(|t| t == which) {
        vec![which.to_owned()]
    } else {
        bail!(
            "no fuzz target {which:?}; choose one of: all, {}",
            all.join(", ")
        );
    };
    if !Command::new("cargo")
        .args([&format!("+{TOOLCHAIN}"), "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!(
            "cargo-fuzz is missing; install it with `cargo install cargo-fuzz --version {CARGO_FUZZ} --locked` \
             (and run scripts/setup for the {TOOLCHAIN} toolchain)"
        );
    }
    let cargo_fuzz = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.arg(format!("+{TOOLCHAIN}"))
            .arg("fuzz")
            .args(args)
            .arg("--fuzz-dir")
            .arg(&fuzz_dir)
            .current_dir(root);
        c
    };
    eprintln!("xtask: building the fuzz targets (address sanitizer, {TOOLCHAIN})");
    exec(&mut cargo_fuzz(&["build"]))?;
    let logs = fuzz_dir.join("logs");
    fs::create_dir_all(&logs)?;
    let mut clean = true;
    println!(
        "{:<16} {:>6} {:>12} {:>9} {:>7}  result",
        "target", "secs", "execs", "execs/s", "cov"
    );
    for t in &chosen {
        // New inputs go to a scratch corpus; the committed seeds (second dir) are only read.
        let work: PathBuf = fuzz_dir.join("work").join(t);
        fs::create_dir_all(&work)?;
        let seeds = fuzz_dir.join("corpus").join(t);
        let log_path = logs.join(format!("{t}.log"));
        let log_file = fs::File::create(&log_path)?;
        let mut run = cargo_fuzz(&["run", t]);
        // The image targets make a scratch directory per input: on tmpfs when there is one.
        if Path::new("/dev/shm").is_dir() {
            run.env("TMPDIR", "/dev/shm");
        }
        let status = run
            .arg(&work)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-print_final_stats=1",
                "-timeout=10",
                "-rss_limit_mb=2048",
            ])
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .status()
            .with_context(|| format!("could not start cargo fuzz run {t}"))?;
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        let execs = stat(&log, "number_of_executed_units");
        let rate = stat(&log, "average_exec_per_sec");
        let cov = log
            .lines()
            .rev()
            .find_map(|l| l.split_once(" cov: "))
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("-")
            .to_owned();
        let result = if status.success() {
            "ok".to_owned()
        } else {
            clean = false;
            let artifact = log
                .lines()
                .find_map(|l| l.split_once("Test unit written to "))
                .map_or("(no artifact; see the log)", |(_, p)| p.trim());
            format!("FAILED: {artifact}; log {}", log_path.display())
        };
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        println!(
            "{t:<16} {secs:>6} {:>12} {:>9} {cov:>7}  {result}",
            show(execs),
            show(rate)
        );
    }
    if !clean {
        eprintln!(
            "xtask: findings above; reproduce with `cargo +{TOOLCHAIN} fuzz run --fuzz-dir fuzz TARGET ARTIFACT`, \
             fix, and commit the artifact as fuzz/corpus/TARGET/no-crash-NAME"
        );
    }
    Ok(clean)
}
