//! A model handler's AI metrics, per Lambda version, the way coalmine's gates read them.
//!
//! coalmine compares the canary version with the stable one, so every metric a gate
//! reads must carry the version that produced it. Lambda's own metrics do; a handler's
//! own (tokens, response length, schema failures, feedback) only when it says so. This
//! prints one CloudWatch Embedded Metric Format line per request to stdout: Lambda sends
//! stdout to CloudWatch Logs, and CloudWatch turns the line into metrics with the
//! `FunctionName` and `Version` dimensions. No SDK call, no added latency, no
//! permission beyond the log group every function has.
//!
//! ```
//! use coalmine_emf::Metrics;
//! let line = Metrics::for_function("AIService", "ai-handler", "42")
//!     .output_tokens(512.0)
//!     .response_length(1830.0)
//!     .schema_failure(false)
//!     .line(1_800_000_000_000);
//! assert!(line.contains(r#""Version":"42""#));
//! ```
//!
//! In a handler, `Metrics::for_this_version("AIService")` reads the function's name and
//! version from the environment Lambda sets, and `.emit()` prints the line. The gates
//! that read these metrics are in `events/releases/lambda-ai-quality-43.json`.

use serde_json::{json, Map, Value};

/// The metric names the sample gates use; one place, so handler and gate agree.
pub mod names {
    /// Output tokens of one answer: a distribution (`"stat": "Average"` or `"p90"`).
    pub const OUTPUT_TOKENS: &str = "OutputTokens";
    /// Characters of one answer: a distribution, judged either way (shorter answers can
    /// be the regression).
    pub const RESPONSE_LENGTH: &str = "ResponseLength";
    /// 1 when an answer failed the output schema, else 0: its `Sum` per request is the
    /// failure rate.
    pub const SCHEMA_FAILURES: &str = "SchemaFailures";
    /// 1 when a guardrail blocked the answer, else 0.
    pub const GUARDRAIL_BLOCKS: &str = "GuardrailBlocks";
    /// 1 per piece of feedback received: the thumbs-down rate's denominator.
    pub const FEEDBACK: &str = "Feedback";
    /// 1 when that feedback was a thumbs-down, else 0.
    pub const THUMBS_DOWN: &str = "ThumbsDown";
}

/// The metrics of one request (or one piece of feedback), with the dimensions that say
/// which version produced them.
#[derive(Clone, Debug)]
pub struct Metrics {
    namespace: String,
    dimensions: Vec<(String, String)>,
    /// A cohort unit's `Assignment` and `Replicate`, published as a second dimension set.
    unit: Option<(String, String)>,
    values: Vec<(String, &'static str, f64)>,
}

impl Metrics {
    /// Metrics of `function`'s `version` in `namespace`.
    pub fn for_function(namespace: &str, function: &str, version: &str) -> Metrics {
        Metrics {
            namespace: namespace.to_owned(),
            dimensions: vec![("FunctionName".into(), function.into()), ("Version".into(), version.into())],
            unit: None,
            values: Vec::new(),
        }
    }

    /// Metrics of the running Lambda function's version (`AWS_LAMBDA_FUNCTION_NAME` and
    /// `AWS_LAMBDA_FUNCTION_VERSION`, which Lambda sets: the version, never the alias,
    /// so canary and stable are told apart).
    pub fn for_this_version(namespace: &str) -> Metrics {
        let env = |name: &str| std::env::var(name).unwrap_or_else(|_| "unknown".to_owned());
        Metrics::for_function(namespace, &env("AWS_LAMBDA_FUNCTION_NAME"), &env("AWS_LAMBDA_FUNCTION_VERSION"))
    }

