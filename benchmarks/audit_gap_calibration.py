"""Calibration of the audit's gap tests, by simulation: type-I error on bias-free data and power.

For each setting the script draws many cohorts, audits them with :func:`group_metrics` (defaults:
1,000 stratified bootstrap replicates, 95 %) and counts how often the omnibus test (the smallest
min-P adjusted p-value of the group-vs-pool contrasts, bootstrap-t p-values) rejects at α = 0.05:

* bias-free cohorts with 2–6 groups of unequal sizes (5,000 samples; the smallest group has
  about 370): the rejection rate must be α within Monte Carlo error (± 2·sqrt(α(1 − α)/sims));
  a last row shows the small-group regime (2,000 samples, smallest group 149, ~45 positives);
* cohorts with a known AUC deficit in one minority group: the rejection rate is the power, and the
  rate at which the deficient group's own interval lies below 0 is reported too.

The "pct" columns test the same replicates with percentile p-values (the method before the
bootstrap-t), and "max-min CI>0" shows the old verdict: the max − min gap's percentile interval
"excludes 0" in every cohort (it is a size, not a test), which is why it is no longer used as one.

Measured (400 cohorts per row, 100 for power; 13.5 min on 2 shared cores under load ~9):

    groups  shares                           smallest n     AUC     TPR  in band  AUC pct  TPR pct
         2  0.80, 0.20                             1000   0.045   0.062     True    0.052    0.065
         3  0.57, 0.29, 0.14                        714   0.050   0.040     True    0.050    0.055
         4  0.44, 0.28, 0.17, 0.11                  549   0.060   0.033     True    0.058    0.040
         5  0.36, 0.25, 0.18, 0.13, 0.09            444   0.065   0.037     True    0.070    0.050
         6  0.30, 0.23, 0.17, 0.13, 0.10, 0.07        373   0.060   0.052     True    0.072    0.062
         6  0.30, 0.23, 0.17, 0.13, 0.10, 0.07        149   0.058   0.055     True    0.070    0.077

    groups  deficit       n  AUC omnibus  minority flagged  AUC pct
         2      0.5    2000        0.990             0.930    0.990
         5      0.5    2000        0.750             0.700    0.760
         5      0.9    5000        1.000             1.000    1.000
         6      0.9    5000        1.000             1.000    1.000

Every bootstrap-t row is within the band (0.028–0.072); the percentile rows with 5–6 groups (AUC)
and with the small group (TPR) were not. The power is the percentile method's within one cohort
in a hundred (minority flagged 0.70 against 0.72). AUC with 4–6 groups stays a little above 0.05
(0.060–0.065, within Monte Carlo error of it).

    .venv/bin/python benchmarks/audit_gap_calibration.py            # ~15 min on 2 cores
    .venv/bin/python benchmarks/audit_gap_calibration.py --sims 100  # quick look
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from medequity.metrics import GroupMetricWarning, group_metrics
from medequity.metrics.contrasts import min_p_contrasts

ALPHA = 0.05


def cohort(n, shares, strengths, rng):
    names = np.array([f"g{k}" for k in range(len(shares))])
    g = rng.choice(len(shares), n, p=np.asarray(shares) / np.sum(shares))
    y = rng.binomial(1, 0.3, n)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + np.asarray(strengths)[g] * y - 0.9)))
    return y, s, names[g]


def percentile_omnibus(result, metric):
    """The omnibus p-value of the same replicates with percentile p-values (the method before the
    bootstrap-t), for the comparison column."""
    point = result.values[metric][1:] - result.pooled[metric]
    reps = result.replicates[metric][:, 1:] - result.pooled_replicates[metric][:, None]
    return min_p_contrasts(point, reps, result.ci).p_omnibus


def simulate(n, shares, strengths, sims, n_boot, seed, deficient=None):
    rng = np.random.default_rng(seed)
    rejected = {"auc": 0, "tpr": 0}
    rejected_percentile = {"auc": 0, "tpr": 0}
    flagged = 0
    gap_ci_excludes_0 = 0
    for i in range(sims):
        y, s, g = cohort(n, shares, strengths, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GroupMetricWarning)
            result = group_metrics(y, s, sensitive_features=g, metrics=("auc", "tpr"), threshold=0.5,
                                   n_boot=n_boot, random_state=i, min_group_size=1)
        summaries = result.summaries().set_index(["metric", "summary"])
        for metric in rejected:
            rejected[metric] += summaries.loc[(metric, "gap"), "p_value"] < ALPHA
            rejected_percentile[metric] += percentile_omnibus(result, metric) < ALPHA
        gap_ci_excludes_0 += summaries.loc[("auc", "gap"), "ci_low"] > 0
        if deficient is not None:
            row = result.contrasts().set_index(["metric", "group"]).loc[("auc", deficient)]
            flagged += bool(row.significant and row.ci_high < 0)
    rates = {m: r / sims for m, r in rejected.items()}
    rates.update({f"{m}_percentile": r / sims for m, r in rejected_percentile.items()})
    return rates, flagged / sims, gap_ci_excludes_0 / sims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=400)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    mc = 2 * np.sqrt(ALPHA * (1 - ALPHA) / args.sims)
    start = time.perf_counter()
    print(f"{args.sims} cohorts per row, n = {args.n}, {args.n_boot} bootstrap replicates, α = {ALPHA}; "
          f"Monte Carlo band α ± {mc:.3f}")
    print("\nType-I error on bias-free cohorts (all groups: the same score distributions)")
    print(f"{'groups':>6}  {'shares':<32} {'smallest n':>10}  {'AUC':>6}  {'TPR':>6}  {'in band':>7}  "
          f"{'AUC pct':>7}  {'TPR pct':>7}  {'max-min CI>0':>12}")
    # The last row is the small-group regime: about 45 positives in the smallest group.
    for k, n in [(k, args.n) for k in range(2, 7)] + [(6, 2000)]:
        shares = np.geomspace(1, 0.25, k)
        shares = shares / shares.sum()
        rates, _, gap_ci = simulate(n, shares, [1.8] * k, args.sims, args.n_boot, seed=k + n)
        ok = all(abs(rates[m] - ALPHA) <= mc for m in ("auc", "tpr"))
        print(f"{k:>6}  {', '.join(f'{x:.2f}' for x in shares):<32} {int(n * shares[-1]):>10}  "
              f"{rates['auc']:>6.3f}  {rates['tpr']:>6.3f}  {str(ok):>7}  {rates['auc_percentile']:>7.3f}  "
              f"{rates['tpr_percentile']:>7.3f}  {gap_ci:>12.2f}", flush=True)
    print("\nPower: one minority group with a lower AUC (signal strength 1.8 → 1.8 − deficit)")
    print(f"{'groups':>6}  {'deficit':>7}  {'n':>6}  {'AUC omnibus':>11}  {'minority flagged':>16}  {'AUC pct':>7}")
    for k, deficit, n in ((2, 0.5, 2000), (5, 0.5, 2000), (5, 0.9, 5000), (6, 0.9, 5000)):
        shares = np.r_[0.6, 0.15, np.full(k - 2, 0.25 / max(k - 2, 1))][:k]
        shares = shares / shares.sum()
        strengths = np.full(k, 1.8)
        strengths[1] -= deficit
        rates, flagged, _ = simulate(n, shares, strengths, max(args.sims // 4, 25), args.n_boot, seed=100 + k,
                                     deficient="g1")
        print(f"{k:>6}  {deficit:>7.1f}  {n:>6}  {rates['auc']:>11.3f}  {flagged:>16.3f}  "
              f"{rates['auc_percentile']:>7.3f}", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
