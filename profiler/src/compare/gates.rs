//! What a comparison gates on: metrics, thresholds (`p99=+10%`), and the `.cowprof-ci.toml` file.
//!
//! A threshold's sign names the direction that is worse for its metric (`+` for latencies and
//! counts, `-` for throughput and efficiency); its size is how much change is tolerated, relative
//! (`%`) or, for counts, absolute (per operation). Errors are one line naming the file or flag and
//! the fix.

use std::{collections::BTreeMap, fmt, path::Path, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::event::PHASE_NAMES;

/// Name of the config file picked up from the working directory.
pub const CONFIG_FILE: &str = ".cowprof-ci.toml";

/// Default confidence of the intervals (two-sided).
pub const DEFAULT_CONFIDENCE: f64 = 0.99;

/// One comparable metric of a cell.
///
/// `Phase` metrics name a copy-up phase and a quantile of its time per copy-up (`fsync.p50`,
/// `data.p99`, `offcpu_block.p50`; phases as in [`PHASE_NAMES`]), from the cells' `phases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    P50,
    P90,
    P99,
    Max,
    MbPerS,
    Efficiency,
    CopyUps,
    BytesCopied,
    /// Index into [`PHASE_NAMES`], and the quantile.
    Phase(u8, PhaseQuantile),
}

/// The quantiles a cell records per phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PhaseQuantile {
    P50,
    P99,
}

impl PhaseQuantile {
    /// The percentile (50 or 99).
    pub fn percent(self) -> u8 {
        match self {
            Self::P50 => 50,
            Self::P99 => 99,
        }
    }
}

/// `metadata.p50`, `metadata.p99`, ... in [`PHASE_NAMES`] order.
const PHASE_METRIC_NAMES: [[&str; 2]; 7] = [
    ["metadata.p50", "metadata.p99"],
    ["data.p50", "data.p99"],
    ["fsync.p50", "fsync.p99"],
    ["link.p50", "link.p99"],
    ["offcpu_block.p50", "offcpu_block.p99"],
    ["offcpu_other.p50", "offcpu_other.p99"],
    ["other.p50", "other.p99"],
];

impl Metric {
    pub const ALL: [Self; 8] = [
        Self::P50,
        Self::P90,
        Self::P99,
        Self::Max,
        Self::MbPerS,
        Self::Efficiency,
        Self::CopyUps,
        Self::BytesCopied,
    ];

    /// Every phase metric, phases in [`PHASE_NAMES`] order, p50 before p99.
    pub fn phases() -> impl Iterator<Item = Self> {
        (0..PHASE_NAMES.len()).flat_map(|i| {
            #[allow(clippy::cast_possible_truncation)]
            let i = i as u8;
            [
                Self::Phase(i, PhaseQuantile::P50),
                Self::Phase(i, PhaseQuantile::P99),
            ]
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P99 => "p99",
            Self::Max => "max",
            Self::MbPerS => "mb_per_s",
            Self::Efficiency => "efficiency",
            Self::CopyUps => "copy_ups",
            Self::BytesCopied => "bytes_copied",
            Self::Phase(i, q) => {
                PHASE_METRIC_NAMES[usize::from(i)][usize::from(q == PhaseQuantile::P99)]
            }
        }
    }

    /// The phase name of a phase metric (`fsync` of `fsync.p50`).
    pub fn phase_name(self) -> Option<&'static str> {
        match self {
            Self::Phase(i, _) => Some(PHASE_NAMES[usize::from(i)]),
            _ => None,
        }
    }

    /// True when a larger value is worse (latencies, counts); false for MB/s and efficiency.
    pub fn higher_is_worse(self) -> bool {
        !matches!(self, Self::MbPerS | Self::Efficiency)
    }

    /// Counts compared exactly (per operation), without a statistical test.
    pub fn is_count(self) -> bool {
        matches!(self, Self::CopyUps | Self::BytesCopied)
    }

    fn known() -> String {
        format!(
            "{}, PHASE.p50, PHASE.p99 (PHASE: {})",
            Self::ALL.map(Self::as_str).join(", "),
            PHASE_NAMES.join(", ")
        )
    }
}

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|()| serde::de::Error::custom(format!("unknown metric `{s}`")))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL
            .into_iter()
            .chain(Self::phases())
            .find(|m| m.as_str() == s)
            .ok_or(())
    }
}

