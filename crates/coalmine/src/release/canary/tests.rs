//! The weight canary's tick, over the in-memory adapters: every path a release takes.

use crate::domain::cause::RolledBackBy;
use crate::domain::error::{Error, Result};
use crate::domain::event::AlarmState;
use crate::domain::split::Split;
use crate::domain::stamp::Phase;
use crate::memory::{lambda_split, Alarms, Metrics, Outbox, Router};
use crate::release::canary::control::{self, Command};
use crate::release::canary::safety::safety_rollback;
use crate::release::canary::spec::{Release, Stage};
use crate::release::core::ending::{Ending, SafetyOutcome};
use crate::release::core::gates::{Gates, InsufficientDataAlarm, OnInsufficientData};
use crate::release::core::progress::{Progress, Status, HISTORY_LIMIT};
use crate::release::core::{StepDeps, Tick};
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

    fn deps(&self) -> StepDeps<'_, Router, Outbox, Alarms, Metrics> {
        StepDeps { router: &self.router, notifier: &self.notifier, alarms: &self.alarms, metrics: &self.metrics }
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
        safety_rollback(release, progress, &failure, execution, &self.router, &self.notifier).await.unwrap()
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

#[tokio::test]
async fn the_first_tick_records_stable_and_stamps_the_alias_with_this_execution() {
    let world = World::new(stable_only());
    let p = world.tick(&release(gates()), None, T0).await.unwrap();
    assert_eq!((p.status, p.stage, p.stable.as_str(), p.wait_seconds), (Status::Advanced, 0, "41", 60));
    let live = world.live();
    assert_eq!((live.stable.as_str(), live.canary.as_deref(), live.canary_weight), ("41", Some("42"), 0.05));
    let stamp = live.stamp.unwrap();
    assert_eq!(
        (stamp.execution.as_str(), stamp.stable.as_str(), stamp.phase, stamp.stage),
        ("Release:ai-handler-42", "41", Phase::Live, Some((1, 3)))
    );
    assert_eq!(world.router.write_count(), 1);
    let (started, sees) = p.reason.split_once(". With 80% power").expect("says what the release can see");
    assert_eq!(
        started,
        "Started: version 42 at 5% beside version 41; stable: 333 requests a minute over the last hour; about 167 \
         for the canary in its first stage"
    );
    assert!(sees.contains("the release sees a canary worse than the stable by errors 8.31x"), "{sees}");
    assert!(
        sees.ends_with(
            "a 2x error rate is not seen before promotion; to see it, a stage alone would need to bake: 5% \
         29h20m, 25% 7h35m"
        ),
        "at 333 requests a minute, how long the stages would need: {sees}"
    );
}

#[tokio::test]
async fn too_little_traffic_to_judge_is_said_at_the_start() {
    let world = World::new(stable_only());
    // 10 stable requests a minute for the last hour: at 5% for 10 minutes, about 5 for the canary.
    world.metrics.served(10.0, 60, T0);
    let p = world.tick(&release(gates()), None, T0).await.unwrap();
    assert!(
            p.reason.contains("Warning: the stable served 10 requests a minute over the last hour: at 5% for 600 s the canary would see about 5, below min_requests 100"),
            "{}",
            p.reason
        );
    assert_eq!(world.metrics.windows()[0], (T0 - 3600, T0 + 60), "the stable's last hour");
    assert_eq!(world.live().canary_weight, 0.05, "a warning, not a refusal");
}

#[tokio::test]
async fn a_bad_starting_point_fails_before_any_traffic_moves() {
    let in_flight = World::new(lambda_split("41", "40", 0.1));
    let err = in_flight.tick(&release(gates()), None, T0).await.unwrap_err();
    assert!(
        err.to_string().contains("already has a canary in flight: version 41 at 90%, canary version 40 at 10%"),
        "{err}"
    );
    assert_eq!(err.error_type(), "InvalidRelease");

    let already_stable = World::new(Split { stable: "42".into(), ..stable_only() });
    let err = already_stable.tick(&release(gates()), None, T0).await.unwrap_err();
    assert!(err.to_string().contains("42 is already the stable version"), "{err}");

    let unpublished = World::new(stable_only());
    unpublished.router.missing_versions.lock().unwrap().push("42".into());
    let err = unpublished.tick(&release(gates()), None, T0).await.unwrap_err();
    assert!(err.to_string().contains("has no version 42"), "{err}");

    let no_alarm = World::new(stable_only());
    no_alarm.alarms.states.lock().unwrap().clear();
    let err = no_alarm.tick(&release(gates()), None, T0).await.unwrap_err();
    assert!(err.to_string().contains("gates.alarms: alarm \"errors\" does not exist"), "{err}");

    let no_alias = World::new(stable_only());
    no_alias.router.splits.lock().unwrap().clear();
    let err = no_alias.tick(&release(gates()), None, T0).await.unwrap_err();
    assert!(err.to_string().contains("target: lambda:ai-handler:live was not found"), "{err}");
    assert_eq!(err.error_type(), "InvalidRelease");

    for world in [in_flight, already_stable, unpublished, no_alarm, no_alias] {
        assert_eq!(world.router.write_count(), 0);
    }
}

#[tokio::test]
async fn a_release_never_starts_into_a_firing_gate_alarm() {
    let firing = World::new(stable_only());
    firing.alarms.set("errors", AlarmState::Alarm);
    let err = firing.tick(&release(gates()), None, T0).await.unwrap_err();
    assert!(err.to_string().contains("refused: gate alarm errors is ALARM"), "{err}");
    assert_eq!((err.error_type(), firing.router.write_count()), ("InvalidRelease", 0));

    // INSUFFICIENT_DATA blocks only when the release says such an alarm is unhealthy.
    let no_data = World::new(stable_only());
    no_data.alarms.set("errors", AlarmState::InsufficientData);
    let strict = release(Gates { alarm_insufficient_data: InsufficientDataAlarm::Unhealthy, ..gates() });
    let err = no_data.tick(&strict, None, T0).await.unwrap_err();
    assert!(err.to_string().contains("gate alarm errors is INSUFFICIENT_DATA"), "{err}");
    assert_eq!(no_data.router.write_count(), 0);
    no_data.tick(&release(gates()), None, T0).await.unwrap();
    assert_eq!(no_data.router.write_count(), 1, "the lenient default starts");
}

#[tokio::test]
async fn a_healthy_release_bakes_advances_promotes() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.wait_seconds, world.router.write_count()), (Status::Baking, 60, 1));
    assert_eq!(world.metrics.windows().last(), Some(&(T0, T0 + 60)), "judged over the stage so far");

    let p = world.tick(&r, Some(p), T0 + 570).await.unwrap();
    assert_eq!((p.status, p.wait_seconds), (Status::Baking, 30), "never waits past the bake");

    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.stage, p.weight, p.stage_entered_at), (Status::Advanced, 1, 0.25, T0 + 600));
    assert_eq!(world.live().canary_weight, 0.25);
    assert_eq!(world.live().stamp.unwrap().stage, Some((2, 3)));

    let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 2));
    let live = world.live();
    assert_eq!((live.stable.as_str(), live.canary), ("42", None), "Lambda at 100%: the alias points at the canary");
    let stamp = live.stamp.unwrap();
    assert_eq!((stamp.stable.as_str(), stamp.phase), ("41", Phase::Live), "the stable to restore is recorded");

    let p = world.tick(&r, Some(p), T0 + 1500).await.unwrap();
    assert_eq!((p.status, p.wait_seconds), (Status::Promoted, 0));
    assert!(p.reason.starts_with("Promoted: stage 100% baked; healthy: canary 1000 requests"), "{}", p.reason);
    assert_eq!(world.live().stamp.unwrap().phase, Phase::Promoted, "an alarm no longer reverts it");
    assert_eq!(world.router.write_count(), 4, "three stages and the promotion's record");
    assert!(world.sent().is_empty());
    assert_eq!(
        p.history.iter().map(|d| d.status).collect::<Vec<_>>(),
        [Status::Advanced, Status::Baking, Status::Baking, Status::Advanced, Status::Advanced, Status::Promoted]
    );

    let err = world.tick(&r, Some(p), T0 + 1600).await.unwrap_err();
    assert!(err.to_string().contains("already ended promoted"), "{err}");
}

