//! How a target's traffic is split between the stable and the canary.

use crate::domain::stamp::Stamp;

/// Weights read back from AWS are floats: two weights closer than this are equal.
pub const WEIGHT_TOLERANCE: f64 = 1e-4;

/// How traffic is split between the stable and the canary, as last read.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Lambda: the alias's `FunctionVersion`; SageMaker: the stable variant's name.
    pub stable: String,
    /// Lambda: the version in `AdditionalVersionWeights`, if any; SageMaker: the canary variant.
    pub canary: Option<String>,
    /// The canary's share of traffic, in [0, 1].
    pub canary_weight: f64,
    /// The share of live requests copied to the canary, whose answers nobody is served
    /// (Azure ML's mirror traffic, a shadow); 0 where the target cannot mirror.
    pub mirror: f64,
    /// What a conditional write must present: Lambda's alias `RevisionId`, an Azure
    /// endpoint's ETag.
    pub revision: Option<String>,
    /// The release that last moved this traffic, as the target records it. In a write,
    /// `None` leaves the record as it is.
    pub stamp: Option<Stamp>,
}

impl Split {
    /// The same routing with the canary at `weight`.
    pub fn with_canary_weight(&self, weight: f64) -> Split {
        Split { canary_weight: weight, revision: None, ..self.clone() }
    }

    /// The canary gets nothing: no live traffic and no mirrored copies.
    pub fn canary_is_zero(&self) -> bool {
        self.canary.is_none() || (self.canary_weight <= WEIGHT_TOLERANCE && self.mirror <= WEIGHT_TOLERANCE)
    }

    /// The same routing with nothing for the canary: no weight, no mirror.
    pub fn without_canary(&self) -> Split {
        Split { mirror: 0.0, ..self.with_canary_weight(0.0) }
    }

    /// Only the stable serves, with `stamp` recorded: a promoted Lambda canary, or a
    /// stable version put back.
    pub fn stable_only(stable: &str, stamp: Option<Stamp>) -> Split {
        Split { stable: stable.to_owned(), canary: None, canary_weight: 0.0, mirror: 0.0, revision: None, stamp }
    }

    /// The live stamp, if this execution wrote it.
    pub fn stamp_by(&self, execution: &str) -> Option<&Stamp> {
        self.stamp.as_ref().filter(|stamp| stamp.is_by(execution))
    }

    /// Same routing, whatever the revision: what the stepper compares with what it wrote.
    pub fn same_routing(&self, other: &Split) -> bool {
        self.stable == other.stable
            && (self.canary_weight - other.canary_weight).abs() <= WEIGHT_TOLERANCE
            && (self.mirror - other.mirror).abs() <= WEIGHT_TOLERANCE
            && (self.canary_is_zero() || self.canary == other.canary)
    }
}
