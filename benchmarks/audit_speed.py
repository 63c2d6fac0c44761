"""Speed and memory of ``medequity audit`` with its defaults, against an earlier revision, in one run.

The audited table is CXR-like: a binary label and score, sex, age (4 bins) and race (5 groups, one
with a real AUC deficit), audited with every default metric, 1,000 bootstrap replicates, the
contrast tests and ADF for the three attributes and the sex × race intersection. Each audit runs in
its own process (wall time and peak RSS measured there); the baseline runs the code of
``--baseline`` (a git revision, default: the revision before the speed work) extracted into a
temporary folder, on the same table.

    .venv/bin/python benchmarks/audit_speed.py                         # 50,000 rows, both
    .venv/bin/python benchmarks/audit_speed.py --rows 1000000 --no-baseline

CPU seconds are printed too: the 2 cores this was measured on were shared with other work (load
average 8-10 during every run below), which stretched wall time about 2-3x; on 2 idle cores wall
time is about CPU / 2 plus the single-threaded setup (about 6 s CPU at 1,000,000 rows).

Measured 2026-12-01, 2 cores under load 8-10 (this revision = the shared-replicate engine):

    rows       revision                   wall      CPU     peak RSS
    50,000     this revision               6.7 s    3.9 s    371 MB   (same run as the next line)
    50,000     caad7a8 (before issue 14) 382.3 s  183.0 s    544 MB   57x wall
    50,000     this revision               3.1 s    3.5 s    368 MB   (same run as the next line)
    50,000     4022912 (before this work) 28.6 s   14.5 s    498 MB   9.3x wall, 4.1x CPU
    1,000,000  this revision             114.1 s   47.6 s    988 MB   (same run as the next line)
    1,000,000  4022912 (before this work)  stopped unfinished after 2,415 s wall / 1,306 s CPU

(The brief measured 4022912 at 132 s wall for 1,000,000 rows on a quieter machine; under this load its
BLAS-oversubscribed products made it far slower. For the 1,000,000-row target, < 60 s wall on 2 cores,
this revision used 47.6 s of CPU in all (two threads), which suggests about 30 s on 2 idle cores; it
was not shown in wall time on these busy cores.)

Where the time went before (4022912): each attribute drew its own 1,000 x n multinomial weights,
summed the linear metrics with its own float64 products, and computed the overall AUC again; BLAS
threads inside the two chunk threads oversubscribed the cores (thin products 10-20x slower under
load). Now one set of integer weights serves every attribute (strata: the cells of all attributes
x label), integer run totals replace most products, AUC works on a (label, score) arrangement with
integer cumulative sums into a reused buffer, the overall AUC is computed once, and BLAS runs one
thread per chunk thread. Remaining CPU at 1,000,000 rows: the weights' draws (~20%), the gathers of
each group's columns (~25%), AUC cumulative sums and products (~30%), the float64 products of the
score and loss columns (~15%), setup (~15%, of it ~3 s in coding the intersection's groups row by
row in ``metrics.groups``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BASELINE = "caad7a8"  # main before the gap-test and engine work of issue 14

CHILD = r"""
import json, resource, sys, time
import pandas as pd
from medequity.audit import audit
frame = pd.read_parquet(sys.argv[1])
start = time.perf_counter()
report = audit(frame, label="label", score="score", attributes=["sex", "age", "race"],
               intersections=[("sex", "race")])
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "tasks": len(report.tasks)}))
"""


def make_table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    race = rng.choice(["White", "Black", "Asian", "Other", "Hispanic"], n, p=[0.6, 0.15, 0.12, 0.08, 0.05])
    y = rng.binomial(1, 0.3, n)
    strength = np.where(race == "Black", 1.0, 1.8)
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + strength * y - 0.9)))
    age = pd.cut(rng.integers(18, 95, n), [0, 40, 60, 80, 200], right=False, labels=["<40", "40-<60", "60-<80", ">=80"])
    return pd.DataFrame({"label": y, "score": score, "sex": rng.choice(["F", "M"], n), "age": age.astype(str),
                         "race": race})


def run(src: Path, table: Path) -> dict:
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(table)], capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def extract(revision: str, into: Path) -> Path:
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), revision, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table = folder / "predictions.parquet"
        make_table(args.rows).to_parquet(table)
        load = f"{os.getloadavg()[0]:.1f}"  # other work on the machine stretches wall time, not CPU time
        current = run(REPO / "src", table)
        print(f"{args.rows} rows, 3 attributes + sex & race, default settings")
        print(f"  this revision : {current['seconds']:7.1f} s, peak {current['peak_mb']:6.0f} MB, "
              f"CPU {current['cpu_seconds']:6.1f} s (load before: {load})")
        if not args.no_baseline:
            load = f"{os.getloadavg()[0]:.1f}"
            old = run(extract(args.baseline, folder), table)
            print(f"  {args.baseline:<14}: {old['seconds']:7.1f} s, peak {old['peak_mb']:6.0f} MB, "
                  f"CPU {old['cpu_seconds']:6.1f} s (load before: {load})")
            print(f"  speed-up {old['seconds'] / current['seconds']:.1f}x, memory ratio {old['peak_mb'] / current['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
