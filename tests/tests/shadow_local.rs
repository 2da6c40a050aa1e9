//! The Lambda shadow over real HTTP, with the real bootstraps in MiniStack: a model
//! handler (`tests/src/bin/model.rs`, printing its pairs with `coalmine-emf`) serves live
//! requests through its alias; the release's feed (a CloudWatch Logs subscription filter
//! on its log group, opened by the stepper's own adapter) hands the lines to the real
//! shadow function, which asks the candidate's version (and the stable's again) and
//! publishes the counts; the stepper's tick, on the library's AWS adapters, judges them.

use std::time::Duration;

use coalmine::aws::log_group;
use coalmine::domain::cause::RolledBackBy;
use coalmine::domain::shadow::{metric, Compare, Feed, PAIR_KEY};
use coalmine::domain::stamp::Phase;
use coalmine::ports::TrafficRouter;
use coalmine::release::canary::control;
use coalmine::release::canary::spec::Release;
use coalmine::release::core::progress::Status;
use coalmine::release::core::StepDeps;
use coalmine::Target;
use coalmine_tests::shadow::{epoch, execution, shadow_sum, ShadowScene};
use coalmine_tests::{poll, unique, LocalAws};
use serde_json::{json, Value};

fn feed(function: &str, compare: Compare) -> Feed {
    Feed {
        release: unique("shadow-release"),
        function: function.to_owned(),
        stable: "1".into(),
        candidate: "2".into(),
        sample: 1.0,
        max_payload_bytes: 65_536,
        max_concurrency: 4,
        compare,
        noise_floor: true,
    }
}

/// A release of the model's version 2 with a shadow of a minute first.
fn shadowed_release(function: &str, compare: Value) -> Release {
    Release::parse(&json!({
        "release": unique("shadowed"),
        "target": {"lambda": {"function": function, "alias": "live"}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 300}],
        "check_every_seconds": 30,
        "gates": {"max_error_rate": 0.05, "min_requests": 20},
        "shadow": {"duration_seconds": 60, "sample": 1.0, "compare": compare, "max_disagreement_increase_ratio": 0.5},
    }))
    .expect("a valid shadowed release")
}

/// Waits (bounded) until the candidate has been asked `n` requests; then every count.
async fn counts_once_shadowed(local: &LocalAws, release: &str, n: f64) -> [f64; 5] {
    let shadowed = poll(Duration::from_secs(90), || async {
        let both = shadow_sum(local, release, metric::SHADOWED, "2")
            .await
            .min(shadow_sum(local, release, metric::SHADOWED, "1").await);
        (both >= n).then_some(both)
    })
    .await;
    assert!(shadowed.is_some(), "the candidate and the stable were not asked {n} requests within 90 s");
    [
        shadow_sum(local, release, metric::SHADOWED, "2").await,
        shadow_sum(local, release, metric::DISAGREEMENTS, "2").await,
        shadow_sum(local, release, metric::ERRORS, "2").await,
        shadow_sum(local, release, metric::SHADOWED, "1").await,
        shadow_sum(local, release, metric::DISAGREEMENTS, "1").await,
    ]
}

/// The pair lines in the model's log group, by the version whose stream holds them.
async fn pair_lines(logs: &aws_sdk_cloudwatchlogs::Client, function: &str) -> (usize, usize) {
    let out = logs
        .filter_log_events()
        .log_group_name(format!("/aws/lambda/{function}"))
        .send()
        .await
        .expect("FilterLogEvents");
    let pairs = out.events().iter().filter(|e| e.message().unwrap_or_default().contains(PAIR_KEY));
    pairs.fold((0, 0), |(v1, v2), e| {
        match coalmine::domain::shadow::stream_version(e.log_stream_name().unwrap_or_default()) {
            Some("1") => (v1 + 1, v2),
            Some("2") => (v1, v2 + 1),
            _ => (v1, v2),
        }
    })
}

#[tokio::test]
async fn a_candidate_that_disagrees_is_asked_every_live_request_and_its_disagreements_counted() {
    let scene = ShadowScene::connect().await;
    let local = &scene.local;
    let function = local.seed_model("steady", "flips-odd").await;
    let feed = feed(&function, Compare::Label { pointer: "/label".into() });
    scene.open_feed(&feed).await;

    local.serve_model(&function, 10).await;

    let [shadowed, disagreements, errors, stable_asked, stable_disagreements] =
        counts_once_shadowed(local, &feed.release, 10.0).await;
    assert_eq!((shadowed, disagreements, errors), (10.0, 5.0, 0.0), "q = 1, 3, 5, 7, 9 disagree");
    assert_eq!((stable_asked, stable_disagreements), (10.0, 0.0), "the steady stable agrees with itself");
    // Only live requests are shadowed: the shadow's own invocations print no pair (the
    // envelope), so nothing feeds back, and the candidate's stream never holds one.
    assert_eq!(pair_lines(&scene.logs, &function).await, (10, 0));
}

