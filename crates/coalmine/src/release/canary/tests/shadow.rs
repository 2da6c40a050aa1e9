//! A Lambda shadow before the first stage: the candidate answers copies of live requests,
//! judged on errors, latency and its disagreement with the stable.

use super::*;
use crate::domain::metrics::{MetricSnapshot, SideMetrics};
use crate::release::canary::shadow_spec::Shadow;

fn shadowed_release() -> Release {
    let mut release = release(gates());
    release.shadow = Some(
        serde_json::from_value(serde_json::json!({
            "duration_seconds": 600,
            "sample": 0.5,
            "compare": {"label": {"pointer": "/label"}},
            "max_disagreement_increase_ratio": 0.5,
        }))
        .unwrap(),
    );
    release.validate().unwrap();
    release
}

fn shadow(release: &Release) -> &Shadow {
    release.shadow.as_ref().unwrap()
}

/// What the shadow function counted: shadowed requests, errors and disagreements on
/// each side (the stable's being it asked again).
fn counted(world: &World, candidate: (f64, f64, f64), stable: (f64, f64, f64)) {
    let side = |(shadowed, errors, disagreements): (f64, f64, f64)| SideMetrics {
        requests: shadowed,
        errors,
        p95_ms: Some(120.0),
        custom: vec![Some(disagreements)],
        custom_counts: vec![Some(shadowed - errors)],
        ..SideMetrics::default()
    };
    world.metrics.put(MetricSnapshot { canary: side(candidate), stable: side(stable), pinned: None });
}

#[tokio::test]
async fn a_shadow_moves_no_traffic_opens_its_feed_and_enters_the_first_stage_when_it_passes() {
    let world = World::new(stable_only());
    let release = shadowed_release();
    let p = world.tick(&release, None, T0).await.unwrap();
    assert_eq!(p.status, Status::Advanced);
    assert!(p.kind.shadow.is_some());
    assert!(
        p.reason.starts_with("Shadowing: version 42 answers copies of 50% of version 41's live requests for 10m"),
        "{}",
        p.reason
    );
    let live = world.live();
    assert_eq!((live.canary_weight, live.stamp.as_ref().unwrap().stage), (0.0, Some((0, 3))), "owned, not moved");
    let feed = release.shadow_feed("41").unwrap();
    assert_eq!(world.router.feeds.lock().unwrap().clone(), vec![feed.filter_name()]);

    // Healthy answers all along: 2 000 shadowed, the candidate disagreeing as often as
    // the stable does with itself.
    counted(&world, (2_000.0, 2.0, 100.0), (2_000.0, 2.0, 100.0));
    let p = world.tick(&release, Some(p), T0 + 300).await.unwrap();
    assert_eq!((p.status, world.live().canary_weight), (Status::Baking, 0.0));
    assert!(p.reason.starts_with("Shadowing: "), "{}", p.reason);

    let p = world.tick(&release, Some(p), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.stage, p.kind.shadow.clone()), (Status::Advanced, 0, None), "{}", p.reason);
    assert!(p.reason.starts_with("Shadow passed (") && p.reason.ends_with("now at 5%"), "{}", p.reason);
    assert!(p.samples.is_empty(), "the first stage judges live traffic afresh");
    let shadowed: Vec<bool> = p.history.iter().map(|d| d.shadow).collect();
    assert_eq!(shadowed, [true, true, false], "the history says which decisions the shadow made");
    assert_eq!(p.stage_entered_at, T0 + 600);
    let live = world.live();
    assert_eq!((live.canary.as_deref(), live.canary_weight), (Some("42"), 0.05));
    assert!(world.router.feeds.lock().unwrap().is_empty(), "the feed is removed once the shadow is over");
    let journal = world.router.journal.entries();
    let opened = journal.iter().position(|e| e.starts_with("open_feed")).unwrap();
    let closed = journal.iter().position(|e| e.starts_with("close_feed")).unwrap();
    assert!(opened < closed, "{journal:?}");
}

#[tokio::test]
async fn a_candidate_that_is_the_stable_or_missing_is_refused_before_any_feed_or_write() {
    let is_stable = World::new(Split { revision: Some("rev-0".into()), ..Split::stable_only("42", None) });
    let refused = is_stable.tick(&shadowed_release(), None, T0).await.unwrap_err();
    assert!(refused.to_string().contains("42 is already the stable version"), "{refused}");

    let missing = World::new(stable_only());
    missing.router.missing_versions.lock().unwrap().push("42".into());
    let refused = missing.tick(&shadowed_release(), None, T0).await.unwrap_err();
    assert!(matches!(refused, Error::InvalidRelease(_)), "{refused}");
    for world in [&is_stable, &missing] {
        assert_eq!(world.router.write_count(), 0, "nothing written");
        assert!(world.router.feeds.lock().unwrap().is_empty(), "no feed opened");
    }
    let mut latest = shadowed_release();
    latest.canary_version = Some("$LATEST".into());
    assert!(latest.validate().unwrap_err().to_string().contains("not $LATEST"));
}

#[tokio::test]
async fn a_release_in_its_shadow_is_in_flight_for_any_other() {
    let world = World::new(stable_only());
    world.tick(&shadowed_release(), None, T0).await.unwrap();
    let refused = world.tick_as(OTHER, &release(gates()), None, T0 + 60).await.unwrap_err();
    assert!(refused.to_string().contains("in its shadow"), "{refused}");
    assert_eq!(world.router.write_count(), 1, "only the shadow's own stamp");
}

