//! A stage: baking, advancing, promoting, rolling back on gates and metrics, holding for
//! evidence, evidence-driven bakes, dry runs, and what one execution can hold.

use super::*;

#[tokio::test]
async fn a_healthy_release_bakes_advances_promotes() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.wait_seconds, world.router.write_count()), (Status::Baking, 60, 1));
    assert_eq!(world.metrics.windows().last(), Some(&(T0, T0 + 60)), "judged over the stage so far");

    let p = world.tick(&r, Some(p), T0 + 570).await.unwrap();
    assert_eq!((p.status, p.wait_seconds), (Status::Baking, 30), "never waits past the bake");

    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.stage, p.weight, p.stage_entered_at), (Status::Advanced, 1, 0.25, T0 + 600));
    assert_eq!(world.live().canary_weight, 0.25);
    assert_eq!(world.live().stamp.unwrap().stage, Some((2, 3)));

    let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 2));
    let live = world.live();
    assert_eq!((live.stable.as_str(), live.canary), ("42", None), "Lambda at 100%: the alias points at the canary");
    let stamp = live.stamp.unwrap();
    assert_eq!((stamp.stable.as_str(), stamp.phase), ("41", Phase::Live), "the stable to restore is recorded");

    let p = world.tick(&r, Some(p), T0 + 1500).await.unwrap();
    assert_eq!((p.status, p.wait_seconds), (Status::Promoted, 0));
    assert!(
        p.reason.starts_with("Promoted: stage 100% baked; healthy: 1000 canary requests; errors 0.10% vs 0.10%"),
        "{}",
        p.reason
    );
    assert_eq!(world.live().stamp.unwrap().phase, Phase::Promoted, "an alarm no longer reverts it");
    assert_eq!(world.router.write_count(), 4, "three stages and the promotion's record");
    assert!(world.sent().is_empty());
    assert_eq!(
        p.history.iter().map(|d| d.status).collect::<Vec<_>>(),
        [Status::Advanced, Status::Baking, Status::Baking, Status::Advanced, Status::Advanced, Status::Promoted]
    );

    let err = world.tick(&r, Some(p), T0 + 1600).await.unwrap_err();
    assert!(err.to_string().contains("already ended promoted"), "{err}");
}

#[tokio::test]
async fn a_stage_with_no_canary_traffic_is_never_healthy() {
    let world = World::new(stable_only());
    world.metrics.set((-0.0, 0.0), (20_000.0, 20.0));
    let r = release(Gates { max_hold_seconds: 120, ..gates() });
    let p = world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!(p.status, Status::Holding);
    assert_eq!(p.reason, "inconclusive: 0 canary requests, fewer than min_requests 100");
    let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn a_gate_alarm_rolls_back_with_the_shared_code_and_says_so() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.alarms.set("errors", AlarmState::Alarm);
    let fetched_at_start = world.metrics.windows().len();

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::GateAlarm)));
    assert_eq!(p.reason, "Rolled back on a gate alarm at stage 1 of 3 (5%): alarm errors is ALARM");
    assert_eq!((world.live().canary_weight, world.live().stable.as_str()), (0.0, "41"));
    assert_eq!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::GateAlarm));
    let sent = world.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].attributes.contains(&("release", "ai-handler-42".into())));
    assert_eq!(sent[0].subject, "coalmine: ai-handler-42 rolled back on lambda:ai-handler:live (gate alarm)");
    for line in [
        "one of its gate alarms fired",
        "Stage:     stage 1 of 3 (5%)",
        "Kind:      gate_alarm",
        "Before:    version 41 at 95%, canary version 42 at 5%",
        "After:     version 41 serves all traffic, no canary",
        "Why:       alarm errors is ALARM",
        "executions/details/arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42",
        "will not start until it is OK",
    ] {
        assert!(sent[0].body.contains(line), "lacks {line:?}:\n{}", sent[0].body);
    }
    assert_eq!(world.metrics.windows().len(), fetched_at_start, "an alarm needs no metrics");
}

