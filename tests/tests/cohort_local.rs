//! A cohort's alias pair against the local AWS over real HTTP (decision 0020): the cohort
//! alias is the kill switch, and a rollback is one conditional `UpdateAlias` of it, by an
//! alarm or by hand, that never moves the primary alias. End to end, the real stepper in
//! the real state machine publishes each stage's share to AppConfig, and the Rust router
//! reads it there and invokes the alias it names.

use std::time::Duration;

use aws_sdk_cloudwatch::types::StateValue;
use coalmine_router::aws::{AppConfigSource, Router, Served};
use coalmine_router::{bucket, threshold};
use coalmine_tests::{poll, CohortStore, Deployed};
use serde_json::json;

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

const RUN: Duration = Duration::from_secs(120);

/// The real stepper and rollback functions and state machine, publishing cohorts to a
/// store made as the template makes it.
async fn deployed_with_cohorts() -> (Scene, Deployed, CohortStore) {
    let scene = Scene::connect().await;
    let store = scene.local.cohort_store().await;
    let deployed = scene.local.deploy_with(&scene.inbox.topic_arn, &store.env()).await;
    (scene, deployed, store)
}

/// The Rust router as a team's front function would build it: the cohort of `target`'s
/// profile (`FUNCTION.ALIAS`), read often (the emulator allows it; AWS asks 15 s).
fn router_of(local: &LocalAws, store: &CohortStore, target: &Target) -> Router {
    let Target::LambdaCohort(aliases) = target else { unreachable!() };
    let client = aws_sdk_appconfigdata::Client::new(&local.sdk);
    let profile = coalmine_router::profile_name(&aliases.function, &aliases.alias);
    let source = AppConfigSource::new(client, &store.application, &store.environment, profile)
        .poll_every(Duration::from_millis(300));
    Router::new(source, "live")
}

fn function_of(target: &Target) -> &str {
    let Target::LambdaCohort(aliases) = target else { unreachable!() };
    &aliases.function
}

/// A user whose bucket in `release` lies in `range`: drawn from the stage whose share
/// first covers it.
fn user_in(release: &str, range: std::ops::Range<u32>) -> String {
    (0..100_000).map(|i| format!("user-{i}")).find(|u| range.contains(&bucket(release, u))).expect("a user")
}

async fn turn(router: &Router, local: &LocalAws, target: &Target, unit: &str, attributes: &[(&str, &str)]) -> Served {
    let payload = json!({"q": 1, "unit": unit}).to_string().into_bytes();
    router.invoke(&local.lambda, function_of(target), unit, attributes, payload).await.expect("the alias answers")
}

/// Waits (bounded) until the router reads a cohort of `release` at `threshold`.
async fn router_reads(router: &Router, release: &str, threshold: u32) -> bool {
    poll(RUN, || async {
        let routed = router.route("probe", &[]).await;
        let why_threshold = routed.why.rsplit_once(" below ").map(|(_, rest)| rest.to_owned());
        (routed.release.as_deref() == Some(release)
            && why_threshold.is_some_and(|t| t.starts_with(&format!("{threshold} of"))))
        .then_some(())
    })
    .await
    .is_some()
}

/// `coalmine approve`, as the CLI carries it out: a request on the release's stamp,
/// retried (bounded) while the stage's own write is in flight.
async fn approve(s: &Scene, document: &serde_json::Value) {
    use coalmine::release::core::operate::Command;
    let release = coalmine::release::Document::parse(document).expect("the release");
    let deps = s.step_deps();
    let approved = poll(RUN, || async { release.command(&deps, "jane", Command::Approve).await.ok() }).await;
    assert!(approved.is_some(), "the stage could not be approved");
}

