"""What a validation returns: the claims it checked (each with its observed value, the bound it had
to meet and the tolerance) and the table of numbers behind them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Claim:
    """One paper claim checked on data whose bias mechanism is known.

    ``observed`` must satisfy ``observed <op> bound`` (``op`` is ``">="`` or ``"<="``; the bound
    already includes the tolerance). ``statement`` says the claim in words, ``source`` where the
    paper makes it.
    """

    name: str
    statement: str
    observed: float
    op: str
    bound: float
    source: str = ""

    def __post_init__(self):
        if self.op not in (">=", "<="):
            raise ValueError(f"op must be '>=' or '<='; got {self.op!r}")

    @property
    def passed(self) -> bool:
        if not (math.isfinite(self.observed) and math.isfinite(self.bound)):
            return False  # a NaN (e.g. a group without both classes) never passes silently
        return self.observed >= self.bound if self.op == ">=" else self.observed <= self.bound

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statement": self.statement, "observed": self.observed, "op": self.op,
                "bound": self.bound, "passed": self.passed, "source": self.source}


@dataclass
class ValidationResult:
    """A finished validation: ``claims`` (all must pass), ``table`` (one row per model/seed), the
    ``settings`` it ran with and notes on reading it."""

    method: str
    preset: str
    claims: list[Claim]
    table: pd.DataFrame
    settings: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.claims) and all(claim.passed for claim in self.claims)

    def claim(self, name: str) -> Claim:
        for claim in self.claims:
            if claim.name == name:
                return claim
        raise KeyError(f"no claim {name!r}; claims: {[c.name for c in self.claims]}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "preset": self.preset, "passed": self.passed,
                "claims": [claim.to_dict() for claim in self.claims], "settings": self.settings,
                "seconds": self.seconds, "notes": self.notes,
                "table": json.loads(self.table.to_json(orient="records"))}

    def save(self, out: str | Path) -> dict[str, Path]:
        """``validation.json`` (claims, settings, provenance, table), ``validation.csv`` and
        ``validation.png`` (claims against their bounds, and the numbers behind them), atomically."""
        from medequity.provenance import provenance
        from medequity.utils.io import atomic_write_text

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        record = {**self.to_dict(), "provenance": provenance()}
        from medequity.validation.plots import save_validation_figure

        return {"json": atomic_write_text(out / "validation.json", json.dumps(record, indent=2, default=str)),
                "csv": atomic_write_text(out / "validation.csv", self.table.to_csv(index=False)),
                "png": save_validation_figure(self, out)}

    def summary(self) -> str:
        """Plain-text verdict, one line per claim (for logs, assertion messages and notes)."""
        lines = [f"{self.method} on {self.preset}: {'PASS' if self.passed else 'FAIL'} ({self.seconds:.0f} s)"]
        for claim in self.claims:
            lines.append(f"  {'PASS' if claim.passed else 'FAIL'} {claim.name}: {claim.observed:.4f} {claim.op} "
                         f"{claim.bound:.4f} — {claim.statement}")
        return "\n".join(lines)
