//! What a recorded workload would copy up on another image: every path of a `record --json`
//! trace resolved against a candidate image's own layer stack, in the trace's order.
//!
//! Rules (docs/images.md, "Forecast"):
//! - a write, chmod or chown of a path that exists in a lower layer copies it up: a regular file
//!   costs its size in the topmost layer that has it (`metacopy` events stay metadata-only), a
//!   symlink or device is a special copy-up, a directory a directory copy-up;
//! - a path absent from the image is a fresh create in the upper layer: listed as missing, never
//!   guessed;
//! - a delete of a path present in a lower layer leaves a whiteout; of an absent one, nothing;
//! - before any of these, every ancestor directory present in a lower layer and not yet copied up
//!   is copied up (once, in the trace's order).

use std::{
    collections::{BTreeMap, HashSet},
    io::BufRead as _,
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::{
    compare::percentile,
    inspect::{read_layer, Kind, LayerTree},
    io_err,
    model::CostModel,
    store::{ImageRecord, Store},
    ImageError,
};
use crate::fmt;

/// What the trace did to a path, from its event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A data write, truncate, chmod or chown (data, deferred data or special copy-up).
    Write,
    /// A metadata-only change under `metacopy=on`.
    Meta,
    /// A directory's own copy-up (mkdir inside, chmod of the directory).
    Dir,
    /// unlink or rmdir of a lower path.
    Delete,
    /// rmdir + mkdir of a lower directory (opaque directory).
    Opaque,
    /// A create where a whiteout was.
    Create,
}

/// One traced operation, in the trace's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOp {
    pub op: Op,
    /// Absolute in the image (`/etc/passwd`).
    pub path: String,
    pub syscall: Option<String>,
}

/// A read trace: its operations and the kernel it was recorded on.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub ops: Vec<TraceOp>,
    pub kernel: Option<String>,
    /// Event lines skipped: failed operations (errno != 0) or unknown kinds.
    pub skipped: u64,
    /// Measured latencies by event kind, as recorded.
    pub latencies: BTreeMap<String, Vec<u64>>,
}

/// The fields this reader needs; every field newer than the first schema-1 trace is optional.
#[derive(Deserialize)]
struct Line {
    schema: u32,
    #[serde(rename = "type")]
    ty: String,
    kind: Option<String>,
    path: Option<String>,
    #[serde(default)]
    errno: i64,
    syscall: Option<String>,
    kernel: Option<String>,
    latency_ns: Option<u64>,
}

