//! The first tick: what it records, and every starting point it refuses before moving anything.

use super::*;

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
