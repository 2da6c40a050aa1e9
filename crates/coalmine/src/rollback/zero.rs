//! Zeroing a canary: read, then a write conditional on that read, again on a conflict.

use tracing::warn;

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::domain::stamp::Stamp;
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
}

impl ZeroOutcome {
    pub fn event_name(&self) -> &'static str {
        match self {
            ZeroOutcome::RolledBack { .. } => "rolled_back",
            ZeroOutcome::AlreadyZero { .. } => "already_zero",
            ZeroOutcome::NotOurs { .. } => "not_ours",
            ZeroOutcome::Tripped { .. } => "tripped",
        }
    }

    /// The split before anything was (or would have been) written.
    pub fn before(&self) -> &Split {
        match self {
            ZeroOutcome::RolledBack { before, .. } => before,
            ZeroOutcome::AlreadyZero { split }
            | ZeroOutcome::NotOurs { split }
            | ZeroOutcome::Tripped { split, .. } => split,
        }
    }

    /// The split as it is now.
    pub fn after(&self) -> &Split {
        match self {
            ZeroOutcome::RolledBack { after, .. } => after,
            ZeroOutcome::AlreadyZero { split }
            | ZeroOutcome::NotOurs { split }
            | ZeroOutcome::Tripped { split, .. } => split,
        }
    }
}

/// Whose traffic a rollback may take down.
#[derive(Clone, Copy, Debug)]
pub enum Owner<'a> {
    /// Any canary: an alarm, or an operator, stops whatever runs behind the target.
    Anyone,
    /// Only traffic this execution (an execution ARN or `MACHINE:NAME`) moved and still
    /// owns: a release undoes only its own writes.
    Execution(&'a str),
}

/// Takes the canary's traffic to zero unless it already is, and puts back the stable
/// version a release in flight promoted away from. The stamp goes along, marked rolled
/// back `by`, so the release and everyone after it know what happened. Every write is
/// conditional on the split just read; a conflict re-reads, so someone else's change is
/// never overwritten blindly (and a concurrent rollback shows up as `AlreadyZero`).
/// `first_read` saves a read when the caller has just made one.
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
        if let Owner::Execution(execution) = owner {
            if !before.stamp_by(execution).is_some_and(Stamp::is_live) {
                return Ok(ZeroOutcome::NotOurs { split: before });
            }
        }
        // Only a Lambda alias is promoted by replacing its stable version; a SageMaker
        // endpoint keeps its variants (and a guardrail stamp's `stable` is a config).
        let promoted_away = before
            .stamp
            .as_ref()
            .filter(|stamp| matches!(target, Target::Lambda(_)) && stamp.is_live() && stamp.stable != before.stable);
        let desired = match promoted_away {
            Some(stamp) => Split::stable_only(&stamp.stable, Some(stamp.rolled_back(by.clone()))),
            None if before.canary_is_zero() => return Ok(ZeroOutcome::AlreadyZero { split: before }),
            None => Split {
                stamp: before.stamp.as_ref().map(|stamp| stamp.rolled_back(by.clone())),
                ..before.without_canary()
            },
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
