//! The AI metrics' tests: every custom gate is an anytime-valid test sharing
//! `false_rollback_rate` with the others, chosen by the gate's kind.
//!
//! - **Counts** (`Sum`, `SampleCount`): at most `max` per `period_seconds`, a Poisson
//!   rate in time; and per request against the stable's, split like errors.
//! - **Rates** (`per`): events per a denominator, against `max` (Poisson in the
//!   denominator, which also bounds a binomial count) or the stable's rate (the events
//!   split between the sides in proportion to their denominators, like errors).
//! - **Distributions** (`Average`, `pNN`: one value per request): a percentile `q` is past
//!   a threshold `T` exactly when more than `1 − q` of the values are (fewer than `q`, for
//!   a fall), so each stage's share of canary values past `T` (read off its percentiles,
//!   as latency is) is a binomial batch tested against `1 − q` (or `q`). `T` is the
//!   limit, or the stable's own value at `q` in that stage times `1 ± tolerance`. No
//!   assumption on the values' shape: token counts' long tails cost nothing. An `Average`
//!   is judged at the median: a mean of a few hundred heavy-tailed values has no bound a
//!   test could use, and a model that writes longer answers moves its median too.

use crate::domain::metrics::{CustomGate, GateKind, SideMetrics};
use crate::release::judge::evalues::{poisson_log_lr, share_above, share_below};
use crate::release::judge::weigh::{share_detect, split_detect, CustomTest, Limit, Tests, Weigh, Whose, MIN_SIDE};
use crate::text::count;

/// The tests a custom gate asks for, by its kind and the limits it names.
pub(super) fn tests_of(gate: &CustomGate) -> Vec<CustomTest> {
    let mut tests = Vec::new();
    match gate.kind() {
        Some(GateKind::Count) => {
            tests.extend(gate.max.map(CustomTest::CountLimit));
            tests.extend(gate.max_increase_ratio.map(CustomTest::CountVsStable));
        }
        Some(GateKind::Rate) => {
            tests.extend(gate.max.map(CustomTest::RateLimit));
            tests.extend(gate.max_increase_ratio.map(CustomTest::RateVsStable));
        }
        Some(GateKind::Distribution { level }) => {
            let past = |up: bool, limit: Limit| CustomTest::Past { level, up, limit };
            if gate.direction.up() {
                tests.extend(gate.max.map(|max| past(true, Limit::Absolute(max))));
                tests.extend(gate.max_increase_ratio.map(|r| past(true, Limit::VsStable(r))));
            }
            if gate.direction.down() {
                tests.extend(gate.min.map(|min| past(false, Limit::Absolute(min))));
                tests.extend(gate.max_decrease_ratio.map(|r| past(false, Limit::VsStable(r))));
            }
        }
        None => {}
    }
    tests
}

