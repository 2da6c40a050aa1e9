//! A replay before anything else (decision 0023): the candidate and the stable answer a
//! source's requests at the release's pace, judged as a shadow is, before any user.

use super::*;
use crate::domain::metrics::{MetricSnapshot, SideMetrics};
use crate::domain::replay::{ReplayLine, Source};

const GOLDEN: &str = "s3://evals/chat/golden.jsonl";

fn replayed_release(extra: serde_json::Value) -> Release {
    let mut release = release(gates());
    let mut json = serde_json::json!({
        "source": {"s3": {"bucket": "evals", "key": "chat/golden.jsonl"}},
        "requests": 2000,
        "rate_per_second": 10,
        "max_concurrency": 4,
        "compare": {"label": {"pointer": "/label"}},
        "max_disagreement_increase_ratio": 1.0,
    });
    json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    release.replay = Some(serde_json::from_value(json).unwrap());
    release.validate().unwrap();
    release
}

/// A golden set of `n` requests, none carrying an answer.
fn golden(world: &World, n: usize) {
    let lines = (0..n).map(|i| ReplayLine { request: serde_json::json!({"q": i}), response: None }).collect();
    world.router.replay_sources.lock().unwrap().insert(GOLDEN.into(), lines);
}

fn dispatched(world: &World) -> usize {
    world.router.dispatched.lock().unwrap().iter().map(|b| b.lines.len()).sum()
}

/// What the shadow function counted for the replay: answers compared and disagreements
/// on each side, the stable's being it asked again.
fn counted(world: &World, candidate: (f64, f64), stable: (f64, f64)) {
    let side = |(compared, disagreements): (f64, f64)| SideMetrics {
        requests: compared,
        errors: 0.0,
        p95_ms: Some(120.0),
        custom: vec![Some(disagreements)],
        custom_counts: vec![Some(compared)],
        ..SideMetrics::default()
    };
    world.metrics.put(MetricSnapshot { canary: side(candidate), stable: side(stable), pinned: None });
}

