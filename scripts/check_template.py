"""Checks template.yaml after the SAM transform, as CloudFormation will deploy it:

- least privilege: no Allow statement, in an IAM policy or in a resource policy (a queue
  or topic policy, a key policy, ...), grants an action or a resource with a wildcard (`*`
  or `?`), whether written as a plain string or built with Fn::Sub, Fn::Join, Fn::If,
  Fn::FindInMap or a parameter's default (`dynamodb:*`, `*`, `...:table/*`,
  `${AWS::AccountId}:*`, `dynamodb:GetIte?`); none uses NotAction or NotResource; a
  resource policy's Allow names its principals (no `"*"`, no NotPrincipal); a parameter an
  Allow statement is built from (with or without a default: the deployer may set it) has an
  AllowedPattern or AllowedValues that refuses `*` and `?`; no managed policy is attached
  (AWS managed policies grant on "*");
- every queue has a queue policy; every table has deletion protection;
- queues and tables are encrypted at rest, the DLQ keeps messages 14 days;
- the source queue sets its retention explicitly, above the 6-hour outage budget and below
  the DLQ's (a message moved by the redrive policy keeps its age);
- each queue a function polls has a visibility timeout, read from the queue itself for
  every allowed function timeout, of at least six times the function's timeout; its redrive
  policy allows at least 5 receives (a parameter is taken at its default; the default
  itself is derived and checked in src/redelivery.rs), and at most what the queue's
  retention holds (max_receives_retained: every delay at its 30-minute cap and every
  receive held for the longest visibility), the parameter's MaxValue included;
- data is kept: every table, queue and log group has DeletionPolicy and
  UpdateReplacePolicy Retain, every table point-in-time recovery;
- an explicit queue name fits SQS's 80 characters with the longest stack name (128);
- alarms and the dashboard name only the function's EMF metrics (EMF_METRICS, docs/operations.md's
  "Metrics and alarms"), with the FunctionName dimension, and the dashboard shows each;
- an event source mapping reads the orders table's stream, answering with partial batch
  responses, from LATEST, bisecting failed batches, with bounded retries and an on-failure
  destination, and its filter passes no REMOVE, no image without a discountId and no image
  already synced (every pattern of the OR'd list must exclude each).

Exits non-zero listing every problem. Usage: python scripts/check_template.py [template.yaml]
scripts/test_check_template.py proves that each problem is caught.
"""

import copy
import itertools
import json
import os
import re
import sys

from cfnlint.decode import decode_str
from samtranslator.translator.transform import transform

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

# The function's Embedded Metric Format metrics: namespace, the one dimension, the names.
EMF_NAMESPACE = "PolarDiscountSync"
EMF_DIMENSIONS = ["FunctionName"]
EMF_METRICS = {
    "OrdersDecremented", "OrdersDeleted", "OrdersSkippedUnlimited", "OrdersAlreadyDeleted",
    "OrdersAlreadySynced", "TransientFailures", "ConfigurationErrors", "PermanentFailures",
    "DeadLettered", "LeaseContention", "LeaseWaitRequests", "HandOffRequests", "JournalsRecovered", "JournalsReconciled",
    "ReconciliationFailures", "UnknownWriteOutcomes", "PolarRateLimited", "Oversold",
    "ExternalChanges", "PolarLatency", "OrdersPerWrite", "OldestMessageAge", "PolarRateShare",
    # Shadow mode's (SHADOW_MODE=true): what it would have synced or written.
    "ShadowOrdersDecremented", "ShadowOrdersDeleted", "ShadowOrdersSkippedUnlimited",
    "ShadowOrdersAlreadyDeleted", "ShadowPolarWrites", "ShadowWouldDeadLetter", "ShadowWouldRetry",
    # The orders table's stream relay.
    "StreamRecordsRelayed", "StreamRecordsIgnored", "StreamRecordsDeadLettered", "StreamRelayFailures",
}
STATEFUL = ("AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::Logs::LogGroup")
SQS_NAME_LIMIT = 80
OUTAGE_BUDGET_SECONDS = 6 * 3600


