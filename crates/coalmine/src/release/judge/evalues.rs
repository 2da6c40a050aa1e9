//! Anytime-valid sequential tests: the judge may look after every tick, as often as it
//! likes, and a healthy canary is still rolled back with probability at most α.
//!
//! Each test is a mixture sequential probability ratio test (mSPRT; Robbins 1970, and
//! for deployments Lindon, Sanden & Shirikian, KDD 2022): the likelihood of the data
//! under "worse by a factor r" against the null's boundary, averaged over a prior on r.
//! Under the null that average is a non-negative supermartingale with expectation at most
//! 1, so by Ville's inequality it ever reaches 1/α with probability at most α. The prior
//! here is discrete (a grid of ratios with weights that sum to 1), which keeps that
//! property exactly and makes the evidence a handful of numbers.
//!
//! Every test is written as "the canary's rate is `r` times the null boundary's", so the
//! parts of one hypothesis measured different ways (stages with stable traffic, and the
//! final stage judged against the stable's record) add up inside each mixture component.
//!
//! Counts are per stage and cumulative within it (what CloudWatch returns for the stage
//! so far); a stage's batch is replaced as it grows, and frozen when the stage ends.

use serde::{Deserialize, Serialize};

/// The regression an evidence-driven stage rules out before it advances: twice the
/// stable's rate (or the tolerance's boundary, when that is higher), twice a limit's
/// allowed share.
pub const DETECT_RATIO: f64 = 2.0;
/// The chance that an evidence-driven stage advances a canary [`DETECT_RATIO`] times as
/// bad as its tolerance on some test: that test's own chance, since it must say "no
/// worse" on its own evidence (no split over the tests is needed).
pub const MISS_RATE: f64 = 0.05;

/// The prior over effect sizes: ratios `r > 1` to the null boundary, geometrically
/// spaced from 1.05 to 20, weighted by a half-normal on ln r with scale 1 (so 1.5x to 3x
/// regressions carry the most weight, 10x still some).
#[derive(Clone, Debug)]
pub struct Mixture {
    ratios: Vec<f64>,
    log_weights: Vec<f64>,
}

impl Default for Mixture {
    fn default() -> Self {
        Mixture::half_normal(1.0, 24, 0.05, 20.0_f64.ln())
    }
}

impl Mixture {
    /// `points` values of ln r evenly spread over `[lo, hi]`, weighted `exp(-x²/2s²)`.
    pub fn half_normal(scale: f64, points: usize, lo: f64, hi: f64) -> Self {
        let step = (hi - lo) / (points - 1) as f64;
        let logs: Vec<f64> = (0..points).map(|i| lo + step * i as f64).collect();
        let raw: Vec<f64> = logs.iter().map(|x| -x * x / (2.0 * scale * scale)).collect();
        let norm = log_sum_exp(&raw);
        Mixture { ratios: logs.iter().map(|x| x.exp()).collect(), log_weights: raw.iter().map(|w| w - norm).collect() }
    }

    /// ln of the mixture of likelihood ratios, given each component's log-likelihood ratio.
    pub fn log_e(&self, log_lr: impl Fn(f64) -> f64) -> f64 {
        let terms: Vec<f64> = self.ratios.iter().zip(&self.log_weights).map(|(r, w)| w + log_lr(*r)).collect();
        log_sum_exp(&terms)
    }
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// Events split between canary and stable while the canary had `canary_share` of the
/// exposure (requests): errors, or the counts of a custom metric. Conditioned on their
/// total, each event is the canary's with probability `q(ρ) = ρθ / (ρθ + 1 − θ)`, ρ the
/// ratio of the canary's rate to the stable's (Poisson arrivals: Lindon & Malek 2022).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Split {
    pub canary: f64,
    pub stable: f64,
    pub canary_share: f64,
}

/// `count` events out of `trials` against a rate `p0` that bounds the null: "the canary
/// serves requests slower than the limit no more than 5% of the time".
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Proportion {
    pub count: f64,
    pub trials: f64,
    pub p0: f64,
}

