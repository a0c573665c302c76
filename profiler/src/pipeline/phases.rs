//! Copy-up phases in the summary: per-phase histograms per kind and per source layer, and the
//! "what dominates" reading of the slowest kinds, computed from the phases.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::{
    event::{CopyUpPhases, DataMethod, Event, PHASE_NAMES},
    fmt,
};

/// Phase histograms of one group of copy-ups.
#[derive(Clone, Default)]
pub struct PhaseGroup {
    count: u64,
    latency_sum: u64,
    /// Per phase in [`PHASE_NAMES`] order: `None` until an event shows the phase.
    hists: [Option<Histogram<u64>>; 7],
    sums: [u64; 7],
    splice_bytes: u64,
    clone_bytes: u64,
}

impl PhaseGroup {
    pub fn record(&mut self, latency_ns: u64, p: &CopyUpPhases) {
        self.count += 1;
        self.latency_sum += latency_ns;
        for (i, v) in p.values().into_iter().enumerate() {
            let Some(v) = v else { continue };
            self.sums[i] += v;
            self.hists[i]
                .get_or_insert_with(crate::pipeline::aggregate::latency_histogram)
                .saturating_record(v);
        }
        match p.data_method {
            Some(DataMethod::Clone) => self.clone_bytes += p.data_bytes.unwrap_or(0),
            Some(DataMethod::Splice) => self.splice_bytes += p.data_bytes.unwrap_or(0),
            None => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn stats(&self) -> PhaseStats {
        let phases = PHASE_NAMES
            .iter()
            .zip(&self.hists)
            .zip(self.sums)
            .filter_map(|((name, h), sum)| {
                h.as_ref().map(|h| {
                    (
                        (*name).to_owned(),
                        PhaseStat {
                            p50_ns: h.value_at_quantile(0.5),
                            p99_ns: h.value_at_quantile(0.99),
                            sum_ns: sum,
                        },
                    )
                })
            })
            .collect();
        PhaseStats {
            count: self.count,
            latency_sum_ns: self.latency_sum,
            splice_bytes: self.splice_bytes,
            clone_bytes: self.clone_bytes,
            phases,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PhaseStat {
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub sum_ns: u64,
}

/// One group's phases. A phase no event of the group could show is absent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PhaseStats {
    pub count: u64,
    pub latency_sum_ns: u64,
    pub splice_bytes: u64,
    pub clone_bytes: u64,
    /// Key: a phase name (`metadata`, `data`, `fsync`, `link`, `offcpu_block`,
    /// `offcpu_other`, `other`).
    pub phases: BTreeMap<String, PhaseStat>,
}

/// Phase groups of a run.
#[derive(Default)]
pub struct PhaseAggregate {
    pub by_kind: BTreeMap<String, PhaseGroup>,
    pub by_layer: BTreeMap<String, PhaseGroup>,
    /// "kind on mount", for the reading.
    pub by_kind_mount: BTreeMap<String, PhaseGroup>,
    /// Reused to build the `by_kind_mount` key of each event.
    key: String,
}

/// Records a copy-up under `key`, allocating the key only the first time it is seen.
fn add(map: &mut BTreeMap<String, PhaseGroup>, key: &str, latency_ns: u64, p: &CopyUpPhases) {
    match map.get_mut(key) {
        Some(g) => g.record(latency_ns, p),
        None => map.entry(key.to_owned()).or_default().record(latency_ns, p),
    }
}

impl PhaseAggregate {
    pub fn record(&mut self, ev: &Event, layer_key: &str, mount_key: &str) {
        let Some(p) = &ev.phases else { return };
        add(&mut self.by_kind, ev.kind.as_str(), ev.latency_ns, p);
        add(&mut self.by_layer, layer_key, ev.latency_ns, p);
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        key.push_str(ev.kind.as_str());
        key.push_str(" on ");
        key.push_str(mount_key);
        add(&mut self.by_kind_mount, &key, ev.latency_ns, p);
        self.key = key;
    }

    pub fn stats(map: &BTreeMap<String, PhaseGroup>) -> BTreeMap<String, PhaseStats> {
        map.iter().map(|(k, g)| (k.clone(), g.stats())).collect()
    }

    /// The reading of the slowest groups (by mean latency), at most `n` lines.
    pub fn explain(&self, n: usize) -> Vec<String> {
        let mut groups: Vec<(String, PhaseStats)> = Self::stats(&self.by_kind_mount)
            .into_iter()
            .filter(|(_, s)| s.count > 0 && s.latency_sum_ns > 0)
            .collect();
        groups.sort_by_key(|(_, s)| std::cmp::Reverse(s.latency_sum_ns / s.count));
        groups
            .iter()
            .take(n)
            .map(|(k, s)| explain_one(k, s))
            .collect()
    }
}

/// Human names of the phases, for the reading.
fn phase_words(name: &str) -> &'static str {
    match name {
        "metadata" => "metadata (xattrs, attributes)",
        "data" => "data copy",
        "fsync" => "fsync on the CPU",
        "link" => "link into the upper dir",
        "offcpu_block" => "waiting for block I/O",
        "offcpu_other" => "off the CPU on other waits (locks, journal commits, run queue)",
        _ => "other (between the probed steps, or in steps not visible)",
    }
}

/// One line: the group, its mean, the phases that make up most of it, and what would remove
/// the biggest one.
pub fn explain_one(key: &str, s: &PhaseStats) -> String {
    let total = s.latency_sum_ns.max(1);
    let mut shares: Vec<(&str, u64)> = s
        .phases
        .iter()
        .map(|(k, v)| (k.as_str(), v.sum_ns))
        .filter(|(_, v)| *v > 0)
        .collect();
    shares.sort_by_key(|(_, v)| std::cmp::Reverse(*v));
    let pct = |v: u64| v.saturating_mul(100) / total;
    let mut parts = Vec::new();
    let mut covered = 0;
    for (name, v) in &shares {
        if covered >= 80 || parts.len() == 3 {
            break;
        }
        covered += pct(*v);
        parts.push(format!("{} % {}", pct(*v), phase_words(name)));
    }
    let top = shares.first().map_or("other", |(n, _)| *n);
    let hint = match top {
        "fsync" | "offcpu_block" if s.phases.contains_key("fsync") => {
            let fsync = s.phases.get("fsync").map_or(0, |p| p.sum_ns);
            if fsync > 0 || top == "offcpu_block" {
                "; the fsync of each copy-up waits for the upper device: `volatile` (or `fsync=volatile` where the kernel offers it) skips it, a faster upper device shortens it"
            } else {
                ""
            }
        }
        "offcpu_block" => "; the upper device is the bottleneck",
        "data" if s.splice_bytes > 0 => {
            "; the bytes are copied by splice: an upper filesystem with reflink (xfs, btrfs) on the same device as the lower clones them instead"
        }
        "offcpu_other" => {
            "; the copying task mostly slept without block I/O: contention on locks or the journal, or a busy CPU"
        }
        "other"
            if ["metadata", "data", "fsync", "link"]
                .iter()
                .all(|k| s.phases.contains_key(*k)) =>
        {
            "; most time is outside the probed steps: the work dir's lookup and lock, the temp file's creation, the origin and metacopy xattrs"
        }
        "other" => "; most time is in phases this backend cannot see (`cowprof doctor` lists them)",
        _ => "",
    };
    format!(
        "{key}: {} copy-ups, mean {}: {}{hint}",
        s.count,
        fmt::ns(s.latency_sum_ns / s.count.max(1)),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(fsync: u64, block: u64, other: u64) -> CopyUpPhases {
        CopyUpPhases {
            fsync_ns: Some(fsync),
            offcpu_block_ns: Some(block),
            offcpu_other_ns: Some(0),
            data_method: Some(DataMethod::Splice),
            data_bytes: Some(10),
            other_ns: other,
            ..CopyUpPhases::default()
        }
    }

    #[test]
    fn stats_keep_only_shown_phases_and_the_reading_names_the_biggest() {
        let mut g = PhaseGroup::default();
        g.record(1000, &phases(700, 200, 100));
        g.record(1000, &phases(700, 200, 100));
        let s = g.stats();
        assert_eq!(s.count, 2);
        assert!(!s.phases.contains_key("data"), "data not shown");
        assert_eq!(s.phases["fsync"].sum_ns, 1400);
        // 700 ns at 2 significant digits: the highest value of its 4 ns bucket.
        assert_eq!(s.phases["fsync"].p50_ns, 703);
        assert_eq!(s.splice_bytes, 20);
        let line = explain_one("data_copy_up on /m", &s);
        assert!(
            line.starts_with("data_copy_up on /m: 2 copy-ups, mean "),
            "{line}"
        );
        assert!(
            line.contains("70 % fsync on the CPU, 20 % waiting for block I/O"),
            "{line}"
        );
        assert!(line.contains("volatile"), "{line}");
    }
}
