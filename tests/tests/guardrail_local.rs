//! The SageMaker adapter's guardrail calls over HTTP, against moto extended with
//! SageMaker's blue/green deployments (`tests/emulators/sagemaker_deployments.py`):
//! `UpdateEndpoint` as coalmine asks for it, every phase `DescribeEndpoint` reports read
//! back, SageMaker's silent rollbacks, `UpdateRollbackFailed`, shadow variants. The
//! endpoint's clock is held; each test moves it.

use aws_sdk_cloudwatch::types::StateValue;
use coalmine::domain::deployment::{DeploymentPlan, EndpointState, Size, Traffic};
use coalmine::ports::EndpointDeployments;
use coalmine::release::guardrail::preflight::preflight;
use coalmine::release::guardrail::spec::GuardrailRelease;
use coalmine::Error;
use coalmine_tests::sagemaker::{Deployments, GuardrailEndpoint, VARIANT};
use coalmine_tests::{unique, Scene};
use serde_json::json;

fn plan(alarms: &[&str]) -> DeploymentPlan {
    DeploymentPlan {
        traffic: Traffic::Canary { size: Size::CapacityPercent(25), wait_seconds: 600 },
        termination_wait_seconds: 120,
        max_execution_seconds: 3600,
        alarms: alarms.iter().map(|a| a.to_string()).collect(),
    }
}

async fn scene() -> (Scene, Deployments, GuardrailEndpoint) {
    let s = Scene::connect().await;
    let deployments = Deployments::connect();
    let endpoint = s.local.seed_guardrail_endpoint(&unique("ai-model"), &deployments).await;
    (s, deployments, endpoint)
}

/// The new fleet's variant statuses while a deployment runs, or "InService on CONFIG".
fn phase(state: &EndpointState) -> String {
    match &state.pending {
        Some(p) => format!("{} {}: {}", state.status, p.config, p.variants[0].1.join(",")),
        None => format!("{} on {}", state.status, state.config),
    }
}

