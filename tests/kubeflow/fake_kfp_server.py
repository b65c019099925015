"""A recording stand-in for the KFP v2beta1 REST API on 127.0.0.1 (only what kfp.Client's submit path calls).

Why a stand-in: a real KFP API server needs Kubernetes, Argo Workflows, MySQL, an object store and the KFP
images from a container registry; none of them can be installed or pulled on this machine (no cluster, no
registry; kfp-notes.md §3.3). This records every request on our side of the wire (path, query, bearer
token, body) and answers like the real server's JSON API.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


class FakeKfp:
    """Start with ``FakeKfp(experiments={"name": "id"})``; ``requests`` lists what the client sent."""

    def __init__(self, experiments: dict[str, str] | None = None, status: int = 200) -> None:
        self.experiments = dict(experiments or {})
        self.status = status
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakeKfp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, obj: dict, code: int = 200) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> tuple:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                u = urlparse(self.path)
                fake.requests.append({"method": self.command, "path": u.path, "query": parse_qs(u.query),
                                      "auth": self.headers.get("Authorization"), "body": body})  # fmt: skip
                return u, body

            def do_GET(self) -> None:
                u, _ = self._record()
                if fake.status != 200:
                    return self._send({"error": "denied", "code": fake.status}, fake.status)
                if u.path == f"{API}/healthz":
                    return self._send({"multi_user": False})
                if u.path == f"{API}/experiments":
                    wanted = json.loads(parse_qs(u.query).get("filter", ["{}"])[0])
                    names = [
                        p.get("string_value") or p.get("stringValue") for p in wanted.get("predicates", [])
                    ]
                    found = [{"experiment_id": i, "display_name": n} for n, i in fake.experiments.items()
                             if n in names]  # fmt: skip
                    return self._send({"experiments": found, "total_size": len(found)} if found else {})
                if u.path.startswith(f"{API}/runs/"):
                    return self._send({"run_id": u.path.rsplit("/", 1)[-1], "state": "SUCCEEDED"})
                return self._send({"error": "not found"}, 404)

            def do_POST(self) -> None:
                u, body = self._record()
                if fake.status != 200:
                    return self._send({"error": "denied", "code": fake.status}, fake.status)
                if u.path == f"{API}/experiments":
                    exp = json.loads(body)
                    fake.experiments[exp["display_name"]] = "exp-new"
                    return self._send({"experiment_id": "exp-new", **exp})
                if u.path == f"{API}/runs":
                    run = json.loads(body)
                    return self._send({"run_id": "run-1", "state": "PENDING",
                                       "display_name": run.get("display_name"),
                                       "experiment_id": run.get("experiment_id")})  # fmt: skip
                return self._send({"error": "not found"}, 404)

        return Handler
