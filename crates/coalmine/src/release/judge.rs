//! The health judge: gate alarms, then canary-vs-stable metrics. Pure: it gets alarm
//! states and metric snapshots and returns a verdict with the evidence behind it.
//!
//! Two judges. The **sequential** one (the default) weighs every stage so far with
//! anytime-valid tests ([`crate::release::sequential`]), so looking every tick costs no
//! validity and a healthy canary is rolled back at most at `false_rollback_rate`. The
//! **fixed-horizon** one re-runs a two-proportion z-test and compares raw p95s on the
//! current stage each tick; it is kept for comparison (the simulator runs both) and for
//! releases written for it.

use serde::{Deserialize, Serialize};

use crate::domain::event::AlarmState;
use crate::domain::metrics::{MetricSnapshot, SideMetrics, PERCENTILE_LEVELS};
use crate::release::sequential::{
    poisson_log_lr, proportion_log_lr, share_above, split_log_lr, upper_bound, Mixture, Proportion, Split, Standing,
};
use crate::release::{Gates, InsufficientDataAlarm};

/// A stage's metrics so far, as the judge weighs them: replaced each tick while the
/// stage runs, kept as they were once it has ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSample {
    pub stage: usize,
    /// How long the stage had run when these were read.
    pub seconds: u64,
    pub metrics: MetricSnapshot,
}

