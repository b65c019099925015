"""MLflow "models from code" definition of a registered vlpeft model (no pickle anywhere).

``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model": <package>, "code": <vlpeft zip>})``
stores this file's source; loading executes it, and ``load_context`` rebuilds the model from files: the
package's adapter and head weights (safetensors) and its copied backbones (Hugging Face directories), via
``Predictor.load``.

Input: a pandas DataFrame with the columns of the task's ``PyfuncSpec`` (``vlpeft.tasks``): images as
base64-encoded PNG/JPEG (optionally a ``data:`` URL) or local file paths. VQA: ``image``, ``question``;
captions: ``image``; multi-task: ``task`` (vqa, gqa, nlvr, caption), ``image``, ``question`` (the question,
NLVR2's statement, empty for captions) and ``image2`` (NLVR2's second image). Output: a DataFrame with one
column, ``answer`` (VQA), ``caption`` or ``output`` (multi-task: answers, captions, ``true``/``false``).
"""

from __future__ import annotations

import base64
import binascii
import io
import sys
from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


def given(value: Any) -> bool:
    """False for an absent cell: None, NaN (pandas fills missing optional columns with it) or empty text."""
    if value is None or (isinstance(value, float) and value != value):
        return False
    return not (isinstance(value, str) and not value.strip())


def decode_image(value: Any) -> Any:
    """A PIL RGB image from base64 text (raw or ``data:`` URL), raw bytes, or a local file path."""
    from PIL import Image

    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    else:
        text = str(value).strip()
        if len(text) < 1024 and Path(text).is_file():
            return Image.open(text).convert("RGB")
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"image: neither a readable file path nor base64 image data ({text[:40]!r}…)"
            ) from None
    return Image.open(io.BytesIO(data)).convert("RGB")


class VlpeftPyfunc(PythonModel):
    """Answers questions about images (VQA), captions images, or both and more (multi-task), from a vlpeft
    model package; the task's ``PyfuncSpec`` names the columns and the ``Predictor`` method."""

    def load_context(self, context: Any) -> None:
        code = context.artifacts.get("code")
        if code and "vlpeft" not in sys.modules:
            # The vlpeft source registered with the model (a zip on sys.path): the code version that trained
            # it, and importable where vlpeft is not installed. A process that already runs vlpeft keeps it.
            sys.path.insert(0, code)
        from vlpeft.tasks import get_task
        from vlpeft.tracking.packaging import localize_package
        from vlpeft.train.predict import Predictor

        model_dir = localize_package(context.artifacts["model"])
        self.predictor = Predictor.load(model_dir)
        self.spec = get_task(self.predictor.meta["task"]).pyfunc  # the trained task (vlpeft_train.json)

    # No type hints here on purpose: MLflow would try to derive a schema from them; the signature is explicit.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        spec = self.spec
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in spec.inputs if c not in spec.optional and c not in frame.columns]
        if missing:
            raise ValueError(
                f"input needs the column(s) {', '.join(missing)} (columns: {', '.join(spec.inputs)})"
            )
        args = []
        for column in spec.inputs:  # in the order of the Predictor method's arguments
            values = list(frame[column]) if column in frame.columns else [None] * len(frame)
            if column in spec.images:
                args.append([decode_image(v) if given(v) else None for v in values])
            else:
                args.append([str(v) if given(v) else "" for v in values])
        out = getattr(self.predictor, spec.method)(*args)
        return pd.DataFrame({spec.output: out})


mlflow.models.set_model(VlpeftPyfunc())
