//! Where a release is, tick to tick: the progress every kind keeps in the execution's
//! state (its own output, the next tick's input), and the statuses a tick ends in.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result};

use crate::release::judge::{Evidence, StageSample};
use crate::text::{duration, percent};

/// The history kept in the execution's state (whose payload is capped at 256 KB): the
/// latest decisions, with a count of those dropped.
pub const HISTORY_LIMIT: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Baking,
    Advanced,
    /// Bake over, too little data: still checking (`on_insufficient_data: hold`).
    Holding,
    /// Bake over, held by an operator's `coalmine pause`: still judged.
    Paused,
    /// Bake over at a stage that needs `coalmine approve`: still judged.
    AwaitingApproval,
    Promoted,
    RolledBack,
}

impl Status {
    /// The spelling of `decision` in logs, the same as in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Baking => "baking",
            Status::Advanced => "advanced",
            Status::Holding => "holding",
            Status::Paused => "paused",
            Status::AwaitingApproval => "awaiting_approval",
            Status::Promoted => "promoted",
            Status::RolledBack => "rolled_back",
        }
    }

    pub fn has_ended(self) -> bool {
        matches!(self, Status::Promoted | Status::RolledBack)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: u64,
    pub stage: usize,
    pub weight: f64,
    pub status: Status,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
    /// Made in a shadow phase, before the first stage.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// Made in a replay (decision 0023), before the shadow and the first stage; `shadow`
    /// is set too, as for every decision before any user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// Who, when a person's request made this decision (an approval, a promotion, a
    /// pause, an abort): what a report names beside the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A release's progress; `X` is what its kind keeps beside it (flattened into the same
/// object, so the output reads as one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress<X> {
    pub stage: usize,
    pub weight: f64,
    /// The alias version or variant (or endpoint config) that was stable when the
    /// release started.
    pub stable: String,
    pub started_at: u64,
    pub stage_entered_at: u64,
    /// The current stage's time under watch: what its bake counts (see [`Progress::vouch`]).
    #[serde(default)]
    pub watched_seconds: u64,
    /// When the current stage was last checked; `None` in a progress from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_since: Option<u64>,
    /// When the current stage began waiting for approval (and the team was asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_since: Option<u64>,
    pub status: Status,
    /// When `rolled_back`: what took the traffic away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_by: Option<RolledBackBy>,
    pub wait_seconds: u64,
    /// A sentence a person reads: why this tick decided what it did. When the release
    /// ends, the execution's cause.
    pub reason: String,
    pub ticks: u64,
    pub history: Vec<Decision>,
    #[serde(default)]
    pub history_dropped: u64,
    /// Each stage's metrics as the sequential judge weighs them: the evidence carried
    /// from tick to tick and across stages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<StageSample>,
    /// The first check at which a test that is not enforced would have rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
    #[serde(flatten)]
    pub kind: X,
}

/// Where a dry run would have acted: what a team reads before it enforces a gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DryRun {
    /// 0-based.
    pub stage: usize,
    pub weight: f64,
    pub at: u64,
    /// Into the stage.
    pub after_seconds: u64,
    /// The tests, as a person names them.
    pub on: Vec<String>,
    /// What they found, with the numbers.
    pub detail: String,
}

impl DryRun {
    /// "would have rolled back at stage 2 (25%), 14m in, on OutputTokens p50 (canary ...)".
    pub fn describe(&self) -> String {
        format!(
            "would have rolled back at stage {} ({}), {} in, on {} ({})",
            self.stage + 1,
            percent(self.weight),
            duration(self.after_seconds),
            self.on.join(", "),
            self.detail
        )
    }
}

impl<X> Progress<X> {
    /// A release's progress as its first tick records it: no decisions yet, at stage 0.
    pub fn new(stable: &str, now: u64, kind: X) -> Self {
        Progress {
            stage: 0,
            weight: 0.0,
            stable: stable.to_owned(),
            started_at: now,
            stage_entered_at: now,
            watched_seconds: 0,
            checked_at: Some(now),
            holding_since: None,
            awaiting_since: None,
            status: Status::Advanced,
            rolled_back_by: None,
            wait_seconds: 0,
            reason: String::new(),
            ticks: 1,
            history: Vec::new(),
            history_dropped: 0,
            samples: Vec::new(),
            dry_run: None,
            kind,
        }
    }
}

/// How long a check vouches for before it: twice the time between checks, and at least
/// that time and ten seconds (a tick's own latency). A longer silence (the tick failing
/// and retried, the state machine or AWS out of reach) is time nobody watched: a bake
/// does not count it, so a stage never passes on the clock alone.
pub fn vouched_span(check_every_seconds: u64) -> u64 {
    check_every_seconds.saturating_mul(2).max(check_every_seconds.saturating_add(10))
}

