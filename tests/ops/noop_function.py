#!/usr/bin/env python3
"""A Lambda function that answers every event with an empty batchItemFailures and does
nothing else: what a broken function that "succeeds" looks like. The smoke test runs
scripts/smoke.py with it, which must fail (and still delete its discount)."""

import json
import os
import urllib.request

api = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime/invocation"
while True:
    with urllib.request.urlopen(f"{api}/next") as event:
        request_id = event.headers["Lambda-Runtime-Aws-Request-Id"]
        event.read()
    answer = json.dumps({"batchItemFailures": []}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{api}/{request_id}/response", data=answer, method="POST")).read()
