//! A Lambda shadow's feed: a CloudWatch Logs subscription filter on the stable's log
//! group, named by the feed, pointing at the shadow function.

use aws_sdk_cloudwatchlogs::Client;

use super::error::{aws_error, call_detail, service_code};
use crate::domain::error::{Error, Result};
use crate::domain::replay::{Cursor, ReplayBatch, Slice, Source};
use crate::domain::shadow::{Example, Feed, DISAGREEMENT_MESSAGE, FILTER_PATTERN};

/// Read a page of the shadow function's disagreement lines; show the last few.
const EXAMPLES_READ: i32 = 50;
pub const EXAMPLES_SHOWN: usize = 3;

pub struct LogFeeds {
    pub(super) client: Client,
    destination: Option<String>,
    /// The shadow function's own log group, where its examples are.
    examples_group: Option<String>,
    /// A replay's golden sets and its hand-off to the shadow function.
    pub(super) replay: Option<ReplayClients>,
}

/// What a replay reads golden sets and hands out batches with.
pub struct ReplayClients {
    pub s3: aws_sdk_s3::Client,
    pub lambda: aws_sdk_lambda::Client,
}

impl LogFeeds {
    pub fn new(client: Client, destination: Option<String>) -> Self {
        let examples_group = destination.as_deref().map(|arn| {
            let function = arn.rsplit(":function:").next().unwrap_or_default();
            log_group(function.split(':').next().unwrap_or_default())
        });
        LogFeeds { client, destination, examples_group, replay: None }
    }

    /// Replays too: reads golden sets with `s3`, hands batches out with `lambda`.
    pub fn with_replay(self, s3: aws_sdk_s3::Client, lambda: aws_sdk_lambda::Client) -> Self {
        LogFeeds { replay: Some(ReplayClients { s3, lambda }), ..self }
    }
}

/// Lambda's log group for a function (a `LoggingConfig` elsewhere is not followed yet).
pub fn log_group(function: &str) -> String {
    format!("/aws/lambda/{function}")
}

/// CloudWatch Logs allows this many subscription filters on a log group.
const FILTERS_PER_GROUP: usize = 2;

impl LogFeeds {
    pub(super) fn destination(&self) -> Result<&str> {
        self.destination.as_deref().ok_or_else(|| {
            Error::Config(
                "SHADOW_FUNCTION_ARN is not set: the stack's shadow function receives a shadow's requests; \
                 deploy the stack's ShadowFunction (infra/template.yaml) or drop the release's \"shadow\""
                    .into(),
            )
        })
    }
}

impl crate::ports::ShadowFeeds for LogFeeds {
    async fn check_feed(&self, feed: &Feed) -> Result<String> {
        let group = log_group(&feed.function);
        let out = self.client.describe_subscription_filters().log_group_name(&group).send().await.map_err(|e| {
            match service_code(&e) {
                Some(("ResourceNotFoundException", _)) => Error::InvalidRelease(format!(
                    "shadow: {group} does not exist: the stable has never logged, so it has no requests to shadow"
                )),
                _ => aws_error("logs:DescribeSubscriptionFilters", e),
            }
        })?;
        let name = feed.filter_name();
        let others: Vec<&str> =
            out.subscription_filters().iter().filter_map(|f| f.filter_name()).filter(|f| *f != name).collect();
        if others.len() >= FILTERS_PER_GROUP {
            return Err(Error::Refused(format!(
                "shadow: {group} already has the {FILTERS_PER_GROUP} subscription filters CloudWatch Logs allows \
                 ({}); remove one, or drop the release's \"shadow\"",
                others.join(", ")
            )));
        }
        // Checked after the group: a stepper without the shadow function is a stack to fix.
        let destination = self.destination()?;
        Ok(format!("{group} feeds {destination}"))
    }

    async fn open_feed(&self, feed: &Feed) -> Result<()> {
        let destination = self.destination()?;
        let group = log_group(&feed.function);
        let put = self
            .client
            .put_subscription_filter()
            .log_group_name(&group)
            .filter_name(feed.filter_name())
            .filter_pattern(FILTER_PATTERN)
            .destination_arn(destination)
            .send()
            .await;
        put.map(drop).map_err(|e| match service_code(&e) {
            Some(("ResourceNotFoundException", _)) => Error::InvalidRelease(format!(
                "shadow: {group} does not exist: the stable has never logged, so it has no requests to shadow ({})",
                call_detail("logs:PutSubscriptionFilter", &e)
            )),
            Some(("LimitExceededException", _)) => Error::Refused(format!(
                "shadow: {group} already has the two subscription filters CloudWatch Logs allows; remove one, or \
                 drop the release's \"shadow\" ({})",
                call_detail("logs:PutSubscriptionFilter", &e)
            )),
            _ => aws_error("logs:PutSubscriptionFilter", e),
        })
    }

    async fn examples(&self, feed: &Feed, since_epoch: u64) -> Result<Vec<Example>> {
        let Some(group) = self.examples_group.as_deref() else {
            return Ok(Vec::new());
        };
        let out = self
            .client
            .filter_log_events()
            .log_group_name(group)
            .filter_pattern(format!("\"{DISAGREEMENT_MESSAGE}\" \"{}\"", feed.release))
            .start_time(i64::try_from(since_epoch.saturating_mul(1000)).unwrap_or(i64::MAX))
            .limit(EXAMPLES_READ)
            .send()
            .await
            .map_err(|e| aws_error("logs:FilterLogEvents", e))?;
        let mut examples: Vec<Example> =
            out.events().iter().filter_map(|e| Example::from_log_line(e.message()?, &feed.release)).collect();
        let keep = examples.len().saturating_sub(EXAMPLES_SHOWN);
        Ok(examples.split_off(keep))
    }

    async fn check_replay(&self, source: &Source, feed: &Feed, began_at: u64) -> Result<String> {
        self.check_replay_source(source, feed, began_at).await
    }

    async fn read_replay(
        &self,
        source: &Source,
        feed: &Feed,
        cursor: &Cursor,
        began_at: u64,
        max: usize,
    ) -> Result<Slice> {
        self.read_replay_source(source, feed, cursor, began_at, max).await
    }

    async fn dispatch_replay(&self, batches: &[ReplayBatch]) -> Result<()> {
        self.dispatch_batches(batches).await
    }

    async fn close_feed(&self, feed: &Feed) -> Result<()> {
        let deleted = self
            .client
            .delete_subscription_filter()
            .log_group_name(log_group(&feed.function))
            .filter_name(feed.filter_name())
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if matches!(service_code(&e), Some(("ResourceNotFoundException", _))) => Ok(()),
            Err(e) => Err(aws_error("logs:DeleteSubscriptionFilter", e)),
        }
    }
}
