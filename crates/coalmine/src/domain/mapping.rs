//! Alarm names (or prefixes) to the targets they guard: the rollback function's
//! configured mapping, consulted when an alarm carries no `coalmine:target` tag.

use serde_json::Value;

use crate::domain::target::Target;

/// The rollback function's `ROLLBACK_TARGETS`: a JSON object from alarm name (or prefix ending in `*`) to a list
/// of targets, e.g. `{"ai-handler-canary-*": ["lambda:ai-handler:production"]}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetMapping {
    entries: Vec<(String, bool, Vec<Target>)>,
}

impl TargetMapping {
    /// The mapping, or what is wrong with it (the caller names where it came from).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(raw).map_err(|e| format!("is not valid JSON ({e})"))?;
        let Value::Object(object) = value else {
            return Err("is not a JSON object".into());
        };
        let mut entries = Vec::with_capacity(object.len());
        for (key, targets) in object {
            let Value::Array(targets) = targets else {
                return Err(format!("entry {key:?} is not a list of targets"));
            };
            let targets = targets
                .iter()
                .map(|t| match t.as_str() {
                    Some(s) => s.parse::<Target>().map_err(|e| format!("entry {key:?}: {e}")),
                    None => Err(format!("entry {key:?} holds {t}, not a target string")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (name, is_prefix) = match key.strip_suffix('*') {
                Some(prefix) => (prefix.to_owned(), true),
                None => (key, false),
            };
            entries.push((name, is_prefix, targets));
        }
        Ok(TargetMapping { entries })
    }

    /// The targets of an exact match, else of the longest matching prefix.
    pub fn lookup(&self, alarm_name: &str) -> Option<&[Target]> {
        self.entries
            .iter()
            .filter(
                |(name, is_prefix, _)| {
                    if *is_prefix {
                        alarm_name.starts_with(name.as_str())
                    } else {
                        alarm_name == name
                    }
                },
            )
            .max_by_key(|(name, is_prefix, _)| (!is_prefix, name.len()))
            .map(|(_, _, targets)| targets.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_beat_prefixes_and_longer_prefixes_beat_shorter() {
        let mapping = TargetMapping::parse(
            r#"{"ai-*": ["lambda:a:live"], "ai-handler-*": ["lambda:b:live"], "ai-handler-p95": ["lambda:c:live"]}"#,
        )
        .unwrap();
        assert_eq!(mapping.lookup("ai-handler-p95"), Some(&[Target::lambda("c", "live")][..]));
        assert_eq!(mapping.lookup("ai-handler-errors"), Some(&[Target::lambda("b", "live")][..]));
        assert_eq!(mapping.lookup("ai-model"), Some(&[Target::lambda("a", "live")][..]));
        assert_eq!(mapping.lookup("other"), None);
    }
}
