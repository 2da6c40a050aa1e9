//! What a rollback will and will not do, on every target, tried as an attacker, an
//! unlucky on-call and a flaky network would: the real rollback bootstrap in the local
//! AWS, SageMaker in moto, Azure ML in the stand-in. A rollback takes traffic from the
//! release of record's candidate and gives it to that release's stable, and nothing else.

use std::time::Duration;

use aws_sdk_cloudwatch::types::StateValue;
use coalmine::domain::stamp::{Phase, Stamp};
use coalmine::ports::EndpointDeployments;
use coalmine::Target;
use coalmine_tests::azure::AzureStandIn;
use coalmine_tests::{sample_event, unique, Scene};
use serde_json::{json, Value};

const MESSAGE_WAIT: Duration = Duration::from_secs(10);

fn record(phase: Phase, stable: &str, canary: &str) -> Stamp {
    Stamp {
        execution: format!("coalmine-release:{}", unique("model-2")),
        stable: stable.into(),
        canary: Some(canary.into()),
        phase,
        stage: Some((1, 3)),
        release: Some("model-2".into()),
        hold: None,
        request: None,
    }
}

/// An alarm on `endpoint`'s `variant`, as EventBridge delivers it.
fn sagemaker_alarm(alarm: &str, endpoint: &str, variant: &str) -> Value {
    let mut event = sample_event("alarm-sagemaker-canary.eventbridge.json", alarm, None);
    *event.pointer_mut("/detail/configuration/metrics/0/metricStat/metric/dimensions").unwrap() =
        json!({"EndpointName": endpoint, "VariantName": variant});
    event
}

/// The same alarm's notification on a paging topic the rollback function is subscribed to.
fn sagemaker_sns(alarm: &str, endpoint: &str, variant: &str) -> Value {
    let mut event = sample_event("alarm-lambda-canary.sns.json", alarm, None);
    let message = &mut event["Records"][0]["Sns"]["Message"];
    let mut notification: Value = serde_json::from_str(message.as_str().unwrap()).unwrap();
    notification["Trigger"] = json!({
        "Namespace": "AWS/SageMaker", "MetricName": "Invocation5XXErrors",
        "Dimensions": [{"name": "EndpointName", "value": endpoint}, {"name": "VariantName", "value": variant}]
    });
    *message = json!(notification.to_string());
    event
}

/// An alarm in ALARM, tagged with `tag` when given.
async fn firing(s: &Scene, tag: Option<String>) -> String {
    let alarm = unique("coalmine-model-5xx");
    s.local.put_alarm(&alarm, tag.as_deref()).await;
    s.local.set_alarm(&alarm, StateValue::Alarm).await;
    alarm
}

async fn sagemaker_stamp(s: &Scene, endpoint: &str) -> Option<Stamp> {
    s.aws.router.endpoint_state(endpoint).await.unwrap().stamp
}

