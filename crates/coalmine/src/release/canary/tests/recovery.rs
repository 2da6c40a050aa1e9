//! Traffic not as the release left it, retried ticks, its own rollbacks, and the safety
//! rollback after a tick failed for good.

use super::*;

#[tokio::test]
async fn a_split_changed_by_someone_else_stops_the_release_without_writing() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    // A person raises the weight in the console; the description (the stamp) stays.
    let stamp = world.live().stamp;
    world.router.splits.lock().unwrap().insert(target(), Split { stamp, ..lambda_split("41", "42", 0.5) });

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::OutsideChange)));
    assert!(
        p.reason.contains(
            "changed outside the release (expected version 41 at 95%, canary version 42 at 5%, found version 41 \
                 at 50%, canary version 42 at 50%); coalmine left it as found"
        ),
        "{}",
        p.reason
    );
    assert_eq!((world.live().canary_weight, world.router.write_count()), (0.5, 1), "not written over");
    assert!(world.sent()[0].subject.ends_with("(changed outside the release)"), "{}", world.sent()[0].subject);
}

#[tokio::test]
async fn a_rollback_by_the_rollback_function_is_named_and_not_announced_twice() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    let by = RolledBackBy::Alarm("coalmine-ai-handler-errors".into());
    crate::rollback::zero_canary(&world.router, &target(), &by, Owner::Alarm, None).await.unwrap();

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!(
        (p.status, p.rolled_back_by),
        (Status::RolledBack, Some(RolledBackBy::Alarm("coalmine-ai-handler-errors".into())))
    );
    assert!(
        p.reason.starts_with(
            "Rolled back by the rollback function on alarm coalmine-ai-handler-errors, at stage 1 of 3 (5%)"
        ),
        "{}",
        p.reason
    );
    assert!(world.sent().is_empty(), "the rollback function told the team already");
    assert_eq!(world.router.write_count(), 2);
}

#[tokio::test]
async fn a_conflict_while_advancing_is_not_overwritten_and_the_retry_says_what_won() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    // The rollback function zeroes it between the stepper's read and its write.
    let zeroed = Split {
        stamp: world.live().stamp.map(|s| s.rolled_back(RolledBackBy::Alarm("errors-fast".into()))),
        ..lambda_split("41", "42", 0.0)
    };
    world.router.interleaved.lock().unwrap().insert(target(), [zeroed].into());

    let err = world.tick(&r, Some(p.clone()), T0 + 600).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }) && err.is_retryable(), "{err}");
    assert_eq!(world.live().canary_weight, 0.0, "not overwritten");

    let p = world.tick(&r, Some(p), T0 + 602).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::Alarm("errors-fast".into()))));
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn unhealthy_after_promotion_restores_the_recorded_stable_version() {
    let world = World::new(stable_only());
    let r = release(gates());
    let mut p = world.tick(&r, None, T0).await.unwrap();
    for at in [T0 + 600, T0 + 1200] {
        p = world.tick(&r, Some(p), at).await.unwrap();
    }
    assert_eq!(world.live().stable, "42");
    world.alarms.set("errors", AlarmState::Alarm);

    let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();

    assert_eq!(p.status, Status::RolledBack);
    assert_eq!((world.live().stable.as_str(), world.live().canary), ("41", None));
    assert!(world.sent()[0].body.contains("Before:    version 42 serves all traffic"), "{}", world.sent()[0].body);
}

#[tokio::test]
async fn a_rolled_back_release_leaves_its_weight_at_zero_and_records_what_serves() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((1000.0, 80.0), (20_000.0, 20.0));

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!((p.status, p.weight), (Status::RolledBack, 0.0));
    assert_eq!(p.history.last().unwrap().weight, 0.0, "the timeline ends at the weight left");
    assert_eq!((p.kind.last_written.stable.as_str(), p.kind.last_written.weight), ("41", 0.0));
}

