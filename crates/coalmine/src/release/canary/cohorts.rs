//! A cohort release's `cohorts` block (decision 0020): what a unit is, which units are
//! pinned to the candidate from the first moment, and which are never given it. Its
//! stages are then shares of units, drawn by the published assignment
//! ([`coalmine_router::bucket`]), and the stepper publishes each stage's as a
//! [`Cohort`] for the routers to read.

use std::collections::BTreeSet;

use coalmine_router::{threshold, Cohort, Match, BUCKETS};
use serde::{Deserialize, Serialize};

use crate::release::core::document::Problems;

/// Units named outright, pinned and never together. Each router parses the published
/// cohort at every poll, and the release (lists included) rides in every Step Functions
/// state, which holds 256 KiB: 500 ids of 128 bytes stay a quarter of that. A larger
/// group is an attribute (`group = internal`), which costs nothing per member.
pub const MAX_LISTED_UNITS: usize = 500;
/// Attribute values named, pinned and never together.
pub const MAX_ATTRIBUTE_VALUES: usize = 100;
/// The longest unit id, attribute name or value a rule may name.
pub const MAX_NAME_BYTES: usize = 128;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cohorts {
    /// What a unit is, as the team says it: "user", "conversation", "tenant". The router's
    /// caller passes its id; the words go into plans, status and messages.
    pub unit: String,
    /// Served the candidate from the first stage: listed ids, or attributes
    /// (`{"match": {"group": ["internal"]}}`).
    #[serde(default, skip_serializing_if = "Match::is_empty")]
    pub pinned: Match,
    /// Never served the candidate, whatever the draw or a pin says.
    #[serde(default, skip_serializing_if = "Match::is_empty")]
    pub never: Match,
}

impl Cohorts {
    /// The cohort routers read while the release is at `percent` of units: the stable's
    /// alias and the kill switch as the target names them.
    pub fn at(&self, release: &str, percent: f64, aliases: (&str, &str)) -> Cohort {
        let (stable_alias, alias) = aliases;
        Cohort {
            release: release.to_owned(),
            threshold: threshold(percent),
            pinned: self.pinned.clone(),
            never: self.never.clone(),
            alias: alias.to_owned(),
            stable_alias: stable_alias.to_owned(),
        }
    }

    /// Nobody on the candidate: what routers read once a release has ended, and what a
    /// later release replaces before its cohort alias moves.
    pub fn nobody(release: &str, aliases: (&str, &str)) -> Cohort {
        let (stable_alias, alias) = aliases;
        Cohort {
            release: release.to_owned(),
            threshold: 0,
            pinned: Match::default(),
            never: Match::default(),
            alias: alias.to_owned(),
            stable_alias: stable_alias.to_owned(),
        }
    }

    /// The unit in the plural: "users", "conversations".
    pub fn units(&self) -> String {
        plural(&self.unit)
    }

    pub fn has_pins(&self) -> bool {
        !self.pinned.is_empty()
    }

    /// A stage's share in words: "5% of conversations", "the pinned users alone".
    pub fn share(&self, percent: f64) -> String {
        let units = plural(&self.unit);
        if percent == 0.0 {
            format!("the pinned {units} alone")
        } else {
            format!("{} of {units}", crate::text::percent(percent / 100.0))
        }
    }

    /// How the judge weighs the cohort (decision 0021), in a sentence.
    pub fn judged(&self) -> String {
        let units = plural(&self.unit);
        let drawn = format!(
            "drawn {units} against the stable's with the {unit} as the draw ({} random groups of {units})",
            coalmine_router::REPLICATES,
            unit = self.unit.trim(),
        );
        if self.has_pins() {
            format!(
                "{drawn}; pinned {units} on absolute limits only (max_error_rate, max_p95_latency_ms, custom max/min, \
                 alarms), never compared with the stable"
            )
        } else {
            drawn
        }
    }

    /// Who goes first and who never: "pinned group=internal and 3 listed; never 1 listed".
    pub fn rules(&self) -> String {
        let describe = |rule: &Match| -> Option<String> {
            let mut parts: Vec<String> =
                rule.attributes.iter().map(|(key, values)| format!("{key}={}", values.join("|"))).collect();
            if !rule.units.is_empty() {
                parts.push(format!("{} listed", rule.units.len()));
            }
            (!parts.is_empty()).then(|| parts.join(" and "))
        };
        match (describe(&self.pinned), describe(&self.never)) {
            (None, None) => "none pinned".to_owned(),
            (Some(pinned), None) => format!("pinned {pinned}"),
            (None, Some(never)) => format!("none pinned; never {never}"),
            (Some(pinned), Some(never)) => format!("pinned {pinned}; never {never}"),
        }
    }

