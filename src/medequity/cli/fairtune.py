"""``medequity fairtune search``: FairTune mask search, retraining and report from the command line.

    medequity fairtune search --dataset synthetic --option preset=cxr-sex-prevalence --attribute sex \\
        --model vit_tiny_patch16_224 --trials 20 --storage sqlite:///fairtune.db --out runs/fairtune

Rerunning with the same ``--storage`` continues the study (``--trials`` is the total); several
processes given the same storage (and different ``--sampler-seed``) search one study together:

    medequity fairtune search ... --storage sqlite:///ft.db --sampler-seed 0 &
    medequity fairtune search ... --storage sqlite:///ft.db --sampler-seed 1 &

A storage that holds a study of other settings (another --epochs, preset, model, ...) is not
silently joined by a second study: the search stops with the differences, unless --new-study says
so; --resume insists on continuing. Trials left RUNNING by a killed process are marked FAILED when
the search is rerun (a message says which) and do not count towards --trials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medequity.cli.common import (
    BatchSizeOpt,
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
    trial_progress,
)

fairtune_app = command_group("FairTune: search which modules to fine-tune (and the LR) for validation fairness.")


@fairtune_app.callback()
def _group() -> None:
    """FairTune (Dutt et al.): PEFT mask search for fairness."""


@fairtune_app.command("search")
def fairtune_command(
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for best.json, history.csv, figures and report.html.")] = Path("runs/fairtune"),
    dataset: DatasetOpt = "synthetic",
    root: RootOpt = None,
    option: DatasetOptionsOpt = None,
    attribute: Annotated[str, typer.Option(
        help="Sensitive attribute whose groups the objective compares ('sex&age': intersections).")] = "sex",
    model: Annotated[str, typer.Option(
        help="Backbone (a timm ViT for the 36-bit space; any timm model for 'groups').")] = "vit_tiny_patch16_224",
    model_option: ModelOptionsOpt = None,
    checkpoint: CheckpointOpt = None,
    space: Annotated[str, typer.Option(help="full (36 bits for ViT-B), attn or ln (12 bits), groups (any model).")] = "full",
    trials: Annotated[int, typer.Option(help="Total finished trials in the study (the paper: 40-100).")] = 40,
    objective: Annotated[str, typer.Option(
        help="val_worst_group_auc, val_auc, val_es_auc, val_neg_loss, or metric:summary (auc:gap).")] = "val_worst_group_auc",
    direction: Annotated[str | None, typer.Option(help="maximize/minimize (default: from the objective).")] = None,
    lr_min: Annotated[float, typer.Option(help="Smallest LR (log-uniform).")] = 1e-5,
    lr_max: Annotated[float, typer.Option(help="Largest LR (log-uniform).")] = 1e-3,
    epochs: Annotated[int, typer.Option(help="Inner-loop epochs per trial (the paper: 30).")] = 30,
    batch_size: BatchSizeOpt = 128,
    subsample: Annotated[str, typer.Option(help="Training fraction for the search: auto (10% when large), none, or 0-1.")] = "auto",
    seed: Annotated[int, typer.Option(help="Experiment seed (initial weights, subsample, training).")] = 0,
    sampler_seed: Annotated[int | None, typer.Option(
        help="TPE sampler seed (default --seed); give each worker of one study its own.")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL, e.g. sqlite:///fairtune.db (resumable, shared).")] = None,
    study_name: Annotated[str | None, typer.Option(help="Study name (default: derived from the settings).")] = None,
    retrain: Annotated[bool, typer.Option(help="Retrain the best mask on all training data and test it.")] = True,
    compare: Annotated[bool, typer.Option(help="Also run full FT, linear readout, attention and LayerNorm tuning.")] = False,
    lr_trials: Annotated[int | None, typer.Option(help="LR trials per baseline (default: --trials).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates for the test metrics.")] = 200,
    device: DeviceOpt = "auto",
    progress: Annotated[bool, typer.Option(help="Show progress after every epoch (a bar; plain lines when piped).")] = True,
    new_study: Annotated[bool, typer.Option(
        "--new-study", help="Start a study with these settings although --storage holds one with other settings.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Only continue the study of these settings in --storage; an error if there is none.")] = False,
) -> None:
    """Search a FairTune mask and LR on validation fairness; retrain, test, compare and report."""
    from medequity.experiment import run_experiment, save_run
    from medequity.fairtune.plots import write_report
    from medequity.fairtune.search import (
        FairTuneConfig,
        FairTuneResult,
        compare_baselines,
        search,
        test_summary,
    )

    if new_study and resume:
        fail("--new-study and --resume exclude each other: give one (or neither: resume the study of these settings)")
    spec = experiment_spec(dataset=dataset, root=root, option=option, model=model, model_option=model_option,
                           checkpoint=checkpoint, attribute=attribute, usage="mask", seed=seed,
                           train={"epochs": epochs, "batch_size": batch_size, "device": device},
                           n_boot=n_boot, n_permutations=n_boot)
    fraction = None if subsample.lower() == "none" else ("auto" if subsample == "auto" else float(subsample))
    config = FairTuneConfig(space=space, trials=trials, objective=objective, direction=direction, lr_range=(lr_min, lr_max),
                            subsample=fraction, seed=seed if sampler_seed is None else sampler_seed, storage=storage, study_name=study_name)
    console.print("preparing the data and the backbone (a synthetic: checkpoint is pre-trained once, then cached)")
    with trial_progress(progress) as on_trial:
        try:
            result = search(spec, config, progress=on_trial, mode="new" if new_study else "resume" if resume else "auto",
                            notice=lambda message: console.print(f"[yellow]note:[/] {message}", soft_wrap=True))
        except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
            fail(str(exc))
    console.print(f"best {result.objective.name} {result.best_value:.4f} with LR {result.best_lr:.3e}, mask {result.mask_bits} "
                  f"({len(result.study.trials)} trials in study {result.study.study_name})")
    comparison = None
    if retrain or compare:
        run = run_experiment(result.final_spec())
        save_run(run, out / "final")
        row = test_summary(run, attribute)
        console.print("test (retrained on all training data): " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
        if compare:
            with trial_progress(progress) as on_trial:
                comparison = compare_baselines(spec, FairTuneResult(result, run), lr_trials=lr_trials, progress=on_trial)
            console.print(comparison.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    paths = write_report(out, result, comparison=comparison)
    for kind, path in paths.items():
        console.print(f"[green]wrote[/] {kind:16s} {path}", soft_wrap=True)
