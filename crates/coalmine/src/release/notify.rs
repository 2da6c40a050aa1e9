//! What the team reads on SNS when a release stops: which kind of rollback it was, at
//! which stage, the traffic before and after, the evidence, a link to the execution,
//! and what happens next.

use serde::{Deserialize, Serialize};

use crate::domain::split::Split;
use crate::ports::Notification;
use crate::release::judge::Evidence;
use crate::release::Release;
use crate::rollback::notify::{
    describe, duration, execution_link, field, percent, subject, ATTR_EVENT, ATTR_RELEASE, ATTR_TARGET,
};

/// What took a release's traffic away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackKind {
    /// The stepper's judge, on the canary's metrics.
    Health,
    /// The stepper's judge, on one of the release's gate alarms.
    GateAlarm,
    /// The rollback function, on an alarm, as it fired.
    Alarm,
    /// Someone changed the traffic outside the release; coalmine stopped, writing nothing.
    OutsideChange,
    /// The state machine's safety rollback after a tick kept failing.
    Safety,
    /// A person, by hand (`coalmine abort`).
    Operator,
    /// A stage waited for approval longer than its `approval_timeout_seconds`.
    ApprovalTimeout,
    /// SageMaker's deployment guardrails rolled a guardrail release back themselves.
    Guardrail,
}

impl RollbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackKind::Health => "health",
            RollbackKind::GateAlarm => "gate_alarm",
            RollbackKind::Alarm => "alarm",
            RollbackKind::OutsideChange => "outside_change",
            RollbackKind::Safety => "safety",
            RollbackKind::Operator => "operator",
            RollbackKind::ApprovalTimeout => "approval_timeout",
            RollbackKind::Guardrail => "guardrail",
        }
    }

    /// How the execution's cause begins.
    pub fn headline(self) -> &'static str {
        match self {
            RollbackKind::Health => "Rolled back by its health check",
            RollbackKind::GateAlarm => "Rolled back on a gate alarm",
            RollbackKind::Alarm => "Rolled back by the rollback function",
            RollbackKind::OutsideChange => "Stopped: changed outside the release",
            RollbackKind::Safety => "Undone by the safety rollback",
            RollbackKind::Operator => "Rolled back by hand",
            RollbackKind::ApprovalTimeout => "Rolled back for want of approval",
            RollbackKind::Guardrail => "Rolled back by SageMaker's deployment guardrails",
        }
    }

    /// In a subject, in brackets.
    fn short(self) -> &'static str {
        match self {
            RollbackKind::Health => "health check",
            RollbackKind::GateAlarm => "gate alarm",
            RollbackKind::Alarm => "alarm",
            RollbackKind::OutsideChange => "changed outside the release",
            RollbackKind::Safety => "safety rollback",
            RollbackKind::Operator => "by hand",
            RollbackKind::ApprovalTimeout => "no approval",
            RollbackKind::Guardrail => "SageMaker guardrails",
        }
    }
}

/// A release that stopped, and why.
pub struct Stopped<'a> {
    pub release: &'a Release,
    /// The execution's ARN.
    pub execution: &'a str,
    pub kind: RollbackKind,
    pub why: &'a str,
    pub evidence: Option<&'a Evidence>,
    /// 0-based.
    pub stage: usize,
    pub before: &'a Split,
    pub after: &'a Split,
}

