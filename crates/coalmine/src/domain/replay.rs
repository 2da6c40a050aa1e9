//! A replay's requests and its pace, before any user is served (decision 0023): where
//! the requests come from, what a line of a source holds, how far a replay has read, how
//! many requests are due at a tick, how a slice travels to the shadow function, and how
//! many invocations a replay costs. No I/O; the stepper reads sources and hands slices
//! to the shadow function through [`crate::ports::ShadowFeeds`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::shadow::{pair_in, Feed, PAIR_KEY};

/// The key of the shadow function's event that carries a replay's slice:
/// `{"coalmine:replay": {"feed": …, "lines": [{"request": …, "response": …}]}}`.
pub const REPLAY_KEY: &str = "coalmine:replay";

/// Where a replay's requests come from. Nothing is copied out of either: the stepper
/// reads a slice at a time and hands it to the shadow function, which keeps nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A JSON Lines object the team keeps (a golden or evaluation set): each line a
    /// `{"request": …}` (a `"response"` beside it is the reference) or a saved pair line.
    S3 { bucket: String, key: String },
    /// The requests the stable served over the last `window_seconds` before the replay
    /// began: its own pair lines, read from its log group.
    Recent { window_seconds: u64 },
}

impl Source {
    /// Whether each line carries the answer users got; a golden set's lines may not, so
    /// the stable is asked first for the reference.
    pub fn carries_answers(&self) -> bool {
        matches!(self, Source::Recent { .. })
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Source::Recent { window_seconds } => write!(f, "the stable's requests of the last {window_seconds} s"),
        }
    }
}

/// How far a replay has read its source: kept in the release's progress between ticks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// An S3 object: the bytes read so far (always at a line's start).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// A log group: the timestamp (ms) of the last line read, and the ids of the lines
    /// read at that very millisecond (the next read starts at it, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What one read of a source gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slice {
    pub lines: Vec<ReplayLine>,
    /// Lines read but not replayable (not a request, larger than the payload limit).
    pub skipped: u64,
    pub cursor: Cursor,
    /// Nothing is left to read.
    pub exhausted: bool,
}

/// The shadow function's event for one part of a slice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayBatch {
    pub feed: Feed,
    pub lines: Vec<ReplayLine>,
}

impl ReplayBatch {
    pub fn event(&self) -> Value {
        serde_json::json!({ REPLAY_KEY: self })
    }

    /// The batch an event carries; `None` for any other event (a log delivery).
    pub fn in_event(event: &Value) -> Option<Result<ReplayBatch, String>> {
        let batch = event.get(REPLAY_KEY)?;
        Some(
            serde_json::from_value(batch.clone()).map_err(|e| format!("a {REPLAY_KEY} event that does not parse: {e}")),
        )
    }
}

/// The `Release` dimension of a replay's metrics: its own, so a slice still in flight
/// when the replay ends is never counted in the shadow that follows it.
pub fn metrics_release(release: &str) -> String {
    format!("{release}:replay")
}

