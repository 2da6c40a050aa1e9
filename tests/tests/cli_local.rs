//! The `coalmine` CLI as an operator runs it, against the local AWS with the real state
//! machine and the real stepper: a scripted run that validates, starts, pauses, resumes,
//! approves, promotes, aborts and rolls back, checking the traffic and the team's
//! messages after each.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_cloudwatch::types::StateValue;
use coalmine::Target;
use coalmine_tests::operator::{Operator, PATIENCE as RUN};
use coalmine_tests::{bootstrap_path, poll, unique, Canary, Deployed, Scene, Scratch};
use serde_json::{json, Value};

/// Waits for a `coalmine` that runs until the release ends.
async fn finished(child: Child) -> (i32, String) {
    let child = std::sync::Arc::new(std::sync::Mutex::new(Some(child)));
    poll(RUN, || async {
        let mut guard = child.lock().unwrap();
        let done = guard.as_mut().unwrap().try_wait().unwrap().is_some();
        done.then(|| {
            let out = guard.take().unwrap().wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.code().unwrap_or(-1), text)
        })
    })
    .await
    .expect("coalmine --wait ends with the release")
}

fn tempdir() -> Scratch {
    Scratch::new("coalmine-cli")
}

fn lambda_release(name: &str, target: &Target, alarm: &str, version: &str, stages: Value) -> Value {
    let Target::Lambda(a) = target else { unreachable!() };
    json!({
        "release": name,
        "target": {"lambda": {"function": a.function, "alias": a.alias}},
        "canary_version": version,
        "stages": stages,
        "check_every_seconds": 1,
        "gates": {"alarms": [alarm], "max_error_rate": 0.05, "min_requests": 50}
    })
}

