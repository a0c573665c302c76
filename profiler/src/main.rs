//! The `cowprof` command: parse, dispatch, print errors, exit with a documented code.

use std::{
    io::Write as _, os::unix::fs::MetadataExt as _, path::PathBuf, process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use cowprof::{
    compare::{self, CompareOptions, Format},
    lab,
    probe::{self, Backend, BtfPaths, ProbeOptions},
    record::{self, RecordOptions},
    report::{Exporter, JsonLines, Table},
    scenario, selftest,
};

/// Exit codes (README, "Exit codes").
mod code {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    /// `record` (kprobe backend): the overlay module was unloaded under its probes.
    pub const OVERLAY_UNLOADED: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "cowprof",
    version,
    about = "Profile overlayfs copy-on-write: every copy-up and whiteout, live"
)]
struct Cli {
    /// More diagnostics (eBPF-side aya-log messages, skipped samples); repeat for more.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct BtfArgs {
    /// Kernel BTF to read structure offsets from.
    #[arg(long, value_name = "PATH", default_value = "/sys/kernel/btf/vmlinux")]
    btf: PathBuf,
    /// The overlay module's split BTF (used when overlay is a module).
    #[arg(long, value_name = "PATH", default_value = "/sys/kernel/btf/overlay")]
    btf_overlay: PathBuf,
}

impl BtfArgs {
    fn paths(&self) -> BtfPaths {
        BtfPaths {
            vmlinux: self.btf.clone(),
            overlay_module: self.btf_overlay.clone(),
        }
    }
}

