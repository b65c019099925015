"""The KFP backend versions the compiled pipeline supports, as data: what each accepts and what it drops.

``kfp.backend`` names the oldest backend a compiled package must run on; the compiler emits only what that
backend accepts (``features(version)``). Every entry names the backend source it was read from
(kubeflow/pipelines at the given tag); tests/kubeflow/fake_kfp_server.py applies the same versions' rules
from the protos themselves (tests/kubeflow/kfp_proto_fields.json).
"""

from __future__ import annotations

from dataclasses import dataclass

# Released backend lines (there were no 2.6-2.13 releases). Kubeflow 1.10 ships a 2.4/2.5 backend.
LINES = ("2.4", "2.5", "2.14", "2.15", "2.16", "2.17")


@dataclass(frozen=True)
class Backend:
    """What one backend line accepts."""

    version: str
    # api/v2alpha1/pipeline_spec.proto: PipelineConfig.workspace first appears at tag 2.14.0; before it the
    # API server's strict protojson.Unmarshal of the platform spec fails and
    # backend/src/apiserver/template/v2_template.go (2.4.0, 2.5.0:
    # `else if IsPlatformSpecWithKubernetesConfig`)
    # silently skips the whole platform spec (no Secrets, selectors, tolerations, mounts).
    workspace: bool
    # backend/src/v2/compiler/argocompiler/argo.go GetWorkspacePVC (2.15.0 and later): "workspace PVC spec
    # must specify accessModes" unless an admin default exists; at 2.14.x the PVC is created without them.
    workspace_access_modes_required: bool
    # api/v2alpha1/pipeline_spec.proto at 2.17.0: PipelineConfig.active_deadline_seconds and
    # resource_ttl_on_completion (2.5.0-2.16.x only know `resource_ttl`, which kfp 2.17's SDK never writes).
    run_limits: bool


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def backend(version: str) -> Backend:
    """The rules of the backend line ``version`` belongs to (``kfp.backend``); one-line error otherwise."""
    from vlpeft.errors import ConfigError

    line = ".".join(version.split(".")[:2])
    if line not in LINES:
        raise ConfigError(
            f"kfp.backend {version!r}: not a supported KFP backend (supported: {', '.join(LINES)}; "
            f"Kubeflow 1.10 ships 2.4/2.5)"
        )
    v = _key(version)
    return Backend(
        version=version,
        workspace=v >= (2, 14, 0),
        workspace_access_modes_required=v >= (2, 15, 0),
        run_limits=v >= (2, 17, 0),
    )
