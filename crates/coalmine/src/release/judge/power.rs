//! What a release can see: the smallest error-rate ratio and latency shift its tests
//! detect with 80% power, per stage and over the release, and how long the stages
//! would need to detect a doubled error rate.
//!
//! Power is read off the judge itself, not a formula beside it: the stages' expected
//! traffic (the stable's recent requests a minute, error rate and latency percentiles,
//! split by the stages' weights over their bakes) is handed to [`standings`] with the
//! canary's count at its 20th percentile rather than its mean. Every test's e-value
//! rises with the canary's count, so a test that rejects on the 20th-percentile count
//! rejects on at least 80% of the counts it could see at the end of the stage. The
//! judge looks at every check, not only at the end, so this errs low; `crates/simulate`
//! holds these figures to simulated releases' catch rates.

use crate::domain::metrics::{MetricSnapshot, SideMetrics, PERCENTILE_LEVELS};
use crate::release::judge::evalues::{inverse_normal_cdf, share_above};
use crate::release::judge::gates::{Gates, JudgeKind};
use crate::release::judge::sequential::standings;
use crate::release::judge::StageSample;

/// The power every figure is stated at.
pub const POWER: f64 = 0.8;
/// Beyond these a regression is not "detectable" in any useful sense.
const MAX_ERROR_RATIO: f64 = 10.0;
const MAX_LATENCY_SHIFT: f64 = 3.0;
/// The longest a stage's bake is stretched to find how long a 2x error rate needs.
const MAX_NEEDED_SECONDS: u64 = 7 * 24 * 3600;

/// The stable as recently seen, and the stages as planned.
#[derive(Clone, Debug)]
pub struct Traffic<'a> {
    pub per_minute: f64,
    /// The stable's recent errors, requests and latency percentiles.
    pub stable: &'a SideMetrics,
    /// (canary weight 0..1, longest bake in seconds) per stage.
    pub stages: &'a [(f64, u64)],
    /// A cohort release's: how many requests one independent unit's worth of evidence
    /// takes, read off the stable's recent replicate groups (decision 0021); 1 where
    /// requests are the unit.
    pub design_effect: f64,
}

/// What one stage alone, or the release as a whole, detects with 80% power.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sees {
    /// Canary error rate over the stable's, smallest detected; `None`: not even 10x.
    pub error_ratio: Option<f64>,
    /// Canary latency over the stable's (every request that many times slower),
    /// smallest detected; `None`: not even 3x, or no latency test.
    pub latency_shift: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Power {
    pub stages: Vec<Sees>,
    pub release: Sees,
    /// Seconds into the release by which a 2x error rate is detected with 80% power;
    /// `None`: not before promotion.
    pub doubled_errors_by: Option<u64>,
    /// Per stage but the last: how long its bake would need, alone, to detect a 2x
    /// error rate; `None`: more than a week.
    pub doubled_errors_needs: Vec<Option<u64>>,
}

/// What a release of these gates can see on this traffic; `None` for the fixed-horizon
/// judge (no stated power), or a stable without requests.
pub fn power(gates: &Gates, traffic: &Traffic) -> Option<Power> {
    if gates.judge != JudgeKind::Sequential || traffic.per_minute <= 0.0 || traffic.stable.requests <= 0.0 {
        return None;
    }
    let all: Vec<(usize, f64, u64)> = traffic.stages.iter().enumerate().map(|(i, (w, s))| (i, *w, *s)).collect();
    let stages = all.iter().map(|stage| sees(gates, traffic, std::slice::from_ref(stage))).collect();
    let release = sees(gates, traffic, &all);
    let mut doubled_errors_by = None;
    let mut elapsed = 0;
    'stages: for (i, (weight, bake)) in traffic.stages.iter().enumerate() {
        let step = (bake / 30).max(60);
        let mut t = step.min(*bake);
        loop {
            let mut so_far: Vec<(usize, f64, u64)> = all[..i].to_vec();
            so_far.push((i, *weight, t));
            if errors_detected(gates, traffic, &so_far, 2.0) {
                doubled_errors_by = Some(elapsed + t);
                break 'stages;
            }
            if t == *bake {
                break;
            }
            t = (t + step).min(*bake);
        }
        elapsed += bake;
    }
    let last = traffic.stages.len().saturating_sub(1);
    let doubled_errors_needs = traffic.stages[..last]
        .iter()
        .enumerate()
        .map(|(i, (weight, _))| {
            let detected = |seconds: u64| errors_detected(gates, traffic, &[(i, *weight, seconds)], 2.0);
            let mut hi = 60;
            while !detected(hi) {
                if hi >= MAX_NEEDED_SECONDS {
                    return None;
                }
                hi *= 2;
            }
            let mut lo = hi / 2;
            while hi - lo > 60 {
                let mid = (lo + hi) / 2;
                if detected(mid) {
                    hi = mid
                } else {
                    lo = mid
                }
            }
            Some(hi.div_ceil(60) * 60)
        })
        .collect();
    Some(Power { stages, release, doubled_errors_by, doubled_errors_needs })
}

