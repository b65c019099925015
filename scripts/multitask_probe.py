"""What the stored features allow: linear probes for the multi-task world's three short-answer tasks.

Run from ``multitask/`` after ``dvc repro features`` (``python ../scripts/multitask_probe.py``). For each of
VQA, GQA and NLVR2, two logistic regressions are fitted on the training split and scored on the test split
with the task's own scorer (VQA official accuracy, GQA exact match, NLVR2 accuracy):

- ``text only``: bag of words of the question / statement (the language prior a blind model can reach);
- ``text x image``: the same words, the pooled feature of each image, and their products (word ⊗ feature),
  so that a linear model can express "this question asks for that property of the image".

The second minus the first is how much a simple learner gains from the image on these features: the ceiling
the trained models are compared with is at least that. Prints one Markdown table (no files written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _bow(texts: list[str], vocab: dict[str, int]) -> np.ndarray:
    out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.split():
            if w in vocab:
                out[i, vocab[w]] = 1.0
    return out


def _design(texts: list[str], feats: list[np.ndarray], vocab: dict[str, int], image: bool) -> np.ndarray:
    bow = _bow(texts, vocab)
    if not image:
        return bow
    parts = [bow, *feats]
    parts += [(bow[:, :, None] * f[:, None, :]).reshape(len(texts), -1) for f in feats]
    return np.concatenate(parts, axis=1)


def _fit_predict(x_train, y_train, x_test, c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(C=c, max_iter=300)
    model.fit(scaler.transform(x_train), y_train)
    return model.predict(scaler.transform(x_test))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--features", type=Path, default=Path("features"))
    parser.add_argument("--max-train", type=int, default=1200, help="training rows per task")
    parser.add_argument("--c", type=float, default=0.05, help="inverse L2 strength of the regressions")
    args = parser.parse_args()

    from vlpeft.data.features import FeatureStore
    from vlpeft.data.gqa import load_gqa
    from vlpeft.data.nlvr import load_image_names, load_nlvr
    from vlpeft.data.vqa import load_vqa
    from vlpeft.eval import answer_accuracy

    store = FeatureStore(args.features)

    def feats(ids: list[int]) -> np.ndarray:
        return store.get(ids, "pooled").reshape(len(ids), -1).numpy()

    names = load_image_names(args.data)
    rng = np.random.default_rng(0)

    def cap(rows: list) -> list:
        keep = sorted(rng.permutation(len(rows))[: args.max_train]) if len(rows) > args.max_train else None
        return rows if keep is None else [rows[i] for i in keep]

    tasks = {
        "VQA": (cap(load_vqa(args.data, "train")), load_vqa(args.data, "test")),
        "GQA": (cap(load_gqa(args.data, "train")), load_gqa(args.data, "testdev")),
        "NLVR2": (cap(load_nlvr(args.data, "train")), load_nlvr(args.data, "test")),
    }
    lines = ["| task | train rows | text only | text x image | gain |", "|---|---|---|---|---|"]
    for task, (train, test) in tasks.items():
        if task == "NLVR2":
            texts = ([r.sentence for r in train], [r.sentence for r in test])
            images = [
                [feats([names[getattr(r, side)]["id"] for r in rows]) for side in ("img0", "img1")]
                for rows in (train, test)
            ]
            y_train = [str(r.label) for r in train]
        else:
            texts = ([r.question for r in train], [r.question for r in test])
            ids = (lambda r: r.image_id) if task == "VQA" else (lambda r: int(r.img_id))
            images = [[feats([ids(r) for r in rows])] for rows in (train, test)]
            # VQA: the most frequent annotator answer as the class (what a classifier head would learn)
            y_train = [r.multiple_choice_answer if task == "VQA" else r.answer for r in train]
        vocab = {w: i for i, w in enumerate(sorted({w for t in texts[0] for w in t.split()}))}
        scores = []
        for image in (False, True):
            x_tr = _design(texts[0], images[0], vocab, image)
            x_te = _design(texts[1], images[1], vocab, image)
            pred = _fit_predict(x_tr, y_train, x_te, args.c)
            if task == "VQA":
                right = [answer_accuracy(list(r.answers), p) for r, p in zip(test, pred, strict=True)]
                score = 100 * np.mean(right)
            elif task == "GQA":
                score = 100 * np.mean([r.answer == p for r, p in zip(test, pred, strict=True)])
            else:
                score = 100 * np.mean([str(r.label) == p for r, p in zip(test, pred, strict=True)])
            scores.append(float(score))
        lines.append(
            f"| {task} | {len(train)} | {scores[0]:.1f} | {scores[1]:.1f} | {scores[1] - scores[0]:+.1f} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