#[tokio::test]
async fn an_alarm_at_100_percent_says_the_previous_version_was_put_back() {
    let world = World::new(stable_only());
    let r = release(gates());
    let mut p = world.tick(&r, None, T0).await.unwrap();
    for at in [T0 + 600, T0 + 1200] {
        p = world.tick(&r, Some(p), at).await.unwrap();
    }
    assert_eq!((world.live().stable.as_str(), p.weight), ("42", 1.0), "promoted, baking at 100%");
    let by = RolledBackBy::Alarm("coalmine-ai-handler-errors".into());
    crate::rollback::zero_canary(&world.router, &target(), &by, Owner::Alarm, None).await.unwrap();

    let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();

    assert!(
        p.reason.ends_with(
            "at stage 3 of 3 (100%): version 42 had been promoted; version 41 was put back as soon as the alarm fired"
        ),
        "{}",
        p.reason
    );
    assert_eq!((p.weight, p.kind.last_written.stable.as_str()), (0.0, "41"));
}

#[tokio::test]
async fn a_failed_rollback_message_fails_the_tick_and_the_retry_sends_it() {
    let world = World { notifier: Outbox::failing(1), ..World::new(stable_only()) };
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.alarms.set("errors", AlarmState::Alarm);

    let err = world.tick(&r, Some(p.clone()), T0 + 60).await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("message was not sent"), "{err}");
    assert_eq!(world.live().canary_weight, 0.0, "the rollback stands");

    let p = world.tick(&r, Some(p), T0 + 61).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert_eq!(world.sent().len(), 1, "the retry told the team");
    assert_eq!(world.router.write_count(), 2, "and wrote nothing more");
    // ... as what it was: a gate alarm, not a generic health check.
    assert_eq!(p.rolled_back_by, Some(RolledBackBy::GateAlarm));
    assert!(world.sent()[0].body.contains("Kind:      gate_alarm"), "{}", world.sent()[0].body);
    assert!(world.sent()[0].subject.ends_with("(gate alarm)"), "{}", world.sent()[0].subject);
}

#[tokio::test]
async fn a_retried_rollback_is_announced_with_the_cause_its_stamp_records() {
    for by in [RolledBackBy::Health, RolledBackBy::ApprovalTimeout, RolledBackBy::Safety] {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        // An earlier attempt of this tick rolled back, then failed before answering.
        crate::rollback::zero_canary(&world.router, &target(), &by, Owner::Execution(ME), None).await.unwrap();

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

        assert_eq!((p.status, p.rolled_back_by.as_ref()), (Status::RolledBack, Some(&by)));
        assert!(p.reason.starts_with(by.headline()), "{}", p.reason);
        let body = &world.sent()[0].body;
        assert!(body.contains(&format!("Kind:      {}", by.as_str())), "{by:?}: {body}");
    }
}

#[tokio::test]
async fn a_retried_tick_picks_up_what_its_failed_attempt_wrote() {
    // The first tick wrote stage 0, then its answer was lost.
    let world = World::new(stable_only());
    let r = release(gates());
    world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, None, T0 + 2).await.unwrap();
    assert_eq!((p.status, p.stage, p.stable.as_str()), (Status::Advanced, 0, "41"));
    assert_eq!(world.router.write_count(), 1, "not started twice");

    // An advance wrote stage 1, then its answer was lost: the retry has the old progress.
    let before_advance = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    world.tick(&r, Some(before_advance.clone()), T0 + 700).await.unwrap();
    let p = world.tick(&r, Some(before_advance), T0 + 702).await.unwrap();
    assert_eq!((p.status, p.stage, p.weight), (Status::Advanced, 1, 0.25));
    assert!(p.reason.contains("an earlier attempt of this tick advanced"), "{}", p.reason);
    assert_eq!(world.router.write_count(), 2);
    let p = world.tick(&r, Some(p), T0 + 760).await.unwrap();
    assert_eq!(p.status, Status::Baking);
}