#[tokio::test]
async fn a_candidate_that_fails_is_counted_in_errors_and_users_are_still_served_by_the_stable() {
    let scene = ShadowScene::connect().await;
    let local = &scene.local;
    let function = local.seed_model("steady", "fails").await;
    let feed = feed(&function, Compare::Exact);
    scene.open_feed(&feed).await;

    local.serve_model(&function, 4).await;

    let [shadowed, disagreements, errors, stable_asked, _] = counts_once_shadowed(local, &feed.release, 4.0).await;
    assert_eq!((shadowed, errors, disagreements), (4.0, 4.0, 0.0));
    assert_eq!(stable_asked, 4.0);
}

#[tokio::test]
async fn a_shadow_whose_answers_agree_goes_on_to_the_canary_and_its_feed_is_removed() {
    let scene = ShadowScene::connect().await;
    let function = scene.local.seed_model("noisy", "noisy").await;
    let release = shadowed_release(&function, json!({"label": {"pointer": "/label"}}));
    let execution = execution();
    let t0 = epoch();

    let started = scene.tick(&release, None, &execution, t0).await;
    assert!(started.kind.shadow.is_some(), "{}", started.reason);
    assert_eq!(scene.filters(&function).await.len(), 1, "the feed is open");
    let target = Target::lambda(&function, "live");
    assert_eq!(scene.aws.router.read(&target).await.unwrap().canary_weight, 0.0);

    // Both versions disagree with the live answer on every third request (a sampled
    // model): as often as each other, so no worse than the noise floor.
    scene.local.serve_model(&function, 60).await;
    let [shadowed, disagreements, _, _, stable_disagreements] =
        counts_once_shadowed(&scene.local, &release.release, 60.0).await;
    assert_eq!((shadowed, disagreements, stable_disagreements), (60.0, 20.0, 20.0));

    let passed = scene.tick(&release, Some(started), &execution, t0 + 60).await;
    assert_eq!((passed.status, passed.kind.shadow.clone()), (Status::Advanced, None), "{}", passed.reason);
    assert!(passed.reason.starts_with("Shadow passed"), "{}", passed.reason);
    let live = scene.aws.router.read(&target).await.unwrap();
    assert_eq!((live.canary.as_deref(), live.canary_weight), (Some("2"), 0.05));
    assert!(scene.filters(&function).await.is_empty(), "the feed is removed with the shadow");
}

