"""A small HTTP proxy on loopback that injects S3 faults: 503 SlowDown, dropped
connections, and 403 for chosen keys. Seeded, so a test run is repeatable."""

from __future__ import annotations

import http.client
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message></Error>")
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class FaultyProxy:
    """Forwards to `upstream`; a `fault_rate` share of requests fail (half 503, half dropped)."""

    def __init__(self, upstream: str, fault_rate: float = 0.0, seed: int = 0,
                 deny: tuple[str, ...] = ()) -> None:
        self.upstream = urlsplit(upstream).netloc
        self.fault_rate, self.deny = fault_rate, deny
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.counts = {"forwarded": 0, "slow_down": 0, "dropped": 0, "denied": 0}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    roll = proxy.rng.random()
                if self.command == "GET" and any(d in self.path for d in proxy.deny):
                    proxy.counts["denied"] += 1
                    return self._reply(403, DENIED)
                if roll < proxy.fault_rate / 2:
                    proxy.counts["slow_down"] += 1
                    return self._reply(503, SLOW_DOWN)
                if roll < proxy.fault_rate:
                    proxy.counts["dropped"] += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                proxy.counts["forwarded"] += 1
                conn.close()
                return None

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
