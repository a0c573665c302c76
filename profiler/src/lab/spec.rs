//! The lab's spec: what `cowprof bench` measures, as TOML. Every field is optional; a missing one
//! takes its value from [`DEFAULT_SPEC`] (the built-in default, about one minute on two cores).
//!
//! Errors are one line that names the field and says what to write instead.

use std::fmt;

use serde::{de, Deserialize, Deserializer};

pub use super::op::{Op, Shape};

/// The built-in spec. Also the documentation of the format (`cowprof bench --help` points here).
pub const DEFAULT_SPEC: &str = r#"# cowprof bench: the built-in spec (about one minute on two cores).
# Lower layers of the stack, Docker overlay2 style (lowerdir top first; at most 128).
layers = 4
# File sizes measured: bytes, or with a K/M/G suffix (powers of 1024).
sizes = ["4K", "64K", "1M", "16M", "64M"]
# The lower layer each measured file lives in (1 = topmost lower, `layers` = bottom).
file_layers = [1, 4]
# Measured repetitions of every cell (each on a fresh upper and work directory).
repetitions = 10
# Backing filesystems: dir (a directory on the host fs under --workdir), tmpfs, and the
# loop-mounted images ext4, xfs (reflink=1) and btrfs that cowprof makes and removes. The default
# is a fresh ext4 (overlay2's usual backing fs, on this host's disk but in a state of its own, so
# two runs agree) and tmpfs; add "dir" to measure the host fs as it is today.
filesystems = ["ext4", "tmpfs"]
# Overlay mount option sets, each beyond lowerdir/upperdir/workdir (and index=off, as Docker).
# Known: metacopy=on, volatile, redirect_dir=on, index=on, xino=on, userxattr.
mount_options = [[], ["metacopy=on"]]
# Operations on a lower file of each size in each file layer: first_write open_trunc truncate
# chmod rewrite read_lower read_upper unlink rename_file link; on a lower directory in each file
# layer: rmdir_recreate (opaque dir) chmod_dir (directory copy-up) rename_dir (redirect_dir=on:
# redirect, else EXDEV);
# one new file: create; concurrency (see [concurrency]): parallel_write race_write.
ops = ["first_write", "open_trunc", "truncate", "chmod", "rewrite", "read_lower", "read_upper", "create", "unlink", "rmdir_recreate", "chmod_dir", "rename_file", "rename_dir", "link", "parallel_write", "race_write"]
# Page cache before each measured op: warm, cold (caches dropped before every op: slow, and
# skipped on tmpfs, which has no cold state).
cache = ["warm"]

# N threads append one byte at the same instant: parallel_write to N distinct lower files
# (N copy-ups), race_write all to one lower file (one copy-up, N appends land).
[concurrency]
threads = [1, 4]
sizes = ["64K"]
"#;

/// `--quick`: sizes and repetitions that keep a run to seconds (tests, smoke checks).
pub const QUICK_SIZES: &[u64] = &[4 << 10, 64 << 10];
pub const QUICK_REPETITIONS: u32 = 2;

/// Largest file size accepted (the lab writes every file into every backing filesystem).
pub const MAX_SIZE: u64 = 16 << 30;
/// Docker's overlay2 limit on lower layers.
pub const MAX_LAYERS: u32 = 128;

/// Backing filesystem of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// A directory on the host filesystem (under `--workdir`).
    Dir,
    Tmpfs,
    Ext4,
    Xfs,
    Btrfs,
}

impl FsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::Tmpfs => "tmpfs",
            Self::Ext4 => "ext4",
            Self::Xfs => "xfs",
            Self::Btrfs => "btrfs",
        }
    }

    /// Loop-mounted image made with mkfs.
    pub fn is_image(self) -> bool {
        matches!(self, Self::Ext4 | Self::Xfs | Self::Btrfs)
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    Warm,
    Cold,
}

impl Cache {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warm => "warm",
            Self::Cold => "cold",
        }
    }
}

