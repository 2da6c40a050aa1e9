//! The dead-man's switch. A release's execution can end while its release is still in
//! flight: its safety step kept failing (AWS out of reach for longer than its retries),
//! it timed out, or someone stopped it. Nothing watches that canary then. EventBridge
//! hands each such ending of the release state machine's executions to the rollback
//! function, which runs the release's own safety rollback for that execution: only what
//! the execution still owns (its stamp, live, on the target) is taken away, and the team
//! is told. When even that fails, the team is paged before the invocation fails, and
//! Lambda retries it (then keeps it in the stack's failure queue).

use serde_json::Value;
use tracing::{error, info, warn};

use crate::domain::error::{Error, Result};
use crate::ports::{Notification, Notifier, ATTR_EVENT, ATTR_RELEASE};
use crate::release::core::ending::{SafetyOutcome, EXECUTION_ENDED};
use crate::text::{execution_link, field, subject};

pub const STATUS_CHANGE: &str = "Step Functions Execution Status Change";
const STATES_SOURCE: &str = "aws.states";
/// The endings after which a release may have been left in flight. A release's own
/// endings (promoted, rolled back, invalid, failed after undoing) end it first, so the
/// safety rollback finds nothing of theirs to undo.
const UNWATCHED: [&str; 3] = ["FAILED", "TIMED_OUT", "ABORTED"];

/// An execution of the release state machine that ended, as EventBridge reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionEnded {
    pub execution: String,
    pub status: String,
    /// The execution's input: the release as it was started.
    pub release: Value,
    pub error: Option<String>,
    pub cause: Option<String>,
}

impl ExecutionEnded {
    /// Whether the payload is Step Functions' status-change event (whatever its status).
    pub fn is_status_change(payload: &Value) -> bool {
        payload.get("source").and_then(Value::as_str) == Some(STATES_SOURCE)
            && payload.get("detail-type").and_then(Value::as_str) == Some(STATUS_CHANGE)
    }

    /// `None` for a status that cannot have left a release unwatched (running, succeeded).
    pub fn decode(payload: &Value) -> Result<Option<ExecutionEnded>> {
        let detail = payload.get("detail").ok_or_else(|| bad("it has no detail"))?;
        let text = |key: &str| detail.get(key).and_then(Value::as_str).map(str::to_owned);
        let status = text("status").ok_or_else(|| bad("its detail has no status"))?;
        if !UNWATCHED.contains(&status.as_str()) {
            return Ok(None);
        }
        let execution = text("executionArn").ok_or_else(|| bad("its detail has no executionArn"))?;
        // The input comes as a JSON string; Step Functions leaves it out past 248 KB.
        let input = text("input").ok_or_else(|| {
            bad(&format!("execution {execution} came without its input (over 248 KB?): its target cannot be told"))
        })?;
        let release = serde_json::from_str(&input)
            .map_err(|e| bad(&format!("execution {execution}'s input is not JSON ({e})")))?;
        Ok(Some(ExecutionEnded { execution, status, release, error: text("error"), cause: text("cause") }))
    }

    /// What the release's safety rollback is told: the execution ended, and how.
    pub fn failure(&self) -> Value {
        let how = match self.status.as_str() {
            "ABORTED" => "was stopped (StopExecution) before the release ended".to_owned(),
            "TIMED_OUT" => "timed out before the release ended".to_owned(),
            _ => match (&self.error, &self.cause) {
                (Some(error), Some(cause)) => format!("failed ({error}: {})", cause.trim()),
                (Some(error), None) => format!("failed ({error})"),
                _ => "failed".to_owned(),
            },
        };
        serde_json::json!({
            "Error": EXECUTION_ENDED,
            "Cause": format!("its execution {how}, and nothing was watching the canary any more"),
        })
    }
}

fn bad(why: &str) -> Error {
    Error::BadEvent(format!("a {STATUS_CHANGE:?} event, but {why}"))
}

/// What the switch did, for the invocation's result and the log.
pub fn summary(ended: &ExecutionEnded, outcome: &SafetyOutcome) -> Value {
    info!(
        execution = %ended.execution, status = %ended.status, decision = "watchdog", undone = outcome.undone,
        ending = outcome.ending.as_str(), "{}", outcome.cause
    );
    serde_json::json!({
        "execution": ended.execution, "status": ended.status,
        "undone": outcome.undone, "ending": outcome.ending.as_str(), "cause": outcome.cause,
    })
}