fn sees(gates: &Gates, traffic: &Traffic, stages: &[(usize, f64, u64)]) -> Sees {
    let error_ratio = smallest(MAX_ERROR_RATIO, |r| errors_detected(gates, traffic, stages, r));
    let latency_shift = gates
        .max_p95_increase_ratio
        .and_then(|_| smallest(MAX_LATENCY_SHIFT, |f| latency_detected(gates, traffic, stages, f)));
    Sees { error_ratio, latency_shift }
}

/// The smallest factor in (1, `max`] at which `detected`, to two decimals; `None` if
/// not even at `max`. Detection rises with the factor.
fn smallest(max: f64, detected: impl Fn(f64) -> bool) -> Option<f64> {
    if !detected(max) {
        return None;
    }
    Some((bisect(1.0, max, 0.005, detected) * 100.0).ceil() / 100.0)
}

/// The low end of `(lo, hi]` at which `rises` (false below, true above) turns true,
/// narrowed until the interval is at most `precision` wide.
fn bisect(mut lo: f64, mut hi: f64, precision: f64, rises: impl Fn(f64) -> bool) -> f64 {
    while hi - lo > precision {
        let mid = (lo + hi) / 2.0;
        if rises(mid) {
            hi = mid
        } else {
            lo = mid
        }
    }
    hi
}

/// Requests each side sees in a stage of `weight` over `seconds`, as the judge weighs
/// them: a cohort's divided by its design effect.
fn requests(traffic: &Traffic, weight: f64, seconds: u64) -> (f64, f64) {
    let all = traffic.per_minute * seconds as f64 / 60.0 / traffic.design_effect.max(1.0);
    (all * weight, all * (1.0 - weight))
}

/// The 80%-power quantile's shortfall, spread over the stages by their variances: the
/// sum of the stages' counts is then at its 20th percentile.
fn shortfalls(variances: &[f64]) -> Vec<f64> {
    let total: f64 = variances.iter().sum();
    if total <= 0.0 {
        return vec![0.0; variances.len()];
    }
    let z = inverse_normal_cdf(POWER);
    variances.iter().map(|v| z * total.sqrt() * v / total).collect()
}

fn errors_detected(gates: &Gates, traffic: &Traffic, stages: &[(usize, f64, u64)], ratio: f64) -> bool {
    let p = traffic.stable.errors / traffic.stable.requests;
    if p <= 0.0 {
        return false;
    }
    let expected: Vec<(f64, f64, f64, f64)> = stages
        .iter()
        .map(|(_, w, s)| {
            let (canary, stable) = requests(traffic, *w, *s);
            (canary, (canary * p * ratio).min(canary), stable, stable * p)
        })
        .collect();
    // Given the errors of both sides, the canary's share of them is binomial (the split
    // test's own model); without a stable side, the canary's errors are.
    let variances: Vec<f64> = expected
        .iter()
        .map(|(n, c, _, s)| {
            let total = c + s;
            if *s > 0.0 {
                total * (c / total) * (s / total)
            } else {
                c * (1.0 - c / n.max(1.0))
            }
        })
        .collect();
    let samples: Vec<StageSample> = stages
        .iter()
        .zip(&expected)
        .zip(shortfalls(&variances))
        .map(|(((stage, _, seconds), (n, c, m, s)), short)| {
            let shown = (c - short).max(0.0);
            let side = |requests: f64, errors: f64| SideMetrics { requests, errors, ..traffic.stable.clone() };
            // Conditioned on the errors of both, the stable's are what the canary's are not.
            let stable_errors = if *m > 0.0 { (s + c - shown).max(0.0) } else { 0.0 };
            let metrics = MetricSnapshot { canary: side(*n, shown), stable: side(*m, stable_errors), pinned: None };
            StageSample::new(*stage, *seconds, metrics)
        })
        .collect();
    rejects(gates, &samples, "errors_vs_stable")
}

