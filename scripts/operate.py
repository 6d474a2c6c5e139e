"""Operator commands on a deployed stack (STACK=name, or --stack; scripts/stack.py):

  verify         after a deploy: the stack's outputs resolve to resources that exist, the
                 function's event source mappings and its schedule are enabled, the alarms'
                 states, the alarm topic's subscriptions confirmed, the function's
                 ConfigurationErrors at 0 over the last hour, and one reconciliation run
                 (its answer shown; --no-invoke skips it). Exit 1 if any check fails.
  reconcile-now  invoke the function once with the scheduled reconciliation's event and
                 print its answer (the counts of what it found and settled)
  pause          disable the function's event source mappings (the SQS queue and the
                 orders table's stream, if connected): messages wait in the queue (4 days)
                 and stream records in the stream (24 h); the schedule keeps running
  resume         enable them again
  put-token      store the Polar token in the stack's SSM SecureString parameter, read
                 without echo from the terminal (or from stdin when it is not one), sent
                 in-process: never on a command line, in shell history or in `ps`

Each resource is addressed in its own region (a queue URL's host, an ARN's region field;
names in the stack's region). AWS errors are one line and exit 1.
"""

import argparse
import datetime
import getpass
import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import OperatorError, Resources, region_of, run  # noqa: E402

EMF_NAMESPACE = "PolarDiscountSync"
GOOD_STACK_STATES = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}


def scheduled_event(function_arn):
    parts = (function_arn or "").split(":")
    region, account = (parts[3], parts[4]) if len(parts) > 4 else ("", "")
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": account, "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region, "resources": [], "detail": {},
    }


def invoke_reconciliation(resources):
    """(ok, the function's answer as text)."""
    lam = resources.client("lambda", resources.function)
    answer = lam.invoke(FunctionName=resources.function, InvocationType="RequestResponse",
                        Payload=json.dumps(scheduled_event(resources.function)).encode())
    payload = answer["Payload"].read().decode("utf-8", "replace")
    if answer.get("FunctionError"):
        return False, f"FunctionError {answer['FunctionError']}: {payload}"
    return True, payload


def function_name(function):
    """A function's name from its ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME), or the name."""
    parts = function.split(":")
    return parts[6] if function.startswith("arn:") and len(parts) > 6 else function


def mappings(resources):
    lam = resources.client("lambda", resources.function)
    found, marker = [], None
    while True:
        # By name, in the function's region (the client's): moto lists nothing for an ARN.
        page = lam.list_event_source_mappings(FunctionName=function_name(resources.function),
                                              **({"Marker": marker} if marker else {}))
        found += page.get("EventSourceMappings", [])
        marker = page.get("NextMarker")
        if not marker:
            return lam, found


def source_kind(arn):
    return "SQS queue" if ":sqs:" in arn else "DynamoDB stream" if ":dynamodb:" in arn else "source"


def set_enabled(resources, enabled, out=print):
    lam, found = mappings(resources)
    if not found:
        raise OperatorError(f"{resources.function} has no event source mappings")
    for mapping in found:
        updated = lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=enabled)
        out(f"{source_kind(mapping['EventSourceArn'])} {mapping['EventSourceArn']}: "
            f"{mapping.get('State')} -> {updated.get('State')} (mapping {mapping['UUID']})")
    if enabled:
        out("resumed: the function takes messages and stream records again")
    else:
        out("paused: messages wait in the queue (kept 4 days), stream records in the stream (24 h); "
            "the scheduled reconciliation still runs. make resume STACK=… to take them again")
    return 0


class Report:
    def __init__(self, out=print):
        self.out, self.failed = out, 0

    def ok(self, text):
        self.out(f"ok    {text}")

    def fail(self, text):
        self.failed += 1
        self.out(f"FAIL  {text}")

    def note(self, text):
        self.out(f"note  {text}")

    def check(self, name, step):
        """Runs one check; an AWS error fails it with one line, and the next ones still run."""
        from stack import describe_error

        try:
            step()
        except Exception as err:  # noqa: BLE001
            line = describe_error(err)
            if line is None:
                raise
            self.fail(f"{name}: {line}")


def stack_resources(resources, kind):
    cloudformation = resources.client("cloudformation", resources.description["StackId"])
    found, token = [], None
    while True:
        page = cloudformation.list_stack_resources(StackName=resources.stack, **({"NextToken": token} if token else {}))
        found += [r for r in page["StackResourceSummaries"] if r["ResourceType"] == kind]
        token = page.get("NextToken")
        if not token:
            return found


