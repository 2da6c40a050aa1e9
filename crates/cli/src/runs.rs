//! A release's execution as the CLI shows it: its status and ending, the release it
//! runs, and the progress its last tick recorded (from the execution's history, since a
//! running execution has no output yet).

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent};
use coalmine::release::core::progress::Decision;
use coalmine::release::AnyProgress as Progress;
use coalmine::release::Document;
use serde::Serialize;
use serde_json::Value;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::context::{advice, CliError, CliResult, Context};
use crate::Exit;

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub name: String,
    pub execution_arn: String,
    /// RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED.
    pub status: String,
    /// The state machine's ending: CanaryRolledBack, InvalidRelease, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    #[serde(skip)]
    pub release: Option<Document>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Ticks failing since the last one that recorded a progress: the state machine is
    /// retrying, and nothing is being judged meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing: Option<Failing>,
    /// Who serves the target now, read from it (`status` reads it; a list does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
}

/// Failed attempts of the release's tick (or its safety step) since its last progress.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failing {
    /// When the first of them failed (epoch seconds).
    pub since: i64,
    pub attempts: usize,
    /// The newest attempt's error, as the stepper said it.
    pub error: String,
}

impl Run {
    pub async fn load(context: &Context, execution_arn: &str) -> CliResult<Run> {
        let out = context.sfn.describe_execution().execution_arn(execution_arn).send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_execution_does_not_exist()) {
                let name = execution_arn.rsplit(':').next().unwrap_or(execution_arn);
                CliError::new(Exit::Error, format!("no release {name} in this state machine; coalmine list shows them"))
            } else {
                aws_failure("states:DescribeExecution", e)
            }
        })?;
        let input: Value = out.input().and_then(|i| serde_json::from_str(i).ok()).unwrap_or(Value::Null);
        let release = Document::parse(&without_progress(&input)).ok();
        let (progress, failing) = latest_progress(context, execution_arn).await?;
        Ok(Run {
            name: out.name().unwrap_or_default().to_owned(),
            execution_arn: execution_arn.to_owned(),
            status: out.status().as_str().to_owned(),
            error: out.error().map(str::to_owned),
            cause: out.cause().map(str::to_owned),
            started_at: out.start_date().secs(),
            stopped_at: out.stop_date().map(|d| d.secs()),
            release,
            progress,
            failing,
            now: None,
        })
    }

    /// The executions of the state machine, newest first: every one still running,
    /// and up to `recent` that ended.
    pub async fn list(context: &Context, recent: usize) -> CliResult<Vec<Run>> {
        let machine = context.state_machine().await?;
        let mut arns = Vec::new();
        let mut ended = 0;
        let mut next = None;
        loop {
            let out = context
                .sfn
                .list_executions()
                .state_machine_arn(&machine)
                .max_results(100)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| aws_failure("states:ListExecutions", e))?;
            for item in out.executions() {
                let running = *item.status() == ExecutionStatus::Running;
                if running || ended < recent {
                    ended += usize::from(!running);
                    arns.push((item.start_date().secs(), item.execution_arn().to_owned()));
                }
            }
            next = out.next_token().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        arns.sort_by_key(|(started, _)| std::cmp::Reverse(*started));
        let mut runs = Vec::with_capacity(arns.len());
        for (_, arn) in arns {
            runs.push(Run::load(context, &arn).await?);
        }
        Ok(runs)
    }

    pub fn running(&self) -> bool {
        self.status == "RUNNING"
    }

    /// What a CI step branches on once it has ended; `Ok` while running.
    pub fn exit(&self) -> Exit {
        match (self.status.as_str(), self.error.as_deref()) {
            ("RUNNING" | "SUCCEEDED", _) => Exit::Ok,
            ("FAILED", Some("CanaryRolledBack")) => Exit::RolledBack,
            ("FAILED", Some("InvalidRelease")) => Exit::Invalid,
            _ => Exit::Failed,
        }
    }

    /// One word for the release's state: its progress's status while it runs, its
    /// ending once it has ended.
    pub fn state(&self) -> String {
        match (self.status.as_str(), self.error.as_deref()) {
            ("RUNNING", _) => self.progress.as_ref().map_or("starting".to_owned(), |p| p.status.as_str().to_owned()),
            ("SUCCEEDED", _) => "promoted".to_owned(),
            ("FAILED", Some("CanaryRolledBack")) => "rolled_back".to_owned(),
            ("FAILED", Some("InvalidRelease")) => "invalid".to_owned(),
            ("FAILED", Some(error)) => format!("failed ({error})"),
            (status, _) => status.to_ascii_lowercase(),
        }
    }
}

