//! A cohort release (decision 0020): the share each stage publishes for the routers, in
//! what order beside the cohort alias's writes, and what routers are left with when the
//! release ends, however it ends.

use coalmine_router::{route, threshold};

use super::*;
use crate::release::canary::cohorts::Cohorts;

fn cohort_target() -> Target {
    "lambda-cohort:ai-handler:live:canary".parse().unwrap()
}

fn cohort_release(percents: &[f64]) -> Release {
    let mut stages: Vec<Stage> = percents.iter().map(|&p| Stage::new(p, 600)).collect();
    stages.last_mut().unwrap().bake_seconds = 300;
    let release = Release {
        target: cohort_target(),
        stages,
        cohorts: Some(
            serde_json::from_value(serde_json::json!({
                "unit": "user", "pinned": {"match": {"group": ["internal"]}}, "never": {"units": ["vip-1"]}
            }))
            .unwrap(),
        ),
        ..release(gates())
    };
    release.validate().unwrap();
    release
}

fn cohort_world() -> World {
    let world = World::new(stable_only());
    world.router.splits.lock().unwrap().insert(cohort_target(), stable_only());
    world
}

/// The rollback function on the release's gate alarm, which the release has not looked at yet.
async fn alarm_rolls_back(world: &World) -> crate::rollback::ZeroOutcome {
    let alarm = RolledBackBy::Alarm("errors".into());
    crate::rollback::zero_canary(&world.router, &cohort_target(), &alarm, Owner::Alarm, None).await.unwrap()
}

fn thresholds(world: &World) -> Vec<u32> {
    world.router.published.lock().unwrap().iter().map(|p| p.cohort.threshold).collect()
}

#[tokio::test]
async fn each_stage_publishes_its_share_of_units_and_the_alias_moves_only_once_the_first_share_is_out() {
    let world = cohort_world();
    let r = cohort_release(&[5.0, 25.0, 50.0, 100.0]);
    let p = world.tick(&r, None, T0).await.unwrap();
    let first = world.router.published.lock().unwrap()[0].clone();
    assert_eq!(first.cohort_alias_then.as_deref(), Some("41"), "published before the cohort alias moved");
    assert_eq!(first.cohort.release, "ai-handler-42");
    assert_eq!((first.cohort.alias.as_str(), first.cohort.stable_alias.as_str()), ("canary", "live"));
    assert_eq!(first.cohort.pinned.attributes["group"], ["internal"]);
    let live = world.router.split(&cohort_target());
    assert_eq!(
        (live.canary.as_deref(), live.canary_weight),
        (Some("42"), 1.0),
        "the cohort alias serves the candidate"
    );

    // A user drawn at 5% stays drawn at every later stage, as the router decides it.
    let drawn = (0..10_000).map(|i| format!("user-{i}")).find(|u| route(&first.cohort, u, &[]).candidate).unwrap();
    let mut p = p;
    for now in [T0 + 600, T0 + 1200, T0 + 1800] {
        p = world.tick(&r, Some(p), now).await.unwrap();
        assert_eq!(p.status, Status::Advanced, "{}", p.reason);
        let now_published = world.router.cohort(&cohort_target()).unwrap();
        assert!(
            route(&now_published, &drawn, &[]).candidate,
            "{drawn} left the candidate at {}",
            now_published.threshold
        );
        let then = world.router.published.lock().unwrap().last().unwrap().cohort_alias_then.clone();
        assert_eq!(then.as_deref(), Some("42"), "a later stage's share follows the write that records it");
    }
    assert_eq!(thresholds(&world), [500, 2500, 5000, 10_000]);
    assert_eq!(world.router.split(&cohort_target()).stable, "42", "at 100% the primary alias moved: promoted");

    let p = world.tick(&r, Some(p), T0 + 2100).await.unwrap();
    assert_eq!(p.status, Status::Promoted, "{}", p.reason);
    let ended = world.router.cohort(&cohort_target()).unwrap();
    assert_eq!((ended.threshold, ended.pinned.is_empty()), (0, true), "routers draw nobody once it ended");
}

