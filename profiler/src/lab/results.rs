//! `results.json`: what `cowprof bench` measured, for `cowprof compare`, charts and scripts.
//!
//! Versioned (`schema`), units in field names. Every latency cell keeps its raw histogram
//! (hdrhistogram V2 serialization, base64) so that later comparisons can run proper tests on the
//! distributions rather than on summary numbers.

use std::collections::BTreeMap;

use std::fmt::Write as _;

use base64::Engine as _;
use hdrhistogram::{
    serialization::{DeserializeError, Deserializer, Serializer as _, V2Serializer},
    Histogram,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A cell's op, part of the schema (defined with the spec that names it).
pub use super::spec::Op;

/// Bumped on any incompatible change of this file's layout. Fields added later carry
/// `#[serde(default)]`, so files written before them still read (with the default noted there).
pub const RESULTS_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    pub environment: Environment,
    /// SHA-256 (hex) of the spec text that produced this file (the default spec if none).
    pub spec_hash: String,
    pub runs: Vec<RunResult>,
    /// Matrix entries that were not run on this kernel/machine, with the reason.
    pub skipped: Vec<Skipped>,
    /// Wall time of the whole run, seconds (0 in files written before this field).
    #[serde(default)]
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub kernel: String,
    pub cowprof_version: String,
    pub cpus: u32,
    /// `/sys/module/overlay/parameters/*` (name -> value).
    pub overlay_params: BTreeMap<String, String>,
    /// cowprof backend that gave the kernel-side timings, if one could attach.
    pub backend: Option<crate::event::Backend>,
    /// Wall-clock start, seconds since the epoch.
    pub started_unix_s: u64,
}

/// One configuration of the matrix: a backing filesystem, a set of overlay mount options and a
/// page-cache state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// `dir` (the host filesystem), `tmpfs`, `ext4`, `xfs`, `btrfs` (the last three loop-mounted).
    pub fs: String,
    /// Features of the backing filesystem that matter for copy-up, e.g. `reflink`.
    pub fs_features: Vec<String>,
    /// Overlay mount options beyond lowerdir/upperdir/workdir, e.g. `metacopy=on`, `volatile`.
    pub mount_options: Vec<String>,
    /// `warm` or `cold` (page cache dropped before each measured op).
    pub cache: String,
    pub layers: u32,
    pub cells: Vec<Cell>,
    /// `create` of a new file on the plain backing filesystem (no overlay), measured in the same
    /// run, interleaved with the cells: the reference of the metadata ops (`create`,
    /// `rmdir_recreate`, `rename_dir`), which have no size to copy. Absent when the spec has no
    /// `create` and in files written before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_create: Option<LatencyStats>,
}

/// All measurements of one operation on one file size at one layer depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// e.g. `first_write`, `open_trunc`, `truncate`, `chmod`, `rewrite`, `read_lower`, ...
    pub op: Op,
    pub size_bytes: u64,
    /// Layer the file lives in (1 = topmost lower); 0 for ops on new or upper files.
    pub layer_depth: u32,
    /// User-side latency of the syscall(s) of the op, monotonic clock.
    pub latency: LatencyStats,
    /// Kernel-side copy-up/whiteout time joined from `record`, when a backend attached.
    pub kernel: Option<LatencyStats>,
    /// Copy-ups the kernel reported for these ops (0 for controls).
    pub copy_ups: u64,
    pub bytes_copied: u64,
    /// `bytes_copied` / total copy-up time, MB/s (10^6 bytes), when bytes were copied.
    pub mb_per_s: Option<f64>,
    /// Median of the physical-limit reference (plain copy of the same bytes + fsync) on the
    /// same filesystem in the same run.
    pub reference_p50_ns: Option<u64>,
    /// `reference_p50_ns` / `latency.p50_ns`: 1.0 = copy-up as fast as a plain copy.
    pub efficiency: Option<f64>,
    /// Threads that ran the op at once (`parallel_write`, `race_write`); 1 for every other op
    /// (and in files written before this field). `latency` then holds one value per thread.
    #[serde(default = "one")]
    pub threads: u32,
    /// Measured repetitions (each on a fresh stack); 0 in files written before this field.
    #[serde(default)]
    pub repetitions: u64,
    /// Concurrent ops: wall time of each repetition, from the threads' release to the last
    /// thread's end.
    #[serde(default)]
    pub wall: Option<LatencyStats>,
    /// Ops with more than one legal result, counted per result: `rename_dir` gives
    /// `{"redirect": n}` (`redirect_dir` on) or `{"exdev": n}` (the kernel refused the move).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, u64>,
    /// Whiteouts the kernel side reported for these ops.
    #[serde(default)]
    pub whiteouts: u64,
    /// Copy-up phases of these ops (p50, p99 and sum per phase the backend shows; see
    /// docs/phases.md). Absent without kernel-side timings, and in files written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<crate::pipeline::phases::PhaseStats>,
    /// Time per copy-up of each phase in `phases`, with its histogram, for `compare`'s intervals
    /// on phase gates (`fsync.p50`). Empty without kernel-side phases, and in files written
    /// before it (compare then judges a phase by its recorded p50/p99 alone, without interval).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phase_latency: BTreeMap<String, LatencyStats>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
    /// Quartiles: the spread of the cell is `p75_ns - p25_ns` (the IQR). 0 in files written
    /// before these fields.
    #[serde(default)]
    pub p25_ns: u64,
    #[serde(default)]
    pub p75_ns: u64,
    /// hdrhistogram V2 serialization, base64 (standard alphabet, padded).
    pub histogram: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// What was skipped, e.g. `fs=xfs` or `option=metacopy=on`.
    pub what: String,
    pub reason: String,
}

