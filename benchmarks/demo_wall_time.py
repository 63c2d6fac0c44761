"""Wall time, CPU time and peak memory of the default benchmarks (`make demo`), from a cold cache.

Runs `medequity demo` in a fresh process with an empty feature/weights cache and a new results
folder (so both synthetic pre-trainings, feature and embedding extraction, every run and both
reports are included), then prints the wall time, the CPU time (user + system: on a shared machine
the wall time depends on the other jobs, the CPU time much less) and the peak resident memory of
that process, with the runs of each benchmark. ``--part classification`` or ``--part segmentation``
times one benchmark (`medequity bench run` of its spec, then `medequity bench report`) instead.

    .venv/bin/python benchmarks/demo_wall_time.py [--part all|classification|segmentation]

Measured (2 shared cores, load 7-10 from other jobs, OMP_NUM_THREADS=1), ``--part segmentation``
(seg-demo.yaml: tiny-SAM pre-training, 4 zero-shot runs, 3 decoder runs, then the report): 117 s
wall, 65 s CPU, 7 runs, peak RSS 1139 MB; on a core of its own the wall time is about the CPU time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

SPECS = {"classification": "demo.yaml", "segmentation": "seg-demo.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", *SPECS], default="all")
    args = parser.parse_args()
    medequity = Path(sys.executable).with_name("medequity")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MEDEQUITY_CACHE=str(Path(tmp) / "cache"))
        out = Path(tmp) / "demo"
        if args.part == "all":
            commands = [[str(medequity), "demo", "--out", str(out)]]
            folders = {"classification": out, "segmentation": out / "segmentation"}
        else:
            spec = Path(str(resources.files("medequity.bench") / "specs" / SPECS[args.part]))
            commands = [[str(medequity), "bench", "run", str(spec), "--out", str(out)],
                        [str(medequity), "bench", "report", str(out)]]
            folders = {args.part: out}
        start = time.perf_counter()
        for command in commands:
            completed = subprocess.run(command, env=env, capture_output=True, text=True)
            if completed.returncode != 0:
                print(completed.stdout[-3000:], completed.stderr[-3000:])
                raise SystemExit(f"{' '.join(command[1:3])} failed with exit code {completed.returncode}")
        seconds = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs = {part: len(list((folder / "runs").glob("*/run.json"))) for part, folder in folders.items()}
    print(f"medequity demo ({args.part}, cold cache): {seconds:.0f} s wall, {usage.ru_utime + usage.ru_stime:.0f} s CPU, "
          f"runs {runs}, peak RSS {usage.ru_maxrss / 1024:.0f} MB, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