#[tokio::test]
async fn a_shadow_whose_answers_disagree_ends_rolled_back_before_any_user_is_served() {
    let scene = ShadowScene::connect().await;
    let function = scene.local.seed_model("steady", "flips-odd").await;
    let release = shadowed_release(&function, json!({"label": {"pointer": "/label"}}));
    let execution = execution();
    let t0 = epoch();
    let started = scene.tick(&release, None, &execution, t0).await;

    scene.local.serve_model(&function, 60).await;
    counts_once_shadowed(&scene.local, &release.release, 60.0).await;
    // The shadow function's log lines land when its invocation ends, after its metrics.
    let logged = poll(Duration::from_secs(30), || async {
        let out = scene.logs.filter_log_events().log_group_name(log_group(&scene.shadow_fn)).send().await.ok()?;
        out.events().iter().any(|e| e.message().unwrap_or_default().contains(&release.release)).then_some(())
    })
    .await;
    assert!(logged.is_some(), "the shadow function logged its examples");
    let ended = scene.tick(&release, Some(started), &execution, t0 + 30).await;
    let examples = &ended.kind.shadow.as_ref().expect("ended in the shadow").examples;
    assert!(!examples.is_empty() && examples.len() <= 3, "{examples:?}");
    assert!(examples.iter().all(|e| e.candidate.contains(r#""label":"b""#) && e.stable.contains(r#""label":"a""#)));

    assert_eq!(
        (ended.status, ended.rolled_back_by.clone()),
        (Status::RolledBack, Some(RolledBackBy::Health)),
        "{}",
        ended.reason
    );
    assert!(ended.reason.contains("Disagreements") && ended.reason.contains("No user was served"), "{}", ended.reason);
    let live = scene.aws.router.read(&Target::lambda(&function, "live")).await.unwrap();
    assert_eq!((live.stable.as_str(), live.canary_weight), ("1", 0.0));
    assert!(matches!(live.stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Health)));
    assert!(scene.filters(&function).await.is_empty());
    let messages = scene.inbox.receive(1, Duration::from_secs(30)).await;
    assert!(messages[0].message.contains("No user was served by the candidate"), "{}", messages[0].message);
}

#[tokio::test]
async fn a_candidate_that_fails_in_the_shadow_is_rolled_back_on_its_errors() {
    let scene = ShadowScene::connect().await;
    let function = scene.local.seed_model("steady", "fails").await;
    let release = shadowed_release(&function, json!("exact"));
    let execution = execution();
    let t0 = epoch();
    let started = scene.tick(&release, None, &execution, t0).await;

    scene.local.serve_model(&function, 30).await;
    counts_once_shadowed(&scene.local, &release.release, 30.0).await;
    let ended = scene.tick(&release, Some(started), &execution, t0 + 30).await;

    assert_eq!(ended.status, Status::RolledBack, "{}", ended.reason);
    assert!(ended.reason.contains("error"), "{}", ended.reason);
    assert!(scene.filters(&function).await.is_empty());
}

#[tokio::test]
async fn an_abort_during_the_shadow_removes_the_feed_at_once() {
    let scene = ShadowScene::connect().await;
    let function = scene.local.seed_model("steady", "steady").await;
    let release = shadowed_release(&function, json!("exact"));
    let execution = execution();
    let t0 = epoch();
    let started = scene.tick(&release, None, &execution, t0).await;
    assert_eq!(scene.filters(&function).await.len(), 1);

    let deps = StepDeps::new(&scene.aws.router, &scene.aws.notifier, &scene.aws.alarms, &scene.aws.metrics);
    control::abort(&deps, &release, &execution, "jane", "wrong model").await.unwrap();
    assert!(scene.filters(&function).await.is_empty(), "abort removes the feed");

    let ended = scene.tick(&release, Some(started), &execution, t0 + 30).await;
    assert_eq!(ended.status, Status::RolledBack, "{}", ended.reason);
    assert!(matches!(ended.rolled_back_by, Some(RolledBackBy::Operator { .. })));
}

/// As deployed: the real stepper bootstrap in the real state machine, the real shadow
/// function, the real model; users keep asking the stable while the candidate is judged.
#[tokio::test]
async fn through_the_state_machine_a_disagreeing_shadow_fails_and_its_feed_is_gone() {
    let scene = ShadowScene::connect().await;
    let deployed = scene.local.deploy(&scene.inbox.topic_arn).await;
    let function = scene.local.seed_model("steady", "flips-odd").await;
    let mut release =
        serde_json::to_value(shadowed_release(&function, json!({"label": {"pointer": "/label"}}))).unwrap();
    release["check_every_seconds"] = json!(2);
    let users = scene.local.pump_model_requests(&function);
    let execution = scene.local.start_release(&deployed, &release).await;

    let (status, error, cause, _) = scene.local.finished(&execution, Duration::from_secs(120)).await;
    drop(users);
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains("at the shadow") && cause.contains("No user was served by the candidate"), "{cause}");
    let live = scene.aws.router.read(&Target::lambda(&function, "live")).await.unwrap();
    assert_eq!((live.stable.as_str(), live.canary_weight), ("1", 0.0));
    assert!(scene.filters(&function).await.is_empty(), "the deployed stepper removed the feed");
}

#[tokio::test]
async fn a_stable_that_never_logged_is_refused_before_the_alias_is_touched() {
    let scene = ShadowScene::connect().await;
    let function = scene.local.seed_model("steady", "steady").await;
    scene.logs.delete_log_group().log_group_name(log_group(&function)).send().await.expect("no log group");
    let release = shadowed_release(&function, json!("exact"));
    let refused = scene.try_tick(&release, None, &execution(), epoch()).await.unwrap_err();
    assert!(refused.to_string().contains("has never logged"), "{refused}");
    let live = scene.aws.router.read(&Target::lambda(&function, "live")).await.unwrap();
    assert_eq!(live.stamp, None, "nothing was written");
}
