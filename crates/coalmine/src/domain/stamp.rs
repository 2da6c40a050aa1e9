//! The release stamp: what a target records about the release that last moved its
//! traffic, so that everyone who reads the target knows without any state of its own
//! which execution owns the canary, which stable to put back, and how it ended.
//!
//! Lambda keeps it in the alias's `Description`, written by the same conditional
//! `UpdateAlias` that moves the traffic; SageMaker in an endpoint tag written just before
//! the traffic is raised (it has no conditional write). It is one line of text a person
//! can read in the console:
//!
//! `coalmine/1 phase=live execution=MACHINE:NAME stable=41 stage=2/4 release=ai-handler-42`

use std::fmt;

/// The format's marker; a description or tag without it is someone else's text.
const MARKER: &str = "coalmine/1";
/// Lambda alias descriptions and SageMaker tag values hold at most 256 characters.
pub const STAMP_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The Step Functions execution that moved the traffic: `STATE_MACHINE:EXECUTION`,
    /// the resource part of its ARN.
    pub execution: String,
    /// The version (Lambda) or variant (SageMaker) that was stable when the release
    /// started: what a rollback restores, even after the canary was promoted.
    pub stable: String,
    pub phase: Phase,
    /// 1-based stage and the number of stages, when the release is at one.
    pub stage: Option<(usize, usize)>,
    /// The release's name; dropped first when the stamp would not fit.
    pub release: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The release is in flight: its canary has traffic, or has been promoted and is
    /// still baking. An alarm restores `stable`.
    Live,
    /// The release ended promoted: an alarm no longer reverts it.
    Promoted,
    /// The release ended rolled back, and by what.
    RolledBack(RolledBackBy),
}

/// Who took the canary's traffic away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolledBackBy {
    /// The rollback function, on this alarm.
    Alarm(String),
    /// The stepper's health judge (gate alarms included).
    Health,
    /// The state machine's safety rollback after a tick kept failing.
    Safety,
    /// A person, through `coalmine abort` or `coalmine rollback`.
    Operator(String),
}

