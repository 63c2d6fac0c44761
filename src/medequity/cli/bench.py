"""``medequity bench``: run a benchmark spec, print its leaderboard, write its HTML report.

``medequity bench SPEC.yaml --out DIR`` is short for ``medequity bench run SPEC.yaml --out DIR``.
The commands parse options and call :mod:`medequity.bench`; nothing else.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.table import Table

from medequity.cli.common import command_group, console, fail, progress_bar, warnings_once


class RunByDefaultGroup(typer.core.TyperGroup):
    """A first argument that is not a subcommand (a spec path) means ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


bench_app = command_group("Benchmark methods × models × usages × datasets from a YAML spec (resumable; local or Ray).",
                          cls=RunByDefaultGroup)


@bench_app.command("run")
def run_command(
    spec: Annotated[Path, typer.Argument(help="Benchmark spec (YAML): datasets, models, usages, methods, grids, seeds.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder; rerunning into it resumes.")] = Path("results/bench"),
    ray: Annotated[str | None, typer.Option("--ray", help="Ray cluster address ('auto', 'ray://host:10001'), or 'local'.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Runs at a time (local processes, or CPUs of a local Ray).")] = 1,
) -> None:
    """Run every cell of SPEC not yet finished in --out, then print the leaderboard."""
    from medequity.bench import SpecError, leaderboard, load_spec, run_benchmark

    try:
        bench = load_spec(spec)
    except SpecError as exc:
        fail(str(exc))
    console.print(f"[bold]{bench.name}[/]: {len(bench.cells)} runs, selection rule [bold]{bench.selection.rule}[/] → {out}")
    for warning in bench.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    from medequity.bench.store import ResultsLocked

    progress = progress_bar()
    try:
        with progress, warnings_once():  # a small group's warning once, not once per run and metric
            task = progress.add_task("runs", total=len(bench.cells))
            results = run_benchmark(bench, out, ray_address=ray, n_jobs=jobs,
                                    progress=lambda done, total, what: progress.update(task, completed=done, total=total,
                                                                                       description=what[:70]))
    except ResultsLocked as exc:  # another `bench run` writes this --out
        fail(str(exc))
    print_leaderboard(leaderboard(results), results.selection.get("rule", ""))
    if not results.failed.empty:
        console.print(f"[bold red]{len(results.failed)} run(s) failed[/] (see runs/<id>/error.json; rerun to retry):")
        for row in results.failed.itertuples():
            console.print(f"  {row.run_id} {row.usage}/{row.method} seed {row.seed}: {row.error}")
    console.print(f"[green]results[/] {Path(out) / 'results.parquet'}", soft_wrap=True)
    if not results.failed.empty:
        raise typer.Exit(code=1)


@bench_app.command("init")
def init_command(
    path: Annotated[Path, typer.Argument(help="Spec file to write (YAML).")] = Path("my_spec.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a commented template spec (6 small runs on synthetic data) to edit and run."""
    from importlib.resources import files

    if path.exists() and not force:
        fail(f"{path} exists; give another path, or --force to replace it")
    if path.parent != Path("") and not path.parent.is_dir():
        fail(f"folder {path.parent} does not exist; create it first or give another path")
    path.write_text((files("medequity.bench") / "specs" / "template.yaml").read_text())
    console.print(f"[green]wrote[/] {path} — edit it, then: medequity bench run {path} --out results/mine", soft_wrap=True)


@bench_app.command("report")
def report_command(out: Annotated[Path, typer.Argument(help="Results folder of `medequity bench run`.")]) -> None:
    """Write the HTML report of a benchmark's results folder."""
    if not (out / "runs").is_dir():
        fail(f"{out} holds no benchmark results (no runs/ folder); run `medequity bench run SPEC.yaml --out {out}` first")
    from medequity.bench.report import write_bench_report

    path = write_bench_report(out)
    console.print(f"[green]wrote[/] {path}", soft_wrap=True)


# leaderboard column -> terminal heading, per headline metric (bench.store.HEADLINES)
BOARD_COLUMNS = {
    "auc": (("auc", "AUC"), ("worst_group_auc", "worst-group AUC"), ("auc_gap", "AUC gap [95% CI]"), ("es_auc", "ES-AUC")),
    "dice": (("dice", "Dice"), ("worst_group_dice", "worst-group Dice"), ("dice_gap", "Dice gap [95% CI]"),
             ("es_dice", "ES-Dice")),
}


def print_leaderboard(board, rule: str) -> None:
    if board.empty:
        console.print("no finished runs yet")
        return
    columns = BOARD_COLUMNS["dice" if "dice" in board.columns else "auc"]
    segmentation = "dice" in board.columns
    for (dataset, usage, attribute), rows in board.groupby(["dataset", "usage", "train_attribute"], sort=False):
        zero_shot = segmentation and usage.startswith("seg_zs")  # prompt types are settings, nothing is selected
        title = (f"{dataset} · {usage} · {attribute} (zero-shot; prompt type {usage.partition(':')[2] or '—'})"
                 if zero_shot else f"{dataset} · {usage} · {attribute} (hyper-parameters chosen on validation by {rule})")
        seeds = sorted(set(int(n) for n in rows.n_seeds))
        interval = ("95% bootstrap CI" if seeds == [1] else "95% t-interval over seeds, ≥ 0" if min(seeds) > 1
                    else "95% CI: bootstrap (1 seed) or t over seeds")
        table = Table(title=title)
        headings = [heading.replace("95% CI", interval) for _, heading in columns]
        for column in ("segmenter" if segmentation else "model", "method", "seeds", *headings):
            table.add_column(column, justify="left" if column in ("model", "segmenter", "method") else "right")
        for row in rows.to_dict("records"):
            values = []
            for name, _ in columns:
                text = _fmt(row[name])
                if name.endswith("_gap"):
                    text += f" [{_fmt(row['gap_ci_low'])}, {_fmt(row['gap_ci_high'])}]"
                values.append(text)
            table.add_row(str(row["model"]), str(row["method"]), str(row["n_seeds"]), *values)
        console.print(table)


def _fmt(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
