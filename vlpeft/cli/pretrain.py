"""CLI commands ``vlpeft pretrain`` and ``vlpeft features`` (see vlpeft/cli/__init__.py for the rules).

``vlpeft pretrain``  tokenizer + tiny ViT / RoBERTa / GPT-2 for the embedded world (``pretrain`` params)
``vlpeft features``  the frozen vision encoder over every image -> feature store (``features`` params)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.common import ParamsOption, SetOption, load, stage_run


@app.command("pretrain")
def pretrain(
    data: Annotated[Path, typer.Option("--data", "-d", help="synthetic data root")] = Path("data/synthetic"),
    out: Annotated[Path, typer.Option("--out", "-o", help="models dir (gets vit/, roberta/, gpt2/)")] = Path(
        "models"
    ),
    metrics: Annotated[Path | None, typer.Option(help="pretraining metrics JSON")] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="train only these parts: vit, roberta, gpt2 (repeatable)"),
    ] = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Pre-train the tiny unimodal backbones of the embedded world and save them in Hugging Face format."""
    from vlpeft.pretrain import PARTS, pretrain_backbones

    cfg = load(params, sets)
    with stage_run(cfg, "pretrain") as log:
        result = pretrain_backbones(cfg, data, out, metrics, parts=only or PARTS)
        log(result, *((metrics,) if metrics else ()))
    seconds = result["seconds"]
    if "vit" in result:
        v = result["vit"]
        typer.echo(
            f"vit: val bitwise accuracy {v['bitwise_accuracy']:.3f} "
            f"(prior {v['prior_bitwise_accuracy']:.3f}), "
            f"count accuracy {v.get('count_accuracy', float('nan')):.3f} in {seconds['vit']:.0f} s"
        )
    if "roberta" in result:
        r = result["roberta"]
        typer.echo(
            f"roberta: val MLM loss {r['val_loss']:.3f}, "
            f"masked-token accuracy {r['val_masked_accuracy']:.3f} "
            f"in {seconds['roberta']:.0f} s"
        )
    if "gpt2" in result:
        g = result["gpt2"]
        typer.echo(
            f"gpt2: val CLM loss {g['val_loss']:.3f}, token accuracy {g['val_token_accuracy']:.3f} "
            f"in {seconds['gpt2']:.0f} s"
        )
    typer.echo(f"wrote {', '.join(str(out / p) for p in PARTS if p in result)}")


@app.command("features")
def features(
    data: Annotated[Path, typer.Option("--data", "-d", help="data root (synthetic or prepared COCO)")] = Path(
        "data/synthetic"
    ),
    encoder: Annotated[
        str | None,
        typer.Option("--encoder", "-e", help="vision encoder hub id or dir (default: model.vision)"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="feature store dir (replaced atomically)")] = Path(
        "features"
    ),
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Run the frozen vision encoder once over every image of every split and write the feature store."""
    import torch

    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table
    from vlpeft.models.vision import VisionEncoder

    cfg = load(params, sets)
    fc = cfg.features
    name = encoder or cfg.model.vision
    enc = VisionEncoder.from_pretrained(name, pooling=fc.pooling)
    enc.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with stage_run(cfg, "features") as log:
        meta = extract_features(
            enc,
            image_table(data),
            out,
            kind=fc.kind,
            dtype=fc.dtype,
            batch_size=fc.batch_size,
            shard_size=fc.shard_size,
            extra_provenance={"data_root": str(data)},
        )
        typer.echo(
            f"wrote {out}: {meta['n_images']} images, {'+'.join(meta['kinds'])} features, "
            f"width {meta['width']}, {meta['dtype']}, {len(meta['shards'])} shard(s)"
        )
        log({"images": meta["n_images"], "width": meta["width"]}, out / "index.json")