impl Stamp {
    pub fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }

    /// Whether this execution (`STATE_MACHINE:EXECUTION` or an execution ARN) wrote it.
    pub fn is_by(&self, execution: &str) -> bool {
        let id = execution_id(execution);
        self.execution == id || self.execution == hashed(id)
    }

    pub fn rolled_back(&self, by: RolledBackBy) -> Stamp {
        Stamp { phase: Phase::RolledBack(by), ..self.clone() }
    }

    pub fn promoted(&self) -> Stamp {
        Stamp { phase: Phase::Promoted, ..self.clone() }
    }

    /// `None` for text that is not a stamp (an alias description someone else wrote).
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut words = text.split_whitespace();
        if words.next() != Some(MARKER) {
            return None;
        }
        let (mut execution, mut stable, mut phase, mut by, mut stage, mut release) =
            (None, None, None, None, None, None);
        for word in words {
            let (key, value) = word.split_once('=')?;
            match key {
                "execution" => execution = Some(value.to_owned()),
                "stable" => stable = Some(value.to_owned()),
                "phase" => phase = Some(value),
                "by" => by = Some(value),
                "stage" => {
                    let (at, of) = value.split_once('/')?;
                    stage = Some((at.parse().ok()?, of.parse().ok()?));
                }
                "release" => release = Some(value.to_owned()),
                // A later version's field: ignored, so old functions read new stamps.
                _ => {}
            }
        }
        let phase = match (phase?, by) {
            ("live", _) => Phase::Live,
            ("promoted", _) => Phase::Promoted,
            ("rolled_back", Some(by)) => Phase::RolledBack(RolledBackBy::parse(by)?),
            _ => return None,
        };
        Some(Stamp { execution: execution?, stable: stable?, phase, stage, release })
    }

    /// The stamp as written: at most [`STAMP_MAX`] characters, dropping the release's
    /// name and then the stage when the names are long.
    pub fn render(&self) -> String {
        let full = self.to_string();
        if full.len() <= STAMP_MAX {
            return full;
        }
        let without_release = Stamp { release: None, ..self.clone() }.to_string();
        if without_release.len() <= STAMP_MAX {
            return without_release;
        }
        let mut bare = Stamp { release: None, stage: None, ..self.clone() };
        // Names near their limits (80 characters each) could still overflow: the
        // execution is then known by a hash of its id, which `is_by` also accepts.
        if bare.to_string().len() > STAMP_MAX && !bare.execution.starts_with('@') {
            bare.execution = hashed(&bare.execution);
        }
        let text = bare.to_string();
        match (&bare.phase, text.len().checked_sub(STAMP_MAX)) {
            // Only a long alarm or operator name can still overflow: it is shortened.
            (Phase::RolledBack(by), Some(excess)) if excess > 0 => {
                let shortened = match by {
                    RolledBackBy::Alarm(name) => RolledBackBy::Alarm(truncated(name, excess)),
                    RolledBackBy::Operator(who) => RolledBackBy::Operator(truncated(who, excess)),
                    other => other.clone(),
                };
                Stamp { phase: Phase::RolledBack(shortened), ..bare }.to_string()
            }
            _ => text,
        }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MARKER} phase=")?;
        match &self.phase {
            Phase::Live => write!(f, "live")?,
            Phase::Promoted => write!(f, "promoted")?,
            Phase::RolledBack(by) => write!(f, "rolled_back by={by}")?,
        }
        write!(f, " execution={} stable={}", word(&self.execution), word(&self.stable))?;
        if let Some((at, of)) = self.stage {
            write!(f, " stage={at}/{of}")?;
        }
        if let Some(release) = &self.release {
            write!(f, " release={}", word(release))?;
        }
        Ok(())
    }
}

impl RolledBackBy {
    fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("alarm", name)) => Some(RolledBackBy::Alarm(name.to_owned())),
            Some(("operator", who)) => Some(RolledBackBy::Operator(who.to_owned())),
            None if text == "health" => Some(RolledBackBy::Health),
            None if text == "safety" => Some(RolledBackBy::Safety),
            _ => None,
        }
    }

    /// In a sentence: "alarm X", "the health check", ...
    pub fn describe(&self) -> String {
        match self {
            RolledBackBy::Alarm(name) => format!("the rollback function, on alarm {name}"),
            RolledBackBy::Health => "the release's own health check".to_owned(),
            RolledBackBy::Safety => "the safety rollback, after the release's tick kept failing".to_owned(),
            RolledBackBy::Operator(who) => format!("{who}, by hand"),
        }
    }
}

impl fmt::Display for RolledBackBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolledBackBy::Alarm(name) => write!(f, "alarm:{}", word(name)),
            RolledBackBy::Health => write!(f, "health"),
            RolledBackBy::Safety => write!(f, "safety"),
            RolledBackBy::Operator(who) => write!(f, "operator:{}", word(who)),
        }
    }
}

/// `@` and the 64-bit FNV-1a hash of an execution id, in hex: short, and the same in
/// every version of every function that reads it.
fn hashed(id: &str) -> String {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("@{hash:016x}")
}

