"""What every operator command shares: the deployed stack's resources, each resource's own
region, and errors that are one line.

A command is given `STACK=name` (or a stack ARN) and finds the function's tables, queues,
function and token parameter in the stack's outputs (template.yaml, `Outputs:`); an
explicit variable (`SYNC_TABLE=`, `DLQ_URL=`, ...) still wins over the stack's value, and
without a stack the explicit variables are all there is. Used by dlq.py, status.py,
operate.py, and meant for any later command (backfill):

    from stack import Resources, client, run
    def main():
        resources = Resources.from_env(needs=["sync_table", "queue_url"])
        sqs = client("sqs", resources.queue_url)          # the queue URL's region
        ...
    if __name__ == "__main__":
        run(main)                                          # one-line errors, exit 1

Regions: a client for a resource is made in that resource's region, read from the
resource itself (a queue URL's host `sqs.REGION.amazonaws.com`, an ARN's region field);
names without a region (tables, the function's name, the token parameter) are in the
stack's region (its StackId's), else the usual AWS configuration's (AWS_REGION, the
profile). The stack itself is looked up in STACK_REGION if set, else in the region of a
stack ARN, else in the usual one.
"""

import os
import re
import sys
from urllib.parse import urlparse

import boto3

# What each resource is called: (attribute, explicit environment variable, stack output).
RESOURCES = [
    ("orders_table", "ORDERS_TABLE", "OrdersTableName"),
    ("sync_table", "SYNC_TABLE", "SyncTableName"),
    ("queue_url", "QUEUE_URL", "QueueUrl"),
    ("dlq_url", "DLQ_URL", "DeadLetterQueueUrl"),
    ("function", "FUNCTION", "FunctionArn"),
    ("token_parameter", "TOKEN_PARAMETER", "TokenParameterName"),
]
VARIABLES = {attribute: variable for attribute, variable, _ in RESOURCES}
OUTPUTS = {attribute: output for attribute, _, output in RESOURCES}


class OperatorError(Exception):
    """A failure the operator can act on, printed as one line."""


def region_of(resource):
    """The region a queue URL or an ARN names, or None (a plain name, a local endpoint)."""
    if not isinstance(resource, str) or not resource:
        return None
    if resource.startswith("arn:"):
        parts = resource.split(":")
        return (parts[3] or None) if len(parts) > 3 else None
    host = urlparse(resource).hostname or ""
    found = re.fullmatch(r"sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?", host) or \
        re.fullmatch(r"([a-z]{2}(-[a-z]+)+-\d)\.queue\.amazonaws\.com(\.cn)?", host)
    return found.group(1) if found else None


def client(service, resource=None, region=None):
    """A boto3 client in the resource's own region (else `region`, else the default)."""
    return boto3.client(service, region_name=region_of(resource) or region or None)


def stack_outputs(stack):
    """(outputs by key, the stack's region, the stack's description) of a deployed stack."""
    region = os.environ.get("STACK_REGION", "").strip() or region_of(stack)
    cloudformation = client("cloudformation", region=region)
    try:
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except cloudformation.exceptions.ClientError as err:
        if "does not exist" in str(err):
            where = cloudformation.meta.region_name
            raise OperatorError(f"stack {stack} does not exist in {where} (set STACK_REGION=… or AWS_REGION=…)") from None
        raise
    description = found[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
    return outputs, region_of(description["StackId"]), description


class Resources:
    """The resources one command needs, from explicit values and the stack's outputs."""

    def __init__(self, stack=None, explicit=None, needs=()):
        self.stack = stack or None
        self.region = None
        self.outputs = {}
        self.description = None
        self.source = {}
        if self.stack:
            self.outputs, self.region, self.description = stack_outputs(self.stack)
        for attribute, variable, output in RESOURCES:
            value = (explicit or {}).get(attribute)
            if value:
                self.source[attribute] = variable
            elif output in self.outputs:
                value = self.outputs[output]
                self.source[attribute] = f"stack {self.stack} output {output}"
            setattr(self, attribute, value or None)
        missing = [a for a in needs if not getattr(self, a)]
        if missing:
            names = ", ".join(VARIABLES[a] for a in missing)
            if self.stack:
                raise OperatorError(f"{names}: not set, and stack {self.stack} has no output "
                                    f"{', '.join(OUTPUTS[a] for a in missing)}")
            raise OperatorError(f"{names} not set: give STACK=<stack name> or {names}")

    @classmethod
    def from_env(cls, needs=(), stack=None, environ=None):
        """From STACK and the explicit variables (ORDERS_TABLE, SYNC_TABLE, QUEUE_URL,
        DLQ_URL, FUNCTION, TOKEN_PARAMETER) of the environment."""
        environ = os.environ if environ is None else environ
        explicit = {a: environ.get(v, "").strip() for a, v in VARIABLES.items()}
        return cls(stack=stack or environ.get("STACK", "").strip(), explicit=explicit, needs=needs)

    def client(self, service, resource=None):
        """A client in the resource's region, else the stack's, else the default."""
        return client(service, resource, region=self.region)


def describe_error(err):
    """One line for an AWS SDK failure."""
    import botocore.exceptions as errors

    if isinstance(err, OperatorError):
        return str(err)
    if isinstance(err, (errors.NoCredentialsError, errors.PartialCredentialsError)):
        return "no AWS credentials: log in (aws sso login, AWS_PROFILE=…) and run it again"
    if isinstance(err, errors.ProfileNotFound):
        return f"{err}: set AWS_PROFILE to a profile of your AWS configuration"
    if isinstance(err, errors.NoRegionError):
        return "no AWS region: set AWS_REGION=… (or STACK_REGION for the stack)"
    if isinstance(err, errors.TokenRetrievalError) or type(err).__name__ in ("SSOTokenLoadError", "UnauthorizedSSOTokenError"):
        return f"AWS credentials expired or unreadable: {err} (aws sso login)"
    if isinstance(err, errors.EndpointConnectionError):
        return f"cannot reach AWS: {err}"
    if isinstance(err, errors.ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        message = err.response.get("Error", {}).get("Message", "") or str(err)
        operation = getattr(err, "operation_name", "")
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation") or "not authorized" in message:
            return f"permission denied for {operation}: {message}"
        if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
                    "SignatureDoesNotMatch"):
            return f"AWS credentials rejected ({code}): log in again"
        return f"{operation} failed ({code}): {message}"
    if isinstance(err, errors.BotoCoreError):
        return f"AWS SDK error: {err}"
    return None


def run(main):
    """Runs main() (returning an exit status); AWS and operator errors are one line on
    stderr and exit 1, never a traceback."""
    try:
        status = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - every AWS failure is one line
        line = describe_error(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status or 0)
