//! The release stamp: what a target records about the release that last moved its
//! traffic, so that everyone who reads the target knows without any state of its own
//! which execution owns the canary, which stable to put back, how it ended, and what an
//! operator asked of it.
//!
//! Lambda keeps it in the alias's `Description`, written by the same conditional
//! `UpdateAlias` that moves the traffic; SageMaker in an endpoint tag written just before
//! the traffic is raised (it has no conditional write). It is one line of text a person
//! can read in the console:
//!
//! `coalmine/1 phase=live execution=MACHINE:NAME stable=41 canary=42 stage=2/4 release=ai-handler-42`
//!
//! `stable` and `canary` are the release's roles of record: whatever an alarm's tag or
//! dimensions say, a rollback takes traffic only from this `canary` and gives it only to
//! this `stable`.
//!
//! An operator's `coalmine pause` adds `hold=jane`, and `promote` or `approve` a
//! `request=promote:jane` the release acts on at its next check: a stamp-only write,
//! conditional like every other, so commands reach the release through the very record
//! it reads each tick.

use std::fmt;

use crate::domain::cause::RolledBackBy;

/// The SageMaker endpoint tag that holds the stamp (Lambda keeps it in the alias's
/// description).
pub const STAMP_TAG: &str = "coalmine:release";
/// The SageMaker endpoint tag where a rollback records itself too. SageMaker has no
/// conditional tag write, so a stepper's stamp written just before its weights could land
/// after a rollback's record in [`STAMP_TAG`]; a key only rollbacks write keeps the
/// record, and a reader takes it over the stamp of the same execution.
pub const ROLLBACK_TAG: &str = "coalmine:rolled-back";
/// The format's marker; a description or tag without it is someone else's text.
const MARKER: &str = "coalmine/1";
/// Lambda alias descriptions and SageMaker tag values hold at most 256 characters.
pub const STAMP_MAX: usize = 256;
/// An operator's reason, as the stamp keeps it; the team's message has all of it.
const WHY_MAX: usize = 80;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The Step Functions execution that moved the traffic: `STATE_MACHINE:EXECUTION`,
    /// the resource part of its ARN.
    pub execution: String,
    /// The version (Lambda) or variant (SageMaker) that was stable when the release
    /// started: what a rollback restores, even after the canary was promoted.
    pub stable: String,
    /// The candidate the release moves traffic to: a Lambda version, a SageMaker
    /// variant (or, for a guardrail release, the endpoint config it deploys), an Azure
    /// ML deployment. `None` in a stamp written before coalmine recorded it.
    pub canary: Option<String>,
    pub phase: Phase,
    /// 1-based stage and the number of stages, when the release is at one.
    pub stage: Option<(usize, usize)>,
    /// The release's name; dropped first when the stamp would not fit.
    pub release: Option<String>,
    /// Who paused the release: it holds its weight, still judged, until resumed.
    pub hold: Option<String>,
    /// What an operator asked the release to do at its next check.
    pub request: Option<Request>,
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

/// An operator's request, carried out by the release at its next check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// End the current stage's bake now (and approve it); `full`: go straight to 100%
    /// and end promoted.
    Promote { full: bool, by: String },
    /// Let a stage that waits for approval go on.
    Approve { by: String },
}

impl Request {
    pub fn by(&self) -> &str {
        match self {
            Request::Promote { by, .. } | Request::Approve { by } => by,
        }
    }
}

/// A stamp's stage while its release shadows: before the first.
pub const SHADOW_STAGE: usize = 0;