#[tokio::test]
async fn a_guarded_deployment_reads_back_phase_by_phase_as_coalmine_asked_for_it_and_completes() {
    let (s, deployments, e) = scene().await;
    let router = &s.aws.router;
    let alarm = unique("model-5xx");
    s.local.put_alarm(&alarm, None).await;

    router.deploy(&e.name, &e.next, Some(&plan(&[&alarm, "coalmine-tripwire-x"]))).await.unwrap();

    let described = s.local.sagemaker.describe_endpoint().endpoint_name(&e.name).send().await.unwrap();
    let asked = described.last_deployment_config().expect("LastDeploymentConfig");
    let policy = asked.blue_green_update_policy().unwrap();
    let routing = policy.traffic_routing_configuration().unwrap();
    assert_eq!(routing.r#type().map(|t| t.as_str()), Some("CANARY"));
    assert_eq!(
        routing.canary_size().map(|c| (c.r#type().map(|t| t.as_str()), c.value())),
        Some((Some("CAPACITY_PERCENT"), Some(25)))
    );
    assert_eq!(routing.wait_interval_in_seconds(), Some(600));
    assert_eq!(
        (policy.termination_wait_in_seconds(), policy.maximum_execution_timeout_in_seconds()),
        (Some(120), Some(3600))
    );
    let rollback_alarms: Vec<_> =
        asked.auto_rollback_configuration().unwrap().alarms().iter().filter_map(|a| a.alarm_name()).collect();
    assert_eq!(rollback_alarms, [alarm.as_str(), "coalmine-tripwire-x"]);

    let mut seen = Vec::new();
    loop {
        let state = router.endpoint_state(&e.name).await.unwrap();
        seen.push(phase(&state));
        if state.pending.is_none() {
            break;
        }
        let refused = router.deploy(&e.name, &e.in_service, None).await.unwrap_err();
        assert!(matches!(&refused, Error::Refused(why) if why.contains("being updated already")), "{refused}");
        deployments.set(&e.name, json!({"finish_phase": true})).await;
    }

    let deploying = |statuses: &str| format!("Updating {}: {statuses}", e.next);
    assert_eq!(
        seen,
        [
            deploying("Creating"),
            deploying("ActivatingTraffic"),
            deploying("Baking"),
            deploying("ActivatingTraffic"),
            deploying("Baking"),
            deploying("Baking"),
            format!("InService on {}", e.next),
        ]
    );
    let traffic = deployments.state(&e.name).await["traffic"].clone();
    assert_eq!(traffic, json!([{"config": e.next, "variant": VARIANT, "share": 1.0, "shadow": false}]));
}

#[tokio::test]
async fn an_auto_rollback_alarm_firing_during_a_bake_rolls_back_silently_and_not_before() {
    let (s, deployments, e) = scene().await;
    let router = &s.aws.router;
    let alarm = unique("model-5xx");
    s.local.put_quiet_alarm(&alarm, None).await;
    router.deploy(&e.name, &e.next, Some(&plan(&[&alarm]))).await.unwrap();

    s.local.set_alarm(&alarm, StateValue::Alarm).await;
    let creating = router.endpoint_state(&e.name).await.unwrap();
    assert_eq!(phase(&creating), format!("Updating {}: Creating", e.next), "no traffic yet, nothing watched");
    let activating = deployments.set(&e.name, json!({"finish_phase": true})).await;
    assert_eq!(activating["deployment"]["status"], "ActivatingTraffic", "{activating}");
    let into_the_bake = deployments.set(&e.name, json!({"finish_phase": true})).await;
    assert_eq!(into_the_bake["last_outcome"], json!(format!("rolled back: alarm {alarm}")), "{into_the_bake}");

    let state = router.endpoint_state(&e.name).await.unwrap();
    assert_eq!(phase(&state), format!("InService on {}", e.in_service));
    assert_eq!(state.failure_reason, None, "SageMaker's rollback says nothing");
}

#[tokio::test]
async fn a_deployment_past_its_deadline_rolls_back_and_a_rollback_that_fails_is_update_rollback_failed() {
    let (s, deployments, e) = scene().await;
    let router = &s.aws.router;
    // A new fleet slow to come up: the waits alone would have fitted the deadline.
    deployments.set(&e.name, json!({"provision_seconds": 3000})).await;
    router.deploy(&e.name, &e.next, Some(&plan(&[]))).await.unwrap();
    deployments.set(&e.name, json!({"advance_seconds": 3601})).await;
    let state = router.endpoint_state(&e.name).await.unwrap();
    assert_eq!(phase(&state), format!("InService on {}", e.in_service));

    deployments.set(&e.name, json!({"rollback_fails": true})).await;
    router.deploy(&e.name, &e.next, Some(&plan(&[]))).await.unwrap();
    deployments.set(&e.name, json!({"advance_seconds": 3601})).await;
    let state = router.endpoint_state(&e.name).await.unwrap();
    assert_eq!(state.status, "UpdateRollbackFailed");
    assert!(state.failure_reason.as_deref().is_some_and(|r| r.contains("the rollback failed")), "{state:?}");
}

#[tokio::test]
async fn a_shadow_config_keeps_its_shadow_variant_through_the_preflight_and_into_service() {
    let (s, deployments, e) = scene().await;
    let router = &s.aws.router;
    let alarm = unique("model-5xx");
    s.local.put_quiet_alarm(&alarm, None).await;
    let release = GuardrailRelease::parse(&json!({
        "release": "ai-model-2",
        "guardrail": {
            "endpoint": e.name, "endpoint_config": e.next,
            "traffic": {"canary": {"size": {"capacity_percent": 25}, "wait_seconds": 600}},
            "max_execution_seconds": 3600, "alarms": [alarm]
        },
        "shadow": {"endpoint_config": e.shadow, "variant": "candidate", "duration_seconds": 600},
        "check_every_seconds": 60
    }))
    .unwrap();

    let variants = router.config_variants(&e.shadow).await.unwrap();
    assert_eq!((variants.production, variants.shadow), (vec![VARIANT.to_owned()], vec!["candidate".to_owned()]));
    let state = router.endpoint_state(&e.name).await.unwrap();
    let checked = preflight(&release, &state, router, &s.aws.alarms).await.unwrap();
    assert!(
        checked.starts_with(&format!("{} InService on {}; AllTraffic has 1 instance", e.name, e.in_service)),
        "{checked}"
    );

    router.deploy(&e.name, &e.shadow, None).await.unwrap();
    deployments.drive_until(&e.name, "shadowing", |st| st["status"] == "InService").await;

    let described = s.local.sagemaker.describe_endpoint().endpoint_name(&e.name).send().await.unwrap();
    let shadows: Vec<_> = described.shadow_production_variants().iter().filter_map(|v| v.variant_name()).collect();
    assert_eq!((described.endpoint_config_name(), shadows), (Some(e.shadow.as_str()), vec!["candidate"]));
    let copied = deployments.state(&e.name).await["traffic"].clone();
    assert_eq!(copied[1], json!({"config": e.shadow, "variant": "candidate", "share": 1.0, "shadow": true}));
}