#[tokio::test]
async fn on_sagemaker_only_the_candidate_of_record_loses_traffic_and_only_to_the_stable_of_record() {
    let s = Scene::connect().await;
    let rollback = s.local.rollback_function(&s.inbox.topic_arn, &[]).await;
    // A second release reuses the variant the first one freed: blue is its candidate now.
    let endpoint = unique("ai-model");
    s.local.seed_sagemaker_endpoint(&endpoint, &[("blue", 0.1), ("green", 0.9), ("spare", 0.0)]).await;
    let second = record(Phase::Live, "green", "blue");
    s.aws.router.stamp_endpoint(&endpoint, &second).await.unwrap();

    let stale_tag = firing(&s, Some(format!("sagemaker:{endpoint}:blue:green"))).await;
    let on_the_stable = firing(&s, None).await;
    let idle_named = firing(&s, Some(format!("sagemaker:{endpoint}:spare:green"))).await;
    for (why, event) in [
        ("the first release's alarm, still tagged with its roles", sagemaker_alarm(&stale_tag, &endpoint, "green")),
        ("an untagged alarm on the stable variant", sagemaker_alarm(&on_the_stable, &endpoint, "green")),
        ("a tag naming an idle variant the stable", sagemaker_alarm(&idle_named, &endpoint, "green")),
    ] {
        let summary = s.local.invoke(&rollback, &event).await.unwrap_or_else(|e| panic!("{why}: {e:?}"));
        assert_eq!(summary["targets"][0]["outcome"], "refused", "{why}: {summary}");
        let weights = s.local.variant_weights(&endpoint).await;
        assert_eq!((weights["blue"], weights["green"]), (0.1, 0.9), "{why}: nothing moved");
        assert_eq!(sagemaker_stamp(&s, &endpoint).await.as_ref(), Some(&second), "{why}: the record stands");
        let told = s.inbox.receive(1, MESSAGE_WAIT).await;
        assert_eq!(told[0].event(), "refused", "{why}");
        assert!(told[0].message.contains("coalmine abort model-2"), "says what to run: {}", told[0].message);
    }

    // A forged notification on the paging topic, for an alarm that does not exist.
    let forged = sagemaker_sns(&unique("coalmine-forged"), &endpoint, "green");
    let summary = s.local.invoke(&rollback, &forged).await.unwrap();
    assert_eq!(summary["confirmed"], false, "{summary}");
    assert_eq!(s.local.variant_weights(&endpoint).await["green"], 0.9);
    assert_eq!(s.inbox.receive(1, MESSAGE_WAIT).await[0].event(), "unconfirmed");

    // The alarm on the release's own candidate: its traffic goes to its stable, no other.
    let on_the_candidate = firing(&s, None).await;
    let summary = s.local.invoke(&rollback, &sagemaker_alarm(&on_the_candidate, &endpoint, "blue")).await.unwrap();
    assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{summary}");
    let weights = s.local.variant_weights(&endpoint).await;
    assert_eq!((weights["blue"], weights["green"], weights.get("spare").copied().unwrap_or(0.0)), (0.0, 1.0, 0.0));
    let stamp = sagemaker_stamp(&s, &endpoint).await.unwrap();
    assert!(matches!(stamp.phase, Phase::RolledBack(_)), "{stamp:?}");
}

#[tokio::test]
async fn a_promoted_sagemaker_release_is_final_and_an_unowned_move_goes_only_to_the_majority() {
    let s = Scene::connect().await;
    let rollback = s.local.rollback_function(&s.inbox.topic_arn, &[]).await;
    let endpoint = unique("ai-model");
    s.local.seed_sagemaker_endpoint(&endpoint, &[("blue", 0.0), ("green", 1.0)]).await;
    let promoted = record(Phase::Promoted, "blue", "green");
    s.aws.router.stamp_endpoint(&endpoint, &promoted).await.unwrap();

    let alarm = firing(&s, Some(format!("sagemaker:{endpoint}:blue:green"))).await;
    let summary = s.local.invoke(&rollback, &sagemaker_alarm(&alarm, &endpoint, "green")).await.unwrap();
    assert_eq!(summary["targets"][0]["outcome"], "refused", "{summary}");
    assert_eq!(s.local.variant_weights(&endpoint).await["green"], 1.0, "the promotion stands");
    assert_eq!(sagemaker_stamp(&s, &endpoint).await, Some(promoted), "and so does its record");
    let told = s.inbox.receive(1, MESSAGE_WAIT).await;
    assert!(told[0].message.contains("a promotion is final"), "{}", told[0].message);

    // No release at all: an alarm naming production the canary would raise an idle variant.
    let bare = unique("ai-model");
    s.local.seed_sagemaker_endpoint(&bare, &[("prod", 0.9), ("new", 0.1)]).await;
    let backwards = firing(&s, Some(format!("sagemaker:{bare}:new:prod"))).await;
    let summary = s.local.invoke(&rollback, &sagemaker_alarm(&backwards, &bare, "prod")).await.unwrap();
    assert_eq!(summary["targets"][0]["outcome"], "refused", "{summary}");
    assert_eq!(s.local.variant_weights(&bare).await["prod"], 0.9);
    let told = s.inbox.receive(1, MESSAGE_WAIT).await;
    assert!(told[0].message.contains(&format!("coalmine rollback sagemaker:{bare}:new:prod")), "{}", told[0].message);
}

