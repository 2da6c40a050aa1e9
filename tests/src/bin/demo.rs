//! `make demo`: the rollback story against the local AWS, as a short timeline.
//!
//! The real rollback bootstrap runs as a function in MiniStack. A Lambda canary and a
//! SageMaker canary each take 5% of traffic; their alarm fires; the function, invoked
//! asynchronously as EventBridge would, zeroes the canary and tells the team on SNS.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::StateValue;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use coalmine::Target;
use coalmine_tests::{bootstrap_path, poll, sample_event, Inbox, LocalAws};

struct Timeline(Instant);

impl Timeline {
    fn say(&self, what: impl AsRef<str>) {
        println!("  [{:>5.1}s] {}", self.0.elapsed().as_secs_f64(), what.as_ref());
    }
}

#[tokio::main]
async fn main() {
    let local = LocalAws::connect().await;
    println!("coalmine demo: rollback on alarm, against the local AWS (MiniStack + moto)\n");

    let run = run_id();
    let name = |base: &str| format!("{base}-{run}");
    let inbox = local.topic_with_queue(&name("coalmine-alerts")).await;
    let rollback_fn = name("coalmine-rollback");
    let setup = Instant::now();
    local.create_function_from(&rollback_fn, &bootstrap_path("rollback"), &[("SNS_TOPIC_ARN", &inbox.topic_arn)]).await;
    let t = Timeline(Instant::now());
    t.say(format!(
        "deployed the real rollback bootstrap as {rollback_fn} ({:.1}s), and the team's SNS topic",
        setup.elapsed().as_secs_f64()
    ));

    println!("\n  Lambda: a new model version behind a weighted alias");
    let function = name("ai-handler");
    let target = local.seed_lambda_canary(&function, 0.05).await;
    let (stable, weights, _) = local.alias_state(&target).await;
    t.say(format!("{target}: version {stable} serves {}, canary {}", share(1.0 - total(&weights)), describe(&weights)));
    let alarm = name("ai-handler-canary-errors");
    fire(&local, &t, &rollback_fn, &alarm, &target, "alarm-lambda-canary.eventbridge.json").await;
    let zeroed =
        poll(Duration::from_secs(30), || async { local.alias_state(&target).await.1.is_empty().then_some(()) }).await;
    let (stable, _, _) = local.alias_state(&target).await;
    t.say(match zeroed {
        Some(()) => format!("{target}: canary weight 5% -> 0%, version {stable} serves 100%"),
        None => {
            format!("{target}: canary still has traffic after 30 s (see .local-aws/ministack.log)")
        }
    });
    show_message(&inbox, &t).await;

    println!("\n  SageMaker: a canary production variant on an endpoint");
    let endpoint = name("ai-model-endpoint");
    let target = local.seed_sagemaker_canary(&endpoint, 0.05).await;
    let w = local.variant_weights(&endpoint).await;
    t.say(format!("{target}: variant stable weight {:.2}, canary {:.2}", w["stable"], w["canary"]));
    let alarm = name("ai-model-canary-5xx");
    let event = fire(&local, &t, &rollback_fn, &alarm, &target, "alarm-sagemaker-canary.eventbridge.json").await;
    let zeroed = poll(Duration::from_secs(30), || async {
        (local.variant_weights(&endpoint).await["canary"] == 0.0).then_some(())
    })
    .await;
    let w = local.variant_weights(&endpoint).await;
    t.say(match zeroed {
        Some(()) => format!("{target}: variant stable weight {:.2}, canary {:.2}", w["stable"], w["canary"]),
        None => format!("{target}: canary still has traffic after 30 s"),
    });
    show_message(&inbox, &t).await;

    println!("\n  The same alarm delivered again (EventBridge is at-least-once)");
    invoke_async(&local, &rollback_fn, event).await;
    t.say("EventBridge delivers the same event a second time");
    show_message(&inbox, &t).await;
    println!("\ndone: both canaries at zero, the team told once per rollback, repeats harmless.");
}

/// Sends the alarm to ALARM and delivers its state-change event; returns the event.
async fn fire(
    local: &LocalAws,
    t: &Timeline,
    rollback_fn: &str,
    alarm: &str,
    target: &Target,
    sample: &str,
) -> serde_json::Value {
    const REASON: &str =
        "Threshold Crossed: 1 out of the last 1 datapoints [17.0] was greater than the threshold (5.0)";
    local.put_alarm(alarm, Some(&target.to_string())).await;
    local
        .cloudwatch
        .set_alarm_state()
        .alarm_name(alarm)
        .state_value(StateValue::Alarm)
        .state_reason(REASON)
        .send()
        .await
        .expect("set alarm state");
    t.say(format!("alarm {alarm} (tagged coalmine:target={target}) -> ALARM"));
    let mut event = sample_event(sample, alarm, None);
    event["detail"]["state"]["reason"] = REASON.into();
    invoke_async(local, rollback_fn, event.clone()).await;
    t.say("EventBridge delivers the state change to the rollback function (async invoke)");
    event
}

async fn invoke_async(local: &LocalAws, function: &str, event: serde_json::Value) {
    local
        .lambda
        .invoke()
        .function_name(function)
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(serde_json::to_vec(&event).expect("JSON")))
        .send()
        .await
        .expect("async invoke");
}

async fn show_message(inbox: &Inbox, t: &Timeline) {
    match inbox.receive(1, Duration::from_secs(30)).await.first() {
        Some(m) => {
            t.say(format!("SNS: \"{}\"  [event={}]", m.subject, m.event()));
            for line in m.message.lines().filter(|l| l.starts_with("Weight") || l.starts_with("Reason")) {
                println!("           {line}");
            }
        }
        None => t.say("SNS: no message within 30 s"),
    }
}

fn total(weights: &std::collections::HashMap<String, f64>) -> f64 {
    weights.values().sum()
}

fn share(weight: f64) -> String {
    coalmine::notify::percent(weight)
}

fn describe(weights: &std::collections::HashMap<String, f64>) -> String {
    weights.iter().map(|(v, w)| format!("version {v} {}", share(*w))).collect::<Vec<_>>().join(", ")
}

/// Four hex digits so names stay readable and a second run against the same local AWS
/// does not collide with the first.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}
