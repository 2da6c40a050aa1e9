//! Text a person reads, the same everywhere: SNS messages, execution causes, logs and
//! the CLI. Who serves what, percents, durations, console links, and subjects SNS
//! accepts.

use std::fmt::Write;

use crate::domain::split::{Split, WEIGHT_TOLERANCE};
use crate::domain::target::Target;

pub const SUBJECT_MAX: usize = 100;

/// One `Name:      value` line; an empty name continues the line above.
pub fn field(body: &mut String, name: &str, value: &str) {
    let label = if name.is_empty() { String::new() } else { format!("{name}:") };
    let _ = writeln!(body, "{label:<11}{value}");
}

/// Who serves what: "version 41 at 75%, canary version 42 at 25%"; and who answers
/// mirrored copies nobody sees: "deployment blue serves all traffic; 20% mirrored to
/// deployment green".
pub fn describe(target: &Target, split: &Split) -> String {
    if let Some(said) = target.describe_in_own_words(split) {
        return said;
    }
    let serving = match &split.canary {
        // SageMaker and Azure at 100%: both sides stay, the canary serves everything.
        Some(canary) if split.canary_weight >= 1.0 - WEIGHT_TOLERANCE => {
            format!("canary {} serves all traffic", target.side(canary))
        }
        Some(canary) if split.canary_weight > WEIGHT_TOLERANCE => format!(
            "{} at {}, canary {} at {}",
            target.side(&split.stable),
            percent(1.0 - split.canary_weight),
            target.side(canary),
            percent(split.canary_weight)
        ),
        Some(_) if split.mirror > WEIGHT_TOLERANCE => format!("{} serves all traffic", target.side(&split.stable)),
        _ => format!("{} serves all traffic, no canary", target.side(&split.stable)),
    };
    match &split.canary {
        Some(canary) if split.mirror > WEIGHT_TOLERANCE => {
            format!("{serving}; {} mirrored to {}, its answers unseen", percent(split.mirror), target.side(canary))
        }
        _ => serving,
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

/// A request or error count as a person reads it: whole, and never "-0".
pub fn count(value: f64) -> String {
    format!("{:.0}", value.max(0.0) + 0.0)
}

/// A share of the way to a rollback, from 0 to 1: "0%", "0.4%", "37%".
pub fn way(share: f64) -> String {
    let percent = share * 100.0;
    if percent > 0.0 && percent < 9.95 {
        format!("{percent:.1}%")
    } else {
        format!("{percent:.0}%")
    }
}

/// A fraction as a percentage with two decimals: "0.50%".
pub fn pct(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
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

    #[test]
    fn a_mirror_is_said_beside_who_serves() {
        let target: Target = "azureml:s:rg:ws:chat:blue:green".parse().unwrap();
        let split = |weight: f64, mirror: f64| Split {
            stable: "blue".into(),
            canary: Some("green".into()),
            canary_weight: weight,
            others_weight: 0.0,
            mirror,
            revision: None,
            stamp: None,
        };
        assert_eq!(
            describe(&target, &split(0.0, 0.2)),
            "deployment blue serves all traffic; 20% mirrored to deployment green, its answers unseen"
        );
        assert_eq!(describe(&target, &split(0.05, 0.0)), "deployment blue at 95%, canary deployment green at 5%");
        assert_eq!(describe(&target, &split(0.0, 0.0)), "deployment blue serves all traffic, no canary");
    }
}