#[tokio::test]
async fn a_pinned_only_first_stage_serves_the_pinned_units_and_draws_nobody_else() {
    let world = cohort_world();
    let r = cohort_release(&[0.0, 10.0, 100.0]);
    world.tick(&r, None, T0).await.unwrap();
    let cohort = world.router.cohort(&cohort_target()).unwrap();
    assert_eq!(cohort.threshold, 0);
    assert!(route(&cohort, "jane", &[("group", "internal")]).candidate, "an internal user is pinned");
    let drawn = (0..2000).filter(|i| route(&cohort, &format!("user-{i}"), &[]).candidate).count();
    assert_eq!(drawn, 0, "nobody else");
    assert!(!route(&cohort, "vip-1", &[("group", "internal")]).candidate, "never wins over a pin");
}

#[tokio::test]
async fn a_share_that_cannot_be_published_fails_the_first_tick_before_the_alias_moves() {
    let world = cohort_world();
    world.router.publish_failures.lock().unwrap().push_back(Error::Service {
        operation: "appconfig:StartDeployment",
        detail: "ThrottlingException".into(),
        retryable: true,
    });
    let r = cohort_release(&[5.0, 100.0]);
    let err = world.tick(&r, None, T0).await.unwrap_err();
    assert!(err.to_string().contains("appconfig:StartDeployment"), "{err}");
    assert_eq!(world.router.write_count(), 0, "nothing moved");
    // The state machine's retry publishes, then moves the alias.
    world.tick(&r, None, T0 + 5).await.unwrap();
    assert_eq!((thresholds(&world), world.router.write_count()), (vec![500], 1));
}

#[tokio::test]
async fn a_later_share_unpublished_fails_the_tick_and_its_retry_publishes_it_without_a_second_stage() {
    let world = cohort_world();
    let r = cohort_release(&[5.0, 25.0, 100.0]);
    let p = world.tick(&r, None, T0).await.unwrap();
    world.router.publish_failures.lock().unwrap().push_back(Error::Service {
        operation: "appconfig:CreateHostedConfigurationVersion",
        detail: "InternalServerException".into(),
        retryable: true,
    });
    let err = world.tick(&r, Some(p.clone()), T0 + 600).await.unwrap_err();
    assert!(err.to_string().contains("appconfig"), "{err}");
    assert_eq!(world.router.split(&cohort_target()).stamp.unwrap().stage, Some((2, 3)), "the stage was recorded");
    let p = world.tick(&r, Some(p), T0 + 610).await.unwrap();
    assert_eq!((p.status, p.stage), (Status::Advanced, 1), "{}", p.reason);
    assert_eq!(thresholds(&world), [500, 2500]);
    assert_eq!(world.router.split(&cohort_target()).stamp.unwrap().stage, Some((2, 3)));
}

#[tokio::test]
async fn an_alarm_points_the_cohort_alias_back_first_and_only_then_tells_routers_the_cohort_ended() {
    let world = cohort_world();
    let r = cohort_release(&[5.0, 25.0, 100.0]);
    let p = world.tick(&r, None, T0).await.unwrap();
    world.alarms.set("errors", AlarmState::Alarm);
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
    let last = world.router.published.lock().unwrap().last().unwrap().clone();
    assert_eq!(last.cohort.threshold, 0);
    assert_eq!(last.cohort_alias_then.as_deref(), Some("41"), "the cohort alias was back on the stable first");
    assert_eq!(world.router.split(&cohort_target()).stable, "41");
}

#[tokio::test]
async fn routers_left_untold_after_a_rollback_change_nothing_and_the_reason_says_so() {
    let world = cohort_world();
    let r = cohort_release(&[5.0, 100.0]);
    let p = world.tick(&r, None, T0).await.unwrap();
    world.alarms.set("errors", AlarmState::Alarm);
    world.router.publish_failures.lock().unwrap().push_back(Error::Service {
        operation: "appconfig:StartDeployment",
        detail: "ConflictException".into(),
        retryable: true,
    });
    let p = world.tick(&r, Some(p), T0 + 60).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "the rollback stands: {}", p.reason);
    assert!(p.reason.contains("routers were not told the cohort ended"), "{}", p.reason);
    assert!(world.router.split(&cohort_target()).canary_is_zero(), "whatever routers cached reaches the stable");
    assert_eq!(world.sent().len(), 1, "the team was told");
}

