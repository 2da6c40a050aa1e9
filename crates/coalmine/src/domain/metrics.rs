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
}

/// The latency percentiles fetched for each side, densest in the tail the judge reads.
pub const PERCENTILE_LEVELS: [f64; 9] = [50.0, 75.0, 90.0, 95.0, 97.0, 98.0, 99.0, 99.5, 99.9];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSnapshot {
    pub canary: SideMetrics,
    pub stable: SideMetrics,
}

/// A metric of the AI service itself (tokens, response length, schema failures,
/// guardrail blocks...). In `dimensions`, `{version}` becomes the canary's (or stable's)
/// Lambda version or SageMaker variant name.
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
    /// Absolute limit on the canary's value.
    #[serde(default)]
    pub max: Option<f64>,
    /// Relative limit: canary value over stable value, minus one.
    #[serde(default)]
    pub max_increase_ratio: Option<f64>,
}

impl CustomGate {
    /// "AIService/OutputTokens Average", as messages name it.
    pub fn name(&self) -> String {
        format!("{}/{} {}", self.namespace, self.metric, self.stat)
    }
}

fn default_period() -> u32 {
    60
}

pub const VERSION_PLACEHOLDER: &str = "{version}";
