//! What every sequential test shares: the tests the gates ask for, the judgement they
//! share (the evidence so far, the prior, each test's share of the false rollback
//! rate), and how a batch of evidence is weighed into a [`Standing`].

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::domain::metrics::{CustomGate, MetricSnapshot, SideMetrics};
use crate::release::judge::evalues::{
    proportion_log_lr, split_log_lr, Mixture, Proportion, Split, Standing, DETECT_RATIO,
};
use crate::release::judge::gates::Gates;
use crate::release::judge::replicates::{design_effect, DESIGN_LEVEL, MIN_GROUPS};
use crate::release::judge::{StageSample, Weighting};

/// How a test measures one side in stage `i`: its events, and what they are out of
/// (requests, a rate's denominator, a distribution's values); `None` when the side
/// gives the test nothing.
pub(super) type Measure<'m> = &'m dyn Fn(usize, &SideMetrics) -> Option<(f64, f64)>;

/// A side needs this many requests (or values) before its percentile is a threshold to
/// judge the other by.
pub const MIN_SIDE: f64 = 20.0;
/// One test the gates ask for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Spec<'g> {
    ErrorsVsStable,
    LatencyVsStable(f64),
    ErrorRateLimit(f64, Whose),
    LatencyLimit(f64, Whose),
    Custom { i: usize, gate: &'g CustomGate, test: CustomTest, whose: Whose },
}

/// Whose requests an absolute test judges: the canary's (a cohort's drawn units, a
/// sample), or a cohort's pinned units (internal users, a beta tenant), who are judged
/// against the limits alone, in tests of their own, never against the stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Whose {
    Canary,
    Pinned,
}

impl Whose {
    /// A pinned test's id and name beside the canary's.
    pub fn tag(self, test: &str) -> String {
        match self {
            Whose::Canary => test.to_owned(),
            Whose::Pinned => format!("{test}_pinned"),
        }
    }
}

/// A custom gate's tests, by its kind and limits.
#[derive(Clone, Copy, Debug)]
pub(super) enum CustomTest {
    CountLimit(f64),
    CountVsStable(f64),
    RateLimit(f64),
    RateVsStable(f64),
    /// Values past a threshold, at the gate's percentile `level`, in the direction `up`.
    Past {
        level: f64,
        up: bool,
        limit: Limit,
    },
}

impl CustomTest {
    /// Whether pinned units take this test: an absolute limit on what each request meets.
    /// Not a count per period, which limits the canary as a whole, nor a comparison.
    pub fn pinned_may_take(self) -> bool {
        matches!(self, CustomTest::RateLimit(_) | CustomTest::Past { limit: Limit::Absolute(_), .. })
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Limit {
    Absolute(f64),
    /// The stable's value at the level, times (1 ± tolerance).
    VsStable(f64),
}

/// What every test of one judgement shares: the evidence, the prior, and its share of
/// the false rollback rate.
pub(super) struct Tests<'a> {
    pub samples: &'a [StageSample],
    pub mixture: Mixture,
    pub rho0: f64,
    pub alpha: f64,
    threshold: f64,
    pub canary_total: SideMetrics,
    pub stable_total: SideMetrics,
    /// What each test made of the current stage's replicates, as it weighed them.
    pub weighting: RefCell<BTreeMap<String, Weighting>>,
}

/// How a batch of evidence weighs a ratio `r` to its null's boundary (ln LR).
pub(super) type Weigh<'b> = Box<dyn Fn(f64) -> f64 + 'b>;

impl<'a> Tests<'a> {
    pub fn new(gates: &Gates, samples: &'a [StageSample], k: usize) -> Self {
        let alpha = gates.false_rollback_rate / k.max(1) as f64;
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
            weighting: RefCell::new(BTreeMap::new()),
        }
    }