#[tokio::test]
async fn a_release_that_failed_for_good_is_undone_on_the_alias_and_its_routers_draw_nobody_after() {
    let world = cohort_world();
    let r = cohort_release(&[5.0, 100.0]);
    let p = world.tick(&r, None, T0).await.unwrap();
    let outcome = world.safety(ME, &r, Some(&p)).await;
    assert!(outcome.undone, "{}", outcome.cause);
    let last = world.router.published.lock().unwrap().last().unwrap().clone();
    assert_eq!((last.cohort.threshold, last.cohort_alias_then.as_deref()), (0, Some("41")));
}

#[test]
fn a_cohort_release_is_refused_with_its_field_for_each_kind_of_bad_input() {
    let base = || {
        serde_json::json!({
            "release": "chat-v7", "target": {"lambda_cohort": {"function": "chat", "alias": "live", "cohort_alias": "canary"}},
            "canary_version": "7", "check_every_seconds": 60,
            "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
            "cohorts": {"unit": "user"}
        })
    };
    assert!(Release::parse(&base()).is_ok());
    let refused = |edit: &dyn Fn(&mut serde_json::Value), expected: &str| {
        let mut doc = base();
        edit(&mut doc);
        let err = Release::parse(&doc).unwrap_err().to_string();
        assert!(err.contains(expected), "{expected:?} not in: {err}");
    };
    refused(
        &|d| d["target"] = serde_json::json!({"lambda": {"function": "chat", "alias": "live"}}),
        "cohorts: lambda:chat:live routes requests by weight",
    );
    refused(
        &|d| d.as_object_mut().unwrap().retain(|k, _| k != "cohorts"),
        "cohorts: required on a lambda_cohort target",
    );
    refused(&|d| d["cohorts"]["unit"] = "".into(), "cohorts.unit: say what a unit is");
    refused(
        &|d| d["cohorts"]["pinned"] = serde_json::json!({"units": ["a", ""]}),
        "cohorts.pinned.units[1]: an empty id",
    );
    refused(
        &|d| d["cohorts"]["pinned"] = serde_json::json!({"units": ["a", "a"]}),
        "cohorts.pinned.units[1]: \"a\" is listed twice",
    );
    refused(
        &|d| d["cohorts"]["pinned"] = serde_json::json!({"match": {"group": []}}),
        "cohorts.pinned.match.group: no values",
    );
    refused(
        &|d| d["cohorts"]["pinned"] = serde_json::json!({"match": {"group": [""]}}),
        "cohorts.pinned.match.group: \"\": a value",
    );
    refused(
        &|d| {
            d["cohorts"]["pinned"] = serde_json::json!({"units": ["u1"], "match": {"region": ["eu"]}});
            d["cohorts"]["never"] = serde_json::json!({"units": ["u1"], "match": {"region": ["eu"]}});
        },
        "cohorts.pinned.units[0]: \"u1\" is also in cohorts.never.units",
    );
    refused(
        &|d| {
            d["cohorts"]["pinned"] = serde_json::json!({"match": {"region": ["eu"]}});
            d["cohorts"]["never"] = serde_json::json!({"match": {"region": ["eu", "us"]}});
        },
        "cohorts.pinned.match.region: \"eu\" is also in cohorts.never.match.region",
    );
    let too_many: Vec<String> = (0..=500).map(|i| format!("user-{i}")).collect();
    refused(
        &|d| d["cohorts"]["pinned"] = serde_json::json!({ "units": too_many }),
        "501 units listed (pinned and never): at most 500",
    );
    refused(
        &|d| d["stages"][0]["percent"] = 0.into(),
        "stages[0].percent: 0 serves only the pinned units, and cohorts.pinned names none",
    );
    refused(&|d| d["stages"][0]["percent"] = serde_json::json!(0.004), "below the finest share the draw makes");
    refused(
        &|d| {
            d["cohorts"]["pinned"] = serde_json::json!({"match": {"group": ["internal"]}});
            d["stages"] = serde_json::json!([{"percent": 5, "bake_seconds": 60}, {"percent": 0, "bake_seconds": 60}, {"percent": 100, "bake_seconds": 60}]);
        },
        "stages[1].percent: 0 serves only the pinned units: only the first stage may",
    );
    let mut pinned_only = base();
    pinned_only["cohorts"]["pinned"] = serde_json::json!({"match": {"group": ["internal"]}});
    pinned_only["stages"][0]["percent"] = 0.into();
    assert!(Release::parse(&pinned_only).is_ok(), "a pinned-only first stage");
    let mut weighted = base();
    weighted["target"] = serde_json::json!({"lambda": {"function": "chat", "alias": "live"}});
    weighted.as_object_mut().unwrap().remove("cohorts");
    weighted["stages"][0]["percent"] = 0.into();
    assert!(Release::parse(&weighted).unwrap_err().to_string().contains("stages[0].percent: 0 is outside (0, 100]"));
}

