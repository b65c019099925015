"""``vlpeft data synth``: the embedded shapes world in the contract layout, deterministic by seed.

Every image draws from its own generator seeded by ``(seed, split, index)``, so the first N images of a split
are the same whatever the split sizes, and the whole output is a pure function of (config, seed). The world is
built in a temp dir and renamed into place: nothing half-written is ever visible.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlpeft.config import WorldConfig
from vlpeft.data import formats
from vlpeft.data.formats import SPLITS, ImageEntry, VqaEntry
from vlpeft.data.language import annotator_answers, captions, majority_answer, questions
from vlpeft.data.render import render_scene
from vlpeft.data.scenes import sample_scene, vocabulary
from vlpeft.io import atomic_dir

GENERATOR_VERSION = 1
_CORPUS_STREAM = 7  # seed-stream id of the unrendered corpus scenes (splits use 0, 1, 2)


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps uses the C encoder in one go; json.dump streams through the slow Python one.
    path.write_text(json.dumps(data) + "\n")


def split_sizes(cfg: WorldConfig) -> dict[str, int]:
    """Number of images per split."""
    return {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}


def corpus_lines(cfg: WorldConfig, seed: int) -> list[str]:
    """LM-pretraining text: captions and "question answer" lines of ``corpus_scenes`` unrendered scenes.

    In the multi-task world (``extra_tasks``) every line starts with its task's prefix (``TASK_PREFIXES``,
    e.g. ``"vqa: is there a red circle ? yes"``), so the word tokenizer trained on this corpus gives each
    prefix its own id and the text model has seen them; the default world's corpus is unchanged.
    """
    from vlpeft.data.language import TASK_PREFIXES

    def tagged(task: str, texts: Any) -> list[str]:
        return [TASK_PREFIXES[task] + t for t in texts] if cfg.extra_tasks else list(texts)

    lines: list[str] = []
    previous = None
    for i in range(cfg.corpus_scenes):
        rng = np.random.default_rng([seed, _CORPUS_STREAM, i])
        scene = sample_scene(rng, cfg.max_objects)
        lines.extend(tagged("caption", captions(scene, rng, cfg.captions_per_image)))
        lines.extend(
            tagged("vqa", (f"{q.text} {q.answer}" for q in questions(scene, rng, cfg.questions_per_image)))
        )
        if cfg.extra_tasks:  # the multi-task world's text too (the default world's corpus is unchanged)
            for task, texts in _extra_corpus(cfg, scene, previous, rng).items():
                lines.extend(tagged(task, texts))
        previous = scene
    return lines


def _extra_corpus(
    cfg: WorldConfig, scene: Any, previous: Any, rng: np.random.Generator
) -> dict[str, list[str]]:
    """Per task: GQA-like "question answer" and NLVR2-like "statement true|false" lines of one corpus scene."""
    from vlpeft.data.synth_tasks import gqa_questions, nlvr_statements

    out: dict[str, list[str]] = {}
    if "gqa" in cfg.extra_tasks:
        qa = gqa_questions(scene["objects"], rng, cfg.gqa_questions_per_image)
        out["gqa"] = [f"{q} {a}" for q, a in qa]
    if "nlvr" in cfg.extra_tasks and previous is not None:
        pairs = nlvr_statements(previous["objects"], scene["objects"], rng, cfg.nlvr_sentences_per_set)
        out["nlvr"] = [f"{t} {'true' if y else 'false'}" for t, y in pairs]
    return out


def _write_extra_tasks(
    root: Path, cfg: WorldConfig, seed: int, scenes: list[dict[str, Any]], images: list[ImageEntry]
) -> dict[str, Any]:
    """GQA-like / NLVR2-like files over the world's images (``world.extra_tasks``); their counts."""
    from vlpeft.data.synth_tasks import make_gqa, make_nlvr

    counts: dict[str, Any] = {}
    if "gqa" in cfg.extra_tasks:
        splits = make_gqa(scenes, seed, cfg.gqa_questions_per_image)
        for split, rows in splits.items():
            _dump(root / "gqa" / f"{split}.json", rows)
        counts["gqa"] = {s: len(r) for s, r in splits.items()}
    if "nlvr" in cfg.extra_tasks:
        files = {e.image_id: f"images/{e.split}/{e.file_name}" for e in images}
        splits, table = make_nlvr(scenes, files, seed, cfg.nlvr_sentences_per_set)
        for split, rows in splits.items():
            _dump(root / "nlvr" / f"{split}.json", rows)
        _dump(root / "nlvr" / "images.json", table)
        counts["nlvr"] = {s: len(r) for s, r in splits.items()}
    return counts


