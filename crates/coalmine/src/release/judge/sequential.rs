//! The sequential judge: every statistical test the gates ask for, each an anytime-valid
//! mixture SPRT ([`evalues`]) over all the stages so far, each at its share of
//! `false_rollback_rate`.

use crate::domain::event::AlarmState;
use crate::domain::metrics::{CustomGate, MetricSnapshot, SideMetrics, PERCENTILE_LEVELS};
use crate::release::core::gates::Gates;
use crate::release::judge::evalues::{
    poisson_log_lr, proportion_log_lr, share_above, split_log_lr, upper_bound, Mixture, Proportion, Split, Standing,
};
use crate::release::judge::{alarm_evidence, healthy, rate, too_few, Evidence, StageSample, Verdict};
use crate::text::{count, pct};

/// Under the null "no slower than the limit", at most this share of the canary's
/// requests is slower: the limit is a p95.
const SLOW_SHARE: f64 = 0.05;
/// A side needs this many requests before its p95 is a threshold to judge the other by.
const P95_MIN_REQUESTS: f64 = 20.0;

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
        evidence.reasons.push(too_few(canary.requests, min_requests));
    } else {
        let ways: Vec<String> =
            evidence.tests.iter().map(|t| format!("{} {}", t.name, way(t.way_to_rollback()))).collect();
        let closest = if ways.is_empty() {
            String::new()
        } else {
            format!("; no regression shown ({} of the way to a rollback)", ways.join(", "))
        };
        evidence.reasons.push(format!("{}{closest}", healthy(canary, stable)));
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

/// A share of the way to a rollback: "0%", "0.4%", "37%".
fn way(share: f64) -> String {
    let percent = share * 100.0;
    if percent > 0.0 && percent < 9.95 {
        format!("{percent:.1}%")
    } else {
        format!("{percent:.0}%")
    }
}

/// Custom gates on counts are tested; others compare as measured.
fn counted(gate: &CustomGate) -> bool {
    matches!(gate.stat.as_str(), "Sum" | "SampleCount")
}

/// Every sequential test the gates ask for, over all the stages so far.
pub fn standings(gates: &Gates, samples: &[StageSample]) -> Vec<Standing> {
    let tests = Tests::new(gates, samples);
    let mut out = vec![tests.errors_vs_stable()];
    out.extend(gates.max_p95_increase_ratio.map(|tolerance| tests.latency_vs_stable(tolerance)));
    out.extend(gates.max_error_rate.map(|limit| tests.error_rate_limit(limit)));
    out.extend(gates.max_p95_latency_ms.map(|limit| tests.latency_limit(limit)));
    for (i, gate) in gates.custom.iter().enumerate().filter(|(_, g)| counted(g)) {
        out.extend(gate.max.map(|max| tests.custom_limit(i, gate, max)));
        out.extend(gate.max_increase_ratio.map(|ratio| tests.custom_vs_stable(i, gate, ratio)));
    }
    out
}

/// What every test of one judgement shares: the evidence, the prior, and its share of
/// the false rollback rate.
struct Tests<'a> {
    samples: &'a [StageSample],
    mixture: Mixture,
    rho0: f64,
    alpha: f64,
    threshold: f64,
    canary_total: SideMetrics,
    stable_total: SideMetrics,
}

impl<'a> Tests<'a> {
    fn new(gates: &Gates, samples: &'a [StageSample]) -> Self {
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
        let total = |side: fn(&MetricSnapshot) -> &SideMetrics| {
            samples.iter().map(|s| side(&s.metrics)).fold(SideMetrics::default(), |mut t, s| {
                t.requests += s.requests;
                t.errors += s.errors;
                t
            })
        };
        Tests {
            samples,
            mixture: Mixture::default(),
            rho0: gates.max_error_rate_ratio.unwrap_or(1.0),
            alpha,
            threshold: (1.0 / alpha).ln(),
            canary_total: total(|m| &m.canary),
            stable_total: total(|m| &m.stable),
        }
    }

    fn standing(&self, test: String, name: String, log_e: f64, detail: String) -> Standing {
        Standing { test, name, log_e, threshold: self.threshold, detail }
    }

