//! What the CLI prints: plans, checks, timelines, the bake in progress, a chart of
//! what the judge saw, and tables. Plain text, no colour: it reads the same in a
//! terminal, a CI log and a pasted ticket.

use comfy_table::{presets, ContentArrangement, Table};
use serde_json::Value;

use coalmine::domain::split::WEIGHT_TOLERANCE;
use coalmine::release::core::preflight::Check;
use coalmine::release::core::progress::{Decision, Status};
use coalmine::release::{AnyProgress as Progress, Document};
use coalmine::text::{describe, percent};

use crate::runs::Run;

pub use coalmine::text::duration;

pub fn checks(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| match &c.found {
            Ok(detail) => format!("  ✓ {}: {detail}\n", c.what),
            Err(e) if c.advisory => format!("  ! {}: {}\n", c.what, e.to_string().trim_start_matches("refused: ")),
            Err(e) => format!("  ✗ {}: {e}\n", c.what),
        })
        .collect()
}

/// Every check as a timeline (`status --checks`), each line once.
pub fn timeline(stages: usize, progress: &Progress) -> Vec<String> {
    let mut lines = Vec::new();
    if progress.history_dropped > 0 {
        lines.push(format!("  ({} earlier checks not kept)", progress.history_dropped));
    }
    lines.extend(checks_timeline(stages, progress.started_at, &progress.history));
    lines
}

fn checks_timeline(stages: usize, started_at: u64, decisions: &[Decision]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut last = String::new();
    for decision in decisions {
        let line = decision_line(decision, stages);
        if line != last {
            lines.push(format!("  [t+{:>6}] {line}", duration(decision.at.saturating_sub(started_at))));
        }
        last = line;
    }
    lines
}

/// One line per stage (and the shadow): how it ended or where it is, how long it took,
/// and what the judge last said of it, in words.
pub fn stage_lines(run: &Run, stages: usize, decisions: &[Decision], now: u64) -> Vec<String> {
    let groups: Vec<&[Decision]> = decisions.chunk_by(|a, b| a.shadow == b.shadow && a.stage == b.stage).collect();
    let end = run.stopped_at.map_or(now, |s| s.max(0) as u64);
    let mut lines = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let (first, last) = (&group[0], &group[group.len() - 1]);
        let next = groups.get(i + 1).map(|g| &g[0]);
        // The step into the next stage carries the look that let this one go on.
        let went_on_healthy = next
            .and_then(|n| n.evidence.as_ref())
            .is_none_or(|e| e.get("verdict").and_then(Value::as_str) == Some("healthy"));
        let outcome = match next {
            Some(next) => match (&next.by, last.status) {
                (Some(who), Status::AwaitingApproval) => format!("approved by {who}"),
                (Some(who), _) => format!("promoted by {who}"),
                (None, _) if went_on_healthy => "passed".to_owned(),
                (None, _) => "went on unjudged".to_owned(),
            },
            None if !run.running() => match last.status {
                Status::RolledBack => "rolled back".to_owned(),
                Status::Promoted => "promoted".to_owned(),
                _ => run.state(),
            },
            None => last.status.as_str().replace('_', " "),
        };
        let took = next.map_or(end, |n| n.at).saturating_sub(first.at);
        let at = phase(first, stages);
        let weight = if first.shadow { "0%".to_owned() } else { percent(first.weight) };
        let checks = group.len();
        // The rollback's own reason says why; a stage that went on, what the judge last saw.
        let said = match last.status {
            Status::RolledBack | Status::Promoted if next.is_none() => last.reason.clone(),
            _ => next.into_iter().chain(group.iter().rev()).find_map(judged).unwrap_or_else(|| last.reason.clone()),
        };
        lines.push(format!(
            "  {at:<10} {weight:>4}  {outcome:<17} {took:>6}  {checks:>3} check{}  {said}",
            if checks == 1 { " " } else { "s" },
            took = duration(took),
        ));
    }
    lines
}

/// "replay", "shadow", or "stage 2/4".
pub fn phase(decision: &Decision, stages: usize) -> String {
    match decision.before_users() {
        Some(before) => before.name().to_owned(),
        None => format!("stage {}/{stages}", decision.stage + 1),
    }
}

