//! The small traits the use cases depend on, one per role: traffic, endpoint
//! deployments, alarms, tripwires, metrics, notifications. Each has an SDK-backed
//! adapter in [`crate::aws`] and an in-memory one in [`crate::memory`]; a use case
//! names, by its bounds, only the roles it uses.

use std::future::Future;

use crate::domain::deployment::{ConfigVariants, DeploymentPlan, EndpointState};
use crate::domain::error::Result;
use crate::domain::event::{AlarmState, Confirmation};
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
}

/// SageMaker's own deployments (deployment guardrails, shadow variants): the endpoint
/// moves the traffic itself; coalmine starts, watches and stops it. Only guardrail
/// releases, and the rollback function's stop of one, need these.
pub trait EndpointDeployments: Send + Sync {
    /// The endpoint, its deployment in flight, and its release stamp.
    fn endpoint_state(&self, endpoint: &str) -> impl Future<Output = Result<EndpointState>> + Send;

    /// An endpoint config's production and shadow variant names.
    fn config_variants(&self, config: &str) -> impl Future<Output = Result<ConfigVariants>> + Send;

    /// `UpdateEndpoint` to `config`, with SageMaker's guardrails when `plan` is given.
    fn deploy(
        &self,
        endpoint: &str,
        config: &str,
        plan: Option<&DeploymentPlan>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Names, on the endpoint (a tag), the tripwire its guardrail deployment lists.
    fn mark_tripwire(&self, endpoint: &str, alarm: &str) -> impl Future<Output = Result<()>> + Send;

    /// Records the release stamp on the endpoint (its tag).
    fn stamp_endpoint(&self, endpoint: &str, stamp: &Stamp) -> impl Future<Output = Result<()>> + Send;
}

/// Message attributes a subscription's filter policy can match.
pub const ATTR_EVENT: &str = "event";
pub const ATTR_TARGET: &str = "target";
pub const ATTR_RELEASE: &str = "release";

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

    /// Whether the alarm `name` is in ALARM, or entered it around `entered_at` (RFC 3339,
    /// as a notification says): a notification is believed only when CloudWatch agrees.
    fn confirm(&self, name: &str, entered_at: &str) -> impl Future<Output = Result<Confirmation>> + Send;
}

/// coalmine's tripwires: alarms nothing trips but coalmine, listed among a guardrail
/// deployment's auto-rollback alarms, so that tripping one makes SageMaker roll the
/// deployment back (there is no API to stop one).
pub trait Tripwires: Send + Sync {
    /// Creates (or keeps) the tripwire `alarm` for `endpoint`.
    fn ensure_tripwire(&self, alarm: &str, endpoint: &str) -> impl Future<Output = Result<()>> + Send;

    /// Puts the tripwire into ALARM now, and keeps it there for its period.
    fn trip(&self, alarm: &str) -> impl Future<Output = Result<()>> + Send;
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
    /// A Lambda shadow: each side's requests, errors and latency are the shadow
    /// function's for this release (the candidate's answers, and the stable's asked
    /// again), not the alias's.
    pub shadow_of: Option<&'a str>,
    /// A cohort release that pins units: answer with their side too
    /// ([`crate::domain::metrics::MetricSnapshot::pinned`]), from its first look.
    pub pins: bool,
}

pub trait MetricSource: Send + Sync {
    /// Everything in one call (CloudWatch GetMetricData).
    fn fetch(&self, query: &MetricQuery<'_>) -> impl Future<Output = Result<MetricSnapshot>> + Send;

    /// The requests one side (`id`) of `target` served in each minute of
    /// `[start_epoch, end_epoch)`, oldest first, as (the minute's start, requests); a
    /// minute without a datapoint is absent. What a release can expect a stage to see.
    fn requests_per_minute(
        &self,
        target: &Target,
        id: &str,
        start_epoch: u64,
        end_epoch: u64,
    ) -> impl Future<Output = Result<Vec<(u64, f64)>>> + Send;
}

/// What a Lambda version answered, and how long it took (the adapter's clock, around
/// the call: both versions are timed the same way).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The answer, or the function's error (its `FunctionError` and payload).
    pub outcome: std::result::Result<serde_json::Value, String>,
    pub millis: f64,
}

/// Invokes one version of a function synchronously: the shadow function's only way to
/// reach a model. An `Err` is the call itself failing (throttled, denied, not found),
/// not the function's error.
pub trait VersionInvoker: Send + Sync {
    fn invoke(
        &self,
        function: &str,
        version: &str,
        payload: &serde_json::Value,
    ) -> impl Future<Output = Result<Answer>> + Send;
}