impl Stamp {
    pub fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }

    /// The release owns the target in its shadow: no weight moved yet.
    pub fn in_shadow(&self) -> bool {
        self.stage.is_some_and(|(at, _)| at == SHADOW_STAGE)
    }

    /// Whether this execution (`STATE_MACHINE:EXECUTION` or an execution ARN) wrote it.
    pub fn is_by(&self, execution: &str) -> bool {
        let id = execution_id(execution);
        self.execution == id || self.execution == hashed(id)
    }

    /// Whether it belongs to the release named `name`: by its `release`, or, when that
    /// was dropped for room, by its execution's name (`coalmine start` names the
    /// execution after the release).
    pub fn is_of_release(&self, name: &str) -> bool {
        match &self.release {
            Some(release) => release == name,
            None => self.execution.rsplit_once(':').is_some_and(|(_, execution)| execution == name),
        }
    }

    pub fn rolled_back(&self, by: RolledBackBy) -> Stamp {
        Stamp { phase: Phase::RolledBack(by), request: None, ..self.clone() }
    }

    /// What a reader of a SageMaker endpoint's two tags takes as its stamp: the rollback
    /// recorded for the stamp's own execution, whatever the stamp says (a rollback is
    /// final); the stamp otherwise.
    pub fn with_rollback_record(stamp: Option<Stamp>, record: Option<Stamp>) -> Option<Stamp> {
        match (stamp, record) {
            (Some(stamp), Some(record))
                if record.execution == stamp.execution && matches!(record.phase, Phase::RolledBack(_)) =>
            {
                Some(record)
            }
            (stamp, _) => stamp,
        }
    }

    pub fn promoted(&self) -> Stamp {
        Stamp { phase: Phase::Promoted, request: None, ..self.clone() }
    }

    /// `None` for text that is not a stamp (an alias description someone else wrote).
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut words = text.split_whitespace();
        if words.next() != Some(MARKER) {
            return None;
        }
        let mut fields = std::collections::HashMap::new();
        for word in words {
            let (key, value) = word.split_once('=')?;
            // A later version's fields are kept and ignored, so old functions read new stamps.
            fields.insert(key, value);
        }
        let phase = match (*fields.get("phase")?, fields.get("by")) {
            ("live", _) => Phase::Live,
            ("promoted", _) => Phase::Promoted,
            ("rolled_back", Some(by)) => Phase::RolledBack(parse_by(by, fields.get("why").copied())?),
            _ => return None,
        };
        let stage = match fields.get("stage") {
            Some(value) => {
                let (at, of) = value.split_once('/')?;
                Some((at.parse().ok()?, of.parse().ok()?))
            }
            None => None,
        };
        let request = match fields.get("request") {
            Some(value) => Some(Request::parse(value)?),
            None => None,
        };
        Some(Stamp {
            execution: fields.get("execution")?.to_string(),
            stable: fields.get("stable")?.to_string(),
            canary: fields.get("canary").map(|c| c.to_string()),
            phase,
            stage,
            release: fields.get("release").map(|r| r.to_string()),
            hold: fields.get("hold").map(|h| h.to_string()),
            request,
        })
    }

    /// The stamp as written: at most [`STAMP_MAX`] characters. When names are long, the
    /// release's name goes first, then the stage, then an operator's reason; names near
    /// their limits make the execution known by a hash of its id (which `is_by` accepts)
    /// and shorten an alarm's or operator's name.
    pub fn render(&self) -> String {
        let mut stamp = self.clone();
        let shorter: [fn(&mut Stamp); 3] = [
            |s| s.release = None,
            |s| s.stage = None,
            |s| {
                if let Phase::RolledBack(RolledBackBy::Operator { why, .. }) = &mut s.phase {
                    *why = None;
                }
            },
        ];
        for drop_next in shorter {
            if stamp.to_string().len() <= STAMP_MAX {
                return stamp.to_string();
            }
            drop_next(&mut stamp);
        }
        if stamp.to_string().len() > STAMP_MAX && !stamp.execution.starts_with('@') {
            stamp.execution = hashed(&stamp.execution);
        }
        let text = stamp.to_string();
        let Some(excess) = text.len().checked_sub(STAMP_MAX).filter(|e| *e > 0) else { return text };
        // Only a long alarm or operator name can still overflow: it is shortened.
        if let Phase::RolledBack(by) = &mut stamp.phase {
            match by {
                RolledBackBy::Alarm(name) => *name = truncated(name, excess),
                RolledBackBy::Operator { who, .. } => *who = truncated(who, excess),
                _ => {}
            }
        }
        stamp.to_string()
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MARKER} phase=")?;
        match &self.phase {
            Phase::Live => write!(f, "live")?,
            Phase::Promoted => write!(f, "promoted")?,
            Phase::RolledBack(by) => {
                write!(f, "rolled_back by={}", By(by))?;
                if let RolledBackBy::Operator { why: Some(why), .. } = by {
                    write!(f, " why={}", word(&why.chars().take(WHY_MAX).collect::<String>()))?;
                }
            }
        }
        write!(f, " execution={} stable={}", word(&self.execution), word(&self.stable))?;
        if let Some(canary) = &self.canary {
            write!(f, " canary={}", word(canary))?;
        }
        if let Some(who) = &self.hold {
            write!(f, " hold={}", word(who))?;
        }
        if let Some(request) = &self.request {
            write!(f, " request={request}")?;
        }
        if let Some((at, of)) = self.stage {
            write!(f, " stage={at}/{of}")?;
        }
        if let Some(release) = &self.release {
            write!(f, " release={}", word(release))?;
        }
        Ok(())
    }
}

