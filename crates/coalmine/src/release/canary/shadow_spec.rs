//! A Lambda release's shadow phase, as the release asks for it: before the first stage,
//! the candidate answers copies of the stable's live requests for `duration_seconds`
//! while the alias stays wholly on the stable, and the judge compares the two.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::metrics::CustomGate;
use crate::domain::shadow::{metric, Compare, Feed, MAX_FILTER_NAME, NAMESPACE};
use crate::release::core::document::Problems;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// How long the candidate is shadowed; with `until_conclusive`, the longest.
    pub duration_seconds: u64,
    /// Pass as soon as every enforced test has ruled out twice its tolerance, as an
    /// evidence-driven stage does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_conclusive: bool,
    /// The share of live requests the candidate is asked, in (0, 1]. Each costs one
    /// invocation of the candidate (and one of the stable, with the noise floor).
    #[serde(default = "default_sample")]
    pub sample: f64,
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Invocations in flight per delivery of log lines (the shadow function's reserved
    /// concurrency caps the rest).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    pub compare: Compare,
    /// Ask the stable the same requests again: its disagreement with itself is what a
    /// non-deterministic model's disagreement is judged against.
    #[serde(default = "yes")]
    pub noise_floor: bool,
    /// The candidate disagrees with production at most this much more often than
    /// production disagrees with itself (0.5: half as often again). Needs the noise floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disagreement_increase_ratio: Option<f64>,
    /// The candidate disagrees with production on at most this share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disagreement_rate: Option<f64>,
}

fn default_sample() -> f64 {
    0.1
}
fn default_max_payload_bytes() -> usize {
    65_536
}
fn default_max_concurrency() -> usize {
    8
}
fn yes() -> bool {
    true
}

/// 256 KiB: CloudWatch Logs' largest event, so nothing larger can arrive anyway.
const LARGEST_LOG_EVENT: usize = 262_144;

impl Shadow {
    pub fn check(&self, feed: &Feed, problems: &mut Problems) {
        let at = |field: &str| format!("shadow.{field}");
        if !(60..=604_800).contains(&self.duration_seconds) {
            problems.add(&at("duration_seconds"), format!("{} is outside 60..=604800", self.duration_seconds));
        }
        if !(self.sample > 0.0 && self.sample <= 1.0) {
            problems.add(&at("sample"), format!("{} is outside (0, 1]: 0.1 shadows one request in ten", self.sample));
        }
        if !(1_024..=LARGEST_LOG_EVENT).contains(&self.max_payload_bytes) {
            problems.add(&at("max_payload_bytes"), format!("{} is outside 1024..=262144", self.max_payload_bytes));
        }
        if !(1..=100).contains(&self.max_concurrency) {
            problems.add(&at("max_concurrency"), format!("{} is outside 1..=100", self.max_concurrency));
        }
        if let Some(problem) = self.compare.problem() {
            problems.add(&at("compare"), problem);
        }
        match (self.max_disagreement_increase_ratio, self.max_disagreement_rate) {
            (None, None) => problems.add(
                "shadow",
                "say how much disagreement is acceptable: max_disagreement_increase_ratio (against the stable's \
                 disagreement with itself) or max_disagreement_rate (a share of requests), or both",
            ),
            (Some(_), _) if !self.noise_floor => problems.add(
                &at("max_disagreement_increase_ratio"),
                "compares with the noise floor: set \"noise_floor\": true, or use max_disagreement_rate",
            ),
            (Some(r), _) if !(r.is_finite() && r >= 0.0) => {
                problems.add(&at("max_disagreement_increase_ratio"), format!("{r} must be a number >= 0"))
            }
            (_, Some(rate)) if !(rate > 0.0 && rate < 1.0) => {
                problems.add(&at("max_disagreement_rate"), format!("{rate} is outside (0, 1)"))
            }
            _ => {}
        }
        let name = feed.filter_name();
        if name.len() > MAX_FILTER_NAME {
            problems.add(
                &at("compare"),
                format!(
                    "the shadow's feed needs a {}-character subscription filter name, over CloudWatch Logs' {}: \
                     use fewer or shorter JSON pointers, or a shorter release name",
                    name.len(),
                    MAX_FILTER_NAME
                ),
            );
        }
    }

