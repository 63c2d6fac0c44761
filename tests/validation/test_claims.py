"""The validation plumbing: claims, results, the G-test bound, mechanism detection, the CLI."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy.stats import chi2
from typer.testing import CliRunner

from medequity.cli import app
from medequity.fair_diagnosis.validation import g_test_bound, mechanism, validate_fair_diagnosis
from medequity.fairdi.validation import validate_fairdi
from medequity.validation import Claim, ValidationResult


def _result(*claims) -> ValidationResult:
    table = pd.DataFrame({"model": ["a", "b"], "auc:x": [0.7, 0.8], "auc:y": [0.6, 0.9]})
    return ValidationResult("fairdi", "derm-skin-tone-representation", list(claims), table, {"seeds": [0]}, 1.5)


def test_claim_directions_and_nan_never_pass():
    assert Claim("a", "", 0.5, ">=", 0.5).passed
    assert not Claim("a", "", 0.49, ">=", 0.5).passed
    assert Claim("a", "", 0.5, "<=", 0.5).passed
    assert not Claim("a", "", 0.51, "<=", 0.5).passed
    assert not Claim("a", "", math.nan, "<=", 0.5).passed
    assert not Claim("a", "", 0.1, ">=", math.nan).passed
    with pytest.raises(ValueError, match="op must be"):
        Claim("a", "", 0.1, ">", 0.0)


def test_result_passes_only_when_every_claim_does_and_has_claims():
    good, bad = Claim("good", "", 1.0, ">=", 0.0), Claim("bad", "", 0.0, ">=", 1.0)
    assert _result(good).passed
    assert not _result(good, bad).passed
    assert not _result().passed  # nothing checked is not a pass
    assert _result(good, bad).claim("bad") is bad
    with pytest.raises(KeyError, match="no claim 'other'"):
        _result(good).claim("other")
    assert "FAIL bad" in _result(good, bad).summary()


def test_save_writes_json_csv_and_figure(tmp_path):
    result = _result(Claim("gap", "the gap is small", 0.01, "<=", 0.02, "FairDi Table 3"))
    paths = result.save(tmp_path / "out")
    record = json.loads(paths["json"].read_text())
    assert record["passed"] is True and record["claims"][0]["bound"] == 0.02
    assert record["table"][1]["auc:y"] == 0.9 and "provenance" in record
    assert pd.read_csv(paths["csv"]).shape == (2, 3)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_g_test_bound_is_the_chi_square_quantile_over_2n():
    assert g_test_bound(300) == pytest.approx(9.2103 / 600, rel=1e-4)  # χ²₂(0.99) = 9.2103
    assert g_test_bound(100, n_groups=3) == pytest.approx(chi2.ppf(0.99, 4) / 200)


def test_mechanism_follows_the_preset_knobs():
    assert mechanism("cxr-sex-shortcut") == "direct"
    assert mechanism("cxr-acquisition") == "direct"
    assert mechanism("cxr-sex-prevalence") == "indirect"
    assert mechanism("cxr-sex-shortcut-prevalence") == "both"
    assert mechanism("cxr-sex-shortcut-prevalence", {"shortcut": None}) == "indirect"
    with pytest.raises(ValueError, match="neither a direct"):
        mechanism("fundus-race-difficulty")


def test_bad_arguments_fail_before_training():
    with pytest.raises(ValueError, match="size must be one of"):
        validate_fairdi(size="huge")
    with pytest.raises(ValueError, match="give the attribute"):
        validate_fairdi("cxr-unbiased")
    with pytest.raises(ValueError, match="unknown variants"):
        validate_fair_diagnosis(variants=("teleport",))


def test_cli_saves_results_and_exits_1_on_a_failed_claim(tmp_path, monkeypatch):
    import medequity.fairdi.validation as module

    outcome = {"claim": Claim("gap", "the gap is small", 0.05, "<=", 0.02)}
    monkeypatch.setattr(module, "validate_fairdi", lambda *a, **k: _result(outcome["claim"]))
    runner = CliRunner()
    failed = runner.invoke(app, ["validate", "fairdi", "--quick", "--out", str(tmp_path)])
    assert failed.exit_code == 1, failed.output
    assert "FAIL" in failed.output and "some claims fail" in failed.output
    assert json.loads((tmp_path / "fairdi" / "validation.json").read_text())["passed"] is False
    outcome["claim"] = Claim("gap", "the gap is small", 0.01, "<=", 0.02)
    passed = runner.invoke(app, ["validate", "fairdi", "--quick", "--out", str(tmp_path)])
    assert passed.exit_code == 0, passed.output
    assert "all claims hold" in passed.output


def test_cli_rejects_a_bad_part():
    result = CliRunner().invoke(app, ["validate", "fairtune", "--part", "fig9"])
    assert result.exit_code == 2 and "--part must be" in result.output