WILDCARDS = ("*", "?")
# The function's redelivery schedule (src/sync/redelivery.rs): the delay ceiling after
# failed receive n is 5 s x 2^(n-1), capped at 30 minutes.
REDELIVERY_BASE_SECONDS, REDELIVERY_CAP_SECONDS = 5, 30 * 60
# Resource types whose properties hold resource policies (Allow statements with principals).
RESOURCE_POLICIES = {
    "AWS::SQS::QueuePolicy": "PolicyDocument", "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::S3::BucketPolicy": "PolicyDocument", "AWS::KMS::Key": "KeyPolicy",
    "AWS::SecretsManager::ResourcePolicy": "ResourcePolicy", "AWS::Logs::ResourcePolicy": "PolicyDocument",
    "AWS::Events::EventBusPolicy": "Statement",
}


def max_receives_retained(retention_seconds, longest_visibility_seconds):
    """The most receives m whose longest stay fits in the retention: the m - 1 delays at
    their ceilings, plus the longest visibility timeout on each of the m receives."""
    m, stay = 1, longest_visibility_seconds
    while True:
        ceiling = min(REDELIVERY_BASE_SECONDS * 2 ** (m - 1), REDELIVERY_CAP_SECONDS)
        longer = stay + ceiling + longest_visibility_seconds
        if longer >= retention_seconds:
            return m
        m, stay = m + 1, longer


def admits_wildcard(pattern):
    """Whether a string the regular expression matches can hold `*` or `?`."""
    import re._constants as c
    import re._parser as parser

    def in_set(items, char):
        negate, found = False, False
        for op, av in items:
            if op is c.NEGATE:
                negate = True
            elif op is c.LITERAL:
                found |= av == char
            elif op is c.RANGE:
                found |= av[0] <= char <= av[1]
            elif op is c.CATEGORY:
                found |= av in (c.CATEGORY_NOT_DIGIT, c.CATEGORY_NOT_WORD, c.CATEGORY_NOT_SPACE)
        return found != negate

    def walk(subpattern, char):
        for op, av in subpattern:
            if op is c.ANY or (op is c.LITERAL and av == char) or (op is c.NOT_LITERAL and av != char):
                return True
            if op is c.IN and in_set(av, char):
                return True
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and av[1] > 0 and walk(av[2], char):
                return True
            if op is c.SUBPATTERN and walk(av[3], char):
                return True
            if op is c.ATOMIC_GROUP and walk(av, char):
                return True
            if op is c.BRANCH and any(walk(branch, char) for branch in av[1]):
                return True
        return False

    parsed = parser.parse(pattern)
    return any(walk(parsed, ord(w)) for w in WILDCARDS)


def parameter_names(value, template):
    """The parameters an expression is built from: Refs and Fn::Sub's ${Name}s."""
    parameters = template.get("Parameters", {})
    if isinstance(value, list):
        for item in value:
            yield from parameter_names(item, template)
    elif isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in parameters:
            yield value["Ref"]
        elif "Fn::Sub" in value:
            argument = value["Fn::Sub"]
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            for name in re.findall(r"\$\{([^!}.][^}.]*)\}", text):
                if name in variables:
                    yield from parameter_names(variables[name], template)
                elif name in parameters:
                    yield name
        elif "Fn::GetAtt" not in value:
            yield from parameter_names(list(value.values()), template)


def parameter_problems(name, sid, parameter, template):
    """A parameter an Allow statement uses must refuse wildcards whatever the deployer sets."""
    definition = template.get("Parameters", {}).get(parameter, {})
    if "AllowedValues" in definition:
        bad = [v for v in definition["AllowedValues"] if any(w in str(v) for w in WILDCARDS)]
        return [f"{name}: statement {sid} is built from parameter {parameter}, whose AllowedValues hold a wildcard {bad}"] if bad else []
    pattern = definition.get("AllowedPattern")
    if pattern is None:
        return [f"{name}: statement {sid} is built from parameter {parameter}, which has no AllowedPattern to refuse a wildcard"]
    if admits_wildcard(pattern):
        return [f"{name}: statement {sid} is built from parameter {parameter}, whose AllowedPattern {pattern!r} admits a wildcard (* or ?)"]
    return []


class NoManagedPolicies:
    def load(self):
        return {}


