"""Run MEDFAIR's comparison (benchmarks/medfair_comparison.yaml) and print its leaderboard and the
Friedman + Nemenyi result of every ranked quantity; the HTML report (with the critical-difference
diagrams) is written to <out>/report.html.

    .venv/bin/python benchmarks/medfair_comparison.py --out results/medfair
    .venv/bin/python benchmarks/medfair_comparison.py --small --out results/medfair-small

``--small`` runs the same spec with one seed (26 runs instead of 78); every method, every preset, one
setting per method (equal tuning budgets).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from medequity.bench.report import build_bench_context, leaderboard_frame, write_bench_report
from medequity.bench.runner import run_benchmark
from medequity.bench.spec import load_spec
from medequity.utils.safe_yaml import load_yaml

SPEC = Path(__file__).with_name("medfair_comparison.yaml")


def small(raw: dict) -> dict:
    """The same comparison with one seed (half the runs)."""
    return {**raw, "seeds": raw["seeds"][:1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--small", action="store_true", help="the laptop-size version of the same comparison")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    raw = load_yaml(SPEC.read_text())
    if args.small:
        raw = small(raw)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small groups warn that their metrics are unreliable
        results = run_benchmark(load_spec(raw), args.out, n_jobs=args.jobs)
        report = write_bench_report(args.out)
        context = build_bench_context(args.out, results)
    print(f"{len(results.runs)} runs in {time.perf_counter() - start:.0f} s; {len(results.failed)} failed; report: {report}")
    board = leaderboard_frame(results)
    columns = [c for c in ("dataset", "train_attribute", "method", "auc", "worst_group_auc", "auc_gap", "es_auc",
                           "eo_gap", "n_seeds") if c in board.columns]
    print(board[columns].round(3).to_string(index=False))
    for item in context["ranks"]:
        ranks = ", ".join(f"{r['method']} {r['rank']}" for r in item["ranks"])
        print(f"\n{item['title']} [{item['competitor']}]: {item['friedman'] or item['note']}\n  average ranks: {ranks}")


if __name__ == "__main__":
    main()