    /// "e = 12 >= 300": where a test stands against its threshold.
    fn against_threshold(&self, log_e: f64) -> String {
        format!("e = {} >= {:.0}", e(log_e), self.threshold.exp())
    }

    /// The stages where both sides served, as splits of `count` between them.
    fn splits(&self, count: impl Fn(&SideMetrics) -> f64) -> Vec<Split> {
        self.samples
            .iter()
            .filter(|s| s.metrics.stable.requests > 0.0 && s.metrics.canary.requests > 0.0)
            .map(|s| Split {
                canary: count(&s.metrics.canary),
                stable: count(&s.metrics.stable),
                canary_share: s.metrics.canary.requests / (s.metrics.canary.requests + s.metrics.stable.requests),
            })
            .collect()
    }

    /// The canary's error rate against the stable's, as a ratio, in every stage; a stage
    /// without stable traffic (Lambda at 100%) against the stable's record's upper bound.
    fn errors_vs_stable(&self) -> Standing {
        let (rho0, stable) = (self.rho0, &self.stable_total);
        let splits = self.splits(|side| side.errors);
        let record = upper_bound(stable.errors, stable.requests, self.alpha);
        let alone: Vec<Proportion> = self
            .samples
            .iter()
            .filter(|s| s.metrics.stable.requests <= 0.0 && s.metrics.canary.requests > 0.0 && stable.requests > 0.0)
            .map(|s| Proportion {
                count: s.metrics.canary.errors,
                trials: s.metrics.canary.requests,
                p0: rho0 * record,
            })
            .collect();
        let log_e = self.mixture.log_e(|r| {
            splits.iter().map(|b| split_log_lr(b, rho0, r)).sum::<f64>()
                + alone.iter().map(|p| proportion_log_lr(p, r)).sum::<f64>()
        });
        let tolerance = if rho0 > 1.0 { format!(" (tolerance {rho0}x)") } else { String::new() };
        let detail = format!(
            "canary error rate {} over {} requests against stable {}{tolerance}: a regression, {}",
            rate(&self.canary_total).map(pct).unwrap_or_else(|| "n/a".into()),
            count(self.canary_total.requests),
            rate(stable).map(pct).unwrap_or_else(|| "n/a".into()),
            self.against_threshold(log_e)
        );
        self.standing("errors_vs_stable".into(), "errors".into(), log_e, detail)
    }