#[tokio::test]
async fn a_stage_with_no_canary_traffic_is_never_healthy() {
    let world = World::new(stable_only());
    world.metrics.set((-0.0, 0.0), (20_000.0, 20.0));
    let r = release(Gates { max_hold_seconds: 120, ..gates() });
    let p = world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!(p.status, Status::Holding);
    assert_eq!(p.reason, "inconclusive: 0 canary requests, fewer than min_requests 100");
    let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn a_gate_alarm_rolls_back_with_the_shared_code_and_says_so() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.alarms.set("errors", AlarmState::Alarm);
    let fetched_at_start = world.metrics.windows().len();

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::GateAlarm)));
    assert_eq!(p.reason, "Rolled back on a gate alarm at stage 1 of 3 (5%): alarm errors is ALARM");
    assert_eq!((world.live().canary_weight, world.live().stable.as_str()), (0.0, "41"));
    assert_eq!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::GateAlarm));
    let sent = world.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].attributes.contains(&("release", "ai-handler-42".into())));
    assert_eq!(sent[0].subject, "coalmine: ai-handler-42 rolled back on lambda:ai-handler:live (gate alarm)");
    for line in [
        "one of its gate alarms fired",
        "Stage:     stage 1 of 3 (5%)",
        "Kind:      gate_alarm",
        "Before:    version 41 at 95%, canary version 42 at 5%",
        "After:     version 41 serves all traffic, no canary",
        "Why:       alarm errors is ALARM",
        "executions/details/arn:aws:states:us-east-1:123456789012:execution:Release:ai-handler-42",
        "will not start until it is OK",
    ] {
        assert!(sent[0].body.contains(line), "lacks {line:?}:\n{}", sent[0].body);
    }
    assert_eq!(world.metrics.windows().len(), fetched_at_start, "an alarm needs no metrics");
}

#[tokio::test]
async fn bad_metrics_roll_back_with_evidence() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((1000.0, 80.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::Health)));
    let evidence = p.history.last().unwrap().evidence.as_ref().unwrap();
    assert_eq!(evidence["metrics"]["canary"]["errors"], 80.0);
    assert!(
        p.reason.contains("canary error rate 8.00% over 1000 requests, above max_error_rate 5.00%"),
        "{}",
        p.reason
    );
    let body = &world.sent()[0].body;
    assert!(body.contains("its canary failed a health check"), "{body}");
    assert!(
        body.contains(
            "Evidence:  canary 1000 requests, 80 errors (8.00%), p95 n/a; stable 20000 requests, 20 errors (0.10%)"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn a_split_changed_by_someone_else_stops_the_release_without_writing() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    // A person raises the weight in the console; the description (the stamp) stays.
    let stamp = world.live().stamp;
    world.router.splits.lock().unwrap().insert(target(), Split { stamp, ..lambda_split("41", "42", 0.5) });

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::OutsideChange)));
    assert!(
        p.reason.contains(
            "changed outside the release (expected version 41 at 95%, canary version 42 at 5%, found version 41 \
                 at 50%, canary version 42 at 50%); coalmine left it as found"
        ),
        "{}",
        p.reason
    );
    assert_eq!((world.live().canary_weight, world.router.write_count()), (0.5, 1), "not written over");
    assert!(world.sent()[0].subject.ends_with("(changed outside the release)"), "{}", world.sent()[0].subject);
}

#[tokio::test]
async fn a_rollback_by_the_rollback_function_is_named_and_not_announced_twice() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    let by = RolledBackBy::Alarm("coalmine-ai-handler-errors".into());
    crate::rollback::zero_canary(&world.router, &target(), &by, Owner::Alarm, None).await.unwrap();

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!(
        (p.status, p.rolled_back_by),
        (Status::RolledBack, Some(RolledBackBy::Alarm("coalmine-ai-handler-errors".into())))
    );
    assert!(
        p.reason.starts_with(
            "Rolled back by the rollback function on alarm coalmine-ai-handler-errors, at stage 1 of 3 (5%)"
        ),
        "{}",
        p.reason
    );
    assert!(world.sent().is_empty(), "the rollback function told the team already");
    assert_eq!(world.router.write_count(), 2);
}

#[tokio::test]
async fn a_conflict_while_advancing_is_not_overwritten_and_the_retry_says_what_won() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    // The rollback function zeroes it between the stepper's read and its write.
    let zeroed = Split {
        stamp: world.live().stamp.map(|s| s.rolled_back(RolledBackBy::Alarm("errors-fast".into()))),
        ..lambda_split("41", "42", 0.0)
    };
    world.router.interleaved.lock().unwrap().insert(target(), [zeroed].into());

    let err = world.tick(&r, Some(p.clone()), T0 + 600).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }) && err.is_retryable(), "{err}");
    assert_eq!(world.live().canary_weight, 0.0, "not overwritten");

    let p = world.tick(&r, Some(p), T0 + 602).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::Alarm("errors-fast".into()))));
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn unhealthy_after_promotion_restores_the_recorded_stable_version() {
    let world = World::new(stable_only());
    let r = release(gates());
    let mut p = world.tick(&r, None, T0).await.unwrap();
    for at in [T0 + 600, T0 + 1200] {
        p = world.tick(&r, Some(p), at).await.unwrap();
    }
    assert_eq!(world.live().stable, "42");
    world.alarms.set("errors", AlarmState::Alarm);

    let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();

    assert_eq!(p.status, Status::RolledBack);
    assert_eq!((world.live().stable.as_str(), world.live().canary), ("41", None));
    assert!(world.sent()[0].body.contains("Before:    version 42 serves all traffic"), "{}", world.sent()[0].body);
}

#[tokio::test]
async fn a_rolled_back_release_leaves_its_weight_at_zero_and_records_what_serves() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((1000.0, 80.0), (20_000.0, 20.0));

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!((p.status, p.weight), (Status::RolledBack, 0.0));
    assert_eq!(p.history.last().unwrap().weight, 0.0, "the timeline ends at the weight left");
    assert_eq!((p.last_written.stable.as_str(), p.last_written.weight), ("41", 0.0));
}

#[tokio::test]
async fn an_alarm_at_100_percent_says_the_previous_version_was_put_back() {
    let world = World::new(stable_only());
    let r = release(gates());
    let mut p = world.tick(&r, None, T0).await.unwrap();
    for at in [T0 + 600, T0 + 1200] {
        p = world.tick(&r, Some(p), at).await.unwrap();
    }
    assert_eq!((world.live().stable.as_str(), p.weight), ("42", 1.0), "promoted, baking at 100%");
    let by = RolledBackBy::Alarm("coalmine-ai-handler-errors".into());
    crate::rollback::zero_canary(&world.router, &target(), &by, Owner::Alarm, None).await.unwrap();

    let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();

    assert!(
        p.reason.ends_with(
            "at stage 3 of 3 (100%): version 42 had been promoted; version 41 was put back as soon as the alarm fired"
        ),
        "{}",
        p.reason
    );
    assert_eq!((p.weight, p.last_written.stable.as_str()), (0.0, "41"));
}

