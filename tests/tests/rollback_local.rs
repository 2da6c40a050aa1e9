//! The rollback handler, called in-process, against the local AWS over real HTTP:
//! MiniStack for Lambda, SNS, SQS and CloudWatch; moto for SageMaker.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::StateValue;

use coalmine::clouds::Clouds;
use coalmine::config::Config;
use coalmine::rollback::{handle_payload, RollbackDeps};
use coalmine_tests::sagemaker::Deployments;
use coalmine_tests::{sample_event, unique, Interloper, LocalAws, Scene};
use serde_json::{json, Value};

const MESSAGE_WAIT: Duration = Duration::from_secs(10);

async fn invoke(aws: &Clouds, config: &Config, payload: &Value) -> coalmine::Result<Value> {
    let deps = RollbackDeps::new(&aws.router, &aws.notifier, &aws.alarms, &config.rollback_targets);
    handle_payload(payload, &deps).await
}

#[tokio::test]
async fn lambda_canary_at_5_percent_goes_to_zero_and_the_team_is_told() {
    let s = Scene::connect().await;
    let function = unique("ai-handler");
    let target = s.local.seed_lambda_canary(&function, 0.05).await;
    let alarm = unique("canary-errors");
    s.local.put_alarm(&alarm, Some(&target.to_string())).await;

    let started = Instant::now();
    let summary =
        invoke(&s.aws, &s.config, &sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None)).await.unwrap();
    eprintln!("rollback handler, Lambda target, local AWS: {:?}", started.elapsed());

    let (stable, weights, _) = s.local.alias_state(&target).await;
    assert_eq!((stable.as_str(), weights.len()), ("1", 0), "stable kept, canary weight removed");
    assert_eq!(summary["resolved_by"], "tag");
    assert_eq!(summary["targets"][0]["outcome"], "rolled_back");
    let messages = s.inbox.receive(1, MESSAGE_WAIT).await;
    assert_eq!(messages.len(), 1);
    assert_eq!((messages[0].event(), messages[0].target()), ("rolled_back", target.to_string().as_str()));
    assert!(messages[0].subject.len() <= 100 && messages[0].subject.contains("rolled back"), "{}", messages[0].subject);
    for line in [
        format!("on alarm {alarm}: its canary's traffic is now zero"),
        "Before:    version 1 at 95%, canary version 2 at 5%".to_owned(),
        "After:     version 1 serves all traffic, no canary".to_owned(),
    ] {
        assert!(messages[0].message.contains(&line), "lacks {line:?}:\n{}", messages[0].message);
    }
}

/// `event` as if its alarm had entered ALARM at `when` (RFC 3339, UTC).
fn entered_alarm_at(mut event: Value, when: &str) -> Value {
    if let Some(records) = event.get_mut("Records").and_then(Value::as_array_mut) {
        for record in records {
            let message = &mut record["Sns"]["Message"];
            let mut notification: Value = serde_json::from_str(message.as_str().unwrap()).unwrap();
            notification["StateChangeTime"] = json!(when);
            *message = json!(notification.to_string());
        }
    } else {
        event["alarmData"]["state"]["timestamp"] = json!(when);
    }
    event
}