/// ln of the likelihood ratio of `batch` at ratio `rho` to the null boundary `rho0`.
pub fn split_log_lr(batch: &Split, rho0: f64, r: f64) -> f64 {
    let theta = batch.canary_share;
    if !(theta > 0.0 && theta < 1.0) || batch.canary + batch.stable <= 0.0 {
        return 0.0;
    }
    let q = |rho: f64| rho * theta / (rho * theta + 1.0 - theta);
    let (q0, q1) = (q(rho0), q(rho0 * r));
    batch.canary.max(0.0) * (q1 / q0).ln() + batch.stable.max(0.0) * ((1.0 - q1) / (1.0 - q0)).ln()
}

/// ln of the likelihood ratio of `batch` at `p = r·p0` to `p0`.
pub fn proportion_log_lr(batch: &Proportion, r: f64) -> f64 {
    let p0 = batch.p0.clamp(1e-9, 1.0 - 1e-9);
    let p1 = (p0 * r).min(1.0 - 1e-9);
    let count = batch.count.clamp(0.0, batch.trials.max(0.0));
    count * (p1 / p0).ln() + (batch.trials.max(0.0) - count) * ((1.0 - p1) / (1.0 - p0)).ln()
}

/// `count` events where the null expects at most `expected`: ln of the Poisson
/// likelihood ratio at `r` times the null's rate.
pub fn poisson_log_lr(count: f64, expected: f64, r: f64) -> f64 {
    if expected <= 0.0 {
        return 0.0;
    }
    count.max(0.0) * r.ln() - (r - 1.0) * expected
}

/// One test's standing: its evidence against the null, and what it would take. Read
/// back from a decision's evidence by `coalmine report`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// `errors_vs_stable`, `latency_vs_stable`, `error_rate_limit`, `latency_limit`, `custom[0]`...
    pub test: String,
    /// The test as a person names it: "errors", "latency", "OutputTokens limit".
    pub name: String,
    /// ln of the e-value: the mixture likelihood ratio so far.
    pub log_e: f64,
    /// ln(1/α) for this test's share of the release's false rollback rate.
    pub threshold: f64,
    /// What it compares, in words, with the numbers.
    pub detail: String,
    /// Whether its rejection rolls back (`false`: a dry run, only said).
    pub enforced: bool,
    /// ln of the current stage's evidence that the canary is not as bad as the
    /// regression an evidence-driven stage rules out; `None` when the stage gave this
    /// test nothing to weigh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_accept: Option<f64>,
}

impl Standing {
    pub fn rejects(&self) -> bool {
        self.log_e >= self.threshold
    }

    /// The current stage has shown the canary is not that bad, or had nothing to show.
    pub fn settled(&self) -> bool {
        self.log_accept.is_none_or(|accept| accept >= (1.0 / MISS_RATE).ln())
    }

    /// How far the evidence has come towards a rollback, from 0 (none, or evidence for
    /// the canary) to 1: on the e-value's own scale, the logarithm, since evidence
    /// multiplies from tick to tick.
    pub fn way_to_rollback(&self) -> f64 {
        (self.log_e / self.threshold).clamp(0.0, 1.0)
    }
}

/// An upper confidence bound for a rate, from `count` events in `trials` (Wilson's score
/// interval, one-sided at `1 − alpha`): what "the stable's rate was at most" means when
/// the final stage is judged against the stable's record.
pub fn upper_bound(count: f64, trials: f64, alpha: f64) -> f64 {
    if trials <= 0.0 {
        return 1.0;
    }
    let z = inverse_normal_cdf(1.0 - alpha);
    let p = (count / trials).clamp(0.0, 1.0);
    let denominator = 1.0 + z * z / trials;
    let centre = p + z * z / (2.0 * trials);
    let spread = z * (p * (1.0 - p) / trials + z * z / (4.0 * trials * trials)).sqrt();
    ((centre + spread) / denominator).min(1.0)
}

