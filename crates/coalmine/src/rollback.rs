//! The rollback use case: an alarm in ALARM zeroes the canary of every target it guards,
//! then tells the team, one message per target.

use futures::future::join_all;
use tracing::{error, info, warn};

use crate::config::TargetMapping;
use crate::error::{Error, Result};
use crate::event::{AlarmEvent, AlarmState};
use crate::notify;
use crate::ports::{AlarmSource, Notifier, Split, TrafficRouter};
use crate::resolve::{resolve_targets, ResolvedBy};
use crate::target::Target;

/// A read-then-write that loses a race re-reads; past this many losses in one
/// invocation, something keeps changing the alias and the invocation fails (retryable).
const MAX_CONFLICTS: usize = 5;

#[derive(Clone, Debug, PartialEq)]
pub enum ZeroOutcome {
    RolledBack { before: Split, after: Split },
    AlreadyZero { split: Split },
}

impl ZeroOutcome {
    pub fn event_name(&self) -> &'static str {
        match self {
            ZeroOutcome::RolledBack { .. } => "rolled_back",
            ZeroOutcome::AlreadyZero { .. } => "already_zero",
        }
    }
}

/// Zeroes the canary's traffic unless it already is zero. Every write is conditional on
/// the split just read; a conflict re-reads, so someone else's change is never
/// overwritten blindly (and a concurrent rollback shows up as `AlreadyZero`).
pub async fn zero_canary(router: &impl TrafficRouter, target: &Target) -> Result<ZeroOutcome> {
    let mut last_conflict = None;
    for _ in 0..MAX_CONFLICTS {
        let before = router.read(target).await?;
        if before.canary_is_zero() {
            return Ok(ZeroOutcome::AlreadyZero { split: before });
        }
        match router.write(target, &before, &before.with_canary_weight(0.0)).await {
            Ok(after) => return Ok(ZeroOutcome::RolledBack { before, after }),
            Err(conflict @ Error::Conflict { .. }) => {
                warn!(target = %target, error = %conflict, "traffic changed between read and write; reading again");
                last_conflict = Some(conflict);
            }
            Err(other) => return Err(other),
        }
    }
    Err(last_conflict.unwrap_or_else(|| Error::Conflict { target: target.clone(), detail: "no attempt made".into() }))
}

pub struct RollbackDeps<'a, R, N, A> {
    pub router: &'a R,
    pub notifier: &'a N,
    pub alarms: &'a A,
    pub mapping: &'a TargetMapping,
}

/// What one invocation did, target by target.
#[derive(Debug, Default)]
pub struct RollbackReport {
    pub ignored_state: Option<AlarmState>,
    pub resolved_by: Option<ResolvedBy>,
    pub outcomes: Vec<(Target, Result<ZeroOutcome>)>,
    pub notified: usize,
}

