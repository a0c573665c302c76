//! `cowprof image …`: the arguments and what each subcommand prints.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use clap::{Args, Subcommand};

use cowprof::{
    host::cancel::Cancel,
    image::{
        compare, forecast, inspect, io_err, model, one_line,
        progress::{self, ImportBar},
        store::{ImageRecord, Store, DEFAULT_STORE},
        unpack::Limits,
        verify, ImageError,
    },
};

use super::Exit;

#[derive(Args)]
pub struct ImageArgs {
    /// Layer store: layers unpacked by diffID, shared between images.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE, global = true)]
    pub store: PathBuf,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import a `docker save` archive or an OCI image layout (directory or tar) into the store.
    Import {
        /// The archive or layout directory.
        archive: PathBuf,
        /// Largest uncompressed layer accepted (bytes; K/M/G suffixes).
        #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16G")]
        max_layer_size: u64,
        /// Most entries accepted in one layer.
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        max_entries: u64,
        #[arg(long)]
        json: bool,
    },
    /// Per-layer adds/modifies/deletes, wasted bytes, efficiency and likely copy-ups.
    Inspect {
        /// An imported image (digest, 12+ hex prefix, or tag) or an archive to import first.
        image: String,
        /// Predict copy-up cost from this `cowprof bench` results.json (else this host's
        /// calibration, measured once and cached in the store).
        #[arg(long, value_name = "FILE")]
        lab: Option<PathBuf>,
        /// The filesystem the calibration measures: dir (the store's own), tmpfs, ext4, xfs, btrfs.
        #[arg(long, value_name = "FS", default_value = "dir")]
        upper_fs: String,
        /// Measure the cost model again even when the cached one still fits this environment.
        #[arg(long)]
        recalibrate: bool,
        #[arg(long)]
        json: bool,
    },
    /// Compare images side by side, with the same writes timed on each one's layer stack.
    Compare {
        /// Images (digest, tag or archive), two or more.
        #[arg(required = true, num_args = 1..)]
        images: Vec<String>,
        /// Repetitions of the largest-file rewrite (each on a fresh mount).
        #[arg(long, default_value_t = 5)]
        reps: u32,
        /// Skip the mounted workloads (static comparison only).
        #[arg(long)]
        no_run: bool,
        /// Write compare.json and compare.svg here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Forecast a recorded workload's copy-ups on candidate images (docs/images.md, "Forecast").
    Forecast {
        /// What `cowprof record --json` wrote for a run of the workload.
        trace: PathBuf,
        /// Candidate images (digest, tag or archive), one or more.
        #[arg(required = true, num_args = 1..)]
        images: Vec<String>,
        /// Predict copy-up cost from this `cowprof bench` results.json (else this host's
        /// calibration, measured once and cached in the store).
        #[arg(long, value_name = "FILE")]
        lab: Option<PathBuf>,
        /// The filesystem the calibration measures: dir (the store's own), tmpfs, ext4, xfs, btrfs.
        #[arg(long, value_name = "FS", default_value = "dir")]
        upper_fs: String,
        /// Measure the cost model again even when the cached one still fits this environment.
        #[arg(long)]
        recalibrate: bool,
        /// Replay the trace on each image's mounted layers and measure it (needs root).
        #[arg(long)]
        verify: bool,
        /// Replays per image with --verify (fresh upper each); the median time is compared.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Write forecast.json and forecast.svg (.png) here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List imported images.
    Ls,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size; write e.g. 512M or 16G"))
}

/// An image reference: a path to an archive/layout is imported first; else looked up.
fn resolve(store: &Store, reference: &str, cancel: &Cancel) -> Result<ImageRecord, ImageError> {
    let p = std::path::Path::new(reference);
    if p.exists() {
        let bar = ImportBar::new();
        let r = store.import(p, Limits::default(), Some(cancel), |s| bar.step(s))?;
        bar.finish();
        return r
            .images
            .into_iter()
            .next()
            .ok_or_else(|| ImageError::Archive {
                archive: reference.to_owned(),
                reason: "holds no image".into(),
            });
    }
    store.find(reference)
}

/// The cost model: a given lab results.json, else this host's cached or new calibration.
fn cost_model(
    store: &Store,
    lab: Option<&std::path::Path>,
    upper_fs: &str,
    recalibrate: bool,
    err: &mut impl Write,
) -> Result<model::CostModel, ImageError> {
    if !["dir", "tmpfs", "ext4", "xfs", "btrfs"].contains(&upper_fs) {
        return Err(ImageError::Archive {
            archive: "--upper-fs".into(),
            reason: format!("{upper_fs:?} is not one of dir, tmpfs, ext4, xfs, btrfs"),
        });
    }
    match lab {
        Some(p) => model::CostModel::from_file(p),
        None => model::calibrated(
            store,
            upper_fs,
            recalibrate,
            |m| {
                let _ = writeln!(err, "cowprof image: {m}");
            },
            |run| {
                cowprof::lab::run::bench(&cowprof::lab::run::BenchOptions {
                    spec: Some(run.spec.clone()),
                    out: run.out.clone(),
                    workdir: run.workdir.clone(),
                    quick: false,
                    expect_kernel: false,
                    no_charts: true,
                    table: cowprof::lab::summary::TableMode::default(),
                })
                .map(|report| report.results)
                .map_err(calibration_error)
            },
        ),
    }
}

/// A calibration's lab error as an image error, with the lab's exit code (cli/exit.rs).
pub fn calibration_error(e: cowprof::lab::stack::LabError) -> ImageError {
    use cowprof::lab::stack::LabError;
    match e {
        LabError::Interrupted => ImageError::Interrupted,
        LabError::NotRoot => ImageError::NotRoot {
            what: "calibrating the cost model (a short cowprof bench run)",
        },
        e => ImageError::Calibration(Box::new(e)),
    }
}

/// Writes `doc` as `DIR/<stem>.json` (DIR made if missing).
fn write_json(dir: &Path, stem: &str, doc: &serde_json::Value) -> Result<(), ImageError> {
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let p = dir.join(format!("{stem}.json"));
    std::fs::write(&p, serde_json::to_vec_pretty(doc).unwrap_or_default())
        .map_err(io_err("writing", &p))?;
    Ok(())
}

/// `doc` pretty-printed, with a final newline.
fn print_json(out: &mut dyn Write, doc: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, doc).map_err(std::io::Error::other)?;
    writeln!(out)
}

/// Runs one `image` subcommand.
pub fn run(args: ImageArgs, out: &mut dyn Write) -> Exit {
    match image(args, out) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            let _ = out.flush();
            eprintln!("cowprof image: {}", one_line(&e));
            Exit::from(&e)
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one match arm per image subcommand, each a few lines of printing"
)]
fn image(args: ImageArgs, out: &mut dyn Write) -> Result<(), ImageError> {
    let cancel = Cancel::install().map_err(io_err("installing signal handlers", "/"))?;
    let store = Store::open(&args.store)?;
    let mut err = std::io::stderr();
    let w = |r: std::io::Result<()>| r.map_err(io_err("writing", "stdout"));
    match args.command {
        ImageCommand::Import {
            archive,
            max_layer_size,
            max_entries,
            json,
        } => {
            let limits = Limits {
                max_layer_bytes: max_layer_size,
                max_entries,
                ..Limits::default()
            };
            let bar = ImportBar::new();
            let r = store.import(&archive, limits, Some(&cancel), |s| bar.step(s))?;
            bar.finish();
            if json {
                w(serde_json::to_writer_pretty(
                    &mut *out,
                    &serde_json::json!({
                        "schema": 1,
                        "images": r.images,
                        "unpacked": r.unpacked,
                        "reused": r.reused,
                    }),
                )
                .map_err(std::io::Error::other))?;
                w(writeln!(out))?;
            } else {
                for i in &r.images {
                    w(writeln!(
                        out,
                        "imported {} ({} layers) tags {} (mutable)",
                        i.id,
                        i.layers.len(),
                        tags_or_dash(&i.tags)
                    ))?;
                    for l in &i.layers {
                        for n in &l.stats.notes {
                            w(writeln!(
                                out,
                                "  note: layer {}: {n}",
                                cowprof::fmt::short_digest(&l.diff_id)
                            ))?;
                        }
                    }
                }
                w(writeln!(
                    out,
                    "layers: {} unpacked, {} already in the store {}",
                    r.unpacked.len(),
                    r.reused.len(),
                    store.root.display()
                ))?;
            }
        }
        ImageCommand::Inspect {
            image,
            lab,
            upper_fs,
            recalibrate,
            json,
        } => {
            let rec = resolve(&store, &image, &cancel)?;
            let model = cost_model(&store, lab.as_deref(), &upper_fs, recalibrate, &mut err)?;
            let (ins, _) = inspect::inspect(&store, &rec, &model.data)?;
            if json {
                w(serde_json::to_writer_pretty(
                    &mut *out,
                    &serde_json::json!({"schema": 1, "image": ins}),
                )
                .map_err(std::io::Error::other))?;
                w(writeln!(out))?;
            } else {
                w(inspect::render(&ins, out))?;
            }
        }
        ImageCommand::Compare {
            images,
            reps,
            no_run,
            out: out_dir,
            json,
        } => {
            let mut sums = Vec::new();
            let bar = progress::bar(
                images.len() as u64,
                "{elapsed_precise} [{bar:30}] image {pos}/{len} {msg}",
            );
            for i in &images {
                bar.set_message(i.clone());
                let rec = resolve(&store, i, &cancel)?;
                sums.push(compare::summarize_image(
                    &store,
                    &rec,
                    reps,
                    !no_run,
                    Some(&cancel),
                )?);
                bar.inc(1);
            }
            bar.finish_and_clear();
            let doc = serde_json::json!({"schema": 1, "images": sums});
            if let Some(d) = &out_dir {
                write_json(d, "compare", &doc)?;
                compare::chart(&sums, &d.join("compare.svg"))?;
            }
            if json {
                w(print_json(out, &doc))?;
            } else {
                w(compare::render(&sums, out))?;
                if let Some(d) = &out_dir {
                    w(writeln!(
                        out,
                        "\nwrote {0}/compare.json and {0}/compare.svg (.png)",
                        d.display()
                    ))?;
                }
            }
        }
        ImageCommand::Forecast {
            trace,
            images,
            lab,
            upper_fs,
            recalibrate,
            verify,
            runs,
            out: out_dir,
            json,
        } => {
            let t = forecast::read_trace(&trace)?;
            // Every image first: a wrong name fails before the calibration runs.
            let recs = images
                .iter()
                .map(|i| resolve(&store, i, &cancel))
                .collect::<Result<Vec<_>, _>>()?;
            let model = cost_model(&store, lab.as_deref(), &upper_fs, recalibrate, &mut err)?;
            let mut fs = Vec::new();
            let mut checks = Vec::new();
            for rec in recs {
                let stack = forecast::Stack::read(&store, &rec)?;
                let f = forecast::summarize(&rec, forecast::forecast(&t, &stack, &model));
                if verify {
                    let mut ms = Vec::new();
                    for _ in 0..runs.max(1) {
                        ms.push(verify::verify(&store, &rec, &t, Some(&cancel))?);
                    }
                    checks.push(verify::Check::new(&f, ms));
                }
                fs.push(f);
            }
            let doc = serde_json::json!({
                "schema": 1,
                "trace": trace,
                "trace_ops": t.ops.len(),
                "cost_model": model.source,
                "images": fs,
                "verify": checks,
            });
            if let Some(d) = &out_dir {
                write_json(d, "forecast", &doc)?;
                forecast::chart(&fs, &d.join("forecast.svg"))?;
            }
            if json {
                w(print_json(out, &doc))?;
            } else {
                w(forecast::render(&fs, &model.source, out))?;
                if verify {
                    w(verify::render(&checks, out))?;
                }
                if let Some(d) = &out_dir {
                    w(writeln!(
                        out,
                        "wrote {0}/forecast.json and {0}/forecast.svg (.png)",
                        d.display()
                    ))?;
                }
            }
        }
        ImageCommand::Ls => {
            for i in store.images() {
                w(writeln!(
                    out,
                    "{}  {:>3} layers  {}",
                    i.id,
                    i.layers.len(),
                    tags_or_dash(&i.tags)
                ))?;
            }
        }
    }
    w(out.flush())?;
    Ok(())
}

/// An image's tags for a one-line listing: comma-separated, `-` when it has none.
fn tags_or_dash(tags: &[String]) -> String {
    if tags.is_empty() {
        "-".into()
    } else {
        tags.join(", ")
    }
}