def literals(value, template):
    """Every literal string an expression can put into its result: plain strings, Fn::Sub
    templates and their variables, Fn::Join pieces, both Fn::If branches, a Ref'd
    parameter's default and a Fn::FindInMap map's values. Fn::GetAtt names no literal."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from literals(item, template)
    elif isinstance(value, dict):
        if set(value) == {"Ref"}:
            default = template.get("Parameters", {}).get(value["Ref"], {}).get("Default")
            if isinstance(default, str):
                yield default
        elif "Fn::GetAtt" in value:
            return
        elif "Fn::If" in value:
            yield from literals(value["Fn::If"][1:], template)
        elif "Fn::FindInMap" in value:
            yield from literals(list(template.get("Mappings", {}).get(value["Fn::FindInMap"][0], {}).values()), template)
        else:
            yield from literals(list(value.values()), template)


def statements(document):
    """The statements of a policy document, both branches of a statement-level Fn::If."""
    found = document.get("Statement", [])
    for statement in found if isinstance(found, list) else [found]:
        if isinstance(statement, dict) and "Fn::If" in statement:
            yield from (b for b in statement["Fn::If"][1:] if isinstance(b, dict) and "Effect" in b)
        else:
            yield statement


def principal_literals(principal, template):
    if isinstance(principal, str):
        yield principal
    elif isinstance(principal, dict) and not ({"Ref", "Fn::Sub", "Fn::If", "Fn::Join", "Fn::GetAtt"} & set(principal)):
        for value in principal.values():
            yield from literals(value, template)
    else:
        yield from literals(principal, template)


def policy_problems(name, document, template, resource_policy=False):
    problems = []
    for statement in statements(document):
        if statement.get("Effect") != "Allow":
            continue  # a Deny with a wildcard takes away, it grants nothing
        sid = statement.get("Sid", "?")
        for negated in ("NotAction", "NotResource") + (("NotPrincipal",) if resource_policy else ()):
            if negated in statement:
                problems.append(f"{name}: statement {sid} uses {negated} (grants everything else)")
        for action in literals(statement.get("Action", []), template):
            if any(w in action for w in WILDCARDS):
                problems.append(f"{name}: statement {sid} grants wildcard action {action!r}")
        for resource in literals(statement.get("Resource", []), template):
            if any(w in resource for w in WILDCARDS):
                problems.append(f"{name}: statement {sid} grants {statement.get('Action')} on wildcard resource {resource!r}")
        if resource_policy:
            for principal in principal_literals(statement.get("Principal", []), template):
                if any(w in principal for w in WILDCARDS):
                    problems.append(f"{name}: statement {sid} allows {statement.get('Action')} to every principal ({principal!r})")
        used = [statement.get(k, []) for k in ("Action", "Resource", "Principal")]
        for parameter in dict.fromkeys(parameter_names(used, template)):
            problems += parameter_problems(name, sid, parameter, template)
    return problems


def iam_problems(name, properties, template):
    problems = []
    if properties.get("ManagedPolicyArns"):
        problems.append(f"{name}: attaches managed policies {properties['ManagedPolicyArns']}")
    documents = [p.get("PolicyDocument", {}) for p in properties.get("Policies", []) if isinstance(p, dict)]
    if "PolicyDocument" in properties:  # AWS::IAM::Policy and AWS::IAM::ManagedPolicy
        documents.append(properties["PolicyDocument"])
    for document in documents:
        problems += policy_problems(name, document, template)
    return problems


# The longest values CloudFormation may give the pseudo parameters a queue name can use.
LONGEST_STACK_NAME = "s" * 128
PSEUDO = {
    "AWS::StackName": LONGEST_STACK_NAME,
    "AWS::StackId": f"arn:aws-us-gov:cloudformation:us-gov-west-1:123456789012:stack/{LONGEST_STACK_NAME}/1c2fa620-982a-11e3-aff7-50e2416294e0",
    "AWS::Region": "ap-southeast-2",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws-us-gov",
    "AWS::URLSuffix": "amazonaws.com.cn",
}


class Unknowable(Exception):
    pass


def values(expression, template):
    """Every string an expression can evaluate to (both Fn::If branches; a parameter at its
    default or each allowed value; pseudo parameters at their longest)."""
    if isinstance(expression, (str, int)):
        return [str(expression)]
    if isinstance(expression, dict) and len(expression) == 1:
        (function, argument), = expression.items()
        if function == "Ref":
            if argument == "AWS::NoValue":
                return []
            if argument in PSEUDO:
                return [PSEUDO[argument]]
            parameter = template.get("Parameters", {}).get(argument)
            if parameter is not None:
                return [str(v) for v in parameter.get("AllowedValues", [parameter.get("Default", "")])]
        if function == "Fn::If":
            return values(argument[1], template) + values(argument[2], template)
        if function == "Fn::Join":
            pieces = [values(piece, template) for piece in argument[1]]
            return [argument[0].join(choice) for choice in itertools.product(*pieces)]
        if function == "Fn::Split":
            return [value.split(argument[0]) for value in values(argument[1], template)]
        if function == "Fn::Select":
            lists = argument[1] if isinstance(argument[1], list) else None
            if lists is not None:
                return values(lists[int(argument[0])], template)
            return [parts[int(argument[0])] for parts in values(argument[1], template)]
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            names = re.findall(r"\$\{([^!}][^}]*)\}", text)
            choices = [values(variables[n], template) if n in variables else values({"Ref": n}, template) for n in names]
            results = []
            for choice in itertools.product(*choices):
                result = text
                for n, v in zip(names, choice):
                    result = result.replace("${" + n + "}", v, 1)
                results.append(result)
            return results
    raise Unknowable(json.dumps(expression))


def queue_name_problems(name, properties, template):
    if "QueueName" not in properties:
        return []
    try:
        names = values(properties["QueueName"], template)
    except Unknowable as unknown:
        return [f"{name}: QueueName {unknown} cannot be checked against SQS's {SQS_NAME_LIMIT} characters"]
    return [f"{name}: QueueName {queue!r} is {len(queue)} characters with a 128-character stack name; SQS allows {SQS_NAME_LIMIT}"
            for queue in names if len(queue) > SQS_NAME_LIMIT]


def dashboard_metrics(body):
    """(namespace, metric, dimension names) of every metric row, expanding "." and "..."."""
    if isinstance(body, dict) and "Fn::Sub" in body:
        body = body["Fn::Sub"] if isinstance(body["Fn::Sub"], str) else body["Fn::Sub"][0]
    document = json.loads(re.sub(r"\$\{[^}]*\}", "substituted", body))
    for widget in document.get("widgets", []):
        previous = []
        for row in widget.get("properties", {}).get("metrics", []):
            fields = [f for f in row if not isinstance(f, dict)]
            if fields[:1] == ["..."]:
                fields = previous
            else:
                fields = [previous[i] if f == "." and i < len(previous) else f for i, f in enumerate(fields)]
            previous = fields
            yield fields[0], fields[1], fields[2::2]


def metric_problems(resources):
    problems = []
    shown = set()
    for name, resource in resources.items():
        kind, properties = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::CloudWatch::Alarm" and properties.get("Namespace") == EMF_NAMESPACE:
            metric = properties.get("MetricName")
            dimensions = [d.get("Name") for d in properties.get("Dimensions", [])]
            if metric not in EMF_METRICS:
                problems.append(f"{name}: alarms on {metric!r}, which the function does not emit")
            if dimensions != EMF_DIMENSIONS:
                problems.append(f"{name}: dimensions {dimensions}, the function emits {EMF_DIMENSIONS}")
            if properties.get("TreatMissingData") != "notBreaching":
                problems.append(f"{name}: a count not emitted must not breach (TreatMissingData: notBreaching)")
        elif kind == "AWS::CloudWatch::Dashboard":
            try:
                rows = list(dashboard_metrics(properties["DashboardBody"]))
            except (ValueError, KeyError, IndexError, TypeError) as error:
                problems.append(f"{name}: DashboardBody is not a readable dashboard ({error})")
                continue
            for namespace, metric, dimensions in rows:
                if namespace != EMF_NAMESPACE:
                    continue
                shown.add(metric)
                if metric not in EMF_METRICS:
                    problems.append(f"{name}: shows {metric!r}, which the function does not emit")
                if dimensions != EMF_DIMENSIONS:
                    problems.append(f"{name}: shows {metric} with dimensions {dimensions}, the function emits {EMF_DIMENSIONS}")
            missing = sorted(EMF_METRICS - shown)
            if missing:
                problems.append(f"{name}: does not show {missing}")
    return problems


def is_queue_arn(value, resources):
    """Whether an EventSourceArn is the Arn of one of the template's SQS queues."""
    if not (isinstance(value, dict) and "Fn::GetAtt" in value):
        return False
    target = value["Fn::GetAtt"]
    name = target[0] if isinstance(target, list) else str(target).split(".")[0]
    return resources.get(name, {}).get("Type") == "AWS::SQS::Queue"