#[tokio::test]
async fn insufficient_data_holds_then_fails_safe() {
    let world = World::new(stable_only());
    let r = release(Gates { max_hold_seconds: 300, ..gates() });
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((10.0, 0.0), (1000.0, 0.0));

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::Baking, "mid-bake, too little data is no reason to stop");
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.holding_since, p.wait_seconds), (Status::Holding, Some(T0 + 600), 60));
    let p = world.tick(&r, Some(p), T0 + 840).await.unwrap();
    assert_eq!(p.status, Status::Holding);
    assert_eq!(world.live().canary_weight, 0.05, "holding keeps the weight");
    let p = world.tick(&r, Some(p), T0 + 900).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert!(p.reason.contains("fewer than min_requests 100, still after holding 300 s"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn insufficient_data_policies_rollback_and_proceed() {
    for (policy, expected) in
        [(OnInsufficientData::Rollback, Status::RolledBack), (OnInsufficientData::Proceed, Status::Advanced)]
    {
        let world = World::new(stable_only());
        let r = release(Gates { on_insufficient_data: policy, ..gates() });
        let p = world.tick(&r, None, T0).await.unwrap();
        world.metrics.set((10.0, 0.0), (1000.0, 0.0));
        let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
        assert_eq!(p.status, expected, "{policy:?}");
        if policy == OnInsufficientData::Proceed {
            assert!(p.reason.contains("proceeding, as on_insufficient_data says"), "never 'healthy': {}", p.reason);
        }
    }
}

#[tokio::test]
async fn a_failed_rollback_message_fails_the_tick_and_the_retry_sends_it() {
    let world = World { notifier: Outbox::failing(1), ..World::new(stable_only()) };
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.alarms.set("errors", AlarmState::Alarm);

    let err = world.tick(&r, Some(p.clone()), T0 + 60).await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("message was not sent"), "{err}");
    assert_eq!(world.live().canary_weight, 0.0, "the rollback stands");

    let p = world.tick(&r, Some(p), T0 + 61).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert_eq!(world.sent().len(), 1, "the retry told the team");
    assert_eq!(world.router.write_count(), 2, "and wrote nothing more");
    // ... as what it was: a gate alarm, not a generic health check.
    assert_eq!(p.rolled_back_by, Some(RolledBackBy::GateAlarm));
    assert!(world.sent()[0].body.contains("Kind:      gate_alarm"), "{}", world.sent()[0].body);
    assert!(world.sent()[0].subject.ends_with("(gate alarm)"), "{}", world.sent()[0].subject);
}

#[tokio::test]
async fn a_retried_rollback_is_announced_with_the_cause_its_stamp_records() {
    for by in [RolledBackBy::Health, RolledBackBy::ApprovalTimeout, RolledBackBy::Safety] {
        let world = World::new(stable_only());
        let r = release(gates());
        let p = world.tick(&r, None, T0).await.unwrap();
        // An earlier attempt of this tick rolled back, then failed before answering.
        crate::rollback::zero_canary(&world.router, &target(), &by, Owner::Execution(ME), None).await.unwrap();

        let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

        assert_eq!((p.status, p.rolled_back_by.as_ref()), (Status::RolledBack, Some(&by)));
        assert!(p.reason.starts_with(by.headline()), "{}", p.reason);
        let body = &world.sent()[0].body;
        assert!(body.contains(&format!("Kind:      {}", by.as_str())), "{by:?}: {body}");
    }
}

#[tokio::test]
async fn a_retried_tick_picks_up_what_its_failed_attempt_wrote() {
    // The first tick wrote stage 0, then its answer was lost.
    let world = World::new(stable_only());
    let r = release(gates());
    world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, None, T0 + 2).await.unwrap();
    assert_eq!((p.status, p.stage, p.stable.as_str()), (Status::Advanced, 0, "41"));
    assert_eq!(world.router.write_count(), 1, "not started twice");

    // An advance wrote stage 1, then its answer was lost: the retry has the old progress.
    let before_advance = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    world.tick(&r, Some(before_advance.clone()), T0 + 700).await.unwrap();
    let p = world.tick(&r, Some(before_advance), T0 + 702).await.unwrap();
    assert_eq!((p.status, p.stage, p.weight), (Status::Advanced, 1, 0.25));
    assert!(p.reason.contains("an earlier attempt of this tick advanced"), "{}", p.reason);
    assert_eq!(world.router.write_count(), 2);
    let p = world.tick(&r, Some(p), T0 + 760).await.unwrap();
    assert_eq!(p.status, Status::Baking);
}

#[tokio::test]
async fn a_second_execution_of_the_same_release_is_refused_and_its_safety_step_undoes_nothing() {
    let world = World::new(stable_only());
    let r = release(gates());
    let first = world.tick(&r, None, T0).await.unwrap();

    let err = world.tick_as(OTHER, &r, None, T0 + 5).await.unwrap_err();
    assert!(
            err.to_string().contains("already has a canary in flight: version 41 at 95%, canary version 42 at 5% (release ai-handler-42, execution Release:ai-handler-42, stage 1 of 3)"),
            "{err}"
        );
    let failure = serde_json::json!({"Error": err.error_type(), "Cause": serde_json::json!({"errorType": err.error_type(), "errorMessage": err.to_string()}).to_string()});
    let ended = safety_rollback(&r, None, &failure, OTHER, &world.router, &world.notifier).await.unwrap();

    assert_eq!((ended.ending, ended.undone), (Ending::InvalidRelease, false));
    assert!(
        ended.cause.starts_with("Invalid release, nothing moved: refused: lambda:ai-handler:live already has a canary"),
        "{}",
        ended.cause
    );
    assert_eq!(world.live().canary_weight, 0.05, "the first release's canary is untouched");
    assert!(world.sent().is_empty());
    let p = world.tick(&r, Some(first), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "and it climbs on");
}

#[tokio::test]
async fn the_safety_rollback_undoes_only_this_executions_traffic() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();

    let ended = world.safety(ME, &r, Some(&p)).await;
    assert_eq!((ended.ending, ended.undone), (Ending::FailedAfterUndoing, true));
    assert_eq!(
        ended.cause,
        "Failed after undoing: the release's tick kept failing: cloudwatch:GetMetricData failed: \
             ThrottlingException: Rate exceeded (HTTP 400, request id r-1). coalmine set the traffic back: version 41 \
             serves all traffic, no canary"
    );
    assert_eq!(world.live().canary_weight, 0.0);
    assert_eq!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Safety));
    assert!(world.sent()[0].body.contains("Kind:      safety"), "{}", world.sent()[0].body);

    // Run again (the state machine retries): the stamp says it is done.
    let again = world.safety(ME, &r, Some(&p)).await;
    assert_eq!((again.ending, again.undone), (Ending::RolledBack, false));
    assert_eq!(world.router.write_count(), 2);

    // A crash after the first write but before the tick answered: no progress, the
    // stamp alone tells the safety step the traffic is this execution's.
    let crashed = World::new(stable_only());
    crashed.tick(&r, None, T0).await.unwrap();
    assert_eq!(crashed.safety(ME, &r, None).await.ending, Ending::FailedAfterUndoing);
    assert_eq!(crashed.live().canary_weight, 0.0);

    // Another execution's canary, or one with no stamp at all, is not ours to touch.
    let theirs = World::new(lambda_split("41", "40", 0.3));
    let ended = theirs.safety(ME, &r, None).await;
    assert_eq!((ended.ending, ended.undone), (Ending::FailedAfterUndoing, false));
    assert!(
        ended.cause.ends_with("This release had moved no traffic, so there was nothing to undo"),
        "{}",
        ended.cause
    );
    assert_eq!(theirs.live().canary_weight, 0.3);
}