/// Thresholds of `compare` and `bench --baseline`.
#[derive(clap::Args, Clone)]
struct GateArgs {
    /// Threshold file (default: ./.cowprof-ci.toml if it exists, else built-in gates).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Gate a metric, e.g. `p99=+10%`, `efficiency=-5%`, `bytes_copied=+0` (repeatable;
    /// replaces the config file's threshold of the same metric).
    #[arg(long = "threshold", value_name = "METRIC=CHANGE")]
    thresholds: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the kernel and print every copy-up and whiteout until Ctrl-C.
    Record {
        /// Kernel mechanism (default: the best one this kernel allows; see `cowprof doctor`).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Only this process (tgid).
        #[arg(long)]
        pid: Option<u32>,
        /// Only tasks whose comm is exactly this.
        #[arg(long)]
        comm: Option<String>,
        /// Only this cgroup (v2): a path under /sys/fs/cgroup or a numeric cgroup id.
        #[arg(long, value_name = "PATH|ID")]
        cgroup: Option<String>,
        /// Only events on the overlay mounted here.
        #[arg(long, value_name = "PATH")]
        mount: Option<PathBuf>,
        /// Only this container's events (Docker name, full or short id): its processes, and
        /// writes through its overlay mount by host processes (those stay attributed to the host).
        #[arg(long, value_name = "NAME|ID")]
        container: Option<String>,
        #[arg(
            long,
            value_name = "PATH",
            help = "containerd's API socket, for Kubernetes pod and container names (default: \
                    $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock; absent = names \
                    from cgroups and the Docker engine only)"
        )]
        containerd_socket: Option<PathBuf>,
        /// Only events at least this slow (e.g. 100us, 5ms).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        min_latency: Option<Duration>,
        /// Stop after this long (e.g. 10s, 2m).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        duration: Option<Duration>,
        /// JSON lines (schema-versioned) instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        btf: BtfArgs,
        /// Serve Prometheus/OpenMetrics metrics on http://HOST:PORT/metrics (PORT alone binds
        /// 127.0.0.1; 0.0.0.0:PORT exposes them to the network).
        #[arg(long, value_name = "HOST:PORT")]
        metrics_addr: Option<String>,
        /// Label sets (mount, container, pod, namespace, image, layer digest) with series of
        /// their own; the rest are counted under "other".
        #[arg(long, value_name = "N", default_value_t = cowprof::metrics::DEFAULT_MAX_SERIES)]
        metrics_max_series: usize,
        /// Print nothing on stdout (a daemon serving --metrics-addr).
        #[arg(long, short)]
        quiet: bool,
        /// Ring buffer size in bytes (advanced: a power of two, at least a page; default 4 MiB).
        #[arg(long, hide = true, value_name = "BYTES", value_parser = ringbuf_size)]
        ringbuf_size: Option<u32>,
        /// Run this command once attached and stop when it exits.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Show which backends this kernel allows and why, BTF, overlay symbols.
    Doctor {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        btf: BtfArgs,
    },
    /// The main job on an embedded default: build a small overlay stack, record a scripted
    /// workload on it, print the events and the summary, check them against the upper dir.
    Demo {
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        #[arg(long)]
        json: bool,
    },
    /// Run the default scenario under each backend this kernel allows and check every event
    /// against the upper directory (the VM matrix runs this in each kernel).
    Selftest {
        /// Only this backend (default: every usable one).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Build the stacks on a tmpfs of their own (needed where /tmp is not writable disk).
        #[arg(long)]
        tmpfs: bool,
        /// Also print `doctor` first.
        #[arg(long)]
        doctor: bool,
        /// Fail unless `doctor` would choose this backend (checks backend detection per kernel).
        #[arg(long, value_enum, value_name = "BACKEND")]
        expect_chosen: Option<Backend>,
        /// Fail unless exactly these backends run (comma-separated): a backend this kernel
        /// cannot use is then a failure, not a skip.
        #[arg(long, value_enum, value_name = "BACKENDS", value_delimiter = ',')]
        expect_backends: Option<Vec<Backend>>,
        /// Fail unless the metacopy=on stack is part of every run (the kernel has metacopy).
        #[arg(long)]
        expect_metacopy: bool,
        #[command(flatten)]
        btf: BtfArgs,
    },
    /// The lab: build overlay2-style stacks on several filesystems, measure copy-up latency per
    /// op, file size and layer depth (plus kernel-side times), write DIR/results.json.
    #[command(after_long_help = lab::spec::DEFAULT_SPEC)]
    Bench {
        /// TOML spec of the matrix (default: the built-in one, about a minute).
        #[arg(long, value_name = "FILE")]
        spec: Option<PathBuf>,
        /// Output directory for results.json.
        #[arg(long, value_name = "DIR", default_value = "cowprof-bench")]
        out: PathBuf,
        /// Where the lab makes its run directory (cowprof-lab-<pid>).
        #[arg(long, value_name = "DIR", default_value = "/tmp")]
        workdir: PathBuf,
        /// Tiny sizes and two repetitions (smoke tests).
        #[arg(long)]
        quick: bool,
        /// Then compare the new results.json against this one (`cowprof compare`, reports and
        /// charts in DIR/compare); the exit code is the comparison's.
        #[arg(long, value_name = "BASE.json")]
        baseline: Option<PathBuf>,
        /// With --baseline: when the gate fails, measure again up to N times; fail only if every
        /// measurement fails it (a regression reproduces, a load burst rarely does).
        #[arg(long, value_name = "N", default_value_t = 0, requires = "baseline")]
        confirm: u32,
        #[command(flatten)]
        gates: GateArgs,
        /// Instead of the spec's synthetic stack: first writes, chmods and unlinks of this image's
        /// own files on its real layer stack (an archive, imported first, or a digest/tag).
        #[arg(long, value_name = "ARCHIVE|REF", conflicts_with = "baseline")]
        image: Option<String>,
        /// Layer store for --image.
        #[arg(long, value_name = "DIR", default_value = cowprof::image::store::DEFAULT_STORE)]
        store: PathBuf,
        /// Exit 1 unless a backend attached and every copy-up cell's kernel-side count is exact
        /// (the VM matrix's check).
        #[arg(long)]
        expect_kernel: bool,
        /// Write results.json only: no charts, no report.html.
        #[arg(long)]
        no_charts: bool,
    },
    /// Regression gate: compare two `bench` results.json files metric by metric (bootstrap
    /// intervals from the histograms); exit 1 if a gated metric regressed beyond its threshold.
    Compare {
        /// results.json of the baseline (e.g. the main branch's `bench`).
        #[arg(value_name = "BASE.json")]
        base: PathBuf,
        /// results.json to judge against it.
        #[arg(value_name = "NEW.json")]
        new: PathBuf,
        #[command(flatten)]
        gates: GateArgs,
        /// Report format on stdout.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Also write compare.{md,txt,json}, compare-junit.xml and CDF charts (SVG, PNG) here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Container images: import `docker save`/OCI archives, inspect layers, compare base images.
    Image(cowprof::image::cli::ImageArgs),
    /// Remove what dead `bench` runs left: mounts, loop devices, images, directories, state.
    Clean {
        /// Also look for cowprof-lab-<pid> directories here (bench's --workdir).
        #[arg(long, value_name = "DIR", default_value = "/tmp")]
        workdir: Vec<PathBuf>,
    },
    /// (internal) the lab's worker: runs and times the ops `bench` sends it.
    #[command(name = "__lab-worker", hide = true)]
    LabWorker { parent: u32 },
    /// (internal) the scripted workload, run by demo/selftest in a separate process.
    #[command(name = "__workload", hide = true)]
    Workload {
        merged: PathBuf,
        meta_merged: Option<PathBuf>,
    },
}