def verify(resources, invoke=True, out=print, metric_hours=1):
    report = Report(out)
    description = resources.description
    status = description["StackStatus"]
    (report.ok if status in GOOD_STACK_STATES else report.fail)(f"stack {resources.stack}: {status}")
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in description.get("Parameters", [])}
    if parameters.get("ShadowMode") == "true":
        report.note("ShadowMode=true: the function reads and plans but writes nothing (Polar, tables, queues)")
    if parameters.get("PolarApiUrl"):
        report.note(f"Polar API: {parameters['PolarApiUrl']}")

    def outputs():
        missing = [a for a in ("queue_url", "dlq_url", "sync_table", "orders_table", "function", "token_parameter")
                   if not getattr(resources, a)]
        if missing:
            report.fail(f"outputs: the stack does not name {', '.join(missing)}")
        for name in ("queue_url", "dlq_url"):
            url = getattr(resources, name)
            if url:
                attributes = resources.client("sqs", url).get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
                report.ok(f"{name}: {url} ({attributes['ApproximateNumberOfMessages']} visible, region {region_of(url)})")
        dynamodb = resources.client("dynamodb")
        for name in ("sync_table", "orders_table"):
            table = getattr(resources, name)
            if table:
                state = dynamodb.describe_table(TableName=table)["Table"]["TableStatus"]
                (report.ok if state == "ACTIVE" else report.fail)(f"{name}: {table} {state}")
        if resources.function:
            configuration = resources.client("lambda", resources.function).get_function_configuration(
                FunctionName=resources.function)
            report.ok(f"function: {configuration['FunctionArn']} ({configuration.get('State', 'Active')})")
        if resources.token_parameter:
            ssm = resources.client("ssm")
            found = ssm.describe_parameters(ParameterFilters=[
                {"Key": "Name", "Option": "Equals", "Values": [resources.token_parameter]}])["Parameters"]
            if not found:
                report.fail(f"token parameter {resources.token_parameter} does not exist: make put-token STACK={resources.stack}")
            elif found[0].get("Type") != "SecureString":
                report.fail(f"token parameter {resources.token_parameter} is a {found[0].get('Type')}, not a SecureString")
            else:
                report.ok(f"token parameter {resources.token_parameter}: SecureString, version {found[0].get('Version')}")

    def event_sources():
        _, found = mappings(resources)
        if not found:
            report.fail("event source mappings: none (the queue does not drive the function)")
        for mapping in found:
            line = f"{source_kind(mapping['EventSourceArn'])} mapping {mapping['EventSourceArn']}: {mapping.get('State')}"
            (report.ok if mapping.get("State") == "Enabled" else report.fail)(line)

    def schedule():
        rules = stack_resources(resources, "AWS::Events::Rule")
        if not rules:
            report.fail("schedule: the stack has no EventBridge rule")
        for rule in rules:
            events = resources.client("events")
            described = events.describe_rule(Name=rule["PhysicalResourceId"])
            line = f"schedule {described['Name']} ({described.get('ScheduleExpression')}): {described.get('State')}"
            (report.ok if described.get("State") == "ENABLED" else report.fail)(line)

    def alarms():
        cloudwatch = resources.client("cloudwatch")
        names = [r["PhysicalResourceId"] for r in stack_resources(resources, "AWS::CloudWatch::Alarm")
                 if r.get("PhysicalResourceId")]
        if names:
            found = []
            for i in range(0, len(names), 100):
                found += cloudwatch.describe_alarms(AlarmNames=names[i:i + 100])["MetricAlarms"]
        else:  # the stack's resources list no alarm names: CloudFormation names them "<stack>-<LogicalId>-…"
            found = cloudwatch.describe_alarms(AlarmNamePrefix=f"{resources.stack}-")["MetricAlarms"]
            report.note(f"alarms found by the name prefix {resources.stack}-")
        if not found:
            report.fail("alarms: none found")
        for alarm in sorted(found, key=lambda a: a["AlarmName"]):
            state = alarm["StateValue"]
            line = f"alarm {alarm['AlarmName']}: {state}"
            if state == "ALARM":
                report.fail(f"{line}: {alarm.get('StateReason', '')} (docs/runbook.md)")
            elif state == "INSUFFICIENT_DATA":
                report.ok(f"{line} (no data yet: normal right after a deploy)")
            else:
                report.ok(line)

    def subscriptions():
        topics = [t for t in (resources.outputs.get("AlarmTopicArn"), parameters.get("AlarmTopicArn")) if t]
        if not topics:
            report.note("no alarm topic (AlarmEmail and AlarmTopicArn are empty): alarms notify nobody")
        for topic in topics:
            sns = resources.client("sns", topic)
            found = sns.list_subscriptions_by_topic(TopicArn=topic).get("Subscriptions", [])
            if not found:
                report.fail(f"topic {topic}: no subscriptions")
            for subscription in found:
                arn = subscription["SubscriptionArn"]
                confirmed = arn.startswith("arn:")
                line = f"topic {topic}: {subscription['Protocol']} {subscription['Endpoint']} " + (
                    "confirmed" if confirmed else f"not confirmed ({arn}): open the e-mail's link")
                (report.ok if confirmed else report.fail)(line)

    def configuration_errors():
        cloudwatch = resources.client("cloudwatch")
        name = function_name(resources.function)
        end = datetime.datetime.now(datetime.timezone.utc)
        points = cloudwatch.get_metric_statistics(
            Namespace=EMF_NAMESPACE, MetricName="ConfigurationErrors",
            Dimensions=[{"Name": "FunctionName", "Value": name}],
            StartTime=end - datetime.timedelta(hours=metric_hours), EndTime=end, Period=300,
            Statistics=["Sum"])["Datapoints"]
        total = sum(p["Sum"] for p in points)
        line = f"ConfigurationErrors over the last {metric_hours} h: {total:g}"
        (report.ok if total == 0 else report.fail)(
            line if total == 0 else f"{line}: the token, POLAR_API_URL or a permission is wrong (docs/runbook.md)")

    def reconciliation():
        ok, answer = invoke_reconciliation(resources)
        (report.ok if ok else report.fail)(f"reconciliation invoked: {answer}")

    report.check("outputs", outputs)
    report.check("event source mappings", event_sources)
    report.check("schedule", schedule)
    report.check("alarms", alarms)
    report.check("alarm subscriptions", subscriptions)
    if resources.function:
        report.check("ConfigurationErrors", configuration_errors)
        if invoke:
            report.check("reconciliation", reconciliation)
        else:
            report.note("reconciliation not invoked (--no-invoke)")
    out(f"verify {resources.stack}: {'ok' if not report.failed else f'{report.failed} check(s) failed'}")
    return 1 if report.failed else 0


