//! How a target's traffic is split between the stable and the canary.

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
    /// What a conditional write must present: Lambda's alias `RevisionId`.
    pub revision: Option<String>,
}

impl Split {
    /// The same routing with the canary at `weight`.
    pub fn with_canary_weight(&self, weight: f64) -> Split {
        Split { canary_weight: weight, revision: None, ..self.clone() }
    }

    pub fn canary_is_zero(&self) -> bool {
        self.canary.is_none() || self.canary_weight <= WEIGHT_TOLERANCE
    }

    /// Same routing, whatever the revision: what the stepper compares with what it wrote.
    pub fn same_routing(&self, other: &Split) -> bool {
        self.stable == other.stable
            && (self.canary_weight - other.canary_weight).abs() <= WEIGHT_TOLERANCE
            && (self.canary_is_zero() || self.canary == other.canary)
    }
}
