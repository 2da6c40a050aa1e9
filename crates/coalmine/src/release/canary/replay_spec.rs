//! A Lambda release's replay phase, as the release asks for it (decision 0023): before
//! its shadow (if any) and its first stage, the candidate and the stable answer the same
//! requests from a source the team names, at the pace the release sets, and the judge
//! compares them as it compares a shadow's. Evidence made at any traffic: a service that
//! sees a few requests a minute is judged on thousands in minutes.

use serde::{Deserialize, Serialize};

use crate::domain::metrics::CustomGate;
use crate::domain::replay::{invocations, metrics_release, Pace, Source};
use crate::domain::shadow::{Compare, Feed};
use crate::release::canary::shadow_spec::{check_comparison, disagreement_gates};
use crate::release::core::document::Problems;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// `{"s3": {"bucket": …, "key": …}}` (a JSON Lines golden set) or `{"recent":
    /// {"window_seconds": …}}` (the stable's own requests, from its log group).
    pub source: Source,
    /// At most this many requests (a source may hold fewer).
    pub requests: u64,
    /// Requests sent a second.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    /// The longest the replay runs; by default the time its requests take to send and
    /// two checks more, for the last answers to be counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
    /// Pass as soon as every enforced test has ruled out twice its tolerance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_conclusive: bool,
    /// Requests in flight at once, across a check's slice (8); the shadow function's
    /// reserved concurrency caps them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// The largest request replayed (64 KiB); larger lines are skipped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<usize>,
    /// How the candidate's answer is compared with the reference: the answer users got
    /// (a logged line), or the stable's, asked first (a golden line without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// Ask the stable again (the default), for its disagreement with itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_floor: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disagreement_increase_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disagreement_rate: Option<f64>,
}

fn default_rate() -> f64 {
    5.0
}
const DEFAULT_MAX_CONCURRENCY: usize = 8;
const DEFAULT_MAX_PAYLOAD_BYTES: usize = 65_536;
/// The most requests one check reads and hands out: a tick must end well inside the
/// stepper's timeout.
pub const MAX_PER_CHECK: u64 = 5_000;
/// A replay's largest source: what one Step Functions execution's checks can send.
const MAX_REQUESTS: u64 = 1_000_000;

fn at(field: &str) -> String {
    format!("replay.{field}")
}

impl Replay {
    /// Where its requests come from, as a person reads it.
    pub fn source_text(&self) -> String {
        match &self.source {
            Source::Recent { window_seconds } => {
                format!("the stable's requests of the last {}", crate::text::duration(*window_seconds))
            }
            other => other.to_string(),
        }
    }