/// How much worse a metric may get before its gate fails.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tolerance {
    /// Relative change, as a fraction (0.10 for 10 %).
    Relative { fraction: f64 },
    /// Absolute change per operation, in the metric's unit (counts: copy-ups, bytes).
    Absolute { amount: f64 },
}

/// A gated metric with its tolerance, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub metric: Metric,
    pub tolerance: Tolerance,
    /// The text it came from, e.g. `p99=+10%`.
    pub text: String,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{origin}: cannot read it: {source}; pass a readable file to --config")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {detail}; see docs/compare.md, \"Thresholds\", for the format")]
    Toml { origin: String, detail: String },
    #[error("{origin}: unknown metric `{name}`; known metrics: {known}")]
    UnknownMetric {
        origin: String,
        name: String,
        known: String,
    },
    #[error("{origin}: threshold `{text}`: {reason}")]
    BadThreshold {
        origin: String,
        text: String,
        reason: String,
    },
    #[error("{origin}: confidence {value} is outside (0.5, 1); write e.g. confidence = 0.99")]
    Confidence { origin: String, value: f64 },
}

/// `.cowprof-ci.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    confidence: Option<f64>,
    /// Prefer normalized verdicts where the run measured a reference (default true).
    normalize: Option<bool>,
    /// Gate only these ops (default: every op in both files).
    ops: Option<Vec<String>>,
    #[serde(default)]
    thresholds: BTreeMap<String, ThresholdValue>,
}

/// A threshold in the file: `p99 = "+10%"`, or a phase's as a dotted key (`fsync.p50 = "+10%"`
/// is the table `fsync = { p50 = "+10%" }` in TOML; `"fsync.p50" = "+10%"` works too).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ThresholdValue {
    Text(String),
    Table(BTreeMap<String, String>),
}

/// Everything that decides verdicts and gates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gates {
    pub thresholds: Vec<Threshold>,
    pub confidence: f64,
    pub normalize: bool,
    /// Ops gated; `None` = all.
    pub ops: Option<Vec<String>>,
    /// Where the settings came from (`defaults`, a file, `--threshold`).
    pub source: String,
}

/// The gates used when neither a config file nor `--threshold` gives any, chosen from the
/// run-to-run drift that scripts/compare-fp measured on a shared 2-core machine
/// (docs/compare.md, "Noise", with the false-positive rate they give there).
pub const DEFAULT_THRESHOLDS: &[&str] = &[
    "p50=+25%",
    "p99=+50%",
    "efficiency=-25%",
    "copy_ups=+0",
    "bytes_copied=+0",
];

/// The ops the default gates apply to: the ones that copy up (their latency has a same-run
/// reference, so it is judged normalized). Controls such as `create` drift more between runs.
pub const DEFAULT_OPS: &[&str] = &["first_write", "open_trunc", "truncate", "chmod"];

impl Default for Gates {
    fn default() -> Self {
        Self {
            thresholds: DEFAULT_THRESHOLDS
                .iter()
                .map(|t| parse_threshold(t, "default").expect("built-in thresholds parse"))
                .collect(),
            confidence: DEFAULT_CONFIDENCE,
            normalize: true,
            ops: Some(DEFAULT_OPS.iter().map(|o| (*o).to_owned()).collect()),
            source: "built-in defaults".to_owned(),
        }
    }
}

impl Gates {
    pub fn threshold(&self, metric: Metric) -> Option<&Threshold> {
        self.thresholds.iter().find(|t| t.metric == metric)
    }

