//! The fixed-horizon judge: a two-proportion z-test and raw p95 comparisons on the
//! current stage, re-run every tick. Kept for comparison (the simulator runs it beside
//! the sequential judge) and for releases written for it.

use crate::domain::event::AlarmState;
use crate::domain::metrics::{GateKind, MetricSnapshot, SideMetrics};
use crate::release::judge::gates::{Gates, DEFAULT_ERROR_RATE_CONFIDENCE};
use crate::release::judge::{alarm_evidence, healthy, rate, too_few, Evidence, Verdict};
use crate::text::pct;

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
    // A canary that served nothing is never healthy, whatever the release says.
    let min_requests = gates.min_requests.max(1);
    if m.canary.requests < min_requests as f64 {
        evidence.verdict = Verdict::Inconclusive;
        evidence.reasons.push(too_few(m.canary.requests, min_requests));
        return evidence;
    }
    let mut failed = error_checks(gates, &m.canary, &m.stable, &mut evidence);
    failed.extend(latency_checks(gates, &m.canary, &m.stable));
    failed.extend(custom_checks(gates, &m.canary, &m.stable));
    if failed.is_empty() {
        evidence.reasons.push(healthy(gates, &m.canary, &m.stable));
    } else {
        evidence.verdict = Verdict::Unhealthy;
        evidence.reasons = failed;
    }
    evidence
}

/// The absolute error limit, and the z-test against the stable (its z and p kept in
/// the evidence).
fn error_checks(gates: &Gates, canary: &SideMetrics, stable: &SideMetrics, evidence: &mut Evidence) -> Vec<String> {
    let mut failed = Vec::new();
    let (canary_rate, stable_rate) = (rate(canary), rate(stable));
    if let (Some(limit), Some(r)) = (gates.max_error_rate, canary_rate) {
        if r > limit {
            failed.push(format!("canary error rate {} > max_error_rate {}", pct(r), pct(limit)));
        }
    }
    let (Some(limit), Some(c), Some(s)) = (gates.max_error_rate_increase, canary_rate, stable_rate) else {
        return failed;
    };
    let test = two_proportion_greater(canary.errors, canary.requests, stable.errors, stable.requests);
    evidence.error_rate_z = test.map(|t| t.0);
    evidence.error_rate_p_value = test.map(|t| t.1);
    let confidence = gates.error_rate_confidence.unwrap_or(DEFAULT_ERROR_RATE_CONFIDENCE);
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
    failed
}

/// Raw p95s: against the limit, and against the stable's.
fn latency_checks(gates: &Gates, canary: &SideMetrics, stable: &SideMetrics) -> Vec<String> {
    let mut failed = Vec::new();
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
    failed
}

/// Custom gates, compared as measured; a stable at zero makes any canary value an
/// unbounded increase, which fails safe.
fn custom_checks(gates: &Gates, canary: &SideMetrics, stable: &SideMetrics) -> Vec<String> {
    let mut failed = Vec::new();
    for (i, gate) in gates.custom.iter().enumerate() {
        // A rate is its numerator over its denominator; the rest as measured.
        let value = |side: &SideMetrics| {
            let measured = side.custom.get(i).copied().flatten();
            match gate.kind() {
                Some(GateKind::Rate) => Some(measured.unwrap_or(0.0) / side.denominator(i, gate)?),
                _ => measured,
            }
        };
        let Some(c) = value(canary) else { continue };
        let name = gate.name();
        if let Some(max) = gate.max.filter(|max| c > *max) {
            failed.push(format!("canary {name} {c} > max {max}"));
        }
        let Some(ratio) = gate.max_increase_ratio else { continue };
        match value(stable) {
            Some(s) if s > 0.0 && c / s - 1.0 > ratio => failed.push(format!(
                "canary {name} {c} is {:.0}% above stable {s} (limit {:.0}%)",
                (c / s - 1.0) * 100.0,
                ratio * 100.0
            )),
            Some(s) if s > 0.0 => {}
            _ if c > 0.0 => failed
                .push(format!("canary {name} {c} where stable has none (limit {:.0}% above stable)", ratio * 100.0)),
            _ => {}
        }
    }
    failed
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
    use crate::domain::metrics::CustomGate;
    use crate::release::judge::gates::{InsufficientDataAlarm, OnInsufficientData};
    use crate::release::judge::judge_alarms;

    fn side(requests: f64, errors: f64, p95_ms: Option<f64>) -> SideMetrics {
        SideMetrics { requests, errors, p95_ms, ..Default::default() }
    }

    fn snapshot(canary: SideMetrics, stable: SideMetrics) -> MetricSnapshot {
        MetricSnapshot { canary, stable, pinned: None }
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
        assert!(one.summary().starts_with("healthy: 1 canary requests; errors 0.00% vs 0.00%"), "{}", one.summary());
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
            period_seconds: 60,
            dimensions: [("Version".to_owned(), "{version}".to_owned())].into(),
            max,
            max_increase_ratio: ratio,
            ..CustomGate::new("AIService", "GuardrailBlocks", "Sum")
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
}
