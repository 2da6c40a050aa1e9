//! `coalmine`: operate canary releases. The third shell on the library, beside the
//! rollback and stepper functions: every rule it applies (validation, the start's
//! checks, operator requests, rolling back) is the library's own.

mod chart;
mod commands;
mod context;
mod out;
mod render;
mod report;
mod runs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Canary releases of AI models on AWS: validate, start, follow, pause, approve,
/// promote, abort.
#[derive(Parser, Debug)]
#[command(name = "coalmine", version, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// What a CI step branches on; see [`Exit`].
const EXIT_CODES: &str = "Exit codes:
  0  done: the release was promoted (start --wait, status), or the command did what was asked
  1  the command failed: AWS, a name not found, a file that cannot be read
  2  usage: an argument or flag is wrong
  3  the release was rolled back
  4  invalid, nothing moved: the release file, or its target is not ready
  5  the release failed (after undoing), or was stopped outside coalmine";

#[derive(clap::Args, Debug, Clone)]
pub struct StackArgs {
    /// The coalmine stack whose outputs name the state machine and the topic.
    #[arg(long, global = true, env = "COALMINE_STACK", default_value = "coalmine")]
    pub stack: String,
    /// The release state machine, instead of the stack's output.
    #[arg(long, global = true, env = "COALMINE_STATE_MACHINE_ARN")]
    pub state_machine: Option<String>,
    /// The team's topic, instead of the stack's output (abort and rollback tell it).
    #[arg(long, global = true, env = "COALMINE_TOPIC_ARN")]
    pub topic: Option<String>,
    /// Who is operating, as the team's messages and the release's record say it
    /// (default: the caller's AWS identity).
    #[arg(long = "as", global = true, env = "COALMINE_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check release files offline, as the stepper would, and show each one's plan.
    Validate {
        /// The release files (JSON), each checked on its own.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also check the first tick's preconditions against AWS, moving nothing.
        #[arg(long)]
        live: bool,
        /// Text for people, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Start a release: one execution, named after the release.
    Start {
        /// The release file (JSON); the execution is named after its release.
        file: PathBuf,
        /// Follow it to the end; exit 0 promoted, 3 rolled back, 4 invalid, 5 failed.
        #[arg(long)]
        wait: bool,
    },
    /// Releases in flight and recently ended.
    List {
        /// How many ended releases to show beside the ones in flight.
        #[arg(long, default_value_t = 10)]
        recent: usize,
        /// Whole target names, the next check, and each side by name (wider than 120 columns).
        #[arg(long)]
        wide: bool,
        /// Text for people, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// A release's stages, its current bake, and a chart of what the judge saw.
    Status {
        /// The release's name, as in its file.
        release: String,
        /// Keep following until it ends.
        #[arg(long)]
        watch: bool,
        /// Every check, instead of one line per stage.
        #[arg(long)]
        checks: bool,
        /// Text for people, or JSON for scripts (the raw evidence included).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// One self-contained HTML page about a release, for an incident or a pull request:
    /// why it ended as it did, the traffic, each gate's chart, every check.
    Report {
        /// The release's name, as in its file.
        release: String,
        /// Where to write the page (default: RELEASE.html here); `-` for standard output.
        #[arg(short = 'o', long = "output-file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Which version a unit (a user, a conversation) of a cohort release gets now, and why.
    Route {
        /// The release's name, as in its file.
        release: String,
        /// The unit's id, as the router's caller passes it.
        #[arg(long)]
        unit: String,
        /// An attribute the caller passes with it (group=internal); repeat for more.
        #[arg(long = "attr", value_parser = attribute)]
        attributes: Vec<(String, String)>,
        /// Text for people, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Hold a release at its weight after its bake; the judge keeps judging.
    Pause {
        /// The release's name, as in its file.
        release: String,
    },
    /// Let a paused release go on.
    Resume {
        /// The release's name, as in its file.
        release: String,
    },
    /// Let a stage that waits for approval go on.
    Approve {
        /// The release's name, as in its file.
        release: String,
    },
    /// End the current bake now; --full goes straight to 100% and ends promoted.
    Promote {
        /// The release's name, as in its file.
        release: String,
        /// Go straight to 100% and end promoted, instead of the next stage.
        #[arg(long)]
        full: bool,
    },
    /// Take a release's canary traffic away now, and end it rolled back.
    Abort {
        /// The release's name, as in its file.
        release: String,
        /// Why, for the team's message and the record.
        #[arg(long)]
        reason: String,
        /// Wait until the execution has ended.
        #[arg(long)]
        wait: bool,
    },
    /// The rollback function's job by hand, for an incident outside any release:
    /// lambda:FUNCTION:ALIAS or sagemaker:ENDPOINT:STABLE:CANARY.
    Rollback {
        /// What to roll back: lambda:FUNCTION:ALIAS or sagemaker:ENDPOINT:STABLE:CANARY.
        #[arg(value_parser = target)]
        target: coalmine::Target,
        /// Why, for the team's message and the record.
        #[arg(long)]
        reason: String,
    },
}

/// A target on the command line; a malformed one is a usage error (exit 2).
fn attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE (group=internal)")),
    }
}

fn target(text: &str) -> Result<coalmine::Target, String> {
    text.parse().map_err(|e: coalmine::domain::target::BadTarget| e.reason)
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// What a CI/CD step branches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The command could not do what was asked (AWS, a name not found, ...).
    Error = 1,
    RolledBack = 3,
    /// Nothing moved: the release is invalid, or its target is not ready.
    Invalid = 4,
    /// The release failed (after undoing), or its safety rollback failed, or it was
    /// stopped outside coalmine.
    Failed = 5,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("coalmine: cannot start: {e}");
            return ExitCode::from(Exit::Error as u8);
        }
    };
    let exit = runtime.block_on(commands::run(cli));
    ExitCode::from(exit as u8)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_argument_and_flag_says_what_it_is_and_the_help_lists_the_exit_codes() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let help = cli.clone().render_long_help().to_string();
        for exit in [Exit::Ok, Exit::Error, Exit::RolledBack, Exit::Invalid, Exit::Failed] {
            assert!(help.contains(&format!("\n  {}  ", exit as u8)), "exit {exit:?} not in --help:\n{help}");
        }
        assert!(help.contains("\n  2  usage"), "{help}");
        let undescribed: Vec<String> = std::iter::once(&cli)
            .chain(cli.get_subcommands())
            .flat_map(|command| {
                command
                    .get_arguments()
                    .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
                    .filter(|arg| arg.get_help().is_none())
                    .map(move |arg| format!("{} {}", command.get_name(), arg.get_id()))
            })
            .collect();
        assert!(undescribed.is_empty(), "no description: {undescribed:?}");
        assert!(cli.get_subcommands().all(|c| c.get_about().is_some()));
    }
}
