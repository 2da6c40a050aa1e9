//! The release core: what every kind of release shares, and the dispatcher that runs a
//! tick of any of them. Nothing here knows a particular kind: a kind implements
//! [`ReleaseKind`], and the one switch in [`crate::release`] picks it.

pub mod document;
pub mod ending;
pub mod health;
pub mod limits;
pub mod operate;
pub mod preflight;
pub mod progress;

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use crate::domain::error::{Error, Result};
use crate::domain::stamp::{execution_id, Phase, Stamp};
use crate::ports::{
    AlarmSource, Claims, CohortPublisher, EndpointDeployments, MetricSource, Notifier, ShadowFeeds, TrafficRouter,
    Tripwires,
};
use crate::release::judge::Evidence;
use ending::SafetyOutcome;
use preflight::Check;
use progress::Progress;

/// The ports a tick may use, as one bundle. A kind asks it for the roles it calls
/// (the weight canary never deploys an endpoint, a guardrail release never writes an
/// alias's weights), so a test double plays one role and the rest stay real.
pub trait Ports: Sync {
    type Traffic: TrafficRouter;
    type Deployments: EndpointDeployments;
    type Feeds: ShadowFeeds;
    type Notifier: Notifier;
    type Alarms: AlarmSource;
    type Tripwires: Tripwires;
    type Metrics: MetricSource;
    type Cohorts: CohortPublisher;

    fn traffic(&self) -> &Self::Traffic;
    fn deployments(&self) -> &Self::Deployments;
    fn feeds(&self) -> &Self::Feeds;
    fn notifier(&self) -> &Self::Notifier;
    fn alarms(&self) -> &Self::Alarms;
    fn tripwires(&self) -> &Self::Tripwires;
    fn metrics(&self) -> &Self::Metrics;
    fn cohorts(&self) -> &Self::Cohorts;
}

/// The bundle the functions, the CLI and the tests build: one adapter per role, most
/// often one router playing four of them ([`StepDeps::new`]) and one alarm adapter
/// playing two; `with_traffic` swaps in a different alias writer, the rest unchanged.
pub struct StepDeps<'a, T, D, F, N, A, W, M, C> {
    pub traffic: &'a T,
    pub deployments: &'a D,
    pub feeds: &'a F,
    pub notifier: &'a N,
    pub alarms: &'a A,
    pub tripwires: &'a W,
    pub metrics: &'a M,
    pub cohorts: &'a C,
}

/// The bundle as one router and one alarm adapter make it.
pub type Adapters<'a, R, N, A, M> = StepDeps<'a, R, R, R, N, A, A, M, R>;

impl<'a, R, N, A, M> Adapters<'a, R, N, A, M> {
    pub fn new(router: &'a R, notifier: &'a N, alarms: &'a A, metrics: &'a M) -> Self {
        StepDeps {
            traffic: router,
            deployments: router,
            feeds: router,
            notifier,
            alarms,
            tripwires: alarms,
            metrics,
            cohorts: router,
        }
    }
}

