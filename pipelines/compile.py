"""Compile the pipeline to YAML, submit a compiled package to a KFP API server, run it with ``kfp.local``.

``vlpeft kfp compile|submit|run-local`` (``vlpeft/cli/kfp.py``) call these; params are validated before
anything compiles, so a bad value is one error line.
"""

import json
import os
from pathlib import Path

SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # kfp.Client's in-cluster token (projected)
TOKEN_ENV = "KF_PIPELINES_TOKEN"


def credential_fields(data, prefix: str = "") -> list[str]:
    """The dotted names of every string in ``data`` that holds a credential (``vlpeft.redact``'s verdict)."""
    from vlpeft.redact import redact_text

    if isinstance(data, dict):
        return [f for k, v in data.items() for f in credential_fields(v, f"{prefix}{k}.")]
    if isinstance(data, list | tuple):
        return [f for i, v in enumerate(data) for f in credential_fields(v, f"{prefix[:-1]}[{i}].")]
    if isinstance(data, str) and redact_text(data) != data:
        return [prefix[:-1]]
    return []


def params_yaml_text(params) -> str:
    """The resolved params as the text every task receives: YAML in its one-line (JSON) form, since the
    compiler copies a parameter's default into a ``#`` comment header that a multi-line value would break.
    A credential in any field is refused: it would land in the compiled YAML and the KFP UI."""
    from vlpeft.config import params_to_dict
    from vlpeft.errors import ConfigError

    found = credential_fields(params.model_dump(mode="json"))  # before params_to_dict redacts them
    if found:
        raise ConfigError(
            f"{found[0]}: has a password or another credential, which would land in the compiled pipeline: "
            f"put it in a Secret (kfp.mlflow_secret, kfp.optuna_secret key url, kfp.hf_secret) and leave it "
            f"out of params"
        )
    return json.dumps(params_to_dict(params), sort_keys=True)


def check_image(image: str) -> str:
    """An image reference with its registry host: an unqualified name (``vlpeft:0.1.0``) would be pulled
    from the container runtime's default public registry and fail with ImagePullBackOff."""
    from vlpeft.errors import ConfigError

    first = image.split("/", 1)[0]
    if "/" not in image or not ("." in first or ":" in first or first == "localhost"):
        raise ConfigError(
            f"kfp.image {image!r}: name the registry the cluster pulls from (e.g. registry.example.com/"
            f"team/vlpeft:0.1.0, set kfp.image or --image)"
        )
    return image


def compile_pipeline(params, out: str | Path, image: str | None = None) -> Path:
    """Write the pipeline of ``params`` (every task in ``image``, default ``kfp.image``) to ``out``."""
    from kfp import compiler

    from pipelines.vlpeft_pipeline import build_pipeline
    from vlpeft.io import atomic_path

    image = check_image(image or params.kfp.image)
    params = params.model_copy(update={"kfp": params.kfp.model_copy(update={"image": image})})
    pipeline = build_pipeline(params, params_yaml_text(params), image)
    with atomic_path(out) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp))
    return Path(out)


def disable_caching(package: dict) -> dict:
    """The pipeline spec with caching off for every task of every DAG (root and nested, e.g. ParallelFor
    bodies): ``kfp.Client(enable_caching=False)`` only rewrites the root DAG's tasks."""
    dags = [package.get("root", {}).get("dag", {})]
    dags += [c.get("dag", {}) for c in package.get("components", {}).values()]
    for dag in dags:
        for task in (dag.get("tasks") or {}).values():
            task["cachingOptions"] = {"enableCache": False}
    return package


