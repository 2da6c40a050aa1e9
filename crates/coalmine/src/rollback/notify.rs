//! What the team reads on SNS. Subjects obey SNS's rules (ASCII, no control characters,
//! at most 100 characters); bodies are plain text; attributes feed filter policies.

use std::fmt::Write;

use crate::domain::event::AlarmEvent;
use crate::domain::target::Target;
use crate::ports::Notification;
use crate::rollback::ZeroOutcome;

pub const SUBJECT_MAX: usize = 100;
pub const ATTR_EVENT: &str = "event";
pub const ATTR_TARGET: &str = "target";

pub fn outcome(event: &AlarmEvent, target: &Target, outcome: &ZeroOutcome) -> Notification {
    let (headline, before, after) = match outcome {
        ZeroOutcome::RolledBack { before, after } => ("rolled back", before, after),
        ZeroOutcome::AlreadyZero { split } => ("already at zero", split, split),
    };
    let subject = subject(&format!("coalmine: {target} {headline} (alarm {})", event.alarm_name));
    let mut body = String::new();
    let _ = writeln!(
        body,
        "{}",
        match outcome {
            ZeroOutcome::RolledBack { .. } =>
                "coalmine rolled back a canary: its traffic is now zero and this release will not climb again.",
            ZeroOutcome::AlreadyZero { .. } =>
                "The canary already had no traffic: nothing was changed (a repeated alarm, or an earlier rollback).",
        }
    );
    let _ = writeln!(body);
    alarm_lines(&mut body, event);
    let _ = writeln!(body, "Target:   {target}");
    let _ = writeln!(body, "Stable:   {}", before.stable);
    let _ = writeln!(body, "Canary:   {}", before.canary.as_deref().unwrap_or("(none)"));
    let _ = writeln!(body, "Weight:   {} -> {}", percent(before.canary_weight), percent(after.canary_weight));
    Notification {
        subject,
        body,
        attributes: vec![(ATTR_EVENT, outcome.event_name().to_owned()), (ATTR_TARGET, target.to_string())],
    }
}

pub fn no_target(event: &AlarmEvent) -> Notification {
    let mut body = String::from(
        "An alarm fired, but coalmine found no target it guards, so no traffic was changed.\n\
         Tag the alarm with coalmine:target (e.g. lambda:FUNCTION:ALIAS or sagemaker:ENDPOINT:STABLE:CANARY),\n\
         or map its name in the rollback function's ROLLBACK_TARGETS.\n\n",
    );
    alarm_lines(&mut body, event);
    Notification {
        subject: subject(&format!("coalmine: alarm {} guards no known canary", event.alarm_name)),
        body,
        attributes: vec![(ATTR_EVENT, "no_target".to_owned())],
    }
}

fn alarm_lines(body: &mut String, event: &AlarmEvent) {
    let _ = writeln!(body, "Alarm:    {}", event.alarm_name);
    if let Some(arn) = &event.alarm_arn {
        let _ = writeln!(body, "ARN:      {arn}");
    }
    let _ = writeln!(body, "State:    {} since {}", event.state.as_str(), event.state_time);
    let _ = writeln!(body, "Reason:   {}", event.reason);
}

pub fn percent(weight: f64) -> String {
    let pct = weight * 100.0;
    if (pct - pct.round()).abs() < 1e-6 {
        format!("{}%", pct.round())
    } else {
        format!("{pct:.2}%")
    }
}

/// SNS rejects subjects with non-ASCII or control characters or over 100 characters.
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
        cleaned
    } else {
        format!("{}...", &cleaned[..SUBJECT_MAX - 3])
    }
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
    fn percent_drops_needless_decimals() {
        assert_eq!(percent(0.05), "5%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.123456), "12.35%");
    }
}
