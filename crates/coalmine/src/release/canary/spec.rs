//! A weight canary release: the Step Functions execution input, validated strictly
//! before any traffic moves. Every error names the field and what is allowed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::error::Error;
use crate::domain::target::{ReplayBy, ShadowBy, Target};
use crate::release::canary::cohorts::Cohorts;
use crate::release::canary::replay_spec::Replay;
use crate::release::canary::shadow_spec::Shadow;
use crate::release::core::document::{self, check_name, Problems, Rules};
use crate::release::core::limits;
use crate::release::judge::gates::{Gates, JudgeKind, OnInsufficientData};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub release: String,
    pub target: Target,
    /// Lambda: the published version to canary. SageMaker, Azure ML: absent (the target
    /// names the canary variant or deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,
    pub stages: Vec<Stage>,
    pub check_every_seconds: u64,
    #[serde(default)]
    pub gates: Gates,
    /// Lambda and Azure ML: before the first stage, the candidate answers copies of live
    /// requests and nobody sees its answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    /// Lambda: first of all, the candidate and the stable answer the same requests from a
    /// golden set or the stable's recent ones, judged as a shadow is (decision 0023).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Box<Replay>>,
    /// A cohort release (a `lambda-cohort` target): its stages are shares of units, and
    /// these say what a unit is and who goes first or never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohorts: Option<Cohorts>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub percent: f64,
    /// A fixed stage's bake; an evidence-driven stage's shortest (say, the time its gate
    /// alarms take to evaluate).
    #[serde(default)]
    pub bake_seconds: u64,
    #[serde(default, skip_serializing_if = "Bake::is_fixed")]
    pub bake: Bake,
    /// An evidence-driven stage's longest bake: then `on_insufficient_data` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bake_seconds: Option<u64>,
    /// After its bake, the stage waits at its weight, still judged, until
    /// `coalmine approve` (or a promote) lets it go on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
    /// How long a stage waits for approval before it rolls back (fail safe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_seconds: Option<u64>,
}

/// How a stage's bake ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bake {
    /// After `bake_seconds`.
    #[default]
    Fixed,
    /// As soon as every enforced test has shown the canary is no worse than twice its
    /// tolerance (after `bake_seconds`, if set), at the latest after `max_bake_seconds`.
    UntilConclusive,
}

impl Bake {
    pub fn is_fixed(&self) -> bool {
        *self == Bake::Fixed
    }
}

/// A day: long enough for a person to look, short enough that a forgotten release
/// does not sit half-rolled-out for a week.
pub const DEFAULT_APPROVAL_TIMEOUT: u64 = 86_400;

impl Stage {
    pub fn new(percent: f64, bake_seconds: u64) -> Stage {
        Stage {
            percent,
            bake_seconds,
            bake: Bake::Fixed,
            max_bake_seconds: None,
            approval: false,
            approval_timeout_seconds: None,
        }
    }

    /// An evidence-driven stage that bakes at most `max_bake_seconds`.
    pub fn until_conclusive(percent: f64, max_bake_seconds: u64) -> Stage {
        Stage { bake: Bake::UntilConclusive, max_bake_seconds: Some(max_bake_seconds), ..Stage::new(percent, 0) }
    }

    pub fn is_evidence_driven(&self) -> bool {
        self.bake == Bake::UntilConclusive
    }

    /// The longest the stage bakes before `on_insufficient_data` has a say.
    pub fn longest_bake(&self) -> u64 {
        match self.bake {
            Bake::Fixed => self.bake_seconds,
            Bake::UntilConclusive => self.max_bake_seconds.unwrap_or(self.bake_seconds),
        }
    }

    /// The soonest it can be over: an evidence-driven stage is judged once at the least.
    pub fn shortest_bake(&self, check_every_seconds: u64) -> u64 {
        match self.bake {
            Bake::Fixed => self.bake_seconds,
            Bake::UntilConclusive => self.bake_seconds.max(check_every_seconds).min(self.longest_bake()),
        }
    }

    pub fn weight(&self) -> f64 {
        self.percent / 100.0
    }

    pub fn is_full(&self) -> bool {
        self.percent >= 100.0
    }

    pub fn approval_timeout(&self) -> u64 {
        self.approval_timeout_seconds.unwrap_or(DEFAULT_APPROVAL_TIMEOUT)
    }
}

impl Release {
    /// Parses and validates: unknown fields, bad values and impossible combinations are
    /// errors naming the field.
    pub fn parse(value: &Value) -> Result<Release, Error> {
        document::parse(value)
    }