def read_token(stdin=sys.stdin):
    if stdin.isatty():
        token = getpass.getpass("Polar organization access token (not echoed): ")
    else:
        token = stdin.readline()
    return token.strip()


def put_token(resources, stdin=sys.stdin, out=print):
    token = read_token(stdin)
    if not token:
        raise OperatorError("no token given: nothing stored")
    if any(c.isspace() for c in token):
        raise OperatorError("the token has whitespace in it: nothing stored")
    if not token.startswith("polar_"):
        out("note: the token does not start with polar_ (an organization access token is polar_oat_…)")
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in
                  (resources.description or {}).get("Parameters", [])}
    request = {"Name": resources.token_parameter, "Value": token, "Type": "SecureString", "Overwrite": True}
    if parameters.get("TokenKmsKeyArn"):
        request["KeyId"] = parameters["TokenKmsKeyArn"]
    version = resources.client("ssm").put_parameter(**request)["Version"]
    out(f"stored the token in SSM parameter {resources.token_parameter} (SecureString, version {version}"
        + (f", key {request['KeyId']}" if "KeyId" in request else ", key aws/ssm") + "); the function reads it at its next cold start")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["verify", "reconcile-now", "pause", "resume", "put-token"])
    parser.add_argument("--stack", help="the stack's name or ARN (or STACK)")
    parser.add_argument("--no-invoke", action="store_true", help="verify: do not invoke the reconciliation")
    args = parser.parse_args(argv)
    needs = {"verify": [], "reconcile-now": ["function"], "pause": ["function"], "resume": ["function"],
             "put-token": ["token_parameter"]}[args.command]
    resources = Resources.from_env(needs=needs, stack=args.stack)
    if args.command == "verify":
        if not resources.stack:
            raise OperatorError("verify needs STACK=<stack name>")
        return verify(resources, invoke=not args.no_invoke)
    if args.command == "reconcile-now":
        ok, answer = invoke_reconciliation(resources)
        print(f"reconciliation ({resources.function}): {answer}")
        return 0 if ok else 1
    if args.command in ("pause", "resume"):
        return set_enabled(resources, args.command == "resume")
    return put_token(resources)


if __name__ == "__main__":
    run(main)
