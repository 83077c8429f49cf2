"""An EC2 instance metadata service (IMDSv2 only) on 127.0.0.1, written to AWS's documentation.

* ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` between 1 and 21600
  (else 400) and answers the token with that header echoed; a token expires after its TTL.
* Every ``GET`` needs a live token in ``X-aws-ec2-metadata-token`` (else 401: IMDSv2 required).
* An item that does not exist is 404 (``/latest/user-data`` of an instance launched without).
* Faults for tests: ``fail`` answers the next N requests with 500, ``hang`` never answers,
  ``delay`` waits before answering; ``requests`` records every request line.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_TTL = 21600


class FakeInstance:
    """What the instance is: its user data (None: launched without), identity and metadata."""

    def __init__(self, user_data: bytes | None = None, instance_type: str = "m5.large",
                 region: str = "us-west-2", vpc_cidr: str = "10.0.0.0/16"):
        self.user_data = user_data
        self.identity = {
            "region": region,
            "availabilityZone": f"{region}a",
            "instanceId": "i-0123456789abcdef0",
            "instanceType": instance_type,
            "privateIp": "10.0.1.23",
            "accountId": "123456789012",
        }
        mac = "0e:11:22:33:44:55"
        self.meta_data = {
            "mac": mac,
            "local-ipv4": "10.0.1.23",
            "local-hostname": "ip-10-0-1-23.us-west-2.compute.internal",
            f"network/interfaces/macs/{mac}/vpc-ipv4-cidr-blocks": vpc_cidr,
        }


class ImdsServer:
    def __init__(self, instance: FakeInstance | None = None):
        self.instance = instance or FakeInstance()
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.requests: list[str] = []
        self.fail = 0
        self.hang = False
        self.delay = 0.0
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                server._handle(self)

            def do_GET(self) -> None:
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ImdsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, path: str) -> int:
        return sum(1 for line in self.requests if line == f"GET {path}")

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
                headers: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append(f"{handler.command} {handler.path}")
            failing = self.fail > 0
            self.fail -= 1 if failing else 0
        if self.hang:
            self._release.wait()
            return
        if self.delay:
            time.sleep(self.delay)
        if failing:
            return self._answer(handler, 500, b"Internal Server Error")
        if handler.command == "PUT":
            return self._token(handler)
        token = handler.headers.get("X-aws-ec2-metadata-token")
        if token is None or self.tokens.get(token, 0) < time.monotonic():
            return self._answer(handler, 401, b"Unauthorized")
        body = self._item(handler.path)
        if body is None:
            return self._answer(handler, 404, b"Not Found")
        return self._answer(handler, 200, body)

    def _token(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path != "/latest/api/token":
            return self._answer(handler, 404, b"Not Found")
        ttl = handler.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL:
            return self._answer(handler, 400, b"Bad Request")
        token = secrets.token_urlsafe(32)
        self.tokens[token] = time.monotonic() + int(ttl)
        self._answer(handler, 200, token.encode(),
                     {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def _item(self, path: str) -> bytes | None:
        instance = self.instance
        if path == "/latest/user-data":
            return instance.user_data
        if path == "/latest/dynamic/instance-identity/document":
            return json.dumps(instance.identity, indent=2).encode()
        prefix = "/latest/meta-data/"
        if path.startswith(prefix) and path[len(prefix):] in instance.meta_data:
            return instance.meta_data[path[len(prefix):]].encode()
        return None