#[tokio::test]
async fn a_conversation_stays_on_its_version_while_the_share_climbs_and_internal_users_go_first() {
    let (s, deployed, store) = deployed_with_cohorts().await;
    let target = s.local.seed_cohort_model("steady", "steady").await;
    let _traffic = s.local.pump_healthy_traffic(&target, "2").await;
    let release = unique("chat-v2");
    let stages = [0.0, 5.0, 25.0, 50.0, 100.0];
    let document = json!({
                "release": release,
                "target": {"lambda_cohort": {"function": function_of(&target), "alias": "live", "cohort_alias": "canary"}},
                "canary_version": "2",
                "cohorts": {"unit": "conversation", "pinned": {"match": {"group": ["internal"]}}},
                // Each share waits for the test's approval once its turns are taken, as a
                // team's would for a look: the emulator's invocations set no pace.
                "stages": stages.iter().map(|p| json!({"percent": p, "bake_seconds": 1, "approval": true})).collect::<Vec<_>>(),
                "check_every_seconds": 1,
                "gates": {"max_error_rate": 0.05, "min_requests": 50}
    });
    let execution = s.local.start_release(&deployed, &document).await;
    let router = router_of(&s.local, &store, &target);
    let early = user_in(&release, 0..threshold(5.0));
    let late = user_in(&release, threshold(50.0)..10_000);

    // The pinned-only stage: internal users get the candidate, nobody else does.
    assert!(router_reads(&router, &release, 0).await, "the first share reached the router");
    let internal = turn(&router, &s.local, &target, "jane", &[("group", "internal")]).await;
    assert_eq!((internal.version.as_str(), internal.routed.alias.as_str()), ("2", "canary"), "{:?}", internal.routed);
    assert!(internal.routed.why.contains("pinned"), "{}", internal.routed.why);
    for unit in [&early, &late] {
        assert_eq!(turn(&router, &s.local, &target, unit, &[]).await.version, "1", "{unit} is not drawn yet");
    }
    approve(&s, &document).await;

    // Twenty turns of one conversation, five at each share: all on the candidate.
    let mut early_versions = Vec::new();
    let mut late_versions = Vec::new();
    for share in [5.0, 25.0, 50.0, 100.0] {
        if !router_reads(&router, &release, threshold(share)).await {
            let (status, _, cause, output) = s.local.finished(&execution, Duration::from_secs(1)).await;
            panic!("the router never read {share}%: the release is {status}: {cause} {}", output["progress"]["reason"]);
        }
        for _ in 0..5 {
            let served = turn(&router, &s.local, &target, &early, &[]).await;
            early_versions.push((share, served.version, served.routed.alias));
        }
        late_versions.push((share, turn(&router, &s.local, &target, &late, &[]).await.version));
        approve(&s, &document).await;
    }
    assert_eq!(early_versions.len(), 20);
    assert!(
        early_versions.iter().all(|(_, version, alias)| version == "2" && alias == "canary"),
        "the conversation hopped: {early_versions:?}"
    );
    assert_eq!(
        late_versions.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        ["1", "1", "1", "2"],
        "a user beyond 50% stays on the stable until everyone moves"
    );

    let (status, error, cause, output) = s.local.finished(&execution, RUN).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}");
    assert_eq!(output["progress"]["status"], "promoted");
    // Judged on the routers' metrics with users as the draw (decision 0021): each stage
    // kept how its counts were weighed, and not the groups it was read from.
    let samples = output["progress"]["samples"].as_array().expect("the stages' samples");
    assert!(!samples.is_empty());
    for sample in samples {
        assert!(sample["weighting"]["errors_vs_stable"].is_object(), "weighed by units: {sample}");
        assert!(sample["metrics"]["canary"].get("replicates").is_none(), "the groups were dropped: {sample}");
    }
    assert_eq!(version_of(&s.local, function_of(&target), "live").await.0, "2", "promotion moved the primary");
    assert!(router_reads(&router, &release, 0).await, "once it ended, routers draw nobody");
    assert_eq!(turn(&router, &s.local, &target, &late, &[]).await.version, "2", "everyone on the promoted version");
}

