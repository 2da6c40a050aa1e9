//! A Lambda shadow: what the candidate is asked, how its answers are compared, and the
//! formats that carry both. No I/O.
//!
//! The stable's handler prints one [`PAIR_KEY`] line per request it served (the request
//! and its answer; `coalmine-emf`'s `shadow` module does it). While a release shadows, a
//! CloudWatch Logs subscription filter on the stable's log group hands those lines to
//! coalmine's shadow function, which asks the candidate's version (and, for the noise
//! floor, the stable's again) the same request inside an [`ENVELOPE_KEY`] envelope, so the
//! handler knows it is shadowed: it must not write anywhere, and prints no pair line (the
//! shadow's own invocations never feed the shadow).
//!
//! The filter's name carries the [`Feed`] (base64url JSON): the feed and its instructions
//! are created and removed together, and nothing else has to be kept in step.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key of the line a handler prints for each live request: `{"coalmine:pair":
/// {"request": …, "response": …}}`.
pub const PAIR_KEY: &str = "coalmine:pair";
/// The key of the envelope a shadowed request arrives in: `{"coalmine:shadowed":
/// {"release": …, "request": …}}`.
pub const ENVELOPE_KEY: &str = "coalmine:shadowed";
/// The subscription filter's pattern: a quoted term, since the key has a colon.
pub const FILTER_PATTERN: &str = "\"coalmine:pair\"";
/// Every coalmine shadow filter's name starts with this; the rest is the feed.
pub const FILTER_PREFIX: &str = "coalmine-shadow.";
/// CloudWatch Logs' longest filter name.
pub const MAX_FILTER_NAME: usize = 512;
/// The shadow function's metrics, by `Release` and `Version`.
pub const NAMESPACE: &str = "Coalmine/Shadow";

/// Metric names the shadow function publishes for each version it asked: the
/// candidate's, and the stable's asked again (the noise floor).
pub mod metric {
    /// Requests sent to the version.
    pub const SHADOWED: &str = "Shadowed";
    /// Of those, answered with a function error (or an unreadable answer).
    pub const ERRORS: &str = "Errors";
    /// Milliseconds to answer, for the answers that came.
    pub const LATENCY: &str = "Latency";
    /// Answers compared with the live one.
    pub const COMPARED: &str = "Compared";
    /// Of those, answers that disagree with the live one.
    pub const DISAGREEMENTS: &str = "Disagreements";
    /// Requests not shadowed: too large, malformed, or the invoke itself failed
    /// (throttled, denied); by `Release` only.
    pub const SKIPPED: &str = "Skipped";
}

/// What the shadow function needs to shadow one release, carried in the filter's name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// The release's name: the `Release` dimension of every metric.
    #[serde(rename = "r")]
    pub release: String,
    #[serde(rename = "f")]
    pub function: String,
    /// The version whose live lines are shadowed; lines from other versions are not.
    #[serde(rename = "s")]
    pub stable: String,
    #[serde(rename = "c")]
    pub candidate: String,
    /// The share of live lines shadowed, in (0, 1].
    #[serde(rename = "p")]
    pub sample: f64,
    /// Lines larger than this are skipped (and counted).
    #[serde(rename = "b")]
    pub max_payload_bytes: usize,
    /// At most this many invocations in flight per delivery.
    #[serde(rename = "n")]
    pub max_concurrency: usize,
    #[serde(rename = "m")]
    pub compare: Compare,
    /// Ask the stable again too, to learn how much it disagrees with itself.
    #[serde(rename = "z")]
    pub noise_floor: bool,
}

/// How two answers are compared: model outputs are rarely byte-identical.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Compare {
    /// The same JSON value (key order aside).
    Exact,
    /// The same value at each JSON pointer; numbers within `tolerance` of each other.
    Fields {
        pointers: Vec<String>,
        #[serde(default)]
        tolerance: f64,
    },
    /// The same label (class, decision) at one JSON pointer.
    Label { pointer: String },
    /// Answers of comparable length: the longer at most `max_ratio` times the shorter.
    /// The text at `pointer`, or the whole answer as JSON.
    Length {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pointer: Option<String>,
        max_ratio: f64,
    },
}

