"""The two tasks bound to the loop: training set, per-epoch validation, test predictions + official metrics.

VQA: one sample per question; targets are the official soft scores over the answer vocabulary (built from
the train answers and saved with the model); validation = val loss and official VQA accuracy (percent).
Captions: one sample per (image, caption) pair of train; every caption token and EOS is supervised, padding
never; validation = val loss and, when ``caption.val_cider_images`` > 0, CIDEr of greedy captions of that
many val images (then the best checkpoint follows CIDEr, else the val loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlpeft.config import Params
from vlpeft.errors import ConfigError
from vlpeft.io import write_json
from vlpeft.tasks import get_task
from vlpeft.train.inputs import VisualSource, chunks, model_device, to_device
from vlpeft.train.sampler import subset_indices

PREDICTIONS = "predictions_test.json"
TRAIN_META = "vlpeft_train.json"
VOCAB = "answers.json"


def train_meta(params: Params, task: str) -> dict[str, Any]:
    """What a saved model needs besides its weights to be used like in training (read by ``Predictor``)."""
    return {
        "task": task,
        "max_question_tokens": params.data.max_question_tokens,
        "max_caption_tokens": params.data.max_caption_tokens,
        "num_beams": params.evaluate.num_beams,
        "max_new_tokens": params.evaluate.max_new_tokens,
        "visual_features": params.model.visual_features,
        "features_pooling": params.features.pooling,
    }


def open_visual_store(params: Params, task: str, features_dir: Path | None) -> tuple[bool, Any]:
    """``(images in the loop?, feature store or None)`` for ``task``; the store is opened first, so a wrong
    path fails before any data or model loads."""
    cfg = params.task(task)
    images = cfg.visual_input == "images" or params.model.vision_tower != "frozen"
    uses_visual = params.model.visual_prefix or cfg.peft.routing != "none"
    if not uses_visual or images:
        return images, None
    from vlpeft.data.features import FeatureStore

    if features_dir is None:
        raise ConfigError(f"{task}: the model uses the image: pass a feature store (--features DIR)")
    return images, FeatureStore(features_dir)


def build_model_and_visual(
    params: Params,
    task: str,
    family: str,
    images: bool,
    store: Any,
    n_answers: int | None = None,
) -> tuple[Any, VisualSource]:
    """The seeded VL model of ``family`` for ``task``'s section and its visual source."""
    from vlpeft.models import build_vl_model
    from vlpeft.train.state import seed_everything

    cfg = params.task(task)
    seed_everything(cfg.seed)  # the PEFT / head initialisation is part of the run's seed
    model = build_vl_model(
        family,
        params.model,
        cfg.peft,
        n_answers,
        with_vision=images,
        vision_pooling=params.features.pooling,
    )
    visual = VisualSource(model, "images" if images else "features", store, params.model.visual_features)
    return model, visual


def build_vqa_task(params: Params, data_root: Path, features_dir: Path | None) -> VqaTask:
    """The VQA binding: train/val questions, the answer vocabulary (from train), the classifier."""
    from vlpeft.data.vocab import AnswerVocab
    from vlpeft.data.vqa import load_vqa

    images, store = open_visual_store(params, "vqa", features_dir)
    train, val = load_vqa(data_root, "train"), load_vqa(data_root, "val")
    vocab = AnswerVocab.build(train, params.data.vocab_min_count, params.data.vocab_top_k)
    model, visual = build_model_and_visual(params, "vqa", "vqa", images, store, len(vocab))
    return VqaTask(params, model, vocab, visual, train, val, Path(data_root))


def build_caption_task(params: Params, data_root: Path, features_dir: Path | None) -> CaptionTask:
    """The captioning binding: train/val Karpathy records and the decoder captioner."""
    from vlpeft.data.coco import load_captions

    images, store = open_visual_store(params, "caption", features_dir)
    train, val = load_captions(data_root, "train"), load_captions(data_root, "val")
    model, visual = build_model_and_visual(params, "caption", "caption", images, store)
    return CaptionTask(params, model, visual, train, val, Path(data_root))


