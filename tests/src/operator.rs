//! The `coalmine` CLI as an operator runs it against the local AWS: signed in as "jane",
//! pointed at a deployed stack's state machine and topic.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{bootstrap_path, poll, Deployed, Scratch};

/// How long an operator waits for a release to reach what they expect.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub struct Operator<'a> {
    pub deployed: &'a Deployed,
    pub topic: &'a str,
    pub dir: Scratch,
    /// More environment: an Azure identity, for Azure releases.
    pub env: Vec<(&'static str, String)>,
}

impl Operator<'_> {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bootstrap_path("coalmine"));
        command
            .args(args)
            .env("COALMINE_STATE_MACHINE_ARN", &self.deployed.state_machine_arn)
            .env("COALMINE_TOPIC_ARN", self.topic)
            .env("COALMINE_OPERATOR", "jane")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        command
    }

    /// Runs `coalmine ARGS`; its exit code and what it printed.
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let Output { status, stdout, stderr } = self.command(args).output().expect("coalmine runs");
        let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
        (status.code().unwrap_or(-1), text)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, text) = self.run(args);
        assert_eq!(code, 0, "coalmine {args:?}:\n{text}");
        text
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("coalmine runs")
    }

    pub fn file(&self, release: &Value) -> String {
        let path = self.dir.path().join(format!("{}.json", release["release"].as_str().unwrap()));
        std::fs::write(&path, serde_json::to_vec_pretty(release).unwrap()).unwrap();
        path.display().to_string()
    }

    /// `status --output json` until `check` holds for it.
    pub async fn until(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        poll(PATIENCE, || async {
            let (_, text) = self.run(&["status", name, "--output", "json"]);
            serde_json::from_str::<Value>(&text).ok().filter(|status| check(status))
        })
        .await
        .unwrap_or_else(|| panic!("{name}: not {what} within {PATIENCE:?}: {}", self.run(&["status", name]).1))
    }
}