#[tokio::test]
async fn only_a_notification_cloudwatch_bears_out_moves_traffic() {
    let s = Scene::connect().await;
    for sample in ["alarm-lambda-canary.sns.json", "alarm-lambda-canary.alarm-action.json"] {
        // Forged: no such alarm. Stale: an alarm that is OK and did not fire then.
        for exists in [false, true] {
            let function = unique("ai-handler");
            let target = s.local.seed_lambda_canary(&function, 0.25).await;
            let alarm = unique("coalmine-forged");
            if exists {
                s.local.put_quiet_alarm(&alarm, Some(&target.to_string())).await;
            }
            let summary = invoke(&s.aws, &s.config, &sample_event(sample, &alarm, Some(&function))).await.unwrap();
            assert_eq!((summary["acted"].as_bool(), summary["confirmed"].as_bool()), (Some(false), Some(false)));
            assert_eq!(s.local.alias_state(&target).await.1["2"], 0.25, "{sample}: nothing moved");
            let told = s.inbox.receive(1, MESSAGE_WAIT).await;
            assert_eq!(told[0].event(), "unconfirmed", "{sample}");
        }
        // Real: it went to ALARM and back to OK before this (late) delivery.
        let function = unique("ai-handler");
        let target = s.local.seed_lambda_canary(&function, 0.25).await;
        let alarm = unique("coalmine-real");
        s.local.put_alarm(&alarm, Some(&target.to_string())).await;
        s.local.set_alarm(&alarm, StateValue::Alarm).await;
        let fired = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap();
        s.local.set_alarm(&alarm, StateValue::Ok).await;
        let late = entered_alarm_at(sample_event(sample, &alarm, Some(&function)), &fired);
        let summary = invoke(&s.aws, &s.config, &late).await.unwrap();
        assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{sample}: {summary}");
        assert!(s.local.alias_state(&target).await.1.is_empty());
        assert_eq!(s.inbox.receive(1, MESSAGE_WAIT).await[0].event(), "rolled_back");
    }
}

#[tokio::test]
async fn the_alarm_action_payload_rolls_back_by_dimensions() {
    let s = Scene::connect().await;
    let function = unique("ai-handler");
    let target = s.local.seed_lambda_canary(&function, 0.25).await;
    let alarm = unique("untagged");
    s.local.put_alarm(&alarm, None).await;
    // An alarm's action runs because it went to ALARM: CloudWatch says so when asked.
    s.local.set_alarm(&alarm, StateValue::Alarm).await;

    let summary =
        invoke(&s.aws, &s.config, &sample_event("alarm-lambda-canary.alarm-action.json", &alarm, Some(&function)))
            .await
            .unwrap();

    assert_eq!(summary["resolved_by"], "dimensions");
    assert!(s.local.alias_state(&target).await.1.is_empty());
    assert_eq!(s.inbox.receive(1, MESSAGE_WAIT).await[0].event(), "rolled_back");
}

#[tokio::test]
async fn an_alarm_deleted_since_it_fired_is_resolved_by_its_dimensions() {
    let s = Scene::connect().await;
    let function = unique("ai-handler");
    let target = s.local.seed_lambda_canary(&function, 0.25).await;
    // Never created: the emulator answers the tag lookup the way AWS answers for a
    // deleted alarm, and that must read as "no tag", not as a failure to retry.
    let alarm = unique("deleted");

    let summary =
        invoke(&s.aws, &s.config, &sample_event("alarm-lambda-canary.eventbridge.json", &alarm, Some(&function)))
            .await
            .unwrap();

    assert_eq!(summary["resolved_by"], "dimensions");
    assert!(s.local.alias_state(&target).await.1.is_empty());
}

#[tokio::test]
async fn sagemaker_canary_variant_goes_to_stable_1_canary_0() {
    let s = Scene::connect().await;
    let endpoint = unique("ai-model");
    let target = s.local.seed_sagemaker_canary(&endpoint, 0.1).await;
    let alarm = unique("model-5xx");
    s.local.put_alarm(&alarm, Some(&target.to_string())).await;

    let started = Instant::now();
    invoke(&s.aws, &s.config, &sample_event("alarm-sagemaker-canary.eventbridge.json", &alarm, None)).await.unwrap();
    eprintln!("rollback handler, SageMaker target, local AWS: {:?}", started.elapsed());

    let weights = s.local.variant_weights(&endpoint).await;
    assert_eq!((weights["stable"], weights["canary"]), (1.0, 0.0));
    let messages = s.inbox.receive(1, MESSAGE_WAIT).await;
    assert_eq!((messages[0].event(), messages[0].target()), ("rolled_back", target.to_string().as_str()));
}

