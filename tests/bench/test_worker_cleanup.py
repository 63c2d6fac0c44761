"""`bench run --jobs 2` whose driver is killed (SIGKILL: no chance to clean up) leaves no worker and
no multiprocessing resource tracker behind: workers end with their driver."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medequity.utils.process import WATCH_THREAD_NAME

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")

DRIVER = """
import json, sys
from medequity.bench import run_benchmark
run_benchmark(json.loads(sys.argv[1]), sys.argv[2], n_jobs=2)
"""


def stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, parent PID, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie (a dead process nobody has reaped yet holds no memory)."""
    fields = stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and (stat(int(p.name)) or ["", ""])[1] == str(pid)]


def watching(pid: int) -> bool:
    """The process runs the thread that watches its parent (utils.process.die_with_parent)."""
    try:
        return any((task / "comm").read_text().strip() == WATCH_THREAD_NAME for task in Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_workers_and_the_resource_tracker_die_with_a_killed_driver(tmp_path, tiny_spec):
    spec = copy.deepcopy(tiny_spec)
    spec.update({"usages": ["ft"], "seeds": [0, 1], "train": {"epochs": 500, "patience": None}})  # runs for minutes
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(spec), str(tmp_path / "out")])
    spawned: list[int] = []
    try:
        assert wait_for(lambda: sum(watching(pid) for pid in children(driver.pid)) == 2, 60), "the workers did not start"
        spawned = children(driver.pid)  # the two workers and multiprocessing's resource tracker
        assert len(spawned) == 3 and all(running(pid) for pid in spawned)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: not any(running(pid) for pid in spawned), 5), (
            f"still running 5 s after the driver was killed: {[pid for pid in spawned if running(pid)]}")
    finally:
        driver.kill()
        driver.wait()
        for pid in spawned:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(120)
"""
CHILD = "import os, time; from medequity.utils.process import die_with_parent; die_with_parent(os.getppid()); time.sleep(120)"


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["prctl", "watching-thread-only"])
def test_die_with_parent_ends_a_process_whose_parent_is_gone(pdeathsig):
    child_code = CHILD if pdeathsig else "import medequity.utils.process as p; p._libc = lambda: None; " + CHILD
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert wait_for(lambda: watching(child) or not pdeathsig and running(child), 30)
        time.sleep(0.5 if pdeathsig else 1.5)  # without prctl the thread is unnamed: give it time to start
        assert running(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not running(child), 3)
    finally:
        parent.kill()
        parent.wait()
        if running(child):
            os.kill(child, signal.SIGKILL)


def test_a_process_whose_parent_already_changed_ends_at_once():
    code = f"from medequity.utils.process import die_with_parent; die_with_parent({os.getppid()}); print('still here')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "still here" not in result.stdout
