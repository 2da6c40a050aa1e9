//! Guardrail releases end to end over the in-memory adapters: the endpoint goes through
//! the states SageMaker reports (scripted, one per read, as `DescribeEndpoint` would
//! show them), and every change coalmine makes is journaled in order.

use serde_json::{json, Value};

use crate::domain::deployment::{ConfigVariants, EndpointState, PendingDeployment};
use crate::domain::event::AlarmState;
use crate::domain::mapping::TargetMapping;
use crate::memory::{Alarms, Journal, Metrics, Outbox, Router};
use crate::release::core::{Adapters, StepDeps};
use crate::release::guardrail::spec::GuardrailRelease;
use crate::release::tick_payload;
use crate::rollback::{handle_alarm, RollbackDeps};

const ENDPOINT: &str = "ai-model-endpoint";
const EXECUTION: &str = "arn:aws:states:us-east-1:123456789012:execution:Release:ai-model-8";
const T0: u64 = 1_800_000_000;
const V7: &str = "ai-model-config-v7";
const V8: &str = "ai-model-config-v8";
const SHADOW: &str = "ai-model-config-v8-shadow";

/// The endpoint as `DescribeEndpoint` shows it: the config in service, its variant with
/// 4 instances, and the deployment in flight with its variant's statuses.
fn described(status: &str, config: &str, pending: Option<(&str, &[&str])>, failure: &str) -> EndpointState {
    EndpointState {
        status: status.to_owned(),
        config: config.to_owned(),
        pending: pending.map(|(config, statuses)| PendingDeployment {
            config: config.to_owned(),
            variants: vec![("AllTraffic".to_owned(), statuses.iter().map(|s| s.to_string()).collect())],
        }),
        failure_reason: (!failure.is_empty()).then(|| failure.to_owned()),
        variants: vec![("AllTraffic".to_owned(), 4)],
        stamp: None,
        tripwire: None,
    }
}

fn in_service(config: &str) -> EndpointState {
    described("InService", config, None, "")
}

/// SageMaker deploying v8 over v7, baking.
fn deploying() -> EndpointState {
    described("Updating", V7, Some((V8, &["Baking"])), "")
}

struct World {
    router: Router,
    alarms: Alarms,
    metrics: Metrics,
    notifier: Outbox,
    journal: Journal,
}

/// The endpoint shows `script` at its reads, in turn (the first is what the start
/// sees); its configs keep the variant names, the shadow config adds the candidate; the
/// release's alarm is calm; the canary fleet errs `canary_errors` in 1000 requests
/// against the stable's 5.
fn world(script: Vec<EndpointState>, canary_errors: f64) -> World {
    let journal = Journal::default();
    let router = Router::default().journaled(&journal);
    router.put_endpoint(ENDPOINT, in_service(V7));
    router.script(ENDPOINT, script);
    let production = |shadow: &[&str]| ConfigVariants {
        production: vec!["AllTraffic".to_owned()],
        shadow: shadow.iter().map(|s| s.to_string()).collect(),
    };
    router.put_config(V7, production(&[]));
    router.put_config(V8, production(&[]));
    router.put_config(SHADOW, production(&["candidate"]));
    let alarms = Alarms::with([("coalmine-ai-model-5xx".to_owned(), AlarmState::Ok)]).journaled(&journal);
    let metrics = Metrics::default();
    metrics.set((1000.0, canary_errors), (1000.0, 5.0));
    World { router, alarms, metrics, notifier: Outbox::default().journaled(&journal), journal }
}

impl World {
    fn deps(&self) -> Adapters<'_, Router, Outbox, Alarms, Metrics> {
        StepDeps::new(&self.router, &self.notifier, &self.alarms, &self.metrics)
    }

    fn calls(&self) -> Vec<String> {
        self.journal.entries()
    }

    fn deploys(&self) -> Vec<String> {
        self.calls().into_iter().filter(|c| c.starts_with("deploy")).collect()
    }
}

fn sample(shadow: bool) -> Value {
    let mut release = crate::release::core::document::tests::sample_json("sagemaker-guardrail-ai-model-8.json");
    if !shadow {
        release.as_object_mut().unwrap().remove("shadow");
    }
    release
}

/// One tick at `minute` after T0, as the state machine would make it.
async fn tick_at(world: &World, state: Value, minute: u64) -> Value {
    tick_payload(
        &json!({"execution": EXECUTION, "state": state}),
        &world.deps(),
        &crate::memory::Claims::default(),
        T0 + minute * 60,
    )
    .await
    .unwrap()
}

