"""What every ``medequity`` command shares: the console, error exits, key=value options, progress bars."""

from __future__ import annotations

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
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def parse_options(pairs: list[str] | None) -> dict:
    """``["preset=cxr-sex-prevalence", "n=400"]`` → ``{"preset": ..., "n": 400}``; values are YAML data, never code."""
    import yaml

    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            fail(f"option {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        options[key.strip()] = yaml.safe_load(value)
    return options


def progress_bar() -> Progress:
    """A bar with count, elapsed time and ETA, for per-epoch, per-trial and per-run progress."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
