//! A weight canary's progress: the common fields, and what only this kind keeps.

use serde::{Deserialize, Serialize};

use crate::domain::split::Split;
use crate::release::core::progress::Progress as Common;

/// A weight canary's progress.
pub type Progress = Common<CanaryProgress>;

/// What a weight canary keeps beyond the common progress (flattened into it, so the
/// execution's JSON reads as one object): the split it last wrote, and its shadow phase
/// while one runs (before the first stage).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryProgress {
    pub last_written: Written,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRun>,
}

impl CanaryProgress {
    /// Just after writing `split`, no shadow running.
    pub fn wrote(split: &Split) -> Self {
        CanaryProgress { last_written: Written::of(split), shadow: None }
    }
}

/// A shadow phase in progress: the candidate answers copies of live requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowRun {
    pub started_at: u64,
    /// The last few disagreements the shadow function showed, for `coalmine status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<crate::domain::shadow::Example>,
    /// While the candidate answers a replay's requests (decision 0023), before the shadow
    /// of live requests, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayRun>,
}

/// How far a replay has gone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayRun {
    /// Requests handed to the shadow function so far.
    pub sent: u64,
    /// Lines of the source that could not be replayed (not a request, too large).
    #[serde(default, skip_serializing_if = "is_none_u64")]
    pub skipped: u64,
    pub cursor: crate::domain::replay::Cursor,
    /// When the last request was handed out: the source ran out, or `requests` were sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_all_at: Option<u64>,
}

fn is_none_u64(n: &u64) -> bool {
    *n == 0
}

/// The split as the stepper wrote it, to compare with the live one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Written {
    pub stable: String,
    pub canary: Option<String>,
    pub weight: f64,
    /// The share mirrored to the canary (an Azure shadow); absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mirror: f64,
}

fn is_zero(share: &f64) -> bool {
    *share == 0.0
}

impl Written {
    pub fn of(split: &Split) -> Self {
        Written {
            stable: split.stable.clone(),
            canary: split.canary.clone(),
            weight: split.canary_weight,
            mirror: split.mirror,
        }
    }

    pub fn as_split(&self) -> Split {
        Split {
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            canary_weight: self.weight,
            others_weight: 0.0,
            mirror: self.mirror,
            revision: None,
            stamp: None,
        }
    }
}
