"""What every ``medequity`` command shares: the console, error exits, key=value options, progress bars."""

from __future__ import annotations

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


def progress_bar() -> Progress:
    """A bar with count, elapsed time and ETA, for per-epoch, per-trial and per-run progress."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)


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
