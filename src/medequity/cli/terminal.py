"""Terminal summaries: the finding first, in plain words, within 80 columns.

Lines wrap between words only, so a number and its interval are never split inside a number.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from medequity.report.findings import METRIC_WORDS


def print_audit_summary(report, console: Console | None = None) -> None:
    """Per task and attribute: the group on the worse side of all samples for AUC (and for TPR/FPR
    when significant), its value with its interval, the adjusted test, then where the report is."""
    console = console or Console()
    s = report.settings
    ci = f"{100 * float(s.get('ci') or 0.95):g}%"
    console.print(f"[bold]Fairness audit[/] — {s.get('n_samples')} samples. Each group is compared with all "
                  f"samples; {ci} simultaneous intervals, p-values adjusted over each attribute's groups.")
    findings = report.findings()
    if len(report.tasks) > 1 and not findings.empty:
        console.print("\n[bold]Across findings[/] (largest significant difference first):")
        for row in report.overview().itertuples(index=False):
            mark = "[bold red]![/]" if row.significant else " "
            console.print(f"{mark} {escape(str(row.task))} · {escape(str(row.attribute))}: "
                          f"{escape(str(row.group))} {METRIC_WORDS.get(row.metric, row.metric)} "
                          f"{row.difference:+.3f} vs all, {_p(row.p_adjusted)}")
    for task, part in findings.groupby("task", sort=False):
        if len(report.tasks) > 1:
            console.print(f"\n[bold underline]{escape(str(task))}[/]")
        else:
            console.print()
        for attribute, rows in part.groupby("attribute", sort=False):
            shown = [r for r in rows.itertuples(index=False) if r.metric in ("auc", "dice") or r.significant]
            if not shown:
                shown = [next(rows.itertuples(index=False))]
            for row in shown:
                mark = "[bold red]![/]" if row.significant else "·"
                console.print(f"{mark} [bold]{escape(str(attribute))}[/] — {METRIC_WORDS.get(row.metric, row.metric)}: "
                              f"{escape(row.sentence)}")
    if report.warnings:
        console.print(f"\n[yellow]{len(report.warnings)} warning(s)[/]; first: {escape(report.warnings[0])}")


def _p(p: float) -> str:
    if p != p:
        return "not tested"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