impl<X> Progress<X> {
    /// The current stage starts now: nothing of it is watched yet.
    pub fn enter_stage(&mut self, now: u64) {
        self.stage_entered_at = now;
        self.watched_seconds = 0;
        self.checked_at = Some(now);
    }

    /// A check of the current stage succeeded at `now`: the time since the one before it
    /// counts as watched, up to [`vouched_span`]. Returns the stage's watched time.
    pub fn vouch(&mut self, now: u64, check_every_seconds: u64) -> u64 {
        let since = self.checked_at.unwrap_or(self.stage_entered_at).max(self.stage_entered_at);
        let gap = now.saturating_sub(since);
        self.watched_seconds = self.watched_seconds.saturating_add(gap.min(vouched_span(check_every_seconds)));
        self.checked_at = Some(now.max(since));
        self.watched_seconds
    }

    /// A tick of a release that ended is a mistake of whoever sent it.
    pub fn ensure_running(&self) -> Result<()> {
        if self.status.has_ended() {
            return Err(Error::InvalidRelease(format!(
                "the release already ended {}; start a new execution",
                self.status.as_str()
            )));
        }
        Ok(())
    }

    /// Keeps this tick's decision, and at most the last [`HISTORY_LIMIT`] of them.
    pub fn record(&mut self, now: u64, evidence: Option<Value>) {
        self.history.push(Decision {
            at: now,
            stage: self.stage,
            weight: self.weight,
            status: self.status,
            reason: self.reason.clone(),
            evidence,
            shadow: false,
            replay: false,
            by: None,
        });
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
            self.history_dropped += excess as u64;
        }
    }

    /// This tick's decision: its status, the wait before the next tick, and why, kept in
    /// the history with its evidence.
    pub fn decide(mut self, now: u64, status: Status, wait: u64, reason: String, evidence: Option<&Evidence>) -> Self {
        self.status = status;
        self.wait_seconds = wait;
        self.reason = reason;
        self.record(now, evidence.and_then(|e| serde_json::to_value(e).ok()));
        self
    }

    /// The last decision was made at `who`'s request, if anyone's.
    pub fn made_by(mut self, who: Option<&str>) -> Self {
        if let (Some(who), Some(last)) = (who, self.history.last_mut()) {
            last.by = Some(who.to_owned());
        }
        self
    }

    /// The last decision: the release ends, and `reason` is the execution's cause.
    /// A dry run that found something is said in it too.
    pub fn finish(self, now: u64, status: Status, reason: String, evidence: Option<&Evidence>) -> Self {
        let mut ended = self.decide(now, status, 0, reason, evidence);
        if let Some(dry_run) = &ended.dry_run {
            ended.reason = format!("{}. Dry run: {}", ended.reason.trim_end_matches('.'), dry_run.describe());
            if let Some(last) = ended.history.last_mut() {
                last.reason.clone_from(&ended.reason);
            }
        }
        ended
    }

    /// Keeps the first check at which a test that is not enforced would have rolled back.
    pub fn note_dry_run(&mut self, evidence: &Evidence, now: u64) {
        if evidence.dry_run.is_empty() || self.dry_run.is_some() {
            return;
        }
        self.dry_run = Some(DryRun {
            stage: self.stage,
            weight: self.weight,
            at: now,
            after_seconds: now.saturating_sub(self.stage_entered_at),
            on: evidence.tests.iter().filter(|t| !t.enforced && t.rejects()).map(|t| t.name.clone()).collect(),
            detail: evidence.dry_run.join("; "),
        });
    }

    /// The current stage's metrics so far replace its previous sample; a new stage
    /// starts its own, and the ones before stay as they ended.
    pub fn keep_sample(&mut self, sample: StageSample) {
        match self.samples.last_mut() {
            Some(last) if last.stage == sample.stage => *last = sample,
            _ => self.samples.push(sample),
        }
    }
}

impl Decision {
    /// The phase before any user it was made in, if any.
    pub fn before_users(&self) -> Option<BeforeUsers> {
        match (self.replay, self.shadow) {
            (true, _) => Some(BeforeUsers::Replay),
            (false, true) => Some(BeforeUsers::Shadow),
            _ => None,
        }
    }
}

/// The phases a release may pass before any user is served by its candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BeforeUsers {
    /// Requests from a source, replayed to both versions (decision 0023).
    Replay,
    /// Copies of live requests.
    Shadow,
}

impl BeforeUsers {
    /// "replay", "shadow": how status lines and reports name the phase.
    pub fn name(self) -> &'static str {
        match self {
            BeforeUsers::Replay => "replay",
            BeforeUsers::Shadow => "shadow",
        }
    }
}
