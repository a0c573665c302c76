//! The command line: parse, dispatch to one file per command, print errors, and exit with a
//! code from the one table in [`exit`]. Nothing below this module prints to the terminal on its
//! own account or picks an exit code.

mod assets;
mod bench;
mod clean;
mod compare;
mod demo;
mod doctor;
mod exit;
mod image;
mod internal;
mod record;
mod selftest;
mod top;

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use cowprof::pipeline::{
    probe::{Backend, BtfPaths},
    report::{Exporter, JsonLines, Table},
};

pub use exit::Exit;

#[derive(Parser)]
#[command(
    name = "cowprof",
    version,
    about = "Profile overlayfs copy-on-write: every copy-up and whiteout, live"
)]
struct Cli {
    /// More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct BtfArgs {
    /// Kernel BTF to read structure offsets from [default: /sys/kernel/btf/vmlinux]; e.g. a
    /// file from a BTF archive for a kernel built without BTF. Overlay's types are then read
    /// from it, or from --btf-overlay.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
    /// The overlay module's split BTF, whose base is the kernel BTF [default:
    /// /sys/kernel/btf/overlay, unless --btf is given]. Without overlay's types the kprobe
    /// backend works from vmlinux types alone (`doctor` lists what comes from where).
    #[arg(long, value_name = "FILE")]
    pub btf_overlay: Option<PathBuf>,
}

impl BtfArgs {
    pub fn paths(&self) -> BtfPaths {
        let default = BtfPaths::default();
        BtfPaths {
            // A module's split BTF only fits the base it was made against: the running
            // kernel's own one only goes with the running kernel's vmlinux BTF.
            overlay_module: self.btf_overlay.clone().or(if self.btf.is_none() {
                default.overlay_module
            } else {
                None
            }),
            vmlinux: self.btf.clone().unwrap_or(default.vmlinux),
        }
    }
}

/// Thresholds of `compare` and `bench --baseline`.
#[derive(clap::Args, Clone)]
pub struct GateArgs {
    /// Threshold file (default: ./.cowprof-ci.toml if it exists, else built-in gates).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Gate a metric, e.g. `p99=+10%`, `efficiency=-5%`, `bytes_copied=+0`, or a copy-up phase,
    /// `fsync.p50=+20%` (repeatable; replaces the config file's threshold of the same metric).
    #[arg(long = "threshold", value_name = "METRIC=CHANGE")]
    pub thresholds: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the kernel and print every copy-up and whiteout until Ctrl-C.
    Record(record::RecordArgs),
    /// A live view of copy-on-write activity (busiest containers, mounts, source layers,
    /// files per interval), or one plain table per interval for pipes.
    Top(top::TopArgs),
    /// Show which backends this kernel allows and why, BTF, overlay symbols.
    Doctor(doctor::DoctorArgs),
    /// The main job on an embedded default: build a small overlay stack, record a scripted
    /// workload on it, print the events and the summary, check them against the upper dir.
    Demo(demo::DemoArgs),
    /// Run the default scenario under each backend this kernel allows and check every event
    /// against the upper directory (the VM matrix runs this in each kernel).
    Selftest(selftest::SelftestArgs),
    /// The lab: build overlay2-style stacks on several filesystems, measure copy-up latency per
    /// op, file size and layer depth (plus kernel-side times), write DIR/results.json.
    Bench(bench::BenchArgs),
    /// Regression gate: compare two `bench` results.json files metric by metric (bootstrap
    /// intervals from the histograms); exit 1 if a gated metric regressed beyond its threshold.
    Compare(compare::CompareArgs),
    /// Container images: import `docker save`/OCI archives, inspect layers, compare base images.
    Image(image::ImageArgs),
    /// Remove what dead `bench` runs left: mounts, loop devices, images, directories, state.
    Clean(clean::CleanArgs),
    /// (internal) the lab's worker: runs and times the ops `bench` sends it.
    #[command(name = "__lab-worker", hide = true)]
    LabWorker { parent: u32 },
    /// (internal) replays `image forecast --verify`'s operations below MERGED, read from stdin.
    #[command(name = "__replay", hide = true)]
    Replay { merged: PathBuf },
    /// (internal) writes shell completions and man pages under DIR (`cargo xtask assets`).
    #[command(name = "__assets", hide = true)]
    Assets { dir: PathBuf },
    /// (internal) the scripted workload, run by demo/selftest in a separate process.
    #[command(name = "__workload", hide = true)]
    Workload {
        merged: PathBuf,
        meta_merged: Option<PathBuf>,
    },
    /// (internal) keeps `bpf()` busy for SECS seconds in two threads (scripts/vm-kprobe-guard.sh).
    #[command(name = "__bpf-busy", hide = true)]
    BpfBusy { secs: u64 },
    /// (internal) the lifecycle storm's workload, run by `selftest --storm` in a separate process.
    #[command(name = "__storm", hide = true)]
    Storm {
        base: PathBuf,
        stacks: usize,
        parallel: usize,
        truth: PathBuf,
    },
}

/// Parses the command line, runs the command, returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        },
    ))
    .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cowprof: cannot start the runtime: {e}");
            return Exit::Failure.into();
        }
    };
    rt.block_on(run(cli.command)).into()
}

/// `--backend`: the backends that can be asked for. `fentry` is not among them: it cannot attach
/// to overlay's functions (a module on distro kernels) with the loader cowprof uses; `doctor`
/// still reports whether the kernel would accept it.
fn backend_arg() -> impl clap::builder::TypedValueParser<Value = Backend> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["kprobe", "tracepoint"])
        .map(|s| s.parse::<Backend>().expect("one of the possible values"))
}

fn exporter(json: bool) -> Box<dyn Exporter> {
    if json {
        Box::new(JsonLines::new())
    } else {
        Box::new(Table::new())
    }
}

async fn run(command: Command) -> Exit {
    // From here on Ctrl-C and SIGTERM no longer kill the process outright: every command ends
    // through its own cleanup (stacks unmounted, programs detached). `record` listens for them.
    let _keep_int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    let _keep_term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let stdout = std::io::stdout();
    // Block-buffered: record flushes once per ring-buffer batch (stdout alone flushes per line);
    // 64 KiB holds a batch of ~80 JSON events per write(2) (the default 8 KiB about ten).
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    match command {
        Command::Record(args) => record::run(args, &mut out).await,
        Command::Top(args) => top::run(args, &mut out).await,
        Command::Doctor(args) => doctor::run(args, &mut out),
        Command::Demo(args) => demo::run(args, &mut out).await,
        Command::Selftest(args) => selftest::run(args, &mut out).await,
        Command::Bench(args) => bench::run(args, &mut out),
        Command::Compare(args) => compare::run(args, &mut out),
        Command::Image(args) => image::run(args, &mut out),
        Command::Clean(args) => clean::run(args, &mut out),
        Command::Assets { dir } => match assets::write(&dir) {
            Ok(n) => {
                let _ = writeln!(out, "cowprof: wrote {n} files under {}", dir.display());
                Exit::Ok
            }
            Err(e) => {
                eprintln!("cowprof: cannot write under {}: {e}", dir.display());
                Exit::Failure
            }
        },
        Command::LabWorker { parent } => internal::lab_worker(parent),
        Command::Replay { merged } => internal::replay(&merged),
        Command::Workload {
            merged,
            meta_merged,
        } => internal::workload(&merged, meta_merged.as_deref()),
        Command::Storm {
            base,
            stacks,
            parallel,
            truth,
        } => internal::storm(&base, stacks, parallel, &truth),
        Command::BpfBusy { secs } => internal::bpf_busy(secs),
    }
}
