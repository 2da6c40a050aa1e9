//! The stepper, ticked in-process with a chosen clock, against the local AWS over HTTP:
//! real alias and endpoint writes, real alarm states, real GetMetricData.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::StateValue;
use coalmine::ports::TrafficRouter;
use coalmine::release::canary::preflight;
use coalmine::release::canary::progress::Progress;
use coalmine::release::canary::spec::Release;
use coalmine::release::core::progress::Status;
use coalmine::release::core::{Ports, StepDeps, Tick};
use coalmine::release::judge::gates::{Gates, OnInsufficientData};
use coalmine::Target;
use coalmine_tests::{unique, Canary, Interloper, LocalAws, Scene};
use serde_json::json;

/// An execution of the release state machine, as its ARN: each test's own.
fn execution() -> String {
    format!("arn:aws:states:us-east-1:000000000000:execution:coalmine-release:{}", unique("run"))
}

/// An hour ago, so every tick and metric timestamp of a release is in the past.
fn t0() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 3600
}

/// One tick of `release` in `execution` at `now`, as the stepper makes it.
async fn tick(
    release: &Release,
    progress: Option<Progress>,
    execution: &str,
    deps: &impl Ports,
    now: u64,
) -> coalmine::Result<Progress> {
    Tick { release, execution, deps, now }.step(progress).await
}

/// The progress as if its stage had been checked every `check_every_seconds` up to the
/// last check before `now`, each finding it as it was: these in-process ticks jump over
/// those checks to the one they look at. (A silence nobody watched is not baked; that is
/// tested with the real state machine in tests/tests/safety_net.rs.)
fn checked_until(mut progress: Progress, now: u64, check_every_seconds: u64) -> Progress {
    let last = now - check_every_seconds;
    progress.watched_seconds = last - progress.stage_entered_at;
    progress.checked_at = Some(last);
    progress
}

fn lambda_release(target: &Target, alarm: &str) -> Release {
    let Target::Lambda(a) = target else { unreachable!() };
    Release::parse(&json!({
        "release": "local-2",
        "target": {"lambda": {"function": a.function, "alias": a.alias}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 50, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 300}],
        "check_every_seconds": 60,
        "gates": {"alarms": [alarm], "max_error_rate": 0.05, "max_error_rate_ratio": 1.2, "max_p95_latency_ms": 2000,
                  "min_requests": 100}
    }))
    .unwrap()
}

async fn run_to_end(local: &LocalAws, release: &Release, deps: &impl Ports, start: u64, stable_id: &str) -> Progress {
    let mut now = start;
    let execution = execution();
    let mut progress = tick(release, None, &execution, deps, now).await.unwrap();
    for _ in 0..50 {
        if matches!(progress.status, Status::Promoted | Status::RolledBack) {
            return progress;
        }
        // Healthy traffic in the middle of what comes next.
        let next = now + progress.wait_seconds;
        local
            .put_side_metrics(&release.target, release.canary_id(), next - 1, 200.0, 1.0, &[120.0, 150.0, 900.0])
            .await;
        local.put_side_metrics(&release.target, stable_id, next - 1, 4000.0, 20.0, &[110.0, 140.0, 800.0]).await;
        now = next;
        progress = tick(release, Some(progress), &execution, deps, now).await.unwrap();
    }
    panic!("no end after 50 ticks: {progress:?}");
}

#[tokio::test]
async fn a_healthy_lambda_release_climbs_to_promotion() {
    let s = Scene::connect().await;
    let Canary { target, alarm, .. } = s.lambda_canary(false).await;
    let local = &s.local;
    local.set_alarm(&alarm, StateValue::Ok).await;
    let release = lambda_release(&target, &alarm);

    let progress = run_to_end(local, &release, &s.step_deps(), t0(), "1").await;

    assert_eq!(progress.status, Status::Promoted, "{}", progress.reason);
    let (stable, weights, _) = local.alias_state(&target).await;
    assert_eq!((stable.as_str(), weights.len()), ("2", 0));
    let stages: Vec<f64> = progress.history.iter().filter(|d| d.status == Status::Advanced).map(|d| d.weight).collect();
    assert_eq!(stages, [0.05, 0.5, 1.0]);
    // The judge saw the metrics put into CloudWatch, not zeros.
    let evidence = progress.history.iter().rev().find_map(|d| d.evidence.clone()).unwrap();
    assert!(evidence["metrics"]["canary"]["requests"].as_f64().unwrap() >= 200.0, "{evidence}");
    assert!(evidence["metrics"]["canary"]["p95_ms"].as_f64().unwrap() > 100.0, "{evidence}");
}

