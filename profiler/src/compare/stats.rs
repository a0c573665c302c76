//! The statistics: percentile-bootstrap confidence intervals of the ratio new/base of a quantile
//! (p50, p90, p99) or of the mean, from the recorded values of two hdrhistograms.
//!
//! Each resample draws `n` values with replacement from each side's recorded values (every
//! histogram bucket repeated by its count, at the bucket's highest equivalent value), computes
//! the statistic on both, and keeps the ratio; the interval is the central `confidence` share of
//! the ratios. The generator is seeded per comparison key, so the same two files always give the
//! same intervals. Drawing is done as counts over the sorted values, O(n) per resample.

// Sample sizes and resample counts are far below 2^52: f64 holds them exactly.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use hdrhistogram::Histogram;

/// Resamples per interval.
pub const RESAMPLES: usize = 2000;
/// Fewer recorded values than this on either side: no test.
pub const MIN_SAMPLES: usize = 8;

/// Recorded values of one histogram, sorted.
#[derive(Debug, Clone)]
pub struct Sample {
    sorted: Vec<u64>,
}

/// Statistics the bootstrap estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Quantile(u8),
    Mean,
}

impl Sample {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let mut sorted = Vec::with_capacity(usize::try_from(h.len()).unwrap_or(0));
        for v in h.iter_recorded() {
            let n = usize::try_from(v.count_at_value()).unwrap_or(0);
            sorted.extend(std::iter::repeat_n(v.value_iterated_to(), n));
        }
        sorted.sort_unstable();
        Self { sorted }
    }

    pub fn from_values(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        Self { sorted: values }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Nearest-rank estimate of `stat` (0.0 when empty).
    pub fn estimate(&self, stat: Statistic) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        match stat {
            Statistic::Quantile(p) => self.sorted[rank(self.sorted.len(), p)] as f64,
            Statistic::Mean => {
                self.sorted.iter().map(|v| *v as f64).sum::<f64>() / self.sorted.len() as f64
            }
        }
    }

    /// `stat` of one resample: `counts[i]` draws of `sorted[i]`.
    fn resampled(&self, rng: &mut fastrand::Rng, counts: &mut [u32], stat: Statistic) -> f64 {
        let n = self.sorted.len();
        counts.fill(0);
        for _ in 0..n {
            counts[rng.usize(..n)] += 1;
        }
        match stat {
            Statistic::Quantile(p) => {
                let want = rank(n, p) + 1;
                let mut seen = 0usize;
                for (i, c) in counts.iter().enumerate() {
                    seen += *c as usize;
                    if seen >= want {
                        return self.sorted[i] as f64;
                    }
                }
                self.sorted[n - 1] as f64
            }
            Statistic::Mean => {
                counts
                    .iter()
                    .zip(&self.sorted)
                    .map(|(c, v)| f64::from(*c) * *v as f64)
                    .sum::<f64>()
                    / n as f64
            }
        }
    }
}

/// 0-based nearest rank of the `p`-th percentile among `n` values.
fn rank(n: usize, p: u8) -> usize {
    let r = (f64::from(p) / 100.0 * n as f64).ceil() as usize;
    r.clamp(1, n) - 1
}

/// Ratio new/base of a statistic with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioCi {
    pub ratio: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Bootstrap interval of `stat(new) / stat(base)`; `None` when a side has fewer than
/// [`MIN_SAMPLES`] values or a zero estimate.
pub fn bootstrap_ratio(
    base: &Sample,
    new: &Sample,
    stat: Statistic,
    confidence: f64,
    seed: u64,
) -> Option<RatioCi> {
    if base.len() < MIN_SAMPLES || new.len() < MIN_SAMPLES {
        return None;
    }
    let (b0, n0) = (base.estimate(stat), new.estimate(stat));
    if b0 <= 0.0 {
        return None;
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cb = vec![0u32; base.len()];
    let mut cn = vec![0u32; new.len()];
    let mut ratios: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let b = base.resampled(&mut rng, &mut cb, stat);
            let n = new.resampled(&mut rng, &mut cn, stat);
            n / b.max(f64::MIN_POSITIVE)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| ratios[((q * RESAMPLES as f64).round() as usize).min(RESAMPLES - 1)];
    Some(RatioCi {
        ratio: n0 / b0,
        lo: at(tail),
        hi: at(1.0 - tail),
    })
}

/// A stable seed for one comparison key (FNV-1a), so intervals do not depend on order.
pub fn seed_for(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: impl IntoIterator<Item = u64>) -> Sample {
        Sample::from_values(values.into_iter().collect())
    }

    #[test]
    fn same_values_give_a_unit_interval() {
        let s = sample((1..=50).map(|v| v * 1000));
        let ci = bootstrap_ratio(&s, &s.clone(), Statistic::Quantile(50), 0.99, 1).unwrap();
        assert!((ci.ratio - 1.0).abs() < 1e-12);
        assert!(ci.lo < 1.0 && ci.hi > 1.0, "{ci:?}");
    }

    #[test]
    fn a_doubling_is_detected_and_deterministic() {
        let base = sample((1..=40).map(|v| 1000 + v * 10));
        let new = sample((1..=40).map(|v| 2000 + v * 20));
        let a = bootstrap_ratio(&base, &new, Statistic::Quantile(50), 0.99, 7).unwrap();
        let b = bootstrap_ratio(&base, &new, Statistic::Quantile(50), 0.99, 7).unwrap();
        assert_eq!(a, b);
        assert!(a.lo > 1.5 && a.hi < 2.5, "{a:?}");
        let m = bootstrap_ratio(&base, &new, Statistic::Mean, 0.99, 7).unwrap();
        assert!(m.lo > 1.8 && m.hi < 2.2, "{m:?}");
    }

    #[test]
    fn too_few_values_are_not_tested() {
        let s = sample([1, 2, 3]);
        assert!(bootstrap_ratio(&s, &s, Statistic::Mean, 0.99, 1).is_none());
    }

    #[test]
    fn ranks() {
        assert_eq!(rank(10, 50), 4);
        assert_eq!(rank(10, 99), 9);
        assert_eq!(rank(1, 50), 0);
        assert_eq!(rank(200, 99), 197);
    }

    #[test]
    fn histogram_values_come_back() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in [100, 100, 200, 5000] {
            h.record(v).unwrap();
        }
        let s = Sample::from_histogram(&h);
        assert_eq!(s.sorted, vec![100, 100, 200, 5003]);
    }
}