fn trace_err(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Trace {
        trace: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a `record --json` trace (JSON lines, schema 1).
pub fn read_trace(path: &Path) -> Result<Trace, ImageError> {
    let f = std::fs::File::open(path).map_err(io_err("reading the trace", path))?;
    let mut t = Trace::default();
    let mut lines = 0u64;
    for (n, l) in std::io::BufReader::new(f).lines().enumerate() {
        let l = l.map_err(|e| {
            trace_err(
                path,
                format!(
                    "line {}: {e}; give the output of `cowprof record --json`",
                    n + 1
                ),
            )
        })?;
        if l.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&l).map_err(|e| {
            trace_err(
                path,
                format!("line {}: not a `cowprof record --json` line ({e})", n + 1),
            )
        })?;
        if line.schema != 1 {
            return Err(trace_err(
                path,
                format!(
                    "line {}: schema {} is not one this cowprof reads (1)",
                    n + 1,
                    line.schema
                ),
            ));
        }
        lines += 1;
        match line.ty.as_str() {
            "start" => t.kernel = line.kernel,
            "event" => {
                let op = match line.kind.as_deref() {
                    Some("data_copy_up" | "deferred_data_copy_up" | "special_copy_up") => {
                        Some(Op::Write)
                    }
                    Some("metacopy") => Some(Op::Meta),
                    Some("dir_copy_up") => Some(Op::Dir),
                    Some("whiteout") => Some(Op::Delete),
                    Some("opaque_dir") => Some(Op::Opaque),
                    Some("create_over_whiteout") => Some(Op::Create),
                    _ => None,
                };
                if let (Some(k), Some(ns), 0) = (&line.kind, line.latency_ns, line.errno) {
                    t.latencies.entry(k.clone()).or_default().push(ns);
                }
                match (op, line.path) {
                    (Some(op), Some(p)) if line.errno == 0 => t.ops.push(TraceOp {
                        op,
                        path: absolute(&p),
                        syscall: line.syscall,
                    }),
                    _ => t.skipped += 1,
                }
            }
            _ => {}
        }
    }
    if lines == 0 {
        return Err(trace_err(
            path,
            "is empty; give the output of `cowprof record --json`",
        ));
    }
    if t.ops.is_empty() {
        return Err(trace_err(
            path,
            "has no copy-up or whiteout events: nothing to forecast (record the workload itself with `cowprof record --json -- COMMAND`)",
        ));
    }
    Ok(t)
}

/// `etc/passwd`, `./etc/passwd`, `/etc/passwd` → `/etc/passwd`.
fn absolute(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// What a path is in a layer stack: the entry and its layer (1 = topmost lower).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub layer: usize,
}

/// An image's layers, read once, for lookups.
pub struct Stack {
    /// Topmost first.
    trees: Vec<LayerTree>,
    diff_ids: Vec<String>,
}

impl Stack {
    pub fn read(store: &Store, rec: &ImageRecord) -> Result<Self, ImageError> {
        let mut trees = Vec::new();
        let mut diff_ids = Vec::new();
        for l in rec.layers.iter().rev() {
            trees.push(read_layer(&store.layer_dir(&l.diff_id))?);
            diff_ids.push(l.diff_id.clone());
        }
        Ok(Self { trees, diff_ids })
    }

    #[must_use]
    pub fn from_trees(bottom_first: Vec<LayerTree>) -> Self {
        let n = bottom_first.len();
        let mut trees = bottom_first;
        trees.reverse();
        Self {
            trees,
            diff_ids: (1..=n).map(|i| format!("layer {i}")).collect(),
        }
    }

    /// Resolves `path` as overlay would: from the top, a whiteout or a non-directory ancestor
    /// hides everything below; an opaque ancestor hides the layers under its own.
    #[must_use]
    pub fn lookup(&self, path: &str) -> Option<Found> {
        if path == "/" {
            return Some(Found {
                kind: Kind::Dir { opaque: false },
                layer: 1,
            });
        }
        let ancestors: Vec<&str> = path
            .match_indices('/')
            .skip(1)
            .map(|(i, _)| &path[..i])
            .collect();
        for (i, t) in self.trees.iter().enumerate() {
            let mut stop_after = false;
            for a in &ancestors {
                match t.get(*a) {
                    Some(Kind::Dir { opaque }) => stop_after |= *opaque,
                    Some(_) => return None,
                    None => {}
                }
            }
            match t.get(path) {
                Some(Kind::Whiteout) => return None,
                Some(k) => {
                    return Some(Found {
                        kind: *k,
                        layer: i + 1,
                    })
                }
                None if stop_after => return None,
                None => {}
            }
        }
        None
    }
}

/// What one traced operation does on the candidate image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    DataCopyUp,
    Metacopy,
    SpecialCopyUp,
    DirCopyUp,
    Whiteout,
    OpaqueDir,
    /// The path is absent in the image: a create in the upper layer, no copy-up.
    FreshCreate,
    /// A delete of a path absent in the image: nothing to whiteout.
    DeleteMissing,
    /// Already in the upper layer (copied up or created earlier in the trace).
    AlreadyUpper,
}

impl Outcome {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::DataCopyUp => "data_copy_up",
            Self::Metacopy => "metacopy",
            Self::SpecialCopyUp => "special_copy_up",
            Self::DirCopyUp => "dir_copy_up",
            Self::Whiteout => "whiteout",
            Self::OpaqueDir => "opaque_dir",
            Self::FreshCreate => "fresh_create",
            Self::DeleteMissing => "delete_missing",
            Self::AlreadyUpper => "already_upper",
        }
    }

    /// Copy-ups and whiteouts: what the probes would record.
    #[must_use]
    pub fn is_cow(self) -> bool {
        !matches!(
            self,
            Self::FreshCreate | Self::DeleteMissing | Self::AlreadyUpper
        )
    }
}

