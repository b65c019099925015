"""CLI commands ``vlpeft pretrain`` and ``vlpeft features`` (see vlpeft/cli/__init__.py for the rules).

``vlpeft pretrain``  tokenizer + tiny ViT / RoBERTa / GPT-2 for the embedded world (``pretrain`` params)
``vlpeft features``  the frozen vision encoder over every image -> feature store (``features`` params)
``vlpeft features-import``  VL-Adapter's released CLIP h5 features -> feature store
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.choices import H5Dtype, H5Pool, PretrainPart
from vlpeft.cli.common import ParamsOption, SetOption, load


@app.command("pretrain")
def pretrain(
    data: Annotated[
        Path, typer.Option("--data", "-d", exists=True, file_okay=False, help="synthetic data root")
    ] = Path("data/synthetic"),
    out: Annotated[Path, typer.Option("--out", "-o", help="models dir (gets vit/, roberta/, gpt2/)")] = Path(
        "models"
    ),
    metrics: Annotated[
        Path | None, typer.Option(help="pretraining metrics JSON (every part, every block)")
    ] = None,
    headline: Annotated[
        Path | None, typer.Option(help="flat pretraining health figures JSON (the DVC metrics file)")
    ] = None,
    only: Annotated[
        list[PretrainPart] | None,
        typer.Option("--only", help="train only these parts (repeatable)"),
    ] = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Pre-train the tiny unimodal backbones of the embedded world and save them in Hugging Face format."""
    from vlpeft import stages
    from vlpeft.pretrain.run import ALL_PARTS

    result = stages.pretrain(
        load(params, sets),
        data=data,
        out=out,
        metrics=metrics,
        headline=headline,
        parts=None if only is None else [part.value for part in only],
    )
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
    if "bart" in result:
        b = result["bart"]
        typer.echo(
            f"bart: val denoising loss {b['val_loss']:.3f}, token accuracy {b['val_token_accuracy']:.3f} "
            f"in {seconds['bart']:.0f} s"
        )
    typer.echo(f"wrote {', '.join(str(out / p) for p in ALL_PARTS if p in result)}")


@app.command("features")
def features(
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", exists=True, file_okay=False, help="data root (synthetic or prepared COCO)"
        ),
    ] = Path("data/synthetic"),
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
    from vlpeft import stages

    meta = stages.features(load(params, sets), data=data, out=out, encoder=encoder)
    typer.echo(
        f"wrote {out}: {meta['n_images']} images, {'+'.join(meta['kinds'])} features, "
        f"width {meta['width']}, {meta['dtype']}, {len(meta['shards'])} shard(s)"
    )


@app.command("features-import")
def features_import(
    h5_dir: Annotated[
        list[Path],
        typer.Option(
            "--h5-dir", exists=True, file_okay=False, help="dir of VL-Adapter <img_id>.h5 files (repeatable)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="feature store dir (replaced atomically)")] = Path(
        "features"
    ),
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", exists=True, file_okay=False, help="prepared data root: import exactly its images"
        ),
    ] = None,
    pool: Annotated[H5Pool, typer.Option(help="max6x6: 36 tokens, as VL-Adapter; none: all 49")] = "max6x6",
    dtype: Annotated[H5Dtype, typer.Option(help="stored dtype")] = "float16",
    shard_size: Annotated[int, typer.Option(help="images per safetensors shard")] = 4096,
    encoder: Annotated[
        str, typer.Option(help="the encoder name the store records (train needs model.vision = it)")
    ] = "RN101",
) -> None:
    """Import VL-Adapter's released CLIP grid features (49 x C per image) into a feature store."""
    from vlpeft.data.vladapter_features import import_vladapter_features

    meta = import_vladapter_features(
        h5_dir, out, data_root=data, pool=pool, dtype=dtype, shard_size=shard_size, encoder=encoder
    )
    skipped = meta["provenance"]["skipped_files"]
    typer.echo(
        f"wrote {out}: {meta['n_images']} images, tokens {meta['num_tokens']['tokens']} x {meta['width']}, "
        f"{meta['dtype']}, {len(meta['shards'])} shard(s)"
        + (f"; {skipped} h5 file(s) not used" if skipped else "")
    )