    /// What running it takes: each stage's bake, the time to promotion if every stage is
    /// healthy at its first chance (and at the latest, for evidence-driven stages), and
    /// how many ticks that is.
    pub fn plan(&self) -> Plan {
        let checks = |bake: u64| bake.div_ceil(self.check_every_seconds).max(1);
        let stages: Vec<PlannedStage> = self
            .stages
            .iter()
            .map(|s| PlannedStage {
                percent: s.percent,
                bake_seconds: s.shortest_bake(self.check_every_seconds),
                max_bake_seconds: s.is_evidence_driven().then(|| s.longest_bake()),
                approval: s.approval,
                ticks: checks(s.longest_bake()),
            })
            .collect();
        // The shadow comes first: at least one check when it may end on evidence.
        let (shadow_least, shadow_most) = match &self.shadow {
            Some(s) if s.until_conclusive => (self.check_every_seconds.min(s.duration_seconds), s.duration_seconds),
            Some(s) => (s.duration_seconds, s.duration_seconds),
            None => (0, 0),
        };
        let shadow_ticks = if self.shadow.is_some() { checks(shadow_most) } else { 0 };
        // The replay comes before it: its requests' time, or less when it may conclude.
        let (replay_least, replay_most) = match &self.replay {
            Some(r) => {
                let most = r.longest(self.check_every_seconds);
                (if r.until_conclusive { self.check_every_seconds.min(most) } else { most }, most)
            }
            None => (0, 0),
        };
        let (shadow_least, shadow_most) =
            (shadow_least.saturating_add(replay_least), shadow_most.saturating_add(replay_most));
        let shadow_ticks = shadow_ticks + if self.replay.is_some() { checks(replay_most) } else { 0 };
        // Saturating: a plan is also drawn for a release whose bakes are refused as too long.
        let sum = |values: &mut dyn Iterator<Item = u64>| values.fold(0u64, u64::saturating_add);
        Plan {
            earliest_promotion_seconds: shadow_least.saturating_add(sum(&mut stages.iter().map(|s| s.bake_seconds))),
            latest_promotion_seconds: shadow_most
                .saturating_add(sum(&mut stages.iter().map(|s| s.max_bake_seconds.unwrap_or(s.bake_seconds)))),
            ticks: sum(&mut [1, shadow_ticks].into_iter().chain(stages.iter().map(|s| s.ticks))),
            waits_for_approval: self.stages.iter().any(|s| s.approval),
            stages,
        }
    }

    /// The first problem, if any (every one: [`Rules::check`]).
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Problems::default();
        self.check(&mut problems);
        match problems.into_vec().as_slice() {
            [] => Ok(()),
            all => Err(Error::InvalidRelease(all.join("; "))),
        }
    }

    /// What its kind of target asks of a release (a Lambda version, named variants or
    /// deployments, whole percents on Azure ML, ...).
    fn check_target(&self, problems: &mut Problems) {
        let percents: Vec<f64> = self.stages.iter().map(|s| s.percent).collect();
        let custom = !self.gates.custom.is_empty();
        for (field, why) in self.target.release_problems(self.canary_version.as_deref(), &percents, custom) {
            problems.add(&field, why);
        }
    }

    fn check_stages(&self, problems: &mut Problems) {
        if self.stages.is_empty() {
            return problems.add("stages", "at least one stage is required, the last at percent 100");
        }
        let fractions = self.stages.iter().all(|s| s.percent > 0.0 && s.percent <= 1.0) && self.stages.len() > 1;
        if fractions {
            let first = self.stages[0].percent;
            return problems.add(
                "stages[0].percent",
                format!(
                    "{first} looks like a fraction of 1, but percent counts to 100: write {} for {}%",
                    first * 100.0,
                    first * 100.0
                ),
            );
        }
        let mut previous = 0.0;
        for (i, stage) in self.stages.iter().enumerate() {
            let at = |field: &str| format!("stages[{i}].{field}");
            // A cohort's first stage may serve its pinned units alone (its cohorts block says
            // when not).
            let pinned_only = i == 0 && stage.percent == 0.0 && self.cohorts.is_some();
            if pinned_only {
                previous = -1.0;
            } else if !(stage.percent > 0.0 && stage.percent <= 100.0) {
                problems.add(&at("percent"), format!("{} is outside (0, 100]", stage.percent));
            } else if stage.percent <= previous {
                problems
                    .add(&at("percent"), format!("{} must be above the previous stage's {previous}", stage.percent));
            }
            previous = stage.percent.max(previous).max(0.0);
            match stage.approval_timeout_seconds {
                Some(_) if !stage.approval => problems
                    .add(&at("approval_timeout_seconds"), "only a stage with \"approval\": true waits for approval"),
                Some(timeout) if !(60..=604_800).contains(&timeout) => {
                    problems.add(&at("approval_timeout_seconds"), format!("{timeout} is outside 60..=604800"))
                }
                _ => {}
            }
            match (stage.bake, stage.max_bake_seconds) {
                (Bake::Fixed, _) if stage.bake_seconds == 0 => problems.add(
                    &at("bake_seconds"),
                    "0: every stage must bake for at least a second, or it is promoted on no evidence",
                ),
                (Bake::Fixed, Some(_)) => problems.add(
                    &at("max_bake_seconds"),
                    "only an evidence-driven stage (\"bake\": \"until_conclusive\") has a longest bake",
                ),
                (Bake::UntilConclusive, None | Some(0)) => problems.add(
                    &at("max_bake_seconds"),
                    "required for \"bake\": \"until_conclusive\": the longest the stage waits for evidence",
                ),
                (Bake::UntilConclusive, Some(max)) if max < stage.bake_seconds => problems.add(
                    &at("max_bake_seconds"),
                    format!("{max} is below the stage's shortest bake, bake_seconds {}", stage.bake_seconds),
                ),
                _ => {}
            }
        }
        if self.stages.last().is_some_and(|s| s.percent != 100.0) && previous < 100.0 {
            problems.add("stages", format!("the last stage must be at percent 100, not {previous}"));
        }
    }

    /// What one execution can hold: stages, and the bakes at their longest in time and in
    /// checks. Holds, pauses and approval waits are a release's to spend within that
    /// (in time: their own limits; in checks: the stepper ends a release that runs out).
    fn check_execution_limits(&self, problems: &mut Problems) {
        if self.stages.len() > limits::MAX_STAGES {
            problems.add(
                "stages",
                format!("{} stages: at most {} (one execution holds that many)", self.stages.len(), limits::MAX_STAGES),
            );
        }
        if self.check_every_seconds == 0 {
            return; // said already; the checks cannot be counted
        }
        let hold = match self.gates.on_insufficient_data {
            OnInsufficientData::Hold => self.gates.max_hold_seconds,
            _ => 0,
        };
        if hold > limits::MAX_RELEASE_SECONDS {
            return limits::check(&[("gates.max_hold_seconds".to_owned(), hold)], self.check_every_seconds, problems);
        }
        let mut phases = Vec::new();
        if let Some(replay) = &self.replay {
            phases.push(("replay.duration_seconds".to_owned(), replay.longest(self.check_every_seconds)));
        }
        if let Some(shadow) = &self.shadow {
            phases.push(("shadow.duration_seconds".to_owned(), shadow.duration_seconds));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            for (field, value) in [("bake_seconds", stage.bake_seconds), ("max_bake_seconds", stage.longest_bake())] {
                if value > limits::MAX_RELEASE_SECONDS {
                    return limits::check(
                        &[(format!("stages[{i}].{field}"), value)],
                        self.check_every_seconds,
                        problems,
                    );
                }
            }
            phases.push((format!("stages[{i}]"), stage.longest_bake()));
        }
        limits::check(&phases, self.check_every_seconds, problems);
    }

    /// The canary's identity in metrics and splits: Lambda version, SageMaker variant or
    /// Azure ML deployment.
    pub fn canary_id(&self) -> &str {
        self.target.candidate(self.canary_version.as_deref())
    }
}