    pub fn gates_op(&self, op: &str) -> bool {
        self.ops
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| o == op))
    }

    /// Settings from `config` (or `.cowprof-ci.toml` in `cwd` if it exists), then `flags`
    /// (`--threshold`), which replace the file's threshold of the same metric. Without either,
    /// [`DEFAULT_THRESHOLDS`].
    pub fn load(config: Option<&Path>, cwd: &Path, flags: &[String]) -> Result<Self, GateError> {
        let auto = cwd.join(CONFIG_FILE);
        let path = config
            .map(Path::to_path_buf)
            .or_else(|| auto.is_file().then_some(auto));
        let mut gates = match &path {
            Some(p) => {
                let origin = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| GateError::Read {
                    origin: origin.clone(),
                    source,
                })?;
                Self::from_toml(&text, &origin)?
            }
            None if flags.is_empty() => Self::default(),
            None => Self {
                thresholds: Vec::new(),
                ops: None,
                source: String::new(),
                ..Self::default()
            },
        };
        for flag in flags {
            let t = parse_threshold(flag, "--threshold")?;
            gates.thresholds.retain(|old| old.metric != t.metric);
            gates.thresholds.push(t);
        }
        if !flags.is_empty() {
            gates.source = if gates.source.is_empty() {
                "--threshold".to_owned()
            } else {
                format!("{} + --threshold", gates.source)
            };
        }
        gates.thresholds.sort_by_key(|t| t.metric);
        Ok(gates)
    }

    /// Parses a config file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, GateError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| GateError::Toml {
            origin: origin.to_owned(),
            detail: toml_detail(&e, text),
        })?;
        let confidence = file.confidence.unwrap_or(DEFAULT_CONFIDENCE);
        if !(confidence > 0.5 && confidence < 1.0) {
            return Err(GateError::Confidence {
                origin: origin.to_owned(),
                value: confidence,
            });
        }
        let mut thresholds = Vec::new();
        for (name, value) in &file.thresholds {
            match value {
                ThresholdValue::Text(value) => {
                    thresholds.push(parse_threshold(&format!("{name}={value}"), origin)?);
                }
                ThresholdValue::Table(quantiles) => {
                    for (q, value) in quantiles {
                        thresholds.push(parse_threshold(&format!("{name}.{q}={value}"), origin)?);
                    }
                }
            }
        }
        Ok(Self {
            thresholds,
            confidence,
            normalize: file.normalize.unwrap_or(true),
            ops: file.ops,
            source: origin.to_owned(),
        })
    }
}

/// One line out of a toml error: position and message, no source snippet.
fn toml_detail(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line} column {col}: {msg}")
        }
        None => msg,
    }
}