#[tokio::test]
async fn a_log_group_that_cannot_take_the_feed_refuses_the_release_before_any_write() {
    let world = World::new(stable_only());
    world.router.feed_failures.lock().unwrap().push_back(Error::Refused("shadow: full".into()));
    let refused = world.tick(&shadowed_release(), None, T0).await.unwrap_err();
    assert!(matches!(refused, Error::Refused(ref why) if why == "shadow: full"), "{refused}");
    assert_eq!(world.router.write_count(), 0);
    assert!(world.router.feeds.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_evidence_driven_shadow_passes_as_soon_as_its_tests_conclude() {
    let world = World::new(stable_only());
    let mut release = shadowed_release();
    release.shadow.as_mut().unwrap().until_conclusive = true;
    release.validate().unwrap();
    let p = world.tick(&release, None, T0).await.unwrap();
    // Plenty of agreeing answers: every test rules out twice its tolerance at once.
    counted(&world, (50_000.0, 50.0, 2_500.0), (50_000.0, 50.0, 2_500.0));
    let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
    assert_eq!(
        (p.status, p.kind.shadow.clone(), world.live().canary_weight),
        (Status::Advanced, None, 0.05),
        "{}",
        p.reason
    );

    let mut fixed = release.clone();
    fixed.gates.enforce = false;
    assert!(fixed.validate().unwrap_err().to_string().contains("shadow.until_conclusive"));
}

#[tokio::test]
async fn a_candidate_that_disagrees_beyond_the_noise_floor_never_serves_a_user() {
    let world = World::new(stable_only());
    let release = shadowed_release();
    let p = world.tick(&release, None, T0).await.unwrap();
    // It disagrees with production on 30% of requests; production with itself on 5%.
    counted(&world, (2_000.0, 0.0, 600.0), (2_000.0, 0.0, 100.0));
    let example = crate::domain::shadow::Example {
        request_id: "57ec".into(),
        request: r#"{"q":1}"#.into(),
        stable: r#"{"label":"a"}"#.into(),
        candidate: r#"{"label":"b"}"#.into(),
    };
    world.router.examples.lock().unwrap().push(example.clone());
    let p = world.tick(&release, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.kind.shadow.as_ref().unwrap().examples, [example], "kept for coalmine status");
    assert!(
        p.reason.contains("2000 requests shadowed; disagreeing with the live answer: candidate 30.0% of 2000, stable asked again 5.0% of 2000"),
        "{}",
        p.reason
    );

    assert_eq!((p.status, p.rolled_back_by.clone()), (Status::RolledBack, Some(RolledBackBy::Health)));
    assert!(p.reason.contains("at the shadow"), "{}", p.reason);
    assert!(p.reason.contains("No user was served by the candidate"), "{}", p.reason);
    assert!(p.reason.contains("Disagreements"), "names the gate: {}", p.reason);
    let live = world.live();
    assert_eq!((live.canary.as_deref(), live.canary_weight), (None, 0.0));
    assert!(matches!(live.stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Health)), "no release climbs again");
    assert!(world.router.writes.lock().unwrap().iter().all(|(_, s)| s.canary_weight == 0.0), "never any weight");
    assert!(world.router.feeds.lock().unwrap().is_empty());
    let [message] = world.sent().try_into().unwrap();
    assert!(message.body.contains("No user was served by the candidate"), "{}", message.body);
}

#[tokio::test]
async fn a_candidate_that_fails_requests_is_caught_by_the_error_test_in_the_shadow() {
    let world = World::new(stable_only());
    let release = shadowed_release();
    let p = world.tick(&release, None, T0).await.unwrap();
    counted(&world, (1_000.0, 200.0, 0.0), (1_000.0, 1.0, 0.0));
    let p = world.tick(&release, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert!(p.reason.to_lowercase().contains("error"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn an_abort_during_the_shadow_removes_the_feed_and_the_next_check_ends_the_release() {
    let world = World::new(stable_only());
    let release = shadowed_release();
    let p = world.tick(&release, None, T0).await.unwrap();
    assert_eq!(world.router.feeds.lock().unwrap().len(), 1);

    control::abort(&world.deps(), &release, ME, "jane", "wrong model").await.unwrap();
    assert!(world.router.feeds.lock().unwrap().is_empty(), "abort removes the feed at once");

    let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn a_failed_tick_during_the_shadow_is_undone_by_the_safety_rollback_feed_and_all() {
    let world = World::new(stable_only());
    let release = shadowed_release();
    let p = world.tick(&release, None, T0).await.unwrap();
    let outcome = world.safety(ME, &release, Some(&p)).await;
    assert!(outcome.undone, "{}", outcome.cause);
    assert!(world.router.feeds.lock().unwrap().is_empty());
    assert!(matches!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Safety)));
}

#[tokio::test]
async fn a_retried_first_tick_picks_up_the_shadow_it_started() {
    let world = World::new(stable_only());
    let release = shadowed_release();
    world.router.feed_failures.lock().unwrap().push_back(Error::Service {
        operation: "logs:PutSubscriptionFilter",
        detail: "ThrottlingException (HTTP 400)".into(),
        retryable: true,
    });
    assert!(world.tick(&release, None, T0).await.is_err(), "the feed did not open: the tick fails");
    let p = world.tick(&release, None, T0 + 5).await.unwrap();
    assert!(p.kind.shadow.is_some());
    assert_eq!(world.router.feeds.lock().unwrap().len(), 1);
    assert_eq!(world.router.write_count(), 1, "the stamp is written once");
    assert_eq!(shadow(&release).duration_seconds, 600);
}
