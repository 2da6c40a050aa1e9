//! The weight canary's tick, over the in-memory adapters: every path a release takes.

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result};
use crate::domain::event::AlarmState;
use crate::domain::split::Split;
use crate::domain::stamp::Phase;
use crate::memory::{lambda_split, Alarms, Metrics, Outbox, Router};
use crate::release::canary::control::{self, Command};
use crate::release::canary::progress::Progress;
use crate::release::canary::safety::safety_rollback;
use crate::release::canary::spec::{Release, Stage};
use crate::release::core::ending::{Ending, SafetyOutcome};
use crate::release::core::progress::{Status, HISTORY_LIMIT};
use crate::release::core::{Adapters, StepDeps, Tick};
use crate::release::judge::gates::{Gates, InsufficientDataAlarm, OnInsufficientData};
use crate::release::tick_payload;
use crate::rollback::Owner;
use crate::Target;

const T0: u64 = 1_800_000_000;
const ME: &str = "arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42";
const OTHER: &str = "arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42-again";

fn release(gates: Gates) -> Release {
    let release = Release {
        release: "ai-handler-42".into(),
        target: Target::lambda("ai-handler", "live"),
        canary_version: Some("42".into()),
        stages: vec![Stage::new(5.0, 600), Stage::new(25.0, 600), Stage::new(100.0, 300)],
        check_every_seconds: 60,
        gates,
        shadow: None,
        replay: None,
        cohorts: None,
    };
    release.validate().unwrap();
    release
}

fn gates() -> Gates {
    Gates { alarms: vec!["errors".into()], max_error_rate: Some(0.05), min_requests: 100, ..Gates::default() }
}

struct World {
    router: Router,
    notifier: Outbox,
    alarms: Alarms,
    metrics: Metrics,
}

impl World {
    fn new(split: Split) -> Self {
        let alarms = Alarms::with([("errors".to_owned(), AlarmState::Ok)]);
        let metrics = Metrics::default();
        metrics.set((1000.0, 1.0), (20_000.0, 20.0));
        // The stable's last hour before the start: enough for the first stage to judge.
        metrics.served(333.0, 60, T0);
        World { router: Router::with([(target(), split)]), notifier: Outbox::default(), alarms, metrics }
    }

    fn deps(&self) -> Adapters<'_, Router, Outbox, Alarms, Metrics> {
        StepDeps::new(&self.router, &self.notifier, &self.alarms, &self.metrics)
    }

    async fn tick(&self, release: &Release, progress: Option<Progress>, now: u64) -> Result<Progress> {
        self.tick_as(ME, release, progress, now).await
    }

    /// A tick at `now`, the stage having been watched since the tick before: these
    /// tests jump over the ticks between two they look at, as if those were made and
    /// changed nothing. (That an unwatched gap is not baked is tested on its own, with
    /// [`World::tick_unwatched`].)
    async fn tick_as(
        &self,
        execution: &str,
        release: &Release,
        progress: Option<Progress>,
        now: u64,
    ) -> Result<Progress> {
        let progress = progress.map(|mut p| {
            let last = p.checked_at.unwrap_or(p.stage_entered_at).max(p.stage_entered_at);
            let skipped = now.saturating_sub(last).saturating_sub(release.check_every_seconds);
            p.watched_seconds += skipped;
            p.checked_at = Some(last + skipped);
            p
        });
        self.tick_unwatched(execution, release, progress, now).await
    }

    /// A tick at `now` and nothing in between: the gap since the last check is what it is.
    async fn tick_unwatched(
        &self,
        execution: &str,
        release: &Release,
        progress: Option<Progress>,
        now: u64,
    ) -> Result<Progress> {
        let deps = self.deps();
        Tick { release, execution, deps: &deps, now }.step(progress).await
    }

    /// The state machine's safety step, after a tick of `execution` failed.
    async fn safety(&self, execution: &str, release: &Release, progress: Option<&Progress>) -> SafetyOutcome {
        let failure = serde_json::json!({"Error": "Retryable", "Cause": "{\"errorType\":\"Retryable\",\"errorMessage\":\"cloudwatch:GetMetricData failed: ThrottlingException: Rate exceeded (HTTP 400, request id r-1)\"}"});
        safety_rollback(release, progress, &failure, execution, &self.deps()).await.unwrap()
    }

    /// `release` at the most stages an execution holds, ticked every minute until
    /// promoted: the last progress, and the bytes of the state Step Functions passes on.
    async fn state_at_the_most_stages(&self, release: &mut Release) -> (Progress, usize) {
        use crate::release::core::limits::MAX_STAGES;
        release.stages = (1..=MAX_STAGES).map(|i| Stage::new(100.0 * i as f64 / MAX_STAGES as f64, 120)).collect();
        release.validate().unwrap();
        let mut p = self.tick(release, None, T0).await.unwrap();
        let mut now = T0;
        while p.status != Status::Promoted {
            now += 60;
            p = self.tick(release, Some(p), now).await.unwrap();
        }
        let mut state = serde_json::to_value(&*release).unwrap();
        state["progress"] = serde_json::to_value(&p).unwrap();
        let size = state.to_string().len();
        (p, size)
    }

    fn live(&self) -> Split {
        self.router.split(&target())
    }

    fn sent(&self) -> Vec<crate::ports::Notification> {
        self.notifier.sent()
    }
}

fn target() -> Target {
    Target::lambda("ai-handler", "live")
}

fn stable_only() -> Split {
    Split { revision: Some("rev-0".into()), ..Split::stable_only("41", None) }
}

async fn operator(world: &World, command: Command) {
    control::command(&world.router, &target(), "ai-handler-42", "jane", command).await.unwrap();
}

/// 5% and 25% until conclusive (at most 30 min each), then 100% for 5 min.
fn evidence_driven(gates: Gates) -> Release {
    let mut r = release(gates);
    r.stages = vec![Stage::until_conclusive(5.0, 1800), Stage::until_conclusive(25.0, 1800), Stage::new(100.0, 300)];
    r.validate().unwrap();
    r
}

mod azure;
mod claims;
mod cohorts;
mod operator;
mod recovery;
mod replay;
mod shadow;
mod stages;
mod start;
mod watched;