#[tokio::test]
async fn the_largest_cohort_a_release_may_list_keeps_its_state_far_inside_what_step_functions_passes() {
    use crate::release::canary::cohorts::{MAX_LISTED_UNITS, MAX_NAME_BYTES};
    let world = cohort_world();
    let mut r = cohort_release(&[5.0, 100.0]);
    let id = |i: usize| format!("{i:0width$}", width = MAX_NAME_BYTES);
    let cohorts: &mut Cohorts = r.cohorts.as_mut().unwrap();
    cohorts.pinned.units = (0..MAX_LISTED_UNITS - 1).map(id).collect();
    cohorts.never.units = vec![id(MAX_LISTED_UNITS)];
    let (_, size) = world.state_at_the_most_stages(&mut r).await;
    assert!(size < 160 * 1024, "{size} bytes of the 256 KiB Step Functions passes from task to task");
    assert_eq!(threshold(100.0), *thresholds(&world).iter().max().unwrap());
}

#[tokio::test]
async fn route_answers_which_version_a_unit_gets_now_and_why_through_a_rollback() {
    use crate::release::canary::view;
    let world = cohort_world();
    let r = cohort_release(&[5.0, 25.0, 100.0]);
    let p = world.tick(&r, None, T0).await.unwrap();
    let cohort = r.cohort_at(0).unwrap();
    let drawn = (0..10_000).map(|i| format!("user-{i}")).find(|u| route(&cohort, u, &[]).candidate).unwrap();
    let live = world.router.split(&cohort_target());
    let now = view::route(&r, Some(&p), &live, &drawn, &[]).unwrap();
    assert_eq!((now.version.as_str(), now.alias.as_str(), now.candidate), ("42", "canary", true));
    assert!(now.why.starts_with("drawn: bucket"), "{}", now.why);
    assert!(now.why.contains("(at stage 1 of 3: 5% of users, pinned group=internal; never 1 listed)"), "{}", now.why);
    let internal = view::route(&r, Some(&p), &live, "jane", &[("group", "internal")]).unwrap();
    assert_eq!((internal.version.as_str(), internal.candidate), ("42", true), "{}", internal.why);
    let vip = view::route(&r, Some(&p), &live, "vip-1", &[("group", "internal")]).unwrap();
    assert_eq!((vip.version.as_str(), vip.alias.as_str()), ("41", "live"), "{}", vip.why);

    // Rolled back by an alarm the release has not seen yet: the kill switch answers.
    alarm_rolls_back(&world).await;
    let after = view::route(&r, Some(&p), &world.router.split(&cohort_target()), &drawn, &[]).unwrap();
    assert_eq!((after.version.as_str(), after.alias.as_str(), after.candidate), ("41", "canary", false));
    assert!(after.why.ends_with("alias canary serves the stable now, so it gets the stable"), "{}", after.why);

    let weighted = view::route(&release(gates()), Some(&p), &live, &drawn, &[]).unwrap_err();
    assert!(weighted.to_string().contains("routes requests by weight"), "{weighted}");
}

