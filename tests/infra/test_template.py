"""The SAM template, rendered by samtranslator with a platform team's parameters: every
IAM statement grants exactly the intended actions on exactly the intended resources, and
the EventBridge rule's pattern matches the sample events that should roll back and no
others (checked by the local AWS's own TestEventPattern)."""

import json
import os
import pathlib

import boto3
import pytest
import samtranslator
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = pathlib.Path(__file__).resolve().parents[2]
REGION, ACCOUNT = "us-east-1", "123456789012"
PARAMS = {
    "AlarmNamePrefix": "coalmine-",
    "LambdaTargetFunctionArns": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ai-handler,arn:aws:lambda:{REGION}:{ACCOUNT}:function:ai-ranker",
    "SageMakerEndpointArns": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ai-model-endpoint",
    "RollbackTargets": "",
    "NotificationEmail": "",
    "LogLevel": "INFO",
    "ReplaySetArns": "arn:aws:s3:::team-evals/golden/*",
}
LAMBDA_ARNS = PARAMS["LambdaTargetFunctionArns"].split(",")
ALARMS = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:coalmine-*"
LAMBDA_LOG_GROUPS = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/*"
SHADOW_LOG_GROUP = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/<ShadowFunction>"
SAGEMAKER = ("sagemaker:AddTags", "sagemaker:DescribeEndpoint", "sagemaker:ListTags", "sagemaker:UpdateEndpointWeightsAndCapacities")


class ManagedPolicies:
    """samtranslator's bundled map of AWS managed policies: no IAM call."""

    def load(self):
        path = pathlib.Path(samtranslator.__file__).parent / "internal/data/aws_managed_policies.json"
        return json.loads(path.read_text())["aws"]


def render(params, path="infra/template.yaml"):
    template = yaml_parse((ROOT / path).read_text())
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "DefinitionUri"):
            if key in props:  # as `sam validate` does: local paths are uploaded at deploy
                props[key] = f"s3://render/{name}"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return transform(template, params, ManagedPolicies())


class Resolver:
    """Evaluates the intrinsic functions the template uses, with the given parameters."""

    def __init__(self, template, params):
        self.params = {**{k: v["Default"] for k, v in template.get("Parameters", {}).items() if "Default" in v}, **params}
        self.params.update({"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"})
        for name, spec in template.get("Parameters", {}).items():
            if spec["Type"] == "CommaDelimitedList" and isinstance(self.params[name], str):
                self.params[name] = [] if self.params[name] == "" else self.params[name].split(",")
        self.conditions = {}
        for name, expr in template.get("Conditions", {}).items():
            self.conditions[name] = self.resolve(expr)

    def ref(self, name):
        return self.params[name] if name in self.params else f"<{name}>"

    def resolve(self, node):
        if isinstance(node, list):
            return [v for v in (self.resolve(n) for n in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return NO_VALUE if arg == "AWS::NoValue" else self.ref(arg)
            if key == "Fn::GetAtt":
                return f"<{arg[0]}.{arg[1]}>"
            if key == "Fn::Join":
                return arg[0].join(self.resolve(arg[1]))
            if key == "Fn::Split":
                return self.resolve(arg[1]).split(arg[0])
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                values = {**self.params, **extra}
                out, i = "", 0
                while i < len(text):
                    if text.startswith("${", i):
                        j = text.index("}", i)
                        name = text[i + 2 : j]
                        value = values.get(name, f"<{name}>")
                        out += value if isinstance(value, str) else ",".join(value)
                        i = j + 1
                    else:
                        out += text[i]
                        i += 1
                return out
            if key == "Fn::If":
                return self.resolve(arg[1] if self.conditions[arg[0]] else arg[2])
            if key == "Fn::Equals":
                a, b = self.resolve(arg)
                return a == b
            if key == "Fn::Not":
                return not self.resolve(arg[0])
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NO_VALUE}


NO_VALUE = object()


def statements(resolved, role):
    """(sorted actions, sorted resources) of every statement of a role's inline policies."""
    out = []
    for policy in resolved["Resources"][role]["Properties"].get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            assert st["Effect"] == "Allow"
            out.append((tuple(sorted(actions)), tuple(sorted(resources))))
    return sorted(out)


@pytest.fixture(scope="module")
def resolved():
    rendered = render(PARAMS)
    return Resolver(rendered, PARAMS).resolve(rendered)


def both_forms(arns):
    return tuple(sorted(arns + [a + ":*" for a in arns]))


def test_rollback_role_grants_exactly_what_a_rollback_needs(resolved):
    assert statements(resolved, "RollbackFunctionRole") == sorted([
        (("sqs:SendMessage",), ("<RollbackFailures.Arn>",)),
        (("sns:Publish",), ("<AlertTopic>",)),
        (("kms:Decrypt", "kms:GenerateDataKey"), ("<AlertKey.Arn>",)),
        (("cloudwatch:DescribeAlarmHistory", "cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource"), (ALARMS,)),
        (("lambda:GetAlias", "lambda:UpdateAlias"), both_forms(LAMBDA_ARNS)),
        (SAGEMAKER, (PARAMS["SageMakerEndpointArns"],)),
        (("sagemaker:UpdateEndpoint",), (PARAMS["SageMakerEndpointArns"],)),
        (("logs:DeleteSubscriptionFilter", "logs:DescribeSubscriptionFilters"), (LAMBDA_LOG_GROUPS,)),
        (("cloudwatch:SetAlarmState",), (ALARMS,)),
        (("cloudwatch:PutMetricData",), ("*",)),
    ])


def test_stepper_role_grants_exactly_what_a_tick_needs(resolved):
    assert statements(resolved, "StepperFunctionRole") == sorted([
        (("sns:Publish",), ("<AlertTopic>",)),
        (("kms:Decrypt", "kms:GenerateDataKey"), ("<AlertKey.Arn>",)),
        (("cloudwatch:DescribeAlarms",), (ALARMS,)),
        (("dynamodb:GetItem", "dynamodb:PutItem"), ("<ReleaseClaims.Arn>",)),
        (("cloudwatch:GetMetricData",), ("*",)),
        (("lambda:GetAlias", "lambda:GetFunctionConfiguration", "lambda:UpdateAlias"), both_forms(LAMBDA_ARNS)),
        (SAGEMAKER, (PARAMS["SageMakerEndpointArns"],)),
        (("sagemaker:DescribeEndpointConfig", "sagemaker:UpdateEndpoint"),
         tuple(sorted([PARAMS["SageMakerEndpointArns"], f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/*"]))),
        (("cloudwatch:PutMetricAlarm", "cloudwatch:SetAlarmState"), (ALARMS,)),
        (("cloudwatch:PutMetricData",), ("*",)),
        (("logs:DeleteSubscriptionFilter", "logs:DescribeSubscriptionFilters", "logs:PutSubscriptionFilter"), (LAMBDA_LOG_GROUPS,)),
        (("logs:FilterLogEvents",), (SHADOW_LOG_GROUP, SHADOW_LOG_GROUP + ":*")),
        (COHORT_PUBLISHING, COHORT_RESOURCES),
        (("s3:GetObject",), (PARAMS["ReplaySetArns"],)),
        (("logs:FilterLogEvents",), (LAMBDA_LOG_GROUPS,)),
        (("lambda:InvokeFunction",), ("<ShadowFunction.Arn>",)),
    ])


def test_a_replay_reads_only_the_named_golden_sets_and_without_them_no_bucket_at_all():
    params = {**PARAMS, "ReplaySetArns": ""}
    rendered = render(params)
    resolved = Resolver(rendered, params).resolve(rendered)
    actions = {a for acts, _ in statements(resolved, "StepperFunctionRole") for a in acts}
    assert not any(a.startswith("s3:") for a in actions), actions
    assert "lambda:InvokeFunction" in actions, "recent requests can still be replayed"


APPCONFIG = f"arn:aws:appconfig:{REGION}:{ACCOUNT}"
COHORT_PUBLISHING = ("appconfig:CreateConfigurationProfile", "appconfig:CreateHostedConfigurationVersion",
                     "appconfig:ListConfigurationProfiles", "appconfig:StartDeployment")
COHORT_RESOURCES = tuple(sorted([
    f"{APPCONFIG}:application/<CohortConfig>",
    f"{APPCONFIG}:application/<CohortConfig>/configurationprofile/*",
    f"{APPCONFIG}:application/<CohortConfig>/environment/<CohortEnvironment>",
    f"{APPCONFIG}:deploymentstrategy/<CohortDeploymentStrategy>",
]))


def test_the_cohort_front_may_invoke_only_its_models_two_aliases_and_read_only_its_cohorts():
    params = {"ModelFunctionName": "chat", "CohortApplicationId": "abc1234", "CohortEnvironmentId": "env5678"}
    rendered = render(params, "infra/router.yaml")
    resolved = Resolver(rendered, params).resolve(rendered)
    function = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:chat"
    assert statements(resolved, "CohortRouterRole") == sorted([
        (("lambda:InvokeFunction",), (f"{function}:canary", f"{function}:live")),
        (("appconfig:GetLatestConfiguration", "appconfig:StartConfigurationSession"),
         (f"{APPCONFIG}:application/abc1234/environment/env5678/configuration/*",)),
    ])
    env = resolved["Resources"]["CohortRouter"]["Properties"]["Environment"]["Variables"]
    assert env == {"MODEL_FUNCTION": "chat", "PRIMARY_ALIAS": "live", "COHORTS_APPLICATION": "abc1234",
                   "COHORTS_ENVIRONMENT": "env5678", "SERVED_TABLE": ""}
    url = resolved["Resources"]["CohortRouterUrl"]["Properties"]
    assert url["AuthType"] == "AWS_IAM", "callers sign: an open URL would let anyone spend the model"

    # Given the stack's served table, it may also record which version served a unit:
    # UpdateItem on that table, and nothing else of it (no reading others' records).
    recording = {**params, "ServedTableName": "coalmine-ServedTable-1"}
    rendered = render(recording, "infra/router.yaml")
    resolved = Resolver(rendered, recording).resolve(rendered)
    assert (("dynamodb:UpdateItem",), (f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/coalmine-ServedTable-1",)) in \
        statements(resolved, "CohortRouterRole")
    assert resolved["Resources"]["CohortRouter"]["Properties"]["Environment"]["Variables"]["SERVED_TABLE"] == \
        "coalmine-ServedTable-1"


def test_the_stack_keeps_which_version_served_each_unit_for_thirty_days_and_says_where(resolved):
    table = resolved["Resources"]["ServedTable"]["Properties"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["profile", "unit"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    assert resolved["Outputs"]["ServedTableName"]["Value"] == "<ServedTable>"


def test_only_the_stepper_publishes_cohorts_and_nothing_on_a_rollbacks_path_touches_appconfig(resolved):
    for role in ("RollbackFunctionRole", "ShadowFunctionRole"):
        actions = {a for acts, _ in statements(resolved, role) for a in acts}
        assert not any(a.startswith("appconfig:") for a in actions), (role, actions)
    strategy = resolved["Resources"]["CohortDeploymentStrategy"]["Properties"]
    # A bake would hold every later stage's share (one deployment per environment at a time).
    assert (strategy["DeploymentDurationInMinutes"], strategy["FinalBakeTimeInMinutes"]) == (0, 0)
    env = resolved["Resources"]["StepperFunction"]["Properties"]["Environment"]["Variables"]
    assert (env["COHORTS_APPLICATION"], env["COHORTS_ENVIRONMENT"], env["COHORTS_DEPLOYMENT_STRATEGY"]) == (
        "<CohortConfig>", "<CohortEnvironment>", "<CohortDeploymentStrategy>")


def test_the_stepper_may_ask_after_the_release_state_machines_executions_and_no_others(resolved):
    policy = resolved["Resources"]["StepperReadsExecutions"]["Properties"]
    assert policy["Roles"] == ["<StepperFunctionRole>"]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "states:DescribeExecution")
    assert statement["Resource"] == f"arn:aws:states:{REGION}:{ACCOUNT}:execution:<ReleaseStateMachine.Name>:*"
    stepper = resolved["Resources"]["StepperFunction"]["Properties"]["Environment"]["Variables"]
    assert stepper["CLAIMS_TABLE"] == "<ReleaseClaims>"


def test_shadow_role_may_only_ask_the_targets_versions_and_count_in_its_namespace(resolved):
    assert statements(resolved, "ShadowFunctionRole") == sorted([
        (("lambda:InvokeFunction",), tuple(sorted(a + ":*" for a in LAMBDA_ARNS))),
        (("cloudwatch:PutMetricData",), ("*",)),
        (("kms:Decrypt",), ("<AlertKey.Arn>",)),
    ])
    policies = resolved["Resources"]["ShadowFunctionRole"]["Properties"]["Policies"]
    puts = [st for p in policies for st in p["PolicyDocument"]["Statement"] if "cloudwatch:PutMetricData" in st["Action"]]
    assert [st.get("Condition") for st in puts] == [{"StringEquals": {"cloudwatch:namespace": "Coalmine/Shadow"}}]
    rust = (ROOT / "crates/coalmine/src/domain/shadow.rs").read_text()
    assert 'NAMESPACE: &str = "Coalmine/Shadow";' in rust, "the policy and the code name one namespace"


def test_only_lambdas_log_groups_in_this_account_deliver_to_the_shadow(resolved):
    permission = resolved["Resources"]["ShadowFromLogs"]["Properties"]
    assert (permission["Principal"], permission["SourceAccount"]) == ("logs.amazonaws.com", ACCOUNT)
    assert permission["SourceArn"] == LAMBDA_LOG_GROUPS + ":*"
    function = resolved["Resources"]["ShadowFunction"]["Properties"]
    assert function["ReservedConcurrentExecutions"] == 10
    assert resolved["Resources"]["StepperFunction"]["Properties"]["Environment"]["Variables"]["SHADOW_FUNCTION_ARN"] == "<ShadowFunction.Arn>"


@pytest.mark.parametrize("role", ["StepperFunctionRole", "RollbackFunctionRole"])
def test_metric_data_goes_only_into_the_tripwire_namespace(resolved, role):
    policies = resolved["Resources"][role]["Properties"]["Policies"]
    puts = [st for p in policies for st in p["PolicyDocument"]["Statement"] if "cloudwatch:PutMetricData" in st["Action"]]
    assert [st.get("Condition") for st in puts] == [{"StringEquals": {"cloudwatch:namespace": "coalmine/Tripwire"}}]
    rust = (ROOT / "crates/coalmine/src/domain/deployment.rs").read_text()
    assert 'TRIPWIRE_NAMESPACE: &str = "coalmine/Tripwire";' in rust, "the policy and the code name one namespace"


def test_state_machine_may_invoke_only_the_stepper(resolved):
    grants = statements(resolved, "ReleaseStateMachineRole")
    invoke = [g for g in grants if "lambda:InvokeFunction" in g[0]]
    assert invoke == [(("lambda:InvokeFunction",), (f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:<StepperFunction>*",))]
    definition_subs = resolved["Resources"]["ReleaseStateMachine"]["Properties"]["DefinitionSubstitutions"]
    assert definition_subs == {"StepperFunctionArn": "<StepperFunction.Arn>"}


def test_star_appears_only_where_no_resource_can_be_named(resolved):
    # PutMetricData is held to the tripwire's namespace by a condition (tested above).
    allowed = {"cloudwatch:GetMetricData", "cloudwatch:PutMetricData"} | {a for a in ("logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
               "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies",
               "logs:DescribeLogGroups")}
    for role in ("RollbackFunctionRole", "StepperFunctionRole", "ShadowFunctionRole", "ReleaseStateMachineRole"):
        for actions, resources in statements(resolved, role):
            if "*" in resources:
                assert set(actions) <= allowed, (role, actions)
            assert all(not a.endswith(":*") or a.startswith("arn:") for a in actions), (role, actions)


def test_without_targets_no_traffic_permission_is_granted():
    params = {**PARAMS, "LambdaTargetFunctionArns": "", "SageMakerEndpointArns": ""}
    rendered = render(params)
    resolved = Resolver(rendered, params).resolve(rendered)
    for role in ("RollbackFunctionRole", "StepperFunctionRole", "ShadowFunctionRole"):
        actions = {a for acts, _ in statements(resolved, role) for a in acts}
        assert not any(a.startswith(("lambda:", "sagemaker:", "logs:")) for a in actions), (role, actions)


AZURE_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:coalmine/azure-AbCdEf"


@pytest.fixture(scope="module")
def with_azure():
    params = {**PARAMS, "AzureCredentialsSecretArn": AZURE_SECRET}
    rendered = render(params)
    return Resolver(rendered, params).resolve(rendered)


def test_azure_credentials_may_be_read_by_the_two_functions_that_sign_in_and_by_no_other(with_azure):
    read = (("secretsmanager:GetSecretValue",), (AZURE_SECRET,))
    for role in ("RollbackFunctionRole", "StepperFunctionRole"):
        assert read in statements(with_azure, role), role
        env = with_azure["Resources"][role.removesuffix("Role")]["Properties"]["Environment"]["Variables"]
        assert env["AZURE_CREDENTIALS_SECRET_ARN"] == AZURE_SECRET
        # A read, then a write, may each wait this long: both must end inside the timeout.
        timeout = with_azure["Resources"][role.removesuffix("Role")]["Properties"]["Timeout"]
        assert 2 * int(env["AZURE_UPDATE_MAX_WAIT_SECONDS"]) < timeout, role
    for role in ("ShadowFunctionRole", "AlertWebhookFunctionRole"):
        assert read not in statements(with_azure, role), role


def test_the_alert_webhook_may_read_its_token_and_hand_alerts_to_the_rollback_function_only(with_azure):
    assert statements(with_azure, "AlertWebhookFunctionRole") == sorted([
        (("secretsmanager:GetSecretValue",), ("<AlertWebhookToken>",)),
        (("kms:Decrypt",), ("<AlertKey.Arn>",)),
        (("lambda:InvokeFunction",), ("<RollbackFunction.Arn>",)),
    ])
    function = with_azure["Resources"]["AlertWebhookFunction"]
    props = function["Properties"]
    assert function["Condition"] == "HasAzure"
    assert props["Code"]["S3Key"] == "AlertWebhookFunction", "the rollback binary, deployed once more"
    assert (props["ReservedConcurrentExecutions"], props["Timeout"]) == (2, 10)
    assert props["Environment"]["Variables"] == {
        "SNS_TOPIC_ARN": "<AlertTopic>",
        "ALERT_WEBHOOK_SECRET_ARN": "<AlertWebhookToken>",
        "ROLLBACK_FUNCTION_ARN": "<RollbackFunction.Arn>",
    }
    url = with_azure["Resources"]["AlertWebhookFunctionUrl"]
    assert url["Properties"]["AuthType"] == "NONE" and url["Condition"] == "HasAzure"
    token = with_azure["Resources"]["AlertWebhookToken"]["Properties"]
    assert token["GenerateSecretString"]["PasswordLength"] >= 32, "at least the webhook's MIN_TOKEN_LEN"
    rust = (ROOT / "crates/coalmine/src/rollback/webhook.rs").read_text()
    assert "pub const MIN_TOKEN_LEN: usize = 32;" in rust


def test_without_azure_there_is_no_public_url_and_no_secret_is_read(resolved):
    conditional = {name for name, r in resolved["Resources"].items() if r.get("Condition") == "HasAzure"}
    assert {"AlertWebhookFunction", "AlertWebhookFunctionUrl", "AlertWebhookToken"} <= conditional
    for role in ("RollbackFunctionRole", "StepperFunctionRole"):
        assert not any(a.startswith("secretsmanager:") for acts, _ in statements(resolved, role) for a in acts), role


def test_functions_are_arm64_al2023_cargolambda_with_json_logs(resolved):
    for name in ("RollbackFunction", "StepperFunction", "ShadowFunction"):
        props = resolved["Resources"][name]["Properties"]
        assert props["Runtime"] == "provided.al2023" and props["Architectures"] == ["arm64"] and props["Handler"] == "bootstrap"
        assert props["LoggingConfig"]["LogFormat"] == "JSON" and props["TracingConfig"] == {"Mode": "Active"}
    invoke_config = resolved["Resources"]["RollbackFunctionEventInvokeConfig"]["Properties"]
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == "<RollbackFailures.Arn>"
    permission = resolved["Resources"]["RollbackFromAlarmActions"]["Properties"]
    assert permission["Principal"] == "lambda.alarms.cloudwatch.amazonaws.com" and permission["SourceArn"] == ALARMS


def test_x86_only_teams_choose_the_architecture():
    params = {**PARAMS, "Architecture": "x86_64"}
    rendered = render(params)
    resolved = Resolver(rendered, params).resolve(rendered)
    for name in ("RollbackFunction", "StepperFunction"):
        assert resolved["Resources"][name]["Properties"]["Architectures"] == ["x86_64"]


def test_an_alarm_topic_subscribes_the_rollback_function_to_coalmines_alarms_only(resolved):
    for name in ("RollbackFromAlarmTopic", "RollbackFromAlarmTopicPermission"):
        assert resolved["Resources"][name]["Condition"] == "HasAlarmTopic"
    assert resolved["Conditions"]["HasAlarmTopic"] is False, "no topic given, no subscription"
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:team-paging"
    params = {**PARAMS, "AlarmTopicArn": topic}
    rendered = render(params)
    resolver = Resolver(rendered, params)
    assert resolver.conditions["HasAlarmTopic"] is True
    with_topic = resolver.resolve(rendered)["Resources"]
    subscription = with_topic["RollbackFromAlarmTopic"]["Properties"]
    assert (subscription["TopicArn"], subscription["Protocol"], subscription["Endpoint"]) == (topic, "lambda", "<RollbackFunction.Arn>")
    assert subscription["FilterPolicyScope"] == "MessageBody"
    assert subscription["FilterPolicy"] == {"AlarmName": [{"prefix": "coalmine-"}], "NewStateValue": ["ALARM"]}
    permission = with_topic["RollbackFromAlarmTopicPermission"]["Properties"]
    assert (permission["Principal"], permission["SourceArn"]) == ("sns.amazonaws.com", topic)
    # The filter passes the shipped SNS sample: its message's name and state.
    message = json.loads(json.loads((ROOT / "events/alarm-lambda-canary.sns.json").read_text())["Records"][0]["Sns"]["Message"])
    assert message["AlarmName"].startswith("coalmine-") and message["NewStateValue"] == "ALARM"


def test_the_key_lets_cloudwatch_logs_encrypt_the_release_log_group(resolved):
    statements = resolved["Resources"]["AlertKey"]["Properties"]["KeyPolicy"]["Statement"]
    logs = [s for s in statements if s["Principal"] == {"Service": f"logs.{REGION}.amazonaws.com"}]
    assert len(logs) == 1 and "kms:GenerateDataKey*" in logs[0]["Action"] and "kms:Decrypt*" in logs[0]["Action"]
    assert logs[0]["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:*"
    assert resolved["Resources"]["ReleaseLogs"]["Properties"]["KmsKeyId"] == "<AlertKey.Arn>"


def event_files():
    return sorted(p for p in (ROOT / "events").glob("*.eventbridge.json"))


@pytest.fixture(scope="module")
def events_client():
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint.startswith("http://127.0.0.1:"):
        pytest.fail("AWS_ENDPOINT_URL must point at the local AWS (make test-infra starts it)")
    return boto3.client("events", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


@pytest.mark.parametrize("path", event_files(), ids=lambda p: p.name)
def test_rule_matches_exactly_the_events_that_should_roll_back(resolved, events_client, path):
    pattern = resolved["Resources"]["RollbackFunctionAlarmToAlarm"]["Properties"]["EventPattern"]
    event = json.loads(path.read_text())
    should_match = path.name.startswith("alarm-")
    matched = events_client.test_event_pattern(EventPattern=json.dumps(pattern), Event=json.dumps(event))["Result"]
    assert matched == should_match, (path.name, pattern)
    # Outside the prefix, nothing matches.
    event["detail"]["alarmName"] = "other-" + event["detail"]["alarmName"]
    assert not events_client.test_event_pattern(EventPattern=json.dumps(pattern), Event=json.dumps(event))["Result"]


def test_only_the_release_machines_executions_that_ended_unfinished_reach_the_dead_mans_switch(resolved, events_client):
    rule = resolved["Resources"]["RollbackFunctionExecutionEnded"]["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["detail"]["stateMachineArn"] == ["<ReleaseStateMachine>"]
    assert rule["Targets"][0]["DeadLetterConfig"]["Arn"] == "<RollbackFailures.Arn>"
    event = json.loads((ROOT / "events/stepfunctions/execution-failed.eventbridge.json").read_text())
    event["detail"]["stateMachineArn"] = "<ReleaseStateMachine>"
    matches = lambda e: events_client.test_event_pattern(EventPattern=json.dumps(pattern), Event=json.dumps(e))["Result"]
    for status, expected in [("FAILED", True), ("TIMED_OUT", True), ("ABORTED", True), ("SUCCEEDED", False), ("RUNNING", False)]:
        event["detail"]["status"] = status
        assert matches(event) == expected, status
    event["detail"]["status"] = "FAILED"
    event["detail"]["stateMachineArn"] = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:someone-elses"
    assert not matches(event), "another state machine's executions are not ours"


def test_the_samples_and_the_docs_use_the_default_alarm_prefix():
    default = yaml_parse((ROOT / "infra/template.yaml").read_text())["Parameters"]["AlarmNamePrefix"]["Default"]
    assert PARAMS["AlarmNamePrefix"] == default
    for path in sorted((ROOT / "events/releases").glob("*.json")):
        for alarm in json.loads(path.read_text()).get("gates", {}).get("alarms", []):
            assert alarm.startswith(default), (path.name, alarm)


def test_every_sample_kind_is_covered():
    names = [p.name for p in event_files()]
    assert sum(n.startswith("alarm-") for n in names) >= 3 and sum(not n.startswith("alarm-") for n in names) >= 2
