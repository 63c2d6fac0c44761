"""One `bench run` per results folder: a second one is refused with the holder's PID, host and start
time; a lock left by a process that was killed is taken over, with a warning naming it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings

import pytest
from typer.testing import CliRunner

from medequity.bench import run_benchmark
from medequity.bench.store import LOCK_FILE, ResultsLock, ResultsLocked, StaleLockWarning

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

HOLD = """
import sys, time
from medequity.bench.store import ResultsLock
lock = ResultsLock(sys.argv[1]).__enter__()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path / "out"``."""
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        yield out, process
    finally:
        process.kill()
        process.wait()


def test_a_second_run_on_a_held_folder_is_refused_naming_the_holder(holder, tiny_spec):
    out, process = holder
    with pytest.raises(ResultsLocked, match=rf"in use by another `medequity bench run` \(PID {process.pid} on host "
                                            rf"{socket.gethostname()}, started 20.*\); wait for it to finish"):
        run_benchmark(tiny_spec, out)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written: no bench.json, no runs


def test_the_cli_prints_the_holder_and_exits(holder, tmp_path, tiny_spec):
    import yaml

    from medequity.cli import app

    out, process = holder
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec))
    result = CliRunner().invoke(app, ["bench", "run", str(spec), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"PID {process.pid}" in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(holder):
    out, process = holder
    process.send_signal(signal.SIGKILL)  # no chance to release: the file still names it
    process.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == process.pid
    with pytest.warns(StaleLockWarning, match=rf"no longer running \(PID {process.pid} on host"):
        with ResultsLock(out):
            record = json.loads((out / LOCK_FILE).read_text())
            assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
            with pytest.raises(ResultsLocked, match=f"PID {os.getpid()}"):  # held: even this process cannot enter twice
                ResultsLock(out).__enter__()
    assert (out / LOCK_FILE).read_text() == ""  # released: no holder recorded
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cleanly released lock is no stale lock
        with ResultsLock(out):
            pass
