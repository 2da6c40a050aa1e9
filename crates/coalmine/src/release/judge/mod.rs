//! The health judge: gate alarms, then canary-vs-stable metrics. Pure: it gets alarm
//! states and metric snapshots and returns a verdict with the evidence behind it.
//!
//! Two judges. The **sequential** one (the default) weighs every stage so far with
//! anytime-valid tests ([`crate::release::sequential`]), so looking every tick costs no
//! validity and a healthy canary is rolled back at most at `false_rollback_rate`. The
//! **fixed-horizon** one re-runs a two-proportion z-test and compares raw p95s on the
//! current stage each tick; it is kept for comparison (the simulator runs both) and for
//! releases written for it. Both start from [`alarm_evidence`] and end in an
//! [`Evidence`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::event::AlarmState;
use crate::domain::metrics::{MetricSnapshot, SideMetrics};
use crate::release::judge::gates::{Gates, InsufficientDataAlarm};
use crate::text::{count, pct};
use evalues::Standing;

mod custom;
pub mod evalues;
pub mod fixed;
pub mod gates;
pub mod power;
pub mod replicates;
pub mod sequential;
mod weigh;

/// A stage's metrics so far, as the judge weighs them: replaced each tick while the
/// stage runs, kept as they were once it has ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSample {
    pub stage: usize,
    /// How long the stage had run when these were read.
    pub seconds: u64,
    pub metrics: MetricSnapshot,
    /// A cohort stage's weighting of each test's counts (by test id), read from its
    /// replicates while it ran and kept once they are dropped: what the stage's counts
    /// are worth with units as the draw.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weighting: BTreeMap<String, Weighting>,
}

impl StageSample {
    pub fn new(stage: usize, seconds: u64, metrics: MetricSnapshot) -> Self {
        StageSample { stage, seconds, metrics, weighting: BTreeMap::new() }
    }

    /// Keeps what the judge made of this stage's replicates (`weighting`, from the
    /// evidence) and drops them: sixteen groups a side are too much to carry through
    /// every stage of an execution, and a stage's weighting does not change once read.
    pub fn settle(&mut self, weighting: &BTreeMap<String, Weighting>) {
        if self.metrics.canary.replicates.is_empty() && self.metrics.stable.replicates.is_empty() {
            return;
        }
        self.weighting = weighting.clone();
        self.metrics.canary.replicates.clear();
        self.metrics.stable.replicates.clear();
    }
}

/// What a cohort stage's spread made of one test's counts (decision 0021).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Both sides' counts divided by the design effect: how many requests one
    /// independent request's worth of evidence takes when units are drawn whole. One
    /// figure for both sides: a unit sends as many requests on either, so the effect is
    /// the population's, and the larger of the two sides' estimates is taken.
    DesignEffect(f64),
    /// Too few groups of units had traffic to read a spread from: the stage tells this
    /// test nothing yet.
    TooFewUnits,
    /// The groups do not carry this test's metric (a handler that does not publish it by
    /// unit): weighed per request, as a release without cohorts is, and said.
    ByRequest,
}

impl Weighting {
    /// Requests are the unit: counts weigh what they say.
    pub const REQUESTS: Weighting = Weighting::DesignEffect(1.0);

    /// In words, for a test named `name`: "errors weighed as one independent request in
    /// every 3.2".
    pub fn describe(self, name: &str) -> String {
        match self {
            Weighting::DesignEffect(effect) => {
                format!("{name} weighed as one independent request in every {effect:.1}")
            }
            Weighting::TooFewUnits => format!("{name}: no unit drawn, nothing to weigh"),
            Weighting::ByRequest => format!("{name} per request (not published by unit)"),
        }
    }

    /// What a stage's counts are divided by.
    pub fn effect(self) -> f64 {
        match self {
            Weighting::DesignEffect(effect) => effect,
            Weighting::TooFewUnits | Weighting::ByRequest => 1.0,
        }
    }
}

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
    /// What the tests that are not enforced would have rolled back on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
    /// Healthy, and every enforced test settled in this stage: an evidence-driven stage
    /// may advance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conclusive: bool,
    /// A cohort release's current stage: how each test weighed its counts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weighting: BTreeMap<String, Weighting>,
}

