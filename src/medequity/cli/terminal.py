"""Terminal summaries (rich tables)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table


def _cell(value) -> str:
    if not isinstance(value, tuple):
        return str(value)
    point, low, high, p = value
    if point is None or (isinstance(point, float) and math.isnan(point)):
        return "[yellow]undefined[/]"
    text = f"{point:.3f}"
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [dim][{low:.3f}, {high:.3f}][/]"
    if not math.isnan(p):
        text += f" [bold red]p={p:.3f}[/]" if p < 0.05 else f" [dim]p={p:.2f}[/]"
    return text


def print_audit_summary(report, console: Console | None = None) -> None:
    """One row per task × attribute: AUC, worst group, gaps with CIs and permutation p-values."""
    console = console or Console()
    headline = report.headline()
    table = Table(title="Fairness audit (95% bootstrap CIs; p = permutation test of gap = 0)", show_lines=False)
    for column in headline.columns:
        table.add_column(column, overflow="fold")
    for _, row in headline.iterrows():
        table.add_row(*[_cell(v) for v in row.tolist()])
    console.print(table)
    if report.warnings:
        console.print(f"[yellow]{len(report.warnings)} warning(s)[/]; first: {report.warnings[0]}")