    /// The canary's share of requests slower than a threshold (per stage), against 5%:
    /// the canary's p95 is above the threshold exactly when more than 5% of its requests
    /// are.
    fn slow(&self, test: &str, name: &str, what: String, threshold_of: impl Fn(usize) -> Option<f64>) -> Standing {
        let batches: Vec<Proportion> = self
            .samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.metrics.canary.requests > 0.0)
            .filter_map(|(i, s)| {
                let share = share_above(threshold_of(i)?, &PERCENTILE_LEVELS, &s.metrics.canary.percentiles)?;
                Some(Proportion {
                    count: share * s.metrics.canary.requests,
                    trials: s.metrics.canary.requests,
                    p0: SLOW_SHARE,
                })
            })
            .collect();
        let log_e = self.mixture.log_e(|r| batches.iter().map(|b| proportion_log_lr(b, r)).sum());
        let (slow, all) = batches.iter().fold((0.0, 0.0), |(s, n), b| (s + b.count, n + b.trials));
        let detail = format!(
            "canary slower than {what} on {} of {} requests (a p95 within it allows 5%): {}",
            pct(if all > 0.0 { slow / all } else { 0.0 }),
            count(all),
            self.against_threshold(log_e)
        );
        self.standing(test.into(), name.into(), log_e, detail)
    }

    /// Against the stable's p95 plus the tolerance; a stage without stable traffic by the
    /// last stable p95 seen.
    fn latency_vs_stable(&self, tolerance: f64) -> Standing {
        let stable_p95 = |i: usize| {
            self.samples[..=i]
                .iter()
                .rev()
                .find(|s| s.metrics.stable.requests >= P95_MIN_REQUESTS)
                .and_then(|s| s.metrics.stable.p95_ms)
        };
        let what = format!("{:.0}% over the stable's p95", tolerance * 100.0);
        self.slow("latency_vs_stable", "latency", what, |i| stable_p95(i).map(|p| p * (1.0 + tolerance)))
    }

    fn latency_limit(&self, limit: f64) -> Standing {
        self.slow("latency_limit", "latency limit", format!("{limit:.0} ms"), |_| Some(limit))
    }

    fn error_rate_limit(&self, limit: f64) -> Standing {
        let total = Proportion { count: self.canary_total.errors, trials: self.canary_total.requests, p0: limit };
        let log_e = self.mixture.log_e(|r| proportion_log_lr(&total, r));
        let detail = format!(
            "canary error rate {} over {} requests, above max_error_rate {}: {}",
            rate(&self.canary_total).map(pct).unwrap_or_else(|| "n/a".into()),
            count(self.canary_total.requests),
            pct(limit),
            self.against_threshold(log_e)
        );
        self.standing("error_rate_limit".into(), "error-rate limit".into(), log_e, detail)
    }

    /// A count over `period_seconds` at most `max`: a rate, tested as Poisson.
    fn custom_limit(&self, i: usize, gate: &CustomGate, max: f64) -> Standing {
        let per_second = max / f64::from(gate.period_seconds.max(1));
        let batches: Vec<(f64, f64)> =
            self.samples.iter().map(|s| (custom(&s.metrics.canary, i), per_second * s.seconds as f64)).collect();
        let log_e = self.mixture.log_e(|r| batches.iter().map(|(c, e)| poisson_log_lr(*c, *e, r)).sum());
        let seen: f64 = batches.iter().map(|(c, _)| c).sum();
        let detail = format!(
            "canary {} {} over the stages, more than max {max} per {} s: {}",
            gate.name(),
            count(seen),
            gate.period_seconds,
            self.against_threshold(log_e)
        );
        self.standing(format!("custom[{i}]_limit"), format!("{} limit", gate.metric), log_e, detail)
    }

    /// Counts per request against the stable's, as a ratio, like errors.
    fn custom_vs_stable(&self, i: usize, gate: &CustomGate, ratio: f64) -> Standing {
        let batches = self.splits(|side| custom(side, i));
        let log_e = self.mixture.log_e(|r| batches.iter().map(|b| split_log_lr(b, 1.0 + ratio, r)).sum());
        let detail = format!(
            "canary {} more than {:.0}% above stable's, per request: {}",
            gate.name(),
            ratio * 100.0,
            self.against_threshold(log_e)
        );
        self.standing(format!("custom[{i}]_vs_stable"), gate.metric.clone(), log_e, detail)
    }
}

/// A side's count of custom gate `i`; no data counts as none.
fn custom(side: &SideMetrics, i: usize) -> f64 {
    side.custom.get(i).copied().flatten().unwrap_or(0.0)
}

/// Custom gates on statistics that are not counts (averages, percentiles, extremes):
/// there is no sample size to bound them with, so they compare as measured.
fn point_checks(gates: &Gates, metrics: &MetricSnapshot) -> Vec<String> {
    let mut failed = Vec::new();
    for (i, gate) in gates.custom.iter().enumerate().filter(|(_, g)| !counted(g)) {
        let value = |side: &SideMetrics| side.custom.get(i).copied().flatten();
        let Some(c) = value(&metrics.canary) else { continue };
        let name = gate.name();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn side(requests: f64, errors: f64, p95_ms: Option<f64>) -> SideMetrics {
        SideMetrics { requests, errors, p95_ms, ..Default::default() }
    }

    fn snapshot(canary: SideMetrics, stable: SideMetrics) -> MetricSnapshot {
        MetricSnapshot { canary, stable }
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
            .map(|l| median * (0.5 * crate::release::judge::evalues::inverse_normal_cdf(l / 100.0)).exp())
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
        assert!(
            e.reasons[0].ends_with("; no regression shown (errors 0% of the way to a rollback)"),
            "a person reads how far each test is from a rollback, not an e-value: {:?}",
            e.reasons
        );
        assert!(!e.reasons[0].contains("e ="), "{:?}", e.reasons);
        let json = serde_json::to_value(&e).unwrap();
        assert!(json["tests"][0]["log_e"].is_number(), "the raw evidence stays in the JSON: {json}");
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
