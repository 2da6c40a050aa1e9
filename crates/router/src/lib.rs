//! Which alias a unit (a user, a conversation, a tenant) is sent to during a coalmine
//! cohort release, and why. A model handler or a front function links this crate (serde
//! and sha2, nothing else) and invokes the alias it names.
//!
//! The assignment is one published function, the same in the Python router
//! (`examples/router/coalmine_router.py`) and in `coalmine route`, with test vectors in
//! `events/cohorts/assignment-vectors.json`:
//!
//! ```text
//! bucket = first 8 bytes, big-endian, of SHA-256(release UTF-8, 0x1F, unit UTF-8) mod 10000
//! drawn  = bucket < threshold   (of 10000, as the stepper publishes it: 500 at 5%)
//! ```
//!
//! So a unit gets the same answer all through a release, a unit drawn at 5% is still
//! drawn at 25%, and a new release draws a new cohort. Before the draw, an empty unit goes
//! to the stable, a unit the release never gives the candidate goes to the stable, and a
//! pinned unit (internal users, a beta tenant) goes to the candidate from the first stage.
//!
//! ```
//! use coalmine_router::{route, Cohort};
//!
//! let cohort: Cohort = serde_json::from_str(
//!     r#"{"release": "chat-v7", "threshold": 500, "pinned": {"match": {"group": ["internal"]}}}"#,
//! ).unwrap();
//! let decision = route(&cohort, "user-1", &[("group", "internal")]);
//! assert_eq!((decision.alias, decision.candidate), ("canary", true));
//! ```

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod served;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The draw is over this many buckets: a threshold of 1 is 0.01% of units.
pub const BUCKETS: u32 = 10_000;
const SEPARATOR: u8 = 0x1f;

/// The unit's place in `[0, 10000)` for this release.
pub fn bucket(release: &str, unit: &str) -> u32 {
    let mut hash = Sha256::new();
    hash.update(release.as_bytes());
    hash.update([SEPARATOR]);
    hash.update(unit.as_bytes());
    let digest = hash.finalize();
    let first: [u8; 8] = digest[..8].try_into().expect("SHA-256 is 32 bytes");
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

/// The groups a side's units fall in for the judge (decision 0021): each a random sample
/// of whole units, so their spread measures the variance with units as the draw.
pub const REPLICATES: u32 = 16;

/// What routers publish (one EMF line a request), and what the judge reads a cohort
/// release by: requests, errors and latency by `FunctionName` and `Version`, by those
/// and `Assignment` (`drawn`, `pinned`, `stable`), and by those and `Replicate`.
pub mod metrics {
    pub const NAMESPACE: &str = "coalmine/Router";
    pub const REQUESTS: &str = "RoutedRequests";
    pub const ERRORS: &str = "RoutedErrors";
    /// Milliseconds from the router's call to the model's answer: what the user waited.
    pub const LATENCY: &str = "RoutedLatency";
}

/// Which of the [`REPLICATES`] groups `unit` is in, for `release`.
pub fn replicate(release: &str, unit: &str) -> u32 {
    bucket(release, unit) % REPLICATES
}

/// The AppConfig configuration profile a function's cohort is published in, by its
/// primary alias: `FUNCTION.ALIAS` (Lambda allows no dot in either name, so no two alias
/// pairs share a profile).
pub fn profile_name(function: &str, alias: &str) -> String {
    format!("{function}.{alias}")
}

/// The buckets a stage's percent of units takes: 5% is 500.
pub fn threshold(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * f64::from(BUCKETS) / 100.0).round() as u32
}