def read_token(token_file: str | None = None) -> str | None:
    """The bearer token: ``$KF_PIPELINES_TOKEN``, else the file given, else the in-cluster SA token file."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    for path in (token_file, SA_TOKEN_PATH):
        if path and Path(path).is_file():
            return Path(path).read_text().strip()
    return None


FINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")  # backend/api/v2beta1/run.proto RuntimeState
HEALTHZ = (
    "/apis/v2beta1/healthz"  # backend/src/apiserver/main.go (2.5.0, 2.17.0): commit_sha, tag_name, multi_user
)


def _api_error(host: str, exc: BaseException) -> str:
    """One line for a failed KFP API call: HTTP status and the server's message (gRPC-gateway error body
    ``{error, code, message, details}``), an HTML page (a login page in front of the API), or the socket
    error (refused, timed out, no such host)."""
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    body = getattr(exc, "body", None)
    if body is None and hasattr(exc, "read"):
        try:
            body = exc.read()
        except OSError:
            body = None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    message = ""
    if body and body.lstrip()[:1] == "<":
        message = "answered with an HTML page (a login page? pass a token, or the API endpoint itself)"
    elif body:
        try:
            parsed = json.loads(body)
            message = parsed.get("message") or parsed.get("error") or ""
        except (ValueError, AttributeError):
            message = body
    if not message:
        reason = getattr(exc, "reason", None) or exc
        message = " ".join(str(reason).split())
        if isinstance(exc, TimeoutError) or "timed out" in message:
            message = f"no answer ({message})"
    from vlpeft.redact import redact_text

    head = f"HTTP {status} " if isinstance(status, int) else ""
    return redact_text(f"KFP API {host}: {head}{' '.join(message.split())[:300]}")


def preflight(host: str, token: str | None, timeout: float) -> dict:
    """``GET /apis/v2beta1/healthz`` with a timeout: the server's version and mode, or one-line error
    (a host that never answers, an HTML login page, a 404 where no KFP API is)."""
    import urllib.error
    import urllib.request

    from vlpeft.errors import TrackingError

    req = urllib.request.Request(host.rstrip("/") + HEALTHZ, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        raise TrackingError(_api_error(host, exc)) from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused, bad URL
        raise TrackingError(_api_error(host, getattr(exc, "reason", exc))) from None
    try:
        info = json.loads(body)
        assert isinstance(info, dict) and "json" in ctype
    except (ValueError, AssertionError):
        what = "an HTML page (a login page? pass a token, or the API endpoint itself)"
        what = what if body.lstrip()[:1] == b"<" else f"not the KFP API ({ctype or 'no content type'})"
        raise TrackingError(f"KFP API {host}{HEALTHZ}: answered with {what}") from None
    return info


def package_backend(package: dict) -> str | None:
    """The ``kfp.backend`` a compiled package was made for (from its ``params_yaml`` default)."""
    spec = package.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    default = spec.get("params_yaml", {}).get("defaultValue")
    try:
        return json.loads(default)["kfp"]["backend"]
    except (TypeError, ValueError, KeyError):
        return None


def check_server(info: dict, host: str, namespace: str | None, backend: str | None) -> None:
    """Refuse a multi-user server without ``--namespace`` and a server older than the package's backend."""
    from pipelines.backends import _key
    from vlpeft.errors import ConfigError

    if info.get("multi_user") and not namespace:
        raise ConfigError(
            f"KFP API {host}: multi-user mode: pass --namespace (your Kubeflow profile namespace)"
        )
    tag = str(info.get("tag_name") or "")
    try:
        older = backend is not None and _key(tag.lstrip("v").split("-")[0]) < _key(backend)
    except ValueError:
        older = False  # a dev build ("unknown"): cannot tell
    if older:
        raise ConfigError(
            f"KFP API {host}: the server runs KFP {tag}, the package was compiled for kfp.backend {backend} "
            f"(it would drop what {tag} does not know): compile with -S kfp.backend={tag.lstrip('v')}"
        )


