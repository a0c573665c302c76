//! Facts of the machine a measurement ran on: kernel release, CPUs, overlay module parameters.

use std::{collections::BTreeMap, fs};

/// Where the overlay module's parameters are (absent when overlay is not loaded).
pub const OVERLAY_PARAMS_DIR: &str = "/sys/module/overlay/parameters";

/// The machine, read now. Unreadable facts are empty (or 1 CPU), never an error: they describe
/// a measurement, they do not decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    pub cpus: u32,
    /// `/sys/module/overlay/parameters/*` (name -> value).
    pub overlay_params: BTreeMap<String, String>,
}

impl Machine {
    pub fn read() -> Self {
        Self {
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpus: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            overlay_params: overlay_params(),
        }
    }
}

/// The overlay module's parameters (name -> value, trimmed); empty when it is not loaded.
pub fn overlay_params() -> BTreeMap<String, String> {
    fs::read_dir(OVERLAY_PARAMS_DIR)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v = fs::read_to_string(e.path()).ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        v.trim().to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}