/// A SageMaker canary at 10% whose endpoint is `Updating` (someone else's
/// `UpdateEndpoint`, a new fleet `provision_seconds` long in real time) when its alarm fires.
async fn sagemaker_canary_mid_update(s: &Scene, provision_seconds: u32) -> (coalmine::Target, Value) {
    let deployments = Deployments::connect();
    let endpoint = unique("ai-model");
    let target = s.local.seed_sagemaker_canary(&endpoint, 0.1).await;
    let alarm = unique("model-5xx");
    s.local.put_alarm(&alarm, Some(&target.to_string())).await;
    deployments.set(&endpoint, json!({"provision_seconds": provision_seconds, "activation_seconds": 0})).await;
    let config = format!("{endpoint}-config");
    s.local.sagemaker.update_endpoint().endpoint_name(&endpoint).endpoint_config_name(config).send().await.unwrap();
    (target, sample_event("alarm-sagemaker-canary.eventbridge.json", &alarm, None))
}

#[tokio::test]
async fn an_endpoint_mid_update_is_waited_for_then_its_canary_zeroed() {
    let s = Scene::connect().await;
    let (target, event) = sagemaker_canary_mid_update(&s, 2).await;
    let coalmine::Target::Sagemaker(variants) = &target else { unreachable!() };

    let summary = invoke(&s.aws, &s.config, &event).await.unwrap();

    assert_eq!(summary["targets"][0]["outcome"], "rolled_back", "{summary}");
    let weights = s.local.variant_weights(&variants.endpoint).await;
    assert_eq!((weights["stable"], weights["canary"]), (1.0, 0.0));
}

#[tokio::test]
async fn an_endpoint_updating_past_the_budget_fails_the_rollback_retryably_moving_nothing() {
    let s = Scene::connect().await;
    let (target, event) = sagemaker_canary_mid_update(&s, 3600).await;
    let coalmine::Target::Sagemaker(variants) = &target else { unreachable!() };

    let failed = invoke(&s.aws, &s.config, &event).await.unwrap_err();

    assert!(failed.is_retryable(), "Lambda retries it: {failed}");
    assert!(failed.to_string().contains("Updating"), "{failed}");
    let weights = s.local.variant_weights(&variants.endpoint).await;
    assert_eq!((weights["stable"], weights["canary"]), (0.9, 0.1), "nothing written mid-update");
}

#[tokio::test]
async fn an_endpoint_with_one_variant_is_left_to_sagemakers_guardrails_and_said_so() {
    let s = Scene::connect().await;
    let endpoint = unique("ai-model");
    s.local.seed_sagemaker_endpoint(&endpoint, &[("AllTraffic", 1.0)]).await;
    let alarm = unique("model-5xx");
    s.local.put_alarm(&alarm, Some(&format!("sagemaker:{endpoint}:AllTraffic"))).await;

    let summary = invoke(&s.aws, &s.config, &sample_event("alarm-sagemaker-canary.eventbridge.json", &alarm, None))
        .await
        .unwrap();

    assert_eq!(summary["targets"][0]["outcome"], "already_zero", "{summary}");
    assert_eq!(s.local.variant_weights(&endpoint).await["AllTraffic"], 1.0, "the only variant keeps its traffic");
    let message = &s.inbox.receive(1, MESSAGE_WAIT).await[0];
    assert!(message.message.contains("only production variant"), "{}", message.message);
}

#[tokio::test]
async fn a_second_delivery_writes_nothing_and_says_already_zero() {
    let s = Scene::connect().await;
    let target = s.local.seed_lambda_canary(&unique("ai-handler"), 0.05).await;
    let alarm = unique("canary-errors");
    s.local.put_alarm(&alarm, Some(&target.to_string())).await;
    let event = sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None);

    invoke(&s.aws, &s.config, &event).await.unwrap();
    let (_, _, revision_after_first) = s.local.alias_state(&target).await;
    let summary = invoke(&s.aws, &s.config, &event).await.unwrap();

    assert_eq!(s.local.alias_state(&target).await.2, revision_after_first, "no second write");
    assert_eq!(summary["targets"][0]["outcome"], "already_zero");
    let events: Vec<String> = s.inbox.receive(2, MESSAGE_WAIT).await.iter().map(|m| m.event().to_owned()).collect();
    assert_eq!(events, ["rolled_back", "already_zero"]);
}

