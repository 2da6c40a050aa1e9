//! `coalmine report`: one self-contained HTML page about a release, for an incident or a
//! pull request. The verdict and its reason first, who did what, then the traffic with
//! every event, one chart per gate with the judge's evidence beneath it, the plan's
//! stated power, the shadow's disagreements, and every check in a table. Nothing is
//! fetched when the page opens: the charts are inline SVG, the styles inline, no script.

use std::collections::BTreeMap;

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use coalmine::domain::metrics::{GateKind, MetricSnapshot, SideMetrics};
use coalmine::release::core::progress::{BeforeUsers, Decision, Status};
use coalmine::release::judge::evalues::Standing;
use coalmine::release::judge::gates::Gates;
use coalmine::release::judge::{figure, rate};
use coalmine::release::Document;
use coalmine::text::{duration, percent, way};

use crate::chart::{self, Band, GateSeries, Marker, Span};
use crate::runs::Run;

/// A check as the report reads it: when, where, and what the judge had.
struct Check<'a> {
    decision: &'a Decision,
    t: f64,
    metrics: Option<MetricSnapshot>,
    tests: Vec<Standing>,
}

impl<'a> Check<'a> {
    fn of(decision: &'a Decision, started_at: u64) -> Self {
        let evidence = decision.evidence.as_ref();
        let metrics = evidence.and_then(|e| e.get("metrics")).and_then(|m| serde_json::from_value(m.clone()).ok());
        let tests = evidence
            .and_then(|e| e.get("tests"))
            .and_then(|t| serde_json::from_value::<Vec<Standing>>(t.clone()).ok())
            .unwrap_or_default();
        Check { decision, t: decision.at.saturating_sub(started_at) as f64, metrics, tests }
    }

    /// "replay", "shadow", or "stage 2/4".
    fn phase(&self, stages: usize) -> String {
        crate::render::phase(self.decision, stages)
    }
}

/// Something that happened, for the events list and the charts' markers.
struct Event {
    at: u64,
    what: String,
    by: Option<String>,
}