fn latency_detected(gates: &Gates, traffic: &Traffic, stages: &[(usize, f64, u64)], shift: f64) -> bool {
    let (Some(tolerance), Some(p95)) = (gates.max_p95_increase_ratio, traffic.stable.p95_ms) else { return false };
    let stable = &traffic.stable.percentiles;
    let threshold = p95 * (1.0 + tolerance);
    // Every canary request `f` times slower: its share past the threshold is the
    // stable's share past threshold / f.
    let slow = |f: f64| share_above(threshold / f, &PERCENTILE_LEVELS, stable).unwrap_or(0.0);
    let q = slow(shift);
    let counts: Vec<f64> = stages.iter().map(|(_, w, s)| requests(traffic, *w, *s).0).collect();
    let variances: Vec<f64> = counts.iter().map(|n| n * q * (1.0 - q)).collect();
    let samples: Vec<StageSample> = stages
        .iter()
        .zip(&counts)
        .zip(shortfalls(&variances))
        .map(|(((stage, w, seconds), n), short)| {
            let shown = if *n > 0.0 { (q - short / n).max(0.0) } else { 0.0 };
            // The shift whose share past the threshold is the one shown.
            let f = smallest_shift(shown, &slow);
            let scaled = |side: &SideMetrics| SideMetrics {
                percentiles: side.percentiles.iter().map(|v| v.map(|v| v * f)).collect(),
                p95_ms: side.p95_ms.map(|v| v * f),
                ..side.clone()
            };
            let (canary, stable_requests) = requests(traffic, *w, *seconds);
            let canary = SideMetrics { requests: canary, errors: 0.0, ..scaled(traffic.stable) };
            let stable = SideMetrics { requests: stable_requests, errors: 0.0, ..traffic.stable.clone() };
            StageSample::new(*stage, *seconds, MetricSnapshot { canary, stable, pinned: None })
        })
        .collect();
    rejects(gates, &samples, "latency_vs_stable")
}

/// The shift at which `slow` (rising with it) first reaches `share`.
fn smallest_shift(share: f64, slow: &impl Fn(f64) -> f64) -> f64 {
    // 1e-11 on (0.5, 6]: forty halvings.
    bisect(0.5, MAX_LATENCY_SHIFT * 2.0, 1e-11, |f| slow(f) >= share)
}

/// What a replay (decision 0023) shows with 80% power: how many requests, asked of both
/// versions, its disagreement tests need to roll back a candidate that disagrees
/// `factor` times as often as the stable does with itself (`floor`, a share of
/// requests). `None`: not within `most`. Read off the judge as the stages' power is:
/// the candidate's disagreements at their 20th percentile given both sides' total.
pub fn replay_requests_needed(gates: &Gates, floor: f64, factor: f64, most: u64) -> Option<u64> {
    if gates.judge != JudgeKind::Sequential || gates.custom.is_empty() || floor <= 0.0 || most == 0 {
        return None;
    }
    let detected = |n: u64| {
        let n = n as f64;
        let (c, s) = ((n * floor * factor).min(n), n * floor);
        let total = c + s;
        let short = inverse_normal_cdf(POWER) * (total * (c / total) * (s / total)).sqrt();
        let shown = (c - short).max(0.0);
        let side = |disagreements: f64| SideMetrics {
            requests: n,
            custom: vec![Some(disagreements); gates.custom.len()],
            custom_counts: vec![Some(n); gates.custom.len()],
            ..SideMetrics::default()
        };
        let metrics = MetricSnapshot { canary: side(shown), stable: side(total - shown), pinned: None };
        let samples = [StageSample::new(0, 60, metrics)];
        standings(gates, &samples).iter().any(|s| s.test.starts_with("custom[") && s.rejects())
    };
    if !detected(most) {
        return None;
    }
    let (mut lo, mut hi) = (0, most);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if detected(mid) {
            hi = mid
        } else {
            lo = mid
        }
    }
    Some(hi)
}

/// The smallest disagreement factor over `floor` a replay of `requests` shows with 80%
/// power, to two decimals; `None`: not even 10x.
pub fn replay_sees(gates: &Gates, floor: f64, requests: u64) -> Option<f64> {
    smallest(MAX_ERROR_RATIO, |factor| replay_requests_needed(gates, floor, factor, requests).is_some())
}

