"""`make smoke`: the built function against a real Polar (the sandbox) or the project's
Polar double, with DynamoDB from moto.

  1. creates a throwaway discount with max_redemptions 2 (POST /discounts/);
  2. creates the function's tables in moto and writes two orders that used its code;
  3. runs the function binary through the Lambda Runtime API (lambda-invoke) on one SQS
     event per order: after the first, max_redemptions must be 1 and the order
     `decremented`; after the second, the discount must be gone (404 ResourceNotFound) and
     the order `deleted`;
  4. deletes the discount if it is still there, whatever happened (also on Ctrl-C).

Polar: POLAR_API_URL (default https://sandbox-api.polar.sh/v1) and POLAR_ACCESS_TOKEN, a
sandbox organization token with discounts:read and discounts:write. A non-sandbox https
URL is refused unless --allow-production. With --double the script starts the Polar
double (target/debug/polar-double) itself and ignores both variables.

DynamoDB: AWS_ENDPOINT_URL must point at moto (scripts/with-moto.sh sets it), so that no
table is ever created in a real account. Exit status 0 when every check passed.
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlparse

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from local_fixtures import create_table  # noqa: E402
from polar_http import SANDBOX_API_URL, Polar  # noqa: E402

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:polar-discount-sync-smoke"
# The sandbox allows 100 requests a minute per organization (production 500); the smoke
# makes about 8, but the function is given a sandbox-sized budget all the same.
SANDBOX_RATE_LIMIT_PER_MINUTE = "60"


class SmokeFailed(Exception):
    pass


def step(text):
    print(f"==> {text}", flush=True)


def ok(text):
    print(f"    ok: {text}", flush=True)


def check(condition, text):
    if not condition:
        raise SmokeFailed(text)
    ok(text)


def is_loopback(url):
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


def start_double(binary, token):
    process = subprocess.Popen([binary, "--port", "0", "--token", token], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line.startswith("listening on "):
        process.kill()
        raise SmokeFailed(f"the Polar double did not start: {line!r}")
    return process, line.removeprefix("listening on ")


def sqs_event(message_id, order_id, discount_id, code):
    now_ms = str(int(time.time() * 1000))
    return {"Records": [{
        "messageId": message_id,
        "receiptHandle": f"smoke-{message_id}",
        "body": json.dumps({"orderId": order_id, "discountId": discount_id, "discountCode": code}),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now_ms,
                       "SenderId": "smoke", "ApproximateFirstReceiveTimestamp": now_ms},
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }]}


def invoke(args, env, event, workdir, n):
    path = os.path.join(workdir, f"event-{n}.json")
    with open(path, "w") as f:
        json.dump(event, f)
    log_path = os.path.join(workdir, f"function-{n}.log")
    with open(log_path, "w") as log:
        done = subprocess.run([args.lambda_invoke, "--timeout-secs", "30", "--event", path, "--", args.function],
                              env=env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=90)
    with open(log_path) as log:
        logs = log.read()
    if args.verbose or done.returncode != 0:
        sys.stdout.write("".join(f"    | {line}\n" for line in logs.splitlines()))
    if done.returncode != 0:
        raise SmokeFailed(f"lambda-invoke exited with {done.returncode}")
    try:
        return json.loads(done.stdout)
    except ValueError as err:
        raise SmokeFailed(f"the function's answer is not JSON: {done.stdout!r}") from err


def order(dynamodb, table, order_id):
    item = dynamodb.get_item(TableName=table, Key={"id": {"S": order_id}}, ConsistentRead=True).get("Item", {})
    return {k: next(iter(v.values())) for k, v in item.items()}


def run(args, polar, polar_url):
    suffix = secrets.token_hex(4)
    orders_table, sync_table = f"smoke-orders-{suffix}", f"smoke-sync-{suffix}"
    code = f"SMOKE{suffix.upper()}"
    dynamodb = boto3.client("dynamodb")
    discount_id = None
    try:
        step(f"creating a throwaway discount {code} with max_redemptions 2 on {polar_url}")
        status, created, text = polar.request("POST", "/discounts/", {
            "name": f"polar-discount-sync smoke {suffix}",
            "type": "percentage",
            "basis_points": 100,
            "duration": "once",
            "code": code,
            "max_redemptions": 2,
            "metadata": {"created_by": "polar-discount-sync make smoke"},
        })
        if status != 201 or not isinstance(created, dict) or "id" not in created:
            raise SmokeFailed(f"creating the discount answered HTTP {status}: {text[:300]}")
        discount_id = created["id"]
        check(created.get("max_redemptions") == 2, f"discount {discount_id} created, max_redemptions=2")

        step(f"creating tables {orders_table} and {sync_table} in moto, writing two orders")
        create_table(dynamodb, orders_table, "id")
        create_table(dynamodb, sync_table, "pk")
        orders = [f"smoke-{suffix}-1", f"smoke-{suffix}-2"]
        for order_id in orders:
            dynamodb.put_item(TableName=orders_table, Item={
                "id": {"S": order_id}, "discountId": {"S": discount_id}, "discountCode": {"S": code}})
        ok(f"orders {orders[0]} and {orders[1]} use {code}")

        env = {
            **os.environ,
            "ORDERS_TABLE": orders_table,
            "SYNC_TABLE": sync_table,
            "POLAR_API_URL": polar_url,
            "POLAR_ACCESS_TOKEN": polar.token,
            "MAX_RECEIVE_COUNT": "5",  # no queue to read a redrive policy from
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        }
        env.setdefault("POLAR_RATE_LIMIT_PER_MINUTE", SANDBOX_RATE_LIMIT_PER_MINUTE)
        env.pop("DEAD_LETTER_QUEUE_URL", None)
        env.pop("POLAR_ACCESS_TOKEN_PARAMETER", None)
        expected = [("decremented", 1), ("deleted", None)]
        with tempfile.TemporaryDirectory(prefix="smoke-") as workdir:
            for n, (order_id, (action, limit)) in enumerate(zip(orders, expected), start=1):
                step(f"invocation {n}: one SQS message for order {order_id}")
                answer = invoke(args, env, sqs_event(f"smoke-{suffix}-msg-{n}", order_id, discount_id, code),
                                workdir, n)
                check(answer == {"batchItemFailures": []}, f"the function answered {json.dumps(answer)}")
                item = order(dynamodb, orders_table, order_id)
                check(item.get("polarDiscountSynced") is True and item.get("polarDiscountSyncAction") == action,
                      f"order {order_id}: polarDiscountSynced=true polarDiscountSyncAction="
                      f"{item.get('polarDiscountSyncAction')} (expected {action})")
                seen = polar.get_discount(discount_id)
                if limit is not None:
                    found = seen.get("discount", {}).get("max_redemptions") if seen["state"] == "found" else None
                    check(found == limit, f"Polar: max_redemptions={found} (expected {limit})")
                else:
                    check(seen["state"] == "deleted",
                          f"Polar: the discount is {seen['state']} (expected deleted: 404 ResourceNotFound)")
        print("smoke passed: 2 -> 1 -> deleted", flush=True)
        return 0
    except SmokeFailed as err:
        print(f"SMOKE FAILED: {err}", flush=True)
        return 1
    except OSError as err:
        print(f"SMOKE FAILED: Polar at {polar_url} could not be reached: {err}", flush=True)
        return 1
    finally:
        if discount_id is not None:
            cleanup(polar, discount_id)


def cleanup(polar, discount_id):
    step(f"cleanup: discount {discount_id}")
    try:
        seen = polar.get_discount(discount_id)
        if seen["state"] == "deleted":
            ok("already deleted")
            return
        status, _, text = polar.request("DELETE", f"/discounts/{discount_id}")
        if status in (200, 204):
            ok(f"deleted (HTTP {status})")
        else:
            print(f"    CLEANUP FAILED: DELETE answered HTTP {status}: {text[:200]}; "
                  f"delete discount {discount_id} by hand", flush=True)
    except OSError as err:
        print(f"    CLEANUP FAILED: {err}; delete discount {discount_id} by hand", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--double", action="store_true", help="start the Polar double and run against it")
    parser.add_argument("--allow-production", action="store_true",
                        help="allow a POLAR_API_URL that is not the sandbox (creates and deletes a real discount)")
    parser.add_argument("--function", default=os.path.join(ROOT, "target/debug/polar-discount-sync"))
    parser.add_argument("--lambda-invoke", default=os.path.join(ROOT, "target/debug/lambda-invoke"))
    parser.add_argument("--polar-double", default=os.path.join(ROOT, "target/debug/polar-double"))
    parser.add_argument("--verbose", action="store_true", help="print the function's logs")
    args = parser.parse_args(argv)

    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint or not is_loopback(endpoint):
        parser.error("AWS_ENDPOINT_URL must point at moto on loopback (run through scripts/with-moto.sh "
                     "or make smoke); the smoke never creates tables in an AWS account")
    for binary in (args.function, args.lambda_invoke) + ((args.polar_double,) if args.double else ()):
        if not os.access(binary, os.X_OK):
            parser.error(f"{binary} is not built: cargo build --workspace --bins")

    # Ctrl-C and SIGTERM end the run through the cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    double = None
    try:
        if args.double:
            token = f"polar_oat_smoke_{secrets.token_hex(8)}"
            double, polar_url = start_double(args.polar_double, token)
            step(f"started the Polar double on {polar_url}")
            polar = Polar(polar_url, token)
        else:
            polar_url = os.environ.get("POLAR_API_URL", "").strip() or SANDBOX_API_URL
            token = os.environ.get("POLAR_ACCESS_TOKEN", "").strip()
            if not token:
                parser.error("POLAR_ACCESS_TOKEN is not set: create an organization token in the Polar "
                             "sandbox dashboard (sandbox.polar.sh), or use --double")
            host = urlparse(polar_url).hostname or ""
            if not (is_loopback(polar_url) or host.startswith("sandbox-api.") or args.allow_production):
                parser.error(f"POLAR_API_URL {polar_url} is not the sandbox: the smoke creates and deletes a "
                             "discount there; pass --allow-production if you mean it")
            polar = Polar(polar_url, token)
        return run(args, polar, polar_url)
    except SmokeFailed as err:
        print(f"SMOKE FAILED: {err}", flush=True)
        return 1
    finally:
        if double is not None:
            double.terminate()
            double.wait(timeout=10)
            double.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
