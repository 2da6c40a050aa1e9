//! A replay before any user (decision 0023) over real HTTP, with the real bootstraps in
//! MiniStack: the model handler's two versions (`tests/src/bin/model.rs`), a golden set
//! in the local S3 or the stable's own logged requests, the stepper's tick on the
//! library's AWS adapters reading the source a slice a check and handing each slice to
//! the real shadow function in asynchronous invocations, which asks both versions and
//! publishes the counts the tick then judges.

use std::time::Duration;

use coalmine::domain::cause::RolledBackBy;
use coalmine::domain::replay::metrics_release;
use coalmine::domain::shadow::{metric, PAIR_KEY};
use coalmine::domain::stamp::Phase;
use coalmine::ports::TrafficRouter;
use coalmine::release::canary::control;
use coalmine::release::canary::progress::Progress;
use coalmine::release::canary::spec::Release;
use coalmine::release::core::progress::Status;
use coalmine::release::core::StepDeps;
use coalmine::{Error, Target};
use coalmine_tests::shadow::{epoch, execution, golden_set, shadow_sum, ShadowScene};
use coalmine_tests::{poll, unique, LocalAws};
use serde_json::{json, Value};

/// A release of the model's version 2 that replays `requests` from `source` at 10 a
/// second, checked every 5 s: a check hands out 50.
fn replayed_release(function: &str, source: Value, requests: u64) -> Release {
    Release::parse(&json!({
        "release": unique("replayed"),
        "target": {"lambda": {"function": function, "alias": "live"}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 300}],
        "check_every_seconds": 5,
        "gates": {"max_error_rate": 0.05, "min_requests": 20},
        "replay": {"source": source, "requests": requests, "rate_per_second": 10, "max_concurrency": 4,
                   "compare": {"label": {"pointer": "/label"}}, "max_disagreement_increase_ratio": 0.5},
    }))
    .expect("a valid replayed release")
}

/// Waits (bounded) until both versions have answered `n` of the replay's requests; then
/// the candidate's answers and disagreements, and the stable's.
async fn once_answered(local: &LocalAws, release: &Release, n: f64) -> [f64; 4] {
    let counted_as = metrics_release(&release.release);
    let both = poll(Duration::from_secs(90), || async {
        let candidate = shadow_sum(local, &counted_as, metric::COMPARED, "2").await;
        let stable = shadow_sum(local, &counted_as, metric::COMPARED, "1").await;
        (candidate.min(stable) >= n).then_some(())
    })
    .await;
    assert!(both.is_some(), "both versions did not answer {n} replayed requests within 90 s");
    [
        shadow_sum(local, &counted_as, metric::COMPARED, "2").await,
        shadow_sum(local, &counted_as, metric::DISAGREEMENTS, "2").await,
        shadow_sum(local, &counted_as, metric::COMPARED, "1").await,
        shadow_sum(local, &counted_as, metric::DISAGREEMENTS, "1").await,
    ]
}

/// The pair lines in the model's log group: only live requests print one.
async fn pair_lines(scene: &ShadowScene, function: &str) -> usize {
    let out = scene
        .logs
        .filter_log_events()
        .log_group_name(format!("/aws/lambda/{function}"))
        .send()
        .await
        .expect("FilterLogEvents");
    out.events().iter().filter(|e| e.message().unwrap_or_default().contains(PAIR_KEY)).count()
}

/// A check's time: `at`, or now if the test took longer (the judge reads the counts up
/// to the check's time, and they were published in real time).
fn after(at: u64) -> u64 {
    at.max(epoch())
}

fn replayed(progress: &Progress) -> u64 {
    progress.kind.shadow.as_ref().and_then(|run| run.replay.as_ref()).map_or(0, |run| run.sent)
}