#[tokio::test]
async fn with_cloudwatch_unreachable_the_tag_is_not_guessed_from_dimensions_and_the_rollback_fails_for_a_retry() {
    let s = Scene::connect().await;
    // CloudWatch refuses connections for this function; everything else answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let unreachable = format!("http://{closed}");
    let rollback =
        s.local.rollback_function(&s.inbox.topic_arn, &[("AWS_ENDPOINT_URL_CLOUDWATCH", unreachable.as_str())]).await;
    let endpoint = unique("ai-model");
    s.local.seed_sagemaker_endpoint(&endpoint, &[("blue", 0.1), ("green", 0.9)]).await;
    s.aws.router.stamp_endpoint(&endpoint, &record(Phase::Live, "green", "blue")).await.unwrap();
    // Its tag names the release's own sides; its dimensions name the stable variant.
    let alarm = firing(&s, Some(format!("sagemaker:{endpoint}:green:blue"))).await;

    let failed = s.local.invoke(&rollback, &sagemaker_alarm(&alarm, &endpoint, "green")).await.unwrap_err();
    assert_eq!(failed.0, "Retryable", "{failed:?}");
    assert!(failed.1.contains("tag could not be read"), "{failed:?}");
    assert_eq!(s.local.variant_weights(&endpoint).await["green"], 0.9, "nothing moved");
}

#[tokio::test]
async fn on_azure_ml_an_alert_moves_only_its_own_endpoints_candidate_of_record_and_never_a_promotion() {
    let s = Scene::connect().await;
    let stand_in = AzureStandIn::start().await;
    let secret = s.local.put_secret(&unique("coalmine-azure"), &stand_in.secret_json()).await;
    let rollback = s
        .local
        .rollback_function(
            &s.inbox.topic_arn,
            &[("AZURE_CREDENTIALS_SECRET_ARN", secret.as_str()), ("AZURE_UPDATE_MAX_WAIT_SECONDS", "20")],
        )
        .await;
    let alert_on = |target: &Target, deployment: &str, names: Option<String>| {
        let Target::Azureml(d) = target else { unreachable!() };
        let mut alert = coalmine_tests::event_json("azure/alert-azureml-canary.common-schema.json");
        alert["data"]["essentials"]["alertTargetIDs"] = json!([d.endpoint_id().to_ascii_lowercase()]);
        alert["data"]["alertContext"]["condition"]["allOf"][0]["dimensions"] =
            json!([{"name": "deployment", "value": deployment}]);
        if let Some(names) = names {
            alert["data"]["customProperties"] = json!({"coalmine:target": names});
        }
        alert
    };

    // A release in flight: green is its stable, blue its candidate (a freed deployment reused).
    let target = stand_in.add_endpoint(&unique("chat"), &[("green", 90), ("blue", 10)]);
    stand_in.put_stamp(&target, &record(Phase::Live, "green", "blue"));
    let on_the_stable = s.local.invoke(&rollback, &alert_on(&target, "green", None)).await.unwrap();
    assert_eq!(on_the_stable["targets"][0]["outcome"], "refused", "{on_the_stable}");
    assert_eq!(stand_in.traffic(&target).0["green"], 90.0);
    assert_eq!(s.inbox.receive(1, MESSAGE_WAIT).await[0].event(), "refused");

    // An alert naming targets off its endpoint (AWS ones among them) moves none of them.
    let sagemaker = unique("ai-model");
    s.local.seed_sagemaker_endpoint(&sagemaker, &[("prod", 0.9), ("spare", 0.1)]).await;
    let names = format!("sagemaker:{sagemaker}:spare:prod lambda:ai-handler:production");
    let elsewhere = s.local.invoke(&rollback, &alert_on(&target, "blue", Some(names))).await.unwrap();
    assert_eq!(elsewhere["targets"], json!([]), "{elsewhere}");
    assert_eq!(s.local.variant_weights(&sagemaker).await["prod"], 0.9);
    assert_eq!(s.inbox.receive(1, MESSAGE_WAIT).await[0].event(), "out_of_scope");

    // The alert on the candidate of record: its traffic goes to the stable of record.
    let on_the_candidate = s.local.invoke(&rollback, &alert_on(&target, "blue", None)).await.unwrap();
    assert_eq!(on_the_candidate["targets"][0]["outcome"], "rolled_back", "{on_the_candidate}");
    assert_eq!(stand_in.traffic(&target).0, [("blue".to_owned(), 0.0), ("green".to_owned(), 100.0)].into());

    // A promoted release: final.
    let promoted = stand_in.add_endpoint(&unique("chat"), &[("blue", 0), ("green", 100)]);
    stand_in.put_stamp(&promoted, &record(Phase::Promoted, "blue", "green"));
    let after = s.local.invoke(&rollback, &alert_on(&promoted, "green", None)).await.unwrap();
    assert_eq!(after["targets"][0]["outcome"], "refused", "{after}");
    assert_eq!(stand_in.traffic(&promoted).0["green"], 100.0, "the promotion stands");
}

