//! An Azure ML endpoint's health per deployment, from Azure Monitor's metrics REST API
//! (served by Resource Manager), into the same [`MetricSnapshot`] the judge reads for
//! Lambda and SageMaker.
//!
//! - Requests and errors: the endpoint's `RequestsPerMinute`, split by `deployment` and
//!   `statusCodeClass`, one value a minute (its `Average` over the minute is that
//!   minute's count, the aggregation Azure documents for it); errors are the `5xx`
//!   class, as SageMaker's are its 5XX invocations (a 429 is Azure throttling the
//!   caller, not the model failing).
//! - Latency: `RequestLatency_P50`, `_P90`, `_P95` and `_P99` by `deployment`. Each is a
//!   per-minute percentile, not a percentile over the window: the window's value is the
//!   minutes' values weighted by their requests, an estimate that is exact only when
//!   every minute looks alike. The judge reads the share of slow requests off these four
//!   levels (CloudWatch gives it nine), so its latency test is coarser here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::time::{to_rfc3339, OffsetDateTime};
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::arm::{failure, Arm};
use crate::domain::error::{Error, Result};
use crate::domain::metrics::{MetricSnapshot, SideMetrics, PERCENTILE_LEVELS};
use crate::domain::target::{AzureMlDeployments, Target};
use crate::ports::MetricQuery;

/// The Azure Monitor metrics API version these calls are written against.
pub const API_VERSION: &str = "2023-10-01";
const NAMESPACE: &str = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints";
const REQUESTS: &str = "RequestsPerMinute";
const ERROR_CLASS: &str = "5xx";
const OPERATION: &str = "azure:GET metrics";
/// The latency percentiles Azure publishes per deployment, by the level they stand for.
const LATENCY: [(f64, &str); 4] = [
    (50.0, "RequestLatency_P50"),
    (90.0, "RequestLatency_P90"),
    (95.0, "RequestLatency_P95"),
    (99.0, "RequestLatency_P99"),
];

pub struct AzureMonitor {
    arm: Arc<Arm>,
    wait: Duration,
}

/// One series' values by minute (epoch seconds), and the series' dimensions.
#[derive(Debug, Default)]
struct Series {
    metric: String,
    dimensions: BTreeMap<String, String>,
    minutes: BTreeMap<u64, f64>,
}

impl AzureMonitor {
    pub fn new(arm: Arc<Arm>, wait: Duration) -> Self {
        AzureMonitor { arm, wait }
    }

    pub async fn fetch(&self, q: &MetricQuery<'_>, d: &AzureMlDeployments) -> Result<MetricSnapshot> {
        if !q.custom.is_empty() {
            return Err(Error::Unsupported {
                target: q.target.clone(),
                detail: "custom gates read CloudWatch; an Azure ML release is judged on Azure Monitor's errors and \
                         latency only"
                    .into(),
            });
        }
        let sides = format!("(deployment eq '{}' or deployment eq '{}')", q.canary, q.stable);
        let latency_metrics = LATENCY.iter().map(|(_, m)| *m).collect::<Vec<_>>().join(",");
        let by_class = format!("{sides} and statusCodeClass eq '*'");
        let (requests, latency) = tokio::try_join!(
            self.series(q.target, d, REQUESTS, &by_class, q.start_epoch, q.end_epoch),
            self.series(q.target, d, &latency_metrics, &sides, q.start_epoch, q.end_epoch),
        )?;
        Ok(MetricSnapshot {
            canary: side(q.canary, &requests, &latency),
            stable: side(q.stable, &requests, &latency),
            pinned: None,
        })
    }

    /// The requests `deployment` served each minute of `[start, end)`, oldest first.
    pub async fn requests_per_minute(
        &self,
        target: &Target,
        d: &AzureMlDeployments,
        deployment: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, f64)>> {
        let filter = format!("deployment eq '{deployment}' and statusCodeClass eq '*'");
        let series = self.series(target, d, REQUESTS, &filter, start, end).await?;
        Ok(requests_by_minute(&series, deployment).into_iter().collect())
    }

