//! The Lambda shadow's feed over real HTTP, with the real bootstraps in MiniStack: a
//! model handler (`tests/src/bin/model.rs`, printing its pairs with `coalmine-emf`)
//! serves live requests through its alias; a CloudWatch Logs subscription filter on its
//! log group, named by the release's feed, hands the lines to the real shadow function,
//! which asks the candidate's version (and the stable's again) and publishes the counts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Environment, Runtime};
use coalmine::domain::shadow::{metric, Compare, Feed, FILTER_PATTERN, NAMESPACE, PAIR_KEY};
use coalmine_tests::{bootstrap_path, poll, unique, zip_bootstrap, LocalAws, ROLE_ARN};
use serde_json::json;

/// A model function whose version 1 runs `stable` and version 2 runs `candidate`
/// (`MODEL`), live behind alias `live` on version 1.
async fn model(local: &LocalAws, stable: &str, candidate: &str) -> String {
    let function = unique("model");
    let code =
        zip_bootstrap(&std::fs::read(bootstrap_path("model")).expect("the model bootstrap; `make bins` builds it"));
    let env = |model: &str| Environment::builder().variables("MODEL", model).build();
    local
        .lambda
        .create_function()
        .function_name(&function)
        .runtime(Runtime::Providedal2023)
        .role(ROLE_ARN)
        .handler("bootstrap")
        .timeout(30)
        .environment(env(stable))
        .code(aws_sdk_lambda::types::FunctionCode::builder().zip_file(Blob::new(code)).build())
        .send()
        .await
        .expect("create the model");
    local.lambda.publish_version().function_name(&function).send().await.expect("publish v1");
    local
        .lambda
        .update_function_configuration()
        .function_name(&function)
        .environment(env(candidate))
        .send()
        .await
        .expect("the candidate's configuration");
    local.lambda.publish_version().function_name(&function).send().await.expect("publish v2");
    local
        .lambda
        .create_alias()
        .function_name(&function)
        .name("live")
        .function_version("1")
        .send()
        .await
        .expect("alias");
    function
}

fn feed(function: &str, compare: Compare) -> Feed {
    Feed {
        release: unique("shadow-release"),
        function: function.to_owned(),
        stable: "1".into(),
        candidate: "2".into(),
        sample: 1.0,
        max_payload_bytes: 65_536,
        max_concurrency: 4,
        compare,
        noise_floor: true,
    }
}

/// The shadow function, and the feed on the model's log group pointing at it.
async fn open_feed(local: &LocalAws, feed: &Feed) -> aws_sdk_cloudwatchlogs::Client {
    let shadow_fn = unique("coalmine-shadow");
    let shadow_arn = local.create_function_from(&shadow_fn, &bootstrap_path("shadow"), &[]).await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&local.sdk);
    let group = format!("/aws/lambda/{}", feed.function);
    // The group exists once the function has logged; create it so the filter can go on first.
    let _ = logs.create_log_group().log_group_name(&group).send().await;
    logs.put_subscription_filter()
        .log_group_name(&group)
        .filter_name(feed.filter_name())
        .filter_pattern(FILTER_PATTERN)
        .destination_arn(shadow_arn)
        .send()
        .await
        .expect("put the subscription filter");
    logs
}

async fn serve_live(local: &LocalAws, function: &str, requests: u64) {
    for q in 0..requests {
        let out = local
            .lambda
            .invoke()
            .function_name(function)
            .qualifier("live")
            .payload(Blob::new(json!({ "q": q }).to_string()))
            .send()
            .await
            .expect("a live request");
        assert_eq!(out.function_error, None, "the stable serves every live request");
    }
}