# What a pattern must say for each thing the function would drop anyway.
SYNCED_EXCLUDED = ([False], [{"exists": False}])


def filter_problems(name, criteria):
    patterns = []
    for entry in (criteria or {}).get("Filters", []):
        pattern = entry.get("Pattern") if isinstance(entry, dict) else None
        try:
            patterns.append(json.loads(pattern) if isinstance(pattern, str) else pattern)
        except ValueError as error:
            return [f"{name}: filter pattern {pattern!r} is not JSON ({error})"]
    if not patterns:
        return [f"{name}: has no FilterCriteria (every REMOVE and every write of any order would invoke the function)"]
    problems = set()
    for pattern in patterns:
        pattern = pattern if isinstance(pattern, dict) else {}
        events = pattern.get("eventName")
        if not isinstance(events, list) or not set(events) <= {"INSERT", "MODIFY"}:
            problems.add(f"{name}: a filter pattern passes REMOVE records (eventName {events!r})")
        new_image = (pattern.get("dynamodb") or {}).get("NewImage") or {}
        if (new_image.get("discountId") or {}).get("S") != [{"exists": True}]:
            problems.add(f"{name}: a filter pattern passes images without a discountId")
        if (new_image.get("polarDiscountSynced") or {}).get("BOOL") not in SYNCED_EXCLUDED:
            problems.add(f"{name}: a filter pattern passes images already synced")
    return sorted(problems)