/// What the judge said of a check, without the step's own words around it.
fn judged(decision: &Decision) -> Option<String> {
    let reasons = decision.evidence.as_ref()?.get("reasons")?.as_array()?;
    let said: Vec<&str> = reasons.iter().filter_map(Value::as_str).collect();
    (!said.is_empty()).then(|| said.join("; "))
}

pub fn decision_line(decision: &Decision, stages: usize) -> String {
    let at = phase(decision, stages);
    format!("{at:<9} {:>4}  {:<17} {}", percent(decision.weight), decision.status.as_str(), decision.reason)
}

/// The widest a sparkline gets.
const CHART_COLUMNS: usize = 60;

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A one-line chart of `values` scaled to `max` (missing values as spaces).
pub fn sparkline(values: &[Option<f64>], max: f64) -> String {
    values
        .iter()
        .map(|v| match v {
            Some(v) if max > 0.0 => BARS[((v / max).clamp(0.0, 1.0) * 7.0).round() as usize],
            Some(_) => BARS[0],
            None => ' ',
        })
        .collect()
}

/// Weight, and canary against stable error rate and p95, over the decisions kept: a
/// chart drawn from the evidence the judge recorded.
pub fn chart(decisions: &[Decision]) -> Vec<String> {
    if decisions.is_empty() {
        return Vec::new();
    }
    // One column per check up to a terminal's width; beyond, the last check of each stretch.
    let every = decisions.len().div_ceil(CHART_COLUMNS);
    let shown: Vec<Decision> = decisions.chunks(every).filter_map(|c| c.last().cloned()).collect();
    let checks = decisions.len();
    let decisions = &shown;
    let weights: Vec<Option<f64>> = decisions.iter().map(|d| Some(d.weight)).collect();
    let metric = |side: &str, f: &dyn Fn(&Value) -> Option<f64>| -> Vec<Option<f64>> {
        decisions
            .iter()
            .map(|d| d.evidence.as_ref().and_then(|e| e.pointer(&format!("/metrics/{side}"))).and_then(f))
            .collect()
    };
    let rate = |s: &Value| {
        let requests = s.get("requests")?.as_f64()?;
        (requests > 0.0).then(|| s.get("errors").and_then(Value::as_f64).unwrap_or(0.0) / requests * 100.0)
    };
    let p95 = |s: &Value| s.get("p95_ms").and_then(Value::as_f64);
    let max =
        |series: &[&[Option<f64>]]| series.iter().flat_map(|s| s.iter().flatten()).fold(0.0_f64, |a, b| a.max(*b));
    let range = |series: &[Option<f64>], unit: &dyn Fn(f64) -> String| {
        let values: Vec<f64> = series.iter().flatten().copied().collect();
        match (values.iter().copied().reduce(f64::min), values.iter().copied().reduce(f64::max)) {
            (Some(lo), Some(hi)) => format!("{} .. {}", unit(lo), unit(hi)),
            _ => "no data".to_owned(),
        }
    };
    let pct = |v: f64| format!("{v:.2}%");
    let ms = |v: f64| format!("{v:.0} ms");
    // Canary and stable on one scale, so the bars compare; a measure no check had is left out.
    let pair = |label: &str, read: &dyn Fn(&Value) -> Option<f64>, unit: &dyn Fn(f64) -> String| {
        let (canary, stable) = (metric("canary", read), metric("stable", read));
        let top = max(&[&canary, &stable]);
        canary.iter().chain(&stable).any(Option::is_some).then(|| {
            format!(
                "  {label:<11} canary {}  {}   stable {}  {}",
                sparkline(&canary, top),
                range(&canary, unit),
                sparkline(&stable, top),
                range(&stable, unit)
            )
        })
    };
    let mut lines = vec![
        format!("  chart of {checks} checks, canary against stable"),
        format!("  weight      {}  {}", sparkline(&weights, 1.0), range(&weights, &|w| percent(w))),
    ];
    lines.extend(pair("error rate", &rate, &pct));
    lines.extend(pair("p95", &p95, &ms));
    lines
}

/// `release X on T: canary version 42, RUNNING (baking)`
pub fn header(run: &Run) -> String {
    match &run.release {
        Some(release) => format!(
            "release {} on {}: {}",
            run.name,
            release.target(),
            release.headline(run.progress.as_ref(), &run.state(), run.running())
        ),
        None => format!("release {}: {}", run.name, run.state()),
    }
}

