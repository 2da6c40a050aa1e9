//! A release climbing its stages: the release as written ([`spec`]), the health judge
//! ([`judge`]), and one tick of the state machine ([`tick`]).

pub mod control;
pub mod guardrail;
pub mod judge;
pub mod notify;
pub mod preflight;
pub mod sequential;
pub mod spec;
pub mod tick;

pub use spec::{
    CustomGate, Gates, InsufficientDataAlarm, JudgeKind, OnInsufficientData, Release, Stage, VERSION_PLACEHOLDER,
};

use serde_json::Value;

use crate::domain::error::Result;
use crate::domain::target::Target;
use guardrail::GuardrailRelease;

/// What a release file, or an execution's input, holds: a canary release coalmine
/// climbs stage by stage, or a guardrail release SageMaker deploys while coalmine
/// watches and judges. A `guardrail` key says which.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    Canary(Release),
    Guardrail(GuardrailRelease),
}

impl Document {
    pub fn is_guardrail(value: &Value) -> bool {
        value.get("guardrail").is_some()
    }

    /// Strictly validated, by the rules of its kind.
    pub fn parse(value: &Value) -> Result<Document> {
        if Self::is_guardrail(value) {
            GuardrailRelease::parse(value).map(Document::Guardrail)
        } else {
            Release::parse(value).map(Document::Canary)
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Document::Canary(r) => &r.release,
            Document::Guardrail(r) => &r.release,
        }
    }

    pub fn target(&self) -> Target {
        match self {
            Document::Canary(r) => r.target.clone(),
            Document::Guardrail(r) => r.target(),
        }
    }

    pub fn check_every_seconds(&self) -> u64 {
        match self {
            Document::Canary(r) => r.check_every_seconds,
            Document::Guardrail(r) => r.check_every_seconds,
        }
    }

    /// The stages a timeline counts: a canary's stages, or a guardrail release's phases
    /// (its shadow, if any, then SageMaker's deployment).
    pub fn stages(&self) -> usize {
        match self {
            Document::Canary(r) => r.stages.len(),
            Document::Guardrail(r) => r.phases(),
        }
    }
}
