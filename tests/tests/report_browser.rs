//! `coalmine report` for the releases a team most needs to explain, run for real against
//! the local AWS (the real stepper, state machine and shadow function) and opened in
//! headless Chromium: a model rolled back on an AI metric, a candidate that never left
//! its shadow, and one caught by its replay of a golden set. The operator's, SageMaker guardrail and Azure ML reports are opened
//! the same way at the end of their own tests (cli_local, guardrail_e2e).

use std::time::Duration;

use coalmine::Target;
use coalmine_tests::browser::report_in_a_browser;
use coalmine_tests::operator::Operator;
use coalmine_tests::shadow::golden_set;
use coalmine_tests::{unique, Deployed, Scene, Scratch};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(90);

/// The operator of a freshly deployed stack, with a folder for release files.
fn operator<'a>(s: &'a Scene, deployed: &'a Deployed) -> Operator<'a> {
    Operator { deployed, topic: &s.inbox.topic_arn, dir: Scratch::new("coalmine-report"), env: Vec::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_rolled_back_on_its_output_tokens_shows_the_gate_crossing_its_tolerance() {
    let s = Scene::connect().await;
    let deployed = s.local.deploy(&s.inbox.topic_arn).await;
    let op = operator(&s, &deployed);
    let function = unique("ai-handler");
    let target = s.local.seed_lambda_canary(&function, 0.0).await;
    let version = s.local.publish_next_version(&function).await;
    let namespace = unique("AIService");
    let name = unique("ai-handler-tokens");
    let release = json!({
        "release": name,
        "target": {"lambda": {"function": function, "alias": "live"}},
        "canary_version": version,
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05, "min_requests": 50, "custom": [{
            "namespace": namespace, "metric": "OutputTokens", "stat": "Average", "max_increase_ratio": 0.2,
            "dimensions": {"FunctionName": function, "Version": "{version}"}
        }]}
    });
    let _traffic = s.local.pump_healthy_traffic(&target, &version).await;
    let _answers = s.local.pump_answers(&target, &namespace, 800.0, 40);
    op.ok(&["start", &op.file(&release)]);
    s.local.finished(&deployed.execution_arn(&name), PATIENCE).await;

    let seen = report_in_a_browser(&op, &s.local, &name, "lambda-rolled-back").await;
    assert_eq!(seen.state.as_deref(), Some("rolled_back"));
    let reason = seen.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("Rolled back by its health check at stage 1 of 2 (5%): canary"), "{reason}");
    assert!(reason.contains("OutputTokens") && reason.contains("p50 800 against the stable's 400"), "{reason}");
    let tokens = seen.chart("custom[0]_vs_stable");
    let caption = tokens.caption.as_deref().unwrap_or_default();
    assert!(caption.starts_with("OutputTokens — crossed: canary"), "the chart says it crossed: {caption}");
    assert!(seen.events.last().is_some_and(|e| e.contains("rolled back (health check)")), "{:?}", seen.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_never_left_its_shadow_shows_its_disagreement_against_the_noise_floor() {
    let s = Scene::connect().await;
    let deployed = s.local.deploy(&s.inbox.topic_arn).await;
    let op = operator(&s, &deployed);
    let classifier = s.local.seed_model("steady", "flips-odd").await;
    let name = unique("ai-classifier");
    let release = json!({
        "release": name,
        "target": {"lambda": {"function": classifier, "alias": "live"}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 2,
        "gates": {"max_error_rate": 0.05, "min_requests": 20},
        "shadow": {"duration_seconds": 600, "sample": 1.0, "compare": {"label": {"pointer": "/label"}},
                   "max_disagreement_increase_ratio": 0.5}
    });
    let _users = s.local.pump_model_requests(&classifier);
    op.ok(&["start", &op.file(&release)]);
    s.local.finished(&deployed.execution_arn(&name), PATIENCE).await;
    let (serves, weights, _) = s.local.alias_state(&Target::lambda(&classifier, "live")).await;
    assert_eq!((serves.as_str(), weights.len()), ("1", 0), "no user was served by the candidate");

    let seen = report_in_a_browser(&op, &s.local, &name, "lambda-shadow").await;
    assert_eq!(seen.state.as_deref(), Some("rolled_back"));
    assert!(seen.verdict.as_deref().unwrap_or_default().contains("in the shadow"), "{:?}", seen.verdict);
    assert!(seen.events[0].contains("shadow started"), "{:?}", seen.events);
    let shadow = seen.shadow.as_deref().unwrap_or_default();
    assert!(shadow.starts_with("Disagreeing with the answer users got: candidate "), "{shadow}");
    assert!(shadow.contains("the stable asked again (the noise floor) 0.0%"), "{shadow}");
    assert!(seen.chart("shadow:custom[0]_rate_vs_stable").points > 0);
    assert!(seen.examples > 0, "the requests it answered differently, with both answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_caught_by_its_replay_shows_the_replay_as_a_phase_of_its_own() {
    let s = Scene::connect().await;
    let deployed = s.local.deploy(&s.inbox.topic_arn).await;
    let op = operator(&s, &deployed);
    let router = s.local.seed_model("steady", "flips-odd").await;
    let name = unique("ai-router");
    let release = json!({
        "release": name,
        "target": {"lambda": {"function": router, "alias": "live"}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 2,
        "gates": {"max_error_rate": 0.05, "min_requests": 20},
        "replay": {"source": golden_set(&s.local, 200).await, "requests": 200, "rate_per_second": 50,
                   "compare": {"label": {"pointer": "/label"}}, "max_disagreement_increase_ratio": 0.5}
    });
    op.ok(&["start", &op.file(&release)]);
    s.local.finished(&deployed.execution_arn(&name), PATIENCE).await;

    let seen = report_in_a_browser(&op, &s.local, &name, "lambda-replay").await;
    assert_eq!(seen.state.as_deref(), Some("rolled_back"));
    assert!(seen.verdict.as_deref().unwrap_or_default().contains("in the replay"), "{:?}", seen.verdict);
    assert!(seen.events[0].contains("replay started"), "{:?}", seen.events);
    let replay = seen.shadow.as_deref().unwrap_or_default();
    assert!(replay.starts_with("Disagreeing with the reference: candidate "), "{replay}");
    assert!(replay.contains("requests replayed"), "{replay}");
    assert!(seen.chart("replay:custom[0]_rate_vs_stable").points > 0);
    assert!(seen.examples > 0, "the golden requests it answered differently, with both answers");
}
