"""``Predictor``: a trained model answering questions about / captioning single images (``vlpeft predict``).

The image goes through the same frozen vision encoder (and pooling) that made the training features, so a
prediction from a raw image equals the prediction from the feature store.

A multi-task (generative) model answers for one of its trained tasks per input (``outputs``), decoding as
its test evaluation did (``vlpeft.train.multitask.tasks``): VQA/GQA answers and captions are generated,
NLVR2 (a statement about two images) is decided by the ``true`` vs ``false`` logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlpeft.errors import ConfigError, DataError
from vlpeft.io import read_json
from vlpeft.models.visual_embedding import image_order_ids
from vlpeft.train.multitask.tasks import NLVR_CHOICES, UNTRUNCATED_TEXT
from vlpeft.train.tasks import TRAIN_META, VOCAB


@dataclass(frozen=True)
class GenerativeUse:
    """How a multi-task model runs one task at inference, as its binding in ``vlpeft.train.multitask.tasks``.

    ``images`` per input; ``text``: the input has a question/statement (captions: the task prefix alone);
    ``choices``: decided by the first choice's logit against the second's (NLVR2), else generated with the
    length and beam count stored under the ``length`` / ``beams`` keys of the model's ``vlpeft_train.json``.
    """

    images: int = 1
    text: bool = True
    choices: tuple[str, ...] = ()
    length: str = "max_answer_tokens"
    beams: str = "answer_beams"


GENERATIVE_TASKS: dict[str, GenerativeUse] = {
    "vqa": GenerativeUse(),
    "gqa": GenerativeUse(),
    "nlvr": GenerativeUse(images=2, choices=NLVR_CHOICES),
    "caption": GenerativeUse(text=False, length="max_new_tokens", beams="caption_beams"),
}


def generative_defaults() -> dict[str, int]:
    """Decoding settings for multi-task models saved before ``vlpeft_train.json`` recorded them: the config
    defaults (``multitask.answer_beams``, ``multitask.caption_beams``, ``evaluate.max_new_tokens``)."""
    from vlpeft.config import EvaluateConfig, MultiTaskConfig

    fields = MultiTaskConfig.model_fields
    return {
        "answer_beams": fields["answer_beams"].default,
        "caption_beams": fields["caption_beams"].default,
        "max_new_tokens": EvaluateConfig.model_fields["max_new_tokens"].default,
    }


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

    @torch.no_grad()
    def outputs(
        self,
        tasks: Sequence[str],
        images: Sequence[Image.Image],
        questions: Sequence[str] | None = None,
        images2: Sequence[Image.Image | None] | None = None,
    ) -> list[str]:
        """A multi-task model's output per input: ``tasks[i]`` on ``images[i]`` (NLVR2: and ``images2[i]``)
        with ``questions[i]`` (the question, or NLVR2's statement; empty for captions).

        Answers and captions are generated text; NLVR2 gives ``true`` or ``false``. Inputs are grouped by task
        (one batch each) and returned in input order.
        """
        if self.task != "generative":
            raise ConfigError(
                f"this is a {self.task} model, not a multi-task one: it takes no task per input"
            )
        n = len(images)
        questions = list(questions) if questions is not None else [""] * n
        images2 = list(images2) if images2 is not None else [None] * n
        if not len(tasks) == len(questions) == len(images2) == n:
            raise ConfigError(
                f"{len(tasks)} tasks, {n} images, {len(questions)} questions, {len(images2)} images2"
            )
        trained = list(self.meta.get("tasks") or GENERATIVE_TASKS)
        out: list[str] = [""] * n
        for task in dict.fromkeys(tasks):
            if task not in trained:
                raise ConfigError(f"task {task!r}: this model was trained on {', '.join(trained)}")
            rows = [i for i, t in enumerate(tasks) if t == task]
            texts = [questions[i] or "" for i in rows]
            done = self._generative(task, [images[i] for i in rows], texts, [images2[i] for i in rows])
            for i, text in zip(rows, done, strict=True):
                out[i] = text
        return out

    def _generative(
        self, task: str, images: list[Image.Image], texts: list[str], images2: list[Image.Image | None]
    ) -> list[str]:
        """One task's batch through the multi-task model (see ``GenerativeUse``)."""
        use = GENERATIVE_TASKS[task]
        if use.text and not all(texts):
            raise ConfigError(f"task {task}: every input needs a question (NLVR2: the statement)")
        if not use.text and any(texts):
            raise ConfigError(f"task {task}: takes no question (the encoder text is the task prefix alone)")
        pairs = [images] if use.images == 1 else [images, images2]
        if any(img is None for group in pairs for img in group):
            raise ConfigError(f"task {task}: every input needs {use.images} image(s) (image, image2)")
        visual = self._features(pairs)
        prefix = task if self.meta.get("task_prefix", True) else ""
        limit = None if task in UNTRUNCATED_TEXT else int(self.meta["max_question_tokens"])
        enc = self.model.encode_texts(texts, task=prefix, max_length=limit)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        if use.choices:
            logits = self.model.score_choices(enc["input_ids"], enc["attention_mask"], use.choices,
                                              task=task, **visual)  # fmt: skip
            # As NlvrGen.predict: the first choice only when its logit beats the second's.
            return [
                use.choices[0] if first else use.choices[1]
                for first in (logits[:, 0] > logits[:, 1]).tolist()
            ]
        setting = {**generative_defaults(), **self.meta}
        return self.model.generate(
            **visual,
            **enc,
            max_new_tokens=int(setting[use.length]),
            num_beams=int(setting[use.beams]),
            task=task,
        )

    def _features(self, groups: list[list[Image.Image]]) -> dict[str, torch.Tensor]:
        """``{"visual": (B, k·m, d)}``: the frozen encoder's features of each input's k images side by side
        (how the feature store feeds NLVR2's pairs in training) with their ``image_order`` when k > 1, or
        {} for a blind model."""
        if not self.model.uses_visual:
            return {}
        kind = self.model.model_cfg.visual_features
        feats = []
        for group in groups:
            f = self.model.vision(self.model.vision.preprocess(group).to(self.model.device), kind=kind)
            feats.append(f if f.dim() == 3 else f.unsqueeze(1))
        out = {"visual": torch.cat(feats, dim=1)}
        if len(feats) > 1:  # NLVR2: left image's tokens are image 0, the right's image 1 (as in training)
            out["image_order"] = image_order_ids(len(groups[0]), len(feats), feats[0].shape[1]).to(
                self.model.device
            )
        return out

    def answer(self, image: Image.Image, question: str) -> str:
        """The answer to ``question`` about ``image``."""
        return self.answers([image], [question])[0]

    def caption(self, image: Image.Image) -> str:
        """A caption of ``image``."""
        return self.captions([image])[0]
