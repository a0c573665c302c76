//! `cowprof doctor`: which backends this kernel allows and why.

use std::io::Write;

use cowprof::pipeline::probe;

use super::{BtfArgs, Exit};

#[derive(clap::Args)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub btf: BtfArgs,
}

pub fn run(args: DoctorArgs, out: &mut dyn Write) -> Exit {
    let DoctorArgs { json, btf } = args;
    let facts = probe::kernel_facts(&btf.paths());
    if json {
        let _ = serde_json::to_writer_pretty(&mut *out, &facts);
        let _ = writeln!(out);
    } else {
        print_doctor(out, &facts);
    }
    if facts.chosen.is_some() {
        Exit::Ok
    } else {
        Exit::NoBackend
    }
}

pub(super) fn print_doctor(out: &mut dyn std::io::Write, f: &probe::KernelFacts) {
    let _ = writeln!(out, "kernel: {}", f.release);
    match (&f.btf, &f.btf_error) {
        (Some(b), _) => {
            let ovl = match (&b.overlay_module, b.overlay_in_vmlinux) {
                (_, true) => "overlay types in vmlinux (overlay built in)".to_owned(),
                (Some(m), false) => format!("overlay types from module BTF {m}"),
                (None, false) => "overlay module BTF missing (is overlay loaded?)".to_owned(),
            };
            let _ = writeln!(out, "btf: {} available; {ovl}", b.vmlinux);
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "btf: unavailable: {e}");
        }
        (None, None) => {}
    }
    let _ = writeln!(
        out,
        "overlay: {}",
        if f.overlay_loaded {
            "loaded"
        } else {
            "not loaded (modprobe overlay)"
        }
    );
    let _ = writeln!(out, "symbols:");
    for (s, present) in &f.symbols {
        let _ = writeln!(
            out,
            "  {s:<30} {}",
            if *present {
                "present"
            } else {
                "absent (inlined or not in this kernel)"
            }
        );
    }
    let _ = writeln!(out, "backends:");
    for b in &f.backends {
        let _ = writeln!(
            out,
            "  {:<10} {}",
            b.backend.to_string() + ":",
            if b.usable {
                "available".to_owned()
            } else {
                b.reason.clone()
            }
        );
    }
    let _ = writeln!(
        out,
        "record would use: {}",
        f.chosen.map_or_else(
            || "nothing (no backend can attach)".to_owned(),
            |b| b.to_string()
        )
    );
}
