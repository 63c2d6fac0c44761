"""FairTune on a small synthetic task where full fine-tuning overfits (FairTune Fig. 1, Table 1).

Checks, on CPU in a few minutes:
1. the searched mask's validation worst-group AUC is >= full fine-tuning's, both LR-tuned with the
   same objective, budget (trials, epochs), TPE sampler and successive-halving pruner (§4.1);
2. Fig. 1: after training, the training-set group AUCs are ~1 (gap ~0) while the test gap is not.
Then prints the test comparison (Table 1 columns) of both, retrained on all training data.

A tiny ViT never fits its training set, so check 2 gets its own section (``--part fig1``): the
``small_cnn`` backbone (``synthetic:fundus`` pre-training) fully fine-tuned at LR 1e-2 for 15 epochs
on ~300 training images of ``fundus-race-difficulty`` (32 px; split 30/20/50 so test groups have
~250 images). For seeds 0, 1, 2 it prints the final epoch's train/test group AUCs and gaps, then the
same for the mask FairTune chooses in the "groups" space (one bit per conv block).
Tolerance: PASS when the final model's train gap < 0.02 and test gap > train gap + 0.05.

    .venv/bin/python benchmarks/validate_fairtune.py              # both parts, 16 trials each
    .venv/bin/python benchmarks/validate_fairtune.py --trials 30
    .venv/bin/python benchmarks/validate_fairtune.py --part fig1  # Fig. 1 only (~2 min)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from medequity.fairtune import FairTuneConfig, Objective, SearchSetup, search, split_group_aucs, test_summary, tune_lr
from medequity.fairtune.search import ScoringTrainer
from medequity.pipeline import ExperimentSpec, run_experiment

FIG1_TRAIN_GAP_MAX = 0.02  # "train gap ~ 0"
FIG1_MARGIN = 0.05  # test gap must exceed the train gap by this much


def fig1_spec(seed: int, epochs: int = 15, n: int = 1000, cache_dir=None) -> ExperimentSpec:
    """small_cnn full fine-tuning that overfits: ~300 training images, LR 1e-2 (set per run), no early stop."""
    return ExperimentSpec(
        dataset="synthetic", dataset_options={"preset": "fundus-race-difficulty", "n": n, "seed": seed, "image_size": 32,
                                              "split_fractions": {"train": 0.3, "val": 0.2, "test": 0.5}},
        attribute="race", model="small_cnn", model_options={"input_size": 32, "checkpoint": "synthetic:fundus"},
        cache_dir=cache_dir, usage="ft", seed=seed, eval_attributes=["race"], n_boot=0, n_permutations=0,
        train={"epochs": epochs, "batch_size": 32, "patience": None, "device": "cpu"})


def train_tracked(setup: SearchSetup, usage: str, usage_params: dict, lr: float) -> tuple[list[dict], int]:
    """Fine-tune like a FairTune trial, recording train and test group AUCs after every epoch.

    Returns (one dict per epoch, the epoch the trainer's checkpoint rule kept). Fig. 1 is about
    the model at the end of training; the kept checkpoint is reported alongside.
    """
    from medequity.methods import create_method
    from medequity.models import create_backbone
    from medequity.training.trainer import seed_everything, validation_summary
    from medequity.usages import UsageContext, create_usage

    spec, config = setup.spec, setup.config(lr)
    seed_everything(spec.seed)
    backbone = create_backbone(spec.model, cache_dir=spec.cache_dir, **spec.model_options)
    model, data = create_usage(usage, **usage_params).build(backbone, dict(setup.data), UsageContext(device="cpu"))
    epochs: list[dict] = []

    def aucs(split, scores) -> dict:
        d = data[split]
        summary = validation_summary(d.labels, scores, d.groups, d.n_groups)
        groups = {name: float(summary[f"auc_group{g}"]) for g, name in enumerate(d.group_names)}
        return {"groups": groups, "gap": max(groups.values()) - min(groups.values()), "worst": min(groups.values())}

    class Tracker(ScoringTrainer):
        def predict(self, model, method, split_data, config):
            scores = super().predict(model, method, split_data, config)
            if split_data is data["val"]:  # once per epoch
                epochs.append({s: aucs(s, scores if s == "val" else ScoringTrainer.predict(self, model, method, data[s], config))
                               for s in ("train", "val", "test")})
            return scores

    method = create_method(spec.method, **spec.method_params)
    fit = method.fit(model, data["train"], data["val"], config, Tracker())
    return epochs[:len(fit.history)], fit.best_epoch  # drop any post-training prediction on val


def _fmt(row: dict) -> str:
    return "  ".join(f"{s} " + " ".join(f"{k}={v:.3f}" for k, v in row[s]["groups"].items()) + f" gap={row[s]['gap']:.3f}"
                     for s in ("train", "test"))


def fig1(args) -> bool:
    """FairTune Fig. 1 on small_cnn: train gap ~0, test gap not, for full FT over 3 seeds and for FairTune's mask."""
    objective = Objective.parse("val_worst_group_auc")
    ok = True
    for seed in (0, 1, 2):
        start = time.perf_counter()
        spec = fig1_spec(seed, args.fig1_epochs, cache_dir=args.cache_dir)
        setup = SearchSetup(spec, objective, subsample=None, splits=("train", "val", "test"))
        rows, best = train_tracked(setup, "ft", {}, 1e-2)
        last = rows[-1]
        passed = last["train"]["gap"] < FIG1_TRAIN_GAP_MAX and last["test"]["gap"] > last["train"]["gap"] + FIG1_MARGIN
        ok &= passed
        print(f"Fig. 1 full FT seed {seed} (n_train {len(setup.data['train'])}, {time.perf_counter() - start:.0f} s) "
              f"final epoch: {_fmt(last)} -> {'PASS' if passed else 'FAIL'}")
        print(f"    kept checkpoint (epoch {best}, val worst-group AUC): {_fmt(rows[best])}")
    # FairTune's "groups" space (one bit per conv block) on seed 0, LR searched in the default range.
    spec = fig1_spec(0, args.fig1_epochs, cache_dir=args.cache_dir)
    setup = SearchSetup(spec, objective, subsample=None, splits=("train", "val", "test"))
    config = FairTuneConfig(space="groups", trials=args.fig1_trials, subsample=None, seed=0, show_progress=False)
    result = search(replace(spec, usage="mask"), config, setup=setup)
    rows, best = train_tracked(setup, "mask", {"mask": result.best_mask, "others": False}, result.best_lr)
    ft_rows, ft_best = train_tracked(setup, "ft", {}, 1e-2)
    print(f"FairTune groups mask {result.mask_bits} over {list(result.space.searched)} LR {result.best_lr:.2e} "
          f"(val worst-group AUC {result.best_value:.3f} vs full FT at LR 1e-2 {ft_rows[ft_best]['val']['worst']:.3f})")
    print(f"    final epoch: {_fmt(rows[-1])}")
    print(f"    kept checkpoint (epoch {best}): {_fmt(rows[best])}")
    print(f"CHECK Fig. 1 (full FT, 3 seeds; train gap < {FIG1_TRAIN_GAP_MAX}, test gap > train gap + {FIG1_MARGIN}): "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--preset", default="derm-skin-tone-representation")
    parser.add_argument("--attribute", default="skin_tone")
    parser.add_argument("--checkpoint", default="synthetic:derm",
                        help="pre-trained weights (our unbiased-synthetic pre-training); 'none' = random init")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=("all", "vit", "fig1"), default="all")
    parser.add_argument("--fig1-epochs", type=int, default=15)
    parser.add_argument("--fig1-trials", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)  # shared CPU: one thread is much faster than oversubscribed ones
    start = time.perf_counter()
    if args.part in ("all", "fig1"):
        fig1(args)
    if args.part == "fig1":
        print(f"total {time.perf_counter() - start:.0f} s")
        return
    spec = ExperimentSpec(
        dataset="synthetic", dataset_options={"preset": args.preset, "n": args.n, "seed": args.seed, "image_size": 32},
        attribute=args.attribute, model="vit_tiny_patch16_224",
        model_options={"input_size": 32, "depth": 4, "embed_dim": 64, "num_heads": 2, "patch_size": 8,
                       **({} if args.checkpoint == "none" else {"checkpoint": args.checkpoint})}, cache_dir=args.cache_dir,
        usage="mask", seed=args.seed, eval_attributes=[args.attribute], n_boot=0, n_permutations=0,
        train={"epochs": args.epochs, "batch_size": 64, "patience": None, "device": "cpu"})
    config = FairTuneConfig(space="full", trials=args.trials, subsample=None, seed=args.seed, show_progress=True)
    objective = Objective.parse(config.objective)
    setup = SearchSetup(spec, objective, subsample=None, splits=("train", "val", "test"))

    ft_lr, ft_study = tune_lr(spec, "ft", config, args.trials, setup=setup)
    result = search(spec, config, setup=setup)
    print(f"\nvalidation {objective.name}: FairTune {result.best_value:.4f} (mask {result.mask_bits}, LR {result.best_lr:.2e}) "
          f"vs full FT {ft_study.best_value:.4f} (LR {ft_lr:.2e})")

    runs = {"Full FT": run_experiment(replace(spec, usage="ft", usage_params={}, train={**spec.train, "lr": ft_lr})),
            "FairTune": run_experiment(result.final_spec())}
    rows = {}
    for name, run in runs.items():
        train = split_group_aucs(run, setup, "train")
        rows[name] = {"val_objective": ft_study.best_value if name == "Full FT" else result.best_value,
                      "train_auc": train["auc"], "train_worst_group_auc": train["worst_group_auc"], "train_auc_gap": train["auc_gap"],
                      **{f"test_{k}": v for k, v in test_summary(run, args.attribute).items()}}
    print(json.dumps(rows, indent=2))
    history = result.history
    print(f"FairTune trials: {(history.state == 'COMPLETE').sum()} complete, {(history.state == 'PRUNED').sum()} pruned; "
          f"epochs run {int(history.epochs_run.sum())} of {args.epochs * len(history)}")
    check = result.best_value >= ft_study.best_value
    print(f"CHECK FairTune val {objective.name} >= full FT: {'PASS' if check else 'FAIL'}")
    gaps = rows["Full FT"]
    print(f"CHECK Fig. 1 (full FT): train gap {gaps['train_auc_gap']:.3f} vs test gap {gaps['test_auc_gap']:.3f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