/// `by=` as the stamp writes it: the kind, and the alarm's or operator's name.
fn parse_by(text: &str, why: Option<&str>) -> Option<RolledBackBy> {
    match text.split_once(':') {
        Some(("alarm", name)) => Some(RolledBackBy::Alarm(name.to_owned())),
        Some(("operator", who)) => {
            Some(RolledBackBy::Operator { who: who.to_owned(), why: why.map(|w| w.replace('_', " ")) })
        }
        Some(_) => None,
        None => match text {
            "health" => Some(RolledBackBy::Health),
            "gate_alarm" => Some(RolledBackBy::GateAlarm),
            "outside_change" => Some(RolledBackBy::OutsideChange),
            "safety" => Some(RolledBackBy::Safety),
            "approval_timeout" => Some(RolledBackBy::ApprovalTimeout),
            "guardrail" => Some(RolledBackBy::Guardrail),
            _ => None,
        },
    }
}

/// The `by=` word: `alarm:NAME`, `operator:WHO`, or the kind.
struct By<'a>(&'a RolledBackBy);

impl fmt::Display for By<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RolledBackBy::Alarm(name) => write!(f, "alarm:{}", word(name)),
            RolledBackBy::Operator { who, .. } => write!(f, "operator:{}", word(who)),
            other => write!(f, "{}", other.as_str()),
        }
    }
}

impl Request {
    fn parse(text: &str) -> Option<Self> {
        let (what, by) = text.split_once(':')?;
        let by = by.to_owned();
        match what {
            "promote" => Some(Request::Promote { full: false, by }),
            "promote_full" => Some(Request::Promote { full: true, by }),
            "approve" => Some(Request::Approve { by }),
            _ => None,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Promote { full: false, by } => write!(f, "promote:{}", word(by)),
            Request::Promote { full: true, by } => write!(f, "promote_full:{}", word(by)),
            Request::Approve { by } => write!(f, "approve:{}", word(by)),
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
/// becomes `_`. Alarm and operator names and reasons are the only free text here.
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
            canary: Some("42".into()),
            phase: Phase::Live,
            stage: Some((2, 4)),
            release: Some("ai-handler-42".into()),
            hold: None,
            request: None,
        }
    }

    fn jane() -> RolledBackBy {
        RolledBackBy::Operator { who: "jane".into(), why: Some("outputs look truncated".into()) }
    }

    #[test]
    fn a_stamp_reads_as_a_line_and_round_trips() {
        let text = live().render();
        assert_eq!(
            text,
            "coalmine/1 phase=live execution=Release-AbC:ai-handler-42 stable=41 canary=42 stage=2/4 release=ai-handler-42"
        );
        assert_eq!(Stamp::parse(&text), Some(live()));
        for by in [
            RolledBackBy::Alarm("ai-handler-errors".into()),
            RolledBackBy::Health,
            RolledBackBy::GateAlarm,
            RolledBackBy::Safety,
            RolledBackBy::ApprovalTimeout,
            RolledBackBy::Guardrail,
            jane(),
        ] {
            let stamp = live().rolled_back(by);
            assert_eq!(Stamp::parse(&stamp.render()), Some(stamp));
        }
        assert_eq!(Stamp::parse(&live().promoted().render()).map(|s| s.phase), Some(Phase::Promoted));
        assert!(jane().describe().ends_with("by hand: outputs look truncated"));
    }

