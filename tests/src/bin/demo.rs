//! `make demo`: the whole story against the local AWS, operated with the `coalmine` CLI
//! as a platform engineer would. Everything runs as deployed: the real stepper and
//! rollback bootstraps as functions, the real state machine, one execution per release.
//! Bakes are seconds. Lines starting `$` are the commands run; what follows each is
//! what it printed. `[demo]` lines are the world around (alarms firing, SNS).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::StateValue;
use aws_smithy_types::date_time::{DateTime, Format};
use coalmine::Target;
use coalmine_router::aws::{AppConfigSource, Router};
use coalmine_tests::azure::AzureStandIn;
use coalmine_tests::operator::Operator;
use coalmine_tests::{bootstrap_path, event_json, poll, sample_event, CohortStore, Deployed, Inbox, LocalAws, Scratch};
use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    let local = LocalAws::connect().await;
    let run = run_id();
    let name = |base: &str| format!("{base}-{run}");
    println!("coalmine demo: canary releases against the local AWS (MiniStack + moto)\n");

    let setup = Instant::now();
    let inbox = local.topic_with_queue(&name("coalmine-alerts")).await;
    // Azure, stood in for on 127.0.0.1 (its published examples, over HTTPS): the
    // functions sign in with the service principal in the stack's secret.
    let azure = AzureStandIn::start().await;
    let azure_secret = local.put_secret(&name("coalmine-azure"), &azure.secret_json()).await;
    // Cohort releases publish their shares in AppConfig, made as the template makes it.
    let cohorts = local.cohort_store().await;
    let mut env = vec![("AZURE_CREDENTIALS_SECRET_ARN", azure_secret.as_str())];
    env.extend(cohorts.env());
    let deployed = local.deploy_with(&inbox.topic_arn, &env).await;
    let shell = Shell(Operator {
        deployed: &deployed,
        topic: &inbox.topic_arn,
        dir: Scratch::new("coalmine-demo"),
        env: azure.operator_env(),
    });
    println!(
        "deployed in {:.1}s: stepper + rollback functions (real bootstraps), release state machine, SNS topic\n",
        setup.elapsed().as_secs_f64()
    );

    // 1. A healthy release of a Lambda model handler climbs 5 -> 25 -> 50 -> 100.
    let function = name("ai-handler");
    let target = local.seed_lambda_canary(&function, 0.0).await;
    let alarm = name("coalmine-ai-handler-canary-errors");
    local.put_quiet_alarm(&alarm, Some(&target.to_string())).await;
    say("1. a healthy release of ai-handler's version 2");
    let traffic = local.pump_healthy_traffic(&target, "2").await;
    let file = shell.write(&lambda_release(
        &name("ai-handler-v2"),
        &function,
        "2",
        &alarm,
        &[(5, 2), (25, 2), (50, 2), (100, 2)],
    ));
    shell.run(&["validate", &file]).await;
    shell.run(&["start", &file, "--wait"]).await;
    drop(traffic);

    // 2. The next release: its alarm fires mid-bake; the rollback function zeroes it.
    say("2. version 3: its alarm fires at 5%");
    let version = local.publish_next_version(&function).await;
    let release = name("ai-handler-v3");
    let file = shell.write(&lambda_release(
        &release,
        &function,
        &version,
        &alarm,
        &[(5, 600), (25, 300), (50, 300), (100, 300)],
    ));
    shell.run(&["start", &file]).await;
    poll(Duration::from_secs(60), || async { local.alias_state(&target).await.1.get(&version).copied() }).await;
    fire(&local, &deployed, &alarm).await;
    poll(Duration::from_secs(30), || async { local.alias_state(&target).await.1.is_empty().then_some(()) }).await;
    let told = show_messages(&inbox, 1).await;
    shell.until_ended(&local, &release).await;
    shell.run(&["status", &release]).await;
    print_message(told.first());
    println!();

    // 3. Promoted but still baking at 100%: an alarm puts the previous version back at once.
    say("3. version 4 is promoted and baking at 100% when the alarm fires");
    local.set_alarm(&alarm, StateValue::Ok).await;
    let version = local.publish_next_version(&function).await;
    let release = name("ai-handler-v4");
    let mut json = lambda_release(&release, &function, &version, &alarm, &[(5, 2), (100, 600)]);
    json["check_every_seconds"] = json!(5);
    let traffic = local.pump_healthy_traffic(&target, &version).await;
    shell.run(&["start", &shell.write(&json)]).await;
    poll(Duration::from_secs(60), || async { (local.alias_state(&target).await.0 == version).then_some(()) }).await;
    say(format!("alias live serves version {version}: promoted, baking for 10 minutes"));
    fire(&local, &deployed, &alarm).await;
    poll(Duration::from_secs(30), || async { (local.alias_state(&target).await.0 == "2").then_some(()) }).await;
    say("alias live serves version 2 again: the release's stamp on the alias named it");
    let told = show_messages(&inbox, 1).await;
    shell.until_ended(&local, &release).await;
    shell.run(&["status", &release]).await;
    drop(traffic);
    print_message(told.first());
    println!();

    // 4. An operator: a stage that waits for approval, then approved.
    say("4. version 5 waits for a person at 25%");
    local.set_alarm(&alarm, StateValue::Ok).await;
    let version = local.publish_next_version(&function).await;
    let release = name("ai-handler-v5");
    let mut json = lambda_release(&release, &function, &version, &alarm, &[(5, 2), (25, 2), (100, 2)]);
    json["stages"][1]["approval"] = json!(true);
    let traffic = local.pump_healthy_traffic(&target, &version).await;
    shell.run(&["start", &shell.write(&json)]).await;
    show_messages(&inbox, 1).await;
    shell.run(&["list"]).await;
    shell.run(&["approve", &release]).await;
    shell.until_ended(&local, &release).await;
    shell.run(&["status", &release]).await;
    drop(traffic);
    println!();

    // 5. An AI metric: the new model answers with twice the tokens; the judge sees it.
    say("5. version 6 answers with twice the output tokens (published per version with coalmine-emf)");
    local.set_alarm(&alarm, StateValue::Ok).await;
    let version = local.publish_next_version(&function).await;
    let release = name("ai-handler-v6");
    let namespace = name("AIService");
    let mut json = lambda_release(&release, &function, &version, &alarm, &[(5, 600), (25, 600), (100, 600)]);
    json["gates"]["custom"] = json!([{
        "namespace": namespace, "metric": "OutputTokens", "stat": "Average", "max_increase_ratio": 0.2,
        "dimensions": {"FunctionName": function, "Version": "{version}"}
    }]);
    let traffic = local.pump_healthy_traffic(&target, &version).await;
    let answers = local.pump_answers(&target, &namespace, 800.0, 40);
    shell.run(&["start", &shell.write(&json)]).await;
    let told = show_messages(&inbox, 1).await;
    shell.until_ended(&local, &release).await;
    shell.run(&["status", &release]).await;
    drop((traffic, answers));
    print_message(told.first());
    println!();

    // 6. Shadow first: the candidate answers copies of live requests; nobody sees them.
    say("6. ai-classifier's version 2 is shadowed before its canary: it disagrees on half the labels");
    let classifier = local.seed_model("steady", "flips-odd").await;
    let release = name("ai-classifier-v2");
    let json = json!({
        "release": release,
        "target": {"lambda": {"function": classifier, "alias": "live"}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 2,
        "gates": {"max_error_rate": 0.05, "min_requests": 20},
        "shadow": {"duration_seconds": 600, "sample": 1.0, "compare": {"label": {"pointer": "/label"}},
                   "max_disagreement_increase_ratio": 0.5}
    });
    let users = local.pump_model_requests(&classifier);
    shell.run(&["start", &shell.write(&json)]).await;
    let told = show_messages(&inbox, 1).await;
    shell.until_ended(&local, &release).await;
    drop(users);
    shell.run(&["status", &release]).await;
    let (serves, weights, _) = local.alias_state(&Target::lambda(&classifier, "live")).await;
    say(format!("alias live serves version {serves}, weights {weights:?}: version 2 never left the shadow"));
    print_message(told.first());
    println!();

    // 7. A healthy release of a SageMaker model: a canary variant climbs to 100%.
    say("7. a SageMaker endpoint's canary variant");
    let endpoint = name("ai-model-endpoint");
    let target = local.seed_sagemaker_canary(&endpoint, 0.0).await;
    let release = json!({
        "release": name("ai-model-v7"),
        "target": {"sagemaker": {"endpoint": endpoint, "stable_variant": "stable", "canary_variant": "canary"}},
        "stages": [{"percent": 10, "bake_seconds": 2}, {"percent": 50, "bake_seconds": 2}, {"percent": 100, "bake_seconds": 2}],
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05, "max_p95_latency_ms": 2000, "min_requests": 50}
    });
    let traffic = local.pump_healthy_traffic(&target, "canary").await;
    shell.run(&["start", &shell.write(&release), "--wait"]).await;
    drop(traffic);

    // 8. Azure ML: the same release, on an online endpoint's deployments.
    say("8. an Azure ML endpoint's green deployment: shadowed by Azure's mirror, then an Azure Monitor alert");
    azure_scene(&local, &deployed, &shell, &inbox, &azure, &name).await;

    // 9. Cohorts: the same users stay on the candidate, internal users first.
    say("9. chat's version 2 by cohort: internal users first, then a share of users; a conversation keeps its version");
    cohort_scene(&local, &shell, &cohorts, &name).await;

    // 10. Replay: a quiet service makes its evidence before any user.
    say("10. ai-router serves a few requests a minute: its version 2 replays a golden set before any user");
    replay_scene(&local, &shell, &inbox, &name).await;

    shell.run(&["list"]).await;
    reports(&shell, &run).await;
    println!("done in {:.0}s.", setup.elapsed().as_secs_f64());
    // Where this build put the CLI (CARGO_TARGET_DIR may sit outside the clone).
    let cli_path = bootstrap_path("coalmine");
    let cli_path = cli_path.strip_prefix(coalmine_tests::workspace_root()).unwrap_or(&cli_path);
    println!(
        "\nTo operate these releases yourself, start the local AWS first (make local-aws-start; it then stays up\n\
         after make demo), and in a shell:\n  source .local-aws/env\n  export COALMINE_STATE_MACHINE_ARN={} \
         COALMINE_TOPIC_ARN={} COALMINE_OPERATOR=$USER\n  {} list",
        deployed.state_machine_arn,
        inbox.topic_arn,
        cli_path.display()
    );
}

