"""``medequity validate``: check each seed method's paper claim on synthetic data with known bias.

    medequity validate fairdi --quick              # ~20 s; the full version takes minutes
    medequity validate fairtune --part fig1
    medequity validate fair-diagnosis --preset cxr-sex-shortcut --variant image --variant jsd
    medequity validate segmentation --quick        # segmentation mitigation vs ERM (full: a few minutes)

Each writes validation.json, validation.csv and validation.png per check under ``--out`` and exits
with status 1 when a claim fails (so the commands can gate a CI job or a benchmark run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medequity.cli.common import command_group, console, fail, parse_options

validate_app = command_group("Validate the seed methods on synthetic data whose bias mechanism is known.")

QUICK_HELP = "The test suite's small version (seconds, not minutes; fewer seeds)."
OUT_HELP = "Folder for validation.json/csv/png (one subfolder per check)."


@validate_app.callback()
def _group() -> None:
    """Seeded experiments that check FairDi, FairTune and Fair Diagnosis against their papers, and the
    segmentation mitigation methods against ERM."""


def _threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _report(results, out: Path) -> None:
    """Print each result's claims as a table, save it, exit 1 if any claim failed."""
    from rich.table import Table

    all_passed = True
    for name, result in results:
        table = Table(title=f"{result.method} on {result.preset} ({result.seconds:.0f} s)")
        for column in ("", "claim", "observed", "bound", "statement"):
            table.add_column(column, justify="right" if column in ("observed", "bound") else "left")
        for claim in result.claims:
            verdict = "[green]PASS[/]" if claim.passed else "[bold red]FAIL[/]"
            table.add_row(verdict, claim.name, f"{claim.observed:.4f}", f"{claim.op} {claim.bound:.4f}", claim.statement)
        console.print(table)
        paths = result.save(out / name)
        console.print(f"  written: {', '.join(str(p) for p in paths.values())}")
        all_passed &= result.passed
    console.print("[green]all claims hold[/]" if all_passed else "[bold red]some claims fail[/] (see the tables above)")
    if not all_passed:
        raise typer.Exit(code=1)


def _size(quick: bool) -> str:
    return "quick" if quick else "full"