#[tokio::test]
async fn a_stepper_stamp_landing_after_a_sagemaker_rollback_hides_nothing_and_raises_nothing() {
    let s = Scene::connect().await;
    let deployed = s.local.deploy(&s.inbox.topic_arn).await;
    let endpoint = unique("ai-model");
    let target = s.local.seed_sagemaker_canary(&endpoint, 0.0).await;
    let alarm = unique("coalmine-model-5xx");
    s.local.put_quiet_alarm(&alarm, Some(&target.to_string())).await;
    let release = json!({
        "release": unique("model-race"),
        "target": serde_json::to_value(&target).unwrap(),
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 1,
    });
    let execution = s.local.start_release(&deployed, &release).await;
    let at_five = coalmine_tests::poll(Duration::from_secs(60), || async {
        (s.local.variant_weights(&endpoint).await["canary"] > 0.0).then_some(())
    })
    .await;
    if at_five.is_none() {
        let (status, error, cause, _) = s.local.finished(&execution, Duration::from_secs(1)).await;
        panic!("the first stage was not written: {status} {error}: {cause}");
    }

    // The alarm fires and the rollback function takes the canary's traffic away...
    s.local.set_alarm(&alarm, StateValue::Alarm).await;
    let summary = s.local.invoke(&deployed.rollback_fn, &sagemaker_alarm(&alarm, &endpoint, "canary")).await.unwrap();
    assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{summary}");
    // ...and then the stepper's stamp for its next stage, written before its weights (and
    // refused at the weights), lands on the endpoint's release tag.
    let recorded = sagemaker_stamp(&s, &endpoint).await.unwrap();
    let next_stage = Stamp { phase: Phase::Live, stage: Some((2, 2)), ..recorded };
    let arn = s.local.sagemaker.describe_endpoint().endpoint_name(&endpoint).send().await.unwrap().endpoint_arn;
    let tag = aws_sdk_sagemaker::types::Tag::builder()
        .key(coalmine::domain::stamp::STAMP_TAG)
        .value(next_stage.render())
        .build();
    s.local.sagemaker.add_tags().resource_arn(arn.unwrap()).tags(tag).send().await.unwrap();

    let (status, error, cause, _) = s.local.finished(&execution, Duration::from_secs(60)).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains(&alarm), "the alarm's record stands: {cause}");
    assert_eq!(s.local.variant_weights(&endpoint).await["canary"], 0.0, "never raised again");
}