#[tokio::test]
async fn a_replay_moves_no_traffic_hands_out_its_pace_in_batches_and_enters_the_first_stage_when_it_passes() {
    let world = World::new(stable_only());
    golden(&world, 1500);
    let release = replayed_release(serde_json::json!({}));
    let p = world.tick(&release, None, T0).await.unwrap();
    assert_eq!(p.status, Status::Advanced);
    assert!(
        p.reason.starts_with("Replaying: version 42 and version 41 answer up to 2000 requests from s3://evals/chat/golden.jsonl at 10 a second"),
        "{}",
        p.reason
    );
    let live = world.live();
    assert_eq!((live.canary_weight, live.stamp.as_ref().unwrap().stage), (0.0, Some((0, 3))), "owned, not moved");
    assert_eq!(dispatched(&world), 0, "nothing is due at the start");

    // A minute in: 600 due, in four batches (the concurrency of 4 shared, one each).
    counted(&world, (0.0, 0.0), (0.0, 0.0));
    let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
    assert_eq!(dispatched(&world), 600);
    let batches = world.router.dispatched.lock().unwrap().clone();
    assert_eq!(batches.len(), 4);
    assert!(batches.iter().all(|b| b.feed.max_concurrency == 1 && b.feed.release == "ai-handler-42:replay"));
    assert!(p.reason.starts_with("Replaying (600 of 2000 sent): "), "{}", p.reason);
    assert_eq!((p.status, world.live().canary_weight), (Status::Baking, 0.0));

    // The source holds 1 500: the rest goes out at the next check, which says so.
    counted(&world, (600.0, 30.0), (600.0, 30.0));
    let p = world.tick(&release, Some(p), T0 + 150).await.unwrap();
    assert_eq!(dispatched(&world), 1500, "never past the source");
    let run = p.kind.shadow.as_ref().unwrap().replay.clone().unwrap();
    assert_eq!((run.sent, run.sent_all_at), (1500, Some(T0 + 150)));
    assert!(p.reason.starts_with("Replaying (all 1500 sent): "), "{}", p.reason);

    // A check later, the answers counted: healthy, so the first stage.
    counted(&world, (1500.0, 75.0), (1500.0, 70.0));
    let p = world.tick(&release, Some(p), T0 + 210).await.unwrap();
    assert_eq!((p.status, p.stage, p.kind.shadow.clone()), (Status::Advanced, 0, None), "{}", p.reason);
    assert!(p.reason.starts_with("Replay passed (") && p.reason.ends_with("now at 5%"), "{}", p.reason);
    assert!(p.reason.contains("1500 requests replayed; disagreeing with the reference"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.05);
    assert_eq!(dispatched(&world), 1500, "nothing more after the replay");
    assert!(p.history.iter().take(3).all(|d| d.shadow), "the replay's decisions were made before any user");
}

#[tokio::test]
async fn a_replay_before_a_shadow_hands_over_to_it_and_opens_its_feed_only_then() {
    let world = World::new(stable_only());
    golden(&world, 100);
    let mut release = replayed_release(serde_json::json!({"requests": 100}));
    release.shadow = Some(
        serde_json::from_value(serde_json::json!({
            "duration_seconds": 600, "compare": {"label": {"pointer": "/label"}}, "max_disagreement_rate": 0.2,
        }))
        .unwrap(),
    );
    release.validate().unwrap();
    assert_eq!(release.plan().earliest_promotion_seconds, 130 + 600 + 1500, "the replay's time comes first");
    let p = world.tick(&release, None, T0).await.unwrap();
    assert!(world.router.feeds.lock().unwrap().is_empty(), "no feed while replaying");
    counted(&world, (0.0, 0.0), (0.0, 0.0));
    let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
    assert_eq!(dispatched(&world), 100);
    counted(&world, (100.0, 1.0), (100.0, 1.0));
    let p = world.tick(&release, Some(p), T0 + 120).await.unwrap();
    let run = p.kind.shadow.clone().expect("shadowing now");
    assert_eq!((run.replay, run.started_at, world.live().canary_weight), (None, T0 + 120, 0.0));
    assert!(p.reason.starts_with("Replay passed (") && p.reason.contains("now shadowing 10%"), "{}", p.reason);
    assert_eq!(world.router.feeds.lock().unwrap().clone(), vec![release.shadow_feed("41").unwrap().filter_name()]);
}

#[tokio::test]
async fn a_candidate_whose_labels_differ_is_rolled_back_in_the_replay_and_never_serves_a_user() {
    let world = World::new(stable_only());
    golden(&world, 2000);
    let release = replayed_release(serde_json::json!({}));
    let p = world.tick(&release, None, T0).await.unwrap();
    counted(&world, (600.0, 300.0), (600.0, 12.0));
    let example = crate::domain::shadow::Example {
        request_id: "replay-7".into(),
        request: r#"{"q":7}"#.into(),
        stable: r#"{"label":"refund"}"#.into(),
        candidate: r#"{"label":"escalate"}"#.into(),
    };
    world.router.examples.lock().unwrap().push(example.clone());
    let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by.clone()), (Status::RolledBack, Some(RolledBackBy::Health)), "{}", p.reason);
    assert!(p.reason.contains("at the replay"), "{}", p.reason);
    assert!(p.reason.contains("it never left the replay"), "{}", p.reason);
    assert!(p.reason.contains("candidate 50.0% of 600, stable asked again 2.0% of 600"), "{}", p.reason);
    assert_eq!(p.kind.shadow.as_ref().unwrap().examples, [example]);
    assert!(world.router.writes.lock().unwrap().iter().all(|(_, s)| s.canary_weight == 0.0), "never any weight");
    assert!(matches!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Health)));
    let [message] = world.sent().try_into().unwrap();
    assert!(message.body.contains("No user was served by the candidate"), "{}", message.body);
    assert!(message.body.contains("escalate"), "the team sees an example: {}", message.body);
}

#[tokio::test]
async fn a_source_that_does_not_exist_is_refused_before_anything_moves() {
    let world = World::new(stable_only());
    let release = replayed_release(serde_json::json!({}));
    let refused = world.tick(&release, None, T0).await.unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidRelease(why) if why == "replay: s3://evals/chat/golden.jsonl does not exist"),
        "{refused}"
    );
    assert_eq!(world.router.write_count(), 0);
    assert_eq!(dispatched(&world), 0);
}

