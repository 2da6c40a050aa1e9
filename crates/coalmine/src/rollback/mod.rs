//! The rollback use case: an alarm in ALARM zeroes the canary of every target it guards,
//! then tells the team, one message per target.

pub mod notify;
pub mod resolve;
pub mod webhook;
mod zero;

pub use zero::{record_rollback, zero_canary, Owner, Refusal, ZeroOutcome};

use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};

use futures::future::{join_all, maybe_done, select, Either, MaybeDone};
use tracing::{error, info, warn};

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result};
use crate::domain::event::{AlarmEvent, AlarmState, Confirmation};
use crate::domain::mapping::TargetMapping;
use crate::domain::split::Split;
use crate::domain::target::Target;
use crate::ports::{AlarmSource, EndpointDeployments, Notifier, TrafficRouter, Tripwires};
use crate::rollback::resolve::{fallback_targets, in_scope, resolve, tag_targets, Resolution, ResolvedBy};

/// The ports a rollback uses, by role: most often one router writes the aliases'
/// weights and stops SageMaker's deployments ([`RollbackDeps::new`]); a test double for
/// one role is swapped in with `with_traffic`.
pub struct RollbackDeps<'a, T, D, N, A> {
    pub traffic: &'a T,
    pub deployments: &'a D,
    pub notifier: &'a N,
    pub alarms: &'a A,
    pub mapping: &'a TargetMapping,
}

impl<'a, R, N, A> RollbackDeps<'a, R, R, N, A> {
    pub fn new(router: &'a R, notifier: &'a N, alarms: &'a A, mapping: &'a TargetMapping) -> Self {
        RollbackDeps { traffic: router, deployments: router, notifier, alarms, mapping }
    }
}