/// `text` without its last `excess` bytes, cut at a character boundary.
fn truncated(text: &str, excess: usize) -> String {
    let mut end = text.len().saturating_sub(excess);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `STATE_MACHINE:EXECUTION` from an execution's ARN
/// (`arn:aws:states:REGION:ACCOUNT:execution:STATE_MACHINE:EXECUTION`), or the input
/// itself when it is already that.
pub fn execution_id(execution: &str) -> &str {
    match execution.split_once(":execution:") {
        Some((_, id)) => id,
        None => execution,
    }
}

/// One word of the stamp: SageMaker tag values allow letters, digits, spaces and
/// `_ . : / = + - @`; spaces and `=` separate the stamp's fields, so anything else
/// becomes `_`. Alarm and operator names are the only free text that gets here.
fn word(text: &str) -> String {
    let cleaned: String =
        text.chars().map(|c| if c.is_alphanumeric() || "_.:/+-@".contains(c) { c } else { '_' }).collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Stamp {
        Stamp {
            execution: "Release-AbC:ai-handler-42".into(),
            stable: "41".into(),
            phase: Phase::Live,
            stage: Some((2, 4)),
            release: Some("ai-handler-42".into()),
        }
    }

    #[test]
    fn a_stamp_reads_as_a_line_and_round_trips() {
        let text = live().render();
        assert_eq!(
            text,
            "coalmine/1 phase=live execution=Release-AbC:ai-handler-42 stable=41 stage=2/4 release=ai-handler-42"
        );
        assert_eq!(Stamp::parse(&text), Some(live()));
        for by in [
            RolledBackBy::Alarm("ai-handler-errors".into()),
            RolledBackBy::Health,
            RolledBackBy::Safety,
            RolledBackBy::Operator("jane".into()),
        ] {
            let stamp = live().rolled_back(by);
            assert_eq!(Stamp::parse(&stamp.render()), Some(stamp));
        }
        assert_eq!(Stamp::parse(&live().promoted().render()).map(|s| s.phase), Some(Phase::Promoted));
    }

    #[test]
    fn free_text_in_names_cannot_break_the_fields() {
        let stamp = live().rolled_back(RolledBackBy::Alarm("p95 > 2s=bad ünï".into()));
        let text = stamp.render();
        assert!(text.contains("by=alarm:p95___2s_bad_ünï"), "{text}");
        let parsed = Stamp::parse(&text).unwrap();
        assert_eq!(parsed.phase, Phase::RolledBack(RolledBackBy::Alarm("p95___2s_bad_ünï".into())));
        assert_eq!(parsed.execution, live().execution);
    }

    #[test]
    fn long_names_drop_the_release_then_the_stage_and_never_exceed_256() {
        let long = Stamp {
            execution: format!("{}:{}", "M".repeat(80), "e".repeat(80)),
            release: Some("r".repeat(80)),
            ..live()
        };
        let text = long.render();
        assert!(text.len() <= STAMP_MAX && !text.contains("release="), "{text}");
        assert_eq!(Stamp::parse(&text).unwrap().stage, Some((2, 4)));
        let longest = Stamp { stable: "s".repeat(63), ..long.rolled_back(RolledBackBy::Alarm("a".repeat(255))) };
        let text = longest.render();
        assert!(text.len() <= STAMP_MAX, "{} chars: {text}", text.len());
        let parsed = Stamp::parse(&text).unwrap();
        assert!(matches!(parsed.phase, Phase::RolledBack(RolledBackBy::Alarm(_))));
        assert!(parsed.is_by(&longest.execution), "the hashed execution is still known as itself: {text}");
        assert!(!parsed.is_by("M:e"));
    }

    #[test]
    fn other_text_is_no_stamp() {
        for text in [
            "",
            "production alias",
            "coalmine/2 phase=live",
            "coalmine/1 phase=live stable=41",
            "coalmine/1 phase=sideways execution=a stable=1",
            "coalmine/1 phase=rolled_back execution=a stable=1",
        ] {
            assert_eq!(Stamp::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn an_execution_is_known_by_its_arn_or_its_id() {
        let stamp = live();
        assert!(stamp.is_by("arn:aws:states:us-east-1:123456789012:execution:Release-AbC:ai-handler-42"));
        assert!(stamp.is_by("Release-AbC:ai-handler-42"));
        assert!(!stamp.is_by("arn:aws:states:us-east-1:123456789012:execution:Release-AbC:ai-handler-42-retry"));
    }
}
