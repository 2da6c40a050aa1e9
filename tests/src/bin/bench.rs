//! `make bench` (in-process part): warm rollback handler vs the floor of its two essential
//! SDK calls, one stepper tick, init cost, and an alarm storm, against the local AWS.
//! Prints one JSON object per measurement; scripts/bench writes BENCHMARKS.md from them.

use coalmine::domain::replay::{Cursor, ReplayBatch, Slice, Source};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_lambda::types::AliasRoutingConfiguration;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use coalmine::config::Config;
use coalmine::domain::deployment::{ConfigVariants, DeploymentPlan, EndpointState};
use coalmine::domain::event::Confirmation;
use coalmine::domain::metrics::MetricSnapshot;
use coalmine::domain::shadow::Feed;
use coalmine::domain::stamp::Stamp;
use coalmine::ports::{
    AlarmSource, EndpointDeployments, MetricQuery, MetricSource, Notification, Notifier, ShadowFeeds, TrafficRouter,
    Tripwires,
};
use coalmine::release::canary::spec::Release;
use coalmine::release::core::progress::Status;
use coalmine::release::core::{StepDeps, Tick};
use coalmine::rollback::{handle_payload, RollbackDeps};
use coalmine::Split;
use coalmine::{AlarmState, Target};
use coalmine_tests::{sample_event, unique, LocalAws};
use serde_json::json;

const WARM_RUNS: usize = 500;
const TICK_RUNS: usize = 200;
/// An in-region AWS API call's round trip is of this order; the ratios it yields change
/// little above a few milliseconds, where the round trips dominate.
const MODELED_RTT_MS: u64 = 10;
const MODELED_RUNS: usize = 100;

/// Counts the AWS calls made through each port (one port call is one AWS call, except a
/// SageMaker write, which re-reads first; the benchmark uses Lambda targets).
struct Counting<'a, T> {
    inner: &'a T,
    calls: &'a AtomicUsize,
}

impl<T: TrafficRouter> TrafficRouter for Counting<'_, T> {
    async fn read(&self, target: &Target) -> coalmine::Result<Split> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.read(target).await
    }
    async fn write(&self, target: &Target, read: &Split, desired: &Split) -> coalmine::Result<Split> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.write(target, read, desired).await
    }
    async fn check_canary(&self, target: &Target, canary: &str) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.check_canary(target, canary).await
    }
}

impl<T: EndpointDeployments> EndpointDeployments for Counting<'_, T> {
    async fn endpoint_state(&self, endpoint: &str) -> coalmine::Result<EndpointState> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.endpoint_state(endpoint).await
    }
    async fn config_variants(&self, config: &str) -> coalmine::Result<ConfigVariants> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.config_variants(config).await
    }
    async fn deploy(&self, endpoint: &str, config: &str, plan: Option<&DeploymentPlan>) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.deploy(endpoint, config, plan).await
    }
    async fn mark_tripwire(&self, endpoint: &str, alarm: &str) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.mark_tripwire(endpoint, alarm).await
    }
    async fn stamp_endpoint(&self, endpoint: &str, stamp: &Stamp) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.stamp_endpoint(endpoint, stamp).await
    }
}

impl<T: ShadowFeeds> ShadowFeeds for Counting<'_, T> {
    async fn check_feed(&self, feed: &Feed) -> coalmine::Result<String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.check_feed(feed).await
    }
    async fn open_feed(&self, feed: &Feed) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.open_feed(feed).await
    }
    async fn close_feed(&self, feed: &Feed) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.close_feed(feed).await
    }
    async fn examples(&self, feed: &Feed, since: u64) -> coalmine::Result<Vec<coalmine::domain::shadow::Example>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.examples(feed, since).await
    }
    async fn check_replay(&self, source: &Source, feed: &Feed, began_at: u64) -> coalmine::Result<String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.check_replay(source, feed, began_at).await
    }
    async fn read_replay(
        &self,
        source: &Source,
        feed: &Feed,
        cursor: &Cursor,
        began_at: u64,
        max: usize,
    ) -> coalmine::Result<Slice> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.read_replay(source, feed, cursor, began_at, max).await
    }
    async fn dispatch_replay(&self, batches: &[ReplayBatch]) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.dispatch_replay(batches).await
    }
}

impl<T: coalmine::ports::CohortPublisher> coalmine::ports::CohortPublisher for Counting<'_, T> {
    async fn publish(&self, target: &Target, cohort: &coalmine_router::Cohort) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.publish(target, cohort).await
    }
}