#[tokio::test]
async fn a_second_execution_of_the_same_release_is_refused_and_its_safety_step_undoes_nothing() {
    let world = World::new(stable_only());
    let r = release(gates());
    let first = world.tick(&r, None, T0).await.unwrap();

    let err = world.tick_as(OTHER, &r, None, T0 + 5).await.unwrap_err();
    assert!(
            err.to_string().contains("already has a canary in flight: version 41 at 95%, canary version 42 at 5% (release ai-handler-42, execution Release:ai-handler-42, stage 1 of 3)"),
            "{err}"
        );
    let failure = serde_json::json!({"Error": err.error_type(), "Cause": serde_json::json!({"errorType": err.error_type(), "errorMessage": err.to_string()}).to_string()});
    let ended = safety_rollback(&r, None, &failure, OTHER, &world.deps()).await.unwrap();

    assert_eq!((ended.ending, ended.undone), (Ending::InvalidRelease, false));
    assert!(
        ended.cause.starts_with("Invalid release, nothing moved: refused: lambda:ai-handler:live already has a canary"),
        "{}",
        ended.cause
    );
    assert_eq!(world.live().canary_weight, 0.05, "the first release's canary is untouched");
    assert!(world.sent().is_empty());
    let p = world.tick(&r, Some(first), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "and it climbs on");
}

#[tokio::test]
async fn the_safety_rollback_undoes_only_this_executions_traffic() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();

    let ended = world.safety(ME, &r, Some(&p)).await;
    assert_eq!((ended.ending, ended.undone), (Ending::FailedAfterUndoing, true));
    assert_eq!(
        ended.cause,
        "Failed after undoing: the release's tick kept failing: cloudwatch:GetMetricData failed: \
             ThrottlingException: Rate exceeded (HTTP 400, request id r-1). coalmine set the traffic back: version 41 \
             serves all traffic, no canary"
    );
    assert_eq!(world.live().canary_weight, 0.0);
    assert_eq!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Safety));
    assert!(world.sent()[0].body.contains("Kind:      safety"), "{}", world.sent()[0].body);

    // Run again (the state machine retries): the stamp says it is done.
    let again = world.safety(ME, &r, Some(&p)).await;
    assert_eq!((again.ending, again.undone), (Ending::RolledBack, false));
    assert_eq!(world.router.write_count(), 2);

    // A crash after the first write but before the tick answered: no progress, the
    // stamp alone tells the safety step the traffic is this execution's.
    let crashed = World::new(stable_only());
    crashed.tick(&r, None, T0).await.unwrap();
    assert_eq!(crashed.safety(ME, &r, None).await.ending, Ending::FailedAfterUndoing);
    assert_eq!(crashed.live().canary_weight, 0.0);

    // Another execution's canary, or one with no stamp at all, is not ours to touch.
    let theirs = World::new(lambda_split("41", "40", 0.3));
    let ended = theirs.safety(ME, &r, None).await;
    assert_eq!((ended.ending, ended.undone), (Ending::FailedAfterUndoing, false));
    assert!(
        ended.cause.ends_with("This release had moved no traffic, so there was nothing to undo"),
        "{}",
        ended.cause
    );
    assert_eq!(theirs.live().canary_weight, 0.3);
}

#[tokio::test]
async fn a_typo_in_the_target_ends_invalid_not_stuck() {
    let world = World::new(stable_only());
    let mut r = release(gates());
    r.target = Target::lambda("ai-handlr", "live");
    let err = world.tick(&r, None, T0).await.unwrap_err();
    let failure = serde_json::json!({"Error": err.error_type(), "Cause": serde_json::json!({"errorMessage": err.to_string()}).to_string()});
    let ended = safety_rollback(&r, None, &failure, ME, &world.deps()).await.unwrap();
    assert_eq!(ended.ending, Ending::InvalidRelease);
    assert!(ended.cause.contains("lambda:ai-handlr:live was not found"), "{}", ended.cause);
}

#[tokio::test]
async fn a_failure_after_the_promotion_was_recorded_ends_promoted() {
    let world = World::new(stable_only());
    let r = release(gates());
    let mut p = world.tick(&r, None, T0).await.unwrap();
    for at in [T0 + 600, T0 + 1200, T0 + 1500] {
        p = world.tick(&r, Some(p), at).await.unwrap();
    }
    let ended = world.safety(ME, &r, Some(&p)).await;
    assert_eq!((ended.ending, ended.undone), (Ending::Promoted, false));
    assert_eq!(world.live().stable, "42", "a promotion whose bake passed is not undone");
}