/// `n` executions that are running (a state machine that only waits), as real releases'
/// executions are while their first tick runs: a claim's holder is asked whether it still is.
async fn running_executions(s: &Scene, n: usize) -> Vec<String> {
    let definition = json!({"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 600, "End": true}}});
    let machine = s
        .local
        .sfn
        .create_state_machine()
        .name(unique("coalmine-holders"))
        .definition(definition.to_string())
        .role_arn(coalmine_tests::ROLE_ARN)
        .send()
        .await
        .unwrap()
        .state_machine_arn;
    let starts = (0..n).map(|i| {
        let (sfn, machine) = (s.local.sfn.clone(), machine.clone());
        async move {
            let name = format!("release-{i}");
            sfn.start_execution().state_machine_arn(machine).name(name).send().await.unwrap().execution_arn
        }
    });
    futures::future::join_all(starts).await
}

async fn stop_all(s: &Scene, executions: &[String]) {
    for execution in executions {
        let _ = s.local.sfn.stop_execution().execution_arn(execution).send().await;
    }
}

/// A hundred releases of one target start at once, each a first tick of its own running
/// execution, in-process over real HTTP with the stepper's own adapters and claims table:
/// one moves traffic, every other is refused InvalidRelease having touched nothing.
async fn hundred_starts(s: &Scene, aws: &coalmine::clouds::Clouds, release: Value) -> (String, Vec<String>) {
    let executions = running_executions(s, 100).await;
    let table = s.local.claims_table().await;
    let claims = coalmine::aws::claims(&s.local.sdk, &table);
    let deps = coalmine::release::core::StepDeps::new(&aws.router, &aws.notifier, &aws.alarms, &aws.metrics);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ticks = executions.iter().map(|execution| {
        let payload = json!({"execution": execution, "state": release.clone()});
        let (deps, claims) = (&deps, &claims);
        async move { coalmine::release::tick_payload(&payload, deps, claims, now).await }
    });
    let results = futures::future::join_all(ticks).await;
    stop_all(s, &executions).await;
    let mut winners = Vec::new();
    let mut refusals = Vec::new();
    for (execution, result) in executions.iter().zip(results) {
        match result {
            Ok(_) => winners.push(execution.clone()),
            Err(e) => {
                assert_eq!(e.error_type(), "InvalidRelease", "{e}");
                refusals.push(e.to_string());
            }
        }
    }
    assert_eq!(winners.len(), 1, "one release moves a target: {winners:?}, refused: {refusals:?}");
    (winners.remove(0), refusals)
}

#[tokio::test]
async fn of_a_hundred_sagemaker_releases_started_at_once_one_moves_traffic_and_the_rest_touch_nothing() {
    let s = Scene::connect().await;
    let endpoint = unique("ai-model");
    let target = s.local.seed_sagemaker_canary(&endpoint, 0.0).await;
    let release = json!({
        "release": "model-3", "target": serde_json::to_value(&target).unwrap(),
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 60,
    });

    let (winner, refusals) = hundred_starts(&s, &s.aws, release).await;

    assert!(refusals.iter().all(|r| r.contains("another release is in flight")), "{refusals:?}");
    let weights = s.local.variant_weights(&endpoint).await;
    assert!((weights["canary"] - 0.05).abs() < 1e-6 && (weights["stable"] - 0.95).abs() < 1e-6, "{weights:?}");
    let stamp = sagemaker_stamp(&s, &endpoint).await.unwrap();
    assert!(stamp.is_by(&winner), "the stamp names the one that moved it: {stamp:?}");
}

#[tokio::test]
async fn of_a_hundred_azure_and_lambda_releases_started_at_once_one_moves_each_target() {
    let s = Scene::connect().await;
    let stand_in = AzureStandIn::start().await;
    let aws = coalmine::clouds::Clouds::with_azure_identity(&s.local.sdk, &s.config, stand_in.identity());
    let azure = stand_in.add_endpoint(&unique("chat"), &[("blue", 100), ("green", 0)]);
    let release = json!({
        "release": "chat-3", "target": serde_json::to_value(&azure).unwrap(),
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 60,
    });
    hundred_starts(&s, &aws, release).await;
    assert_eq!(stand_in.traffic(&azure).0["green"], 5.0);
    let puts = stand_in.seen().iter().filter(|seen| seen.method == "PUT").count();
    assert_eq!(puts, 1, "one write of the endpoint");

    let function = unique("ai-handler");
    let lambda = s.local.seed_lambda_canary(&function, 0.0).await;
    let Target::Lambda(alias) = &lambda else { unreachable!() };
    let release = json!({
        "release": "handler-3", "target": {"lambda": {"function": alias.function, "alias": alias.alias}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 60,
    });
    hundred_starts(&s, &s.aws, release).await;
    assert_eq!(s.local.alias_state(&lambda).await.1["2"], 0.05);
}

/// A release of `target` that sits at 5% for ten minutes unless something ends it.
fn slow_release(name: &str, target: &Target, canary_version: Option<&str>) -> Value {
    let mut release = json!({
        "release": name,
        "target": serde_json::to_value(target).unwrap(),
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 60}],
        "check_every_seconds": 2,
    });
    if let Some(version) = canary_version {
        release["canary_version"] = json!(version);
    }
    release
}

/// The canary's share of live traffic on any target, as the library reads it.
async fn canary_share(aws: &coalmine::clouds::Clouds, target: &Target) -> f64 {
    use coalmine::ports::TrafficRouter;
    let split = aws.router.read(target).await.unwrap();
    if split.canary_is_zero() {
        0.0
    } else {
        split.canary_weight
    }
}

/// Starts `release`, waits for its first stage, stops its execution (as a person with
/// StopExecution, or a timeout, would end it), and expects the dead-man's switch to
/// take the canary's traffic away and say why.
async fn stopped_mid_release(
    s: &Scene,
    aws: &coalmine::clouds::Clouds,
    deployed: &coalmine_tests::Deployed,
    target: &Target,
    release: Value,
) {
    deployed.watch_executions(&s.local).await;
    let execution = s.local.start_release(deployed, &release).await;
    let at_five = coalmine_tests::poll(Duration::from_secs(60), || async {
        (canary_share(aws, target).await > 0.0).then_some(())
    })
    .await;
    assert!(at_five.is_some(), "the first stage was written");

    s.local.sfn.stop_execution().execution_arn(&execution).send().await.unwrap();

    let zeroed = coalmine_tests::poll(Duration::from_secs(60), || async {
        (canary_share(aws, target).await == 0.0).then_some(())
    })
    .await;
    assert!(zeroed.is_some(), "{target}: the dead-man's switch took the canary's traffic away");
    let told = s.inbox.receive(1, Duration::from_secs(20)).await;
    assert_eq!(told[0].event(), "rolled_back", "{}", told[0].message);
    assert!(told[0].message.contains("was stopped (StopExecution)"), "{}", told[0].message);
}

#[tokio::test]
async fn a_stopped_execution_leaves_no_lambda_canary_behind() {
    let s = Scene::connect().await;
    let deployed = s.local.deploy(&s.inbox.topic_arn).await;
    let target = s.local.seed_lambda_canary(&unique("ai-handler"), 0.0).await;
    let release = slow_release(&unique("handler-stopped"), &target, Some("2"));
    stopped_mid_release(&s, &s.aws, &deployed, &target, release).await;
}

#[tokio::test]
async fn a_stopped_execution_leaves_no_sagemaker_canary_behind() {
    let s = Scene::connect().await;
    let deployed = s.local.deploy(&s.inbox.topic_arn).await;
    let target = s.local.seed_sagemaker_canary(&unique("ai-model"), 0.0).await;
    let release = slow_release(&unique("model-stopped"), &target, None);
    stopped_mid_release(&s, &s.aws, &deployed, &target, release).await;
}

#[tokio::test]
async fn a_stopped_execution_leaves_no_azure_canary_behind() {
    let s = Scene::connect().await;
    let stand_in = AzureStandIn::start().await;
    let secret = s.local.put_secret(&unique("coalmine-azure"), &stand_in.secret_json()).await;
    let env = [("AZURE_CREDENTIALS_SECRET_ARN", secret.as_str()), ("AZURE_UPDATE_MAX_WAIT_SECONDS", "20")];
    let deployed = s.local.deploy_with(&s.inbox.topic_arn, &env).await;
    let aws = coalmine::clouds::Clouds::with_azure_identity(&s.local.sdk, &s.config, stand_in.identity());
    let target = stand_in.add_endpoint(&unique("chat"), &[("blue", 100), ("green", 0)]);
    let release = slow_release(&unique("chat-stopped"), &target, None);
    stopped_mid_release(&s, &aws, &deployed, &target, release).await;
}

/// The functions reach AWS through a proxy the test cuts, as a network or an endpoint
/// can be; their own deployment and the state machine do not. (MiniStack sets a
/// function's AWS_ENDPOINT_URL to itself whatever it is given, so each service the
/// functions call is pointed at the proxy by its own variable, which the SDK prefers.)
async fn behind_a_fault_proxy(s: &Scene) -> (coalmine_tests::proxy::FaultProxy, coalmine_tests::Deployed) {
    let proxy = coalmine_tests::proxy::FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap()).await;
    let services = ["LAMBDA", "CLOUDWATCH", "SNS", "DYNAMODB", "SFN", "CLOUDWATCH_LOGS", "SECRETS_MANAGER"];
    let vars: Vec<String> = services.iter().map(|service| format!("AWS_ENDPOINT_URL_{service}")).collect();
    let env: Vec<(&str, &str)> = vars.iter().map(|var| (var.as_str(), proxy.url.as_str())).collect();
    let deployed = s.local.deploy_with(&s.inbox.topic_arn, &env).await;
    (proxy, deployed)
}

