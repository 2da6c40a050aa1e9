//! Each command: read what it needs, call the library, say what happened and what
//! comes next. Results go to stdout, progress and errors to stderr.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coalmine::clouds::Clouds;
use coalmine::release::core::operate::Command as Request;
use coalmine::release::core::preflight;
use coalmine::release::core::{Ports, StepDeps};
use coalmine::release::Document;
use coalmine::text::describe;
use coalmine::Target;
use serde_json::{json, Value};

use crate::context::{CliError, CliResult, Context};
use crate::out::{say, say_part};
use crate::render;
use crate::runs::{aws_failure, Run};
use crate::{Cli, Command, Exit, Output, StackArgs};

/// How often a followed release is looked at again.
const POLL: Duration = Duration::from_secs(2);

pub async fn run(cli: Cli) -> Exit {
    match execute(cli).await {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("coalmine: {e}");
            e.exit
        }
    }
}

async fn execute(cli: Cli) -> CliResult<Exit> {
    let Cli { command, stack } = cli;
    match command {
        Command::Validate { files, live, output } => validate(&files, live, output, stack).await,
        Command::Start { file, wait } => start(&Context::new(stack).await, &file, wait).await,
        Command::List { recent, wide, output } => list(&Context::new(stack).await, recent, wide, output).await,
        Command::Status { release, watch, checks, output } => {
            status(&Context::new(stack).await, &release, watch, checks, output).await
        }
        Command::Report { release, file } => report(&Context::new(stack).await, &release, file).await,
        Command::Route { release, unit, attributes, output } => {
            route(&Context::new(stack).await, &release, &unit, &attributes, output).await
        }
        Command::Pause { release } => operate(&Context::new(stack).await, &release, Request::Pause).await,
        Command::Resume { release } => operate(&Context::new(stack).await, &release, Request::Resume).await,
        Command::Approve { release } => operate(&Context::new(stack).await, &release, Request::Approve).await,
        Command::Promote { release, full } => {
            operate(&Context::new(stack).await, &release, Request::Promote { full }).await
        }
        Command::Abort { release, reason, wait } => abort(&Context::new(stack).await, &release, &reason, wait).await,
        Command::Rollback { target, reason } => rollback(&Context::new(stack).await, &target, &reason).await,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Why a release file cannot be used: it could not be read, or every problem it has.
#[derive(Debug)]
struct Refusal {
    error: CliError,
    problems: Vec<String>,
}

/// The file as JSON and as a release, strictly validated: the same rules as the stepper,
/// every problem at once.
fn read_release(file: &Path) -> Result<(Value, Document), Refusal> {
    let shown = file.display();
    let refuse = |exit, message: String| Refusal { error: CliError::new(exit, message), problems: Vec::new() };
    let text =
        std::fs::read_to_string(file).map_err(|e| refuse(Exit::Error, format!("{shown}: cannot read it: {e}")))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| refuse(Exit::Invalid, format!("{shown}: not JSON: {e}")))?;
    let problems = Document::problems(&json);
    if !problems.is_empty() {
        let (count, s) = (problems.len(), if problems.len() == 1 { "" } else { "s" });
        let message = format!("{shown}: invalid, {count} problem{s}:\n  {}", problems.join("\n  "));
        return Err(Refusal { error: CliError::new(Exit::Invalid, message), problems });
    }
    let release = Document::parse(&json).map_err(|e| refuse(Exit::Invalid, format!("{shown}: {e}")))?;
    Ok((json, release))
}

async fn validate(files: &[std::path::PathBuf], live: bool, output: Output, stack: StackArgs) -> CliResult<Exit> {
    let context = if live { Some(Context::new(stack).await) } else { None };
    let mut exit = Exit::Ok;
    let mut reports = Vec::new();
    for file in files {
        let mut report = json!({"file": file.display().to_string()});
        match read_release(file) {
            Err(Refusal { error, problems }) => {
                exit = Exit::Invalid;
                report["valid"] = json!(false);
                report["error"] = json!(error.message);
                report["problems"] = json!(problems);
                // A refusal is an error: on stderr, as cargo and the compilers say theirs.
                if output == Output::Text {
                    eprintln!("{error}");
                }
            }
            Ok((_, release)) => {
                report["valid"] = json!(true);
                report["plan"] = release.plan_json();
                if output == Output::Text {
                    say_part!("{}", release.plan_text());
                }
                if let Some(context) = &context {
                    let checks = live_checks(context, &release).await;
                    if checks.iter().any(preflight::Check::blocks) {
                        exit = Exit::Invalid;
                    }
                    report["checks"] = checks
                        .iter()
                        .map(|c| match &c.found {
                            Ok(detail) => json!({"check": c.what, "ok": true, "detail": detail}),
                            Err(e) => {
                                json!({"check": c.what, "ok": false, "advisory": c.advisory, "detail": e.to_string()})
                            }
                        })
                        .collect();
                    if output == Output::Text {
                        say_part!("  live, moving nothing:\n{}", render::checks(&checks));
                    }
                }
            }
        }
        reports.push(report);
    }
    if output == Output::Json {
        say!("{}", serde_json::to_string_pretty(&reports).unwrap_or_default());
    }
    Ok(exit)
}

/// The first tick's preconditions and the metrics the judge will need, against AWS.
async fn live_checks(context: &Context, release: &Document) -> Vec<preflight::Check> {
    let aws = context.adapters(None);
    let checks = release.preflight(&deps(&aws), now()).await;
    checks
}

/// The adapters as the stepper uses them.
fn deps(aws: &Clouds) -> impl Ports + '_ {
    StepDeps::new(&aws.router, &aws.notifier, &aws.alarms, &aws.metrics)
}