impl Compare {
    /// Why the comparison cannot work, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let bad_pointer = |p: &str| !(p.is_empty() || p.starts_with('/'));
        match self {
            Compare::Exact => None,
            Compare::Fields { pointers, tolerance } => {
                if pointers.is_empty() {
                    Some("fields needs at least one JSON pointer, like \"/label\"".into())
                } else if let Some(p) = pointers.iter().find(|p| bad_pointer(p)) {
                    Some(format!("{p:?} is not a JSON pointer: it starts with '/', like \"/label\""))
                } else if !(tolerance.is_finite() && *tolerance >= 0.0) {
                    Some(format!("tolerance {tolerance} must be a number >= 0"))
                } else {
                    None
                }
            }
            Compare::Label { pointer } => bad_pointer(pointer)
                .then(|| format!("{pointer:?} is not a JSON pointer: it starts with '/', like \"/label\"")),
            Compare::Length { pointer, max_ratio } => {
                if let Some(p) = pointer.as_deref().filter(|p| bad_pointer(p)) {
                    Some(format!("{p:?} is not a JSON pointer: it starts with '/', like \"/text\""))
                } else if !(max_ratio.is_finite() && *max_ratio >= 1.0) {
                    Some(format!("max_ratio {max_ratio} must be a number >= 1 (1.5: half as long again)"))
                } else {
                    None
                }
            }
        }
    }

    /// Whether `answer` agrees with the `live` one. A field missing from both agrees; from
    /// one only, disagrees.
    pub fn agrees(&self, live: &Value, answer: &Value) -> bool {
        match self {
            Compare::Exact => live == answer,
            Compare::Fields { pointers, tolerance } => {
                pointers.iter().all(|p| same(live.pointer(p), answer.pointer(p), *tolerance))
            }
            Compare::Label { pointer } => same(live.pointer(pointer), answer.pointer(pointer), 0.0),
            Compare::Length { pointer, max_ratio } => {
                let length = |v: &Value| -> Option<f64> {
                    let at = match pointer {
                        Some(p) => v.pointer(p)?,
                        None => v,
                    };
                    Some(match at {
                        Value::String(s) => s.chars().count() as f64,
                        other => other.to_string().chars().count() as f64,
                    })
                };
                match (length(live), length(answer)) {
                    (Some(a), Some(b)) => {
                        let (short, long) = if a <= b { (a, b) } else { (b, a) };
                        long <= short.max(1.0) * max_ratio
                    }
                    (None, None) => true,
                    _ => false,
                }
            }
        }
    }
}

fn same(a: Option<&Value>, b: Option<&Value>, tolerance: f64) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= tolerance,
            _ => x == y,
        },
        (a, b) => a == b,
    }
}

impl Feed {
    /// The subscription filter's name: the prefix and the feed as base64url JSON.
    pub fn filter_name(&self) -> String {
        let json = serde_json::to_vec(self).expect("a feed serialises");
        format!("{FILTER_PREFIX}{}", base64url(&json))
    }

    /// The feed a filter's name carries; `None` for a filter that is not coalmine's.
    pub fn from_filter_name(name: &str) -> Option<Result<Feed, String>> {
        let encoded = name.strip_prefix(FILTER_PREFIX)?;
        Some(unbase64url(encoded).ok_or_else(|| format!("filter {name:?}: not base64url")).and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| format!("filter {name:?}: not a shadow feed: {e}"))
        }))
    }

    /// The envelope the candidate (and the stable, asked again) receives `request` in.
    pub fn envelope(&self, request: &Value) -> Value {
        serde_json::json!({ ENVELOPE_KEY: { "release": self.release, "request": request } })
    }

    /// Whether a line from `log_stream` is the stable's: Lambda names a version's
    /// streams `YYYY/MM/DD/[VERSION]…`.
    pub fn from_stable(&self, log_stream: &str) -> bool {
        stream_version(log_stream) == Some(self.stable.as_str())
    }
}

/// The version a Lambda log stream belongs to.
pub fn stream_version(log_stream: &str) -> Option<&str> {
    let open = log_stream.find('[')?;
    let close = log_stream[open..].find(']')? + open;
    Some(&log_stream[open + 1..close])
}

/// The shadow function's log message for a disagreement it shows as an example.
pub const DISAGREEMENT_MESSAGE: &str = "shadow: disagreement";

/// A disagreement, as the shadow function logged it (each output cut to a few hundred
/// characters): what a person looks at first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub request_id: String,
    pub request: String,
    pub stable: String,
    pub candidate: String,
}

