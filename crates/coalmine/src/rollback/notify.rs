//! What the team reads on SNS about an alarm. Every message says what happened, to
//! which release and target, the traffic before and after, the evidence, where to look,
//! and what happens next. Subjects obey SNS's rules (ASCII, no control characters, at
//! most 100 characters) and are never cut mid-word; bodies are plain text; attributes
//! feed subscription filter policies.

use std::fmt::Write;

use crate::domain::cause::RolledBackBy;
use crate::domain::event::{AlarmEvent, Delivery};
use crate::domain::stamp::{Phase, Stamp};
use crate::domain::target::Target;
use crate::ports::{Notification, ATTR_EVENT, ATTR_RELEASE, ATTR_TARGET};
use crate::rollback::zero::ZeroOutcome;
use crate::text::{describe, execution_link, field, side, subject};

pub fn outcome(event: &AlarmEvent, target: &Target, outcome: &ZeroOutcome) -> Notification {
    let before = outcome.before();
    let stamp = before.stamp.as_ref();
    let release = stamp.and_then(|s| s.release.as_deref());
    let about = release.map_or_else(|| target.to_string(), |r| format!("{r} on {target}"));
    let (headline, opening) = match outcome {
        ZeroOutcome::RolledBack { before, after } if before.stable != after.stable => (
            "rolled back",
            format!(
                "coalmine rolled back {} on alarm {}: {} had been promoted and served all traffic; {} serves again.",
                release.map_or_else(|| format!("the canary of {target}"), |r| format!("release {r}")),
                event.alarm_name,
                side(target, &before.stable),
                side(target, &after.stable),
            ),
        ),
        ZeroOutcome::RolledBack { .. } => (
            "rolled back",
            format!(
                "coalmine rolled back {} on alarm {}: its canary's traffic is now zero{}.",
                release.map_or_else(|| format!("the canary of {target}"), |r| format!("release {r}")),
                event.alarm_name,
                if release.is_some() { " and the release will not climb again" } else { "" },
            ),
        ),
        ZeroOutcome::Tripped { tripwire, .. } => (
            "rolling back",
            format!(
                "{target} is in a guardrail deployment{}: coalmine tripped its tripwire {tripwire} on alarm {}, so \
                 SageMaker rolls the deployment back to the previous config now.",
                release.map(|r| format!(" (release {r})")).unwrap_or_default(),
                event.alarm_name
            ),
        ),
        ZeroOutcome::AlreadyZero { split } if split.canary.is_none() && matches!(target, Target::Sagemaker(_)) => (
            "no canary variant",
            format!(
                "{target} is the endpoint's only production variant, and no coalmine guardrail deployment is in \
                 flight on it, so there was no canary traffic to take away and nothing was changed (alarm {}).",
                event.alarm_name
            ),
        ),
        ZeroOutcome::AlreadyZero { .. } | ZeroOutcome::NotOurs { .. } => (
            "already at zero",
            format!("The canary of {target} already had no traffic, so nothing was changed.{}", earlier(stamp)),
        ),
    };
    let mut body = format!("{opening}\n\n");
    release_lines(&mut body, stamp);
    field(&mut body, "Target", &target.to_string());
    field(&mut body, "Before", &describe(target, before));
    field(&mut body, "After", &describe(target, outcome.after()));
    alarm_lines(&mut body, event);
    if let Some(link) = stamp.and_then(|s| execution_link(event.alarm_arn.as_deref()?, &s.execution)) {
        field(&mut body, "Execution", &link);
    }
    let _ = writeln!(body);
    let next = match (outcome, stamp.map(|s| &s.phase)) {
        (ZeroOutcome::RolledBack { .. }, Some(_)) => {
            "The release's execution sees the rollback at its next check and ends rolled back.".to_owned()
        }
        (ZeroOutcome::RolledBack { .. }, None) => {
            "No coalmine release owned this canary; nothing else will run.".into()
        }
        (_, Some(Phase::Promoted)) => format!(
            "Release {} ended promoted, so the alarm no longer reverts it: if the new version is at fault, \
             release the previous one, or roll back by hand.",
            release.unwrap_or("(unnamed)")
        ),
        _ => "Nothing for coalmine to do; find out why the alarm fired.".into(),
    };
    field(&mut body, "Next", &next);
    field(&mut body, "", &still_firing(event));
    let mut attributes = vec![(ATTR_EVENT, outcome.event_name().to_owned()), (ATTR_TARGET, target.to_string())];
    if let Some(release) = release {
        attributes.push((ATTR_RELEASE, release.to_owned()));
    }
    Notification {
        subject: subject(&format!("coalmine: {about} {headline} (alarm {})", event.alarm_name)),
        body,
        attributes,
    }
}

