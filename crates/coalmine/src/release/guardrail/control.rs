//! Stopping a guardrail release from outside its ticks: `coalmine abort`, the safety
//! rollback after a tick kept failing, and SageMaker's own rollback failing.

use serde_json::Value;
use tracing::warn;

use crate::domain::cause::RolledBackBy;
use crate::domain::deployment::EndpointState;
use crate::domain::error::{Error, Result};
use crate::ports::{EndpointDeployments, Notifier, Tripwires};
use crate::release::core::ending::{failure_cause, undo_reason, SafetyOutcome};
use crate::release::core::Ports;
use crate::release::guardrail::notify::message;
use crate::release::guardrail::spec::GuardrailRelease;

/// `coalmine abort` on a guardrail release in flight: stops what SageMaker is deploying
/// (trips the tripwire) first, then stamps the release stopped by `who` and tells the
/// team. Its execution does the rest at its next check: takes a shadow away, or deploys
/// the previous config back if the deployment completed first. Returns what happens now.
pub async fn abort(
    deps: &impl Ports,
    release: &GuardrailRelease,
    execution: &str,
    who: &str,
    why: &str,
) -> Result<String> {
    let endpoint = &release.guardrail.endpoint;
    let state = deps.deployments().endpoint_state(endpoint).await?;
    let Some(stamp) = state.stamp.clone().filter(|s| s.is_by(execution)) else {
        return Err(Error::Refused(format!(
            "{endpoint} carries no stamp of release {}: it has not started anything there yet, or another \
             release has since",
            release.release
        )));
    };
    if !stamp.is_live() {
        return Err(Error::Refused(format!("release {} has already ended on {endpoint}", release.release)));
    }
    let deploying = state.pending.as_ref().is_some_and(|p| p.config == release.guardrail.endpoint_config);
    let now = if deploying {
        deps.tripwires().trip(&release.tripwire()).await?;
        format!("tripped {}, so SageMaker rolls the deployment back now", release.tripwire())
    } else {
        format!("its execution takes {} back to {} at its next check", endpoint, stamp.stable)
    };
    let by = RolledBackBy::Operator { who: who.to_owned(), why: Some(why.to_owned()) };
    deps.deployments().stamp_endpoint(endpoint, &stamp.rolled_back(by.clone())).await?;
    let message = message(release, execution, "aborted", &by.describe(), &format!("coalmine {now}."), "aborted");
    deps.notifier().publish(&message).await.map_err(|e| Error::Incomplete {
        summary: format!("release {} was stopped, but the team's message was not sent: {e}", release.release),
        retryable: true,
    })?;
    Ok(now)
}

/// After a tick failed for good: stop what this execution started (trip its alarm, or
/// take a shadow config back), and say how the execution ends.
pub(super) async fn safety_rollback(
    release: &GuardrailRelease,
    failure: &Value,
    execution: &str,
    deps: &impl Ports,
) -> Result<SafetyOutcome> {
    let cause = failure_cause(failure);
    let g = &release.guardrail;
    let state = match deps.deployments().endpoint_state(&g.endpoint).await {
        Ok(state) => state,
        Err(Error::NotFound { .. } | Error::AccessDenied { .. } | Error::InvalidRelease(_)) => {
            return Ok(SafetyOutcome::invalid(&cause))
        }
        Err(other) => return Err(other),
    };
    if state.status == "UpdateRollbackFailed" {
        return Err(stuck(release, execution, deps.notifier(), &state).await);
    }
    let failed =
        |undone: bool, what: &str| SafetyOutcome::failed(undone, format!("Failed after undoing: {cause}. {what}"));
    let Some(stamp) = state.stamp.as_ref().filter(|s| s.is_by(execution)) else {
        return Ok(failed(false, "This release had started nothing, so there was nothing to undo"));
    };
    if state.is_in_service() && state.config == g.endpoint_config {
        return Ok(SafetyOutcome::promoted(&format!("Promoted; then a tick failed ({cause})")));
    }
    if !stamp.is_live() {
        return Ok(failed(false, "It had already ended, so there was nothing to undo"));
    }
    let shadow = release.shadow.as_ref().map(|s| s.endpoint_config.as_str());
    let what = if state.pending.as_ref().is_some_and(|p| p.config == g.endpoint_config) {
        deps.tripwires().trip(&release.tripwire()).await?;
        format!("coalmine tripped {}, so SageMaker rolls the deployment back", release.tripwire())
    } else if state.is_in_service() && Some(state.config.as_str()) == shadow {
        deps.deployments().deploy(&g.endpoint, &stamp.stable, None).await?;
        format!("coalmine took the shadow away: {} goes back to {}", g.endpoint, stamp.stable)
    } else {
        return Ok(failed(false, "Nothing of it was left in flight"));
    };
    // Traffic first, the record second: a later look (an alarm, the next release) sees it ended.
    if let Err(e) = deps.deployments().stamp_endpoint(&g.endpoint, &stamp.rolled_back(RolledBackBy::Safety)).await {
        warn!(release = %release.release, error = %e, "the release was stopped, but its stamp was not updated");
    }
    let why = undo_reason(failure);
    let message = message(release, execution, "was stopped", &why, &format!("{what}."), "rolled_back");
    deps.notifier().publish(&message).await.map_err(|e| Error::Incomplete {
        summary: format!("release {} was stopped, but the team's message was not sent: {e}", release.release),
        retryable: true,
    })?;
    Ok(failed(true, &what))
}

/// SageMaker's own rollback failed: traffic may be split between fleets. Said loudly,
/// and the execution fails (its safety step fails too, ending SafetyRollbackFailed).
pub(super) async fn stuck(
    release: &GuardrailRelease,
    execution: &str,
    notifier: &impl Notifier,
    state: &EndpointState,
) -> Error {
    let endpoint = &release.guardrail.endpoint;
    let why = format!(
        "SageMaker's rollback of {endpoint} failed (UpdateRollbackFailed: {}): traffic may be split between the old and \
         new fleets",
        state.failure_reason.as_deref().unwrap_or("no reason given")
    );
    let next = "Fix the endpoint by hand now: UpdateEndpoint to the config you trust, and check its variants' weights.";
    let message = message(release, execution, "may be stuck", &why, next, "update_rollback_failed");
    if let Err(e) = notifier.publish(&message).await {
        warn!(release = %release.release, error = %e, "the stuck endpoint's message was not sent");
    }
    Error::Unsupported { target: release.target(), detail: format!("{why}. {next}") }
}