#[tokio::test]
async fn an_abort_mid_replay_hands_out_nothing_more_and_the_next_check_ends_the_release() {
    let world = World::new(stable_only());
    golden(&world, 2000);
    let release = replayed_release(serde_json::json!({}));
    let p = world.tick(&release, None, T0).await.unwrap();
    counted(&world, (0.0, 0.0), (0.0, 0.0));
    let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
    assert_eq!(dispatched(&world), 600);
    control::abort(&world.deps(), &release, ME, "jane", "wrong model").await.unwrap();
    let p = world.tick(&release, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
    assert_eq!(dispatched(&world), 600, "nothing more was handed out after the abort");
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn a_failed_hand_off_fails_the_tick_and_its_retry_sends_the_same_requests() {
    let world = World::new(stable_only());
    golden(&world, 2000);
    let release = replayed_release(serde_json::json!({}));
    let p = world.tick(&release, None, T0).await.unwrap();
    counted(&world, (0.0, 0.0), (0.0, 0.0));
    world.router.feed_failures.lock().unwrap().push_back(Error::Service {
        operation: "lambda:Invoke",
        detail: "TooManyRequestsException (HTTP 429)".into(),
        retryable: true,
    });
    assert!(world.tick(&release, Some(p.clone()), T0 + 60).await.is_err());
    let p = world.tick(&release, Some(p), T0 + 61).await.unwrap();
    let first = world.router.dispatched.lock().unwrap()[0].lines[0].clone();
    assert_eq!((dispatched(&world), first.request), (610, serde_json::json!({"q": 0})), "from the start again");
    assert_eq!(p.kind.shadow.unwrap().replay.unwrap().cursor.offset, 610);
}

#[test]
fn a_replay_is_a_lambda_releases_phase_and_says_why_for_the_others() {
    let mut sagemaker = replayed_release(serde_json::json!({}));
    sagemaker.target = Target::sagemaker("chat", "blue", "green");
    sagemaker.canary_version = None;
    let refused = sagemaker.validate().unwrap_err().to_string();
    assert!(
        refused.contains("replay: a Lambda release's phase for now") && refused.contains("TargetVariant"),
        "{refused}"
    );
    let mut recent = replayed_release(serde_json::json!({"source": {"recent": {"window_seconds": 3600}}}));
    assert_eq!(recent.replay.as_ref().unwrap().source_text(), "the stable's requests of the last 1h00m");
    recent.replay.as_mut().unwrap().source = Source::Recent { window_seconds: 60 };
    assert_eq!(recent.replay.unwrap().source.to_string(), "the stable's requests of the last 60 s");
}

#[test]
fn the_plan_says_what_the_replay_costs_and_how_soon_it_sees_a_doubled_disagreement_rate() {
    let line_of = |release: &Release| {
        let text = crate::release::canary::view::plan_text(release);
        text.lines().find(|l| l.trim_start().starts_with("replay")).expect(&text).to_owned()
    };
    // Within +100% of the noise floor, a 2x is within the limit: what it does see is said.
    let tolerant = line_of(&replayed_release(serde_json::json!({"rate_per_second": 20})));
    assert!(
        tolerant.contains("a 2x disagreement rate is not seen with 80% power within its requests; all 2000 see 3."),
        "{tolerant}"
    );
    let release = replayed_release(
        serde_json::json!({"rate_per_second": 20, "requests": 20000, "max_disagreement_increase_ratio": 0.5}),
    );
    let text = crate::release::canary::view::plan_text(&release);
    let line = text.lines().find(|l| l.trim_start().starts_with("replay")).expect(&text);
    assert!(
        line.contains(
            "replay   up to 20000 requests from s3://evals/chat/golden.jsonl at 20 a second (16m40s, at most 18m40s)"
        ),
        "{line}"
    );
    assert!(line.contains("60000 invocations of its versions, the stable answering each first"), "{line}");
    let needed: u64 = line
        .split("seen with 80% power after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(line);
    assert!((2000..20000).contains(&needed), "{line}");
    assert!(line.ends_with("then the stages"), "{line}");
}

#[test]
fn the_sample_replay_is_valid_and_its_plan_says_its_golden_set_comes_first() {
    let sample = crate::release::core::document::tests::sample_json("lambda-ai-router-replay-3.json");
    let release = Release::parse(&sample).unwrap();
    let replay = release.replay.as_deref().unwrap();
    assert_eq!((replay.requests, replay.invocations()), (20_000, 60_000));
    let text = crate::release::canary::view::plan_text(&release);
    let replay_line = text.lines().position(|l| l.trim_start().starts_with("replay")).expect(&text);
    let stages_line = text.lines().position(|l| l.trim_start().starts_with("stages")).expect(&text);
    assert!(replay_line < stages_line, "{text}");
    assert!(text.contains("s3://team-evals/golden/ai-router/2026-12.jsonl at 20 a second"), "{text}");
}

#[test]
fn validate_live_says_what_the_replays_invocations_cost_at_the_stables_recent_latency() {
    let release = replayed_release(serde_json::json!({}));
    let mut stable = SideMetrics { requests: 1000.0, ..SideMetrics::default() };
    stable.percentiles = crate::domain::metrics::PERCENTILE_LEVELS.iter().map(|l| Some(8.0 * l)).collect();
    let cost = crate::release::canary::preflight::replay_cost(&release, &stable).unwrap();
    // 6 000 invocations at a p50 of 400 ms: 40 minutes.
    assert_eq!(
        cost,
        "The replay's 6000 invocations take about 40m of function time at the stable's recent p50 of 400 ms"
    );
    assert_eq!(
        crate::release::canary::preflight::replay_cost(&release, &SideMetrics::default()),
        None,
        "no latency, no guess"
    );
}