/// The page for `run`, with every decision its execution made.
pub fn page(run: &Run, decisions: &[Decision], generated_at: u64) -> Result<String, String> {
    let document = run.release.as_ref().ok_or_else(|| {
        format!(
            "release {}: its execution's input is not a release coalmine can read, so there is nothing to report",
            run.name
        )
    })?;
    let started_at = run.progress.as_ref().map_or(run.started_at.max(0) as u64, |p| p.started_at);
    let ended_at = run.stopped_at.map(|s| s.max(0) as u64);
    let checks: Vec<Check<'_>> = decisions.iter().map(|d| Check::of(d, started_at)).collect();
    let last_at = decisions.last().map_or(started_at, |d| d.at);
    let end = ended_at.unwrap_or(last_at).max(last_at).max(started_at + 1);
    let events = events(document, decisions, run);
    let span = Span {
        end: (end - started_at) as f64,
        bands: bands(document, &checks, (end - started_at) as f64),
        markers: events
            .iter()
            .enumerate()
            .map(|(i, e)| Marker { at: e.at.saturating_sub(started_at) as f64, number: i + 1 })
            .collect(),
    };
    let weights: Vec<(f64, f64)> = checks.iter().map(|c| (c.t, c.decision.weight * 100.0)).collect();
    let traffic = chart::traffic(&span, &weights)?;
    let gates = gate_charts(document, &checks, &span)?;
    let stages = document.stages();
    let title = format!("{} on {}", run.name, document.target());
    let verdict = verdict(run, started_at, end);
    let reason = run.progress.as_ref().map(|p| p.reason.clone()).or_else(|| run.cause.clone()).unwrap_or_default();
    let acts: Vec<&Event> = events.iter().filter(|e| e.by.is_some()).collect();
    let stated = decisions.iter().find(|d| d.reason.contains("power")).map(|d| d.reason.clone());
    let shadow = shadow_section(run, &checks);
    let at = |epoch: u64| format!("{} (t+{})", clock(epoch), duration(epoch.saturating_sub(started_at)));
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "coalmine report: " (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    p.kind { "coalmine release report" }
                    h1 { (run.name) }
                    p.target { (document.target()) ", " (candidate(run)) }
                    p.verdict data-verdict=(run.state()) { (verdict) }
                    p.reason { (reason) }
                    @if !acts.is_empty() {
                        ul.acts {
                            @for act in &acts {
                                li { (at(act.at)) ": " (act.what) }
                            }
                        }
                    }
                }
                section #traffic {
                    h2 { "Traffic" }
                    figure.chart data-chart="traffic" data-points=(weights.len()) {
                        p.legend {
                            @if document.moves_traffic() {
                                span.key style=(key(chart::CANARY)) {} "the candidate's share of requests, at each check"
                            } @else {
                                span.key style=(key(chart::CANARY)) {}
                                "what coalmine moved (nothing: SageMaker shifts the traffic itself, as the plan below says)"
                            }
                            " · the shaded bands are the phases; numbered lines, the events below"
                        }
                        (PreEscaped(traffic))
                    }
                    ol.events {
                        @for event in &events {
                            li { (at(event.at)) ": " (event.what) }
                        }
                    }
                }
                section #gates {
                    h2 { "What the judge weighed" }
                    @if gates.is_empty() {
                        p.none { "No check of this release had metrics to weigh: it ended before its first look, or on an alarm." }
                    }
                    @for gate in &gates { (gate) }
                }
                @if let Some(shadow) = &shadow { (shadow) }
                section #plan {
                    h2 { "The plan" }
                    @if let Some(stated) = &stated {
                        p.power { (stated) }
                    }
                    pre { (document.plan_text()) }
                }
                section #checks {
                    h2 { "Every check" }
                    table.checks {
                        thead { tr {
                            th { "time" } th { "phase" } th { "weight" } th { "decision" }
                            th { "canary requests" } th { "canary errors" } th { "canary p95" }
                            th { "stable requests" } th { "stable errors" } th { "stable p95" } th { "why" }
                        } }
                        tbody {
                            @for check in &checks {
                                (check_row(check, stages))
                            }
                        }
                    }
                }
                footer {
                    "Written by coalmine report at " (clock(generated_at)) " from execution " code { (run.execution_arn) }
                    ". The raw evidence (e-values, thresholds) is in each chart's table and in "
                    code { "coalmine status " (run.name) " --output json" } "."
                }
            }
        }
    };
    Ok(markup.into_string())
}

/// "Rolled back after 1m20s at stage 1 of 3 (5%)", "Promoted after 9m", "Running: ...".
fn verdict(run: &Run, started_at: u64, end: u64) -> String {
    let took = duration(end.saturating_sub(started_at));
    let at = run.progress.as_ref().map(|p| p.stage + 1);
    let stages = run.release.as_ref().map_or(0, Document::stages);
    let before = run.progress.as_ref().and_then(|p| p.history.last()).and_then(Decision::before_users);
    match (run.state().as_str(), at) {
        ("promoted", _) => format!("Promoted after {took}"),
        ("rolled_back", _) if before.is_some() => format!(
            "Rolled back after {took}, in the {}: no user was served by the candidate",
            before.map_or("shadow", BeforeUsers::name)
        ),
        ("rolled_back", Some(stage)) => format!("Rolled back after {took}, at stage {stage} of {stages}"),
        ("rolled_back", None) => format!("Rolled back after {took}"),
        (state, _) if run.running() => format!("Running ({state}) for {took}"),
        (state, _) => format!("Ended {state} after {took}"),
    }
}

fn candidate(run: &Run) -> String {
    match &run.release {
        Some(document) => document.headline(run.progress.as_ref(), "", false).trim_end_matches([',', ' ']).to_owned(),
        None => String::new(),
    }
}

