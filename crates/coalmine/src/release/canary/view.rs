//! The weight canary as an operator sees it: its plan, its bake, its shadow's examples.

use crate::domain::error::{Error, Result};
use crate::domain::split::Split;
use crate::release::canary::progress::Progress;
use crate::release::canary::spec::Release;
use crate::release::core::operate::{Bake, Routed};
use crate::release::core::progress::Status;
use crate::text::{duration, percent};

/// The plan as `coalmine validate` prints it.
pub fn plan_text(release: &Release) -> String {
    let plan = release.plan();
    let stages: Vec<String> = plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let approval = if s.approval { " then approval" } else { "" };
            let share = match &release.cohorts {
                Some(_) => release.share_text(i),
                None => format!("{}%", s.percent),
            };
            match s.max_bake_seconds {
                Some(max) => format!("{share} until conclusive, at most {}{approval}", duration(max)),
                None => format!("{share} for {}{approval}", duration(s.bake_seconds)),
            }
        })
        .collect();
    let gates = &release.gates;
    let mut limits = Vec::new();
    if !gates.alarms.is_empty() {
        limits.push(format!("alarms {}", gates.alarms.join(", ")));
    }
    for (name, value) in
        [("max_error_rate", gates.max_error_rate), ("max_error_rate_increase", gates.max_error_rate_increase)]
    {
        if let Some(v) = value {
            limits.push(format!("{name} {}", percent(v)));
        }
    }
    if let Some(v) = gates.max_p95_latency_ms {
        limits.push(format!("max_p95_latency_ms {v}"));
    }
    if let Some(v) = gates.max_p95_increase_ratio {
        limits.push(format!("max_p95_increase_ratio {v}"));
    }
    if !gates.custom.is_empty() {
        limits.push(format!("{} custom", gates.custom.len()));
    }
    limits.push(format!("min_requests {}", gates.min_requests));
    let judge = match gates.judge {
        crate::release::judge::gates::JudgeKind::Sequential => {
            format!("sequential, false_rollback_rate {}", percent(gates.false_rollback_rate))
        }
        crate::release::judge::gates::JudgeKind::FixedHorizon => "fixed_horizon".to_owned(),
    };
    limits.push(format!("judge {judge}"));
    let earliest = if plan.waits_for_approval { "plus the approvals" } else { "at the earliest" };
    let evidence_driven = plan.latest_promotion_seconds > plan.earliest_promotion_seconds;
    let ticks = if evidence_driven { format!("at most {} ticks", plan.ticks) } else { format!("{} ticks", plan.ticks) };
    let promoted = if evidence_driven {
        format!(
            "{} to {} after the start{}",
            duration(plan.earliest_promotion_seconds),
            duration(plan.latest_promotion_seconds),
            if plan.waits_for_approval { ", plus the approvals" } else { "" }
        )
    } else {
        format!("{} after the start {earliest}", duration(plan.earliest_promotion_seconds))
    };
    let shadow = release.shadow.as_ref().map_or(String::new(), |s| {
        let how = match &s.compare {
            Some(compare) => format!(
                "of live requests, compared by {}{}",
                serde_json::to_string(compare).unwrap_or_default(),
                if s.noise_floor() { ", against the stable asked again" } else { "" }
            ),
            None => "of live traffic mirrored by Azure ML, judged on errors and latency".to_owned(),
        };
        format!(
            "\n  shadow   {}{} on {} {how}; then the stages",
            if s.until_conclusive { "until conclusive, at most " } else { "" },
            duration(s.duration_seconds),
            percent(s.sample),
        )
    });
    let replay = release.replay.as_ref().map_or(String::new(), |r| {
        let then = if release.shadow.is_some() { "the shadow" } else { "the stages" };
        format!(
            "\n  replay   {}; then {then}",
            r.plan_text(&release.release, &release.gates, release.check_every_seconds)
        )
    });
    let cohorts = release.cohorts.as_ref().map_or(String::new(), |c| {
        let (_, cohort_alias) = release.target.cohort_aliases().unwrap_or_default();
        format!(
            "\n  cohorts  by {unit}: {}; the rest drawn by hash of (release, {unit}), a {unit} drawn at one share kept \
             at every later one; routers read each share from AppConfig (profile {}) and send the cohort to alias \
             {cohort_alias}, the kill switch\n  judged   {}",
            c.rules(),
            release.target.cohort_profile().unwrap_or_default(),
            c.judged(),
            unit = c.unit.trim(),
        )
    });
    format!(
        "{}: valid\n  target   {}, canary {}{replay}{shadow}{cohorts}\n  stages   {}\n  checks   every {}; {ticks}; promoted {promoted}\n  gates    {}\n  limits   {}\n",
        release.release,
        release.target,
        release.target.side(release.canary_id()),
        stages.join(", "),
        duration(release.check_every_seconds),
        limits.join(", "),
        crate::release::core::limits::describe()
    )
}

