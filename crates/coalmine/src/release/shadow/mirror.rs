//! The shadow function's use case: a batch of the stable's log lines (a subscription
//! filter's delivery) becomes requests to the candidate's version, and to the stable's
//! again for the noise floor, compared with the answer users got, counted as metrics.
//!
//! Nothing here can touch the stable's path: the lines were already served and logged.
//! Every failure is logged and counted, and the batch still succeeds: a retried delivery
//! would ask the models again and count twice.

use futures::stream::{self, StreamExt};
use serde_json::Value;
use tracing::{info, warn};

use crate::domain::shadow::{metric, pair_in, sampled, Feed, DISAGREEMENT_MESSAGE, NAMESPACE};
use crate::ports::{Answer, Datum, MetricSink, VersionInvoker};

/// One log event of the delivery.
#[derive(Clone, Debug)]
pub struct Line<'a> {
    pub id: &'a str,
    pub message: &'a str,
}

/// What one version did with the shadowed requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Side {
    pub shadowed: u64,
    pub errors: u64,
    pub compared: u64,
    pub disagreements: u64,
    pub latencies_ms: Vec<f64>,
}

/// What a batch came to, for the log and the tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub candidate: Side,
    /// The stable asked again; empty without the noise floor.
    pub stable: Side,
    pub skipped: u64,
    /// Lines not sampled, or not from the stable's version.
    pub ignored: u64,
}

/// A subscription filter's delivery, decoded (base64, gzip, JSON).
#[derive(Debug)]
pub struct Delivery {
    pub log_stream: String,
    pub filters: Vec<String>,
    pub events: Vec<aws_lambda_events::cloudwatch_logs::LogEntry>,
}

impl Delivery {
    /// The delivery in a Lambda event, or what is wrong with the event.
    pub fn parse(event: &Value) -> crate::domain::error::Result<Delivery> {
        // From text: the crate's decoder borrows the base64 string, which a `Value` cannot lend.
        let logs: aws_lambda_events::cloudwatch_logs::LogsEvent = serde_json::from_str(&event.to_string())
            .map_err(|e| crate::Error::BadEvent(format!("not a CloudWatch Logs subscription delivery: {e}")))?;
        let data = logs.aws_logs.data;
        Ok(Delivery { log_stream: data.log_stream, filters: data.subscription_filters, events: data.log_events })
    }

    pub fn lines(&self) -> Vec<Line<'_>> {
        self.events.iter().map(|e| Line { id: &e.id, message: &e.message }).collect()
    }

    /// The feeds its filters carry; a filter that is not coalmine's is passed over, one
    /// whose name does not decode is logged.
    pub fn feeds(&self) -> Vec<Feed> {
        self.filters
            .iter()
            .filter_map(|name| match Feed::from_filter_name(name)? {
                Ok(feed) => Some(feed),
                Err(why) => {
                    warn!(filter = %name, %why, "shadow: a filter named like coalmine's carries no feed");
                    None
                }
            })
            .collect()
    }
}

/// Disagreements logged as examples per batch, each output cut to [`EXAMPLE_CHARS`].
pub const EXAMPLES_PER_BATCH: usize = 3;
pub const EXAMPLE_CHARS: usize = 300;