#[tokio::test]
async fn aws_out_of_reach_for_ninety_seconds_mid_bake_ends_the_release_undone_not_stuck() {
    let s = Scene::connect().await;
    let (proxy, deployed) = behind_a_fault_proxy(&s).await;
    let target = s.local.seed_lambda_canary(&unique("ai-handler"), 0.0).await;
    let name = unique("handler-outage");
    let execution = s.local.start_release_named(&deployed, &name, &slow_release(&name, &target, Some("2"))).await;
    let at_five = coalmine_tests::poll(Duration::from_secs(60), || async {
        (canary_share(&s.aws, &target).await > 0.0).then_some(())
    })
    .await;
    assert!(at_five.is_some(), "the first stage was written");
    let operator = coalmine_tests::operator::Operator {
        deployed: &deployed,
        topic: &s.inbox.topic_arn,
        dir: coalmine_tests::Scratch::new("operator"),
        env: Vec::new(),
    };

    // The fault's length is the point of the test: the functions see AWS refuse them.
    proxy.cut(true);
    let cut_at = std::time::Instant::now();
    // Meanwhile an operator asks how the release is doing: not "baking".
    let said = coalmine_tests::poll(Duration::from_secs(60), || async {
        let (_, text) = operator.run(&["status", &name]);
        text.contains("checks failing").then_some(text)
    })
    .await;
    assert!(said.is_some(), "status says the checks are failing: {}", operator.run(&["status", &name]).1);
    tokio::time::sleep(Duration::from_secs(90).saturating_sub(cut_at.elapsed())).await;
    proxy.cut(false);

    let (status, error, cause, _) = s.local.finished(&execution, Duration::from_secs(600)).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "ReleaseFailed"), "{cause}");
    assert!(cause.contains("coalmine set the traffic back"), "{cause}");
    assert_eq!(canary_share(&s.aws, &target).await, 0.0, "no canary left with nobody watching");
    let told = s.inbox.receive(1, Duration::from_secs(20)).await;
    assert_eq!(told[0].event(), "rolled_back", "the team was told: {}", told[0].message);
    let (_, after) = operator.run(&["status", &name]);
    assert!(after.contains("now: version 1 serves all traffic, no canary"), "read from the alias: {after}");
}

