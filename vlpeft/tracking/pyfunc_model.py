"""The MLflow pyfunc of a registered vlpeft model: the ``loader_module`` its ``MLmodel`` names.

A registered version holds **data only**: ``mlflow.pyfunc.log_model(loader_module=<this module>,
data_path=<package>)`` stores the model package (``vlpeft.tracking.packaging``: safetensors weights, JSON,
tokenizer and config files) and the *name* of this module, no Python source. Loading (``mlflow models serve
--env-manager local``, ``mlflow.pyfunc.load_model``) imports this module from the installed vlpeft and calls
``_load_pyfunc(data_path)``: whoever can write a model version cannot make a reviewer or a server run code.
Our own commands (``vlpeft predict --model models:/…``, ``registry review``) do not even go through
MLflow's loader: ``vlpeft.tracking.registry.load_registered`` downloads a version's files, reads them as data.

Input: a pandas DataFrame with the columns of the task's ``PyfuncSpec`` (``vlpeft.tasks``): images as
base64-encoded PNG/JPEG (optionally a ``data:`` URL) or raw bytes. VQA: ``image``, ``question``; captions:
``image``; multi-task: ``task`` (vqa, gqa, nlvr, caption), ``image``, ``question`` (the question, NLVR2's
statement, empty for captions) and ``image2`` (NLVR2's second image). Output: a DataFrame with one column,
``answer`` (VQA), ``caption`` or ``output`` (multi-task: answers, captions, ``true``/``false``).

**File paths are never opened** unless the model was loaded with
``model_config={"allow_local_paths": True}`` (a load-time choice of whoever runs the process; nothing in a
request can set it): a served model must not read the server's disk for its clients. Bad input (a missing
column, text that is not an image, a path) is an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``: the
server answers HTTP 400 with one message, no trace.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

MAX_IMAGE_BYTES = 32 * 1024 * 1024  # one request image; a camera JPEG is a few MB
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # decoded size (a small PNG can decode to gigabytes): 8192 x 8192


class InvalidInput(ValueError):
    """A request the model cannot answer because of its content (reported as INVALID_PARAMETER_VALUE)."""


def given(value: Any) -> bool:
    """False for an absent cell: None, NaN (pandas fills missing optional columns with it) or empty text."""
    if value is None or (isinstance(value, float) and value != value):
        return False
    return not (isinstance(value, str) and not value.strip())


def _open(data: bytes, column: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"{column}: {len(data)} bytes, more than {MAX_IMAGE_BYTES} per image")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        raise InvalidInput(f"{column}: not a PNG/JPEG image ({len(data)} bytes decoded)") from None
    with image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InvalidInput(f"{column}: {image.width}x{image.height} pixels, over {MAX_IMAGE_PIXELS}")
        try:
            return image.convert("RGB")
        except (Image.DecompressionBombError, OSError, ValueError):
            raise InvalidInput(f"{column}: a broken image ({len(data)} bytes decoded)") from None


def decode_image(value: Any, allow_paths: bool = False, column: str = "image") -> Any:
    """A PIL RGB image from base64 text (raw or ``data:`` URL) or raw bytes; a local file path only when
    ``allow_paths``. ``InvalidInput`` naming ``column`` for anything else."""
    if isinstance(value, bytes | bytearray):
        return _open(bytes(value), column)
    text = str(value).strip()
    if allow_paths and len(text) < 4096 and Path(text).is_file():
        from PIL import Image

        with Image.open(text) as image:
            return image.convert("RGB")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        shown = text[:40] + ("…" if len(text) > 40 else "")
        if not allow_paths and ("/" in text or "\\" in text or "." in text):
            raise InvalidInput(
                f"{column}: {shown!r} looks like a file path; the model never opens files named in a "
                "request: send the image bytes as base64"
            ) from None
        raise InvalidInput(f"{column}: not base64 image data ({shown!r})") from None
    return _open(data, column)


class VlpeftPyfunc:
    """Answers questions about images (VQA), captions images, or both and more (multi-task), from a vlpeft
    model package; the task's ``PyfuncSpec`` names the columns and the ``Predictor`` method."""

    def __init__(self, package_dir: str | Path, allow_local_paths: bool = False) -> None:
        from vlpeft.tasks import get_task
        from vlpeft.tracking.packaging import localize_package
        from vlpeft.train.predict import Predictor

        self.predictor = Predictor.load(localize_package(package_dir))
        self.spec = get_task(self.predictor.meta["task"]).pyfunc  # the trained task (vlpeft_train.json)
        self.allow_local_paths = allow_local_paths

    def _columns(self, model_input: Any) -> list[list[Any]]:
        import pandas as pd

        spec = self.spec
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in spec.inputs if c not in spec.optional and c not in frame.columns]
        if missing:
            raise InvalidInput(
                f"input needs the column(s) {', '.join(missing)} (columns: {', '.join(spec.inputs)})"
            )
        args = []
        for column in spec.inputs:  # in the order of the Predictor method's arguments
            values = list(frame[column]) if column in frame.columns else [None] * len(frame)
            if column in spec.images:
                args.append(
                    [decode_image(v, self.allow_local_paths, column) if given(v) else None for v in values]
                )
            else:
                args.append([str(v) if given(v) else "" for v in values])
        return args

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """The outputs for ``model_input`` as a one-column DataFrame (see the module docstring)."""
        import pandas as pd
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from vlpeft.errors import UserError

        try:
            out = getattr(self.predictor, self.spec.method)(*self._columns(model_input))
        except (InvalidInput, UserError) as exc:  # the request's fault: one line, no trace, HTTP 400
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame({self.spec.output: out})


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> VlpeftPyfunc:
    """MLflow's entry point for ``loader_module``: the model in the logged package ``data_path``.

    ``model_config={"allow_local_paths": True}`` lets this process open image file paths (local use only).
    """
    allow = bool((model_config or {}).get("allow_local_paths", False))
    return VlpeftPyfunc(data_path, allow_local_paths=allow)
