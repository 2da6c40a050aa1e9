//! The in-memory adapters keep the contracts the real ones keep (the ports' docs): every
//! use-case test and the simulator lean on them, so a double that forgave a stale write
//! or a second claim would let a broken use case pass.

use super::*;
use crate::domain::deployment::{ConfigVariants, EndpointState};
use crate::domain::error::Error;
use crate::domain::event::{AlarmState, Confirmation};
use crate::domain::shadow::{Compare, Feed};
use crate::domain::split::Split;
use crate::domain::stamp::{Phase, Stamp};
use crate::domain::target::Target;
use crate::ports::{
    AlarmSource, Claims as _, EndpointDeployments, Notification, Notifier, ShadowFeeds, TrafficRouter, Tripwires,
};

fn alias() -> Target {
    Target::lambda("ai-handler", "live")
}

fn stamp(stable: &str) -> Stamp {
    Stamp {
        execution: "Release:ai-handler-42".into(),
        stable: stable.into(),
        canary: Some("42".into()),
        phase: Phase::Live,
        stage: Some((1, 3)),
        release: Some("ai-handler-42".into()),
        hold: None,
        request: None,
    }
}

#[tokio::test]
async fn an_alias_write_lands_only_on_the_revision_it_read_and_keeps_the_live_stamp() {
    let router = Router::with([(alias(), Split { stamp: Some(stamp("41")), ..lambda_split("41", "42", 0.05) })]);
    let read = router.read(&alias()).await.unwrap();

    let written = router.write(&alias(), &read, &read.with_canary_weight(0.25)).await.unwrap();
    assert_eq!(written.canary_weight, 0.25);
    assert_ne!(written.revision, read.revision, "each write is a new revision");
    assert_eq!(written.stamp, Some(stamp("41")), "no stamp in the desired split leaves the live one");

    let stale = router.write(&alias(), &read, &read.with_canary_weight(0.0)).await.unwrap_err();
    assert!(matches!(stale, Error::Conflict { .. }), "{stale:?}");
    assert_eq!(router.split(&alias()).canary_weight, 0.25, "a stale write changes nothing");
    assert_eq!(router.write_count(), 1);
}

#[tokio::test]
async fn someone_elses_change_between_read_and_write_wins_and_ours_is_a_conflict() {
    let router = Router::with([(alias(), lambda_split("41", "42", 0.05))]);
    router.interleaved.lock().unwrap().insert(alias(), [Split::stable_only("41", None)].into());
    let read = router.read(&alias()).await.unwrap();

    let err = router.write(&alias(), &read, &read.with_canary_weight(0.5)).await.unwrap_err();

    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let live = router.split(&alias());
    assert!(live.canary_is_zero() && live.stable == "41", "the other's rollback stands: {live:?}");
}

#[tokio::test]
async fn an_endpoints_sides_move_by_the_roles_named_and_a_third_variant_keeps_its_share() {
    let target = Target::sagemaker("chat", "blue", "green");
    let router = Router::with_sides(&target, &[("blue", 0.9), ("green", 0.0), ("red", 0.1)], None);
    let read = router.read(&target).await.unwrap();
    assert_eq!((read.stable.as_str(), read.canary.as_deref()), ("blue", Some("green")));
    assert!((read.others_weight - 0.1).abs() < 1e-9, "{read:?}");

    router.write(&target, &read, &Split { stamp: Some(stamp("blue")), ..read.with_canary_weight(0.2) }).await.unwrap();

    let shares = router.shares(&target);
    assert!((shares["green"] - 0.2).abs() < 1e-9 && (shares["blue"] - 0.7).abs() < 1e-9, "{shares:?}");
    assert!((shares["red"] - 0.1).abs() < 1e-9, "only the two sides of record move: {shares:?}");
    assert_eq!(router.stamp_on(&target), Some(stamp("blue")));
    let stale = router.write(&target, &read, &read.with_canary_weight(0.0)).await.unwrap_err();
    assert!(matches!(stale, Error::Conflict { .. }), "{stale:?}");
}

#[tokio::test]
async fn an_endpoint_deploys_only_when_in_service_and_shows_what_the_test_scripted_next() {
    let router = Router::default();
    let in_service = EndpointState {
        status: "InService".into(),
        config: "v7".into(),
        pending: None,
        failure_reason: None,
        variants: vec![("AllTraffic".into(), 2)],
        stamp: None,
        tripwire: None,
    };
    router.put_endpoint("chat", in_service.clone());
    router.put_config("v8", ConfigVariants::default());

    router.deploy("chat", "v8", None).await.unwrap();
    let updating = router.endpoint_state("chat").await.unwrap();
    assert_eq!((updating.status.as_str(), updating.pending.map(|p| p.config)), ("Updating", Some("v8".into())));
    let busy = router.deploy("chat", "v9", None).await.unwrap_err();
    assert!(matches!(busy, Error::Refused(_)), "SageMaker refuses an update in progress: {busy:?}");

    router.script("chat", [EndpointState { config: "v8".into(), ..in_service }]);
    router.mark_tripwire("chat", "coalmine-tripwire-chat").await.unwrap();
    let done = router.endpoint_state("chat").await.unwrap();
    assert_eq!((done.status.as_str(), done.config.as_str()), ("InService", "v8"));
    assert_eq!(done.tripwire.as_deref(), Some("coalmine-tripwire-chat"), "tags are read with the endpoint");
    assert!(matches!(router.endpoint_state("nope").await, Err(Error::NotFound { .. })));
    assert!(matches!(router.config_variants("v9").await, Err(Error::InvalidRelease(_))));
}