async fn setup() -> (Scene, Deployed, Canary) {
    let scene = Scene::connect().await;
    let deployed = scene.local.deploy(&scene.inbox.topic_arn).await;
    let canary = scene.lambda_canary(true).await;
    scene.local.set_alarm(&canary.alarm, StateValue::Ok).await;
    (scene, deployed, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_validates_starts_pauses_resumes_approves_and_promotes_a_release() {
    let (s, deployed, Canary { target, alarm, .. }) = setup().await;
    let op = Operator { deployed: &deployed, topic: &s.inbox.topic_arn, dir: tempdir(), env: Vec::new() };
    let _traffic = s.local.pump_healthy_traffic(&target, "2").await;
    let name = unique("summarizer");
    let file = op.file(&lambda_release(
        &name,
        &target,
        &alarm,
        "2",
        json!([{"percent": 5, "bake_seconds": 2}, {"percent": 25, "bake_seconds": 2, "approval": true, "approval_timeout_seconds": 600},
               {"percent": 50, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 2}]),
    ));

    // validate: offline, then the first tick's checks against AWS, moving nothing.
    let plan = op.ok(&["validate", &file]);
    assert!(plan.contains(&format!("{name}: valid")) && plan.contains("25% for 2s then approval"), "{plan}");
    let (_, _, revision) = s.local.alias_state(&target).await;
    let live = op.ok(&["validate", "--live", &file]);
    for check in ["✓ no canary in flight", "✓ the canary exists", "✓ no gate alarm is firing"] {
        assert!(live.contains(check), "lacks {check:?}:\n{live}");
    }
    // The stable's recent traffic, per minute, says what the first stage will see: enough.
    assert!(live.contains("✓ the metrics the judge needs: stable:"), "{live}");
    assert!(live.contains("requests a minute over the last"), "{live}");
    assert_eq!(s.local.alias_state(&target).await.2, revision, "validate moved nothing");

    // start, twice: the second is recognised, not doubled.
    assert!(op.ok(&["start", &file]).contains(&format!("started release {name}")));
    assert!(op.ok(&["start", &file]).contains("this start repeats it, nothing doubled"));

    // pause: after its bake the release holds at 5%, still judged.
    op.ok(&["pause", &name]);
    let paused = op.until(&name, "paused", |st| st["progress"]["status"] == "paused").await;
    assert_eq!(paused["progress"]["stage"], 0);
    assert_eq!(s.local.alias_state(&target).await.1.get("2"), Some(&0.05));

    // resume: it climbs to 25% and waits there for approval; the team is asked.
    op.ok(&["resume", &name]);
    op.until(&name, "awaiting approval", |st| st["progress"]["status"] == "awaiting_approval").await;
    assert_eq!(s.local.alias_state(&target).await.1.get("2"), Some(&0.25));
    let asked = s.inbox.receive(1, Duration::from_secs(10)).await;
    assert_eq!(asked[0].event(), "awaiting_approval", "{}", asked[0].message);
    assert!(asked[0].message.contains(&format!("coalmine approve {name}")), "{}", asked[0].message);

    // approve: on to 50%, with a ten-minute bake...
    let said = op.ok(&["approve", &name]);
    assert!(said.contains("approved by jane"), "{said}");
    op.until(&name, "at 50%", |st| st["progress"]["stage"] == 2).await;
    assert_eq!(s.local.alias_state(&target).await.1.get("2"), Some(&0.5));

    // ...which promote ends now; the last stage's bake passes and it is promoted.
    op.ok(&["promote", &name]);
    let done = op.until(&name, "promoted", |st| st["status"] == "SUCCEEDED").await;
    assert_eq!(done["progress"]["status"], "promoted");
    assert_eq!(s.local.alias_state(&target).await.0, "2");

    // What a person reads afterwards: a line per stage, and who let each go on.
    let status = op.ok(&["status", &name]);
    for part in ["  stage 1/4", "approved by jane", "promoted by jane", "chart of", "=> SUCCEEDED"] {
        assert!(status.contains(part), "status lacks {part:?}:\n{status}");
    }
    let stage_lines = status.lines().filter(|l| l.starts_with("  stage ")).count();
    assert_eq!(stage_lines, 4, "one line per stage, not per check:\n{status}");
    // Healthy checks say the two sides' figures in words; the raw e-values are for scripts.
    assert!(status.contains("errors 0.00% vs 0.50%"), "{status}");
    assert!(!status.contains("e = ") && !status.contains("10^"), "{status}");
    let every = op.ok(&["status", &name, "--checks"]);
    for part in ["paused by jane", "Waiting for approval", "Approved by jane.", "Promoted by jane."] {
        assert!(every.to_lowercase().contains(&part.to_lowercase()), "status --checks lacks {part:?}:\n{every}");
    }
    // The report: why it ended, who did what and when, every check, in a real browser.
    let seen = coalmine_tests::browser::report_in_a_browser(&op, &s.local, &name, "lambda-promoted").await;
    assert_eq!(seen.state.as_deref(), Some("promoted"), "{:?}", seen.verdict);
    for act in ["paused by jane", "approved by jane; stage 3 at 50%", "promoted by jane"] {
        assert!(seen.acts.iter().any(|a| a.contains(act)), "who did what lacks {act:?}: {:?}", seen.acts);
    }
    for chart in ["traffic", "errors_vs_stable", "error_rate_limit"] {
        assert!(seen.chart(chart).points > 0);
    }
    let json = op.ok(&["status", &name, "--output", "json"]);
    assert!(json.contains("\"log_e\"") && json.contains("\"threshold\""), "{json}");
    let list = op.ok(&["list", "--wide"]);
    assert!(list.lines().any(|l| l.contains(&name) && l.contains("promoted")), "{list}");
    let listed: Value = serde_json::from_str(&op.ok(&["list", "--output", "json"])).unwrap();
    assert!(listed.as_array().unwrap().iter().any(|r| r["name"] == name.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_asks_which_version_a_user_of_a_cohort_release_gets_and_why() {
    let scene = Scene::connect().await;
    let store = scene.local.cohort_store().await;
    let deployed = scene.local.deploy_with(&scene.inbox.topic_arn, &store.env()).await;
    let op = Operator { deployed: &deployed, topic: &scene.inbox.topic_arn, dir: tempdir(), env: Vec::new() };
    let target = scene.local.seed_cohort_model("steady", "steady").await;
    let _traffic = scene.local.pump_healthy_traffic(&target, "2").await;
    let Target::LambdaCohort(aliases) = &target else { unreachable!() };
    let name = unique("chat");
    let file = op.file(&json!({
        "release": name,
        "target": {"lambda_cohort": {"function": aliases.function, "alias": "live", "cohort_alias": "canary"}},
        "canary_version": "2",
        "cohorts": {"unit": "user", "pinned": {"match": {"group": ["internal"]}}},
        "stages": [{"percent": 5, "bake_seconds": 1, "approval": true}, {"percent": 100, "bake_seconds": 2}],
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05, "min_requests": 50}
    }));
    let plan = op.ok(&["validate", &file]);
    assert!(plan.contains("cohorts  by user: pinned group=internal; the rest drawn by hash"), "{plan}");
    assert!(plan.contains("stages   5% of users for 1s then approval, 100% of users for 2s"), "{plan}");

    op.ok(&["start", &file]);
    op.until(&name, "awaiting approval", |st| st["progress"]["status"] == "awaiting_approval").await;
    let drawn = (0..100_000)
        .map(|i| format!("user-{i}"))
        .find(|u| coalmine_router::bucket(&name, u) < coalmine_router::threshold(5.0))
        .unwrap();
    let said = op.ok(&["route", &name, "--unit", &drawn]);
    assert!(
        said.starts_with(&format!("{drawn} gets version 2 (the candidate) through alias canary: drawn: bucket")),
        "{said}"
    );
    assert!(said.contains("(at stage 1 of 2: 5% of users, pinned group=internal)"), "{said}");
    let internal = op.ok(&["route", &name, "--unit", "jane", "--attr", "group=internal", "--output", "json"]);
    let internal: Value = serde_json::from_str(&internal).unwrap();
    assert_eq!((&internal["version"], &internal["candidate"]), (&json!("2"), &json!(true)), "{internal}");
    assert!(internal["why"].as_str().unwrap().starts_with("pinned to the candidate (group=internal)"), "{internal}");
    let header = op.ok(&["status", &name]);
    assert!(header.contains("canary version 2 to 5% of users, pinned group=internal"), "{header}");
    let (code, text) = op.run(&["route", &name, "--unit", "jane", "--attr", "group"]);
    assert_eq!(code, 2, "a usage error: {text}");

    // Aborted: the kill switch moved, and route says what a drawn user gets now.
    op.ok(&["abort", &name, "--reason", "tone is off"]);
    let said = op.ok(&["route", &name, "--unit", &drawn]);
    assert!(said.starts_with(&format!("{drawn} gets version 1 (the stable)")), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_ends_a_release_rolled_back_and_the_next_one_is_promoted_in_full() {
    let (s, deployed, Canary { function, target, alarm }) = setup().await;
    let op = Operator { deployed: &deployed, topic: &s.inbox.topic_arn, dir: tempdir(), env: Vec::new() };
    let _traffic = s.local.pump_healthy_traffic(&target, "2").await;
    let long = json!([{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}]);
    let first = unique("summarizer");
    let waiting = op.spawn(&["start", &op.file(&lambda_release(&first, &target, &alarm, "2", long.clone())), "--wait"]);
    poll(RUN, || async { s.local.alias_state(&target).await.1.get("2").copied().filter(|w| *w > 0.0) }).await;

    let said = op.ok(&["abort", &first, "--reason", "answers look truncated"]);
    assert!(said.contains("aborted by jane") && said.contains("serves all traffic, no canary"), "{said}");
    assert!(s.local.alias_state(&target).await.1.is_empty(), "the canary is down at once");
    let (code, text) = finished(waiting).await;
    assert_eq!(code, 3, "start --wait exits 3 on a rollback:\n{text}");
    assert!(text.contains("Rolled back at stage 1 of 2 (5%) by jane, by hand: answers look truncated"), "{text}");
    let seen = coalmine_tests::browser::report_in_a_browser(&op, &s.local, &first, "lambda-aborted").await;
    assert_eq!(seen.state.as_deref(), Some("rolled_back"));
    assert!(seen.acts.iter().any(|a| a.contains("aborted by jane")), "{:?}", seen.acts);
    let told = s.inbox.receive(1, Duration::from_secs(10)).await;
    assert!(told[0].message.contains("Why:       jane, by hand: answers look truncated"), "{}", told[0].message);

    // The target is free again: the next release starts, and promote --full ends it.
    let version = s.local.publish_next_version(&function).await;
    let second = unique("summarizer");
    let waiting = op.spawn(&["start", &op.file(&lambda_release(&second, &target, &alarm, &version, long)), "--wait"]);
    poll(RUN, || async { s.local.alias_state(&target).await.1.get(&version).copied() }).await;
    op.ok(&["promote", &second, "--full"]);
    let (code, text) = finished(waiting).await;
    assert_eq!(code, 0, "promoted:\n{text}");
    assert!(text.contains("Promoted by jane (promote --full)"), "{text}");
    assert_eq!(s.local.alias_state(&target).await.0, version);
    let (code, text) = op.run(&["abort", &second, "--reason", "too late"]);
    assert_eq!(code, 4, "nothing to abort once promoted: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_by_hand_stops_whatever_runs_and_a_bad_file_never_starts() {
    let (s, deployed, Canary { target, alarm, .. }) = setup().await;
    let op = Operator { deployed: &deployed, topic: &s.inbox.topic_arn, dir: tempdir(), env: Vec::new() };
    let name = unique("summarizer");
    let long = json!([{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}]);
    // An incident while a release is at 5%: the operator zeroes the target by hand.
    op.ok(&["start", &op.file(&lambda_release(&name, &target, &alarm, "2", long))]);
    poll(RUN, || async { s.local.alias_state(&target).await.1.get("2").copied() }).await;

    let said = op.ok(&["rollback", &target.to_string(), "--reason", "pager says p99 doubled"]);
    assert!(said.contains("rolled back by jane"), "{said}");
    assert!(s.local.alias_state(&target).await.1.is_empty());
    let ended = op.until(&name, "ended", |st| st["status"] != "RUNNING").await;
    assert_eq!(ended["error"], "CanaryRolledBack");
    assert_eq!(op.run(&["status", &name]).0, 3, "status exits 3 for a release rolled back");
    let told = s.inbox.receive(1, Duration::from_secs(10)).await;
    assert_eq!(told[0].subject, format!("coalmine: {target} rolled back by hand"));

    // A typo'd file is refused before any StartExecution, with a hint.
    let bad = op.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"release": "x-1", "target": {"function": "f", "alias": "live"}, "canary_version": "2", "stages": [{"percent": 100, "bake_seconds": 60}], "check_every_seconds": 60}"#).unwrap();
    let (code, text) = op.run(&["start", bad.to_str().unwrap()]);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains(r#"a Lambda target names its kind: {"lambda": {"function": ..., "alias": ...}}"#), "{text}");
    let (code, text) = op.run(&["status", "no-such-release"]);
    assert_eq!(
        (code, text.trim()),
        (1, "coalmine: no release no-such-release in this state machine; coalmine list shows them")
    );
}

#[tokio::test]
async fn a_guardrail_release_is_validated_offline_and_against_the_endpoint_moving_nothing() {
    let s = Scene::connect().await;
    let endpoint = unique("ai-model");
    s.local.seed_sagemaker_endpoint(&endpoint, &[("AllTraffic", 1.0)]).await;
    let (v8, renamed) = (format!("{endpoint}-v8"), format!("{endpoint}-renamed"));
    s.local.add_endpoint_config(&endpoint, &v8, &[("AllTraffic", "AllTraffic", 1.0)]).await;
    // A config whose variant is named differently: SageMaker's guardrails cannot deploy it.
    s.local.add_endpoint_config(&endpoint, &renamed, &[("Blue", "AllTraffic", 1.0)]).await;
    let alarm = unique("model-5xx");
    s.local.put_quiet_alarm(&alarm, None).await;
    let dir = tempdir();
    let release = |name: &str, config: &str| {
        let mut release: Value = serde_json::from_str(
            &std::fs::read_to_string(
                coalmine_tests::workspace_root().join("events/releases/sagemaker-guardrail-ai-model-8.json"),
            )
            .unwrap(),
        )
        .unwrap();
        release.as_object_mut().unwrap().remove("shadow");
        release["release"] = json!(name);
        release["guardrail"]["endpoint"] = json!(endpoint);
        release["guardrail"]["endpoint_config"] = json!(config);
        release["guardrail"]["alarms"] = json!([alarm]);
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, release.to_string()).unwrap();
        path.display().to_string()
    };
    let coalmine = |args: &[&str]| {
        let out =
            Command::new(bootstrap_path("coalmine")).args(args).stdin(Stdio::null()).output().expect("coalmine runs");
        (
            out.status.code().unwrap_or(-1),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (good, bad) = (release("ai-model-8", &v8), release("ai-model-9", &renamed));

    let (code, offline) = coalmine(&["validate", &good]);
    assert_eq!(code, 0, "{offline}");
    assert!(
        offline.contains(&format!("SageMaker deploys {v8}: canary 10% of capacity, then the rest after 10m")),
        "{offline}"
    );
    assert!(offline.contains(&format!("the tripwire coalmine-tripwire-{endpoint}")), "{offline}");

    let (code, live) = coalmine(&["validate", "--live", &good]);
    assert_eq!(code, 0, "{live}");
    assert!(
        live.contains(&format!("✓ the endpoint, its configs and alarms: {endpoint} InService on {endpoint}-config")),
        "{live}"
    );

    let (code, refused) = coalmine(&["validate", "--live", &bad]);
    assert_eq!(code, 4, "{refused}");
    assert!(refused.contains("differ from those in service"), "{refused}");
    let described = s.local.sagemaker.describe_endpoint().endpoint_name(&endpoint).send().await.unwrap();
    assert_eq!(described.endpoint_config_name(), Some(format!("{endpoint}-config").as_str()), "validate moved nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_release_is_validated_live_started_watched_and_aborted_as_the_operator_signed_in() {
    use coalmine_tests::azure::AzureStandIn;
    let s = Scene::connect().await;
    let stand_in = AzureStandIn::start().await;
    let secret = s.local.put_secret(&unique("coalmine-azure"), &stand_in.secret_json()).await;
    let deployed = s.local.deploy_with(&s.inbox.topic_arn, &[("AZURE_CREDENTIALS_SECRET_ARN", secret.as_str())]).await;
    let target = stand_in.add_endpoint(&unique("chat"), &[("blue", 100), ("green", 0)]);
    // The operator signs in as the usual Azure tools would have them: a service
    // principal in the environment, in the stand-in's cloud.
    let op = Operator { deployed: &deployed, topic: &s.inbox.topic_arn, dir: tempdir(), env: stand_in.operator_env() };
    let name = unique("chat-model");
    let mut release: Value = coalmine_tests::event_json("releases/azureml-chat-model-2.json");
    release["release"] = json!(name);
    release["target"] = serde_json::to_value(&target).unwrap();
    release["stages"] = json!([{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}]);
    release["check_every_seconds"] = json!(1);
    release.as_object_mut().unwrap().remove("shadow");
    let file = op.file(&release);

    let plan = op.ok(&["validate", &file]);
    assert!(plan.contains(&format!("{name}: valid")) && plan.contains("canary deployment green"), "{plan}");
    let live = op.ok(&["validate", "--live", &file]);
    for check in ["✓ no canary in flight", "✓ the canary exists", "✓ the metrics the judge needs: stable:"] {
        assert!(live.contains(check), "lacks {check:?}:\n{live}");
    }
    assert!(stand_in.seen().iter().all(|r| r.method != "PUT"), "validate moved nothing");

    assert!(op.ok(&["start", &file]).contains(&format!("started release {name}")));
    let at_five = op.until(&name, "at 5%", |st| st["progress"]["weight"] == 0.05).await;
    assert_eq!(at_five["progress"]["stage"], 0);
    assert_eq!(stand_in.traffic(&target).0["green"], 5.0);
    let status = op.ok(&["status", &name]);
    assert!(status.contains("deployment green at 5% beside deployment blue"), "{status}");

    let said = op.ok(&["abort", &name, "--reason", "answers drift from the reference"]);
    assert!(
        said.contains("aborted by jane") && said.contains("deployment blue serves all traffic, no canary"),
        "{said}"
    );
    assert_eq!(stand_in.traffic(&target).0["green"], 0.0, "the operator's abort zeroed it at once");
    let ended = op.until(&name, "ended", |st| st["status"] != "RUNNING").await;
    assert_eq!(ended["error"], "CanaryRolledBack");
    let stamp = stand_in.resource(&target)["tags"]["coalmine:release"].as_str().unwrap().to_owned();
    assert!(stamp.contains("by=operator:jane"), "{stamp}");
    let seen = coalmine_tests::browser::report_in_a_browser(&op, &s.local, &name, "azureml-aborted").await;
    assert_eq!(seen.state.as_deref(), Some("rolled_back"));
    assert!(seen.acts.iter().any(|a| a.contains("aborted by jane")), "{:?}", seen.acts);
    let list = op.ok(&["list"]);
    assert!(list.lines().all(|l| l.chars().count() <= 120), "list fits 120 columns:\n{list}");
    // Subscription, resource group and workspace left out; whole in --wide.
    assert!(list.contains("azureml:chat-") && !list.contains("ml-workspace"), "{list}");
    assert!(target.short_name().ends_with(":blue→green"), "{}", target.short_name());
    let wide = op.ok(&["list", "--wide"]);
    assert!(wide.contains(&target.to_string()) && wide.contains(&name), "{wide}");
}

/// `coalmine` with nothing of the local AWS in its environment but what `env` gives.
fn bare(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(bootstrap_path("coalmine"));
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("coalmine runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn validate_reports_every_problem_of_a_file_at_once_on_stderr() {
    let dir = tempdir();
    let mut release: Value = serde_json::from_str(
        &std::fs::read_to_string(coalmine_tests::workspace_root().join("events/releases/lambda-ai-handler-42.json"))
            .unwrap(),
    )
    .unwrap();
    release["gates"]["max_errors"] = json!(1);
    release["gates"]["max_error_rate"] = json!(5);
    release["stages"][1]["bake_seconds"] = json!(0);
    release["check_every_seconds"] = json!(0);
    release["speed"] = json!("fast");
    let file = dir.path().join("five-mistakes.json");
    std::fs::write(&file, release.to_string()).unwrap();

    let (code, stdout, stderr) = bare(&["validate", file.to_str().unwrap()], &[]);

    assert_eq!(code, 4, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "errors go to stderr: {stdout}");
    assert!(stderr.contains("invalid, 5 problems:"), "{stderr}");
    for expected in [
        "gates.max_errors: unknown field `max_errors`",
        "did you mean `max_error_rate`?",
        "write 0.05 for 5%",
        "stages[1].bake_seconds: 0",
        "check_every_seconds: 0 is outside",
        "speed: unknown field `speed`",
    ] {
        assert!(stderr.contains(expected), "lacks {expected:?}:\n{stderr}");
    }
    let (_, json, _) = bare(&["validate", "--output", "json", file.to_str().unwrap()], &[]);
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report[0]["problems"].as_array().map(Vec::len), Some(5), "{json}");
}

#[test]
fn a_reader_that_stops_reading_ends_the_command_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let sample = coalmine_tests::workspace_root().join("events/releases/lambda-ai-handler-42.json");
    let out = Command::new(bootstrap_path("coalmine"))
        .args(["validate", sample.to_str().unwrap()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_target_on_the_command_line_that_is_not_one_is_a_usage_error() {
    let (code, _, stderr) = bare(&["rollback", "lambda:only-two", "--reason", "x"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "expected lambda:FUNCTION:ALIAS, lambda-cohort:FUNCTION:ALIAS:COHORT_ALIAS, \
             sagemaker:ENDPOINT:STABLE:CANARY or azureml:SUBSCRIPTION:RESOURCE_GROUP:WORKSPACE:ENDPOINT:STABLE:CANARY"
        ),
        "{stderr}"
    );
}

#[test]
fn without_credentials_or_an_answering_endpoint_the_cli_says_which_and_what_to_do() {
    let nowhere = [("HOME", "/nonexistent"), ("AWS_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")];
    let (code, _, stderr) = bare(&["list"], &nowhere);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("found no AWS credentials") && stderr.contains("set AWS_PROFILE"), "{stderr}");
    assert!(!stderr.contains("no answer"), "{stderr}");

    // A port nothing listens on: the local AWS is not running.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}");
    let keys = [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_ENDPOINT_URL", url.as_str())];
    let env: Vec<(&str, &str)> = nowhere.iter().copied().chain(keys).collect();
    let (code, _, stderr) = bare(&["rollback", "lambda:ai-handler:live", "--reason", "x", "--as", "jane"], &env);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("nothing answers at {url}")) && stderr.contains("make local-aws-start"),
        "{stderr}"
    );
    assert!(stderr.contains("or pass --topic ARN (or COALMINE_TOPIC_ARN)"), "{stderr}");
}
