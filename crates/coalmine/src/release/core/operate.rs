//! What a person does with a release in flight, and what they are shown of it: the
//! operator's side of a kind. The CLI asks a [`crate::release::Document`], which asks
//! the kind; nothing here knows a particular kind.

use std::future::Future;

use serde_json::Value;

use crate::domain::error::Result;
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
use crate::domain::target::Target;
use crate::release::core::progress::Progress;
use crate::release::core::{Ports, ReleaseKind};

/// An operator's request to a release in flight, carried in its target's stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Hold at the current weight after the bake; the judge keeps judging.
    Pause,
    Resume,
    /// End the current bake now; `full`: go straight to 100% and end promoted.
    Promote {
        full: bool,
    },
    /// Let a stage that waits for approval go on.
    Approve,
}

impl Command {
    pub fn verb(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote { full: false } => "promote",
            Command::Promote { full: true } => "promote --full",
            Command::Approve => "approve",
        }
    }
}

/// Where the current stage's bake is, for a live bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Bake {
    pub elapsed_seconds: u64,
    pub longest_seconds: u64,
    /// `bake  [#######.............] 4m00s of 15m00s at 5%; next check in 40s`
    pub line: String,
}

/// `coalmine route`: which version a unit gets now, through which alias, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Routed {
    pub unit: String,
    pub version: String,
    pub alias: String,
    pub candidate: bool,
    pub why: String,
}

/// A kind of release as an operator meets it: its plan, what it is called in a
/// status, what it shows beyond the timeline, and the commands it takes.
pub trait Operated: ReleaseKind {
    fn target(&self) -> Target;

    fn check_every_seconds(&self) -> u64;

    /// The plan as `coalmine validate` prints it.
    fn plan_text(&self) -> String;

    /// The plan as `coalmine validate --output json` gives it.
    fn plan_json(&self) -> Value;

    /// The gates a decision was judged by: a phase's before any user (`before`), or the
    /// stages'.
    fn judged_by(
        &self,
        before: Option<crate::release::core::progress::BeforeUsers>,
    ) -> crate::release::judge::gates::Gates;

    /// A stage as a report names it: "stage 2/4 25%", "SageMaker's deployment".
    fn stage_name(&self, stage: usize) -> String;

    /// Whether coalmine itself moves the traffic (a weight per stage), or the platform
    /// does while coalmine watches (SageMaker's guardrails).
    fn moves_traffic(&self) -> bool {
        true
    }

    /// What is being released and where it is, as a status's first line says it after
    /// the target: "canary version 42, RUNNING (baking)", `state` being the execution's.
    fn headline(&self, progress: Option<&Progress<Self::Extra>>, state: &str, running: bool) -> String;

    /// The lines a status shows after the timeline that only this kind has (a shadow's
    /// examples, the bake in progress).
    fn details(&self, progress: &Progress<Self::Extra>, running: bool, now: u64) -> Vec<String>;

    /// The current stage's bake, while one runs.
    fn bake(&self, progress: &Progress<Self::Extra>, now: u64) -> Option<Bake>;

    /// Who served the target as the release last wrote it, where coalmine moves the
    /// traffic (not where SageMaker does).
    fn as_left(&self, progress: &Progress<Self::Extra>) -> Option<Split>;

    /// Who serves the target now, read from it, where coalmine moves the traffic.
    fn serving_now(&self, deps: &impl Ports) -> impl Future<Output = Option<Result<Split>>> + Send;

    /// Records `command` from `who` for the release's next tick; returns the stamp as
    /// written, or why this kind takes no such command.
    fn command(&self, deps: &impl Ports, who: &str, command: Command) -> impl Future<Output = Result<Stamp>> + Send;

    /// Which version `unit` (with `attributes`) gets now, given the release's progress
    /// and who serves the target now; refused by a release that routes no units.
    fn route(
        &self,
        _progress: Option<&Progress<Self::Extra>>,
        _serving: &Split,
        _unit: &str,
        _attributes: &[(&str, &str)],
    ) -> Result<Routed> {
        Err(crate::domain::error::Error::Refused(format!(
            "release {} routes no units by cohort: each request takes a side by weight (a cohort release routes \
             units: docs/cohorts.md)",
            self.name()
        )))
    }

    /// Takes the release's traffic away now (run by `execution`), by `who` for `why`,
    /// and tells the team; returns what happened, in words.
    fn abort(
        &self,
        deps: &impl Ports,
        execution: &str,
        who: &str,
        why: &str,
    ) -> impl Future<Output = Result<String>> + Send;
}