/// Shadows the lines of one delivery from `log_stream` for `feed`, then publishes what it
/// saw. Returns the tally even when publishing failed (that is logged).
pub async fn shadow_batch<I: VersionInvoker, S: MetricSink>(
    feed: &Feed,
    log_stream: &str,
    lines: &[Line<'_>],
    invoker: &I,
    sink: &S,
) -> Tally {
    let mut tally = Tally::default();
    if !feed.from_stable(log_stream) {
        // The candidate's own streams, or an older version still draining: never shadowed.
        tally.ignored = lines.len() as u64;
        return tally;
    }
    let mut pairs = Vec::new();
    for line in lines {
        if !sampled(line.id, feed.sample) {
            tally.ignored += 1;
        } else if line.message.len() > feed.max_payload_bytes {
            warn!(release = %feed.release, line = line.id, bytes = line.message.len(), "shadow: line larger than max_payload_bytes, skipped");
            tally.skipped += 1;
        } else {
            match pair_in(line.message) {
                Ok(pair) => pairs.push((line.id, pair)),
                Err(why) => {
                    warn!(release = %feed.release, line = line.id, %why, "shadow: not a request/response pair, skipped");
                    tally.skipped += 1;
                }
            }
        }
    }
    let requests = pairs.into_iter().map(|(id, pair)| (id.to_owned(), pair.request, Some(pair.response))).collect();
    ask_and_count(feed, requests, invoker, sink, tally).await
}

/// Answers a replay's batch (decision 0023): each line's request asked of the candidate
/// and, for the noise floor, of the stable again; compared with the answer the line
/// carries, or with the stable's own, asked first, where it carries none (a golden set).
/// Counted and published as a shadow's batch is.
pub async fn replay_batch<I: VersionInvoker, S: MetricSink>(
    feed: &Feed,
    lines: Vec<crate::domain::replay::ReplayLine>,
    invoker: &I,
    sink: &S,
) -> Tally {
    let requests = lines.into_iter().enumerate().map(|(i, line)| (format!("replay-{i}"), line.request, line.response));
    ask_and_count(feed, requests.collect(), invoker, sink, Tally::default()).await
}

/// One request, asked: the reference it is compared with (`None`: the stable could not
/// give one), and each side's answer.
struct Asked {
    id: String,
    request: Value,
    reference: Option<Value>,
    candidate: Option<Answer>,
    stable: Option<Answer>,
}

async fn ask_and_count<I: VersionInvoker, S: MetricSink>(
    feed: &Feed,
    requests: Vec<(String, Value, Option<Value>)>,
    invoker: &I,
    sink: &S,
    mut tally: Tally,
) -> Tally {
    let asked: Vec<Asked> = stream::iter(requests)
        .map(|(id, request, reference)| async move {
            let envelope = feed.envelope(&request);
            let reference = match reference {
                Some(answer) => Some(answer),
                // A golden line: the stable's answer is the reference.
                None => match ask(invoker, feed, &feed.stable, &envelope).await {
                    Some(Answer { outcome: Ok(answer), .. }) => Some(answer),
                    _ => None,
                },
            };
            if reference.is_none() {
                return Asked { id, request, reference, candidate: None, stable: None };
            }
            let candidate = ask(invoker, feed, &feed.candidate, &envelope);
            let stable = async {
                if feed.noise_floor {
                    ask(invoker, feed, &feed.stable, &envelope).await
                } else {
                    None
                }
            };
            let (candidate, stable) = futures::join!(candidate, stable);
            Asked { id, request, reference, candidate, stable }
        })
        .buffer_unordered(feed.max_concurrency.max(1))
        .collect()
        .await;
    let mut examples = 0;
    for Asked { id, request, reference, candidate, stable } in &asked {
        let Some(reference) = reference else {
            warn!(release = %feed.release, request_id = id, "replay: the stable gave no reference answer, request skipped");
            tally.skipped += 1;
            continue;
        };
        match candidate {
            Some(answer) => {
                let agreed = count(&mut tally.candidate, feed, reference, answer);
                if agreed == Some(false) && examples < EXAMPLES_PER_BATCH {
                    examples += 1;
                    let answer = answer.outcome.as_ref().map(Value::to_string).unwrap_or_default();
                    info!(
                        release = %feed.release,
                        request_id = id,
                        request = %cut(&request.to_string()),
                        stable = %cut(&reference.to_string()),
                        candidate = %cut(&answer),
                        "{DISAGREEMENT_MESSAGE}"
                    );
                }
            }
            None => tally.skipped += 1,
        }
        if let Some(answer) = stable {
            count(&mut tally.stable, feed, reference, answer);
        }
    }
    if let Err(e) = sink.put(NAMESPACE, &data(feed, &tally)).await {
        warn!(release = %feed.release, error = %e, "shadow: metrics not published; this batch is not counted");
    }
    tally
}

async fn ask<I: VersionInvoker>(invoker: &I, feed: &Feed, version: &str, envelope: &Value) -> Option<Answer> {
    match invoker.invoke(&feed.function, version, envelope).await {
        Ok(answer) => Some(answer),
        Err(e) => {
            warn!(release = %feed.release, version, error = %e, "shadow: invoke failed, request skipped");
            None
        }
    }
}

/// Counts one answer; whether it agreed with the live one (`None`: it failed).
fn count(side: &mut Side, feed: &Feed, live: &Value, answer: &Answer) -> Option<bool> {
    side.shadowed += 1;
    match &answer.outcome {
        Ok(value) => {
            side.latencies_ms.push(answer.millis);
            side.compared += 1;
            let agrees = feed.compare.agrees(live, value);
            side.disagreements += u64::from(!agrees);
            Some(agrees)
        }
        Err(_) => {
            side.errors += 1;
            None
        }
    }
}

fn data(feed: &Feed, tally: &Tally) -> Vec<Datum> {
    let mut data = Vec::new();
    let mut sides = vec![(&feed.candidate, &tally.candidate)];
    if feed.noise_floor {
        sides.push((&feed.stable, &tally.stable));
    }
    for (version, side) in sides {
        let dims = || vec![("Release", feed.release.clone()), ("Version", version.clone())];
        let counted =
            |metric, n: u64| Datum { metric, dimensions: dims(), values: vec![n as f64], milliseconds: false };
        // Zeros too: a denominator the judge reads must exist even when nothing failed.
        data.push(counted(metric::SHADOWED, side.shadowed));
        data.push(counted(metric::ERRORS, side.errors));
        data.push(counted(metric::COMPARED, side.compared));
        data.push(counted(metric::DISAGREEMENTS, side.disagreements));
        if !side.latencies_ms.is_empty() {
            data.push(Datum {
                metric: metric::LATENCY,
                dimensions: dims(),
                values: side.latencies_ms.clone(),
                milliseconds: true,
            });
        }
    }
    if tally.skipped > 0 {
        data.push(Datum {
            metric: metric::SKIPPED,
            dimensions: vec![("Release", feed.release.clone())],
            values: vec![tally.skipped as f64],
            milliseconds: false,
        });
    }
    data
}

fn cut(text: &str) -> String {
    if text.chars().count() <= EXAMPLE_CHARS {
        return text.to_owned();
    }
    let kept: String = text.chars().take(EXAMPLE_CHARS).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::shadow::{Compare, ENVELOPE_KEY};
    use crate::memory::{Models, Sink};
    use serde_json::json;

    fn feed(noise_floor: bool) -> Feed {
        Feed {
            release: "ai-handler-43".into(),
            function: "ai-handler".into(),
            stable: "42".into(),
            candidate: "43".into(),
            sample: 1.0,
            max_payload_bytes: 1_000,
            max_concurrency: 4,
            compare: Compare::Label { pointer: "/label".into() },
            noise_floor,
        }
    }

    fn pair_line(q: u32, label: &str) -> String {
        json!({"coalmine:pair": {"request": {"q": q}, "response": {"label": label}}}).to_string()
    }

    const STABLE_STREAM: &str = "2026/12/03/[42]abc";

    #[tokio::test]
    async fn each_version_answers_the_same_request_in_an_envelope_and_disagreements_are_counted() {
        // The candidate calls odd questions "b"; the stable always "a".
        let models = Models::new(|version, request| {
            let q = request[ENVELOPE_KEY]["request"]["q"].as_u64().unwrap();
            let label = if version == "43" && q % 2 == 1 { "b" } else { "a" };
            Ok(json!({"label": label}))
        });
        let sink = Sink::default();
        let messages: Vec<String> = (0..6).map(|q| pair_line(q, "a")).collect();
        let lines: Vec<Line> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Line { id: ["0", "1", "2", "3", "4", "5"][i], message: m })
            .collect();

        let tally = shadow_batch(&feed(true), STABLE_STREAM, &lines, &models, &sink).await;

        assert_eq!((tally.candidate.shadowed, tally.candidate.compared, tally.candidate.disagreements), (6, 6, 3));
        assert_eq!((tally.stable.shadowed, tally.stable.disagreements), (6, 0));
        let asked = models.asked();
        assert_eq!(asked.len(), 12);
        assert!(asked.iter().all(|(_, payload)| payload[ENVELOPE_KEY]["release"] == "ai-handler-43"));
        let put = sink.data();
        let value = |metric: &str, version: &str| {
            put.iter()
                .find(|d| d.metric == metric && d.dimensions.contains(&("Version", version.to_owned())))
                .map(|d| d.values.clone())
        };
        assert_eq!(value(metric::DISAGREEMENTS, "43"), Some(vec![3.0]));
        assert_eq!(value(metric::DISAGREEMENTS, "42"), Some(vec![0.0]));
        assert_eq!(value(metric::LATENCY, "43").map(|v| v.len()), Some(6));
    }

    #[tokio::test]
    async fn candidate_errors_and_failed_invokes_are_told_apart_and_the_batch_still_succeeds() {
        let models =
            Models::new(
                |version, _| if version == "43" { Err("Unhandled: boom".into()) } else { Ok(json!({"label": "a"})) },
            );
        models.fail_invokes_of("42");
        let sink = Sink::default();
        let message = pair_line(1, "a");
        let lines = [Line { id: "1", message: &message }];

        let tally = shadow_batch(&feed(true), STABLE_STREAM, &lines, &models, &sink).await;

        assert_eq!((tally.candidate.shadowed, tally.candidate.errors, tally.candidate.compared), (1, 1, 0));
        assert_eq!(tally.stable.shadowed, 0, "a throttled invoke is not the stable's answer");
        assert!(sink.data().iter().any(|d| d.metric == metric::ERRORS && d.values == [1.0]));
    }

    #[tokio::test]
    async fn lines_that_are_not_the_stables_or_not_pairs_or_too_large_are_never_shadowed() {
        let models = Models::new(|_, _| Ok(json!({"label": "a"})));
        let sink = Sink::default();
        let good = pair_line(1, "a");
        let huge = pair_line(1, &"x".repeat(2_000));
        let lines = [
            Line { id: "1", message: &good },
            Line { id: "2", message: "START RequestId: 1 Version: 42" },
            Line { id: "3", message: &huge },
        ];

        let from_candidate = shadow_batch(&feed(false), "2026/12/03/[43]abc", &lines, &models, &sink).await;
        assert_eq!((from_candidate.ignored, models.asked().len()), (3, 0));

        let tally = shadow_batch(&feed(false), STABLE_STREAM, &lines, &models, &sink).await;
        assert_eq!((tally.candidate.shadowed, tally.skipped), (1, 2));
        assert_eq!(models.asked().len(), 1, "without the noise floor only the candidate is asked");
        assert!(sink.data().iter().any(|d| d.metric == metric::SKIPPED && d.values == [2.0]));
    }

    #[tokio::test]
    async fn a_sink_that_fails_loses_the_counts_not_the_batch() {
        let models = Models::new(|_, _| Ok(json!({"label": "a"})));
        let sink = Sink::default();
        sink.fail();
        let message = pair_line(1, "a");
        let tally =
            shadow_batch(&feed(true), STABLE_STREAM, &[Line { id: "1", message: &message }], &models, &sink).await;
        assert_eq!(tally.candidate.shadowed, 1);
        assert!(sink.data().is_empty());
    }

    #[test]
    fn a_real_shaped_delivery_decodes_to_its_lines_and_the_feed_its_filter_carries() {
        let raw = include_str!("../../../../../events/shadow/cloudwatch-logs-delivery.json");
        let delivery = Delivery::parse(&serde_json::from_str(raw).unwrap()).unwrap();
        assert_eq!(delivery.log_stream, "2026/12/03/[42]4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d");
        assert_eq!(delivery.lines().len(), 3);
        let [feed] = delivery.feeds().try_into().unwrap();
        assert_eq!((feed.release.as_str(), feed.candidate.as_str(), feed.sample), ("ai-handler-43", "43", 0.25));
        assert_eq!(feed.compare, Compare::Label { pointer: "/label".into() });
        assert!(pair_in(delivery.lines()[1].message).is_ok());

        let not_logs = Delivery::parse(&json!({"awslogs": {"data": "not base64"}})).unwrap_err();
        assert!(not_logs.to_string().contains("not a CloudWatch Logs subscription delivery"), "{not_logs}");
        assert!(Delivery::parse(&json!({"detail-type": "CloudWatch Alarm State Change"})).is_err());
    }

    #[test]
    fn examples_are_cut_to_a_readable_length() {
        assert_eq!(cut("short"), "short");
        let long = cut(&"é".repeat(EXAMPLE_CHARS + 10));
        assert_eq!(long.chars().count(), EXAMPLE_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
