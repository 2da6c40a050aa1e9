//! What the team reads on SNS when a release stops: which kind of rollback it was, at
//! which stage, the traffic before and after, the evidence, a link to the execution,
//! and what happens next.

use crate::domain::cause::RolledBackBy;
use crate::domain::shadow::Example;
use crate::domain::split::Split;
use crate::ports::{Notification, ATTR_EVENT, ATTR_RELEASE, ATTR_TARGET};
use crate::release::canary::spec::Release;
use crate::release::core::progress::DryRun;
use crate::release::judge::Evidence;
use crate::text::{describe, duration, execution_link, field, subject};

/// A release that stopped, and why.
pub struct Stopped<'a> {
    pub release: &'a Release,
    /// The execution's ARN.
    pub execution: &'a str,
    pub by: &'a RolledBackBy,
    pub why: &'a str,
    pub evidence: Option<&'a Evidence>,
    /// 0-based.
    pub stage: usize,
    pub before: &'a Split,
    pub after: &'a Split,
    /// Where a test that is not enforced would have rolled back, if one would have.
    pub dry_run: Option<&'a DryRun>,
    /// Stopped in the shadow, before the first stage: no user was served by the candidate.
    pub in_shadow: bool,
    /// In that shadow, answering a replay's requests (decision 0023).
    pub replayed: bool,
    /// The disagreements the shadow function showed last: what the team looks at first.
    pub examples: &'a [Example],
}

pub fn rolled_back(stopped: &Stopped<'_>) -> Notification {
    let Stopped { release, execution, by, why, evidence, stage, before, after, dry_run, in_shadow, replayed, examples } =
        stopped;
    let target = &release.target;
    let name = &release.release;
    let at = if *replayed {
        "its replay, before its first stage".to_owned()
    } else if *in_shadow {
        "its shadow, before its first stage".to_owned()
    } else {
        format!("stage {} of {} ({})", stage + 1, release.stages.len(), release.share_text(*stage))
    };
    let opening = match by {
        RolledBackBy::Health | RolledBackBy::GateAlarm if *replayed => format!(
            "coalmine rolled back release {name} in its replay: the candidate's answers to {} failed a health check. \
             No user was served by it, and the release will not start again.",
            release.replay.as_ref().map_or("replayed requests".to_owned(), |r| r.source_text())
        ),
        RolledBackBy::Health | RolledBackBy::GateAlarm if *in_shadow => format!(
            "coalmine rolled back release {name} in its shadow: the candidate's answers to copies of live requests \
             failed a health check. No user was served by it, and the release will not start again."
        ),
        RolledBackBy::OutsideChange => format!(
            "coalmine stopped release {name} at {at}: its traffic was changed outside the release, so coalmine left it \
             as it found it and will not move it again."
        ),
        RolledBackBy::Safety => format!(
            "coalmine undid release {name} at {at}: its tick kept failing, so the safety rollback took the canary's \
             traffic away. The release will not climb again."
        ),
        RolledBackBy::GateAlarm => format!(
            "coalmine rolled back release {name} at {at}: one of its gate alarms fired. The canary's traffic is now \
             zero and the release will not climb again."
        ),
        RolledBackBy::ApprovalTimeout => format!(
            "coalmine rolled back release {name} at {at}: the stage waited for approval and none came. The canary's \
             traffic is now zero and the release will not climb again."
        ),
        RolledBackBy::Operator { .. } => format!(
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
    field(&mut body, "Kind", by.as_str());
    if let Some(cohorts) = &release.cohorts {
        let who = format!(
            "{}, {}; routers still sending them to the cohort alias reach the stable now",
            release.share_text(*stage),
            cohorts.rules()
        );
        field(&mut body, "Cohort", &who);
    }
    field(&mut body, "Before", &describe(target, before));
    field(&mut body, "After", &describe(target, after));
    field(&mut body, "Why", why);
    if let Some(line) = evidence.and_then(|e| e.metrics_line()) {
        field(&mut body, "Evidence", &line);
    }
    if let Some(dry_run) = dry_run {
        field(&mut body, "Dry run", &dry_run.describe());
    }
    for example in examples.iter() {
        let said = format!(
            "request {}: {}; stable {}; candidate {}",
            example.request_id, example.request, example.stable, example.candidate
        );
        field(&mut body, "Disagreed", &said);
    }
    if let Some(link) = execution_link(execution, execution) {
        field(&mut body, "Execution", &link);
    }
    body.push('\n');
    let next = match by {
        RolledBackBy::OutsideChange => {
            "The execution ends rolled back. If the change was a mistake, set the traffic by hand; start a new \
             release when the target is ready."
        }
        RolledBackBy::Safety => {
            "The execution ends failed. Read the error above, fix what failed, then start the release again."
        }
        RolledBackBy::GateAlarm => {
            "The execution ends rolled back. A new release that gates on the alarm will not start until it is OK."
        }
        RolledBackBy::ApprovalTimeout | RolledBackBy::Operator { .. } | RolledBackBy::Guardrail => {
            "The execution ends rolled back. Start a new release when the model is ready."
        }
        _ => "The execution ends rolled back. Fix the model, publish it, and start a new release.",
    };
    field(&mut body, "Next", next);
    Notification {
        subject: subject(&format!("coalmine: {name} rolled back on {target} ({})", by.short())),
        body,
        attributes: vec![
            (ATTR_EVENT, "rolled_back".to_owned()),
            (ATTR_TARGET, target.to_string()),
            (ATTR_RELEASE, name.clone()),
        ],
    }
}

/// A promoted release whose dry run would have rolled it back: the team decides whether
/// the gate is right before it enforces it. (A promotion the dry run had nothing against
/// is not worth a message.)
pub fn promoted_despite_dry_run(release: &Release, execution: &str, dry_run: &DryRun, verdict: &str) -> Notification {
    let (target, name) = (&release.target, &release.release);
    let mut body = format!(
        "Release {name} was promoted on {target}, but a gate that is not enforced (a dry run) would have rolled it \
         back: had it been enforced, the release would have stopped where the dry run says.\n\n"
    );
    field(&mut body, "Release", name);
    field(&mut body, "Target", &target.to_string());
    field(&mut body, "Dry run", &dry_run.describe());
    field(&mut body, "Verdict", verdict);
    if let Some(link) = execution_link(execution, execution) {
        field(&mut body, "Execution", &link);
    }
    body.push('\n');
    field(
        &mut body,
        "Next",
        "If the model really was worse on it, enforce the gate (drop \"enforce\": false); if not, its limit is too \
         tight for this traffic. Nothing rolls back now: the release is promoted.",
    );
    Notification {
        subject: subject(&format!("coalmine: {name} promoted on {target}; a dry-run gate would have rolled it back")),
        body,
        attributes: vec![
            (ATTR_EVENT, "promoted_dry_run".to_owned()),
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
    let at = format!("stage {} of {} ({})", stage + 1, release.stages.len(), release.share_text(stage));
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
        subject: subject(&format!("coalmine: {name} on {target} waits for approval at {}", release.share_text(stage))),
        body,
        attributes: vec![
            (ATTR_EVENT, "awaiting_approval".to_owned()),
            (ATTR_TARGET, target.to_string()),
            (ATTR_RELEASE, name.clone()),
        ],
    }
}
