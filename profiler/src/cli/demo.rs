//! `cowprof demo`: the embedded default stack and workload, recorded and checked.

use std::io::Write;

use cowprof::{
    pipeline::probe::{Backend, BtfPaths},
    scenario::selftest,
};

use super::{exporter, Exit};

#[derive(clap::Args)]
pub struct DemoArgs {
    #[arg(long, value_parser = super::backend_arg(), value_name = "BACKEND")]
    pub backend: Option<Backend>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: DemoArgs, out: &mut dyn Write) -> Exit {
    let DemoArgs { backend, json } = args;
    let mut exp = exporter(json);
    match selftest::run_scenario(
        backend,
        BtfPaths::default(),
        &std::env::temp_dir(),
        false,
        exp.as_mut(),
        out,
    )
    .await
    {
        Ok(run) => {
            let _ = writeln!(
                out,
                "\ndemo: {} events on the demo stacks; {} expected; check against the upper directory: {}",
                run.events.len(),
                run.expected,
                if run.problems.is_empty() { "all match".to_owned() } else { run.problems.join("; ") }
            );
            if run.problems.is_empty() {
                Exit::Ok
            } else {
                Exit::Failure
            }
        }
        Err(e) => {
            eprintln!("cowprof: {e}");
            Exit::from(&e)
        }
    }
}
