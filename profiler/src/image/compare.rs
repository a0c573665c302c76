//! Base images side by side: size, layers, files, attack surface (shell, package manager),
//! waste, and the same writes timed on each image's real layer stack mounted as overlay.

use crate::fmt;
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};

use super::{
    inspect::{self, Curve, Kind, View},
    io_err,
    store::{ImageRecord, Store},
    ImageError,
};
use crate::host::{cancel::Cancel, mounts};

/// An image's layers mounted read-write as overlay, with a fresh upper; unmounted and removed on
/// drop (also on error and Ctrl-C, which only sets a flag checked between writes).
pub struct ImageStack {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    mounted: bool,
}

impl ImageStack {
    pub fn mount(store: &Store, rec: &ImageRecord) -> Result<Self, ImageError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = store.root.join("run").join(format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let s = Self {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            dir,
            mounted: false,
        };
        let mut s = s;
        for d in [&s.upper, &s.work, &s.merged] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(d)
                .map_err(io_err("creating", d))?;
        }
        // lowerdir lists the top layer first.
        let lowers: Vec<String> = rec
            .layers
            .iter()
            .rev()
            .map(|l| store.layer_dir(&l.diff_id).display().to_string())
            .collect();
        let mut opts = Vec::new();
        if Path::new("/sys/module/overlay/parameters/index").exists() {
            opts.push("index=off".to_owned());
        }
        opts.push(format!("lowerdir={}", lowers.join(":")));
        opts.push(format!("upperdir={}", s.upper.display()));
        opts.push(format!("workdir={}", s.work.display()));
        let opts = opts.join(",");
        // The kernel takes one page of mount data; Docker's short `l/` links are not made here.
        if opts.len() >= 4096 {
            return Err(ImageError::OptionsTooLong {
                layers: rec.layers.len(),
                bytes: opts.len(),
            });
        }
        mounts::mount("overlay", &s.merged, "overlay", &opts)
            .map_err(mounts::overlay_mount_err(&s.merged, &opts))?;
        s.mounted = true;
        Ok(s)
    }
}

impl Drop for ImageStack {
    fn drop(&mut self) {
        if self.mounted {
            mounts::umount(&self.merged);
        }
        let _ = mounts::remove_tree(&self.dir);
    }
}

/// Latencies of one workload on one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub name: String,
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Files that ended up in the upper dir (ground truth: one per copied-up file).
    pub upper_files: u64,
    /// Bytes those files hold.
    pub upper_bytes: u64,
}

pub(crate) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "index from a fraction"
    )]
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summarize(name: &str, mut ns: Vec<u64>, upper: &Path) -> WorkloadResult {
    ns.sort_unstable();
    let (files, bytes) = count_files(upper);
    WorkloadResult {
        name: name.to_owned(),
        count: ns.len() as u64,
        p50_ns: percentile(&ns, 0.5),
        p99_ns: percentile(&ns, 0.99),
        max_ns: ns.last().copied().unwrap_or(0),
        upper_files: files,
        upper_bytes: bytes,
    }
}

/// Upper-dir ground truth: (regular files, their bytes, whiteouts), not following symlinks.
pub fn upper_truth(dir: &Path) -> (u64, u64, u64) {
    let (mut files, mut bytes, mut whiteouts) = (0, 0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = m.file_type();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files += 1;
                bytes += m.len();
            } else if ft.is_char_device() && m.rdev() == 0 {
                whiteouts += 1;
            }
        }
    }
    (files, bytes, whiteouts)
}

/// Regular files and their bytes under `dir` (not following symlinks).
#[must_use]
pub fn count_files(dir: &Path) -> (u64, u64) {
    let (files, bytes, _) = upper_truth(dir);
    (files, bytes)
}

/// Paths of regular files in the final view under `prefix` (e.g. `/etc/`).
fn files_under<'a>(
    view: &'a View,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, u64)> + 'a {
    view.iter().filter_map(move |(p, (k, _))| match k {
        Kind::File { size } if p.starts_with(prefix) => Some((p, *size)),
        _ => None,
    })
}

