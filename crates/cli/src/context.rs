//! Where the CLI's AWS comes from: the SDK's default configuration (the same as the
//! functions'), the stack's outputs for the state machine and the topic, and who is
//! operating.

use std::collections::HashMap;
use std::fmt;

use coalmine::azure::DeveloperIdentity;
use coalmine::clouds::Clouds;
use coalmine::config::Config;
use coalmine::domain::mapping::TargetMapping;
use tokio::sync::OnceCell;

use crate::{Exit, StackArgs};

/// A failure to report: one line, and the exit code a CI step branches on.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub exit: Exit,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError { message: message.into(), exit }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<coalmine::Error> for CliError {
    fn from(e: coalmine::Error) -> Self {
        let exit = match e {
            coalmine::Error::InvalidRelease(_) | coalmine::Error::Refused(_) => Exit::Invalid,
            _ => Exit::Error,
        };
        CliError { message: e.to_string(), exit }
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// What to do about an AWS call that got no answer, by what kept it from one.
pub fn advice(detail: &str) -> Option<String> {
    let local = std::env::var("AWS_ENDPOINT_URL").ok().filter(|u| !u.is_empty());
    if detail.contains("found no AWS credentials") {
        return Some(
            "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for the local AWS: source \
             .local-aws/env)"
                .to_owned(),
        );
    }
    if detail.contains("could not reach the service") || detail.contains("no answer before") {
        return Some(match local {
            Some(url) => format!(
                "nothing answers at {url} (AWS_ENDPOINT_URL): is the local AWS running? make local-aws-start, then \
                 source .local-aws/env"
            ),
            None => "check the network, and AWS_REGION".to_owned(),
        });
    }
    None
}

pub const STATE_MACHINE_OUTPUT: &str = "ReleaseStateMachineArn";
pub const TOPIC_OUTPUT: &str = "AlertTopicArn";

pub struct Context {
    pub args: StackArgs,
    pub sdk: aws_config::SdkConfig,
    pub sfn: aws_sdk_sfn::Client,
    cloudformation: aws_sdk_cloudformation::Client,
    outputs: OnceCell<HashMap<String, String>>,
}

impl Context {
    pub async fn new(args: StackArgs) -> Context {
        let sdk = coalmine::aws::sdk_config().await;
        Context::from_sdk(args, sdk)
    }

    pub fn from_sdk(args: StackArgs, sdk: aws_config::SdkConfig) -> Context {
        Context {
            args,
            sfn: aws_sdk_sfn::Client::new(&sdk),
            cloudformation: aws_sdk_cloudformation::Client::new(&sdk),
            sdk,
            outputs: OnceCell::new(),
        }
    }

    pub async fn state_machine(&self) -> CliResult<String> {
        match &self.args.state_machine {
            Some(arn) => Ok(arn.clone()),
            None => self.output(STATE_MACHINE_OUTPUT, "--state-machine ARN (or COALMINE_STATE_MACHINE_ARN)").await,
        }
    }

    pub async fn topic(&self) -> CliResult<String> {
        match &self.args.topic {
            Some(arn) => Ok(arn.clone()),
            None => self.output(TOPIC_OUTPUT, "--topic ARN (or COALMINE_TOPIC_ARN)").await,
        }
    }

    async fn output(&self, key: &str, instead: &str) -> CliResult<String> {
        let stack = &self.args.stack;
        let outputs = self
            .outputs
            .get_or_try_init(|| async {
                let out = self.cloudformation.describe_stacks().stack_name(stack).send().await.map_err(|e| {
                    let detail = coalmine::aws::aws_error("cloudformation:DescribeStacks", e).to_string();
                    let next = match advice(&detail) {
                        Some(fix) => format!("{fix}; or pass {instead}"),
                        None => format!("deploy it (make deploy), name another with --stack, or pass {instead}"),
                    };
                    CliError::new(Exit::Error, format!("cannot read the outputs of stack {stack}: {detail}; {next}"))
                })?;
                let outputs = out.stacks().first().map(|s| s.outputs()).unwrap_or_default();
                Ok::<_, CliError>(
                    outputs
                        .iter()
                        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                        .collect(),
                )
            })
            .await?;
        outputs.get(key).cloned().ok_or_else(|| {
            CliError::new(
                Exit::Error,
                format!("stack {stack} has no output {key}: is it a coalmine stack? Or pass {instead}"),
            )
        })
    }

    /// Who is operating: `--as`, else the caller's AWS identity (a role session's name,
    /// a user's name), else the local user.
    pub async fn operator(&self) -> String {
        if let Some(name) = &self.args.operator {
            return name.clone();
        }
        let sts = aws_sdk_sts::Client::new(&self.sdk);
        let from_aws =
            sts.get_caller_identity().send().await.ok().and_then(|out| out.arn).and_then(|arn| {
                arn.rsplit(['/', ':']).next().filter(|n| !n.is_empty() && *n != "root").map(str::to_owned)
            });
        from_aws.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "an operator".to_owned())
    }

    /// The library's adapters, as the functions build them (`topic` for the messages),
    /// but signed in to Azure as whoever runs the command: a service principal in the
    /// environment, a workload identity, or `az login`.
    pub fn adapters(&self, topic: Option<String>) -> Clouds {
        let config = Config {
            topic_arn: topic.unwrap_or_default(),
            rollback_targets: TargetMapping::default(),
            sagemaker_max_wait: std::time::Duration::from_secs(60),
            // The CLI only closes feeds (abort); the stepper opens them.
            shadow_function_arn: None,
            azure_credentials_secret: None,
            azure_max_wait: std::time::Duration::from_secs(60),
            webhook_secret: None,
            handoff_function: None,
            claims_table: None,
            // The CLI never publishes a cohort; the stepper does.
            cohorts: None,
        };
        Clouds::with_azure_identity(&self.sdk, &config, Box::new(DeveloperIdentity::default()))
    }

    /// The ARN an execution of release `name` has: `coalmine start` names each after its
    /// release.
    pub async fn execution_arn(&self, name: &str) -> CliResult<String> {
        let machine = self.state_machine().await?;
        Ok(format!("{}:{name}", machine.replacen(":stateMachine:", ":execution:", 1)))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::types::{Output, Stack, StackStatus};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;

    fn args(stack: &str) -> StackArgs {
        StackArgs { stack: stack.into(), state_machine: None, topic: None, operator: Some("jane".into()) }
    }

    fn context_with(rule: &aws_smithy_mocks::Rule, stack: &str) -> Context {
        let client = mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &[rule]);
        let sdk = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        Context { cloudformation: client, ..Context::from_sdk(args(stack), sdk) }
    }

    #[tokio::test]
    async fn the_state_machine_and_topic_come_from_the_stack_outputs_read_once() {
        let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .match_requests(|r| r.stack_name() == Some("coalmine-prod"))
            .then_output(|| {
                let output = |k: &str, v: &str| Output::builder().output_key(k).output_value(v).build();
                DescribeStacksOutput::builder()
                    .stacks(
                        Stack::builder()
                            .stack_name("coalmine-prod")
                            .stack_status(StackStatus::CreateComplete)
                            .outputs(output(STATE_MACHINE_OUTPUT, "arn:aws:states:us-east-1:1:stateMachine:Release-Ab"))
                            .outputs(output(TOPIC_OUTPUT, "arn:aws:sns:us-east-1:1:coalmine-AlertTopic"))
                            .build(),
                    )
                    .build()
            });
        let context = context_with(&describe, "coalmine-prod");

        assert_eq!(context.state_machine().await.unwrap(), "arn:aws:states:us-east-1:1:stateMachine:Release-Ab");
        assert_eq!(context.topic().await.unwrap(), "arn:aws:sns:us-east-1:1:coalmine-AlertTopic");
        assert_eq!(
            context.execution_arn("ai-handler-42").await.unwrap(),
            "arn:aws:states:us-east-1:1:execution:Release-Ab:ai-handler-42"
        );
        assert_eq!(describe.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_missing_stack_says_what_to_do() {
        let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks).then_error(|| {
            aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("ValidationError")
                    .message("Stack with id coalmine does not exist")
                    .build(),
            )
        });
        let err = context_with(&describe, "coalmine").state_machine().await.unwrap_err();
        assert!(
            err.message.starts_with(
                "cannot read the outputs of stack coalmine: cloudformation:DescribeStacks failed: ValidationError: \
                 Stack with id coalmine does not exist"
            ),
            "{}",
            err.message
        );
        assert!(
            err.message.ends_with(
                "deploy it (make deploy), name another with --stack, or pass --state-machine ARN (or \
                 COALMINE_STATE_MACHINE_ARN)"
            ),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_call_that_got_no_answer_says_why_and_what_to_do() {
        let none = advice("cloudformation:DescribeStacks failed: found no AWS credentials: ...").unwrap();
        assert!(none.starts_with("set AWS_PROFILE, or AWS_ACCESS_KEY_ID"), "{none}");
        let unreachable =
            advice("x failed: could not reach the service: dispatch failure: Connection refused").unwrap();
        assert!(unreachable.contains("AWS_ENDPOINT_URL") || unreachable.contains("network"), "{unreachable}");
        assert_eq!(advice("x failed: ValidationError: Stack with id s does not exist"), None);
    }
}