#[tokio::test]
async fn a_healthy_sagemaker_release_climbs_to_promotion() {
    let s = Scene::connect().await;
    let local = &s.local;
    let endpoint = unique("ai-model");
    let target = local.seed_sagemaker_canary(&endpoint, 0.0).await;
    let release = Release::parse(&json!({
        "release": "model-7",
        "target": {"sagemaker": {"endpoint": endpoint, "stable_variant": "stable", "canary_variant": "canary"}},
        "stages": [{"percent": 10, "bake_seconds": 300}, {"percent": 100, "bake_seconds": 300}],
        "check_every_seconds": 150,
        "gates": {"max_error_rate": 0.05, "max_p95_latency_ms": 2000, "min_requests": 100}
    }))
    .unwrap();

    let progress = run_to_end(local, &release, &s.step_deps(), t0(), "stable").await;

    assert_eq!(progress.status, Status::Promoted, "{}", progress.reason);
    let weights = local.variant_weights(&endpoint).await;
    assert_eq!((weights["stable"], weights["canary"]), (0.0, 1.0));
    assert_eq!(target.to_string(), format!("sagemaker:{endpoint}:stable:canary"));
}

#[tokio::test]
async fn an_alarm_mid_release_rolls_back() {
    let s = Scene::connect().await;
    let Canary { target, alarm, .. } = s.lambda_canary(false).await;
    let (local, deps) = (&s.local, s.step_deps());
    let release = lambda_release(&target, &alarm);
    let (start, execution) = (t0(), execution());

    let progress = tick(&release, None, &execution, &deps, start).await.unwrap();
    assert_eq!(local.alias_state(&target).await.1["2"], 0.05);
    local.set_alarm(&alarm, StateValue::Alarm).await;
    let progress = tick(&release, Some(progress), &execution, &deps, start + 60).await.unwrap();

    assert_eq!(progress.status, Status::RolledBack);
    assert!(progress.reason.contains(&format!("alarm {alarm} is ALARM")), "{}", progress.reason);
    let (stable, weights, _) = local.alias_state(&target).await;
    assert_eq!((stable.as_str(), weights.len()), ("1", 0));
    let messages = s.inbox.receive(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(
        (messages[0].event(), messages[0].attributes.get("release").map(String::as_str)),
        ("rolled_back", Some("local-2"))
    );
}

#[tokio::test]
async fn a_rollback_landing_between_read_and_advance_is_never_undone() {
    let s = Scene::connect().await;
    let Canary { target, alarm, .. } = s.lambda_canary(false).await;
    let (local, aws) = (&s.local, &s.aws);
    let release = lambda_release(&target, &alarm);
    let (start, execution) = (t0(), execution());
    let deps = s.step_deps();
    let progress = tick(&release, None, &execution, &deps, start).await.unwrap();
    let progress = checked_until(progress, start + 600, release.check_every_seconds);
    local.put_side_metrics(&target, "2", start + 300, 500.0, 0.0, &[100.0]).await;
    local.put_side_metrics(&target, "1", start + 300, 5000.0, 10.0, &[100.0]).await;

    // Someone zeroes the canary after the stepper's read, before its write.
    let racing = Interloper::new(&aws.router, local, 0.0);
    let racing_deps = StepDeps::new(&aws.router, &aws.notifier, &aws.alarms, &aws.metrics).with_traffic(&racing);
    let err = tick(&release, Some(progress.clone()), &execution, &racing_deps, start + 600).await.unwrap_err();

    assert!(racing.interfered());
    assert!(err.is_retryable() && err.to_string().contains("changed while advancing"), "{err}");
    assert!(local.alias_state(&target).await.1.is_empty(), "the canary stays at zero");
    // The state machine's retry reads again, and stops without writing.
    let (_, _, revision) = local.alias_state(&target).await;
    let progress = tick(&release, Some(progress), &execution, &deps, start + 602).await.unwrap();
    assert_eq!(progress.status, Status::RolledBack, "{}", progress.reason);
    assert!(progress.reason.contains("changed outside the release"), "{}", progress.reason);
    assert_eq!(local.alias_state(&target).await.2, revision, "not written over");
}

#[tokio::test]
async fn a_tick_and_a_rollback_racing_never_leave_the_canary_up() {
    let s = Scene::connect().await;
    let (local, aws, deps) = (&s.local, &s.aws, s.step_deps());
    let rollback_deps =
        coalmine::rollback::RollbackDeps::new(&aws.router, &aws.notifier, &aws.alarms, &s.config.rollback_targets);
    let mut orders = std::collections::BTreeMap::new();
    for round in 0..20 {
        let Canary { function, target, alarm } = s.lambda_canary(true).await;
        let mut release = lambda_release(&target, &alarm);
        // No metrics here: the release proceeds on none, so the bake's end advances.
        release.gates = Gates { on_insufficient_data: OnInsufficientData::Proceed, ..Gates::default() };
        let (start, execution) = (t0(), execution());
        let progress = tick(&release, None, &execution, &deps, start).await.unwrap();
        let progress = checked_until(progress, start + 600, release.check_every_seconds);
        // On the alias's own metrics: the rollback reads it while looking up the tag.
        let event = coalmine_tests::sample_event("alarm-lambda-canary.eventbridge.json", &alarm, Some(&function));

        // The bake is over: the stepper advances to 50% while the alarm's rollback runs.
        // Staggering one side by 0-4.5 ms, alternately, walks the interleavings: this
        // varies the race, it does not wait for any state.
        let stagger = std::time::Duration::from_micros(500 * (round / 2) as u64);
        let stepping = async {
            if round % 2 == 1 {
                tokio::time::sleep(stagger).await;
            }
            // A tick whose write loses the race fails retryable; the state machine retries.
            match tick(&release, Some(progress.clone()), &execution, &deps, start + 600).await {
                Err(e) if e.is_retryable() => tick(&release, Some(progress), &execution, &deps, start + 602).await,
                other => other,
            }
        };
        let rolling = async {
            if round % 2 == 0 {
                tokio::time::sleep(stagger).await;
            }
            coalmine::rollback::handle_payload(&event, &rollback_deps).await
        };
        let (ticked, rolled) = tokio::join!(stepping, rolling);

        let rolled = rolled.unwrap();
        let ticked = ticked.unwrap();
        let weights = local.alias_state(&target).await.1;
        assert!(weights.is_empty(), "round {round}: canary left at {weights:?} ({ticked:?}, {rolled})");
        *orders.entry(format!("{:?}/{}", ticked.status, rolled["targets"][0]["outcome"])).or_insert(0) += 1;
        // Whatever happened, the next tick never raises it again.
        if ticked.status != Status::RolledBack {
            let next = tick(&release, Some(ticked), &execution, &deps, start + 660).await.unwrap();
            assert_eq!(next.status, Status::RolledBack, "round {round}");
            assert!(local.alias_state(&target).await.1.is_empty(), "round {round}");
        }
    }
    eprintln!("race outcomes over 20 rounds (stepper/rollback): {orders:?}");
    assert!(!orders.keys().any(|k| k.starts_with("Baking")), "every round raced an advance: {orders:?}");
}

#[tokio::test]
async fn a_release_whose_canary_serves_nothing_is_never_promoted() {
    let s = Scene::connect().await;
    let Canary { target, alarm, .. } = s.lambda_canary(false).await;
    let (local, deps) = (&s.local, s.step_deps());
    local.set_alarm(&alarm, StateValue::Ok).await;
    let Target::Lambda(a) = &target else { unreachable!() };
    // One-second bakes, as short as allowed, and not one request on either side.
    let release = Release::parse(&json!({
        "release": "no-traffic",
        "target": {"lambda": {"function": a.function, "alias": a.alias}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 1}, {"percent": 100, "bake_seconds": 1}],
        "check_every_seconds": 1,
        "gates": {"alarms": [alarm], "max_error_rate": 0.05, "max_hold_seconds": 5}
    }))
    .unwrap();
    let (start, execution) = (t0(), execution());

    let mut progress = tick(&release, None, &execution, &deps, start).await.unwrap();
    let mut now = start;
    while !matches!(progress.status, Status::Promoted | Status::RolledBack) {
        assert!(now < start + 60, "{progress:?}");
        now += progress.wait_seconds;
        progress = tick(&release, Some(progress), &execution, &deps, now).await.unwrap();
        assert_ne!(progress.status, Status::Advanced, "no evidence, no next stage: {}", progress.reason);
    }

    assert_eq!(progress.status, Status::RolledBack);
    assert!(
        progress.reason.contains("inconclusive: 0 canary requests, fewer than min_requests 100, still after holding"),
        "real GetMetricData with no datapoints reads as 0, never -0: {}",
        progress.reason
    );
    assert!(local.alias_state(&target).await.1.is_empty());
}

