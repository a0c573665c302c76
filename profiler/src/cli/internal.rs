//! Hidden commands that cowprof runs in child processes of its own: the lab's worker and the
//! workloads of the scenario and of the lifecycle storm (separate processes, so the recording
//! sees a real other task).

use std::path::Path;

use cowprof::{image, lab, scenario};

use super::Exit;

pub fn lab_worker(parent: u32) -> Exit {
    match lab::workload::worker_main(parent) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("cowprof lab worker: {e}");
            Exit::Failure
        }
    }
}

pub fn workload(merged: &Path, meta_merged: Option<&Path>) -> Exit {
    match scenario::run_workload(merged, meta_merged) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("cowprof workload: {e}");
            Exit::Failure
        }
    }
}

pub fn replay(merged: &Path) -> Exit {
    match image::verify::replay_main(merged) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("cowprof replay: {e}");
            Exit::Failure
        }
    }
}

pub fn storm(base: &Path, stacks: usize, parallel: usize, truth: &Path) -> Exit {
    match scenario::storm::run_workload(base, stacks, parallel, truth) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("cowprof storm workload: {e}");
            Exit::Failure
        }
    }
}

pub fn bpf_busy(secs: u64) -> Exit {
    let start = std::time::Instant::now();
    match scenario::bpf_busy::run(2, std::time::Duration::from_secs(secs)) {
        Ok(n) => {
            println!(
                "bpf-busy: {n} map lookups in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("cowprof bpf-busy: cannot create a BPF map: {e}");
            Exit::Failure
        }
    }
}
