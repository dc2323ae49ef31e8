import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cerebelum import _registry


@pytest.fixture(autouse=True)
def fresh_registry():
    """Each test defines its own steps; names may repeat across tests."""
    steps, workflows = dict(_registry.STEPS), dict(_registry.WORKFLOWS)
    _registry.STEPS.clear()
    _registry.WORKFLOWS.clear()
    yield
    _registry.STEPS.clear()
    _registry.WORKFLOWS.clear()
    _registry.STEPS.update(steps)
    _registry.WORKFLOWS.update(workflows)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def server():
    """A local HTTP server that echoes what it got and counts requests."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
            status = 404 if self.path == "/missing" else 200
            self._answer(status, {"path": self.path})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self._answer(201, {"got": json.loads(body), "auth": self.headers.get("authorization")})

        def _answer(self, status, obj):
            payload = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