/// Ticks a minute apart, from `minute`, until the release ends.
async fn run_from(world: &World, mut state: Value, minute: u64) -> (Value, Vec<String>) {
    let mut reasons = Vec::new();
    for minute in minute..minute + 40 {
        state = tick_at(world, state, minute).await;
        reasons.push(state["progress"]["reason"].as_str().unwrap().to_owned());
        if matches!(state["progress"]["status"].as_str(), Some("promoted" | "rolled_back")) {
            return (state, reasons);
        }
    }
    panic!("no end: {reasons:#?}");
}

async fn run(world: &World, release: Value) -> (Value, Vec<String>) {
    run_from(world, release, 0).await
}

fn ended(state: &Value) -> (Option<&str>, Option<&str>) {
    (state["progress"]["status"].as_str(), state["progress"]["rolled_back_by"].as_str())
}

#[tokio::test]
async fn a_deployment_that_bakes_then_completes_is_promoted() {
    let world = world(
        vec![
            in_service(V7),
            described("Updating", V7, Some((V8, &["Creating"])), ""),
            described("Updating", V7, Some((V8, &["Creating", "ActivatingTraffic"])), ""),
            described("Updating", V7, Some((V8, &["Creating", "ActivatingTraffic", "Baking"])), ""),
            in_service(V8),
        ],
        5.0,
    );

    let (state, reasons) = run(&world, sample(false)).await;

    assert_eq!(state["progress"]["status"], "promoted", "{reasons:#?}");
    assert_eq!(reasons[0], "Started: SageMaker deploys ai-model-config-v8 to ai-model-endpoint: canary 10% of capacity, then the rest after 10m; 5m termination wait; at most 1h00m");
    assert!(
        reasons[2].starts_with(
            "SageMaker deploying: Updating (ai-model-config-v8 deploying: AllTraffic: ActivatingTraffic). healthy"
        ),
        "{}",
        reasons[2]
    );
    assert!(reasons[3].contains("AllTraffic: Baking"), "{}", reasons[3]);
    let calls = world.calls();
    assert_eq!(world.deploys(), ["deploy ai-model-config-v8 with guardrails"]);
    let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix));
    assert!(at("ensure_tripwire") < at("deploy"), "the tripwire exists first: {calls:?}");
    assert!(calls.last().unwrap().starts_with("stamp coalmine/1 phase=promoted"), "{calls:?}");
}

#[tokio::test]
async fn a_silent_rollback_by_sagemaker_ends_rolled_back_and_says_so() {
    let world = world(
        vec![
            in_service(V7),
            deploying(),
            described("RollingBack", V7, Some((V8, &["Baking"])), ""),
            // Back in service on the old config, with no FailureReason at all.
            in_service(V7),
        ],
        5.0,
    );

    let (state, reasons) = run(&world, sample(false)).await;

    assert_eq!(ended(&state), (Some("rolled_back"), Some("guardrail")));
    assert!(
        reasons.last().unwrap().contains("SageMaker rolled the deployment back without saying why"),
        "{reasons:#?}"
    );
    let calls = world.calls();
    assert!(
        calls.iter().any(|c| c == "publish coalmine: ai-model-8 on ai-model-endpoint rolled back"),
        "the team was told: {calls:?}"
    );
}

#[tokio::test]
async fn an_unhealthy_new_fleet_trips_coalmines_alarm_and_sagemaker_rolls_back() {
    let world = world(
        vec![
            in_service(V7),
            deploying(),
            described("RollingBack", V7, Some((V8, &["Baking"])), ""),
            described("InService", V7, None, "Rolled back: alarm coalmine-tripwire-ai-model-endpoint in ALARM"),
        ],
        80.0,
    );

    let (state, reasons) = run(&world, sample(false)).await;

    assert_eq!(ended(&state), (Some("rolled_back"), Some("health")));
    assert!(
        reasons[1].contains("tripped coalmine-tripwire-ai-model-endpoint, so SageMaker rolls back"),
        "{reasons:#?}"
    );
    assert!(reasons.last().unwrap().contains("canary error rate 8.00%"), "{reasons:#?}");
    assert!(world.calls().contains(&"trip coalmine-tripwire-ai-model-endpoint".to_owned()));
    assert_eq!(world.alarms.state("coalmine-tripwire-ai-model-endpoint"), Some(AlarmState::Alarm));
}