impl Rules for Release {
    fn check(&self, problems: &mut Problems) {
        check_name(&self.release, problems);
        self.check_target(problems);
        self.check_stages(problems);
        if self.check_every_seconds == 0 || self.check_every_seconds > 86_400 {
            problems.add("check_every_seconds", format!("{} is outside 1..=86400", self.check_every_seconds));
        }
        self.gates.check(problems);
        self.check_evidence_driven(problems);
        self.check_shadow(problems);
        self.check_replay(problems);
        self.check_cohorts(problems);
        self.check_execution_limits(problems);
    }
}

impl Release {
    /// A cohort release needs a target with a kill-switch alias, and that target needs a
    /// cohort release.
    fn check_cohorts(&self, problems: &mut Problems) {
        match (&self.cohorts, self.target.cohort_aliases()) {
            (Some(cohorts), Some(_)) => {
                let percents: Vec<f64> = self.stages.iter().map(|s| s.percent).collect();
                cohorts.check(&percents, problems);
            }
            (Some(_), None) => problems.add(
                "cohorts",
                format!(
                    "{} routes requests by weight, not units by cohort: a cohort release needs a second alias as its \
                     kill switch, \"target\": {{\"lambda_cohort\": {{\"function\": ..., \"alias\": \"live\", \
                     \"cohort_alias\": \"canary\"}}}} (docs/cohorts.md)",
                    self.target
                ),
            ),
            (None, Some(_)) => problems.add(
                "cohorts",
                "required on a lambda_cohort target: say what a unit is (\"cohorts\": {\"unit\": \"user\"}) and, if \
                 any go first, which are pinned",
            ),
            (None, None) => {}
        }
    }

    /// A stage's share in words: "5%" of requests, or "5% of users" for a cohort release.
    pub fn share_text(&self, stage: usize) -> String {
        let percent = self.stages.get(stage).map_or(0.0, |s| s.percent);
        match &self.cohorts {
            Some(cohorts) => cohorts.share(percent),
            None => crate::text::percent(percent / 100.0),
        }
    }

    /// The cohort routers read at `stage`, for a cohort release.
    pub fn cohort_at(&self, stage: usize) -> Option<coalmine_router::Cohort> {
        let cohorts = self.cohorts.as_ref()?;
        let aliases = self.target.cohort_aliases()?;
        Some(cohorts.at(&self.release, self.stages.get(stage)?.percent, aliases))
    }

