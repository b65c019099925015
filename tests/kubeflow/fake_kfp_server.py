"""A stand-in for the KFP v2beta1 REST API on 127.0.0.1 that applies a given backend version's rules.

Why a stand-in: a real KFP API server needs Kubernetes, Argo Workflows, MySQL, an object store and the KFP
images from a container registry; none of them can be installed or pulled on this machine (no cluster, no
registry, no Go toolchain: kfp-notes.md §3.3). So this records every request on our side of the wire and
answers as the backend of ``version`` would, by the rules read in its source (kubeflow/pipelines at that tag;
each rule below names its file):

* pipeline spec: strict ``protojson.Unmarshal`` into PipelineSpec; an unknown field (to that version's
  api/v2alpha1/pipeline_spec.proto, kfp_proto_fields.json) is a 400 "invalid v2 pipeline spec"; schema
  2.1.0, a DNS-like name and a root are required (backend/src/apiserver/template/v2_template.go).
* platform spec: the same strict parse, but a failure is *silent*: ``IsPlatformSpecWithKubernetesConfig``
  returns false and the document is skipped (v2_template.go, 2.4.0 .. 2.17.0): ``dropped_platform``.
* executor configs: the driver parses them allowing/discarding unknown fields (backend/src/common/util/json.go
  ``UnmarshalString``: jsonpb AllowUnknownFields at 2.4.0/2.5.0, protojson DiscardUnknown from 2.14.0), so an
  unknown field is silently not applied: ``dropped_fields``.
* the run workspace (backend/src/v2/compiler/argocompiler/argo.go ``GetWorkspacePVC``): from 2.15.0 a
  pvcSpecPatch may hold only accessModes/storageClassName and, without an admin default
  (``workspace_default``), accessModes are required at CreateRun; at 2.14.x a PVC without them is created
  and Kubernetes rejects it, so the run FAILS.
* multi-user mode (backend/src/apiserver/resource/resource_manager.go ``CheckExperimentBelongsToNamespace``):
  an experiment or run without a namespace/experiment is refused.
* error bodies as grpc-gateway writes them (``{error, code, message, details}``, gRPC code numbers), healthz
  as backend/src/apiserver/main.go writes it (``commit_sha``, ``tag_name``, ``multi_user``).
* runs go PENDING -> RUNNING -> ``outcome`` (SUCCEEDED or FAILED with an error) over successive GETs.
"""

from __future__ import annotations

import json
import re
import threading
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

API = "/apis/v2beta1"
FIELDS = json.loads((Path(__file__).parent / "kfp_proto_fields.json").read_text())["fields"]
VERSIONS = tuple(FIELDS)  # 2.4.0, 2.5.0, 2.14.0, 2.15.0, 2.16.0, 2.17.0
INVALID_ARGUMENT, NOT_FOUND, INTERNAL, UNAUTHENTICATED = 3, 5, 13, 16  # google.rpc.Code
NAME_RE = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"  # v2_template.go


class Refused(Exception):
    """An API error: HTTP status, gRPC code, message."""

    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _line(version: str) -> str:
    """The stored field table of ``version``'s line (2.14.4 -> 2.14.0)."""
    major_minor = ".".join(version.split(".")[:2])
    for v in VERSIONS:
        if v.startswith(major_minor + "."):
            return v
    raise ValueError(f"no proto fields stored for KFP {version}")


def unknown_fields(data, descriptor, version: str, path: str = "") -> list[str]:
    """Dotted paths of the fields in ``data`` (protobuf JSON) that ``version``'s protos do not have."""
    table = FIELDS[_line(version)]
    known = set(table.get(descriptor.full_name, ()))
    found = []
    for key, value in (data or {}).items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        if field is None or field.name not in known:
            found.append(f"{path}{key}")
            continue
        sub = field.message_type
        if sub is None or not sub.full_name.startswith(("ml_pipelines.", "kfp_kubernetes.")):
            continue  # scalars, enums, google.protobuf.Struct/Value (free-form)
        if sub.GetOptions().map_entry:
            inner = sub.fields_by_name["value"].message_type
            if inner is not None and inner.full_name.startswith(("ml_pipelines.", "kfp_kubernetes.")):
                for k, v in value.items():
                    found += unknown_fields(v, inner, version, f"{path}{key}.{k}.")
        elif field.label == field.LABEL_REPEATED:
            for i, v in enumerate(value):
                found += unknown_fields(v, sub, version, f"{path}{key}[{i}].")
        else:
            found += unknown_fields(value, sub, version, f"{path}{key}.")
    return found