/// An Azure ML release: the candidate deployment answers mirrored copies first, climbs
/// to 5%, and an Azure Monitor alert on its 5xx responses, posted by an action group to
/// the stack's webhook, takes its traffic away through the rollback function.
async fn azure_scene(
    local: &LocalAws,
    deployed: &Deployed,
    shell: &Shell<'_>,
    inbox: &Inbox,
    azure: &AzureStandIn,
    name: &dyn Fn(&str) -> String,
) {
    let target = azure.add_endpoint(&name("chat-endpoint"), &[("blue", 100), ("green", 0)]);
    // The webhook, as the stack deploys it with Azure on: the rollback binary behind a
    // function URL, with a token in Secrets Manager.
    let token = format!("{}{}", name("k3v9Qm2Lx8Rt4Wz7Hn5Bp1Cd6Fg0Js2Ya4"), "Ue8Io3Pw9Tq7");
    let token_secret = local.put_secret(&name("coalmine-webhook"), &token).await;
    let rollback_arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{}", deployed.rollback_fn);
    let webhook = name("coalmine-alert-webhook");
    let env = [
        ("SNS_TOPIC_ARN", inbox.topic_arn.as_str()),
        ("ALERT_WEBHOOK_SECRET_ARN", token_secret.as_str()),
        ("ROLLBACK_FUNCTION_ARN", rollback_arn.as_str()),
    ];
    local.create_function_from(&webhook, &bootstrap_path("rollback"), &env).await;
    let url = local.function_url(&webhook).await;

    let release = name("chat-model-2");
    let mut json = event_json("releases/azureml-chat-model-2.json");
    json["release"] = json!(release);
    json["target"] = serde_json::to_value(&target).unwrap_or_default();
    json["shadow"] = json!({"duration_seconds": 60, "until_conclusive": true, "sample": 0.5});
    json["stages"] = json!([{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}]);
    json["check_every_seconds"] = json!(1);
    json["gates"]["min_requests"] = json!(50);
    let file = shell.write(&json);
    shell.run(&["validate", "--live", &file]).await;
    shell.run(&["start", &file]).await;
    let at_five = || async { (azure.traffic(&target).0.get("green") == Some(&5.0)).then_some(()) };
    poll(Duration::from_secs(90), at_five).await;
    say("endpoint traffic {blue: 95, green: 5}: the shadow passed, the mirror ended in the same PUT");

    let Target::Azureml(d) = &target else { return };
    let mut alert = event_json("azure/alert-azureml-canary.common-schema.json");
    alert["data"]["essentials"]["alertTargetIDs"] = json!([d.endpoint_id().to_ascii_lowercase()]);
    alert["data"]["essentials"]["firedDateTime"] = json!(DateTime::from_secs(
        SystemTime::now().duration_since(UNIX_EPOCH).map(|t| t.as_secs() as i64).unwrap_or_default()
    )
    .fmt(Format::DateTime)
    .unwrap_or_default());
    let post = reqwest::Client::new()
        .post(format!("{url}{token}"))
        .header("content-type", "application/json")
        .body(alert.to_string())
        .send()
        .await;
    let answered = post.map(|r| r.status().as_u16()).unwrap_or_default();
    say(format!(
        "Azure Monitor alert coalmine-chat-green-5xx fired; the action group posted it to the webhook: HTTP {answered}"
    ));
    let zero = || async { (azure.traffic(&target).0.get("green") == Some(&0.0)).then_some(()) };
    poll(Duration::from_secs(60), zero).await;
    say("endpoint traffic {blue: 100, green: 0}: the rollback function took green's traffic away");
    let told = show_messages(inbox, 1).await;
    shell.until_ended(local, &release).await;
    shell.run(&["status", &release]).await;
    print_message(told.first());
    println!();
}

