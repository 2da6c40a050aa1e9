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
    /// The share served by neither side: a third SageMaker variant or Azure deployment
    /// with traffic of its own; 0 on a Lambda alias, which has only two.
    pub others_weight: f64,
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

/// Why an endpoint's sides could not be read as a stable and a canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SidesProblem {
    /// The canary named is not on the endpoint.
    NoCanary,
    /// The stable named is not on the endpoint.
    NoStable(String),
    /// The canary is the endpoint's only side (a SageMaker guardrail deployment's).
    OnlyTheCanary,
    /// Several other sides, none of record, and not one alone serving: which is stable?
    Ambiguous(Vec<String>),
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
        Split {
            stable: stable.to_owned(),
            canary: None,
            canary_weight: 0.0,
            others_weight: 0.0,
            mirror: 0.0,
            revision: None,
            stamp,
        }
    }

    /// The stable's share of live traffic: what neither the canary nor a third side serves.
    pub fn stable_share(&self) -> f64 {
        (1.0 - self.canary_weight - self.others_weight).max(0.0)
    }

    /// The live stamp, if this execution wrote it.
    pub fn stamp_by(&self, execution: &str) -> Option<&Stamp> {
        self.stamp.as_ref().filter(|stamp| stamp.is_by(execution))
    }

    /// The split of an endpoint whose sides (SageMaker production variants, Azure ML
    /// deployments) serve `weights`, in any unit: shares are taken of their total.
    /// The stable is `named_stable` when given; otherwise the stable of record, when the
    /// stamp names one that is on the endpoint and is not the canary; otherwise the one
    /// other side that serves, or the only other side there is. The stamp only helps
    /// find a side here; whether its roles agree with the names is the rollback's call.
    pub fn of_sides(
        named_stable: Option<&str>,
        canary: &str,
        weights: &[(String, f64)],
        stamp: Option<Stamp>,
    ) -> Result<Split, SidesProblem> {
        let weight_of = |name: &str| weights.iter().find(|(n, _)| n == name).map(|(_, w)| w.max(0.0));
        let canary_raw = weight_of(canary).ok_or(SidesProblem::NoCanary)?;
        let others: Vec<&(String, f64)> = weights.iter().filter(|(n, _)| n != canary).collect();
        let of_record = stamp.as_ref().map(|s| s.stable.as_str()).filter(|s| *s != canary && weight_of(s).is_some());
        let serving: Vec<&str> =
            others.iter().filter(|(_, w)| *w > WEIGHT_TOLERANCE).map(|(n, _)| n.as_str()).collect();
        let stable = match (named_stable, of_record, serving.as_slice(), others.as_slice()) {
            (Some(named), ..) => named.to_owned(),
            (None, Some(recorded), ..) => recorded.to_owned(),
            (None, None, [only], _) => (*only).to_owned(),
            (None, None, [], [(only, _)]) => only.clone(),
            (None, None, [], []) => return Err(SidesProblem::OnlyTheCanary),
            _ => return Err(SidesProblem::Ambiguous(others.iter().map(|(n, _)| n.clone()).collect())),
        };
        let stable_raw = weight_of(&stable).ok_or_else(|| SidesProblem::NoStable(stable.clone()))?;
        let total: f64 = weights.iter().map(|(_, w)| w.max(0.0)).sum();
        let share = |raw: f64| if total > WEIGHT_TOLERANCE { raw / total } else { 0.0 };
        Ok(Split {
            canary_weight: share(canary_raw),
            others_weight: share((total - canary_raw - stable_raw).max(0.0)),
            stable,
            canary: Some(canary.to_owned()),
            mirror: 0.0,
            revision: None,
            stamp,
        })
    }

    /// Same routing, whatever the revision: what the stepper compares with what it wrote.
    pub fn same_routing(&self, other: &Split) -> bool {
        self.stable == other.stable
            && (self.canary_weight - other.canary_weight).abs() <= WEIGHT_TOLERANCE
            && (self.mirror - other.mirror).abs() <= WEIGHT_TOLERANCE
            && (self.canary_is_zero() || self.canary == other.canary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stamp::Phase;

    fn sides(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect()
    }

    fn of_record(stable: &str, canary: &str) -> Stamp {
        Stamp {
            execution: "M:e".into(),
            stable: stable.into(),
            canary: Some(canary.into()),
            phase: Phase::Live,
            stage: Some((1, 2)),
            release: None,
            hold: None,
            request: None,
        }
    }

    #[test]
    fn a_named_stable_is_taken_as_named_and_shares_are_of_the_whole_endpoint() {
        let split =
            Split::of_sides(Some("blue"), "green", &sides(&[("blue", 2.0), ("green", 1.0), ("spare", 1.0)]), None)
                .unwrap();
        assert_eq!((split.stable.as_str(), split.canary.as_deref()), ("blue", Some("green")));
        assert_eq!((split.canary_weight, split.others_weight, split.stable_share()), (0.25, 0.25, 0.5));
    }

    #[test]
    fn known_by_its_canary_the_stable_is_the_one_of_record_then_the_one_serving_then_the_only_other() {
        let three = sides(&[("blue", 0.9), ("green", 0.1), ("spare", 0.0)]);
        let with_record = Split::of_sides(None, "green", &three, Some(of_record("blue", "green"))).unwrap();
        assert_eq!(with_record.stable, "blue");
        assert_eq!(Split::of_sides(None, "green", &three, None).unwrap().stable, "blue", "the one serving");
        let idle = sides(&[("blue", 0.0), ("green", 1.0)]);
        assert_eq!(Split::of_sides(None, "green", &idle, None).unwrap().stable, "blue", "the only other");
        // The stable of record is never the canary named: an alarm on it finds the other side.
        let on_the_stable = Split::of_sides(None, "blue", &three, Some(of_record("blue", "green"))).unwrap();
        assert_eq!(on_the_stable.stable, "green");
    }

    #[test]
    fn sides_that_cannot_be_told_apart_or_found_are_named() {
        let two_serving = sides(&[("a", 0.5), ("b", 0.3), ("c", 0.2)]);
        assert_eq!(
            Split::of_sides(None, "c", &two_serving, None),
            Err(SidesProblem::Ambiguous(vec!["a".into(), "b".into()]))
        );
        assert_eq!(Split::of_sides(None, "x", &two_serving, None), Err(SidesProblem::NoCanary));
        assert_eq!(Split::of_sides(Some("x"), "c", &two_serving, None), Err(SidesProblem::NoStable("x".into())));
        assert_eq!(Split::of_sides(None, "a", &sides(&[("a", 1.0)]), None), Err(SidesProblem::OnlyTheCanary));
    }
}