#[tokio::test]
async fn an_alarm_mid_release_puts_every_cohort_user_back_on_the_stable_by_their_next_request() {
    let (s, deployed, store) = deployed_with_cohorts().await;
    let target = s.local.seed_cohort_model("steady", "steady").await;
    let alarm = unique("chat-errors");
    s.local.put_quiet_alarm(&alarm, Some(&target.to_string())).await;
    let release = unique("chat-v2");
    let execution = s
        .local
        .start_release(
            &deployed,
            &json!({
                "release": release,
                "target": {"lambda_cohort": {"function": function_of(&target), "alias": "live", "cohort_alias": "canary"}},
                "canary_version": "2",
                "cohorts": {"unit": "user"},
                "stages": [{"percent": 25, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 60}],
                "check_every_seconds": 2,
                "gates": {"alarms": [alarm]}
            }),
        )
        .await;
    let router = router_of(&s.local, &store, &target);
    let drawn = user_in(&release, 0..threshold(25.0));
    assert!(router_reads(&router, &release, threshold(25.0)).await);
    assert_eq!(turn(&router, &s.local, &target, &drawn, &[]).await.version, "2");

    // The alarm fires; EventBridge delivers it to the rollback function.
    s.local.set_alarm(&alarm, StateValue::Alarm).await;
    let event = sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None);
    let summary = s.local.invoke(&deployed.rollback_fn, &event).await.expect("the rollback function");
    assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{summary}");

    // The router still holds the share it read: the very next request goes to the cohort
    // alias, which the rollback pointed back at the stable.
    let next = turn(&router, &s.local, &target, &drawn, &[]).await;
    assert_eq!((next.routed.alias.as_str(), next.version.as_str()), ("canary", "1"), "{:?}", next.routed);

    let (status, error, cause, _) = s.local.finished(&execution, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(router_reads(&router, &release, 0).await, "then routers draw nobody");
    assert_eq!(version_of(&s.local, function_of(&target), "live").await.0, "1", "the primary never moved");
}

