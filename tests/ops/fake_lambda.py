"""A Lambda endpoint for the operator commands' tests (AWS_ENDPOINT_URL_LAMBDA): Invoke runs
the function binary on the event through the Runtime API (lambda-invoke), with the
environment the test gives it; every other Lambda request (ListEventSourceMappings,
UpdateEventSourceMapping, GetFunctionConfiguration, ...) is passed on to moto unchanged.
moto's own Invoke needs Docker, which these tests do not have."""

import json
import re
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support import invoke_function

INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations")


class FakeLambda:
    def __init__(self, moto_url, function_env):
        self.moto_url = moto_url.rstrip("/")
        self.function_env = function_env
        self.invocations = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, headers, body):
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                invoked = INVOKE.match(self.path)
                if invoked and self.command == "POST":
                    event = json.loads(body or b"{}")
                    fake.invocations.append((urllib.request.unquote(invoked.group(1)), event))
                    result = invoke_function(event, fake.function_env)
                    return self.answer(200, [("content-type", "application/json"),
                                             ("x-amz-executed-version", "$LATEST")], json.dumps(result).encode())
                request = urllib.request.Request(fake.moto_url + self.path, data=body or None, method=self.command,
                                                 headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                try:
                    with urllib.request.urlopen(request) as response:
                        return self.answer(response.status, response.getheaders(), response.read())
                except urllib.error.HTTPError as err:
                    return self.answer(err.code, err.headers.items(), err.read())

            do_GET = do_POST = do_PUT = do_DELETE = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