#[tokio::test]
async fn ok_and_insufficient_data_change_nothing() {
    let s = Scene::connect().await;
    let target = s.local.seed_lambda_canary(&unique("ai-handler"), 0.05).await;
    let alarm = unique("canary-errors");
    s.local.put_alarm(&alarm, Some(&target.to_string())).await;
    let before = s.local.alias_state(&target).await;

    for file in ["ok-lambda-canary.eventbridge.json", "insufficient-data-lambda-canary.eventbridge.json"] {
        let summary = invoke(&s.aws, &s.config, &sample_event(file, &alarm, None)).await.unwrap();
        assert_eq!(summary["acted"], false, "{file}");
    }

    assert_eq!(s.local.alias_state(&target).await, before);
    assert!(s.inbox.drain(Duration::from_secs(2)).await.is_empty());
}

#[tokio::test]
async fn an_alarm_guarding_nothing_known_warns_and_succeeds() {
    let s = Scene::connect().await;
    let alarm = unique("stray");
    s.local.put_alarm(&alarm, None).await;
    let mut event = sample_event("alarm-lambda-canary.eventbridge.json", &alarm, Some("no-such-function"));
    event["detail"]["configuration"]["metrics"] = serde_json::json!([]);

    let summary = invoke(&s.aws, &s.config, &event).await.unwrap();

    assert_eq!(summary["resolved_by"], "nothing");
    let messages = s.inbox.receive(1, MESSAGE_WAIT).await;
    assert_eq!(messages[0].event(), "no_target");
    assert!(messages[0].message.contains(&alarm));
}

#[tokio::test]
async fn sns_failing_then_recovering_delivers_on_the_retried_invocation() {
    let local = LocalAws::connect().await;
    let topic = unique("late-topic");
    // The topic does not exist yet: Publish fails the way an outage would.
    let missing_topic_arn = format!("arn:aws:sns:{}:{}:{topic}", coalmine_tests::REGION, coalmine_tests::ACCOUNT);
    let (aws, config) = local.adapters(&missing_topic_arn);
    let target = local.seed_lambda_canary(&unique("ai-handler"), 0.05).await;
    let alarm = unique("canary-errors");
    local.put_alarm(&alarm, Some(&target.to_string())).await;
    let event = sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None);

    let err = invoke(&aws, &config, &event).await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("sns:Publish"), "{err}");
    assert!(local.alias_state(&target).await.1.is_empty(), "rolled back despite SNS");

    let inbox = local.topic_with_queue(&topic).await;
    assert_eq!(inbox.topic_arn, missing_topic_arn);
    invoke(&aws, &config, &event).await.unwrap();
    let messages = inbox.receive(1, MESSAGE_WAIT).await;
    assert_eq!((messages.len(), messages[0].event()), (1, "already_zero"));
}

#[tokio::test]
async fn a_revision_conflict_is_read_again_and_handled_never_overwritten_blindly() {
    let s = Scene::connect().await;
    let target = s.local.seed_lambda_canary(&unique("ai-handler"), 0.05).await;
    let alarm = unique("canary-errors");
    s.local.put_alarm(&alarm, Some(&target.to_string())).await;
    let router = Interloper::new(&s.aws.router, &s.local, 0.5);
    let deps = RollbackDeps::new(&s.aws.router, &s.aws.notifier, &s.aws.alarms, &s.config.rollback_targets)
        .with_traffic(&router);

    let summary =
        handle_payload(&sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None), &deps).await.unwrap();

    // The first write carried a stale RevisionId and was refused; the re-read saw 50%.
    assert_eq!(summary["targets"][0]["weight_before"], 0.5);
    assert!(s.local.alias_state(&target).await.1.is_empty());
    let messages = s.inbox.receive(1, MESSAGE_WAIT).await;
    assert!(
        messages[0].message.contains("Before:    version 1 at 50%, canary version 2 at 50%"),
        "{}",
        messages[0].message
    );
}

