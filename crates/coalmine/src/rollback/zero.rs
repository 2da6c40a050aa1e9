//! Zeroing a canary: read, then a write conditional on that read, again on a conflict.

use tracing::warn;

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result};
use crate::domain::split::{Split, WEIGHT_TOLERANCE};
use crate::domain::stamp::Phase;
use crate::domain::target::Target;
use crate::ports::TrafficRouter;

/// A target with no canary traffic to take away is marked rolled back all the same: its
/// stamp (conditional on `read`) says the release is over, so nothing climbs it again.
/// A shadow's mirror, if any, stops in the same write.
pub async fn record_rollback(
    router: &impl TrafficRouter,
    target: &Target,
    read: Split,
    by: &RolledBackBy,
) -> Result<ZeroOutcome> {
    let stamp = read.stamp.as_ref().map(|s| s.rolled_back(by.clone()));
    let after = router.write(target, &read, &Split { stamp, ..read.without_canary() }).await?;
    Ok(ZeroOutcome::RolledBack { before: read, after })
}

/// A read-then-write that loses a race re-reads; past this many losses in one
/// invocation, something keeps changing the alias and the invocation fails (retryable).
pub(crate) const MAX_CONFLICTS: usize = 5;

// One per target per invocation, moved rarely: boxing the splits would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum ZeroOutcome {
    /// The canary's traffic went to zero. When a release in flight had promoted a Lambda
    /// canary (its stamp still names the version it replaced), that version came back.
    RolledBack {
        before: Split,
        after: Split,
    },
    AlreadyZero {
        split: Split,
    },
    /// The traffic is not the caller's execution's to undo; nothing was written.
    NotOurs {
        split: Split,
    },
    /// A one-variant endpoint in a guardrail deployment: no weight to zero, so its
    /// tripwire was tripped and SageMaker rolls the deployment back.
    Tripped {
        split: Split,
        tripwire: String,
    },
    /// Moving the traffic as asked could raise what is not the stable of record, or undo
    /// a promotion: nothing was written, and the team is told why and what to run.
    Refused {
        split: Split,
        why: Refusal,
    },
}

/// Why a rollback moved nothing although the canary it was asked about has traffic.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// A release is in flight, and the sides named (by an alarm's tag or dimensions, or a
    /// person) are not its stable and candidate: the stamp's roles are the authority.
    NotTheRolesOfRecord,
    /// The release of record ended promoted: its candidate is production now, and a
    /// promotion is final.
    Promoted,
    /// No release is in flight, and the side that would gain the traffic does not serve
    /// the majority of it: only a name says it is the stable, and names can be stale.
    NoMajority,
}

impl Refusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::NotTheRolesOfRecord => "not_the_roles_of_record",
            Refusal::Promoted => "promoted",
            Refusal::NoMajority => "no_majority",
        }
    }
}

impl ZeroOutcome {
    pub fn event_name(&self) -> &'static str {
        match self {
            ZeroOutcome::RolledBack { .. } => "rolled_back",
            ZeroOutcome::AlreadyZero { .. } => "already_zero",
            ZeroOutcome::NotOurs { .. } => "not_ours",
            ZeroOutcome::Tripped { .. } => "tripped",
            ZeroOutcome::Refused { .. } => "refused",
        }
    }

    /// The split before anything was (or would have been) written.
    pub fn before(&self) -> &Split {
        match self {
            ZeroOutcome::RolledBack { before, .. } => before,
            ZeroOutcome::AlreadyZero { split }
            | ZeroOutcome::NotOurs { split }
            | ZeroOutcome::Tripped { split, .. }
            | ZeroOutcome::Refused { split, .. } => split,
        }
    }

    /// The split as it is now.
    pub fn after(&self) -> &Split {
        match self {
            ZeroOutcome::RolledBack { after, .. } => after,
            ZeroOutcome::AlreadyZero { split }
            | ZeroOutcome::NotOurs { split }
            | ZeroOutcome::Tripped { split, .. }
            | ZeroOutcome::Refused { split, .. } => split,
        }
    }
}

/// Who asks for a rollback, which decides what it may take down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    /// An alarm: it says which target it guards, never which side is which there. A
    /// release in flight is rolled back by its own roles; with none in flight, traffic
    /// goes only to a side that already serves the majority (or a Lambda alias's version).
    Alarm,
    /// A person (`coalmine rollback`): obeyed when no release is in flight and they named
    /// both sides, held to the roles of record when one is.
    Operator,
    /// Only traffic this execution (an execution ARN or `MACHINE:NAME`) moved and still
    /// owns: a release undoes only its own writes.
    Execution(&'a str),
}