fn rejects(gates: &Gates, samples: &[StageSample], test: &str) -> bool {
    standings(gates, samples).iter().any(|s| s.test == test && s.rejects())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stable of `crates/simulate`: 0.5% errors, latency lognormal (median 400 ms,
    /// sigma 0.5), its percentiles exact.
    fn stable(requests: f64) -> SideMetrics {
        let percentiles: Vec<Option<f64>> =
            PERCENTILE_LEVELS.iter().map(|l| Some(400.0 * (0.5 * inverse_normal_cdf(l / 100.0)).exp())).collect();
        SideMetrics { requests, errors: requests * 0.005, p95_ms: percentiles[3], percentiles, ..Default::default() }
    }

    fn gates(ratio: Option<f64>) -> Gates {
        let mut gates: Gates = serde_json::from_value(serde_json::json!({
            "max_error_rate": 0.05, "max_p95_latency_ms": 10000, "max_p95_increase_ratio": 0.2, "min_requests": 100
        }))
        .unwrap();
        gates.max_error_rate_ratio = ratio;
        gates
    }

    const SAMPLE: [(f64, u64); 4] = [(0.05, 900), (0.25, 900), (0.5, 900), (1.0, 600)];

    #[test]
    fn more_traffic_sees_smaller_regressions_and_a_tolerance_costs_detection() {
        let stable = stable(60_000.0);
        let at = |per_minute: f64, ratio| {
            power(&gates(ratio), &Traffic { per_minute, stable: &stable, stages: &SAMPLE, design_effect: 1.0 })
                .expect("sequential")
        };
        let (quiet, busy) = (at(100.0, None), at(10_000.0, None));
        let (q, b) = (quiet.release.error_ratio, busy.release.error_ratio.unwrap());
        assert!(q.is_none_or(|q| q > 3.0), "100 req/min cannot see a 3x error rate: {q:?}");
        assert!(b < 1.5, "10 000 req/min sees less than 1.5x: {b}");
        let tolerant = at(1000.0, Some(1.2)).release.error_ratio.unwrap();
        let strict = at(1000.0, None).release.error_ratio.unwrap();
        assert!(tolerant > strict * 1.1, "a 1.2x tolerance needs a bigger regression: {tolerant} vs {strict}");
        for (stage, all) in at(1000.0, None).stages.iter().zip([strict; 4]) {
            assert!(stage.error_ratio.is_none_or(|r| r >= all), "no stage alone sees more than the release");
        }
        let shift = busy.release.latency_shift.unwrap();
        assert!(shift > 1.2 && shift < 1.3, "10 000 req/min sees latency just past the 20% tolerance: {shift}");
    }

    #[test]
    fn the_time_a_doubled_error_rate_needs_falls_with_weight_and_traffic() {
        let stable = stable(60_000.0);
        let p =
            power(&gates(None), &Traffic { per_minute: 1000.0, stable: &stable, stages: &SAMPLE, design_effect: 1.0 })
                .unwrap();
        let needs: Vec<u64> = p.doubled_errors_needs.iter().map(|n| n.expect("within a week")).collect();
        assert_eq!(needs.len(), 3, "every stage but the last");
        assert!(needs[0] > needs[1] && needs[1] > needs[2], "a bigger share sees it sooner: {needs:?}");
        let by = p.doubled_errors_by.expect("1000 req/min sees 2x before promotion");
        assert!(by > 900 && by <= 3300, "after the first stage, before the last: {by}");
        let quiet =
            power(&gates(None), &Traffic { per_minute: 100.0, stable: &stable, stages: &SAMPLE, design_effect: 1.0 })
                .unwrap();
        assert_eq!(quiet.doubled_errors_by, None, "100 req/min does not see 2x in time");
    }

    #[test]
    fn the_fixed_horizon_judge_and_a_stable_without_errors_state_nothing() {
        let mut fixed = gates(None);
        fixed.judge = JudgeKind::FixedHorizon;
        let stable = stable(60_000.0);
        assert_eq!(
            power(&fixed, &Traffic { per_minute: 1000.0, stable: &stable, stages: &SAMPLE, design_effect: 1.0 }),
            None
        );
        let clean = SideMetrics { errors: 0.0, ..stable.clone() };
        let p =
            power(&gates(None), &Traffic { per_minute: 1000.0, stable: &clean, stages: &SAMPLE, design_effect: 1.0 })
                .unwrap();
        assert_eq!(p.release.error_ratio, None, "no stable errors: no ratio to see");
        assert!(p.release.latency_shift.is_some(), "latency is still seen");
    }
}
