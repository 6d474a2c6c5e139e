"""moto's server, applying one request at a time.

DynamoDB applies a conditional write atomically. moto's threaded server checks a condition
and writes in separate Python steps, so two concurrent conditional writes can both pass.
The lease and the journal rely on that atomicity, so the tests serialize moto's requests.
Usage: same flags as moto_server.
"""

import threading

import moto.server
from werkzeug.serving import run_simple

_one_at_a_time = threading.Lock()


class Serialized:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        with _one_at_a_time:
            return list(self.app(environ, start_response))


def run_serialized(host, port, app, **kwargs):
    run_simple(host, port, Serialized(app), **kwargs)


if __name__ == "__main__":
    moto.server.run_simple = run_serialized
    moto.server.main()
