//! `cowprof bench`: the lab, or an image's own files on its real layer stack (`--image`).

use std::{io::Write, path::PathBuf};

use cowprof::{
    compare::{self, BenchGateError, CompareOptions, Format},
    lab,
};

use super::{Exit, GateArgs};

#[derive(clap::Args)]
#[command(after_long_help = lab::spec::DEFAULT_SPEC)]
pub struct BenchArgs {
    /// TOML spec of the matrix (default: the built-in one, about a minute).
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Output directory for results.json.
    #[arg(long, value_name = "DIR", default_value = "cowprof-bench")]
    pub out: PathBuf,
    /// Where the lab makes its run directory (cowprof-lab-<pid>).
    #[arg(long, value_name = "DIR", default_value = "/tmp")]
    pub workdir: PathBuf,
    /// Tiny sizes and two repetitions (smoke tests).
    #[arg(long)]
    pub quick: bool,
    /// Then compare the new results.json against this one (`cowprof compare`, reports and
    /// charts in DIR/compare); the exit code is the comparison's.
    #[arg(long, value_name = "BASE.json")]
    pub baseline: Option<PathBuf>,
    /// With --baseline: when the gate fails, measure again up to N times; fail only if every
    /// measurement fails it (a regression reproduces, a load burst rarely does).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "baseline")]
    pub confirm: u32,
    #[command(flatten)]
    pub gates: GateArgs,
    /// Instead of the spec's synthetic stack: first writes, chmods and unlinks of this image's
    /// own files on its real layer stack (an archive, imported first, or a digest/tag).
    #[arg(long, value_name = "ARCHIVE|REF", conflicts_with = "baseline")]
    pub image: Option<String>,
    /// Layer store for --image.
    #[arg(long, value_name = "DIR", default_value = cowprof::image::store::DEFAULT_STORE)]
    pub store: PathBuf,
    /// Exit 1 unless a backend attached and every copy-up cell's kernel-side count is exact
    /// (the VM matrix's check).
    #[arg(long)]
    pub expect_kernel: bool,
    /// Write results.json only: no charts, no report.html.
    #[arg(long)]
    pub no_charts: bool,
    /// What to print: `summary` (the copy-up curve, slowest cells, efficiency, what disagreed
    /// or was skipped) or `full` (every cell); results.json always holds every cell.
    #[arg(long, value_name = "WHAT", default_value = "summary", value_parser = table_arg())]
    pub table: lab::summary::TableMode,
}

pub fn run(args: BenchArgs, out: &mut dyn Write) -> Exit {
    if let BenchArgs {
        image: Some(image),
        store,
        out: out_dir,
        quick,
        ..
    } = args
    {
        let opts = cowprof::image::bench::ImageBenchOptions {
            image,
            store,
            out: out_dir,
            files_per_cell: if quick { 3 } else { 10 },
        };
        return match cowprof::image::bench::main(&opts, out) {
            Ok(()) => Exit::Ok,
            Err(e) => {
                let _ = out.flush();
                eprintln!("cowprof bench: {}", cowprof::image::one_line(&e));
                Exit::from(&e)
            }
        };
    }
    let BenchArgs {
        spec,
        out: out_dir,
        workdir,
        quick,
        baseline,
        confirm,
        gates,
        expect_kernel,
        no_charts,
        table,
        ..
    } = args;
    let bench_opts = lab::run::BenchOptions {
        spec,
        out: out_dir.clone(),
        workdir,
        quick,
        expect_kernel,
        no_charts,
        table,
    };
    let written = cowprof::host::ownership::Output::before(&out_dir);
    let exit = match baseline {
        None => {
            lab::run::main(&bench_opts, out).map_or_else(|e| lab_failed(&e, out), |()| Exit::Ok)
        }
        Some(base) => match compare::bench_gate(
            &CompareOptions {
                base,
                new: out_dir.join("results.json"),
                config: gates.config,
                thresholds: gates.thresholds,
                format: Format::Table,
                out: Some(out_dir.join("compare")),
            },
            confirm,
            out,
            |o| lab::run::main(&bench_opts, o),
        ) {
            Ok(cmp) => super::compare::verdict(&cmp),
            Err(BenchGateError::Bench(e)) => lab_failed(&e, out),
            Err(e @ BenchGateError::Baseline(_)) => {
                eprintln!("cowprof: {e}");
                Exit::Usage
            }
            Err(BenchGateError::Compare(e)) => super::compare::failed(&e),
        },
    };
    written.give_to_invoker();
    exit
}

/// The lab's error line, after what it printed before it.
fn lab_failed(e: &lab::stack::LabError, out: &mut dyn Write) -> Exit {
    let _ = out.flush();
    eprintln!("cowprof: {e}");
    Exit::from(e)
}

fn table_arg() -> impl clap::builder::TypedValueParser<Value = lab::summary::TableMode> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["summary", "full"]).map(|s| {
        if s == "full" {
            lab::summary::TableMode::Full
        } else {
            lab::summary::TableMode::Summary
        }
    })
}