#[tokio::test]
async fn the_plan_the_status_and_the_teams_message_name_the_cohort() {
    use crate::release::core::operate::Operated;
    let r = cohort_release(&[0.0, 5.0, 100.0]);
    let plan = r.plan_text();
    assert!(
        plan.contains("stages   the pinned users alone for 10m, 5% of users for 10m, 100% of users for 5m"),
        "{plan}"
    );
    assert!(
        plan.contains(
            "cohorts  by user: pinned group=internal; never 1 listed; the rest drawn by hash of (release, user)"
        ),
        "{plan}"
    );
    assert!(plan.contains("routers read each share from AppConfig (profile ai-handler.live)"), "{plan}");
    assert!(
        plan.contains(
            "judged   drawn users against the stable's with the user as the draw (16 random groups of users); pinned \
             users on absolute limits only (max_error_rate, max_p95_latency_ms, custom max/min, alarms), never \
             compared with the stable"
        ),
        "{plan}"
    );

    let world = cohort_world();
    let p = world.tick(&r, None, T0).await.unwrap();
    assert!(p.reason.starts_with("Started: version 42 at the pinned users alone beside version 41"), "{}", p.reason);
    assert_eq!(
        r.headline(Some(&p), "RUNNING", true),
        "canary version 42 to the pinned users alone, pinned group=internal; never 1 listed, RUNNING"
    );
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    let left = r.as_left(&p).unwrap();
    assert_eq!((left.canary.as_deref(), left.canary_weight), (Some("42"), 0.05), "list shows the share of units");
    let details = r.details(&p, true, T0 + 600);
    assert!(details.iter().any(|d| d.starts_with("judged: drawn users against the stable's")), "{details:?}");
    let mut weighed = p.clone();
    let sample = weighed.samples.last_mut().expect("a look was taken");
    sample.weighting.insert("errors_vs_stable".into(), crate::release::judge::Weighting::DesignEffect(4.0));
    sample.weighting.insert("latency_vs_stable".into(), crate::release::judge::Weighting::TooFewUnits);
    assert!(
        r.details(&weighed, true, T0 + 600).contains(
            &"this stage: errors weighed as one independent request in every 4.0; latency: no unit drawn, nothing to \
              weigh"
                .to_owned()
        ),
        "{:?}",
        r.details(&weighed, true, T0 + 600)
    );
    world.alarms.set("errors", AlarmState::Alarm);
    world.tick(&r, Some(p), T0 + 660).await.unwrap();
    let message = &world.sent()[0].body;
    assert!(message.contains("Stage:     stage 2 of 3 (5% of users)"), "{message}");
    assert!(
        message.contains("Cohort:    5% of users, pinned group=internal; never 1 listed; routers still sending them"),
        "{message}"
    );
}

#[test]
fn validate_says_what_each_share_reaches_of_the_stables_recent_traffic() {
    use crate::release::canary::preflight::exposure;
    let r = cohort_release(&[0.0, 5.0, 25.0, 100.0]);
    assert_eq!(
        exposure(&r, 1200.0).unwrap(),
        "Its shares reach, of the stable's 1200 requests a minute if they are spread evenly over users: 5% of users \
         about 60, 25% of users about 300; the pinned units' own requests on top, from the first stage (one heavy \
         user drawn or not moves this)"
    );
    assert_eq!(exposure(&release(gates()), 1200.0), None, "a weighted release's stages are shares of requests");
}

