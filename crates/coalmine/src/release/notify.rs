//! What the team reads on SNS about a release.

use std::fmt::Write;

use crate::domain::target::Target;
use crate::ports::Notification;
use crate::release::Release;
use crate::rollback::notify::{percent, subject, ATTR_EVENT, ATTR_TARGET};
use crate::rollback::ZeroOutcome;

pub const ATTR_RELEASE: &str = "release";

/// The stepper's own rollback: the health verdict, not an alarm event, is the reason.
pub fn stepper_rollback(release: &Release, target: &Target, outcome: &ZeroOutcome, reason: &str) -> Notification {
    let (before, after) = match outcome {
        ZeroOutcome::RolledBack { before, after } => (before, after),
        ZeroOutcome::AlreadyZero { split } => (split, split),
    };
    let subject = subject(&format!("coalmine: {target} rolled back (release {})", release.release));
    let mut body = String::from(
        "coalmine rolled back a release: its canary failed a health check, its traffic is now zero, and it will not climb again.\n\n",
    );
    let _ = writeln!(body, "Release:  {}", release.release);
    let _ = writeln!(body, "Reason:   {reason}");
    let _ = writeln!(body, "Target:   {target}");
    let _ = writeln!(body, "Canary:   {}", release.canary_id());
    let _ = writeln!(body, "Before:   stable {} canary {}", before.stable, percent(before.canary_weight));
    let _ = writeln!(body, "After:    stable {} canary {}", after.stable, percent(after.canary_weight));
    Notification {
        subject,
        body,
        attributes: vec![
            (ATTR_EVENT, outcome.event_name().to_owned()),
            (ATTR_TARGET, target.to_string()),
            (ATTR_RELEASE, release.release.clone()),
        ],
    }
}
