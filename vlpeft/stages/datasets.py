"""The ``data`` stage: the synthetic world, or COCO/VQAv2 prepared from downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlpeft.config import Params
from vlpeft.errors import ConfigError
from vlpeft.io import check_writable
from vlpeft.stages.common import _tracked, log_results
from vlpeft.stages.declare import StageDecl
from vlpeft.tracking.base import Tracker

# dvc.yaml runs ``vlpeft data synth`` (``synth``: data.source is forced to synthetic, so it is not read).
STAGE = StageDecl(
    name="data", module=__name__, cli="vlpeft.cli.data", reads=("seed", "world"), functions=("data", "synth")
)


def data(
    params: Params,
    *,
    out: str | Path,
    raw: str | Path | None = None,
    link: str = "symlink",
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """The ``data`` stage: the synthetic world (``data.source: synthetic``) or COCO/VQAv2 from ``raw``.

    Returns ``{"counts", "seconds"?}``; ``out`` is replaced atomically.
    """
    check_writable(out)
    out = Path(out)
    if params.data.source == "synthetic":
        from vlpeft.data.synth import generate_world

        with _tracked(params, "data", tracker) as t:
            world = generate_world(params.world, out, seed=params.seed)
            log_results(t, {"counts": world["counts"], "seconds": world["seconds"]}, out / "world.json")
        return world
    if raw is None:
        raise ConfigError("data.source coco: pass the directory with the downloads (--raw)")
    from vlpeft.data.prepare import prepare_coco

    with _tracked(params, "data", tracker) as t:
        info = prepare_coco(raw, out, link=link)
        log_results(t, {"counts": info["counts"]}, out / "world.json")
    return info


def synth(
    params: Params, *, out: str | Path, seed: int | None = None, tracker: Tracker | None = None
) -> dict:
    """The synthetic world with an explicit ``seed`` (default ``params.seed``); see ``data``."""
    if seed is not None:
        params = params.model_copy(update={"seed": seed})
    return data(params.model_copy(update={"data": params.data.model_copy(update={"source": "synthetic"})}),
                out=out, tracker=tracker)  # fmt: skip
