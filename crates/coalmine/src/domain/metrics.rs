//! What the judge compares: per-side counts and latencies over a window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the judge compares: one side (canary or stable) over the stage's window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SideMetrics {
    pub requests: f64,
    pub errors: f64,
    /// p95 latency in milliseconds; `None` without data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    /// The value of each of the release's custom gates, in order; `None` without data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<Option<f64>>,
    /// Latency in ms at each of [`PERCENTILE_LEVELS`]: the share of requests slower
    /// than a threshold is read off these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percentiles: Vec<Option<f64>>,
    /// Per custom gate, in order: a rate's denominator (when it is a metric of its own),
    /// or how many values a distribution had (its `SampleCount`); `None` for the others,
    /// or without data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_counts: Vec<Option<f64>>,
    /// Per custom gate: a distribution's values at its [`CustomGate::levels`]; empty for
    /// the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_percentiles: Vec<Vec<Option<f64>>>,
    /// A cohort release's side split into [`coalmine_router::REPLICATES`] random groups of whole units
    /// (the router's `Replicate` dimension), each measured as the side is: their spread is
    /// how much the side's figures would move with other units drawn (decision 0021).
    /// Empty where requests are the unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicates: Vec<SideMetrics>,
}

impl SideMetrics {
    /// A rate gate's denominator on this side: its own metric, or this side's requests.
    pub fn denominator(&self, i: usize, gate: &CustomGate) -> Option<f64> {
        match &gate.per {
            Some(Per::Requests(_)) => (self.requests > 0.0).then_some(self.requests),
            Some(Per::Metric { .. }) => self.custom_counts.get(i).copied().flatten(),
            None => None,
        }
    }

    /// How many values a distribution gate had on this side.
    pub fn values(&self, i: usize) -> f64 {
        self.custom_counts.get(i).copied().flatten().unwrap_or(0.0)
    }
}

/// The latency percentiles fetched for each side, densest in the tail the judge reads.
pub const PERCENTILE_LEVELS: [f64; 9] = [50.0, 75.0, 90.0, 95.0, 97.0, 98.0, 99.0, 99.5, 99.9];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSnapshot {
    /// A cohort release's canary is its drawn units alone: the random sample that may be
    /// compared with the stable.
    pub canary: SideMetrics,
    pub stable: SideMetrics,
    /// A cohort release's pinned units on the candidate (internal users, a beta tenant):
    /// not a sample of anyone, so judged on absolute limits only, never against the
    /// stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<SideMetrics>,
}

/// A metric of the AI service itself (tokens, response length, schema failures,
/// guardrail blocks...). In `dimensions`, `{version}` becomes the canary's (or stable's)
/// Lambda version or SageMaker variant name. What kind of gate it is follows from its
/// statistic and `per` ([`CustomGate::kind`]); each kind is judged by its own test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomGate {
    pub namespace: String,
    pub metric: String,
    pub stat: String,
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// Absolute upper limit: a count per `period_seconds`, a rate, or the distribution's
    /// statistic.
    #[serde(default)]
    pub max: Option<f64>,
    /// Relative upper limit: canary over stable, minus one (0.2: 20% more is fine).
    #[serde(default)]
    pub max_increase_ratio: Option<f64>,
    /// A rate: the numerator (this metric's `Sum`) per `"requests"` (the target's own)
    /// or per another metric's `Sum` (thumbs-down per feedback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<Per>,
    /// A distribution gate: which way is a regression.
    #[serde(default, skip_serializing_if = "Direction::is_increase")]
    pub direction: Direction,
    /// Absolute lower limit on a distribution's statistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Relative lower limit: one minus canary over stable (0.2: 20% less is fine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decrease_ratio: Option<f64>,
    /// `false`: judged and reported at every check, never acted on (a dry run).
    #[serde(default = "enforced", skip_serializing_if = "is_enforced")]
    pub enforce: bool,
}

/// A rate's denominator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Per {
    /// `"requests"`: the target's own requests (its invocations).
    Requests(String),
    Metric {
        namespace: String,
        metric: String,
        #[serde(default)]
        dimensions: BTreeMap<String, String>,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More is worse: longer answers, more tokens.
    #[default]
    Increase,
    /// Less is worse: shorter answers, a lower quality score.
    Decrease,
    /// A change either way is.
    Either,
}

impl Direction {
    fn is_increase(&self) -> bool {
        *self == Direction::Increase
    }

    pub fn up(self) -> bool {
        matches!(self, Direction::Increase | Direction::Either)
    }

    pub fn down(self) -> bool {
        matches!(self, Direction::Decrease | Direction::Either)
    }
}

/// How a custom gate is judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GateKind {
    /// Events counted (`Sum`, `SampleCount`): a rate in time, or per request against the
    /// stable's.
    Count,
    /// Events per a denominator, against a limit or the stable's rate.
    Rate,
    /// One value per request (tokens, length, a score), at a percentile `level`: the
    /// share of values past a threshold, against what that percentile allows.
    Distribution { level: f64 },
}

/// The percentiles fetched for a distribution gate, besides its own level.
pub const DISTRIBUTION_LEVELS: [f64; 11] = [1.0, 5.0, 10.0, 25.0, 40.0, 50.0, 60.0, 75.0, 90.0, 95.0, 99.0];

impl CustomGate {
    /// A gate on `namespace`/`metric`'s `stat`, with no limit yet, enforced.
    pub fn new(namespace: &str, metric: &str, stat: &str) -> CustomGate {
        CustomGate {
            namespace: namespace.to_owned(),
            metric: metric.to_owned(),
            stat: stat.to_owned(),
            period_seconds: default_period(),
            dimensions: BTreeMap::new(),
            max: None,
            max_increase_ratio: None,
            per: None,
            direction: Direction::Increase,
            min: None,
            max_decrease_ratio: None,
            enforce: true,
        }
    }

    /// "AIService/OutputTokens Average", as messages name it.
    pub fn name(&self) -> String {
        format!("{}/{} {}", self.namespace, self.metric, self.stat)
    }

    /// `None` for a statistic no test can be built on (`Minimum`, `Maximum`).
    pub fn kind(&self) -> Option<GateKind> {
        match (self.stat.as_str(), &self.per) {
            ("Sum", Some(_)) => Some(GateKind::Rate),
            ("Sum" | "SampleCount", None) => Some(GateKind::Count),
            // An average of per-request values has no bound a test could use on a few
            // hundred heavy-tailed values: its distribution is judged at the median.
            ("Average", None) => Some(GateKind::Distribution { level: 50.0 }),
            (stat, None) => percentile(stat).map(|level| GateKind::Distribution { level }),
            _ => None,
        }
    }

    /// A distribution gate's percentile levels: [`DISTRIBUTION_LEVELS`] and its own.
    pub fn levels(&self) -> Vec<f64> {
        let Some(GateKind::Distribution { level }) = self.kind() else { return Vec::new() };
        let mut levels = DISTRIBUTION_LEVELS.to_vec();
        if !levels.contains(&level) {
            levels.push(level);
            levels.sort_by(f64::total_cmp);
        }
        levels
    }
}

/// `p95` → 95.
pub fn percentile(stat: &str) -> Option<f64> {
    stat.strip_prefix('p').and_then(|n| n.parse::<f64>().ok()).filter(|n| *n > 0.0 && *n < 100.0)
}

fn enforced() -> bool {
    true
}

fn is_enforced(enforce: &bool) -> bool {
    *enforce
}

fn default_period() -> u32 {
    60
}

pub const VERSION_PLACEHOLDER: &str = "{version}";
