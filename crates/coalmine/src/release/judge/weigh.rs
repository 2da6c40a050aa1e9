//! What every sequential test shares: the tests the gates ask for, the judgement they
//! share (the evidence so far, the prior, each test's share of the false rollback
//! rate), and how a batch of evidence is weighed into a [`Standing`].

use crate::domain::metrics::{CustomGate, MetricSnapshot, SideMetrics};
use crate::release::judge::evalues::{
    proportion_log_lr, split_log_lr, Mixture, Proportion, Split, Standing, DETECT_RATIO,
};
use crate::release::judge::gates::Gates;
use crate::release::judge::StageSample;

/// A side needs this many requests (or values) before its percentile is a threshold to
/// judge the other by.
pub const MIN_SIDE: f64 = 20.0;
/// One test the gates ask for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Spec<'g> {
    ErrorsVsStable,
    LatencyVsStable(f64),
    ErrorRateLimit(f64),
    LatencyLimit(f64),
    Custom { i: usize, gate: &'g CustomGate, test: CustomTest },
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
        }
    }

    /// A test's standing: `batches` (stage index, how it weighs r) for all the stages so
    /// far; the current stage's alone, at the ratio `detect`, say how settled it is.
    pub fn standing(
        &self,
        test: String,
        name: String,
        batches: Vec<(usize, Weigh<'_>)>,
        detect: f64,
        detail: impl Fn(&str) -> String,
    ) -> Standing {
        let log_e = self.mixture.log_e(|r| batches.iter().map(|(_, weigh)| weigh(r)).sum());
        let current = self.samples.len().saturating_sub(1);
        let now: Vec<&Weigh<'_>> = batches.iter().filter(|(s, _)| *s == current).map(|(_, w)| w).collect();
        // A test that saw nothing in this stage has nothing to settle.
        let log_accept = (!now.is_empty()).then(|| -now.iter().map(|weigh| weigh(detect)).sum::<f64>());
        let detail = detail(&format!("e = {} >= {:.0}", e(log_e), self.threshold.exp()));
        Standing { test, name, log_e, threshold: self.threshold, detail, enforced: true, log_accept }
    }

    /// The stages where both sides had exposure, as splits of `count` between them in
    /// proportion to `exposure` (requests, or a rate's denominator).
    pub fn splits(
        &self,
        count: impl Fn(&SideMetrics) -> f64,
        exposure: impl Fn(&SideMetrics) -> f64,
    ) -> Vec<(usize, Split)> {
        self.samples
            .iter()
            .enumerate()
            .filter(|(_, s)| exposure(&s.metrics.stable) > 0.0 && exposure(&s.metrics.canary) > 0.0)
            .filter(|(_, s)| count(&s.metrics.canary) + count(&s.metrics.stable) > 0.0)
            .map(|(i, s)| {
                let (c, st) = (exposure(&s.metrics.canary), exposure(&s.metrics.stable));
                (
                    i,
                    Split {
                        canary: count(&s.metrics.canary),
                        stable: count(&s.metrics.stable),
                        canary_share: c / (c + st),
                    },
                )
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

/// An e-value as a person reads it: 37, or 10^12 when it is astronomically past any
/// threshold.
fn e(log_e: f64) -> String {
    if log_e < 10_000_f64.ln() {
        format!("{:.0}", log_e.exp())
    } else {
        format!("10^{:.0}", log_e / std::f64::consts::LN_10)
    }
}