/// How it ended, for a finished run.
pub fn ending(run: &Run) -> Option<String> {
    if run.running() {
        return None;
    }
    let how = match (&run.error, &run.cause) {
        (None, _) => "promoted".to_owned(),
        (Some(error), Some(cause)) => format!("{error}: {cause}"),
        (Some(error), None) => error.clone(),
    };
    let took = run.stopped_at.map(|s| duration(s.saturating_sub(run.started_at) as u64)).unwrap_or_default();
    Some(format!("  => {} after {took}: {how}", run.status))
}

/// `coalmine status`: the stages, the bake, a chart; `every_check` lists each check instead
/// of each stage. `decisions` are all the release made (a progress keeps its last few).
pub fn status(run: &Run, decisions: &[Decision], now: u64, every_check: bool) -> Vec<String> {
    let mut lines = vec![header(run)];
    if let (Some(document), Some(progress)) = (&run.release, &run.progress) {
        let decisions = if decisions.is_empty() { progress.history.as_slice() } else { decisions };
        if every_check {
            lines.extend(checks_timeline(document.stages(), progress.started_at, decisions));
        } else {
            lines.extend(stage_lines(run, document.stages(), decisions, now));
        }
        if let (Some(last), true) = (decisions.last(), run.running()) {
            let ago = duration(now.saturating_sub(last.at));
            lines.push(format!("  last check {ago} ago: {}", last.reason));
        }
        if let Some(dry_run) = &progress.dry_run {
            lines.push(format!("  dry run: {}", dry_run.describe()));
        }
        lines.extend(document.details(progress, run.running(), now));
        let chart = chart(decisions);
        if !chart.is_empty() {
            lines.push(String::new());
            lines.extend(chart);
        }
    }
    if let Some(failing) = run.failing.as_ref().filter(|_| run.running()) {
        lines.push(format!(
            "  checks failing: {} attempt{} since {} ago, nothing judged meanwhile: {}. The state machine retries, \
             then takes back what this release moved",
            failing.attempts,
            if failing.attempts == 1 { "" } else { "s" },
            duration(now.saturating_sub(failing.since.max(0) as u64)),
            failing.error
        ));
    }
    lines.extend(ending(run));
    match (&run.now, &run.release, &run.progress) {
        (Some(live), ..) => lines.push(format!("  now: {live}")),
        // The target could not be read: say what the release left, as that, not as now.
        (None, Some(release), Some(progress)) if !run.running() => {
            if let Some(left) = release.as_left(progress) {
                lines.push(format!("  as the release left it: {}", describe(&release.target(), &left)));
            }
        }
        _ => {}
    }
    lines
}

/// Who serves the target as the release left it: "version 41", or "version 41 95%,
/// version 42 5%". A guardrail release's fleets are SageMaker's to say.
fn serving(run: &Run, named: bool) -> String {
    let Some((target, left)) =
        run.release.as_ref().zip(run.progress.as_ref()).and_then(|(r, p)| Some((r.target(), r.as_left(p)?)))
    else {
        return "-".to_owned();
    };
    let side = |id: &str| if named { target.side(id) } else { id.to_owned() };
    match &left.canary {
        Some(canary) if left.canary_weight >= 1.0 - WEIGHT_TOLERANCE => side(canary),
        Some(canary) if !left.canary_is_zero() => format!(
            "{} {}, {} {}",
            side(&left.stable),
            percent(1.0 - left.canary_weight),
            side(canary),
            percent(left.canary_weight)
        ),
        _ => side(&left.stable),
    }
}

