//! What every release document shares: strict parsing that reports every problem at
//! once, each naming its field with a hint where a common slip is likely, and the
//! release's name.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::domain::error::Error;

pub use crate::domain::problems::Problems;

/// A document of a kind with rules beyond its shape.
pub trait Rules {
    fn check(&self, problems: &mut Problems);
}

/// Strictly parsed and validated: every problem at once, as the error's message.
pub fn parse<T: DeserializeOwned + Rules>(value: &Value) -> Result<T, Error> {
    let (parsed, problems) = read::<T>(value);
    match parsed {
        Some(document) if problems.is_empty() => Ok(document),
        _ => Err(Error::InvalidRelease(problems.join("; "))),
    }
}

/// Every problem a document has: each unknown field (with the name it most likely
/// meant), then the first value of the wrong shape (nothing past it can be read), then
/// every rule its values break.
pub fn problems<T: DeserializeOwned + Rules>(value: &Value) -> Vec<String> {
    read::<T>(value).1
}

fn read<T: DeserializeOwned + Rules>(value: &Value) -> (Option<T>, Vec<String>) {
    let mut value = value.clone();
    let mut found = Vec::new();
    // Each round drops one unknown field; a document has far fewer than this.
    for _ in 0..100 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(document) => {
                let mut problems = Problems::from(found);
                document.check(&mut problems);
                return (Some(document), problems.into_vec());
            }
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                let at = |text: String| if path == "." { text } else { format!("{path}: {text}") };
                match unknown_field(&inner) {
                    Some((field, expected)) if remove(&mut value, &path, &field) => {
                        let meant =
                            nearest(&field, &expected).map(|m| format!("; did you mean `{m}`?")).unwrap_or_default();
                        found.push(at(format!("{inner}{meant}")));
                    }
                    _ => {
                        let hint = hint(&value, &path).map(|h| format!("; {h}")).unwrap_or_default();
                        found.push(at(format!("{inner}{hint}")));
                        return (None, found);
                    }
                }
            }
        }
    }
    (None, found)
}

/// serde's "unknown field `x`, expected one of `a`, `b`": the field and the names allowed.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    Some((field.to_owned(), expected))
}

/// The allowed name a slip of the keyboard most likely meant: the closest by edit
/// distance, among the names that are close or share most of its beginning.
fn nearest(field: &str, expected: &[String]) -> Option<String> {
    let field = field.to_ascii_lowercase();
    let shared = |name: &str| field.chars().zip(name.chars()).take_while(|(a, b)| a == b).count();
    expected
        .iter()
        .map(|name| (edit_distance(&field, name), name))
        .filter(|(d, name)| *d <= 2.max(field.len() / 3) || shared(name) * 5 >= field.len() * 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Drops `field` from the object at `path` (or at its parent, when the path ends in the
/// field): the next round reads past it. False when there was nothing to drop.
fn remove(value: &mut Value, path: &str, field: &str) -> bool {
    let mut segments: Vec<&str> = if path == "." { Vec::new() } else { path.split('.').collect() };
    if segments.last() == Some(&field) {
        segments.pop();
    }
    let mut at = value;
    for segment in segments {
        let (key, indexes) = segment.split_once('[').map_or((segment, ""), |(k, i)| (k, i));
        if !key.is_empty() {
            let Some(next) = at.get_mut(key) else { return false };
            at = next;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let Some(next) = index.trim_end_matches(']').parse::<usize>().ok().and_then(|i| at.get_mut(i)) else {
                return false;
            };
            at = next;
        }
    }
    at.as_object_mut().and_then(|o| o.remove(field)).is_some()
}

/// A release's name: it names the execution, and is recorded on the target.
pub fn check_name(name: &str, problems: &mut Problems) {
    if name.is_empty() || name.len() > 80 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        problems.add(
            "release",
            format!(
                "{name:?}: a name of 1 to 80 letters, digits, '-', '_' or '.' is required (it names the execution, \
                 and is recorded on the target)"
            ),
        );
    }
}

/// What a person most likely meant when a release does not parse at `path`.
fn hint(value: &Value, path: &str) -> Option<String> {
    let target = value.get("target")?;
    if !path.starts_with("target") {
        return None;
    }
    let kinds: Vec<&str> = ["lambda", "sagemaker"].into_iter().filter(|k| target.get(k).is_some()).collect();
    if kinds.len() > 1 {
        return Some(format!(
            "a release has one target, and this one names {}: keep the one this release moves",
            target.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>().join(" and ")).unwrap_or_default()
        ));
    }
    if !kinds.is_empty() {
        return None;
    }
    if target.get("function").is_some() || target.get("alias").is_some() {
        return Some("a Lambda target names its kind: {\"lambda\": {\"function\": ..., \"alias\": ...}}".to_owned());
    }
    if target.get("endpoint").is_some() {
        return Some(
            "a SageMaker target names its kind: {\"sagemaker\": {\"endpoint\": ..., \"stable_variant\": ..., \
             \"canary_variant\": ...}}"
                .to_owned(),
        );
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::Value;

    use super::*;

    /// A sample release from `events/releases/`, as JSON.
    pub(crate) fn sample_json(file: &str) -> Value {
        let path = crate::workspace_file("events/releases").join(file);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn slips_of_the_keyboard_get_the_name_they_meant() {
        let allowed = ["max_error_rate", "max_p95_latency_ms", "min_requests"].map(String::from);
        assert_eq!(nearest("max_errors", &allowed).as_deref(), Some("max_error_rate"));
        assert_eq!(nearest("min_request", &allowed).as_deref(), Some("min_requests"));
        assert_eq!(nearest("colour", &allowed), None, "nothing close: no guess");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn an_unknown_field_deep_in_a_document_is_dropped_to_read_on() {
        let mut value = serde_json::json!({"gates": {"custom": [{"metric": "m", "colour": 1}]}});
        assert!(remove(&mut value, "gates.custom[0].colour", "colour"));
        assert_eq!(value, serde_json::json!({"gates": {"custom": [{"metric": "m"}]}}));
        assert!(remove(&mut serde_json::json!({"speed": 1}), ".", "speed"));
        assert!(!remove(&mut serde_json::json!({"a": 1}), "b", "c"));
    }
}
