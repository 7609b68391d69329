"""A small HTTP proxy on loopback that puts faults between a client and a real server.
Seeded, so a test run is repeatable.

Faults: throttling (S3's 503 SlowDown, or an API's 429 with a `Retry-After` header), dropped
connections, 403 for chosen keys (S3), one fixed answer for every request (an API's 400),
and answers rewritten on their way back (an embeddings answer missing a vector)."""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message></Error>")
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass(frozen=True)
class Reply:
    """An answer the proxy gives instead of the server's."""

    status: int
    body: bytes
    content_type: str = "application/json"
    retry_after: str | None = None


S3_SLOW_DOWN = Reply(503, SLOW_DOWN, "application/xml")
API_RATE_LIMIT = Reply(429, b'{"error": {"message": "Rate limit reached, slow down", '
                       b'"type": "rate_limit_exceeded"}}', retry_after="1")


def api_error(status: int, message: str) -> Reply:
    """An OpenAI-shaped error answer."""
    return Reply(status, json.dumps({"error": {"message": message,
                                               "type": "invalid_request_error"}}).encode())


class FaultyProxy:
    """Forwards to `upstream`; a `fault_rate` share of requests fail (half `throttle`, half
    dropped connections).

    Args:
        deny: GET paths containing one of these get S3's 403 AccessDenied.
        answer: when set, every request gets this reply and nothing is forwarded.
        rewrite: `rewrite(path, body)` -> the body sent back instead of the server's, or
            None to leave it.
    """

    def __init__(self, upstream: str, fault_rate: float = 0.0, seed: int = 0,
                 deny: tuple[str, ...] = (), throttle: Reply = S3_SLOW_DOWN,
                 answer: Reply | None = None,
                 rewrite: Callable[[str, bytes], bytes | None] | None = None) -> None:
        self.upstream = urlsplit(upstream).netloc
        self.fault_rate, self.deny, self.throttle = fault_rate, deny, throttle
        self.answer, self.rewrite = answer, rewrite
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.counts = dict.fromkeys(("requests", "forwarded", "throttled", "dropped", "denied",
                                     "answered", "rewritten"), 0)
        self.authorization: set[str] = set()  # Authorization headers seen
        self.bodies: list[bytes] = []  # request bodies forwarded, in arrival order
        self.in_flight = self.max_in_flight = 0  # requests being answered, and the most
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def roll(self) -> float:
        with self.lock:
            return self.rng.random()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, method: str, path: str, body: bytes | None, headers: dict[str, str]
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The upstream server's (status, headers, body), the body rewritten if asked."""
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        with self.lock:
            self.bodies.append(body or b"")
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
            with self.lock:
                self.in_flight -= 1
        if self.rewrite is not None and resp.status == 200:
            new = self.rewrite(path, data)
            if new is not None and new != data:
                self.count("rewritten")
                data = new
        self.count("forwarded")
        return resp.status, resp.getheaders(), data

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(proxy: FaultyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            return

        def _reply(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            if reply.retry_after is not None:
                self.send_header("Retry-After", reply.retry_after)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def _fault(self) -> bool:
            """Answer with a fault instead of the server; False when none is due."""
            roll = proxy.roll()
            if self.command == "GET" and any(d in self.path for d in proxy.deny):
                proxy.count("denied")
                self._reply(Reply(403, DENIED, "application/xml"))
            elif proxy.answer is not None:
                proxy.count("answered")
                self._reply(proxy.answer)
            elif roll < proxy.fault_rate / 2:
                proxy.count("throttled")
                self._reply(proxy.throttle)
            elif roll < proxy.fault_rate:
                proxy.count("dropped")
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            else:
                return False
            return True

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            proxy.count("requests")
            if self.headers.get("Authorization"):
                with proxy.lock:
                    proxy.authorization.add(self.headers["Authorization"])
            if self._fault():
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            status, got, data = proxy.forward(self.command, self.path, body, headers)
            self.send_response(status)
            for k, v in got:
                if k.lower() not in HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    return Handler