/// Handles one alarm event. Returns an error, after every target was attempted and every
/// message tried, when any rollback or notification failed: Lambda then retries the
/// event, and a retry finds zeroed targets `already_zero` and sends what was missed.
pub async fn handle_alarm<R, N, A>(event: &AlarmEvent, deps: &RollbackDeps<'_, R, N, A>) -> Result<RollbackReport>
where
    R: TrafficRouter,
    N: Notifier,
    A: AlarmSource,
{
    if event.state != AlarmState::Alarm {
        info!(alarm = %event.alarm_name, state = event.state.as_str(), decision = "ignored", "only ALARM rolls back");
        return Ok(RollbackReport { ignored_state: Some(event.state), ..Default::default() });
    }

    let resolution = resolve_targets(event, deps.mapping, deps.alarms).await;
    let mut report = RollbackReport { resolved_by: Some(resolution.by), ..Default::default() };

    if resolution.targets.is_empty() {
        warn!(alarm = %event.alarm_name, decision = "no_target", "the alarm guards no target coalmine knows");
        let sent = deps.notifier.publish(&notify::no_target(event)).await;
        report.notified += usize::from(sent.is_ok());
        return match (resolution.tag_lookup_failed, sent) {
            (Some(tag_error), _) => Err(retryable(format!("no target resolved because the alarm's tags could not be read: {tag_error}"))),
            (None, Err(notify_error)) => Err(retryable(format!("the no-target warning could not be sent: {notify_error}"))),
            (None, Ok(())) => Ok(report),
        };
    }

    // Each target's zeroing and then its message run on their own, so a slow or
    // failing notification never delays another target's rollback.
    let per_target = resolution.targets.iter().map(|target| async move {
        let outcome = zero_canary(deps.router, target).await;
        log_outcome(event, target, &outcome, resolution.by);
        let sent = match &outcome {
            Ok(done) => Some(deps.notifier.publish(&notify::outcome(event, target, done)).await),
            Err(_) => None,
        };
        if let Some(Err(e)) = &sent {
            error!(alarm = %event.alarm_name, target = %target, error = %e, "notification failed after the SDK's retries");
        }
        (target.clone(), outcome, sent)
    });
    let results = join_all(per_target).await;

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
    if let Some(tag_error) = resolution.tag_lookup_failed {
        retryable = true;
        problems.push(format!(
            "the alarm's {} tag could not be read, so targets came from the {}: {tag_error}",
            crate::resolve::TARGET_TAG,
            resolution.by.as_str()
        ));
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(Error::Incomplete { summary: problems.join("; "), retryable })
    }
}

fn retryable(summary: String) -> Error {
    Error::Incomplete { summary, retryable: true }
}

fn log_outcome(event: &AlarmEvent, target: &Target, outcome: &Result<ZeroOutcome>, by: ResolvedBy) {
    let alarm = event.alarm_name.as_str();
    match outcome {
        Ok(ZeroOutcome::RolledBack { before, after }) => info!(
            alarm, target = %target, resolved_by = by.as_str(), decision = "rolled_back",
            canary = before.canary.as_deref().unwrap_or(""), stable = %before.stable,
            weight_before = before.canary_weight, weight_after = after.canary_weight,
            "canary traffic set to zero"
        ),
        Ok(ZeroOutcome::AlreadyZero { split }) => info!(
            alarm, target = %target, resolved_by = by.as_str(), decision = "already_zero",
            stable = %split.stable, weight_before = split.canary_weight, weight_after = split.canary_weight,
            "canary already had no traffic; nothing written"
        ),
        Err(error) => error!(
            alarm, target = %target, resolved_by = by.as_str(), decision = "rollback_failed",
            error = %error, retryable = error.is_retryable(), "could not zero the canary"
        ),
    }
}

/// The rollback function's whole job on one payload: decode, act, and summarise as JSON
/// (the invocation's result, handy in tests and in Lambda's console).
pub async fn handle_payload<R, N, A>(payload: &serde_json::Value, deps: &RollbackDeps<'_, R, N, A>) -> Result<serde_json::Value>
where
    R: TrafficRouter,
    N: Notifier,
    A: AlarmSource,
{
    let event = AlarmEvent::decode(payload).inspect_err(|e| error!(error = %e, decision = "rejected", "event not understood; no traffic changed"))?;
    let report = handle_alarm(&event, deps).await?;
    Ok(report.summary(&event))
}

impl RollbackReport {
    pub fn summary(&self, event: &AlarmEvent) -> serde_json::Value {
        let targets: Vec<serde_json::Value> = self
            .outcomes
            .iter()
            .map(|(target, outcome)| match outcome {
                Ok(ZeroOutcome::RolledBack { before, after }) => serde_json::json!({
                    "target": target.to_string(), "outcome": "rolled_back",
                    "weight_before": before.canary_weight, "weight_after": after.canary_weight,
                }),
                Ok(ZeroOutcome::AlreadyZero { split }) => serde_json::json!({
                    "target": target.to_string(), "outcome": "already_zero",
                    "weight_before": split.canary_weight, "weight_after": split.canary_weight,
                }),
                Err(e) => serde_json::json!({"target": target.to_string(), "outcome": "failed", "error": e.to_string()}),
            })
            .collect();
        serde_json::json!({
            "alarm": event.alarm_name,
            "state": event.state.as_str(),
            "acted": self.ignored_state.is_none(),
            "resolved_by": self.resolved_by.map(ResolvedBy::as_str),
            "targets": targets,
            "notified": self.notified,
        })
    }
}
