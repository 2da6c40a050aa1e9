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