    /// Also by the cohort unit these metrics are about (a user, a conversation): how the
    /// router assigned it (`drawn`, `pinned`, `stable`) and its replicate group, as the
    /// router's `Served` record or `Routed` says. A cohort release judges metrics published
    /// this way with users as the draw (decision 0021).
    ///
    /// A late signal (a thumbs-down minutes after the answer, from another function)
    /// names the version that *answered*: look it up in the router's served log at the
    /// time of the answer, then publish with it.
    ///
    /// ```
    /// use coalmine_emf::Metrics;
    /// // served = ServedLog::version_at("chat.live", "user-36", answered_at), in coalmine-router
    /// let (version, assignment, replicate) = ("2", "drawn", Some(7));
    /// let line = Metrics::for_function("AIService", "chat", version)
    ///     .by_unit(assignment, replicate)
    ///     .feedback(true)
    ///     .line(1_800_000_000_000);
    /// assert!(line.contains(r#""Replicate":"7""#));
    /// ```
    pub fn by_unit(self, assignment: &str, replicate: Option<u32>) -> Metrics {
        let replicate = replicate.map_or("-".to_owned(), |r| r.to_string());
        Metrics { unit: Some((assignment.to_owned(), replicate)), ..self }
    }

    /// Any other value, under `name` with a CloudWatch `unit` ("Count", "Milliseconds"...).
    pub fn put(mut self, name: &str, value: f64, unit: &'static str) -> Metrics {
        self.values.retain(|(n, _, _)| n != name);
        self.values.push((name.to_owned(), unit, value));
        self
    }

    pub fn output_tokens(self, tokens: f64) -> Metrics {
        self.put(names::OUTPUT_TOKENS, tokens, "Count")
    }

    pub fn response_length(self, characters: f64) -> Metrics {
        self.put(names::RESPONSE_LENGTH, characters, "Count")
    }

    /// Published on every request, 0 or 1: a rate needs the zeros too.
    pub fn schema_failure(self, failed: bool) -> Metrics {
        self.put(names::SCHEMA_FAILURES, f64::from(u8::from(failed)), "Count")
    }

    pub fn guardrail_block(self, blocked: bool) -> Metrics {
        self.put(names::GUARDRAIL_BLOCKS, f64::from(u8::from(blocked)), "Count")
    }

    /// One piece of feedback on an answer of this version: counted, and whether it was a
    /// thumbs-down. Publish it with the version that *answered*, not the one running now.
    pub fn feedback(self, thumbs_down: bool) -> Metrics {
        self.put(names::FEEDBACK, 1.0, "Count").put(names::THUMBS_DOWN, f64::from(u8::from(thumbs_down)), "Count")
    }

    /// The EMF line at `timestamp_ms` (milliseconds since the epoch).
    pub fn line(&self, timestamp_ms: u64) -> String {
        let dimension_names: Vec<&str> = self.dimensions.iter().map(|(n, _)| n.as_str()).collect();
        let mut sets = vec![dimension_names.clone()];
        if self.unit.is_some() {
            sets.push(dimension_names.iter().copied().chain(["Assignment"]).collect());
            sets.push(dimension_names.into_iter().chain(["Assignment", "Replicate"]).collect());
        }
        let metrics: Vec<Value> =
            self.values.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{"Namespace": self.namespace, "Dimensions": sets, "Metrics": metrics}]
            }),
        );
        for (name, value) in &self.dimensions {
            root.insert(name.clone(), json!(value));
        }
        if let Some((assignment, replicate)) = &self.unit {
            root.insert("Assignment".into(), json!(assignment));
            root.insert("Replicate".into(), json!(replicate));
        }
        for (name, _, value) in &self.values {
            root.insert(name.clone(), json!(value));
        }
        Value::Object(root).to_string()
    }

    /// Prints the line now, for CloudWatch Logs to turn into metrics.
    pub fn emit(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        println!("{}", self.line(now as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_the_embedded_metric_format_with_the_version_dimension() {
        let line = Metrics::for_function("AIService", "ai-handler", "42")
            .output_tokens(512.0)
            .schema_failure(true)
            .line(1_800_000_000_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["_aws"],
            json!({"Timestamp": 1_800_000_000_000u64, "CloudWatchMetrics": [{
                "Namespace": "AIService", "Dimensions": [["FunctionName", "Version"]],
                "Metrics": [{"Name": "OutputTokens", "Unit": "Count"}, {"Name": "SchemaFailures", "Unit": "Count"}]
            }]})
        );
        assert_eq!((v["FunctionName"].as_str(), v["Version"].as_str()), (Some("ai-handler"), Some("42")));
        assert_eq!((v["OutputTokens"].as_f64(), v["SchemaFailures"].as_f64()), (Some(512.0), Some(1.0)));
    }

    #[test]
    fn metrics_by_unit_are_also_published_by_assignment_and_replicate() {
        let line = Metrics::for_function("AIService", "chat", "2").by_unit("drawn", Some(7)).feedback(true).line(0);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([
                ["FunctionName", "Version"],
                ["FunctionName", "Version", "Assignment"],
                ["FunctionName", "Version", "Assignment", "Replicate"]
            ])
        );
        assert_eq!(
            (v["Version"].as_str(), v["Assignment"].as_str(), v["Replicate"].as_str()),
            (Some("2"), Some("drawn"), Some("7"))
        );
        let plain = Metrics::for_function("AIService", "chat", "2").feedback(true).line(0);
        assert!(!plain.contains("Replicate"), "{plain}");
    }

    #[test]
    fn feedback_counts_itself_and_a_value_put_twice_is_kept_once() {
        let line = Metrics::for_function("AIService", "f", "7").feedback(false).feedback(true).line(0);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!((v["Feedback"].as_f64(), v["ThumbsDown"].as_f64()), (Some(1.0), Some(1.0)));
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().len(), 2);
    }
}