    /// What the shadow function needs, for `function`'s `stable` and `candidate`.
    pub fn feed(&self, release: &str, function: &str, stable: &str, candidate: &str) -> Feed {
        Feed {
            release: release.to_owned(),
            function: function.to_owned(),
            stable: stable.to_owned(),
            candidate: candidate.to_owned(),
            sample: self.sample,
            max_payload_bytes: self.max_payload_bytes,
            max_concurrency: self.max_concurrency,
            compare: self.compare.clone(),
            noise_floor: self.noise_floor,
        }
    }

    /// The disagreement gates, as custom gates on the shadow function's metrics: a rate
    /// (disagreements per answer compared) on each side, the stable's side being the
    /// stable asked again. Judged by the same tests, sharing the release's false
    /// rollback rate with the errors and latency tests.
    pub fn gates(&self, release: &str) -> Vec<CustomGate> {
        let dimensions: BTreeMap<String, String> =
            [("Release".to_owned(), release.to_owned()), ("Version".to_owned(), "{version}".to_owned())].into();
        let gate = |max: Option<f64>, max_increase_ratio: Option<f64>| {
            let json = serde_json::json!({
                "namespace": NAMESPACE,
                "metric": metric::DISAGREEMENTS,
                "stat": "Sum",
                "dimensions": dimensions,
                "per": {"namespace": NAMESPACE, "metric": metric::COMPARED, "dimensions": dimensions},
                "max": max,
                "max_increase_ratio": max_increase_ratio,
            });
            serde_json::from_value::<CustomGate>(json).expect("a shadow gate is a custom gate")
        };
        let mut gates = Vec::new();
        if let Some(ratio) = self.max_disagreement_increase_ratio {
            gates.push(gate(None, Some(ratio)));
        }
        if let Some(rate) = self.max_disagreement_rate {
            gates.push(gate(Some(rate), None));
        }
        gates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow() -> Shadow {
        serde_json::from_value(serde_json::json!({
            "duration_seconds": 1800,
            "compare": {"label": {"pointer": "/label"}},
            "max_disagreement_increase_ratio": 0.5
        }))
        .unwrap()
    }

    fn problems_of(shadow: &Shadow) -> Vec<String> {
        let mut problems = Problems::default();
        shadow.check(&shadow.feed("ai-handler-43", "ai-handler", "42", "43"), &mut problems);
        problems.into_vec()
    }

    #[test]
    fn defaults_sample_one_request_in_ten_with_the_noise_floor() {
        let shadow = shadow();
        assert_eq!((shadow.sample, shadow.noise_floor, shadow.max_concurrency), (0.1, true, 8));
        assert!(problems_of(&shadow).is_empty(), "{:?}", problems_of(&shadow));
    }

    #[test]
    fn what_cannot_work_is_refused_naming_the_field_and_the_fix() {
        let mut no_limit = shadow();
        no_limit.max_disagreement_increase_ratio = None;
        assert!(problems_of(&no_limit)[0].contains("say how much disagreement is acceptable"));

        let mut no_floor = shadow();
        no_floor.noise_floor = false;
        assert!(problems_of(&no_floor)[0].contains("set \"noise_floor\": true"));

        let bad = Shadow {
            sample: 0.0,
            duration_seconds: 5,
            compare: Compare::Label { pointer: "label".into() },
            ..shadow()
        };
        let problems = problems_of(&bad).join("; ");
        for field in ["shadow.duration_seconds", "shadow.sample", "shadow.compare"] {
            assert!(problems.contains(field), "{field} in {problems}");
        }

        let long = Shadow {
            compare: Compare::Fields {
                pointers: (0..40).map(|i| format!("/answer/field_{i}")).collect(),
                tolerance: 0.0,
            },
            ..shadow()
        };
        assert!(problems_of(&long).join(";").contains("subscription filter name"));
    }

    #[test]
    fn the_gates_read_disagreements_per_comparison_on_each_side() {
        let both = Shadow { max_disagreement_rate: Some(0.2), ..shadow() };
        let gates = both.gates("ai-handler-43");
        assert_eq!(gates.len(), 2);
        assert_eq!(
            (gates[0].metric.as_str(), gates[0].max_increase_ratio, gates[0].max),
            ("Disagreements", Some(0.5), None)
        );
        assert_eq!((gates[1].max, gates[1].max_increase_ratio), (Some(0.2), None));
        assert_eq!(gates[0].dimensions["Version"], "{version}");
        assert_eq!(gates[0].dimensions["Release"], "ai-handler-43");
    }
}
