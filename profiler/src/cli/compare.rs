//! `cowprof compare`: regression gates over two results.json files.

use std::{io::Write, path::PathBuf};

use cowprof::compare::{self, CompareError, CompareOptions, Comparison, Format};

use super::{Exit, GateArgs};

#[derive(clap::Args)]
pub struct CompareArgs {
    /// results.json of the baseline (e.g. the main branch's `bench`).
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// results.json to judge against it.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    #[command(flatten)]
    pub gates: GateArgs,
    /// Report format on stdout.
    #[arg(long, default_value = "table", value_parser = format_arg())]
    pub format: Format,
    /// Also write compare.{md,txt,json}, compare-junit.xml and CDF charts (SVG, PNG) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: CompareArgs, out: &mut dyn Write) -> Exit {
    let CompareArgs {
        base,
        new,
        gates,
        format,
        out: report_dir,
    } = args;
    let written = report_dir
        .as_deref()
        .map(cowprof::host::ownership::Output::before);
    let exit = match compare::execute(
        &CompareOptions {
            base,
            new,
            config: gates.config,
            thresholds: gates.thresholds,
            format,
            out: report_dir,
        },
        out,
    ) {
        Ok(cmp) => verdict(&cmp),
        Err(e) => failed(&e),
    };
    if let Some(w) = written {
        w.give_to_invoker();
    }
    exit
}

/// A comparison that ran: a gated metric beyond its threshold fails it.
pub fn verdict(cmp: &Comparison) -> Exit {
    if cmp.passed() {
        Exit::Ok
    } else {
        Exit::Failure
    }
}

/// A comparison that could not run: its error line.
pub fn failed(e: &CompareError) -> Exit {
    eprintln!("cowprof compare: {e}");
    Exit::from(e)
}

fn format_arg() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Format::ALL.map(Format::as_str))
        .map(|s| s.parse::<Format>().expect("one of the possible values"))
}