#[tokio::test]
async fn a_typo_in_the_target_ends_invalid_not_stuck() {
    let world = World::new(stable_only());
    let mut r = release(gates());
    r.target = Target::lambda("ai-handlr", "live");
    let err = world.tick(&r, None, T0).await.unwrap_err();
    let failure = serde_json::json!({"Error": err.error_type(), "Cause": serde_json::json!({"errorMessage": err.to_string()}).to_string()});
    let ended = safety_rollback(&r, None, &failure, ME, &world.router, &world.notifier).await.unwrap();
    assert_eq!(ended.ending, Ending::InvalidRelease);
    assert!(ended.cause.contains("lambda:ai-handlr:live was not found"), "{}", ended.cause);
}

#[tokio::test]
async fn a_failure_after_the_promotion_was_recorded_ends_promoted() {
    let world = World::new(stable_only());
    let r = release(gates());
    let mut p = world.tick(&r, None, T0).await.unwrap();
    for at in [T0 + 600, T0 + 1200, T0 + 1500] {
        p = world.tick(&r, Some(p), at).await.unwrap();
    }
    let ended = world.safety(ME, &r, Some(&p)).await;
    assert_eq!((ended.ending, ended.undone), (Ending::Promoted, false));
    assert_eq!(world.live().stable, "42", "a promotion whose bake passed is not undone");
}

async fn operator(world: &World, command: Command) {
    control::command(&world.router, &target(), "ai-handler-42", "jane", command).await.unwrap();
}

#[tokio::test]
async fn a_paused_release_is_still_judged_but_does_not_advance_until_resumed() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    operator(&world, Command::Pause).await;

    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!((p.status, p.stage, p.wait_seconds), (Status::Paused, 0, 60));
    assert!(p.reason.starts_with("Paused by jane at stage 1 of 3 (5%), bake done"), "{}", p.reason);
    let p = world.tick(&r, Some(p), T0 + 660).await.unwrap();
    assert_eq!((p.status, world.router.write_count()), (Status::Paused, 2), "only the pause was written");

    operator(&world, Command::Resume).await;
    let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1));

    // Paused, and then unhealthy: the judge still rolls back.
    operator(&world, Command::Pause).await;
    world.metrics.set((1000.0, 200.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 780).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn an_approval_stage_waits_asks_the_team_once_and_goes_on_when_approved() {
    let world = World::new(stable_only());
    let mut r = release(gates());
    r.stages[1].approval = true;
    r.stages[1].approval_timeout_seconds = Some(3600);
    let mut p = world.tick(&r, None, T0).await.unwrap();
    p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!(p.stage, 1);

    let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
    assert_eq!((p.status, p.awaiting_since, p.wait_seconds), (Status::AwaitingApproval, Some(T0 + 1200), 60));
    assert!(p.reason.contains("coalmine approve ai-handler-42; rolls back without it in 1h00m"), "{}", p.reason);
    let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();
    assert_eq!(p.status, Status::AwaitingApproval);
    let sent = world.sent();
    assert_eq!(sent.len(), 1, "asked once");
    assert!(sent[0].attributes.contains(&("event", "awaiting_approval".into())));
    assert_eq!(sent[0].subject, "coalmine: ai-handler-42 on lambda:ai-handler:live waits for approval at 25%");

    operator(&world, Command::Approve).await;
    let p = world.tick(&r, Some(p), T0 + 1320).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 2));
    assert!(p.reason.contains("Approved by jane."), "{}", p.reason);
    assert_eq!(world.live().stamp.unwrap().request, None, "carried out, then cleared");
}

