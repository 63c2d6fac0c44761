"""FairTune on a small synthetic task where full fine-tuning overfits (FairTune Fig. 1, §4.1).

Two checks, each a :class:`ValidationResult`:

* :func:`validate_fairtune_fig1` — Fig. 1: after fully fine-tuning, the *final* model fits every
  group of the training set (``train_gap``: train AUC gap < ``max_train_gap``, 0.02) while its test
  gap is not ~0 (``test_gap``: test gap > train gap + ``margin``, 0.05), on every seed. Data and
  model: ``fundus-race-difficulty`` (32 px, 1000 patients split 30/20/50 so test groups have ~250
  images), ``small_cnn`` from our unbiased synthetic pre-training (``synthetic:fundus``), LR 1e-2,
  15 epochs, no early stopping, ``selection="last"``.
* :func:`validate_fairtune_mask` — §4.1: on the same overfitting task, the mask FairTune chooses
  (one bit per conv block, the "groups" space, + LR) reaches a validation worst-group AUC ≥ full
  fine-tuning's − ``tol``, both LR-tuned with the same objective, trial budget, TPE sampler and
  successive-halving pruner ("all competitors optimise their learning rates based on L_fair").
  ``model="vit"`` runs the same check on a 4-block ViT (embed 64, 8-px patches, same synthetic
  pre-training) in the 36-bit space (12 bits for 4 blocks).

Measured (``size="full"``, one CPU thread): Fig. 1 on seeds 0/1/2 — final-epoch train AUC 1.000 in
every group (gap 0.000), test gap 0.137 / 0.087 / 0.096 (PASS, 13 s). Mask search (16 trials each,
35 s): FairTune tunes only the last conv block (mask 0001, LR 9e-4), validation worst-group AUC
0.702 vs LR-tuned full FT 0.678 (PASS). With ``model="vit"`` on the same task the claim does not
hold: 16 trials each, FairTune 0.542 vs full FT 0.605 (4 of 16 mask trials completed, 12 pruned);
40 trials each, 0.607 vs 0.614 (FAIL by 0.007). A ViT this small (4 blocks, embed 64, 32 px) does
not overfit 300 images, so the premise — full fine-tuning overfits — is missing, and a 12-bit
mask + LR search needs more trials than a 1-D LR search at equal budget (the paper used 40–100
on ViT-B). The claim is therefore checked on the CNN, where full fine-tuning does overfit (Fig. 1).
An earlier ViT run on ``derm-skin-tone-representation`` with 400 images (0.694 vs 0.389) judged
worst-group AUC on ~6 minority validation images — noise, not evidence.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import replace

import pandas as pd

from medequity.validation.result import Claim, ValidationResult

FIG1_PRESET = "fundus-race-difficulty"
SIZES = {
    "full": {"seeds": (0, 1, 2), "epochs": 15, "trials": 16},
    "quick": {"seeds": (0,), "epochs": 15, "trials": 10},
}
TINY_VIT = {"input_size": 32, "depth": 4, "embed_dim": 64, "num_heads": 2, "patch_size": 8}
SOURCE_FIG1 = "FairTune §1, Fig. 1"
SOURCE_MASK = "FairTune §4.1, Table 1"


def _sizes(size: str, **explicit) -> dict:
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}; got {size!r}")
    return {**SIZES[size], **{k: v for k, v in explicit.items() if v is not None}}


def overfit_spec(seed: int, *, epochs: int = 15, n: int = 1000, preset: str = FIG1_PRESET, attribute: str = "race",
                 lr: float = 1e-2, cache_dir=None):
    """small_cnn fully fine-tuned on ~300 training images, no early stop, final epoch kept."""
    from medequity.experiment import ExperimentSpec

    modality = preset.split("-", 1)[0]
    return ExperimentSpec(
        dataset="synthetic", dataset_options={"preset": preset, "n": n, "seed": seed, "image_size": 32,
                                              "split_fractions": {"train": 0.3, "val": 0.2, "test": 0.5}},
        attribute=attribute, model="small_cnn", model_options={"input_size": 32, "checkpoint": f"synthetic:{modality}"},
        cache_dir=cache_dir, usage="ft", seed=seed, eval_attributes=[attribute], n_boot=0, n_permutations=0,
        train={"epochs": epochs, "batch_size": 32, "patience": None, "device": "cpu", "lr": lr, "selection": "last"})


def validate_fairtune_fig1(*, size: str = "full", seeds=None, epochs: int | None = None, preset: str = FIG1_PRESET,
                           attribute: str = "race", max_train_gap: float = 0.02, margin: float = 0.05, cache_dir=None,
                           progress: Callable[[str], None] | None = None) -> ValidationResult:
    """Fig. 1 on each seed: train and test per-group AUCs of the final fully fine-tuned model."""
    from medequity.experiment import run_experiment
    from medequity.fairtune.search import split_group_aucs

    chosen = _sizes(size, seeds=seeds, epochs=epochs)
    start = time.perf_counter()
    rows = []
    for seed in chosen["seeds"]:
        if progress is not None:
            progress(f"Fig. 1: full fine-tuning, seed {seed}")
        spec = overfit_spec(seed, epochs=chosen["epochs"], preset=preset, attribute=attribute, cache_dir=cache_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = run_experiment(spec)
            for split in ("train", "test"):
                rows.append({"seed": seed, "split": split, "epoch": run.best_epoch, **split_group_aucs(run, split)})
    table = pd.DataFrame(rows)
    by_split = {split: table[table.split == split].set_index("seed") for split in ("train", "test")}
    # Every seed must show the pattern: the claims take the least favourable seed.
    worst_train_gap = float(by_split["train"]["auc_gap"].max())
    excess = by_split["test"]["auc_gap"] - by_split["train"]["auc_gap"]
    claims = [
        Claim("train_gap", "the final fully fine-tuned model's training-set AUC gap is ~0 (largest over seeds)",
              worst_train_gap, "<=", max_train_gap, SOURCE_FIG1),
        Claim("test_gap", f"its test AUC gap exceeds its training gap by more than {margin} (smallest excess over seeds)",
              float(excess.min()), ">=", margin, SOURCE_FIG1),
    ]
    settings = {"preset": preset, "attribute": attribute, "size": size, **chosen, "seeds": list(chosen["seeds"]),
                "model": "small_cnn", "checkpoint": spec.model_options["checkpoint"], "lr": 1e-2,
                "n_train": int(len(run.data["train"])), "max_train_gap": max_train_gap, "margin": margin}
    return ValidationResult("fairtune_fig1", preset, claims, table, settings, time.perf_counter() - start,
                            notes=["table: train and test AUCs of the final epoch, one row per (seed, split)"])


def validate_fairtune_mask(*, size: str = "full", seed: int = 0, trials: int | None = None, epochs: int | None = None,
                           model: str = "small_cnn", preset: str | None = None, attribute: str | None = None,
                           tol: float = 0.0, cache_dir=None, trial_progress: Callable[[int, int, str], None] | None = None,
                           progress: Callable[[str], None] | None = None) -> ValidationResult:
    """FairTune's searched mask vs full fine-tuning, both LR-tuned on validation worst-group AUC."""
    from medequity.fairtune import FairTuneConfig, Objective, SearchSetup, search, tune_lr

    if model not in ("small_cnn", "vit"):
        raise ValueError(f"model must be 'small_cnn' or 'vit'; got {model!r}")
    chosen = _sizes(size, trials=trials, epochs=epochs)
    # Both backbones on the same overfitting task (~300 training images, 200 for validation).
    preset, attribute = preset or FIG1_PRESET, attribute or "race"
    spec = replace(overfit_spec(seed, epochs=chosen["epochs"], preset=preset, attribute=attribute, cache_dir=cache_dir),
                   usage="mask")
    spec = replace(spec, train={k: v for k, v in spec.train.items() if k not in ("lr", "selection")})
    space = "groups"
    if model == "vit":
        spec = replace(spec, model="vit_tiny_patch16_224", model_options={**TINY_VIT, **spec.model_options})
        space = "full"
    config = FairTuneConfig(space=space, trials=chosen["trials"], subsample=None, seed=seed)
    objective = Objective.parse(config.objective)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = SearchSetup(spec, objective, subsample=None)
        if progress is not None:
            progress(f"tuning full fine-tuning's LR ({chosen['trials']} trials)")
        ft_lr, ft_study = tune_lr(spec, "ft", config, chosen["trials"], setup=setup, progress=trial_progress)
        if progress is not None:
            progress(f"FairTune search over the {space!r} space ({chosen['trials']} trials)")
        result = search(spec, config, setup=setup, progress=trial_progress)
    history = result.history
    table = pd.DataFrame([
        {"model": "Full FT", "mask": "all", "lr": ft_lr, "val_worst_group_auc": float(ft_study.best_value)},
        {"model": "FairTune", "mask": result.mask_bits, "lr": result.best_lr, "val_worst_group_auc": float(result.best_value)},
    ])
    claims = [Claim("mask_vs_full_ft",
                    "the chosen mask's validation worst-group AUC is at least full fine-tuning's (same budget), within tol",
                    float(result.best_value), ">=", float(ft_study.best_value) - tol, SOURCE_MASK)]
    settings = {"preset": preset, "attribute": attribute, "size": size, "seed": seed, **chosen, "model": spec.model,
                "model_options": spec.model_options, "space": space, "searched_groups": list(result.space.searched),
                "tol": tol, "n_train": result.n_train_full,
                "trials_complete": int((history.state == "COMPLETE").sum()), "trials_pruned": int((history.state == "PRUNED").sum()),
                "epochs_run": int(history.epochs_run.sum()), "epochs_budget": int(chosen["epochs"] * len(history))}
    return ValidationResult("fairtune_mask", preset, claims, table, settings, time.perf_counter() - start,
                            notes=["both LRs searched in FairTune's range with TPE + successive halving (rf 4)"])