    pub fn pace(&self) -> Pace {
        Pace { rate_per_second: self.rate_per_second, requests: self.requests }
    }

    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY)
    }

    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES)
    }

    pub fn noise_floor(&self) -> bool {
        self.noise_floor.unwrap_or(true)
    }

    /// The longest the replay runs, checked every `check_every` seconds.
    pub fn longest(&self, check_every: u64) -> u64 {
        self.duration_seconds.unwrap_or_else(|| self.pace().seconds().saturating_add(2 * check_every))
    }

    /// Invocations of the function's versions, at most: the candidate's, the stable's
    /// reference where the source keeps no answer, the stable's again for the noise floor.
    pub fn invocations(&self) -> u64 {
        invocations(self.requests, !self.source.carries_answers(), self.noise_floor())
    }

    pub fn check(&self, check_every: u64, problems: &mut Problems) {
        match &self.source {
            Source::S3 { bucket, key } => {
                if bucket.is_empty() || key.is_empty() {
                    problems.add(&at("source.s3"), "names a bucket and a key: {\"bucket\": ..., \"key\": ...}");
                }
            }
            Source::Recent { window_seconds } => {
                if !(60..=1_209_600).contains(window_seconds) {
                    problems.add(
                        &at("source.recent.window_seconds"),
                        format!("{window_seconds} is outside 60..=1209600 (a minute to two weeks)"),
                    );
                }
            }
        }
        if !(1..=MAX_REQUESTS).contains(&self.requests) {
            problems.add(&at("requests"), format!("{} is outside 1..={MAX_REQUESTS}", self.requests));
        }
        if !(self.rate_per_second > 0.0 && self.rate_per_second <= 1_000.0) {
            problems.add(&at("rate_per_second"), format!("{} is outside (0, 1000]", self.rate_per_second));
        } else if self.rate_per_second * check_every as f64 > MAX_PER_CHECK as f64 {
            problems.add(
                &at("rate_per_second"),
                format!(
                    "{} a second is {:.0} requests a check (one every {check_every} s), over the {MAX_PER_CHECK} one \
                     check hands out: replay slower or check more often",
                    self.rate_per_second,
                    self.rate_per_second * check_every as f64
                ),
            );
        }
        if let Some(duration) = self.duration_seconds {
            if !(1..=limits_day()).contains(&duration) {
                problems.add(&at("duration_seconds"), format!("{duration} is outside 1..={}", limits_day()));
            }
        }
        if !(1..=100).contains(&self.max_concurrency()) {
            problems.add(&at("max_concurrency"), format!("{} is outside 1..=100", self.max_concurrency()));
        }
        if !(1_024..=200_000).contains(&self.max_payload_bytes()) {
            problems.add(
                &at("max_payload_bytes"),
                format!(
                    "{} is outside 1024..=200000 (a slice travels in an asynchronous invocation of 256 KiB)",
                    self.max_payload_bytes()
                ),
            );
        }
        check_comparison(
            "replay",
            &self.compare,
            self.noise_floor(),
            (self.max_disagreement_increase_ratio, self.max_disagreement_rate),
            problems,
        );
    }

    /// What the shadow function needs for `function`'s `stable` and `candidate`: every
    /// line is asked (no sample), and counted under the replay's own `Release`.
    pub fn feed(&self, release: &str, function: &str, stable: &str, candidate: &str) -> Feed {
        Feed {
            release: metrics_release(release),
            function: function.to_owned(),
            stable: stable.to_owned(),
            candidate: candidate.to_owned(),
            sample: 1.0,
            max_payload_bytes: self.max_payload_bytes(),
            max_concurrency: self.max_concurrency(),
            compare: self.compare.clone().unwrap_or(Compare::Exact),
            noise_floor: self.noise_floor(),
        }
    }

    /// The disagreement gates, on the replay's own metrics.
    pub fn gates(&self, release: &str) -> Vec<CustomGate> {
        disagreement_gates(&metrics_release(release), self.max_disagreement_increase_ratio, self.max_disagreement_rate)
    }
}

/// The noise floor a plan assumes before any replay has measured one: a sampled model
/// disagreeing with itself on one request in twenty.
pub const ASSUMED_NOISE_FLOOR: f64 = 0.05;

