//! What an operator does to a release in flight. Pause, resume, promote and approve are
//! requests the release carries out itself at its next check, with its own conditional
//! writes: they are recorded in the release's stamp on the target (a stamp-only write,
//! conditional on the read like every other). Abort takes the traffic away at once, with
//! the rollback function's own code, and the release's next check ends it.

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::domain::stamp::{Phase, Request, Stamp};
use crate::domain::target::Target;
use crate::ports::{Notifier, ShadowFeeds, TrafficRouter};
use crate::release::canary::notify::{self as canary_notify, Stopped};
use crate::release::canary::spec::Release;
pub use crate::release::core::operate::Command;
use crate::release::core::Ports;
use crate::rollback::{record_rollback, zero_canary, Owner, ZeroOutcome};
use crate::text::describe;

/// Past this many lost races in one command, something keeps changing the target.
const MAX_CONFLICTS: usize = 5;

/// What `command` leaves in the stamp.
fn applied(command: Command, stamp: &Stamp, who: &str) -> Stamp {
    let who = who.to_owned();
    match command {
        Command::Pause => Stamp { hold: Some(who), ..stamp.clone() },
        Command::Resume => Stamp { hold: None, ..stamp.clone() },
        Command::Promote { full } => Stamp { request: Some(Request::Promote { full, by: who }), ..stamp.clone() },
        Command::Approve => Stamp { request: Some(Request::Approve { by: who }), ..stamp.clone() },
    }
}

/// Records `command`, from `who`, in the stamp of release `name` on `target`, and
/// returns the stamp as written. Refused when the target carries no live stamp of that
/// release (it ended, or never started, or another release is in flight there).
pub async fn command(
    router: &impl TrafficRouter,
    target: &Target,
    name: &str,
    who: &str,
    command: Command,
) -> Result<Stamp> {
    let mut last_conflict = None;
    for _ in 0..MAX_CONFLICTS {
        let live = router.read(target).await?;
        let stamp = in_flight(&live, target, name, command.verb())?;
        let wanted = applied(command, &stamp, who);
        if wanted == stamp {
            return Ok(stamp);
        }
        match router.write(target, &live, &Split { stamp: Some(wanted.clone()), ..live.clone() }).await {
            Ok(_) => return Ok(wanted),
            Err(conflict @ Error::Conflict { .. }) => last_conflict = Some(conflict),
            Err(other) => return Err(other),
        }
    }
    Err(last_conflict.unwrap_or_else(|| Error::Conflict { target: target.clone(), detail: "no attempt made".into() }))
}

/// The live stamp of release `name`, or why there is none to act on.
fn in_flight(live: &Split, target: &Target, name: &str, verb: &str) -> Result<Stamp> {
    match &live.stamp {
        Some(stamp) if stamp.is_of_release(name) && stamp.is_live() => Ok(stamp.clone()),
        Some(stamp) if stamp.is_of_release(name) => Err(Error::Refused(format!(
            "release {name} has ended ({}) on {target}; there is nothing to {verb}",
            match &stamp.phase {
                Phase::Promoted => "promoted".to_owned(),
                Phase::RolledBack(by) => format!("rolled back by {}", by.describe()),
                Phase::Live => "live".to_owned(),
            }
        ))),
        Some(stamp) => Err(Error::Refused(format!(
            "release {name} is not the one on {target}: the last there is {} (execution {}); check the name",
            stamp.release.as_deref().unwrap_or("unnamed"),
            stamp.execution
        ))),
        None => Err(Error::Refused(format!(
            "no coalmine release is in flight on {target} ({}); check the name",
            describe(target, live)
        ))),
    }
}

