//! End to end in the local AWS: the real stepper and rollback bootstraps as functions,
//! the real ASL as a state machine, one execution per release. Bakes are seconds long.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::StateValue;
use coalmine::Target;
use coalmine_tests::{poll, sample_event, unique, Canary, Deployed, Scene};
use serde_json::{json, Value};

const RUN: Duration = Duration::from_secs(90);

/// The real functions and state machine deployed, publishing to the scene's topic.
async fn deployed_scene() -> (Scene, Deployed) {
    let scene = Scene::connect().await;
    let deployed = scene.local.deploy(&scene.inbox.topic_arn).await;
    (scene, deployed)
}

/// A Lambda canary whose gate alarm is tagged with it (so the rollback function finds it
/// too) and starts in OK.
async fn lambda_canary(s: &Scene) -> (Target, String) {
    let Canary { target, alarm, .. } = s.lambda_canary(true).await;
    s.local.set_alarm(&alarm, StateValue::Ok).await;
    (target, alarm)
}

/// A release of version 2 behind `target`; `rest` gives the stages, checks and gates.
fn lambda_release(name: &str, target: &Target, rest: Value) -> Value {
    let Target::Lambda(a) = target else { unreachable!() };
    let mut release = json!({
        "release": name,
        "target": {"lambda": {"function": a.function, "alias": a.alias}},
        "canary_version": "2",
    });
    release.as_object_mut().unwrap().extend(rest.as_object().unwrap().clone());
    release
}

#[tokio::test]
async fn a_healthy_lambda_release_is_promoted() {
    let (s, deployed) = deployed_scene().await;
    let (target, alarm) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let release = lambda_release(
        "e2e-healthy",
        &target,
        json!({
            "stages": [{"percent": 5, "bake_seconds": 1}, {"percent": 25, "bake_seconds": 1},
                       {"percent": 50, "bake_seconds": 1}, {"percent": 100, "bake_seconds": 1}],
            "check_every_seconds": 1,
            "gates": {"alarms": [alarm], "max_error_rate": 0.05, "max_p95_latency_ms": 10000}
        }),
    );

    let execution = local.start_release(deployed, &release).await;
    let (status, error, cause, output) = local.finished(&execution, RUN).await;

    assert_eq!(status, "SUCCEEDED", "{error}: {cause}");
    assert_eq!(output["progress"]["status"], "promoted");
    let (stable, weights, _) = local.alias_state(&target).await;
    assert_eq!((stable.as_str(), weights.len()), ("2", 0));
    let advanced: Vec<f64> = output["progress"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "advanced")
        .map(|d| d["weight"].as_f64().unwrap())
        .collect();
    assert_eq!(advanced, [0.05, 0.25, 0.5, 1.0]);
}

#[tokio::test]
async fn an_alarm_mid_release_ends_the_execution_rolled_back_within_one_tick() {
    let (s, deployed) = deployed_scene().await;
    let (target, alarm) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let check_every = 2;
    let release = lambda_release(
        "e2e-alarm",
        &target,
        json!({
            "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 60}],
            "check_every_seconds": check_every,
            "gates": {"alarms": [alarm]}
        }),
    );
    let execution = local.start_release(deployed, &release).await;
    let at_five =
        poll(RUN, || async { local.alias_state(&target).await.1.get("2").copied().filter(|w| *w > 0.0) }).await;
    assert_eq!(at_five, Some(0.05), "the release reached its first stage");

    // The alarm fires; EventBridge delivers it to the rollback function.
    local.set_alarm(&alarm, StateValue::Alarm).await;
    let fired = Instant::now();
    local
        .invoke_async(&deployed.rollback_fn, &sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None))
        .await;
    let (status, error, cause, _) = local.finished(&execution, RUN).await;
    let took = fired.elapsed();

    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains("set to zero outside this release") || cause.contains("is ALARM"), "{cause}");
    // One tick: a wait of check_every, the tick itself, and the emulator's own latency.
    assert!(took < Duration::from_secs(check_every + 10), "took {took:?}");
    assert!(local.alias_state(&target).await.1.is_empty());
    let messages = s.inbox.receive(1, Duration::from_secs(10)).await;
    assert!(!messages.is_empty(), "the team was told");
    // Nothing raises it again: the execution has ended, so no tick is left to run, and
    // stepper_local shows that a late tick (a retry) would stop without writing.
}

#[tokio::test]
async fn a_healthy_sagemaker_release_is_promoted() {
    let (s, deployed) = deployed_scene().await;
    let (local, deployed) = (&s.local, &deployed);
    let endpoint = unique("ai-model");
    local.seed_sagemaker_canary(&endpoint, 0.0).await;
    let release = json!({
        "release": "e2e-model",
        "target": {"sagemaker": {"endpoint": endpoint, "stable_variant": "stable", "canary_variant": "canary"}},
        "stages": [{"percent": 10, "bake_seconds": 1}, {"percent": 50, "bake_seconds": 1}, {"percent": 100, "bake_seconds": 1}],
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05}
    });

    let execution = local.start_release(deployed, &release).await;
    let (status, error, cause, _) = local.finished(&execution, RUN).await;

    assert_eq!(status, "SUCCEEDED", "{error}: {cause}");
    let weights = local.variant_weights(&endpoint).await;
    assert_eq!((weights["stable"], weights["canary"]), (0.0, 1.0));
}

#[tokio::test]
async fn an_invalid_release_fails_before_any_traffic_moves() {
    let (s, deployed) = deployed_scene().await;
    let (target, _) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let (_, _, revision) = local.alias_state(&target).await;
    let release = lambda_release(
        "e2e-invalid",
        &target,
        json!({
            "canary_version": "$LATEST",
            "stages": [{"percent": 100, "bake_seconds": 1}],
            "check_every_seconds": 1
        }),
    );

    let execution = local.start_release(deployed, &release).await;
    let (status, error, cause, _) = local.finished(&execution, RUN).await;

    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "ReleaseFailed"), "{cause}");
    assert!(cause.contains("canary_version: must be a published version number, not $LATEST"), "{cause}");
    assert_eq!(local.alias_state(&target).await.2, revision, "the alias was never written");
}
