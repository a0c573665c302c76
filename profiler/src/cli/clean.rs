//! `cowprof clean`: remove what dead `bench` runs left.

use std::{io::Write, path::PathBuf};

use cowprof::lab;

use super::Exit;

#[derive(clap::Args)]
pub struct CleanArgs {
    /// Also look for cowprof-lab-<pid> directories here (bench's --workdir).
    #[arg(long, value_name = "DIR", default_value = "/tmp")]
    pub workdir: Vec<PathBuf>,
}

pub fn run(args: CleanArgs, out: &mut dyn Write) -> Exit {
    let CleanArgs { workdir } = args;
    let report = lab::clean::clean(&workdir);
    for line in &report.removed {
        let _ = writeln!(out, "cowprof clean: {line}");
    }
    for pid in &report.alive {
        let _ = writeln!(out, "cowprof clean: run {pid} is still running; left alone");
    }
    if report.removed.is_empty() && report.errors.is_empty() {
        let _ = writeln!(out, "cowprof clean: nothing to clean");
    }
    let _ = out.flush();
    for e in &report.errors {
        eprintln!("cowprof clean: {e}");
    }
    if report.errors.is_empty() {
        Exit::Ok
    } else {
        Exit::Failure
    }
}