@dataclass
class VqaTask:
    """VQA as classification: data, validation and test evaluation (see the module docstring)."""

    params: Params
    model: Any
    vocab: Any
    visual: VisualSource
    train_records: list[Any]
    val_records: list[Any]
    root: Path
    name: str = "vqa"
    metric_name: str = "val_accuracy"
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        from vlpeft.eval import VqaGroundTruth

        cfg = self.params.vqa
        keep = subset_indices(len(self.train_records), cfg.max_train_samples, cfg.seed)
        self.train_records = [self.train_records[i] for i in keep]
        self._val_gt = VqaGroundTruth.from_records(
            self.val_records, source="val split", revision=self.params.evaluate.vqa_revision
        )

    # -------------------------------------------------------------------------------------- training

    def __len__(self) -> int:
        return len(self.train_records)

    def _batch(self, records: list[Any]) -> dict[str, Any]:
        enc = self.model.encode_questions([r.question for r in records], self.params.data.max_question_tokens)
        targets = torch.stack([self.vocab.target_vector(r.answers) for r in records])
        return {
            **enc,
            **self.visual([r.image_id for r in records], [r.path for r in records]),
            "targets": targets,
        }

    def batch(self, indices: list[int]) -> dict[str, Any]:
        return self._batch([self.train_records[i] for i in indices])

    def units(self, batch: dict[str, Any]) -> int:
        return int(batch["targets"].shape[0])

    # ------------------------------------------------------------------------------------ evaluation

    def _run(self, model: Any, records: list[Any]) -> tuple[dict[int, str], float]:
        """Predicted answers (question id -> answer) and mean loss over ``records``."""
        device = model_device(model)
        preds: dict[int, str] = {}
        loss_sum = 0.0
        for idx in chunks(len(records), self.params.evaluate.batch_size):
            part = [records[i] for i in idx]
            out = model(**to_device(self._batch(part), device))
            loss_sum += float(out.loss) * len(part)
            for r, k in zip(part, out.logits.argmax(dim=-1).tolist(), strict=True):
                preds[r.question_id] = self.vocab.answers[k]
        return preds, loss_sum / max(len(records), 1)

    def validate(self, model: Any) -> dict[str, float]:
        preds, loss = self._run(model, self.val_records)
        metrics = self._val_gt.score(preds)
        out = {"val_loss": loss, "val_metric": metrics.overall}
        out.update({f"val_{t}": v for t, v in metrics.per_answer_type.items()})
        return out

    def check_inputs(self, test: bool = True) -> None:
        """Read now what the run reads after training (the test split, its official ground truth) and check
        the visual inputs of every split: a broken file is refused before anything is trained or written."""
        from vlpeft.data.formats import annotations_path, questions_path
        from vlpeft.data.vqa import load_vqa
        from vlpeft.eval import load_vqa_ground_truth

        records = [*self.train_records, *self.val_records]
        if test:
            records += load_vqa(self.root, "test")
            questions, annotations = questions_path(self.root, "test"), annotations_path(self.root, "test")
            load_vqa_ground_truth(questions, annotations, self.params.evaluate.vqa_revision)
        self.visual.check([r.image_id for r in records], [r.path for r in records])

    def save_extra(self, model_dir: Path) -> None:
        self.vocab.save(model_dir / VOCAB)
        write_json(model_dir / TRAIN_META, train_meta(self.params, self.name))

    @torch.no_grad()
    def test(self, model: Any, out_dir: Path) -> dict[str, Any]:
        """Predict the test split, write ``predictions_test.json`` (official results format), score it."""
        from vlpeft.data.formats import annotations_path, questions_path
        from vlpeft.data.vqa import load_vqa
        from vlpeft.eval import evaluate_vqa_files

        records = load_vqa(self.root, "test")
        preds, _ = self._run(model, records)
        results = [{"question_id": r.question_id, "answer": preds[r.question_id]} for r in records]
        write_json(out_dir / PREDICTIONS, results, indent=None)
        metrics = evaluate_vqa_files(
            questions_path(self.root, "test"),
            annotations_path(self.root, "test"),
            out_dir / PREDICTIONS,
            revision=self.params.evaluate.vqa_revision,
        )
        return metrics.to_json()