/// The input as a release: the state machine's data carries the progress beside it.
fn without_progress(input: &Value) -> Value {
    let mut release = input.clone();
    if let Some(object) = release.as_object_mut() {
        for key in ["progress", "failure", "safety", "safety_failure"] {
            object.remove(key);
        }
    }
    release
}

/// The newest progress in the execution's history (a state's input or output that holds
/// one: the tick's output, the wait's input, the final state's input), and the attempts
/// that failed since.
async fn latest_progress(context: &Context, execution_arn: &str) -> CliResult<(Option<Progress>, Option<Failing>)> {
    let out = context
        .sfn
        .get_execution_history()
        .execution_arn(execution_arn)
        .reverse_order(true)
        .max_results(100)
        .send()
        .await
        .map_err(|e| aws_failure("states:GetExecutionHistory", e))?;
    Ok(progress_and_failures(out.events()))
}

/// Newest first, as the history comes: failures until the newest progress.
fn progress_and_failures(events: &[HistoryEvent]) -> (Option<Progress>, Option<Failing>) {
    let mut failing: Option<Failing> = None;
    for event in events {
        if let Some(progress) = progress_in(event) {
            return (Some(progress), failing);
        }
        let Some(failed) = event.task_failed_event_details() else { continue };
        let at = event.timestamp().secs();
        match &mut failing {
            Some(f) => {
                f.attempts += 1;
                f.since = at;
            }
            None => {
                let error = failure_text(failed.error(), failed.cause());
                failing = Some(Failing { since: at, attempts: 1, error });
            }
        }
    }
    (None, failing)
}

/// A failed task's error as a sentence: Lambda's `errorMessage` when the cause is its JSON.
fn failure_text(error: Option<&str>, cause: Option<&str>) -> String {
    let message = cause
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|c| c.get("errorMessage").and_then(Value::as_str).map(str::to_owned));
    match (message, error, cause) {
        (Some(message), _, _) => message,
        (None, Some(error), Some(cause)) if !cause.is_empty() => format!("{error}: {cause}"),
        (None, Some(error), _) => error.to_owned(),
        (None, None, _) => "an error it did not name".to_owned(),
    }
}

/// Every decision the release made, from the whole execution history: each progress
/// keeps only its last few, but every tick's output is in the history.
pub async fn every_decision(context: &Context, execution_arn: &str) -> CliResult<Vec<Decision>> {
    let mut progresses = Vec::new();
    let mut next = None;
    loop {
        let out = context
            .sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .max_results(1000)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| aws_failure("states:GetExecutionHistory", e))?;
        progresses.extend(out.events().iter().filter_map(progress_in));
        next = out.next_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    Ok(merged(progresses.iter().map(|p| p.history.as_slice())))
}

/// The histories of successive progresses as one: each decision once, in time order.
fn merged<'a>(histories: impl Iterator<Item = &'a [Decision]>) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = Vec::new();
    for history in histories {
        for decision in history {
            if !decisions.iter().rev().take(64).any(|kept| kept == decision) {
                decisions.push(decision.clone());
            }
        }
    }
    decisions.sort_by_key(|d| d.at);
    decisions
}

fn progress_in(event: &HistoryEvent) -> Option<Progress> {
    let data = event
        .state_exited_event_details()
        .and_then(|d| d.output())
        .or_else(|| event.state_entered_event_details().and_then(|d| d.input()))?;
    let state: Value = serde_json::from_str(data).ok()?;
    serde_json::from_value(state.get("progress")?.clone()).ok()
}