fn timed(f: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<u64> {
    let t = Instant::now();
    f()?;
    Ok(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// Opens an image path in the merged dir as if the merged dir were `/` (`RESOLVE_IN_ROOT`): an
/// absolute symlink in the image cannot lead the write to the host.
pub(crate) fn open_in(merged: &Path, p: &str, append: bool) -> std::io::Result<fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        merged,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let flags = OFlags::WRONLY
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | if append {
            OFlags::APPEND
        } else {
            OFlags::empty()
        };
    let fd = rustix::fs::openat2(
        &root,
        p.trim_start_matches('/'),
        flags,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )?;
    Ok(fs::File::from(fd))
}

/// Workload 1: `open(O_WRONLY|O_APPEND)` + 1-byte write + close on every regular file under /etc
/// (each a data copy-up). Workload 2: the largest file rewritten in place (4 KiB at offset 0), on
/// a fresh mount each repetition.
pub fn run_workloads(
    store: &Store,
    rec: &ImageRecord,
    view: &View,
    reps: u32,
    cancel: Option<&Cancel>,
) -> Result<Vec<WorkloadResult>, ImageError> {
    let mut out = Vec::new();
    let check = || {
        if cancel.is_some_and(Cancel::is_set) {
            Err(ImageError::Interrupted)
        } else {
            Ok(())
        }
    };
    {
        let s = ImageStack::mount(store, rec)?;
        let mut ns = Vec::new();
        for (p, _) in files_under(view, "/etc/") {
            check()?;
            let path = s.merged.join(p.trim_start_matches('/'));
            let t = timed(|| {
                let mut f = open_in(&s.merged, p, true)?;
                f.write_all(b"\n")
            })
            .map_err(io_err("appending to", &path))?;
            ns.push(t);
        }
        out.push(summarize("append to every file under /etc", ns, &s.upper));
    }
    if let Some((p, size)) = view
        .iter()
        .filter_map(|(p, (k, _))| match k {
            Kind::File { size } => Some((p.clone(), *size)),
            _ => None,
        })
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
    {
        let mut ns = Vec::new();
        let mut last_upper = (0, 0);
        for _ in 0..reps {
            check()?;
            let s = ImageStack::mount(store, rec)?;
            let path = s.merged.join(p.trim_start_matches('/'));
            let t = timed(|| {
                use std::os::unix::fs::FileExt as _;
                let f = open_in(&s.merged, &p, false)?;
                f.write_all_at(
                    &[0x5a; 4096][..usize::try_from(size.min(4096)).unwrap_or(4096)],
                    0,
                )
            })
            .map_err(io_err("rewriting", &path))?;
            ns.push(t);
            last_upper = count_files(&s.upper);
        }
        let mut r = summarize(
            &format!("rewrite the largest file ({p}, {})", fmt::bytes(size)),
            ns,
            Path::new("/nonexistent"),
        );
        (r.upper_files, r.upper_bytes) = last_upper;
        out.push(r);
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: String,
    pub tags_mutable: Vec<String>,
    pub total_bytes: u64,
    pub final_bytes: u64,
    pub layers: u64,
    pub files: u64,
    pub shells: Vec<String>,
    pub package_managers: Vec<String>,
    pub wasted_bytes: u64,
    pub efficiency: f64,
    pub workloads: Vec<WorkloadResult>,
}

const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "zsh", "busybox"];
const PACKAGE_MANAGERS: &[&str] = &[
    "apt-get", "apt", "dpkg", "apk", "yum", "dnf", "microdnf", "rpm", "pip", "pip3",
];

/// Which of `names` exist in a bin directory of the final view (symlinks count: `/bin/sh` →
/// dash is a shell).
fn present(view: &View, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for n in names {
        for d in [
            "/bin/",
            "/usr/bin/",
            "/sbin/",
            "/usr/sbin/",
            "/usr/local/bin/",
        ] {
            let p = format!("{d}{n}");
            if matches!(view.get(&p), Some((Kind::File { .. } | Kind::Symlink, _))) {
                out.push(p);
                break;
            }
        }
    }
    out
}

pub fn summarize_image(
    store: &Store,
    rec: &ImageRecord,
    reps: u32,
    run: bool,
    cancel: Option<&Cancel>,
) -> Result<ImageSummary, ImageError> {
    let (ins, view) = inspect::inspect(store, rec, &Curve::none())?;
    let workloads = if run {
        run_workloads(store, rec, &view, reps, cancel)?
    } else {
        Vec::new()
    };
    Ok(ImageSummary {
        id: rec.id.clone(),
        tags_mutable: rec.tags.clone(),
        total_bytes: ins.analysis.total_bytes,
        final_bytes: ins.analysis.final_bytes,
        layers: rec.layers.len() as u64,
        files: ins.analysis.final_files,
        shells: present(&view, SHELLS),
        package_managers: present(&view, PACKAGE_MANAGERS),
        wasted_bytes: ins.analysis.wasted_bytes,
        efficiency: ins.analysis.efficiency,
        workloads,
    })
}

fn label(s: &ImageSummary) -> String {
    super::image_label(&s.tags_mutable, &s.id)
}

pub fn render(images: &[ImageSummary], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<30}  {:<12}  {:>10}  {:>6}  {:>6}  {:<5}  {:<7}  {:>10}  {:>6}",
        "image (tag is mutable)",
        "id",
        "size",
        "layers",
        "files",
        "shell",
        "pkg mgr",
        "wasted",
        "eff"
    )?;
    for s in images {
        writeln!(
            out,
            "{:<30}  {:<12}  {:>10}  {:>6}  {:>6}  {:<5}  {:<7}  {:>10}  {:>5.1}%",
            label(s),
            fmt::short_digest(&s.id),
            fmt::bytes(s.total_bytes),
            s.layers,
            s.files,
            if s.shells.is_empty() { "no" } else { "yes" },
            if s.package_managers.is_empty() {
                "no"
            } else {
                "yes"
            },
            fmt::bytes(s.wasted_bytes),
            s.efficiency * 100.0
        )?;
    }
    let any = images.iter().any(|s| !s.workloads.is_empty());
    if any {
        writeln!(out)?;
        writeln!(
            out,
            "copy-up latency on each image's own layer stack (overlay, warm cache, user-side open+write+close):"
        )?;
        writeln!(
            out,
            "{:<30}  {:<50}  {:>6}  {:>10}  {:>10}  {:>12}",
            "image", "workload", "n", "p50", "p99", "copied up"
        )?;
        for s in images {
            for w in &s.workloads {
                writeln!(
                    out,
                    "{:<30}  {:<50}  {:>6}  {:>10}  {:>10}  {:>12}",
                    label(s),
                    w.name.chars().take(50).collect::<String>(),
                    w.count,
                    fmt::ns(w.p50_ns),
                    fmt::ns(w.p99_ns),
                    fmt::bytes(w.upper_bytes)
                )?;
            }
        }
    }
    Ok(())
}