/// Under the null "no slower than the limit", at most this share of the canary's
/// requests is slower: the limit is a p95.
const SLOW_SHARE: f64 = 0.05;
/// A side needs this many requests before its p95 is a threshold to judge the other by.
const P95_MIN_REQUESTS: f64 = 20.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Unhealthy,
    /// Too few canary requests to judge (`min_requests`).
    Inconclusive,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evidence {
    pub verdict: Verdict,
    /// Why, in a line a person reads: the failed checks, or what was fine.
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<(String, &'static str)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricSnapshot>,
    /// One-sided two-proportion test of canary error rate > stable error rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate_z: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate_p_value: Option<f64>,
    /// The sequential tests' standing: evidence so far against each null.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<Standing>,
}

impl Evidence {
    pub fn summary(&self) -> String {
        self.reasons.join("; ")
    }
}

/// Gate alarms only: any in ALARM (or INSUFFICIENT_DATA when so configured, or missing)
/// is unhealthy. `None` when they are all fine.
pub fn judge_alarms(gates: &Gates, states: &[(String, AlarmState)]) -> Option<Vec<String>> {
    let mut failed = Vec::new();
    for name in &gates.alarms {
        match states.iter().find(|(n, _)| n == name).map(|(_, s)| *s) {
            Some(AlarmState::Alarm) => failed.push(format!("alarm {name} is ALARM")),
            Some(AlarmState::InsufficientData) if gates.alarm_insufficient_data == InsufficientDataAlarm::Unhealthy => {
                failed.push(format!("alarm {name} is INSUFFICIENT_DATA"))
            }
            Some(_) => {}
            None => failed.push(format!("alarm {name} does not exist")),
        }
    }
    (!failed.is_empty()).then_some(failed)
}

/// The evidence both judges start from: the alarms' states, and already unhealthy
/// (with the reasons) when a gate alarm says so.
fn alarm_evidence(gates: &Gates, states: &[(String, AlarmState)], metrics: Option<MetricSnapshot>) -> Evidence {
    let mut evidence = Evidence {
        verdict: Verdict::Healthy,
        reasons: Vec::new(),
        alarms: states.iter().map(|(n, s)| (n.clone(), s.as_str())).collect(),
        metrics,
        error_rate_z: None,
        error_rate_p_value: None,
        tests: Vec::new(),
    };
    if let Some(failed) = judge_alarms(gates, states) {
        evidence.verdict = Verdict::Unhealthy;
        evidence.reasons = failed;
    }
    evidence
}

/// The fixed-horizon judge, on the current stage's snapshot.
pub fn judge(gates: &Gates, states: &[(String, AlarmState)], metrics: Option<&MetricSnapshot>) -> Evidence {
    let mut evidence = alarm_evidence(gates, states, metrics.cloned());
    if evidence.verdict == Verdict::Unhealthy {
        return evidence;
    }
    let Some(m) = metrics else {
        evidence.verdict = Verdict::Inconclusive;
        evidence.reasons.push("inconclusive: no metrics to judge the canary by".into());
        return evidence;
    };
    let (canary, stable) = (&m.canary, &m.stable);
    // A canary that served nothing is never healthy, whatever the release says.
    let min_requests = gates.min_requests.max(1);
    if canary.requests < min_requests as f64 {
        evidence.verdict = Verdict::Inconclusive;
        evidence.reasons.push(format!(
            "inconclusive: {} canary requests, fewer than min_requests {min_requests}",
            count(canary.requests)
        ));
        return evidence;
    }

    let mut failed = Vec::new();
    let canary_rate = rate(canary);
    let stable_rate = rate(stable);
    if let (Some(limit), Some(r)) = (gates.max_error_rate, canary_rate) {
        if r > limit {
            failed.push(format!("canary error rate {} > max_error_rate {}", pct(r), pct(limit)));
        }
    }
    if let Some(limit) = gates.max_error_rate_increase {
        if let (Some(c), Some(s)) = (canary_rate, stable_rate) {
            let test = two_proportion_greater(canary.errors, canary.requests, stable.errors, stable.requests);
            evidence.error_rate_z = test.map(|t| t.0);
            evidence.error_rate_p_value = test.map(|t| t.1);
            let confidence = gates.error_rate_confidence.unwrap_or(crate::release::spec::DEFAULT_ERROR_RATE_CONFIDENCE);
            let significant = test.is_some_and(|(_, p)| p < 1.0 - confidence);
            if c - s > limit && significant {
                failed.push(format!(
                    "canary error rate {} exceeds stable {} by more than {} (p = {:.4})",
                    pct(c),
                    pct(s),
                    pct(limit),
                    test.map(|t| t.1).unwrap_or(0.0)
                ));
            }
        }
    }
    if let (Some(limit), Some(p95)) = (gates.max_p95_latency_ms, canary.p95_ms) {
        if p95 > limit {
            failed.push(format!("canary p95 {p95:.0} ms > max_p95_latency_ms {limit:.0}"));
        }
    }
    if let (Some(limit), Some(c), Some(s)) = (gates.max_p95_increase_ratio, canary.p95_ms, stable.p95_ms) {
        if s > 0.0 && c / s - 1.0 > limit {
            failed.push(format!(
                "canary p95 {c:.0} ms is {:.0}% above stable {s:.0} ms (limit {:.0}%)",
                (c / s - 1.0) * 100.0,
                limit * 100.0
            ));
        }
    }
    for (i, gate) in gates.custom.iter().enumerate() {
        let value = |side: &SideMetrics| side.custom.get(i).copied().flatten();
        let Some(c) = value(canary) else { continue };
        let name = format!("{}/{} {}", gate.namespace, gate.metric, gate.stat);
        if let Some(max) = gate.max {
            if c > max {
                failed.push(format!("canary {name} {c} > max {max}"));
            }
        }
        if let Some(ratio) = gate.max_increase_ratio {
            match value(stable) {
                Some(s) if s > 0.0 && c / s - 1.0 > ratio => failed.push(format!(
                    "canary {name} {c} is {:.0}% above stable {s} (limit {:.0}%)",
                    (c / s - 1.0) * 100.0,
                    ratio * 100.0
                )),
                Some(s) if s > 0.0 => {}
                // Stable at zero: any canary value is an unbounded increase; fail safe.
                _ if c > 0.0 => failed.push(format!(
                    "canary {name} {c} where stable has none (limit {:.0}% above stable)",
                    ratio * 100.0
                )),
                _ => {}
            }
        }
    }

    if failed.is_empty() {
        evidence.reasons.push(format!(
            "healthy: canary {} requests, error rate {}, p95 {}; stable error rate {}",
            count(canary.requests),
            canary_rate.map(pct).unwrap_or_else(|| "n/a".into()),
            canary.p95_ms.map(|p| format!("{p:.0} ms")).unwrap_or_else(|| "n/a".into()),
            stable_rate.map(pct).unwrap_or_else(|| "n/a".into()),
        ));
    } else {
        evidence.verdict = Verdict::Unhealthy;
        evidence.reasons = failed;
    }
    evidence
}

/// The sequential judge: gate alarms, then every statistical test over all the stages
/// so far (`samples`, the current stage last), each at its share of
/// `false_rollback_rate`; custom gates on statistics that are not counts compare as
/// measured. A stage with fewer than `min_requests` canary requests is inconclusive, but
/// evidence is evidence: a test that rejects rolls back whatever the count.
pub fn judge_sequential(gates: &Gates, states: &[(String, AlarmState)], samples: &[StageSample]) -> Evidence {
    let mut evidence = alarm_evidence(gates, states, samples.last().map(|s| s.metrics.clone()));
    if evidence.verdict == Verdict::Unhealthy {
        evidence.metrics = None;
        return evidence;
    }
    let Some(current) = samples.last() else {
        evidence.verdict = Verdict::Inconclusive;
        evidence.reasons.push("inconclusive: no metrics to judge the canary by".into());
        return evidence;
    };
    evidence.tests = standings(gates, samples);
    let mut failed: Vec<String> = evidence.tests.iter().filter(|t| t.rejects()).map(|t| t.detail.clone()).collect();
    failed.extend(point_checks(gates, &current.metrics));
    let (canary, stable) = (&current.metrics.canary, &current.metrics.stable);
    let min_requests = gates.min_requests.max(1);
    if !failed.is_empty() {
        evidence.verdict = Verdict::Unhealthy;
        evidence.reasons = failed;
    } else if canary.requests < min_requests as f64 {
        evidence.verdict = Verdict::Inconclusive;
        evidence.reasons.push(format!(
            "inconclusive: {} canary requests, fewer than min_requests {min_requests}",
            count(canary.requests)
        ));
    } else {
        let strongest =
            evidence.tests.iter().max_by(|a, b| (a.log_e - a.threshold).total_cmp(&(b.log_e - b.threshold)));
        evidence.reasons.push(format!(
            "healthy: canary {} requests, error rate {}, p95 {}; stable error rate {}{}",
            count(canary.requests),
            rate(canary).map(pct).unwrap_or_else(|| "n/a".into()),
            canary.p95_ms.map(|p| format!("{p:.0} ms")).unwrap_or_else(|| "n/a".into()),
            rate(stable).map(pct).unwrap_or_else(|| "n/a".into()),
            strongest
                .map(|t| format!(
                    "; no regression shown (closest: {} at e = {:.1} of {:.0})",
                    t.test,
                    t.log_e.exp(),
                    t.threshold.exp()
                ))
                .unwrap_or_default()
        ));
    }
    evidence
}

/// An e-value as a person reads it: 37, or 10^12 when it is astronomically past any
/// threshold.
fn e(log_e: f64) -> String {
    if log_e < 10_000_f64.ln() {
        format!("{:.0}", log_e.exp())
    } else {
        format!("10^{:.0}", log_e / std::f64::consts::LN_10)
    }
}

/// Every sequential test the gates ask for, over all the stages so far.
pub fn standings(gates: &Gates, samples: &[StageSample]) -> Vec<Standing> {
    let mixture = Mixture::default();
    let counted = |gate: &crate::release::CustomGate| matches!(gate.stat.as_str(), "Sum" | "SampleCount");
    let custom_tests: usize = gates
        .custom
        .iter()
        .filter(|g| counted(g))
        .map(|g| usize::from(g.max.is_some()) + usize::from(g.max_increase_ratio.is_some()))
        .sum();
    let k = 1
        + usize::from(gates.max_p95_increase_ratio.is_some())
        + usize::from(gates.max_error_rate.is_some())
        + usize::from(gates.max_p95_latency_ms.is_some())
        + custom_tests;
    let alpha = gates.false_rollback_rate / k as f64;
    let threshold = (1.0 / alpha).ln();
    let standing = |test: String, log_e: f64, detail: String| Standing { test, log_e, threshold, detail };
    let sides = |s: &StageSample| (s.metrics.canary.clone(), s.metrics.stable.clone());
    let (canary_total, stable_total) =
        samples.iter().map(sides).fold((SideMetrics::default(), SideMetrics::default()), |(mut c, mut s), (sc, ss)| {
            c.requests += sc.requests;
            c.errors += sc.errors;
            s.requests += ss.requests;
            s.errors += ss.errors;
            (c, s)
        });
    let mut out = Vec::new();

    // The canary's error rate against the stable's, as a ratio, in every stage; a stage
    // without stable traffic (Lambda at 100%) against the stable's record's upper bound.
    let rho0 = gates.max_error_rate_ratio.unwrap_or(1.0);
    let splits: Vec<Split> = samples
        .iter()
        .filter(|s| s.metrics.stable.requests > 0.0 && s.metrics.canary.requests > 0.0)
        .map(|s| Split {
            canary: s.metrics.canary.errors,
            stable: s.metrics.stable.errors,
            canary_share: s.metrics.canary.requests / (s.metrics.canary.requests + s.metrics.stable.requests),
        })
        .collect();
    let record = upper_bound(stable_total.errors, stable_total.requests, alpha);
    let alone: Vec<Proportion> = samples
        .iter()
        .filter(|s| s.metrics.stable.requests <= 0.0 && s.metrics.canary.requests > 0.0 && stable_total.requests > 0.0)
        .map(|s| Proportion { count: s.metrics.canary.errors, trials: s.metrics.canary.requests, p0: rho0 * record })
        .collect();
    let log_e = mixture.log_e(|r| {
        splits.iter().map(|b| split_log_lr(b, rho0, r)).sum::<f64>()
            + alone.iter().map(|p| proportion_log_lr(p, r)).sum::<f64>()
    });
    let tolerance = if rho0 > 1.0 { format!(" (tolerance {rho0}x)") } else { String::new() };
    out.push(standing(
        "errors_vs_stable".into(),
        log_e,
        format!(
            "canary error rate {} over {} requests against stable {}{tolerance}: a regression, e = {} >= {:.0}",
            rate(&canary_total).map(pct).unwrap_or_else(|| "n/a".into()),
            count(canary_total.requests),
            rate(&stable_total).map(pct).unwrap_or_else(|| "n/a".into()),
            e(log_e),
            threshold.exp()
        ),
    ));

    // The canary's share of requests slower than a threshold, against 5%: the canary's
    // p95 is above the threshold exactly when more than 5% of its requests are.
    let slow_batches = |threshold_of: &dyn Fn(usize) -> Option<f64>| -> Vec<Proportion> {
        samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.metrics.canary.requests > 0.0)
            .filter_map(|(i, s)| {
                let limit = threshold_of(i)?;
                let share = share_above(limit, &PERCENTILE_LEVELS, &s.metrics.canary.percentiles)?;
                Some(Proportion {
                    count: share * s.metrics.canary.requests,
                    trials: s.metrics.canary.requests,
                    p0: SLOW_SHARE,
                })
            })
            .collect()
    };
    let slow_detail = |batches: &[Proportion], what: String, log_e: f64| {
        let (slow, all) = batches.iter().fold((0.0, 0.0), |(s, n), b| (s + b.count, n + b.trials));
        format!(
            "canary slower than {what} on {} of {} requests (a p95 within it allows 5%): e = {} >= {:.0}",
            pct(if all > 0.0 { slow / all } else { 0.0 }),
            count(all),
            e(log_e),
            threshold.exp()
        )
    };
    if let Some(tolerance) = gates.max_p95_increase_ratio {
        // A stage without stable traffic judges by the last stable p95 seen.
        let stable_p95 = |i: usize| {
            samples[..=i]
                .iter()
                .rev()
                .find(|s| s.metrics.stable.requests >= P95_MIN_REQUESTS)
                .and_then(|s| s.metrics.stable.p95_ms)
        };
        let batches = slow_batches(&|i| stable_p95(i).map(|p| p * (1.0 + tolerance)));
        let log_e = mixture.log_e(|r| batches.iter().map(|b| proportion_log_lr(b, r)).sum());
        let what = format!("{:.0}% over the stable's p95", tolerance * 100.0);
        out.push(standing("latency_vs_stable".into(), log_e, slow_detail(&batches, what, log_e)));
    }
    if let Some(limit) = gates.max_error_rate {
        let total = Proportion { count: canary_total.errors, trials: canary_total.requests, p0: limit };
        let log_e = mixture.log_e(|r| proportion_log_lr(&total, r));
        out.push(standing(
            "error_rate_limit".into(),
            log_e,
            format!(
                "canary error rate {} over {} requests, above max_error_rate {}: e = {} >= {:.0}",
                rate(&canary_total).map(pct).unwrap_or_else(|| "n/a".into()),
                count(canary_total.requests),
                pct(limit),
                e(log_e),
                threshold.exp()
            ),
        ));
    }
    if let Some(limit) = gates.max_p95_latency_ms {
        let batches = slow_batches(&|_| Some(limit));
        let log_e = mixture.log_e(|r| batches.iter().map(|b| proportion_log_lr(b, r)).sum());
        out.push(standing("latency_limit".into(), log_e, slow_detail(&batches, format!("{limit:.0} ms"), log_e)));
    }
    for (i, gate) in gates.custom.iter().enumerate().filter(|(_, g)| counted(g)) {
        let name = format!("{}/{} {}", gate.namespace, gate.metric, gate.stat);
        let value = |side: &SideMetrics| side.custom.get(i).copied().flatten().unwrap_or(0.0);
        if let Some(max) = gate.max {
            // A count over `period_seconds` at most `max`: a rate, tested as Poisson.
            let per_second = max / f64::from(gate.period_seconds.max(1));
            let batches: Vec<(f64, f64)> =
                samples.iter().map(|s| (value(&s.metrics.canary), per_second * s.seconds as f64)).collect();
            let log_e = mixture.log_e(|r| batches.iter().map(|(c, e)| poisson_log_lr(*c, *e, r)).sum());
            let seen: f64 = batches.iter().map(|(c, _)| c).sum();
            out.push(standing(
                format!("custom[{i}]_limit"),
                log_e,
                format!(
                    "canary {name} {} over the stages, more than max {max} per {} s: e = {} >= {:.0}",
                    count(seen),
                    gate.period_seconds,
                    e(log_e),
                    threshold.exp()
                ),
            ));
        }
        if let Some(ratio) = gate.max_increase_ratio {
            let batches: Vec<Split> = samples
                .iter()
                .filter(|s| s.metrics.stable.requests > 0.0 && s.metrics.canary.requests > 0.0)
                .map(|s| Split {
                    canary: value(&s.metrics.canary),
                    stable: value(&s.metrics.stable),
                    canary_share: s.metrics.canary.requests / (s.metrics.canary.requests + s.metrics.stable.requests),
                })
                .collect();
            let log_e = mixture.log_e(|r| batches.iter().map(|b| split_log_lr(b, 1.0 + ratio, r)).sum());
            out.push(standing(
                format!("custom[{i}]_vs_stable"),
                log_e,
                format!(
                    "canary {name} more than {:.0}% above stable's, per request: e = {} >= {:.0}",
                    ratio * 100.0,
                    e(log_e),
                    threshold.exp()
                ),
            ));
        }
    }
    out
}