/// What happened, in order: the shadow's start and end, each stage, approvals and
/// pauses (with who), the ending.
fn events(document: &Document, decisions: &[Decision], run: &Run) -> Vec<Event> {
    let moves = document.moves_traffic();
    let entered = |d: &Decision| {
        if moves {
            format!("stage {} at {}", d.stage + 1, percent(d.weight))
        } else {
            document.stage_name(d.stage)
        }
    };
    let mut events = Vec::new();
    let mut previous: Option<&Decision> = None;
    for d in decisions {
        let was = previous.map(|p| p.status);
        let what = match (d.status, was) {
            (_, None) if d.replay => {
                Some("replay started: the candidate and the stable answer the release's source".to_owned())
            }
            (_, None) if d.shadow => Some("shadow started: the candidate answers copies of live requests".to_owned()),
            (Status::Advanced, _) if previous.is_some_and(|p| p.replay) && !d.replay && d.shadow => {
                Some("replay passed; shadow started".to_owned())
            }
            (Status::Advanced, _) if previous.is_some_and(|p| p.replay) && !d.shadow => {
                Some(format!("replay passed; first stage at {}", percent(d.weight)))
            }
            (_, None) if moves => Some(format!("started at {}", percent(d.weight))),
            (_, None) => Some(format!("started: {}", document.stage_name(d.stage))),
            (Status::Advanced, _) if previous.is_some_and(|p| p.shadow) && !d.shadow => {
                Some(format!("shadow passed; first stage at {}", percent(d.weight)))
            }
            (Status::Advanced, Some(Status::AwaitingApproval)) => Some(format!("approved{}; {}", by(d), entered(d))),
            (Status::Advanced, _) => Some(format!("{}{}", entered(d), promoted_by(d))),
            (Status::AwaitingApproval, Some(Status::AwaitingApproval)) => None,
            (Status::AwaitingApproval, _) => Some(format!("waits for approval at {}", percent(d.weight))),
            (Status::Paused, Some(Status::Paused)) => None,
            (Status::Paused, _) => Some(format!("paused{}", by(d))),
            (_, Some(Status::Paused)) if d.status != Status::RolledBack => Some("resumed".to_owned()),
            (Status::Holding, Some(Status::Holding)) => None,
            (Status::Holding, _) => Some("holding: too little evidence to go on".to_owned()),
            (Status::Promoted, _) => Some(format!("promoted{}", promoted_by(d))),
            (Status::RolledBack, _) => Some(rolled_back(d, run)),
            (Status::Baking, _) if d.by.is_some() => Some(format!("stopped{}", by(d))),
            (Status::Baking, _) => None,
        };
        if let Some(what) = what {
            events.push(Event { at: d.at, what, by: d.by.clone() });
        }
        previous = Some(d);
    }
    events
}

fn by(d: &Decision) -> String {
    d.by.as_ref().map(|who| format!(" by {who}")).unwrap_or_default()
}

fn promoted_by(d: &Decision) -> String {
    d.by.as_ref().map(|who| format!(", promoted by {who}")).unwrap_or_default()
}

fn rolled_back(d: &Decision, run: &Run) -> String {
    let kind = run.progress.as_ref().and_then(|p| p.rolled_back_by.as_ref()).map(|b| b.short());
    match (&d.by, kind) {
        (Some(who), _) => format!("aborted by {who}: the candidate's traffic taken away"),
        (None, Some("alarm")) => "an alarm fired: the rollback function took the candidate's traffic away".to_owned(),
        (None, Some(kind)) => format!("rolled back ({kind})"),
        (None, None) => "rolled back".to_owned(),
    }
}