impl Tests<'_> {
    pub(super) fn custom(
        &self,
        i: usize,
        gate: &CustomGate,
        test: CustomTest,
        whose: Whose,
    ) -> crate::release::judge::evalues::Standing {
        match test {
            CustomTest::CountLimit(max) => self.count_limit(i, gate, max),
            CustomTest::CountVsStable(ratio) => {
                let splits = self.splits(&vs_stable_id(i, gate), |side| published(side, i), |side| side.requests);
                let detail =
                    format!("canary {} more than {:.0}% above stable's, per request", gate.name(), ratio * 100.0);
                self.vs_stable(i, gate, splits, ratio, detail, gate.metric.clone())
            }
            CustomTest::RateLimit(max) => self.rate_limit(i, gate, max, whose),
            CustomTest::RateVsStable(ratio) => {
                let denominator = |side: &SideMetrics| side.denominator(i, gate).unwrap_or(0.0);
                let splits = self.splits(&vs_stable_id(i, gate), |side| published(side, i), denominator);
                let detail = format!(
                    "canary {} per {} more than {:.0}% above stable's",
                    gate.name(),
                    per_name(gate),
                    ratio * 100.0
                );
                self.vs_stable(i, gate, splits, ratio, detail, format!("{} rate", gate.metric))
            }
            CustomTest::Past { level, up, limit } => self.past(i, gate, (level, up, limit), whose),
        }
    }

    /// A count over `period_seconds` at most `max`: a rate in time, tested as Poisson. The
    /// limit is the canary's as a whole: pinned units' counts are not apart from it.
    fn count_limit(&self, i: usize, gate: &CustomGate, max: f64) -> crate::release::judge::evalues::Standing {
        let test = format!("custom[{i}]_limit");
        let per_second = max / f64::from(gate.period_seconds.max(1));
        let per_request = |_: usize, side: &SideMetrics| Some((published(side, i)?, side.requests));
        let mut seen = 0.0;
        let mut counts = Vec::new();
        for (s, sample) in self.samples.iter().enumerate() {
            let expected = per_second * sample.seconds as f64;
            let mut sides = vec![&sample.metrics.canary];
            sides.extend(&sample.metrics.pinned);
            let observed: f64 = sides.iter().map(|side| value(side, i)).sum();
            seen += observed;
            // A cohort's count moves with the units drawn as its requests' do.
            let effect = match self.weighting(s, &test, &per_request) {
                crate::release::judge::Weighting::TooFewUnits => continue,
                weighting => weighting.effect(),
            };
            counts.push((s, observed / effect, expected / effect));
        }
        let batches = poisson_batches(counts);
        let name = format!("{} limit", gate.metric);
        let detail = format!(
            "canary {} {} over the stages, more than max {max} per {} s",
            gate.name(),
            count(seen),
            gate.period_seconds
        );
        self.standing(test, name, batches, 2.0, detail)
    }

    /// Events per a denominator at most `max`: Poisson in the denominator; pinned units'
    /// own beside the drawn's.
    fn rate_limit(
        &self,
        i: usize,
        gate: &CustomGate,
        max: f64,
        whose: Whose,
    ) -> crate::release::judge::evalues::Standing {
        let test = format!("custom[{i}]_rate_limit");
        let per =
            |_: usize, side: &SideMetrics| Some((value(side, i), side.denominator(i, gate).filter(|d| *d > 0.0)?));
        let counts: Vec<(usize, f64, f64)> =
            self.proportions(&test, max, whose, &per).into_iter().map(|(s, p)| (s, p.count, max * p.trials)).collect();
        let (seen, expected) = self.served(whose, &per);
        let expected = max * expected;
        let batches = poisson_batches(counts);
        let name = format!("{} rate limit", gate.metric);
        let observed = if expected > 0.0 { seen * max / expected } else { 0.0 };
        let detail = format!("canary {} per {} {observed:.4}, above max {max}", gate.name(), per_name(gate));
        self.standing(test, name, batches, 2.0, detail)
    }

    fn vs_stable(
        &self,
        i: usize,
        gate: &CustomGate,
        splits: Vec<(usize, crate::release::judge::evalues::Split)>,
        ratio: f64,
        detail: String,
        name: String,
    ) -> crate::release::judge::evalues::Standing {
        let rho0 = 1.0 + ratio;
        let batches = Self::split_batches(splits, rho0);
        self.standing(vs_stable_id(i, gate), name, batches, split_detect(rho0), detail)
    }

    /// The share of canary values past a threshold, per stage, against what the gate's
    /// percentile allows.
    fn past(
        &self,
        i: usize,
        gate: &CustomGate,
        (level, up, limit): (f64, bool, Limit),
        whose: Whose,
    ) -> crate::release::judge::evalues::Standing {
        let levels = gate.levels();
        let at = levels.iter().position(|l| *l == level);
        let p0 = if up { 1.0 - level / 100.0 } else { level / 100.0 };
        // The stable's value at the level: this stage's, or the last stage's that had one.
        let stable_at = |s: usize| {
            self.samples[..=s]
                .iter()
                .rev()
                .find(|sample| sample.metrics.stable.values(i) >= MIN_SIDE)
                .and_then(|sample| sample.metrics.stable.custom_percentiles.get(i)?.get(at?).copied().flatten())
        };
        let threshold = |s: usize| match limit {
            Limit::Absolute(t) => Some(t),
            Limit::VsStable(tolerance) => stable_at(s).map(|v| v * if up { 1.0 + tolerance } else { 1.0 - tolerance }),
        };
        let (test, name, what) = past_names(i, gate, level, up, limit);
        let past = |s: usize, side: &SideMetrics| {
            let values = side.custom_percentiles.get(i)?;
            let t = threshold(s)?;
            let share = if up { share_above(t, &levels, values) } else { share_below(t, &levels, values) }?;
            let n = side.values(i);
            (n > 0.0).then_some((share * n, n))
        };
        let proportions = self.proportions(&test, p0, whose, &past);
        let (past_threshold, all) = self.served(whose, &past);
        let batches = Self::proportion_batches(proportions);
        // The two values at the level, as the stage last read them: what a person checks.
        let last = self.samples.len().saturating_sub(1);
        let canary_at =
            self.samples.last().and_then(|s| s.metrics.canary.custom_percentiles.get(i)?.get(at?).copied().flatten());
        let values = match (canary_at, stable_at(last)) {
            (Some(c), Some(s)) => format!("p{level} {c:.0} against the stable's {s:.0}: "),
            (Some(c), None) => format!("p{level} {c:.0}: "),
            _ => String::new(),
        };
        let detail = format!(
            "canary {} {values}{:.0}% of {} values {what}, where a p{level} within the limit leaves at most {:.0}%",
            gate.name(),
            if all > 0.0 { past_threshold / all * 100.0 } else { 0.0 },
            count(all),
            p0 * 100.0
        );
        self.standing(test, name, batches, share_detect(p0), detail)
    }
}

