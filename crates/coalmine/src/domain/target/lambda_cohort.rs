//! A Lambda function's two aliases for a cohort release: the primary alias (`live`),
//! always on the stable and carrying no weights, and the cohort alias (`canary`), which a
//! router sends the cohort's units to. During a release the cohort alias points at the
//! candidate and carries the release's stamp; a rollback points it back at the stable in
//! one conditional write, whatever share any router has cached (decision 0020). Read as a
//! split: the stable is the primary alias's version, the canary the cohort alias's when it
//! differs, at weight 1 (it serves the cohort wholly) or 0.

use serde::{Deserialize, Serialize};

use super::{lambda::METRICS, Kind, LambdaAlias, ReleaseRules, ReplayBy, Role, ShadowBy, StandardMetrics, Target};
use crate::domain::split::{Split, WEIGHT_TOLERANCE};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaCohort {
    pub function: String,
    /// The primary alias: the stable's, for everyone outside the cohort.
    pub alias: String,
    /// The kill switch: the candidate's during a release, the stable's otherwise.
    pub cohort_alias: String,
}

impl LambdaCohort {
    /// One of the pair as a plain alias: the primary (`alias`) or the cohort alias.
    pub fn alias_named(&self, alias: &str) -> LambdaAlias {
        LambdaAlias { function: self.function.clone(), alias: alias.to_owned() }
    }

    /// `lambda-cohort:FUNCTION:ALIAS:COHORT_ALIAS`, the parts after `lambda-cohort`.
    pub(super) fn parse(parts: &[&str]) -> Result<Target, String> {
        match parts {
            [_, alias, cohort] if alias == cohort => {
                Err("the cohort alias must differ from the primary alias".to_owned())
            }
            [function, alias, cohort] => Ok(Target::LambdaCohort(LambdaCohort {
                function: (*function).to_owned(),
                alias: (*alias).to_owned(),
                cohort_alias: (*cohort).to_owned(),
            })),
            _ => Err(String::new()),
        }
    }
}

impl Kind for LambdaCohort {
    fn write_name(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lambda-cohort:{}:{}:{}", self.function, self.alias, self.cohort_alias)
    }

    fn side_noun(&self) -> &'static str {
        "version"
    }

    /// The primary alias's version is the stable, by structure.
    fn has_fixed_roles(&self) -> bool {
        true
    }

    fn names_its_stable(&self) -> bool {
        true
    }

    /// The primary alias's: a weighted release and a cohort release on one alias exclude
    /// each other.
    fn claim_key(&self) -> String {
        self.alias_named(&self.alias).claim_key()
    }

    fn with_roles(&self, _stable: &str, _canary: &str) -> Target {
        Target::LambdaCohort(self.clone())
    }

    fn as_named_by_dimensions(&self) -> Target {
        Target::LambdaCohort(self.clone())
    }

    fn is_split_of(&self, _split: &Split) -> bool {
        true
    }

    /// Below 100% the cohort alias serves the candidate wholly (which units reach it is
    /// the published share's business); at 100% both aliases name the candidate.
    fn stage_split(&self, stable: &str, _live: &Split, weight: f64, candidate: &str) -> Split {
        if weight >= 1.0 {
            return Split::stable_only(candidate, None);
        }
        Split {
            stable: stable.to_owned(),
            canary: Some(candidate.to_owned()),
            canary_weight: 1.0,
            others_weight: 0.0,
            mirror: 0.0,
            revision: None,
            stamp: None,
        }
    }

    fn candidate<'a>(&'a self, canary_version: Option<&'a str>) -> &'a str {
        canary_version.unwrap_or_default()
    }

    fn release_rules(&self, rules: &mut ReleaseRules<'_>) {
        super::lambda::version_rules(rules);
    }

    fn cohort_aliases(&self) -> Option<(&str, &str)> {
        Some((&self.alias, &self.cohort_alias))
    }

    fn cohort_profile(&self) -> Option<String> {
        Some(coalmine_router::profile_name(&self.function, &self.alias))
    }

    fn shadow_by(&self) -> ShadowBy<'_> {
        ShadowBy::LogFeed { function: &self.function }
    }

    fn replay_by(&self) -> ReplayBy<'_> {
        ReplayBy::Invoke { function: &self.function }
    }

    fn standard_metrics(&self) -> Option<&'static StandardMetrics> {
        Some(&METRICS)
    }

    fn unit_metrics(&self) -> Option<super::UnitMetrics> {
        Some(super::UnitMetrics { metrics: &super::ROUTER_METRICS, function: self.function.clone() })
    }

    /// The candidate serves through the cohort alias, the stable through the primary one.
    fn metric_dimensions(&self, id: &str, _config: Option<&str>, role: Role) -> Vec<(&'static str, String)> {
        let alias = match role {
            Role::Candidate => &self.cohort_alias,
            Role::Stable => &self.alias,
        };
        vec![
            ("FunctionName", self.function.clone()),
            ("Resource", format!("{}:{alias}", self.function)),
            ("ExecutedVersion", id.to_owned()),
        ]
    }

    fn describe(&self, split: &Split) -> Option<String> {
        let stable = format!("version {}", split.stable);
        Some(match &split.canary {
            Some(canary) if split.canary_weight > WEIGHT_TOLERANCE => format!(
                "{stable} serves alias {}; the cohort alias {} serves canary version {canary}",
                self.alias, self.cohort_alias
            ),
            _ => format!("{stable} serves both aliases, {} and {}, no canary", self.alias, self.cohort_alias),
        })
    }
}
