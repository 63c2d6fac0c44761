"""The full validations of the seed methods (FairDi, FairTune, Fair Diagnosis) in one run.

The same functions as ``medequity validate …`` and as the quick tests in
tests/validation/test_seed_methods.py, at their ``size="full"`` settings (3 seeds for FairDi and
Fig. 1, 16 trials for the mask search, the AD/FAAP baselines and the image-discriminator and JSD
variants for Fair Diagnosis). About 10–15 minutes on one quiet CPU thread. Prints every verdict,
writes validation.json/csv/png per check under ``--out``, exits 1 if a claim fails.

    .venv/bin/python benchmarks/validate_seed_methods.py --out runs/validate-full
    .venv/bin/python benchmarks/validate_seed_methods.py --only fairdi --fairdi-preset fundus-race-difficulty
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from medequity.fair_diagnosis.validation import PRESETS as FAIR_DIAGNOSIS_PRESETS
from medequity.fair_diagnosis.validation import validate_fair_diagnosis
from medequity.fairdi.validation import validate_fairdi
from medequity.fairtune.validation import validate_fairtune_fig1, validate_fairtune_mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/validate-full"))
    parser.add_argument("--only", nargs="*", default=["fairdi", "fairtune", "fair_diagnosis"])
    parser.add_argument("--fairdi-preset", default="derm-skin-tone-representation")
    parser.add_argument("--mask-model", default="small_cnn", choices=("small_cnn", "vit"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: fastest on a shared CPU, and deterministic
    start = time.perf_counter()
    checks = []
    if "fairdi" in args.only:
        checks.append(("fairdi", lambda: validate_fairdi(args.fairdi_preset, size="full", table3=True, progress=print)))
    if "fairtune" in args.only:
        checks.append(("fairtune_fig1", lambda: validate_fairtune_fig1(size="full", progress=print)))
        checks.append(("fairtune_mask", lambda: validate_fairtune_mask(size="full", model=args.mask_model, progress=print)))
    if "fair_diagnosis" in args.only:
        for preset in FAIR_DIAGNOSIS_PRESETS:
            checks.append((f"fair_diagnosis-{preset}", lambda preset=preset: validate_fair_diagnosis(
                preset, size="full", variants=("image", "jsd"), progress=print)))
    results = []
    for name, run in checks:
        result = run()
        result.save(args.out / name)
        print(result.summary())
        print(result.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
        results.append(result)
    print(f"\n{sum(r.passed for r in results)}/{len(results)} checks pass; total {time.perf_counter() - start:.0f} s")
    for result in results:
        print(result.summary())
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
