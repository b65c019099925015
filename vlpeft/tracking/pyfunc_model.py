"""MLflow "models from code" definition of a registered vlpeft model (no pickle anywhere).

``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model": <package>, "code": <vlpeft zip>})``
stores this file's source; loading executes it, and ``load_context`` rebuilds the model from files: the
package's adapter and head weights (safetensors) and its copied backbones (Hugging Face directories), via
``Predictor.load``.

Input: a pandas DataFrame with column ``image`` (a base64-encoded PNG/JPEG, optionally a ``data:`` URL, or a
local file path) and, for VQA, ``question``. Output: a DataFrame with one column, ``answer`` (VQA) or
``caption``.
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

OUTPUT_COLUMN = {"vqa": "answer", "caption": "caption"}


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
    """Answers questions about images (VQA) or captions images, from a vlpeft model package."""

    def load_context(self, context: Any) -> None:
        code = context.artifacts.get("code")
        if code and "vlpeft" not in sys.modules:
            # The vlpeft source registered with the model (a zip on sys.path): the code version that trained
            # it, and importable where vlpeft is not installed. A process that already runs vlpeft keeps it.
            sys.path.insert(0, code)
        from vlpeft.tracking.packaging import localize_package, read_meta
        from vlpeft.train.predict import Predictor

        model_dir = localize_package(context.artifacts["model"])
        self.task = read_meta(model_dir)["task"]
        self.predictor = Predictor.load(model_dir)

    # No type hints here on purpose: MLflow would try to derive a schema from them; the signature is explicit.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns:
            raise ValueError("input needs an 'image' column (base64 PNG/JPEG or a file path)")
        images = [decode_image(v) for v in frame["image"]]
        if self.task == "vqa":
            if "question" not in frame.columns:
                raise ValueError("VQA input needs a 'question' column")
            out = self.predictor.answers(images, [str(q) for q in frame["question"]])
        else:
            out = self.predictor.captions(images)
        return pd.DataFrame({OUTPUT_COLUMN.get(self.task, "output"): out})


mlflow.models.set_model(VlpeftPyfunc())