/// A cohort release climbs 0 (internal users alone) -> 5% -> 25% -> 100% of users, each
/// stage waiting for the operator's approval (the demo's pace, not the emulator's); a front function's router (the Rust
/// library) reads each share from AppConfig, and one user's conversation is shown turn
/// by turn: it stays on the version it got.
async fn cohort_scene(local: &LocalAws, shell: &Shell<'_>, store: &CohortStore, name: &dyn Fn(&str) -> String) {
    let target = local.seed_cohort_model("steady", "steady").await;
    let Target::LambdaCohort(aliases) = &target else { return };
    let traffic = local.pump_healthy_traffic(&target, "2").await;
    let release = name("chat-v2");
    let stages = [0, 5, 25, 100];
    let json = json!({
        "release": release,
        "target": {"lambda_cohort": {"function": aliases.function, "alias": "live", "cohort_alias": "canary"}},
        "canary_version": "2",
        "cohorts": {"unit": "user", "pinned": {"match": {"group": ["internal"]}}},
        "stages": stages.iter().map(|p| json!({"percent": p, "bake_seconds": 2, "approval": true})).collect::<Vec<_>>(),
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05, "min_requests": 50}
    });
    let file = shell.write(&json);
    shell.run(&["validate", &file]).await;
    shell.run(&["start", &file]).await;

    let source = AppConfigSource::new(
        aws_sdk_appconfigdata::Client::new(&local.sdk),
        &store.application,
        &store.environment,
        coalmine_router::profile_name(&aliases.function, &aliases.alias),
    )
    .poll_every(Duration::from_millis(500));
    // Its EMF lines (one per request, the version that served) go to CloudWatch Logs in
    // a function; here they would only crowd the story.
    let router = Router::new(source, "live").emitting_to(|_| {});
    let user = (0..100_000)
        .map(|i| format!("user-{i}"))
        .find(|u| coalmine_router::bucket(&release, u) < coalmine_router::threshold(5.0))
        .unwrap_or_default();
    let mut turn = 0;
    for share in stages {
        let threshold = coalmine_router::threshold(f64::from(share));
        let read = || async {
            let probe = router.route("probe", &[]).await;
            (probe.release.as_deref() == Some(&release) && probe.why.contains(&format!(" {threshold} of ")))
                .then_some(())
        };
        poll(Duration::from_secs(90), read).await;
        say(format!("the router reads {share}% of users from AppConfig"));
        if share == 0 {
            let jane =
                router.invoke(&local.lambda, &aliases.function, "jane", &[("group", "internal")], b"{}".to_vec());
            if let Ok(served) = jane.await {
                say(format!("jane (group=internal): version {} through alias {}", served.version, served.routed.alias));
            }
        }
        // The conversation starts once its user is drawn, at 5%.
        for _ in 0..if share == 0 { 0 } else { 2 } {
            turn += 1;
            let payload = json!({"q": turn}).to_string().into_bytes();
            if let Ok(served) = router.invoke(&local.lambda, &aliases.function, &user, &[], payload).await {
                say(format!(
                    "{user}'s conversation, turn {turn}: version {} through alias {} ({})",
                    served.version, served.routed.alias, served.routed.why
                ));
            }
        }
        if share == 5 {
            shell.run(&["route", &release, "--unit", &user]).await;
        }
        shell.run(&["approve", &release]).await;
    }
    shell.until_ended(local, &release).await;
    say("judged with users as the draw: the routers' metrics in sixteen random groups of users, whose spread weighs each stage's evidence; internal users on absolute limits alone");
    shell.run(&["status", &release]).await;
    drop(traffic);
    println!();
}

