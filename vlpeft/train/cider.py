"""CIDEr alone (PTB tokenization + pycocoevalcap's Cider), cheap enough to run at every validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vlpeft.errors import ConfigError


def cider_score(references: Mapping[int, Sequence[str]], predictions: Mapping[int, str]) -> float:
    """Corpus CIDEr of ``predictions`` against ``references`` (pycocoevalcap scale; needs Java).

    Same tokenizer and scorer as ``vlpeft.eval.score_captions``, without METEOR's JVM start-up.
    """
    import shutil

    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if shutil.which("java") is None:
        raise ConfigError(
            "java not found on PATH: validation CIDEr needs it (PTBTokenizer); install a Java runtime "
            "or set caption.val_cider_images: 0"
        )
    ids = list(references)
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
    res = tok.tokenize({i: [{"caption": predictions[i]}] for i in ids})
    score, _ = Cider().compute_score(gts, res)
    return float(score)
