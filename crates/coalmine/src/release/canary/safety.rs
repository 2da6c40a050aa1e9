//! After a weight canary's tick failed for good: undo whatever this execution moved
//! (only that, and only ever lowering the canary), tell the team, and say how the
//! execution ends.

use crate::release::core::Ports;
use serde_json::Value;
use tracing::warn;

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result, INVALID_RELEASE};
use crate::domain::stamp::{Phase, Stamp};
use crate::ports::{CohortPublisher, Notifier, ShadowFeeds, TrafficRouter};
use crate::release::canary::notify::{self as canary_notify, Stopped};
use crate::release::canary::progress::Progress;
use crate::release::canary::spec::Release;
use crate::release::core::ending::{failure_cause, undo_reason, SafetyOutcome};
use crate::release::core::unsent;
use crate::rollback::{record_rollback, zero_canary, Owner, ZeroOutcome};
use crate::text::describe;

pub async fn safety_rollback(
    release: &Release,
    progress: Option<&Progress>,
    failure: &Value,
    execution: &str,
    deps: &impl Ports,
) -> Result<SafetyOutcome> {
    let error = failure.get("Error").and_then(Value::as_str).unwrap_or("unknown");
    let cause = failure_cause(failure);
    let target = &release.target;
    let live = match deps.traffic().read(target).await {
        Ok(live) => live,
        // Not there, or not ours to touch: this release cannot have moved it.
        Err(Error::NotFound { .. } | Error::AccessDenied { .. }) => return Ok(SafetyOutcome::invalid(&cause)),
        Err(other) => return Err(other),
    };
    let stamp = live.stamp_by(execution).cloned();
    let outcome = match stamp.as_ref().map(|s| &s.phase) {
        Some(Phase::Promoted) => {
            SafetyOutcome::promoted(&format!("Promoted; the tick after the promotion failed ({cause})"))
        }
        Some(Phase::RolledBack(by)) => {
            SafetyOutcome::rolled_back(format!("Rolled back by {}; then a tick failed ({cause})", by.describe()))
        }
        Some(Phase::Live) => {
            let mut done =
                zero_canary(deps.traffic(), target, &RolledBackBy::Safety, Owner::Execution(execution), Some(live))
                    .await?;
            // A shadow has no traffic to take away; its stamp still says the release is over.
            if let ZeroOutcome::AlreadyZero { split } = &done {
                if stamp.as_ref().is_some_and(Stamp::in_shadow) {
                    done = record_rollback(deps.traffic(), target, split.clone(), &RolledBackBy::Safety).await?;
                }
            }
            let stage = progress.map_or_else(
                || stamp.as_ref().and_then(|s| s.stage).map_or(0, |(at, _)| at.saturating_sub(1)),
                |p| p.stage,
            );
            let why = undo_reason(failure);
            let changed = matches!(done, ZeroOutcome::RolledBack { .. });
            if changed {
                let message = canary_notify::rolled_back(&Stopped {
                    release,
                    execution,
                    by: &RolledBackBy::Safety,
                    why: &why,
                    evidence: None,
                    stage,
                    before: done.before(),
                    after: done.after(),
                    dry_run: progress.and_then(|p| p.dry_run.as_ref()),
                    in_shadow: stamp.as_ref().is_some_and(Stamp::in_shadow),
                    replayed: false,
                    examples: &[],
                });
                deps.notifier()
                    .publish(&message)
                    .await
                    .map_err(|e| unsent(&release.release, "the rollback's message", e))?;
            }
            let what = if changed {
                format!("coalmine set the traffic back: {}", describe(target, done.after()))
            } else {
                "Its traffic had already been taken away".to_owned()
            };
            SafetyOutcome::failed(changed, format!("Failed after undoing: {why}. {what}"))
        }
        None if error == INVALID_RELEASE => SafetyOutcome::invalid(&cause),
        None => SafetyOutcome::failed(
            false,
            format!("Failed: {cause}. This release had moved no traffic, so there was nothing to undo"),
        ),
    };
    let stable = stamp.as_ref().map(|s| s.stable.clone()).or_else(|| progress.map(|p| p.stable.clone()));
    if let Some(feed) = stable.and_then(|stable| release.shadow_feed(&stable)) {
        if let Err(e) = deps.feeds().close_feed(&feed).await {
            warn!(release = %release.release, error = %e, "the shadow's feed was not removed");
        }
    }
    // Routers draw nobody once it ended; best effort, the cohort alias already serves
    // what the release left, so a stale share reaches only that.
    if let Some(nobody) = release.cohort_ended().filter(|_| stamp.is_some()) {
        if let Err(e) = deps.cohorts().publish(target, &nobody).await {
            warn!(release = %release.release, error = %e, "the ended cohort was not published");
        }
    }
    warn!(
        release = %release.release, target = %target, decision = "safety_rollback", ending = outcome.ending.as_str(),
        undone = outcome.undone, error, "{}", outcome.cause
    );
    Ok(outcome)
}