/// A quiet service, whose stages would wait hours for a few hundred requests: its
/// release replays 400 requests of the team's golden set (in S3) first, both versions
/// asked each one, and the candidate, which labels half of them differently, is rolled
/// back in seconds without serving a user.
async fn replay_scene(local: &LocalAws, shell: &Shell<'_>, inbox: &Inbox, name: &dyn Fn(&str) -> String) {
    let router = local.seed_model("steady", "flips-odd").await;
    let release = name("ai-router-v2");
    let json = json!({
        "release": release,
        "target": {"lambda": {"function": router, "alias": "live"}},
        "canary_version": "2",
        "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 600}],
        "check_every_seconds": 2,
        "gates": {"max_error_rate": 0.05, "min_requests": 20},
        "replay": {"source": coalmine_tests::shadow::golden_set(local, 400).await, "requests": 400,
                   "rate_per_second": 50, "compare": {"label": {"pointer": "/label"}},
                   "max_disagreement_increase_ratio": 0.5}
    });
    let file = shell.write(&json);
    shell.run(&["validate", &file]).await;
    shell.run(&["start", &file]).await;
    shell.until_ended(local, &release).await;
    shell.run(&["status", &release]).await;
    let (serves, weights, _) = local.alias_state(&Target::lambda(&router, "live")).await;
    say(format!("alias live serves version {serves}, weights {weights:?}: version 2 never left its replay"));
    // The cohort scene's approvals may still be on their way: this release's message is the one shown.
    let mut told = None;
    for _ in 0..10 {
        let messages = show_messages(inbox, 1).await;
        if messages.is_empty() {
            break;
        }
        told = messages.into_iter().find(|m| m.subject.contains(&release));
        if told.is_some() {
            break;
        }
    }
    print_message(told.as_ref());
    println!();
}

