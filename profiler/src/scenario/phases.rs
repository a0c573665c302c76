//! The scenario's copy-up phases against what must hold whatever the timing: each copy-up's
//! phases add up to its latency, a data copy-up reports its bytes (by splice: the scenario's
//! uppers, tmpfs and ext4, have no reflink), a metacopy has no data phase.

use crate::event::{DataMethod, Event, Kind};

/// The mismatches (empty = pass).
pub fn check(events: &[Event]) -> Vec<String> {
    let mut problems = Vec::new();
    for ev in events.iter().filter(|e| e.kind.is_copy_up()) {
        let Some(p) = &ev.phases else {
            problems.push(format!("{} {}: no phases", ev.kind.as_str(), ev.path));
            continue;
        };
        let sum: u64 = p.values().iter().flatten().sum();
        if sum != ev.latency_ns {
            problems.push(format!(
                "{} {}: phases sum to {sum} ns, latency {} ns",
                ev.kind.as_str(),
                ev.path,
                ev.latency_ns
            ));
        }
        match ev.kind {
            Kind::DataCopyUp | Kind::DeferredDataCopyUp => {
                if let Some(bytes) = p.data_bytes {
                    if bytes != ev.bytes_copied || p.data_method != Some(DataMethod::Splice) {
                        problems.push(format!(
                            "{} {}: data {:?} {bytes} bytes, expected splice of {}",
                            ev.kind.as_str(),
                            ev.path,
                            p.data_method,
                            ev.bytes_copied
                        ));
                    }
                }
            }
            Kind::Metacopy if p.data_method.is_some() || p.data_bytes.unwrap_or(0) != 0 => {
                problems.push(format!("metacopy {}: a data phase {p:?}", ev.path));
            }
            _ => {}
        }
    }
    problems
}
