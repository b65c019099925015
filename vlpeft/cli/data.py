"""CLI commands of the `data` group (see vlpeft/cli/__init__.py for the rules).

``vlpeft data synth``     generate the embedded shapes world (sizes from the ``world`` params section)
``vlpeft data download``  fetch and verify COCO 2014 images, the Karpathy split file and VQAv2
``vlpeft data prepare``   convert downloaded COCO + Karpathy + VQAv2, or a user's own VQA/caption
                          data, into the same layout as ``synth``
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.choices import DownloadGroup, LinkMode, PrepareSource
from vlpeft.cli.common import ParamsOption, SetOption, load

data_app = typer.Typer(help="Datasets: the synthetic world, real COCO/VQAv2 download and preparation.")
app.add_typer(data_app, name="data")


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="output root (replaced atomically)")] = Path(
        "data/synthetic"
    ),
    params: ParamsOption = None,
    sets: SetOption = None,
    seed: Annotated[int | None, typer.Option(help="world seed (default: params seed)")] = None,
) -> None:
    """Generate the synthetic world (images, Karpathy split, COCO captions, VQAv2 files, text corpus)."""
    from vlpeft import stages

    world = stages.synth(load(params, sets), out=out, seed=seed)
    counts = world["counts"]
    typer.echo(
        f"wrote {out}: images {counts['images']}, questions {counts['questions']}, "
        f"{counts['corpus_lines']} corpus lines in {world['seconds']:.1f} s"
    )


@data_app.command("download")
def download(
    what: Annotated[DownloadGroup, typer.Option(help="what to fetch")] = "all",
    out: Annotated[Path, typer.Option("--out", "-o", help="raw download dir")] = Path("data/raw"),
    registry: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="registry JSON (default: the packaged one)"),
    ] = None,
    extract: Annotated[
        bool, typer.Option("--extract/--no-extract", help="unpack archives after verifying them")
    ] = True,
    retries: Annotated[int, typer.Option(help="automatic resume attempts after a broken transfer")] = 3,
) -> None:
    """Download (resumable), verify and unpack the real datasets into OUT."""
    from vlpeft.data.download import download_group, load_registry

    entries = load_registry(registry)
    for path in download_group(entries, what, out, extract=extract, retries=retries):
        typer.echo(f"ready: {path}")


@data_app.command("prepare")
def prepare(
    raw: Annotated[
        Path,
        typer.Option(
            exists=True, file_okay=False, help="dir with the downloads (searched for the COCO/VQA files)"
        ),
    ] = Path("data/raw"),
    out: Annotated[Path, typer.Option("--out", "-o", help="output root (replaced atomically)")] = Path(
        "data/coco"
    ),
    source: Annotated[
        PrepareSource,
        typer.Option(
            help="coco: COCO 2014 + Karpathy + VQAv2; own: your images/ + VQA and caption JSON (see the "
            "README); gqa, nlvr: added into OUT"
        ),
    ] = "coco",
    link: Annotated[LinkMode, typer.Option(help="how images enter OUT")] = "symlink",
) -> None:
    """Convert raw COCO 2014 + Karpathy split + VQAv2, or your own data, into the layout the loaders read."""
    from vlpeft.data.prepare import prepare_coco
    from vlpeft.data.userdata import prepare_own

    if source in ("gqa", "nlvr"):
        from vlpeft.data.gqa import prepare_gqa
        from vlpeft.data.nlvr import prepare_nlvr

        counts = {"gqa": prepare_gqa, "nlvr": prepare_nlvr}[source](raw, out)
        typer.echo(f"wrote {out / source}: questions {counts}")
        return
    info = (prepare_own if source == "own" else prepare_coco)(raw, out, link=link)
    typer.echo(f"wrote {out}: images {info['counts']['images']}, questions {info['counts']['questions']}")
