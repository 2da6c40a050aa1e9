//! `make demo`: the whole story against the local AWS, as a timeline a person reads in
//! twenty seconds. Everything runs as deployed: the real stepper and rollback bootstraps
//! as functions, the real state machine, one execution per release. Bakes are seconds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::StateValue;
use coalmine::Target;
use coalmine_tests::{poll, sample_event, Deployed, Inbox, LocalAws, Received};
use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    let local = LocalAws::connect().await;
    let run = run_id();
    let name = |base: &str| format!("{base}-{run}");
    println!("coalmine demo: canary releases against the local AWS (MiniStack + moto)\n");

    let setup = Instant::now();
    let inbox = local.topic_with_queue(&name("coalmine-alerts")).await;
    let deployed = local.deploy(&inbox.topic_arn).await;
    println!(
        "deployed in {:.1}s: stepper + rollback functions (real bootstraps), release state machine, SNS topic\n",
        setup.elapsed().as_secs_f64()
    );

    // 1. A healthy release of a Lambda model handler climbs 5 -> 25 -> 50 -> 100.
    let function = name("ai-handler");
    let target = local.seed_lambda_canary(&function, 0.0).await;
    let alarm = name("coalmine-ai-handler-canary-errors");
    local.put_alarm(&alarm, Some(&target.to_string())).await;
    local.set_alarm(&alarm, StateValue::Ok).await;
    let release = lambda_release("ai-handler-v2", &function, "2", &alarm, &[5, 25, 50, 100], 2);
    let traffic = local.pump_healthy_traffic(&target, "2", "1");
    run_release(&local, &deployed, &release, &target).await;
    drop(traffic);

    // 2. The next release: its alarm fires mid-bake; the rollback function zeroes it.
    let version = local.publish_next_version(&function).await;
    let release = lambda_release("ai-handler-v3", &function, &version, &alarm, &[5, 25, 50, 100], 600);
    let started = Instant::now();
    let execution = local.start_release(&deployed, &release).await;
    header(&release, &target);
    let reached =
        poll(Duration::from_secs(60), || async { local.alias_state(&target).await.1.get(&version).copied() }).await;
    say(started, format!("stage 1/4 at {} (version {version}), baking", pct(reached.unwrap_or_default())));
    tokio::time::sleep(Duration::from_secs(2)).await;
    fire(&local, &deployed, &alarm, started).await;
    let zeroed =
        poll(Duration::from_secs(30), || async { local.alias_state(&target).await.1.is_empty().then_some(()) }).await;
    if zeroed.is_some() {
        say(started, "rollback function: canary weight 5% -> 0%");
    }
    let told = show_messages(&inbox, started, 1).await;
    let (status, error, cause, _) = local.finished(&execution, Duration::from_secs(60)).await;
    say(started, format!("execution {status} {error}: {cause}"));
    let (stable, weights, _) = local.alias_state(&target).await;
    println!("  => {target}: version {stable} serves 100%, canary weights {weights:?}");
    if let Some(message) = told.first() {
        println!("  what the team read on SNS:\n");
        for line in message.message.lines() {
            println!("      {line}");
        }
    }
    println!();

    // 3. Promoted but still baking at 100%: an alarm puts the previous version back at once.
    local.set_alarm(&alarm, StateValue::Ok).await;
    let version = local.publish_next_version(&function).await;
    let mut release = lambda_release("ai-handler-v4", &function, &version, &alarm, &[5, 100], 1);
    release["stages"][1]["bake_seconds"] = json!(600);
    release["check_every_seconds"] = json!(5);
    let traffic = local.pump_healthy_traffic(&target, &version, "2");
    let started = Instant::now();
    let execution = local.start_release(&deployed, &release).await;
    header(&release, &target);
    let promoted =
        poll(Duration::from_secs(60), || async { (local.alias_state(&target).await.0 == version).then_some(()) }).await;
    if promoted.is_some() {
        say(
            started,
            format!("stage 2/2: version {version} promoted, serving 100%, baking for 10 minutes, checked every 5 s"),
        );
    }
    fire(&local, &deployed, &alarm, started).await;
    let restored =
        poll(Duration::from_secs(30), || async { (local.alias_state(&target).await.0 == "2").then_some(()) }).await;
    if restored.is_some() {
        say(
            started,
            format!("rollback function: version {version} -> version 2, named by the release's stamp on the alias"),
        );
    }
    show_messages(&inbox, started, 1).await;
    let (status, error, cause, _) = local.finished(&execution, Duration::from_secs(60)).await;
    say(started, format!("execution {status} {error}: {cause}"));
    drop(traffic);
    println!();

    // 4. A healthy release of a SageMaker model: a canary variant climbs to 100%.
    let endpoint = name("ai-model-endpoint");
    let target = local.seed_sagemaker_canary(&endpoint, 0.0).await;
    let release = json!({
        "release": "ai-model-v7",
        "target": {"sagemaker": {"endpoint": endpoint, "stable_variant": "stable", "canary_variant": "canary"}},
        "stages": [{"percent": 10, "bake_seconds": 2}, {"percent": 50, "bake_seconds": 2}, {"percent": 100, "bake_seconds": 2}],
        "check_every_seconds": 1,
        "gates": {"max_error_rate": 0.05, "max_p95_latency_ms": 2000, "min_requests": 50}
    });
    let traffic = local.pump_healthy_traffic(&target, "canary", "stable");
    run_release(&local, &deployed, &release, &target).await;
    drop(traffic);
    println!("done in {:.0}s.", setup.elapsed().as_secs_f64());
}