impl<'a, T, D, N, A> RollbackDeps<'a, T, D, N, A> {
    /// The same ports, the aliases' weights written by `traffic`.
    pub fn with_traffic<T2>(&self, traffic: &'a T2) -> RollbackDeps<'a, T2, D, N, A> {
        let RollbackDeps { deployments, notifier, alarms, mapping, .. } = *self;
        RollbackDeps { traffic, deployments, notifier, alarms, mapping }
    }
}

/// What one invocation did, target by target.
#[derive(Debug, Default)]
pub struct RollbackReport {
    pub ignored_state: Option<AlarmState>,
    /// The event was coalmine's own tripwire: nothing to zero, nothing to announce.
    pub tripwire: bool,
    pub resolved_by: Option<ResolvedBy>,
    /// The notification came by SNS or an alarm action and CloudWatch did not bear it out.
    pub unconfirmed: Option<Confirmation>,
    pub outcomes: Vec<(Target, Result<ZeroOutcome>)>,
    pub notified: usize,
}

/// Handles one alarm event. Returns an error, after every target was attempted and every
/// message tried, when any rollback or notification failed: Lambda then retries the
/// event, and a retry finds zeroed targets `already_zero` and sends what was missed.
pub async fn handle_alarm<T, D, N, A>(event: &AlarmEvent, deps: &RollbackDeps<'_, T, D, N, A>) -> Result<RollbackReport>
where
    T: TrafficRouter,
    D: EndpointDeployments,
    N: Notifier,
    A: AlarmSource + Tripwires,
{
    if event.state != AlarmState::Alarm {
        info!(alarm = %event.alarm_name, state = event.state.as_str(), decision = "ignored", "only ALARM rolls back");
        return Ok(RollbackReport { ignored_state: Some(event.state), ..Default::default() });
    }
    if event.is_tripwire() {
        info!(
            alarm = %event.alarm_name, decision = "tripwire",
            "coalmine tripped this alarm to stop a guardrail deployment; SageMaker rolls it back"
        );
        return Ok(RollbackReport { tripwire: true, ..Default::default() });
    }

    // The tag, when there is one, usually names the very targets the mapping or the
    // dimensions name, so those are read while the tag lookup (and, for a notification
    // anyone could have written, its confirmation) is in flight: a round trip fewer
    // before traffic moves. The lookup never waits for these reads, and a resolved
    // target waits only for its own, so a slow read the tag overrules holds nothing up;
    // it is dropped unused, and a failed read is simply made again. (A SageMaker pair the
    // tag names with its stable variant takes the read of its canary variant, if that read
    // found the same stable.)
    let fallback = fallback_targets(event, deps.mapping);
    let early_targets = fallback.targets.clone();
    let mut early_reads: HashMap<Target, EarlyRead<'_>> = early_targets
        .iter()
        .map(|target| (target.clone(), maybe_done(Box::pin(deps.traffic.read(target)) as BoxedRead<'_>)))
        .collect();
    let (tag, confirmation) = {
        let confirm = async {
            match event.delivery.needs_confirmation() {
                true => Some(deps.alarms.confirm(&event.alarm_name, &event.state_time).await),
                false => None,
            }
        };
        let lookup = pin!(futures::future::join(tag_targets(event, deps.alarms), confirm));
        match select(lookup, join_all(early_reads.values_mut())).await {
            Either::Left((found, _unfinished_reads)) => found,
            Either::Right((_all_read, lookup)) => lookup.await,
        }
    };
    match confirmation {
        Some(Err(e)) => {
            return Err(retryable(format!(
                "alarm {} came by {} and could not be confirmed with CloudWatch, so nothing was moved: {e}",
                event.alarm_name,
                event.delivery.as_str()
            )))
        }
        Some(Ok(found)) if !found.is_real() => return unconfirmed(event, deps.notifier, found).await,
        _ => {}
    }
    let resolution = resolve(tag, fallback)?;
    if resolution.targets.is_empty() {
        return guards_nothing(event, deps.notifier, resolution).await;
    }
    let (targets, out_of_scope) = in_scope(event, resolution.targets.clone());
    let refused_scope = async {
        if out_of_scope.is_empty() {
            return None;
        }
        warn!(
            alarm = %event.alarm_name, decision = "out_of_scope",
            targets = ?out_of_scope.iter().map(Target::to_string).collect::<Vec<_>>(),
            "an Azure alert may act only on the endpoint it was raised on; nothing moved there"
        );
        Some(deps.notifier.publish(&notify::out_of_scope(event, &out_of_scope)).await)
    };

    // Each target's zeroing and then its message run on their own, so a slow or
    // failing notification never delays another target's rollback.
    let per_target: Vec<_> = targets
        .iter()
        .map(|target| {
            let early_read = early_reads.remove(target).or_else(|| early_reads.remove(&target.as_dimensions_name_it()));
            roll_back_target(event, deps, target, resolution.by, early_read)
        })
        .collect();
    drop(early_reads); // the reads no target claimed: cancelled, not awaited
    let (results, refused_sent) = futures::future::join(join_all(per_target), refused_scope).await;
    report(resolution, results, refused_sent)
}

/// A notification CloudWatch does not bear out: nothing moves, and the team hears of it
/// (someone may be sending forged or stale alarms). A retry would find the same.
async fn unconfirmed(event: &AlarmEvent, notifier: &impl Notifier, found: Confirmation) -> Result<RollbackReport> {
    warn!(
        alarm = %event.alarm_name, delivery = event.delivery.as_str(), decision = "unconfirmed", cloudwatch = ?found,
        "CloudWatch does not confirm this alarm notification; nothing moved"
    );
    notifier.publish(&notify::unconfirmed(event, found)).await.map_err(|e| {
        retryable(format!("alarm {} was not confirmed, and the team's warning was not sent: {e}", event.alarm_name))
    })?;
    Ok(RollbackReport { unconfirmed: Some(found), notified: 1, ..Default::default() })
}

/// No target: the team is warned; the invocation succeeds, unless the warning was not
/// sent.
async fn guards_nothing(
    event: &AlarmEvent,
    notifier: &impl Notifier,
    resolution: Resolution,
) -> Result<RollbackReport> {
    warn!(alarm = %event.alarm_name, decision = "no_target", "the alarm guards no target coalmine knows");
    let sent = notifier.publish(&notify::no_target(event)).await;
    let report =
        RollbackReport { resolved_by: Some(resolution.by), notified: usize::from(sent.is_ok()), ..Default::default() };
    match sent {
        Err(notify_error) => Err(retryable(format!("the no-target warning could not be sent: {notify_error}"))),
        Ok(()) => Ok(report),
    }
}

/// Every target's outcome and message, into the report, or into one failure naming
/// each problem (retryable when a retry could help).
fn report(
    resolution: Resolution,
    results: Vec<(Target, Result<ZeroOutcome>, Option<Result<()>>)>,
    refused_sent: Option<Result<()>>,
) -> Result<RollbackReport> {
    let mut report = RollbackReport { resolved_by: Some(resolution.by), ..Default::default() };
    let mut problems = Vec::new();
    // A target that does not exist will not appear on a retry; anything else might
    // succeed then, so the event is retried (and kept by the on-failure destination).
    let mut retryable = false;
    for (target, outcome, sent) in results {
        if let Err(e) = &outcome {
            retryable |= e.is_retryable();
            problems.push(format!("rollback of {target} failed: {e}"));
        }
        match sent {
            Some(Ok(())) => report.notified += 1,
            Some(Err(e)) => {
                retryable = true;
                problems.push(format!("message for {target} not sent: {e}"));
            }
            None => {}
        }
        report.outcomes.push((target, outcome));
    }
    match refused_sent {
        Some(Ok(())) => report.notified += 1,
        Some(Err(e)) => {
            retryable = true;
            problems.push(format!("the warning about targets outside the alert's endpoint was not sent: {e}"));
        }
        None => {}
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(Error::Incomplete { summary: problems.join("; "), retryable })
    }
}

type BoxedRead<'a> = Pin<Box<dyn Future<Output = Result<Split>> + Send + 'a>>;
/// A read started before the targets were known, finished or still in flight.
type EarlyRead<'a> = MaybeDone<BoxedRead<'a>>;

async fn roll_back_target(
    event: &AlarmEvent,
    deps: &RollbackDeps<'_, impl TrafficRouter, impl EndpointDeployments, impl Notifier, impl AlarmSource + Tripwires>,
    target: &Target,
    resolved_by: ResolvedBy,
    early_read: Option<EarlyRead<'_>>,
) -> (Target, Result<ZeroOutcome>, Option<Result<()>>) {
    let first_read = match early_read {
        Some(mut read) => {
            (&mut read).await;
            Pin::new(&mut read).take_output().and_then(Result::ok).filter(|split| target.is_split_of(split))
        }
        None => None,
    };
    let by = RolledBackBy::Alarm(event.alarm_name.clone());
    let outcome = match zero_canary(deps.traffic, target, &by, Owner::Alarm, first_read).await {
        Ok(ZeroOutcome::AlreadyZero { split }) if split.canary.is_none() => {
            stop_guardrail(deps, target, split, &by).await
        }
        other => other,
    };
    log_outcome(event, target, &outcome, resolved_by);
    let message = match &outcome {
        Ok(done) => notify::outcome(event, target, done),
        Err(e) => notify::failed(event, target, e),
    };
    let sent = Some(deps.notifier.publish(&message).await);
    if let Some(Err(e)) = &sent {
        error!(
            alarm = %event.alarm_name, target = %target, decision = "notify_failed", error = %e,
            "the message was not sent after the SDK's retries; the invocation fails so Lambda sends it again"
        );
    }
    (target.clone(), outcome, sent)
}

/// A one-variant SageMaker endpoint has no weight to zero; if a coalmine guardrail
/// deployment is in flight on it, its tripwire stops it (whether or not this alarm is
/// among the deployment's auto-rollback alarms). Then the release's stamp records who
/// stopped it, so its execution ends naming the alarm: traffic first, the record second.
async fn stop_guardrail(
    deps: &RollbackDeps<'_, impl Send + Sync, impl EndpointDeployments, impl Notifier, impl Tripwires>,
    target: &Target,
    split: Split,
    by: &RolledBackBy,
) -> Result<ZeroOutcome> {
    let Some(endpoint) = target.deploying_endpoint() else { return Ok(ZeroOutcome::AlreadyZero { split }) };
    let state = deps.deployments.endpoint_state(endpoint).await?;
    let (Some(tripwire), Some(stamp)) = (state.stoppable_by(), state.stamp.as_ref()) else {
        return Ok(ZeroOutcome::AlreadyZero { split });
    };
    deps.alarms.trip(tripwire).await?;
    let stopped = stamp.rolled_back(by.clone());
    if let Err(e) = deps.deployments.stamp_endpoint(endpoint, &stopped).await {
        // The deployment is stopping, which is what mattered; its release says less.
        warn!(target = %target, error = %e, "tripwire tripped, but the release stamp was not updated");
    }
    Ok(ZeroOutcome::Tripped { split: Split { stamp: Some(stamp.clone()), ..split }, tripwire: tripwire.to_owned() })
}

fn retryable(summary: String) -> Error {
    Error::Incomplete { summary, retryable: true }
}

fn log_outcome(event: &AlarmEvent, target: &Target, outcome: &Result<ZeroOutcome>, by: ResolvedBy) {
    let alarm = event.alarm_name.as_str();
    let (delivery, resolved_by) = (event.delivery.as_str(), by.as_str());
    let Ok(done) = outcome else {
        if let Err(error) = outcome {
            error!(
                alarm, target = %target, resolved_by, delivery, decision = "rollback_failed",
                error = %error, retryable = error.is_retryable(), "could not zero the canary"
            );
        }
        return;
    };
    let (before, after) = (done.before(), done.after());
    let stamp = before.stamp.as_ref();
    info!(
        alarm, target = %target, resolved_by, delivery, decision = done.event_name(),
        release = stamp.and_then(|s| s.release.as_deref()), execution = stamp.map(|s| s.execution.as_str()),
        stable_before = %before.stable, stable_after = %after.stable, canary = before.canary.as_deref(),
        weight_before = before.canary_weight, weight_after = after.canary_weight,
        "{}",
        match done {
            ZeroOutcome::RolledBack { .. } => "canary traffic set to zero",
            ZeroOutcome::Tripped { .. } => "guardrail deployment stopped: tripwire tripped",
            ZeroOutcome::Refused { why: Refusal::NotTheRolesOfRecord, .. } => {
                "nothing moved: the sides named are not the release in flight's"
            }
            ZeroOutcome::Refused { why: Refusal::Promoted, .. } => "nothing moved: the release ended promoted",
            ZeroOutcome::Refused { why: Refusal::NoMajority, .. } => {
                "nothing moved: no release in flight, and the stable named does not serve the majority"
            }
            _ => "canary already had no traffic; nothing written",
        }
    );
}

/// The rollback function's job by hand, for an incident outside any release: `who`
/// takes `target`'s canary traffic away (putting back the stable a release in flight
/// replaced), for `why`, and the team is told. The stamp says who, so a release in
/// flight there ends rolled back at its next check.
pub async fn by_hand(
    router: &impl TrafficRouter,
    notifier: &impl Notifier,
    target: &Target,
    who: &str,
    why: &str,
) -> Result<ZeroOutcome> {
    let by = RolledBackBy::Operator { who: who.to_owned(), why: Some(why.to_owned()) };
    let outcome = zero_canary(router, target, &by, Owner::Operator, None).await?;
    if let ZeroOutcome::Refused { split, why } = &outcome {
        let (what, next) = notify::refusal(target, split, why, who);
        return Err(Error::Refused(format!("{what} {next}")));
    }
    info!(
        target = %target, decision = outcome.event_name(), operator = who, why,
        weight_before = outcome.before().canary_weight, weight_after = outcome.after().canary_weight,
        stable_before = %outcome.before().stable, stable_after = %outcome.after().stable, "rolled back by hand"
    );
    notifier.publish(&notify::by_hand(target, &outcome, &by)).await.map_err(|e| Error::Incomplete {
        summary: format!("{target} was handled, but the team's message was not sent: {e}"),
        retryable: true,
    })?;
    Ok(outcome)
}

/// The rollback function's whole job on one payload: decode, act on each alarm event it
/// holds (SNS may carry several), and summarise as JSON (the invocation's result, handy
/// in tests and in Lambda's console). Every event is handled before a failure is returned.
pub async fn handle_payload<T, D, N, A>(
    payload: &serde_json::Value,
    deps: &RollbackDeps<'_, T, D, N, A>,
) -> Result<serde_json::Value>
where
    T: TrafficRouter,
    D: EndpointDeployments,
    N: Notifier,
    A: AlarmSource + Tripwires,
{
    let events = AlarmEvent::decode(payload)
        .inspect_err(|e| error!(error = %e, decision = "rejected", "event not understood; no traffic changed"))?;
    let results = join_all(events.iter().map(|event| handle_alarm(event, deps))).await;
    let mut summaries = Vec::new();
    let mut problems = Vec::new();
    let mut retryable = false;
    for (event, result) in events.iter().zip(results) {
        match result {
            Ok(report) => summaries.push(report.summary(event)),
            Err(e) => {
                retryable |= e.is_retryable();
                problems.push(if events.len() > 1 {
                    format!("alarm {}: {e}", event.alarm_name)
                } else {
                    e.to_string()
                });
            }
        }
    }
    match (problems.is_empty(), summaries.len()) {
        (false, _) => Err(Error::Incomplete { summary: problems.join("; "), retryable }),
        (true, 1) => Ok(summaries.remove(0)),
        (true, _) => Ok(serde_json::json!({ "events": summaries })),
    }
}

impl RollbackReport {
    pub fn summary(&self, event: &AlarmEvent) -> serde_json::Value {
        let targets: Vec<serde_json::Value> = self
            .outcomes
            .iter()
            .map(|(target, outcome)| match outcome {
                Ok(done) => serde_json::json!({
                    "target": target.to_string(), "outcome": done.event_name(),
                    "weight_before": done.before().canary_weight, "weight_after": done.after().canary_weight,
                    "stable_before": done.before().stable, "stable_after": done.after().stable,
                }),
                Err(e) => {
                    serde_json::json!({"target": target.to_string(), "outcome": "failed", "error": e.to_string()})
                }
            })
            .collect();
        serde_json::json!({
            "alarm": event.alarm_name,
            "state": event.state.as_str(),
            "acted": self.ignored_state.is_none() && !self.tripwire && self.unconfirmed.is_none(),
            "confirmed": self.unconfirmed.is_none(),
            "tripwire": self.tripwire,
            "resolved_by": self.resolved_by.map(ResolvedBy::as_str),
            "targets": targets,
            "notified": self.notified,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::domain::event::tests::sample;
    use crate::domain::stamp::{Phase, Stamp};
    use crate::memory::{lambda_split, Alarms, Outbox, Router};
    use crate::rollback::zero::MAX_CONFLICTS;

    const ARN: &str = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:coalmine-ai-handler-canary-errors";

    fn handler() -> Target {
        Target::lambda("ai-handler", "production")
    }

    async fn run(
        event: &AlarmEvent,
        router: &Router,
        notifier: &Outbox,
        alarms: &(impl AlarmSource + Tripwires),
        mapping: &TargetMapping,
    ) -> Result<RollbackReport> {
        handle_alarm(event, &RollbackDeps::new(router, notifier, alarms, mapping)).await
    }

    #[tokio::test]
    async fn alarm_zeroes_the_canary_and_says_so() {
        // GIVEN a canary at 5% and an alarm whose dimensions name its alias
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let (notifier, alarms) = (Outbox::default(), Alarms::default());
        // WHEN the alarm fires
        let report = run(
            &sample("alarm-lambda-canary.eventbridge.json"),
            &router,
            &notifier,
            &alarms,
            &TargetMapping::default(),
        )
        .await
        .unwrap();
        // THEN one conditional write zeroed it, keeping the stable version, and one message went out
        assert_eq!(router.split(&handler()).canary_weight, 0.0);
        assert_eq!(router.split(&handler()).stable, "41");
        assert_eq!(router.write_count(), 1);
        assert_eq!(report.resolved_by, Some(ResolvedBy::Dimensions));
        assert_eq!(notifier.events(), vec![("rolled_back".into(), "lambda:ai-handler:production".into())]);
        let message = &notifier.sent.lock().unwrap()[0];
        assert!(message.subject.contains("rolled back") && message.subject.len() <= 100, "{}", message.subject);
        for expected in [
            "coalmine rolled back the canary of lambda:ai-handler:production on alarm coalmine-ai-handler-canary-errors",
            "Target:    lambda:ai-handler:production",
            "Before:    version 41 at 95%, canary version 42 at 5%",
            "After:     version 41 serves all traffic, no canary",
            "Alarm:     coalmine-ai-handler-canary-errors (ALARM since 2026-11-23T17:04:40.989+00:00)",
            "Reason:    Threshold Crossed",
            "Next:      No coalmine release owned this canary",
            "a release that gates on it will not start until it is OK",
        ] {
            assert!(message.body.contains(expected), "body lacks {expected:?}:\n{}", message.body);
        }
    }

    #[tokio::test]
    async fn coalmines_own_tripwire_is_not_a_canary_to_zero_nor_news() {
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let (notifier, alarms) = (Outbox::default(), Alarms::default());
        let mut event = sample("alarm-sagemaker-canary.eventbridge.json");
        event.alarm_name = "coalmine-tripwire-ai-model-endpoint".into();
        event.metrics[0].namespace = Some(crate::domain::deployment::TRIPWIRE_NAMESPACE.into());
        let report = run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();
        assert!(report.tripwire && report.outcomes.is_empty());
        assert_eq!((router.write_count(), notifier.sent.lock().unwrap().len()), (0, 0));
        assert_eq!(report.summary(&event)["acted"], false);
    }

    fn promoted_to(version: &str) -> Split {
        Split { revision: Some("rev-0".into()), ..Split::stable_only(version, None) }
    }

    /// The alias as a release in flight leaves it: its stamp names the release, and the
    /// version that was stable before it.
    fn stamped(split: Split, phase: Phase) -> Split {
        let stamp = Stamp {
            execution: "Release-Ab12:ai-handler-42".into(),
            stable: "41".into(),
            canary: Some("42".into()),
            phase,
            stage: Some((4, 4)),
            release: Some("ai-handler-42".into()),
            hold: None,
            request: None,
        };
        Split { stamp: Some(stamp), ..split }
    }

    #[tokio::test]
    async fn an_alarm_during_the_final_bake_puts_the_previous_stable_back_at_once() {
        // GIVEN a release that promoted version 42 and is still baking at 100%
        let router = Router::with([(handler(), stamped(promoted_to("42"), Phase::Live))]);
        let notifier = Outbox::default();
        // WHEN its alarm fires
        let event = sample("alarm-lambda-canary.eventbridge.json");
        run(&event, &router, &notifier, &Alarms::default(), &TargetMapping::default()).await.unwrap();
        // THEN version 41 serves again, in the same invocation, and the stamp says who did it
        let live = router.split(&handler());
        assert_eq!((live.stable.as_str(), live.canary_is_zero()), ("41", true));
        assert_eq!(
            live.stamp.unwrap().phase,
            Phase::RolledBack(RolledBackBy::Alarm("coalmine-ai-handler-canary-errors".into()))
        );
        let message = &notifier.sent.lock().unwrap()[0];
        assert_eq!(message.subject, "coalmine: ai-handler-42 on lambda:ai-handler:production rolled back (alarm...");
        for expected in [
            "coalmine rolled back release ai-handler-42 on alarm coalmine-ai-handler-canary-errors: version 42 had been promoted and served all traffic; version 41 serves again.",
            "Release:   ai-handler-42",
            "Stage:     4 of 4",
            "Before:    version 42 serves all traffic, no canary",
            "After:     version 41 serves all traffic, no canary",
            "Execution: https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/arn:aws:states:us-east-1:123456789012:execution:Release-Ab12:ai-handler-42",
            "Next:      The release's execution sees the rollback at its next check and ends rolled back.",
        ] {
            assert!(message.body.contains(expected), "body lacks {expected:?}:\n{}", message.body);
        }
        assert!(message.attributes.contains(&("release", "ai-handler-42".into())));
    }

    #[tokio::test]
    async fn after_the_release_ended_promoted_the_alarm_no_longer_reverts_it() {
        let router = Router::with([(handler(), stamped(promoted_to("42"), Phase::Promoted))]);
        let notifier = Outbox::default();
        let event = sample("alarm-lambda-canary.eventbridge.json");
        let report = run(&event, &router, &notifier, &Alarms::default(), &TargetMapping::default()).await.unwrap();
        assert!(matches!(report.outcomes[0].1, Ok(ZeroOutcome::AlreadyZero { .. })));
        assert_eq!((router.split(&handler()).stable.as_str(), router.write_count()), ("42", 0));
        let body = &notifier.sent.lock().unwrap()[0].body;
        assert!(body.contains("Its release had ended promoted"), "{body}");
        assert!(body.contains("ended promoted, so the alarm no longer reverts it"), "{body}");
    }

    #[tokio::test]
    async fn a_second_delivery_writes_nothing_and_reports_already_zero() {
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let (notifier, alarms) = (Outbox::default(), Alarms::default());
        let event = sample("alarm-lambda-canary.eventbridge.json");
        run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();
        run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();
        assert_eq!(router.write_count(), 1);
        let events: Vec<String> = notifier.events().into_iter().map(|(e, _)| e).collect();
        assert_eq!(events, ["rolled_back", "already_zero"]);
    }

    #[tokio::test]
    async fn only_alarm_acts() {
        for file in ["ok-lambda-canary.eventbridge.json", "insufficient-data-lambda-canary.eventbridge.json"] {
            let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
            let (notifier, alarms) = (Outbox::default(), Alarms::default());
            let report = run(&sample(file), &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();
            assert!(report.ignored_state.is_some(), "{file}");
            assert_eq!((*router.reads.lock().unwrap(), router.write_count()), (0, 0), "{file}");
            assert_eq!(*notifier.attempts.lock().unwrap() + *alarms.calls.lock().unwrap(), 0, "{file}");
        }
    }

    #[tokio::test]
    async fn an_alarm_guarding_nothing_known_warns_and_succeeds() {
        let router = Router::default();
        let (notifier, alarms) = (Outbox::default(), Alarms::default());
        let mut event = sample("alarm-lambda-canary.eventbridge.json");
        event.metrics.clear();
        let report = run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();
        assert_eq!(report.resolved_by, Some(ResolvedBy::Nothing));
        assert_eq!(notifier.events(), vec![("no_target".into(), String::new())]);
        assert!(notifier.sent.lock().unwrap()[0].body.contains("coalmine:target"));
        assert_eq!(*router.reads.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn tag_beats_mapping_beats_dimensions() {
        let tagged = Target::lambda("tagged", "live");
        let mapped = Target::lambda("mapped", "live");
        let router = Router::with([
            (handler(), lambda_split("1", "2", 0.1)),
            (tagged.clone(), lambda_split("1", "2", 0.1)),
            (mapped.clone(), lambda_split("1", "2", 0.1)),
        ]);
        let mapping = TargetMapping::parse(r#"{"coalmine-ai-handler-*": ["lambda:mapped:live"]}"#).unwrap();
        let event = sample("alarm-lambda-canary.eventbridge.json");

        let alarms = Alarms { tags: HashMap::from([(ARN.into(), "lambda:tagged:live".into())]), ..Default::default() };
        let report = run(&event, &router, &Outbox::default(), &alarms, &mapping).await.unwrap();
        assert_eq!((report.resolved_by, report.outcomes[0].0.clone()), (Some(ResolvedBy::Tag), tagged));

        let report = run(&event, &router, &Outbox::default(), &Alarms::default(), &mapping).await.unwrap();
        assert_eq!((report.resolved_by, report.outcomes[0].0.clone()), (Some(ResolvedBy::Mapping), mapped));

        let malformed = Alarms { tags: HashMap::from([(ARN.into(), "lambda:only-two".into())]), ..Default::default() };
        let report = run(&event, &router, &Outbox::default(), &malformed, &TargetMapping::default()).await.unwrap();
        assert_eq!((report.resolved_by, report.outcomes[0].0.clone()), (Some(ResolvedBy::Dimensions), handler()));
    }

    /// Answers the tag lookup only once the router has been read (or after a bounded
    /// number of polls), and remembers how many reads it saw: a lookup that ran before
    /// any read started sees none.
    struct TagAfterRead<'a> {
        router: &'a Router,
        tag: Option<String>,
        reads_seen: Mutex<Option<usize>>,
    }

    impl AlarmSource for TagAfterRead<'_> {
        async fn target_tag(&self, _alarm_arn: &str) -> Result<Option<String>> {
            for _ in 0..1_000 {
                if *self.router.reads.lock().unwrap() > 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            *self.reads_seen.lock().unwrap() = Some(*self.router.reads.lock().unwrap());
            Ok(self.tag.clone())
        }

        async fn states(&self, _names: &[String]) -> Result<Vec<(String, AlarmState)>> {
            unreachable!("the rollback never asks for alarm states")
        }

        async fn confirm(&self, _name: &str, _entered_at: &str) -> Result<Confirmation> {
            Ok(Confirmation::InAlarm)
        }
    }

    impl Tripwires for TagAfterRead<'_> {
        async fn ensure_tripwire(&self, _alarm: &str, _endpoint: &str) -> Result<()> {
            unreachable!("the rollback never creates alarms")
        }

        async fn trip(&self, _alarm: &str) -> Result<()> {
            unreachable!("a Lambda alias has no tripwire")
        }
    }

    #[tokio::test]
    async fn the_dimension_target_is_read_while_the_tag_lookup_runs_and_that_read_is_used() {
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let alarms = TagAfterRead { router: &router, tag: None, reads_seen: Mutex::new(None) };
        let notifier = Outbox::default();
        let event = sample("alarm-lambda-canary.eventbridge.json");

        let report = run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();

        assert_eq!(*alarms.reads_seen.lock().unwrap(), Some(1), "the read did not overlap the tag lookup");
        assert_eq!(report.resolved_by, Some(ResolvedBy::Dimensions));
        assert_eq!((*router.reads.lock().unwrap(), router.write_count()), (1, 1), "one read, one write in all");
        assert_eq!(router.split(&handler()).canary_weight, 0.0);
    }

    #[tokio::test]
    async fn a_target_the_tag_overrules_is_read_early_but_never_written() {
        let tagged = Target::lambda("tagged", "live");
        let router =
            Router::with([(handler(), lambda_split("41", "42", 0.05)), (tagged.clone(), lambda_split("7", "8", 0.25))]);
        let alarms =
            TagAfterRead { router: &router, tag: Some("lambda:tagged:live".into()), reads_seen: Mutex::new(None) };
        let notifier = Outbox::default();
        let event = sample("alarm-lambda-canary.eventbridge.json");

        let report = run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();

        assert_eq!(report.resolved_by, Some(ResolvedBy::Tag));
        assert_eq!(router.split(&handler()), lambda_split("41", "42", 0.05), "the dimension target was changed");
        assert_eq!(router.split(&tagged).canary_weight, 0.0);
        assert_eq!(*router.reads.lock().unwrap(), 2, "the tagged target needs a read of its own");
        assert_eq!(notifier.events(), vec![("rolled_back".into(), "lambda:tagged:live".into())]);
    }

    /// A SageMaker canary at 10%, with `stable` as its stable variant.
    fn sagemaker_split(stable: &str) -> Split {
        Split {
            stable: stable.into(),
            canary: Some("canary".into()),
            canary_weight: 0.1,
            others_weight: 0.0,
            mirror: 0.0,
            revision: None,
            stamp: None,
        }
    }

    /// The sample SageMaker alarm, tagged with `tag`, against an endpoint whose stable
    /// variant the dimensions' read finds to be `inferred_stable`: how many reads it takes.
    async fn sagemaker_reads(tag: &str, inferred_stable: &str) -> usize {
        let tagged: Target = tag.parse().unwrap();
        let router = Router::with([
            (tagged.as_dimensions_name_it(), sagemaker_split(inferred_stable)),
            (tagged.clone(), sagemaker_split("stable")),
        ]);
        let alarms = TagAfterRead { router: &router, tag: Some(tag.into()), reads_seen: Mutex::new(None) };
        let event = sample("alarm-sagemaker-canary.eventbridge.json");
        let report = run(&event, &router, &Outbox::default(), &alarms, &TargetMapping::default()).await.unwrap();
        assert_eq!(report.resolved_by, Some(ResolvedBy::Tag));
        assert_eq!(router.split(&tagged).canary_weight, 0.0);
        let reads = *router.reads.lock().unwrap();
        reads
    }

    #[tokio::test]
    async fn a_sagemaker_tag_naming_the_stable_variant_uses_the_read_of_the_canary_the_dimensions_name() {
        assert_eq!(sagemaker_reads("sagemaker:ai-model-endpoint:stable:canary", "stable").await, 1);
    }

    #[tokio::test]
    async fn that_read_is_not_used_when_it_found_another_stable_variant() {
        assert_eq!(sagemaker_reads("sagemaker:ai-model-endpoint:stable:canary", "shadow").await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_read_of_a_target_the_tag_overrules_holds_nothing_up() {
        let tagged = Target::lambda("tagged", "live");
        let router = Router::with([(tagged.clone(), lambda_split("7", "8", 0.25))]);
        router.hanging_reads.lock().unwrap().push(handler());
        let alarms = Alarms { tags: HashMap::from([(ARN.into(), "lambda:tagged:live".into())]), ..Default::default() };
        let notifier = Outbox::default();
        let event = sample("alarm-lambda-canary.eventbridge.json");

        let handled = tokio::time::timeout(
            Duration::from_secs(3600),
            run(&event, &router, &notifier, &alarms, &TargetMapping::default()),
        )
        .await;

        let report = handled.expect("the overruled target's read held the rollback up").unwrap();
        assert_eq!(report.resolved_by, Some(ResolvedBy::Tag));
        assert_eq!(router.split(&tagged).canary_weight, 0.0);
        assert_eq!(notifier.events(), vec![("rolled_back".into(), "lambda:tagged:live".into())]);
    }

    #[tokio::test]
    async fn every_target_is_attempted_when_one_fails_and_the_invocation_fails_retryable() {
        let (a, b, c) = (Target::lambda("a", "live"), Target::lambda("b", "live"), Target::lambda("c", "live"));
        let router = Router::with([a.clone(), b.clone(), c.clone()].map(|t| (t, lambda_split("1", "2", 0.25))));
        router.write_failures.lock().unwrap().insert(
            b.clone(),
            VecDeque::from([Error::Service { operation: "lambda:UpdateAlias", detail: "503".into(), retryable: true }]),
        );
        let alarms = Alarms {
            tags: HashMap::from([(ARN.into(), "lambda:a:live lambda:b:live lambda:c:live".into())]),
            ..Default::default()
        };
        let notifier = Outbox::default();
        let event = sample("alarm-lambda-canary.eventbridge.json");

        let err = run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("rollback of lambda:b:live failed"), "{err}");
        assert_eq!(router.split(&a).canary_weight, 0.0);
        assert_eq!(router.split(&b).canary_weight, 0.25);
        assert_eq!(router.split(&c).canary_weight, 0.0);
        let mut told = notifier.events();
        told.sort();
        assert_eq!(
            told,
            vec![
                ("rollback_failed".into(), "lambda:b:live".into()),
                ("rolled_back".into(), "lambda:a:live".into()),
                ("rolled_back".into(), "lambda:c:live".into())
            ],
            "the target that could not be rolled back is said, too"
        );
        let failed = notifier.sent.lock().unwrap().iter().find(|m| m.subject.contains("FAILED")).cloned().unwrap();
        assert!(failed.body.contains("Lambda retries the event twice"), "{}", failed.body);

        // The retry Lambda makes finishes the job and re-tells the others as already_zero.
        run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();
        assert_eq!(router.split(&b).canary_weight, 0.0);
        let mut retry_events = notifier.events()[3..].to_vec();
        retry_events.sort();
        assert_eq!(
            retry_events,
            vec![
                ("already_zero".into(), "lambda:a:live".into()),
                ("already_zero".into(), "lambda:c:live".into()),
                ("rolled_back".into(), "lambda:b:live".into())
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_alias_fails_the_invocation_as_non_retryable() {
        let router = Router::default();
        let err = run(
            &sample("alarm-lambda-canary.eventbridge.json"),
            &router,
            &Outbox::default(),
            &Alarms::default(),
            &TargetMapping::default(),
        )
        .await
        .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("not found"), "{err}");
        // The read made beside the tag lookup failed, so it was made once more, not trusted.
        assert_eq!((*router.reads.lock().unwrap(), router.write_count()), (2, 0));
    }

    #[tokio::test]
    async fn a_rollback_that_fails_for_good_tells_the_team_before_the_invocation_fails() {
        let (router, notifier) = (Router::default(), Outbox::default());
        let event = sample("alarm-lambda-canary.eventbridge.json");
        let err = run(&event, &router, &notifier, &Alarms::default(), &TargetMapping::default()).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        let sent = notifier.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].subject.starts_with("coalmine: rollback of lambda:ai-handler:production FAILED"),
            "{}",
            sent[0].subject
        );
        assert!(sent[0].body.contains("A retry cannot help"), "{}", sent[0].body);
    }

    #[tokio::test]
    async fn a_notification_failure_never_undoes_the_rollback_and_the_retry_sends_it() {
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let notifier = Outbox::failing(1);
        let event = sample("alarm-lambda-canary.eventbridge.json");
        let err = run(&event, &router, &notifier, &Alarms::default(), &TargetMapping::default()).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("not sent"), "{err}");
        assert_eq!(router.split(&handler()).canary_weight, 0.0, "the rollback stands");

        run(&event, &router, &notifier, &Alarms::default(), &TargetMapping::default()).await.unwrap();
        assert_eq!(notifier.events(), vec![("already_zero".into(), "lambda:ai-handler:production".into())]);
        assert_eq!(router.write_count(), 1);
    }

    #[tokio::test]
    async fn a_change_between_read_and_write_is_read_again_not_overwritten() {
        // Someone raises the canary to 10% after our read: our write is refused, we re-read.
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        router.interleaved.lock().unwrap().insert(handler(), VecDeque::from([lambda_split("41", "42", 0.10)]));
        let report = run(
            &sample("alarm-lambda-canary.eventbridge.json"),
            &router,
            &Outbox::default(),
            &Alarms::default(),
            &TargetMapping::default(),
        )
        .await
        .unwrap();
        match &report.outcomes[0].1 {
            Ok(ZeroOutcome::RolledBack { before, .. }) => assert_eq!(before.canary_weight, 0.10),
            other => panic!("expected rolled_back from 10%, got {other:?}"),
        }
        assert_eq!(*router.reads.lock().unwrap(), 2);

        // A concurrent rollback lands first: we find zero and write nothing.
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        router.interleaved.lock().unwrap().insert(handler(), VecDeque::from([lambda_split("41", "42", 0.0)]));
        let notifier = Outbox::default();
        run(
            &sample("alarm-lambda-canary.eventbridge.json"),
            &router,
            &notifier,
            &Alarms::default(),
            &TargetMapping::default(),
        )
        .await
        .unwrap();
        assert_eq!(router.write_count(), 0);
        assert_eq!(notifier.events()[0].0, "already_zero");
    }

    #[tokio::test]
    async fn a_failed_rollback_is_logged_once_with_its_alarm_and_returned_on_one_line() {
        let capture = crate::logging::Capture::start();
        let router = Router::default();
        let event = sample("alarm-lambda-canary.eventbridge.json");
        let err =
            run(&event, &router, &Outbox::default(), &Alarms::default(), &TargetMapping::default()).await.unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
        let errors: Vec<_> = capture.lines().into_iter().filter(|l| l["level"] == "ERROR").collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0]["alarm"].as_str(), errors[0]["decision"].as_str(), errors[0]["target"].as_str()),
            (Some("coalmine-ai-handler-canary-errors"), Some("rollback_failed"), Some("lambda:ai-handler:production"))
        );
    }

    #[tokio::test]
    async fn endless_conflicts_give_up_retryable_after_a_bound() {
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let conflict = || Error::Conflict { target: handler(), detail: "412".into() };
        router.write_failures.lock().unwrap().insert(handler(), (0..MAX_CONFLICTS).map(|_| conflict()).collect());
        let by = RolledBackBy::Alarm("a".into());
        let err = zero_canary(&router, &handler(), &by, Owner::Alarm, None).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }) && err.is_retryable());
        assert_eq!(*router.reads.lock().unwrap(), MAX_CONFLICTS);
    }

    #[tokio::test]
    async fn an_unreadable_tag_moves_nothing_and_fails_for_a_retry_never_falling_back_to_dimensions() {
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let alarms = Alarms { fail: true, ..Default::default() };
        let err = run(
            &sample("alarm-lambda-canary.eventbridge.json"),
            &router,
            &Outbox::default(),
            &alarms,
            &TargetMapping::default(),
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("tag could not be read"), "{err}");
        assert_eq!(router.write_count(), 0, "the dimensions the tag exists to overrule moved nothing");
        assert_eq!(router.split(&handler()).canary_weight, 0.05);
    }

    #[tokio::test]
    async fn a_notification_by_sns_or_alarm_action_moves_traffic_only_when_cloudwatch_bears_it_out() {
        let name = "coalmine-ai-handler-canary-errors";
        for file in ["alarm-lambda-canary.sns.json", "alarm-lambda-canary.alarm-action.json"] {
            let event = sample(file);
            // No such alarm (forged), or one that is OK and never fired then: nothing moves.
            for alarms in [Alarms::default(), Alarms::with([(name.to_owned(), AlarmState::Ok)])] {
                let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
                let notifier = Outbox::default();
                let report = run(&event, &router, &notifier, &alarms, &TargetMapping::default()).await.unwrap();
                assert!(report.unconfirmed.is_some() && report.outcomes.is_empty(), "{file}");
                assert_eq!(router.write_count(), 0, "{file}");
                assert_eq!(notifier.events(), vec![("unconfirmed".into(), String::new())], "{file}");
                assert_eq!(report.summary(&event)["acted"], false);
            }
            // In ALARM, or fired then and recovered since (a late delivery): believed.
            let fired_then = Alarms::with([(name.to_owned(), AlarmState::Ok)]);
            fired_then.fired_before.lock().unwrap().push(name.to_owned());
            for alarms in [Alarms::with([(name.to_owned(), AlarmState::Alarm)]), fired_then] {
                let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
                let report =
                    run(&event, &router, &Outbox::default(), &alarms, &TargetMapping::default()).await.unwrap();
                assert_eq!(report.outcomes[0].1.as_ref().unwrap().event_name(), "rolled_back", "{file}");
            }
            // CloudWatch unreachable: nothing moves, and Lambda retries.
            let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
            let down = Alarms { fail: true, ..Default::default() };
            let err = run(&event, &router, &Outbox::default(), &down, &TargetMapping::default()).await.unwrap_err();
            assert!(err.is_retryable() && router.write_count() == 0, "{err}");
        }
        // EventBridge delivers only what CloudWatch emitted: it is not asked again.
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let event = sample("alarm-lambda-canary.eventbridge.json");
        let report = run(&event, &router, &Outbox::default(), &Alarms::default(), &TargetMapping::default()).await;
        assert_eq!(report.unwrap().outcomes.len(), 1);
    }

    #[tokio::test]
    async fn an_azure_alert_moves_nothing_but_its_own_endpoint_whatever_it_names() {
        let mut alert = sample("azure/alert-azureml-canary.common-schema.json");
        alert.declared_targets = Some("sagemaker:ai-model-endpoint:spare:prod lambda:ai-handler:production".into());
        let sagemaker: Target = "sagemaker:ai-model-endpoint:spare:prod".parse().unwrap();
        let serving = Split { canary_weight: 0.9, ..lambda_split("spare", "prod", 0.9) };
        let router = Router::with([(sagemaker.clone(), serving), (handler(), lambda_split("41", "42", 0.05))]);
        let notifier = Outbox::default();
        let report = run(&alert, &router, &notifier, &Alarms::default(), &TargetMapping::default()).await.unwrap();
        assert!(report.outcomes.is_empty());
        assert_eq!(router.write_count(), 0);
        assert_eq!(router.split(&sagemaker).canary_weight, 0.9);
        assert_eq!(notifier.events()[0].0, "out_of_scope");
        let message = &notifier.sent.lock().unwrap()[0];
        assert!(message.body.contains("which it may not act on"), "{}", message.body);
    }

    #[tokio::test]
    async fn the_payload_handler_rejects_bad_input_without_touching_traffic() {
        let router = Router::with([(handler(), lambda_split("41", "42", 0.05))]);
        let outbox = Outbox::default();
        let alarms = Alarms::default();
        let mapping = TargetMapping::default();
        let deps = RollbackDeps::new(&router, &outbox, &alarms, &mapping);
        let err = handle_payload(&serde_json::json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {}}), &deps)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadEvent(_)) && !err.is_retryable());
        assert_eq!((*router.reads.lock().unwrap(), router.write_count()), (0, 0));
    }