/// One predicted step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub path: String,
    pub outcome: Outcome,
    /// Bytes copied (data copy-ups: the file's size in `layer`).
    pub bytes: u64,
    /// 1 = the topmost lower layer; `None` for paths absent in the image.
    pub layer: Option<usize>,
    pub layer_digest: Option<String>,
    pub predicted_ns: u64,
}

/// Per-kind totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindTotal {
    pub count: u64,
    pub bytes: u64,
    pub predicted_ns: u64,
}

/// The forecast for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub image: String,
    pub tags_mutable: Vec<String>,
    pub by_kind: BTreeMap<String, KindTotal>,
    pub copy_ups: u64,
    pub whiteouts: u64,
    pub bytes: u64,
    pub predicted_total_ns: u64,
    pub predicted_p50_ns: u64,
    pub predicted_p99_ns: u64,
    /// The ten costliest copy-ups, costliest first.
    pub costliest: Vec<Step>,
    /// Traced paths absent in this image (created fresh or deleted in vain), in trace order.
    pub missing: Vec<String>,
    pub steps: Vec<Step>,
}

/// Forecasts `trace` on a stack.
#[must_use]
pub fn forecast(trace: &Trace, stack: &Stack, model: &CostModel) -> Vec<Step> {
    let mut upper: HashSet<String> = HashSet::new();
    let mut gone: HashSet<String> = HashSet::new();
    let mut steps = Vec::new();
    let step = |path: &str, outcome: Outcome, f: Option<Found>| {
        let bytes = match (outcome, f.map(|f| f.kind)) {
            (Outcome::DataCopyUp, Some(Kind::File { size })) => size,
            _ => 0,
        };
        Step {
            path: path.to_owned(),
            outcome,
            bytes,
            layer: f.map(|f| f.layer),
            layer_digest: f.and_then(|f| stack.diff_ids.get(f.layer - 1).cloned()),
            predicted_ns: model.predict(outcome, bytes),
        }
    };
    for t in &trace.ops {
        let p = t.path.as_str();
        // Ancestors first, top down.
        for (i, _) in p.match_indices('/').skip(1) {
            let a = &p[..i];
            if upper.contains(a) || gone.contains(a) {
                continue;
            }
            if let Some(
                f @ Found {
                    kind: Kind::Dir { .. },
                    ..
                },
            ) = stack.lookup(a)
            {
                upper.insert(a.to_owned());
                steps.push(step(a, Outcome::DirCopyUp, Some(f)));
            }
        }
        let hidden = gone.contains(p)
            || p.match_indices('/')
                .skip(1)
                .any(|(i, _)| gone.contains(&p[..i]));
        let found = if hidden { None } else { stack.lookup(p) };
        let in_upper = upper.contains(p);
        let outcome = match (t.op, found) {
            (Op::Delete, Some(_)) => {
                gone.insert(p.to_owned());
                upper.remove(p);
                Outcome::Whiteout
            }
            (
                Op::Opaque,
                Some(Found {
                    kind: Kind::Dir { .. },
                    ..
                }),
            ) => {
                gone.insert(p.to_owned());
                upper.insert(p.to_owned());
                Outcome::OpaqueDir
            }
            (Op::Delete, None) if in_upper => {
                upper.remove(p);
                Outcome::AlreadyUpper
            }
            (Op::Delete, None) => Outcome::DeleteMissing,
            _ if in_upper => Outcome::AlreadyUpper,
            (Op::Opaque | Op::Create, _) | (_, None) => {
                upper.insert(p.to_owned());
                Outcome::FreshCreate
            }
            (Op::Write | Op::Meta | Op::Dir, Some(f)) => {
                upper.insert(p.to_owned());
                match f.kind {
                    Kind::Dir { .. } => Outcome::DirCopyUp,
                    Kind::File { .. } if t.op == Op::Meta => Outcome::Metacopy,
                    Kind::File { .. } => Outcome::DataCopyUp,
                    _ => Outcome::SpecialCopyUp,
                }
            }
        };
        let found = if outcome.is_cow() { found } else { None };
        steps.push(step(p, outcome, found));
    }
    steps
}

