//! What every release document shares: strict parsing with a hint for common slips,
//! and the release's name.

use serde_json::Value;

use crate::domain::error::Error;

/// A release document, strictly: unknown fields and bad values are errors naming the
/// field, with a hint where a common slip is likely.
pub fn deserialize<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let hint = hint(value, &path).map(|h| format!("; {h}")).unwrap_or_default();
        if path == "." {
            Error::InvalidRelease(format!("{inner}{hint}"))
        } else {
            Error::InvalidRelease(format!("{path}: {inner}{hint}"))
        }
    })
}

/// A release's name: it names the execution, and is recorded on the target.
pub fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 80 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(Error::InvalidRelease(format!(
            "release: {name:?}: a name of 1 to 80 letters, digits, '-', '_' or '.' is required (it names the \
             execution, and is recorded on the target)"
        )));
    }
    Ok(())
}

/// What a person most likely meant when a release does not parse at `path`.
fn hint(value: &Value, path: &str) -> Option<String> {
    let target = value.get("target")?;
    if path.starts_with("target") && target.get("lambda").is_none() && target.get("sagemaker").is_none() {
        if target.get("function").is_some() || target.get("alias").is_some() {
            return Some(
                "a Lambda target names its kind: {\"lambda\": {\"function\": ..., \"alias\": ...}}".to_owned(),
            );
        }
        if target.get("endpoint").is_some() {
            return Some(
                "a SageMaker target names its kind: {\"sagemaker\": {\"endpoint\": ..., \"stable_variant\": ..., \
                 \"canary_variant\": ...}}"
                    .to_owned(),
            );
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use serde_json::Value;

    /// A sample release from `events/releases/`, as JSON.
    pub(crate) fn sample_json(file: &str) -> Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/releases").join(file);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}
