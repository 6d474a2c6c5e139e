"""Checks template.yaml after the SAM transform, as CloudFormation will deploy it:

- every IAM statement names its resources (no "*"), and no managed policy is attached
  (AWS managed policies grant on "*");
- queues and the sync table are encrypted at rest, the DLQ keeps messages 14 days;
- the source queue sets its retention explicitly, above the 6-hour outage budget and below
  the DLQ's (a message moved by the redrive policy keeps its age);
- the queue's visibility timeout is at least six times the function timeout, and its
  redrive policy allows at least 5 receives (a parameter is taken at its default; the
  default itself is derived and checked in src/redelivery.rs).

Exits non-zero listing every problem. Usage: python scripts/check_template.py [template.yaml]
"""

import copy
import json
import os
import sys

from cfnlint.decode import decode_str
from samtranslator.translator.transform import transform

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


class NoManagedPolicies:
    def load(self):
        return {}


def statements(document):
    found = document.get("Statement", [])
    return found if isinstance(found, list) else [found]


def resources_of(statement):
    resources = statement.get("Resource", [])
    if isinstance(resources, dict) and "Fn::If" in resources:
        return resources["Fn::If"][1:]
    return resources if isinstance(resources, list) else [resources]


def iam_problems(name, properties):
    problems = []
    if properties.get("ManagedPolicyArns"):
        problems.append(f"{name}: attaches managed policies {properties['ManagedPolicyArns']}")
    for policy in properties.get("Policies", []):
        for statement in statements(policy.get("PolicyDocument", {})):
            if isinstance(statement, dict) and "Fn::If" in statement:
                branches = [b for b in statement["Fn::If"][1:] if isinstance(b, dict) and "Effect" in b]
            else:
                branches = [statement]
            for branch in branches:
                for resource in resources_of(branch):
                    if isinstance(resource, str) and "*" in resource:
                        problems.append(f"{name}: statement {branch.get('Sid', '?')} grants {branch.get('Action')} on {resource!r}")
    return problems


OUTAGE_BUDGET_SECONDS = 6 * 3600


def resolved(value, parameters):
    """A {"Ref": parameter} as the parameter's default; anything else as it is."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
        return parameters[value["Ref"]].get("Default")
    return value


def check(path):
    template, matches = decode_str(open(path).read())
    if matches:
        return [f"{path}: {m}" for m in matches]
    template = json.loads(json.dumps(template, default=str))
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/key"
    deployed = transform(copy.deepcopy(template), {}, NoManagedPolicies())
    resources = deployed["Resources"]
    problems = []
    timeouts = template["Mappings"]["VisibilityTimeouts"]
    parameters = template.get("Parameters", {})
    for name, resource in resources.items():
        kind, properties = resource["Type"], resource.get("Properties", {})
        if kind in ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            problems += iam_problems(name, properties)
        elif kind == "AWS::SQS::Queue":
            if not (properties.get("SqsManagedSseEnabled") or properties.get("KmsMasterKeyId")):
                problems.append(f"{name}: not encrypted at rest")
            redrive = properties.get("RedrivePolicy")
            if redrive and int(resolved(redrive.get("maxReceiveCount", 0), parameters)) < 5:
                problems.append(f"{name}: maxReceiveCount below 5")
        elif kind == "AWS::DynamoDB::Table":
            if not properties.get("SSESpecification", {}).get("SSEEnabled"):
                problems.append(f"{name}: not encrypted at rest")
        elif kind == "AWS::Lambda::Function":
            if "Role" not in properties:
                problems.append(f"{name}: has no role of its own")
    dead_letters = resources["RedemptionDeadLetterQueue"]["Properties"]
    if int(dead_letters.get("MessageRetentionPeriod", 0)) != 14 * 24 * 3600:
        problems.append("RedemptionDeadLetterQueue: must keep messages 14 days")
    source_retention = resources["RedemptionQueue"]["Properties"].get("MessageRetentionPeriod")
    if source_retention is None:
        problems.append("RedemptionQueue: MessageRetentionPeriod must be set explicitly")
    elif not OUTAGE_BUDGET_SECONDS < int(source_retention) < int(dead_letters.get("MessageRetentionPeriod", 0)):
        problems.append(f"RedemptionQueue: MessageRetentionPeriod {source_retention} must be above the 6 h outage budget and below the DLQ's")
    for timeout, visibility in timeouts.items():
        if visibility["Seconds"] < 6 * int(timeout):
            problems.append(f"VisibilityTimeouts: {visibility['Seconds']} s for a {timeout} s function is under 6x")
    return problems


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    problems = check(path)
    for problem in problems:
        print(f"template check: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"template check: {path} ok (least privilege, encryption, retention, timeouts)")


if __name__ == "__main__":
    main()
