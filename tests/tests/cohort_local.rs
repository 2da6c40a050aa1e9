//! A cohort's alias pair against the local AWS over real HTTP (decision 0020): the cohort
//! alias is the kill switch, and a rollback is one conditional `UpdateAlias` of it, by an
//! alarm or by hand, that never moves the primary alias.

use std::time::Duration;

use coalmine::domain::cause::RolledBackBy;
use coalmine::domain::stamp::{Phase, Stamp};
use coalmine::ports::TrafficRouter;
use coalmine::rollback::{by_hand, handle_payload, RollbackDeps, ZeroOutcome};
use coalmine::Target;
use coalmine_tests::{sample_event, unique, LocalAws, Scene};

const MESSAGE_WAIT: Duration = Duration::from_secs(10);

/// A function whose `live` alias serves version 1 alone and whose `canary` alias serves
/// version 2 under a live release's stamp, as a cohort release leaves them mid-way.
async fn cohort_mid_release(local: &LocalAws, function: &str) -> Target {
    local.seed_lambda_canary(function, 0.0).await;
    let stamp = Stamp {
        execution: "coalmine-release:chat-v2".into(),
        stable: "1".into(),
        canary: Some("2".into()),
        phase: Phase::Live,
        stage: Some((2, 4)),
        release: Some("chat-v2".into()),
        hold: None,
        request: None,
    };
    local
        .lambda
        .create_alias()
        .function_name(function)
        .name("canary")
        .function_version("2")
        .description(stamp.render())
        .send()
        .await
        .expect("the cohort alias");
    format!("lambda-cohort:{function}:live:canary").parse().unwrap()
}

async fn version_of(local: &LocalAws, function: &str, alias: &str) -> (String, String) {
    let out = local.lambda.get_alias().function_name(function).name(alias).send().await.expect("get alias");
    (out.function_version.unwrap_or_default(), out.revision_id.unwrap_or_default())
}

#[tokio::test]
async fn an_alarm_points_the_cohort_alias_back_at_the_stable_and_never_touches_the_primary() {
    let s = Scene::connect().await;
    let function = unique("chat");
    let cohort = cohort_mid_release(&s.local, &function).await;
    let (_, primary_revision) = version_of(&s.local, &function, "live").await;
    let read = s.aws.router.read(&cohort).await.unwrap();
    assert_eq!((read.stable.as_str(), read.canary.as_deref(), read.canary_weight), ("1", Some("2"), 1.0));
    let alarm = unique("chat-errors");
    s.local.put_alarm(&alarm, Some(&cohort.to_string())).await;

    let deps = RollbackDeps::new(&s.aws.router, &s.aws.notifier, &s.aws.alarms, &s.config.rollback_targets);
    let summary =
        handle_payload(&sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None), &deps).await.unwrap();

    assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{summary}");
    assert_eq!(version_of(&s.local, &function, "canary").await.0, "1", "the cohort alias serves the stable");
    assert_eq!(version_of(&s.local, &function, "live").await, ("1".into(), primary_revision), "primary untouched");
    let after = s.aws.router.read(&cohort).await.unwrap();
    assert!(after.canary_is_zero());
    assert_eq!(after.stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Alarm(alarm.clone())));
    let messages = s.inbox.receive(1, MESSAGE_WAIT).await;
    assert_eq!((messages[0].event(), messages[0].target()), ("rolled_back", cohort.to_string().as_str()));
    assert!(
        messages[0].message.contains("After:     version 1 serves both aliases, live and canary, no canary"),
        "{}",
        messages[0].message
    );

    let again =
        handle_payload(&sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None), &deps).await.unwrap();
    assert_eq!(again["targets"][0]["outcome"], "already_zero", "safe to run twice: {again}");
}

#[tokio::test]
async fn by_hand_the_write_is_conditional_and_a_weighted_primary_is_refused_moving_nothing() {
    let s = Scene::connect().await;
    let function = unique("chat");
    let cohort = cohort_mid_release(&s.local, &function).await;

    // Someone re-points the cohort alias after our read: our write is refused, not applied.
    let read = s.aws.router.read(&cohort).await.unwrap();
    s.local.lambda.update_alias().function_name(&function).name("canary").description("moved").send().await.unwrap();
    let stale = s.aws.router.write(&cohort, &read, &coalmine::domain::split::Split::stable_only("1", None)).await;
    assert!(matches!(stale, Err(coalmine::Error::Conflict { .. })), "{stale:?}");
    assert_eq!(version_of(&s.local, &function, "canary").await.0, "2");

    let outcome = by_hand(&s.aws.router, &s.aws.notifier, &cohort, "jane", "answers look off").await.unwrap();
    assert!(matches!(outcome, ZeroOutcome::RolledBack { .. }), "{outcome:?}");
    assert_eq!(version_of(&s.local, &function, "canary").await.0, "1");

    // A primary alias with weights is not a cohort's: refused, nothing written.
    let weighted = unique("chat");
    s.local.seed_lambda_canary(&weighted, 0.1).await;
    s.local.lambda.create_alias().function_name(&weighted).name("canary").function_version("2").send().await.unwrap();
    let target: Target = format!("lambda-cohort:{weighted}:live:canary").parse().unwrap();
    let refused = by_hand(&s.aws.router, &s.aws.notifier, &target, "jane", "x").await.unwrap_err();
    assert!(refused.to_string().contains("carries weights"), "{refused}");
    assert_eq!(version_of(&s.local, &weighted, "canary").await.0, "2", "nothing written");
}