    /// Nobody drawn and nobody pinned: what routers read once a cohort release has ended.
    pub fn cohort_ended(&self) -> Option<coalmine_router::Cohort> {
        self.cohorts.as_ref()?;
        Some(Cohorts::nobody(&self.release, self.target.cohort_aliases()?))
    }

    fn check_shadow(&self, problems: &mut Problems) {
        let Some(shadow) = &self.shadow else {
            return;
        };
        if shadow.until_conclusive && (self.gates.judge != JudgeKind::Sequential || !self.gates.enforce) {
            problems.add(
                "shadow.until_conclusive",
                "needs the sequential judge and enforced tests, as an evidence-driven stage does",
            );
        }
        match self.target.shadow_by() {
            ShadowBy::LogFeed { function } => {
                // The stable is only known at the start; a placeholder of a version's longest
                // length checks the feed's size.
                let feed = shadow.feed(&self.release, function, "99999999", self.canary_id());
                shadow.check(&feed, problems);
            }
            ShadowBy::Mirror => shadow.check_mirror(problems),
            ShadowBy::No(why) => problems.add("shadow", why),
        }
    }

    fn check_replay(&self, problems: &mut Problems) {
        let Some(replay) = &self.replay else {
            return;
        };
        if replay.until_conclusive && (self.gates.judge != JudgeKind::Sequential || !self.gates.enforce) {
            problems.add(
                "replay.until_conclusive",
                "needs the sequential judge and enforced tests, as an evidence-driven stage does",
            );
        }
        match self.target.replay_by() {
            ReplayBy::Invoke { .. } => replay.check(self.check_every_seconds, problems),
            ReplayBy::No(why) => problems.add("replay", why),
        }
    }

    /// The feed the shadow function answers a replay's slices with, once the stable is
    /// known.
    pub fn replay_feed(&self, stable: &str) -> Option<crate::domain::shadow::Feed> {
        match (&self.replay, self.target.replay_by()) {
            (Some(replay), ReplayBy::Invoke { function }) => {
                Some(replay.feed(&self.release, function, stable, self.canary_id()))
            }
            _ => None,
        }
    }

    /// The share of live requests an Azure ML endpoint mirrors to the candidate while the
    /// release shadows it; 0 for a target that cannot mirror.
    pub fn mirror_share(&self) -> f64 {
        match (&self.shadow, self.target.shadow_by()) {
            (Some(shadow), ShadowBy::Mirror) => shadow.sample,
            _ => 0.0,
        }
    }

    /// The feed the shadow function reads, once the stable is known.
    pub fn shadow_feed(&self, stable: &str) -> Option<crate::domain::shadow::Feed> {
        match (&self.shadow, self.target.shadow_by()) {
            (Some(shadow), ShadowBy::LogFeed { function }) => {
                Some(shadow.feed(&self.release, function, stable, self.canary_id()))
            }
            _ => None,
        }
    }

    /// An evidence-driven stage needs tests that can conclude.
    fn check_evidence_driven(&self, problems: &mut Problems) {
        let Some(i) = self.stages.iter().position(Stage::is_evidence_driven) else {
            return;
        };
        let at = format!("stages[{i}].bake");
        if self.gates.judge != JudgeKind::Sequential {
            problems.add(&at, "\"until_conclusive\" needs the sequential judge: a fixed-horizon test never concludes");
        } else if !self.gates.enforce {
            problems.add(
                &at,
                "\"until_conclusive\" needs enforced tests: with gates.enforce false (a dry run) the stage would \
                 advance on tests that never act; bake for a fixed time while the judge runs dry",
            );
        }
    }
}

