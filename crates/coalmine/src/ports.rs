//! The small traits the use cases depend on. Each has one SDK-backed adapter in
//! [`crate::aws`]; tests use plain fakes.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::AlarmState;
use crate::release::CustomGate;
use crate::target::Target;

/// Weights read back from AWS are floats: two weights closer than this are equal.
pub const WEIGHT_TOLERANCE: f64 = 1e-4;

/// How traffic is split between the stable and the canary, as last read.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Lambda: the alias's `FunctionVersion`; SageMaker: the stable variant's name.
    pub stable: String,
    /// Lambda: the version in `AdditionalVersionWeights`, if any; SageMaker: the canary variant.
    pub canary: Option<String>,
    /// The canary's share of traffic, in [0, 1].
    pub canary_weight: f64,
    /// What a conditional write must present: Lambda's alias `RevisionId`.
    pub revision: Option<String>,
}

impl Split {
    /// The same routing with the canary at `weight`.
    pub fn with_canary_weight(&self, weight: f64) -> Split {
        Split { canary_weight: weight, revision: None, ..self.clone() }
    }

    pub fn canary_is_zero(&self) -> bool {
        self.canary.is_none() || self.canary_weight <= WEIGHT_TOLERANCE
    }

    /// Same routing, whatever the revision: what the stepper compares with what it wrote.
    pub fn same_routing(&self, other: &Split) -> bool {
        self.stable == other.stable
            && (self.canary_weight - other.canary_weight).abs() <= WEIGHT_TOLERANCE
            && (self.canary_is_zero() || self.canary == other.canary)
    }
}

pub trait TrafficRouter: Send + Sync {
    fn read(&self, target: &Target) -> impl Future<Output = Result<Split>> + Send;

    /// Makes `desired` the live split, only if the live split is still `read`
    /// (otherwise [`crate::Error::Conflict`]); returns the split as written.
    /// Lambda: `desired.stable` becomes the alias's version (so promotion is a new stable
    /// with no canary); SageMaker: the variants stay, the weights move.
    fn write(&self, target: &Target, read: &Split, desired: &Split) -> impl Future<Output = Result<Split>> + Send;

    /// Fails with [`crate::Error::InvalidRelease`] unless the canary (Lambda version,
    /// SageMaker variant) exists on the target.
    fn check_canary(&self, target: &Target, canary: &str) -> impl Future<Output = Result<()>> + Send;
}

/// One SNS message: a subject, a human-readable body, and attributes for filter policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub subject: String,
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
}

pub trait Notifier: Send + Sync {
    fn publish(&self, notification: &Notification) -> impl Future<Output = Result<()>> + Send;
}

pub trait AlarmSource: Send + Sync {
    /// The value of the alarm's `coalmine:target` tag, if it has one.
    fn target_tag(&self, alarm_arn: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// The current state of each named alarm; a name missing from the answer does not exist.
    fn states(&self, names: &[String]) -> impl Future<Output = Result<Vec<(String, AlarmState)>>> + Send;
}

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
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSnapshot {
    pub canary: SideMetrics,
    pub stable: SideMetrics,
}

/// Which metrics to fetch: both sides of a target over a window, plus custom gates.
#[derive(Clone, Debug)]
pub struct MetricQuery<'a> {
    pub target: &'a Target,
    pub canary: &'a str,
    pub stable: &'a str,
    pub start_epoch: u64,
    pub end_epoch: u64,
    pub custom: &'a [CustomGate],
}

pub trait MetricSource: Send + Sync {
    /// Everything in one call (CloudWatch GetMetricData).
    fn fetch(&self, query: &MetricQuery<'_>) -> impl Future<Output = Result<MetricSnapshot>> + Send;
}