    /// How stage `i`'s counts are weighed for `test`: as they are where requests are the
    /// unit; for a cohort stage, divided by the design effect its replicates show (the
    /// stage's weighting once they are dropped), not at all while no unit is drawn, and
    /// per request when the groups do not carry the test's metric.
    pub fn weighting(&self, i: usize, test: &str, measure: Measure<'_>) -> Weighting {
        let sample = &self.samples[i];
        if let Some(kept) = sample.weighting.get(test) {
            return *kept;
        }
        let (canary, stable) = (&sample.metrics.canary, &sample.metrics.stable);
        if canary.replicates.is_empty() && stable.replicates.is_empty() {
            return Weighting::REQUESTS;
        }
        let groups = |side: &SideMetrics| -> Vec<(f64, f64)> {
            side.replicates.iter().map(|group| measure(i, group).unwrap_or((0.0, 0.0))).collect()
        };
        let measured = |side: &SideMetrics| side.replicates.iter().any(|group| measure(i, group).is_some());
        if !measured(canary) && !measured(stable) {
            return self.keep(i, test, Weighting::ByRequest);
        }
        let (c, s) = (groups(canary), groups(stable));
        let spanned = c.iter().filter(|(_, d)| *d > 0.0).count();
        let estimate = [&c, &s].into_iter().filter_map(|g| design_effect(g, DESIGN_LEVEL)).reduce(f64::max);
        let weighting = match (spanned, estimate) {
            (0, _) => Weighting::TooFewUnits,
            // A canary of a few units spans a few groups, and no spread of its own says how
            // much its units differ: each group it spans counts as one unit at most, so one
            // heavy user's bad day is one user's, yet units that all fail still show.
            (k, estimate) if k < MIN_GROUPS => {
                let out_of = measure(i, canary).map_or(0.0, |(_, out_of)| out_of);
                Weighting::DesignEffect(estimate.unwrap_or(1.0).max(out_of / k as f64).max(1.0))
            }
            (_, Some(effect)) => Weighting::DesignEffect(effect),
            // Nothing to spread: no event yet on either side.
            (_, None) => Weighting::REQUESTS,
        };
        self.keep(i, test, weighting)
    }

    /// The current stage's weighting is kept with the evidence (and with the stage).
    fn keep(&self, i: usize, test: &str, weighting: Weighting) -> Weighting {
        if i + 1 == self.samples.len() {
            self.weighting.borrow_mut().insert(test.to_owned(), weighting);
        }
        weighting
    }

    /// Stage `i`'s measure of a side as the test weighs it: divided by the stage's design
    /// effect, or `None` when its units are too few to say anything.
    pub fn weighed(&self, i: usize, test: &str, side: &SideMetrics, measure: Measure<'_>) -> Option<(f64, f64)> {
        let (events, out_of) = measure(i, side)?;
        match self.weighting(i, test, measure) {
            Weighting::TooFewUnits => None,
            weighting => Some((events / weighting.effect(), out_of / weighting.effect())),
        }
    }

    /// What a test's measure adds up to over the stages, as served (unweighed): what its
    /// words say.
    pub fn served(&self, whose: Whose, measure: Measure<'_>) -> (f64, f64) {
        self.samples.iter().enumerate().fold((0.0, 0.0), |(events, out_of), (i, sample)| {
            let side = match whose {
                Whose::Canary => Some(&sample.metrics.canary),
                Whose::Pinned => sample.metrics.pinned.as_ref(),
            };
            match side.filter(|s| s.requests > 0.0).and_then(|s| measure(i, s)) {
                Some((e, n)) => (events + e, out_of + n),
                None => (events, out_of),
            }
        })
    }

    /// Each stage's events against a share `p0`: the canary's, weighed as its units
    /// allow, or the pinned units' as they are (not a sample of anyone: their requests are
    /// what they met).
    pub fn proportions(&self, test: &str, p0: f64, whose: Whose, measure: Measure<'_>) -> Vec<(usize, Proportion)> {
        let mut proportions = Vec::new();
        for (i, sample) in self.samples.iter().enumerate() {
            let measured = match whose {
                Whose::Canary => Some(&sample.metrics.canary)
                    .filter(|c| c.requests > 0.0)
                    .and_then(|c| self.weighed(i, test, c, measure)),
                Whose::Pinned => {
                    sample.metrics.pinned.as_ref().filter(|p| p.requests > 0.0).and_then(|p| measure(i, p))
                }
            };
            if let Some((count, trials)) = measured.filter(|(_, trials)| *trials > 0.0) {
                proportions.push((i, Proportion { count, trials, p0 }));
            }
        }
        proportions
    }