impl Example {
    /// The example in one of the shadow function's JSON log lines, if it is one of
    /// `release`'s.
    pub fn from_log_line(line: &str, release: &str) -> Option<Example> {
        let value: Value = serde_json::from_str(line.trim()).ok()?;
        let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        if field("message")? != DISAGREEMENT_MESSAGE || field("release")? != release {
            return None;
        }
        Some(Example {
            request_id: field("request_id")?,
            request: field("request")?,
            stable: field("stable")?,
            candidate: field("candidate")?,
        })
    }
}

/// One live request and the answer the stable gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub request: Value,
    pub response: Value,
}

/// The pair a log line carries. The line may have a prefix (a logger's timestamp, level
/// and request id): the pair is the first JSON object holding [`PAIR_KEY`].
pub fn pair_in(message: &str) -> Result<Pair, String> {
    let start = message.find('{').ok_or("no JSON object in the line")?;
    let mut values = serde_json::Deserializer::from_str(&message[start..]).into_iter::<Value>();
    let value = match values.next() {
        Some(Ok(value)) => value,
        Some(Err(e)) => return Err(format!("the line's JSON does not parse: {e}")),
        None => return Err("no JSON object in the line".into()),
    };
    // A runtime logging in JSON wraps the printed line: {"level", "message": "<line>", ...}.
    if let (None, Some(inner)) = (value.get(PAIR_KEY), value.get("message").and_then(Value::as_str)) {
        return pair_in(inner);
    }
    let pair = value.get(PAIR_KEY).ok_or_else(|| format!("no {PAIR_KEY:?} key"))?;
    match (pair.get("request"), pair.get("response")) {
        (Some(request), Some(response)) => Ok(Pair { request: request.clone(), response: response.clone() }),
        _ => Err(format!("{PAIR_KEY:?} needs both \"request\" and \"response\"")),
    }
}

/// Whether a line with this id is in the sample: the same id always decides the same
/// way (a retried delivery shadows the same lines), and ids spread evenly.
pub fn sampled(id: &str, sample: f64) -> bool {
    if sample >= 1.0 {
        return true;
    }
    // FNV-1a, stable across builds and machines (unlike std's hasher), then splitmix64's
    // finaliser: FNV alone leaves the high bits of similar ids (sequence numbers) uneven.
    let fnv = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let mut z = fnv;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) < sample
}