/// The undo failed: the team is paged (if SNS answers) before the invocation fails, so
/// a person knows a canary may be live with nobody watching, whatever Lambda's retries do.
pub async fn page(
    ended: &ExecutionEnded,
    release: &str,
    target: &str,
    failed: Error,
    notifier: &impl Notifier,
) -> Error {
    error!(
        execution = %ended.execution, release, target, decision = "watchdog_failed", error = %failed,
        retryable = failed.is_retryable(), "a release may be in flight with nobody watching"
    );
    let mut body = format!(
        "Release {release}'s execution ended {} while the release was in flight, and coalmine could not take its \
         canary's traffic away: {failed}\n\n",
        ended.status
    );
    field(&mut body, "Release", release);
    field(&mut body, "Target", target);
    if let Some(link) = execution_link(&ended.execution, &ended.execution) {
        field(&mut body, "Execution", &link);
    }
    body.push('\n');
    field(
        &mut body,
        "Next",
        &format!(
            "Take the canary's traffic away by hand now (coalmine rollback {target} --reason \"...\", or in the \
             console). coalmine tries again{}.",
            if failed.is_retryable() { " twice over the next minutes" } else { " no more: the error will not pass" }
        ),
    );
    let page = Notification {
        subject: subject(&format!("coalmine: {release} may be live with nobody watching")),
        body,
        attributes: vec![(ATTR_EVENT, "unwatched".to_owned()), (ATTR_RELEASE, release.to_owned())],
    };
    if let Err(e) = notifier.publish(&page).await {
        warn!(release, error = %e, "the page was not sent either");
    }
    let retryable = failed.is_retryable();
    Error::Incomplete { summary: format!("release {release} on {target} was left in flight: {failed}"), retryable }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cause::RolledBackBy;
    use crate::domain::split::Split;
    use crate::domain::stamp::{Phase, Stamp};
    use crate::domain::target::Target;
    use crate::memory::{lambda_split, Alarms, Metrics, Outbox, Router};
    use crate::release::core::StepDeps;
    use crate::release::execution_ended;

    const EXECUTION: &str = "coalmine-release:ai-handler-42";

    fn sample() -> Value {
        let path = crate::workspace_file("events/stepfunctions/execution-failed.eventbridge.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn alias() -> Target {
        Target::lambda("ai-handler", "production")
    }

    /// The alias as a release leaves it at its first stage, stamped by `execution`.
    fn in_flight(execution: &str, phase: Phase) -> Router {
        let stamp = Stamp {
            execution: execution.into(),
            stable: "41".into(),
            canary: Some("42".into()),
            phase,
            stage: Some((1, 4)),
            release: Some("ai-handler-42".into()),
            hold: None,
            request: None,
        };
        Router::with([(alias(), Split { stamp: Some(stamp), ..lambda_split("41", "42", 0.05) })])
    }

    async fn ended(router: &Router, notifier: &Outbox, payload: &Value) -> Result<Value> {
        let (alarms, metrics) = (Alarms::default(), Metrics::default());
        execution_ended(payload, &StepDeps::new(router, notifier, &alarms, &metrics)).await
    }

    #[tokio::test]
    async fn a_release_left_in_flight_by_its_failed_execution_loses_its_canary_and_the_team_is_told() {
        let (router, notifier) = (in_flight(EXECUTION, Phase::Live), Outbox::default());
        let summary = ended(&router, &notifier, &sample()).await.unwrap();
        assert_eq!(summary["undone"], true, "{summary}");
        let live = router.split(&alias());
        assert_eq!((live.canary_weight, live.stamp.unwrap().phase), (0.0, Phase::RolledBack(RolledBackBy::Safety)));
        let sent = notifier.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].body.contains("its execution failed (SafetyRollbackFailed"), "{}", sent[0].body);
    }

    #[tokio::test]
    async fn only_what_that_execution_still_owns_is_touched() {
        for router in [in_flight("coalmine-release:ai-handler-43", Phase::Live), in_flight(EXECUTION, Phase::Promoted)]
        {
            let notifier = Outbox::default();
            let summary = ended(&router, &notifier, &sample()).await.unwrap();
            assert_eq!((summary["undone"].as_bool(), router.write_count()), (Some(false), 0), "{summary}");
            assert!(notifier.sent.lock().unwrap().is_empty());
        }
        // A release that never parsed, and an execution that succeeded, leave nothing either.
        let router = in_flight(EXECUTION, Phase::Live);
        let mut invalid = sample();
        invalid["detail"]["input"] = json_text(serde_json::json!({"release": "x", "stages": []}));
        let mut succeeded = sample();
        succeeded["detail"]["status"] = "SUCCEEDED".into();
        for payload in [invalid, succeeded] {
            ended(&router, &Outbox::default(), &payload).await.unwrap();
        }
        assert_eq!(router.write_count(), 0);
    }

    fn json_text(value: Value) -> Value {
        Value::String(value.to_string())
    }

    #[tokio::test]
    async fn when_even_that_fails_the_team_is_paged_and_the_invocation_fails_for_a_retry() {
        let (router, notifier) = (in_flight(EXECUTION, Phase::Live), Outbox::default());
        router.write_failures.lock().unwrap().insert(
            alias(),
            [crate::domain::error::Error::Service {
                operation: "lambda:UpdateAlias",
                detail: "throttled".into(),
                retryable: true,
            }]
            .into(),
        );
        let err = ended(&router, &notifier, &sample()).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("left in flight"), "{err}");
        let sent = notifier.sent.lock().unwrap();
        assert_eq!(sent[0].attributes[0], (crate::ports::ATTR_EVENT, "unwatched".to_owned()));
        assert!(sent[0].subject.contains("may be live with nobody watching"), "{}", sent[0].subject);
        assert!(sent[0].body.contains("coalmine rollback lambda:ai-handler:production"), "{}", sent[0].body);
    }

    #[test]
    fn stopped_and_timed_out_executions_say_so() {
        let mut stopped = sample();
        stopped["detail"]["status"] = "ABORTED".into();
        let ended = ExecutionEnded::decode(&stopped).unwrap().unwrap();
        assert!(ended.failure()["Cause"].as_str().unwrap().contains("was stopped (StopExecution)"));
        let mut no_input = sample();
        no_input["detail"]["input"] = Value::Null;
        assert!(ExecutionEnded::decode(&no_input).unwrap_err().to_string().contains("without its input"));
    }
}
