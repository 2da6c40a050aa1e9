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

/// Stages of one-second bakes, checked every second, gated on `alarm` and on metrics.
fn quick(stages: &[u32], alarm: &str) -> Value {
    json!({
        "stages": stages.iter().map(|p| json!({"percent": p, "bake_seconds": 1})).collect::<Vec<_>>(),
        "check_every_seconds": 1,
        "gates": {"alarms": [alarm], "max_error_rate": 0.05, "max_p95_latency_ms": 10000, "min_requests": 50}
    })
}

#[tokio::test]
async fn a_healthy_lambda_release_is_promoted() {
    let (s, deployed) = deployed_scene().await;
    let (target, alarm) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let _traffic = local.pump_healthy_traffic(&target, "2").await;
    let release = lambda_release("e2e-healthy", &target, quick(&[5, 25, 50, 100], &alarm));

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
    assert!(
        cause.starts_with(&format!("Rolled back by the rollback function on alarm {alarm}, at stage 1 of 2 (5%)")),
        "{cause}"
    );
    // One tick: a wait of check_every, the tick itself, and the emulator's own latency.
    assert!(took < Duration::from_secs(check_every + 10), "took {took:?}");
    assert!(local.alias_state(&target).await.1.is_empty());
    let messages = s.inbox.receive(1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1, "the team was told once, by the rollback function");
    assert_eq!(messages[0].attributes.get("release").map(String::as_str), Some("e2e-alarm"));
    assert!(messages[0].message.contains("Stage:     1 of 2"), "{}", messages[0].message);
    assert!(s.inbox.drain(Duration::from_secs(3)).await.is_empty(), "the stepper does not announce it again");
}

#[tokio::test]
async fn an_alarm_during_the_final_bake_puts_the_previous_version_back_at_once() {
    let (s, deployed) = deployed_scene().await;
    let (target, alarm) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let _traffic = local.pump_healthy_traffic(&target, "2").await;
    let release = lambda_release(
        "e2e-final",
        &target,
        json!({
            "stages": [{"percent": 5, "bake_seconds": 1}, {"percent": 100, "bake_seconds": 600}],
            "check_every_seconds": 30,
            "gates": {"alarms": [alarm], "max_error_rate": 0.05, "min_requests": 50}
        }),
    );
    let execution = local.start_release(deployed, &release).await;
    let promoted = poll(RUN, || async { (local.alias_state(&target).await.0 == "2").then_some(()) }).await;
    assert!(promoted.is_some(), "the release reached 100%: the alias serves version 2");

    local.set_alarm(&alarm, StateValue::Alarm).await;
    local
        .invoke_async(&deployed.rollback_fn, &sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None))
        .await;
    // The rollback function alone puts version 1 back: the stepper's next check is 30 s away.
    let fired = Instant::now();
    let restored =
        poll(Duration::from_secs(20), || async { (local.alias_state(&target).await.0 == "1").then_some(()) }).await;
    assert!(restored.is_some(), "version 1 serves again");
    assert!(fired.elapsed() < Duration::from_secs(20));
    let messages = s.inbox.receive(1, Duration::from_secs(10)).await;
    assert_eq!(messages[0].event(), "rolled_back");
    assert!(
        messages[0].message.contains("version 2 had been promoted and served all traffic; version 1 serves again"),
        "{}",
        messages[0].message
    );

    let (status, error, cause, _) = local.finished(&execution, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains(&format!("on alarm {alarm}, at stage 2 of 2 (100%)")), "{cause}");
    assert_eq!(local.alias_state(&target).await.0, "1", "nothing raised it again");
}

#[tokio::test]
async fn after_a_release_ends_promoted_an_alarm_no_longer_reverts_it() {
    let (s, deployed) = deployed_scene().await;
    let (target, alarm) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let _traffic = local.pump_healthy_traffic(&target, "2").await;
    let release = lambda_release("e2e-done", &target, quick(&[100], &alarm));
    let execution = local.start_release(deployed, &release).await;
    let (status, error, cause, _) = local.finished(&execution, RUN).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}");

    local.set_alarm(&alarm, StateValue::Alarm).await;
    local
        .invoke_async(&deployed.rollback_fn, &sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None))
        .await;
    let messages = s.inbox.receive(1, Duration::from_secs(20)).await;

    assert_eq!(messages[0].event(), "already_zero", "{}", messages[0].message);
    assert!(
        messages[0].message.contains("ended promoted, so the alarm no longer reverts it"),
        "{}",
        messages[0].message
    );
    assert_eq!(local.alias_state(&target).await.0, "2");
}

#[tokio::test]
async fn a_second_execution_of_a_running_release_is_refused_and_touches_nothing() {
    let (s, deployed) = deployed_scene().await;
    let (target, alarm) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let _traffic = local.pump_healthy_traffic(&target, "2").await;
    let release = lambda_release(
        "e2e-twice",
        &target,
        json!({
            "stages": [{"percent": 5, "bake_seconds": 6}, {"percent": 100, "bake_seconds": 1}],
            "check_every_seconds": 1,
            "gates": {"alarms": [alarm], "max_error_rate": 0.05, "min_requests": 50}
        }),
    );
    let first = local.start_release(deployed, &release).await;
    let at_five =
        poll(RUN, || async { local.alias_state(&target).await.1.get("2").copied().filter(|w| *w > 0.0) }).await;
    assert_eq!(at_five, Some(0.05));

    // A CI retry, a double click: the same release again, a few seconds later.
    let second = local.start_release(deployed, &release).await;
    let (status, error, cause, _) = local.finished(&second, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "InvalidRelease"), "{cause}");
    assert!(cause.starts_with("Invalid release, nothing moved: refused: "), "{cause}");
    // Refused by its claim on the target, before it read or moved anything.
    let holder = first.split(":execution:").nth(1).unwrap();
    assert!(cause.contains("another release is in flight on lambda:") && cause.contains(holder), "{cause}");
    assert_eq!(local.alias_state(&target).await.1.get("2"), Some(&0.05), "the first release's canary is untouched");

    let (status, error, cause, _) = local.finished(&first, RUN).await;
    assert_eq!(status, "SUCCEEDED", "the first goes on to promotion: {error}: {cause}");
    assert_eq!(local.alias_state(&target).await.0, "2");
    assert!(s.inbox.drain(Duration::from_secs(2)).await.is_empty(), "nobody was told of a rollback");
}

