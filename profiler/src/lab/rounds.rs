//! The lab's interleaved rounds: one repetition of a cell on a fresh stack, a reference copy, a
//! plain create, all in one shuffled schedule so drift over a run lands on every cell alike.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write},
    path::Path,
    time::Instant,
};

use indicatif::ProgressBar;

use crate::host::{cancel::Cancel, mounts::drop_caches};

use super::{
    measure::{events_for, CellAcc, KernelTap, Worker},
    results::Hist,
    results::RunResult,
    run::{cells_of, metacopy_on, options_label},
    spec::{Cache, FsKind, Op, Shape, Spec},
    stack::{io_err, Backing, LabError, LabStack, Layers},
    workload::{
        check_details, expected_upper, file_rel, op_rel, prepare, second_rel, thread_rels,
        upper_entries, Request,
    },
};

/// Set to `1`: mount the lab's filesystems and stacks in the caller's mount namespace instead of
/// a private one.
/// Everything one repetition needs that lives for the whole run.
pub(super) struct Ctx<'a> {
    pub(super) spec: &'a Spec,
    pub(super) cancel: &'a Cancel,
    pub(super) worker: Worker,
    pub(super) tap: Option<KernelTap>,
    pub(super) pb: ProgressBar,
    /// Stacks mounted so far (names `S/<n>`).
    pub(super) stacks: u64,
    pub(super) upper_checked: u64,
    pub(super) upper_mismatches: u64,
    /// `COWPROF_LAB_TRACE=FILE`: one JSON line per repetition (when, what, how long), to see
    /// drift within a run.
    pub(super) trace: Option<std::io::BufWriter<fs::File>>,
    pub(super) started: Instant,
}

impl Ctx<'_> {
    pub(super) fn warn(&self, msg: &str) {
        self.pb.suspend(|| eprintln!("cowprof: {msg}"));
    }

    /// One line of the repetition trace, if asked for.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn trace(
        &mut self,
        round: u32,
        fs_kind: FsKind,
        set: &[String],
        cache: Cache,
        what: (&str, u64, u32, u32),
        ns: u64,
        settle_ns: u64,
    ) {
        let t_ms = self.started.elapsed().as_secs_f64() * 1e3;
        if let Some(w) = self.trace.as_mut() {
            let line = serde_json::json!({
                "t_ms": (t_ms * 1e3).round() / 1e3, "round": round, "fs": fs_kind.as_str(),
                "options": options_label(set), "cache": cache.as_str(), "op": what.0,
                "size_bytes": what.1, "layer_depth": what.2, "threads": what.3, "ns": ns,
                "settle_ns": settle_ns,
            });
            let _ = writeln!(w, "{line}");
        }
    }
}

/// Environment variable naming the repetition trace file (JSON lines).
pub const TRACE_ENV: &str = "COWPROF_LAB_TRACE";

/// Seed of the order in which each round visits the cells (fixed: two runs of one spec measure
/// in the same order).
pub(super) const ROUND_ORDER_SEED: u64 = 0x636f_7770_726f_6621;

/// Environment variable: `0` turns [`settle`] off.
pub const SETTLE_ENV: &str = "COWPROF_LAB_SETTLE";

pub(super) fn settle_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os(SETTLE_ENV).is_none_or(|v| v != "0"))
}