/// The team's message, as they read it on SNS.
fn print_message(message: Option<&coalmine_tests::Received>) {
    if let Some(message) = message {
        say("what the team read on SNS:");
        for line in message.message.lines() {
            println!("      {line}");
        }
    }
}

/// Every release of this run, as a page a person opens: in `.demo/reports/` of the
/// clone, which outlives the demo's scratch folder.
async fn reports(shell: &Shell<'_>, run: &str) {
    let folder = coalmine_tests::workspace_root().join(".demo/reports");
    std::fs::create_dir_all(&folder).expect("create .demo/reports");
    let (_, listed) = shell.0.run(&["list", "--recent", "100", "--output", "json"]);
    let runs: Vec<Value> = serde_json::from_str(&listed).unwrap_or_default();
    let mut names: Vec<&str> = runs.iter().filter_map(|r| r["name"].as_str()).filter(|n| n.ends_with(run)).collect();
    names.reverse();
    say(format!("the report of each release, for an incident or a pull request ({} in all):", names.len()));
    for name in names {
        let file = folder.join(format!("{name}.html"));
        let (code, text) = shell.0.run(&["report", name, "-o", &file.display().to_string()]);
        match code {
            0 => println!("  {}", file.strip_prefix(coalmine_tests::workspace_root()).unwrap_or(&file).display()),
            _ => println!("  {name}: the report failed: {}", text.trim()),
        }
    }
}