#[tokio::test]
async fn update_rollback_failed_fails_loudly_saying_traffic_may_be_mixed() {
    let stuck = || described("UpdateRollbackFailed", V7, Some((V8, &["Baking"])), "Instance failed health checks");
    let world = world(vec![in_service(V7), stuck(), stuck()], 5.0);
    let deps = world.deps();
    let started = tick_payload(
        &json!({"execution": EXECUTION, "state": sample(false)}),
        &deps,
        &crate::memory::Claims::default(),
        T0,
    )
    .await
    .unwrap();

    let err = tick_payload(
        &json!({"execution": EXECUTION, "state": started.clone()}),
        &deps,
        &crate::memory::Claims::default(),
        T0 + 60,
    )
    .await
    .unwrap_err();
    assert!(
        !err.is_retryable() && err.to_string().contains("traffic may be split between the old and new fleets"),
        "{err}"
    );
    let mut failed = started;
    failed["failure"] = json!({"Error": err.error_type(), "Cause": err.to_string()});
    let safety = tick_payload(
        &json!({"execution": EXECUTION, "state": failed}),
        &deps,
        &crate::memory::Claims::default(),
        T0 + 61,
    )
    .await;
    assert!(safety.is_err(), "the safety step cannot fix it either: the execution ends SafetyRollbackFailed");
    let calls = world.calls();
    assert!(calls.iter().any(|c| c == "publish coalmine: ai-model-8 on ai-model-endpoint may be stuck"), "{calls:?}");
}

#[tokio::test]
async fn a_shadow_that_fails_ends_before_any_user_was_served_by_the_candidate() {
    let world = world(
        vec![
            in_service(V7),
            described("Updating", V7, Some((SHADOW, &["Creating"])), ""),
            in_service(SHADOW),
            in_service(SHADOW),
            described("Updating", SHADOW, Some((V7, &["Creating"])), ""),
            in_service(V7),
        ],
        80.0,
    );

    let (state, reasons) = run(&world, sample(true)).await;

    assert_eq!(state["progress"]["status"], "rolled_back", "{reasons:#?}");
    assert!(
        reasons[0].starts_with(
            "Started: the shadow config ai-model-config-v8-shadow (candidate variant candidate beside AllTraffic), \
             for 30m"
        ),
        "{}",
        reasons[0]
    );
    assert!(reasons[2].starts_with("Shadowing: the candidate serves a copy of live traffic"), "{reasons:#?}");
    assert!(
        reasons.last().unwrap().contains("failed its shadow test")
            && reasons.last().unwrap().contains("no user was served by it"),
        "{reasons:#?}"
    );
    assert_eq!(
        world.deploys(),
        ["deploy ai-model-config-v8-shadow", "deploy ai-model-config-v7"],
        "never the candidate's own deployment"
    );
}

#[tokio::test]
async fn a_shadow_that_passes_goes_on_to_the_guardrail_deployment() {
    let mut script = vec![in_service(V7), in_service(SHADOW)];
    // The shadow went InService at minute 1; a check a minute until it has run 30 minutes.
    script.extend((0..30).map(|_| in_service(SHADOW)));
    script.push(described("Updating", SHADOW, Some((V8, &["Baking"])), ""));
    script.push(in_service(V8));
    let world = world(script, 5.0);

    let (state, reasons) = run(&world, sample(true)).await;

    assert_eq!(state["progress"]["status"], "promoted", "{reasons:#?}");
    assert!(reasons.iter().any(|r| r.starts_with("Shadow passed")), "{reasons:#?}");
    assert_eq!(world.deploys(), ["deploy ai-model-config-v8-shadow", "deploy ai-model-config-v8 with guardrails"]);
}

async fn abort(world: &World, state: &Value) -> crate::Result<String> {
    let mut release = state.clone();
    release.as_object_mut().unwrap().remove("progress");
    let release = GuardrailRelease::parse(&release).unwrap();
    super::control::abort(&world.deps(), &release, EXECUTION, "alice", "p99 looks off").await
}

#[tokio::test]
async fn an_abort_while_sagemaker_deploys_trips_the_tripwire_and_the_release_ends_stopped_by_hand() {
    let world = world(vec![in_service(V7), deploying(), deploying(), in_service(V7)], 5.0);
    let state = tick_at(&world, sample(false), 0).await;

    let now = abort(&world, &state).await.unwrap();
    let (state, reasons) = run_from(&world, state, 1).await;

    assert_eq!(now, "tripped coalmine-tripwire-ai-model-endpoint, so SageMaker rolls the deployment back now");
    assert_eq!(ended(&state), (Some("rolled_back"), Some("operator")));
    assert!(reasons[0].starts_with("Stopped by alice"), "{reasons:#?}");
    assert!(reasons.last().unwrap().contains("stopped by alice"), "{reasons:#?}");
    let calls = world.calls();
    let at = |prefix: &str| {
        calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}: {calls:?}"))
    };
    assert!(at("trip") < at("stamp coalmine/1 phase=rolled_back"), "traffic first, the record second: {calls:?}");
    assert!(calls.contains(&"publish coalmine: ai-model-8 on ai-model-endpoint aborted".to_owned()), "{calls:?}");
    let stamps = calls.iter().filter(|c| c.starts_with("stamp coalmine/1 phase=rolled_back")).count();
    assert_eq!(stamps, 1, "the operator's stamp is kept: {calls:?}");
}