fn lambda_release(name: &str, function: &str, version: &str, alarm: &str, stages: &[u32], bake: u64) -> Value {
    json!({
        "release": name,
        "target": {"lambda": {"function": function, "alias": "live"}},
        "canary_version": version,
        "stages": stages.iter().map(|p| json!({"percent": p, "bake_seconds": bake})).collect::<Vec<_>>(),
        "check_every_seconds": 1,
        "gates": {"alarms": [alarm], "max_error_rate": 0.05, "max_error_rate_increase": 0.01,
                  "max_p95_latency_ms": 2000, "min_requests": 50}
    })
}

/// Runs a release to its end and prints its decisions from the execution's history.
async fn run_release(local: &LocalAws, deployed: &Deployed, release: &Value, target: &Target) {
    header(release, target);
    let started = Instant::now();
    let execution = local.start_release(deployed, release).await;
    let (status, error, cause, output) = local.finished(&execution, Duration::from_secs(120)).await;
    let progress = &output["progress"];
    let t0 = progress["started_at"].as_u64().unwrap_or_default();
    let stages = release["stages"].as_array().map(Vec::len).unwrap_or_default();
    let mut last_line = String::new();
    for decision in progress["history"].as_array().into_iter().flatten() {
        let line = format!(
            "stage {}/{stages} {:>4}  {:<8} {}",
            decision["stage"].as_u64().unwrap_or_default() + 1,
            pct(decision["weight"].as_f64().unwrap_or_default()),
            decision["status"].as_str().unwrap_or_default(),
            decision["reason"].as_str().unwrap_or_default()
        );
        // Consecutive identical bake checks say nothing new.
        if line != last_line {
            println!("  [t+{:>2}s] {line}", decision["at"].as_u64().unwrap_or_default().saturating_sub(t0));
        }
        last_line = line;
    }
    let outcome = if status == "SUCCEEDED" { "promoted".to_owned() } else { format!("{error}: {cause}") };
    println!("  => execution {status} after {:.1}s: {outcome}\n", started.elapsed().as_secs_f64());
}

fn header(release: &Value, target: &Target) {
    let canary =
        release["canary_version"].as_str().map(|v| format!("version {v}")).unwrap_or_else(|| "variant canary".into());
    println!("release {} on {target}: {canary}", release["release"].as_str().unwrap_or_default());
}

/// The alarm goes to ALARM and, as EventBridge would, its event reaches the rollback function.
async fn fire(local: &LocalAws, deployed: &Deployed, alarm: &str, started: Instant) {
    local.set_alarm(alarm, StateValue::Alarm).await;
    say(started, format!("alarm {alarm} -> ALARM; EventBridge invokes the rollback function"));
    local.invoke_async(&deployed.rollback_fn, &sample_event("alarm-lambda-canary.eventbridge.json", alarm, None)).await;
}

async fn show_messages(inbox: &Inbox, started: Instant, want: usize) -> Vec<Received> {
    let messages = inbox.receive(want, Duration::from_secs(30)).await;
    for m in &messages {
        say(started, format!("SNS [{}] \"{}\"", m.event(), m.subject));
    }
    messages
}

fn say(started: Instant, what: impl AsRef<str>) {
    println!("  [t+{:>2.0}s] {}", started.elapsed().as_secs_f64(), what.as_ref());
}

fn pct(weight: f64) -> String {
    coalmine::rollback::notify::percent(weight)
}

/// Four hex digits so names stay readable and a second run against the same local AWS
/// does not collide with the first.
fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}