impl Evidence {
    pub fn summary(&self) -> String {
        self.reasons.join("; ")
    }

    /// The enforced tests that have not yet shown, in this stage, that the canary is no
    /// worse than twice their tolerance.
    pub fn unsettled(&self) -> Vec<&str> {
        self.tests.iter().filter(|t| t.enforced && !t.settled()).map(|t| t.name.as_str()).collect()
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
pub(crate) fn alarm_evidence(
    gates: &Gates,
    states: &[(String, AlarmState)],
    metrics: Option<MetricSnapshot>,
) -> Evidence {
    let mut evidence = Evidence {
        verdict: Verdict::Healthy,
        reasons: Vec::new(),
        alarms: states.iter().map(|(n, s)| (n.clone(), s.as_str())).collect(),
        metrics,
        error_rate_z: None,
        error_rate_p_value: None,
        tests: Vec::new(),
        dry_run: Vec::new(),
        conclusive: false,
        weighting: BTreeMap::new(),
    };
    if let Some(failed) = judge_alarms(gates, states) {
        evidence.verdict = Verdict::Unhealthy;
        evidence.reasons = failed;
    }
    evidence
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

pub fn rate(side: &SideMetrics) -> Option<f64> {
    (side.requests > 0.0).then(|| side.errors.min(side.requests) / side.requests)
}

/// A verdict's headline when the canary served too little to judge.
pub(crate) fn too_few(requests: f64, min_requests: u64) -> String {
    format!("inconclusive: {} canary requests, fewer than min_requests {min_requests}", count(requests))
}

/// What a healthy verdict says: the two sides' figures side by side, "healthy: 900
/// canary requests; errors 0.40% vs 0.50%, p95 852 vs 802 ms, OutputTokens 800 vs 400
/// (+100%, limit +20%)".
pub(crate) fn healthy(gates: &Gates, canary: &SideMetrics, stable: &SideMetrics) -> String {
    format!("healthy: {} canary requests; {}", count(canary.requests), figures(gates, canary, stable))
}

/// The canary's figures against the stable's, each gate's with its limit: what a person
/// scanning a status or a message compares.
pub fn figures(gates: &Gates, canary: &SideMetrics, stable: &SideMetrics) -> String {
    let or_na = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
    let mut said = vec![format!("errors {} vs {}", or_na(rate(canary).map(pct)), or_na(rate(stable).map(pct)))];
    match (canary.p95_ms, stable.p95_ms) {
        (Some(c), Some(s)) => said.push(format!("p95 {c:.0} vs {s:.0} ms")),
        (Some(c), None) => said.push(format!("p95 {c:.0} ms")),
        _ => {}
    }
    for (i, gate) in gates.custom.iter().enumerate() {
        let (c, s) = (canary.custom.get(i).copied().flatten(), stable.custom.get(i).copied().flatten());
        let Some(c) = c else { continue };
        let mut notes = Vec::new();
        if let Some(s) = s.filter(|s| *s > 0.0) {
            notes.push(format!("{:+.0}%", (c / s - 1.0) * 100.0));
        }
        notes.extend(gate.max_increase_ratio.map(|r| format!("limit +{:.0}%", r * 100.0)));
        notes.extend(gate.max_decrease_ratio.map(|r| format!("limit -{:.0}%", r * 100.0)));
        notes.extend(gate.max.map(|m| format!("max {}", figure(m))));
        notes.extend(gate.min.map(|m| format!("min {}", figure(m))));
        let stable = s.map(|s| format!(" vs {}", figure(s))).unwrap_or_default();
        let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) };
        said.push(format!("{} {}{stable}{notes}", gate.metric, figure(c)));
    }
    said.join(", ")
}

/// A metric's value with the digits that matter: 812, 3.4, 0.052.
pub fn figure(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 || v == 0.0 => format!("{value:.0}"),
        v if v >= 1.0 => format!("{value:.1}"),
        _ => format!("{value:.3}"),
    }
}
