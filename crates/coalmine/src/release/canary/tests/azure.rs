//! An Azure ML endpoint: the same kind, its shadow a mirror Azure runs itself.

use super::*;
use crate::domain::metrics::{MetricSnapshot, SideMetrics};
use crate::domain::target::AzureMlDeployments;
use crate::rollback::{zero_canary, ZeroOutcome};

fn endpoint() -> Target {
    Target::Azureml(Box::new(AzureMlDeployments {
        subscription: "00000000-1111-2222-3333-444444444444".into(),
        resource_group: "ml-prod".into(),
        workspace: "ml-workspace".into(),
        endpoint: "chat-endpoint".into(),
        stable_deployment: Some("blue".into()),
        canary_deployment: "green".into(),
    }))
}

fn mirrored_release() -> Release {
    let release = Release {
        release: "chat-model-2".into(),
        target: endpoint(),
        canary_version: None,
        stages: vec![Stage::new(5.0, 600), Stage::new(25.0, 600), Stage::new(100.0, 300)],
        check_every_seconds: 60,
        gates: Gates { max_error_rate: Some(0.05), min_requests: 100, ..Gates::default() },
        shadow: Some(serde_json::from_value(serde_json::json!({"duration_seconds": 600, "sample": 0.2})).unwrap()),
        replay: None,
        cohorts: None,
    };
    release.validate().unwrap();
    release
}

fn world() -> World {
    let world = World::new(stable_only());
    let blue_only = Split {
        stable: "blue".into(),
        canary: Some("green".into()),
        canary_weight: 0.0,
        others_weight: 0.0,
        mirror: 0.0,
        revision: Some("etag-0".into()),
        stamp: None,
    };
    world.router.splits.lock().unwrap().insert(endpoint(), blue_only);
    world
}

fn live(world: &World) -> Split {
    world.router.split(&endpoint())
}

/// What Azure Monitor showed: the mirrored requests the candidate answered, and the
/// stable's live ones.
fn monitored(world: &World, candidate: (f64, f64), stable: (f64, f64)) {
    let side = |(requests, errors): (f64, f64)| SideMetrics {
        requests,
        errors,
        p95_ms: Some(120.0),
        ..SideMetrics::default()
    };
    world.metrics.put(MetricSnapshot { canary: side(candidate), stable: side(stable), pinned: None });
}

#[tokio::test]
async fn the_mirror_starts_with_the_stamp_and_ends_in_the_write_that_enters_the_first_stage() {
    let world = world();
    let release = mirrored_release();
    let p = world.tick(&release, None, T0).await.unwrap();
    assert!(p.kind.shadow.is_some());
    assert!(
        p.reason.starts_with("Shadowing: deployment green answers copies of 20% of deployment blue's live requests"),
        "{}",
        p.reason
    );
    let shadowing = live(&world);
    assert_eq!((shadowing.canary_weight, shadowing.mirror), (0.0, 0.2), "mirrored, serving no user");
    assert_eq!(shadowing.stamp.as_ref().unwrap().stage, Some((0, 3)));
    assert_eq!(world.router.write_count(), 1, "the mirror and the stamp are one write");
    assert!(world.router.feeds.lock().unwrap().is_empty(), "no shadow function: Azure mirrors");

    monitored(&world, (2_000.0, 2.0), (10_000.0, 10.0));
    let p = world.tick(&release, Some(p), T0 + 300).await.unwrap();
    assert_eq!(p.status, Status::Baking);
    assert!(p.reason.contains("2000 requests mirrored to the candidate beside 10000 served"), "{}", p.reason);
    let p = world.tick(&release, Some(p), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.kind.shadow.clone()), (Status::Advanced, None), "{}", p.reason);
    let first = live(&world);
    assert_eq!((first.canary_weight, first.mirror), (0.05, 0.0), "live at 5%, mirrored no more");
    assert_eq!(world.router.write_count(), 2);
    assert_eq!(p.kind.last_written.mirror, 0.0);
}

#[tokio::test]
async fn a_candidate_failing_its_mirrored_requests_ends_before_any_user_is_served_mirror_and_all() {
    let world = world();
    let release = mirrored_release();
    let p = world.tick(&release, None, T0).await.unwrap();
    monitored(&world, (2_000.0, 400.0), (10_000.0, 10.0));
    let p = world.tick(&release, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
    assert!(p.reason.contains("No user was served by the candidate"), "{}", p.reason);
    let after = live(&world);
    assert_eq!((after.canary_weight, after.mirror), (0.0, 0.0));
    assert!(matches!(after.stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Health)));
    let writes = world.router.writes.lock().unwrap().clone();
    assert!(writes.iter().all(|(_, w)| w.canary_weight == 0.0), "no write ever gave the candidate users");
}

#[tokio::test]
async fn an_alert_during_the_shadow_stops_the_mirror_as_it_would_zero_a_canary() {
    let world = world();
    let release = mirrored_release();
    let p = world.tick(&release, None, T0).await.unwrap();
    let by = RolledBackBy::Alarm("chat-green-5xx".into());
    let outcome = zero_canary(&world.router, &endpoint(), &by, Owner::Alarm, None).await.unwrap();
    assert!(matches!(outcome, ZeroOutcome::RolledBack { .. }), "a mirrored canary is not already zero");
    assert_eq!(live(&world).mirror, 0.0);
    let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert!(p.reason.contains("chat-green-5xx"), "{}", p.reason);
}