/// An AWS call that failed, as one line: the operation, what AWS said (or what kept it
/// from answering), and what to do when that is known.
pub fn aws_failure<E>(operation: &'static str, e: aws_sdk_sfn::error::SdkError<E, HttpResponse>) -> CliError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let detail = coalmine::aws::aws_error(operation, e).to_string();
    match advice(&detail) {
        Some(next) => CliError::new(Exit::Error, format!("{detail}; {next}")),
        None => CliError::new(Exit::Error, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, error: Option<&str>) -> Run {
        Run {
            name: "r".into(),
            execution_arn: "arn".into(),
            status: status.into(),
            error: error.map(str::to_owned),
            cause: None,
            started_at: 0,
            stopped_at: None,
            release: None,
            progress: None,
            failing: None,
            now: None,
        }
    }

    #[test]
    fn failed_attempts_after_the_newest_progress_are_counted_and_the_newest_error_said() {
        use aws_sdk_sfn::primitives::DateTime;
        use aws_sdk_sfn::types::{HistoryEventType, StateExitedEventDetails, TaskFailedEventDetails};
        let failed = |id: i64, at: i64, message: &str| {
            let cause = serde_json::json!({"errorType": "Retryable", "errorMessage": message}).to_string();
            HistoryEvent::builder()
                .id(id)
                .timestamp(DateTime::from_secs(at))
                .r#type(HistoryEventType::TaskFailed)
                .task_failed_event_details(
                    TaskFailedEventDetails::builder()
                        .resource_type("lambda")
                        .resource("invoke")
                        .error("Retryable")
                        .cause(cause)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let progress = serde_json::json!({"progress": {
            "stage": 0, "weight": 0.05, "stable": "41",
            "last_written": {"stable": "41", "canary": "42", "weight": 0.05},
            "started_at": 1000, "stage_entered_at": 1000, "status": "baking", "wait_seconds": 60,
            "reason": "r", "ticks": 2, "history": []
        }});
        let ticked = HistoryEvent::builder()
            .id(1)
            .timestamp(DateTime::from_secs(1060))
            .r#type(HistoryEventType::TaskStateExited)
            .state_exited_event_details(
                StateExitedEventDetails::builder().name("Tick").output(progress.to_string()).build().unwrap(),
            )
            .build()
            .unwrap();
        // Newest first, as the history is read.
        let events = [failed(4, 1130, "cloudwatch:GetMetricData failed: throttled"), failed(3, 1100, "older"), ticked];
        let (progress, failing) = progress_and_failures(&events);
        assert_eq!(progress.unwrap().ticks, 2);
        assert_eq!(
            failing,
            Some(Failing { since: 1100, attempts: 2, error: "cloudwatch:GetMetricData failed: throttled".into() })
        );
        assert_eq!(progress_and_failures(&events[2..]).1, None, "no failure after the newest progress");
    }

    #[test]
    fn every_ending_has_its_exit_code_for_a_ci_step() {
        let cases = [
            (run("RUNNING", None), Exit::Ok, "starting"),
            (run("SUCCEEDED", None), Exit::Ok, "promoted"),
            (run("FAILED", Some("CanaryRolledBack")), Exit::RolledBack, "rolled_back"),
            (run("FAILED", Some("InvalidRelease")), Exit::Invalid, "invalid"),
            (run("FAILED", Some("ReleaseFailed")), Exit::Failed, "failed (ReleaseFailed)"),
            (run("FAILED", Some("SafetyRollbackFailed")), Exit::Failed, "failed (SafetyRollbackFailed)"),
            (run("ABORTED", None), Exit::Failed, "aborted"),
        ];
        for (run, exit, state) in cases {
            assert_eq!((run.exit(), run.state().as_str()), (exit, state), "{} {:?}", run.status, run.error);
        }
    }
}
