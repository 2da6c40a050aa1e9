//! The gates every kind of release is judged by: its alarms, the metric limits, the
//! judge and its false rollback rate, and what too little data means. Strictly
//! validated; every error names the field.

use serde::{Deserialize, Serialize};

use crate::domain::metrics::{CustomGate, Direction, GateKind, Per, VERSION_PLACEHOLDER};
use crate::domain::problems::Problems;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInsufficientData {
    /// Keep the weight and keep checking, for at most `max_hold_seconds`, then roll back.
    #[default]
    Hold,
    Rollback,
    Proceed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsufficientDataAlarm {
    /// A gate alarm without data does not block (a fresh canary often has none).
    #[default]
    Healthy,
    Unhealthy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    #[serde(default)]
    pub alarms: Vec<String>,
    #[serde(default)]
    pub alarm_insufficient_data: InsufficientDataAlarm,
    /// Which judge weighs the metrics: `sequential` (the default) or `fixed_horizon`,
    /// the earlier one, kept for comparison and for releases written for it.
    #[serde(default)]
    pub judge: JudgeKind,
    /// The chance a healthy canary is rolled back by the metrics, over the whole
    /// release and every statistical test together (sequential judge).
    #[serde(default = "default_false_rollback_rate")]
    pub false_rollback_rate: f64,
    /// Canary error rate (errors / requests), absolute: rolled back once the judge is
    /// confident it is above this.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Canary p95 latency, absolute: rolled back once the judge is confident more than
    /// 5% of the canary's requests are slower.
    #[serde(default)]
    pub max_p95_latency_ms: Option<f64>,
    /// Sequential judge: how many times the stable's error rate the canary's may be
    /// before it counts as a regression (1.2: 20% worse). Default 1: any regression.
    #[serde(default)]
    pub max_error_rate_ratio: Option<f64>,
    /// Fixed-horizon judge: canary error rate minus stable error rate.
    #[serde(default)]
    pub max_error_rate_increase: Option<f64>,
    /// Canary p95 over stable p95, minus one (0.2 = 20% slower).
    #[serde(default)]
    pub max_p95_increase_ratio: Option<f64>,
    /// Fixed-horizon judge: the one-sided two-proportion z-test's confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_confidence: Option<f64>,
    /// A stage whose canary served fewer requests is inconclusive, never healthy.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default)]
    pub on_insufficient_data: OnInsufficientData,
    #[serde(default = "default_max_hold")]
    pub max_hold_seconds: u64,
    #[serde(default)]
    pub custom: Vec<CustomGate>,
    /// `false`: the metric judge's verdicts are said at every check and in the team's
    /// messages, never acted on (a dry run); the gate alarms still roll back.
    #[serde(default = "enforced", skip_serializing_if = "is_enforced")]
    pub enforce: bool,
}

fn enforced() -> bool {
    true
}

fn is_enforced(enforce: &bool) -> bool {
    *enforce
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            alarms: Vec::new(),
            alarm_insufficient_data: InsufficientDataAlarm::default(),
            judge: JudgeKind::default(),
            false_rollback_rate: default_false_rollback_rate(),
            max_error_rate: None,
            max_p95_latency_ms: None,
            max_error_rate_ratio: None,
            max_error_rate_increase: None,
            max_p95_increase_ratio: None,
            error_rate_confidence: None,
            min_requests: default_min_requests(),
            on_insufficient_data: OnInsufficientData::default(),
            max_hold_seconds: default_max_hold(),
            custom: Vec::new(),
            enforce: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeKind {
    /// Anytime-valid sequential tests (mSPRT): looking every tick costs no validity.
    #[default]
    Sequential,
    /// A two-proportion z-test and raw p95 comparisons, re-run every tick.
    FixedHorizon,
}

/// The fixed-horizon judge's default confidence.
pub const DEFAULT_ERROR_RATE_CONFIDENCE: f64 = 0.95;

/// One healthy release in a hundred rolled back by the metrics, at most, by design (the
/// simulation measures well below it): teams switch off canary analysis that cries wolf,
/// and at 1 000 requests a minute this still catches a doubled error rate in the first
/// stages (SIMULATION.md).
pub const DEFAULT_FALSE_ROLLBACK_RATE: f64 = 0.01;

fn default_false_rollback_rate() -> f64 {
    DEFAULT_FALSE_ROLLBACK_RATE
}

/// Below about a hundred requests a canary's error rate cannot be told from noise at
/// the rates teams alarm on (a few percent), and a stage with no traffic at all says
/// nothing: such a stage is inconclusive, never healthy.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

fn default_min_requests() -> u64 {
    DEFAULT_MIN_REQUESTS
}

fn default_max_hold() -> u64 {
    1800
}

const STATS: &[&str] = &["Sum", "SampleCount", "Average"];

impl Gates {
    /// Every rule the gates break, each naming its field under `gates.`.
    pub fn check(&self, problems: &mut Problems) {
        let mut add = |field: &str, why: String| problems.add(&format!("gates.{field}"), why);
        self.check_alarms(&mut add);
        self.check_limits(&mut add);
        self.check_judge(&mut add);
        for (i, gate) in self.custom.iter().enumerate() {
            check_custom(i, gate, &mut add);
        }
    }

    fn check_alarms(&self, add: &mut impl FnMut(&str, String)) {
        for (i, alarm) in self.alarms.iter().enumerate() {
            if alarm.trim().is_empty() || alarm.len() > 255 {
                add(&format!("alarms[{i}]"), "an alarm name of 1 to 255 characters is required".into());
            }
        }
        if self.alarms.len() > 100 {
            add("alarms", format!("{} alarms; at most 100", self.alarms.len()));
        }
    }

    fn check_limits(&self, add: &mut impl FnMut(&str, String)) {
        for (field, value) in
            [("max_error_rate", self.max_error_rate), ("max_error_rate_increase", self.max_error_rate_increase)]
        {
            match value {
                // A rate written as a percent: 5 for 5%.
                Some(v) if v > 1.0 && v <= 100.0 => add(
                    field,
                    format!("{v} is not a fraction in [0, 1]; rates are fractions: write {} for {v}%", v / 100.0),
                ),
                Some(v) if !(0.0..=1.0).contains(&v) => add(field, format!("{v} is not a fraction in [0, 1]")),
                _ => {}
            }
        }
        for (field, value) in
            [("max_p95_latency_ms", self.max_p95_latency_ms), ("max_p95_increase_ratio", self.max_p95_increase_ratio)]
        {
            if let Some(v) = value.filter(|v| !v.is_finite() || *v < 0.0) {
                add(field, format!("{v} must be a number >= 0"));
            }
        }
        if self.min_requests == 0 {
            add(
                "min_requests",
                format!(
                    "0: a stage whose canary served no request says nothing about it; use at least 1 \
                     (default {DEFAULT_MIN_REQUESTS})"
                ),
            );
        }
        if let Some(ratio) = self.max_error_rate_ratio.filter(|r| !(1.0..=100.0).contains(r)) {
            add("max_error_rate_ratio", format!("{ratio} is outside [1, 100]: 1.2 lets the canary be 20% worse"));
        }
    }

    /// The false rollback rate, and the fields that belong to one judge only.
    fn check_judge(&self, add: &mut impl FnMut(&str, String)) {
        if let Some(confidence) = self.error_rate_confidence.filter(|c| !(0.5..1.0).contains(c)) {
            add("error_rate_confidence", format!("{confidence} is outside [0.5, 1)"));
        }
        if !(self.false_rollback_rate > 0.0 && self.false_rollback_rate <= 0.2) {
            add("false_rollback_rate", format!("{} is outside (0, 0.2]", self.false_rollback_rate));
        }
        if self.judge != JudgeKind::Sequential {
            let dry = (!self.enforce)
                .then(|| "enforce".to_owned())
                .or_else(|| self.custom.iter().position(|g| !g.enforce).map(|i| format!("custom[{i}].enforce")));
            if let Some(field) = dry {
                add(&field, "false: a dry run is the sequential judge's; drop \"judge\": \"fixed_horizon\"".into());
            }
            return;
        }
        if let Some(margin) = self.max_error_rate_increase {
            add(
                "max_error_rate_increase",
                format!(
                    "{margin}: an absolute margin hides regressions at low error rates (1 point is 3x at 0.5%), so \
                     the sequential judge takes max_error_rate_ratio instead (1.2 for 20% worse); or set \
                     \"judge\": \"fixed_horizon\" to keep the earlier judge"
                ),
            );
        }
        if self.error_rate_confidence.is_some() {
            add(
                "error_rate_confidence",
                "belonged to the fixed-horizon z-test; the sequential judge takes false_rollback_rate, the chance \
                 a healthy canary is rolled back (default 0.01); or set \"judge\": \"fixed_horizon\""
                    .into(),
            );
        }
    }
}

fn check_custom(i: usize, gate: &CustomGate, add: &mut impl FnMut(&str, String)) {
    let field = |name: &str| format!("custom[{i}].{name}");
    if gate.namespace.trim().is_empty() {
        add(&field("namespace"), "required".into());
    }
    if gate.metric.trim().is_empty() {
        add(&field("metric"), "required".into());
    }
    if gate.period_seconds == 0 || !gate.period_seconds.is_multiple_of(60) {
        add(&field("period_seconds"), format!("{} is not a positive multiple of 60", gate.period_seconds));
    }
    for (name, ratio) in
        [("max_increase_ratio", gate.max_increase_ratio), ("max_decrease_ratio", gate.max_decrease_ratio)]
    {
        if let Some(r) = ratio.filter(|r| !r.is_finite() || *r < 0.0 || (name == "max_decrease_ratio" && *r >= 1.0)) {
            add(&field(name), format!("{r} is not a tolerance (0.2: 20% is fine)"));
        }
    }
    let relative = gate.max_increase_ratio.is_some() || gate.max_decrease_ratio.is_some();
    if relative && !gate.dimensions.values().any(|v| v.contains(VERSION_PLACEHOLDER)) {
        add(
            &field("dimensions"),
            format!("a relative limit compares canary and stable, so a dimension must hold {VERSION_PLACEHOLDER}"),
        );
    }
    match gate.kind() {
        None => add(&field("stat"), unjudgeable(gate)),
        Some(GateKind::Distribution { .. }) => check_distribution(gate, &field, add),
        Some(kind) => check_events(gate, kind, &field, add),
    }
}

/// Why a statistic cannot be a gate, and what to use instead.
fn unjudgeable(gate: &CustomGate) -> String {
    match gate.stat.as_str() {
        "Minimum" | "Maximum" => format!(
            "{:?}: one value of a window says nothing about how many were past it, so no test can bound how often a \
             healthy canary would fail it; judge the tail with a percentile (\"p1\", \"p99\"), or publish the \
             values past your level as a count of their own",
            gate.stat
        ),
        stat if gate.per.is_some() => {
            format!("{stat:?} with per: a rate divides this metric's Sum by the denominator's; set \"stat\": \"Sum\"")
        }
        stat => format!("{stat:?} is not one of {STATS:?} or a percentile like p95"),
    }
}

/// A count or a rate: judged when it rises.
fn check_events(gate: &CustomGate, kind: GateKind, field: &dyn Fn(&str) -> String, add: &mut impl FnMut(&str, String)) {
    for (name, set) in [
        ("direction", gate.direction != Direction::Increase),
        ("min", gate.min.is_some()),
        ("max_decrease_ratio", gate.max_decrease_ratio.is_some()),
    ] {
        if set {
            add(
                &field(name),
                "a count or rate is judged when it rises; for one whose fall is the regression (thumbs-up), gate \
                 on its complement (thumbs-down)"
                    .into(),
            );
        }
    }
    if gate.max.is_none() && gate.max_increase_ratio.is_none() {
        add(&field("max"), "a custom gate needs max, max_increase_ratio, or both".into());
    }
    if let (GateKind::Rate, Some(per)) = (kind, &gate.per) {
        match per {
            Per::Requests(word) if word != "requests" => add(
                &field("per"),
                format!(
                    "{word:?}: a rate is per \"requests\" or per a metric: {{\"namespace\": ..., \"metric\": ...}}"
                ),
            ),
            Per::Metric { namespace, metric, dimensions } => {
                if namespace.trim().is_empty() || metric.trim().is_empty() {
                    add(&field("per"), "a denominator names its namespace and metric".into());
                }
                if gate.max_increase_ratio.is_some() && !dimensions.values().any(|v| v.contains(VERSION_PLACEHOLDER)) {
                    add(
                        &field("per.dimensions"),
                        format!("a relative limit compares canary and stable rates, so a dimension must hold {VERSION_PLACEHOLDER}"),
                    );
                }
            }
            Per::Requests(_) => {}
        }
    }
}

/// One value per request: judged in the direction it names.
fn check_distribution(gate: &CustomGate, field: &dyn Fn(&str) -> String, add: &mut impl FnMut(&str, String)) {
    let (up, down) = (
        gate.max.is_some() || gate.max_increase_ratio.is_some(),
        gate.min.is_some() || gate.max_decrease_ratio.is_some(),
    );
    match gate.direction {
        Direction::Increase if down => add(
            &field("direction"),
            "\"increase\" judges a rise; min and max_decrease_ratio judge a fall: say \"decrease\" or \"either\""
                .into(),
        ),
        Direction::Decrease if up => add(
            &field("direction"),
            "\"decrease\" judges a fall; max and max_increase_ratio judge a rise: say \"increase\" or \"either\""
                .into(),
        ),
        _ => {}
    }
    if gate.direction.up() && !up {
        add(&field("max"), "a rise is judged against max, max_increase_ratio, or both".into());
    }
    if gate.direction.down() && !down {
        add(&field("min"), "a fall is judged against min, max_decrease_ratio, or both".into());
    }
}
