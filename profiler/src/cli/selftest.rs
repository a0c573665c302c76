//! `cowprof selftest`: the default scenario under every usable backend, checked against the upper
//! directory (the VM matrix runs it inside each kernel).

use std::io::Write;

use cowprof::{
    pipeline::{
        probe::{self, Backend, BtfPaths},
        report::JsonLines,
    },
    scenario::selftest,
};

use super::{doctor::print_doctor, BtfArgs, Exit};

#[derive(clap::Args)]
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
    #[command(flatten)]
    pub btf: BtfArgs,
}

pub async fn run(args: SelftestArgs, out: &mut dyn Write) -> Exit {
    let SelftestArgs {
        backend,
        tmpfs,
        doctor,
        expect_chosen,
        btf,
    } = args;
    run_all(backend, tmpfs, doctor, expect_chosen, &btf.paths(), out).await
}

pub async fn run_all(
    backend: Option<Backend>,
    tmpfs: bool,
    doctor: bool,
    expect_chosen: Option<Backend>,
    btf: &BtfPaths,
    out: &mut dyn std::io::Write,
) -> Exit {
    let facts = probe::kernel_facts(btf);
    if doctor {
        print_doctor(out, &facts);
    }
    let (mut passed, mut failed) = (0, 0);
    if let Some(want) = expect_chosen {
        if facts.chosen == Some(want) {
            passed += 1;
            let _ = writeln!(
                out,
                "selftest: ok doctor chooses {want} on {}",
                facts.release
            );
        } else {
            failed += 1;
            let _ = writeln!(
                out,
                "selftest: FAIL doctor chooses {:?} on {}, expected {want}",
                facts.chosen, facts.release
            );
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
    for b in backends {
        let mut sink = std::io::sink();
        let mut quiet = JsonLines;
        let result = selftest::run_scenario(
            Some(b),
            btf.clone(),
            &std::env::temp_dir(),
            tmpfs,
            &mut quiet,
            &mut sink,
        )
        .await;
        match result {
            Ok(run) if run.problems.is_empty() => {
                passed += 1;
                let _ = writeln!(
                    out,
                    "selftest: ok backend={b} kernel={} events={} expected={} dropped={}",
                    facts.release,
                    run.events.len(),
                    run.expected,
                    run.outcome.summary.drops.total()
                );
            }
            Ok(run) => {
                failed += 1;
                let _ = writeln!(out, "selftest: FAIL backend={b} kernel={}", facts.release);
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
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(
                    out,
                    "selftest: FAIL backend={b} kernel={}: {e}",
                    facts.release
                );
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