#[tokio::test]
async fn bad_metrics_roll_back_with_evidence() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((1000.0, 80.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::Health)));
    let evidence = p.history.last().unwrap().evidence.as_ref().unwrap();
    assert_eq!(evidence["metrics"]["canary"]["errors"], 80.0);
    assert!(
        p.reason.contains("canary error rate 8.00% over 1000 requests, above max_error_rate 5.00%"),
        "{}",
        p.reason
    );
    let body = &world.sent()[0].body;
    assert!(body.contains("its canary failed a health check"), "{body}");
    assert!(
        body.contains(
            "Evidence:  canary 1000 requests, 80 errors (8.00%), p95 n/a; stable 20000 requests, 20 errors (0.10%)"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn insufficient_data_holds_then_fails_safe() {
    let world = World::new(stable_only());
    let r = release(Gates { max_hold_seconds: 300, ..gates() });
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((10.0, 0.0), (1000.0, 0.0));

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::Baking, "mid-bake, too little data is no reason to stop");
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.holding_since, p.wait_seconds), (Status::Holding, Some(T0 + 600), 60));
    let p = world.tick(&r, Some(p), T0 + 840).await.unwrap();
    assert_eq!(p.status, Status::Holding);
    assert_eq!(world.live().canary_weight, 0.05, "holding keeps the weight");
    let p = world.tick(&r, Some(p), T0 + 900).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert!(p.reason.contains("fewer than min_requests 100, still after holding 300 s"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn insufficient_data_policies_rollback_and_proceed() {
    for (policy, expected) in
        [(OnInsufficientData::Rollback, Status::RolledBack), (OnInsufficientData::Proceed, Status::Advanced)]
    {
        let world = World::new(stable_only());
        let r = release(Gates { on_insufficient_data: policy, ..gates() });
        let p = world.tick(&r, None, T0).await.unwrap();
        world.metrics.set((10.0, 0.0), (1000.0, 0.0));
        let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
        assert_eq!(p.status, expected, "{policy:?}");
        if policy == OnInsufficientData::Proceed {
            assert!(p.reason.contains("proceeding, as on_insufficient_data says"), "never 'healthy': {}", p.reason);
        }
    }
}

#[tokio::test]
async fn history_stays_bounded() {
    let world = World::new(stable_only());
    let r = Release { stages: vec![Stage::new(100.0, 100_000)], ..release(gates()) };
    let mut p = world.tick(&r, None, T0).await.unwrap();
    for i in 1..=100 {
        p = world.tick(&r, Some(p), T0 + i * 60).await.unwrap();
    }
    assert_eq!(p.history.len(), HISTORY_LIMIT);
    assert_eq!(p.history_dropped, 101 - HISTORY_LIMIT as u64);
    assert_eq!(p.history.last().unwrap().at, T0 + 6000);
    assert!(serde_json::to_string(&p).unwrap().len() < 64 * 1024);
}

#[tokio::test]
async fn the_payload_is_the_execution_and_the_state_and_round_trips() {
    let world = World::new(stable_only());
    let deps = world.deps();
    let state = serde_json::to_value(release(gates())).unwrap();
    let out = tick_payload(
        &serde_json::json!({"execution": ME, "state": state}),
        &deps,
        &crate::memory::Claims::default(),
        T0,
    )
    .await
    .unwrap();
    assert_eq!(out["progress"]["status"], "advanced");
    assert_eq!(out["release"], "ai-handler-42");
    let again = tick_payload(
        &serde_json::json!({"execution": ME, "state": out}),
        &deps,
        &crate::memory::Claims::default(),
        T0 + 60,
    )
    .await
    .unwrap();
    assert_eq!(again["progress"]["status"], "baking");

    let mut edited = again.clone();
    edited["progress"]["stage"] = "two".into();
    let err = tick_payload(
        &serde_json::json!({"execution": ME, "state": edited}),
        &deps,
        &crate::memory::Claims::default(),
        T0 + 60,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("progress:"), "{err}");

    let err = tick_payload(&again, &deps, &crate::memory::Claims::default(), T0 + 60).await.unwrap_err();
    assert!(err.to_string().contains("start a release with StartExecution"), "{err}");

    let mut failed = again.clone();
    failed["canary_version"] = "$LATEST".into();
    failed["failure"] = serde_json::json!({"Error": "InvalidRelease", "Cause": "x"});
    let ended = tick_payload(
        &serde_json::json!({"execution": ME, "state": failed}),
        &deps,
        &crate::memory::Claims::default(),
        T0,
    )
    .await
    .unwrap();
    assert_eq!(ended["ending"], "invalid_release");
    assert!(ended["cause"].as_str().unwrap().contains("$LATEST"), "{ended}");
}

#[tokio::test]
async fn an_evidence_driven_stage_advances_once_its_tests_rule_out_a_regression() {
    let world = World::new(stable_only());
    let r = evidence_driven(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    // 20 000 canary requests at the stable's 0.1%: enough to rule out twice it.
    world.metrics.set((20_000.0, 20.0), (380_000.0, 380.0));
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "{}", p.reason);
    assert!(
        p.reason.starts_with("Stage 5% concluded in 1m, its tests ruling out twice their tolerance; now at 25%."),
        "{}",
        p.reason
    );
    // The same canary on a thin stage: healthy, but it cannot yet rule out a doubling.
    world.metrics.set((1000.0, 1.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::Baking, "{}", p.reason);
    assert!(p.reason.starts_with("healthy"), "{}", p.reason);
}

#[tokio::test]
async fn an_evidence_driven_stage_at_its_longest_bake_follows_on_insufficient_data() {
    let world = World::new(stable_only());
    let r = evidence_driven(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((1000.0, 1.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 1740).await.unwrap();
    assert_eq!((p.status, p.wait_seconds), (Status::Baking, 60), "{}", p.reason);
    let p = world.tick(&r, Some(p), T0 + 1800).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Holding, 0), "{}", p.reason);
    assert!(
        p.reason.starts_with(
            "inconclusive after 30m: errors could not yet rule out twice the tolerance; so far 1000 canary requests"
        ),
        "{}",
        p.reason
    );
    // Holding is still judging: evidence that comes in lets it go on.
    world.metrics.set((20_000.0, 20.0), (380_000.0, 380.0));
    let p = world.tick(&r, Some(p), T0 + 1860).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "{}", p.reason);

    for (policy, expected) in
        [(OnInsufficientData::Rollback, Status::RolledBack), (OnInsufficientData::Proceed, Status::Advanced)]
    {
        let world = World::new(stable_only());
        let r = evidence_driven(Gates { on_insufficient_data: policy, ..gates() });
        let p = world.tick(&r, None, T0).await.unwrap();
        world.metrics.set((1000.0, 1.0), (20_000.0, 20.0));
        let p = world.tick(&r, Some(p), T0 + 1800).await.unwrap();
        assert_eq!(p.status, expected, "{policy:?}: {}", p.reason);
    }
}

#[tokio::test]
async fn an_evidence_driven_stage_still_rolls_back_on_evidence_against_the_canary() {
    let world = World::new(stable_only());
    let r = evidence_driven(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((20_000.0, 200.0), (380_000.0, 380.0));
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn a_dry_run_judges_says_and_never_acts_and_the_team_hears_where_it_would_have() {
    let world = World::new(stable_only());
    let r = release(Gates { enforce: false, ..gates() });
    let p = world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 300).await.unwrap();
    assert_eq!(p.dry_run, None, "nothing found yet");
    // Ten times the stable's error rate from the second stage on.
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    world.metrics.set((1000.0, 10.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 840).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Baking, 1), "{}", p.reason);
    assert!(p.reason.contains("dry run: would roll back: canary error rate"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.25, "a dry run never moves traffic");
    let found = p.dry_run.clone().unwrap();
    assert_eq!((found.stage, found.weight, found.after_seconds, found.at), (1, 0.25, 240, T0 + 840));
    assert_eq!(found.on, ["errors"], "1% is within max_error_rate 5%");

    let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 1500).await.unwrap();
    assert_eq!(p.status, Status::Promoted, "{}", p.reason);
    assert!(
        p.reason.contains(". Dry run: would have rolled back at stage 2 (25%), 4m in, on errors (canary"),
        "{}",
        p.reason
    );
    assert_eq!(p.dry_run.as_ref().map(|d| d.at), Some(T0 + 840), "the first finding is kept");
    let sent = world.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].subject,
        "coalmine: ai-handler-42 promoted on lambda:ai-handler:live; a dry-run gate would have rolled it back"
    );
    assert!(
        sent[0].body.contains("would have rolled back at stage 2 (25%), 4m in, on errors (canary error rate"),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn a_rollback_message_says_what_a_dry_run_found_before() {
    let world = World::new(stable_only());
    let mut g = gates();
    g.custom = vec![crate::domain::metrics::CustomGate {
        max_increase_ratio: Some(0.2),
        enforce: false,
        dimensions: [("Version".to_owned(), "{version}".to_owned())].into(),
        ..crate::domain::metrics::CustomGate::new("AIService", "SchemaFailures", "Sum")
    }];
    let r = release(g);
    let p = world.tick(&r, None, T0).await.unwrap();
    let mut snapshot = world.metrics.snapshot.lock().unwrap().clone();
    snapshot.canary.custom = vec![Some(60.0)];
    snapshot.stable.custom = vec![Some(20.0)];
    world.metrics.put(snapshot);
    let p = world.tick(&r, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::Baking, "{}", p.reason);
    assert_eq!(p.dry_run.as_ref().map(|d| d.on.clone()), Some(vec!["SchemaFailures".to_owned()]), "{}", p.reason);
    world.alarms.set("errors", AlarmState::Alarm);
    let p = world.tick(&r, Some(p), T0 + 180).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    let sent = world.sent();
    assert!(
        sent[0].body.contains("would have rolled back at stage 1 (5%), 2m in, on SchemaFailures"),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn the_most_stages_a_release_may_have_keep_its_state_far_inside_what_step_functions_passes() {
    use crate::release::core::limits::MAX_STAGES;
    let world = World::new(stable_only());
    let (p, size) = world.state_at_the_most_stages(&mut release(gates())).await;
    assert!(size < 128 * 1024, "{size} bytes of the 256 KiB Step Functions passes from task to task");
    assert_eq!(p.samples.len(), MAX_STAGES);
}

#[tokio::test]
async fn a_release_that_has_spent_the_checks_an_execution_holds_is_rolled_back_not_left_to_step_functions() {
    let world = World::new(stable_only());
    let r = release(gates());
    let mut p = world.tick(&r, None, T0).await.unwrap();
    // Paused for days at one check a minute: the execution's history is nearly full.
    p.ticks = crate::release::core::limits::MAX_TICKS;
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by.clone()), (Status::RolledBack, Some(RolledBackBy::Safety)), "{}", p.reason);
    assert!(p.reason.contains("the most one Step Functions execution holds"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
    assert_eq!(world.sent().len(), 1, "the team is told");
}