    /// Bad input is refused before anything moves, each problem against its field.
    pub fn check(&self, percents: &[f64], problems: &mut Problems) {
        let unit = self.unit.trim();
        if unit.is_empty() || unit.len() > 64 {
            problems.add(
                "cohorts.unit",
                "say what a unit is in 1 to 64 characters: \"user\", \"conversation\", \"tenant\" (the id the router's \
                 caller passes)",
            );
        }
        check_match("cohorts.pinned", &self.pinned, problems);
        check_match("cohorts.never", &self.never, problems);
        let listed = self.pinned.units.len() + self.never.units.len();
        if listed > MAX_LISTED_UNITS {
            problems.add(
                "cohorts.pinned.units",
                format!(
                    "{listed} units listed (pinned and never): at most {MAX_LISTED_UNITS}; name a larger group by an \
                     attribute the router's caller passes (\"match\": {{\"group\": [\"internal\"]}})"
                ),
            );
        }
        let values: usize = [&self.pinned, &self.never].iter().flat_map(|m| m.attributes.values()).map(Vec::len).sum();
        if values > MAX_ATTRIBUTE_VALUES {
            problems.add(
                "cohorts.pinned.match",
                format!("{values} attribute values named (pinned and never): at most {MAX_ATTRIBUTE_VALUES}"),
            );
        }
        self.check_pins_can_match(problems);
        self.check_shares(percents, problems);
    }

    /// Never rules come first, so a pin that a never rule also names can never match.
    fn check_pins_can_match(&self, problems: &mut Problems) {
        let never: BTreeSet<&str> = self.never.units.iter().map(String::as_str).collect();
        for (i, unit) in self.pinned.units.iter().enumerate() {
            if never.contains(unit.as_str()) {
                problems.add(
                    &format!("cohorts.pinned.units[{i}]"),
                    format!("{unit:?} is also in cohorts.never.units, which wins: the pin can never match"),
                );
            }
        }
        for (key, values) in &self.pinned.attributes {
            let Some(never) = self.never.attributes.get(key) else {
                continue;
            };
            for value in values.iter().filter(|v| never.contains(v)) {
                problems.add(
                    &format!("cohorts.pinned.match.{key}"),
                    format!("{value:?} is also in cohorts.never.match.{key}, which wins: the pin can never match"),
                );
            }
        }
    }

    /// A share is drawn in hundredths of a percent; 0 serves only the pinned units, and
    /// only a first stage may (the shares climb from there).
    fn check_shares(&self, percents: &[f64], problems: &mut Problems) {
        for (i, &percent) in percents.iter().enumerate() {
            let at = format!("stages[{i}].percent");
            if percent == 0.0 {
                if i > 0 {
                    problems.add(&at, "0 serves only the pinned units: only the first stage may");
                } else if !self.has_pins() {
                    problems.add(
                        &at,
                        "0 serves only the pinned units, and cohorts.pinned names none: pin the units that go first \
                         (\"pinned\": {\"match\": {\"group\": [\"internal\"]}}), or start above 0",
                    );
                }
            } else if percent > 0.0 && threshold(percent) == 0 {
                problems.add(
                    &at,
                    format!(
                        "{percent} is below the finest share the draw makes, 1 unit in {BUCKETS} (0.01%): the stage \
                         would draw nobody"
                    ),
                );
            }
        }
    }
}

/// "user" → "users"; a unit the team named already in the plural stays so.
fn plural(unit: &str) -> String {
    let unit = unit.trim();
    if unit.ends_with('s') {
        unit.to_owned()
    } else {
        format!("{unit}s")
    }
}

/// A rule that names an empty id, key or value, or a key with no values, can never match.
fn check_match(field: &str, rule: &Match, problems: &mut Problems) {
    let mut seen = BTreeSet::new();
    for (i, unit) in rule.units.iter().enumerate() {
        let at = format!("{field}.units[{i}]");
        if unit.is_empty() {
            problems
                .add(&at, "an empty id: the router sends a unit without an id to the stable, so it can never match");
        } else if unit.len() > MAX_NAME_BYTES {
            problems.add(&at, format!("{} bytes: at most {MAX_NAME_BYTES}", unit.len()));
        } else if !seen.insert(unit) {
            problems.add(&at, format!("{unit:?} is listed twice"));
        }
    }
    for (key, values) in &rule.attributes {
        let at = format!("{field}.match.{key}");
        if key.is_empty() || key.len() > MAX_NAME_BYTES {
            problems.add(&format!("{field}.match"), format!("an attribute name must be 1 to {MAX_NAME_BYTES} bytes"));
        }
        if values.is_empty() {
            problems.add(&at, "no values: the rule can never match; list the values that match, or drop the key");
        }
        for value in values {
            if value.is_empty() || value.len() > MAX_NAME_BYTES {
                problems.add(&at, format!("{value:?}: a value must be 1 to {MAX_NAME_BYTES} bytes"));
            }
        }
    }
}
