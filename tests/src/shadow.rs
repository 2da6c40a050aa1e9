//! The Lambda shadow's and the replay's scene: the local AWS, the real shadow function,
//! a topic read back through SQS, and the library's adapters with the shadow function as
//! their feeds' destination; with the shadow function's counts read back.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use coalmine::aws::log_group;
use coalmine::clouds::Clouds;
use coalmine::domain::shadow::{Feed, NAMESPACE};
use coalmine::ports::ShadowFeeds;
use coalmine::release::canary::progress::Progress;
use coalmine::release::canary::spec::Release;
use coalmine::release::core::{StepDeps, Tick};

use crate::{bootstrap_path, unique, Inbox, LocalAws};

/// The local AWS, the real shadow function, a topic read back through SQS, and the
/// library's adapters with the shadow function as their feeds' destination.
pub struct ShadowScene {
    pub local: LocalAws,
    pub shadow_fn: String,
    pub inbox: Inbox,
    pub aws: Clouds,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl ShadowScene {
    pub async fn connect() -> ShadowScene {
        let local = LocalAws::connect().await;
        let inbox = local.topic_with_queue(&unique("coalmine-topic")).await;
        let shadow_fn = unique("coalmine-shadow");
        let shadow_arn = local.create_function_from(&shadow_fn, &bootstrap_path("shadow"), &[]).await;
        let (_, mut config) = local.adapters(&inbox.topic_arn);
        config.shadow_function_arn = Some(shadow_arn);
        let aws = Clouds::new(&local.sdk, &config);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&local.sdk);
        ShadowScene { local, shadow_fn, inbox, aws, logs }
    }

    /// The feed, opened by the stepper's own adapter.
    pub async fn open_feed(&self, feed: &Feed) {
        self.aws.router.open_feed(feed).await.expect("open the feed");
    }

    pub async fn filters(&self, function: &str) -> Vec<String> {
        let out = self
            .logs
            .describe_subscription_filters()
            .log_group_name(log_group(function))
            .send()
            .await
            .expect("DescribeSubscriptionFilters");
        out.subscription_filters().iter().filter_map(|f| f.filter_name().map(str::to_owned)).collect()
    }

    pub async fn try_tick(
        &self,
        release: &Release,
        progress: Option<Progress>,
        execution: &str,
        now: u64,
    ) -> coalmine::Result<Progress> {
        let deps = StepDeps::new(&self.aws.router, &self.aws.notifier, &self.aws.alarms, &self.aws.metrics);
        Tick { release, execution, deps: &deps, now }.step(progress).await
    }

    pub async fn tick(&self, release: &Release, progress: Option<Progress>, execution: &str, now: u64) -> Progress {
        self.try_tick(release, progress, execution, now).await.expect("a tick")
    }
}

pub fn epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The sum of a shadow metric for one version of the feed's release, this last hour.
pub async fn shadow_sum(local: &LocalAws, release: &str, name: &str, version: &str) -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let metric = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(name)
        .dimensions(Dimension::builder().name("Release").value(release).build())
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

/// An execution ARN of this test's own.
pub fn execution() -> String {
    format!("arn:aws:states:us-east-1:000000000000:execution:coalmine-release:{}", unique("run"))
}

/// A golden set of `n` requests `{"q": i}` in a bucket of its own: where it is.
pub async fn golden_set(local: &LocalAws, n: u64) -> serde_json::Value {
    let s3 =
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&local.sdk).force_path_style(true).build());
    let bucket = unique("evals");
    s3.create_bucket().bucket(&bucket).send().await.expect("CreateBucket");
    let lines: String = (0..n).map(|q| format!("{}\n", serde_json::json!({"request": {"q": q}}))).collect();
    let key = "chat/golden.jsonl";
    s3.put_object()
        .bucket(&bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(lines.into_bytes()))
        .send()
        .await
        .expect("PutObject");
    serde_json::json!({"s3": {"bucket": bucket, "key": key}})
}