impl<T: Tripwires> Tripwires for Counting<'_, T> {
    async fn ensure_tripwire(&self, alarm: &str, endpoint: &str) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.ensure_tripwire(alarm, endpoint).await
    }
    async fn trip(&self, alarm: &str) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.trip(alarm).await
    }
}

impl<T: Notifier> Notifier for Counting<'_, T> {
    async fn publish(&self, n: &Notification) -> coalmine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.publish(n).await
    }
}

impl<T: AlarmSource> AlarmSource for Counting<'_, T> {
    async fn target_tag(&self, arn: &str) -> coalmine::Result<Option<String>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.target_tag(arn).await
    }
    async fn states(&self, names: &[String]) -> coalmine::Result<Vec<(String, AlarmState)>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.states(names).await
    }
    async fn confirm(&self, name: &str, entered_at: &str) -> coalmine::Result<Confirmation> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.confirm(name, entered_at).await
    }
}

impl<T: MetricSource> MetricSource for Counting<'_, T> {
    async fn fetch(&self, q: &MetricQuery<'_>) -> coalmine::Result<MetricSnapshot> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.fetch(q).await
    }
    async fn requests_per_minute(
        &self,
        t: &Target,
        id: &str,
        start: u64,
        end: u64,
    ) -> coalmine::Result<Vec<(u64, f64)>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.requests_per_minute(t, id, start, end).await
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

/// UpdateAlias of `live` to version 1 with these canary weights, conditional when
/// `revision` is given.
async fn put_alias(local: &LocalAws, function: &str, weights: HashMap<String, f64>, revision: Option<String>) {
    local
        .lambda
        .update_alias()
        .function_name(function)
        .name("live")
        .function_version("1")
        .set_revision_id(revision)
        .routing_config(AliasRoutingConfiguration::builder().set_additional_version_weights(Some(weights)).build())
        .send()
        .await
        .expect("update alias");
}

async fn put_canary(local: &LocalAws, function: &str, weight: f64) {
    put_alias(local, function, HashMap::from([("2".to_owned(), weight)]), None).await;
}

async fn zero_alias(local: &LocalAws, function: &str, revision: Option<String>) {
    put_alias(local, function, HashMap::new(), revision).await;
}

async fn publish(local: &LocalAws, topic_arn: &str) {
    local.sns.publish().topic_arn(topic_arn).subject("bench").message("bench").send().await.expect("publish");
}

/// The floor: the two calls a rollback cannot do without, bare SDK, same clients.
async fn floor_calls(local: &LocalAws, function: &str, topic_arn: &str) {
    zero_alias(local, function, None).await;
    publish(local, topic_arn).await;
}

/// The handler's calls made bare, in its order: the tag lookup and the read together,
/// then the conditional write, then the message. What is left is the handler's own cost.
async fn same_calls_bare(local: &LocalAws, function: &str, alarm_arn: &str, topic_arn: &str) {
    let (tags, read) = tokio::join!(
        local.cloudwatch.list_tags_for_resource().resource_arn(alarm_arn).send(),
        local.lambda.get_alias().function_name(function).name("live").send()
    );
    tags.expect("tags");
    zero_alias(local, function, read.expect("get alias").revision_id).await;
    publish(local, topic_arn).await;
}

/// Loopback to a single-threaded emulator hides what overlapping calls buy in AWS, where
/// each call is a network round trip: this client adds one (half each way) to every call.
#[derive(Debug)]
struct RoundTrip {
    inner: SharedHttpClient,
    rtt: Duration,
}

impl HttpClient for RoundTrip {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(RoundTripConnector {
            inner: self.inner.http_connector(settings, components),
            rtt: self.rtt,
        })
    }
}

#[derive(Debug)]
struct RoundTripConnector {
    inner: SharedHttpConnector,
    rtt: Duration,
}

impl HttpConnector for RoundTripConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (inner, half) = (self.inner.clone(), self.rtt / 2);
        HttpConnectorFuture::new(async move {
            tokio::time::sleep(half).await;
            let response = inner.call(request).await;
            tokio::time::sleep(half).await;
            response
        })
    }
}

