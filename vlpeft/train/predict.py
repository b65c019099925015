"""``Predictor``: a trained model answering questions about / captioning single images (``vlpeft predict``).

The image goes through the same frozen vision encoder (and pooling) that made the training features, so a
prediction from a raw image equals the prediction from the feature store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlpeft.errors import ConfigError, DataError
from vlpeft.io import read_json
from vlpeft.train.tasks import TRAIN_META, VOCAB


class Predictor:
    """A loaded model plus what it needs at inference (answer vocabulary, text lengths, decoding settings)."""

    def __init__(self, model: Any, meta: dict[str, Any], vocab: Any | None = None) -> None:
        self.model = model.eval()
        self.meta = meta
        self.vocab = vocab
        self.task = model.task

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """Load a ``best``/``last`` directory written by training (``save_vl_model`` + our extra files)."""
        from vlpeft.models import load_vl_model

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise DataError(f"{model_dir}: model directory not found")
        meta_path = model_dir / TRAIN_META
        meta = read_json(meta_path, "training metadata (not a `vlpeft train` model directory?)")
        model = load_vl_model(model_dir, device=device)
        vocab = None
        if model.task == "vqa":
            from vlpeft.data.vocab import AnswerVocab

            vocab = AnswerVocab.load(model_dir / VOCAB)
            if len(vocab) != model.n_answers:
                raise DataError(f"{model_dir / VOCAB}: {len(vocab)} answers, the model has {model.n_answers}")
        if model.uses_visual:
            model.attach_vision()
        return cls(model, meta, vocab)

    def _visual(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        if not self.model.uses_visual:
            return {}
        pixels = self.model.vision.preprocess(images).to(self.model.device)
        return {"pixel_values": pixels}

    @torch.no_grad()
    def answers(self, images: list[Image.Image], questions: list[str]) -> list[str]:
        """Answers of a VQA model, one per (image, question) pair."""
        if self.task != "vqa":
            raise ConfigError(
                f"this is a {self.task} model: it captions images, it does not answer questions"
            )
        if len(images) != len(questions):
            raise ConfigError(f"{len(images)} images but {len(questions)} questions")
        enc = self.model.encode_questions(list(questions), int(self.meta["max_question_tokens"]))
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        idx = self.model.predict(**enc, **self._visual(images))
        return [self.vocab.answers[i] for i in idx.tolist()]

    @torch.no_grad()
    def captions(self, images: list[Image.Image]) -> list[str]:
        """Captions of a caption model, one per image (beam size and length as in the test evaluation)."""
        if self.task != "caption":
            raise ConfigError(f"this is a {self.task} model: it needs a question (--question)")
        return self.model.generate(
            **self._visual(images),
            max_new_tokens=int(self.meta["max_new_tokens"]),
            num_beams=int(self.meta["num_beams"]),
            batch_size=len(images),
        )

    def answer(self, image: Image.Image, question: str) -> str:
        """The answer to ``question`` about ``image``."""
        return self.answers([image], [question])[0]

    def caption(self, image: Image.Image) -> str:
        """A caption of ``image``."""
        return self.captions([image])[0]