def generate_world(cfg: WorldConfig, out: str | Path, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Write the world under ``out`` (replacing it atomically); return the provenance (``world.json``)."""
    start = time.perf_counter()
    out = Path(out)
    sizes = split_sizes(cfg)
    with atomic_dir(out) as tmp:
        image_entries: list[ImageEntry] = []
        vqa_entries: dict[str, list[VqaEntry]] = {s: [] for s in SPLITS}
        scenes: list[dict[str, Any]] = []
        image_id, question_id = 0, 0
        bar = tqdm(total=sum(sizes.values()), desc="synth images", unit="img", disable=not progress or None)
        for split_idx, split in enumerate(SPLITS):
            (tmp / "images" / split).mkdir(parents=True)
            for i in range(sizes[split]):
                rng = np.random.default_rng([seed, split_idx, i])
                image_id += 1
                scene = sample_scene(rng, cfg.max_objects)
                file_name = f"{split}_{image_id:06d}.png"
                img = render_scene(scene, cfg.image_size, cfg.noise_std, rng)
                img.save(tmp / "images" / split / file_name, format="PNG", compress_level=1)
                image_entries.append(
                    ImageEntry(image_id, split, file_name, captions(scene, rng, cfg.captions_per_image))
                )
                scenes.append({"image_id": image_id, "split": split, "objects": scene["objects"]})
                for q in questions(scene, rng, cfg.questions_per_image):
                    question_id += 1
                    answers = annotator_answers(q, rng, cfg.annotator_accuracy)
                    vqa_entries[split].append(
                        VqaEntry(
                            question_id=question_id,
                            image_id=image_id,
                            question=q.text,
                            question_type=q.question_type,
                            answer_type=q.answer_type,
                            multiple_choice_answer=majority_answer(answers, preferred=q.answer),
                            answers=answers,
                            extra={"question_kind": q.kind, "correct_answer": q.answer},
                        )
                    )
                bar.update()
        bar.close()

        desc = f"vlpeft shapes world (seed {seed})"
        _dump(formats.karpathy_path(tmp), formats.karpathy(image_entries))
        for split in SPLITS:
            in_split = [e for e in image_entries if e.split == split]
            _dump(formats.captions_path(tmp, split), formats.coco_captions(in_split, desc))
            _dump(formats.questions_path(tmp, split), formats.vqa_questions(vqa_entries[split], split, desc))
            _dump(
                formats.annotations_path(tmp, split), formats.vqa_annotations(vqa_entries[split], split, desc)
            )
        _dump(tmp / "scenes.json", {"attributes": vocabulary(), "scenes": scenes})
        extra = _write_extra_tasks(tmp, cfg, seed, scenes, image_entries)
        lines = corpus_lines(cfg, seed)
        (tmp / "corpus.txt").write_text("\n".join(lines) + "\n")
        world = {
            "source": "synthetic",
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "config": cfg.model_dump(mode="json"),
            "counts": {
                "images": sizes,
                "questions": {s: len(vqa_entries[s]) for s in SPLITS},
                "captions": {s: sum(len(e.captions) for e in image_entries if e.split == s) for s in SPLITS},
                "corpus_lines": len(lines),
                **extra,
            },
        }
        # Timing goes to the return value only: world.json must be identical across runs of the same seed.
        _dump(tmp / "world.json", world)
    return {**world, "seconds": round(time.perf_counter() - start, 3)}
