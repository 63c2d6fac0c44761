"""What every ``medequity`` command shares: the console, error exits, key=value options, progress bars."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()
# Console() fixes its width from COLUMNS at import time; forget it so the width of the terminal
# (or COLUMNS) is read when printing — a command run later in the same process, as in tests or
# notebooks, then gets its own width.
console._width = None


def fail(message: str) -> None:
    """Print the error (it names the problem and the fix) and exit with status 2."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # paths and names stay whole
    raise typer.Exit(code=2)


def parse_options(pairs: list[str] | None) -> dict:
    """``["preset=cxr-sex-prevalence", "n=400"]`` → ``{"preset": ..., "n": 400}``; values are YAML data, never code."""
    from medequity.utils.safe_yaml import YamlError, load_yaml

    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            fail(f"option {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        try:
            options[key.strip()] = load_yaml(value, source=f"the value of option {key.strip()!r}")
        except YamlError as exc:
            fail(str(exc))
    return options


@contextmanager
def trial_progress(show: bool = True) -> Iterator[Callable[[int, int, str], None] | None]:
    """A ``progress(done, total, what)`` callback drawing a bar (None when ``show`` is False), for
    library loops that report their progress (FairTune's trials)."""
    if not show:
        yield None
        return
    with progress_bar() as bar:
        task = bar.add_task("trials", total=None)
        yield lambda done, total, what: bar.update(task, completed=done, total=total, description=what)


def progress_bar() -> Progress | PlainProgress:
    """A bar with count, elapsed time and ETA, for per-epoch, per-trial and per-run progress; when
    the output is not a terminal (piped, redirected to a log, a CI job) plain lines instead, since a
    live bar is drawn there only once, at the end."""
    if not console.is_terminal:
        return PlainProgress()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)


@contextmanager
def warnings_once() -> Iterator[None]:
    """Show each distinct warning (category and text) once in the block. Python's own "once" does
    not hold here: every ``warnings.catch_warnings()`` the library enters resets the registry, so a
    benchmark repeated a small group's warning for every run, metric call and attribute."""
    shown: set[tuple[type, str]] = set()
    show = warnings.showwarning

    def show_once(message, category, filename, lineno, file=None, line=None) -> None:
        key = (category, str(message))
        if key not in shown:
            shown.add(key)
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_once
    try:
        yield
    finally:
        warnings.showwarning = show


class PlainProgress:
    """The part of :class:`rich.progress.Progress` the commands use, printing one plain line per
    step: ``[elapsed] description  done/total  ETA m:ss``. A line is printed when the count or the
    description changes, at most one per ``min_interval`` seconds except for the last step, so a
    loop that reports thousands of steps (bootstrap replicates) does not flood a log."""

    def __init__(self, min_interval: float = 2.0) -> None:
        self.min_interval = min_interval
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        task = len(self.tasks)
        self.tasks[task] = {"description": description, "total": total, "completed": 0, "start": time.monotonic(),
                            "printed": None, "last": -math.inf}
        self.update(task)  # a line at the start: the command is working, not hanging
        return task

    def update(self, task: int, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, advance: float | None = None, **_) -> None:
        state = self.tasks[task]
        if total is not None:
            state["total"] = total
        if description is not None:
            state["description"] = description
        if advance is not None:
            state["completed"] += advance
        if completed is not None:
            state["completed"] = completed
        shown = (state["description"], state["completed"])
        now = time.monotonic()
        done = state["total"] is not None and state["completed"] >= state["total"]
        if shown == state["printed"] or (now - state["last"] < self.min_interval and not done):
            return
        state["printed"], state["last"] = shown, now
        console.print(plain_progress_line(state["description"], state["completed"], state["total"], now - state["start"]),
                      soft_wrap=True, markup=False, highlight=False)


def plain_progress_line(description: str, done: float, total: float | None, elapsed: float) -> str:
    """``[0:42] epoch 3: loss 0.41  3/10  ETA 1:38`` (the ETA assumes the remaining steps take as
    long as the finished ones did on average)."""
    line = f"[{_clock(elapsed)}] {description}"
    if total:
        line += f"  {int(done)}/{int(total)}"
        if 0 < done < total:
            line += f"  ETA {_clock(elapsed / done * (total - done))}"
    return line


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


# --- the data/model options every training command takes ----------------------------------------------
DatasetOpt = Annotated[str, typer.Option(help="Registered dataset name (synthetic, ham10000, chexpert, ...).")]
RootOpt = Annotated[Path | None, typer.Option(help="Dataset folder as distributed (real datasets).")]
DatasetOptionsOpt = Annotated[list[str] | None, typer.Option(
    "--option", help="Dataset option key=value (repeat), e.g. preset=cxr-sex-prevalence or n=2000.")]
ModelOptionsOpt = Annotated[list[str] | None, typer.Option(
    "--model-option", help="Backbone option key=value (repeat), e.g. input_size=64 or depth=4.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Batch size.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda.")]
CacheDirOpt = Annotated[str | None, typer.Option(help="Cache folder (features, pre-trained weights).")]
CheckpointOpt = Annotated[str | None, typer.Option(
    help="Pre-trained weights: a local file/folder (safetensors or weights_only torch) or synthetic:<modality>.")]


def experiment_spec(*, dataset: str, root: Path | None, option: list[str] | None, model: str,
                    model_option: list[str] | None = None, checkpoint: str | None = None, **fields):
    """The :class:`~medequity.experiment.ExperimentSpec` of a command's data and model options (values
    are YAML data, never code) plus its other ``fields``."""
    from medequity.experiment import ExperimentSpec

    model_options = parse_options(model_option)
    if checkpoint:
        model_options["checkpoint"] = checkpoint
    return ExperimentSpec(dataset=dataset, root=str(root) if root else None, dataset_options=parse_options(option),
                          model=model, model_options=model_options, **fields)


def command_group(help: str, **settings) -> typer.Typer:
    """A ``medequity`` command or sub-command group with the settings every one shares: help when
    called bare, no shell-completion install, plain tracebacks (errors are printed by :func:`fail`)."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, **settings)
