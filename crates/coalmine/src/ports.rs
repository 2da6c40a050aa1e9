//! The small traits the use cases depend on. Each has one SDK-backed adapter in
//! [`crate::aws`]; tests use plain fakes.

use std::future::Future;

use crate::domain::deployment::{ConfigVariants, DeploymentPlan, EndpointState};
use crate::domain::error::Result;
use crate::domain::event::AlarmState;
use crate::domain::metrics::{CustomGate, MetricSnapshot};
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
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

    // SageMaker's own deployments (deployment guardrails, shadow variants): the
    // endpoint moves the traffic itself; coalmine starts, watches and stops it. Routers
    // without endpoints (the simulator's, the tests' fakes) keep these defaults.

    /// The endpoint, its deployment in flight, and its release stamp.
    fn endpoint_state(&self, endpoint: &str) -> impl Future<Output = Result<EndpointState>> + Send {
        async move { Err(no_deployments(endpoint)) }
    }

    /// An endpoint config's production and shadow variant names.
    fn config_variants(&self, config: &str) -> impl Future<Output = Result<ConfigVariants>> + Send {
        async move { Err(no_deployments(config)) }
    }

    /// `UpdateEndpoint` to `config`, with SageMaker's guardrails when `plan` is given.
    fn deploy(
        &self,
        endpoint: &str,
        config: &str,
        plan: Option<&DeploymentPlan>,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (config, plan);
        async move { Err(no_deployments(endpoint)) }
    }

    /// Names, on the endpoint (a tag), the tripwire its guardrail deployment lists.
    fn mark_tripwire(&self, endpoint: &str, alarm: &str) -> impl Future<Output = Result<()>> + Send {
        let _ = alarm;
        async move { Err(no_deployments(endpoint)) }
    }

    /// Records the release stamp on the endpoint (its tag).
    fn stamp_endpoint(&self, endpoint: &str, stamp: &Stamp) -> impl Future<Output = Result<()>> + Send {
        let _ = stamp;
        async move { Err(no_deployments(endpoint)) }
    }
}

fn no_deployments(what: &str) -> crate::Error {
    crate::Error::Config(format!("{what}: this router has no SageMaker endpoint deployments"))
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

    /// Creates (or keeps) coalmine's tripwire for `endpoint`: an alarm nothing trips but
    /// coalmine, listed among a guardrail deployment's auto-rollback alarms, so that
    /// tripping it makes SageMaker roll the deployment back (there is no API to stop one).
    fn ensure_tripwire(&self, alarm: &str, endpoint: &str) -> impl Future<Output = Result<()>> + Send {
        let _ = endpoint;
        async move { Err(crate::Error::Config(format!("{alarm}: this alarm source cannot create alarms"))) }
    }

    /// Puts the tripwire into ALARM now, and keeps it there for its period.
    fn trip(&self, alarm: &str) -> impl Future<Output = Result<()>> + Send {
        async move { Err(crate::Error::Config(format!("{alarm}: this alarm source cannot set alarms"))) }
    }
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
    /// SageMaker fleets told apart by `EndpointConfigName` (canary's, stable's): a
    /// guardrail deployment's new and old fleets, which share a variant name.
    pub configs: Option<(&'a str, &'a str)>,
}

pub trait MetricSource: Send + Sync {
    /// Everything in one call (CloudWatch GetMetricData).
    fn fetch(&self, query: &MetricQuery<'_>) -> impl Future<Output = Result<MetricSnapshot>> + Send;
}
