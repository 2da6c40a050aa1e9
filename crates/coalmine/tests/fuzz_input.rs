//! Property tests of everything an outsider controls: alarm payloads and releases.
//! Whatever arrives, decoding returns a value or a clear error; it never panics. The
//! bounded run is in `make test`; `PROPTEST_CASES=100000 cargo test -p coalmine --test
//! fuzz_input --release` is the longer one (see BENCHMARKS.md / README).

use std::path::PathBuf;

use coalmine::release::canary::spec::Release;
use coalmine::{AlarmEvent, Error};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Read at run time (cargo sets it for tests), not baked in: cargo does not rebuild a
/// test when its clone moves, so a target directory shared by two clones would carry
/// the other's path.
fn workspace() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests")).join("../..")
}

fn file(path: &str) -> Value {
    let full = workspace().join(path);
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

fn samples() -> Vec<Value> {
    let dir = workspace().join("events");
    let mut out: Vec<Value> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}

/// Any JSON value, a few levels deep, with the strings alarm payloads use mixed in.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![
            Just("ALARM".to_owned()),
            Just("OK".to_owned()),
            Just("CloudWatch Alarm State Change".to_owned()),
            Just("aws.cloudwatch".to_owned()),
            Just("2026-11-23T17:04:40.989+0000".to_owned()),
            ".*",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("detail-type".to_owned()),
                    Just("source".to_owned()),
                    Just("detail".to_owned()),
                    Just("alarmData".to_owned()),
                    Just("alarmName".to_owned()),
                    Just("state".to_owned()),
                    Just("value".to_owned()),
                    Just("configuration".to_owned()),
                    "[a-zA-Z-]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A sample with one value somewhere replaced, or (without a replacement) one key removed.
fn mutate(mut value: Value, path_seed: Vec<usize>, replacement: Option<Value>) -> Value {
    let mut pointer = Vec::new();
    let mut node = &value;
    for seed in path_seed {
        let (segment, next) = match node {
            Value::Object(m) if !m.is_empty() => {
                let (k, v) = m.iter().nth(seed % m.len()).unwrap();
                (k.replace('~', "~0").replace('/', "~1"), v)
            }
            Value::Array(a) if !a.is_empty() => ((seed % a.len()).to_string(), &a[seed % a.len()]),
            _ => break,
        };
        pointer.push(segment);
        node = next;
    }
    let Some(last) = pointer.pop() else {
        return replacement.unwrap_or(Value::Null);
    };
    let parent_pointer: String = pointer.iter().map(|p| format!("/{p}")).collect();
    let parent = value.pointer_mut(&parent_pointer).unwrap();
    match (parent, replacement) {
        (Value::Object(m), None) => {
            m.remove(&last.replace("~1", "/").replace("~0", "~"));
        }
        (parent, replacement) => {
            let slot = match parent {
                Value::Object(m) => m.get_mut(&last.replace("~1", "/").replace("~0", "~")).unwrap(),
                Value::Array(a) => &mut a[last.parse::<usize>().unwrap()],
                other => other,
            };
            *slot = replacement.unwrap_or(Value::Null);
        }
    }
    value
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics_the_decoder(value in any_json()) {
        if let Err(e) = AlarmEvent::decode(&value) {
            prop_assert!(matches!(e, Error::BadEvent(_)));
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn mutated_samples_decode_or_fail_cleanly(
        which in 0usize..16, path in prop::collection::vec(any::<usize>(), 0..6), replacement in prop::option::of(any_json())
    ) {
        let all = samples();
        let sample = all[which % all.len()].clone();
        let mutated = mutate(sample, path, replacement);
        if let Ok(events) = AlarmEvent::decode(&mutated) {
            prop_assert!(events.iter().all(|event| !event.alarm_name.trim().is_empty()));
        }
    }

    #[test]
    fn arbitrary_bytes_are_rejected_by_json_before_decoding(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // What the runtime hands over is JSON; garbage never reaches the decoder as anything else.
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            let _ = AlarmEvent::decode(&value);
        }
    }

    #[test]
    fn mutated_releases_validate_or_name_the_problem(
        which in 0usize..2, path in prop::collection::vec(any::<usize>(), 0..5), replacement in prop::option::of(any_json())
    ) {
        let sample = [file("events/releases/lambda-ai-handler-42.json"), file("events/releases/sagemaker-ai-model-7.json")][which].clone();
        match Release::parse(&mutate(sample, path, replacement)) {
            Ok(release) => {
                // Whatever passed holds the invariants the stepper relies on.
                prop_assert!(!release.stages.is_empty());
                prop_assert_eq!(release.stages.last().unwrap().percent, 100.0);
                prop_assert!(release.stages.windows(2).all(|w| w[0].percent < w[1].percent));
                prop_assert!(release.stages.iter().all(|s| s.percent > 0.0));
                prop_assert!(release.check_every_seconds > 0);
                prop_assert!(!release.canary_id().is_empty());
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::InvalidRelease(_)));
                prop_assert!(e.to_string().starts_with("invalid release: "));
            }
        }
    }

    #[test]
    fn stage_lists_are_accepted_exactly_when_strictly_increasing_to_100(
        percents in prop::collection::vec(prop_oneof![0.0f64..=120.0, Just(100.0), Just(0.0)], 1..6)
    ) {
        let mut release = file("events/releases/lambda-ai-handler-42.json");
        release["stages"] = json!(percents.iter().map(|p| json!({"percent": p, "bake_seconds": 60})).collect::<Vec<_>>());
        let valid = percents.iter().all(|p| *p > 0.0 && *p <= 100.0)
            && percents.windows(2).all(|w| w[0] < w[1])
            && *percents.last().unwrap() == 100.0;
        prop_assert_eq!(Release::parse(&release).is_ok(), valid, "{:?}", percents);
    }
}

#[test]
fn huge_and_hostile_payloads_fail_cleanly() {
    let mut event = file("events/alarm-lambda-canary.eventbridge.json");
    event["detail"]["alarmName"] = json!("ä".repeat(300_000));
    event["detail"]["state"]["reason"] = json!("x".repeat(1_000_000));
    let decoded = AlarmEvent::decode(&event).unwrap().remove(0);
    assert_eq!(decoded.alarm_name.chars().count(), 300_000, "unicode survives decoding");
    let subject = coalmine::text::subject(&format!("coalmine: alarm {}", decoded.alarm_name));
    assert!(subject.len() <= 100 && subject.is_ascii());

    let mut deep = json!(null);
    for _ in 0..100 {
        deep = json!({"detail": deep});
    }
    assert!(AlarmEvent::decode(&deep).is_err());
    assert!(AlarmEvent::decode(&json!({"detail-type": 7, "source": "aws.cloudwatch"})).is_err());
    let truncated = r#"{"detail-type": "CloudWatch Alarm State Change", "source": "aws.cloud"#;
    assert!(serde_json::from_str::<Value>(truncated).is_err());
}
