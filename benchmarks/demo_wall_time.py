"""Wall time and peak memory of the default benchmark (`make demo`), from a cold cache.

Runs `medequity demo` in a fresh process with an empty feature/weights cache and a new results
folder (so the synthetic pre-training, feature extraction and every run are included), then
prints the wall time and the peak resident memory of that process.

    .venv/bin/python benchmarks/demo_wall_time.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    medequity = Path(sys.executable).with_name("medequity")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MEDEQUITY_CACHE=str(Path(tmp) / "cache"))
        start = time.perf_counter()
        completed = subprocess.run([str(medequity), "demo", "--out", str(Path(tmp) / "demo")], env=env,
                                   capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if completed.returncode != 0:
            print(completed.stdout[-3000:], completed.stderr[-3000:])
            raise SystemExit(f"medequity demo failed with exit code {completed.returncode}")
        runs = len(list((Path(tmp) / "demo" / "runs").glob("*/run.json")))
    print(f"medequity demo (cold cache): {seconds:.0f} s wall, {runs} runs, peak RSS {peak_mb:.0f} MB, "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