async fn start(context: &Context, file: &Path, wait: bool) -> CliResult<Exit> {
    let (json, release) = read_release(file).map_err(|r| r.error)?;
    let machine = context.state_machine().await?;
    let name = release.name();
    let arn =
        match context.sfn.start_execution().state_machine_arn(&machine).name(name).input(json.to_string()).send().await
        {
            Ok(out) => {
                say!("started release {name} on {}: execution {}", release.target(), out.execution_arn());
                out.execution_arn().to_owned()
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_execution_already_exists()) => {
                let arn = context.execution_arn(name).await?;
                let run = Run::load(context, &arn).await?;
                let same = context
                    .sfn
                    .describe_execution()
                    .execution_arn(&arn)
                    .send()
                    .await
                    .ok()
                    .and_then(|d| d.input().and_then(|i| serde_json::from_str::<Value>(i).ok()))
                    .is_some_and(|input| input == json);
                if !(run.running() && same) {
                    return Err(CliError::new(
                        Exit::Invalid,
                        format!(
                        "release {name} already has an execution ({}); a new attempt needs a new name in the file, \
                         e.g. {name}-2",
                        run.state()
                    ),
                    ));
                }
                say!("release {name} is already running (execution {arn}): this start repeats it, nothing doubled");
                arn
            }
            Err(e) => return Err(aws_failure("states:StartExecution", e)),
        };
    if !wait {
        say!("follow it: coalmine status {name} --watch");
        return Ok(Exit::Ok);
    }
    follow(context, &arn).await
}