/// One metric datum: a count (`values` one number) or a distribution (its values).
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub metric: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub values: Vec<f64>,
    pub milliseconds: bool,
}

/// Publishes metrics (CloudWatch PutMetricData).
pub trait MetricSink: Send + Sync {
    fn put(&self, namespace: &str, data: &[Datum]) -> impl Future<Output = Result<()>> + Send;
}

/// A Lambda shadow's feed: the subscription filter that hands the stable's logged
/// requests to the shadow function. Only releases with a shadow open one; every ending
/// closes it.
pub trait ShadowFeeds: Send + Sync {
    /// Whether the feed can open, without opening it: the stable's log group exists, the
    /// shadow function is known, and the group has room for one more subscription.
    fn check_feed(&self, feed: &crate::domain::shadow::Feed) -> impl Future<Output = Result<String>> + Send;

    /// Subscribes the shadow function to the stable's log group; again is harmless.
    fn open_feed(&self, feed: &crate::domain::shadow::Feed) -> impl Future<Output = Result<()>> + Send;

    /// Removes the subscription; one already gone is not an error.
    fn close_feed(&self, feed: &crate::domain::shadow::Feed) -> impl Future<Output = Result<()>> + Send;

    /// A few disagreements the shadow function logged for this feed's release since
    /// `since_epoch`, newest last.
    fn examples(
        &self,
        feed: &crate::domain::shadow::Feed,
        since_epoch: u64,
    ) -> impl Future<Output = Result<Vec<crate::domain::shadow::Example>>> + Send;

    /// Whether a replay's source can be read, without reading it: what it is (an
    /// object's size; the stable's log group and a first request in the window), or why
    /// not. `began_at` ends a window of recent requests.
    fn check_replay(
        &self,
        source: &crate::domain::replay::Source,
        feed: &crate::domain::shadow::Feed,
        began_at: u64,
    ) -> impl Future<Output = Result<String>> + Send;

    /// Up to `max` replayable lines of the source from `cursor` (the stable's own, for
    /// recent requests, in the window ending at `began_at`).
    fn read_replay(
        &self,
        source: &crate::domain::replay::Source,
        feed: &crate::domain::shadow::Feed,
        cursor: &crate::domain::replay::Cursor,
        began_at: u64,
        max: usize,
    ) -> impl Future<Output = Result<crate::domain::replay::Slice>> + Send;

    /// Hands the batches to the shadow function, each in an asynchronous invocation: it
    /// asks the versions and publishes the counts, off the stepper's path.
    fn dispatch_replay(
        &self,
        batches: &[crate::domain::replay::ReplayBatch],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Where a cohort release's share and rules are published for the routers to read
/// (decision 0020): a store made for many frequent readers, never the rollback's path. A
/// router that cannot read it sends every unit to the stable.
pub trait CohortPublisher: Send + Sync {
    /// Makes `cohort` what the routers of `target` read from now on (within their poll).
    fn publish(&self, target: &Target, cohort: &coalmine_router::Cohort) -> impl Future<Output = Result<()>> + Send;
}

/// One release per target: the first tick of a release claims its target with a write
/// only one of two racing releases can win, before it checks or moves anything.
pub trait Claims: Send + Sync {
    /// Claims `key` ([`Target::claim_key`]) for `execution` (its ARN), unless another
    /// execution that is still running holds it: `None` when the claim is this
    /// execution's (again, on a retried tick), `Some(holder)` when refused.
    fn claim(&self, key: &str, execution: &str) -> impl Future<Output = Result<Option<String>>> + Send;
}

/// The alert webhook's shared token: what a caller of the function URL must present.
pub trait WebhookTokens: Send + Sync {
    /// Every token a caller may present now: the current one, and the one it replaced
    /// while their stated overlap lasts. With `read_since`, as read from the secret no
    /// earlier than then (after a mismatch: it may have been rotated since the copy kept);
    /// `None` when such a read is not allowed yet (one was made a moment before), so a
    /// mismatch cannot be told from a rotation just made.
    fn tokens(
        &self,
        read_since: Option<std::time::Instant>,
    ) -> impl Future<Output = Result<Option<Vec<String>>>> + Send;
}

/// Hands an authenticated alert to the rollback function, asynchronously: Lambda retries
/// it there, and its on-failure destination keeps it.
pub trait AlertHandoff: Send + Sync {
    fn hand_off(&self, alert: &serde_json::Value) -> impl Future<Output = Result<()>> + Send;
}
