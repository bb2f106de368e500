"""A fault-injecting HTTP proxy in front of an S3 server, on 127.0.0.1: where a real server cannot be made to fail.

Requests pass through unchanged (the Host header too, so SigV4 signatures
still verify) unless a rule matches: then the proxy answers an S3 error
(``503 SlowDown`` storms), reads part of the request and drops the
connection (a cut mid-upload), or passes it on after a delay, counting how many
such requests were in flight at once (``slow``). Each rule applies to a number of matching
requests, which the test sets and the proxy counts.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit


@dataclass
class Rule:
    matches: Callable[[str, str], bool]  # (method, path) -> applies
    left: int
    action: str  # "error", "cut" or "slow"
    status: int = 503
    code: str = "SlowDown"
    delay: float = 0.0  # for "slow": seconds before the request is passed on
    hits: int = 0
    in_flight: int = 0
    most_in_flight: int = 0  # for "slow": the most matching requests in flight at once


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, matches: Callable[[str, str], bool], count: int, action: str = "error", **kw) -> Rule:
        rule = Rule(matches, count, action, **kw)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def _rule(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.left > 0 and rule.matches(method, path):
                    rule.left -= 1
                    rule.hits += 1
                    return rule
        return None

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        rule = self._rule(req.command, req.path)
        if rule is not None and rule.action == "cut":
            req.rfile.read(min(length, 64 << 10))  # part of the body, then the connection is gone
            req.close_connection = True
            req.connection.shutdown(2)
            return
        body = req.rfile.read(length) if length else b""
        if rule is not None and rule.action == "slow":
            with self.lock:
                rule.in_flight += 1
                rule.most_in_flight = max(rule.most_in_flight, rule.in_flight)
            time.sleep(rule.delay)
            with self.lock:
                rule.in_flight -= 1
            rule = None
        if rule is not None:
            xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule.code}</Code>'
                   f"<Message>injected</Message></Error>").encode()
            req.send_response(rule.status)
            req.send_header("Content-Type", "application/xml")
            req.send_header("Content-Length", str(len(xml)))
            req.end_headers()
            if req.command != "HEAD":
                req.wfile.write(xml)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.putrequest(req.command, req.path, skip_host=True, skip_accept_encoding=True)
            for name, value in req.headers.items():
                if name.lower() not in ("connection", "expect", "keep-alive"):
                    conn.putheader(name, value)
            conn.endheaders(body)
            answer = conn.getresponse()
            data = answer.read()
            req.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
                    req.send_header(name, value)
            # A HEAD answer's length is the object's, not its (empty) body's.
            req.send_header("Content-Length", answer.getheader("Content-Length", "0") if req.command == "HEAD" else str(len(data)))
            req.end_headers()
            if req.command != "HEAD":
                req.wfile.write(data)
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