/// Prints a release's decisions as they come, until it ends; its ending's exit code.
async fn follow(context: &Context, arn: &str) -> CliResult<Exit> {
    let mut printed: HashSet<(u64, String)> = HashSet::new();
    let mut last_line = String::new();
    loop {
        let run = Run::load(context, arn).await?;
        if let (Some(release), Some(progress)) = (&run.release, &run.progress) {
            for decision in &progress.history {
                if printed.insert((decision.at, decision.reason.clone())) {
                    let line = render::decision_line(decision, release.stages());
                    if line != last_line {
                        say!("  [t+{:>6}] {line}", render::duration(decision.at.saturating_sub(progress.started_at)));
                    }
                    last_line = line;
                }
            }
        }
        if let Some(ending) = render::ending(&run) {
            say!("{ending}");
            return Ok(run.exit());
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn list(context: &Context, recent: usize, wide: bool, output: Output) -> CliResult<Exit> {
    let runs = Run::list(context, recent).await?;
    match output {
        Output::Json => say!("{}", serde_json::to_string_pretty(&runs).unwrap_or_default()),
        Output::Text if runs.is_empty() => say!("no releases yet: coalmine start FILE starts one"),
        Output::Text => say_part!("{}", render::table(&runs, now(), wide)),
    }
    Ok(Exit::Ok)
}

async fn status(context: &Context, name: &str, watch: bool, checks: bool, output: Output) -> CliResult<Exit> {
    let arn = context.execution_arn(name).await?;
    let mut run = Run::load(context, &arn).await?;
    run.now = serving_now(context, &run).await;
    if output == Output::Json {
        say!("{}", serde_json::to_string_pretty(&run).unwrap_or_default());
        return Ok(run.exit());
    }
    if !watch || !run.running() {
        let decisions = crate::runs::every_decision(context, &arn).await?;
        say!("{}", render::status(&run, &decisions, now(), checks).join("\n"));
        return Ok(run.exit());
    }
    if !std::io::stdout().is_terminal() {
        say!("{}", render::header(&run));
        return follow(context, &arn).await;
    }
    watch_live(context, &arn, run).await
}

/// `coalmine report`: the page, written where asked; its path on stdout, so a script
/// can attach it.
async fn report(context: &Context, name: &str, file: Option<std::path::PathBuf>) -> CliResult<Exit> {
    let arn = context.execution_arn(name).await?;
    let run = Run::load(context, &arn).await?;
    let decisions = crate::runs::every_decision(context, &arn).await?;
    let page = crate::report::page(&run, &decisions, now()).map_err(|e| CliError::new(Exit::Error, e))?;
    let file = file.unwrap_or_else(|| format!("{name}.html").into());
    if file.as_os_str() == "-" {
        crate::out::print(&page);
        return Ok(Exit::Ok);
    }
    std::fs::write(&file, page).map_err(|e| {
        CliError::new(
            Exit::Error,
            format!("cannot write the report to {}: {e}; name another file with -o", file.display()),
        )
    })?;
    say!("{}", file.display());
    Ok(Exit::Ok)
}

/// `coalmine route`: the answer every "why did I get the new model?" ticket asks for,
/// from the release's stage and who serves its target now (so a rollback shows).
async fn route(
    context: &Context,
    name: &str,
    unit: &str,
    attributes: &[(String, String)],
    output: Output,
) -> CliResult<Exit> {
    let arn = context.execution_arn(name).await?;
    let run = Run::load(context, &arn).await?;
    let release = run.release.as_ref().ok_or_else(|| {
        CliError::new(Exit::Error, format!("release {name}'s execution input is not a release coalmine can read"))
    })?;
    let aws = context.adapters(None);
    let serving = match release.serving_now(&deps(&aws)).await {
        Some(read) => read?,
        None => return Err(CliError::new(Exit::Invalid, format!("release {name} routes no units by cohort"))),
    };
    let attributes: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let routed = release.route(run.progress.as_ref(), &serving, unit, &attributes)?;
    if output == Output::Json {
        say!("{}", serde_json::to_string_pretty(&routed).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    let side = release.target().side(&routed.version);
    let role = if routed.candidate { "the candidate" } else { "the stable" };
    say!("{unit} gets {side} ({role}) through alias {}: {}", routed.alias, routed.why);
    Ok(Exit::Ok)
}

/// Who serves a canary release's target now, read from it: not what the release last
/// wrote, which an alarm, a person or a failed tick may have changed since.
async fn serving_now(context: &Context, run: &Run) -> Option<String> {
    let release = run.release.as_ref()?;
    let aws = context.adapters(None);
    let target = release.target();
    let serving = release.serving_now(&deps(&aws)).await?;
    match serving {
        Ok(live) => Some(describe(&target, &live)),
        Err(e) => {
            eprintln!("coalmine: {target} could not be read ({e}); showing what the release left");
            None
        }
    }
}

/// `status --watch` on a terminal: new decisions scroll above a live bar of the bake.
async fn watch_live(context: &Context, arn: &str, mut run: Run) -> CliResult<Exit> {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("  bake {wide_bar} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.println(render::header(&run));
    let mut shown = 0;
    loop {
        if let (Some(document), Some(progress)) = (&run.release, &run.progress) {
            let lines = render::timeline(document.stages(), progress);
            for line in lines.iter().skip(shown) {
                bar.println(line);
            }
            shown = lines.len();
            if let Some(bake) = document.bake(progress, now()) {
                bar.set_length(bake.longest_seconds.max(1));
                bar.set_position(bake.elapsed_seconds);
                bar.set_message(bake.line.trim().to_owned());
            }
        }
        if let Some(ending) = render::ending(&run) {
            bar.finish_and_clear();
            say!("{ending}");
            return Ok(run.exit());
        }
        tokio::time::sleep(POLL).await;
        run = Run::load(context, arn).await?;
    }
}

/// How long a command waits for a release that has just been started to take its
/// first step (a tick is seconds; its Lambda may be cold).
const FIRST_TICK: Duration = Duration::from_secs(30);

/// A release in flight, with its execution: what the operator commands act on. One
/// started a moment ago is given its first tick.
async fn running_release(context: &Context, name: &str) -> CliResult<(Run, Document)> {
    let arn = context.execution_arn(name).await?;
    let mut run = Run::load(context, &arn).await?;
    let waited = std::time::Instant::now();
    if run.running() && run.progress.is_none() {
        eprintln!("coalmine: release {name} has not taken its first step yet; waiting for it");
    }
    while run.running() && run.progress.is_none() && waited.elapsed() < FIRST_TICK {
        tokio::time::sleep(POLL / 2).await;
        run = Run::load(context, &arn).await?;
    }
    if !run.running() {
        return Err(CliError::new(Exit::Invalid, format!("release {name} has ended ({}); nothing to do", run.state())));
    }
    let release = run.release.clone().ok_or_else(|| {
        CliError::new(Exit::Error, format!("release {name}'s execution input is not a release coalmine can read"))
    })?;
    Ok((run, release))
}

async fn operate(context: &Context, name: &str, request: Request) -> CliResult<Exit> {
    let (_, release) = running_release(context, name).await?;
    let who = context.operator().await;
    let aws = context.adapters(None);
    let stamp = release.command(&deps(&aws), &who, request).await?;
    let at = stamp.stage.map(|(at, of)| format!(" at stage {at} of {of}")).unwrap_or_default();
    let within = format!("its next check, within {}", render::duration(release.check_every_seconds()));
    let what = match request {
        Request::Pause => format!(
            "paused by {who}{at}: once this stage's bake is over it holds its weight, still judged and rolled back \
             if unhealthy, until coalmine resume {name}"
        ),
        Request::Resume => format!("resumed by {who}{at}: it goes on at {within}"),
        Request::Approve => format!("approved by {who}{at}: it goes on at {within}"),
        Request::Promote { full: false } => {
            format!("{who} ended the bake{at}: it advances at {within}, unless it is unhealthy")
        }
        Request::Promote { full: true } => {
            format!("{who} asked for a full promotion{at}: it goes to 100% and ends promoted at {within}, unless it is unhealthy")
        }
    };
    say!("release {name}: {what}");
    Ok(Exit::Ok)
}

async fn abort(context: &Context, name: &str, reason: &str, wait: bool) -> CliResult<Exit> {
    let (run, release) = running_release(context, name).await?;
    let who = context.operator().await;
    let aws = context.adapters(Some(context.topic().await?));
    let what = release.abort(&deps(&aws), &run.execution_arn, &who, reason).await?;
    say!("release {name}: aborted by {who}: {what}");
    if !wait {
        return Ok(Exit::Ok);
    }
    match follow(context, &run.execution_arn).await? {
        Exit::RolledBack => Ok(Exit::Ok),
        other => Ok(other),
    }
}

async fn rollback(context: &Context, target: &Target, reason: &str) -> CliResult<Exit> {
    let who = context.operator().await;
    let aws = context.adapters(Some(context.topic().await?));
    let outcome = coalmine::rollback::by_hand(&aws.router, &aws.notifier, target, &who, reason).await?;
    say!(
        "{target}: {} by {who}: {} now; the team was told.",
        match outcome {
            coalmine::rollback::ZeroOutcome::RolledBack { .. } => "rolled back",
            _ => "already had no canary traffic, nothing changed,",
        },
        describe(target, outcome.after())
    );
    Ok(Exit::Ok)
}