#[tokio::test]
async fn an_abort_during_the_shadow_takes_the_shadow_away_without_tripping_anything() {
    let world =
        world(vec![in_service(V7), in_service(SHADOW), in_service(SHADOW), in_service(SHADOW), in_service(V7)], 5.0);
    let state = tick_at(&world, sample(true), 0).await;
    let state = tick_at(&world, state, 1).await;
    assert_eq!(state["progress"]["guardrail"]["phase"], "shadowing");

    let now = abort(&world, &state).await.unwrap();
    let (state, reasons) = run_from(&world, state, 2).await;

    assert_eq!(now, "its execution takes ai-model-endpoint back to ai-model-config-v7 at its next check");
    assert_eq!(state["progress"]["rolled_back_by"], "operator", "{reasons:#?}");
    assert!(
        reasons.last().unwrap().contains("stopped by alice")
            && reasons.last().unwrap().contains("during its shadow test"),
        "{reasons:#?}"
    );
    let calls = world.calls();
    assert!(!calls.iter().any(|c| c.starts_with("trip")), "nothing to trip: {calls:?}");
    assert_eq!(world.deploys(), ["deploy ai-model-config-v8-shadow", "deploy ai-model-config-v7"]);
}

#[tokio::test]
async fn an_abort_of_a_release_that_ended_is_refused_and_writes_nothing() {
    let world = world(vec![in_service(V7), in_service(V8), in_service(V8)], 5.0);
    let (state, _) = run(&world, sample(false)).await;
    assert_eq!(state["progress"]["status"], "promoted");
    let writes_before = world.calls().len();

    let refused = abort(&world, &state).await.unwrap_err();

    assert!(refused.to_string().contains("has already ended"), "{refused}");
    assert_eq!(world.calls().len(), writes_before);
}

#[tokio::test]
async fn an_alarm_on_an_endpoint_in_a_guardrail_deployment_trips_its_tripwire_and_the_release_ends_naming_it() {
    let world = world(vec![in_service(V7), deploying(), deploying(), deploying(), in_service(V7)], 5.0);
    let state = tick_at(&world, sample(false), 0).await;
    // An alarm on the endpoint that is not among the deployment's auto-rollback alarms.
    let mut event = crate::domain::event::tests::sample("alarm-sagemaker-canary.eventbridge.json");
    event.alarm_name = "coalmine-ai-model-latency".into();
    event.metrics[0].dimensions.insert("VariantName".into(), "AllTraffic".into());
    let mapping = TargetMapping::default();
    let deps = RollbackDeps::new(&world.router, &world.notifier, &world.alarms, &mapping);

    let report = handle_alarm(&event, &deps).await.unwrap();

    let outcome = report.outcomes[0].1.as_ref().unwrap();
    assert_eq!(outcome.event_name(), "tripped");
    let calls = world.calls();
    assert_eq!(calls.iter().filter(|c| c.starts_with("trip")).count(), 1, "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c
                .starts_with("publish coalmine: ai-model-8 on sagemaker:ai-model-endpoint:AllTraffic rolling back")),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("deploy ai-model-config-v7")),
        "SageMaker rolls back, not coalmine: {calls:?}"
    );
    let at = |prefix: &str| {
        calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}: {calls:?}"))
    };
    assert!(at("trip") < at("stamp coalmine/1 phase=rolled_back"), "traffic first, the record second: {calls:?}");

    let again = handle_alarm(&event, &deps).await.unwrap();
    assert_eq!(again.outcomes[0].1.as_ref().unwrap().event_name(), "already_zero", "a second delivery writes nothing");
    let (state, reasons) = run_from(&world, state, 1).await;
    assert_eq!(ended(&state), (Some("rolled_back"), Some("alarm")));
    assert!(
        reasons.last().unwrap().contains("stopped by the rollback function, on alarm coalmine-ai-model-latency"),
        "{reasons:#?}"
    );
    let calls = world.calls();
    assert_eq!(calls.iter().filter(|c| c.starts_with("stamp coalmine/1 phase=rolled_back")).count(), 1, "{calls:?}");
}