/// Custom gates on statistics that are not counts (averages, percentiles, extremes):
/// there is no sample size to bound them with, so they compare as measured.
fn point_checks(gates: &Gates, metrics: &MetricSnapshot) -> Vec<String> {
    let mut failed = Vec::new();
    for (i, gate) in gates.custom.iter().enumerate() {
        if matches!(gate.stat.as_str(), "Sum" | "SampleCount") {
            continue;
        }
        let value = |side: &SideMetrics| side.custom.get(i).copied().flatten();
        let Some(c) = value(&metrics.canary) else { continue };
        let name = format!("{}/{} {}", gate.namespace, gate.metric, gate.stat);
        if let Some(max) = gate.max.filter(|max| c > *max) {
            failed.push(format!("canary {name} {c} > max {max}"));
        }
        if let (Some(ratio), Some(s)) = (gate.max_increase_ratio, value(&metrics.stable)) {
            if s > 0.0 && c / s - 1.0 > ratio {
                failed.push(format!(
                    "canary {name} {c} is {:.0}% above stable {s} (limit {:.0}%)",
                    (c / s - 1.0) * 100.0,
                    ratio * 100.0
                ));
            }
        }
    }
    failed
}

/// A request or error count as a person reads it: whole, and never "-0".
pub fn count(value: f64) -> String {
    format!("{:.0}", value.max(0.0) + 0.0)
}