impl<'a, T, D, F, N, A, W, M, C> StepDeps<'a, T, D, F, N, A, W, M, C> {
    /// The same bundle, its aliases' weights written by `traffic`.
    pub fn with_traffic<T2>(&self, traffic: &'a T2) -> StepDeps<'a, T2, D, F, N, A, W, M, C> {
        let StepDeps { deployments, feeds, notifier, alarms, tripwires, metrics, cohorts, .. } = *self;
        StepDeps { traffic, deployments, feeds, notifier, alarms, tripwires, metrics, cohorts }
    }
}

impl<T, D, F, N, A, W, M, C> Ports for StepDeps<'_, T, D, F, N, A, W, M, C>
where
    T: TrafficRouter,
    D: EndpointDeployments,
    F: ShadowFeeds,
    N: Notifier,
    A: AlarmSource,
    W: Tripwires,
    M: MetricSource,
    C: CohortPublisher,
{
    type Traffic = T;
    type Deployments = D;
    type Feeds = F;
    type Notifier = N;
    type Alarms = A;
    type Tripwires = W;
    type Metrics = M;
    type Cohorts = C;

    fn traffic(&self) -> &T {
        self.traffic
    }
    fn deployments(&self) -> &D {
        self.deployments
    }
    fn feeds(&self) -> &F {
        self.feeds
    }
    fn notifier(&self) -> &N {
        self.notifier
    }
    fn alarms(&self) -> &A {
        self.alarms
    }
    fn tripwires(&self) -> &W {
        self.tripwires
    }
    fn metrics(&self) -> &M {
        self.metrics
    }
    fn cohorts(&self) -> &C {
        self.cohorts
    }
}

/// One tick of one release: the release, the execution it runs in, what it runs on,
/// and when. Each kind's steps are methods on it.
pub struct Tick<'a, K, P> {
    pub release: &'a K,
    /// The execution's ARN, as the state machine passes it.
    pub execution: &'a str,
    pub deps: &'a P,
    pub now: u64,
}

/// A kind of release: how it is parsed, ticked, undone after a failure, and checked
/// before it starts. Each takes the whole bundle of ports and calls only its roles.
pub trait ReleaseKind: Serialize + Sized + Send + Sync {
    /// What the kind keeps in its progress beyond the common fields.
    type Extra: Serialize + DeserializeOwned + Default + Clone + Send + Sync;

    /// Strictly validated, by the rules of the kind.
    fn parse(value: &Value) -> Result<Self>;

    fn name(&self) -> &str;

    /// How many stages (or phases) its stamp counts.
    fn stages(&self) -> usize;

    /// The candidate, as the target's stamp records it: what a rollback takes traffic
    /// from, whatever an alarm names.
    fn candidate(&self) -> &str;

    /// What the release claims before its first move: one release per target.
    fn claim_key(&self) -> String;

    fn tick<P: Ports>(
        tick: &Tick<'_, Self, P>,
        progress: Option<Progress<Self::Extra>>,
    ) -> impl Future<Output = Result<Progress<Self::Extra>>> + Send;

    /// After a tick failed for good: undo whatever this execution moved (only that),
    /// tell the team, and say how the execution ends.
    fn safety_rollback<P: Ports>(
        &self,
        progress: Option<&Progress<Self::Extra>>,
        failure: &Value,
        execution: &str,
        deps: &P,
    ) -> impl Future<Output = Result<SafetyOutcome>> + Send;

    /// Every check its first tick makes, moving nothing (`coalmine validate --live`).
    fn preflight<P: Ports>(&self, deps: &P, now: u64) -> impl Future<Output = Vec<Check>> + Send;
}

/// The stepper's input as the state machine's task passes it:
/// `{"execution": "<execution ARN>", "state": <release, plus progress from the tick
/// before>}`. A state holding `failure` (the `Catch` puts the failed tick's error there)
/// runs the safety rollback instead.
pub struct Input<'a> {
    pub execution: &'a str,
    /// The release as given, without the stepper's own fields.
    pub release: Value,
    progress: Option<Value>,
    failure: Option<Value>,
}