#[tokio::test]
async fn a_golden_set_the_candidate_agrees_with_passes_and_the_first_stage_begins() {
    let scene = ShadowScene::connect().await;
    let local = &scene.local;
    let function = local.seed_model("steady", "steady").await;
    let release = replayed_release(&function, golden_set(local, 40).await, 40);
    let (execution, t0) = (execution(), epoch());
    let target = Target::lambda(&function, "live");

    let started = scene.tick(&release, None, &execution, t0).await;
    assert!(started.reason.starts_with("Replaying: version 2 and version 1 answer up to 40 requests from s3://"));
    let live = scene.aws.router.read(&target).await.unwrap();
    assert_eq!((live.canary_weight, live.stamp.map(|s| s.stage)), (0.0, Some(Some((0, 2)))), "owned, not moved");

    let sent = scene.tick(&release, Some(started), &execution, t0 + 5).await;
    assert_eq!(replayed(&sent), 40, "{}", sent.reason);
    let [candidate, disagreed, stable, stable_disagreed] = once_answered(local, &release, 40.0).await;
    assert_eq!((candidate, disagreed, stable, stable_disagreed), (40.0, 0.0, 40.0, 0.0));
    assert_eq!(pair_lines(&scene, &function).await, 0, "a replayed request is no live request: no pair line");

    let passed = scene.tick(&release, Some(sent), &execution, after(t0 + 10)).await;
    assert_eq!(
        (passed.status, passed.stage, passed.kind.shadow.clone()),
        (Status::Advanced, 0, None),
        "{}",
        passed.reason
    );
    assert!(
        passed.reason.starts_with("Replay passed (") && passed.reason.contains("40 requests replayed"),
        "{}",
        passed.reason
    );
    let live = scene.aws.router.read(&target).await.unwrap();
    assert_eq!((live.canary.as_deref(), live.canary_weight), (Some("2"), 0.05));
}

