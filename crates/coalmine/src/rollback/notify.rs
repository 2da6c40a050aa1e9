//! What the team reads on SNS about an alarm. Every message says what happened, to
//! which release and target, the traffic before and after, the evidence, where to look,
//! and what happens next. Subjects obey SNS's rules (ASCII, no control characters, at
//! most 100 characters) and are never cut mid-word; bodies are plain text; attributes
//! feed subscription filter policies.

use std::fmt::Write;

use crate::domain::event::AlarmEvent;
use crate::domain::split::Split;
use crate::domain::stamp::{Phase, RolledBackBy, Stamp};
use crate::domain::target::Target;
use crate::ports::Notification;
use crate::rollback::ZeroOutcome;

pub const SUBJECT_MAX: usize = 100;
pub const ATTR_EVENT: &str = "event";
pub const ATTR_TARGET: &str = "target";
pub const ATTR_RELEASE: &str = "release";

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
    field(body, "Alarm", &format!("{} ({} since {})", event.alarm_name, event.state.as_str(), event.state_time));
    field(body, "Reason", &event.reason);
    if let Some(arn) = &event.alarm_arn {
        field(body, "Alarm ARN", arn);
    }
}

/// One `Name:      value` line; an empty name continues the line above.
pub fn field(body: &mut String, name: &str, value: &str) {
    let label = if name.is_empty() { String::new() } else { format!("{name}:") };
    let _ = writeln!(body, "{label:<11}{value}");
}

/// A version or variant as a person names it: "version 41", "variant stable".
pub fn side(target: &Target, id: &str) -> String {
    match target {
        Target::Lambda(_) => format!("version {id}"),
        Target::Sagemaker(_) => format!("variant {id}"),
    }
}

/// Who serves what: "version 41 at 75%, canary version 42 at 25%".
pub fn describe(target: &Target, split: &Split) -> String {
    match &split.canary {
        Some(canary) if !split.canary_is_zero() => format!(
            "{} at {}, canary {} at {}",
            side(target, &split.stable),
            percent(1.0 - split.canary_weight),
            side(target, canary),
            percent(split.canary_weight)
        ),
        _ => format!("{} serves all traffic, no canary", side(target, &split.stable)),
    }
}

/// The Step Functions console page of an execution, from any ARN of the same account
/// and region (the alarm's) and the execution's `MACHINE:NAME`, or from its own ARN.
pub fn execution_link(same_account_arn: &str, execution: &str) -> Option<String> {
    let parts: Vec<&str> = same_account_arn.splitn(6, ':').collect();
    let [_, partition, _, region, account, _] = parts.as_slice() else { return None };
    let id = crate::domain::stamp::execution_id(execution);
    let arn = format!("arn:{partition}:states:{region}:{account}:execution:{id}");
    let console = match *partition {
        "aws-cn" => "console.amazonaws.cn",
        "aws-us-gov" => "console.amazonaws-us-gov.com",
        _ => "console.aws.amazon.com",
    };
    Some(format!("https://{region}.{console}/states/home?region={region}#/v2/executions/details/{arn}"))
}

/// A span of time as a person reads it: 45s, 12m, 12m03s, 2h05m.
pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 && s % 60 == 0 => format!("{}m", s / 60),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn percent(weight: f64) -> String {
    // `+ 0.0` turns a negative zero into zero: "-0%" reads as an error.
    let pct = weight * 100.0 + 0.0;
    if (pct - pct.round()).abs() < 1e-6 {
        format!("{}%", pct.round() + 0.0)
    } else {
        format!("{pct:.2}%")
    }
}

/// SNS rejects subjects with non-ASCII or control characters or over 100 characters.
/// A long subject ends at a word boundary with "...".
pub fn subject(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else if c.is_control() {
                ' '
            } else {
                '?'
            }
        })
        .collect();
    if cleaned.len() <= SUBJECT_MAX {
        return cleaned;
    }
    let room = &cleaned[..SUBJECT_MAX - 3];
    let cut = match room.rfind(' ') {
        // Keep at least half the room: one giant word is cut rather than dropped.
        Some(space) if space >= SUBJECT_MAX / 2 => &room[..space],
        _ => room,
    };
    format!("{}...", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_ascii_without_controls_and_at_most_100_chars() {
        let s = subject(&format!("coalmine: alarm ünïcode\n{}", "x".repeat(200)));
        assert!(s.len() <= SUBJECT_MAX);
        assert!(s.chars().all(|c| c.is_ascii() && !c.is_ascii_control()), "{s}");
        assert!(s.ends_with("..."));
        assert_eq!(subject("short"), "short");
    }

    #[test]
    fn long_subjects_end_at_a_word_boundary() {
        let text = "coalmine: summarizer-release-2026-11-23 on lambda:summarizer:production rolled back (alarm coalmine-summarizer-p95)";
        let s = subject(text);
        assert!(s.len() <= SUBJECT_MAX, "{s}");
        let kept = s.strip_suffix("...").unwrap();
        assert!(text.starts_with(kept) && text[kept.len()..].starts_with(' '), "cut mid-word: {s}");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!([duration(45), duration(720), duration(723), duration(7500)], ["45s", "12m", "12m03s", "2h05m"]);
    }

    #[test]
    fn percent_drops_needless_decimals_and_never_says_minus_zero() {
        assert_eq!(percent(0.05), "5%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(-0.0), "0%");
        assert_eq!(percent(0.123456), "12.35%");
    }

    #[test]
    fn execution_links_point_at_the_console_of_the_alarms_region() {
        let link = execution_link(
            "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:coalmine-x",
            "ReleaseStateMachine-Ab12:ai-handler-42",
        )
        .unwrap();
        assert_eq!(
            link,
            "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/\
             arn:aws:states:eu-west-1:123456789012:execution:ReleaseStateMachine-Ab12:ai-handler-42"
        );
        assert_eq!(execution_link("not-an-arn", "m:e"), None);
    }
}
