//! A handler's AI metrics, published with `coalmine-emf`, judged by the real stepper
//! tick against the local AWS over HTTP.
//!
//! MiniStack keeps log lines but does not turn Embedded Metric Format lines into
//! metrics (CloudWatch Logs does that in AWS), so this test does what CloudWatch would:
//! it reads each EMF line the helper printed and publishes the same datapoints with
//! PutMetricData, under the namespace, dimensions and names the line declares. What
//! only real CloudWatch Logs can show is that it does the same.

use std::time::{SystemTime, UNIX_EPOCH};

use coalmine::ports::{MetricQuery, MetricSource};
use coalmine::release::canary::spec::Release;
use coalmine::release::core::progress::Status;
use coalmine::release::core::Tick;
use coalmine_tests::{answers, unique, workspace_root, Scene};
use serde_json::Value;

#[tokio::test]
async fn doubled_tokens_published_with_the_emf_helper_roll_the_canary_back() {
    let scene = Scene::connect().await;
    let canary = scene.lambda_canary(true).await;
    let namespace = unique("AIService");
    let sample = std::fs::read_to_string(workspace_root().join("events/releases/lambda-ai-quality-43.json")).unwrap();
    let sample = sample
        .replace("\"AIService\"", &format!("{namespace:?}"))
        .replace("\"ai-handler\"", &format!("{:?}", canary.function));
    let mut json: Value = serde_json::from_str(&sample).unwrap();
    json["target"] = serde_json::json!({"lambda": {"function": canary.function, "alias": "live"}});
    json["canary_version"] = "2".into();
    json["gates"]["alarms"] = serde_json::json!([canary.alarm]);
    let release = Release::parse(&json).expect("the sample is a valid release");

    let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 3600;
    let execution = format!("arn:aws:states:us-east-1:000000000000:execution:coalmine-release:{}", unique("run"));
    let deps = scene.step_deps();
    let started = Tick { release: &release, execution: &execution, deps: &deps, now: t0 }.step(None).await.unwrap();
    assert_eq!(started.status, Status::Advanced, "{}", started.reason);

    let at = t0 + 30;
    let (canary_requests, stable_requests) = (300, 2700);
    scene.local.put_side_metrics(&release.target, "2", at, canary_requests as f64, 0.0, &[120.0, 150.0, 300.0]).await;
    scene.local.put_side_metrics(&release.target, "1", at, stable_requests as f64, 0.0, &[120.0, 150.0, 300.0]).await;
    let mut lines = answers(&namespace, &canary.function, "2", canary_requests, 800.0, at * 1000);
    lines.extend(answers(&namespace, &canary.function, "1", stable_requests, 400.0, at * 1000));
    scene.local.publish_emf(&lines).await;

    let query = MetricQuery {
        target: &release.target,
        canary: "2",
        stable: "1",
        start_epoch: t0,
        end_epoch: t0 + 60,
        custom: &release.gates.custom,
        configs: None,
        shadow_of: None,
        pins: false,
    };
    let read = scene.aws.metrics.fetch(&query).await.unwrap();
    let (c, s) = (&read.canary, &read.stable);
    assert_eq!((c.custom_counts[0], s.custom_counts[0]), (Some(300.0), Some(2700.0)), "one token count per answer");
    let median = |side: &coalmine::domain::metrics::SideMetrics| side.custom_percentiles[0][5].expect("a median");
    assert!((median(c) / median(s) - 2.0).abs() < 0.1, "tokens doubled: {} vs {}", median(c), median(s));
    assert_eq!((c.custom[2], s.custom[2]), (Some(6.0), Some(54.0)), "2% of answers failed the schema");
    assert_eq!((c.custom[3], c.custom_counts[3]), (Some(6.0), Some(30.0)), "thumbs-down per feedback");

    let judged =
        Tick { release: &release, execution: &execution, deps: &deps, now: t0 + 60 }.step(Some(started)).await.unwrap();
    assert_eq!(judged.status, Status::RolledBack, "{}", judged.reason);
    assert!(judged.reason.contains("OutputTokens"), "the tokens gate is named: {}", judged.reason);
    let values = judged.reason.split_once(" p50 ").expect("the evidence gives both medians").1;
    let (canary, stable) = values.split_once(" against the stable's ").expect("the stable's median");
    let number = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<f64>().unwrap();
    assert!((700.0..900.0).contains(&number(canary)), "canary median near 800: {values}");
    assert!((350.0..450.0).contains(&number(stable)), "stable median near 400: {values}");
    for healthy in ["ResponseLength", "SchemaFailures"] {
        assert!(!judged.reason.contains(&format!("canary {namespace}/{healthy}")), "{healthy} held: {}", judged.reason);
    }
    let (_, weights, _) = scene.local.alias_state(&release.target).await;
    assert!(weights.values().all(|w| *w == 0.0), "the canary's traffic is gone: {weights:?}");
}