#[tokio::test]
async fn a_router_that_cannot_read_its_cohort_or_reads_garbage_sends_every_unit_to_the_stable() {
    let s = Scene::connect().await;
    let store = s.local.cohort_store().await;
    let target = s.local.seed_cohort_model("steady", "steady").await;

    // No profile yet: nothing was ever published for this alias pair.
    let router = router_of(&s.local, &store, &target);
    let served = turn(&router, &s.local, &target, "jane", &[("group", "internal")]).await;
    assert_eq!((served.routed.alias.as_str(), served.version.as_str()), ("live", "1"));
    assert_eq!(served.routed.why, "no cohort could be read: sent to the stable");

    // A profile whose content is not a cohort.
    let appconfig = aws_sdk_appconfig::Client::new(&s.local.sdk);
    let profile = appconfig
        .create_configuration_profile()
        .application_id(&store.application)
        .name(target.cohort_profile().unwrap())
        .location_uri("hosted")
        .send()
        .await
        .unwrap()
        .id
        .unwrap();
    let version = appconfig
        .create_hosted_configuration_version()
        .application_id(&store.application)
        .configuration_profile_id(&profile)
        .content_type("application/json")
        .content(br#"{"release": "chat-v2", "threshold": "everyone"}"#.to_vec().into())
        .send()
        .await
        .unwrap()
        .version_number;
    appconfig
        .start_deployment()
        .application_id(&store.application)
        .environment_id(&store.environment)
        .deployment_strategy_id(&store.strategy)
        .configuration_profile_id(&profile)
        .configuration_version(version.to_string())
        .send()
        .await
        .unwrap();
    let fresh = router_of(&s.local, &store, &target);
    let served = turn(&fresh, &s.local, &target, "jane", &[("group", "internal")]).await;
    assert_eq!((served.routed.alias.as_str(), served.version.as_str()), ("live", "1"), "{:?}", served.routed);
}

#[tokio::test]
async fn the_front_function_routes_an_http_callers_units_with_no_code_in_the_caller() {
    use coalmine::ports::CohortPublisher;
    let s = Scene::connect().await;
    let store = s.local.cohort_store().await;
    let target = s.local.seed_cohort_model("steady", "steady").await;
    // Mid-release, as the stepper leaves it: the cohort alias on the candidate, internal
    // users pinned, nobody drawn yet; published by the stepper's own adapter.
    s.local
        .lambda
        .update_alias()
        .function_name(function_of(&target))
        .name("canary")
        .function_version("2")
        .send()
        .await
        .unwrap();
    let config = coalmine::config::CohortStore {
        application: store.application.clone(),
        environment: store.environment.clone(),
        strategy: store.strategy.clone(),
    };
    let publisher = coalmine::aws::AppConfigCohorts::new(aws_sdk_appconfig::Client::new(&s.local.sdk), Some(config));
    let cohort: coalmine_router::Cohort = serde_json::from_value(json!({
        "release": "chat-v2", "threshold": 0, "pinned": {"match": {"group": ["internal"]}}, "alias": "canary", "stable_alias": "live"
    }))
    .unwrap();
    publisher.publish(&target, &cohort).await.expect("published");

    let front = unique("chat-front");
    let env = [
        ("MODEL_FUNCTION", function_of(&target)),
        ("PRIMARY_ALIAS", "live"),
        ("COHORTS_APPLICATION", store.application.as_str()),
        ("COHORTS_ENVIRONMENT", store.environment.as_str()),
        ("POLL_SECONDS", "1"),
    ];
    s.local.create_function_from(&front, &coalmine_tests::bootstrap_path("router"), &env).await;
    let url = s.local.function_url(&front).await;
    let http = reqwest::Client::new();
    let ask = |headers: Vec<(&'static str, &'static str)>, body: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut request = http.post(&url).header("content-type", "application/json").body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let answer = request.send().await.expect("the front answers");
            let version = answer.headers().get("x-coalmine-version").map(|v| v.to_str().unwrap().to_owned());
            (answer.status().as_u16(), version, answer.text().await.unwrap())
        }
    };

    let internal = ask(vec![("x-coalmine-unit", "jane"), ("X-Coalmine-Attr-Group", "internal")], r#"{"q": 3}"#).await;
    assert_eq!((internal.0, internal.1.as_deref()), (200, Some("2")), "{}", internal.2);
    let answer: serde_json::Value = serde_json::from_str(&internal.2).expect("the model's JSON");
    assert_eq!(answer["q"], 3, "the model's own answer to the request's body: {answer}");
    let customer = ask(vec![("x-coalmine-unit", "user-1")], r#"{"q": 4}"#).await;
    assert_eq!((customer.0, customer.1.as_deref()), (200, Some("1")), "{}", customer.2);
    let anonymous = ask(vec![("x-coalmine-attr-group", "internal")], r#"{"q": 5}"#).await;
    assert_eq!(anonymous.1.as_deref(), Some("1"), "no unit id: the stable, even for an internal attribute");
    let garbage = ask(vec![("x-coalmine-unit", "jane")], "q=1").await;
    assert_eq!(garbage.0, 400, "{}", garbage.2);
    assert!(garbage.2.contains("the body must be JSON"), "{}", garbage.2);
}

#[tokio::test]
async fn an_alarm_in_the_final_bake_puts_the_previous_version_back_on_both_aliases() {
    let (s, deployed, _store) = deployed_with_cohorts().await;
    let target = s.local.seed_cohort_model("steady", "steady").await;
    let function = function_of(&target).to_owned();
    let _traffic = s.local.pump_healthy_traffic(&target, "2").await;
    let alarm = unique("chat-errors");
    s.local.put_quiet_alarm(&alarm, Some(&target.to_string())).await;
    let execution = s
        .local
        .start_release(
            &deployed,
            &json!({
                "release": unique("chat-v2"),
                "target": {"lambda_cohort": {"function": function, "alias": "live", "cohort_alias": "canary"}},
                "canary_version": "2",
                "cohorts": {"unit": "user"},
                "stages": [{"percent": 5, "bake_seconds": 1}, {"percent": 100, "bake_seconds": 600}],
                "check_every_seconds": 2,
                "gates": {"alarms": [alarm], "max_error_rate": 0.05, "min_requests": 50}
            }),
        )
        .await;
    let promoted_away = poll(RUN, || async { (version_of(&s.local, &function, "live").await.0 == "2").then_some(()) });
    assert!(promoted_away.await.is_some(), "the release reached its final bake");

    s.local.set_alarm(&alarm, StateValue::Alarm).await;
    let event = sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None);
    let summary = s.local.invoke(&deployed.rollback_fn, &event).await.expect("the rollback function");
    assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{summary}");
    assert_eq!(version_of(&s.local, &function, "live").await.0, "1", "the primary alias is back on the stable");
    assert_eq!(version_of(&s.local, &function, "canary").await.0, "1", "and so is the cohort alias");
    let (status, error, cause, _) = s.local.finished(&execution, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
}

/// Internal users pinned to the candidate fail one request in five: past the release's 5%
/// limit, while the drawn users are healthy. Judged on their own absolute tests, from the
/// routers' `pinned` metrics, they roll the release back; compared with the stable, the
/// drawn users never would have.
#[tokio::test]
async fn pinned_users_failing_past_the_limit_roll_the_release_back_on_their_own_test() {
    let (s, deployed, _store) = deployed_with_cohorts().await;
    let target = s.local.seed_cohort_model("steady", "steady").await;
    let _traffic = s.local.pump_healthy_traffic(&target, "2").await;
    let release = unique("chat-v2");
    let document = json!({
        "release": release,
        "target": {"lambda_cohort": {"function": function_of(&target), "alias": "live", "cohort_alias": "canary"}},
        "canary_version": "2",
        "cohorts": {"unit": "user", "pinned": {"match": {"group": ["internal"]}}},
        "stages": [{"percent": 5, "bake_seconds": 60}, {"percent": 100, "bake_seconds": 60}],
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05, "min_requests": 50}
    });
    let execution = s.local.start_release(&deployed, &document).await;
    let pinned = {
        let (local, target) = (LocalAws::from_sdk(s.local.sdk.clone()), target.clone());
        tokio::spawn(async move {
            loop {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let latencies = coalmine_tests::latencies_ms(800.0);
                local.put_router_metrics(&target, "2", "pinned", now, 100.0, 20.0, &latencies).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let (status, error, cause, _) = s.local.finished(&execution, RUN).await;
    pinned.abort();
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains("pinned units: error rate 20.00%"), "{cause}");
    assert!(!cause.contains("against stable"), "the drawn users are not what failed: {cause}");
    assert_eq!(version_of(&s.local, function_of(&target), "canary").await.0, "1", "the kill switch moved");
    assert_eq!(version_of(&s.local, function_of(&target), "live").await.0, "1", "the primary never did");
}

/// Feedback arrives after the answer, through the team's own feedback function, and by
/// then the user is served by another version (the release was rolled back). The router
/// recorded which version served the user and when; the feedback function looks it up
/// for the answer's time and publishes the thumbs-down with that version, so the
/// judge's metrics count it on the candidate's side, and feedback on a later answer on
/// the stable's.
#[tokio::test]
async fn late_feedback_through_another_function_counts_for_the_version_that_answered() {
    use coalmine::domain::metrics::CustomGate;
    use coalmine::ports::{MetricQuery, MetricSource};
    use coalmine_router::served::ServedLog;
    let (s, deployed, store) = deployed_with_cohorts().await;
    let target = s.local.seed_cohort_model("steady", "steady").await;
    let function = function_of(&target).to_owned();
    let table = s.local.served_table().await;
    let alarm = unique("chat-errors");
    s.local.put_quiet_alarm(&alarm, Some(&target.to_string())).await;
    let release = unique("chat-v2");
    let document = json!({
        "release": release,
        "target": {"lambda_cohort": {"function": function, "alias": "live", "cohort_alias": "canary"}},
        "canary_version": "2",
        "cohorts": {"unit": "user"},
        "stages": [{"percent": 25, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 60}],
        "check_every_seconds": 2,
        "gates": {"alarms": [alarm]}
    });
    let execution = s.local.start_release(&deployed, &document).await;
    let profile = coalmine_router::profile_name(&function, "live");
    let log = ServedLog::new(aws_sdk_dynamodb::Client::new(&s.local.sdk), &table);
    let router = router_of(&s.local, &store, &target).recording_to(log, &profile);
    let drawn = user_in(&release, 0..threshold(25.0));
    assert!(router_reads(&router, &release, threshold(25.0)).await);
    let first = turn(&router, &s.local, &target, &drawn, &[]).await;
    let first_at = now();
    assert_eq!(first.version, "2");
    let again = turn(&router, &s.local, &target, &drawn, &[]).await;
    assert_eq!(again.version, "2", "a conversation's later turn");

    s.local.set_alarm(&alarm, StateValue::Alarm).await;
    let event = sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None);
    let summary = s.local.invoke(&deployed.rollback_fn, &event).await.expect("the rollback function");
    assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{summary}");
    let (status, _, _, _) = s.local.finished(&execution, RUN).await;
    assert_eq!(status, "FAILED", "rolled back");
    // Past the second the first answer was recorded in, so the two answers' times differ.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = turn(&router, &s.local, &target, &drawn, &[]).await;
    let later_at = now();
    assert_eq!(later.version, "1", "the user is on the stable now");

    let history = ServedLog::new(aws_sdk_dynamodb::Client::new(&s.local.sdk), &table)
        .history(&profile, &drawn)
        .await
        .expect("the served log");
    let versions: Vec<(&str, &str)> = history.iter().map(|h| (h.version.as_str(), h.assignment.as_str())).collect();
    assert_eq!(versions, [("2", "drawn"), ("1", "drawn")], "one record a version, not one a turn: {history:?}");

    // The team's feedback function, another Lambda function, minutes later as far as it
    // knows: it is told only the user and when the answer was given.
    let feedback_fn = s
        .local
        .create_function_from(
            &unique("feedback"),
            &coalmine_tests::bootstrap_path("feedback"),
            &[("SERVED_TABLE", table.as_str()), ("MODEL_FUNCTION", function.as_str())],
        )
        .await;
    let mut lines = Vec::new();
    for (answered_at, thumbs_down, version) in [(first_at, true, "2"), (later_at, false, "1")] {
        let event = json!({"unit": drawn, "answered_at": answered_at, "thumbs_down": thumbs_down});
        let counted = s.local.invoke(&feedback_fn, &event).await.expect("the feedback function");
        assert_eq!((&counted["counted"], &counted["version"]), (&json!(true), &json!(version)), "{counted}");
        lines.push(counted["line"].as_str().expect("its EMF line").to_owned());
    }
    // CloudWatch Logs would turn the function's lines into metrics; the local AWS does not.
    s.local.publish_emf(&lines).await;

    // What the judge reads for this release: the thumbs-down on the candidate's side.
    let per_version = |metric: &str, stat: &str| CustomGate {
        dimensions: [("FunctionName".to_owned(), function.clone()), ("Version".to_owned(), "{version}".to_owned())]
            .into(),
        ..CustomGate::new("AIService", metric, stat)
    };
    let gates = [per_version("ThumbsDown", "Sum"), per_version("Feedback", "Sum")];
    let query = MetricQuery {
        target: &target,
        canary: "2",
        stable: "1",
        start_epoch: first_at - 120,
        end_epoch: now() + 120,
        custom: &gates,
        configs: None,
        shadow_of: None,
        pins: false,
    };
    let metrics = s.local.adapters("arn:aws:sns:us-east-1:000000000000:unused").0.metrics;
    let read = poll(RUN, || async {
        let read = metrics.fetch(&query).await.ok()?;
        (read.canary.custom.first().copied().flatten().is_some()).then_some(read)
    })
    .await
    .expect("the feedback's metrics");
    assert_eq!((read.canary.custom[0], read.canary.custom[1]), (Some(1.0), Some(1.0)), "thumbs-down on version 2");
    assert_eq!((read.stable.custom[0], read.stable.custom[1]), (Some(0.0), Some(1.0)), "the later answer's on 1");
    // Published by unit, so also in the user's replicate group: the judge weighs the
    // feedback gates with users as the draw.
    let group = coalmine_router::replicate(&release, &drawn) as usize;
    assert_eq!(read.canary.replicates[group].custom[0], Some(1.0), "{:?}", read.canary.replicates[group]);
    let others = read.canary.replicates.iter().enumerate().filter(|(g, _)| *g != group);
    assert!(others.into_iter().all(|(_, r)| r.custom[0].is_none()), "only the user's group");
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