/// What a rollback may write over `split`, read through `target`.
#[derive(Debug, PartialEq)]
enum Plan {
    /// The canary (and any mirror of it) to zero; the stable keeps its place.
    Zero,
    /// A Lambda release promoted its candidate and is still baking it: its stable back.
    PutBack(String),
    AlreadyZero,
    NotOurs,
    Refused(Refusal),
}

/// The rollback's one rule: the live stamp's roles are the authority. A release in
/// flight loses its candidate's traffic to its stable and nothing else; a promoted
/// release is final; without a release in flight, a name alone never raises a side
/// that does not already serve most of the traffic.
fn plan(target: &Target, split: &Split, owner: Owner<'_>) -> Plan {
    let live = split.stamp.as_ref().filter(|stamp| stamp.is_live());
    if let Owner::Execution(execution) = owner {
        if !live.is_some_and(|stamp| stamp.is_by(execution)) {
            return Plan::NotOurs;
        }
    }
    let refused = |why| match owner {
        // What this execution moved is not there as it moved it: someone else's change.
        Owner::Execution(_) => Plan::NotOurs,
        Owner::Alarm | Owner::Operator => Plan::Refused(why),
    };
    if let Some(stamp) = live {
        let candidate_is = |side: Option<&String>| stamp.canary.as_ref().is_none_or(|c| side == Some(c));
        // Only a Lambda alias is promoted by replacing its stable version.
        if target.has_fixed_roles() && split.stable != stamp.stable {
            return if candidate_is(Some(&split.stable)) && split.canary_is_zero() {
                Plan::PutBack(stamp.stable.clone())
            } else {
                refused(Refusal::NotTheRolesOfRecord)
            };
        }
        if split.canary_is_zero() {
            return Plan::AlreadyZero;
        }
        return if split.stable == stamp.stable && candidate_is(split.canary.as_ref()) {
            Plan::Zero
        } else {
            refused(Refusal::NotTheRolesOfRecord)
        };
    }
    if split.canary_is_zero() {
        return Plan::AlreadyZero;
    }
    let promoted = split.stamp.as_ref().filter(|stamp| stamp.phase == Phase::Promoted);
    if !target.has_fixed_roles() && promoted.is_some_and(|stamp| stamp.canary.is_some() && stamp.canary == split.canary)
    {
        return refused(Refusal::Promoted);
    }
    let named_by_a_person = owner == Owner::Operator && target.names_its_stable();
    if named_by_a_person || target.has_fixed_roles() || split.stable_share() > 0.5 + WEIGHT_TOLERANCE {
        Plan::Zero
    } else {
        refused(Refusal::NoMajority)
    }
}

