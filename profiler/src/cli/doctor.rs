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
    let canaries = probe::canary::per_backend(&facts, &btf.paths());
    if json {
        #[derive(serde::Serialize)]
        struct Doctor<'a> {
            #[serde(flatten)]
            facts: &'a probe::KernelFacts,
            canary: &'a [probe::canary::BackendCanary],
        }
        let _ = serde_json::to_writer_pretty(
            &mut *out,
            &Doctor {
                facts: &facts,
                canary: &canaries,
            },
        );
        let _ = writeln!(out);
    } else {
        print_doctor(out, &facts, Some(&canaries));
    }
    match facts.chosen {
        None => Exit::NoBackend,
        // The backend `record` would use attaches but is blind here.
        Some(b)
            if canaries
                .iter()
                .any(|c| c.backend == b && c.ok == Some(false)) =>
        {
            Exit::CanaryBlind
        }
        Some(_) => Exit::Ok,
    }
}

fn print_canaries(out: &mut dyn Write, canaries: &[probe::canary::BackendCanary]) {
    let _ = writeln!(
        out,
        "start-up check (canary: a data copy-up, a directory copy-up and a whiteout on a private overlay):"
    );
    for c in canaries {
        let _ = writeln!(out, "  canary {}: {}", c.backend, c.summary);
    }
}

/// The report; with `canaries`, the start-up check's results come before the last line (which
/// backend `record` would use).
pub(super) fn print_doctor(
    out: &mut dyn std::io::Write,
    f: &probe::KernelFacts,
    canaries: Option<&[probe::canary::BackendCanary]>,
) {
    let _ = writeln!(out, "kernel: {}", f.release);
    match (&f.btf, &f.btf_error) {
        (Some(b), _) => {
            let ovl = match (&b.overlay_module, b.overlay_in_vmlinux, &b.overlay_missing) {
                (_, _, Some(why)) => format!("overlay types missing: {why}"),
                (_, true, None) => "overlay types in vmlinux (overlay built in)".to_owned(),
                (Some(m), false, None) => format!("overlay types from module BTF {m}"),
                (None, false, None) => "overlay types missing".to_owned(),
            };
            let _ = writeln!(out, "btf: {} available; {ovl}", b.vmlinux);
            if !f.fields.is_empty() {
                let _ = writeln!(out, "fields (kprobe backend): where each comes from");
                for r in &f.fields {
                    let _ = writeln!(out, "  {:<34} {:<12} {}", r.field, r.source.as_str(), r.how);
                }
                let missing: Vec<&str> = f
                    .fields
                    .iter()
                    .filter(|r| r.source == probe::Source::Missing)
                    .map(|r| r.field)
                    .collect();
                if !missing.is_empty() {
                    let _ = writeln!(out, "  missing: {}", missing.join("; "));
                }
            }
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
        "overlay mount options (an overlay superblock made with each, never mounted):"
    );
    for o in &f.overlay_options {
        let _ = writeln!(
            out,
            "  {:<16} {}",
            o.option,
            o.reason.as_deref().unwrap_or("accepted")
        );
    }
    if let Some(b) = f.chosen {
        let _ = writeln!(out, "copy-up phases ({b} backend):");
        for p in &f.phases {
            let _ = writeln!(
                out,
                "  {:<13} {}: {}",
                p.phase,
                if p.visible { "shown" } else { "null" },
                p.how
            );
        }
    }
    // Nothing to check where nothing can attach: the report ends with why.
    if let Some(c) = canaries.filter(|_| f.chosen.is_some()) {
        print_canaries(out, c);
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
