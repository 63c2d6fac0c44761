"""Per-group AUC with 95% bootstrap CIs: medequity vs fairlearn's MetricFrame, in one run.

Checks that the point estimates are identical and the intervals agree within Monte Carlo error,
and prints the time ratio. Then times the large case (n = 1,000,000, B = 1,000) with peak memory.

    .venv/bin/python benchmarks/bootstrap_vs_fairlearn.py            # n=200k, 4 groups, B=100
    .venv/bin/python benchmarks/bootstrap_vs_fairlearn.py --quick    # n=20k (a minute)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def make_data(n: int, n_groups: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, size=n)
    y = (rng.random(n) < 0.3 + 0.05 * groups).astype(int)
    signal = 1.0 + 0.25 * groups
    score = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1.2, size=n))))
    return y, score.round(4), groups  # rounding makes ties, as real scores have


def run_fairlearn(y, score, groups, n_boot: int, seed: int):
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import roc_auc_score

    start = time.perf_counter()
    frame = MetricFrame(
        metrics=roc_auc_score, y_true=y, y_pred=score, sensitive_features=groups,
        n_boot=n_boot, ci_quantiles=[0.025, 0.975], random_state=seed,
    )
    by_group = frame.by_group
    low, high = frame.by_group_ci
    elapsed = time.perf_counter() - start
    return elapsed, by_group.to_numpy(dtype=float), low.to_numpy(dtype=float), high.to_numpy(dtype=float)


def run_medequity(y, score, groups, n_boot: int, seed: int, stratify: bool):
    from medequity.metrics import group_metrics

    start = time.perf_counter()
    result = group_metrics(y, score, sensitive_features=groups, metrics=["auc"], n_boot=n_boot,
                           n_permutations=0, stratify=stratify, random_state=seed)
    low, high = result._interval("auc")
    elapsed = time.perf_counter() - start
    return elapsed, result.values["auc"][1:], low[1:], high[1:]


def large_case(n: int, n_boot: int) -> dict:
    """Run in a subprocess so its peak RSS is its own."""
    code = f"""
import json, resource, time, sys
sys.path.insert(0, 'benchmarks')
from bootstrap_vs_fairlearn import make_data, run_medequity
y, s, g = make_data({n}, 4)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t, *_ = run_medequity(y, s, g, {n_boot}, 0, True)
print(json.dumps({{"seconds": t, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "data_rss_mb": base / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--boot", type=int, default=100)
    parser.add_argument("--large-n", type=int, default=1_000_000)
    parser.add_argument("--large-boot", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="n=20k and a smaller large case")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.n, args.large_n, args.large_boot = 20_000, 200_000, 200

    y, score, groups = make_data(args.n, args.groups)
    print(f"data: n={args.n:,}, {args.groups} groups, B={args.boot}")
    t_ours, v_ours, lo_ours, hi_ours = run_medequity(y, score, groups, args.boot, 0, stratify=False)
    t_strat, _, lo_strat, hi_strat = run_medequity(y, score, groups, args.boot, 0, stratify=True)
    print(f"medequity (plain bootstrap, like fairlearn): {t_ours:8.2f} s")
    print(f"medequity (stratified, the default):         {t_strat:8.2f} s")
    t_fl, v_fl, lo_fl, hi_fl = run_fairlearn(y, score, groups, args.boot, 0)
    print(f"fairlearn MetricFrame(n_boot={args.boot}):          {t_fl:8.2f} s")
    print(f"speed-up: {t_fl / t_ours:,.0f}x (plain), {t_fl / t_strat:,.0f}x (stratified)")

    assert np.allclose(v_ours, v_fl, rtol=0, atol=1e-12), (v_ours, v_fl)
    print("point estimates identical to fairlearn/scikit-learn: max |diff| =", float(np.max(np.abs(v_ours - v_fl))))
    width = hi_fl - lo_fl
    # Monte Carlo standard error of a 2.5% bootstrap percentile from B replicates of a roughly
    # normal statistic with sd σ: σ·sqrt(q(1−q)/B)/φ(z_q) = 2.67σ/sqrt(B); with σ = width/3.92 that
    # is 0.68·width/sqrt(B). Two independent runs differ by sqrt(2) times that; allow 3 SE.
    mc_error = 3 * np.sqrt(2) * 0.68 * width / np.sqrt(args.boot)
    for name, lo, hi in (("plain", lo_ours, hi_ours), ("stratified", lo_strat, hi_strat)):
        d_lo, d_hi = np.abs(lo - lo_fl), np.abs(hi - hi_fl)
        ok = bool(np.all(d_lo <= mc_error) and np.all(d_hi <= mc_error))
        print(f"CI endpoints vs fairlearn ({name}): max |diff| low {d_lo.max():.4f}, high {d_hi.max():.4f}; "
              f"Monte Carlo tolerance {mc_error.max():.4f} -> {'agree' if ok else 'DISAGREE'}")
    print("per group: value, fairlearn CI, medequity plain CI, medequity stratified CI")
    for g in range(args.groups):
        print(f"  group {g}: {v_ours[g]:.4f}  [{lo_fl[g]:.4f}, {hi_fl[g]:.4f}]  [{lo_ours[g]:.4f}, {hi_ours[g]:.4f}]"
              f"  [{lo_strat[g]:.4f}, {hi_strat[g]:.4f}]")

    if not args.skip_large:
        large = large_case(args.large_n, args.large_boot)
        print(f"large case: n={args.large_n:,}, B={args.large_boot:,}: {large['seconds']:.1f} s, "
              f"peak RSS {large['peak_rss_mb']:.0f} MB (data alone {large['data_rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
