//! Medians and percentile-bootstrap intervals of the benches' per-pair (or per-block) figures.
//! The resampling uses a fixed-seed xorshift generator, so a run's intervals are reproducible.

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The 95 % percentile-bootstrap interval `(lo, hi)` of a statistic of `n` samples: `iters`
/// resamples of `n` indices drawn with replacement, each passed to `stat`. Paired series (the
/// same blocks of rounds) are resampled together by indexing all of them with the same indices.
pub fn bootstrap_ci(n: usize, iters: usize, mut stat: impl FnMut(&[usize]) -> f64) -> (f64, f64) {
    if n == 0 || iters == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut idx = vec![0usize; n];
    let mut stats: Vec<f64> = (0..iters)
        .map(|_| {
            for i in &mut idx {
                *i = (next() % n as u64) as usize;
            }
            stat(&idx)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * (iters - 1) as f64).round() as usize).min(iters - 1)];
    (at(0.025), at(0.975))
}

/// The median of `v` and its 95 % percentile-bootstrap interval (`iters` resamples).
pub fn median_ci(v: &[f64], iters: usize) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut s = Vec::with_capacity(v.len());
    let (lo, hi) = bootstrap_ci(v.len(), iters, |idx| {
        s.clear();
        s.extend(idx.iter().map(|&i| v[i]));
        median(&s)
    });
    (median(v), lo, hi)
}

/// `num / den`, or +∞ when `den` is not above zero: an overhead compared with one that cannot
/// be told from zero has no finite ratio.
fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        f64::INFINITY
    }
}

/// The ratio of the medians of two paired series (`num[i]` and `den[i]` come from the same block
/// of rounds, e.g. two tracers' overheads over the same untraced round) with its 95 % bootstrap
/// interval, the blocks resampled together. A resample whose `den` median is not above zero
/// counts as +∞, so an upper bound of +∞ says the denominator's overhead is not distinguishable
/// from zero. NaN if the series are empty or of different lengths.
pub fn ratio_of_medians_ci(num: &[f64], den: &[f64], iters: usize) -> (f64, f64, f64) {
    if num.is_empty() || num.len() != den.len() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let (mut a, mut b) = (Vec::with_capacity(num.len()), Vec::with_capacity(den.len()));
    let (lo, hi) = bootstrap_ci(num.len(), iters, |idx| {
        a.clear();
        b.clear();
        a.extend(idx.iter().map(|&i| num[i]));
        b.extend(idx.iter().map(|&i| den[i]));
        ratio(median(&a), median(&b))
    });
    (ratio(median(num), median(den)), lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
        assert!(median(&[]).is_nan());
        assert!((min(&[2.0, 1.0]) - 1.0).abs() < 1e-12 && (max(&[2.0, 1.0]) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_interval() {
        let v: Vec<f64> = (1..=11).map(f64::from).collect();
        let (m, lo, hi) = median_ci(&v, 2000);
        assert!((m - 6.0).abs() < 1e-12);
        assert!(lo <= m && m <= hi && lo >= 1.0 && hi <= 11.0 && lo < hi);
        assert_eq!(median_ci(&[3.0; 10], 500), (3.0, 3.0, 3.0));
        assert!(median_ci(&[], 10).0.is_nan());
    }

    #[test]
    fn bootstrap_is_reproducible_and_resamples_indices() {
        let v: Vec<f64> = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0].to_vec();
        assert_eq!(median_ci(&v, 1000), median_ci(&v, 1000));
        // Every resample has n indices, each in 0..n.
        let mut seen = [false; 7];
        let (lo, hi) = bootstrap_ci(7, 200, |idx| {
            assert_eq!(idx.len(), 7);
            for &i in idx {
                seen[i] = true;
            }
            idx.len() as f64
        });
        assert_eq!((lo, hi), (7.0, 7.0));
        assert!(seen.iter().all(|s| *s));
        assert!(bootstrap_ci(0, 10, |_| 1.0).0.is_nan());
    }

    #[test]
    fn ratio_of_paired_medians() {
        // The numerator is exactly twice the denominator in every block: ratio 2, no spread.
        let den: Vec<f64> = (1..=10).map(f64::from).collect();
        let num: Vec<f64> = den.iter().map(|d| d * 2.0).collect();
        let (r, lo, hi) = ratio_of_medians_ci(&num, &den, 1000);
        assert!((r - 2.0).abs() < 1e-12 && (lo - 2.0).abs() < 1e-12 && (hi - 2.0).abs() < 1e-12);

        // Noisy but clearly above 1: the interval holds the point estimate and stays above 1.
        let den = [10.0, 12.0, 9.0, 11.0, 10.5, 9.5, 10.0, 11.5, 8.5, 10.0];
        let num = [31.0, 29.0, 30.0, 33.0, 28.0, 30.5, 32.0, 29.5, 30.0, 31.0];
        let (r, lo, hi) = ratio_of_medians_ci(&num, &den, 2000);
        assert!((r - 30.25 / 10.0).abs() < 1e-12);
        assert!(lo <= r && r <= hi && lo > 2.0 && hi < 4.0);

        // A denominator that cannot be told from zero: the upper bound is unbounded.
        let den = [1.0, -1.0, 0.5, -0.5, 0.0, 1.0, -1.0, 0.2, -0.2, 0.1];
        let (_, _, hi) = ratio_of_medians_ci(&num, &den, 2000);
        assert!(hi.is_infinite() && hi > 0.0);
        let (r, _, _) = ratio_of_medians_ci(&[1.0, 2.0], &[-1.0, -2.0], 100);
        assert!(r.is_infinite());

        assert!(ratio_of_medians_ci(&[], &[], 10).0.is_nan());
        assert!(ratio_of_medians_ci(&[1.0], &[1.0, 2.0], 10).0.is_nan());
    }
}