/// A test's id, its name in a sentence, and what "past the threshold" means.
fn past_names(i: usize, gate: &CustomGate, level: f64, up: bool, limit: Limit) -> (String, String, String) {
    let either = gate.direction.up() && gate.direction.down();
    let name = match (either, up) {
        (false, _) => gate.metric.clone(),
        (true, true) => format!("{} up", gate.metric),
        (true, false) => format!("{} down", gate.metric),
    };
    match (limit, up) {
        (Limit::Absolute(max), true) => (format!("custom[{i}]_limit"), format!("{name} limit"), format!("above {max}")),
        (Limit::Absolute(min), false) => {
            (format!("custom[{i}]_floor"), format!("{name} floor"), format!("below {min}"))
        }
        (Limit::VsStable(t), true) => {
            (format!("custom[{i}]_vs_stable"), name, format!("more than {:.0}% above the stable's p{level}", t * 100.0))
        }
        (Limit::VsStable(t), false) => (
            format!("custom[{i}]_down_vs_stable"),
            name,
            format!("more than {:.0}% below the stable's p{level}", t * 100.0),
        ),
    }
}

/// A comparison's test id: a rate's, or a count's per request.
fn vs_stable_id(i: usize, gate: &CustomGate) -> String {
    match gate.kind() {
        Some(GateKind::Rate) => format!("custom[{i}]_rate_vs_stable"),
        _ => format!("custom[{i}]_vs_stable"),
    }
}