/// Totals, percentiles, the costliest files and the missing ones.
#[must_use]
pub fn summarize(rec: &ImageRecord, steps: Vec<Step>) -> Forecast {
    let mut by_kind: BTreeMap<String, KindTotal> = BTreeMap::new();
    let mut times = Vec::new();
    let mut missing = Vec::new();
    for s in &steps {
        let k = by_kind.entry(s.outcome.name().to_owned()).or_default();
        k.count += 1;
        k.bytes += s.bytes;
        k.predicted_ns += s.predicted_ns;
        if s.outcome.is_cow() {
            times.push(s.predicted_ns);
        }
        if matches!(s.outcome, Outcome::FreshCreate | Outcome::DeleteMissing)
            && !missing.contains(&s.path)
        {
            missing.push(s.path.clone());
        }
    }
    times.sort_unstable();
    let mut costliest: Vec<Step> = steps
        .iter()
        .filter(|s| s.outcome.is_cow() && s.outcome != Outcome::Whiteout)
        .cloned()
        .collect();
    costliest.sort_by(|a, b| {
        b.predicted_ns
            .cmp(&a.predicted_ns)
            .then(b.bytes.cmp(&a.bytes))
    });
    costliest.truncate(10);
    let cow = |o: Outcome| by_kind.get(o.name()).map_or(0, |k| k.count);
    Forecast {
        image: rec.id.clone(),
        tags_mutable: rec.tags.clone(),
        copy_ups: [
            Outcome::DataCopyUp,
            Outcome::Metacopy,
            Outcome::SpecialCopyUp,
            Outcome::DirCopyUp,
        ]
        .into_iter()
        .map(cow)
        .sum(),
        whiteouts: cow(Outcome::Whiteout) + cow(Outcome::OpaqueDir),
        bytes: steps.iter().map(|s| s.bytes).sum(),
        predicted_total_ns: times.iter().sum(),
        predicted_p50_ns: percentile(&times, 0.5),
        predicted_p99_ns: percentile(&times, 0.99),
        by_kind,
        costliest,
        missing,
        steps,
    }
}

fn label(f: &Forecast) -> String {
    super::image_label(&f.tags_mutable, &f.image)
}

/// The side-by-side table.
pub fn render(
    fs: &[Forecast],
    model_source: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<32} {:>6} {:>6} {:>6} {:>6} {:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "IMAGE",
        "DATA",
        "META",
        "DIR",
        "SPEC",
        "WHITEOUT",
        "OPAQ",
        "BYTES",
        "TOTAL",
        "P50",
        "P99",
        "MISSING"
    )?;
    for f in fs {
        let c = |o: Outcome| f.by_kind.get(o.name()).map_or(0, |k| k.count);
        writeln!(
            out,
            "{:<32} {:>6} {:>6} {:>6} {:>6} {:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>7}",
            label(f),
            c(Outcome::DataCopyUp),
            c(Outcome::Metacopy),
            c(Outcome::DirCopyUp),
            c(Outcome::SpecialCopyUp),
            c(Outcome::Whiteout),
            c(Outcome::OpaqueDir),
            fmt::bytes(f.bytes),
            fmt::ns(f.predicted_total_ns),
            fmt::ns(f.predicted_p50_ns),
            fmt::ns(f.predicted_p99_ns),
            f.missing.len()
        )?;
    }
    for f in fs {
        writeln!(out, "\n{}: costliest copy-ups", label(f))?;
        for s in &f.costliest {
            writeln!(
                out,
                "  {:>10} {:>10}  {:<15} layer {:<3} {}",
                fmt::ns(s.predicted_ns),
                fmt::bytes(s.bytes),
                s.outcome.name(),
                s.layer.map_or_else(|| "-".to_owned(), |l| l.to_string()),
                s.path
            )?;
        }
        if !f.missing.is_empty() {
            writeln!(
                out,
                "  missing in this image ({}): {}",
                f.missing.len(),
                f.missing.join(" ")
            )?;
        }
    }
    writeln!(out, "\ncost model: {model_source}")
}

