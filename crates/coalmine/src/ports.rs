//! The small traits the use cases depend on. Each has one SDK-backed adapter in
//! [`crate::aws`]; tests use plain fakes.

use std::future::Future;

use crate::error::Result;
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
}