/// Units named outright, or by an attribute: a unit matches when its id is listed, or
/// when any listed attribute has one of the listed values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    #[serde(default, rename = "match", skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl Match {
    /// Why `unit` matches ("listed", "group=internal"), or `None`.
    pub fn why(&self, unit: &str, attributes: &[(&str, &str)]) -> Option<String> {
        if self.units.iter().any(|u| u == unit) {
            return Some("listed".to_owned());
        }
        self.attributes.iter().find_map(|(key, values)| {
            let (_, value) = attributes.iter().find(|(k, _)| k == key)?;
            values.iter().any(|v| v == value).then(|| format!("{key}={value}"))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.attributes.is_empty()
    }
}

/// A cohort release as the stepper publishes it for its current stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cohort {
    pub release: String,
    /// Units drawn: those whose bucket is below this, of [`BUCKETS`].
    pub threshold: u32,
    #[serde(default)]
    pub pinned: Match,
    #[serde(default)]
    pub never: Match,
    /// The alias that points at the candidate during the release: the kill switch.
    #[serde(default = "canary_alias")]
    pub alias: String,
    /// The primary alias, always the stable's.
    #[serde(default = "stable_alias")]
    pub stable_alias: String,
}

fn canary_alias() -> String {
    "canary".to_owned()
}

fn stable_alias() -> String {
    "live".to_owned()
}

/// Why a unit went where it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    NoUnit,
    Never(String),
    Pinned(String),
    Drawn { bucket: u32, threshold: u32 },
    NotDrawn { bucket: u32, threshold: u32 },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NoUnit => write!(f, "no unit id: sent to the stable"),
            Why::Never(why) => write!(f, "never given the candidate ({why})"),
            Why::Pinned(why) => write!(f, "pinned to the candidate ({why})"),
            Why::Drawn { bucket, threshold } => write!(f, "drawn: bucket {bucket} is below {threshold} of {BUCKETS}"),
            Why::NotDrawn { bucket, threshold } => {
                write!(f, "not drawn: bucket {bucket} is not below {threshold} of {BUCKETS}")
            }
        }
    }
}

impl Why {
    /// How the unit came to its side, as metrics name it: `pinned` and `drawn` units are
    /// the candidate's, the rest the stable's.
    pub fn assignment(&self) -> &'static str {
        match self {
            Why::Pinned(_) => "pinned",
            Why::Drawn { .. } => "drawn",
            _ => "stable",
        }
    }
}

/// Where a unit is sent: the alias to invoke, whether it is the candidate's, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    pub candidate: bool,
    pub alias: &'a str,
    pub why: Why,
}

