"""A pod-faithful local run: the pipeline under ``kfp.local`` where each task gets only what its pod would.

``kfp.local`` runs every task in this process's environment, so a task that needs a Secret its pod does not
get would pass here and fail on a cluster. This runner gives each task the environment its *compiled*
platform spec gives its pod: the image's variables, the container's env, ``KUBERNETES_SERVICE_HOST``, the
env vars of the Secrets it names (a missing Secret or key fails the task, as the kubelet's
CreateContainerConfigError does), its run id from the ``pipeline/runid`` label (downward API), and its PVC
mounts as local directories (a pipeline-created PVC is a fresh directory, deleted by its DeletePVC task).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

# What the image itself provides (Dockerfile ENV, the user's HOME) and this machine's equivalent of the
# image's runtime set-up (locale, offline hub, thread count, bytecode cache): nothing else reaches a task.
IMAGE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYCOCOEVALCAP", "JAVA_HOME",
             "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS", "PYTHONPYCACHEPREFIX")  # fmt: skip
CLUSTER_HOST = "10.96.0.1"  # a Service IP: every pod has KUBERNETES_SERVICE_HOST set
RUN_ID_FIELD = "metadata.labels['pipeline/runid']"


class PodError(RuntimeError):
    """The pod of a task could not start (a missing Secret or key, an unsupported field path)."""


def _secret_name(ref: dict) -> str:
    return ref.get("secretName") or ref["secretNameParameter"]["runtimeValue"]["constant"]


def pod_env(executor: dict, secrets: dict, run_id: str, base: dict) -> dict:
    """The environment a pod of ``executor`` (its KubernetesExecutorConfig as a dict) gets."""
    env = dict(base)
    env["KUBERNETES_SERVICE_HOST"] = CLUSTER_HOST
    for ref in executor.get("secretAsEnv", []):
        name = _secret_name(ref)
        secret = secrets.get(name)
        if secret is None:
            if ref.get("optional"):
                continue
            raise PodError(f'secret "{name}" not found')
        for pair in ref.get("keyToEnv", []):
            if pair["secretKey"] not in secret:
                if ref.get("optional"):
                    continue
                raise PodError(f"couldn't find key {pair['secretKey']} in Secret {name}")
            env[pair["envVar"]] = secret[pair["secretKey"]]
    for field in executor.get("fieldPathAsEnv", []):
        if field["fieldPath"] != RUN_ID_FIELD:
            raise PodError(f"field path {field['fieldPath']}: not available in a local run")
        env[field["name"]] = run_id
    return env


class PodRunner:
    """Patches ``kfp.local``'s task dispatch for the duration of a run (``with PodRunner(...)``)."""

    def __init__(self, platform: dict, secrets: dict, volumes: Path):
        self.executors = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
        self.executors = self.executors.get("executors", {})
        self.secrets = secrets
        self.volumes = Path(volumes)
        self.base = {k: os.environ[k] for k in IMAGE_ENV if k in os.environ}
        self.current: dict | None = None
        self.mounts: dict[str, list[Path]] = {}

    def _mount(self, executor: dict, arguments: dict) -> None:
        for m in executor.get("pvcMount", []):
            ref = m.get("pvcNameParameter", {})
            name = ref.get("runtimeValue", {}).get("constant") or m.get("constant")
            if name is None:  # a PVC this run created: the producer's output (passed through the arguments)
                name = self.created.get(ref.get("taskOutputParameter", {}).get("producerTask"), "created")
            path = Path(m["mountPath"])
            path.mkdir(parents=True, exist_ok=True)
            self.mounts.setdefault(name, []).append(path)

    def dispatch(self, original):
        from kfp.local import status

        def run(*args, **kwargs):
            label = kwargs["component_spec"].executor_label
            executor = self.executors.get(label, {})
            # kfp-kubernetes CreatePVC/DeletePVC are stub images the backend's driver acts on itself
            # (backend/src/v2/driver, `argostub/createpvc`): here a fresh directory per created PVC.
            image = kwargs["executor_spec"].container.image
            if image == "argostub/createpvc":
                suffix = kwargs.get("arguments", {}).get("pvc_name_suffix", "")
                name = f"local-{uuid.uuid4().hex[:8]}{suffix}"
                self.created["createpvc"] = name
                return {"name": name}, status.Status.SUCCESS
            if image == "argostub/deletepvc":
                for name in set(self.created.values()):
                    for path in self.mounts.pop(name, []):
                        shutil.rmtree(path, ignore_errors=True)
                return {}, status.Status.SUCCESS
            try:
                self.current = pod_env(executor, self.secrets, kwargs["unique_pipeline_id"], self.base)
                self._mount(executor, kwargs.get("arguments", {}))
            except PodError as exc:
                print(f"task {kwargs['component_name']}: pod did not start: {exc}", flush=True)
                return {}, status.Status.FAILURE
            try:
                return original(*args, **kwargs)
            finally:
                self.current = None

        return run

    def subprocess(self, original):
        def run(full_command, env_vars=None):
            import subprocess

            env = {**(self.current or {}), **(env_vars or {})}
            with subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  bufsize=1, env=env) as process:  # fmt: skip
                for line in iter(process.stdout.readline, ""):
                    print(line, end="")
                return process.wait()

        return run

    def __enter__(self):
        from kfp.local import subprocess_task_handler, task_dispatcher

        self.created: dict[str, str] = {}
        self._saved = (
            task_dispatcher.run_single_task_implementation,
            subprocess_task_handler.run_local_subprocess,
        )
        task_dispatcher.run_single_task_implementation = self.dispatch(self._saved[0])
        subprocess_task_handler.run_local_subprocess = self.subprocess(self._saved[1])
        return self

    def __exit__(self, *exc):
        from kfp.local import subprocess_task_handler, task_dispatcher

        task_dispatcher.run_single_task_implementation, subprocess_task_handler.run_local_subprocess = (
            self._saved
        )
        return False


def secrets_from_env(platform: dict) -> dict:
    """Local stand-ins of the Secrets the pipeline names: each key's value is this environment's value of
    the env var the pod would get (unset ones are missing keys)."""
    executors = (
        platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    )
    found: dict[str, dict[str, str]] = {}
    for executor in executors.values():
        for ref in executor.get("secretAsEnv", []):
            secret = found.setdefault(_secret_name(ref), {})
            for pair in ref.get("keyToEnv", []):
                if pair["envVar"] in os.environ:
                    secret[pair["secretKey"]] = os.environ[pair["envVar"]]
    return {name: keys for name, keys in found.items() if keys}


@contextlib.contextmanager
def pod_faithful(platform: dict, secrets: dict | None, volumes: Path):
    """Run ``kfp.local`` tasks as pods of ``platform`` would run (see the module docstring)."""
    with PodRunner(
        platform, secrets if secrets is not None else secrets_from_env(platform), volumes
    ) as runner:
        yield runner