impl Evidence {
    /// The numbers behind a verdict, in a line: "canary 1000 requests, 80 errors (8.00%),
    /// p95 850 ms; stable 20000 requests, 20 errors (0.10%), p95 800 ms".
    pub fn metrics_line(&self) -> Option<String> {
        let m = self.metrics.as_ref()?;
        let side = |name: &str, s: &SideMetrics| {
            format!(
                "{name} {} requests, {} errors ({}), p95 {}",
                count(s.requests),
                count(s.errors),
                rate(s).map(pct).unwrap_or_else(|| "n/a".into()),
                s.p95_ms.map(|p| format!("{p:.0} ms")).unwrap_or_else(|| "n/a".into())
            )
        };
        Some(format!("{}; {}", side("canary", &m.canary), side("stable", &m.stable)))
    }

    /// Whether the verdict came from the gate alarms rather than the metrics.
    pub fn from_alarms(&self) -> bool {
        self.verdict == Verdict::Unhealthy
            && self.metrics.is_none()
            && self.reasons.iter().any(|r| r.starts_with("alarm "))
    }
}

fn rate(side: &SideMetrics) -> Option<f64> {
    (side.requests > 0.0).then(|| side.errors.min(side.requests) / side.requests)
}

fn pct(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// One-sided two-proportion z-test of H1: p1 > p2, with the pooled standard error and
/// Yates' continuity correction, which keeps the normal approximation from crying wolf
/// on a small canary (1 error in 20 requests is not evidence).
/// Returns (z, p-value); `None` when either side has no requests. With no variance at
/// all (no errors anywhere, or errors everywhere) z = 0 and p = 0.5: no evidence.
pub fn two_proportion_greater(x1: f64, n1: f64, x2: f64, n2: f64) -> Option<(f64, f64)> {
    if n1 <= 0.0 || n2 <= 0.0 {
        return None;
    }
    let (x1, x2) = (x1.clamp(0.0, n1), x2.clamp(0.0, n2));
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return Some((0.0, 0.5));
    }
    let difference = x1 / n1 - x2 / n2;
    let correction = 0.5 * (1.0 / n1 + 1.0 / n2);
    let z = difference.signum() * (difference.abs() - correction).max(0.0) / se;
    Some((z, 1.0 - standard_normal_cdf(z)))
}