/// Which alias `unit`, with its `attributes`, is sent to. Never rules first (a unit the
/// release never gives the candidate stays on the stable even if also pinned), then
/// pinned units, then the draw.
pub fn route<'a>(cohort: &'a Cohort, unit: &str, attributes: &[(&str, &str)]) -> Decision<'a> {
    let stable = |why| Decision { candidate: false, alias: &cohort.stable_alias, why };
    let candidate = |why| Decision { candidate: true, alias: &cohort.alias, why };
    if unit.is_empty() {
        return stable(Why::NoUnit);
    }
    if let Some(why) = cohort.never.why(unit, attributes) {
        return stable(Why::Never(why));
    }
    if let Some(why) = cohort.pinned.why(unit, attributes) {
        return candidate(Why::Pinned(why));
    }
    let (bucket, threshold) = (bucket(&cohort.release, unit), cohort.threshold.min(BUCKETS));
    if bucket < threshold {
        candidate(Why::Drawn { bucket, threshold })
    } else {
        stable(Why::NotDrawn { bucket, threshold })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The vectors every implementation shares, read at run time (a target directory
    /// shared by two clones must not carry the other's path).
    fn vectors() -> Value {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR when it runs tests");
        let path = std::path::Path::new(&dir).join("../../events/cohorts/assignment-vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("the shared vectors")).unwrap()
    }

    #[test]
    fn every_bucket_is_the_one_the_python_router_computes() {
        let vectors = vectors();
        let cases = vectors["buckets"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let (release, unit) = (case["release"].as_str().unwrap(), case["unit"].as_str().unwrap());
            assert_eq!(u64::from(bucket(release, unit)), case["bucket"].as_u64().unwrap(), "{release} / {unit}");
        }
    }

    #[test]
    fn every_route_is_the_one_the_python_router_takes_and_says_the_same() {
        let vectors = vectors();
        let base: Cohort = serde_json::from_value(vectors["cohort"].clone()).unwrap();
        let cases = vectors["routes"].as_array().unwrap();
        assert!(cases.iter().any(|c| c["candidate"] == true) && cases.iter().any(|c| c["candidate"] == false));
        for case in cases {
            let cohort = Cohort { threshold: case["threshold"].as_u64().unwrap() as u32, ..base.clone() };
            let attributes: Vec<(&str, &str)> = case["attributes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                .collect();
            let decision = route(&cohort, case["unit"].as_str().unwrap(), &attributes);
            assert_eq!(decision.candidate, case["candidate"], "{case}");
            assert_eq!(decision.alias, case["alias"], "{case}");
            assert_eq!(decision.why.to_string(), case["why"], "{case}");
        }
    }

    #[test]
    fn a_unit_drawn_at_a_share_stays_drawn_as_it_grows_and_a_new_release_draws_anew() {
        let units: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let drawn = |release: &str, percent: f64| -> Vec<bool> {
            let cohort = Cohort {
                release: release.into(),
                threshold: threshold(percent),
                pinned: Match::default(),
                never: Match::default(),
                alias: canary_alias(),
                stable_alias: stable_alias(),
            };
            units.iter().map(|u| route(&cohort, u, &[]).candidate).collect()
        };
        let (at5, at25, at50) = (drawn("r1", 5.0), drawn("r1", 25.0), drawn("r1", 50.0));
        assert!(at5.iter().zip(&at25).all(|(a, b)| !a || *b), "drawn at 5% is drawn at 25%");
        assert!(at25.iter().zip(&at50).all(|(a, b)| !a || *b), "drawn at 25% is drawn at 50%");
        let share = |d: &[bool]| d.iter().filter(|x| **x).count() as f64 / d.len() as f64;
        assert!((share(&at5) - 0.05).abs() < 0.006 && (share(&at25) - 0.25).abs() < 0.012, "{}", share(&at5));
        let other = drawn("r2", 5.0);
        let both = at5.iter().zip(&other).filter(|(a, b)| **a && **b).count() as f64 / units.len() as f64;
        assert!(both < 0.01, "a new release's 5% is not the old one's: {both} of units in both");
        assert!(drawn("r1", 100.0).iter().all(|x| *x) && drawn("r1", 0.0).iter().all(|x| !x));
    }

    #[test]
    fn stage_percents_become_whole_buckets() {
        assert_eq!([threshold(5.0), threshold(2.5), threshold(0.01), threshold(100.0)], [500, 250, 1, 10_000]);
        assert_eq!((threshold(-1.0), threshold(250.0)), (0, 10_000), "never outside the draw");
    }

    #[test]
    fn replicates_are_even_among_drawn_units_and_the_assignment_names_the_side() {
        let mut counts = [0u32; REPLICATES as usize];
        let drawn = (0..100_000).map(|i| format!("user-{i}")).filter(|u| bucket("r", u) < threshold(5.0));
        for unit in drawn {
            counts[replicate("r", &unit) as usize] += 1;
        }
        let (low, high) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*low > 250 && *high < 380, "about 312 drawn units in each of 16: {counts:?}");
        let cohort: Cohort = serde_json::from_str(
            r#"{"release": "r", "threshold": 500, "pinned": {"units": ["jane"]}, "never": {"units": ["bob"]}}"#,
        )
        .unwrap();
        let assignment = |unit: &str| route(&cohort, unit, &[]).why.assignment();
        assert_eq!((assignment("jane"), assignment("bob"), assignment("")), ("pinned", "stable", "stable"));
    }

    #[test]
    fn garbage_goes_to_the_stable() {
        let cohort: Cohort = serde_json::from_str(r#"{"release": "r", "threshold": 10000}"#).unwrap();
        let decision = route(&cohort, "", &[("group", "internal")]);
        assert_eq!((decision.candidate, decision.alias, decision.why), (false, "live", Why::NoUnit));
        assert!(serde_json::from_str::<Cohort>(r#"{"release": "r"}"#).is_err(), "a cohort says its threshold");
    }
}