class Backend:
    """What the API server, the Argo compiler and the driver of ``version`` do with a package."""

    def __init__(self, version: str, workspace_default: dict | None = None):
        self.version = version
        self.workspace_default = workspace_default

    def at_least(self, v: str) -> bool:
        return tuple(map(int, self.version.split("."))) >= tuple(map(int, v.split(".")))

    def parse(self, docs: list[dict]) -> dict:
        """Both documents as the API server reads them (v2_template.go ``NewV2SpecTemplate``)."""
        spec, platform, dropped_platform = None, None, False
        for doc in docs:
            if doc is None:
                continue
            if "pipelineInfo" in doc or "root" in doc:
                spec = self._pipeline_spec(doc)
            else:
                platform, dropped_platform = self._platform_spec(doc)
        if spec is None:
            raise Refused(400, INVALID_ARGUMENT, "Invalid input error: no pipeline spec is provided")
        return {"spec": spec, "platform": platform, "dropped_platform": dropped_platform}

    def _pipeline_spec(self, doc: dict) -> dict:
        bad = unknown_fields(doc, pipeline_spec_pb2.PipelineSpec.DESCRIPTOR, self.version)
        try:
            json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            bad = bad or [str(exc)]
        if bad:
            message = f'Invalid input error: invalid v2 pipeline spec: proto: unknown field "{bad[0]}"'
            raise Refused(400, INVALID_ARGUMENT, message)
        if doc.get("schemaVersion") != "2.1.0":
            raise Refused(
                400, INVALID_ARGUMENT, "Invalid input error: KFP only supports schema version 2.1.0"
            )
        name = doc.get("pipelineInfo", {}).get("name", "")
        if not name or not re.match(NAME_RE, name) or not doc.get("root"):
            raise Refused(
                400, INVALID_ARGUMENT, "Invalid input error: invalid v2 pipeline spec: name or root"
            )
        return doc

    def _platform_spec(self, doc: dict) -> tuple[dict | None, bool]:
        bad = unknown_fields(doc, pipeline_spec_pb2.PlatformSpec.DESCRIPTOR, self.version)
        try:
            json_format.ParseDict(doc, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
        except json_format.ParseError:
            bad = bad or ["?"]
        if bad or "kubernetes" not in doc.get("platforms", {}):
            return None, True  # IsPlatformSpecWithKubernetesConfig == false: skipped without an error
        return doc, False

    def applied(self, platform: dict | None) -> tuple[dict, list[str]]:
        """The executor configs as the driver applies them, and the fields it silently discards."""
        executors = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
        applied, dropped = {}, []
        for label, cfg in executors.get("executors", {}).items():
            bad = unknown_fields(cfg, k8s_pb2.KubernetesExecutorConfig.DESCRIPTOR, self.version)
            dropped += [f"{label}.{b}" for b in bad]
            applied[label] = {k: v for k, v in cfg.items() if k not in bad}
        return applied, dropped

    def compile_run(self, platform: dict | None) -> str | None:
        """The Argo compile at CreateRun: an error message (the run is refused), or None.
        Returns "FAILED:<message>" when the run is accepted but cannot start (2.14.x workspace)."""
        config = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("pipelineConfig", {})
        workspace = config.get("workspace")
        if not workspace:
            return None
        patch = workspace.get("kubernetes", {}).get("pvcSpecPatch", {}) or {}
        modes = patch.get("accessModes") or (self.workspace_default or {}).get("accessModes")
        if self.at_least("2.15.0"):
            extra = sorted(set(patch) - {"accessModes", "storageClassName"})
            if extra:
                return f"unknown fields in PVC spec patch: {extra}"
            if not modes:
                return "workspace PVC spec must specify accessModes"
        elif not modes:  # 2.14.x: no check; the PVC itself is invalid
            return "FAILED:PersistentVolumeClaim is invalid: spec.accessModes: Required value"
        return None


class FakeKfp:
    """``FakeKfp(version="2.17.0", multi_user=False, outcome="SUCCEEDED")`` as a context manager;
    ``requests`` lists what the client sent, ``runs`` what the backend made of each run."""

    def __init__(
        self,
        experiments: dict[str, str] | None = None,
        status: int = 200,
        version: str = "2.17.0",
        tag_name: str | None = None,
        multi_user: bool = False,
        outcome: str = "SUCCEEDED",
        workspace_default: dict | None = None,
    ) -> None:
        self.experiments = {n: {"experiment_id": i, "display_name": n, "namespace": ""}
                            for n, i in (experiments or {}).items()}  # fmt: skip
        self.status = status
        self.backend = Backend(version, workspace_default)
        self.tag_name = tag_name if tag_name is not None else version
        self.multi_user = multi_user
        self.outcome = outcome
        self.requests: list[dict] = []
        self.runs: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.recurring: dict[str, dict] = {}
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

    # ------------------------------------------------------------------------------------ the API
    def _namespace_check(self, namespace: str | None, experiment_id: str | None) -> None:
        if self.multi_user and not namespace and not experiment_id:
            message = "Resource cannot have an empty namespace and experiment id in multi-user mode"
            raise Refused(400, INVALID_ARGUMENT, f"Invalid input error: {message}")

    def create_experiment(self, body: dict) -> dict:
        self._namespace_check(body.get("namespace"), None)
        exp = {"experiment_id": f"exp-{len(self.experiments) + 1}", "display_name": body["display_name"],
               "namespace": body.get("namespace", "")}  # fmt: skip
        self.experiments[exp["display_name"]] = exp
        return exp

    def _accept(self, docs: list[dict]) -> dict:
        parsed = self.backend.parse(docs)
        problem = self.backend.compile_run(parsed["platform"])
        if problem and not problem.startswith("FAILED:"):
            raise Refused(500, INTERNAL, f"Internal error: Failed to create a new run: {problem}")
        applied, dropped = self.backend.applied(parsed["platform"])
        return {**parsed, "applied": applied, "dropped_fields": dropped, "problem": problem}

    def create_run(self, body: dict) -> dict:
        exp_ids = {e["experiment_id"] for e in self.experiments.values()}
        if body.get("experiment_id") and body["experiment_id"] not in exp_ids:
            raise Refused(404, NOT_FOUND, f"Not found: experiment {body['experiment_id']}")
        self._namespace_check(None, body.get("experiment_id"))
        if "pipeline_spec" in body:
            ps = body["pipeline_spec"]
            docs = [ps.get("pipeline_spec"), ps.get("platform_spec")] if "pipeline_spec" in ps else [ps]
        else:
            ref = body.get("pipeline_version_reference") or {}
            found = [v for v in self.versions.get(ref.get("pipeline_id"), [])
                     if v["pipeline_version_id"] == ref.get("pipeline_version_id")]  # fmt: skip
            if not found:
                raise Refused(404, NOT_FOUND, f"Not found: pipeline version {ref}")
            docs = found[0]["docs"]
        accepted = self._accept(docs)
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = {"body": body, "polls": 0, **accepted}
        return {"run_id": run_id, "display_name": body.get("display_name"), "state": "PENDING",
                "experiment_id": body.get("experiment_id")}  # fmt: skip

    def get_run(self, run_id: str) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            raise Refused(404, NOT_FOUND, f"Not found: run {run_id}")
        run["polls"] += 1
        state = ("PENDING", "RUNNING")[min(run["polls"], 2) - 1] if run["polls"] < 3 else None
        out = {"run_id": run_id, "display_name": run["body"].get("display_name")}
        if state:
            return {**out, "state": state}
        problem = run["problem"]
        if problem or self.outcome != "SUCCEEDED":
            message = problem.removeprefix("FAILED:") if problem else "task train-vqa-best-0 failed: exit 1"
            return {**out, "state": "FAILED", "error": {"code": 2, "message": message}}
        return {**out, "state": "SUCCEEDED"}

    def upload(self, query: dict, files: dict, version_of: str | None) -> dict:
        text = files.get("uploadfile")
        if text is None:
            raise Refused(400, INVALID_ARGUMENT, "Failed to create a pipeline")
        docs = list(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        self.backend.parse(docs)
        name = query.get("name", [""])[0]
        if version_of is None:
            if any(p["display_name"] == name for p in self.pipelines.values()):
                raise Refused(409, 6, f"Already exists: pipeline {name}")
            pid = f"pl-{len(self.pipelines) + 1}"
            self.pipelines[pid] = {"pipeline_id": pid, "display_name": name}
            self.versions[pid] = []
            result = self.pipelines[pid]
        else:
            pid = version_of
            if pid not in self.pipelines:
                raise Refused(404, NOT_FOUND, f"Not found: pipeline {pid}")
            result = None
        version = {"pipeline_id": pid, "pipeline_version_id": f"{pid}-v{len(self.versions[pid]) + 1}",
                   "display_name": name, "docs": docs,
                   "created_at": f"2026-01-01T00:00:{len(self.versions[pid]):02d}Z"}  # fmt: skip
        self.versions[pid].append(version)
        return result or {k: v for k, v in version.items() if k != "docs"}

    def create_recurring(self, body: dict) -> dict:
        self._namespace_check(body.get("namespace"), body.get("experiment_id"))
        cron = body.get("trigger", {}).get("cron_schedule", {}).get("cron", "")
        if len(cron.split()) not in (6,):  # the ScheduledWorkflow controller's robfig/cron with seconds
            raise Refused(400, INVALID_ARGUMENT, f"Invalid input error: invalid cron {cron!r}")
        ref = body.get("pipeline_version_reference") or {}
        if not any(v["pipeline_version_id"] == ref.get("pipeline_version_id")
                   for v in self.versions.get(ref.get("pipeline_id"), [])):  # fmt: skip
            raise Refused(404, NOT_FOUND, f"Not found: pipeline version {ref}")
        rid = f"rr-{len(self.recurring) + 1}"
        self.recurring[rid] = body
        return {"recurring_run_id": rid, **body}

    # ------------------------------------------------------------------------------------ HTTP
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

            def _files(self, body: bytes) -> dict:
                head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
                msg = BytesParser().parsebytes(head + body)
                return {p.get_param("name", header="content-disposition"): p.get_payload(decode=True).decode()
                        for p in msg.get_payload()} if msg.is_multipart() else {}  # fmt: skip

            def _serve(self, route) -> None:
                try:
                    if fake.status != 200:
                        raise Refused(fake.status, UNAUTHENTICATED, "Unauthenticated: denied")
                    self._send(route())
                except Refused as exc:
                    self._send({"error": exc.message, "code": exc.code, "message": exc.message,
                                "details": []}, exc.status)  # fmt: skip

            def do_GET(self) -> None:
                u, _ = self._record()
                q = parse_qs(u.query)

                def route():
                    if u.path == f"{API}/healthz":
                        return {
                            "commit_sha": "0" * 7,
                            "tag_name": fake.tag_name,
                            "multi_user": fake.multi_user,
                        }
                    if u.path == f"{API}/experiments":
                        fake._namespace_check(q.get("namespace", [None])[0], None)
                        wanted = json.loads(q.get("filter", ["{}"])[0])
                        names = [p.get("string_value") or p.get("stringValue")
                                 for p in wanted.get("predicates", [])]  # fmt: skip
                        found = [e for n, e in fake.experiments.items() if n in names]
                        return {"experiments": found, "total_size": len(found)} if found else {}
                    m = re.fullmatch(rf"{API}/runs/([\w-]+)", u.path)
                    if m:
                        return fake.get_run(m.group(1))
                    if u.path == f"{API}/pipelines":
                        wanted = json.loads(q.get("filter", ["{}"])[0])
                        names = [p.get("string_value") or p.get("stringValue")
                                 for p in wanted.get("predicates", [])]  # fmt: skip
                        found = [p for p in fake.pipelines.values() if p["display_name"] in names]
                        return {"pipelines": found, "total_size": len(found)} if found else {}
                    m = re.fullmatch(rf"{API}/pipelines/([\w-]+)/versions", u.path)
                    if m:
                        vs = sorted(fake.versions.get(m.group(1), []), key=lambda v: v["created_at"],
                                    reverse=True)  # fmt: skip
                        return {"pipeline_versions": [{k: v[k] for k in v if k != "docs"} for v in vs],
                                "total_size": len(vs)}  # fmt: skip
                    raise Refused(404, NOT_FOUND, f"Not Found: {u.path}")

                self._serve(route)

            def do_POST(self) -> None:
                u, body = self._record()
                q = parse_qs(u.query)

                def route():
                    if u.path == f"{API}/experiments":
                        return fake.create_experiment(json.loads(body))
                    if u.path == f"{API}/runs":
                        return fake.create_run(json.loads(body))
                    if u.path == f"{API}/pipelines/upload":
                        return fake.upload(q, self._files(body), None)
                    if u.path == f"{API}/pipelines/upload_version":
                        return fake.upload(q, self._files(body), q.get("pipelineid", [""])[0])
                    if u.path == f"{API}/recurringruns":
                        return fake.create_recurring(json.loads(body))
                    raise Refused(404, NOT_FOUND, f"Not Found: {u.path}")

                self._serve(route)

        return Handler
