"""``medequity models``: the foundation-model zoo, checking a downloaded file, converting OpenAI's CLIP.

    medequity models list
    medequity models check dinov2-vitb14 ~/weights/dinov2_vitb14_pretrain.pth
    medequity models check biomedclip ~/weights/BiomedCLIP --option tokenizer=~/weights/BiomedCLIP
    medequity models convert-openai ~/weights/ViT-B-16.pt ~/weights/clip-vit-b16.safetensors
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from medequity.cli.common import ModelOptionsOpt, command_group, console, fail, parse_options

models_app = command_group("The foundation-model zoo: list it, check a weights file, convert OpenAI's CLIP archives.")


@models_app.command("list")
def list_command() -> None:
    """Each zoo model: architecture, expected file, feature, preprocessing, zero-shot, licence."""
    from rich.table import Table

    from medequity.models.zoo import ZOO

    table = Table(show_lines=True)
    rows = [entry.row() for entry in ZOO.values()]
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    console.print("Use a model as `model: <name>` with `model_options: {checkpoint: <file or folder>}` in an experiment "
                  "spec, `models: [{name: <name>, options: {checkpoint: <file or folder>}}]` in a bench spec, or "
                  "`medequity train --model <name> --checkpoint <path>`; `medequity models check <name> <path>` "
                  "verifies a file first. Zero-shot prompts come from the dataset (usage_params class_names/"
                  "templates/prompts override them).", soft_wrap=True)


@models_app.command("check")
def check_command(
    name: Annotated[str, typer.Argument(help="Zoo model name (see `medequity models list`).")],
    path: Annotated[Path, typer.Argument(help="The weights file or Hugging Face folder as downloaded.")],
    option: ModelOptionsOpt = None,
    batch: Annotated[int, typer.Option(help="Synthetic batch size for the feature check.")] = 2,
) -> None:
    """Load PATH into NAME; print parameters, unused/missing keys and feature statistics on a synthetic batch."""
    import torch

    from medequity.models import CheckpointError, create_backbone
    from medequity.models.zoo import ZOO

    if name not in ZOO:
        fail(f"{name!r} is not a zoo model; zoo models: {sorted(ZOO)}")
    options = parse_options(option)
    start = time.perf_counter()
    try:
        backbone = create_backbone(name, checkpoint=path, **options)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in backbone.module.parameters())
    console.print(f"[bold]{name}[/] loaded from {path} in {seconds:.1f} s: {n_params / 1e6:.2f} M parameters", soft_wrap=True)
    unexpected = backbone.config.get("unexpected_keys", [])
    console.print(f"unused keys of the file (allowed): {len(unexpected)}{', e.g. ' + ', '.join(unexpected[:5]) if unexpected else ''}",
                  soft_wrap=True)
    console.print("missing keys: 0 (a missing weight is an error)")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, backbone.input_size, backbone.input_size, generator=generator)
    with torch.no_grad():
        features = backbone.module.eval()(images).float()
    finite = bool(torch.isfinite(features).all())
    console.print(f"features on a synthetic {tuple(images.shape)} batch: shape {tuple(features.shape)}, mean "
                  f"{features.mean():.4g}, std {features.std():.4g}, min {features.min():.4g}, max {features.max():.4g}, "
                  f"finite: {finite}")
    text = getattr(backbone.module, "encode_text", None) is not None
    tokenizer = getattr(backbone.module, "tokenizer", None) is not None
    console.print(f"zero-shot: {'ready' if text and tokenizer else 'needs tokenizer=<folder>' if text else 'no text tower'}")
    if not finite or tuple(features.shape) != (batch, backbone.feature_dim):
        fail(f"features are {'not finite' if not finite else f'of shape {tuple(features.shape)}'}; expected "
             f"({batch}, {backbone.feature_dim}) finite values")


@models_app.command("convert-openai")
def convert_openai_command(
    src: Annotated[Path, typer.Argument(help="OpenAI's CLIP .pt (a TorchScript archive), e.g. ViT-B-16.pt.")],
    dst: Annotated[Path, typer.Argument(help="The plain weights to write (.safetensors).")],
    trust: Annotated[bool, typer.Option(help="Convert even if the SHA-256 is not one OpenAI publishes.")] = False,
) -> None:
    """Convert OpenAI's TorchScript CLIP archive once into safetensors (the loader never reads TorchScript)."""
    from medequity.models.checkpoint import CheckpointError, convert_openai_checkpoint

    try:
        info = convert_openai_checkpoint(src, dst, trust=trust)
    except CheckpointError as exc:
        fail(str(exc))
    model = info["model"] or "unverified (--trust)"
    console.print(f"wrote {info['path']}: {info['n_tensors']} tensors, OpenAI model {model}, sha256 {str(info['sha256'])[:16]}…",
                  soft_wrap=True)