/// The stretches under one phase: the shadow, then each stage as the decisions entered it.
fn bands(document: &Document, checks: &[Check<'_>], end: f64) -> Vec<Band> {
    let mut bands: Vec<(Option<BeforeUsers>, usize, Band)> = Vec::new();
    for check in checks {
        let d = check.decision;
        if bands.last().is_some_and(|(before, stage, _)| *before == d.before_users() && *stage == d.stage) {
            continue;
        }
        if let Some((_, _, last)) = bands.last_mut() {
            last.to = check.t;
        }
        let label = d.before_users().map_or_else(|| document.stage_name(d.stage), |b| b.name().to_owned());
        bands.push((d.before_users(), d.stage, Band { from: check.t, to: end, label }));
    }
    bands.into_iter().map(|(_, _, band)| band).collect()
}

/// Per test: which side it reads, the unit, and the tolerance it holds the canary to.
struct Measure {
    unit: &'static str,
    canary: Option<f64>,
    stable: Option<f64>,
    tolerance: Option<f64>,
    tolerance_label: &'static str,
}

fn measure(test: &str, gates: &Gates, m: &MetricSnapshot) -> Option<Measure> {
    let (base, pinned) = match test.strip_suffix("_pinned") {
        Some(base) => (base, true),
        None => (test, false),
    };
    let canary = if pinned { m.pinned.as_ref()? } else { &m.canary };
    let stable = &m.stable;
    let error_rate = |s: &SideMetrics| rate(s).map(|r| r * 100.0);
    let measured = |unit, canary, stable, tolerance, tolerance_label| {
        Some(Measure { unit, canary, stable, tolerance, tolerance_label })
    };
    match base {
        "errors_vs_stable" => {
            let ratio = gates.max_error_rate_ratio.unwrap_or(1.0);
            let s = error_rate(stable);
            measured("%", error_rate(canary), s, s.map(|s| s * ratio), "stable's rate times its tolerance")
        }
        "error_rate_limit" => {
            measured("%", error_rate(canary), error_rate(stable), gates.max_error_rate.map(|l| l * 100.0), "limit")
        }
        "latency_vs_stable" => {
            let ratio = gates.max_p95_increase_ratio.unwrap_or(0.0);
            let s = stable.p95_ms;
            measured(" ms", canary.p95_ms, s, s.map(|s| s * (1.0 + ratio)), "stable's p95 plus its tolerance")
        }
        "latency_limit" => measured(" ms", canary.p95_ms, stable.p95_ms, gates.max_p95_latency_ms, "limit"),
        custom => {
            let i: usize = custom.strip_prefix("custom[")?.split(']').next()?.parse().ok()?;
            let gate = gates.custom.get(i)?;
            let kind = custom.rsplit(']').next().unwrap_or_default();
            let value = |side: &SideMetrics| -> Option<f64> {
                let v = side.custom.get(i).copied().flatten()?;
                match gate.kind() {
                    Some(GateKind::Rate) => side.denominator(i, gate).filter(|d| *d > 0.0).map(|d| v / d),
                    Some(GateKind::Count) if kind == "_vs_stable" => (side.requests > 0.0).then(|| v / side.requests),
                    _ => Some(v),
                }
            };
            let (c, s) = (value(canary), value(stable));
            let (tolerance, label) = match kind {
                "_vs_stable" | "_rate_vs_stable" => {
                    (s.zip(gate.max_increase_ratio).map(|(s, r)| s * (1.0 + r)), "stable's plus its tolerance")
                }
                "_down_vs_stable" => {
                    (s.zip(gate.max_decrease_ratio).map(|(s, r)| s * (1.0 - r)), "stable's minus its tolerance")
                }
                "_floor" => (gate.min, "floor"),
                _ => (gate.max, "limit"),
            };
            measured("", c, s, tolerance, label)
        }
    }
}

/// One chart per test the judge ran (a shadow's apart from the stages'), each with its
/// points in a table beneath: the numbers the chart draws, and the raw evidence.
fn gate_charts(document: &Document, checks: &[Check<'_>], span: &Span) -> Result<Vec<Markup>, String> {
    let mut order: Vec<(Option<BeforeUsers>, String)> = Vec::new();
    let mut names: BTreeMap<(Option<BeforeUsers>, String), String> = BTreeMap::new();
    for check in checks {
        for test in &check.tests {
            let key = (check.decision.before_users(), test.test.clone());
            if let std::collections::btree_map::Entry::Vacant(name) = names.entry(key.clone()) {
                name.insert(test.name.clone());
                order.push(key);
            }
        }
    }
    let mut charts = Vec::new();
    for kept in order {
        let (before, test) = (&kept.0, &kept.1);
        let gates = document.judged_by(*before);
        let mut rows = Vec::new();
        let mut series =
            GateSeries { unit: "", canary: Vec::new(), stable: Vec::new(), tolerance: Vec::new(), way: Vec::new() };
        let mut tolerance_label = "tolerance";
        let canary_label = match (*before, test.ends_with("_pinned")) {
            (_, true) => "pinned units",
            (Some(BeforeUsers::Replay), false) => "candidate (replay)",
            (Some(BeforeUsers::Shadow), false) => "candidate (shadow)",
            (None, false) => "canary",
        };
        for check in checks.iter().filter(|c| c.decision.before_users() == *before) {
            let Some(standing) = check.tests.iter().find(|t| &t.test == test) else { continue };
            let measured = check.metrics.as_ref().and_then(|m| measure(test, &gates, m));
            if let Some(m) = &measured {
                series.unit = m.unit;
                tolerance_label = m.tolerance_label;
                series.canary.extend(m.canary.map(|v| (check.t, v)));
                series.stable.extend(m.stable.map(|v| (check.t, v)));
                series.tolerance.extend(m.tolerance.map(|v| (check.t, v)));
            }
            series.way.push((check.t, standing.way_to_rollback() * 100.0));
            rows.push((check, standing.clone(), measured));
        }
        let name = &names[&kept];
        let svg = chart::gate(span, &series)?;
        let points = series.canary.len() + series.stable.len() + series.way.len();
        let id = format!("{}{}", before.map_or(String::new(), |b| format!("{}:", b.name())), test);
        let last = rows.last().map(|(_, s, _)| s.clone());
        let title = before.map_or_else(|| name.clone(), |b| format!("{}: {name}", b.name()));
        let unit = series.unit;
        let nearest = last.as_ref().map_or(0.0, Standing::way_to_rollback);
        charts.push((nearest, html! {
            figure.chart.gate data-chart=(id) data-points=(points) {
                figcaption {
                    strong { (title) }
                    @if let Some(last) = &last {
                        " — " (if last.rejects() { "crossed: " } else { "last check: " })
                        (if last.rejects() { last.detail.clone() } else { format!("{} of the way to a rollback", way(last.way_to_rollback())) })
                        @if !last.enforced { " (dry run: said, never rolls back)" }
                    }
                }
                p.legend {
                    span.key style=(key(chart::CANARY)) {} (canary_label)
                    span.key style=(key(chart::STABLE)) {} "stable"
                    span.key.dashed style=(key(chart::LIMIT)) {} (tolerance_label)
                    span.key style=(key(chart::ROLLBACK)) {} "beneath: the evidence's way to a rollback (100% rolls back)"
                }
                (PreEscaped(svg))
                details {
                    summary { "the numbers, check by check" }
                    table.points data-test=(id) {
                        thead { tr {
                            th { "time" } th { "canary" } th { "stable" } th { "tolerance" }
                            th { "to a rollback" } th { "e-value" } th { "rolls back at" }
                        } }
                        tbody {
                            @for (check, standing, m) in &rows {
                                tr data-at=(check.decision.at) {
                                    td { "t+" (duration(check.t as u64)) }
                                    td.canary { (value(m.as_ref().and_then(|m| m.canary), unit)) }
                                    td.stable { (value(m.as_ref().and_then(|m| m.stable), unit)) }
                                    td { (value(m.as_ref().and_then(|m| m.tolerance), unit)) }
                                    td.way { (way(standing.way_to_rollback())) }
                                    td.e { (e_value(standing.log_e)) }
                                    td { (e_value(standing.threshold)) }
                                }
                            }
                        }
                    }
                }
            }
        }));
    }
    // The gate that rolled the release back first, then the nearest to doing so.
    charts.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(charts.into_iter().map(|(_, chart)| chart).collect())
}

/// A legend's swatch, in the chart's own colour.
fn key(colour: plotters::style::RGBColor) -> String {
    format!("background: rgb({}, {}, {})", colour.0, colour.1, colour.2)
}

fn value(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{}{unit}", figure(v)))
}

/// An e-value from its logarithm: 37, or 1e12 when past any threshold.
fn e_value(log_e: f64) -> String {
    let e = log_e.exp();
    if e < 1e4 {
        format!("{e:.1}")
    } else {
        format!("{e:.2e}")
    }
}

fn check_row(check: &Check<'_>, stages: usize) -> Markup {
    let d = check.decision;
    let side = |s: Option<&SideMetrics>| -> (String, String, String) {
        match s {
            Some(s) => (
                format!("{:.0}", s.requests),
                if s.requests > 0.0 {
                    format!("{:.0} ({:.2}%)", s.errors, s.errors / s.requests * 100.0)
                } else {
                    "-".into()
                },
                s.p95_ms.map_or("-".into(), |p| format!("{p:.0} ms")),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        }
    };
    let (cr, ce, cp) = side(check.metrics.as_ref().map(|m| &m.canary));
    let (sr, se, sp) = side(check.metrics.as_ref().map(|m| &m.stable));
    html! {
        tr data-at=(d.at) data-status=(d.status.as_str()) {
            td { "t+" (duration(check.t as u64)) }
            td { (check.phase(stages)) }
            td { (percent(d.weight)) }
            td { (d.status.as_str()) }
            td.canary-requests { (cr) } td.canary-errors { (ce) } td { (cp) }
            td.stable-requests { (sr) } td { (se) } td { (sp) }
            td.why { (d.reason) }
        }
    }
}

/// A shadow phase's disagreement rates (the candidate's against the live answer, and the
/// stable asked again: the noise floor) and the examples it kept.
fn shadow_section(run: &Run, checks: &[Check<'_>]) -> Option<Markup> {
    let last = checks.iter().rev().find(|c| c.decision.shadow && c.metrics.is_some())?;
    let m = last.metrics.as_ref()?;
    let rate = |s: &SideMetrics| match (s.custom.first().copied().flatten(), s.custom_counts.first().copied().flatten())
    {
        (Some(d), Some(n)) if n > 0.0 => Some((d, n)),
        _ => None,
    };
    let said = |r: Option<(f64, f64)>| match r {
        Some((d, n)) => format!("{:.1}% ({d:.0} of {n:.0} compared)", d / n * 100.0),
        None => "not compared (a mirror: judged on errors and latency)".to_owned(),
    };
    let examples: Vec<Value> = run
        .progress
        .as_ref()
        .and_then(|p| p.kind.get("shadow"))
        .and_then(|s| s.get("examples"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let field = |e: &Value, name: &str| e.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    // A replay's reference is the stable's first answer (a golden line) or the logged one.
    let (title, reference, done) = match last.decision.before_users() {
        Some(BeforeUsers::Replay) => ("The replay", "the reference", "replayed"),
        _ => ("The shadow", "the answer users got", "shadowed"),
    };
    Some(html! {
        section #shadow {
            h2 { (title) }
            p.disagreement {
                "Disagreeing with " (reference) ": candidate " span.candidate-rate { (said(rate(&m.canary))) }
                "; the stable asked again (the noise floor) " span.stable-rate { (said(rate(&m.stable))) }
                ", over " (format!("{:.0}", m.canary.requests)) " requests " (done) "."
            }
            @if !examples.is_empty() {
                table.examples {
                    thead { tr { th { "request" } th { "the stable answered" } th { "the candidate answered" } } }
                    tbody {
                        @for e in &examples {
                            tr { td { code { (field(e, "request")) } } td { code { (field(e, "stable")) } } td { code { (field(e, "candidate")) } } }
                        }
                    }
                }
            }
        }
    })
}

/// An epoch second as UTC: "2026-12-06 16:45:51Z".
fn clock(epoch: u64) -> String {
    let date = aws_smithy_types::DateTime::from_secs(epoch as i64);
    date.fmt(aws_smithy_types::date_time::Format::DateTime)
        .map(|s| s.replace('T', " "))
        .unwrap_or_else(|_| epoch.to_string())
}

const STYLE: &str = r#"
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1f23; max-width: 960px; margin: 2rem auto; padding: 0 1rem; }
h1 { margin: 0.1rem 0; font-size: 1.7rem; }
h2 { margin-top: 2.2rem; font-size: 1.2rem; border-bottom: 1px solid #dde; padding-bottom: 0.2rem; }
.kind { color: #667; text-transform: uppercase; font-size: 0.75rem; letter-spacing: 0.06em; margin: 0; }
.target { color: #445; margin: 0.1rem 0 0.8rem; }
.verdict { font-size: 1.25rem; font-weight: 600; margin: 0.4rem 0; }
.verdict[data-verdict="rolled_back"] { color: #b3202e; }
.verdict[data-verdict="promoted"] { color: #1d7a3a; }
.reason { background: #f6f7f9; border-left: 4px solid #99a; padding: 0.5rem 0.8rem; margin: 0.4rem 0; }
.acts { padding-left: 1.2rem; }
figure.chart { margin: 1rem 0; }
figure.chart svg { max-width: 100%; height: auto; }
figcaption { margin-bottom: 0.3rem; }
.legend { font-size: 0.8rem; color: #445; margin: 0.2rem 0; }
.key { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin: 0 0.3rem 0 0.9rem; }
.key:first-child { margin-left: 0; }
.key.dashed { height: 0; border-top: 2px dashed #464646; background: none !important; }
ol.events li { margin: 0.1rem 0; }
table { border-collapse: collapse; font-size: 0.85rem; width: 100%; }
th, td { border-bottom: 1px solid #e4e6ea; padding: 0.25rem 0.4rem; text-align: left; vertical-align: top; }
td.why { max-width: 28rem; }
pre { background: #f6f7f9; padding: 0.7rem; overflow-x: auto; font-size: 0.8rem; white-space: pre-wrap; }
code { font-size: 0.85em; }
details summary { cursor: pointer; color: #445; }
footer { margin-top: 2.5rem; color: #667; font-size: 0.8rem; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(at: u64, stage: usize, weight: f64, status: Status, evidence: Option<Value>) -> Decision {
        Decision {
            at,
            stage,
            weight,
            status,
            reason: format!("{} at {at}", status.as_str()),
            evidence,
            shadow: false,
            replay: false,
            by: None,
        }
    }

    fn run(decisions: &[Decision], state: &str) -> Run {
        let release = Document::parse(&serde_json::json!({
            "release": "r", "target": {"lambda": {"function": "f", "alias": "live"}}, "canary_version": "4",
            "stages": [{"percent": 5, "bake_seconds": 60}, {"percent": 100, "bake_seconds": 60}], "check_every_seconds": 60,
            "gates": {"max_error_rate": 0.05, "custom": [{"namespace": "AI", "metric": "OutputTokens", "stat": "Average",
                      "max_increase_ratio": 0.2, "dimensions": {"Version": "{version}"}}]}
        }))
        .unwrap();
        let mut progress: coalmine::release::AnyProgress = serde_json::from_value(serde_json::json!({
            "stage": 0, "weight": 0.0, "stable": "3",
            "last_written": {"stable": "3", "canary": null, "weight": 0.0},
            "started_at": 1000, "stage_entered_at": 1000, "status": "rolled_back", "rolled_back_by": "health",
            "wait_seconds": 0, "ticks": 3, "reason": "Rolled back by its health check at stage 1 of 2 (5%): tokens",
            "history": []
        }))
        .unwrap();
        progress.history = decisions.to_vec();
        Run {
            name: "r".into(),
            execution_arn: "arn:exec".into(),
            status: "FAILED".into(),
            error: Some(if state == "rolled_back" { "CanaryRolledBack".into() } else { "X".into() }),
            cause: None,
            started_at: 1000,
            stopped_at: Some(1130),
            release: Some(release),
            progress: Some(progress),
            failing: None,
            now: None,
        }
    }

    fn evidence(canary_tokens: f64, log_e: f64) -> Value {
        serde_json::json!({
            "verdict": "healthy", "reasons": ["x"],
            "metrics": {
                "canary": {"requests": 100.0, "errors": 1.0, "p95_ms": 850.0, "custom": [canary_tokens]},
                "stable": {"requests": 1900.0, "errors": 9.5, "p95_ms": 800.0, "custom": [400.0]}
            },
            "tests": [
                {"test": "errors_vs_stable", "name": "errors", "log_e": 0.0, "threshold": 6.0, "detail": "", "enforced": true},
                {"test": "custom[0]_vs_stable", "name": "OutputTokens", "log_e": log_e, "threshold": 6.0,
                 "detail": "canary AI/OutputTokens Average p50 800 against the stable's 400", "enforced": true}
            ]
        })
    }

    #[test]
    fn a_rolled_back_release_says_why_at_the_top_and_charts_each_gate_with_its_tolerance() {
        let decisions = [
            decision(1000, 0, 0.05, Status::Advanced, None),
            decision(1060, 0, 0.05, Status::Baking, Some(evidence(600.0, 2.0))),
            decision(1120, 0, 0.0, Status::RolledBack, Some(evidence(800.0, 7.5))),
        ];
        let page = page(&run(&decisions, "rolled_back"), &decisions, 2000).unwrap();
        assert!(page.contains(r#"data-verdict="rolled_back">Rolled back after 2m10s, at stage 1 of 2"#), "{page}");
        assert!(page.contains("Rolled back by its health check at stage 1 of 2 (5%): tokens"));
        assert!(page.contains(r#"data-chart="custom[0]_vs_stable" data-points="6""#), "two checks, three series");
        let crossed = page.find(r#"data-chart="custom[0]_vs_stable""#).unwrap();
        assert!(crossed < page.find(r#"data-chart="errors_vs_stable""#).unwrap(), "the gate that crossed comes first");
        assert!(
            page.contains("crossed: canary AI/OutputTokens Average p50 800 against the stable&#39;s 400")
                || page.contains("crossed: canary AI/OutputTokens Average p50 800 against the stable's 400"),
            "{page}"
        );
        // The tolerance is the stable's 400 plus 20%, drawn and listed.
        assert!(page.contains("<td>480</td>"), "{page}");
        assert!(page.contains(r#"<td class="way">100%</td>"#) && page.contains(r#"<td class="way">33%</td>"#));
        assert!(!page.contains("<script"), "nothing runs in the page");
        for fetch in ["src=", "href=", "url(", "@import"] {
            assert!(!page.contains(fetch), "nothing is fetched when it opens: {fetch}");
        }
        let prose = page.split("<details").next().unwrap();
        assert!(!prose.contains("e-value") && !prose.contains("e = "), "no e-values in the prose");
    }

    #[test]
    fn events_name_who_approved_and_who_aborted() {
        let mut approved = decision(1120, 1, 1.0, Status::Advanced, None);
        approved.by = Some("jane".into());
        let mut aborted = decision(1180, 1, 0.0, Status::RolledBack, None);
        aborted.by = Some("sam".into());
        let decisions = [
            decision(1000, 0, 0.05, Status::Advanced, None),
            decision(1060, 0, 0.05, Status::AwaitingApproval, None),
            decision(1090, 0, 0.05, Status::AwaitingApproval, None),
            approved,
            aborted,
        ];
        let run = run(&decisions, "rolled_back");
        let said: Vec<String> =
            events(run.release.as_ref().unwrap(), &decisions, &run).into_iter().map(|e| e.what).collect();
        assert_eq!(
            said,
            [
                "started at 5%",
                "waits for approval at 5%",
                "approved by jane; stage 2 at 100%",
                "aborted by sam: the candidate's traffic taken away"
            ]
        );
    }
}