/// Runs `coalmine` in the release files' folder, as a person would, with the deployed
/// state machine and topic in its environment.
/// The operator's shell: each command printed, then run in the release files' folder
/// with its output on the demo's.
struct Shell<'a>(Operator<'a>);

impl Shell<'_> {
    fn write(&self, release: &Value) -> String {
        let file = format!("{}.json", release["release"].as_str().unwrap_or("release"));
        std::fs::write(self.0.dir.path().join(&file), serde_json::to_vec_pretty(release).unwrap_or_default())
            .expect("write the release file");
        file
    }

    async fn run(&self, args: &[&str]) -> i32 {
        println!("$ coalmine {}", args.join(" "));
        let mut command = self.0.command(args);
        command.current_dir(self.0.dir.path());
        let status = tokio::task::spawn_blocking(move || command.status()).await;
        let code = status.ok().and_then(Result::ok).and_then(|s| s.code()).unwrap_or(-1);
        let meaning = match code {
            0 => return code,
            3 => "rolled back",
            4 => "invalid, nothing moved",
            5 => "failed",
            _ => "error",
        };
        println!("(exit {code}: {meaning})");
        code
    }

    async fn until_ended(&self, local: &LocalAws, release: &str) {
        let arn = self.0.deployed.execution_arn(release);
        local.finished(&arn, Duration::from_secs(90)).await;
    }
}

fn lambda_release(name: &str, function: &str, version: &str, alarm: &str, stages: &[(u32, u64)]) -> Value {
    json!({
        "release": name,
        "target": {"lambda": {"function": function, "alias": "live"}},
        "canary_version": version,
        "stages": stages.iter().map(|(p, bake)| json!({"percent": p, "bake_seconds": bake})).collect::<Vec<_>>(),
        "check_every_seconds": 1,
        "gates": {"alarms": [alarm], "max_error_rate": 0.05, "max_error_rate_ratio": 1.2,
                  "max_p95_latency_ms": 2000, "min_requests": 50}
    })
}

/// The alarm goes to ALARM and, as EventBridge would, its event reaches the rollback function.
async fn fire(local: &LocalAws, deployed: &Deployed, alarm: &str) {
    local.set_alarm(alarm, StateValue::Alarm).await;
    say(format!("alarm {alarm} -> ALARM; EventBridge invokes the rollback function"));
    local.invoke_async(&deployed.rollback_fn, &alarm_event_now(alarm)).await;
}

/// The sample event as EventBridge would deliver it now: the sample's own times are the
/// day it was recorded, and the team's message would say the alarm fired then.
fn alarm_event_now(alarm: &str) -> Value {
    let mut event = sample_event("alarm-lambda-canary.eventbridge.json", alarm, None);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
    let format = |d: DateTime| d.fmt(Format::DateTime).unwrap_or_default();
    event["time"] = json!(format(DateTime::from_secs(millis / 1000)));
    event["detail"]["state"]["timestamp"] = json!(format(DateTime::from_millis(millis)));
    event["detail"]["state"]["reason"] = json!(
        "Threshold Crossed: 1 out of the last 1 datapoints [17.0] was greater than the threshold (5.0) \
         (minimum 1 datapoint for OK -> ALARM transition)."
    );
    event
}

async fn show_messages(inbox: &Inbox, want: usize) -> Vec<coalmine_tests::Received> {
    let messages = inbox.receive(want, Duration::from_secs(30)).await;
    for m in &messages {
        say(format!("SNS [{}] \"{}\"", m.event(), m.subject));
    }
    messages
}

fn say(what: impl AsRef<str>) {
    println!("[demo] {}", what.as_ref());
}

/// Four hex digits so names stay readable and a second run against the same local AWS
/// does not collide with the first.
fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}