/// The warm rollback handler against its floor and against its own calls made bare, in
/// interleaved rounds so drift on a shared machine touches every variant alike.
/// The usual alarm is tagged with its target and watches that alias's metrics. The
/// `tag_only` alarm's tag names a target its dimensions do not (a composite, or another
/// service's metric), so its early read is wasted and its target's read waits for the tag.
async fn warm_rollback(local: &LocalAws, runs: usize) -> serde_json::Value {
    let inbox = local.topic_with_queue(&unique("bench-topic")).await;
    let (aws, config) = local.adapters(&inbox.topic_arn);
    let function = unique("bench-handler");
    let target = local.seed_lambda_canary(&function, 0.05).await;
    let alarm = unique("bench-alarm");
    local.put_alarm(&alarm, Some(&target.to_string())).await;
    let alarm_arn = coalmine_tests::alarm_arn(&alarm);
    let event = sample_event("alarm-lambda-canary.eventbridge.json", &alarm, Some(&function));
    let tag_only_event = sample_event("alarm-lambda-canary.eventbridge.json", &alarm, None);
    let calls = AtomicUsize::new(0);
    let (router, notifier, alarms) = (
        Counting { inner: &aws.router, calls: &calls },
        Counting { inner: &aws.notifier, calls: &calls },
        Counting { inner: &aws.alarms, calls: &calls },
    );
    let deps = RollbackDeps::new(&router, &notifier, &alarms, &config.rollback_targets);
    let [mut handler, mut tag_only, mut floor, mut same_calls] = std::array::from_fn(|_| Vec::with_capacity(runs));
    let (mut handler_calls, mut tag_only_calls) = (0, 0);
    for _ in 0..runs {
        for (event, samples, call_count) in
            [(&event, &mut handler, &mut handler_calls), (&tag_only_event, &mut tag_only, &mut tag_only_calls)]
        {
            put_canary(local, &function, 0.05).await;
            let before = calls.load(Ordering::Relaxed);
            let started = Instant::now();
            let summary = handle_payload(event, &deps).await.expect("rollback");
            samples.push(started.elapsed());
            *call_count += calls.load(Ordering::Relaxed) - before;
            assert_eq!(summary["targets"][0]["outcome"], "rolled_back");
        }

        put_canary(local, &function, 0.05).await;
        let started = Instant::now();
        floor_calls(local, &function, &inbox.topic_arn).await;
        floor.push(started.elapsed());

        put_canary(local, &function, 0.05).await;
        let started = Instant::now();
        same_calls_bare(local, &function, &alarm_arn, &inbox.topic_arn).await;
        same_calls.push(started.elapsed());
    }
    let per_run = |n: usize| n as f64 / runs as f64;
    let ((h50, h99), (o50, o99), (f50, f99), (s50, s99)) =
        (percentiles(handler), percentiles(tag_only), percentiles(floor), percentiles(same_calls));
    json!({"runs": runs, "p50_ms": h50, "p99_ms": h99, "aws_calls": per_run(handler_calls),
           "floor_p50_ms": f50, "floor_p99_ms": f99, "floor_calls": 2, "ratio_p50": h50 / f50,
           "same_calls_p50_ms": s50, "same_calls_p99_ms": s99, "ratio_same_calls_p50": h50 / s50,
           "tag_only_p50_ms": o50, "tag_only_p99_ms": o99, "tag_only_aws_calls": per_run(tag_only_calls),
           "tag_only_ratio_p50": o50 / f50})
}

