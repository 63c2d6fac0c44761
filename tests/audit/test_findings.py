"""The finding first: worst group, its interval, the adjusted test, in reports and within 80 columns."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from medequity.audit import audit
from medequity.cli.terminal import print_audit_summary


def _cxr_like(n=3000, seed=0):
    """Race with a real AUC deficit in Black patients (issue 14's case); sex without one."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["White", "Black", "Asian", "Other"], n, p=[0.6, 0.2, 0.12, 0.08])
    sex = rng.choice(["F", "M"], n)
    y = rng.binomial(1, 0.3, n)
    strength = np.where(race == "Black", 1.0, 1.8)
    effusion = 1 / (1 + np.exp(-(rng.normal(size=n) + strength * y - 0.9)))
    y2 = rng.binomial(1, 0.2, n)
    edema = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.8 * y2 - 1.2)))
    return pd.DataFrame({"Effusion": y, "score_Effusion": effusion, "Edema": y2, "score_Edema": edema,
                         "sex": sex, "race": race})


@pytest.fixture(scope="module")
def report():
    frame = _cxr_like()
    return audit(frame, label=["Effusion", "Edema"], attributes=["sex", "race"], n_boot=200)


def test_the_built_in_deficit_is_the_headline(report):
    findings = report.findings().set_index(["task", "attribute", "metric"])
    race = findings.loc[("Effusion", "race", "auc")]
    assert race.group == "Black" and race.significant and race.ci_high < 0
    assert race.value < race.pooled
    assert "Black has the lowest AUC" in race.sentence and "Significant" in race.sentence
    # the interval and the verdict agree for every finding
    excludes = (findings.ci_low > 0) | (findings.ci_high < 0)
    assert (excludes == findings.significant).all()
    # Edema has no built-in difference: not flagged for race or sex
    assert not findings.loc[("Edema", "race", "auc")].significant
    assert not findings.loc[("Edema", "sex", "auc")].significant


def test_overview_puts_the_task_with_the_largest_significant_difference_first(report):
    overview = report.overview()
    assert list(overview.task) == ["Effusion", "Edema"]
    assert overview.iloc[0].attribute == "race" and overview.iloc[0].group == "Black"


def _numbers(text: str) -> list[str]:
    return re.findall(r"-?\d+\.\d+|p < 0\.001", " ".join(text.split()))


@pytest.mark.parametrize("width", [80, 120])
def test_terminal_summary_fits_and_never_breaks_a_number(report, width):
    narrow, wide = io.StringIO(), io.StringIO()
    print_audit_summary(report, Console(file=narrow, width=width))
    print_audit_summary(report, Console(file=wide, width=1000))
    lines = narrow.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width
    # every number of the unwrapped summary appears whole in the wrapped one, in the same order
    assert _numbers(narrow.getvalue()) == _numbers(wide.getvalue())
    for token in _numbers(narrow.getvalue()):
        assert any(token in line for line in lines), token
    assert "Black" in narrow.getvalue()


def test_html_puts_findings_before_settings(report, tmp_path):
    paths = report.save(tmp_path / "out")
    html = paths["html"].read_text(encoding="utf-8")
    body = html[html.index("<main>"):]
    assert body.index('id="findings"') < body.index('id="settings"')
    assert body.index("Black has the lowest AUC") < body.index('id="settings"')
    assert body.index("Black has the lowest AUC") < 6000  # first screen: the finding, not the settings
    contrasts = pd.read_csv(paths["contrasts"])
    assert {"difference", "ci_low", "ci_high", "p_adjusted", "significant"} <= set(contrasts.columns)
    findings = pd.read_csv(paths["findings"])
    assert len(findings) == len(report.findings())