#[tokio::test]
async fn a_release_never_starts_into_a_firing_alarm() {
    let (s, deployed) = deployed_scene().await;
    let (target, alarm) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    local.set_alarm(&alarm, StateValue::Alarm).await;
    let (_, _, revision) = local.alias_state(&target).await;

    let execution = local.start_release(deployed, &lambda_release("e2e-fire", &target, quick(&[100], &alarm))).await;
    let (status, error, cause, _) = local.finished(&execution, RUN).await;

    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "InvalidRelease"), "{cause}");
    assert!(cause.contains(&format!("gate alarm {alarm} is ALARM")), "{cause}");
    assert_eq!(local.alias_state(&target).await.2, revision, "the alias was never written");
}

#[tokio::test]
async fn a_tick_that_fails_after_its_write_is_undone_by_the_safety_rollback() {
    let (s, deployed) = deployed_scene().await;
    let (target, alarm) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let release = lambda_release("e2e-crash", &target, quick(&[5, 100], &alarm));
    // The first tick of execution NAME wrote stage 1 and its answer was lost: only the
    // alias's stamp knows. The execution's input then fails its next tick for good.
    let name = unique("crashed");
    let first_tick = json!({"execution": deployed.execution_arn(&name), "state": release});
    coalmine::release::tick_payload(&first_tick, &s.step_deps(), &coalmine::memory::Claims::default(), 0)
        .await
        .unwrap();
    assert_eq!(local.alias_state(&target).await.1.get("2"), Some(&0.05));
    let mut lost = release.clone();
    lost["progress"] = json!("lost with the crashed tick");

    let execution = local.start_release_named(deployed, &name, &lost).await;
    let (status, error, cause, _) = local.finished(&execution, RUN).await;

    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "ReleaseFailed"), "{cause}");
    assert!(cause.starts_with("Failed after undoing: the release's tick kept failing: progress:"), "{cause}");
    assert!(local.alias_state(&target).await.1.is_empty(), "its own canary is down");
    let messages = s.inbox.receive(1, Duration::from_secs(10)).await;
    assert!(messages[0].message.contains("Kind:      safety"), "{}", messages[0].message);
}

#[tokio::test]
async fn a_healthy_sagemaker_release_is_promoted() {
    let (s, deployed) = deployed_scene().await;
    let (local, deployed) = (&s.local, &deployed);
    let endpoint = unique("ai-model");
    let target = local.seed_sagemaker_canary(&endpoint, 0.0).await;
    let _traffic = local.pump_healthy_traffic(&target, "canary").await;
    let release = json!({
        "release": "e2e-model",
        "target": {"sagemaker": {"endpoint": endpoint, "stable_variant": "stable", "canary_variant": "canary"}},
        "stages": [{"percent": 10, "bake_seconds": 1}, {"percent": 50, "bake_seconds": 1}, {"percent": 100, "bake_seconds": 1}],
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05, "min_requests": 50}
    });

    let execution = local.start_release(deployed, &release).await;
    let (status, error, cause, _) = local.finished(&execution, RUN).await;

    assert_eq!(status, "SUCCEEDED", "{error}: {cause}");
    let weights = local.variant_weights(&endpoint).await;
    assert_eq!((weights["stable"], weights["canary"]), (0.0, 1.0));
}

#[tokio::test]
async fn an_invalid_release_or_a_typo_in_its_target_ends_invalid_not_stuck() {
    let (s, deployed) = deployed_scene().await;
    let (target, _) = lambda_canary(&s).await;
    let (local, deployed) = (&s.local, &deployed);
    let (_, _, revision) = local.alias_state(&target).await;
    let latest = lambda_release(
        "e2e-invalid",
        &target,
        json!({"canary_version": "$LATEST", "stages": [{"percent": 100, "bake_seconds": 1}], "check_every_seconds": 1}),
    );
    let typo = lambda_release(
        "e2e-typo",
        &Target::lambda(unique("ai-handlr"), "live"),
        json!({"stages": [{"percent": 100, "bake_seconds": 1}], "check_every_seconds": 1}),
    );

    let (latest, typo) = (local.start_release(deployed, &latest).await, local.start_release(deployed, &typo).await);
    let (status, error, cause, _) = local.finished(&latest, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "InvalidRelease"), "{cause}");
    assert_eq!(
        cause,
        "Invalid release, nothing moved: canary_version: must be a published version number, not $LATEST"
    );
    let (status, error, cause, _) = local.finished(&typo, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "InvalidRelease"), "{cause}");
    assert!(cause.contains("was not found") && cause.contains("check the names in the release"), "{cause}");

    assert_eq!(local.alias_state(&target).await.2, revision, "the alias was never written");
}