/// `coalmine route`: the cohort the release's routers read at its stage (nobody drawn
/// once it ended), applied to `unit`, and the version the alias it names serves now:
/// after a rollback a unit still routed to the cohort alias gets the stable.
pub fn route(
    release: &Release,
    progress: Option<&Progress>,
    serving: &Split,
    unit: &str,
    attributes: &[(&str, &str)],
) -> Result<Routed> {
    let not_a_cohort = || {
        Error::Refused(format!(
            "release {} routes requests by weight on {}: each request draws its version, no unit keeps one (a cohort \
             release routes units: docs/cohorts.md)",
            release.release, release.target
        ))
    };
    let cohorts = release.cohorts.as_ref().ok_or_else(not_a_cohort)?;
    let (primary, cohort_alias) = release.target.cohort_aliases().ok_or_else(not_a_cohort)?;
    let routed = |alias: &str, why: String| {
        let on_candidate = alias == cohort_alias && !serving.canary_is_zero();
        let version = match &serving.canary {
            Some(canary) if on_candidate => canary.clone(),
            _ => serving.stable.clone(),
        };
        let candidate = version == release.canary_id();
        Ok(Routed { unit: unit.to_owned(), version, alias: alias.to_owned(), candidate, why })
    };
    let Some(progress) = progress else {
        return routed(primary, "the release has not taken its first step: every unit is on the stable".into());
    };
    if progress.kind.shadow.is_some() {
        return routed(primary, "the release is shadowing: nobody is served by the candidate yet".into());
    }
    let (cohort, at) = match progress.status {
        Status::Promoted => return routed(primary, "the release was promoted: everyone is on it".into()),
        Status::RolledBack => (release.cohort_ended(), "the release was rolled back".to_owned()),
        _ => {
            (release.cohort_at(progress.stage), format!("at stage {} of {}", progress.stage + 1, release.stages.len()))
        }
    };
    let cohort = cohort.ok_or_else(not_a_cohort)?;
    let decision = coalmine_router::route(&cohort, unit, attributes);
    let mut why = format!("{} ({at}: {}, {})", decision.why, release.share_text(progress.stage), cohorts.rules());
    if decision.alias == cohort_alias && serving.canary_is_zero() {
        why.push_str(&format!("; alias {cohort_alias} serves the stable now, so it gets the stable"));
    }
    routed(decision.alias, why)
}

/// Where the current stage's bake is: `bake [#######.............] 4m00s of 15m00s`.
pub fn bake(release: &Release, progress: &Progress, now: u64) -> Option<Bake> {
    if matches!(progress.status, Status::Promoted | Status::RolledBack) {
        return None;
    }
    let stage = release.stages.get(progress.stage)?;
    let longest = stage.longest_bake();
    let elapsed = now.saturating_sub(progress.stage_entered_at).min(longest);
    let filled = (elapsed * 20).checked_div(longest).unwrap_or(20) as usize;
    let of = if stage.is_evidence_driven() {
        format!("at most {} (until conclusive)", duration(longest))
    } else {
        duration(longest)
    };
    let last_check = progress.history.last().map_or(progress.stage_entered_at, |d| d.at);
    let next = (last_check + progress.wait_seconds).saturating_sub(now);
    let line = format!(
        "  bake  [{}{}] {} of {} at {}; next check in {}",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        duration(elapsed),
        of,
        percent(stage.weight()),
        duration(next)
    );
    Some(Bake { elapsed_seconds: elapsed, longest_seconds: longest, line })
}

