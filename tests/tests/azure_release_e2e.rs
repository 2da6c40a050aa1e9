//! Azure ML releases end to end: the real stepper and rollback bootstraps in the local
//! AWS, signed in to Azure with the service principal in a Secrets Manager secret, the
//! real state machine, against the Azure stand-in over HTTPS. Stages, a rollback on a
//! metric, a rollback on an Azure Monitor alert through the webhook's function URL, and a
//! shadow that is Azure's own mirror traffic. Bakes are seconds long.

use std::time::Duration;

use coalmine::Target;
use coalmine_tests::azure::{AzureStandIn, Health};
use coalmine_tests::{poll, unique, Deployed, Scene};
use serde_json::{json, Value};

const RUN: Duration = Duration::from_secs(120);
const TOKEN: &str = "k3v9Qm2Lx8Rt4Wz7Hn5Bp1Cd6Fg0Js2Ya4Ue8Io3Pw9Tq7Lm";

struct Azure {
    scene: Scene,
    stand_in: AzureStandIn,
    deployed: Deployed,
}

/// The functions deployed with the stand-in's service principal in their secret.
async fn azure_scene() -> Azure {
    let scene = Scene::connect().await;
    let stand_in = AzureStandIn::start().await;
    let secret = scene.local.put_secret(&unique("coalmine-azure"), &stand_in.secret_json()).await;
    let env = [("AZURE_CREDENTIALS_SECRET_ARN", secret.as_str()), ("AZURE_UPDATE_MAX_WAIT_SECONDS", "20")];
    let deployed = scene.local.deploy_with(&scene.inbox.topic_arn, &env).await;
    Azure { scene, stand_in, deployed }
}

fn release(name: &str, target: &Target, rest: Value) -> Value {
    let mut release = json!({"release": name, "target": serde_json::to_value(target).unwrap()});
    release.as_object_mut().unwrap().extend(rest.as_object().unwrap().clone());
    release
}

/// Whole-percent stages of two-second bakes, checked every second, judged on Azure
/// Monitor's errors and latency.
fn quick(stages: &[u32]) -> Value {
    json!({
        "stages": stages.iter().map(|p| json!({"percent": p, "bake_seconds": 2})).collect::<Vec<_>>(),
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05, "max_p95_latency_ms": 5000, "min_requests": 50}
    })
}

#[tokio::test]
async fn a_healthy_azure_release_climbs_its_stages_and_is_promoted() {
    let a = azure_scene().await;
    let target = a.stand_in.add_endpoint(&unique("chat"), &[("blue", 100), ("green", 0)]);
    let execution =
        a.scene.local.start_release(&a.deployed, &release("azure-healthy", &target, quick(&[5, 25, 100]))).await;
    let (status, error, cause, output) = a.scene.local.finished(&execution, RUN).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}");
    assert_eq!(output["progress"]["status"], "promoted", "{output}");
    let (traffic, mirror) = a.stand_in.traffic(&target);
    assert_eq!((traffic["blue"], traffic["green"]), (0.0, 100.0));
    assert!(mirror.values().all(|m| *m == 0.0));
    let stamp = a.stand_in.resource(&target)["tags"]["coalmine:release"].as_str().unwrap().to_owned();
    assert!(stamp.starts_with("coalmine/1 phase=promoted") && stamp.contains("stable=blue"), "{stamp}");
    // Each stage was one PUT of the whole endpoint, in whole percents.
    let puts: Vec<u16> = a.stand_in.seen().iter().filter(|s| s.method == "PUT").map(|s| s.status).collect();
    assert_eq!(puts, [201, 201, 201, 201], "5%, 25%, 100%, and the promotion's stamp");
}

#[tokio::test]
async fn a_deployment_failing_its_requests_is_rolled_back_by_the_judge() {
    let a = azure_scene().await;
    let target = a.stand_in.add_endpoint(&unique("chat"), &[("blue", 100), ("green", 0)]);
    a.stand_in.set_health(&target, "green", Health { error_rate: 0.3, p95_ms: 400.0 });
    let execution =
        a.scene.local.start_release(&a.deployed, &release("azure-failing", &target, quick(&[5, 25, 100]))).await;
    let (status, error, cause, _) = a.scene.local.finished(&execution, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains("error rate"), "{cause}");
    let (traffic, _) = a.stand_in.traffic(&target);
    assert_eq!((traffic["blue"], traffic["green"]), (100.0, 0.0));
    let stamp = a.stand_in.resource(&target)["tags"]["coalmine:release"].as_str().unwrap().to_owned();
    assert!(stamp.contains("phase=rolled_back by=health"), "{stamp}");
    let messages = a.scene.inbox.receive(2, Duration::from_secs(20)).await;
    assert!(messages.iter().any(|m| m.event() == "rolled_back"), "{messages:?}");
}