/// Shadow mode: a handler's side of coalmine's shadow phase.
///
/// While a release shadows, coalmine asks the candidate version (and the stable, again)
/// the requests users sent, and compares the answers. Two things need the handler:
/// - it prints one line per live request with the request and its answer
///   ([`Request::record`]): that line, read from the log group, is what is shadowed;
/// - a shadowed request arrives in an envelope, so the handler knows nobody will see the
///   answer: it must not write anywhere (no database, no queue, no email), and prints
///   no line ([`Request::is_shadowed`]).
///
/// ```
/// use coalmine_emf::shadow::Request;
/// use serde_json::json;
/// let live = Request::from_event(json!({"prompt": "hi"}));
/// assert!(!live.is_shadowed());
/// assert!(live.pair_line(&json!({"label": "greeting"})).unwrap().contains("coalmine:pair"));
///
/// let shadowed = Request::from_event(json!({"coalmine:shadowed": {"release": "r", "request": {"prompt": "hi"}}}));
/// assert!(shadowed.is_shadowed());
/// assert_eq!(shadowed.body, json!({"prompt": "hi"}));
/// assert_eq!(shadowed.pair_line(&json!({})), None);
/// ```
pub mod shadow {
    use serde_json::{json, Value};

    /// The key of the line printed for each live request.
    pub const PAIR_KEY: &str = "coalmine:pair";
    /// The key of the envelope a shadowed request arrives in.
    pub const ENVELOPE_KEY: &str = "coalmine:shadowed";

    /// A request as the handler received it.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Request {
        /// What the model answers: the event, or the request inside the envelope.
        pub body: Value,
        /// The release shadowing it, if any.
        pub shadowed_by: Option<String>,
    }

    impl Request {
        pub fn from_event(event: Value) -> Request {
            match event {
                Value::Object(mut map) if map.contains_key(ENVELOPE_KEY) && map.len() == 1 => {
                    let mut envelope = map.remove(ENVELOPE_KEY).unwrap_or_default();
                    let release = envelope.get("release").and_then(Value::as_str).unwrap_or("unknown").to_owned();
                    let body = envelope.get_mut("request").map(Value::take).unwrap_or_default();
                    Request { body, shadowed_by: Some(release) }
                }
                body => Request { body, shadowed_by: None },
            }
        }

        /// Shadowed: nobody sees the answer, so nothing may be written anywhere.
        pub fn is_shadowed(&self) -> bool {
            self.shadowed_by.is_some()
        }

        /// The line to print after answering a live request; `None` when shadowed.
        pub fn pair_line(&self, response: &Value) -> Option<String> {
            (!self.is_shadowed())
                .then(|| json!({ PAIR_KEY: { "request": self.body, "response": response } }).to_string())
        }

        /// Prints [`Request::pair_line`] to stdout (one line: Lambda sends it to the log group).
        pub fn record(&self, response: &Value) {
            if let Some(line) = self.pair_line(response) {
                println!("{line}");
            }
        }
    }
}
