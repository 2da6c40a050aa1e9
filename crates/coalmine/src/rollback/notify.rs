//! What the team reads on SNS about an alarm. Every message says what happened, to
//! which release and target, the traffic before and after, the evidence, where to look,
//! and what happens next. Subjects obey SNS's rules (ASCII, no control characters, at
//! most 100 characters) and are never cut mid-word; bodies are plain text; attributes
//! feed subscription filter policies.

use std::fmt::Write;

use crate::domain::cause::RolledBackBy;
use crate::domain::event::TARGET_TAG;
use crate::domain::event::{AlarmEvent, Confirmation, Delivery};
use crate::domain::split::Split;
use crate::domain::stamp::{Phase, Stamp};
use crate::domain::target::Target;
use crate::ports::{Notification, ATTR_EVENT, ATTR_RELEASE, ATTR_TARGET};
use crate::rollback::zero::{Refusal, ZeroOutcome};
use crate::text::{describe, execution_link, field, percent, subject};

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
                target.side(&before.stable),
                target.side(&after.stable),
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
        ZeroOutcome::AlreadyZero { split } if split.canary.is_none() && target.deploying_endpoint().is_some() => (
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
        ZeroOutcome::Refused { split, why } => {
            ("NOT rolled back", refusal(target, split, why, &format!("Alarm {}", event.alarm_name)).0)
        }
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
        (ZeroOutcome::Refused { split, why }, _) => refusal(target, split, why, "").1,
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

/// Why a rollback `asked` for (an alarm, a person) moved nothing, and what a person can
/// run instead: (what happened, what to do next).
pub fn refusal(target: &Target, split: &Split, why: &Refusal, asked: &str) -> (String, String) {
    let stamp = split.stamp.as_ref();
    let release = stamp.and_then(|s| s.release.clone()).unwrap_or_else(|| "(unnamed)".to_owned());
    let canary = split.canary.as_deref().unwrap_or("(none)");
    match why {
        Refusal::NotTheRolesOfRecord => {
            let (stable, candidate) = stamp.map_or(("?", None), |s| (s.stable.as_str(), s.canary.as_deref()));
            let moves = candidate.map_or_else(
                || format!("gives traffic back only to {}", target.side(stable)),
                |candidate| format!("moves traffic between {} and {}", target.side(stable), target.side(candidate)),
            );
            let what = format!(
                "{asked} asked to roll back {target}, which serves {}; but release {release} is in flight there and \
                 {moves}, not the sides named. coalmine takes traffic only from a release's own candidate, so nothing \
                 was changed.",
                describe(target, split)
            );
            let by_hand = match candidate {
                Some(candidate) if !target.has_fixed_roles() => {
                    format!(" (or coalmine rollback {} --reason \"...\")", target.with_roles(stable, candidate))
                }
                _ => String::new(),
            };
            let next = format!(
                "To take the release's candidate away now: coalmine abort {release} --reason \"...\"{by_hand}. Then \
                 make the alarm name the sides it watches (its {TARGET_TAG} tag), or leave the release to its judge."
            );
            (what, next)
        }
        Refusal::Promoted => {
            let previous = stamp.map_or("the previous one", |s| s.stable.as_str());
            (
                format!(
                    "Release {release} ended promoted: {} is production on {target} now, and a promotion is final, so \
                     nothing was changed ({asked}).",
                    target.side(canary)
                ),
                format!(
                    "If {} is at fault, release {} again: a new release with it as the candidate.",
                    target.side(canary),
                    target.side(previous)
                ),
            )
        }
        Refusal::NoMajority => (
            format!(
                "{asked} asked to roll back {target}, but no coalmine release is in flight there and {} serves {} of \
                 its traffic: taking the {} of {} away would raise a side that is not production on a name alone, so \
                 nothing was changed.",
                target.side(&split.stable),
                percent(split.stable_share()),
                percent(split.canary_weight),
                target.side(canary)
            ),
            format!(
                "If {} must lose its traffic anyway, a person can say so: coalmine rollback {} --reason \"...\".",
                target.side(canary),
                target.with_roles(&split.stable, canary)
            ),
        ),
    }
}

/// The rollback itself failed: said before the invocation fails, so a canary that could
/// not be zeroed is never silent, whether Lambda's retries can help or not.
pub fn failed(event: &AlarmEvent, target: &Target, error: &crate::domain::error::Error) -> Notification {
    let mut body =
        format!("coalmine could NOT take the canary of {target} away on alarm {}: {error}\n\n", event.alarm_name);
    field(&mut body, "Target", &target.to_string());
    alarm_lines(&mut body, event);
    let _ = writeln!(body);
    let next = if error.is_retryable() {
        "Lambda retries the event twice over the next minutes, and this message comes again if they fail; after \
         that the event waits in the stack's RollbackFailures queue. Take the traffic away by hand if it cannot wait: \
         coalmine rollback TARGET --reason \"...\"."
    } else {
        "A retry cannot help (the target, its name or the stack's settings are wrong): take the traffic away by hand \
         now (coalmine rollback with the target's right name, or in the console), then fix the alarm's target."
    };
    field(&mut body, "Next", next);
    Notification {
        subject: subject(&format!("coalmine: rollback of {target} FAILED (alarm {})", event.alarm_name)),
        body,
        attributes: vec![(ATTR_EVENT, "rollback_failed".to_owned()), (ATTR_TARGET, target.to_string())],
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

/// A notification that CloudWatch does not bear out moved nothing: someone may be
/// writing alarms to the topic or invoking the function by hand.
pub fn unconfirmed(event: &AlarmEvent, found: Confirmation) -> Notification {
    let what = match found {
        Confirmation::NoSuchAlarm => "CloudWatch has no alarm of that name".to_owned(),
        Confirmation::NotFired(state) => format!(
            "CloudWatch says the alarm is {} and did not enter ALARM at the time the notification gives",
            state.as_str()
        ),
        Confirmation::InAlarm | Confirmation::FiredThen => "CloudWatch confirms it".to_owned(),
    };
    let mut body = format!(
        "An alarm notification arrived by {}, but {what}, so coalmine changed no traffic.\n\n",
        match event.delivery {
            Delivery::Sns => "SNS",
            _ => "a direct invocation of the rollback function",
        }
    );
    alarm_lines(&mut body, event);
    let _ = writeln!(body);
    field(
        &mut body,
        "Next",
        "Find out who sent it: only CloudWatch should publish alarm notifications to the topic the rollback \
         function is subscribed to, and only alarms should invoke it.",
    );
    Notification {
        subject: subject(&format!("coalmine: unconfirmed alarm {} ignored", event.alarm_name)),
        body,
        attributes: vec![(ATTR_EVENT, "unconfirmed".to_owned())],
    }
}

/// An Azure alert named targets off its own endpoint: they were left alone.
pub fn out_of_scope(event: &AlarmEvent, targets: &[Target]) -> Notification {
    let names: Vec<String> = targets.iter().map(Target::to_string).collect();
    let mut body = format!(
        "Azure alert {} names {}, which it may not act on: an alert through the webhook moves traffic only on the \
         Azure ML online endpoint it was raised on ({}). Nothing was changed there.\n\n",
        event.alarm_name,
        names.join(", "),
        event.resource.as_deref().unwrap_or("no resource given")
    );
    alarm_lines(&mut body, event);
    let _ = writeln!(body);
    field(
        &mut body,
        "Next",
        "Fix the alert rule's coalmine:target custom property; to guard an AWS target, use a CloudWatch alarm.",
    );
    let mut attributes = vec![(ATTR_EVENT, "out_of_scope".to_owned())];
    attributes.extend(names.into_iter().take(1).map(|t| (ATTR_TARGET, t)));
    Notification {
        subject: subject(&format!("coalmine: alert {} named targets off its endpoint", event.alarm_name)),
        body,
        attributes,
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
