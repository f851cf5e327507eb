"""An HTTP proxy in front of a real server that answers chosen requests with a fault: a 503, a
connection dropped before any answer, or a body cut short after its headers promised more.
The object-store tests put it between chunkflow and the local S3 server."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("503", "reset", "truncate")

#: (method, path without query, how many times this method and path came before) → a fault or None
FaultPlan = Callable[[str, str, int], str | None]


class FaultyProxy:
    """Forwards every request to ``target`` (``host:port``) unless ``plan`` names a fault for
    it; counts the requests seen and the faults served."""

    def __init__(self, target: str, plan: FaultPlan) -> None:
        self.target = target
        self.plan = plan
        self.seen: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _fault_for(self, method: str, path: str) -> str | None:
        with self._lock:
            key = (method, path.split("?")[0])
            fault = self.plan(method, key[1], self.seen[key])
            self.seen[key] += 1
            if fault is not None:
                self.faults[fault] += 1
            return fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._fault_for(self.command, self.path)
                if fault == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "503":
                    message = b"<Error><Code>SlowDown</Code></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                upstream = http.client.HTTPConnection(proxy.target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                self.send_response(answer.status)
                passed = ("transfer-encoding", "connection")
                if self.command != "HEAD":  # a HEAD's length is the object's: pass it on
                    passed += ("content-length",)
                    self.send_header("Content-Length", str(len(data)))
                for name, value in answer.getheaders():
                    if name.lower() not in passed:
                        self.send_header(name, value)
                self.end_headers()
                if fault == "truncate" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.close()
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler
