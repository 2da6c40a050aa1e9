//! The sequential judge: every statistical test the gates ask for, each an anytime-valid
//! mixture SPRT ([`evalues`]) over all the stages so far, each at its share of
//! `false_rollback_rate`. The AI metrics' tests are in [`super::custom`]; what every test
//! shares, in [`super::weigh`].
//!
//! Each test also keeps, for the current stage alone, the evidence that the canary is
//! *not* as bad as [`super::evalues::DETECT_RATIO`] times its tolerance: an evidence-driven stage advances
//! once every test has enough of it ([`super::evalues::MISS_RATE`]).

use std::collections::BTreeMap;

use crate::domain::event::AlarmState;
use crate::domain::metrics::{CustomGate, GateKind, MetricSnapshot, SideMetrics, PERCENTILE_LEVELS};
use crate::release::judge::evalues::{share_above, upper_bound, Proportion, Standing};
use crate::release::judge::gates::Gates;
use crate::release::judge::weigh::{share_detect, split_detect, Spec, Tests, Whose, MIN_SIDE};
use crate::release::judge::{alarm_evidence, healthy, rate, too_few, Evidence, StageSample, Verdict, Weighting};
use crate::text::{count, pct, way};

/// Under the null "no slower than the limit", at most this share of the canary's
/// requests is slower: the limit is a p95.
const SLOW_SHARE: f64 = 0.05;
/// The sequential judge: gate alarms, then every statistical test over all the stages
/// so far (`samples`, the current stage last), each at its share of
/// `false_rollback_rate`. A stage with fewer than `min_requests` canary requests is
/// inconclusive, but evidence is evidence: a test that rejects rolls back whatever the
/// count. A test that is not enforced (a dry run) is judged the same way and only said.
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
    (evidence.tests, evidence.weighting) = weighed_standings(gates, samples);
    let rejected = |enforced: bool| -> Vec<String> {
        evidence.tests.iter().filter(|t| t.rejects() && t.enforced == enforced).map(|t| t.detail.clone()).collect()
    };
    let failed = rejected(true);
    evidence.dry_run = rejected(false);
    let (canary, stable) = (&current.metrics.canary, &current.metrics.stable);
    let min_requests = gates.min_requests.max(1);
    if !failed.is_empty() {
        evidence.verdict = Verdict::Unhealthy;
        evidence.reasons = failed;
    } else if served(&current.metrics) < min_requests as f64 {
        evidence.verdict = Verdict::Inconclusive;
        evidence.reasons.push(too_few(served(&current.metrics), min_requests));
    } else if let Some(silent) = unpublished(gates, &current.metrics) {
        evidence.verdict = Verdict::Inconclusive;
        evidence.reasons.push(silent);
    } else {
        // Nothing enforced settles nothing: such a stage bakes to its longest.
        let mut enforced = evidence.tests.iter().filter(|t| t.enforced).peekable();
        evidence.conclusive = enforced.peek().is_some() && enforced.all(Standing::settled);
        // Only the test nearest a rollback: the rest are further from one.
        let nearest = evidence
            .tests
            .iter()
            .filter(|t| t.way_to_rollback() > 0.0)
            .max_by(|a, b| a.way_to_rollback().total_cmp(&b.way_to_rollback()));
        let closest = match nearest {
            Some(t) => format!(
                "; nearest a rollback: {}{}, {} of the way",
                t.name,
                if t.enforced { "" } else { " (dry run)" },
                way(t.way_to_rollback())
            ),
            None => String::new(),
        };
        evidence.reasons.push(format!("{}{closest}", healthy(gates, canary, stable)));
    }
    if !evidence.dry_run.is_empty() {
        evidence.reasons.push(format!("dry run: would roll back: {}", evidence.dry_run.join("; ")));
    }
    evidence
}

/// What the candidate served: a cohort's pinned units count, alone in its first stage.
fn served(metrics: &MetricSnapshot) -> f64 {
    metrics.canary.requests + metrics.pinned.as_ref().map_or(0.0, |p| p.requests)
}

/// An enforced gate on a metric the canary did not publish (a distribution's values, or a
/// rate's own denominator) cannot judge it: the stage waits, rather than pass unjudged.
fn unpublished(gates: &Gates, metrics: &MetricSnapshot) -> Option<String> {
    gates.custom.iter().enumerate().filter(|(_, g)| g.enforce && gates.enforce).find_map(|(i, gate)| {
        let missing = match gate.kind() {
            Some(GateKind::Distribution { .. }) => metrics.canary.values(i) <= 0.0,
            Some(GateKind::Rate) => metrics.canary.denominator(i, gate).is_none_or(|d| d <= 0.0),
            _ => false,
        };
        missing.then(|| format!("inconclusive: the canary published no {} in this stage", what_is_missing(gate)))
    })
}

fn what_is_missing(gate: &CustomGate) -> String {
    match &gate.per {
        Some(crate::domain::metrics::Per::Metric { namespace, metric, .. }) => format!("{namespace}/{metric}"),
        _ => format!("{}/{} values", gate.namespace, gate.metric),
    }
}

/// Every test the gates ask for, in the order they are reported; with `pinned` units
/// (a cohort release that pins some), the absolute ones again for them.
pub(super) fn specs(gates: &Gates, pinned: bool) -> Vec<Spec<'_>> {
    let mut specs = vec![Spec::ErrorsVsStable];
    specs.extend(gates.max_p95_increase_ratio.map(Spec::LatencyVsStable));
    let mut whose = vec![Whose::Canary];
    whose.extend(pinned.then_some(Whose::Pinned));
    for whose in whose {
        specs.extend(gates.max_error_rate.map(|limit| Spec::ErrorRateLimit(limit, whose)));
        specs.extend(gates.max_p95_latency_ms.map(|limit| Spec::LatencyLimit(limit, whose)));
        for (i, gate) in gates.custom.iter().enumerate() {
            let tests = super::custom::tests_of(gate).into_iter();
            let tests = tests.filter(|test| whose == Whose::Canary || test.pinned_may_take());
            specs.extend(tests.map(|test| Spec::Custom { i, gate, test, whose }));
        }
    }
    specs
}

/// Every sequential test the gates ask for, over all the stages so far.
pub fn standings(gates: &Gates, samples: &[StageSample]) -> Vec<Standing> {
    weighed_standings(gates, samples).0
}

/// The standings, and how each test weighed the current stage's counts.
fn weighed_standings(gates: &Gates, samples: &[StageSample]) -> (Vec<Standing>, BTreeMap<String, Weighting>) {
    // A release pins units or not for its life: its metric source answers with the pinned
    // side from its first look, so the tests (and each one's share of the false rollback
    // rate) are the same at every look.
    let pinned = samples.iter().any(|s| s.metrics.pinned.is_some());
    let specs = specs(gates, pinned);
    let tests = Tests::new(gates, samples, specs.len());
    let standings = specs
        .into_iter()
        .map(|spec| {
            let mut standing = match spec {
                Spec::ErrorsVsStable => tests.errors_vs_stable(),
                Spec::LatencyVsStable(tolerance) => tests.latency_vs_stable(tolerance),
                Spec::ErrorRateLimit(limit, whose) => tests.error_rate_limit(limit, whose),
                Spec::LatencyLimit(limit, whose) => tests.latency_limit(limit, whose),
                Spec::Custom { i, gate, test, whose } => tests.custom(i, gate, test, whose),
            };
            standing.enforced = gates.enforce && !matches!(spec, Spec::Custom { gate, .. } if !gate.enforce);
            if let Spec::ErrorRateLimit(_, Whose::Pinned)
            | Spec::LatencyLimit(_, Whose::Pinned)
            | Spec::Custom { whose: Whose::Pinned, .. } = spec
            {
                standing.test = Whose::Pinned.tag(&standing.test);
                standing.name = format!("{} (pinned units)", standing.name);
                let detail = standing.detail.strip_prefix("canary ").unwrap_or(&standing.detail);
                standing.detail = format!("pinned units: {detail}");
            }
            standing
        })
        .collect();
    (standings, tests.weighting.into_inner())
}

impl Tests<'_> {
    /// The canary's error rate against the stable's, as a ratio, in every stage; a stage
    /// without stable traffic (Lambda at 100%) against the stable's record's upper bound.
    fn errors_vs_stable(&self) -> Standing {
        const TEST: &str = "errors_vs_stable";
        let rho0 = self.rho0;
        let errors = |_: usize, side: &SideMetrics| Some((side.errors, side.requests));
        let mut batches = Self::split_batches(self.splits(TEST, |side| Some(side.errors), |side| side.requests), rho0);
        // The record as the stages weighed it: a cohort's stable is its units, not its requests.
        let stable = self.samples.iter().enumerate().fold((0.0, 0.0), |(e, n), (i, s)| {
            let side = &s.metrics.stable;
            match (side.requests > 0.0).then(|| self.weighed(i, TEST, side, &errors)).flatten() {
                Some((de, dn)) => (e + de, n + dn),
                None => (e, n),
            }
        });
        let record = upper_bound(stable.0, stable.1, self.alpha);
        let alone: Vec<(usize, Proportion)> = self
            .samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.metrics.stable.requests <= 0.0 && s.metrics.canary.requests > 0.0 && stable.1 > 0.0)
            .filter_map(|(i, s)| {
                let (count, trials) = self.weighed(i, TEST, &s.metrics.canary, &errors)?;
                Some((i, Proportion { count, trials, p0: rho0 * record }))
            })
            .collect();
        batches.extend(Self::proportion_batches(alone));
        let tolerance = if rho0 > 1.0 { format!(" (tolerance {rho0}x)") } else { String::new() };
        let (canary_rate, stable_rate) = (rate(&self.canary_total), rate(&self.stable_total));
        let requests = self.canary_total.requests;
        let detail = format!(
            "canary error rate {} over {} requests against stable {}{tolerance}: a regression",
            canary_rate.map(pct).unwrap_or_else(|| "n/a".into()),
            count(requests),
            stable_rate.map(pct).unwrap_or_else(|| "n/a".into()),
        );
        self.standing(TEST.into(), "errors".into(), batches, split_detect(rho0), detail)
    }

    /// The canary's share of requests slower than a threshold (per stage), against 5%:
    /// the canary's p95 is above the threshold exactly when more than 5% of its requests
    /// are.
    fn slow(
        &self,
        (test, whose): (&str, Whose),
        name: &str,
        what: String,
        threshold_of: impl Fn(usize) -> Option<f64>,
    ) -> Standing {
        let slow = |i: usize, side: &SideMetrics| {
            let share = share_above(threshold_of(i)?, &PERCENTILE_LEVELS, &side.percentiles)?;
            Some((share * side.requests, side.requests))
        };
        let proportions = self.proportions(test, SLOW_SHARE, whose, &slow);
        let (slow, all) = self.served(whose, &slow);
        let batches = Self::proportion_batches(proportions);
        let detail = format!(
            "canary slower than {what} on {} of {} requests, where a p95 within it leaves at most 5%",
            pct(if all > 0.0 { slow / all } else { 0.0 }),
            count(all),
        );
        self.standing(test.into(), name.into(), batches, share_detect(SLOW_SHARE), detail)
    }

    /// Against the stable's p95 plus the tolerance; a stage without stable traffic by the
    /// last stable p95 seen.
    fn latency_vs_stable(&self, tolerance: f64) -> Standing {
        let stable_p95 = |i: usize| {
            self.samples[..=i]
                .iter()
                .rev()
                .find(|s| s.metrics.stable.requests >= MIN_SIDE)
                .and_then(|s| s.metrics.stable.p95_ms)
        };
        let what = format!("{:.0}% over the stable's p95", tolerance * 100.0);
        let test = ("latency_vs_stable", Whose::Canary);
        self.slow(test, "latency", what, |i| stable_p95(i).map(|p| p * (1.0 + tolerance)))
    }

    fn latency_limit(&self, limit: f64, whose: Whose) -> Standing {
        self.slow(("latency_limit", whose), "latency limit", format!("{limit:.0} ms"), |_| Some(limit))
    }

    fn error_rate_limit(&self, limit: f64, whose: Whose) -> Standing {
        const TEST: &str = "error_rate_limit";
        let errors = |_: usize, side: &SideMetrics| Some((side.errors.min(side.requests), side.requests));
        let proportions = self.proportions(TEST, limit, whose, &errors);
        let (errors, requests) = self.served(whose, &errors);
        let canary_rate = (requests > 0.0).then(|| errors / requests);
        let batches = Self::proportion_batches(proportions);
        let detail = format!(
            "canary error rate {} over {} requests, above max_error_rate {}",
            canary_rate.map(pct).unwrap_or_else(|| "n/a".into()),
            count(requests),
            pct(limit),
        );
        self.standing(TEST.into(), "error-rate limit".into(), batches, share_detect(limit), detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::metrics::SideMetrics;

    fn side(requests: f64, errors: f64, p95_ms: Option<f64>) -> SideMetrics {
        SideMetrics { requests, errors, p95_ms, ..Default::default() }
    }

    fn snapshot(canary: SideMetrics, stable: SideMetrics) -> MetricSnapshot {
        MetricSnapshot { canary, stable, pinned: None }
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
        StageSample::new(stage, 900, snapshot(c, s))
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
            e.reasons[0] == "canary error rate 1.02% over 4500 requests against stable 0.50%: a regression",
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
            e.reasons[0] == "healthy: 3750 canary requests; errors 0.51% vs 0.50%, p95 910 vs 910 ms",
            "a person reads the two sides' figures, not an e-value: {:?}",
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

/// A cohort release's stages, measured in the router's replicate groups of units.
#[cfg(test)]
mod units {
    use super::*;
    use crate::domain::metrics::{CustomGate, SideMetrics};

    /// A side measured in groups, each (requests, errors); the side is their sum.
    fn grouped(groups: &[(f64, f64)]) -> SideMetrics {
        let replicates: Vec<SideMetrics> =
            groups.iter().map(|&(requests, errors)| SideMetrics { requests, errors, ..Default::default() }).collect();
        SideMetrics {
            requests: groups.iter().map(|g| g.0).sum(),
            errors: groups.iter().map(|g| g.1).sum(),
            replicates,
            ..Default::default()
        }
    }

    fn stage(canary: SideMetrics, stable: SideMetrics) -> Vec<StageSample> {
        vec![StageSample::new(0, 900, MetricSnapshot { canary, stable, pinned: None })]
    }

    fn gates() -> Gates {
        Gates { false_rollback_rate: 0.01, min_requests: 100, max_error_rate: Some(0.05), ..Gates::default() }
    }

    /// Without the groups, the same sums: what a judge counting requests would see.
    fn ungrouped(mut samples: Vec<StageSample>) -> Vec<StageSample> {
        for s in &mut samples {
            s.metrics.canary.replicates.clear();
            s.metrics.stable.replicates.clear();
        }
        samples
    }

    /// Sixteen groups at 0.5%, one of which holds a heavy user failing at 5%.
    fn with_a_heavy_user_failing(requests: f64, heavy: f64) -> Vec<(f64, f64)> {
        let mut groups = vec![(requests, requests * 0.005); 16];
        groups[3] = (requests + heavy, requests * 0.005 + heavy * 0.05);
        groups
    }

    #[test]
    fn one_heavy_user_failing_is_one_users_bad_day_not_a_regression_of_the_version() {
        let samples = stage(
            grouped(&with_a_heavy_user_failing(200.0, 3000.0)),
            grouped(&with_a_heavy_user_failing(4000.0, 3000.0)),
        );

        let by_requests = judge_sequential(&gates(), &[], &ungrouped(samples.clone()));
        assert_eq!(by_requests.verdict, Verdict::Unhealthy, "counted as requests, it looks like one");
        let by_units = judge_sequential(&gates(), &[], &samples);
        assert_eq!(by_units.verdict, Verdict::Healthy, "{:?}", by_units.reasons);
        let Some(Weighting::DesignEffect(effect)) = by_units.weighting.get("errors_vs_stable") else {
            panic!("{:?}", by_units.weighting)
        };
        assert!(*effect > 10.0, "a heavy user's requests are worth far fewer independent ones: {effect}");
    }

    #[test]
    fn a_version_that_fails_more_for_every_unit_is_still_a_regression() {
        let samples = stage(grouped(&[(1000.0, 20.0); 16]), grouped(&[(10_000.0, 50.0); 16]));

        let evidence = judge_sequential(&gates(), &[], &samples);

        assert_eq!(evidence.verdict, Verdict::Unhealthy, "{:?}", evidence.reasons);
        assert_eq!(evidence.weighting["errors_vs_stable"], Weighting::REQUESTS, "groups that agree lose nothing");
    }

    #[test]
    fn a_canary_of_a_few_units_counts_each_as_one_yet_units_that_all_fail_show() {
        let few = |canary: &[(f64, f64)]| {
            let mut groups = vec![(0.0, 0.0); 16];
            groups[..canary.len()].copy_from_slice(canary);
            stage(grouped(&groups), grouped(&[(10_000.0, 50.0); 16]))
        };
        // One of six users, a heavy one, fails at 5%: ten times the stable, on 3000 requests.
        let bad_day = few(&[(3000.0, 150.0), (40.0, 0.0), (60.0, 0.0), (50.0, 0.0), (80.0, 0.0), (30.0, 0.0)]);
        assert_eq!(judge_sequential(&gates(), &[], &ungrouped(bad_day.clone())).verdict, Verdict::Unhealthy);
        let evidence = judge_sequential(&gates(), &[], &bad_day);
        assert_eq!(evidence.verdict, Verdict::Healthy, "{:?}", evidence.reasons);
        // All six fail on every request: no draw of six users does that. (Three would not
        // be enough for the tests at 1%: the gate alarms are for a canary that small.)
        let broken = few(&[(300.0, 300.0), (400.0, 400.0), (200.0, 200.0), (100.0, 100.0), (90.0, 90.0), (50.0, 50.0)]);
        let evidence = judge_sequential(&gates(), &[], &broken);
        assert_eq!(evidence.verdict, Verdict::Unhealthy, "{:?}", evidence.tests);
    }

    #[test]
    fn a_settled_stage_keeps_its_weighting_and_drops_its_groups() {
        let samples = stage(
            grouped(&with_a_heavy_user_failing(200.0, 3000.0)),
            grouped(&with_a_heavy_user_failing(4000.0, 3000.0)),
        );
        let evidence = judge_sequential(&gates(), &[], &samples);
        let mut settled = samples.clone();
        settled[0].settle(&evidence.weighting);

        assert!(settled[0].metrics.canary.replicates.is_empty() && settled[0].metrics.stable.replicates.is_empty());
        let json = serde_json::to_string(&settled).unwrap();
        let kept: Vec<StageSample> = serde_json::from_str(&json).unwrap();
        let again = judge_sequential(&gates(), &[], &kept);
        assert_eq!(again.tests, evidence.tests, "the stage weighs as it did while its groups were there");
    }

    #[test]
    fn a_metric_the_groups_do_not_carry_is_weighed_per_request_and_said() {
        let gate = CustomGate {
            dimensions: [("Version".to_owned(), "{version}".to_owned())].into(),
            per: Some(crate::domain::metrics::Per::Requests("requests".into())),
            max_increase_ratio: Some(0.2),
            ..CustomGate::new("AIService", "SchemaFailures", "Sum")
        };
        let with = |mut side: SideMetrics, failures: f64| {
            side.custom = vec![Some(failures)];
            side
        };
        // The handler publishes SchemaFailures by version only: the groups have none.
        let samples = stage(with(grouped(&[(1000.0, 5.0); 16]), 800.0), with(grouped(&[(10_000.0, 50.0); 16]), 2000.0));
        let g = Gates { custom: vec![gate], ..gates() };

        let evidence = judge_sequential(&g, &[], &samples);

        assert_eq!(evidence.weighting["custom[0]_rate_vs_stable"], Weighting::ByRequest);
        assert_eq!(evidence.verdict, Verdict::Unhealthy, "still judged: {:?}", evidence.reasons);
    }

    #[test]
    fn a_pinned_only_stage_is_judged_on_what_the_pinned_units_were_served() {
        let stable = grouped(&[(10_000.0, 50.0); 16]);
        let pinned = SideMetrics { requests: 500.0, errors: 1.0, ..Default::default() };
        let none_drawn = SideMetrics { replicates: vec![SideMetrics::default(); 16], ..Default::default() };
        let samples =
            vec![StageSample::new(0, 900, MetricSnapshot { canary: none_drawn, stable, pinned: Some(pinned) })];

        let evidence = judge_sequential(&gates(), &[], &samples);

        assert_eq!(evidence.verdict, Verdict::Healthy, "500 pinned requests are enough: {:?}", evidence.reasons);
    }

    #[test]
    fn pinned_units_are_held_to_absolute_limits_and_never_compared_with_the_stable() {
        let drawn = grouped(&[(1000.0, 5.0); 16]);
        let stable = grouped(&[(10_000.0, 50.0); 16]);
        // The internal users fail at 4%: eight times the stable, under the 5% limit.
        let pinned = SideMetrics { requests: 2000.0, errors: 80.0, ..Default::default() };
        let at = |pinned: SideMetrics| {
            vec![StageSample::new(
                0,
                900,
                MetricSnapshot { canary: drawn.clone(), stable: stable.clone(), pinned: Some(pinned) },
            )]
        };
        let evidence = judge_sequential(&gates(), &[], &at(pinned));
        assert_eq!(evidence.verdict, Verdict::Healthy, "{:?}", evidence.reasons);
        // At 20% they break the absolute limit, and that alone rolls back.
        let evidence =
            judge_sequential(&gates(), &[], &at(SideMetrics { requests: 2000.0, errors: 400.0, ..Default::default() }));
        assert_eq!(evidence.verdict, Verdict::Unhealthy, "{:?}", evidence.reasons);
        let failed: Vec<&str> = evidence.tests.iter().filter(|t| t.rejects()).map(|t| t.test.as_str()).collect();
        assert_eq!(failed, ["error_rate_limit_pinned"]);
        assert!(
            evidence.reasons[0].starts_with("pinned units: error rate 20.00% over 2000 requests"),
            "their own figures: {:?}",
            evidence.reasons
        );
    }
}