#[tokio::test]
async fn a_feed_opens_and_closes_once_whatever_the_retries_and_its_failures_come_first() {
    let journal = Journal::default();
    let router = Router::default().journaled(&journal);
    let feed = Feed {
        release: "r".into(),
        function: "ai-handler".into(),
        stable: "41".into(),
        candidate: "42".into(),
        sample: 0.1,
        max_payload_bytes: 1000,
        max_concurrency: 4,
        compare: Compare::Exact,
        noise_floor: false,
    };
    router.feed_failures.lock().unwrap().push_back(Error::Refused("two filters already".into()));
    assert!(router.check_feed(&feed).await.is_err(), "a full log group is said before opening");
    assert!(router.open_feed(&feed).await.is_err());
    router.open_feed(&feed).await.unwrap();
    router.open_feed(&feed).await.unwrap();
    router.close_feed(&feed).await.unwrap();
    router.close_feed(&feed).await.unwrap();
    assert_eq!(journal.entries(), ["open_feed r", "close_feed r"]);
}

#[tokio::test]
async fn a_claim_is_refused_to_another_execution_until_its_holder_ends() {
    let claims = Claims::default();
    assert_eq!(claims.claim("lambda:f:live", "exec-1").await.unwrap(), None);
    assert_eq!(claims.claim("lambda:f:live", "exec-1").await.unwrap(), None, "a retry of the holder");
    assert_eq!(claims.claim("lambda:f:live", "exec-2").await.unwrap(), Some("exec-1".into()));
    assert_eq!(claims.claim("lambda:g:live", "exec-2").await.unwrap(), None, "another target is free");
    claims.end("exec-1");
    assert_eq!(claims.claim("lambda:f:live", "exec-2").await.unwrap(), None);
    assert_eq!(claims.claim("lambda:f:live", "exec-3").await.unwrap(), Some("exec-2".into()));
}

#[tokio::test]
async fn an_alarm_is_confirmed_only_in_alarm_or_if_it_fired_since_and_a_tripwire_trips() {
    let journal = Journal::default();
    let alarms = Alarms::with([("errors".to_owned(), AlarmState::Alarm), ("latency".to_owned(), AlarmState::Ok)])
        .journaled(&journal);
    assert_eq!(alarms.confirm("errors", "t").await.unwrap(), Confirmation::InAlarm);
    assert_eq!(alarms.confirm("latency", "t").await.unwrap(), Confirmation::NotFired(AlarmState::Ok));
    alarms.fired_before.lock().unwrap().push("latency".into());
    assert_eq!(alarms.confirm("latency", "t").await.unwrap(), Confirmation::FiredThen);
    assert_eq!(alarms.confirm("forged", "t").await.unwrap(), Confirmation::NoSuchAlarm);
    let named = ["errors".to_owned(), "missing".to_owned()];
    assert_eq!(alarms.states(&named).await.unwrap(), [("errors".to_owned(), AlarmState::Alarm)]);

    alarms.ensure_tripwire("coalmine-tripwire-chat", "chat").await.unwrap();
    assert_eq!(alarms.state("coalmine-tripwire-chat"), Some(AlarmState::Ok));
    alarms.trip("coalmine-tripwire-chat").await.unwrap();
    assert_eq!(alarms.state("coalmine-tripwire-chat"), Some(AlarmState::Alarm));
    assert_eq!(journal.entries(), ["ensure_tripwire coalmine-tripwire-chat", "trip coalmine-tripwire-chat"]);

    let throttled = Alarms { fail: true, ..Alarms::default() };
    assert!(throttled.target_tag("arn").await.unwrap_err().is_retryable());
    assert!(throttled.confirm("errors", "t").await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn a_message_that_fails_is_not_sent_and_the_journal_keeps_the_order_across_adapters() {
    let journal = Journal::default();
    let outbox = Outbox::failing(1).journaled(&journal);
    let alarms = Alarms::default().journaled(&journal);
    let message = Notification { subject: "rolled back".into(), body: "b".into(), attributes: Vec::new() };

    assert!(outbox.publish(&message).await.unwrap_err().is_retryable());
    assert!(outbox.sent().is_empty());
    alarms.trip("wire").await.unwrap();
    outbox.publish(&message).await.unwrap();

    assert_eq!(*outbox.attempts.lock().unwrap(), 2);
    assert_eq!(outbox.sent().len(), 1);
    assert_eq!(journal.entries(), ["trip wire", "publish rolled back"]);
}