/// Counts tested as Poisson against what the null expects, per stage.
fn poisson_batches<'a>(counts: Vec<(usize, f64, f64)>) -> Vec<(usize, Weigh<'a>)> {
    counts
        .into_iter()
        .map(|(s, seen, expected)| (s, Box::new(move |r| poisson_log_lr(seen, expected, r)) as Weigh<'a>))
        .collect()
}

/// A side's count (or a rate's numerator) for custom gate `i`, when it has one: a
/// replicate group without it was not measured by unit.
fn published(side: &crate::domain::metrics::SideMetrics, i: usize) -> Option<f64> {
    side.custom.get(i).copied().flatten()
}

/// A side's count (or a rate's numerator) for custom gate `i`; no data counts as none.
fn value(side: &crate::domain::metrics::SideMetrics, i: usize) -> f64 {
    side.custom.get(i).copied().flatten().unwrap_or(0.0)
}

/// What a rate is per, in a sentence.
fn per_name(gate: &CustomGate) -> String {
    match &gate.per {
        Some(crate::domain::metrics::Per::Metric { metric, .. }) => metric.clone(),
        _ => "request".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::metrics::{Direction, MetricSnapshot, Per, SideMetrics};
    use crate::release::judge::evalues::Proportion;
    use crate::release::judge::evalues::{proportion_log_lr, split_log_lr, Mixture, Split};
    use crate::release::judge::gates::Gates;
    use crate::release::judge::sequential::{judge_sequential, standings};
    use crate::release::judge::{StageSample, Verdict};

    fn per_version(gate: CustomGate) -> CustomGate {
        CustomGate { dimensions: [("Version".to_owned(), "{version}".to_owned())].into(), ..gate }
    }

    fn side(requests: f64, custom: f64) -> SideMetrics {
        SideMetrics { requests, custom: vec![Some(custom)], ..Default::default() }
    }

    /// A distribution gate's side: `n` values with these percentiles at the gate's levels.
    fn values(requests: f64, n: f64, at: &[(f64, f64)], gate: &CustomGate) -> SideMetrics {
        let grid = gate.levels().iter().map(|l| at.iter().find(|(level, _)| level == l).map(|(_, v)| *v)).collect();
        SideMetrics {
            requests,
            custom: vec![None],
            custom_counts: vec![Some(n)],
            custom_percentiles: vec![grid],
            ..Default::default()
        }
    }

    fn one_stage(canary: SideMetrics, stable: SideMetrics) -> Vec<StageSample> {
        vec![StageSample::new(0, 900, MetricSnapshot { canary, stable, pinned: None })]
    }

    fn gates(gate: CustomGate) -> Gates {
        Gates { custom: vec![gate], min_requests: 100, ..Gates::default() }
    }

    #[test]
    fn a_rate_is_split_between_the_sides_by_their_denominators_like_errors() {
        let gate = per_version(CustomGate {
            per: Some(Per::Requests("requests".into())),
            max_increase_ratio: Some(0.2),
            ..CustomGate::new("AIService", "SchemaFailures", "Sum")
        });
        let samples = one_stage(side(1000.0, 30.0), side(19_000.0, 100.0));

        let tests = standings(&gates(gate), &samples);

        let rate = tests.iter().find(|t| t.test == "custom[0]_rate_vs_stable").unwrap();
        let by_hand = Split { canary: 30.0, stable: 100.0, canary_share: 0.05 };
        let expected = Mixture::default().log_e(|r| split_log_lr(&by_hand, 1.2, r));
        assert!((rate.log_e - expected).abs() < 1e-9, "{} vs {expected}", rate.log_e);
        assert!(rate.rejects(), "3% against 0.53% is a regression past 20%: {}", rate.detail);
        assert_eq!(rate.name, "SchemaFailures rate");
    }

    #[test]
    fn a_distribution_is_judged_by_the_share_of_values_past_the_stables_percentile() {
        let gate = per_version(CustomGate {
            max_increase_ratio: Some(0.2),
            ..CustomGate::new("AIService", "OutputTokens", "Average")
        });
        // The stable's median is 400: the threshold is 480. The canary's p50 is 440 and
        // its p60 500, so 50 + 10 * (480 - 440) / (500 - 440) = 56.67% of its values are
        // below 480, and 43.33% above, against the 50% a median within 480 allows.
        let canary = values(1000.0, 1000.0, &[(40.0, 400.0), (50.0, 440.0), (60.0, 500.0), (75.0, 600.0)], &gate);
        let stable = values(19_000.0, 19_000.0, &[(50.0, 400.0), (60.0, 450.0)], &gate);

        let tests = standings(&gates(gate.clone()), &one_stage(canary, stable));

        let shift = &tests[1];
        assert_eq!((shift.test.as_str(), shift.name.as_str()), ("custom[0]_vs_stable", "OutputTokens"));
        let by_hand = Proportion { count: 1000.0 * (1.0 - 0.5 - 0.1 * 40.0 / 60.0), trials: 1000.0, p0: 0.5 };
        let expected = Mixture::default().log_e(|r| proportion_log_lr(&by_hand, r));
        assert!((shift.log_e - expected).abs() < 1e-9, "{} vs {expected}", shift.log_e);
        assert!(
            shift.detail.contains("43% of 1000 values more than 20% above the stable's p50, where a p50 within the limit leaves at most 50%"),
            "{}",
            shift.detail
        );
        assert!(!shift.rejects());
    }

    #[test]
    fn shorter_answers_are_a_regression_when_the_gate_says_so() {
        let gate = per_version(CustomGate {
            direction: Direction::Either,
            max_increase_ratio: Some(0.2),
            max_decrease_ratio: Some(0.2),
            ..CustomGate::new("AIService", "ResponseLength", "p50")
        });
        // The canary answers half as long: 80% of its values fall below 0.8 x 400 = 320.
        let canary = values(3000.0, 3000.0, &[(75.0, 300.0), (90.0, 360.0)], &gate);
        let stable = values(19_000.0, 19_000.0, &[(50.0, 400.0), (60.0, 450.0)], &gate);
        let g = gates(gate);

        let evidence = judge_sequential(&g, &[], &one_stage(canary, stable));

        assert_eq!(evidence.verdict, Verdict::Unhealthy, "{:?}", evidence.reasons);
        let names: Vec<&str> = evidence.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names[1..], ["ResponseLength up", "ResponseLength down"]);
        assert!(evidence.reasons[0].contains("more than 20% below the stable's p50"), "{:?}", evidence.reasons);
    }

    #[test]
    fn a_canary_that_publishes_none_of_a_distribution_is_not_judged_healthy() {
        let gate = per_version(CustomGate {
            max_increase_ratio: Some(0.2),
            ..CustomGate::new("AIService", "OutputTokens", "Average")
        });
        let canary = SideMetrics {
            requests: 1000.0,
            custom: vec![None],
            custom_counts: vec![None],
            custom_percentiles: vec![vec![]],
            ..Default::default()
        };
        let stable = values(19_000.0, 19_000.0, &[(50.0, 400.0)], &gate);

        let evidence = judge_sequential(&gates(gate), &[], &one_stage(canary, stable));

        assert_eq!(evidence.verdict, Verdict::Inconclusive);
        assert_eq!(
            evidence.reasons,
            ["inconclusive: the canary published no AIService/OutputTokens values in this stage"]
        );
    }

    #[test]
    fn a_dry_run_gate_is_judged_and_said_but_rolls_nothing_back() {
        let gate = per_version(CustomGate {
            per: Some(Per::Requests("requests".into())),
            max_increase_ratio: Some(0.2),
            enforce: false,
            ..CustomGate::new("AIService", "SchemaFailures", "Sum")
        });
        let samples = one_stage(side(1000.0, 30.0), side(19_000.0, 100.0));

        let evidence = judge_sequential(&gates(gate), &[], &samples);

        assert_eq!(evidence.verdict, Verdict::Healthy, "{:?}", evidence.reasons);
        assert_eq!(evidence.dry_run.len(), 1);
        assert!(
            evidence.summary().contains("nearest a rollback: SchemaFailures rate (dry run), 100% of the way"),
            "{}",
            evidence.summary()
        );
        assert!(
            evidence.summary().contains("dry run: would roll back: canary AIService/SchemaFailures Sum per request"),
            "{}",
            evidence.summary()
        );
    }

    #[test]
    fn a_stage_is_conclusive_once_every_test_rules_out_a_doubling() {
        let gate = per_version(CustomGate {
            per: Some(Per::Requests("requests".into())),
            max_increase_ratio: Some(0.2),
            ..CustomGate::new("AIService", "SchemaFailures", "Sum")
        });
        let g = Gates { custom: vec![gate], ..Gates::default() };
        let stage = |canary: (f64, f64, f64), stable: (f64, f64, f64)| {
            let side = |(requests, errors, failures): (f64, f64, f64)| SideMetrics {
                requests,
                errors,
                custom: vec![Some(failures)],
                ..Default::default()
            };
            one_stage(side(canary), side(stable))
        };
        // Even halves, the same rates: a doubling of either would show by now.
        let settled = judge_sequential(&g, &[], &stage((20_000.0, 100.0, 200.0), (20_000.0, 100.0, 200.0)));
        assert!(settled.conclusive, "{:?}", settled.tests);
        // A tenth of that: too little to rule a doubling out.
        let early = judge_sequential(&g, &[], &stage((2_000.0, 10.0, 20.0), (2_000.0, 10.0, 20.0)));
        assert_eq!(early.verdict, Verdict::Healthy);
        assert!(!early.conclusive, "{:?}", early.tests);
    }
}