/// The sum of a shadow metric for one version of the feed's release, this last hour.
async fn shadow_sum(local: &LocalAws, feed: &Feed, name: &str, version: &str) -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let metric = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(name)
        .dimensions(Dimension::builder().name("Release").value(&feed.release).build())
        .dimensions(Dimension::builder().name("Version").value(version).build())
        .build();
    let out = local
        .cloudwatch
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("m")
                .metric_stat(MetricStat::builder().metric(metric).stat("Sum").period(3600).build())
                .build(),
        )
        .start_time(aws_smithy_types::DateTime::from_secs(now - 3600))
        .end_time(aws_smithy_types::DateTime::from_secs(now + 60))
        .send()
        .await
        .expect("GetMetricData");
    out.metric_data_results().iter().flat_map(|r| r.values().iter().copied()).sum()
}

/// Waits (bounded) until the candidate has been asked `n` requests; then every count.
async fn counts_once_shadowed(local: &LocalAws, feed: &Feed, n: f64) -> [f64; 5] {
    let shadowed = poll(Duration::from_secs(90), || async {
        let seen = shadow_sum(local, feed, metric::SHADOWED, "2").await;
        (seen >= n).then_some(seen)
    })
    .await;
    assert!(shadowed.is_some(), "the candidate was not asked {n} requests within 90 s");
    [
        shadow_sum(local, feed, metric::SHADOWED, "2").await,
        shadow_sum(local, feed, metric::DISAGREEMENTS, "2").await,
        shadow_sum(local, feed, metric::ERRORS, "2").await,
        shadow_sum(local, feed, metric::SHADOWED, "1").await,
        shadow_sum(local, feed, metric::DISAGREEMENTS, "1").await,
    ]
}

/// The pair lines in the model's log group, by the version whose stream holds them.
async fn pair_lines(logs: &aws_sdk_cloudwatchlogs::Client, function: &str) -> (usize, usize) {
    let out = logs
        .filter_log_events()
        .log_group_name(format!("/aws/lambda/{function}"))
        .send()
        .await
        .expect("FilterLogEvents");
    let pairs = out.events().iter().filter(|e| e.message().unwrap_or_default().contains(PAIR_KEY));
    pairs.fold((0, 0), |(v1, v2), e| {
        match coalmine::domain::shadow::stream_version(e.log_stream_name().unwrap_or_default()) {
            Some("1") => (v1 + 1, v2),
            Some("2") => (v1, v2 + 1),
            _ => (v1, v2),
        }
    })
}

#[tokio::test]
async fn a_candidate_that_disagrees_is_asked_every_live_request_and_its_disagreements_counted() {
    let local = LocalAws::connect().await;
    let function = model(&local, "steady", "flips-odd").await;
    let feed = feed(&function, Compare::Label { pointer: "/label".into() });
    let logs = open_feed(&local, &feed).await;

    serve_live(&local, &function, 10).await;

    let [shadowed, disagreements, errors, stable_asked, stable_disagreements] =
        counts_once_shadowed(&local, &feed, 10.0).await;
    assert_eq!((shadowed, disagreements, errors), (10.0, 5.0, 0.0), "q = 1, 3, 5, 7, 9 disagree");
    assert_eq!((stable_asked, stable_disagreements), (10.0, 0.0), "the steady stable agrees with itself");
    // Only live requests are shadowed: the shadow's own invocations print no pair (the
    // envelope), so nothing feeds back, and the candidate's stream never holds one.
    assert_eq!(pair_lines(&logs, &function).await, (10, 0));
}

#[tokio::test]
async fn a_candidate_that_fails_is_counted_in_errors_and_users_are_still_served_by_the_stable() {
    let local = LocalAws::connect().await;
    let function = model(&local, "steady", "fails").await;
    let feed = feed(&function, Compare::Exact);
    open_feed(&local, &feed).await;

    serve_live(&local, &function, 4).await;

    let [shadowed, disagreements, errors, stable_asked, _] = counts_once_shadowed(&local, &feed, 4.0).await;
    assert_eq!((shadowed, errors, disagreements), (4.0, 4.0, 0.0));
    assert_eq!(stable_asked, 4.0);
}
