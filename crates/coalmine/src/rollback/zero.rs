//! Zeroing a canary: read, then a write conditional on that read, again on a conflict.

use tracing::warn;

use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::domain::target::Target;
use crate::ports::TrafficRouter;

/// A read-then-write that loses a race re-reads; past this many losses in one
/// invocation, something keeps changing the alias and the invocation fails (retryable).
pub(crate) const MAX_CONFLICTS: usize = 5;

#[derive(Clone, Debug, PartialEq)]
pub enum ZeroOutcome {
    RolledBack { before: Split, after: Split },
    AlreadyZero { split: Split },
}

impl ZeroOutcome {
    pub fn event_name(&self) -> &'static str {
        match self {
            ZeroOutcome::RolledBack { .. } => "rolled_back",
            ZeroOutcome::AlreadyZero { .. } => "already_zero",
        }
    }
}

/// Zeroes the canary's traffic unless it already is zero. Every write is conditional on
/// the split just read; a conflict re-reads, so someone else's change is never
/// overwritten blindly (and a concurrent rollback shows up as `AlreadyZero`).
/// `first_read` saves a read when the caller has just made one.
pub async fn zero_canary(
    router: &impl TrafficRouter,
    target: &Target,
    first_read: Option<Split>,
) -> Result<ZeroOutcome> {
    restore_stable(router, target, None, first_read).await
}

/// [`zero_canary`], and when `stable` is given, also undoes a promotion: a Lambda alias
/// whose version is no longer `stable` gets it back. `first_read` saves a read when the
/// caller has just made one.
pub async fn restore_stable(
    router: &impl TrafficRouter,
    target: &Target,
    stable: Option<&str>,
    mut first_read: Option<Split>,
) -> Result<ZeroOutcome> {
    let mut last_conflict = None;
    for _ in 0..MAX_CONFLICTS {
        let before = match first_read.take() {
            Some(split) => split,
            None => router.read(target).await?,
        };
        let desired = match stable {
            Some(stable) if before.stable != stable => {
                Split { stable: stable.to_owned(), canary: None, canary_weight: 0.0, revision: None }
            }
            _ if before.canary_is_zero() => return Ok(ZeroOutcome::AlreadyZero { split: before }),
            _ => before.with_canary_weight(0.0),
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
