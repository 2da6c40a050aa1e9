//! Guardrail releases end to end in the local AWS: the real stepper and rollback
//! bootstraps as functions, the real state machine, the `coalmine` CLI, and SageMaker's
//! blue/green deployments served by moto's test extension
//! (`tests/emulators/sagemaker_deployments.py`), which rolls a deployment back when one
//! of its auto-rollback alarms is in ALARM in MiniStack's CloudWatch. Each endpoint's
//! deployment moves only when its test moves it, so each test decides in which phase
//! things happen; the stepper checks every second.

use std::time::Duration;

use aws_sdk_cloudwatch::types::StateValue;
use coalmine_tests::operator::Operator;
use coalmine_tests::sagemaker::{Deployments, GuardrailEndpoint, VARIANT};
use coalmine_tests::{sample_event, unique, Deployed, Scene, Scratch};
use serde_json::{json, Value};

struct Guarded {
    s: Scene,
    deployed: Deployed,
    deployments: Deployments,
    e: GuardrailEndpoint,
    /// The release's own alarm, SageMaker's auto-rollback alarm too; calm.
    alarm: String,
}

async fn guarded() -> Guarded {
    let s = Scene::connect().await;
    let deployed = s.local.deploy(&s.inbox.topic_arn).await;
    let deployments = Deployments::connect();
    let e = s.local.seed_guardrail_endpoint(&unique("ai-model"), &deployments).await;
    let alarm = unique("model-5xx");
    s.local.put_quiet_alarm(&alarm, None).await;
    Guarded { s, deployed, deployments, e, alarm }
}

impl Guarded {
    fn operator(&self) -> Operator<'_> {
        Operator {
            deployed: &self.deployed,
            topic: &self.s.inbox.topic_arn,
            dir: Scratch::new("coalmine-guardrail"),
            env: vec![],
        }
    }

    /// A release of `ENDPOINT-v2`: a canary of 10% of capacity baking ten (emulated)
    /// minutes, then the rest; with a minute's shadow of the candidate first if `shadow`.
    fn release(&self, shadow: bool) -> Value {
        let mut release = json!({
            "release": unique("ai-model-2"),
            "guardrail": {
                "endpoint": self.e.name,
                "endpoint_config": self.e.next,
                "variant": VARIANT,
                "traffic": {"canary": {"size": {"capacity_percent": 10}, "wait_seconds": 600}},
                "termination_wait_seconds": 300,
                "max_execution_seconds": 3600,
                "alarms": [self.alarm]
            },
            "check_every_seconds": 1,
            "gates": {"max_error_rate": 0.05, "max_p95_latency_ms": 10000, "min_requests": 50}
        });
        if shadow {
            release["shadow"] =
                json!({"endpoint_config": self.e.shadow, "variant": "candidate", "duration_seconds": 60});
        }
        release
    }

    fn tripwire(&self) -> String {
        format!("coalmine-tripwire-{}", self.e.name)
    }

    /// The endpoint as SageMaker describes it: its config, and whether a deployment runs.
    async fn described(&self) -> (String, String, bool, Option<String>) {
        let out = self.s.local.sagemaker.describe_endpoint().endpoint_name(&self.e.name).send().await.unwrap();
        (
            out.endpoint_status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            out.endpoint_config_name().unwrap_or_default().to_owned(),
            out.pending_deployment_summary().is_some(),
            out.failure_reason().map(str::to_owned),
        )
    }
}

fn reasons(status: &Value) -> Vec<String> {
    status["progress"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["reason"].as_str().map(str::to_owned))
        .collect()
}

fn mentions(reasons: &[String], text: &str) -> bool {
    reasons.iter().any(|r| r.contains(text))
}