    async fn series(
        &self,
        target: &Target,
        d: &AzureMlDeployments,
        metrics: &str,
        filter: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<Series>> {
        // Whole minutes: a minute's value is only there once the minute is.
        let from = start / 60 * 60;
        let to = end.max(start + 1).div_ceil(60) * 60;
        let timespan = format!("{}/{}", rfc3339(from)?, rfc3339(to)?);
        let url = format!(
            "{}{}/providers/Microsoft.Insights/metrics?api-version={API_VERSION}&metricnamespace={}&metricnames={}\
             &timespan={}&interval=PT1M&aggregation=average&$filter={}",
            self.arm.resource_manager().await?,
            d.endpoint_id(),
            encode(NAMESPACE),
            encode(metrics),
            encode(&timespan),
            encode(filter),
        );
        let reply = self.arm.send(Method::GET, &url, None, None, OPERATION, Instant::now() + self.wait).await?;
        if !reply.status.is_success() {
            return Err(failure(&reply, OPERATION, target));
        }
        parse(&reply.json())
    }
}

/// Azure Monitor's answer: every series of every metric, its values a minute. A metric
/// that failed inside the 200 (its own `errorCode`) is an error, not a zero.
fn parse(body: &Value) -> Result<Vec<Series>> {
    let Some(metrics) = body.get("value").and_then(Value::as_array) else {
        return Err(Error::Service {
            operation: OPERATION,
            detail: "the answer has no \"value\" list of metrics".into(),
            retryable: true,
        });
    };
    let mut found = Vec::new();
    for metric in metrics {
        let name = metric.pointer("/name/value").and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(code) = metric.get("errorCode").and_then(Value::as_str).filter(|c| *c != "Success") {
            let message = metric.get("errorMessage").and_then(Value::as_str).unwrap_or("no message");
            return Err(Error::Service {
                operation: OPERATION,
                detail: format!("metric {name}: {code}: {message}"),
                retryable: true,
            });
        }
        for series in metric.get("timeseries").and_then(Value::as_array).into_iter().flatten() {
            let dimensions = series
                .get("metadatavalues")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let key = m.pointer("/name/value")?.as_str()?.to_ascii_lowercase();
                    Some((key, m.get("value")?.as_str()?.to_owned()))
                })
                .collect();
            let minutes = series
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|point| {
                    let at = point.get("timeStamp")?.as_str()?;
                    let at = azure_core::time::parse_rfc3339(at).ok()?.unix_timestamp();
                    Some((u64::try_from(at).ok()?, point.get("average")?.as_f64()?))
                })
                .collect();
            found.push(Series { metric: name.clone(), dimensions, minutes });
        }
    }
    Ok(found)
}

fn of<'a>(series: &'a [Series], metric: &'a str, deployment: &'a str) -> impl Iterator<Item = &'a Series> {
    series.iter().filter(move |s| {
        s.metric.eq_ignore_ascii_case(metric) && s.dimensions.get("deployment").is_some_and(|d| d == deployment)
    })
}

/// A deployment's requests a minute, every status class together.
fn requests_by_minute(series: &[Series], deployment: &str) -> BTreeMap<u64, f64> {
    let mut minutes = BTreeMap::new();
    for s in of(series, REQUESTS, deployment) {
        for (at, count) in &s.minutes {
            *minutes.entry(*at).or_insert(0.0) += count;
        }
    }
    minutes
}

fn side(deployment: &str, requests: &[Series], latency: &[Series]) -> SideMetrics {
    let per_minute = requests_by_minute(requests, deployment);
    let errors: f64 = of(requests, REQUESTS, deployment)
        .filter(|s| s.dimensions.get("statuscodeclass").is_some_and(|c| c.eq_ignore_ascii_case(ERROR_CLASS)))
        .flat_map(|s| s.minutes.values())
        .sum();
    // Each minute's percentile, weighted by that minute's requests (a minute with none
    // counts once, so a window of only such minutes still has a value).
    let level = |metric: &str| {
        let (mut sum, mut weights) = (0.0, 0.0);
        for s in of(latency, metric, deployment) {
            for (at, value) in &s.minutes {
                let weight = per_minute.get(at).copied().filter(|n| *n > 0.0).unwrap_or(1.0);
                sum += value * weight;
                weights += weight;
            }
        }
        (weights > 0.0).then(|| sum / weights)
    };
    let percentiles: Vec<Option<f64>> = PERCENTILE_LEVELS
        .iter()
        .map(|wanted| LATENCY.iter().find(|(l, _)| l == wanted).and_then(|(_, metric)| level(metric)))
        .collect();
    SideMetrics {
        requests: per_minute.values().sum(),
        errors,
        p95_ms: level("RequestLatency_P95"),
        percentiles,
        ..SideMetrics::default()
    }
}

fn rfc3339(epoch: u64) -> Result<String> {
    let at = OffsetDateTime::from_unix_timestamp(i64::try_from(epoch).unwrap_or(i64::MAX))
        .map_err(|e| Error::Config(format!("time {epoch} is out of range: {e}")))?;
    Ok(to_rfc3339(&at))
}