    #[test]
    fn operator_holds_and_requests_ride_along_and_end_with_the_release() {
        let requested = Stamp {
            hold: Some("sam".into()),
            request: Some(Request::Promote { full: true, by: "jane".into() }),
            ..live()
        };
        let text = requested.render();
        assert!(text.contains(" hold=sam request=promote_full:jane "), "{text}");
        assert_eq!(Stamp::parse(&text), Some(requested.clone()));
        for request in [Request::Promote { full: false, by: "j".into() }, Request::Approve { by: "j".into() }] {
            let stamp = Stamp { request: Some(request), ..live() };
            assert_eq!(Stamp::parse(&stamp.render()), Some(stamp));
        }
        assert_eq!(requested.promoted().request, None, "a request does not outlive the release");
        assert_eq!(requested.rolled_back(RolledBackBy::Health).request, None);
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
        let longest = Stamp {
            stable: "s".repeat(63),
            canary: Some("c".repeat(63)),
            ..long.rolled_back(RolledBackBy::Operator { who: "a".repeat(255), why: Some("w".repeat(200)) })
        };
        let text = longest.render();
        assert!(text.len() <= STAMP_MAX, "{} chars: {text}", text.len());
        let parsed = Stamp::parse(&text).unwrap();
        assert!(matches!(parsed.phase, Phase::RolledBack(RolledBackBy::Operator { why: None, .. })), "{text}");
        assert!(parsed.is_by(&longest.execution), "the hashed execution is still known as itself: {text}");
        assert!(!parsed.is_by("M:e"));
        assert_eq!((parsed.stable, parsed.canary), (longest.stable, longest.canary), "the roles are never dropped");
    }

    #[test]
    fn a_stamp_from_before_the_canary_was_recorded_still_reads() {
        let old = Stamp::parse("coalmine/1 phase=live execution=M:e stable=41 stage=2/4 release=r").unwrap();
        assert_eq!((old.stable.as_str(), old.canary), ("41", None));
    }

    #[test]
    fn a_rollback_record_of_the_same_execution_wins_over_any_later_stamp() {
        let alarm = RolledBackBy::Alarm("model-5xx".into());
        let rolled_back = live().rolled_back(alarm);
        let later = Stamp { stage: Some((3, 4)), ..live() };
        assert_eq!(
            Stamp::with_rollback_record(Some(later.clone()), Some(rolled_back.clone())),
            Some(rolled_back.clone())
        );
        assert_eq!(Stamp::with_rollback_record(Some(later.promoted()), Some(rolled_back.clone())), Some(rolled_back));
        // A record of an earlier release says nothing of this one.
        let earlier =
            Stamp { execution: "Release-AbC:ai-handler-41".into(), ..live() }.rolled_back(RolledBackBy::Health);
        assert_eq!(Stamp::with_rollback_record(Some(later.clone()), Some(earlier.clone())), Some(later));
        assert_eq!(Stamp::with_rollback_record(None, Some(earlier)), None);
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
            "coalmine/1 phase=live execution=a stable=1 request=dance:jane",
        ] {
            assert_eq!(Stamp::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn an_execution_is_known_by_its_arn_or_its_id_and_a_release_by_its_name() {
        let stamp = live();
        assert!(stamp.is_by("arn:aws:states:us-east-1:123456789012:execution:Release-AbC:ai-handler-42"));
        assert!(stamp.is_by("Release-AbC:ai-handler-42"));
        assert!(!stamp.is_by("arn:aws:states:us-east-1:123456789012:execution:Release-AbC:ai-handler-42-retry"));
        assert!(stamp.is_of_release("ai-handler-42") && !stamp.is_of_release("ai-handler-4"));
        let nameless = Stamp { release: None, ..live() };
        assert!(nameless.is_of_release("ai-handler-42"), "by the execution's name");
    }
}