/// The stepper has found the (healthy) new fleet healthy during SageMaker's bake, on
/// evidence: a first check can come before the fleet's metrics and say "inconclusive".
async fn judged_while_baking(op: &Operator<'_>, name: &str) -> Value {
    op.until(name, "judging the bake healthy", |st| {
        reasons(st).iter().any(|r| r.contains("deploying: AllTraffic: Baking). healthy"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_shadowed_then_deployed_with_guardrails_bakes_and_ends_promoted() {
    let g = guarded().await;
    let (e, deployments, op) = (&g.e, &g.deployments, g.operator());
    let _traffic = g.s.local.pump_fleet_traffic(&e.name, deployments, None);
    let release = g.release(true);
    let name = release["release"].as_str().unwrap();

    op.ok(&["start", &op.file(&release)]);
    deployments.drive_until(&e.name, "shadowing", |st| st["config"] == e.shadow.as_str()).await;
    let shadowing = op.until(name, "shadowing", |st| st["progress"]["guardrail"]["phase"] == "shadowing").await;
    deployments.drive_to_baking(&e.name, &e.next).await;
    judged_while_baking(&op, name).await;
    deployments.drive_until(&e.name, "deployed", |st| st["config"] == e.next.as_str()).await;
    let done = op.until(name, "promoted", |st| st["status"] != "RUNNING").await;

    assert_eq!(done["status"], "SUCCEEDED", "{done:#}");
    let said = reasons(&shadowing);
    assert!(mentions(&said, &format!("Started: the shadow config {}", e.shadow)), "{said:#?}");
    assert!(mentions(&said, "Shadowing: the candidate serves a copy of live traffic for 1m"), "{said:#?}");
    // The history keeps the newest checks: from the shadow's end on.
    let said = reasons(&done);
    for step in [
        "Shadow passed (healthy: ".to_owned(),
        format!("SageMaker deploys {}: canary 10% of capacity", e.next),
        format!("SageMaker deploying: Updating ({} deploying: AllTraffic: Baking). healthy", e.next),
        format!("Promoted: SageMaker's deployment of {} completed and coalmine found it healthy", e.next),
    ] {
        assert!(mentions(&said, &step), "{step:?} not in {said:#?}");
    }
    assert_eq!(g.described().await, ("InService".to_owned(), e.next.clone(), false, None));
    let asked = g.s.local.sagemaker.describe_endpoint().endpoint_name(&e.name).send().await.unwrap();
    let rollback_alarms: Vec<_> = asked
        .last_deployment_config()
        .and_then(|c| c.auto_rollback_configuration())
        .map(|a| a.alarms().iter().filter_map(|a| a.alarm_name().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert_eq!(
        rollback_alarms,
        [g.alarm.clone(), g.tripwire()],
        "SageMaker watched the release's alarm and the tripwire"
    );
    assert!(asked.shadow_production_variants().is_empty(), "the shadow went with the shadow config");
    let seen = coalmine_tests::browser::report_in_a_browser(&op, &g.s.local, name, "sagemaker-guardrail").await;
    assert_eq!(seen.state.as_deref(), Some("promoted"));
    assert!(seen.chart("errors_vs_stable").points > 0, "the fleets compared");
    let events = seen.events.join("\n");
    assert!(events.contains("started: the shadow config"), "{events}");
    assert!(events.contains(&format!("SageMaker's deployment of {}", e.next)), "{events}");
    assert!(events.ends_with("promoted"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_new_fleet_is_stopped_by_the_judge_and_sagemaker_rolls_back_silently() {
    let g = guarded().await;
    let (e, deployments, op) = (&g.e, &g.deployments, g.operator());
    let _traffic = g.s.local.pump_fleet_traffic(&e.name, deployments, Some(&e.next));
    let release = g.release(false);
    let name = release["release"].as_str().unwrap();

    op.ok(&["start", &op.file(&release)]);
    deployments.drive_to_baking(&e.name, &e.next).await;
    let ended = op.until(name, "ended", |st| st["status"] != "RUNNING").await;

    assert_eq!(ended["error"], "CanaryRolledBack", "{ended:#}");
    let cause = ended["cause"].as_str().unwrap_or_default();
    assert!(cause.starts_with("Rolled back by its health check:"), "{cause}");
    let said = reasons(&ended);
    assert!(mentions(&said, &format!("tripped {}, so SageMaker rolls back", g.tripwire())), "{said:#?}");
    let seen = deployments.state(&e.name).await;
    assert_eq!(
        seen["last_outcome"],
        json!(format!("rolled back: alarm {}", g.tripwire())),
        "SageMaker saw the tripwire"
    );
    assert_eq!(g.described().await, ("InService".to_owned(), e.in_service.clone(), false, None));
    let told = g.s.inbox.receive(1, Duration::from_secs(10)).await;
    assert!(told[0].subject.contains("rolled back"), "{}", told[0].subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_outside_the_release_stops_the_deployment_through_the_rollback_function() {
    let g = guarded().await;
    let (e, deployments, op) = (&g.e, &g.deployments, g.operator());
    let _traffic = g.s.local.pump_fleet_traffic(&e.name, deployments, None);
    // The team's own alarm on the endpoint, tagged with it, not among the release's.
    let outside = unique("ai-model-latency");
    g.s.local.put_alarm(&outside, Some(&format!("sagemaker:{}:{VARIANT}", e.name))).await;
    let release = g.release(false);
    let name = release["release"].as_str().unwrap();

    op.ok(&["start", &op.file(&release)]);
    deployments.drive_to_baking(&e.name, &e.next).await;
    judged_while_baking(&op, name).await;
    g.s.local.set_alarm(&outside, StateValue::Alarm).await;
    // MiniStack emits no alarm events: delivered as EventBridge would.
    let event = sample_event("alarm-sagemaker-canary.eventbridge.json", &outside, None);
    g.s.local.invoke_async(&g.deployed.rollback_fn, &event).await;
    let ended = op.until(name, "ended", |st| st["status"] != "RUNNING").await;

    assert_eq!(ended["error"], "CanaryRolledBack", "{ended:#}");
    let cause = ended["cause"].as_str().unwrap_or_default();
    assert!(cause.contains(&format!("stopped by the rollback function, on alarm {outside}")), "{cause}");
    assert_eq!(ended["progress"]["rolled_back_by"], "alarm");
    let seen = deployments.state(&e.name).await;
    assert_eq!(seen["last_outcome"], json!(format!("rolled back: alarm {}", g.tripwire())), "{seen}");
    assert_eq!(g.described().await, ("InService".to_owned(), e.in_service.clone(), false, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalmine_abort_during_the_bake_trips_the_tripwire_and_the_release_ends_stopped_by_hand() {
    let g = guarded().await;
    let (e, deployments, op) = (&g.e, &g.deployments, g.operator());
    let _traffic = g.s.local.pump_fleet_traffic(&e.name, deployments, None);
    let release = g.release(false);
    let name = release["release"].as_str().unwrap();

    op.ok(&["start", &op.file(&release)]);
    deployments.drive_to_baking(&e.name, &e.next).await;
    judged_while_baking(&op, name).await;
    let said = op.ok(&["abort", name, "--reason", "p99 looks off"]);
    let ended = op.until(name, "ended", |st| st["status"] != "RUNNING").await;

    assert!(said.contains(&format!("tripped {}", g.tripwire())), "{said}");
    assert_eq!(ended["error"], "CanaryRolledBack", "{ended:#}");
    let cause = ended["cause"].as_str().unwrap_or_default();
    assert!(cause.starts_with("Rolled back by hand:") && cause.contains("jane, by hand: p99 looks off"), "{cause}");
    assert_eq!(g.described().await, ("InService".to_owned(), e.in_service.clone(), false, None));
    let told = g.s.inbox.receive(2, Duration::from_secs(10)).await;
    let subjects: Vec<_> = told.iter().map(|m| m.subject.as_str()).collect();
    assert!(subjects.iter().any(|s| s.ends_with("aborted")), "{subjects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_sagemaker_cannot_finish_fails_the_execution_loudly() {
    let g = guarded().await;
    let (e, deployments, op) = (&g.e, &g.deployments, g.operator());
    deployments.set(&e.name, json!({"rollback_fails": true})).await;
    let _traffic = g.s.local.pump_fleet_traffic(&e.name, deployments, Some(&e.next));
    let release = g.release(false);
    let name = release["release"].as_str().unwrap();

    op.ok(&["start", &op.file(&release)]);
    deployments.drive_to_baking(&e.name, &e.next).await;
    let ended = op.until(name, "ended", |st| st["status"] != "RUNNING").await;

    assert_eq!(ended["error"], "SafetyRollbackFailed", "{ended:#}");
    let (status, _, _, reason) = g.described().await;
    assert_eq!(status, "UpdateRollbackFailed");
    assert!(reason.is_some());
    let told = g.s.inbox.receive(1, Duration::from_secs(10)).await;
    assert!(
        told.iter().any(|m| m.subject.contains("may be stuck")),
        "{:?}",
        told.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
}