#[tokio::test]
async fn fifty_concurrent_alarm_events_over_ten_targets_roll_each_back_exactly_once() {
    let s = Scene::connect().await;
    let mut targets = Vec::new();
    let mut events = Vec::new();
    for _ in 0..10 {
        let function = unique("storm");
        let target = s.local.seed_lambda_canary(&function, 0.1).await;
        let alarm = unique("storm-alarm");
        s.local.put_alarm(&alarm, Some(&target.to_string())).await;
        // Dimensions naming the tagged alias: every event reads it early, beside its tag
        // lookup, so the five race with the same revision and four must lose.
        for _ in 0..5 {
            events.push(sample_event("alarm-lambda-canary.eventbridge.json", &alarm, Some(&function)));
        }
        targets.push(target);
    }

    let started = Instant::now();
    let results = futures::future::join_all(events.iter().map(|e| invoke(&s.aws, &s.config, e))).await;
    eprintln!("50 concurrent alarm events over 10 targets: {:?}", started.elapsed());

    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    for target in &targets {
        assert!(s.local.alias_state(target).await.1.is_empty(), "{target} still has canary weight");
    }
    let messages = s.inbox.receive(50, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 50);
    for target in &targets {
        let name = target.to_string();
        let rolled_back = messages.iter().filter(|m| m.target() == name && m.event() == "rolled_back").count();
        let already_zero = messages.iter().filter(|m| m.target() == name && m.event() == "already_zero").count();
        assert_eq!((rolled_back, already_zero), (1, 4), "{name}");
    }
}

#[tokio::test]
async fn missing_aliases_and_variants_fail_clearly_and_change_nothing_else() {
    let s = Scene::connect().await;
    let real = s.local.seed_lambda_canary(&unique("ai-handler"), 0.05).await;
    let endpoint = unique("ai-model");
    s.local.seed_sagemaker_canary(&endpoint, 0.05).await;
    let alarm = unique("canary-errors");
    let tag = format!("lambda:{}:no-such-alias sagemaker:{endpoint}:stable:no-such-variant {real}", unique("ghost"));
    s.local.put_alarm(&alarm, Some(&tag)).await;

    let err = invoke(&s.aws, &s.config, &sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None))
        .await
        .unwrap_err();

    let message = err.to_string();
    assert!(!err.is_retryable(), "a missing alias will not appear on a retry: {message}");
    assert!(message.contains("not found") && message.contains("no-such-alias"), "{message}");
    assert!(message.contains("no production variant \"no-such-variant\""), "{message}");
    assert!(s.local.alias_state(&real).await.1.is_empty(), "the real target was still rolled back");
    let weights = s.local.variant_weights(&endpoint).await;
    assert_eq!(weights["canary"], 0.05, "an unknown variant never changes the endpoint");
    // The team hears of each: the one rolled back, and the two that failed for good.
    let mut told: Vec<(String, String)> =
        s.inbox.receive(3, MESSAGE_WAIT).await.iter().map(|m| (m.event().to_owned(), m.target().to_owned())).collect();
    told.sort();
    assert_eq!(told.len(), 3, "{told:?}");
    assert_eq!(told[2], ("rolled_back".to_owned(), real.to_string()));
    assert!(told[..2].iter().all(|(event, _)| event == "rollback_failed"), "{told:?}");
}

#[tokio::test]
async fn unicode_alarm_names_roll_back_with_an_ascii_subject() {
    let s = Scene::connect().await;
    let target = s.local.seed_lambda_canary(&unique("ai-handler"), 0.05).await;
    let alarm = format!("{}-模型-错误率-🚨", unique("canary"));
    s.local.put_alarm(&alarm, Some(&target.to_string())).await;

    invoke(&s.aws, &s.config, &sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None)).await.unwrap();

    assert!(s.local.alias_state(&target).await.1.is_empty());
    let messages = s.inbox.receive(1, MESSAGE_WAIT).await;
    assert!(messages[0].subject.is_ascii() && messages[0].subject.len() <= 100, "{}", messages[0].subject);
    assert!(messages[0].message.contains(&alarm), "the body keeps the real name");
}