#[tokio::test]
async fn the_stables_recent_traffic_is_read_minute_by_minute_over_the_minutes_it_served() {
    let s = Scene::connect().await;
    let Canary { target, alarm, .. } = s.lambda_canary(false).await;
    let release = lambda_release(&target, &alarm);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    // The stable has served 600 requests a minute for ten minutes, and nothing before.
    for minute in 1..=10 {
        s.local.put_side_metrics(&target, "1", now - minute * 60, 600.0, 3.0, &[120.0, 900.0]).await;
    }
    let live = s.aws.router.read(&target).await.unwrap();

    let traffic = preflight::recent_traffic(&release, &live, &s.aws.metrics, now).await.unwrap().unwrap();

    assert_eq!((traffic.per_minute, traffic.minutes), (600.0, 10), "not diluted over the hour it did not serve");
    let check = preflight::metrics_check(&release, &live, &s.aws.metrics, now).await;
    let found = check.found.unwrap();
    let (traffic, sees) = found.split_once(". With 80% power").expect("says what the release can see");
    assert_eq!(
        traffic,
        "stable: 600 requests a minute over the last 10 minutes; about 300 for the canary in its first stage"
    );
    // From the stable's 0.5% errors as CloudWatch returned them: 600 a minute is too thin.
    assert!(sees.contains("a 2x error rate is not seen before promotion"), "{sees}");
    assert!(sees.contains("5% alone errors 8.24x"), "{sees}");
}