#[test]
fn validate_states_the_power_of_a_cohort_release_in_its_units() {
    use crate::domain::metrics::SideMetrics;
    use crate::release::canary::preflight::sees;
    let r = cohort_release(&[5.0, 25.0, 50.0, 100.0]);
    let side = |groups: &[(f64, f64)]| SideMetrics {
        requests: groups.iter().map(|g| g.0).sum(),
        errors: groups.iter().map(|g| g.1).sum(),
        replicates: groups
            .iter()
            .map(|&(requests, errors)| SideMetrics { requests, errors, ..Default::default() })
            .collect(),
        ..Default::default()
    };
    // An hour of 1200 requests a minute in sixteen groups of users: even, or with a few
    // heavy users failing often in some groups.
    let even = side(&[(4500.0, 22.5); 16]);
    let mut lumpy = [(4500.0, 10.0); 16];
    for group in [2, 7, 11] {
        lumpy[group] = (4500.0, 80.0);
    }
    let lumpy = side(&lumpy);

    let said = sees(&r, 1200.0, &lumpy).unwrap();
    assert!(said.starts_with("Judged by user: the stable's users over the last hour vary as if every "), "{said}");
    assert!(said.contains("of their requests were one independent request"), "{said}");
    let effect: f64 = said["Judged by user: the stable's users over the last hour vary as if every ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(effect > 5.0, "{said}");
    // The same requests without the spread see more, sooner.
    let by_requests = sees(&r, 1200.0, &even).unwrap();
    let ratio = |s: &str| -> f64 {
        let at = s.find("worse than the stable by errors ").expect(s) + "worse than the stable by errors ".len();
        s[at..].split('x').next().unwrap().parse().unwrap_or(f64::INFINITY)
    };
    assert!(ratio(&said) > ratio(&by_requests), "{said}\n{by_requests}");
    let quiet = side(&[(4500.0, 0.0); 16]);
    assert!(sees(&r, 1200.0, &quiet)
        .unwrap()
        .starts_with("Judged by user, but the stable's groups of users showed no spread"));
}

#[tokio::test]
async fn a_weighted_release_and_a_cohort_release_on_one_alias_exclude_each_other() {
    let world = cohort_world();
    let (deps, claims) = (world.deps(), crate::memory::Claims::default());
    let tick = |release: &Release, execution: &str| serde_json::json!({"execution": execution, "state": serde_json::to_value(release).unwrap()});
    tick_payload(&tick(&cohort_release(&[5.0, 100.0]), ME), &deps, &claims, T0).await.unwrap();
    let err = tick_payload(&tick(&release(gates()), OTHER), &deps, &claims, T0 + 1).await.unwrap_err();
    assert!(err.to_string().contains("another release is in flight on lambda:ai-handler:live"), "{err}");
    assert_eq!(world.router.write_count(), 1, "the weighted release moved nothing");
}

#[tokio::test]
async fn a_rolled_back_cohort_release_never_climbs_again_and_a_promoted_one_stays_promoted() {
    let world = cohort_world();
    let r = cohort_release(&[5.0, 25.0, 100.0]);
    let p = world.tick(&r, None, T0).await.unwrap();
    let outcome = alarm_rolls_back(&world).await;
    assert_eq!(outcome.event_name(), "rolled_back");
    let writes = world.router.write_count();
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
    assert_eq!(world.router.write_count(), writes, "it never raises the cohort alias again");
    assert_eq!(thresholds(&world), [500, 0], "its routers were told it ended, and nothing more");

    // In the final bake both aliases serve the candidate: an alarm puts the stable back.
    let world = cohort_world();
    let p = world.tick(&r, None, T0).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 600).await.unwrap();
    let p = world.tick(&r, Some(p), T0 + 1200).await.unwrap();
    assert_eq!((p.stage, world.router.split(&cohort_target()).stable.as_str()), (2, "42"), "{}", p.reason);
    world.alarms.set("errors", AlarmState::Alarm);
    let p = world.tick(&r, Some(p), T0 + 1260).await.unwrap();
    assert_eq!(p.status, Status::RolledBack, "{}", p.reason);
    assert_eq!(world.router.split(&cohort_target()).stable, "41", "the final-bake guard");
}