/// A rollback a person made with `coalmine rollback`.
pub fn by_hand(target: &Target, outcome: &ZeroOutcome, by: &RolledBackBy) -> Notification {
    let before = outcome.before();
    let stamp = before.stamp.as_ref();
    let release = stamp.and_then(|s| s.release.as_deref());
    let opening = match outcome {
        ZeroOutcome::RolledBack { .. } => format!("{target}'s canary was rolled back by {}.", by.describe()),
        _ => format!(
            "{} asked to roll back {target}, whose canary already had no traffic: nothing changed.",
            by.describe()
        ),
    };
    let mut body = format!("{opening}\n\n");
    release_lines(&mut body, stamp);
    field(&mut body, "Target", &target.to_string());
    field(&mut body, "Before", &describe(target, before));
    field(&mut body, "After", &describe(target, outcome.after()));
    body.push('\n');
    let next = match (outcome, stamp.filter(|s| s.is_live())) {
        (ZeroOutcome::RolledBack { .. }, Some(_)) => {
            "The release in flight there sees it at its next check and ends rolled back."
        }
        _ => "Nothing else will run.",
    };
    field(&mut body, "Next", next);
    let mut attributes = vec![(ATTR_EVENT, outcome.event_name().to_owned()), (ATTR_TARGET, target.to_string())];
    if let Some(release) = release {
        attributes.push((ATTR_RELEASE, release.to_owned()));
    }
    Notification { subject: subject(&format!("coalmine: {target} rolled back by hand")), body, attributes }
}

pub fn no_target(event: &AlarmEvent) -> Notification {
    let mut body =
        String::from("An alarm fired, but coalmine found no target it guards, so no traffic was changed.\n\n");
    alarm_lines(&mut body, event);
    let _ = writeln!(body);
    field(
        &mut body,
        "Next",
        "If this alarm guards a canary, tag it coalmine:target (lambda:FUNCTION:ALIAS or \
         sagemaker:ENDPOINT:STABLE:CANARY), or map its name in the rollback function's ROLLBACK_TARGETS.",
    );
    Notification {
        subject: subject(&format!("coalmine: alarm {} guards no known canary", event.alarm_name)),
        body,
        attributes: vec![(ATTR_EVENT, "no_target".to_owned())],
    }
}

/// Why the canary was already at zero, when its stamp tells.
fn earlier(stamp: Option<&Stamp>) -> String {
    match stamp.map(|s| &s.phase) {
        Some(Phase::RolledBack(by)) => format!(" It was rolled back earlier by {}.", by.describe()),
        Some(Phase::Promoted) => " Its release had ended promoted.".into(),
        _ => String::new(),
    }
}

fn still_firing(event: &AlarmEvent) -> String {
    if event.delivery == Delivery::AzureMonitor {
        return format!("Azure alert {} stays fired until its condition resolves.", event.alarm_name);
    }
    format!(
        "Alarm {} stays in ALARM until its metric recovers; a release that gates on it will not start until it is OK.",
        event.alarm_name
    )
}

/// `Release:` and `Stage:` lines when a release's stamp names them.
pub fn release_lines(body: &mut String, stamp: Option<&Stamp>) {
    let Some(stamp) = stamp else { return };
    if let Some(release) = &stamp.release {
        field(body, "Release", release);
    }
    if let Some((at, of)) = stamp.stage {
        field(body, "Stage", &format!("{at} of {of}"));
    }
}

fn alarm_lines(body: &mut String, event: &AlarmEvent) {
    if event.delivery == Delivery::AzureMonitor {
        field(body, "Alert", &format!("{} (Azure Monitor, fired {})", event.alarm_name, event.state_time));
    } else {
        field(body, "Alarm", &format!("{} ({} since {})", event.alarm_name, event.state.as_str(), event.state_time));
    }
    field(body, "Reason", &event.reason);
    if let Some(arn) = &event.alarm_arn {
        field(body, "Alarm ARN", arn);
    }
}