/// A bar chart of predicted p50 and p99 per image: `path` (SVG) and the same name `.png`.
pub fn chart(fs: &[Forecast], path: &Path) -> Result<(), ImageError> {
    let bars: Vec<super::compare::Bar> = fs
        .iter()
        .map(|f| (label(f), f.predicted_p50_ns, f.predicted_p99_ns))
        .collect();
    super::compare::write_bars(&bars, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, Kind)]) -> LayerTree {
        entries.iter().map(|(p, k)| ((*p).to_owned(), *k)).collect()
    }

    const D: Kind = Kind::Dir { opaque: false };

    fn model() -> CostModel {
        CostModel {
            data: crate::image::inspect::Curve {
                source: "test".into(),
                points: vec![(1, 1000), (1 << 20, 2000)],
            },
            fixed_ns: BTreeMap::new(),
            source: "test".into(),
        }
    }

    fn op(op: Op, p: &str) -> TraceOp {
        TraceOp {
            op,
            path: p.into(),
            syscall: None,
        }
    }

    #[test]
    fn lookup_follows_whiteouts_and_opaque_dirs() {
        let s = Stack::from_trees(vec![
            tree(&[
                ("/a", D),
                ("/a/x", Kind::File { size: 5 }),
                ("/b", D),
                ("/b/y", Kind::File { size: 7 }),
            ]),
            tree(&[
                ("/a", Kind::Dir { opaque: true }),
                ("/b", D),
                ("/b/y", Kind::Whiteout),
                ("/c", Kind::File { size: 9 }),
            ]),
        ]);
        assert_eq!(s.lookup("/a/x"), None);
        assert_eq!(s.lookup("/b/y"), None);
        assert_eq!(
            s.lookup("/c"),
            Some(Found {
                kind: Kind::File { size: 9 },
                layer: 1
            })
        );
        assert_eq!(s.lookup("/c/z"), None);
    }

    #[test]
    fn ancestors_copy_up_once_and_missing_files_are_listed() {
        let s = Stack::from_trees(vec![tree(&[
            ("/etc", D),
            ("/etc/a", Kind::File { size: 100 }),
            ("/etc/b", Kind::File { size: 200 }),
        ])]);
        let t = Trace {
            ops: vec![
                op(Op::Write, "/etc/a"),
                op(Op::Write, "/etc/b"),
                op(Op::Write, "/etc/a"),
                op(Op::Delete, "/etc/b"),
                op(Op::Write, "/opt/new"),
                op(Op::Delete, "/etc/gone"),
            ],
            ..Trace::default()
        };
        let steps = forecast(&t, &s, &model());
        let got: Vec<(&str, Outcome, u64)> = steps
            .iter()
            .map(|s| (s.path.as_str(), s.outcome, s.bytes))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/etc", Outcome::DirCopyUp, 0),
                ("/etc/a", Outcome::DataCopyUp, 100),
                ("/etc/b", Outcome::DataCopyUp, 200),
                ("/etc/a", Outcome::AlreadyUpper, 0),
                ("/etc/b", Outcome::Whiteout, 0),
                ("/opt/new", Outcome::FreshCreate, 0),
                ("/etc/gone", Outcome::DeleteMissing, 0),
            ]
        );
    }

    #[test]
    fn old_traces_read_and_junk_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"schema\":1,\"type\":\"start\"}\n{\"schema\":1,\"type\":\"event\",\"kind\":\"data_copy_up\",\"path\":\"etc/x\"}\n",
        )
        .unwrap();
        let t = read_trace(&p).unwrap();
        assert_eq!(t.ops, vec![op(Op::Write, "/etc/x")]);
        std::fs::write(&p, "hello\n").unwrap();
        assert!(matches!(read_trace(&p), Err(ImageError::Trace { .. })));
        std::fs::write(&p, "{\"schema\":1,\"type\":\"summary\"}\n").unwrap();
        assert!(matches!(read_trace(&p), Err(ImageError::Trace { .. })));
    }
}