#[tokio::test]
async fn no_approval_in_time_rolls_back() {
    let world = World::new(stable_only());
    let mut r = release(gates());
    r.stages[0].approval = true;
    r.stages[0].approval_timeout_seconds = Some(120);
    let p = world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!(p.status, Status::AwaitingApproval);
    let p = world.tick(&r, Some(p), T0 + 720).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by), (Status::RolledBack, Some(RolledBackBy::ApprovalTimeout)));
    assert!(p.reason.contains("no approval within 2m"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn promote_ends_the_bake_now_and_promote_full_ends_the_release_promoted() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    operator(&world, Command::Promote { full: false }).await;
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "10 minutes early");
    assert!(p.reason.contains("Promoted by jane."), "{}", p.reason);

    // Too little data is no reason to refuse an operator's promote; it says so.
    world.metrics.set((3.0, 0.0), (1000.0, 0.0));
    operator(&world, Command::Promote { full: true }).await;
    let p = world.tick(&r, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::Promoted);
    assert!(p.reason.starts_with("Promoted by jane (promote --full) from stage 2 of 3 (25%)"), "{}", p.reason);
    assert!(p.reason.contains("proceeding, as jane promoted it"), "{}", p.reason);
    let live = world.live();
    assert_eq!((live.stable.as_str(), live.canary_is_zero()), ("42", true));
    assert_eq!(live.stamp.unwrap().phase, Phase::Promoted);

    // An unhealthy canary is rolled back, whatever was asked.
    let world = World::new(stable_only());
    let p = world.tick(&r, None, T0).await.unwrap();
    operator(&world, Command::Promote { full: true }).await;
    world.metrics.set((1000.0, 200.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
}

#[tokio::test]
async fn an_abort_by_hand_ends_the_release_naming_who_and_why() {
    let world = World::new(stable_only());
    let r = release(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    control::abort(&world.router, &world.notifier, &r, ME, "jane", "answers look truncated").await.unwrap();

    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();

    assert_eq!(
        (p.status, p.rolled_back_by),
        (
            Status::RolledBack,
            Some(RolledBackBy::Operator { who: "jane".into(), why: Some("answers look truncated".into()) })
        )
    );
    assert_eq!(p.reason, "Rolled back at stage 1 of 3 (5%) by jane, by hand: answers look truncated");
    assert_eq!(world.sent().len(), 1, "the abort told the team; the release does not again");
    // A later release of the target starts.
    let next = World { router: Router::with([(target(), world.live())]), ..World::new(stable_only()) };
    next.tick_as(OTHER, &r, None, T0 + 120).await.unwrap();
}

#[tokio::test]
async fn history_stays_bounded() {
    let world = World::new(stable_only());
    let r = Release { stages: vec![Stage::new(100.0, 100_000)], ..release(gates()) };
    let mut p = world.tick(&r, None, T0).await.unwrap();
    for i in 1..=100 {
        p = world.tick(&r, Some(p), T0 + i * 60).await.unwrap();
    }
    assert_eq!(p.history.len(), HISTORY_LIMIT);
    assert_eq!(p.history_dropped, 101 - HISTORY_LIMIT as u64);
    assert_eq!(p.history.last().unwrap().at, T0 + 6000);
    assert!(serde_json::to_string(&p).unwrap().len() < 64 * 1024);
}

#[tokio::test]
async fn the_payload_is_the_execution_and_the_state_and_round_trips() {
    let world = World::new(stable_only());
    let deps = world.deps();
    let state = serde_json::to_value(release(gates())).unwrap();
    let out = tick_payload(
        &serde_json::json!({"execution": ME, "state": state}),
        &deps,
        &crate::memory::Claims::default(),
        T0,
    )
    .await
    .unwrap();
    assert_eq!(out["progress"]["status"], "advanced");
    assert_eq!(out["release"], "ai-handler-42");
    let again = tick_payload(
        &serde_json::json!({"execution": ME, "state": out}),
        &deps,
        &crate::memory::Claims::default(),
        T0 + 60,
    )
    .await
    .unwrap();
    assert_eq!(again["progress"]["status"], "baking");

    let mut edited = again.clone();
    edited["progress"]["stage"] = "two".into();
    let err = tick_payload(
        &serde_json::json!({"execution": ME, "state": edited}),
        &deps,
        &crate::memory::Claims::default(),
        T0 + 60,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("progress:"), "{err}");

    let err = tick_payload(&again, &deps, &crate::memory::Claims::default(), T0 + 60).await.unwrap_err();
    assert!(err.to_string().contains("start a release with StartExecution"), "{err}");

    let mut failed = again.clone();
    failed["canary_version"] = "$LATEST".into();
    failed["failure"] = serde_json::json!({"Error": "InvalidRelease", "Cause": "x"});
    let ended = tick_payload(
        &serde_json::json!({"execution": ME, "state": failed}),
        &deps,
        &crate::memory::Claims::default(),
        T0,
    )
    .await
    .unwrap();
    assert_eq!(ended["ending"], "invalid_release");
    assert!(ended["cause"].as_str().unwrap().contains("$LATEST"), "{ended}");
}

/// 5% and 25% until conclusive (at most 30 min each), then 100% for 5 min.
fn evidence_driven(gates: Gates) -> Release {
    let mut r = release(gates);
    r.stages = vec![Stage::until_conclusive(5.0, 1800), Stage::until_conclusive(25.0, 1800), Stage::new(100.0, 300)];
    r.validate().unwrap();
    r
}

#[tokio::test]
async fn an_evidence_driven_stage_advances_once_its_tests_rule_out_a_regression() {
    let world = World::new(stable_only());
    let r = evidence_driven(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    // 20 000 canary requests at the stable's 0.1%: enough to rule out twice it.
    world.metrics.set((20_000.0, 20.0), (380_000.0, 380.0));
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "{}", p.reason);
    assert!(
        p.reason.starts_with("Stage 5% concluded in 1m, its tests ruling out twice their tolerance; now at 25%."),
        "{}",
        p.reason
    );
    // The same canary on a thin stage: healthy, but it cannot yet rule out a doubling.
    world.metrics.set((1000.0, 1.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::Baking, "{}", p.reason);
    assert!(p.reason.starts_with("healthy"), "{}", p.reason);
}

#[tokio::test]
async fn an_evidence_driven_stage_at_its_longest_bake_follows_on_insufficient_data() {
    let world = World::new(stable_only());
    let r = evidence_driven(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((1000.0, 1.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 1740).await.unwrap();
    assert_eq!((p.status, p.wait_seconds), (Status::Baking, 60), "{}", p.reason);
    let p = world.tick(&r, Some(p), T0 + 1800).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Holding, 0), "{}", p.reason);
    assert!(
        p.reason.starts_with(
            "inconclusive after 30m: errors could not yet rule out twice the tolerance; so far canary 1000 requests"
        ),
        "{}",
        p.reason
    );
    // Holding is still judging: evidence that comes in lets it go on.
    world.metrics.set((20_000.0, 20.0), (380_000.0, 380.0));
    let p = world.tick(&r, Some(p), T0 + 1860).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "{}", p.reason);

    for (policy, expected) in
        [(OnInsufficientData::Rollback, Status::RolledBack), (OnInsufficientData::Proceed, Status::Advanced)]
    {
        let world = World::new(stable_only());
        let r = evidence_driven(Gates { on_insufficient_data: policy, ..gates() });
        let p = world.tick(&r, None, T0).await.unwrap();
        world.metrics.set((1000.0, 1.0), (20_000.0, 20.0));
        let p = world.tick(&r, Some(p), T0 + 1800).await.unwrap();
        assert_eq!(p.status, expected, "{policy:?}: {}", p.reason);
    }
}

#[tokio::test]
async fn an_evidence_driven_stage_still_rolls_back_on_evidence_against_the_canary() {
    let world = World::new(stable_only());
    let r = evidence_driven(gates());
    let p = world.tick(&r, None, T0).await.unwrap();
    world.metrics.set((20_000.0, 200.0), (380_000.0, 380.0));
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
}

#[tokio::test]
async fn a_dry_run_judges_says_and_never_acts_and_the_team_hears_where_it_would_have() {
    let world = World::new(stable_only());
    let r = release(Gates { enforce: false, ..gates() });
    let p = world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 300).await.unwrap();
    assert_eq!(p.dry_run, None, "nothing found yet");
    // Ten times the stable's error rate from the second stage on.
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    world.metrics.set((1000.0, 10.0), (20_000.0, 20.0));
    let p = world.tick(&r, Some(p), T0 + 840).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Baking, 1), "{}", p.reason);
    assert!(p.reason.contains("dry run: would roll back: canary error rate"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.25, "a dry run never moves traffic");
    let found = p.dry_run.clone().unwrap();
    assert_eq!((found.stage, found.weight, found.after_seconds, found.at), (1, 0.25, 240, T0 + 840));
    assert_eq!(found.on, ["errors"], "1% is within max_error_rate 5%");

    let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 1500).await.unwrap();
    assert_eq!(p.status, Status::Promoted, "{}", p.reason);
    assert!(
        p.reason.contains(". Dry run: would have rolled back at stage 2 (25%), 4m in, on errors (canary"),
        "{}",
        p.reason
    );
    assert_eq!(p.dry_run.as_ref().map(|d| d.at), Some(T0 + 840), "the first finding is kept");
    let sent = world.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].subject,
        "coalmine: ai-handler-42 promoted on lambda:ai-handler:live; a dry-run gate would have rolled it back"
    );
    assert!(
        sent[0].body.contains("would have rolled back at stage 2 (25%), 4m in, on errors (canary error rate"),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn a_rollback_message_says_what_a_dry_run_found_before() {
    let world = World::new(stable_only());
    let mut g = gates();
    g.custom = vec![crate::domain::metrics::CustomGate {
        max_increase_ratio: Some(0.2),
        enforce: false,
        dimensions: [("Version".to_owned(), "{version}".to_owned())].into(),
        ..crate::domain::metrics::CustomGate::new("AIService", "SchemaFailures", "Sum")
    }];
    let r = release(g);
    let p = world.tick(&r, None, T0).await.unwrap();
    let mut snapshot = world.metrics.snapshot.lock().unwrap().clone();
    snapshot.canary.custom = vec![Some(60.0)];
    snapshot.stable.custom = vec![Some(20.0)];
    world.metrics.put(snapshot);
    let p = world.tick(&r, Some(p), T0 + 120).await.unwrap();
    assert_eq!(p.status, Status::Baking, "{}", p.reason);
    assert_eq!(p.dry_run.as_ref().map(|d| d.on.clone()), Some(vec!["SchemaFailures".to_owned()]), "{}", p.reason);
    world.alarms.set("errors", AlarmState::Alarm);
    let p = world.tick(&r, Some(p), T0 + 180).await.unwrap();
    assert_eq!(p.status, Status::RolledBack);
    let sent = world.sent();
    assert!(
        sent[0].body.contains("would have rolled back at stage 1 (5%), 2m in, on SchemaFailures"),
        "{}",
        sent[0].body
    );
}

mod shadow {
    use super::*;
    use crate::domain::metrics::{MetricSnapshot, SideMetrics};
    use crate::release::canary::shadow_spec::Shadow;

    fn shadowed_release() -> Release {
        let mut release = release(gates());
        release.shadow = Some(
            serde_json::from_value(serde_json::json!({
                "duration_seconds": 600,
                "sample": 0.5,
                "compare": {"label": {"pointer": "/label"}},
                "max_disagreement_increase_ratio": 0.5,
            }))
            .unwrap(),
        );
        release.validate().unwrap();
        release
    }

    fn shadow(release: &Release) -> &Shadow {
        release.shadow.as_ref().unwrap()
    }

    /// What the shadow function counted: shadowed requests, errors and disagreements on
    /// each side (the stable's being it asked again).
    fn counted(world: &World, candidate: (f64, f64, f64), stable: (f64, f64, f64)) {
        let side = |(shadowed, errors, disagreements): (f64, f64, f64)| SideMetrics {
            requests: shadowed,
            errors,
            p95_ms: Some(120.0),
            custom: vec![Some(disagreements)],
            custom_counts: vec![Some(shadowed - errors)],
            ..SideMetrics::default()
        };
        world.metrics.put(MetricSnapshot { canary: side(candidate), stable: side(stable) });
    }

    #[tokio::test]
    async fn a_shadow_moves_no_traffic_opens_its_feed_and_enters_the_first_stage_when_it_passes() {
        let world = World::new(stable_only());
        let release = shadowed_release();
        let p = world.tick(&release, None, T0).await.unwrap();
        assert_eq!(p.status, Status::Advanced);
        assert!(p.kind.shadow.is_some());
        assert!(
            p.reason.starts_with("Shadowing: version 42 answers copies of 50% of version 41's live requests for 10m"),
            "{}",
            p.reason
        );
        let live = world.live();
        assert_eq!((live.canary_weight, live.stamp.as_ref().unwrap().stage), (0.0, Some((0, 3))), "owned, not moved");
        let feed = release.shadow_feed("41").unwrap();
        assert_eq!(world.router.feeds.lock().unwrap().clone(), vec![feed.filter_name()]);

        // Healthy answers all along: 2 000 shadowed, the candidate disagreeing as often as
        // the stable does with itself.
        counted(&world, (2_000.0, 2.0, 100.0), (2_000.0, 2.0, 100.0));
        let p = world.tick(&release, Some(p), T0 + 300).await.unwrap();
        assert_eq!((p.status, world.live().canary_weight), (Status::Baking, 0.0));
        assert!(p.reason.starts_with("Shadowing: "), "{}", p.reason);

        let p = world.tick(&release, Some(p), T0 + 600).await.unwrap();
        assert_eq!((p.status, p.stage, p.kind.shadow.clone()), (Status::Advanced, 0, None), "{}", p.reason);
        assert!(p.reason.starts_with("Shadow passed (") && p.reason.ends_with("now at 5%"), "{}", p.reason);
        assert!(p.samples.is_empty(), "the first stage judges live traffic afresh");
        let shadowed: Vec<bool> = p.history.iter().map(|d| d.shadow).collect();
        assert_eq!(shadowed, [true, true, false], "the history says which decisions the shadow made");
        assert_eq!(p.stage_entered_at, T0 + 600);
        let live = world.live();
        assert_eq!((live.canary.as_deref(), live.canary_weight), (Some("42"), 0.05));
        assert!(world.router.feeds.lock().unwrap().is_empty(), "the feed is removed once the shadow is over");
        let journal = world.router.journal.entries();
        let opened = journal.iter().position(|e| e.starts_with("open_feed")).unwrap();
        let closed = journal.iter().position(|e| e.starts_with("close_feed")).unwrap();
        assert!(opened < closed, "{journal:?}");
    }

    #[tokio::test]
    async fn a_candidate_that_is_the_stable_or_missing_is_refused_before_any_feed_or_write() {
        let is_stable = World::new(Split { revision: Some("rev-0".into()), ..Split::stable_only("42", None) });
        let refused = is_stable.tick(&shadowed_release(), None, T0).await.unwrap_err();
        assert!(refused.to_string().contains("42 is already the stable version"), "{refused}");

        let missing = World::new(stable_only());
        missing.router.missing_versions.lock().unwrap().push("42".into());
        let refused = missing.tick(&shadowed_release(), None, T0).await.unwrap_err();
        assert!(matches!(refused, Error::InvalidRelease(_)), "{refused}");
        for world in [&is_stable, &missing] {
            assert_eq!(world.router.write_count(), 0, "nothing written");
            assert!(world.router.feeds.lock().unwrap().is_empty(), "no feed opened");
        }
        let mut latest = shadowed_release();
        latest.canary_version = Some("$LATEST".into());
        assert!(latest.validate().unwrap_err().to_string().contains("not $LATEST"));
    }

    #[tokio::test]
    async fn a_release_in_its_shadow_is_in_flight_for_any_other() {
        let world = World::new(stable_only());
        world.tick(&shadowed_release(), None, T0).await.unwrap();
        let refused = world.tick_as(OTHER, &release(gates()), None, T0 + 60).await.unwrap_err();
        assert!(refused.to_string().contains("in its shadow"), "{refused}");
        assert_eq!(world.router.write_count(), 1, "only the shadow's own stamp");
    }

    #[tokio::test]
    async fn a_log_group_that_cannot_take_the_feed_refuses_the_release_before_any_write() {
        let world = World::new(stable_only());
        world.router.feed_failures.lock().unwrap().push_back(Error::Refused("shadow: full".into()));
        let refused = world.tick(&shadowed_release(), None, T0).await.unwrap_err();
        assert!(matches!(refused, Error::Refused(ref why) if why == "shadow: full"), "{refused}");
        assert_eq!(world.router.write_count(), 0);
        assert!(world.router.feeds.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_evidence_driven_shadow_passes_as_soon_as_its_tests_conclude() {
        let world = World::new(stable_only());
        let mut release = shadowed_release();
        release.shadow.as_mut().unwrap().until_conclusive = true;
        release.validate().unwrap();
        let p = world.tick(&release, None, T0).await.unwrap();
        // Plenty of agreeing answers: every test rules out twice its tolerance at once.
        counted(&world, (50_000.0, 50.0, 2_500.0), (50_000.0, 50.0, 2_500.0));
        let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
        assert_eq!(
            (p.status, p.kind.shadow.clone(), world.live().canary_weight),
            (Status::Advanced, None, 0.05),
            "{}",
            p.reason
        );

        let mut fixed = release.clone();
        fixed.gates.enforce = false;
        assert!(fixed.validate().unwrap_err().to_string().contains("shadow.until_conclusive"));
    }

    #[tokio::test]
    async fn a_candidate_that_disagrees_beyond_the_noise_floor_never_serves_a_user() {
        let world = World::new(stable_only());
        let release = shadowed_release();
        let p = world.tick(&release, None, T0).await.unwrap();
        // It disagrees with production on 30% of requests; production with itself on 5%.
        counted(&world, (2_000.0, 0.0, 600.0), (2_000.0, 0.0, 100.0));
        let example = crate::domain::shadow::Example {
            request_id: "57ec".into(),
            request: r#"{"q":1}"#.into(),
            stable: r#"{"label":"a"}"#.into(),
            candidate: r#"{"label":"b"}"#.into(),
        };
        world.router.examples.lock().unwrap().push(example.clone());
        let p = world.tick(&release, Some(p), T0 + 120).await.unwrap();
        assert_eq!(p.kind.shadow.as_ref().unwrap().examples, [example], "kept for coalmine status");
        assert!(
            p.reason.contains("2000 requests shadowed; disagreeing with the live answer: candidate 30.0% of 2000, stable asked again 5.0% of 2000"),
            "{}",
            p.reason
        );

        assert_eq!((p.status, p.rolled_back_by.clone()), (Status::RolledBack, Some(RolledBackBy::Health)));
        assert!(p.reason.contains("at the shadow"), "{}", p.reason);
        assert!(p.reason.contains("No user was served by the candidate"), "{}", p.reason);
        assert!(p.reason.contains("Disagreements"), "names the gate: {}", p.reason);
        let live = world.live();
        assert_eq!((live.canary.as_deref(), live.canary_weight), (None, 0.0));
        assert!(
            matches!(live.stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Health)),
            "no release climbs again"
        );
        assert!(world.router.writes.lock().unwrap().iter().all(|(_, s)| s.canary_weight == 0.0), "never any weight");
        assert!(world.router.feeds.lock().unwrap().is_empty());
        let [message] = world.sent().try_into().unwrap();
        assert!(message.body.contains("No user was served by the candidate"), "{}", message.body);
    }

    #[tokio::test]
    async fn a_candidate_that_fails_requests_is_caught_by_the_error_test_in_the_shadow() {
        let world = World::new(stable_only());
        let release = shadowed_release();
        let p = world.tick(&release, None, T0).await.unwrap();
        counted(&world, (1_000.0, 200.0, 0.0), (1_000.0, 1.0, 0.0));
        let p = world.tick(&release, Some(p), T0 + 120).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
        assert!(p.reason.to_lowercase().contains("error"), "{}", p.reason);
        assert_eq!(world.live().canary_weight, 0.0);
    }

    #[tokio::test]
    async fn an_abort_during_the_shadow_removes_the_feed_and_the_next_check_ends_the_release() {
        let world = World::new(stable_only());
        let release = shadowed_release();
        let p = world.tick(&release, None, T0).await.unwrap();
        assert_eq!(world.router.feeds.lock().unwrap().len(), 1);

        control::abort(&world.router, &world.notifier, &release, ME, "jane", "wrong model").await.unwrap();
        assert!(world.router.feeds.lock().unwrap().is_empty(), "abort removes the feed at once");

        let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
        assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
        assert_eq!(world.live().canary_weight, 0.0);
    }

    #[tokio::test]
    async fn a_failed_tick_during_the_shadow_is_undone_by_the_safety_rollback_feed_and_all() {
        let world = World::new(stable_only());
        let release = shadowed_release();
        let p = world.tick(&release, None, T0).await.unwrap();
        let outcome = world.safety(ME, &release, Some(&p)).await;
        assert!(outcome.undone, "{}", outcome.cause);
        assert!(world.router.feeds.lock().unwrap().is_empty());
        assert!(matches!(world.live().stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Safety)));
    }

    #[tokio::test]
    async fn a_retried_first_tick_picks_up_the_shadow_it_started() {
        let world = World::new(stable_only());
        let release = shadowed_release();
        world.router.feed_failures.lock().unwrap().push_back(Error::Service {
            operation: "logs:PutSubscriptionFilter",
            detail: "ThrottlingException (HTTP 400)".into(),
            retryable: true,
        });
        assert!(world.tick(&release, None, T0).await.is_err(), "the feed did not open: the tick fails");
        let p = world.tick(&release, None, T0 + 5).await.unwrap();
        assert!(p.kind.shadow.is_some());
        assert_eq!(world.router.feeds.lock().unwrap().len(), 1);
        assert_eq!(world.router.write_count(), 1, "the stamp is written once");
        assert_eq!(shadow(&release).duration_seconds, 600);
    }
}

/// An Azure ML endpoint: the same kind, its shadow a mirror Azure runs itself.
mod azure {
    use super::*;
    use crate::domain::metrics::{MetricSnapshot, SideMetrics};
    use crate::domain::target::AzureMlDeployments;
    use crate::rollback::{zero_canary, ZeroOutcome};

    fn endpoint() -> Target {
        Target::Azureml(Box::new(AzureMlDeployments {
            subscription: "00000000-1111-2222-3333-444444444444".into(),
            resource_group: "ml-prod".into(),
            workspace: "ml-workspace".into(),
            endpoint: "chat-endpoint".into(),
            stable_deployment: Some("blue".into()),
            canary_deployment: "green".into(),
        }))
    }

    fn mirrored_release() -> Release {
        let release = Release {
            release: "chat-model-2".into(),
            target: endpoint(),
            canary_version: None,
            stages: vec![Stage::new(5.0, 600), Stage::new(25.0, 600), Stage::new(100.0, 300)],
            check_every_seconds: 60,
            gates: Gates { max_error_rate: Some(0.05), min_requests: 100, ..Gates::default() },
            shadow: Some(serde_json::from_value(serde_json::json!({"duration_seconds": 600, "sample": 0.2})).unwrap()),
        };
        release.validate().unwrap();
        release
    }

    fn world() -> World {
        let world = World::new(stable_only());
        let blue_only = Split {
            stable: "blue".into(),
            canary: Some("green".into()),
            canary_weight: 0.0,
            others_weight: 0.0,
            mirror: 0.0,
            revision: Some("etag-0".into()),
            stamp: None,
        };
        world.router.splits.lock().unwrap().insert(endpoint(), blue_only);
        world
    }

    fn live(world: &World) -> Split {
        world.router.split(&endpoint())
    }

    /// What Azure Monitor showed: the mirrored requests the candidate answered, and the
    /// stable's live ones.
    fn monitored(world: &World, candidate: (f64, f64), stable: (f64, f64)) {
        let side = |(requests, errors): (f64, f64)| SideMetrics {
            requests,
            errors,
            p95_ms: Some(120.0),
            ..SideMetrics::default()
        };
        world.metrics.put(MetricSnapshot { canary: side(candidate), stable: side(stable) });
    }

    #[tokio::test]
    async fn the_mirror_starts_with_the_stamp_and_ends_in_the_write_that_enters_the_first_stage() {
        let world = world();
        let release = mirrored_release();
        let p = world.tick(&release, None, T0).await.unwrap();
        assert!(p.kind.shadow.is_some());
        assert!(
            p.reason
                .starts_with("Shadowing: deployment green answers copies of 20% of deployment blue's live requests"),
            "{}",
            p.reason
        );
        let shadowing = live(&world);
        assert_eq!((shadowing.canary_weight, shadowing.mirror), (0.0, 0.2), "mirrored, serving no user");
        assert_eq!(shadowing.stamp.as_ref().unwrap().stage, Some((0, 3)));
        assert_eq!(world.router.write_count(), 1, "the mirror and the stamp are one write");
        assert!(world.router.feeds.lock().unwrap().is_empty(), "no shadow function: Azure mirrors");

        monitored(&world, (2_000.0, 2.0), (10_000.0, 10.0));
        let p = world.tick(&release, Some(p), T0 + 300).await.unwrap();
        assert_eq!(p.status, Status::Baking);
        assert!(p.reason.contains("2000 requests mirrored to the candidate beside 10000 served"), "{}", p.reason);
        let p = world.tick(&release, Some(p), T0 + 600).await.unwrap();
        assert_eq!((p.status, p.kind.shadow.clone()), (Status::Advanced, None), "{}", p.reason);
        let first = live(&world);
        assert_eq!((first.canary_weight, first.mirror), (0.05, 0.0), "live at 5%, mirrored no more");
        assert_eq!(world.router.write_count(), 2);
        assert_eq!(p.last_written.mirror, 0.0);
    }

    #[tokio::test]
    async fn a_candidate_failing_its_mirrored_requests_ends_before_any_user_is_served_mirror_and_all() {
        let world = world();
        let release = mirrored_release();
        let p = world.tick(&release, None, T0).await.unwrap();
        monitored(&world, (2_000.0, 400.0), (10_000.0, 10.0));
        let p = world.tick(&release, Some(p), T0 + 120).await.unwrap();
        assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
        assert!(p.reason.contains("No user was served by the candidate"), "{}", p.reason);
        let after = live(&world);
        assert_eq!((after.canary_weight, after.mirror), (0.0, 0.0));
        assert!(matches!(after.stamp.unwrap().phase, Phase::RolledBack(RolledBackBy::Health)));
        let writes = world.router.writes.lock().unwrap().clone();
        assert!(writes.iter().all(|(_, w)| w.canary_weight == 0.0), "no write ever gave the candidate users");
    }

    #[tokio::test]
    async fn an_alert_during_the_shadow_stops_the_mirror_as_it_would_zero_a_canary() {
        let world = world();
        let release = mirrored_release();
        let p = world.tick(&release, None, T0).await.unwrap();
        let by = RolledBackBy::Alarm("chat-green-5xx".into());
        let outcome = zero_canary(&world.router, &endpoint(), &by, Owner::Alarm, None).await.unwrap();
        assert!(matches!(outcome, ZeroOutcome::RolledBack { .. }), "a mirrored canary is not already zero");
        assert_eq!(live(&world).mirror, 0.0);
        let p = world.tick(&release, Some(p), T0 + 60).await.unwrap();
        assert_eq!(p.status, Status::RolledBack);
        assert!(p.reason.contains("chat-green-5xx"), "{}", p.reason);
    }
}

mod claims {
    use super::*;
    use crate::memory::Claims;

    fn first_tick(execution: &str) -> serde_json::Value {
        serde_json::json!({"execution": execution, "state": serde_json::to_value(release(gates())).unwrap()})
    }

    #[tokio::test]
    async fn a_second_release_on_a_target_is_refused_before_it_reads_or_moves_anything() {
        let world = World::new(stable_only());
        let (deps, claims) = (world.deps(), Claims::default());
        tick_payload(&first_tick(ME), &deps, &claims, T0).await.unwrap();
        let reads = *world.router.reads.lock().unwrap();

        let err = tick_payload(&first_tick(OTHER), &deps, &claims, T0 + 1).await.unwrap_err();

        assert_eq!(err.error_type(), "InvalidRelease", "{err}");
        assert!(err.to_string().contains("another release is in flight on lambda:ai-handler:live"), "{err}");
        assert!(err.to_string().contains("Release:ai-handler-42"), "names the holder: {err}");
        assert_eq!((*world.router.reads.lock().unwrap(), world.router.write_count()), (reads, 1), "untouched");
        // A retried first tick of the holder is still the holder's.
        tick_payload(&first_tick(ME), &deps, &claims, T0 + 2).await.unwrap();
    }

    #[tokio::test]
    async fn a_claim_whose_execution_ended_is_taken_over_and_the_target_still_says_whether_it_is_free() {
        let world = World::new(stable_only());
        let (deps, claims) = (world.deps(), Claims::default());
        tick_payload(&first_tick(ME), &deps, &claims, T0).await.unwrap();
        // The holder died without ending its release: its canary is still live.
        claims.end(ME);
        let err = tick_payload(&first_tick(OTHER), &deps, &claims, T0 + 1).await.unwrap_err();
        assert_eq!(claims.held.lock().unwrap()["lambda:ai-handler:live"], OTHER, "the claim passed on");
        assert!(err.to_string().contains("in flight"), "the stamp still refuses a start over a live canary: {err}");
        assert_eq!(world.router.write_count(), 1);
    }
}

mod watched {
    use super::*;
    use crate::release::core::progress::{vouched_span, Written};

    #[tokio::test]
    async fn a_stage_never_passes_on_the_clock_alone_a_silence_between_checks_is_not_baked() {
        let world = World::new(stable_only());
        let r = release(gates());
        assert_eq!(vouched_span(r.check_every_seconds), 120);
        let p = world.tick(&r, None, T0).await.unwrap();
        // The tick fails for a long while (retried, then everything out of reach): the next
        // check that succeeds comes 700 s in, past the 600 s bake.
        let p = world.tick_unwatched(ME, &r, Some(p), T0 + 700).await.unwrap();
        assert_eq!((p.status, p.stage, p.watched_seconds), (Status::Baking, 0, 120), "{}", p.reason);
        assert_eq!(world.router.write_count(), 1, "still at its first stage");
        // Regular checks bake on, and the stage passes once 600 s were watched.
        let mut p = p;
        let mut now = T0 + 700;
        while p.stage == 0 {
            now += 60;
            p = world.tick_unwatched(ME, &r, Some(p), now).await.unwrap();
        }
        assert_eq!(now, T0 + 700 + 8 * 60, "120 s vouched by the late check, then eight of 60 s");
        assert_eq!((p.status, p.weight), (Status::Advanced, 0.25));
    }

    #[test]
    fn a_check_vouches_for_twice_the_time_between_checks_and_at_least_ten_seconds_more() {
        assert_eq!(
            (vouched_span(1), vouched_span(5), vouched_span(60), vouched_span(u64::MAX)),
            (11, 15, 120, u64::MAX)
        );
        let mut p: Progress = Progress::new("41", Written::of(&lambda_split("41", "42", 0.05)), T0);
        assert_eq!(p.vouch(T0 + 61, 60), 61);
        assert_eq!(p.vouch(T0 + 61 + 45, 60), 106);
        assert_eq!(p.vouch(T0 + 61 + 45 + 1000, 60), 226, "a silence of 1000 s counts 120");
        assert_eq!(p.vouch(T0, 60), 226, "a clock that went back counts nothing");
    }
}

#[tokio::test]
async fn the_most_stages_a_release_may_have_keep_its_state_far_inside_what_step_functions_passes() {
    use crate::release::core::limits::MAX_STAGES;
    let world = World::new(stable_only());
    let mut r = release(gates());
    r.stages = (1..=MAX_STAGES).map(|i| Stage::new(100.0 * i as f64 / MAX_STAGES as f64, 120)).collect();
    r.validate().unwrap();
    let mut p = world.tick(&r, None, T0).await.unwrap();
    let mut now = T0;
    while p.status != Status::Promoted {
        now += 60;
        p = world.tick(&r, Some(p), now).await.unwrap();
    }
    let mut state = serde_json::to_value(&r).unwrap();
    state["progress"] = serde_json::to_value(&p).unwrap();
    let size = state.to_string().len();
    assert!(size < 128 * 1024, "{size} bytes of the 256 KiB Step Functions passes from task to task");
    assert_eq!(p.samples.len(), MAX_STAGES);
}

#[tokio::test]
async fn a_release_that_has_spent_the_checks_an_execution_holds_is_rolled_back_not_left_to_step_functions() {
    let world = World::new(stable_only());
    let r = release(gates());
    let mut p = world.tick(&r, None, T0).await.unwrap();
    // Paused for days at one check a minute: the execution's history is nearly full.
    p.ticks = crate::release::core::limits::MAX_TICKS;
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!((p.status, p.rolled_back_by.clone()), (Status::RolledBack, Some(RolledBackBy::Safety)), "{}", p.reason);
    assert!(p.reason.contains("the most one Step Functions execution holds"), "{}", p.reason);
    assert_eq!(world.live().canary_weight, 0.0);
    assert_eq!(world.sent().len(), 1, "the team is told");
}