// Filter names allow no ':' or '*': base64url, without padding.
fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unbase64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feed(compare: Compare) -> Feed {
        Feed {
            release: "ai-handler-43".into(),
            function: "ai-handler".into(),
            stable: "42".into(),
            candidate: "43".into(),
            sample: 0.25,
            max_payload_bytes: 65_536,
            max_concurrency: 8,
            compare,
            noise_floor: true,
        }
    }

    #[test]
    fn a_feed_survives_its_filter_name_and_the_name_is_one_cloudwatch_accepts() {
        let feed = feed(Compare::Fields { pointers: vec!["/label".into(), "/score".into()], tolerance: 0.05 });
        let name = feed.filter_name();
        assert!(name.starts_with(FILTER_PREFIX));
        assert!(name.len() <= MAX_FILTER_NAME, "{} chars", name.len());
        assert!(!name.contains(':') && !name.contains('*'), "{name}");
        assert_eq!(Feed::from_filter_name(&name), Some(Ok(feed)));
        assert_eq!(Feed::from_filter_name("team-log-shipper"), None);
        assert!(matches!(Feed::from_filter_name("coalmine-shadow.!!"), Some(Err(e)) if e.contains("base64url")));
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            assert_eq!(unbase64url(&base64url(&bytes)), Some(bytes));
        }
        assert_eq!(base64url(b"coalmine"), "Y29hbG1pbmU");
    }

    #[test]
    fn comparisons_fit_model_outputs() {
        let live = json!({"label": "spam", "score": 0.91, "text": "Two words"});
        let exact = Compare::Exact;
        assert!(exact.agrees(&live, &json!({"score": 0.91, "text": "Two words", "label": "spam"})));
        assert!(!exact.agrees(&live, &json!({"label": "spam", "score": 0.9, "text": "Two words"})));

        let fields = Compare::Fields { pointers: vec!["/label".into(), "/score".into()], tolerance: 0.05 };
        assert!(fields.agrees(&live, &json!({"label": "spam", "score": 0.88, "text": "other"})));
        assert!(!fields.agrees(&live, &json!({"label": "spam", "score": 0.80})));
        assert!(!fields.agrees(&live, &json!({"label": "ham", "score": 0.91})));
        assert!(!fields.agrees(&live, &json!({"score": 0.91})), "a field only one side has");

        let label = Compare::Label { pointer: "/label".into() };
        assert!(label.agrees(&live, &json!({"label": "spam", "score": 0.1})));
        assert!(!label.agrees(&live, &json!({"label": "ham"})));

        let length = Compare::Length { pointer: Some("/text".into()), max_ratio: 1.5 };
        assert!(length.agrees(&live, &json!({"text": "Two words!!!"})));
        assert!(!length.agrees(&live, &json!({"text": "Two words, and then many more"})));
        assert!(!length.agrees(&live, &json!({"text": "Two"})), "shorter counts too");
    }

    #[test]
    fn comparisons_that_cannot_work_are_refused_with_the_fix() {
        assert!(Compare::Fields { pointers: vec![], tolerance: 0.0 }.problem().unwrap().contains("at least one"));
        assert!(Compare::Label { pointer: "label".into() }.problem().unwrap().contains("starts with '/'"));
        assert!(Compare::Length { pointer: None, max_ratio: 0.5 }.problem().unwrap().contains(">= 1"));
        assert_eq!(Compare::Label { pointer: "/label".into() }.problem(), None);
    }

    #[test]
    fn a_pair_is_read_from_a_bare_or_prefixed_line_and_anything_else_says_why() {
        let bare = r#"{"coalmine:pair":{"request":{"q":1},"response":{"label":"a"}}}"#;
        assert_eq!(pair_in(bare), Ok(Pair { request: json!({"q": 1}), response: json!({"label": "a"}) }));
        let prefixed = format!("2026-12-03T11:00:00Z\tc0ffee\tINFO\t{bare}\n");
        assert!(pair_in(&prefixed).is_ok());
        assert!(pair_in("START RequestId: 1").unwrap_err().contains("no JSON"));
        let wrapped = serde_json::json!({"timestamp": "2026-12-03T11:00:00Z", "level": "INFO", "message": bare, "requestId": "c0ffee"});
        assert!(pair_in(&wrapped.to_string()).is_ok(), "a JSON log format's wrapper is looked through");
        assert!(pair_in(r#"{"coalmine:pair":{"request":1}}"#).unwrap_err().contains("both"));
        assert!(pair_in(r#"{"other":1}"#).unwrap_err().contains("coalmine:pair"));
    }

    #[test]
    fn only_the_stable_versions_streams_are_shadowed() {
        let feed = feed(Compare::Exact);
        assert!(feed.from_stable("2026/12/03/[42]0f1e2d3c4b5a"));
        assert!(!feed.from_stable("2026/12/03/[43]0f1e2d3c4b5a"));
        assert!(!feed.from_stable("2026/12/03/[$LATEST]0f1e"));
        assert_eq!(stream_version("no-brackets"), None);
    }

    #[test]
    fn sampling_keeps_about_the_share_asked_and_decides_an_id_the_same_way_twice() {
        let kept = (0..20_000).filter(|i| sampled(&format!("3712{i:08}"), 0.25)).count();
        assert!((4_600..5_400).contains(&kept), "{kept} of 20000 at 25%");
        assert_eq!(sampled("abc", 0.5), sampled("abc", 0.5));
        assert!(sampled("anything", 1.0));
    }

    #[test]
    fn an_example_is_read_back_from_the_shadow_functions_log_line_of_its_release_only() {
        let line = r#"{"level":"INFO","message":"shadow: disagreement","candidate":"{\"label\":\"b\"}","release":"r-7","request_id":"57ec","request":"{\"q\":0}","stable":"{\"label\":\"a\"}"}"#;
        let example = Example::from_log_line(line, "r-7").unwrap();
        assert_eq!((example.request_id.as_str(), example.candidate.as_str()), ("57ec", r#"{"label":"b"}"#));
        assert_eq!(Example::from_log_line(line, "r-8"), None);
        assert_eq!(Example::from_log_line(&line.replace("disagreement", "other"), "r-7"), None);
        assert_eq!(Example::from_log_line("START RequestId: 1", "r-7"), None);
    }

    #[test]
    fn the_envelope_names_the_release_and_carries_the_request_unchanged() {
        let request = json!({"prompt": "hi", "max_tokens": 5});
        let envelope = feed(Compare::Exact).envelope(&request);
        assert_eq!(envelope[ENVELOPE_KEY]["request"], request);
        assert_eq!(envelope[ENVELOPE_KEY]["release"], "ai-handler-43");
    }
}