/// `coalmine list`: fits a 120-column terminal, long names cut short; `wide`, whole, with
/// the next check and who serves each side by name.
pub fn table(runs: &[Run], now: u64, wide: bool) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    if wide {
        table.set_header([
            "RELEASE",
            "TARGET",
            "STATE",
            "STAGE",
            "WEIGHT",
            "SERVING",
            "IN STAGE",
            "NEXT CHECK",
            "STARTED",
        ]);
    } else {
        table.set_header(["RELEASE", "TARGET", "STATE", "STAGE", "SERVING", "STARTED"]);
    }
    let mut narrow: Vec<[String; 6]> = Vec::new();
    for run in runs {
        let target = run.release.as_ref().map(|r| if wide { r.target().to_string() } else { r.target().short_name() });
        let target = target.unwrap_or_default();
        let stages = run.release.as_ref().map_or(0, Document::stages);
        let (stage, weight, in_stage, next) = match &run.progress {
            Some(p) => {
                let last = p.history.last().map_or(p.stage_entered_at, |d| d.at);
                (
                    format!("{}/{stages}", p.stage + 1),
                    percent(p.weight),
                    run.running().then(|| duration(now.saturating_sub(p.stage_entered_at))),
                    run.running().then(|| format!("in {}", duration((last + p.wait_seconds).saturating_sub(now)))),
                )
            }
            None => ("-".into(), "-".into(), None, None),
        };
        let started = format!("{} ago", duration(now.saturating_sub(run.started_at as u64)));
        if wide {
            let dash = || "-".to_owned();
            table.add_row([
                run.name.clone(),
                target,
                run.state(),
                stage,
                weight,
                serving(run, true),
                in_stage.unwrap_or_else(dash),
                next.unwrap_or_else(dash),
                started,
            ]);
        } else {
            // The time in the stage beside it: what a person scanning for a stuck release reads.
            let stage = match in_stage {
                Some(for_) => format!("{stage} {weight} {for_}"),
                None => format!("{stage} {weight}"),
            };
            narrow.push([
                run.name.clone(),
                target,
                fit(&run.state(), 17),
                fit(&stage, 14),
                fit(&serving(run, false), 12),
                fit(&started, 10),
            ]);
        }
    }
    let (release_width, target_width) = name_widths(&narrow);
    for [release, target, rest @ ..] in narrow {
        let mut row = vec![fit(&release, release_width), fit(&target, target_width)];
        row.extend(rest);
        table.add_row(row);
    }
    format!("{table}\n")
}

/// The columns a narrow list has for release and target names: what 120 columns leave
/// beside the others, the release's name cut first down to 22.
fn name_widths(rows: &[[String; 6]]) -> (usize, usize) {
    const HEADERS: [&str; 6] = ["RELEASE", "TARGET", "STATE", "STAGE", "SERVING", "STARTED"];
    let longest = |column: usize| {
        rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0).max(HEADERS[column].len())
    };
    // Each column is padded by a space either side.
    let others: usize = (2..6).map(longest).sum();
    let room = 120usize.saturating_sub(others + 2 * HEADERS.len()).max(2 * 22);
    let release = longest(0).min(room.saturating_sub(longest(1)).max(22));
    (release, room - release)
}