#[tokio::test]
async fn a_freeze_shorter_than_the_retries_is_not_baked_the_stage_passes_only_on_checks_made() {
    let s = Scene::connect().await;
    let (proxy, deployed) = behind_a_fault_proxy(&s).await;
    let target = s.local.seed_lambda_canary(&unique("ai-handler"), 0.0).await;
    let release = json!({
        "release": unique("handler-freeze"),
        "target": serde_json::to_value(&target).unwrap(),
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 30}, {"percent": 100, "bake_seconds": 1}],
        "check_every_seconds": 2,
        "gates": {"on_insufficient_data": "proceed"},
    });
    let execution = s.local.start_release(&deployed, &release).await;
    let at_five = coalmine_tests::poll(Duration::from_secs(60), || async {
        (canary_share(&s.aws, &target).await > 0.0).then_some(())
    })
    .await;
    assert!(at_five.is_some(), "the first stage was written");

    proxy.cut(true);
    tokio::time::sleep(Duration::from_secs(45)).await;
    proxy.cut(false);
    let thawed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();

    let (status, error, cause, output) = s.local.finished(&execution, Duration::from_secs(300)).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}");
    let history = output["progress"]["history"].as_array().unwrap();
    let left_the_stage = history.iter().find(|d| d["stage"] == 1).expect("it reached 100%");
    let checks_after = history.iter().filter(|d| d["stage"] == 0 && d["at"].as_u64().unwrap() >= thawed).count();
    assert!(
        left_the_stage["at"].as_u64().unwrap() >= thawed + 10 && checks_after >= 3,
        "the 30 s bake was not passed on the 45 s nobody watched: left at {}, thawed at {thawed}, {checks_after} checks \
         after: {history:#?}",
        left_the_stage["at"]
    );
}