impl Replay {
    /// What the replay costs and sees, as `coalmine validate` states it: its invocations,
    /// its time, and the requests its disagreement tests need to see a candidate that
    /// disagrees twice as often as the reference does (the stable's noise floor, assumed
    /// at 5%; or twice the absolute limit), with 80% power, under the release's `gates`.
    pub fn plan_text(&self, release: &str, gates: &crate::release::judge::gates::Gates, check_every: u64) -> String {
        use crate::release::judge::power::{replay_requests_needed, replay_sees};
        use crate::text::{duration, percent};
        let pace = self.pace();
        let reference = if self.source.carries_answers() {
            "each compared with the answer users got"
        } else {
            "the stable answering each first, for the reference"
        };
        let gates = crate::release::judge::gates::Gates { custom: self.gates(release), ..gates.clone() };
        let (floor, against) = match (self.max_disagreement_increase_ratio, self.max_disagreement_rate) {
            (Some(_), _) => (
                ASSUMED_NOISE_FLOOR,
                format!("with the stable disagreeing with itself on {}", percent(ASSUMED_NOISE_FLOOR)),
            ),
            (None, Some(limit)) => (limit, format!("against the limit of {}", percent(limit))),
            (None, None) => (ASSUMED_NOISE_FLOOR, String::new()),
        };
        let seconds = |n: u64| (n as f64 / self.rate_per_second).ceil() as u64;
        let seen = match replay_requests_needed(&gates, floor, 2.0, self.requests) {
            Some(n) => format!(
                "{against}, a 2x disagreement rate is seen with 80% power after {n} requests ({})",
                duration(seconds(n).max(1))
            ),
            None => format!("{against}, a 2x disagreement rate is not seen with 80% power within its requests"),
        };
        let smallest = match replay_sees(&gates, floor, self.requests) {
            Some(factor) => format!("; all {} see {factor}x", self.requests),
            None => String::new(),
        };
        format!(
            "up to {} requests from {} at {} a second ({}, at most {}); {} invocations of its versions, {reference}; {seen}{smallest}",
            self.requests,
            self.source_text(),
            self.rate_per_second,
            duration(pace.seconds()),
            duration(self.longest(check_every)),
            self.invocations(),
        )
    }
}

/// A replay runs within a day: one execution's checks, with stages after it.
fn limits_day() -> u64 {
    86_400
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replay(extra: serde_json::Value) -> Replay {
        let mut json = json!({
            "source": {"s3": {"bucket": "evals", "key": "chat/golden.jsonl"}},
            "requests": 2000,
            "rate_per_second": 20,
            "compare": {"label": {"pointer": "/label"}},
            "max_disagreement_increase_ratio": 1.0,
        });
        json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json).unwrap()
    }

    fn problems(replay: &Replay, check_every: u64) -> String {
        let mut problems = Problems::default();
        replay.check(check_every, &mut problems);
        problems.into_vec().join("; ")
    }

    #[test]
    fn a_golden_replay_costs_three_invocations_a_request_and_runs_its_requests_time_and_two_checks() {
        let golden = replay(json!({}));
        assert_eq!(problems(&golden, 60), "");
        assert_eq!((golden.invocations(), golden.longest(60), golden.max_concurrency()), (6_000, 220, 8));
        let recent = replay(json!({"source": {"recent": {"window_seconds": 3600}}, "noise_floor": false,
                                   "max_disagreement_increase_ratio": null, "max_disagreement_rate": 0.1}));
        assert_eq!(problems(&recent, 60), "");
        assert_eq!(recent.invocations(), 2_000, "the logged lines carry the answer users got");
        let feed = golden.feed("chat-7", "chat", "6", "7");
        assert_eq!((feed.release.as_str(), feed.sample), ("chat-7:replay", 1.0));
        assert_eq!(golden.gates("chat-7")[0].dimensions["Release"], "chat-7:replay");
    }

    #[test]
    fn what_cannot_work_is_refused_naming_the_field_and_the_fix() {
        let fast = problems(&replay(json!({"rate_per_second": 100})), 60);
        assert!(fast.contains("replay.rate_per_second: 100 a second is 6000 requests a check"), "{fast}");
        let bad = problems(
            &replay(json!({"requests": 0, "source": {"recent": {"window_seconds": 5}}, "compare": null,
                           "max_payload_bytes": 300000})),
            60,
        );
        for field in [
            "replay.requests",
            "replay.source.recent.window_seconds",
            "replay.compare: required for a Lambda replay",
            "replay.max_payload_bytes",
        ] {
            assert!(bad.contains(field), "{field} in {bad}");
        }
        let no_floor = problems(&replay(json!({"noise_floor": false})), 60);
        assert!(
            no_floor.contains("replay.max_disagreement_increase_ratio: compares with the noise floor"),
            "{no_floor}"
        );
        let unknown = serde_json::from_value::<Replay>(json!({"source": {"http": {}}, "requests": 1}));
        assert!(unknown.is_err());
    }
}