pub(crate) type Bar = (String, u64, u64);

pub(crate) fn draw_bars<DB>(
    root: &plotters::drawing::DrawingArea<DB, plotters::coord::Shift>,
    bars: &[Bar],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB: plotters::prelude::DrawingBackend,
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    root.fill(&WHITE)?;
    #[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
    let max = bars.iter().map(|b| b.2).max().unwrap_or(1) as f64 / 1e6 * 1.1;
    let n = bars.len();
    let mut chart = ChartBuilder::on(root)
        .caption(
            "copy-up latency per image (ms): p50 dark, p99 light",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(260)
        .build_cartesian_2d(0f64..max.max(0.001), (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .y_labels(n)
        .x_desc("ms")
        .draw()?;
    #[expect(clippy::cast_precision_loss, reason = "chart coordinates")]
    chart.draw_series(bars.iter().enumerate().flat_map(|(i, b)| {
        let mut p99 = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (b.2 as f64 / 1e6, SegmentValue::Exact(i + 1)),
            ],
            RGBColor(160, 190, 230).filled(),
        );
        p99.set_margin(4, 4, 0, 0);
        let mut p50 = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (b.1 as f64 / 1e6, SegmentValue::Exact(i + 1)),
            ],
            RGBColor(30, 80, 160).filled(),
        );
        p50.set_margin(4, 4, 0, 0);
        [p99, p50]
    }))?;
    root.present()?;
    Ok(())
}

/// A bar chart of p50 and p99 per image and workload: `path` (SVG) and the same name `.png`.
pub fn chart(images: &[ImageSummary], path: &Path) -> Result<(), ImageError> {
    let bars: Vec<Bar> = images
        .iter()
        .flat_map(|s| {
            s.workloads.iter().map(move |w| {
                let kind = if w.name.starts_with("append") {
                    "/etc appends"
                } else {
                    "largest rewrite"
                };
                (format!("{} {kind}", label(s)), w.p50_ns, w.p99_ns)
            })
        })
        .collect();
    write_bars(&bars, path)
}

/// Draws `bars` (label, p50 ns, p99 ns) into `path` (SVG) and the same name `.png`; nothing when
/// there are none.
pub(crate) fn write_bars(bars: &[Bar], path: &Path) -> Result<(), ImageError> {
    use plotters::prelude::*;
    let err = |e: String| io_err("drawing the chart", path)(std::io::Error::other(e));
    if bars.is_empty() {
        return Ok(());
    }
    crate::plot::ensure_font().map_err(|e| err(e.to_string()))?;
    let size = (960, 120 + 40 * u32::try_from(bars.len()).unwrap_or(20));
    let svg = SVGBackend::new(path, size).into_drawing_area();
    let png_path = path.with_extension("png");
    let png = BitMapBackend::new(&png_path, size).into_drawing_area();
    draw_bars(&svg, bars).map_err(|e| err(e.to_string()))?;
    draw_bars(&png, bars).map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