fn ringbuf_size(s: &str) -> Result<u32, String> {
    let bytes: u32 = s
        .parse()
        .map_err(|e| format!("{e}; give a number of bytes"))?;
    probe::check_ringbuf_size(bytes)
}

fn cgroup_id(spec: &str) -> Result<u64, String> {
    if let Ok(id) = spec.parse::<u64>() {
        return Ok(id);
    }
    std::fs::metadata(spec)
        .map(|m| m.ino())
        .map_err(|e| format!("--cgroup {spec}: {e}; give a cgroup v2 directory (under /sys/fs/cgroup) or a numeric id"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                code::USAGE
            } else {
                code::OK
            });
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        },
    ))
    .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cowprof: cannot start the runtime: {e}");
            return ExitCode::from(code::FAILURE);
        }
    };
    ExitCode::from(rt.block_on(run(cli.command)))
}

fn exporter(json: bool) -> Box<dyn Exporter> {
    if json {
        Box::new(JsonLines)
    } else {
        Box::new(Table::new())
    }
}

async fn run(command: Command) -> u8 {
    // From here on Ctrl-C and SIGTERM no longer kill the process outright: every command ends
    // through its own cleanup (stacks unmounted, programs detached). `record` listens for them.
    let _keep_int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    let _keep_term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let stdout = std::io::stdout();
    // Block-buffered: record flushes once per ring-buffer batch (stdout alone flushes per line).
    let mut out = std::io::BufWriter::new(stdout.lock());
    match command {
        Command::Record {
            backend,
            pid,
            comm,
            cgroup,
            mount,
            container,
            containerd_socket,
            min_latency,
            duration,
            json,
            btf,
            metrics_addr,
            metrics_max_series,
            quiet,
            ringbuf_size,
            command,
        } => {
            // Bound before anything is loaded: a bad address leaves nothing behind.
            let (metrics, _server) = match metrics_addr
                .map(|addr| cowprof::metrics::serve(&addr, metrics_max_series))
                .transpose()
            {
                Ok(Some((rec, server))) => (Some(rec), Some(server)),
                Ok(None) => (None, None),
                Err(e) => {
                    eprintln!("cowprof: {e}");
                    return e.exit_code();
                }
            };
            let filter_cgroup = match cgroup.as_deref().map(cgroup_id).transpose() {
                Ok(c) => c.unwrap_or(0),
                Err(msg) => {
                    eprintln!("cowprof: {msg}");
                    return code::USAGE;
                }
            };
            let opts = RecordOptions {
                probe: ProbeOptions {
                    backend,
                    btf: btf.paths(),
                    filter_tgid: pid.unwrap_or(0),
                    filter_cgroup,
                    ringbuf_size,
                },
                comm,
                mount,
                container,
                containerd_socket,
                min_latency_ns: min_latency
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                duration,
                command,
                discard_events: true,
                metrics,
            };
            let mut exp = if quiet {
                Box::new(cowprof::metrics::Quiet)
            } else {
                exporter(json)
            };
            match record::record(&opts, exp.as_mut(), &mut out).await {
                Ok(o) if o.overlay_unloaded => {
                    eprintln!("cowprof: {}", record::OVERLAY_UNLOADED);
                    code::OVERLAY_UNLOADED
                }
                Ok(_) => code::OK,
                Err(e) => {
                    eprintln!("cowprof: {e}");
                    e.exit_code()
                }
            }
        }
        Command::Doctor { json, btf } => {
            let facts = probe::kernel_facts(&btf.paths());
            if json {
                let _ = serde_json::to_writer_pretty(&mut out, &facts);
                let _ = writeln!(out);
            } else {
                print_doctor(&mut out, &facts);
            }
            if facts.chosen.is_some() {
                code::OK
            } else {
                4
            }
        }
        Command::Demo { backend, json } => {
            let mut exp = exporter(json);
            match selftest::run_scenario(
                backend,
                BtfPaths::default(),
                &std::env::temp_dir(),
                false,
                exp.as_mut(),
                &mut out,
            )
            .await
            {
                Ok(run) => {
                    let _ = writeln!(
                        out,
                        "\ndemo: {} events on the demo stacks; {} expected; check against the upper directory: {}",
                        run.events.len(),
                        run.expected,
                        if run.problems.is_empty() { "all match".to_owned() } else { run.problems.join("; ") }
                    );
                    if run.problems.is_empty() {
                        code::OK
                    } else {
                        code::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("cowprof: {e}");
                    e.exit_code()
                }
            }
        }
        Command::Selftest {
            backend,
            tmpfs,
            doctor,
            expect_chosen,
            expect_backends,
            expect_metacopy,
            btf,
        } => {
            let expect = SelftestExpect {
                chosen: expect_chosen,
                backends: expect_backends,
                metacopy: expect_metacopy,
            };
            selftest_all(backend, tmpfs, doctor, &expect, &btf.paths(), &mut out).await
        }
        Command::Bench {
            image: Some(image),
            store,
            out: out_dir,
            quick,
            ..
        } => cowprof::image::bench::main(
            &cowprof::image::bench::ImageBenchOptions {
                image,
                store,
                out: out_dir,
                files_per_cell: if quick { 3 } else { 10 },
            },
            &mut out,
        ),
        Command::Bench {
            spec,
            out: out_dir,
            workdir,
            quick,
            baseline,
            confirm,
            gates,
            expect_kernel,
            no_charts,
            ..
        } => {
            let bench_opts = lab::run::BenchOptions {
                spec,
                out: out_dir.clone(),
                workdir,
                quick,
                expect_kernel,
                no_charts,
            };
            let written = cowprof::ownership::Output::before(&out_dir);
            let rc = match baseline {
                None => lab::run::main(&bench_opts, &mut out),
                Some(base) => compare::bench_gate(
                    &CompareOptions {
                        base,
                        new: out_dir.join("results.json"),
                        config: gates.config,
                        thresholds: gates.thresholds,
                        format: Format::Table,
                        out: Some(out_dir.join("compare")),
                    },
                    confirm,
                    &mut out,
                    |o| lab::run::main(&bench_opts, o),
                ),
            };
            written.give_to_invoker();
            rc
        }
        Command::Compare {
            base,
            new,
            gates,
            format,
            out: report_dir,
        } => {
            let written = report_dir
                .as_deref()
                .map(cowprof::ownership::Output::before);
            let rc = compare::run(
                &CompareOptions {
                    base,
                    new,
                    config: gates.config,
                    thresholds: gates.thresholds,
                    format,
                    out: report_dir,
                },
                &mut out,
            );
            if let Some(w) = written {
                w.give_to_invoker();
            }
            rc
        }
        Command::Image(args) => cowprof::image::cli::main(args, &mut out),
        Command::Clean { workdir } => {
            let report = lab::clean::clean(&workdir);
            for line in &report.removed {
                let _ = writeln!(out, "cowprof clean: {line}");
            }
            for pid in &report.alive {
                let _ = writeln!(out, "cowprof clean: run {pid} is still running; left alone");
            }
            if report.removed.is_empty() && report.errors.is_empty() {
                let _ = writeln!(out, "cowprof clean: nothing to clean");
            }
            let _ = out.flush();
            for e in &report.errors {
                eprintln!("cowprof clean: {e}");
            }
            if report.errors.is_empty() {
                code::OK
            } else {
                code::FAILURE
            }
        }
        Command::LabWorker { parent } => match lab::workload::worker_main(parent) {
            Ok(()) => code::OK,
            Err(e) => {
                eprintln!("cowprof lab worker: {e}");
                code::FAILURE
            }
        },
        Command::Workload {
            merged,
            meta_merged,
        } => match scenario::run_workload(&merged, meta_merged.as_deref()) {
            Ok(()) => code::OK,
            Err(e) => {
                eprintln!("cowprof workload: {e}");
                code::FAILURE
            }
        },
    }
}

fn print_doctor(out: &mut dyn std::io::Write, f: &probe::KernelFacts) {
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

/// What `selftest --expect-*` requires beyond every scenario run passing.
struct SelftestExpect {
    chosen: Option<Backend>,
    backends: Option<Vec<Backend>>,
    metacopy: bool,
}

async fn selftest_all(
    backend: Option<Backend>,
    tmpfs: bool,
    doctor: bool,
    expect: &SelftestExpect,
    btf: &BtfPaths,
    out: &mut dyn std::io::Write,
) -> u8 {
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
        code::OK
    } else {
        code::FAILURE
    }
}