/// The disagreements the shadow showed last: what the candidate said instead.
pub fn shadow_examples(progress: &Progress) -> Vec<String> {
    let Some(run) = progress.kind.shadow.as_ref().filter(|s| !s.examples.is_empty()) else {
        return Vec::new();
    };
    let phase = if run.replay.is_some() { "replay" } else { "shadow" };
    let examples = &run.examples;
    let mut lines = vec![String::new(), format!("  the {phase}'s disagreements (last few):")];
    for example in examples {
        lines.push(format!("    request {}: {}", example.request_id, example.request));
        lines.push(format!("      stable     {}", example.stable));
        lines.push(format!("      candidate  {}", example.candidate));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: serde_json::Value) -> Release {
        Release::parse(&value).unwrap()
    }

    #[test]
    fn a_shadowed_plan_says_its_shadow_comes_first() {
        let release = parse(crate::release::core::document::tests::sample_json("lambda-ai-classifier-shadow-7.json"));
        let text = plan_text(&release);
        assert!(
            text.contains(r#"shadow   1h00m on 10% of live requests, compared by {"fields":{"pointers":["/label","/confidence"],"tolerance":0.05}}, against the stable asked again; then the stages"#),
            "{text}"
        );
        assert!(text.contains("promoted 1h40m after the start"), "{text}");
    }

    #[test]
    fn a_plan_with_evidence_driven_stages_says_the_range() {
        let release = parse(serde_json::json!({
            "release": "r", "target": {"lambda": {"function": "f", "alias": "live"}}, "canary_version": "4",
            "stages": [{"percent": 5, "bake": "until_conclusive", "max_bake_seconds": 1800}, {"percent": 100, "bake_seconds": 600}],
            "check_every_seconds": 60
        }));
        let text = plan_text(&release);
        assert!(text.contains("stages   5% until conclusive, at most 30m, 100% for 10m"), "{text}");
        assert!(text.contains("at most 41 ticks; promoted 11m to 40m after the start"), "{text}");
        assert!(
            text.contains(
                "limits   at most 20 stages, 2000 checks and 358 days in all (one Step Functions execution); holds"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_shadows_examples_show_the_request_and_both_answers() {
        let progress: Progress = serde_json::from_value(serde_json::json!({
            "stage": 0, "weight": 0.0, "stable": "6",
            "last_written": {"stable": "6", "canary": null, "weight": 0.0},
            "started_at": 0, "stage_entered_at": 0, "status": "rolled_back", "wait_seconds": 0,
            "reason": "r", "ticks": 2, "history": [],
            "shadow": {"started_at": 0, "examples": [
                {"request_id": "57ec", "request": "{\"q\":1}", "stable": "{\"label\":\"a\"}", "candidate": "{\"label\":\"b\"}"}
            ]}
        }))
        .unwrap();
        let lines = shadow_examples(&progress);
        assert_eq!(lines[2], r#"    request 57ec: {"q":1}"#);
        assert_eq!(lines[3], r#"      stable     {"label":"a"}"#);
        assert_eq!(lines[4], r#"      candidate  {"label":"b"}"#);
    }

    #[test]
    fn the_bake_says_how_far_the_stage_is_and_when_the_next_check_comes() {
        let release = parse(serde_json::json!({
            "release": "r", "target": {"lambda": {"function": "f", "alias": "live"}}, "canary_version": "2",
            "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 60}], "check_every_seconds": 60
        }));
        let progress: Progress = serde_json::from_value(serde_json::json!({
            "stage": 0, "weight": 0.05, "stable": "1",
            "last_written": {"stable": "1", "canary": "2", "weight": 0.05},
            "started_at": 1000, "stage_entered_at": 1000, "status": "baking", "wait_seconds": 60,
            "reason": "x", "ticks": 3,
            "history": [{"at": 1240, "stage": 0, "weight": 0.05, "status": "baking", "reason": "healthy"}]
        }))
        .unwrap();
        let bake = bake(&release, &progress, 1300).unwrap();
        assert_eq!(bake.line, "  bake  [##########..........] 5m of 10m at 5%; next check in 0s");
        assert_eq!((bake.elapsed_seconds, bake.longest_seconds), (300, 600));
        let promoted = Progress { status: Status::Promoted, ..progress };
        assert_eq!(super::bake(&release, &promoted, 1300), None, "no bake once it has ended");
    }
}
