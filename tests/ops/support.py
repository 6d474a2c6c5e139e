"""Shared by the operator-command tests: moto (AWS_ENDPOINT_URL, set by
scripts/with-moto.sh), the Polar double binary, the function binary run through
lambda-invoke, and the scripts themselves run as subprocesses, as an operator runs them."""

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = sys.executable
FUNCTION = os.path.join(ROOT, "target/debug/polar-discount-sync")
LAMBDA_INVOKE = os.path.join(ROOT, "target/debug/lambda-invoke")
POLAR_DOUBLE = os.path.join(ROOT, "target/debug/polar-double")

if not os.environ.get("AWS_ENDPOINT_URL"):
    raise SystemExit("run these tests through scripts/with-moto.sh (they need moto)")


def suffix():
    return secrets.token_hex(4)


def create_tables(orders_table, sync_table):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from local_fixtures import create_table

    dynamodb = boto3.client("dynamodb")
    create_table(dynamodb, orders_table, "id")
    create_table(dynamodb, sync_table, "pk")
    return dynamodb


def run(args, env=None, timeout=120, input=None):
    """Runs a command from the repository root (stdin: `input`, else nothing); returns the
    CompletedProcess (text)."""
    return subprocess.run(args, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, input=input if input is not None else "")


def script(name, *args, env=None, timeout=120, input=None):
    return run([PYTHON, os.path.join(ROOT, "scripts", name), *args], env=env, timeout=timeout, input=input)


def invoke_function(event, env, timeout_secs=30):
    """The function binary on one event through the Runtime API; returns its answer."""
    done = subprocess.run(
        [LAMBDA_INVOKE, "--timeout-secs", str(timeout_secs), "--event", "-", "--", FUNCTION],
        cwd=ROOT, env={**os.environ, **env}, input=json.dumps(event), capture_output=True, text=True,
        timeout=timeout_secs + 60)
    assert done.returncode == 0, f"lambda-invoke failed:\n{done.stderr}"
    return json.loads(done.stdout)


def sqs_record(message_id, body, source_arn, receive_count=1, attributes=None):
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1795840000000",
                       "SenderId": "test", "ApproximateFirstReceiveTimestamp": "1795840000100"},
        "messageAttributes": attributes or {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": source_arn,
        "awsRegion": "us-east-1",
    }


class Double:
    """The Polar double binary on a free loopback port."""

    def __init__(self, token=None):
        self.token = token or f"polar_oat_test_{suffix()}"
        self.process = subprocess.Popen([POLAR_DOUBLE, "--port", "0", "--token", self.token],
                                        stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.api_url = line.removeprefix("listening on ")
        self.root = self.api_url.removesuffix("/v1")

    def admin(self, method, path, body=None):
        request = urllib.request.Request(
            f"{self.root}/__double{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request) as response:
                text = response.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise

    def seed(self, discount_id, code, max_redemptions):
        return self.admin("PUT", f"/discounts/{discount_id}",
                          {"name": code, "code": code, "max_redemptions": max_redemptions})

    def requests(self):
        return self.admin("GET", "/requests")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()