/// Parses `METRIC=±N%` or `METRIC=±N` (counts only). The sign must be the metric's worse
/// direction; without a sign that direction is assumed.
pub fn parse_threshold(text: &str, origin: &str) -> Result<Threshold, GateError> {
    let bad = |reason: String| GateError::BadThreshold {
        origin: origin.to_owned(),
        text: text.to_owned(),
        reason,
    };
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| bad("write METRIC=CHANGE, e.g. p99=+10% or bytes_copied=+0".to_owned()))?;
    let name = name.trim();
    let metric: Metric = name.parse().map_err(|()| GateError::UnknownMetric {
        origin: origin.to_owned(),
        name: name.to_owned(),
        known: Metric::known(),
    })?;
    let worse = if metric.higher_is_worse() { '+' } else { '-' };
    let value = value.trim();
    let (sign, rest) = match value.chars().next() {
        Some(c @ ('+' | '-')) => (c, &value[1..]),
        _ => (worse, value),
    };
    if sign != worse {
        return Err(bad(format!(
            "{metric} gets worse {}; write {metric}={worse}{rest}",
            if worse == '+' { "upward" } else { "downward" }
        )));
    }
    let (number, relative) = match rest.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (rest.trim(), false),
    };
    let amount: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| bad(format!("`{number}` is not a non-negative number")))?;
    let tolerance = if relative {
        Tolerance::Relative {
            fraction: amount / 100.0,
        }
    } else if metric.is_count() {
        Tolerance::Absolute { amount }
    } else if amount == 0.0 {
        Tolerance::Relative { fraction: 0.0 }
    } else {
        return Err(bad(format!(
            "{metric} takes a relative threshold; write {metric}={worse}{number}%"
        )));
    };
    Ok(Threshold {
        metric,
        tolerance,
        text: format!(
            "{metric}={worse}{number}{}",
            if relative { "%" } else { "" }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse() {
        let t = parse_threshold("p99=+10%", "t").unwrap();
        assert_eq!(t.metric, Metric::P99);
        assert_eq!(t.tolerance, Tolerance::Relative { fraction: 0.10 });
        let t = parse_threshold("efficiency=-5%", "t").unwrap();
        assert_eq!(t.tolerance, Tolerance::Relative { fraction: 0.05 });
        let t = parse_threshold("bytes_copied=+0", "t").unwrap();
        assert_eq!(t.tolerance, Tolerance::Absolute { amount: 0.0 });
        assert_eq!(parse_threshold("p50=7%", "t").unwrap().text, "p50=+7%");
    }

    #[test]
    fn bad_thresholds_say_what_to_write() {
        let e = parse_threshold("p99=-10%", "--threshold").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--threshold: threshold `p99=-10%`: p99 gets worse upward; write p99=+10%"
        );
        let e = parse_threshold("p98=+1%", "--threshold").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("--threshold: unknown metric `p98`; known metrics: p50"));
        let e = parse_threshold("p50=+5", "x").unwrap_err();
        assert!(e
            .to_string()
            .ends_with("p50 takes a relative threshold; write p50=+5%"));
        assert!(parse_threshold("p50", "x").is_err());
        assert!(parse_threshold("p50=+ten%", "x").is_err());
    }

    #[test]
    fn phase_thresholds() {
        let t = parse_threshold("fsync.p50=+10%", "t").unwrap();
        assert_eq!(t.metric.phase_name(), Some("fsync"));
        assert_eq!(t.metric.as_str(), "fsync.p50");
        assert_eq!(t.tolerance, Tolerance::Relative { fraction: 0.10 });
        assert_eq!(
            parse_threshold("offcpu_block.p99=20%", "t").unwrap().text,
            "offcpu_block.p99=+20%"
        );
        let e = parse_threshold("fsync.p75=+1%", "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PHASE.p50, PHASE.p99 (PHASE: metadata, data,"),
            "{e}"
        );
        let e = parse_threshold("fsync.p50=+5", "x")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("write fsync.p50=+5%"), "{e}");
        let g = Gates::from_toml(
            "[thresholds]\nfsync.p50 = \"+10%\"\nfsync.p99 = \"+30%\"\n\"data.p50\" = \"+5%\"\np99 = \"+50%\"\n",
            "ci.toml",
        )
        .unwrap();
        let mut names: Vec<&str> = g.thresholds.iter().map(|t| t.text.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "data.p50=+5%",
                "fsync.p50=+10%",
                "fsync.p99=+30%",
                "p99=+50%"
            ]
        );
        let e = Gates::from_toml("[thresholds]\nfsync.p75 = \"+1%\"\n", "ci.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ci.toml: unknown metric `fsync.p75`"),
            "{e}"
        );
        // Serialized as its name, and read back.
        let json = serde_json::to_string(&Metric::Phase(2, PhaseQuantile::P99)).unwrap();
        assert_eq!(json, "\"fsync.p99\"");
        let back: Metric = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Metric::Phase(2, PhaseQuantile::P99));
    }

    #[test]
    fn config_file() {
        let g = Gates::from_toml(
            "confidence = 0.95\nops = [\"first_write\"]\n[thresholds]\np99 = \"+10%\"\ncopy_ups = \"+0\"\n",
            "ci.toml",
        )
        .unwrap();
        assert!((g.confidence - 0.95).abs() < 1e-12);
        assert_eq!(g.thresholds.len(), 2);
        assert!(g.gates_op("first_write") && !g.gates_op("create"));
        let e = Gates::from_toml("[thresholds]\np99 = +10%\n", "ci.toml").unwrap_err();
        assert!(e.to_string().starts_with("ci.toml: line 2 column"), "{e}");
        assert!(!e.to_string().contains('\n'));
        let e = Gates::from_toml("treshold = 1\n", "ci.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `treshold`"), "{e}");
        let e = Gates::from_toml("[thresholds]\nlatency = \"+1%\"\n", "ci.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ci.toml: unknown metric `latency`"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_file_and_defaults_apply_alone() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gates::load(None, dir.path(), &[]).unwrap();
        assert_eq!(g.thresholds.len(), DEFAULT_THRESHOLDS.len());
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[thresholds]\np99 = \"+10%\"\n",
        )
        .unwrap();
        let g = Gates::load(
            None,
            dir.path(),
            &["p99=+30%".to_owned(), "p50=+5%".to_owned()],
        )
        .unwrap();
        assert_eq!(
            g.thresholds
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>(),
            ["p50=+5%", "p99=+30%"]
        );
    }
}