#[tokio::test]
async fn a_golden_set_catches_a_candidate_whose_labels_differ_before_any_user_is_served() {
    let scene = ShadowScene::connect().await;
    let local = &scene.local;
    let function = local.seed_model("steady", "flips-odd").await;
    let release = replayed_release(&function, golden_set(local, 40).await, 40);
    let (execution, t0) = (execution(), epoch());
    let started = scene.tick(&release, None, &execution, t0).await;
    let sent = scene.tick(&release, Some(started), &execution, t0 + 5).await;
    let [candidate, disagreed, _, stable_disagreed] = once_answered(local, &release, 40.0).await;
    assert_eq!((candidate, disagreed, stable_disagreed), (40.0, 20.0, 0.0), "odd q: label b, against the stable's a");
    // The shadow function logs its examples as its invocation ends, after its metrics.
    let counted_as = metrics_release(&release.release);
    let logged = poll(Duration::from_secs(30), || async {
        let out = scene
            .logs
            .filter_log_events()
            .log_group_name(format!("/aws/lambda/{}", scene.shadow_fn))
            .send()
            .await
            .ok()?;
        out.events().iter().any(|e| e.message().unwrap_or_default().contains(&counted_as)).then_some(())
    })
    .await;
    assert!(logged.is_some(), "the shadow function logged the replay's disagreements");

    let ended = scene.tick(&release, Some(sent), &execution, after(t0 + 10)).await;
    assert_eq!(
        (ended.status, ended.rolled_back_by.clone()),
        (Status::RolledBack, Some(RolledBackBy::Health)),
        "{}",
        ended.reason
    );
    assert!(ended.reason.contains("it never left the replay"), "{}", ended.reason);
    let live = scene.aws.router.read(&Target::lambda(&function, "live")).await.unwrap();
    assert_eq!((live.stable.as_str(), live.canary_weight), ("1", 0.0));
    assert!(matches!(live.stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Health)), "it never climbs again");
    let messages = scene.inbox.receive(1, Duration::from_secs(30)).await;
    let body = &messages[0].message;
    assert!(body.contains("in its replay") && body.contains("No user was served by it"), "{body}");
    assert!(body.contains("Disagreed:") && body.contains(r#""label":"b""#), "the worst examples: {body}");
}

#[tokio::test]
async fn a_replay_of_recent_requests_asks_what_the_stable_served_and_compares_with_what_users_got() {
    let scene = ShadowScene::connect().await;
    let local = &scene.local;
    let function = local.seed_model("steady", "flips-odd").await;
    local.serve_model(&function, 40).await;
    let logged = poll(Duration::from_secs(30), || async { (pair_lines(&scene, &function).await >= 40).then_some(()) });
    assert!(logged.await.is_some(), "the stable logged its 40 live requests");
    let release = replayed_release(&function, json!({"recent": {"window_seconds": 600}}), 100);
    let (execution, t0) = (execution(), epoch() + 1);
    let started = scene.tick(&release, None, &execution, t0).await;
    assert!(started.reason.contains("from the stable's requests of the last 10m"), "{}", started.reason);

    let sent = scene.tick(&release, Some(started), &execution, t0 + 5).await;
    let run = sent.kind.shadow.as_ref().unwrap().replay.clone().unwrap();
    assert_eq!((run.sent, run.sent_all_at), (40, Some(t0 + 5)), "every logged request, and no more: {}", sent.reason);
    let [candidate, disagreed, stable, _] = once_answered(local, &release, 40.0).await;
    assert_eq!((candidate, disagreed, stable), (40.0, 20.0, 40.0), "compared with the answers users got");
    assert_eq!(pair_lines(&scene, &function).await, 40, "the replay itself logs no pair: it cannot feed on itself");
    let ended = scene.tick(&release, Some(sent), &execution, after(t0 + 10)).await;
    assert_eq!(ended.status, Status::RolledBack, "{}", ended.reason);
    assert!(ended.reason.contains("40 requests replayed"), "{}", ended.reason);
}

#[tokio::test]
async fn an_abort_mid_replay_hands_out_nothing_more() {
    let scene = ShadowScene::connect().await;
    let local = &scene.local;
    let function = local.seed_model("steady", "steady").await;
    let release = replayed_release(&function, golden_set(local, 500).await, 500);
    let (execution, t0) = (execution(), epoch());
    let started = scene.tick(&release, None, &execution, t0).await;
    let sent = scene.tick(&release, Some(started), &execution, t0 + 5).await;
    assert_eq!(replayed(&sent), 50);

    let deps = StepDeps::new(&scene.aws.router, &scene.aws.notifier, &scene.aws.alarms, &scene.aws.metrics);
    control::abort(&deps, &release, &execution, "jane", "wrong model").await.unwrap();
    let ended = scene.tick(&release, Some(sent), &execution, after(t0 + 30)).await;
    assert_eq!(ended.status, Status::RolledBack, "{}", ended.reason);
    assert!(matches!(ended.rolled_back_by, Some(RolledBackBy::Operator { .. })));
    let [candidate, ..] = once_answered(local, &release, 50.0).await;
    assert_eq!(candidate, 50.0, "the slice in flight finished; nothing after the abort went out");
}

#[tokio::test]
async fn a_golden_set_that_does_not_exist_is_refused_before_the_alias_is_touched() {
    let scene = ShadowScene::connect().await;
    let local = &scene.local;
    let function = local.seed_model("steady", "steady").await;
    let mut source = golden_set(local, 1).await;
    source["s3"]["key"] = json!("chat/missing.jsonl");
    let release = replayed_release(&function, source, 40);
    let refused = scene.try_tick(&release, None, &execution(), epoch()).await.unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidRelease(why) if why.contains("missing.jsonl does not exist")),
        "{refused}"
    );
    let live = scene.aws.router.read(&Target::lambda(&function, "live")).await.unwrap();
    assert_eq!((live.canary_weight, live.stamp), (0.0, None), "nothing written");
}

/// As deployed: the real stepper bootstrap in the real state machine reads the golden
/// set and hands it to the real shadow function; the candidate never serves a user.
#[tokio::test]
async fn through_the_state_machine_a_replay_that_disagrees_ends_the_release_rolled_back() {
    let scene = ShadowScene::connect().await;
    let deployed = scene.local.deploy(&scene.inbox.topic_arn).await;
    let function = scene.local.seed_model("steady", "flips-odd").await;
    let release = replayed_release(&function, golden_set(&scene.local, 40).await, 40);
    let execution = scene.local.start_release(&deployed, &serde_json::to_value(&release).unwrap()).await;
    let (status, error, cause, _) = scene.local.finished(&execution, Duration::from_secs(120)).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains("at the replay") && cause.contains("it never left the replay"), "{cause}");
    let live = scene.aws.router.read(&Target::lambda(&function, "live")).await.unwrap();
    assert_eq!((live.stable.as_str(), live.canary_weight), ("1", 0.0));
}