/// Overlay mount options the lab knows: (option as written, module parameter that says the
/// kernel has it, if there is one).
pub const KNOWN_OPTIONS: &[(&str, Option<&str>)] = &[
    ("metacopy=on", Some("metacopy")),
    ("metacopy=off", Some("metacopy")),
    ("volatile", None),
    ("redirect_dir=on", Some("redirect_dir")),
    ("redirect_dir=follow", Some("redirect_dir")),
    ("redirect_dir=nofollow", Some("redirect_dir")),
    ("redirect_dir=off", Some("redirect_dir")),
    ("index=on", Some("index")),
    ("index=off", Some("index")),
    ("xino=on", Some("xino_auto")),
    ("xino=auto", Some("xino_auto")),
    ("xino=off", Some("xino_auto")),
    ("userxattr", None),
    ("nfs_export=on", Some("nfs_export")),
    ("nfs_export=off", Some("nfs_export")),
    ("uuid=on", None),
    ("uuid=auto", None),
    ("uuid=null", None),
    ("uuid=off", None),
    ("verity=on", None),
    ("verity=require", None),
    ("verity=off", None),
    ("fsync=strict", None),
    ("fsync=auto", None),
    ("fsync=volatile", None),
];

/// A file size, written as a number of bytes or a string with a K/M/G suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size(u64);

/// Parses `4096`, `4K`, `4KiB`, `64M`, `1G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write e.g. 4096, \"4K\", \"64M\" or \"1G\""))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit; write e.g. 4096, \"4K\", \"64M\" or \"1G\""
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `4K`, `64M`, `1.5M`: the short form used in file names and tables.
pub fn format_size(n: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    if n >= 1 << 20 {
        #[allow(clippy::cast_precision_loss)]
        return format!("{:.1}M", n as f64 / f64::from(1 << 20));
    }
    n.to_string()
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes or a string such as \"4K\", \"64M\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The spec as written (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    layers: Option<u32>,
    sizes: Option<Vec<Size>>,
    file_layers: Option<Vec<u32>>,
    repetitions: Option<u32>,
    filesystems: Option<Vec<FsKind>>,
    mount_options: Option<Vec<Vec<String>>>,
    ops: Option<Vec<Op>>,
    cache: Option<Vec<Cache>>,
    backing_size: Option<Size>,
    concurrency: Option<ConcurrencyFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcurrencyFile {
    threads: Option<Vec<u32>>,
    sizes: Option<Vec<Size>>,
}

/// Most threads of a concurrency cell.
pub const MAX_THREADS: u32 = 64;

/// `[concurrency]`: thread counts and file sizes of `parallel_write` and `race_write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    pub threads: Vec<u32>,
    pub sizes: Vec<u64>,
}

impl Concurrency {
    pub fn max_threads(&self) -> u32 {
        self.threads.iter().copied().max().unwrap_or(1)
    }
}

/// A validated spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub layers: u32,
    pub sizes: Vec<u64>,
    /// 1-based lower layers holding the measured files.
    pub file_layers: Vec<u32>,
    pub repetitions: u32,
    pub filesystems: Vec<FsKind>,
    pub mount_options: Vec<Vec<String>>,
    pub ops: Vec<Op>,
    pub cache: Vec<Cache>,
    pub concurrency: Concurrency,
    /// Size of each tmpfs or loop image (default: room for every file several times over).
    /// Not in the built-in spec: a small one makes copy-ups fail with ENOSPC (fault tests).
    pub backing_size: Option<u64>,
}

