//! The health judge: gate alarms, then canary-vs-stable metrics over the stage so far.
//! Pure: it gets alarm states and a metric snapshot and returns a verdict with the
//! evidence behind it.

use serde::Serialize;

use crate::event::AlarmState;
use crate::ports::{MetricSnapshot, SideMetrics};
use crate::release::{Gates, InsufficientDataAlarm};

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

pub fn judge(gates: &Gates, states: &[(String, AlarmState)], metrics: Option<&MetricSnapshot>) -> Evidence {
    let alarms: Vec<(String, &'static str)> = states.iter().map(|(n, s)| (n.clone(), s.as_str())).collect();
    let mut evidence = Evidence {
        verdict: Verdict::Healthy,
        reasons: Vec::new(),
        alarms,
        metrics: metrics.cloned(),
        error_rate_z: None,
        error_rate_p_value: None,
    };
    if let Some(failed) = judge_alarms(gates, states) {
        evidence.verdict = Verdict::Unhealthy;
        evidence.reasons = failed;
        return evidence;
    }
    let Some(m) = metrics else {
        evidence.reasons.push("alarms OK; no metrics needed".into());
        return evidence;
    };
    let (canary, stable) = (&m.canary, &m.stable);
    if canary.requests < gates.min_requests as f64 {
        evidence.verdict = Verdict::Inconclusive;
        evidence
            .reasons
            .push(format!("{} canary requests, fewer than min_requests {}", canary.requests, gates.min_requests));
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
            let significant = test.is_some_and(|(_, p)| p < 1.0 - gates.error_rate_confidence);
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
                Some(s) if s > 0.0 => {
                    if c / s - 1.0 > ratio {
                        failed.push(format!(
                            "canary {name} {c} is {:.0}% above stable {s} (limit {:.0}%)",
                            (c / s - 1.0) * 100.0,
                            ratio * 100.0
                        ));
                    }
                }
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
            canary.requests,
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

fn rate(side: &SideMetrics) -> Option<f64> {
    (side.requests > 0.0).then(|| side.errors.min(side.requests) / side.requests)
}

fn pct(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// One-sided two-proportion z-test of H1: p1 > p2, with the pooled standard error.
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
    let z = (x1 / n1 - x2 / n2) / se;
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
