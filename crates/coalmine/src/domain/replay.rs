//! A replay's requests and its pace, before any user is served (decision 0023, proposed):
//! what a line of a replay source holds, how many requests are due at a tick, and how
//! many invocations a replay costs. No I/O; the stepper and the shadow function will
//! read sources and invoke versions through their ports.

use serde_json::Value;

use crate::domain::shadow::{pair_in, PAIR_KEY};

/// One request to replay, and the answer users got to it when the source kept one.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayLine {
    pub request: Value,
    /// The live answer (a shadow pair line's); `None` for a golden set's line, whose
    /// reference is the stable's own answer, asked first.
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
    fn a_golden_set_costs_three_invocations_a_request_with_the_noise_floor() {
        assert_eq!(invocations(2000, true, true), 6000);
        assert_eq!(invocations(2000, false, true), 4000, "yesterday's lines carry the live answer");
        assert_eq!(invocations(2000, false, false), 2000);
    }
}
