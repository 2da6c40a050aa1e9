//! `coalmine report`'s page as a person opens it: written by the real CLI, opened in
//! headless Chromium (`tests/browser/report.mjs`, Playwright driving Debian's browser),
//! and held to what the execution itself recorded. A screenshot of each report is kept
//! in `target/test-artifacts/`.

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::operator::Operator;
use crate::{workspace_root, LocalAws};

#[derive(Debug, Deserialize)]
pub struct Chart {
    pub id: String,
    pub points: usize,
    pub width: f64,
    pub caption: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Row {
    pub at: u64,
    pub status: String,
    pub canary_requests: Option<String>,
}

/// What the page showed.
#[derive(Debug, Deserialize)]
pub struct Seen {
    pub verdict: Option<String>,
    pub state: Option<String>,
    pub reason: Option<String>,
    pub acts: Vec<String>,
    pub events: Vec<String>,
    pub charts: Vec<Chart>,
    pub checks: Vec<Row>,
    pub shadow: Option<String>,
    /// Rows of the shadow's examples: a request, and what each side answered.
    pub examples: usize,
    pub prose: String,
    pub errors: Vec<String>,
    pub fetched: Vec<String>,
}

impl Seen {
    pub fn chart(&self, id: &str) -> &Chart {
        self.charts.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no chart {id} in {:#?}", self.charts))
    }
}

/// Writes release `name`'s report with the CLI, opens it in Chromium, screenshots it as
/// `report-{kind}.png`, and fails if the page logged an error, fetched anything, drew a
/// chart without points, or shows a check the execution did not record as recorded.
pub async fn report_in_a_browser(op: &Operator<'_>, local: &LocalAws, name: &str, kind: &str) -> Seen {
    let artifacts = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/test-artifacts");
    let page = artifacts.join(format!("report-{kind}.html"));
    let said = op.ok(&["report", name, "-o", &page.display().to_string()]);
    assert_eq!(said.trim(), page.display().to_string(), "report prints where it wrote the page");
    let shot: PathBuf = artifacts.join(format!("report-{kind}.png"));
    let out = Command::new("node")
        .arg(workspace_root().join("tests/browser/report.mjs"))
        .args([&page, &shot])
        .current_dir(workspace_root())
        .output()
        .expect("node runs (scripts/setup-browser installs Chromium and playwright-core)");
    assert!(
        out.status.success(),
        "the browser could not open the report: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Seen = serde_json::from_slice(&out.stdout).expect("the browser script's JSON");
    assert!(seen.errors.is_empty(), "the page logged errors: {:?}", seen.errors);
    assert!(seen.fetched.is_empty(), "the page fetched: {:?}", seen.fetched);
    for chart in &seen.charts {
        assert!(chart.points > 0 && chart.width > 100.0, "chart {} shows no data: {chart:?}", chart.id);
    }
    assert!(!seen.prose.contains("e = ") && !seen.prose.contains("10^"), "an e-value in the prose:\n{}", seen.prose);
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000, "a screenshot at {}", shot.display());
    agrees_with_the_execution(&seen, local, &op.deployed.execution_arn(name)).await;
    seen
}

/// Every check the execution recorded is a row of the page, with its status and the
/// canary's requests as the evidence counted them; the ending is the execution's.
async fn agrees_with_the_execution(seen: &Seen, local: &LocalAws, execution_arn: &str) {
    let mut recorded: Vec<Value> = Vec::new();
    let mut next = None;
    loop {
        let out = local
            .sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .max_results(1000)
            .set_next_token(next)
            .send()
            .await
            .expect("get execution history");
        for event in out.events() {
            let data = event
                .state_exited_event_details()
                .and_then(|d| d.output())
                .or_else(|| event.state_entered_event_details().and_then(|d| d.input()));
            let Some(state) = data.and_then(|d| serde_json::from_str::<Value>(d).ok()) else { continue };
            for decision in state.pointer("/progress/history").and_then(Value::as_array).into_iter().flatten() {
                if !recorded.contains(decision) {
                    recorded.push(decision.clone());
                }
            }
        }
        next = out.next_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen.checks.len(), recorded.len(), "one row per check the execution recorded: {:#?}", seen.checks);
    for (row, decision) in seen.checks.iter().zip(&recorded) {
        assert_eq!(Some(row.at), decision["at"].as_u64(), "{row:?} against {decision}");
        assert_eq!(Some(row.status.as_str()), decision["status"].as_str(), "{row:?} against {decision}");
        let requests = decision.pointer("/evidence/metrics/canary/requests").and_then(Value::as_f64);
        let shown = requests.map_or("-".to_owned(), |r| format!("{r:.0}"));
        assert_eq!(row.canary_requests.as_deref(), Some(shown.as_str()), "{row:?} against {decision}");
    }
    let described = local.sfn.describe_execution().execution_arn(execution_arn).send().await.expect("describe");
    if let Some(cause) = described.cause() {
        assert_eq!(seen.reason.as_deref(), Some(cause), "the reason at the top is the execution's own");
    }
}