@validate_app.command("fairdi")
def fairdi_command(
    out: Annotated[Path, typer.Option("--out", "-o", help=OUT_HELP)] = Path("runs/validate"),
    quick: Annotated[bool, typer.Option("--quick", help=QUICK_HELP)] = False,
    preset: Annotated[str, typer.Option(help="Synthetic preset (representation or difficulty bias).")] = "derm-skin-tone-representation",
    attribute: Annotated[str | None, typer.Option(help="Sensitive attribute (default: the preset's).")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Seed (repeat); claims use the mean over seeds.")] = None,
    n: Annotated[int | None, typer.Option(help="Patients generated.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per stage.")] = None,
    image_size: Annotated[int, typer.Option(help="Image side in pixels (CutMix hurts small lesions at 32).")] = 32,
    tol: Annotated[float, typer.Option(help="AUC tolerance of both claims.")] = 0.02,
    param: Annotated[list[str] | None, typer.Option("--param", help="FairDi parameter key=value (repeat).")] = None,
    table3: Annotated[bool, typer.Option("--table3", help="Also train the ERM, ERM+CutMix and FIS rows of Table 3.")] = False,
    threads: Annotated[int, typer.Option(help="torch threads (1 is fastest on a shared CPU).")] = 1,
) -> None:
    """FairDi §4.4: the student keeps the step-0 worst group and closes the teachers' gap."""
    from medequity.fairdi.validation import validate_fairdi

    _threads(threads)
    try:
        result = validate_fairdi(preset, attribute, size=_size(quick), seeds=seed or None, n=n, epochs=epochs, image_size=image_size,
                                 tol=tol, fairdi_params=parse_options(param), table3=table3, progress=console.log)
    except (KeyError, ValueError) as error:
        fail(str(error))
    _report([("fairdi", result)], out)


@validate_app.command("fairtune")
def fairtune_command(
    out: Annotated[Path, typer.Option("--out", "-o", help=OUT_HELP)] = Path("runs/validate"),
    quick: Annotated[bool, typer.Option("--quick", help=QUICK_HELP)] = False,
    part: Annotated[str, typer.Option(help="fig1 (train gap ~0, test gap not), mask (search vs full FT) or all.")] = "all",
    model: Annotated[str, typer.Option(help="Backbone of the mask check: small_cnn (groups space) or vit (36 bits).")] = "small_cnn",
    trials: Annotated[int | None, typer.Option(help="Trials for the mask search and for full FT's LR each.")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Fig. 1 seed (repeat); the mask check uses the first.")] = None,
    tol: Annotated[float, typer.Option(help="Tolerance of the mask claim (validation worst-group AUC).")] = 0.0,
    threads: Annotated[int, typer.Option(help="torch threads (1 is fastest on a shared CPU).")] = 1,
) -> None:
    """FairTune Fig. 1 and §4.1 on a small task where full fine-tuning overfits."""
    from medequity.fairtune.validation import validate_fairtune_fig1, validate_fairtune_mask

    if part not in ("fig1", "mask", "all"):
        fail(f"--part must be fig1, mask or all; got {part!r}")
    _threads(threads)
    results = []
    try:
        if part in ("fig1", "all"):
            results.append(("fairtune_fig1", validate_fairtune_fig1(size=_size(quick), seeds=seed or None, progress=console.log)))
        if part in ("mask", "all"):
            results.append(("fairtune_mask", validate_fairtune_mask(size=_size(quick), seed=(seed or [0])[0], trials=trials,
                                                                    model=model, tol=tol, progress=console.log)))
    except (KeyError, ValueError) as error:
        fail(str(error))
    _report(results, out)


@validate_app.command("fair-diagnosis")
def fair_diagnosis_command(
    out: Annotated[Path, typer.Option("--out", "-o", help=OUT_HELP)] = Path("runs/validate"),
    quick: Annotated[bool, typer.Option("--quick", help=QUICK_HELP)] = False,
    preset: Annotated[list[str] | None, typer.Option(
        "--preset",
        help="Preset (repeat); default: cxr-sex-shortcut, cxr-sex-prevalence and cxr-sex-shortcut-prevalence (both paths).")] = None,
    variant: Annotated[list[str] | None, typer.Option(
        "--variant",
        help="Also train Fair Diagnosis with: image (image-space discriminator), jsd (JSD pre-training).")] = None,
    no_baselines: Annotated[bool, typer.Option("--no-baselines", help="Skip AD and FAAP (vanilla and Fair Diagnosis only).")] = False,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    lr_generator: Annotated[float, typer.Option(help="Generator LR (the paper: 1e-4; see the docs for why 5e-3).")] = 5e-3,
    lr_discriminator: Annotated[float, typer.Option(help="Discriminator LR (the paper: 1e-4).")] = 1e-3,
    min_adf_drop: Annotated[float, typer.Option(help="Direct path: the fraction ADF must fall by.")] = 0.4,
    acc_tolerance: Annotated[float, typer.Option(help="Direct path: accuracy points Fair Diagnosis may lose.")] = 3.0,
    threads: Annotated[int, typer.Option(help="torch threads (1 is fastest on a shared CPU).")] = 1,
) -> None:
    """Fair Diagnosis: ADF falls under a shortcut; ADF ≈ 0 and DP ≠ 0 under a prevalence difference; with both, DP stays."""
    from medequity.fair_diagnosis.validation import PRESETS, validate_fair_diagnosis

    _threads(threads)
    results = []
    try:
        for name in preset or PRESETS:
            results.append((f"fair_diagnosis-{name}", validate_fair_diagnosis(
                name, size=_size(quick), seed=seed, baselines=not no_baselines, variants=tuple(variant or ()),
                gan_params={"lr_generator": lr_generator, "lr_discriminator": lr_discriminator},
                min_adf_drop=min_adf_drop, acc_tolerance=acc_tolerance, progress=console.log)))
    except (KeyError, ValueError) as error:
        fail(str(error))
    _report(results, out)


@validate_app.command("segmentation")
def segmentation_command(
    out: Annotated[Path, typer.Option("--out", "-o", help=OUT_HELP)] = Path("runs/validate"),
    quick: Annotated[bool, typer.Option("--quick", help=QUICK_HELP)] = False,
    preset: Annotated[str, typer.Option(help="Synthetic segmentation preset with a group-specific difficulty.")] = "seg-derm-scale",
    method: Annotated[list[str] | None, typer.Option(
        "--method", help="Method to compare with ERM (repeat); default: resampling, groupdro, febs, ind, fis, fairdi_seg, "
                         "seg_thresholds.")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Training seed (repeat); effects use the seed means.")] = None,
    lr: Annotated[list[float] | None, typer.Option("--lr", help="Learning rate of the tuning grid (repeat); every method gets "
                                                               "the same grid.")] = None,
    n: Annotated[int | None, typer.Option(help="Images generated.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per run (per stage for FairDi).")] = None,
    min_gain: Annotated[float, typer.Option(help="Dice a model must gain over an image-blind predictor.")] = 0.03,
    threads: Annotated[int, typer.Option(help="torch threads (1 is fastest on a shared CPU).")] = 1,
) -> None:
    """Each segmentation method vs ERM on a known bias: the affected group's Dice and the gap Δ, with CIs."""
    from medequity.validation.segmentation import DEFAULT_METHODS, SIZES, effects_lines, validate_segmentation

    size = _size(quick)
    budget = SIZES[size]
    methods = tuple(method or DEFAULT_METHODS)
    runs = (len(methods) + 1) * len(seed or budget["seeds"]) * len(lr or budget["lrs"])
    console.print(f"segmentation validation on {preset}: {runs} training runs, expected "
                  f"{'under a minute' if quick else 'a few minutes'} on 2 CPU cores", highlight=False)
    _threads(threads)
    try:
        result = validate_segmentation(preset, methods=methods, size=size, n=n, epochs=epochs, seeds=seed or None,
                                       lrs=lr or None, min_gain=min_gain,
                                       progress=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
    except (KeyError, ValueError) as error:
        fail(str(error))
    console.print("effects against ERM (95% paired-bootstrap CIs over test samples):", highlight=False)
    for line in effects_lines(result):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    _report([("segmentation", result)], out)