/// A spec error: the field and a message that says how to fix it. Displays as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec {source_name}: {field}: {message}")]
pub struct SpecError {
    /// Where the spec came from (a file name, or "(built-in)").
    pub source_name: String,
    pub field: String,
    pub message: String,
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The key on the line that holds byte offset `at` (for errors the TOML parser reports with a
/// position but without the field name), e.g. `layers` for `layers = "x"`.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    // The value may span lines (arrays): walk back to the nearest line that starts a key.
    let head = &text[..at];
    let start = head.rfind('\n').map_or(0, |i| i + 1);
    let mut lines: Vec<&str> = text[..start].lines().collect();
    let current = text[start..].lines().next().unwrap_or("");
    lines.push(current);
    lines.iter().rev().find_map(|l| {
        let l = l.trim();
        if l.starts_with('#') || l.starts_with('[') {
            return None;
        }
        let (k, _) = l.split_once('=')?;
        let k = k.trim().trim_matches('"');
        (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| k.to_owned())
    })
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

impl Spec {
    /// The built-in default.
    pub fn default_spec() -> Self {
        Self::parse(DEFAULT_SPEC, "(built-in)").expect("the built-in spec is valid")
    }

    /// Parses and validates `text`; `source_name` only labels errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, SpecError> {
        let err = |field: &str, message: String| SpecError {
            source_name: source_name.to_owned(),
            field: field.to_owned(),
            message,
        };
        let file: SpecFile = toml::from_str(text).map_err(|e: toml::de::Error| {
            let msg = one_line(e.message());
            let (field, msg) = match e.span() {
                Some(span) => {
                    let line = line_of(text, span.start);
                    let field = if msg.starts_with("unknown field") {
                        // The message already names the field and lists the valid ones.
                        format!("line {line}")
                    } else {
                        key_at(text, span.start)
                            .map_or(format!("line {line}"), |k| format!("{k} (line {line})"))
                    };
                    (field, msg)
                }
                None => ("syntax".to_owned(), msg),
            };
            let fix = if msg.starts_with("unknown field") {
                "; remove or rename it"
            } else if msg.starts_with("unknown variant") {
                "; use one of those"
            } else {
                "; see the built-in spec (`cowprof bench --help`) for the format"
            };
            err(&field, format!("{msg}{fix}"))
        })?;
        let default = if text == DEFAULT_SPEC {
            SpecFile::default()
        } else {
            toml::from_str(DEFAULT_SPEC).expect("the built-in spec parses")
        };
        let spec = Self {
            layers: file.layers.or(default.layers).unwrap_or(4),
            sizes: file
                .sizes
                .or(default.sizes)
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.0)
                .collect(),
            file_layers: file.file_layers.or(default.file_layers).unwrap_or_default(),
            repetitions: file.repetitions.or(default.repetitions).unwrap_or(10),
            filesystems: file.filesystems.or(default.filesystems).unwrap_or_default(),
            mount_options: file
                .mount_options
                .or(default.mount_options)
                .unwrap_or_default(),
            ops: file.ops.or(default.ops).unwrap_or_default(),
            cache: file.cache.or(default.cache).unwrap_or_default(),
            concurrency: {
                let (f, d) = (
                    file.concurrency.unwrap_or_default(),
                    default.concurrency.unwrap_or_default(),
                );
                Concurrency {
                    threads: f.threads.or(d.threads).unwrap_or_else(|| vec![1, 4]),
                    sizes: f
                        .sizes
                        .or(d.sizes)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| s.0)
                        .collect(),
                }
            },
            backing_size: file.backing_size.map(|s| s.0),
        };
        spec.validate().map_err(|(f, m)| err(f, m))?;
        Ok(spec)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one check per spec field, each with its own message; read as a list"
    )]
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.layers == 0 || self.layers > MAX_LAYERS {
            return Err((
                "layers",
                format!(
                    "{} is out of range; write a number from 1 to {MAX_LAYERS}",
                    self.layers
                ),
            ));
        }
        if self.sizes.is_empty() {
            return Err((
                "sizes",
                "is empty; list at least one size, e.g. [\"4K\"]".into(),
            ));
        }
        if let Some(s) = self.sizes.iter().find(|s| **s > MAX_SIZE) {
            return Err((
                "sizes",
                format!("{s} bytes is above the limit; use at most \"16G\""),
            ));
        }
        if has_duplicates(&self.sizes) {
            return Err(("sizes", "lists a size twice; list each once".into()));
        }
        if self.file_layers.is_empty() {
            return Err((
                "file_layers",
                "is empty; list at least one layer, e.g. [1]".into(),
            ));
        }
        if let Some(l) = self
            .file_layers
            .iter()
            .find(|l| **l == 0 || **l > self.layers)
        {
            return Err((
                "file_layers",
                format!(
                    "layer {l} does not exist; use 1 (topmost lower) to {} (layers)",
                    self.layers
                ),
            ));
        }
        if has_duplicates(&self.file_layers) {
            return Err(("file_layers", "lists a layer twice; list each once".into()));
        }
        if self.repetitions == 0 || self.repetitions > 100_000 {
            return Err((
                "repetitions",
                format!(
                    "{} is out of range; write a number from 1 to 100000",
                    self.repetitions
                ),
            ));
        }
        if self.filesystems.is_empty() {
            return Err((
                "filesystems",
                "is empty; list at least one of dir, tmpfs, ext4, xfs, btrfs".into(),
            ));
        }
        if has_duplicates(&self.filesystems) {
            return Err((
                "filesystems",
                "lists a filesystem twice; list each once".into(),
            ));
        }
        if self.mount_options.is_empty() {
            return Err((
                "mount_options",
                "is empty; list at least one option set, e.g. [[]] for none".into(),
            ));
        }
        for set in &self.mount_options {
            for o in set {
                if !KNOWN_OPTIONS.iter().any(|(k, _)| k == o) {
                    let known: Vec<&str> = KNOWN_OPTIONS.iter().map(|(k, _)| *k).collect();
                    return Err((
                        "mount_options",
                        format!(
                            "unknown overlay option {o:?}; use one of {} (lowerdir, upperdir and workdir are the lab's)",
                            known.join(", ")
                        ),
                    ));
                }
            }
            let keys: Vec<&str> = set
                .iter()
                .map(|o| o.split('=').next().unwrap_or(o))
                .collect();
            if has_duplicates(&keys) {
                return Err((
                    "mount_options",
                    format!("{set:?} sets an option twice; give each option once per set"),
                ));
            }
        }
        if has_duplicates(&self.mount_options) {
            return Err((
                "mount_options",
                "lists an option set twice; list each once".into(),
            ));
        }
        if self.ops.is_empty() {
            return Err((
                "ops",
                "is empty; list at least one op, e.g. [\"first_write\"]".into(),
            ));
        }
        if has_duplicates(&self.ops) {
            return Err(("ops", "lists an op twice; list each once".into()));
        }
        if self.cache.is_empty() {
            return Err(("cache", "is empty; write [\"warm\"]".into()));
        }
        if has_duplicates(&self.cache) {
            return Err(("cache", "lists a state twice; list each once".into()));
        }
        let c = &self.concurrency;
        if c.threads.is_empty() {
            return Err((
                "concurrency.threads",
                "is empty; list at least one thread count, e.g. [4]".into(),
            ));
        }
        if let Some(t) = c.threads.iter().find(|t| **t == 0 || **t > MAX_THREADS) {
            return Err((
                "concurrency.threads",
                format!("{t} is out of range; write numbers from 1 to {MAX_THREADS}"),
            ));
        }
        if has_duplicates(&c.threads) {
            return Err((
                "concurrency.threads",
                "lists a count twice; list each once".into(),
            ));
        }
        if c.sizes.is_empty() {
            return Err((
                "concurrency.sizes",
                "is empty; list at least one size, e.g. [\"64K\"]".into(),
            ));
        }
        if let Some(s) = c.sizes.iter().find(|s| **s > MAX_SIZE) {
            return Err((
                "concurrency.sizes",
                format!("{s} bytes is above the limit; use at most \"16G\""),
            ));
        }
        if has_duplicates(&c.sizes) {
            return Err((
                "concurrency.sizes",
                "lists a size twice; list each once".into(),
            ));
        }
        Ok(())
    }

    /// `--quick`: tiny sizes, two repetitions, everything else as specified.
    #[must_use]
    pub fn quick(mut self) -> Self {
        self.sizes = QUICK_SIZES.to_vec();
        self.concurrency.sizes = QUICK_SIZES[..1].to_vec();
        self.repetitions = QUICK_REPETITIONS.min(self.repetitions);
        self
    }

    /// Bytes of lower-layer files on each backing filesystem.
    pub fn layer_bytes(&self) -> u64 {
        let conc = if self.ops.iter().any(|o| o.shape() == Shape::Concurrent) {
            self.concurrency.sizes.iter().sum::<u64>() * u64::from(self.concurrency.max_threads())
        } else {
            0
        };
        (self.sizes.iter().sum::<u64>() + conc) * self.file_layers.len() as u64
    }
}

