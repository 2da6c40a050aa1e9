//! A weight release's shadow phase, as the release asks for it: before the first stage,
//! the candidate answers copies of the stable's live requests for `duration_seconds`
//! while the stable serves every user, and the judge compares the two.
//!
//! Two mechanisms, one phase: a Lambda alias is fed by the shadow function (which asks
//! the candidate, compares the answers and counts); an Azure ML endpoint mirrors a share
//! of its traffic to the candidate deployment itself (`mirrorTraffic`) and discards the
//! mirrored answers, so only errors and latency can be judged there.

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
    /// The share of live requests the candidate is asked, in (0, 1]. Lambda: each costs
    /// one invocation of the candidate (and one of the stable, with the noise floor).
    /// Azure ML: the endpoint's mirror traffic, a whole percent of at most 50.
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// Lambda: the largest logged request the shadow function replays (64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<usize>,
    /// Lambda: invocations in flight per delivery of log lines (8; the shadow function's
    /// reserved concurrency caps the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Lambda: how the candidate's answer is compared with the one users got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// Lambda: ask the stable the same requests again (the default): its disagreement
    /// with itself is what a non-deterministic model's disagreement is judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_floor: Option<bool>,
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
const DEFAULT_MAX_PAYLOAD_BYTES: usize = 65_536;
const DEFAULT_MAX_CONCURRENCY: usize = 8;

/// Azure ML mirrors at most half an endpoint's traffic.
pub const MAX_MIRROR_SHARE: f64 = 0.5;

/// 256 KiB: CloudWatch Logs' largest event, so nothing larger can arrive anyway.
const LARGEST_LOG_EVENT: usize = 262_144;

fn at(field: &str) -> String {
    format!("shadow.{field}")
}

impl Shadow {
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES)
    }

    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY)
    }

    pub fn noise_floor(&self) -> bool {
        self.noise_floor.unwrap_or(true)
    }

    fn check_duration(&self, problems: &mut Problems) {
        if !(60..=604_800).contains(&self.duration_seconds) {
            problems.add(&at("duration_seconds"), format!("{} is outside 60..=604800", self.duration_seconds));
        }
    }

    /// An Azure ML shadow: the endpoint mirrors `sample` of its traffic to the candidate
    /// deployment and discards the answers, so nothing can compare them.
    pub fn check_mirror(&self, problems: &mut Problems) {
        self.check_duration(problems);
        let percent = self.sample * 100.0;
        if !(self.sample > 0.0 && self.sample <= MAX_MIRROR_SHARE) {
            problems.add(
                &at("sample"),
                format!("{} is outside (0, 0.5]: Azure ML mirrors at most half an endpoint's traffic", self.sample),
            );
        } else if (percent - percent.round()).abs() > 1e-9 {
            problems.add(
                &at("sample"),
                format!("{}: Azure ML mirrors whole percents of traffic; use {}", self.sample, percent.round() / 100.0),
            );
        }
        let lambda_only = [
            ("compare", self.compare.is_some()),
            ("noise_floor", self.noise_floor.is_some()),
            ("max_payload_bytes", self.max_payload_bytes.is_some()),
            ("max_concurrency", self.max_concurrency.is_some()),
            ("max_disagreement_increase_ratio", self.max_disagreement_increase_ratio.is_some()),
            ("max_disagreement_rate", self.max_disagreement_rate.is_some()),
        ];
        for (field, _) in lambda_only.iter().filter(|(_, set)| *set) {
            problems.add(
                &at(field),
                "not for an Azure ML shadow: Azure mirrors the requests itself and discards the candidate's answers, \
                 so nothing compares them; the shadow is judged on the candidate's errors and latency",
            );
        }
    }

    /// A Lambda shadow, fed to the shadow function by `feed`.
    pub fn check(&self, feed: &Feed, problems: &mut Problems) {
        self.check_duration(problems);
        if !(self.sample > 0.0 && self.sample <= 1.0) {
            problems.add(&at("sample"), format!("{} is outside (0, 1]: 0.1 shadows one request in ten", self.sample));
        }
        if !(1_024..=LARGEST_LOG_EVENT).contains(&self.max_payload_bytes()) {
            problems.add(&at("max_payload_bytes"), format!("{} is outside 1024..=262144", self.max_payload_bytes()));
        }
        if !(1..=100).contains(&self.max_concurrency()) {
            problems.add(&at("max_concurrency"), format!("{} is outside 1..=100", self.max_concurrency()));
        }
        check_comparison(
            "shadow",
            &self.compare,
            self.noise_floor(),
            (self.max_disagreement_increase_ratio, self.max_disagreement_rate),
            problems,
        );
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
            max_payload_bytes: self.max_payload_bytes(),
            max_concurrency: self.max_concurrency(),
            compare: self.compare.clone().unwrap_or(Compare::Exact),
            noise_floor: self.noise_floor(),
        }
    }

    /// The disagreement gates, on the shadow function's metrics for this release.
    pub fn gates(&self, release: &str) -> Vec<CustomGate> {
        disagreement_gates(release, self.max_disagreement_increase_ratio, self.max_disagreement_rate)
    }
}

