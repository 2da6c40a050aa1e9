//! An operator's commands: pause, resume, approve, promote and abort.

use super::*;

#[tokio::test]
async fn a_paused_release_is_still_judged_but_does_not_advance_until_resumed() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    operator(&world, Command::Pause).await;

    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.stage, p.wait_seconds), (Status::Paused, 0, 60));
    assert!(p.reason.starts_with("Paused by jane at stage 1 of 3 (5%), bake done"), "{}", p.reason);
    assert_eq!(p.history.last().unwrap().by.as_deref(), Some("jane"), "a report names who paused it");
    let p = world.tick(&r, Some(p), T0 + 660).await.unwrap();
    assert_eq!((p.status, world.router.write_count()), (Status::Paused, 2), "only the pause was written");
    assert_eq!(p.history.last().unwrap().by, None, "the checks while paused are the judge's");

    operator(&world, Command::Resume).await;
    let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1));

    // Paused, and then unhealthy: the judge still rolls back.
    operator(&world, Command::Pause).await;
    world.metrics.set((1000.0, 200.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 780).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn an_approval_stage_waits_asks_the_team_once_and_goes_on_when_approved() {
    let world = World::new(stable_only());
    let mut r = release(gates());
    r.stages[1].approval = true;
    r.stages[1].approval_timeout_seconds = Some(3600);
    let mut p = world.tick(&r, None, T0).await.unwrap();
    p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!(p.stage, 1);

    let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
    assert_eq!((p.status, p.awaiting_since, p.wait_seconds), (Status::AwaitingApproval, Some(T0 + 1200), 60));
    assert!(p.reason.contains("coalmine approve ai-handler-42; rolls back without it in 1h00m"), "{}", p.reason);
    let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();
    assert_eq!(p.status, Status::AwaitingApproval);
    let sent = world.sent();
    assert_eq!(sent.len(), 1, "asked once");
    assert!(sent[0].attributes.contains(&("event", "awaiting_approval".into())));
    assert_eq!(sent[0].subject, "coalmine: ai-handler-42 on lambda:ai-handler:live waits for approval at 25%");

    operator(&world, Command::Approve).await;
    let p = world.tick(&r, Some(p), T0 + 1320).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 2));
    assert!(p.reason.contains("Approved by jane."), "{}", p.reason);
    assert_eq!(p.history.last().unwrap().by.as_deref(), Some("jane"));
    assert_eq!(world.live().stamp.unwrap().request, None, "carried out, then cleared");
}

#[tokio::test]
async fn no_approval_in_time_rolls_back() {
    let world = World::new(stable_only());
    let mut r = release(gates());
    r.stages[0].approval = true;
    r.stages[0].approval_timeout_seconds = Some(120);
    let p = world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!(p.status, Status::AwaitingApproval);
    let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::ApprovalTimeout)));
    assert!(p.reason.contains("no approval within 2m"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn promote_ends_the_bake_now_and_promote_full_ends_the_release_promoted() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    operator(&world, Command::Promote { full: false }).await;
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "10 minutes early");
    assert!(p.reason.contains("Promoted by jane."), "{}", p.reason);

    // Too little data is no reason to refuse an operator's promote; it says so.
    world.metrics.set((3.0, 0.0), (1000.0, 0.0));
    operator(&world, Command::Promote { full: true }).await;
    let p = world.tick(&r, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::Promoted);
    assert!(p.reason.starts_with("Promoted by jane (promote --full) from stage 2 of 3 (25%)"), "{}", p.reason);
    assert!(p.reason.contains("proceeding, as jane promoted it"), "{}", p.reason);
    let live = world.live();
    assert_eq!((live.stable.as_str(), live.canary_is_zero()), ("42", true));
    assert_eq!(live.stamp.unwrap().phase, Phase::Promoted);

    // An unhealthy canary is rolled back, whatever was asked.
    let world = World::new(stable_only());
    let p = world.tick(&r, None, T0).await.unwrap();
    operator(&world, Command::Promote { full: true }).await;
    world.metrics.set((1000.0, 200.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
}

#[tokio::test]
async fn an_abort_by_hand_ends_the_release_naming_who_and_why() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    control::abort(&world.deps(), &r, ME, "jane", "answers look truncated").await.unwrap();

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!(
        (p.status, p.rolled_back_by),
        (
            Status::RolledBack,
            Some(RolledBackBy::Operator { who: "jane".into(), why: Some("answers look truncated".into()) })
        )
    );
    assert_eq!(p.reason, "Rolled back at stage 1 of 3 (5%) by jane, by hand: answers look truncated");
    assert_eq!(p.history.last().unwrap().by.as_deref(), Some("jane"));
    assert_eq!(world.sent().len(), 1, "the abort told the team; the release does not again");
    // A later release of the target starts.
    let next = World { router: Router::with([(target(), world.live())]), ..World::new(stable_only()) };
    next.tick_as(OTHER, &r, None, T0 + 120).await.unwrap();
}