@dataclass
class CaptionTask:
    """Captioning with a decoder: data, validation and test evaluation (see the module docstring)."""

    params: Params
    model: Any
    visual: VisualSource
    train_records: list[Any]
    val_records: list[Any]
    root: Path
    name: str = "caption"
    metric_name: str = "val_cider"
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        cfg = self.params.caption
        pairs = [(r, c) for r in self.train_records for c in r.captions]
        self.pairs = [pairs[i] for i in subset_indices(len(pairs), cfg.max_train_samples, cfg.seed)]
        self.val_pairs = [(r, c) for r in self.val_records for c in r.captions]
        self.metric_name, self.greater_is_better = get_task(self.name).validation(cfg)

    # -------------------------------------------------------------------------------------- training

    def __len__(self) -> int:
        return len(self.pairs)

    def _batch(self, pairs: list[tuple[Any, str]]) -> dict[str, Any]:
        enc = self.model.encode_captions([c for _, c in pairs], self.params.data.max_caption_tokens)
        return {**enc, **self.visual([r.image_id for r, _ in pairs], [r.path for r, _ in pairs])}

    def batch(self, indices: list[int]) -> dict[str, Any]:
        return self._batch([self.pairs[i] for i in indices])

    def units(self, batch: dict[str, Any]) -> int:
        return int((batch["labels"] != -100).sum())

    # ------------------------------------------------------------------------------------ evaluation

    def captions(self, model: Any, records: list[Any], num_beams: int = 1) -> dict[int, str]:
        """One generated caption per image record (image id -> caption)."""
        device = model_device(model)
        out: dict[int, str] = {}
        for idx in chunks(len(records), self.params.evaluate.batch_size):
            part = [records[i] for i in idx]
            visual = to_device(self.visual([r.image_id for r in part], [r.path for r in part]), device)
            texts = model.generate(
                **visual,
                max_new_tokens=self.params.evaluate.max_new_tokens,
                num_beams=num_beams,
                batch_size=len(part),
            )
            out.update({r.image_id: t for r, t in zip(part, texts, strict=True)})
        return out

    def validate(self, model: Any) -> dict[str, float]:
        from vlpeft.eval.caption import cider_score

        device = model_device(model)
        loss_sum, units = 0.0, 0
        for idx in chunks(len(self.val_pairs), self.params.evaluate.batch_size):
            batch = self._batch([self.val_pairs[i] for i in idx])
            n = self.units(batch)
            loss_sum += float(model(**to_device(batch, device)).loss) * n
            units += n
        out = {"val_loss": loss_sum / max(units, 1)}
        k = self.params.caption.val_cider_images
        if k > 0:
            records = self.val_records[:k]
            preds = self.captions(model, records)
            refs = {r.image_id: r.captions for r in records}
            out["val_cider"] = cider_score(refs, preds, " or set caption.val_cider_images: 0")
        out["val_metric"] = out[self.metric_name]
        return out

    def check_inputs(self, test: bool = True) -> None:
        """As ``VqaTask.check_inputs``: the test captions, their COCO ground truth, every split's visuals."""
        from vlpeft.data.coco import load_captions
        from vlpeft.data.formats import captions_path
        from vlpeft.eval import load_caption_references

        records = [*self.train_records, *self.val_records]
        if test:
            records += load_captions(self.root, "test")
            load_caption_references(captions_path(self.root, "test"))
        self.visual.check([r.image_id for r in records], [r.path for r in records])

    def save_extra(self, model_dir: Path) -> None:
        write_json(model_dir / TRAIN_META, train_meta(self.params, self.name))

    @torch.no_grad()
    def test(self, model: Any, out_dir: Path) -> dict[str, Any]:
        """Caption the test images, write ``predictions_test.json`` (COCO results format), score it."""
        from vlpeft.data.coco import load_captions
        from vlpeft.data.formats import captions_path
        from vlpeft.eval import evaluate_caption_files

        records = load_captions(self.root, "test")
        preds = self.captions(model, records, num_beams=self.params.evaluate.num_beams)
        results = [{"image_id": r.image_id, "caption": preds[r.image_id]} for r in records]
        write_json(out_dir / PREDICTIONS, results, indent=None)
        switches = {"spice": self.params.evaluate.spice, "meteor": self.params.evaluate.meteor}
        metrics = evaluate_caption_files(captions_path(self.root, "test"), out_dir / PREDICTIONS, **switches)
        return metrics.to_json()