/// How a Lambda shadow or replay (`phase`) compares the candidate's answers, and how much
/// disagreement it accepts: what can work, or a problem naming the field.
pub(crate) fn check_comparison(
    phase: &str,
    compare: &Option<Compare>,
    noise_floor: bool,
    (max_increase_ratio, max_rate): (Option<f64>, Option<f64>),
    problems: &mut Problems,
) {
    let at = |field: &str| format!("{phase}.{field}");
    match compare {
        None => problems.add(
            &at("compare"),
            format!(
                "required for a Lambda {phase}: how the candidate's answer is compared with the reference (exact, \
                 fields, label or length)"
            ),
        ),
        Some(compare) => {
            if let Some(problem) = compare.problem() {
                problems.add(&at("compare"), problem);
            }
        }
    }
    match (max_increase_ratio, max_rate) {
        (None, None) => problems.add(
            phase,
            "say how much disagreement is acceptable: max_disagreement_increase_ratio (against the stable's \
             disagreement with itself) or max_disagreement_rate (a share of requests), or both",
        ),
        (Some(_), _) if !noise_floor => problems.add(
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
}

/// The disagreement gates, as custom gates on the shadow function's metrics for the
/// `Release` dimension `release`: a rate (disagreements per answer compared) on each
/// side, the stable's side being the stable asked again. Judged by the same tests,
/// sharing the release's false rollback rate with the errors and latency tests.
pub(crate) fn disagreement_gates(
    release: &str,
    max_increase_ratio: Option<f64>,
    max_rate: Option<f64>,
) -> Vec<CustomGate> {
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
    if let Some(ratio) = max_increase_ratio {
        gates.push(gate(None, Some(ratio)));
    }
    if let Some(rate) = max_rate {
        gates.push(gate(Some(rate), None));
    }
    gates
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
        assert_eq!((shadow.sample, shadow.noise_floor(), shadow.max_concurrency()), (0.1, true, 8));
        assert!(problems_of(&shadow).is_empty(), "{:?}", problems_of(&shadow));
        let mut no_compare = shadow;
        no_compare.compare = None;
        assert!(problems_of(&no_compare).join(";").contains("shadow.compare: required for a Lambda shadow"));
    }

    fn mirror_problems(json: serde_json::Value) -> String {
        let shadow: Shadow = serde_json::from_value(json).unwrap();
        let mut problems = Problems::default();
        shadow.check_mirror(&mut problems);
        problems.into_vec().join("; ")
    }

    #[test]
    fn an_azure_shadow_mirrors_a_whole_percent_up_to_half_and_compares_nothing() {
        assert_eq!(mirror_problems(serde_json::json!({"duration_seconds": 1800, "sample": 0.2})), "");
        assert!(mirror_problems(serde_json::json!({"duration_seconds": 1800, "sample": 0.6}))
            .contains("Azure ML mirrors at most half"));
        assert!(mirror_problems(serde_json::json!({"duration_seconds": 1800, "sample": 0.125}))
            .contains("whole percents of traffic; use 0.13"));
        let compared = mirror_problems(serde_json::json!({
            "duration_seconds": 1800, "compare": "exact", "max_disagreement_rate": 0.1, "noise_floor": true
        }));
        for field in ["shadow.compare", "shadow.max_disagreement_rate", "shadow.noise_floor"] {
            assert!(compared.contains(&format!("{field}: not for an Azure ML shadow")), "{field} in {compared}");
        }
    }

    #[test]
    fn what_cannot_work_is_refused_naming_the_field_and_the_fix() {
        let mut no_limit = shadow();
        no_limit.max_disagreement_increase_ratio = None;
        assert!(problems_of(&no_limit)[0].contains("say how much disagreement is acceptable"));

        let mut no_floor = shadow();
        no_floor.noise_floor = Some(false);
        assert!(problems_of(&no_floor)[0].contains("set \"noise_floor\": true"));

        let bad = Shadow {
            sample: 0.0,
            duration_seconds: 5,
            compare: Some(Compare::Label { pointer: "label".into() }),
            ..shadow()
        };
        let problems = problems_of(&bad).join("; ");
        for field in ["shadow.duration_seconds", "shadow.sample", "shadow.compare"] {
            assert!(problems.contains(field), "{field} in {problems}");
        }

        let long = Shadow {
            compare: Some(Compare::Fields {
                pointers: (0..40).map(|i| format!("/answer/field_{i}")).collect(),
                tolerance: 0.0,
            }),
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