/// Φ(z) via erfc (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
pub fn standard_normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{CustomGate, OnInsufficientData};

    fn side(requests: f64, errors: f64, p95_ms: Option<f64>) -> SideMetrics {
        SideMetrics { requests, errors, p95_ms, ..Default::default() }
    }

    fn snapshot(canary: SideMetrics, stable: SideMetrics) -> MetricSnapshot {
        MetricSnapshot { canary, stable }
    }

    fn gates() -> Gates {
        Gates { min_requests: 100, on_insufficient_data: OnInsufficientData::Hold, ..Gates::default() }
    }

    #[test]
    fn normal_cdf_matches_tables() {
        for (z, expected) in [(0.0, 0.5), (1.644_854, 0.95), (-1.959_964, 0.025), (3.090_232, 0.999), (-8.0, 0.0)] {
            assert!((standard_normal_cdf(z) - expected).abs() < 1e-6, "Φ({z}) = {}", standard_normal_cdf(z));
        }
    }

    #[test]
    fn two_proportion_test_at_its_edges() {
        assert_eq!(two_proportion_greater(0.0, 100.0, 0.0, 100.0), Some((0.0, 0.5)), "no errors anywhere: no evidence");
        // A difference inside the continuity correction is no evidence either way.
        assert_eq!(two_proportion_greater(1.0, 100.0, 0.0, 100.0).map(|t| t.0), Some(0.0));
        assert_eq!(
            two_proportion_greater(100.0, 100.0, 50.0, 50.0),
            Some((0.0, 0.5)),
            "errors everywhere: no evidence"
        );
        assert_eq!(two_proportion_greater(1.0, 0.0, 0.0, 100.0), None, "no canary requests");
        assert_eq!(two_proportion_greater(1.0, 10.0, 0.0, 0.0), None, "no stable requests");
        // 1 error in 20 canary requests vs 1% on stable: 5% looks bad but is noise.
        let (_, p) = two_proportion_greater(1.0, 20.0, 10.0, 1000.0).unwrap();
        assert!(p > 0.05, "p = {p}");
        // The same 5% over 2000 requests is not noise.
        let (z, p) = two_proportion_greater(100.0, 2000.0, 10.0, 1000.0).unwrap();
        assert!(z > 4.0 && p < 1e-4, "z = {z}, p = {p}");
        // Canary better than stable: p near 1.
        assert!(two_proportion_greater(0.0, 500.0, 50.0, 500.0).unwrap().1 > 0.99);
        // Counts above the totals are clamped rather than producing NaN.
        assert!(two_proportion_greater(50.0, 10.0, 0.0, 10.0).unwrap().1.is_finite());
    }

    #[test]
    fn any_gate_alarm_in_alarm_is_unhealthy_without_reading_metrics() {
        let g = Gates { alarms: vec!["a".into(), "b".into()], ..gates() };
        let e = judge(&g, &[("a".into(), AlarmState::Ok), ("b".into(), AlarmState::Alarm)], None);
        assert_eq!(e.verdict, Verdict::Unhealthy);
        assert_eq!(e.reasons, ["alarm b is ALARM"]);
    }

    #[test]
    fn insufficient_data_alarms_count_as_configured_and_missing_alarms_fail_safe() {
        let states = [("a".to_owned(), AlarmState::InsufficientData)];
        let lenient = Gates { alarms: vec!["a".into()], ..gates() };
        assert_eq!(judge_alarms(&lenient, &states), None);
        let strict = Gates { alarm_insufficient_data: InsufficientDataAlarm::Unhealthy, ..lenient.clone() };
        assert_eq!(judge_alarms(&strict, &states), Some(vec!["alarm a is INSUFFICIENT_DATA".into()]));
        assert_eq!(judge_alarms(&lenient, &[]), Some(vec!["alarm a does not exist".into()]));
    }

    #[test]
    fn too_few_canary_requests_is_inconclusive() {
        let e = judge(&gates(), &[], Some(&snapshot(side(99.0, 50.0, None), side(10_000.0, 0.0, None))));
        assert_eq!(e.verdict, Verdict::Inconclusive);
        assert!(e.summary().contains("99 canary requests, fewer than min_requests 100"), "{}", e.summary());
    }

    #[test]
    fn a_canary_that_served_nothing_is_inconclusive_even_with_min_requests_zero() {
        let g = Gates { min_requests: 0, ..gates() };
        let e = judge(&g, &[], Some(&snapshot(side(-0.0, 0.0, None), side(10_000.0, 0.0, None))));
        assert_eq!(e.verdict, Verdict::Inconclusive);
        assert_eq!(e.summary(), "inconclusive: 0 canary requests, fewer than min_requests 1");
        let one = judge(&g, &[], Some(&snapshot(side(1.0, 0.0, None), side(10_000.0, 0.0, None))));
        assert!(one.summary().starts_with("healthy: canary 1 requests"), "{}", one.summary());
    }

    #[test]
    fn absolute_limits() {
        let g = Gates { max_error_rate: Some(0.05), max_p95_latency_ms: Some(1000.0), ..gates() };
        let ok = judge(&g, &[], Some(&snapshot(side(1000.0, 50.0, Some(1000.0)), side(1000.0, 0.0, None))));
        assert_eq!(ok.verdict, Verdict::Healthy, "at the limits is healthy: {:?}", ok.reasons);
        let bad = judge(&g, &[], Some(&snapshot(side(1000.0, 51.0, Some(1000.5)), side(1000.0, 0.0, None))));
        assert_eq!(bad.verdict, Verdict::Unhealthy);
        assert_eq!(bad.reasons.len(), 2, "{:?}", bad.reasons);
        assert!(bad.reasons[0].contains("5.10% > max_error_rate 5.00%"), "{:?}", bad.reasons);
    }

    #[test]
    fn error_rate_increase_needs_both_the_margin_and_significance() {
        let g = Gates { max_error_rate_increase: Some(0.01), ..gates() };
        // 3 errors in 100 vs 1% on stable: +2 points, but not significant at 95%.
        let noisy = judge(&g, &[], Some(&snapshot(side(100.0, 3.0, None), side(10_000.0, 100.0, None))));
        assert_eq!(noisy.verdict, Verdict::Healthy, "{:?}", noisy.reasons);
        assert!(noisy.error_rate_p_value.unwrap() > 0.05);
        // 30 in 1000: the same +2 points, now significant.
        let real = judge(&g, &[], Some(&snapshot(side(1000.0, 30.0, None), side(10_000.0, 100.0, None))));
        assert_eq!(real.verdict, Verdict::Unhealthy, "{:?}", real.reasons);
        // Significant but within the margin: healthy.
        let small = judge(&g, &[], Some(&snapshot(side(100_000.0, 1500.0, None), side(100_000.0, 1000.0, None))));
        assert_eq!(small.verdict, Verdict::Healthy, "{:?}", small.reasons);
    }

    #[test]
    fn relative_limits_with_stable_at_zero_errors() {
        let g = Gates { max_error_rate_increase: Some(0.001), ..gates() };
        let e = judge(&g, &[], Some(&snapshot(side(2000.0, 10.0, None), side(20_000.0, 0.0, None))));
        assert_eq!(e.verdict, Verdict::Unhealthy, "0.5% vs 0%: {:?}", e.reasons);
        let clean = judge(&g, &[], Some(&snapshot(side(2000.0, 0.0, None), side(20_000.0, 0.0, None))));
        assert_eq!(clean.verdict, Verdict::Healthy);
    }

    #[test]
    fn p95_ratio_over_stable_and_missing_stable_latency() {
        let g = Gates { max_p95_increase_ratio: Some(0.2), ..gates() };
        let slow = judge(&g, &[], Some(&snapshot(side(500.0, 0.0, Some(1300.0)), side(500.0, 0.0, Some(1000.0)))));
        assert_eq!(slow.verdict, Verdict::Unhealthy);
        assert!(slow.reasons[0].contains("30% above stable"), "{:?}", slow.reasons);
        let fine = judge(&g, &[], Some(&snapshot(side(500.0, 0.0, Some(1190.0)), side(500.0, 0.0, Some(1000.0)))));
        assert_eq!(fine.verdict, Verdict::Healthy);
        let no_stable = judge(&g, &[], Some(&snapshot(side(500.0, 0.0, Some(9999.0)), side(0.0, 0.0, None))));
        assert_eq!(no_stable.verdict, Verdict::Healthy, "nothing to compare with");
    }

    #[test]
    fn custom_ai_metrics_absolute_and_relative() {
        let gate = |max: Option<f64>, ratio: Option<f64>| CustomGate {
            namespace: "AIService".into(),
            metric: "GuardrailBlocks".into(),
            stat: "Sum".into(),
            period_seconds: 60,
            dimensions: [("Version".to_owned(), "{version}".to_owned())].into(),
            max,
            max_increase_ratio: ratio,
        };
        let g = Gates { custom: vec![gate(Some(20.0), None), gate(None, Some(0.5))], ..gates() };
        let with = |c: [Option<f64>; 2], s: [Option<f64>; 2]| {
            let mut canary = side(1000.0, 0.0, None);
            canary.custom = c.to_vec();
            let mut stable = side(1000.0, 0.0, None);
            stable.custom = s.to_vec();
            judge(&g, &[], Some(&snapshot(canary, stable)))
        };
        assert_eq!(with([Some(20.0), Some(15.0)], [None, Some(10.0)]).verdict, Verdict::Healthy);
        let over = with([Some(21.0), Some(15.0)], [None, Some(10.0)]);
        assert_eq!(over.reasons, ["canary AIService/GuardrailBlocks Sum 21 > max 20"]);
        assert_eq!(with([None, Some(16.0)], [None, Some(10.0)]).verdict, Verdict::Unhealthy);
        let stable_zero = with([None, Some(1.0)], [None, Some(0.0)]);
        assert!(stable_zero.reasons[0].contains("where stable has none"), "{:?}", stable_zero.reasons);
        assert_eq!(with([None, None], [None, Some(3.0)]).verdict, Verdict::Healthy, "no canary data: not judged");
    }

    #[test]
    fn evidence_carries_values_limits_and_sample_sizes() {
        let g = Gates { max_error_rate_increase: Some(0.01), ..gates() };
        let e = judge(
            &g,
            &[("a".into(), AlarmState::Ok)],
            Some(&snapshot(side(1000.0, 30.0, Some(800.0)), side(10_000.0, 100.0, None))),
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["verdict"], "unhealthy");
        assert_eq!(json["metrics"]["canary"]["requests"], 1000.0);
        assert_eq!(json["metrics"]["stable"]["errors"], 100.0);
        assert!(json["error_rate_p_value"].as_f64().unwrap() < 0.05);
        assert_eq!(json["alarms"][0], serde_json::json!(["a", "OK"]));
    }

    /// A stage's snapshot: canary and stable (requests, errors), canary percentiles.
    fn stage(
        stage: usize,
        canary: (f64, f64),
        stable: (f64, f64),
        stable_p95: f64,
        canary_tail: &[f64],
    ) -> StageSample {
        let mut c = side(canary.0, canary.1, canary_tail.get(3).copied());
        c.percentiles = canary_tail.iter().map(|v| Some(*v)).collect();
        let s = side(stable.0, stable.1, Some(stable_p95));
        StageSample { stage, seconds: 900, metrics: snapshot(c, s) }
    }

    /// A canary's percentiles (ms) for a lognormal with median `median` and σ 0.5.
    fn tail(median: f64) -> Vec<f64> {
        PERCENTILE_LEVELS
            .iter()
            .map(|l| median * (0.5 * crate::release::sequential::inverse_normal_cdf(l / 100.0)).exp())
            .collect()
    }

    fn sequential() -> Gates {
        Gates { false_rollback_rate: 0.01, min_requests: 100, ..Gates::default() }
    }

    #[test]
    fn each_test_gets_its_share_of_the_false_rollback_rate() {
        let g = Gates { max_error_rate: Some(0.05), max_p95_increase_ratio: Some(0.2), ..sequential() };
        let tests = standings(&g, &[stage(0, (1000.0, 5.0), (19_000.0, 95.0), 910.0, &tail(400.0))]);
        assert_eq!(
            tests.iter().map(|t| t.test.as_str()).collect::<Vec<_>>(),
            ["errors_vs_stable", "latency_vs_stable", "error_rate_limit"]
        );
        assert!(tests.iter().all(|t| (t.threshold - (3.0_f64 / 0.01).ln()).abs() < 1e-12), "ln(k/α) with k = 3");
    }

    #[test]
    fn a_doubled_error_rate_is_a_regression_and_an_equal_one_is_not() {
        // 5% canary traffic, then 25%: stable at 0.5%.
        let doubled = [
            stage(0, (750.0, 8.0), (14_250.0, 71.0), 910.0, &tail(400.0)),
            stage(1, (3750.0, 38.0), (11_250.0, 56.0), 910.0, &tail(400.0)),
        ];
        let e = judge_sequential(&sequential(), &[], &doubled);
        assert_eq!(e.verdict, Verdict::Unhealthy, "{:?}", e.reasons);
        assert!(
            e.reasons[0].starts_with(
                "canary error rate 1.02% over 4500 requests against stable 0.50%: a regression, e = 328 >= 100"
            ),
            "{:?}",
            e.reasons
        );
        let equal = [
            stage(0, (750.0, 4.0), (14_250.0, 71.0), 910.0, &tail(400.0)),
            stage(1, (3750.0, 19.0), (11_250.0, 56.0), 910.0, &tail(400.0)),
        ];
        let e = judge_sequential(&sequential(), &[], &equal);
        assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.reasons);
        assert!(e.reasons[0].contains("no regression shown (closest: errors_vs_stable"), "{:?}", e.reasons);
        // Within a stated tolerance, the same doubling is no regression.
        let tolerant = Gates { max_error_rate_ratio: Some(2.5), ..sequential() };
        assert_eq!(judge_sequential(&tolerant, &[], &doubled).verdict, Verdict::Healthy);
    }

    #[test]
    fn the_final_stage_without_stable_traffic_is_judged_against_the_stables_record() {
        let earlier = [
            stage(0, (750.0, 4.0), (14_250.0, 71.0), 910.0, &tail(400.0)),
            stage(1, (7500.0, 37.0), (7500.0, 38.0), 910.0, &tail(400.0)),
        ];
        // At 100%: the stable serves nothing; the canary errs at 2%, four times its record.
        let mut stages = earlier.to_vec();
        stages.push(stage(2, (10_000.0, 200.0), (0.0, 0.0), 0.0, &tail(400.0)));
        let e = judge_sequential(&sequential(), &[], &stages);
        assert_eq!(e.verdict, Verdict::Unhealthy, "{:?}", e.reasons);
        // The same canary at its record's rate is fine.
        stages[2] = stage(2, (10_000.0, 50.0), (0.0, 0.0), 0.0, &tail(400.0));
        assert_eq!(judge_sequential(&sequential(), &[], &stages).verdict, Verdict::Healthy);
    }

    #[test]
    fn latency_is_judged_by_the_share_of_slow_requests_not_two_p95s() {
        let g = Gates { max_p95_increase_ratio: Some(0.2), ..sequential() };
        let stable_p95 = 400.0 * (0.5 * 1.644_853_6_f64).exp();
        let at = |factor: f64| [stage(0, (4000.0, 20.0), (12_000.0, 60.0), stable_p95, &tail(400.0 * factor))];
        let slow = judge_sequential(&g, &[], &at(1.5));
        assert_eq!(slow.verdict, Verdict::Unhealthy, "{:?}", slow.reasons);
        assert!(
            slow.reasons.iter().any(|r| r.starts_with("canary slower than 20% over the stable's p95 on")),
            "{:?}",
            slow.reasons
        );
        // 10% slower is inside the 20% tolerance: under 5% of its requests pass the threshold.
        assert_eq!(judge_sequential(&g, &[], &at(1.1)).verdict, Verdict::Healthy);
    }

    #[test]
    fn too_few_requests_is_inconclusive_but_strong_evidence_still_rolls_back() {
        let few = [stage(0, (40.0, 0.0), (760.0, 4.0), 910.0, &tail(400.0))];
        assert_eq!(judge_sequential(&sequential(), &[], &few).verdict, Verdict::Inconclusive);
        let burning = [stage(0, (40.0, 30.0), (760.0, 4.0), 910.0, &tail(400.0))];
        assert_eq!(judge_sequential(&sequential(), &[], &burning).verdict, Verdict::Unhealthy);
    }
}