#[tokio::test]
async fn an_azure_monitor_alert_through_the_webhook_rolls_the_canary_back_at_once() {
    let a = azure_scene().await;
    let local = &a.scene.local;
    let target = a.stand_in.add_endpoint(&unique("chat"), &[("blue", 100), ("green", 0)]);
    // The webhook: the rollback binary again, behind a public URL, handing alerts on.
    let token_secret = local.put_secret(&unique("coalmine-webhook"), TOKEN).await;
    let rollback_arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{}", a.deployed.rollback_fn);
    let webhook = unique("coalmine-webhook");
    let env = [
        ("SNS_TOPIC_ARN", a.scene.inbox.topic_arn.as_str()),
        ("ALERT_WEBHOOK_SECRET_ARN", token_secret.as_str()),
        ("ROLLBACK_FUNCTION_ARN", rollback_arn.as_str()),
    ];
    local.create_function_from(&webhook, &coalmine_tests::bootstrap_path("rollback"), &env).await;
    let url = local.function_url(&webhook).await;

    // A release that bakes long at 5%: only the alert can end it soon.
    let slow = json!({
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.5, "min_requests": 50}
    });
    let execution = local.start_release(&a.deployed, &release("azure-alerted", &target, slow)).await;
    let at_five =
        poll(Duration::from_secs(60), || async { (a.stand_in.traffic(&target).0["green"] == 5.0).then_some(()) }).await;
    assert!(at_five.is_some(), "the first stage was written");

    let Target::Azureml(d) = &target else { unreachable!() };
    let mut alert = coalmine_tests::event_json("azure/alert-azureml-canary.common-schema.json");
    alert["data"]["essentials"]["alertTargetIDs"] = json!([d.endpoint_id().to_ascii_lowercase()]);
    let http = reqwest::Client::new();
    let post = |path: String, body: &Value| {
        http.post(format!("{url}{path}")).header("content-type", "application/json").body(body.to_string())
    };

    // Without the token: refused, and nothing moves.
    let refused = post("not-the-token".into(), &alert).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let accepted = post(TOKEN.into(), &alert).send().await.unwrap();
    assert_eq!(accepted.status().as_u16(), 202, "{}", accepted.text().await.unwrap_or_default());

    let zeroed =
        poll(Duration::from_secs(60), || async { (a.stand_in.traffic(&target).0["green"] == 0.0).then_some(()) }).await;
    assert!(zeroed.is_some(), "the rollback function zeroed the canary");
    let (status, error, cause, _) = local.finished(&execution, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains("coalmine-chat-green-5xx"), "the alert is named: {cause}");
    let stamp = a.stand_in.resource(&target)["tags"]["coalmine:release"].as_str().unwrap().to_owned();
    assert!(stamp.contains("by=alarm:coalmine-chat-green-5xx"), "{stamp}");
    let messages = a.scene.inbox.receive(2, Duration::from_secs(20)).await;
    let named = |m: &coalmine_tests::Received| m.target().starts_with("azureml:") && m.target().ends_with(":green");
    assert!(messages.iter().any(|m| m.event() == "rolled_back" && named(m)), "{messages:?}");
}

#[tokio::test]
async fn a_mirror_shadow_passes_into_the_first_stage_and_serves_no_user_before_it() {
    let a = azure_scene().await;
    let target = a.stand_in.add_endpoint(&unique("chat"), &[("blue", 100), ("green", 0)]);
    let mut rest = quick(&[5, 100]);
    rest["shadow"] = json!({"duration_seconds": 60, "until_conclusive": true, "sample": 0.2});
    rest["gates"]["min_requests"] = json!(50);
    let execution = a.scene.local.start_release(&a.deployed, &release("azure-shadowed", &target, rest)).await;
    let mirrored = poll(Duration::from_secs(60), || async {
        (a.stand_in.traffic(&target).1.get("green") == Some(&20.0)).then_some(())
    })
    .await;
    assert!(mirrored.is_some(), "20% mirrored to the candidate");
    assert_eq!(a.stand_in.traffic(&target).0["green"], 0.0, "no user served by it while shadowing");
    let (status, error, cause, output) = a.scene.local.finished(&execution, RUN).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}");
    let history = output["progress"]["history"].as_array().unwrap();
    assert!(history.iter().any(|d| d["shadow"] == true), "{output}");
    assert!(history.iter().any(|d| d["reason"].as_str().unwrap_or_default().starts_with("Shadow passed")), "{output}");
    let (traffic, mirror) = a.stand_in.traffic(&target);
    assert_eq!((traffic["green"], mirror["green"]), (100.0, 0.0));
}

#[tokio::test]
async fn a_candidate_failing_its_mirrored_requests_ends_in_the_shadow_having_served_no_user() {
    let a = azure_scene().await;
    let target = a.stand_in.add_endpoint(&unique("chat"), &[("blue", 100), ("green", 0)]);
    a.stand_in.set_health(&target, "green", Health { error_rate: 0.4, p95_ms: 400.0 });
    let mut rest = quick(&[5, 100]);
    rest["shadow"] = json!({"duration_seconds": 60, "sample": 0.2});
    let execution = a.scene.local.start_release(&a.deployed, &release("azure-shadow-fails", &target, rest)).await;
    let (status, error, cause, _) = a.scene.local.finished(&execution, RUN).await;
    assert_eq!((status.as_str(), error.as_str()), ("FAILED", "CanaryRolledBack"), "{cause}");
    assert!(cause.contains("No user was served by the candidate"), "{cause}");
    let (traffic, mirror) = a.stand_in.traffic(&target);
    assert_eq!((traffic["green"], mirror["green"]), (0.0, 0.0), "the mirror ended with the release");
    assert!(a.stand_in.was_mirrored(&target, "green"), "it was shadowed");
    assert!(!a.stand_in.ever_served(&target, "green"), "and never served a user");
}