#[tokio::main]
async fn main() {
    let local = LocalAws::connect().await;
    let inbox = local.topic_with_queue(&unique("bench-topic")).await;
    let (aws, _) = local.adapters(&inbox.topic_arn);
    let calls = AtomicUsize::new(0);
    let (router, notifier, alarms) = (
        Counting { inner: &aws.router, calls: &calls },
        Counting { inner: &aws.notifier, calls: &calls },
        Counting { inner: &aws.alarms, calls: &calls },
    );

    let mut loopback = warm_rollback(&local, WARM_RUNS).await;
    loopback["bench"] = json!("warm_rollback");
    println!("{loopback}");

    let rtt = Duration::from_millis(MODELED_RTT_MS);
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .build_https();
    let remote = LocalAws::from_sdk(local.sdk.to_builder().http_client(RoundTrip { inner, rtt }).build());
    let mut modeled = warm_rollback(&remote, MODELED_RUNS).await;
    modeled["bench"] = json!("warm_rollback_modeled_rtt");
    modeled["rtt_ms"] = json!(MODELED_RTT_MS);
    println!("{modeled}");

    // One stepper tick while baking: read, alarm states, one GetMetricData.
    let step_fn = unique("bench-stepper");
    let step_target = local.seed_lambda_canary(&step_fn, 0.0).await;
    let gate = unique("bench-gate");
    local.put_quiet_alarm(&gate, None).await;
    let release = Release::parse(&json!({
        "release": "bench", "target": {"lambda": {"function": step_fn, "alias": "live"}}, "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 86400}, {"percent": 100, "bake_seconds": 60}], "check_every_seconds": 60,
        "gates": {"alarms": [gate], "max_error_rate": 0.05, "max_error_rate_ratio": 1.2, "max_p95_latency_ms": 2000, "min_requests": 10}
    }))
    .expect("release");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    local.put_side_metrics(&step_target, "2", now - 30, 500.0, 1.0, &[100.0, 200.0]).await;
    local.put_side_metrics(&step_target, "1", now - 30, 9500.0, 10.0, &[100.0, 200.0]).await;
    let metrics = Counting { inner: &aws.metrics, calls: &calls };
    let step_deps = StepDeps::new(&router, &notifier, &alarms, &metrics);
    let execution = "arn:aws:states:us-east-1:000000000000:execution:bench:bench";
    let tick = |now| Tick { release: &release, execution, deps: &step_deps, now };
    let mut progress = tick(now - 60).step(None).await.expect("start");
    calls.store(0, Ordering::Relaxed);
    let mut ticks = Vec::with_capacity(TICK_RUNS);
    for _ in 0..TICK_RUNS {
        let started = Instant::now();
        progress = tick(now).step(Some(progress)).await.expect("tick");
        ticks.push(started.elapsed());
        assert_eq!(progress.status, Status::Baking, "{}", progress.reason);
    }
    let tick_calls = calls.load(Ordering::Relaxed) as f64 / TICK_RUNS as f64;
    let (t50, t99) = percentiles(ticks);
    println!(
        "{}",
        json!({"bench": "warm_tick", "runs": TICK_RUNS, "p50_ms": t50, "p99_ms": t99, "aws_calls": tick_calls})
    );

    // Init: what a cold start does before the first event, in-process.
    let mut init = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let config = Config::from_lookup(|name| match name {
            "SNS_TOPIC_ARN" => Some(inbox.topic_arn.clone()),
            _ => None,
        })
        .expect("config");
        let sdk = coalmine::aws::sdk_config().await;
        let _aws = coalmine::clouds::Clouds::new(&sdk, &config);
        init.push(started.elapsed());
    }
    let (i50, i99) = percentiles(init);
    println!("{}", json!({"bench": "init", "runs": 50, "p50_ms": i50, "p99_ms": i99}));

    // An alarm storm: 200 events for 50 targets, all at once.
    let mut targets = Vec::new();
    let mut events = Vec::new();
    for _ in 0..50 {
        let function = unique("storm");
        let t = local.seed_lambda_canary(&function, 0.1).await;
        let a = unique("storm-alarm");
        local.put_alarm(&a, Some(&t.to_string())).await;
        for _ in 0..4 {
            events.push(sample_event("alarm-lambda-canary.eventbridge.json", &a, Some(&function)));
        }
        targets.push(t);
    }
    let storm_inbox = local.topic_with_queue(&unique("storm-topic")).await;
    let (storm_aws, storm_config) = local.adapters(&storm_inbox.topic_arn);
    let storm_deps =
        RollbackDeps::new(&storm_aws.router, &storm_aws.notifier, &storm_aws.alarms, &storm_config.rollback_targets);
    let started = Instant::now();
    let results = futures::future::join_all(events.iter().map(|e| handle_payload(e, &storm_deps))).await;
    let wall = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let mut at_zero = 0;
    for t in &targets {
        at_zero += usize::from(local.alias_state(t).await.1.is_empty());
    }
    let messages = storm_inbox.receive(200, Duration::from_secs(60)).await;
    let rolled_back = messages.iter().filter(|m| m.event() == "rolled_back").count();
    let per_target_once = targets.iter().all(|t| {
        let name = t.to_string();
        messages.iter().filter(|m| m.target() == name && m.event() == "rolled_back").count() == 1
    });
    println!(
        "{}",
        json!({"bench": "storm", "events": 200, "targets": 50, "wall_ms": wall.as_secs_f64() * 1000.0, "failed": failed,
               "targets_at_zero": at_zero, "rolled_back_messages": rolled_back, "messages": messages.len(),
               "one_rolled_back_per_target": per_target_once})
    );
}