/// Query-string encoding: everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(series: Value) -> Value {
        serde_json::json!({"cost": 0, "interval": "PT1M", "value": series, "namespace": NAMESPACE, "resourceregion": "westus2"})
    }

    fn metric(name: &str, timeseries: Value) -> Value {
        serde_json::json!({"name": {"value": name, "localizedValue": name}, "unit": "Count", "timeseries": timeseries, "errorCode": "Success"})
    }

    fn series(dims: &[(&str, &str)], points: &[(&str, f64)]) -> Value {
        let metadata: Vec<Value> = dims
            .iter()
            .map(|(k, v)| serde_json::json!({"name": {"value": k, "localizedValue": k}, "value": v}))
            .collect();
        let data: Vec<Value> = points.iter().map(|(t, v)| serde_json::json!({"timeStamp": t, "average": v})).collect();
        serde_json::json!({"metadatavalues": metadata, "data": data})
    }

    #[test]
    fn requests_sum_every_class_and_errors_are_the_5xx_class() {
        let body = answer(serde_json::json!([metric(
            REQUESTS,
            serde_json::json!([
                series(
                    &[("deployment", "green"), ("statusCodeClass", "2xx")],
                    &[("2026-12-03T10:00:00Z", 90.0), ("2026-12-03T10:01:00Z", 100.0)]
                ),
                series(&[("deployment", "green"), ("statusCodeClass", "5xx")], &[("2026-12-03T10:00:00Z", 10.0)]),
                series(&[("deployment", "green"), ("statusCodeClass", "4xx")], &[("2026-12-03T10:01:00Z", 3.0)]),
                series(&[("deployment", "blue"), ("statusCodeClass", "2xx")], &[("2026-12-03T10:00:00Z", 900.0)]),
            ])
        )]));
        let requests = parse(&body).unwrap();
        let green = side("green", &requests, &[]);
        assert_eq!((green.requests, green.errors), (203.0, 10.0));
        let blue = side("blue", &requests, &[]);
        assert_eq!((blue.requests, blue.errors, blue.p95_ms), (900.0, 0.0, None));
        let minutes = requests_by_minute(&requests, "green");
        assert_eq!(minutes.values().copied().collect::<Vec<_>>(), vec![100.0, 103.0]);
    }

    #[test]
    fn a_windows_percentile_is_its_minutes_weighted_by_their_requests() {
        let requests = parse(&answer(serde_json::json!([metric(
            REQUESTS,
            serde_json::json!([series(
                &[("deployment", "green"), ("statusCodeClass", "2xx")],
                &[("2026-12-03T10:00:00Z", 300.0), ("2026-12-03T10:01:00Z", 100.0)]
            )])
        )])))
        .unwrap();
        let latency = parse(&answer(serde_json::json!([
            metric(
                "RequestLatency_P95",
                serde_json::json!([series(
                    &[("deployment", "green")],
                    &[("2026-12-03T10:00:00Z", 100.0), ("2026-12-03T10:01:00Z", 500.0)]
                )])
            ),
            metric(
                "RequestLatency_P50",
                serde_json::json!([series(&[("deployment", "green")], &[("2026-12-03T10:00:00Z", 40.0)])])
            ),
        ])))
        .unwrap();
        let green = side("green", &requests, &latency);
        assert_eq!(green.p95_ms, Some(200.0), "(100 x 300 + 500 x 100) / 400");
        assert_eq!(green.percentiles.len(), PERCENTILE_LEVELS.len());
        assert_eq!(green.percentiles[0], Some(40.0), "p50");
        assert_eq!(green.percentiles[1], None, "Azure publishes no p75");
        assert_eq!(green.percentiles[3], Some(200.0), "p95");
    }

    #[test]
    fn a_metric_that_failed_inside_the_answer_is_an_error_not_a_zero() {
        // Shaped as Azure's published example GetMetricError.json.
        let body = answer(serde_json::json!([{
            "name": {"value": "RequestsPerMinute", "localizedValue": "Requests Per Minute"},
            "unit": "Count", "timeseries": [],
            "errorMessage": "Sampling type is not found.", "errorCode": "InvalidSamplingType"
        }]));
        let err = parse(&body).unwrap_err().to_string();
        assert!(err.contains("metric RequestsPerMinute: InvalidSamplingType: Sampling type is not found."), "{err}");
    }

    fn published(name: &str) -> Value {
        let path = crate::workspace_file("tests/fixtures/azure").join(name);
        let example: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        example["responses"]["200"]["body"].clone()
    }

    #[test]
    fn azures_published_metrics_answers_read_as_published() {
        let series = parse(&published("GetMetric.json")).unwrap();
        assert_eq!(series.len(), 10, "two metrics, five tiers each");
        let hot = series.iter().find(|s| s.metric == "BlobCount" && s.dimensions["tier"] == "Hot").unwrap();
        assert_eq!(hot.minutes.values().copied().collect::<Vec<_>>(), [7.0; 5]);
        assert_eq!(hot.minutes.keys().next(), Some(&1_618_909_200), "2021-04-20T09:00:00Z");
        let err = parse(&published("GetMetricError.json")).unwrap_err().to_string();
        assert!(err.contains("metric MongoRequestsCount: InvalidSamplingType: Sampling type is not found."), "{err}");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("deployment eq 'a' and x eq '*'"), "deployment%20eq%20%27a%27%20and%20x%20eq%20%27%2A%27");
        assert_eq!(
            encode("2026-12-03T10:00:00Z/2026-12-03T11:00:00Z"),
            "2026-12-03T10%3A00%3A00Z%2F2026-12-03T11%3A00%3A00Z"
        );
        assert_eq!(rfc3339(1_796_292_000).unwrap(), "2026-12-03T10:00:00Z");
    }
}