/// `text` in at most `width` characters, cut with an ellipsis.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine::release::core::progress::Status;

    #[test]
    fn a_shadow_decision_says_shadow() {
        let progress: Progress = serde_json::from_value(serde_json::json!({
            "stage": 0, "weight": 0.0, "stable": "6",
            "last_written": {"stable": "6", "canary": null, "weight": 0.0},
            "started_at": 0, "stage_entered_at": 0, "status": "rolled_back", "wait_seconds": 0,
            "reason": "r", "ticks": 2,
            "history": [{"at": 0, "stage": 0, "weight": 0.0, "status": "baking", "reason": "Shadowing", "shadow": true}]
        }))
        .unwrap();
        assert!(
            decision_line(&progress.history[0], 3).starts_with("shadow      0%"),
            "{}",
            decision_line(&progress.history[0], 3)
        );
    }

    #[test]
    fn a_long_release_charts_in_a_terminal_width() {
        let decision = |at: u64| Decision {
            at,
            stage: 0,
            weight: 0.05,
            status: Status::Baking,
            reason: String::new(),
            evidence: None,
            shadow: false,
            replay: false,
            by: None,
        };
        let decisions: Vec<Decision> = (0..2000).map(decision).collect();
        let lines = chart(&decisions);
        assert_eq!(lines[0], "  chart of 2000 checks, canary against stable");
        let columns = lines[1].chars().filter(|c| BARS.contains(c)).count();
        assert!((50..=CHART_COLUMNS).contains(&columns), "{columns} columns: {}", lines[1]);
    }

    #[test]
    fn sparklines_scale_to_the_max_and_leave_gaps_for_missing_values() {
        assert_eq!(sparkline(&[Some(0.0), Some(0.5), Some(1.0), None], 1.0), "▁▅█ ");
        assert_eq!(sparkline(&[Some(3.0)], 0.0), "▁", "nothing to scale to");
    }

    /// A release rolled back by the rollback function on its alarm at 100%, as the last
    /// tick records it.
    fn rolled_back_at_100() -> Run {
        let release = Document::parse(&serde_json::json!({
            "release": "r", "target": {"lambda": {"function": "f", "alias": "live"}}, "canary_version": "4",
            "stages": [{"percent": 5, "bake_seconds": 60}, {"percent": 100, "bake_seconds": 600}], "check_every_seconds": 60
        }))
        .unwrap();
        let progress: Progress = serde_json::from_value(serde_json::json!({
            "stage": 1, "weight": 0.0, "stable": "2",
            "last_written": {"stable": "2", "canary": null, "weight": 0.0},
            "started_at": 1000, "stage_entered_at": 1060, "status": "rolled_back", "rolled_back_by": "alarm",
            "wait_seconds": 0, "ticks": 4,
            "reason": "Rolled back by the rollback function on alarm a, at stage 2 of 2 (100%): version 4 had been \
                       promoted; version 2 was put back as soon as the alarm fired",
            "history": [
                {"at": 1000, "stage": 0, "weight": 0.05, "status": "advanced", "reason": "Started"},
                {"at": 1060, "stage": 1, "weight": 1.0, "status": "advanced", "reason": "now at 100%"},
                {"at": 1100, "stage": 1, "weight": 0.0, "status": "rolled_back", "reason": "Rolled back"}
            ]
        }))
        .unwrap();
        Run {
            name: "r".into(),
            execution_arn: "arn".into(),
            status: "FAILED".into(),
            error: Some("CanaryRolledBack".into()),
            cause: Some("Rolled back".into()),
            started_at: 1000,
            stopped_at: Some(1100),
            release: Some(release),
            progress: Some(progress),
            failing: None,
            now: None,
        }
    }

    fn status_of(run: &Run) -> Vec<String> {
        status(run, &[], 2000, false)
    }

    #[test]
    fn a_rolled_back_release_shows_the_weight_it_left_and_what_serves_now() {
        let run = rolled_back_at_100();
        let table = table(std::slice::from_ref(&run), 2000, true);
        let row = table.lines().find(|l| l.trim_start().starts_with("r ")).unwrap();
        assert!(row.contains("rolled_back") && row.contains(" 0% ") && row.contains("version 2"), "{table}");
        assert!(!row.contains("100%"), "{table}");
        let status = status_of(&run);
        assert_eq!(
            status.last().unwrap(),
            "  as the release left it: version 2 serves all traffic, no canary",
            "without a read of the target, nothing is called now: {status:#?}"
        );
        let read = Run { now: Some("version 1 serves all traffic, no canary".into()), ..run.clone() };
        assert_eq!(status_of(&read).last().unwrap(), "  now: version 1 serves all traffic, no canary");
        let failing = Run {
            status: "RUNNING".into(),
            failing: Some(crate::runs::Failing { since: 1900, attempts: 3, error: "sns:Publish failed".into() }),
            ..run.clone()
        };
        let text = status_of(&failing).join("\n");
        assert!(
            text.contains("checks failing: 3 attempts since 1m40s ago, nothing judged meanwhile: sns:Publish failed"),
            "{text}"
        );
        assert!(status.iter().any(|l| l.contains("weight      ▁█▁")), "the chart ends at the weight left: {status:#?}");
    }

    #[test]
    fn status_says_where_a_dry_run_would_have_rolled_back() {
        let mut run = rolled_back_at_100();
        let progress = run.progress.as_mut().unwrap();
        progress.dry_run = Some(coalmine::release::core::progress::DryRun {
            stage: 0,
            weight: 0.05,
            at: 1040,
            after_seconds: 840,
            on: vec!["OutputTokens".into()],
            detail: "canary OutputTokens above the stable's".into(),
        });
        let status = status_of(&run);
        assert!(
            status.contains(
                &"  dry run: would have rolled back at stage 1 (5%), 14m in, on OutputTokens (canary OutputTokens \
                  above the stable's)"
                    .to_owned()
            ),
            "{status:#?}"
        );
    }

    #[test]
    fn a_timeline_says_each_repeated_check_once() {
        let release = Document::parse(&serde_json::json!({
            "release": "r", "target": {"lambda": {"function": "f", "alias": "live"}}, "canary_version": "2",
            "stages": [{"percent": 5, "bake_seconds": 600}, {"percent": 100, "bake_seconds": 60}], "check_every_seconds": 60
        }))
        .unwrap();
        let decision = |at, status, reason: &str| Decision {
            at,
            stage: 0,
            weight: 0.05,
            status,
            reason: reason.into(),
            evidence: None,
            shadow: false,
            replay: false,
            by: None,
        };
        let progress: Progress = serde_json::from_value(serde_json::json!({
            "stage": 0, "weight": 0.05, "stable": "1",
            "last_written": {"stable": "1", "canary": "2", "weight": 0.05},
            "started_at": 1000, "stage_entered_at": 1000, "status": "baking", "wait_seconds": 60,
            "reason": "x", "ticks": 3, "history": []
        }))
        .unwrap();
        let progress = Progress {
            history: vec![
                decision(1000, Status::Advanced, "Started"),
                decision(1060, Status::Baking, "healthy"),
                decision(1120, Status::Baking, "healthy"),
            ],
            ..progress
        };
        let lines = timeline(release.stages(), &progress);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[1], "  [t+    1m] stage 1/2   5%  baking            healthy");
    }

    #[test]
    fn status_says_each_stage_once_with_how_it_ended_and_who_let_it_go_on() {
        let mut run = rolled_back_at_100();
        let judged = |at, stage, weight, status, by: Option<&str>| Decision {
            at,
            stage,
            weight,
            status,
            reason: format!("step at {at}"),
            evidence: Some(serde_json::json!({"reasons": [format!("healthy: judged at {at}")]})),
            shadow: false,
            replay: false,
            by: by.map(str::to_owned),
        };
        let decisions = [
            judged(1000, 0, 0.05, Status::Advanced, None),
            judged(1020, 0, 0.05, Status::Baking, None),
            judged(1040, 0, 0.05, Status::AwaitingApproval, None),
            judged(1060, 1, 1.0, Status::Advanced, Some("jane")),
            Decision {
                reason: "Rolled back by the rollback function on alarm a".into(),
                ..judged(1100, 1, 0.0, Status::RolledBack, None)
            },
        ];
        run.progress.as_mut().unwrap().history = decisions.to_vec();
        let lines = status(&run, &decisions, 2000, false);
        assert_eq!(lines[1], "  stage 1/2    5%  approved by jane      1m    3 checks  healthy: judged at 1060");
        assert_eq!(
            lines[2],
            "  stage 2/2  100%  rolled back          40s    2 checks  Rolled back by the rollback function on alarm a"
        );
        assert!(!lines.iter().any(|l| l.contains("[t+")), "no check by check: {lines:#?}");
        let every = status(&run, &decisions, 2000, true);
        assert_eq!(every.iter().filter(|l| l.contains("[t+")).count(), 5, "{every:#?}");
    }

    #[test]
    fn a_list_fits_120_columns_with_azure_targets_and_is_whole_when_wide() {
        let mut run = rolled_back_at_100();
        run.name = "chat-model-2-with-a-name-longer-than-most".into();
        run.release = Some(
            Document::parse(&serde_json::json!({
                "release": run.name,
                "target": {"azureml": {"subscription": "00000000-1111-2222-3333-444444444444", "resource_group": "ml-prod",
                           "workspace": "ml-workspace", "endpoint": "chat-endpoint", "stable_deployment": "blue",
                           "canary_deployment": "green"}},
                "stages": [{"percent": 5, "bake_seconds": 60}, {"percent": 100, "bake_seconds": 600}], "check_every_seconds": 60
            }))
            .unwrap(),
        );
        let narrow = table(std::slice::from_ref(&run), 2000, false);
        for line in narrow.lines() {
            assert!(line.trim_end().chars().count() <= 120, "{} columns: {line}", line.chars().count());
        }
        assert!(narrow.contains("azureml:chat-endpoint:blue→green"), "{narrow}");
        let wide = table(std::slice::from_ref(&run), 2000, true);
        assert!(
            wide.contains("azureml:00000000-1111-2222-3333-444444444444:ml-prod:ml-workspace:chat-endpoint:blue:green"),
            "{wide}"
        );
        assert!(wide.contains(&run.name), "{wide}");
    }
}