/// Writes back the backing filesystem's dirty data and commits its journal (`syncfs`), outside
/// the timed window: a repetition must not pay for its predecessor's writeback (the upper dir
/// just removed, a 64 MiB copy-up's blocks freed) nor find a half-full journal. A no-op on
/// tmpfs, and with `COWPROF_LAB_SETTLE=0` (to measure what it buys). Returns how long it
/// took, in ns.
pub(super) fn settle(backing: &Backing) -> u64 {
    if backing.kind == FsKind::Tmpfs || !settle_enabled() {
        return 0;
    }
    let t = Instant::now();
    if let Ok(f) = fs::File::open(&backing.dir) {
        // SAFETY: a valid fd; syncfs has no other preconditions.
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    }
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One measured repetition of `op` on the file of `size` bytes in layer `depth`.
#[allow(clippy::too_many_arguments)]
pub(super) fn repetition(
    ctx: &mut Ctx<'_>,
    backing: &Backing,
    layers: &Layers,
    set: &[String],
    cache: Cache,
    acc: &mut CellAcc,
) -> Result<u64, LabError> {
    let (op, size, depth) = (acc.op, acc.size, acc.depth);
    let rel = op_rel(op, size, depth);
    let rels = if op.shape() == Shape::Concurrent {
        thread_rels(op, size, depth, acc.threads)
    } else {
        vec![rel.clone()]
    };
    let stack = LabStack::mount(&backing.dir, layers, set, ctx.stacks)?;
    ctx.stacks += 1;
    if let Some(tap) = ctx.tap.as_mut() {
        tap.register(&stack, layers)?;
        tap.drain();
    }
    let target = stack.merged.join(&rel);
    prepare(op, &stack.merged, &rel).map_err(io_err(format!("preparing {op} on"), &target))?;
    if cache == Cache::Cold {
        drop_caches().map_err(io_err(
            "dropping caches through",
            Path::new("/proc/sys/vm/drop_caches"),
        ))?;
    }
    let (outcome, ns) = if op.shape() == Shape::Concurrent {
        let reply = ctx.worker.call_full(&Request::Parallel {
            paths: rels.iter().map(|r| stack.merged.join(r)).collect(),
        })?;
        for ns in &reply.per_thread_ns {
            acc.user.record(*ns);
        }
        let wall = reply.ns.unwrap_or_default();
        acc.wall.record(wall);
        (None, wall)
    } else {
        let reply = ctx.worker.call_full(&Request::Op {
            op,
            path: target,
            size,
        })?;
        let ns = reply.ns.unwrap_or_default();
        acc.user.record(ns);
        (reply.outcome, ns)
    };
    acc.repetitions += 1;
    if let Some(o) = &outcome {
        *acc.outcomes.entry(o.clone()).or_default() += 1;
    }
    if let Some(tap) = ctx.tap.as_mut() {
        let events = tap.drain();
        for e in &events {
            log::debug!(
                "{op} {rel}: event {:?} {} on {:?} ({} ns, {} bytes)",
                e.kind,
                e.path,
                e.mount_point,
                e.latency_ns,
                e.bytes_copied
            );
        }
        let mut paths = rels.clone();
        paths.extend(second_rel(op, &rel));
        let mine: Vec<_> = events_for(&events, &stack.merged, &paths)
            .into_iter()
            .cloned()
            .collect();
        acc.add_events(&mine);
    }
    // Ground truth: the upper directory holds exactly what this op must leave there.
    let userxattr = set.iter().any(|o| o == "userxattr");
    let got = upper_entries(&stack.upper, userxattr).map_err(io_err("reading", &stack.upper))?;
    let metacopy = metacopy_on(set);
    let want = expected_upper(op, &rels, metacopy, outcome.as_deref());
    let details = check_details(
        op,
        &rels,
        size,
        metacopy,
        outcome.as_deref(),
        &stack.upper,
        &stack.merged,
        userxattr,
    );
    ctx.upper_checked += 1;
    if got != want || !details.is_empty() {
        ctx.upper_mismatches += 1;
        if ctx.upper_mismatches <= 5 {
            ctx.warn(&format!(
                "upper check: {op} on {rel} ({}, {}) left {got:?} in the upper dir, expected {want:?}; {details:?}",
                backing.kind,
                options_label(set)
            ));
        }
    }
    drop(stack);
    Ok(ns)
}

/// One repetition of the physical-limit reference on `backing`: a plain copy + fsync of the
/// lower file of `size` bytes (outside overlay) into `R/`. Returns its duration in ns.
pub(super) fn reference_repetition(
    ctx: &mut Ctx<'_>,
    backing: &Backing,
    layers: &Layers,
    cache: Cache,
    size: u64,
    round: u32,
) -> Result<u64, LabError> {
    let dir = backing.dir.join("R");
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let depth = ctx.spec.file_layers[0];
    let dst = dir.join(format!("ref-{size}-{round}"));
    if cache == Cache::Cold {
        drop_caches().map_err(io_err(
            "dropping caches through",
            Path::new("/proc/sys/vm/drop_caches"),
        ))?;
    }
    let r = ctx.worker.call(&Request::Reference {
        src: layers.lower_file(depth, &file_rel(size, depth)),
        dst: dst.clone(),
    });
    let _ = fs::remove_file(&dst);
    r
}

/// One `create` (open `O_CREAT|O_EXCL` + close, as the `create` op) of a new file in `R/` on
/// the plain backing filesystem, removed afterwards. Returns its duration in ns.
pub(super) fn plain_create(
    ctx: &mut Ctx<'_>,
    backing: &Backing,
    cache: Cache,
    round: u32,
) -> Result<u64, LabError> {
    let dir = backing.dir.join("R");
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let path = dir.join(format!("plain-create-{round}"));
    if cache == Cache::Cold {
        drop_caches().map_err(io_err(
            "dropping caches through",
            Path::new("/proc/sys/vm/drop_caches"),
        ))?;
    }
    let r = ctx.worker.call(&Request::Op {
        op: Op::Create,
        path: path.clone(),
        size: 0,
    });
    let _ = fs::remove_file(&path);
    r
}

/// What a round measures once: a cell of one option set, or the plain-copy reference of one
/// size (shared by the option sets of a filesystem and cache state, as before).
pub(super) enum Item {
    Cell {
        set: usize,
        acc: Box<CellAcc>,
    },
    Reference {
        size: u64,
        hist: Hist,
    },
    /// `create` on the plain backing filesystem (no overlay): the same-run reference of the
    /// metadata ops, which have no size to copy.
    PlainCreate {
        hist: Hist,
    },
}

/// Measures every cell of `sets` and every reference size on one backing filesystem and cache
/// state, interleaved: each of the spec's `repetitions` rounds runs one repetition of every
/// item, in an order shuffled per round with a fixed seed. A slow phase of the disk (a
/// throttled virtual disk, another process's writeback) then lands on all cells and on the
/// references alike instead of on whichever cell ran during it, and no cell always follows the
/// same predecessor. Returns one run per set, cells in the spec's order.
#[expect(
    clippy::too_many_lines,
    reason = "the interleaved round loop: cells, references and plain creates share one shuffled schedule"
)]
pub(super) fn measure_interleaved(
    ctx: &mut Ctx<'_>,
    backing: &Backing,
    layers: &Layers,
    sets: &[&Vec<String>],
    cache: Cache,
) -> Result<Vec<RunResult>, LabError> {
    let spec = ctx.spec;
    let mut items: Vec<Item> = spec
        .sizes
        .iter()
        .map(|&size| Item::Reference {
            size,
            hist: Hist::default(),
        })
        .collect();
    if spec.ops.contains(&Op::Create) {
        items.push(Item::PlainCreate {
            hist: Hist::default(),
        });
    }
    for (set, _) in sets.iter().enumerate() {
        for &op in &spec.ops {
            for (size, depth, threads) in cells_of(op, spec) {
                items.push(Item::Cell {
                    set,
                    acc: Box::new(CellAcc::new(op, size, depth, threads)),
                });
            }
        }
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    let mut rng = fastrand::Rng::with_seed(ROUND_ORDER_SEED);
    for round in 0..spec.repetitions {
        ctx.pb.set_message(format!(
            "{} {} round {}/{}",
            backing.kind,
            cache.as_str(),
            round + 1,
            spec.repetitions
        ));
        rng.shuffle(&mut order);
        for &i in &order {
            ctx.cancel.check()?;
            let (set, what, ns) = match &mut items[i] {
                Item::Reference { size, hist } => {
                    let ns = reference_repetition(ctx, backing, layers, cache, *size, round)?;
                    hist.record(ns);
                    (None, ("reference", *size, 0, 1), ns)
                }
                Item::PlainCreate { hist } => {
                    let ns = plain_create(ctx, backing, cache, round)?;
                    hist.record(ns);
                    (None, ("plain_create", 0, 0, 1), ns)
                }
                Item::Cell { set, acc } => {
                    let ns = repetition(ctx, backing, layers, sets[*set], cache, acc)?;
                    (
                        Some(*set),
                        (acc.op.as_str(), acc.size, acc.depth, acc.threads),
                        ns,
                    )
                }
            };
            let settle_ns = settle(backing);
            let set: &[String] = set.map_or(&[], |s| sets[s].as_slice());
            ctx.trace(round, backing.kind, set, cache, what, ns, settle_ns);
            ctx.pb.inc(1);
        }
    }
    let references: BTreeMap<u64, u64> = items
        .iter()
        .filter_map(|it| match it {
            Item::Reference { size, hist } => Some((*size, hist.p50())),
            Item::Cell { .. } | Item::PlainCreate { .. } => None,
        })
        .collect();
    let plain_create = items.iter().find_map(|it| match it {
        Item::PlainCreate { hist } if !hist.is_empty() => Some(hist.stats()),
        _ => None,
    });
    let mut runs: Vec<RunResult> = sets
        .iter()
        .map(|set| RunResult {
            fs: backing.kind.as_str().to_owned(),
            fs_features: backing.features.clone(),
            mount_options: (*set).clone(),
            cache: cache.as_str().to_owned(),
            layers: spec.layers,
            cells: Vec::new(),
            plain_create: plain_create.clone(),
        })
        .collect();
    for it in &items {
        let Item::Cell { set, acc } = it else {
            continue;
        };
        let metacopy = metacopy_on(sets[*set]);
        // Efficiency compares data copies with the plain copy of the same bytes.
        let data_copy = match acc.op {
            Op::FirstWrite | Op::Truncate | Op::OpenTrunc => true,
            Op::Chmod => !metacopy,
            _ => false,
        } && (ctx.tap.is_none() || acc.bytes_copied > 0 || acc.size == 0);
        let reference = acc
            .op
            .per_file()
            .then(|| references.get(&acc.size).copied())
            .flatten();
        runs[*set].cells.push(acc.finish(reference, data_copy));
    }
    Ok(runs)
}

/// Reads every lower file once, so `warm` means warm even after a `cold` run dropped caches.
pub(super) fn prewarm(layers: &Layers, spec: &Spec) {
    let mut buf = vec![0u8; 1 << 20];
    for &d in &spec.file_layers {
        for &s in &spec.sizes {
            if let Ok(mut f) = fs::File::open(layers.lower_file(d, &file_rel(s, d))) {
                while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
    }
}

/// Items measured once per round besides the cells: a reference copy per size, and the plain
/// `create` when the spec has `create`.
pub(super) fn reference_items(spec: &Spec) -> u64 {
    spec.sizes.len() as u64 + u64::from(spec.ops.contains(&Op::Create))
}

/// Steps the progress bar counts: every repetition, every reference copy and plain `create`.
pub(super) fn total_steps(spec: &Spec) -> u64 {
    let reps = u64::from(spec.repetitions);
    let cells: u64 = spec
        .ops
        .iter()
        .map(|&op| cells_of(op, spec).len() as u64)
        .sum();
    let per_cache = reference_items(spec) * reps + spec.mount_options.len() as u64 * cells * reps;
    spec.filesystems.len() as u64 * spec.cache.len() as u64 * per_cache
}