class Api:
    """A ``kfp.Client`` behind a preflight, with timeouts on every call and one-line errors."""

    def __init__(self, host: str, token: str | None, namespace: str | None, timeout: float = 30.0):
        self.host, self.token, self.namespace, self.timeout = host, token, namespace, timeout
        self.info = preflight(host, token, timeout)

    def __enter__(self):
        import socket

        import kfp

        self._old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.timeout)  # urllib3 (kfp_server_api) falls back to it
        try:
            self.client = kfp.Client(host=self.host, existing_token=self.token,
                                     namespace=self.namespace or "kubeflow")  # fmt: skip
        except Exception as exc:
            socket.setdefaulttimeout(self._old_timeout)
            from vlpeft.errors import TrackingError

            raise TrackingError(_api_error(self.host, exc)) from None
        return self

    def __exit__(self, exc_type, exc, tb):
        import socket

        socket.setdefaulttimeout(self._old_timeout)
        import kfp_server_api
        import urllib3

        # the server's refusals, transport failures and kfp.Client's complaints about answers; anything
        # else is a bug and keeps its traceback
        api_errors = (kfp_server_api.ApiException, urllib3.exceptions.HTTPError, OSError, ValueError)
        if isinstance(exc, api_errors):
            from vlpeft.errors import TrackingError

            raise TrackingError(_api_error(self.host, exc)) from None
        return False

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name`` in this namespace (created when missing)."""
        try:
            return self.client.get_experiment(experiment_name=name, namespace=self.namespace).experiment_id
        except ValueError:  # kfp.Client: "No experiment is found with name ..."
            return self.client.create_experiment(name, namespace=self.namespace).experiment_id

    def pipeline_version(self, name: str, version: str | None) -> tuple[str, str]:
        """(pipeline id, version id) of pipeline ``name`` (its newest version unless ``version``)."""
        from vlpeft.errors import ConfigError

        pid = self.client.get_pipeline_id(name)
        if pid is None:
            raise ConfigError(f"KFP API {self.host}: no pipeline named {name!r} (vlpeft kfp upload it first)")
        listed = self.client.list_pipeline_versions(pid, page_size=100, sort_by="created_at desc")
        versions = listed.pipeline_versions or []
        for v in versions:
            if version is None or v.display_name == version:
                return pid, v.pipeline_version_id
        raise ConfigError(f"KFP API {self.host}: pipeline {name!r} has no version {version!r}")

    def wait(self, run_id: str, seconds: float, poll: float) -> tuple[str, str]:
        """Poll run ``run_id`` until it ends (or ``seconds`` pass): (state, error message)."""
        import time

        from vlpeft.errors import TrackingError

        deadline = time.monotonic() + seconds
        while True:
            run = self.client.get_run(run_id)
            state = str(run.state or "")
            if state in FINAL_STATES:
                error = getattr(run, "error", None)
                return state, (getattr(error, "message", None) or "") if error else ""
            if time.monotonic() >= deadline:
                raise TrackingError(
                    f"KFP run {run_id}: still {state or 'PENDING'} after {seconds:g} s (--wait)"
                )
            time.sleep(poll)


def _prepared(package: str | Path, tmp: str, no_cache: bool) -> tuple[Path, dict]:
    """The package to send (caching off in every DAG when ``no_cache``) and its pipeline spec."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the package is ~150 kB of YAML
    docs = list(yaml.load_all(Path(package).read_text(), Loader=loader))
    if not no_cache:
        return Path(package), docs[0]
    docs[0] = disable_caching(docs[0])
    pkg = Path(tmp) / "pipeline.yaml"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    pkg.write_text(yaml.dump_all(docs, Dumper=dumper, sort_keys=False))
    return pkg, docs[0]


def submit(
    package: str | Path | None,
    *,
    host: str,
    token: str | None,
    experiment: str,
    namespace: str | None = None,
    run_name: str | None = None,
    no_cache: bool = False,
    wait: float | None = None,
    pipeline: str | None = None,
    version: str | None = None,
    timeout: float = 30.0,
    poll: float = 5.0,
) -> dict:
    """Create a run on the KFP API server at ``host``: of the compiled ``package``, or of a version of the
    uploaded ``pipeline`` (its newest unless ``version``); returns its id, state and UI link.

    ``no_cache`` turns caching off in every DAG; ``wait`` (seconds) polls until the run ends. API errors
    (no answer within ``timeout``, a login page, 401/403/404, the server's refusal) are one-line errors.
    """
    import tempfile

    from vlpeft.errors import TrackingError

    with (
        tempfile.TemporaryDirectory(prefix="vlpeft-kfp-") as tmp,
        Api(host, token, namespace, timeout) as api,
    ):
        if package is not None:
            pkg, spec = _prepared(package, tmp, no_cache)
            check_server(api.info, host, namespace, package_backend(spec))
        else:
            check_server(api.info, host, namespace, None)
        exp = api.experiment_id(experiment)
        name = run_name or (pipeline or "vlpeft")
        if package is not None:
            run = api.client.run_pipeline(exp, name, pipeline_package_path=str(pkg), params={},
                                          enable_caching=False if no_cache else None)  # fmt: skip
        else:
            pid, vid = api.pipeline_version(pipeline, version)
            run = api.client.run_pipeline(exp, name, pipeline_id=pid, version_id=vid,
                                          enable_caching=False if no_cache else None)  # fmt: skip
        run_id = getattr(run, "run_id", None)
        if not run_id:
            raise TrackingError(f"KFP API {host}: the run was not created (no run id in the answer)")
        state, error = (None, "")
        if wait:
            state, error = api.wait(run_id, wait, poll)
    return {"run_id": run_id, "state": state, "error": error,
            "url": f"{host.rstrip('/')}/#/runs/details/{run_id}"}  # fmt: skip


