"""FairTune on a small synthetic task where full fine-tuning overfits (FairTune Fig. 1, Table 1).

Checks, on CPU in a few minutes:
1. the searched mask's validation worst-group AUC is >= full fine-tuning's, both LR-tuned with the
   same objective, budget (trials, epochs), TPE sampler and successive-halving pruner (§4.1);
2. Fig. 1: after training, the training-set group AUCs are ~1 (gap ~0) while the test gap is not.
Then prints the test comparison (Table 1 columns) of both, retrained on all training data.

    .venv/bin/python benchmarks/validate_fairtune.py              # 16 trials each
    .venv/bin/python benchmarks/validate_fairtune.py --trials 30
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from medequity.fairtune import FairTuneConfig, Objective, SearchSetup, search, split_group_aucs, test_summary, tune_lr
from medequity.pipeline import ExperimentSpec, run_experiment


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
    args = parser.parse_args()
    torch.set_num_threads(1)  # shared CPU: one thread is much faster than oversubscribed ones
    start = time.perf_counter()
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