    #[tokio::test]
    async fn an_azure_alert_zeroes_the_canary_deployment_and_the_team_is_told() {
        let alert = crate::domain::event::tests::sample_json("azure/alert-azureml-canary.common-schema.json");
        let endpoint: Target =
            "azureml:00000000-1111-2222-3333-444444444444:ml-prod:ml-workspace:chat-endpoint:green".parse().unwrap();
        let serving = Split {
            stable: "blue".into(),
            canary: Some("green".into()),
            canary_weight: 0.25,
            others_weight: 0.0,
            mirror: 0.0,
            revision: Some("etag-0".into()),
            stamp: None,
        };
        let router = Router::with([(endpoint.clone(), serving)]);
        let notifier = Outbox::default();
        let alarms = Alarms::default();
        let mapping = TargetMapping::default();
        let deps = RollbackDeps::new(&router, &notifier, &alarms, &mapping);
        let summary = handle_payload(&alert, &deps).await.unwrap();
        assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{summary}");
        let after = router.split(&endpoint);
        assert_eq!((after.stable.as_str(), after.canary_weight), ("blue", 0.0));
        assert_eq!(notifier.events(), vec![("rolled_back".into(), endpoint.to_string())]);
        let body = notifier.sent.lock().unwrap()[0].body.clone();
        for expected in [
            "Before:    deployment blue at 75%, canary deployment green at 25%",
            "After:     deployment blue serves all traffic, no canary",
            "Alert:     coalmine-chat-green-5xx (Azure Monitor, fired 2026-11-30T09:14:26.4521807Z)",
            "Reason:    RequestsPerMinute Average GreaterThan 5 (value 12.4)",
            "Azure alert coalmine-chat-green-5xx stays fired until its condition resolves.",
        ] {
            assert!(body.contains(expected), "body lacks {expected:?}:\n{body}");
        }

        // Resolved: nothing moves.
        let resolved = crate::domain::event::tests::sample_json("azure/resolved-azureml-canary.common-schema.json");
        handle_payload(&resolved, &deps).await.unwrap();
        assert_eq!(router.write_count(), 1);
    }
}