/// [`Release::plan`]: what a release takes when all goes well.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub stages: Vec<PlannedStage>,
    /// The sum of the bakes (an evidence-driven stage's shortest): no release is promoted
    /// sooner.
    pub earliest_promotion_seconds: u64,
    /// The same with every evidence-driven stage at its longest: a healthy release that
    /// never holds or waits for approval is promoted by then.
    pub latest_promotion_seconds: u64,
    /// Ticks (stepper invocations) to promotion at the latest: the start, then a check
    /// per `check_every_seconds` of each bake.
    pub ticks: u64,
    /// Some stage waits for a person, so promotion takes that long too.
    pub waits_for_approval: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedStage {
    pub percent: f64,
    /// The bake; an evidence-driven stage's shortest.
    pub bake_seconds: u64,
    /// An evidence-driven stage's longest bake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bake_seconds: Option<u64>,
    pub approval: bool,
    pub ticks: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::release::core::document::tests::sample_json;
    use crate::release::judge::gates::DEFAULT_MIN_REQUESTS;

    pub(crate) fn lambda_release() -> Release {
        Release::parse(&sample_json("lambda-ai-handler-42.json")).unwrap()
    }

    #[test]
    fn the_sample_releases_are_valid() {
        assert_eq!(lambda_release().canary_id(), "42");
        let sagemaker = Release::parse(&sample_json("sagemaker-ai-model-7.json")).unwrap();
        assert_eq!(sagemaker.canary_id(), "canary");
        assert_eq!(sagemaker.gates.custom[0].max, Some(5.0));
        let shadowed = Release::parse(&sample_json("lambda-ai-classifier-shadow-7.json")).unwrap();
        let feed = shadowed.shadow_feed("6").unwrap();
        assert_eq!((feed.candidate.as_str(), feed.sample, feed.function.as_str()), ("7", 0.1, "ai-classifier"));
        assert_eq!(shadowed.shadow.as_ref().unwrap().gates(&shadowed.release).len(), 2);
        // An hour's shadow before 900 + 900 + 600 s of stages, checked every minute.
        let plan = shadowed.plan();
        assert_eq!((plan.earliest_promotion_seconds, plan.ticks), (3600 + 2400, 1 + 60 + 15 + 15 + 10));
    }

    #[test]
    fn a_shadow_is_a_lambda_releases_and_says_what_a_sagemaker_release_uses_instead() {
        let mut json = sample_json("sagemaker-ai-model-7.json");
        json["shadow"] = sample_json("lambda-ai-classifier-shadow-7.json")["shadow"].clone();
        let refused = Release::parse(&json).unwrap_err().to_string();
        assert!(refused.contains("shadow: a Lambda or Azure ML release's phase"), "{refused}");
        assert!(refused.contains("shadow variants"), "{refused}");
    }

    #[test]
    fn an_azure_release_names_two_deployments_climbs_in_whole_percents_and_mirrors_in_its_shadow() {
        let azure = Release::parse(&sample_json("azureml-chat-model-2.json")).unwrap();
        assert_eq!(azure.canary_id(), "green");
        assert_eq!(azure.mirror_share(), 0.2);
        assert_eq!(azure.shadow_feed("blue"), None, "Azure mirrors by itself: no shadow function");
        assert_eq!(
            azure.target.to_string(),
            "azureml:00000000-1111-2222-3333-444444444444:ml-prod:ml-workspace:chat-endpoint:blue:green"
        );
        assert_eq!(lambda_release().mirror_share(), 0.0);

        let refused = |change: &dyn Fn(&mut Value)| {
            let mut json = sample_json("azureml-chat-model-2.json");
            change(&mut json);
            Release::parse(&json).unwrap_err().to_string()
        };
        let half = refused(&|j| j["stages"][0]["percent"] = serde_json::json!(2.5));
        assert!(
            half.contains("stages[0].percent: 2.5: Azure ML sets an endpoint's traffic in whole percents; use 2 or 3"),
            "{half}"
        );
        let no_stable = refused(&|j| {
            j["target"]["azureml"].as_object_mut().unwrap().remove("stable_deployment");
        });
        assert!(no_stable.contains("target.azureml.stable_deployment: required"), "{no_stable}");
        let same = refused(&|j| j["target"]["azureml"]["stable_deployment"] = "green".into());
        assert!(same.contains("stable_deployment and canary_deployment must differ"), "{same}");
        let version = refused(&|j| j["canary_version"] = "2".into());
        assert!(version.contains("canary_version: not used for an Azure ML target"), "{version}");
        let slash = refused(&|j| j["target"]["azureml"]["endpoint"] = "chat/x".into());
        assert!(slash.contains("target.azureml.endpoint: \"chat/x\" is not an Azure resource name"), "{slash}");
        let custom = refused(
            &|j| j["gates"]["custom"] = serde_json::json!([{"namespace": "AIService", "metric": "Tokens", "stat": "p90", "max_increase_ratio": 0.2}]),
        );
        assert!(custom.contains("gates.custom: not available for an Azure ML target yet"), "{custom}");
        let compared = refused(&|j| j["shadow"]["compare"] = "exact".into());
        assert!(compared.contains("shadow.compare: not for an Azure ML shadow"), "{compared}");
        let too_much = refused(&|j| j["shadow"]["sample"] = serde_json::json!(0.75));
        assert!(too_much.contains("Azure ML mirrors at most half an endpoint's traffic"), "{too_much}");
    }

    #[test]
    fn a_plan_says_how_long_at_the_least_and_how_many_ticks() {
        let plan = lambda_release().plan();
        // 5/25/50/100 with 900, 900, 900, 600 s bakes, checked every 60 s.
        assert_eq!(plan.stages.iter().map(|s| s.percent).collect::<Vec<_>>(), [5.0, 25.0, 50.0, 100.0]);
        assert_eq!(plan.earliest_promotion_seconds, 3300);
        assert_eq!(plan.ticks, 1 + 15 + 15 + 15 + 10);
        assert!(!plan.waits_for_approval);
        assert_eq!(plan.latest_promotion_seconds, 3300, "fixed bakes: the earliest is the latest");
    }

    #[test]
    fn an_evidence_driven_plan_says_its_shortest_and_longest() {
        let mut json = sample_json("lambda-ai-handler-42.json");
        json["stages"][0] = serde_json::json!({"percent": 5, "bake": "until_conclusive", "max_bake_seconds": 1800});
        json["stages"][1] = serde_json::json!({"percent": 25, "bake": "until_conclusive", "bake_seconds": 300, "max_bake_seconds": 900});
        let plan = Release::parse(&json).unwrap().plan();
        // At the soonest, one check (60 s), then 300 s; at the latest, 1800 and 900 s.
        assert_eq!(plan.earliest_promotion_seconds, 60 + 300 + 900 + 600);
        assert_eq!(plan.latest_promotion_seconds, 1800 + 900 + 900 + 600);
        assert_eq!(plan.ticks, 1 + 30 + 15 + 15 + 10, "ticks at the latest");
        assert_eq!(plan.stages[0].max_bake_seconds, Some(1800));
    }

    #[test]
    fn a_release_without_min_requests_gets_the_safe_default() {
        let mut json = sample_json("lambda-ai-handler-42.json");
        json["gates"].as_object_mut().unwrap().remove("min_requests");
        assert_eq!(Release::parse(&json).unwrap().gates.min_requests, DEFAULT_MIN_REQUESTS);
    }

    /// Each case: a change to the valid Lambda sample, and what the error must say.
    #[test]
    fn every_rule_rejects_with_the_field_and_what_is_allowed() {
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Change, &str)> = vec![
            ("unknown top-level field", Box::new(|r| r["speed"] = "fast".into()), "unknown field `speed`"),
            ("unknown gate field", Box::new(|r| r["gates"]["max_errors"] = 1.into()), "unknown field `max_errors`"),
            ("unknown stage field", Box::new(|r| r["stages"][0]["pct"] = 1.into()), "unknown field `pct`"),
            ("missing stages", Box::new(|r| drop(r.as_object_mut().unwrap().remove("stages"))), "missing field `stages`"),
            ("empty name", Box::new(|r| r["release"] = "".into()), "release: \"\": a name of 1 to 80"),
            ("spaced name", Box::new(|r| r["release"] = "ai handler 42".into()), "release: \"ai handler 42\": a name of 1 to 80 letters"),
            ("max bake on a fixed stage", Box::new(|r| r["stages"][0]["max_bake_seconds"] = 60.into()), "stages[0].max_bake_seconds: only an evidence-driven stage"),
            ("until conclusive without a max", Box::new(|r| r["stages"][0]["bake"] = "until_conclusive".into()), "stages[0].max_bake_seconds: required for \"bake\": \"until_conclusive\""),
            ("max below the shortest", Box::new(|r| { r["stages"][0]["bake"] = "until_conclusive".into(); r["stages"][0]["max_bake_seconds"] = 600.into() }), "stages[0].max_bake_seconds: 600 is below the stage's shortest bake, bake_seconds 900"),
            ("until conclusive, fixed judge", Box::new(|r| { r["stages"][0] = serde_json::json!({"percent": 5, "bake": "until_conclusive", "max_bake_seconds": 1800}); r["gates"]["judge"] = "fixed_horizon".into() }), "stages[0].bake: \"until_conclusive\" needs the sequential judge"),
            ("until conclusive, dry run", Box::new(|r| { r["stages"][0] = serde_json::json!({"percent": 5, "bake": "until_conclusive", "max_bake_seconds": 1800}); r["gates"]["enforce"] = false.into() }), "stages[0].bake: \"until_conclusive\" needs enforced tests"),
            ("unknown bake", Box::new(|r| r["stages"][0]["bake"] = "forever".into()), "unknown variant `forever`, expected `fixed` or `until_conclusive`"),
            ("zero bake", Box::new(|r| r["stages"][1]["bake_seconds"] = 0.into()), "stages[1].bake_seconds: 0: every stage must bake"),
            ("zero min requests", Box::new(|r| r["gates"]["min_requests"] = 0.into()), "gates.min_requests: 0: a stage whose canary served no request"),
            ("$LATEST", Box::new(|r| r["canary_version"] = "$LATEST".into()), "canary_version: must be a published version number, not $LATEST"),
            ("not a number", Box::new(|r| r["canary_version"] = "v42".into()), "canary_version: \"v42\" is not a published version"),
            ("no canary version", Box::new(|r| drop(r.as_object_mut().unwrap().remove("canary_version"))), "canary_version: required"),
            ("no stages", Box::new(|r| r["stages"] = serde_json::json!([])), "stages: at least one stage"),
            ("zero percent", Box::new(|r| r["stages"][0]["percent"] = 0.into()), "stages[0].percent: 0 is outside (0, 100]"),
            ("over 100", Box::new(|r| r["stages"][3]["percent"] = 101.into()), "stages[3].percent: 101 is outside (0, 100]"),
            ("not increasing", Box::new(|r| r["stages"][2]["percent"] = 25.into()), "stages[2].percent: 25 must be above the previous stage's 25"),
            ("last not 100", Box::new(|r| drop(r["stages"].as_array_mut().unwrap().pop())), "the last stage must be at percent 100, not 50"),
            ("negative bake", Box::new(|r| r["stages"][0]["bake_seconds"] = (-1).into()), "bake_seconds"),
            ("zero check", Box::new(|r| r["check_every_seconds"] = 0.into()), "check_every_seconds: 0 is outside 1..=86400"),
            ("error rate > 1", Box::new(|r| r["gates"]["max_error_rate"] = 5.into()), "gates.max_error_rate: 5 is not a fraction in [0, 1]"),
            ("negative p95", Box::new(|r| r["gates"]["max_p95_latency_ms"] = (-1).into()), "gates.max_p95_latency_ms: -1 must be a number >= 0"),
            ("dry run, fixed judge", Box::new(|r| { r["gates"]["judge"] = "fixed_horizon".into(); r["gates"]["max_error_rate_ratio"] = serde_json::Value::Null; r["gates"]["enforce"] = false.into() }), "gates.enforce: false: a dry run is the sequential judge's"),
            ("bad policy", Box::new(|r| r["gates"]["on_insufficient_data"] = "panic".into()), "unknown variant `panic`, expected one of `hold`, `rollback`, `proceed`"),
            ("fractions", Box::new(|r| { for (i, p) in [0.05, 0.25, 0.5, 1.0].iter().enumerate() { r["stages"][i]["percent"] = (*p).into(); } }), "stages[0].percent: 0.05 looks like a fraction of 1, but percent counts to 100: write 5 for 5%"),
            ("kindless target", Box::new(|r| r["target"] = serde_json::json!({"function": "ai-handler", "alias": "live"})), "a Lambda target names its kind: {\"lambda\": {\"function\": ..., \"alias\": ...}}"),
            ("approval timeout without approval", Box::new(|r| r["stages"][1]["approval_timeout_seconds"] = 600.into()), "stages[1].approval_timeout_seconds: only a stage with \"approval\": true"),
            ("bad confidence", Box::new(|r| { r["gates"]["judge"] = "fixed_horizon".into(); r["gates"]["error_rate_confidence"] = 1.into(); }), "gates.error_rate_confidence: 1 is outside [0.5, 1)"),
            ("margin under the sequential judge", Box::new(|r| r["gates"]["max_error_rate_increase"] = 0.01.into()), "gates.max_error_rate_increase: 0.01: an absolute margin hides regressions"),
            ("z-test confidence under the sequential judge", Box::new(|r| r["gates"]["error_rate_confidence"] = 0.95.into()), "gates.error_rate_confidence: belonged to the fixed-horizon z-test"),
            ("bad false rollback rate", Box::new(|r| r["gates"]["false_rollback_rate"] = 0.5.into()), "gates.false_rollback_rate: 0.5 is outside (0, 0.2]"),
            ("bad ratio", Box::new(|r| r["gates"]["max_error_rate_ratio"] = 0.9.into()), "gates.max_error_rate_ratio: 0.9 is outside [1, 100]"),
            ("empty alarm", Box::new(|r| r["gates"]["alarms"][0] = "".into()), "gates.alarms[0]: an alarm name"),
            ("bad stat", Box::new(|r| r["gates"]["custom"][0]["stat"] = "Median".into()), "gates.custom[0].stat: \"Median\" is not one of"),
            ("an extreme", Box::new(|r| r["gates"]["custom"][1]["stat"] = "Maximum".into()), "gates.custom[1].stat: \"Maximum\": one value of a window says nothing about how many were past it"),
            ("a rate of an average", Box::new(|r| { r["gates"]["custom"][1]["per"] = "requests".into(); }), "a rate divides this metric's Sum"),
            ("a rate per what", Box::new(|r| { r["gates"]["custom"][0]["per"] = "calls".into(); }), "gates.custom[0].per: \"calls\": a rate is per \"requests\" or per a metric"),
            ("a count that falls", Box::new(|r| { r["gates"]["custom"][0]["direction"] = "decrease".into(); }), "a count or rate is judged when it rises"),
            ("a fall with rise limits", Box::new(|r| { r["gates"]["custom"][1]["direction"] = "decrease".into(); }), "gates.custom[1].direction: \"decrease\" judges a fall"),
            ("either with one side", Box::new(|r| { r["gates"]["custom"][1]["direction"] = "either".into(); }), "gates.custom[1].min: a fall is judged against min, max_decrease_ratio, or both"),
            ("bad period", Box::new(|r| r["gates"]["custom"][0]["period_seconds"] = 90.into()), "gates.custom[0].period_seconds: 90 is not a positive multiple of 60"),
            ("no limit", Box::new(|r| {
                let g = r["gates"]["custom"][0].as_object_mut().unwrap();
                g.remove("max");
                g.remove("max_increase_ratio");
            }), "gates.custom[0].max: a custom gate needs max, max_increase_ratio, or both"),
            ("relative without placeholder", Box::new(|r| r["gates"]["custom"][1]["dimensions"]["Version"] = "42".into()), "gates.custom[1].dimensions: a relative limit compares canary and stable, so a dimension must hold {version}"),
            ("bad target", Box::new(|r| r["target"] = serde_json::json!({"ecs": {"service": "x"}})), "unknown variant `ecs`"),
        ];
        for (name, change, expected) in cases {
            let mut json = sample_json("lambda-ai-handler-42.json");
            change(&mut json);
            let err = Release::parse(&json).expect_err(name);
            assert!(matches!(err, Error::InvalidRelease(_)), "{name}");
            assert!(err.to_string().contains(expected), "{name}: {err}\nshould contain: {expected}");
        }
    }

    #[test]
    fn what_one_execution_cannot_hold_is_refused_at_validation_never_a_panic() {
        let refused = |edit: &dyn Fn(&mut Value)| {
            let mut json = sample_json("lambda-ai-handler-42.json");
            edit(&mut json);
            crate::release::Document::problems(&json).join("; ")
        };
        let huge = refused(&|j| j["stages"][0]["bake_seconds"] = json!(u64::MAX));
        assert!(
            huge.contains("stages[0].bake_seconds: 18446744073709551615 s is longer than a release can run"),
            "{huge}"
        );
        let hold = refused(&|j| j["gates"]["max_hold_seconds"] = json!(u64::MAX));
        assert!(hold.contains("gates.max_hold_seconds"), "{hold}");
        let many = refused(&|j| {
            let stages: Vec<Value> =
                (1..=21).map(|i| json!({"percent": (i as f64) * 100.0 / 21.0, "bake_seconds": 60})).collect();
            j["stages"] = json!(stages);
        });
        assert!(many.contains("stages: 21 stages: at most 20"), "{many}");
        // 3 300 s of bakes checked every second: 3 301 checks.
        let chatty = refused(&|j| j["check_every_seconds"] = json!(1));
        assert!(chatty.contains("check_every_seconds: 1: at their longest the bakes take 3301 checks"), "{chatty}");
        // The plan of a refused release is still drawn, saturating.
        let mut release = lambda_release();
        release.stages[0].bake_seconds = u64::MAX;
        assert_eq!(release.plan().earliest_promotion_seconds, u64::MAX);
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_once_each_with_its_field() {
        let mut json = sample_json("lambda-ai-handler-42.json");
        json["gates"]["max_errors"] = 1.into();
        json["speed"] = "fast".into();
        json["stages"][1]["bake_seconds"] = 0.into();
        json["gates"]["max_error_rate"] = 5.into();
        json["check_every_seconds"] = 0.into();

        let problems = crate::release::Document::problems(&json);

        assert_eq!(problems.len(), 5, "{problems:#?}");
        for expected in [
            "speed: unknown field `speed`",
            "gates.max_errors: unknown field `max_errors`",
            "did you mean `max_error_rate`?",
            "stages[1].bake_seconds: 0: every stage must bake",
            "gates.max_error_rate: 5 is not a fraction in [0, 1]; rates are fractions: write 0.05 for 5%",
            "check_every_seconds: 0 is outside 1..=86400",
        ] {
            assert!(problems.iter().any(|p| p.contains(expected)), "no {expected:?} in {problems:#?}");
        }
        assert!(!problems.iter().any(|p| p.starts_with("speed") && p.contains("did you mean")), "no wild guesses");
        let err = Release::parse(&json).unwrap_err().to_string();
        assert!(err.contains("speed") && err.contains("check_every_seconds"), "the stepper says them all: {err}");
    }

    #[test]
    fn a_target_with_two_kinds_is_said_plainly() {
        let mut json = sample_json("lambda-ai-handler-42.json");
        json["target"]["sagemaker"] =
            serde_json::json!({"endpoint": "e", "stable_variant": "a", "canary_variant": "b"});
        let err = Release::parse(&json).unwrap_err().to_string();
        assert!(err.contains("a release has one target, and this one names lambda and sagemaker"), "{err}");
    }

    #[test]
    fn sagemaker_rules() {
        let mut json = sample_json("sagemaker-ai-model-7.json");
        json["target"]["sagemaker"]["canary_variant"] = "stable".into();
        assert!(Release::parse(&json)
            .unwrap_err()
            .to_string()
            .contains("stable_variant and canary_variant must differ"));
        let mut json = sample_json("sagemaker-ai-model-7.json");
        json["canary_version"] = "3".into();
        assert!(Release::parse(&json)
            .unwrap_err()
            .to_string()
            .contains("canary_version: not used for a SageMaker target"));
        let mut json = sample_json("sagemaker-ai-model-7.json");
        json["target"]["sagemaker"].as_object_mut().unwrap().remove("stable_variant");
        assert!(Release::parse(&json).unwrap_err().to_string().contains("target.sagemaker.stable_variant: required"));
    }
}