/// Values one cell's histogram may hold: ten times the most repetitions a spec allows.
pub const MAX_RECORDED: u64 = 1_000_000;

/// A latency histogram: 1 ns .. 1 hour at 3 significant digits (as `record`'s summaries).
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"))
    }
}

impl Hist {
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn p50(&self) -> u64 {
        self.0.value_at_quantile(0.5)
    }

    pub fn stats(&self) -> LatencyStats {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .expect("serializing a histogram into memory");
        LatencyStats {
            count: self.0.len(),
            p50_ns: self.0.value_at_quantile(0.50),
            p25_ns: self.0.value_at_quantile(0.25),
            p75_ns: self.0.value_at_quantile(0.75),
            p90_ns: self.0.value_at_quantile(0.90),
            p99_ns: self.0.value_at_quantile(0.99),
            max_ns: self.0.max(),
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            mean_ns: self.0.mean().round() as u64,
            histogram: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// Why a cell's `latency.histogram` could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error(
        "histogram holds {recorded} values, over the {MAX_RECORDED} a bench can record; \
         results.json is damaged: re-run `cowprof bench`"
    )]
    TooMany { recorded: u64 },
    #[error(
        "histogram holds {recorded} values but the cell's count is {count}; results.json is \
         damaged or was edited: re-run `cowprof bench`"
    )]
    CountMismatch { recorded: u64, count: u64 },
    #[error(
        "histogram is not valid base64 ({source}); results.json is damaged: re-run `cowprof bench`"
    )]
    Base64 {
        #[source]
        source: base64::DecodeError,
    },
    #[error(
        "histogram is truncated (header declares {declared} payload bytes, {available} present); \
         results.json is damaged: re-run `cowprof bench`"
    )]
    Truncated { declared: usize, available: usize },
    #[error(
        "histogram is not an hdrhistogram V2 serialization ({source}); results.json is damaged or \
         was written by another tool: re-run `cowprof bench`"
    )]
    Format {
        #[source]
        source: DeserializeError,
    },
}

/// Decodes a `LatencyStats::histogram` (base64, standard alphabet, of an hdrhistogram V2 or V2
/// deflate serialization). Corrupt input is an error, never a panic or a huge allocation.
pub fn decode_histogram(b64: &str) -> Result<Histogram<u64>, HistogramError> {
    const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
    const V2_HEADER_BYTES: usize = 40;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|source| HistogramError::Base64 { source })?;
    // The deserializer allocates the declared payload length before reading it: check it first.
    if bytes.len() >= 8 {
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(0) == V2_COOKIE {
            let declared = word(4) as usize;
            let available = bytes.len().saturating_sub(V2_HEADER_BYTES);
            if declared > available {
                return Err(HistogramError::Truncated {
                    declared,
                    available,
                });
            }
        }
    }
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|source| HistogramError::Format { source })?;
    // Consumers expand every recorded value (compare's bootstrap is O(values) per resample):
    // a forged count of 10^12 must be refused, not allocated or looped over (found by fuzzing).
    if h.len() > MAX_RECORDED {
        return Err(HistogramError::TooMany { recorded: h.len() });
    }
    Ok(h)
}

/// SHA-256 (hex) of a text: a results file's `spec_hash`.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `ext4 (reflink) · metacopy=on · warm`: how a run is named in titles, legends and reports.
pub fn run_label(run: &RunResult) -> String {
    let mut s = run.fs.clone();
    if !run.fs_features.is_empty() {
        let _ = write!(s, " ({})", run.fs_features.join(", "));
    }
    s.push_str(" · ");
    if run.mount_options.is_empty() {
        s.push_str("default options");
    } else {
        s.push_str(&run.mount_options.join(","));
    }
    s.push_str(" · ");
    s.push_str(&run.cache);
    s
}

impl Environment {
    /// The machine a results file is measured on, now (also `bench --image`'s).
    pub fn capture(backend: Option<crate::event::Backend>, started: std::time::SystemTime) -> Self {
        let machine = crate::host::machine::Machine::read();
        Self {
            kernel: machine.kernel,
            cowprof_version: env!("CARGO_PKG_VERSION").to_owned(),
            cpus: machine.cpus,
            overlay_params: machine.overlay_params,
            backend,
            started_unix_s: started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}