/// Takes the traffic of `release` (run by `execution`) away now, by `who` for `why`,
/// and tells the team; its execution sees it at its next check and ends rolled back. A
/// later release of the target starts as if this one had been rolled back by an alarm.
pub async fn abort(deps: &impl Ports, release: &Release, execution: &str, who: &str, why: &str) -> Result<ZeroOutcome> {
    let target = &release.target;
    let by = RolledBackBy::Operator { who: who.to_owned(), why: Some(why.to_owned()) };
    let outcome = match zero_canary(deps.traffic(), target, &by, Owner::Execution(execution), None).await? {
        ZeroOutcome::NotOurs { split } => {
            in_flight(&split, target, &release.release, "abort")?;
            return Err(Error::Refused(format!(
                "release {} on {target} belongs to another execution than {execution}",
                release.release
            )));
        }
        // In flight but at no weight (a SageMaker stage whose weight write never
        // landed): only the record changes, so the release still ends.
        ZeroOutcome::AlreadyZero { split } => record_rollback(deps.traffic(), target, split, &by).await?,
        done => done,
    };
    // A shadow's feed goes now; the release's next check removes it again if this fails.
    let stable = outcome.before().stamp.as_ref().map_or(outcome.before().stable.as_str(), |s| s.stable.as_str());
    if let Some(feed) = release.shadow_feed(stable) {
        if let Err(e) = deps.feeds().close_feed(&feed).await {
            tracing::warn!(release = %release.release, error = %e, "the shadow's feed was not removed");
        }
    }
    let stage = outcome.before().stamp.as_ref().and_then(|s| s.stage).map_or(0, |(at, _)| at.saturating_sub(1));
    let message = canary_notify::rolled_back(&Stopped {
        release,
        execution,
        by: &by,
        why: &by.describe(),
        evidence: None,
        stage: stage.min(release.stages.len() - 1),
        before: outcome.before(),
        after: outcome.after(),
        dry_run: None,
        in_shadow: outcome.before().stamp.as_ref().is_some_and(Stamp::in_shadow),
        replayed: false,
        examples: &[],
    });
    deps.notifier().publish(&message).await.map_err(|e| Error::Incomplete {
        summary: format!("release {} was rolled back, but the team's message was not sent: {e}", release.release),
        retryable: true,
    })?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{lambda_split, Alarms, Metrics, Outbox, Router};
    use crate::release::core::StepDeps;

    const EXECUTION: &str = "arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42";

    fn target() -> Target {
        Target::lambda("ai-handler", "live")
    }

    fn in_flight_at(weight: f64) -> Router {
        let stamp = Stamp {
            execution: "Release:ai-handler-42".into(),
            stable: "41".into(),
            canary: Some("42".into()),
            phase: Phase::Live,
            stage: Some((2, 3)),
            release: Some("ai-handler-42".into()),
            hold: None,
            request: None,
        };
        Router::with([(target(), Split { stamp: Some(stamp), ..lambda_split("41", "42", weight) })])
    }

    #[tokio::test]
    async fn commands_are_stamp_only_writes_that_never_move_traffic() {
        let router = in_flight_at(0.25);
        let before = router.split(&target());

        let held = command(&router, &target(), "ai-handler-42", "jane", Command::Pause).await.unwrap();
        assert_eq!(held.hold.as_deref(), Some("jane"));
        let promote =
            command(&router, &target(), "ai-handler-42", "sam", Command::Promote { full: true }).await.unwrap();
        assert_eq!(promote.request, Some(Request::Promote { full: true, by: "sam".into() }));
        assert_eq!(promote.hold.as_deref(), Some("jane"), "a request leaves the hold");
        let resumed = command(&router, &target(), "ai-handler-42", "jane", Command::Resume).await.unwrap();
        assert_eq!(resumed.hold, None);

        let live = router.split(&target());
        assert!(live.same_routing(&before), "traffic untouched: {live:?}");
        assert_eq!(router.write_count(), 3);
        // The same command again changes nothing and writes nothing.
        command(&router, &target(), "ai-handler-42", "jane", Command::Resume).await.unwrap();
        assert_eq!(router.write_count(), 3);
    }

    #[tokio::test]
    async fn a_command_for_a_release_not_in_flight_is_refused_by_name() {
        let router = in_flight_at(0.25);
        let err = command(&router, &target(), "ai-handler-43", "jane", Command::Approve).await.unwrap_err();
        assert!(err.to_string().contains("the last there is ai-handler-42"), "{err}");

        let bare = Router::with([(target(), lambda_split("41", "42", 0.0))]);
        let err = command(&bare, &target(), "ai-handler-42", "jane", Command::Pause).await.unwrap_err();
        assert!(err.to_string().contains("no coalmine release is in flight on lambda:ai-handler:live"), "{err}");
        assert_eq!(bare.write_count(), 0);
    }

    #[tokio::test]
    async fn abort_takes_the_traffic_away_names_who_and_why_and_ends_the_release() {
        let router = in_flight_at(0.25);
        let notifier = Outbox::default();
        let release = crate::release::canary::spec::tests::lambda_release();
        let release = Release { target: target(), release: "ai-handler-42".into(), ..release };

        let (alarms, metrics) = (Alarms::default(), Metrics::default());
        let deps = StepDeps::new(&router, &notifier, &alarms, &metrics);
        let outcome = abort(&deps, &release, EXECUTION, "jane", "answers look truncated").await.unwrap();

        assert!(matches!(outcome, ZeroOutcome::RolledBack { .. }));
        let live = router.split(&target());
        assert!(live.canary_is_zero());
        assert_eq!(
            live.stamp.unwrap().phase,
            Phase::RolledBack(RolledBackBy::Operator {
                who: "jane".into(),
                why: Some("answers look truncated".into())
            })
        );
        let sent = notifier.sent.lock().unwrap().clone();
        assert!(sent[0].subject.ends_with("(by hand)"), "{}", sent[0].subject);
        assert!(sent[0].body.contains("Why:       jane, by hand: answers look truncated"), "{}", sent[0].body);

        // Aborting again: it has ended.
        let err = abort(&deps, &release, EXECUTION, "jane", "again").await.unwrap_err();
        assert!(err.to_string().contains("has ended (rolled back by jane, by hand"), "{err}");
    }
}
