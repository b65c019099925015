"""The four generative tasks of VL-Adapter's multi-task setting, each as a small binding.

Every task turns its records into training samples, collates a batch (encoder text with its prefix, decoder
labels, visual features of one or two images, the loss form), predicts, and scores with the project's scorers:

- vqa: prefix + question -> one answer sampled ∝ its soft score; per-sample CE × that score; official VQA
  accuracy of the generated answers.
- gqa: prefix + question -> the answer; per-sample mean CE; exact match.
- nlvr: prefix + statement, two images -> ``true`` / ``false``; per-sample mean CE; decided by the ``true``
  vs ``false`` logits; accuracy and consistency.
- caption: prefix alone -> one caption per (image, caption) pair; per-token mean CE; CIDEr (pycocoevalcap).

The VQA soft score of an answer is the official accuracy a prediction of it would get
(``vlpeft.eval.answer_accuracy``), i.e. VL-Adapter's ``label`` scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlpeft.config import MultiTaskConfig, Params
from vlpeft.io import write_json, write_text
from vlpeft.train.inputs import chunks, model_device, to_device

Sample = Any
NLVR_CHOICES = ("true", "false")
# Tasks whose encoder text is never cut at data.max_question_tokens: VL-Adapter encodes NLVR2 statements
# whole (nlvr_clip_data.py), VQA/GQA questions at 20 tokens; the model's position limit still applies
# (GenerativeVL.check_length names it).
UNTRUNCATED_TEXT = frozenset({"nlvr"})


def vqa_answer_scores(answers: list[str]) -> dict[str, float]:
    """Distinct answers of a question with their soft scores (official accuracy of predicting each)."""
    from vlpeft.eval import answer_accuracy

    return {a: answer_accuracy(answers, a) for a in dict.fromkeys(answers)}


def sample_answer(scores: dict[str, float], rng: np.random.Generator) -> tuple[str, float]:
    """One answer drawn in proportion to its score, and that score (VL-Adapter's VQA target)."""
    names = [a for a, s in scores.items() if s > 0]
    weights = np.array([scores[a] for a in names], dtype=np.float64)
    i = int(rng.choice(len(names), p=weights / weights.sum()))
    return names[i], float(weights[i])


@dataclass
class GenTask:
    """Shared machinery of a generative task; subclasses define the records, targets and scores."""

    name: str
    params: Params
    root: Path
    image_ids: Any  # callable: sample -> list of feature-store image ids (1 or 2)
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    loss_reduction: str = "sample"

    @property
    def cfg(self) -> MultiTaskConfig:
        return self.params.multitask

    @property
    def prefix_task(self) -> str:
        """The task name whose prefix goes before the text ("" = no prefix)."""
        return self.name if self.cfg.task_prefix else ""

    def text(self, sample: Sample) -> str:
        return sample.question

    def text_limit(self) -> int | None:
        """Encoder text length limit in tokens (prefix, BOS and EOS included); None = not truncated."""
        return None if self.name in UNTRUNCATED_TEXT else self.params.data.max_question_tokens

    def encode(self, model: Any, samples: list[Sample]) -> dict[str, torch.Tensor]:
        return model.encode_texts(
            [self.text(s) for s in samples], task=self.prefix_task, max_length=self.text_limit()
        )

    def target(self, sample: Sample, rng: np.random.Generator) -> tuple[str, float]:
        return sample.answer, 1.0

    def target_tokens(self) -> int:
        return self.cfg.max_answer_tokens

    def collate(
        self, model: Any, samples: list[Sample], rngs: list[np.random.Generator], visual: Any
    ) -> dict:
        """A training batch of this task (CPU tensors) with its task name and loss form."""
        targets = [self.target(s, r) for s, r in zip(samples, rngs, strict=True)]
        batch = {
            **self.encode(model, samples),
            "labels": model.encode_targets([t for t, _ in targets], self.target_tokens()),
            **visual(samples),
            "task": self.name,
            "loss_reduction": self.loss_reduction,
        }
        if self.name == "vqa":
            batch["sample_weights"] = torch.tensor([w for _, w in targets], dtype=torch.float32)
        return batch

    def units(self, batch: dict[str, Any]) -> int:
        if self.loss_reduction == "token":
            return int((batch["labels"] != -100).sum())
        return int(batch["labels"].shape[0])

    def generate(self, model: Any, samples: list[Sample], visual: Any, beams: int, max_new: int) -> list[str]:
        """Generated text per sample (answers or captions), in eval batches."""
        device = model_device(model)
        out: list[str] = []
        for idx in chunks(len(samples), self.params.evaluate.batch_size):
            part = [samples[i] for i in idx]
            enc = to_device(self.encode(model, part), device)
            out.extend(
                model.generate(**to_device(visual(part), device), **enc, max_new_tokens=max_new,
                               num_beams=beams, task=self.name)
            )  # fmt: skip
        return out


@dataclass
class VqaGen(GenTask):
    """VQA as generation: one sample per question; targets sampled ∝ soft score, loss weighted by it."""

    def __post_init__(self) -> None:
        self._scores = {}

    def target(self, sample: Sample, rng: np.random.Generator) -> tuple[str, float]:
        scores = self._scores.get(sample.question_id)
        if scores is None:
            scores = self._scores[sample.question_id] = vqa_answer_scores(list(sample.answers))
        return sample_answer(scores, rng)

    def predict(self, model: Any, samples: list[Sample], visual: Any) -> dict[int, str]:
        texts = self.generate(model, samples, visual, self.cfg.answer_beams, self.cfg.max_answer_tokens)
        return {s.question_id: t for s, t in zip(samples, texts, strict=True)}

    def score(self, model: Any, samples: list[Sample], visual: Any) -> dict[str, float]:
        from vlpeft.eval import VqaGroundTruth

        preds = self.predict(model, samples, visual)
        revision = self.params.evaluate.vqa_revision
        gt = VqaGroundTruth.from_records(samples, source="vqa val", revision=revision)
        return {"accuracy": gt.score(preds).overall}

    def test(self, model: Any, out_dir: Path, visual: Any) -> dict[str, Any]:
        from vlpeft.data.formats import annotations_path, questions_path
        from vlpeft.data.vqa import load_vqa
        from vlpeft.eval import evaluate_vqa_files

        records = load_vqa(self.root, "test")
        preds = self.predict(model, records, visual)
        path = out_dir / "predictions_test_vqa.json"
        write_json(path, [{"question_id": q, "answer": a} for q, a in preds.items()], indent=None)
        metrics = evaluate_vqa_files(
            questions_path(self.root, "test"),
            annotations_path(self.root, "test"),
            path,
            revision=self.params.evaluate.vqa_revision,
        )
        return {"score": metrics.overall, **metrics.to_json()}


@dataclass
class GqaGen(GenTask):
    """GQA: the answer generated, scored by exact match."""

    def predict(self, model: Any, samples: list[Sample], visual: Any) -> dict[str, str]:
        texts = self.generate(model, samples, visual, self.cfg.answer_beams, self.cfg.max_answer_tokens)
        return {s.question_id: t for s, t in zip(samples, texts, strict=True)}

    def score(self, model: Any, samples: list[Sample], visual: Any) -> dict[str, float]:
        from vlpeft.eval.gqa_nlvr import gqa_accuracy

        preds = self.predict(model, samples, visual)
        return {"accuracy": gqa_accuracy({s.question_id: s.answer for s in samples}, preds)}

    def test(self, model: Any, out_dir: Path, visual: Any) -> dict[str, Any]:
        from vlpeft.data.gqa import load_gqa

        records = load_gqa(self.root, "testdev")
        preds = self.predict(model, records, visual)
        # GQA's submission format: [{"questionId", "prediction"}]
        write_json(out_dir / "predictions_test_gqa.json",
                   [{"questionId": q, "prediction": p} for q, p in preds.items()], indent=None)  # fmt: skip
        from vlpeft.eval.gqa_nlvr import gqa_accuracy

        acc = gqa_accuracy({r.question_id: r.answer for r in records}, preds)
        return {"score": acc, "accuracy": acc, "split": "testdev", "n": len(records)}


@dataclass
class NlvrGen(GenTask):
    """NLVR2: statement + two images -> ``true`` / ``false``; decided by comparing the two logits."""

    def text(self, sample: Sample) -> str:
        return sample.sentence

    def target(self, sample: Sample, rng: np.random.Generator) -> tuple[str, float]:
        return sample.answer, 1.0

    def predict(self, model: Any, samples: list[Sample], visual: Any) -> dict[str, bool]:
        device = model_device(model)
        out: dict[str, bool] = {}
        for idx in chunks(len(samples), self.params.evaluate.batch_size):
            part = [samples[i] for i in idx]
            enc = to_device(self.encode(model, part), device)
            logits = model.score_choices(enc["input_ids"], enc["attention_mask"], NLVR_CHOICES,
                                         task=self.name, **to_device(visual(part), device))  # fmt: skip
            decided = (logits[:, 0] > logits[:, 1]).tolist()  # "true" beats "false"
            out.update({s.identifier: bool(v) for s, v in zip(part, decided, strict=True)})
        return out

    def score(self, model: Any, samples: list[Sample], visual: Any) -> dict[str, float]:
        from vlpeft.eval.gqa_nlvr import nlvr_scores

        preds = self.predict(model, samples, visual)
        return nlvr_scores({s.identifier: bool(s.label) for s in samples}, preds)

    def test(self, model: Any, out_dir: Path, visual: Any) -> dict[str, Any]:
        from vlpeft.data.nlvr import load_nlvr
        from vlpeft.eval.gqa_nlvr import nlvr_scores

        records = load_nlvr(self.root, "test")
        preds = self.predict(model, records, visual)
        # lil-lab/nlvr's metrics.py reads CSV lines "identifier,prediction" (True/False)
        write_text(out_dir / "predictions_test_nlvr.csv", "".join(f"{i},{p}\n" for i, p in preds.items()))
        scores = nlvr_scores({r.identifier: bool(r.label) for r in records}, preds)
        return {"score": scores["accuracy"], **scores, "n": len(records)}


@dataclass
class CaptionGen(GenTask):
    """Captions: the prefix alone as encoder text, one sample per (image, caption); CIDEr."""

    loss_reduction: str = "token"

    def text(self, sample: Sample) -> str:
        return ""

    def target(self, sample: Sample, rng: np.random.Generator) -> tuple[str, float]:
        return sample[1], 1.0

    def target_tokens(self) -> int:
        return self.params.data.max_caption_tokens

    def captions(self, model: Any, records: list[Any], visual: Any, beams: int) -> dict[int, str]:
        samples = [(r, "") for r in records]
        texts = self.generate(model, samples, visual, beams, self.params.evaluate.max_new_tokens)
        return {r.image_id: t for r, t in zip(records, texts, strict=True)}

    def score(self, model: Any, records: list[Any], visual: Any) -> dict[str, float]:
        from vlpeft.eval.caption import cider_score

        preds = self.captions(model, records, visual, 1)
        return {"cider": 100.0 * cider_score({r.image_id: r.captions for r in records}, preds)}

    def test(self, model: Any, out_dir: Path, visual: Any) -> dict[str, Any]:
        from vlpeft.data.coco import load_captions
        from vlpeft.data.formats import captions_path
        from vlpeft.eval import evaluate_caption_files

        records = load_captions(self.root, "test")
        preds = self.captions(model, records, visual, self.cfg.caption_beams)
        path = out_dir / "predictions_test_caption.json"
        write_json(path, [{"image_id": i, "caption": c} for i, c in preds.items()], indent=None)
        metrics = evaluate_caption_files(
            captions_path(self.root, "test"), path, spice="off", meteor=self.params.evaluate.meteor
        ).to_json()
        return {"score": 100.0 * metrics["CIDEr"], **metrics}