fn has_duplicates<T: PartialEq>(v: &[T]) -> bool {
    v.iter()
        .enumerate()
        .any(|(i, a)| v[..i].iter().any(|b| a == b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses() {
        let s = Spec::default_spec();
        assert_eq!(s.layers, 4);
        assert_eq!(
            s.sizes,
            vec![4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]
        );
        assert_eq!(s.filesystems, vec![FsKind::Ext4, FsKind::Tmpfs]);
        assert_eq!(s.mount_options.len(), 2);
        assert_eq!(s.ops, Op::ALL.to_vec());
        assert_eq!(s.cache, vec![Cache::Warm]);
        assert_eq!(s.concurrency.threads, vec![1, 4]);
        assert_eq!(s.concurrency.sizes, vec![64 << 10]);
    }

    #[test]
    fn partial_spec_takes_defaults() {
        let s = Spec::parse("filesystems = [\"ext4\"]\nsizes = [4096, \"1M\"]\n", "t").unwrap();
        assert_eq!(s.filesystems, vec![FsKind::Ext4]);
        assert_eq!(s.sizes, vec![4096, 1 << 20]);
        assert_eq!(s.layers, 4);
        assert_eq!(s.repetitions, 10);
    }

    #[test]
    fn errors_are_one_line_and_name_the_field() {
        for (text, field, hint) in [
            ("laers = 3", "line 1", "unknown field `laers`"),
            ("layers = 0", "layers", "1 to 128"),
            ("layers = \"x\"", "layers (line 1)", "invalid type"),
            ("sizes = [\"4Q\"]", "sizes (line 1)", "unknown unit"),
            (
                "filesystems = [\"zfs\"]",
                "filesystems (line 1)",
                "unknown variant",
            ),
            (
                "mount_options = [[\"nope\"]]",
                "mount_options",
                "unknown overlay option",
            ),
            ("file_layers = [5]", "file_layers", "does not exist"),
            ("ops = [\"first_write\", \"first_write\"]", "ops", "twice"),
            (
                "ops = [\n  \"first_write\",\n  \"bogus\",\n]",
                "ops (line 3)",
                "unknown variant",
            ),
            ("cache = []", "cache", "empty"),
            ("layers = ", "layers (line 1)", "quoted"),
            (
                "[concurrency]\nthreads = [0]",
                "concurrency.threads",
                "1 to 64",
            ),
            ("[concurrency]\nsizes = []", "concurrency.sizes", "empty"),
            (
                "[concurrency]\nthread = [2]",
                "line 2",
                "unknown field `thread`",
            ),
        ] {
            let e = Spec::parse(text, "t.toml").unwrap_err();
            let line = e.to_string();
            assert!(!line.contains('\n'), "{text}: multi-line error: {line}");
            assert_eq!(e.field, field, "{text}: {line}");
            assert!(line.contains(hint), "{text}: {line}");
            assert!(line.starts_with("spec t.toml: "), "{line}");
        }
    }

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("x").is_err());
        assert_eq!(format_size(4096), "4K");
        assert_eq!(format_size(64 << 20), "64M");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn quick_shrinks() {
        let s = Spec::default_spec().quick();
        assert_eq!(s.sizes, QUICK_SIZES);
        assert_eq!(s.repetitions, 2);
    }
}
