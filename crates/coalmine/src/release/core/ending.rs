//! How an execution ends after a tick failed for good: what the state machine's
//! `SafetyRollback` step returns, and the `Choice` after it branches on.

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The release was promoted before the failure; nothing to undo.
    Promoted,
    /// The release had been rolled back before the failure.
    RolledBack,
    /// Nothing moved: the release is invalid, or its target was not ready.
    InvalidRelease,
    /// The tick failed; whatever this release had moved was undone.
    FailedAfterUndoing,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Promoted => "promoted",
            Ending::RolledBack => "rolled_back",
            Ending::InvalidRelease => "invalid_release",
            Ending::FailedAfterUndoing => "failed_after_undoing",
        }
    }
}

/// What the safety rollback did and how the execution ends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SafetyOutcome {
    pub ending: Ending,
    /// Whether this step took traffic away.
    pub undone: bool,
    /// The execution's cause: a sentence, not JSON.
    pub cause: String,
}

impl SafetyOutcome {
    /// The release was never valid, or names what it may not touch: nothing moved.
    pub fn invalid(cause: &str) -> SafetyOutcome {
        SafetyOutcome {
            ending: Ending::InvalidRelease,
            undone: false,
            cause: format!("Invalid release, nothing moved: {}", unprefixed(cause)),
        }
    }

    pub fn promoted(cause: &str) -> SafetyOutcome {
        SafetyOutcome { ending: Ending::Promoted, undone: false, cause: cause.to_owned() }
    }

    pub fn rolled_back(cause: String) -> SafetyOutcome {
        SafetyOutcome { ending: Ending::RolledBack, undone: false, cause }
    }

    /// The tick kept failing; `undone` says whether this step took traffic away.
    pub fn failed(undone: bool, cause: String) -> SafetyOutcome {
        SafetyOutcome { ending: Ending::FailedAfterUndoing, undone, cause }
    }
}

/// The `Error` of a safety rollback the dead-man's switch runs: the execution ended (failed,
/// timed out, stopped) with its release still in flight, and nobody watches it now.
pub const EXECUTION_ENDED: &str = "ExecutionEnded";

/// Why the release's own undo runs: its tick kept failing, or its execution ended.
pub fn undo_reason(failure: &Value) -> String {
    let cause = failure_cause(failure);
    match failure.get("Error").and_then(Value::as_str) {
        Some(EXECUTION_ENDED) => failure.get("Cause").and_then(Value::as_str).map_or(cause, |c| c.trim().to_owned()),
        _ => format!("the release's tick kept failing: {cause}"),
    }
}

/// The failed tick's error as a sentence for the execution's cause.
pub fn failure_cause(failure: &Value) -> String {
    unprefixed(&plain_cause(failure)).to_owned()
}

/// "Invalid release, nothing moved: invalid release: ..." would say it twice.
fn unprefixed(cause: &str) -> &str {
    cause.strip_prefix("invalid release: ").unwrap_or(cause)
}

/// The failed tick's error as a sentence. Lambda puts the function's error in `Cause` as
/// JSON (`{"errorType": ..., "errorMessage": ...}`); Step Functions' own errors
/// (`States.Timeout`, ...) carry text or nothing.
fn plain_cause(failure: &Value) -> String {
    let error = failure.get("Error").and_then(Value::as_str).unwrap_or("unknown error");
    let cause = failure.get("Cause").and_then(Value::as_str).unwrap_or_default();
    let from_lambda = serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|v| v.get("errorMessage").and_then(Value::as_str).map(str::to_owned));
    match from_lambda {
        Some(message) if !message.is_empty() => message,
        _ if cause.trim().is_empty() => format!("{error}, with no more detail"),
        _ => format!("{error}: {}", cause.trim()),
    }
}
