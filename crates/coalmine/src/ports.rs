//! The small traits the use cases depend on. Each has one SDK-backed adapter in
//! [`crate::aws`]; tests use plain fakes.

use std::future::Future;

use crate::domain::error::Result;
use crate::domain::event::AlarmState;
use crate::domain::metrics::{CustomGate, MetricSnapshot};
use crate::domain::split::Split;
use crate::domain::target::Target;

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