def stream_mapping_problems(resources):
    """The DynamoDB stream's event source mappings (those not reading one of the queues)."""
    mappings = {name: resource.get("Properties", {}) for name, resource in resources.items()
                if resource["Type"] == "AWS::Lambda::EventSourceMapping"
                and not is_queue_arn(resource.get("Properties", {}).get("EventSourceArn"), resources)}
    if not mappings:
        return ["no event source mapping reads the orders table's stream"]
    problems = []
    for name, properties in mappings.items():
        if "ReportBatchItemFailures" not in (properties.get("FunctionResponseTypes") or []):
            problems.append(f"{name}: FunctionResponseTypes must include ReportBatchItemFailures (the function answers per record)")
        if properties.get("StartingPosition") != "LATEST":
            problems.append(f"{name}: StartingPosition must be LATEST (make backfill covers what came before)")
        if properties.get("BisectBatchOnFunctionError") is not True:
            problems.append(f"{name}: BisectBatchOnFunctionError must be true")
        retries = properties.get("MaximumRetryAttempts")
        if not isinstance(retries, int) or not 0 <= retries <= 10000:
            problems.append(f"{name}: MaximumRetryAttempts must be bounded (0 to 10000), not {retries!r}")
        if not ((properties.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination"):
            problems.append(f"{name}: has no on-failure destination")
        problems += filter_problems(name, properties.get("FilterCriteria"))
    return problems


def resolved(value, parameters):
    """A {"Ref": parameter} as the parameter's default; anything else as it is."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
        return parameters[value["Ref"]].get("Default")
    return value


# What must page, and when: a Polar outage within 15 minutes, not when the first message is
# dead-lettered 6 hours in; the age SQS's own metric stops counting; 429s that show the
# rate split is wrong.
PAGED_METRICS = ("TransientFailures", "OldestMessageAge", "PolarRateLimited")


def paging_problems(resources):
    """The alarms issue 20 asks for, and the reserved concurrency the rate split counts on."""
    problems = []
    alarms = [r.get("Properties", {}) for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    alarmed = {a.get("MetricName") for a in alarms if a.get("Namespace") == EMF_NAMESPACE}
    for metric in PAGED_METRICS:
        if metric not in alarmed:
            problems.append(f"no alarm on {metric}")
    heartbeats = [a for a in alarms if a.get("Namespace") == "AWS/Lambda" and a.get("MetricName") == "Invocations"]
    if not heartbeats:
        problems.append("no heartbeat: no alarm on the function's Invocations (the schedule guarantees some)")
    for heartbeat in heartbeats:
        if heartbeat.get("TreatMissingData") != "breaching":
            problems.append("the heartbeat must treat missing data as breaching: no invocation is no data")
    for name, resource in resources.items():
        properties = resource.get("Properties", {})
        splits_the_budget = "MAXIMUM_CONCURRENCY" in properties.get("Environment", {}).get("Variables", {})
        if resource["Type"] == "AWS::Lambda::Function" and splits_the_budget and "ReservedConcurrentExecutions" not in properties:
            problems.append(f"{name}: no reserved concurrency (the rate budget is split between the queue's containers and one reconciliation)")
    return problems


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
    parameters = template.get("Parameters", {})
    for name, resource in resources.items():
        kind, properties = resource["Type"], resource.get("Properties", {})
        if kind.startswith("AWS::IAM::"):
            problems += iam_problems(name, properties, deployed)
        elif kind in RESOURCE_POLICIES and RESOURCE_POLICIES[kind] in properties:
            document = properties[RESOURCE_POLICIES[kind]]
            if kind == "AWS::Events::EventBusPolicy":
                document = {"Statement": [document]}
            problems += policy_problems(name, document, deployed, resource_policy=True)
        if kind in STATEFUL:
            for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
                if resource.get(policy) != "Retain":
                    problems.append(f"{name}: {policy} must be Retain (it holds data)")
        if kind == "AWS::SQS::Queue":
            if not (properties.get("SqsManagedSseEnabled") or properties.get("KmsMasterKeyId")):
                problems.append(f"{name}: not encrypted at rest")
            redrive = properties.get("RedrivePolicy")
            if redrive and int(resolved(redrive.get("maxReceiveCount", 0), parameters)) < 5:
                problems.append(f"{name}: maxReceiveCount below 5")
            problems += queue_name_problems(name, properties, deployed)
            if name not in queues_with_policies(resources):
                problems.append(f"{name}: has no queue policy (AWS::SQS::QueuePolicy naming it)")
        elif kind == "AWS::DynamoDB::Table":
            if not properties.get("SSESpecification", {}).get("SSEEnabled"):
                problems.append(f"{name}: not encrypted at rest")
            if not properties.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
                problems.append(f"{name}: point-in-time recovery is off")
            if properties.get("DeletionProtectionEnabled") is not True:
                problems.append(f"{name}: deletion protection is off (DeletionProtectionEnabled)")
        elif kind == "AWS::Lambda::Function":
            if "Role" not in properties:
                problems.append(f"{name}: has no role of its own")
    problems += metric_problems(resources)
    problems += paging_problems(resources)
    problems += stream_mapping_problems(resources)
    dead_letters = resources["RedemptionDeadLetterQueue"]["Properties"]
    if int(dead_letters.get("MessageRetentionPeriod", 0)) != 14 * 24 * 3600:
        problems.append("RedemptionDeadLetterQueue: must keep messages 14 days")
    source_retention = resources["RedemptionQueue"]["Properties"].get("MessageRetentionPeriod")
    if source_retention is None:
        problems.append("RedemptionQueue: MessageRetentionPeriod must be set explicitly")
    elif not OUTAGE_BUDGET_SECONDS < int(source_retention) < int(dead_letters.get("MessageRetentionPeriod", 0)):
        problems.append(f"RedemptionQueue: MessageRetentionPeriod {source_retention} must be above the 6 h outage budget and below the DLQ's")
    problems += visibility_problems(resources, deployed)
    problems += receive_count_problems(resources, deployed)
    return problems


def queues_with_policies(resources):
    named = set()
    for resource in resources.values():
        if resource["Type"] == "AWS::SQS::QueuePolicy":
            for queue in resource.get("Properties", {}).get("Queues", []):
                if isinstance(queue, dict) and "Ref" in queue:
                    named.add(queue["Ref"])
    return named


def with_parameter(template, parameter, value):
    """The template with one parameter fixed to one value (as its only allowed value)."""
    fixed = copy.deepcopy(template)
    fixed["Parameters"][parameter] = {"Type": "String", "AllowedValues": [value]}
    return fixed


def evaluated(expression, template):
    """values(), with Fn::FindInMap too."""
    if isinstance(expression, dict) and set(expression) == {"Fn::FindInMap"}:
        table, first, second = expression["Fn::FindInMap"]
        results = []
        for key in evaluated(first, template):
            for attribute in evaluated(second, template):
                results.append(str(template["Mappings"][table][key][attribute]))
        return results
    return values(expression, template)


def polled_queues(resources):
    """(mapping, queue logical id, function logical id) for every SQS event source mapping."""
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        properties = resource.get("Properties", {})
        source = properties.get("EventSourceArn")
        function = properties.get("FunctionName")
        if isinstance(source, dict) and "Fn::GetAtt" in source and resources.get(
                source["Fn::GetAtt"][0], {}).get("Type") == "AWS::SQS::Queue":
            function = function.get("Ref") if isinstance(function, dict) else function
            yield name, source["Fn::GetAtt"][0], function


def visibility_problems(resources, template):
    """Each polled queue's own VisibilityTimeout, for every function timeout the template
    allows, against six times that timeout (AWS's guidance for SQS event sources)."""
    problems = []
    for mapping, queue, function in polled_queues(resources):
        timeout_expression = resources.get(function, {}).get("Properties", {}).get("Timeout", 3)
        visibility_expression = resources[queue].get("Properties", {}).get("VisibilityTimeout", 30)
        parameter = timeout_expression.get("Ref") if isinstance(timeout_expression, dict) else None
        cases = ([(t, with_parameter(template, parameter, t)) for t in
                  template["Parameters"][parameter].get("AllowedValues", [template["Parameters"][parameter].get("Default")])]
                 if parameter in template.get("Parameters", {}) else [(timeout_expression, template)])
        for timeout, fixed in cases:
            try:
                visibilities = evaluated(visibility_expression, fixed)
            except (Unknowable, KeyError, TypeError) as unknown:
                problems.append(f"{queue}: VisibilityTimeout {unknown} cannot be checked against {function}'s timeout")
                continue
            for visibility in visibilities:
                if int(visibility) < 6 * int(timeout):
                    problems.append(f"{queue}: VisibilityTimeout {visibility} s for {function}'s {timeout} s timeout "
                                    f"is under 6x (polled by {mapping})")
    return problems


def receive_count_problems(resources, template):
    """The redrive policy's maxReceiveCount (a parameter at its MaxValue) within what the
    queue's retention holds at the redelivery schedule's cap."""
    problems = []
    parameters = template.get("Parameters", {})
    for mapping, queue, function in polled_queues(resources):
        properties = resources[queue].get("Properties", {})
        count = properties.get("RedrivePolicy", {}).get("maxReceiveCount")
        if count is None:
            continue
        try:
            retention = int(evaluated(properties.get("MessageRetentionPeriod", 345600), template)[0])
            timeouts = [t for t in (resources.get(function, {}).get("Properties", {}).get("Timeout"),) if t]
            longest = 0
            for fixed in [template] + [with_parameter(template, t["Ref"], v) for t in timeouts if isinstance(t, dict)
                                       for v in parameters.get(t["Ref"], {}).get("AllowedValues", [])]:
                longest = max([longest] + [int(v) for v in evaluated(properties.get("VisibilityTimeout", 30), fixed)])
        except (Unknowable, KeyError, TypeError, ValueError):
            continue
        most = max_receives_retained(retention, longest)
        if isinstance(count, dict) and count.get("Ref") in parameters:
            parameter = parameters[count["Ref"]]
            highest = parameter.get("MaxValue")
            if highest is None or int(highest) > most:
                problems.append(f"{queue}: maxReceiveCount parameter {count['Ref']} allows {highest if highest is not None else 'any value'}; "
                                f"the {retention} s retention holds {most} receives at the {REDELIVERY_CAP_SECONDS // 60}-minute delay cap")
        elif int(count) > most:
            problems.append(f"{queue}: maxReceiveCount {count} exceeds the {most} receives the {retention} s retention holds")
    return problems


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    problems = check(path)
    for problem in problems:
        print(f"template check: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"template check: {path} ok (least privilege, resource policies, parameters, encryption, retention, "
          "data kept, queue names, metrics, timeouts, receive counts, stream mapping, paging)")


if __name__ == "__main__":
    main()