    /// A test's standing: `batches` (stage index, how it weighs r) for all the stages so
    /// far; the current stage's alone, at the ratio `detect`, say how settled it is.
    pub fn standing(
        &self,
        test: String,
        name: String,
        batches: Vec<(usize, Weigh<'_>)>,
        detect: f64,
        detail: String,
    ) -> Standing {
        let log_e = self.mixture.log_e(|r| batches.iter().map(|(_, weigh)| weigh(r)).sum());
        let current = self.samples.len().saturating_sub(1);
        let now: Vec<&Weigh<'_>> = batches.iter().filter(|(s, _)| *s == current).map(|(_, w)| w).collect();
        // A test that saw nothing in this stage has nothing to settle.
        let log_accept = (!now.is_empty()).then(|| -now.iter().map(|weigh| weigh(detect)).sum::<f64>());
        Standing { test, name, log_e, threshold: self.threshold, detail, enforced: true, log_accept }
    }

    /// The stages where both sides had exposure, as splits of `count` between them in
    /// proportion to `exposure` (requests, or a rate's denominator), weighed as the
    /// stage's units allow for `test`.
    pub fn splits(
        &self,
        test: &str,
        count: impl Fn(&SideMetrics) -> Option<f64>,
        exposure: impl Fn(&SideMetrics) -> f64,
    ) -> Vec<(usize, Split)> {
        let measure = |_: usize, side: &SideMetrics| Some((count(side)?, exposure(side)));
        let seen = |side: &SideMetrics| count(side).unwrap_or(0.0);
        self.samples
            .iter()
            .enumerate()
            .filter(|(_, s)| exposure(&s.metrics.stable) > 0.0 && exposure(&s.metrics.canary) > 0.0)
            .filter(|(_, s)| seen(&s.metrics.canary) + seen(&s.metrics.stable) > 0.0)
            .filter_map(|(i, s)| {
                let weigh = |side: &SideMetrics| {
                    let (events, out_of) = (seen(side), exposure(side));
                    match self.weighting(i, test, &measure) {
                        Weighting::TooFewUnits => None,
                        weighting => Some((events / weighting.effect(), out_of / weighting.effect())),
                    }
                };
                let (canary, c) = weigh(&s.metrics.canary)?;
                let (stable, st) = weigh(&s.metrics.stable)?;
                Some((i, Split { canary, stable, canary_share: c / (c + st) }))
            })
            .collect()
    }

    /// Splits tested against a rate ratio boundary `rho0`.
    pub fn split_batches(splits: Vec<(usize, Split)>, rho0: f64) -> Vec<(usize, Weigh<'a>)> {
        splits.into_iter().map(|(i, b)| (i, Box::new(move |r| split_log_lr(&b, rho0, r)) as Weigh<'a>)).collect()
    }

    pub fn proportion_batches(proportions: Vec<(usize, Proportion)>) -> Vec<(usize, Weigh<'a>)> {
        proportions.into_iter().map(|(i, p)| (i, Box::new(move |r| proportion_log_lr(&p, r)) as Weigh<'a>)).collect()
    }
}

/// The ratio, to a rate ratio test's boundary `rho0`, that an evidence-driven stage rules
/// out: [`DETECT_RATIO`] times the stable's rate, or a quarter past the boundary when the
/// tolerance is already that loose.
pub(super) fn split_detect(rho0: f64) -> f64 {
    (DETECT_RATIO / rho0).max(1.25)
}

/// The same for a share tested against `p0`: twice it, or halfway to all of them.
pub(super) fn share_detect(p0: f64) -> f64 {
    (DETECT_RATIO * p0).min((1.0 + p0) / 2.0) / p0.max(1e-9)
}
