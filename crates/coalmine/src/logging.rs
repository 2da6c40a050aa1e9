//! Logs as CloudWatch Logs Insights reads them best: one flat JSON object per line,
//! the event's fields at the top level beside `level` and `message` (no `fields`
//! nesting), numbers as numbers, and the judge's evidence as a JSON object.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields that carry JSON text (`serde_json::to_string` of a value) and are logged as
/// the value itself, so a query can reach `evidence.metrics.canary.errors`.
const JSON_FIELDS: &[&str] = &["evidence"];

/// Installs the subscriber. `RUST_LOG` filters (default `info`); Lambda's own
/// `AWS_LAMBDA_LOG_LEVEL` is honoured when set by the function's logging config.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().map(|l| l.to_ascii_lowercase());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).event_format(JsonLine).init();
}

/// The line format: `{"level":"INFO","message":"...","release":"...","decision":"...",...}`.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        writeln!(writer, "{}", line(event))
    }
}

/// The event as one JSON object.
pub fn line(event: &Event<'_>) -> Value {
    let mut object = Map::new();
    object.insert("level".into(), Value::String(event.metadata().level().to_string()));
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    if let Some(message) = fields.0.remove("message") {
        object.insert("message".into(), message);
    }
    object.extend(fields.0);
    Value::Object(object)
}

struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let parsed = JSON_FIELDS.contains(&field.name()).then(|| serde_json::from_str(value).ok()).flatten();
        self.put(field, parsed.unwrap_or_else(|| Value::String(value.to_owned())));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` arrives here too, as Display wrapped in Debug.
        self.record_str(field, &format!("{value:?}"));
    }
}

/// The lines logged on this thread while a [`Capture`] lives, for tests.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) struct Capture {
    captured: Captured,
    _guard: tracing::subscriber::DefaultGuard,
}

#[cfg(test)]
impl Capture {
    /// Logs of this thread (a `#[tokio::test]` runs on one) go here until dropped.
    pub(crate) fn start() -> Self {
        use tracing_subscriber::layer::SubscriberExt;
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().event_format(JsonLine).with_writer(move || writer.clone()));
        Capture { captured, _guard: tracing::subscriber::set_default(subscriber) }
    }

    pub(crate) fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(emit: impl FnOnce()) -> Vec<Value> {
        let capture = Capture::start();
        emit();
        capture.lines()
    }

    #[test]
    fn a_decision_is_one_flat_json_object_with_its_evidence_as_an_object() {
        let evidence = r#"{"verdict":"unhealthy","metrics":{"canary":{"requests":1000.0,"errors":80.0}}}"#;
        let lines = logged(|| {
            tracing::warn!(
                release = "ai-handler-42", target = %"lambda:ai-handler:live", decision = "rolled_back", stage = 1_u64,
                weight = 0.25, retryable = false, evidence, "Rolled back by its health check"
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "Rolled back by its health check");
        assert_eq!((line["release"].as_str(), line["decision"].as_str()), (Some("ai-handler-42"), Some("rolled_back")));
        assert_eq!(
            (line["stage"].as_u64(), line["weight"].as_f64(), line["retryable"].as_bool()),
            (Some(1), Some(0.25), Some(false))
        );
        assert_eq!(line["target"], "lambda:ai-handler:live");
        assert_eq!(line["evidence"]["metrics"]["canary"]["errors"], 80.0, "an object, not a string in a string");
        assert!(line.get("fields").is_none() && line.get("span").is_none());
    }

    #[test]
    fn text_that_is_not_json_stays_text_and_absent_options_are_left_out() {
        let lines = logged(|| {
            let release: Option<&str> = None;
            tracing::info!(evidence = "not json", release, "x");
        });
        assert_eq!(lines[0]["evidence"], "not json");
        assert!(lines[0].get("release").is_none());
    }
}
