"""Progress when the output is piped: plain lines (a live bar is drawn there only once, at the end)."""

from __future__ import annotations

import subprocess
import sys

from medequity.cli import common
from medequity.cli.common import PlainProgress, plain_progress_line, progress_bar


def test_line_format_and_eta():
    assert plain_progress_line("epoch 3: loss 0.41", 3, 10, 42) == "[0:42] epoch 3: loss 0.41  3/10  ETA 1:38"
    assert plain_progress_line("trials", 0, None, 0) == "[0:00] trials"
    assert plain_progress_line("done", 10, 10, 3725) == "[1:02:05] done  10/10"


def test_prints_changes_throttled_but_always_the_last_step(capsys, monkeypatch):
    clock = iter([0.0, 0.0, 0.5, 1.0, 3.0, 3.1, 3.2])
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    progress = PlainProgress(min_interval=2.0)
    task = progress.add_task("runs", total=4)  # t=0: a first line
    progress.update(task, completed=1)  # t=0.5: throttled
    progress.update(task, completed=2)  # t=1.0: throttled
    progress.update(task, completed=3, description="run c")  # t=3.0: printed
    progress.update(task, completed=3, description="run c")  # t=3.1: unchanged, not printed
    progress.update(task, completed=4)  # t=3.2: the last step, printed although within 2 s
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["runs  0/4", "run c  3/4  ETA 0:01", "run c  4/4"]


def test_piped_command_prints_plain_lines():
    code = ("from medequity.cli.common import progress_bar\n"
            "with progress_bar() as bar:\n"
            "    t = bar.add_task('epochs', total=2)\n"
            "    bar.update(t, completed=1, description='epoch 1')\n"
            "    bar.update(t, completed=2, description='epoch 2')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "\x1b" not in out  # no terminal control codes in a log
    # epoch 1 comes within 2 s of the first line: throttled; the last step always prints
    assert [line.split("] ", 1)[1] for line in out.splitlines()] == ["epochs  0/2", "epoch 2  2/2"]
    assert isinstance(progress_bar(), PlainProgress)  # pytest captures the output: not a terminal either


def test_warnings_once_shows_each_distinct_warning_once_even_through_catch_warnings():
    import warnings

    from medequity.cli.common import warnings_once

    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *_, **__: shown.append(str(message))
        with warnings_once():
            for _ in range(3):  # the library enters catch_warnings per metric call, which resets Python's registry
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    warnings.warn("groups ['a'] have fewer than 30 samples", UserWarning, stacklevel=1)
                    warnings.warn("another message", UserWarning, stacklevel=1)
        for _ in range(2):
            with warnings.catch_warnings():
                warnings.warn("after the block", UserWarning, stacklevel=1)
    assert shown == ["groups ['a'] have fewer than 30 samples", "another message", "after the block", "after the block"]
