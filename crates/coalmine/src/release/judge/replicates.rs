//! How much less a cohort's requests tell than their number says (decision 0021): the
//! variance of a side's ratio estimate (errors per request, tokens per request) with whole
//! units as the draw, from the spread of random groups of units (the router's
//! `Replicate` dimension), over what independent requests would give. The random-group
//! method (Wolter, *Introduction to Variance Estimation*, ch. 2): with the side's units
//! split at random into K groups, the groups' estimates vary around the side's as the
//! side's own estimate varies, K times as much.
//!
//! Every sequential test divides a cohort stage's counts by the [`design_effect`] its
//! own measure shows over the groups (`weigh.rs`), so the tests see the effective
//! number of independent units' worth of requests.

use crate::release::judge::evalues::inverse_normal_cdf;

/// The upper confidence level a cohort side's design effect is taken at: its estimate
/// from sixteen groups is noisy, and an effect read low would let the tests grow surer
/// than the units allow.
pub const DESIGN_LEVEL: f64 = 0.95;

/// The fewest groups with traffic whose spread is worth reading: fewer, and the variance
/// is not estimated (the judge then waits for units).
pub const MIN_GROUPS: usize = 8;

/// The variance of `sum(numerators) / sum(denominators)` with the groups as the draw
/// (its linearization: each group's residual from the side's ratio, scaled by the side's
/// total), or `None` with fewer than [`MIN_GROUPS`] groups that have a denominator.
pub fn ratio_variance(groups: &[(f64, f64)]) -> Option<f64> {
    let seen: Vec<(f64, f64)> = groups.iter().copied().filter(|(_, d)| *d > 0.0).collect();
    let k = seen.len();
    if k < MIN_GROUPS {
        return None;
    }
    let total: f64 = seen.iter().map(|(_, d)| d).sum();
    let ratio = seen.iter().map(|(n, _)| n).sum::<f64>() / total;
    let squares: f64 = seen.iter().map(|(n, d)| ((n - ratio * d) / total).powi(2)).sum();
    Some(squares * k as f64 / (k as f64 - 1.0))
}

/// How many times the variance of a side's error rate with units as the draw exceeds the
/// binomial's, at an upper confidence bound of `level` (the estimate from K groups is a
/// chi-squared with K - 1 degrees of freedom, so it is taken at its upper bound), and
/// never below 1: a cohort never tells more than its requests would. `None` when the
/// groups are too few to say, or nothing failed yet (no spread to read).
pub fn design_effect(groups: &[(f64, f64)], level: f64) -> Option<f64> {
    let variance = ratio_variance(groups)?;
    let requests: f64 = groups.iter().map(|(_, d)| d.max(0.0)).sum();
    let errors: f64 = groups.iter().filter(|(_, d)| *d > 0.0).map(|(n, _)| n).sum();
    let rate = errors / requests;
    if !(rate > 0.0 && rate < 1.0) {
        return None;
    }
    let binomial = rate * (1.0 - rate) / requests;
    let df = (groups.iter().filter(|(_, d)| *d > 0.0).count() - 1) as f64;
    let upper = variance * df / chi_squared_quantile(1.0 - level, df);
    Some((upper / binomial).max(1.0))
}

/// The `p` quantile of a chi-squared with `df` degrees of freedom (Wilson and Hilferty's
/// cube-root normal approximation: within 1% from 3 degrees of freedom on).
pub fn chi_squared_quantile(p: f64, df: f64) -> f64 {
    let a = 2.0 / (9.0 * df);
    (df * (1.0 - a + inverse_normal_cdf(p) * a.sqrt()).powi(3)).max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator, so the tests hold exact draws (the library links no rng).
    struct Lcg(u64);

    impl Lcg {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn bernoulli_count(&mut self, n: u64, p: f64) -> f64 {
            (0..n).filter(|_| self.uniform() < p).count() as f64
        }
    }

    #[test]
    fn the_chi_squared_quantiles_are_the_tables() {
        // Tables: chi-squared(15) at 5% is 7.261, at 95% 24.996; chi-squared(7) at 5% 2.167.
        assert!((chi_squared_quantile(0.05, 15.0) - 7.261).abs() < 0.05);
        assert!((chi_squared_quantile(0.95, 15.0) - 24.996).abs() < 0.1);
        assert!((chi_squared_quantile(0.05, 7.0) - 2.167).abs() < 0.05);
    }

    #[test]
    fn independent_requests_have_a_design_effect_near_one_and_too_few_groups_say_nothing() {
        let mut rng = Lcg(1);
        let mut point = Vec::new();
        for _ in 0..400 {
            let groups: Vec<(f64, f64)> = (0..16).map(|_| (rng.bernoulli_count(2000, 0.01), 2000.0)).collect();
            let variance = ratio_variance(&groups).unwrap();
            point.push(variance / (0.01 * 0.99 / 32_000.0));
            assert_eq!(design_effect(&groups, 0.95).map(|d| d >= 1.0), Some(true));
        }
        let mean = point.iter().sum::<f64>() / point.len() as f64;
        // 400 estimates of sd 0.37 each: their mean within 0.045 of 1 (without the K/(K-1) it is 0.94).
        assert!((mean - 1.0).abs() < 0.045, "the estimate is unbiased for independent requests: {mean}");
        let few: Vec<(f64, f64)> = (0..7).map(|_| (20.0, 2000.0)).chain((0..9).map(|_| (0.0, 0.0))).collect();
        assert_eq!(ratio_variance(&few), None, "seven groups with traffic are not enough");
        assert_eq!(design_effect(&[(0.0, 100.0); 16], 0.95), None, "no failure, no spread to read");
    }

    #[test]
    fn a_few_heavy_users_who_fail_often_show_as_a_large_design_effect() {
        // Each group: many light users failing at 0.2%, and in a third of the groups one
        // heavy user sending a thousand requests and failing at 5%.
        let mut rng = Lcg(2);
        let groups: Vec<(f64, f64)> = (0..16)
            .map(|g| {
                let light = (rng.bernoulli_count(1000, 0.002), 1000.0);
                if g % 3 == 0 {
                    (light.0 + rng.bernoulli_count(1000, 0.05), 2000.0)
                } else {
                    light
                }
            })
            .collect();
        let effect = design_effect(&groups, 0.95).unwrap();
        assert!(effect > 5.0, "requests of a user are not independent: design effect {effect}");
    }
}