/// Takes the canary's traffic to zero unless it already is, and puts back the stable
/// version a release in flight promoted away from, by the roles of record (see
/// [`Owner`]). A release in flight's stamp goes along, marked rolled back `by`, so the
/// release and everyone after it know what happened; an ended release's record is left
/// as it is. Every write is conditional on the split just read; a conflict re-reads, so
/// someone else's change is never overwritten blindly (and a concurrent rollback shows
/// up as `AlreadyZero`). `first_read` saves a read when the caller has just made one.
pub async fn zero_canary(
    router: &impl TrafficRouter,
    target: &Target,
    by: &RolledBackBy,
    owner: Owner<'_>,
    mut first_read: Option<Split>,
) -> Result<ZeroOutcome> {
    let mut last_conflict = None;
    for _ in 0..MAX_CONFLICTS {
        let before = match first_read.take() {
            Some(split) => split,
            None => router.read(target).await?,
        };
        let ended = before.stamp.as_ref().filter(|stamp| stamp.is_live()).map(|stamp| stamp.rolled_back(by.clone()));
        let desired = match plan(target, &before, owner) {
            Plan::Zero => Split { stamp: ended, ..before.without_canary() },
            Plan::PutBack(stable) => Split::stable_only(&stable, ended),
            Plan::AlreadyZero => return Ok(ZeroOutcome::AlreadyZero { split: before }),
            Plan::NotOurs => return Ok(ZeroOutcome::NotOurs { split: before }),
            Plan::Refused(why) => return Ok(ZeroOutcome::Refused { split: before, why }),
        };
        match router.write(target, &before, &desired).await {
            Ok(after) => return Ok(ZeroOutcome::RolledBack { before, after }),
            Err(conflict @ Error::Conflict { .. }) => {
                warn!(target = %target, error = %conflict, "traffic changed between read and write; reading again");
                last_conflict = Some(conflict);
            }
            Err(other) => return Err(other),
        }
    }
    Err(last_conflict.unwrap_or_else(|| Error::Conflict { target: target.clone(), detail: "no attempt made".into() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stamp::Stamp;
    use crate::memory::{lambda_split, Router};

    const EXECUTION: &str = "Release:model-2";

    fn record(phase: Phase, stable: &str, canary: &str) -> Stamp {
        Stamp {
            execution: EXECUTION.into(),
            stable: stable.into(),
            canary: Some(canary.into()),
            phase,
            stage: Some((1, 3)),
            release: Some("model-2".into()),
            hold: None,
            request: None,
        }
    }

    /// The two kinds of endpoint whose sides are peers, each named `blue`, `green`, `spare`.
    fn endpoints() -> [Target; 2] {
        ["sagemaker:ep:green".parse().unwrap(), "azureml:sub:rg:ws:chat:green".parse().unwrap()]
    }

    fn alarm() -> RolledBackBy {
        RolledBackBy::Alarm("coalmine-model-errors".into())
    }

    async fn roll_back(router: &Router, named: &Target, owner: Owner<'_>) -> ZeroOutcome {
        zero_canary(router, named, &alarm(), owner, None).await.unwrap()
    }

    #[tokio::test]
    async fn a_release_in_flight_loses_its_candidates_traffic_to_its_stable_however_the_alarm_names_it() {
        for endpoint in endpoints() {
            for named in [endpoint.clone(), endpoint.with_roles("blue", "green")] {
                let live = record(Phase::Live, "blue", "green");
                let router =
                    Router::with_sides(&endpoint, &[("blue", 0.9), ("green", 0.1), ("spare", 0.0)], Some(live));
                let outcome = roll_back(&router, &named, Owner::Alarm).await;
                assert_eq!(outcome.event_name(), "rolled_back", "{named}");
                let shares = router.shares(&endpoint);
                assert_eq!((shares["blue"], shares["green"], shares["spare"]), (1.0, 0.0, 0.0), "{named}");
                assert!(matches!(router.stamp_on(&endpoint).unwrap().phase, Phase::RolledBack(_)), "{named}");
            }
        }
    }

    #[tokio::test]
    async fn sides_named_otherwise_than_the_release_of_record_move_nothing_on_every_target() {
        for endpoint in endpoints() {
            // A second release reuses the variant the first one freed as its canary: the
            // first release's alarm still names the old roles.
            let second = record(Phase::Live, "green", "blue");
            let old_roles = endpoint.with_roles("blue", "green");
            // An untagged alarm on the stable variant mid-release; production named as the
            // canary of an idle side.
            let on_the_stable = endpoint.with_roles("spare", "green").as_dimensions_name_it();
            let idle = endpoint.with_roles("spare", "green");
            for named in [old_roles, on_the_stable, idle] {
                let router = Router::with_sides(
                    &endpoint,
                    &[("blue", 0.1), ("green", 0.9), ("spare", 0.0)],
                    Some(second.clone()),
                );
                let outcome = roll_back(&router, &named, Owner::Alarm).await;
                assert_eq!(
                    outcome,
                    ZeroOutcome::Refused { split: outcome.before().clone(), why: Refusal::NotTheRolesOfRecord },
                    "{named}"
                );
                assert_eq!(router.write_count(), 0, "{named}");
                assert_eq!(router.shares(&endpoint)["green"], 0.9, "{named}");
                assert_eq!(router.stamp_on(&endpoint), Some(second.clone()), "the record stands: {named}");
            }
            // Even a person is held to the release's roles while it runs.
            let router = Router::with_sides(&endpoint, &[("blue", 0.1), ("green", 0.9)], Some(second.clone()));
            let by_hand = roll_back(&router, &endpoint.with_roles("blue", "green"), Owner::Operator).await;
            assert_eq!(by_hand.event_name(), "refused");
        }
    }

    #[tokio::test]
    async fn a_promoted_release_is_final_on_every_target() {
        for endpoint in endpoints() {
            let promoted = record(Phase::Promoted, "blue", "green");
            let router = Router::with_sides(&endpoint, &[("blue", 0.0), ("green", 1.0)], Some(promoted.clone()));
            for owner in [Owner::Alarm, Owner::Operator] {
                let outcome = roll_back(&router, &endpoint.with_roles("blue", "green"), owner).await;
                assert!(
                    matches!(outcome, ZeroOutcome::Refused { why: Refusal::Promoted, .. }),
                    "{endpoint}: {outcome:?}"
                );
            }
            assert_eq!((router.write_count(), router.shares(&endpoint)["green"]), (0, 1.0));
            assert_eq!(router.stamp_on(&endpoint), Some(promoted), "the promoted record stands");
        }
        // A Lambda alias promoted by its release serves the candidate as its version: no
        // canary is left to take away, and the stable of record does not come back.
        let alias = Target::lambda("ai-handler", "live");
        let promoted = Split { stamp: Some(record(Phase::Promoted, "41", "42")), ..Split::stable_only("42", None) };
        let router = Router::with([(alias.clone(), Split { revision: Some("rev-0".into()), ..promoted })]);
        assert_eq!(roll_back(&router, &alias, Owner::Alarm).await.event_name(), "already_zero");
        assert_eq!(router.split(&alias).stable, "42");
    }

    #[tokio::test]
    async fn with_no_release_in_flight_an_alarm_gives_traffic_only_to_the_side_serving_the_majority() {
        for endpoint in endpoints() {
            let router = Router::with_sides(&endpoint, &[("blue", 0.8), ("green", 0.1), ("spare", 0.1)], None);
            let toward_the_majority = roll_back(&router, &endpoint.with_roles("blue", "green"), Owner::Alarm).await;
            assert_eq!(toward_the_majority.event_name(), "rolled_back", "{endpoint}");
            assert_eq!(router.shares(&endpoint)["blue"], 0.9, "the canary's share went to the majority side only");
            assert!((router.shares(&endpoint)["spare"] - 0.1).abs() < 1e-9, "a third side keeps its share");

            // Named the other way round (an alarm on production), the move would raise a
            // side serving a tenth: refused. A person naming both sides is obeyed.
            let router = Router::with_sides(&endpoint, &[("blue", 0.8), ("green", 0.1), ("spare", 0.1)], None);
            let backwards = endpoint.with_roles("green", "blue");
            let refused = roll_back(&router, &backwards, Owner::Alarm).await;
            assert!(matches!(refused, ZeroOutcome::Refused { why: Refusal::NoMajority, .. }), "{refused:?}");
            assert_eq!(router.write_count(), 0);
            assert_eq!(roll_back(&router, &backwards, Owner::Operator).await.event_name(), "rolled_back");
            assert_eq!(router.shares(&endpoint)["green"], 0.9);
            // A person who named only the canary named no stable to obey.
            let router = Router::with_sides(&endpoint, &[("blue", 0.8), ("green", 0.2)], None);
            let known_only_by_canary = backwards.as_dimensions_name_it();
            assert_eq!(roll_back(&router, &known_only_by_canary, Owner::Operator).await.event_name(), "refused");
        }
    }

    #[tokio::test]
    async fn a_lambda_alias_is_rolled_back_by_its_own_roles_and_held_to_the_release_of_record() {
        let alias = Target::lambda("ai-handler", "live");
        // No release: the alias's version is the stable whatever the weights.
        let router = Router::with([(alias.clone(), lambda_split("41", "43", 0.6))]);
        assert_eq!(roll_back(&router, &alias, Owner::Alarm).await.event_name(), "rolled_back");
        // A release in flight whose canary someone replaced: not its candidate.
        let replaced = Split { stamp: Some(record(Phase::Live, "41", "42")), ..lambda_split("41", "43", 0.1) };
        let router = Router::with([(alias.clone(), replaced)]);
        let outcome = roll_back(&router, &alias, Owner::Alarm).await;
        assert!(matches!(outcome, ZeroOutcome::Refused { why: Refusal::NotTheRolesOfRecord, .. }), "{outcome:?}");
        // The same change seen by the release's own execution is not its traffic to undo.
        assert_eq!(roll_back(&router, &alias, Owner::Execution(EXECUTION)).await.event_name(), "not_ours");
        assert_eq!(router.write_count(), 0);
    }

    /// A cohort's split as its adapter reads it: the cohort alias on the candidate, wholly.
    fn cohort_split(stamp: Option<Stamp>) -> Split {
        Split { stamp, canary_weight: 1.0, ..lambda_split("41", "42", 1.0) }
    }

    #[tokio::test]
    async fn on_a_cohort_alias_pair_an_alarm_points_the_cohort_alias_back_in_one_write_and_never_after_promotion() {
        let cohort: Target = "lambda-cohort:ai-handler:live:canary".parse().unwrap();
        let live = record(Phase::Live, "41", "42");
        let router = Router::with([(cohort.clone(), cohort_split(Some(live)))]);

        let outcome = roll_back(&router, &cohort, Owner::Alarm).await;

        assert_eq!(outcome.event_name(), "rolled_back");
        assert_eq!(router.write_count(), 1, "one conditional write");
        let after = router.split(&cohort);
        assert!(after.canary_is_zero() && after.stable == "41", "{after:?}");
        assert!(matches!(after.stamp.unwrap().phase, Phase::RolledBack(_)));
        assert_eq!(roll_back(&router, &cohort, Owner::Alarm).await.event_name(), "already_zero", "safe to run twice");

        let promoted = Split { stamp: Some(record(Phase::Promoted, "41", "42")), ..Split::stable_only("42", None) };
        let router = Router::with([(cohort.clone(), Split { revision: Some("rev-0".into()), ..promoted })]);
        let outcome = roll_back(&router, &cohort, Owner::Alarm).await;
        assert_ne!(outcome.event_name(), "rolled_back", "{outcome:?}");
        assert_eq!((router.write_count(), router.split(&cohort).stable.as_str()), (0, "42"), "a promotion is final");
    }
}