pub fn rolled_back(stopped: &Stopped<'_>) -> Notification {
    let Stopped { release, execution, kind, why, evidence, stage, before, after } = stopped;
    let target = &release.target;
    let name = &release.release;
    let at = format!("stage {} of {} ({})", stage + 1, release.stages.len(), percent(release.stages[*stage].weight()));
    let opening = match kind {
        RollbackKind::OutsideChange => format!(
            "coalmine stopped release {name} at {at}: its traffic was changed outside the release, so coalmine left it \
             as it found it and will not move it again."
        ),
        RollbackKind::Safety => format!(
            "coalmine undid release {name} at {at}: its tick kept failing, so the safety rollback took the canary's \
             traffic away. The release will not climb again."
        ),
        RollbackKind::GateAlarm => format!(
            "coalmine rolled back release {name} at {at}: one of its gate alarms fired. The canary's traffic is now \
             zero and the release will not climb again."
        ),
        RollbackKind::ApprovalTimeout => format!(
            "coalmine rolled back release {name} at {at}: the stage waited for approval and none came. The canary's \
             traffic is now zero and the release will not climb again."
        ),
        RollbackKind::Operator => format!(
            "coalmine rolled back release {name} at {at} by hand. The canary's traffic is now zero and the release \
             will not climb again."
        ),
        _ => format!(
            "coalmine rolled back release {name} at {at}: its canary failed a health check. The canary's traffic is \
             now zero and the release will not climb again."
        ),
    };
    let mut body = format!("{opening}\n\n");
    field(&mut body, "Release", name);
    field(&mut body, "Stage", &at);
    field(&mut body, "Target", &target.to_string());
    field(&mut body, "Kind", kind.as_str());
    field(&mut body, "Before", &describe(target, before));
    field(&mut body, "After", &describe(target, after));
    field(&mut body, "Why", why);
    if let Some(line) = evidence.and_then(|e| e.metrics_line()) {
        field(&mut body, "Evidence", &line);
    }
    if let Some(link) = execution_link(execution, execution) {
        field(&mut body, "Execution", &link);
    }
    body.push('\n');
    let next = match kind {
        RollbackKind::OutsideChange => {
            "The execution ends rolled back. If the change was a mistake, set the traffic by hand; start a new \
             release when the target is ready."
        }
        RollbackKind::Safety => {
            "The execution ends failed. Read the error above, fix what failed, then start the release again."
        }
        RollbackKind::GateAlarm => {
            "The execution ends rolled back. A new release that gates on the alarm will not start until it is OK."
        }
        RollbackKind::ApprovalTimeout | RollbackKind::Operator | RollbackKind::Guardrail => {
            "The execution ends rolled back. Start a new release when the model is ready."
        }
        _ => "The execution ends rolled back. Fix the model, publish it, and start a new release.",
    };
    field(&mut body, "Next", next);
    Notification {
        subject: subject(&format!("coalmine: {name} rolled back on {target} ({})", kind.short())),
        body,
        attributes: vec![
            (ATTR_EVENT, "rolled_back".to_owned()),
            (ATTR_TARGET, target.to_string()),
            (ATTR_RELEASE, name.clone()),
        ],
    }
}

/// A stage is waiting for a person: said once, when the wait begins.
pub fn awaiting_approval(release: &Release, execution: &str, stage: usize, evidence: &Evidence) -> Notification {
    let target = &release.target;
    let name = &release.release;
    let s = release.stages[stage];
    let at = format!("stage {} of {} ({})", stage + 1, release.stages.len(), percent(s.weight()));
    let mut body = format!(
        "Release {name} baked healthy at {at} and waits for approval before it goes on. It stays at this weight, \
         checked every {} s, and rolls back if it turns unhealthy.\n\n",
        release.check_every_seconds
    );
    field(&mut body, "Release", name);
    field(&mut body, "Stage", &at);
    field(&mut body, "Target", &target.to_string());
    field(&mut body, "Verdict", &evidence.summary());
    if let Some(line) = evidence.metrics_line() {
        field(&mut body, "Evidence", &line);
    }
    if let Some(link) = execution_link(execution, execution) {
        field(&mut body, "Execution", &link);
    }
    body.push('\n');
    field(
        &mut body,
        "Next",
        &format!(
            "coalmine approve {name} lets it go on; coalmine abort {name} --reason ... rolls it back. Without an \
             answer it rolls back in {}.",
            duration(s.approval_timeout())
        ),
    );
    Notification {
        subject: subject(&format!("coalmine: {name} on {target} waits for approval at {}", percent(s.weight()))),
        body,
        attributes: vec![
            (ATTR_EVENT, "awaiting_approval".to_owned()),
            (ATTR_TARGET, target.to_string()),
            (ATTR_RELEASE, name.clone()),
        ],
    }
}