const OLD_TOKEN: &str = "Ol4dT0ken9Qm2Lx8Rt4Wz7Hn5Bp1Cd6Fg0Js2Ya4Ue8Io3Pw9";
const NEW_TOKEN: &str = "N3wT0ken7Lm9Tq3Pw8Io4Ue2Ya0Js6Fg1Cd5Bp7Hn4Wz8Rt2L";

#[tokio::test]
async fn a_rotated_webhook_token_is_accepted_at_once_and_the_old_one_through_its_overlap() {
    let s = Scene::connect().await;
    let rollback = s.local.rollback_function(&s.inbox.topic_arn, &[]).await;
    let secret = s.local.put_secret(&unique("coalmine-webhook"), OLD_TOKEN).await;
    let handoff = format!("arn:aws:lambda:us-east-1:000000000000:function:{rollback}");
    let webhook = unique("coalmine-webhook");
    let env = [
        ("SNS_TOPIC_ARN", s.inbox.topic_arn.as_str()),
        ("ALERT_WEBHOOK_SECRET_ARN", secret.as_str()),
        ("ROLLBACK_FUNCTION_ARN", handoff.as_str()),
    ];
    s.local.create_function_from(&webhook, &coalmine_tests::bootstrap_path("rollback"), &env).await;
    let url = s.local.function_url(&webhook).await;
    let alert = coalmine_tests::event_json("azure/resolved-azureml-canary.common-schema.json");
    let http = reqwest::Client::new();
    let body = alert.to_string();
    // As an action group sends: a 503 is tried again (here within a bound).
    let post = |token: &str| {
        let (http, url, body, token) = (http.clone(), url.clone(), body.clone(), token.to_owned());
        async move {
            let answered = coalmine_tests::poll(Duration::from_secs(20), || async {
                let request = http.post(format!("{url}{token}")).header("content-type", "application/json");
                let status = request.body(body.clone()).send().await.unwrap().status().as_u16();
                (status != 503).then_some(status)
            })
            .await;
            answered.expect("an answer other than 503 within the sender's retries")
        }
    };
    // A resolved alert is acknowledged (200) and moves nothing: only the token is tried here.
    assert_eq!(post(OLD_TOKEN).await, 200, "the token in use");
    assert_eq!(post(NEW_TOKEN).await, 401, "not a token yet");

    // The team rotates the secret, then updates the action group's URL.
    let secrets = aws_sdk_secretsmanager::Client::new(&s.local.sdk);
    secrets.put_secret_value().secret_id(&secret).secret_string(NEW_TOKEN).send().await.unwrap();

    assert_eq!(post(NEW_TOKEN).await, 200, "the new token at once, whatever the webhook had kept");
    assert_eq!(post(OLD_TOKEN).await, 200, "the old one through the overlap, while the URL is changed");
    assert_eq!(post("Zz9wrongToken7Lm9Tq3Pw8Io4Ue2Ya0Js6Fg1Cd5Bp7Hn4W").await, 401);
}