def upload(
    package: str | Path,
    *,
    host: str,
    token: str | None,
    name: str,
    version: str,
    namespace: str | None = None,
    description: str = "",
    timeout: float = 30.0,
) -> dict:
    """Upload ``package`` as version ``version`` of pipeline ``name`` (the pipeline is created on its first
    upload, as the KFP UI's "Upload pipeline" does); returns the ids."""
    import tempfile

    with (
        tempfile.TemporaryDirectory(prefix="vlpeft-kfp-") as tmp,
        Api(host, token, namespace, timeout) as api,
    ):
        pkg, spec = _prepared(package, tmp, False)
        check_server(api.info, host, namespace, package_backend(spec))
        pid = api.client.get_pipeline_id(name)
        if pid is None:
            made = api.client.upload_pipeline(str(pkg), pipeline_name=name, description=description or None,
                                              namespace=namespace)  # fmt: skip
            pid = made.pipeline_id
        made = api.client.upload_pipeline_version(str(pkg), pipeline_version_name=version, pipeline_id=pid,
                                                  description=description or None)  # fmt: skip
        return {"pipeline_id": pid, "version_id": made.pipeline_version_id, "version": version}


def schedule(
    *,
    host: str,
    token: str | None,
    cron: str,
    job_name: str,
    experiment: str,
    pipeline: str,
    version: str | None = None,
    namespace: str | None = None,
    max_concurrency: int = 1,
    timeout: float = 30.0,
) -> dict:
    """A recurring run of a version of the uploaded ``pipeline`` on the ``cron`` schedule (KFP's six
    fields: second minute hour day-of-month month day-of-week)."""
    from vlpeft.errors import ConfigError

    fields = cron.split()
    if len(fields) != 6:
        raise ConfigError(
            f"--cron {cron!r}: KFP takes six fields (second minute hour day month weekday), "
            "e.g. '0 0 3 * * *'"
        )
    with Api(host, token, namespace, timeout) as api:
        check_server(api.info, host, namespace, None)
        exp = api.experiment_id(experiment)
        pid, vid = api.pipeline_version(pipeline, version)
        job = api.client.create_recurring_run(exp, job_name, cron_expression=cron, pipeline_id=pid,
                                              version_id=vid, max_concurrency=max_concurrency)  # fmt: skip
        return {"recurring_run_id": job.recurring_run_id, "pipeline_id": pid, "version_id": vid}


def run_local(
    params,
    pipeline_root: str | Path,
    workspace_root: str | Path,
    cache: bool = False,
    secrets: dict | None = None,
) -> dict:
    """Run the whole pipeline with ``kfp.local`` (``SubprocessRunner``: every task in this Python, which
    must have vlpeft installed), each task with only its pod's environment (``pipelines/local.py``):
    ``secrets`` maps Secret name -> {key: value} (default: from this environment's variables of the same
    names). The checkpoint and hub-cache mounts go under ``pipeline_root``. Returns the pipeline's outputs."""
    import tempfile

    import yaml
    from kfp import compiler, local

    from pipelines.local import pod_faithful
    from pipelines.vlpeft_pipeline import build_pipeline

    root = Path(pipeline_root)
    root.mkdir(parents=True, exist_ok=True)
    Path(workspace_root).mkdir(parents=True, exist_ok=True)
    mounts = {"workspace_mount": str(root.resolve() / "volumes" / "workspace"),
              "hf_cache_mount": str(root.resolve() / "volumes" / "hf")}  # fmt: skip
    params = params.model_copy(update={"kfp": params.kfp.model_copy(update=mounts)})
    pipeline = build_pipeline(params, params_yaml_text(params))
    with tempfile.TemporaryDirectory(prefix="vlpeft-kfp-") as tmp:
        compiler.Compiler().compile(pipeline, f"{tmp}/pipeline.yaml")
        platform = list(yaml.safe_load_all(Path(f"{tmp}/pipeline.yaml").read_text()))[1]
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               workspace_root=str(workspace_root), enable_caching=cache)  # fmt: skip
    with pod_faithful(platform, secrets, root / "volumes"):
        result = pipeline()
    outputs = getattr(result, "outputs", {}) or {}
    return {k: getattr(v, "path", v) for k, v in outputs.items()} if isinstance(outputs, dict) else {}


def dumps(data) -> str:
    """JSON for the CLI's last line."""
    return json.dumps(data, default=str)
