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
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Build the stacks on a tmpfs of their own (needed where /tmp is not writable disk).
    #[arg(long)]
    pub tmpfs: bool,
    /// Also print `doctor` first.
    #[arg(long)]
    pub doctor: bool,
    /// Fail unless `doctor` would choose this backend (checks backend detection per kernel).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub expect_chosen: Option<Backend>,
    /// Fail unless exactly these backends run (comma-separated): a backend this kernel
    /// cannot use is then a failure, not a skip.
    #[arg(long, value_enum, value_name = "BACKENDS", value_delimiter = ',')]
    pub expect_backends: Option<Vec<Backend>>,
    /// Fail unless the metacopy=on stack is part of every run (the kernel has metacopy).
    #[arg(long)]
    pub expect_metacopy: bool,
    #[command(flatten)]
    pub btf: BtfArgs,
}

pub async fn run(args: SelftestArgs, out: &mut dyn Write) -> Exit {
    let SelftestArgs {
        backend,
        tmpfs,
        doctor,
        expect_chosen,
        expect_backends,
        expect_metacopy,
        btf,
    } = args;
    let expect = Expect {
        chosen: expect_chosen,
        backends: expect_backends,
        metacopy: expect_metacopy,
    };
    run_all(backend, tmpfs, doctor, &expect, &btf.paths(), out).await
}

/// What `selftest --expect-*` requires beyond every scenario run passing.
pub struct Expect {
    pub chosen: Option<Backend>,
    pub backends: Option<Vec<Backend>>,
    pub metacopy: bool,
}

pub async fn run_all(
    backend: Option<Backend>,
    tmpfs: bool,
    doctor: bool,
    expect: &Expect,
    btf: &BtfPaths,
    out: &mut dyn std::io::Write,
) -> Exit {
    let facts = probe::kernel_facts(btf);
    if doctor {
        print_doctor(out, &facts);
    }
    let (mut passed, mut failed) = (0, 0);
    if let Some(want) = expect.chosen {
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
    if let Some(want) = &expect.backends {
        let (mut got, mut want) = (backends.clone(), want.clone());
        got.sort_by_key(ToString::to_string);
        want.sort_by_key(ToString::to_string);
        want.dedup();
        let list = |v: &[Backend]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        if got == want {
            passed += 1;
            let _ = writeln!(out, "selftest: ok backends={}", list(&got));
        } else {
            failed += 1;
            let _ = writeln!(
                out,
                "selftest: FAIL backends that run: {}, expected {}",
                list(&got),
                list(&want)
            );
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
            Ok(run) if run.problems.is_empty() && (run.with_meta || !expect.metacopy) => {
                passed += 1;
                let _ = writeln!(
                    out,
                    "selftest: ok backend={b} kernel={} events={} expected={} dropped={} metacopy={}",
                    facts.release,
                    run.events.len(),
                    run.expected,
                    run.outcome.summary.drops.total(),
                    if run.with_meta { "yes" } else { "no" }
                );
            }
            Ok(run) if run.problems.is_empty() => {
                failed += 1;
                let _ = writeln!(
                    out,
                    "selftest: FAIL backend={b} kernel={}: no metacopy stack (this kernel's overlay has no metacopy parameter), but --expect-metacopy",
                    facts.release
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