impl<'a> Input<'a> {
    pub fn of(input: &'a Value) -> Result<Input<'a>> {
        let (Some(execution), Some(state)) =
            (input.get("execution").and_then(Value::as_str), input.get("state").and_then(Value::as_object))
        else {
            return Err(Error::InvalidRelease(
                "the stepper expects {\"execution\": <execution ARN>, \"state\": <release>}, as the release state \
                 machine passes it; start a release with StartExecution, not by invoking the stepper"
                    .into(),
            ));
        };
        let mut release = state.clone();
        let failure = release.remove("failure");
        let progress = release.remove("progress").filter(|p| !p.is_null());
        Ok(Input { execution, release: Value::Object(release), progress, failure })
    }
}

/// One tick of a release of kind `K`, or its safety rollback; the output is the next
/// state (or the safety step's ending).
pub async fn run<K: ReleaseKind>(input: Input<'_>, deps: &impl Ports, claims: &impl Claims, now: u64) -> Result<Value> {
    let release = K::parse(&input.release);
    let progress = match input.progress {
        None => Ok(None),
        Some(p) => serde_json::from_value::<Progress<K::Extra>>(p).map(Some).map_err(|e| {
            Error::InvalidRelease(format!("progress: {e}; it is the stepper's own output, do not edit it"))
        }),
    };
    // Each kind's future is boxed: inline, the kinds' state machines made the stepper's
    // future too deep for rustc's layout query (and large on the stack).
    if let Some(failure) = input.failure {
        let outcome = match release {
            // It never parsed, so no tick of it ever ran.
            Err(e) => SafetyOutcome::invalid(&e.to_string()),
            // Neither needs the progress: the target's stamp says what is this
            // execution's to undo, even when what failed was reading it.
            Ok(release) => {
                let progress = progress.ok().flatten();
                Box::pin(release.safety_rollback(progress.as_ref(), &failure, input.execution, deps)).await?
            }
        };
        return to_json(&outcome);
    }
    let (release, progress) = (release?, progress?);
    if progress.is_none() {
        claim(&release, input.execution, claims).await?;
    }
    let tick = Tick { release: &release, execution: input.execution, deps, now };
    let progress = Box::pin(K::tick(&tick, progress)).await?;
    let mut output = to_json(&release)?;
    output["progress"] = to_json(&progress)?;
    Ok(output)
}

/// A release's first tick (and any retry of it) claims its target before it checks or
/// moves anything; a second release on the same target is refused, having touched nothing.
async fn claim(release: &impl ReleaseKind, execution: &str, claims: &impl Claims) -> Result<()> {
    let key = release.claim_key();
    match claims.claim(&key, execution).await? {
        None => Ok(()),
        Some(holder) => Err(Error::Refused(format!(
            "another release is in flight on {key} (execution {}); one release at a time moves a target: wait for \
             it to end, or end it with coalmine abort",
            execution_id(&holder)
        ))),
    }
}

fn to_json(value: &impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::InvalidRelease(e.to_string()))
}

impl<K: ReleaseKind, P> Tick<'_, K, P> {
    /// The stamp this execution writes while at `stage` (0-based) and the traffic is
    /// live; an operator's hold stays, a request it has carried out goes.
    pub fn live_stamp(&self, stable: &str, stage: usize, hold: Option<String>) -> Stamp {
        Stamp {
            execution: execution_id(self.execution).to_owned(),
            stable: stable.to_owned(),
            canary: Some(self.release.candidate().to_owned()),
            phase: Phase::Live,
            stage: Some((stage + 1, self.release.stages())),
            release: Some(self.release.name().to_owned()),
            hold,
            request: None,
        }
    }

    /// One JSON line per decision, with the evidence as an object (see
    /// [`crate::logging`]).
    pub fn log_decision<X>(&self, target: &str, progress: &Progress<X>, evidence: Option<&Evidence>) {
        let evidence = evidence.and_then(|e| serde_json::to_string(e).ok());
        info!(
            release = self.release.name(),
            target,
            decision = progress.status.as_str(),
            stage = progress.stage,
            weight = progress.weight,
            wait_seconds = progress.wait_seconds,
            rolled_back_by = progress.rolled_back_by.as_ref().map(|by| by.as_str()),
            evidence = evidence.as_deref(),
            "{}",
            progress.reason
        );
    }
}

/// A message that did not go out fails the tick, so the state machine's retry sends it.
pub fn unsent(release: &str, what: &str, error: Error) -> Error {
    Error::Incomplete { summary: format!("release {release}: {what} was not sent: {error}"), retryable: true }
}