/// Lines cut into batches whose events stay under `max_bytes` (an asynchronous
/// invocation's payload), each at most `per_batch` lines; a line alone over the limit
/// is left out and counted.
pub fn batches(lines: Vec<ReplayLine>, max_bytes: usize, per_batch: usize) -> (Vec<Vec<ReplayLine>>, u64) {
    // The feed and the envelope around the lines, with room to spare.
    const OVERHEAD: usize = 2_048;
    let budget = max_bytes.saturating_sub(OVERHEAD);
    let (mut out, mut current, mut size, mut too_large) = (Vec::new(), Vec::new(), 0usize, 0u64);
    for line in lines {
        let bytes = serde_json::to_vec(&line).map_or(usize::MAX, |v| v.len() + 1);
        if bytes > budget {
            too_large += 1;
            continue;
        }
        if !current.is_empty() && (size + bytes > budget || current.len() >= per_batch.max(1)) {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += bytes;
        current.push(line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    (out, too_large)
}

/// One request to replay, and the answer users got to it when the source kept one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayLine {
    pub request: Value,
    /// The live answer (a shadow pair line's); `None` for a golden set's line, whose
    /// reference is the stable's own answer, asked first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

/// A line of a replay source: a golden set's `{"request": …}` (a `response` beside it is
/// kept as the reference), or one of the stable's own pair lines, prefixed or not.
pub fn replay_line(line: &str) -> Result<ReplayLine, String> {
    if line.contains(PAIR_KEY) {
        let pair = pair_in(line)?;
        return Ok(ReplayLine { request: pair.request, response: Some(pair.response) });
    }
    let value: Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("not a JSON line ({e}): {}", shown(line)))?;
    match value.get("request") {
        Some(request) => Ok(ReplayLine { request: request.clone(), response: value.get("response").cloned() }),
        None => Err(format!(
            "no \"request\" in the line: a replay source's lines are {{\"request\": ...}} or the stable's \
             {PAIR_KEY:?} lines: {}",
            shown(line)
        )),
    }
}

fn shown(line: &str) -> String {
    let cut: String = line.chars().take(80).collect();
    if cut.len() < line.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// How fast and how far a replay goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    pub rate_per_second: f64,
    /// At most this many requests in all.
    pub requests: u64,
}

impl Pace {
    /// Requests due `elapsed_seconds` into the replay, `sent` of them already sent: the
    /// rate's share of the time so far, never past `requests`. A tick that came late
    /// catches up; one that came early sends nothing.
    pub fn due(&self, elapsed_seconds: u64, sent: u64) -> u64 {
        let by_now = (self.rate_per_second.max(0.0) * elapsed_seconds as f64).floor() as u64;
        by_now.min(self.requests).saturating_sub(sent)
    }

    /// Seconds until every request is sent.
    pub fn seconds(&self) -> u64 {
        if self.rate_per_second <= 0.0 {
            return u64::MAX;
        }
        (self.requests as f64 / self.rate_per_second).ceil() as u64
    }
}

/// Invocations a replay of `requests` makes: the candidate's; the stable's first answer
/// where the source kept none (`with_reference`: a golden set); and the stable asked
/// again for the noise floor.
pub fn invocations(requests: u64, with_reference: bool, noise_floor: bool) -> u64 {
    requests * (1 + u64::from(with_reference) + u64::from(noise_floor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_golden_line_and_a_pair_line_are_both_requests_only_the_pair_carries_the_live_answer() {
        let golden = replay_line(r#"{"request": {"q": "refund?"}}"#).unwrap();
        assert_eq!(golden, ReplayLine { request: json!({"q": "refund?"}), response: None });
        let referenced = replay_line(r#"{"request": {"q": 1}, "response": {"label": "a"}}"#).unwrap();
        assert_eq!(referenced.response, Some(json!({"label": "a"})));
        let logged = replay_line(
            r#"2026-12-06T10:00:00Z abc INFO {"coalmine:pair": {"request": {"q": 2}, "response": {"label": "b"}}}"#,
        )
        .unwrap();
        assert_eq!(logged, ReplayLine { request: json!({"q": 2}), response: Some(json!({"label": "b"})) });
    }

    #[test]
    fn a_line_that_is_not_a_request_says_what_a_line_should_be() {
        let not_json = replay_line("q=refund").unwrap_err();
        assert!(not_json.starts_with("not a JSON line"), "{not_json}");
        let no_request = replay_line(r#"{"prompt": "hi"}"#).unwrap_err();
        assert!(no_request.contains("{\"request\": ...}"), "{no_request}");
        let half_pair = replay_line(r#"{"coalmine:pair": {"request": {}}}"#).unwrap_err();
        assert!(half_pair.contains("needs both"), "{half_pair}");
    }

    #[test]
    fn the_pace_sends_the_rates_share_of_the_time_so_far_and_never_past_the_requests() {
        let pace = Pace { rate_per_second: 20.0, requests: 2000 };
        assert_eq!(pace.due(0, 0), 0);
        assert_eq!(pace.due(5, 0), 100);
        assert_eq!(pace.due(5, 100), 0, "sent already");
        assert_eq!(pace.due(12, 100), 140, "a late tick catches up");
        assert_eq!(pace.due(600, 1900), 100, "never past the requests");
        assert_eq!(pace.seconds(), 100);
        assert_eq!(Pace { rate_per_second: 0.5, requests: 3 }.due(3, 0), 1);
    }

    #[test]
    fn a_slice_is_cut_into_events_that_fit_an_asynchronous_invocation() {
        let line = |n: usize| ReplayLine { request: json!({"q": "x".repeat(n)}), response: None };
        let lines: Vec<ReplayLine> = (0..10).map(|_| line(1_000)).collect();
        let (parts, too_large) = batches(lines.clone(), 256 * 1024, 4);
        assert_eq!((parts.iter().map(Vec::len).collect::<Vec<_>>(), too_large), (vec![4, 4, 2], 0));
        let (parts, _) = batches(lines, 5_000, 100);
        assert!(parts.iter().all(|p| p.len() == 2), "two 1 KB lines fit beside the overhead");
        let (parts, too_large) = batches(vec![line(10), line(300_000), line(10)], 256 * 1024, 100);
        assert_eq!((parts.len(), parts[0].len(), too_large), (1, 2, 1), "a line over the limit is left out, counted");
    }

    #[test]
    fn a_batch_travels_as_the_shadow_functions_own_event_and_back() {
        let feed = Feed {
            release: metrics_release("ai-handler-43"),
            function: "ai-handler".into(),
            stable: "42".into(),
            candidate: "43".into(),
            sample: 1.0,
            max_payload_bytes: 65_536,
            max_concurrency: 4,
            compare: crate::domain::shadow::Compare::Exact,
            noise_floor: true,
        };
        let batch = ReplayBatch { feed, lines: vec![ReplayLine { request: json!({"q": 1}), response: None }] };
        let event = batch.event();
        assert_eq!(ReplayBatch::in_event(&event), Some(Ok(batch)));
        assert_eq!(ReplayBatch::in_event(&json!({"awslogs": {"data": "…"}})), None, "a log delivery is not one");
        let bad = ReplayBatch::in_event(&json!({REPLAY_KEY: {"lines": []}})).unwrap().unwrap_err();
        assert!(bad.contains("does not parse"), "{bad}");
    }

    #[test]
    fn a_golden_set_costs_three_invocations_a_request_with_the_noise_floor() {
        assert_eq!(invocations(2000, true, true), 6000);
        assert_eq!(invocations(2000, false, true), 4000, "yesterday's lines carry the live answer");
        assert_eq!(invocations(2000, false, false), 2000);
    }
}
