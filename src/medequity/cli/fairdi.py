"""``medequity fairdi``: the FairDi Table 3 ablation from the command line (parses and calls
:func:`medequity.fairdi.ablation.fairdi_ablation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from medequity.cli.common import (
    BatchSizeOpt,
    CacheDirOpt,
    CheckpointOpt,
    DatasetOpt,
    DatasetOptionsOpt,
    DeviceOpt,
    ModelOptionsOpt,
    RootOpt,
    command_group,
    console,
    experiment_spec,
    fail,
    parse_options,
)
from medequity.fairdi.ablation import fairdi_ablation, write_ablation


def ablation_table(frame: pd.DataFrame, title: str = "FairDi ablation (Table 3), test split") -> Table:
    """Table 3's layout: one row per metric, one column per model; PSDs in scientific notation."""
    table = Table(title=title)
    table.add_column("metric")
    for model in frame["model"]:
        table.add_column(str(model), justify="right")
    for column in frame.columns:
        if column in ("model", "stage"):
            continue
        values = frame[column].to_numpy()
        if column == "n_test":
            cells = [str(int(v)) for v in values]
        elif column in ("mean_psd", "max_psd"):
            cells = [f"{v:.2e}" for v in values]
        else:
            cells = [f"{v:.4f}" for v in values]
        table.add_row(column, *cells)
    return table


# --- command line --------------------------------------------------------------------------------------

fairdi_app = command_group("FairDi (fair distillation): teachers per group, one distilled student.")


@fairdi_app.callback()
def _group() -> None:
    """FairDi (Masroor et al.): fair distillation from per-group teachers."""


@fairdi_app.command("ablation")
def ablation_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for ablation.csv and ablation.json.")] = Path("runs/fairdi-ablation"),
    dataset: DatasetOpt = "synthetic",
    root: RootOpt = None,
    option: DatasetOptionsOpt = None,
    attribute: Annotated[str, typer.Option(help="Sensitive attribute: one teacher per group ('sex&age': per intersection).")] = "sex",
    model: Annotated[str, typer.Option(help="Backbone (the paper: resnet18).")] = "resnet18",
    model_option: ModelOptionsOpt = None,
    checkpoint: CheckpointOpt = None,
    usage: Annotated[str, typer.Option(help="ft (the paper) or peft: CutMix needs images.")] = "ft",
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="FairDi parameter key=value (repeat), e.g. tau=2 or step0_epochs=10.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs per stage unless a *_epochs parameter says otherwise (the paper: 30).")] = 30,
    batch_size: BatchSizeOpt = 128,
    seed: Annotated[int, typer.Option(help="Seed (split, initialisation, batches).")] = 0,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
) -> None:
    """Train ERM, ERM+CutMix, FIS and FairDi; report Table 3 (AUCs, gap, ES-AUC, MeanPSD, MaxPSD) on test."""
    fairdi_params = parse_options(param)
    spec = experiment_spec(dataset=dataset, root=root, option=option, model=model, model_option=model_option,
                           checkpoint=checkpoint, attribute=attribute, usage=usage, method="fairdi",
                           method_params=fairdi_params, seed=seed,
                           train={"epochs": epochs, "batch_size": batch_size, "device": device},
                           n_boot=0, n_permutations=0, cache_dir=cache_dir)
    try:
        frame = fairdi_ablation(spec, fairdi_params=fairdi_params, progress=lambda message: console.print(f"[cyan]{message}[/]"))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    # a terminal shows what fits; logs and pipes get the whole table rather than 80 wrapped columns
    (console if console.is_terminal else Console(width=200)).print(ablation_table(frame))
    for kind, path in write_ablation(frame, out, spec=spec, fairdi_params=fairdi_params).items():
        console.print(f"[green]wrote[/] {kind:5s} {path}", soft_wrap=True)