/// Φ⁻¹(p), Acklam's rational approximation (relative error below 1.2e-9).
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The share of requests slower than `threshold`, from a side's percentiles (`levels` in
/// percent, `values` in ms), interpolated linearly between the two levels that bracket
/// it: CloudWatch gives percentiles, not the requests themselves. Below the lowest level
/// the share is at least `1 − lowest`; above the highest, half of what is left.
pub fn share_above(threshold: f64, levels: &[f64], values: &[Option<f64>]) -> Option<f64> {
    let points: Vec<(f64, f64)> = levels.iter().zip(values).filter_map(|(l, v)| v.map(|v| (*l, v))).collect();
    let (first, last) = (points.first()?, points.last()?);
    if threshold <= first.1 {
        return Some(1.0 - first.0 / 100.0);
    }
    if threshold >= last.1 {
        return Some((1.0 - last.0 / 100.0) / 2.0);
    }
    let pair = points.windows(2).find(|w| threshold >= w[0].1 && threshold <= w[1].1)?;
    let ((l0, v0), (l1, v1)) = (pair[0], pair[1]);
    let level = if v1 > v0 { l0 + (l1 - l0) * (threshold - v0) / (v1 - v0) } else { l1 };
    Some(1.0 - level / 100.0)
}

/// The share of values below `threshold`, from a side's percentiles, as [`share_above`]
/// reads the share above: interpolated between the bracketing levels; above the highest
/// level at least that level, below the lowest half of it.
pub fn share_below(threshold: f64, levels: &[f64], values: &[Option<f64>]) -> Option<f64> {
    let points: Vec<(f64, f64)> = levels.iter().zip(values).filter_map(|(l, v)| v.map(|v| (*l, v))).collect();
    let (first, last) = (points.first()?, points.last()?);
    if threshold >= last.1 {
        return Some(last.0 / 100.0);
    }
    if threshold <= first.1 {
        return Some(first.0 / 100.0 / 2.0);
    }
    let pair = points.windows(2).find(|w| threshold >= w[0].1 && threshold <= w[1].1)?;
    let ((l0, v0), (l1, v1)) = (pair[0], pair[1]);
    let level = if v1 > v0 { l0 + (l1 - l0) * (threshold - v0) / (v1 - v0) } else { l0 };
    Some(level / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_is_a_distribution_over_ratios_above_one() {
        let m = Mixture::default();
        let total: f64 = m.log_weights.iter().map(|w| w.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!(m.ratios.first().unwrap() > &1.0 && (m.ratios.last().unwrap() - 20.0).abs() < 1e-9);
        // No data, no evidence: the e-value is exactly 1.
        assert!(m.log_e(|_| 0.0).abs() < 1e-12);
    }

    #[test]
    fn likelihood_ratios_match_hand_computed_values() {
        // Two errors on the canary at half the traffic, none on the stable: at ratio 3,
        // q = 3/4 against 1/2, so LR = (0.75/0.5)^2 = 2.25.
        let batch = Split { canary: 2.0, stable: 0.0, canary_share: 0.5 };
        assert!((split_log_lr(&batch, 1.0, 3.0) - 2.25_f64.ln()).abs() < 1e-12);
        // One error each at 5% canary traffic, ratio 2: q1 = 0.1/1.05, q0 = 0.05.
        let batch = Split { canary: 1.0, stable: 1.0, canary_share: 0.05 };
        let (q0, q1): (f64, f64) = (0.05, 0.1 / 1.05);
        assert!((split_log_lr(&batch, 1.0, 2.0) - ((q1 / q0) * ((1.0 - q1) / (1.0 - q0))).ln()).abs() < 1e-12);
        // All or no traffic on the canary says nothing about the ratio.
        assert_eq!(split_log_lr(&Split { canary: 9.0, stable: 0.0, canary_share: 1.0 }, 1.0, 5.0), 0.0);
        // Binomial: 10 of 100 against 5%, at twice that: 10 ln 2 + 90 ln(0.9/0.95).
        let p = Proportion { count: 10.0, trials: 100.0, p0: 0.05 };
        assert!((proportion_log_lr(&p, 2.0) - (10.0 * 2.0_f64.ln() + 90.0 * (0.9_f64 / 0.95).ln())).abs() < 1e-12);
        // Poisson: 6 events where 2 were expected, at 3x: 6 ln 3 - 4.
        assert!((poisson_log_lr(6.0, 2.0, 3.0) - (6.0 * 3.0_f64.ln() - 4.0)).abs() < 1e-12);
    }

    #[test]
    fn inverse_normal_and_wilson_bounds_match_tables() {
        for (p, z) in [(0.5, 0.0), (0.95, 1.644_853_627), (0.975, 1.959_963_985), (0.001, -3.090_232_306)] {
            assert!((inverse_normal_cdf(p) - z).abs() < 1e-8, "Φ⁻¹({p})");
        }
        // Wilson upper 97.5% bound for 5 of 100: 0.1118 (textbook value).
        assert!((upper_bound(5.0, 100.0, 0.025) - 0.1118).abs() < 5e-4, "{}", upper_bound(5.0, 100.0, 0.025));
        assert_eq!(upper_bound(0.0, 0.0, 0.05), 1.0);
    }

    #[test]
    fn the_share_below_a_threshold_is_read_off_the_percentiles_the_same_way() {
        let levels = [10.0, 50.0, 90.0];
        let values = [Some(100.0), Some(200.0), Some(400.0)];
        // 150 sits halfway between the p10 and the p50: 30% of the values are below it.
        assert!((share_below(150.0, &levels, &values).unwrap() - 0.30).abs() < 1e-12);
        assert_eq!(share_below(50.0, &levels, &values), Some(0.05), "below the lowest level: half of it");
        assert_eq!(share_below(500.0, &levels, &values), Some(0.90), "above the highest: at least it");
        assert_eq!(share_below(150.0, &levels, &[None, None, None]), None);
    }

    #[test]
    fn the_share_above_a_threshold_is_read_off_the_percentiles() {
        let levels = [50.0, 90.0, 95.0, 99.0];
        let values = [Some(400.0), Some(700.0), Some(900.0), Some(1300.0)];
        assert!((share_above(800.0, &levels, &values).unwrap() - 0.075).abs() < 1e-12, "halfway from p90 to p95");
        assert!((share_above(900.0, &levels, &values).unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(share_above(100.0, &levels, &values), Some(0.5));
        assert!((share_above(5000.0, &levels, &values).unwrap() - 0.005).abs() < 1e-12, "half of what p99 leaves");
        assert_eq!(share_above(800.0, &levels, &[None, None, None, None]), None);
    }

    /// Ville's inequality, by simulation: under the null, the e-value crosses 1/α in at
    /// most α of the runs, however often it is looked at. Deterministic: a fixed LCG.
    #[test]
    fn looking_after_every_batch_keeps_false_alarms_below_alpha() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut uniform = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let (runs, looks, alpha): (usize, usize, f64) = (2000, 60, 0.05);
        let mixture = Mixture::default();
        let mut crossed = 0;
        for _ in 0..runs {
            let (mut canary, mut stable) = (0.0, 0.0);
            for _ in 0..looks {
                // 20 errors a look, each the canary's with its traffic share of 25%.
                for _ in 0..20 {
                    if uniform() < 0.25 {
                        canary += 1.0;
                    } else {
                        stable += 1.0;
                    }
                }
                let batch = Split { canary, stable, canary_share: 0.25 };
                if mixture.log_e(|r| split_log_lr(&batch, 1.0, r)) >= (1.0 / alpha).ln() {
                    crossed += 1;
                    break;
                }
            }
        }
        let rate = crossed as f64 / runs as f64;
        assert!(rate <= alpha, "false alarm rate {rate} above {alpha}");
    }
}
