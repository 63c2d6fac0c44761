"""Hostile inputs to ``medequity audit``: each is one line naming the fix, exit status 2, no
traceback, no progress bar, and an earlier report in the same --out is left exactly as it was."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medequity.audit import AuditInputError, audit
from medequity.cli import app

runner = CliRunner()


def _table(n=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0.001, 0.999)
    return pd.DataFrame({"id": np.arange(n), "label": y, "score": score, "sex": rng.choice(["F", "M"], n),
                         "age": rng.uniform(20, 90, n).round(1), "race": rng.choice(["White", "Black", "Asian"], n)})


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def earlier(tmp_path):
    """A predictions table and an earlier audit's report folder."""
    table = _table()
    table.to_csv(tmp_path / "ok.csv", index=False)
    out = tmp_path / "out"
    audit(table, attributes=["sex"], n_boot=0, n_permutations=0).save(out, html=False)
    return tmp_path, out, _snapshot(out)


def _write(tmp_path, name, table):
    path = tmp_path / name
    if name.endswith(".parquet"):
        table.to_parquet(path)
    else:
        table.to_csv(path, index=False)
    return path


def _variants():
    t = _table()
    nan, inf, single, dup = t.copy(), t.copy(), t.copy(), t.copy()
    nan.loc[3, "score"] = np.nan
    inf.loc[7, "score"] = np.inf
    single["sex"] = "F"
    dup.loc[5, "id"] = 4
    nested = t.copy()
    nested["nested"] = [{"a": i % 2} for i in range(len(t))]
    return {  # file, extra options, words the one-line message must hold
        "nan score": ("nan.csv", nan, ["-a", "sex"], ["'score'", "NaN/inf", "rows [3]", "drop those rows"]),
        "inf score": ("inf.csv", inf, ["-a", "sex"], ["'score'", "NaN/inf", "rows [7]"]),
        "single group": ("single.csv", single, ["-a", "sex"], ["nothing to audit", "sex has 1 group ['F']"]),
        "header only": ("header.csv", t.iloc[:0], ["-a", "sex"], ["no rows"]),
        "bin on text": ("ok.csv", None, ["-a", "race", "--bin", "race=>60"], ["--bin", "'race' holds text", "row 0"]),
        "ci": ("ok.csv", None, ["-a", "sex", "--ci", "1.5"], ["--ci 1.5", "between 0 and 1"]),
        "n-boot": ("ok.csv", None, ["-a", "sex", "--n-boot", "-5"], ["--n-boot -5", "0 (no intervals) or more"]),
        "missing": ("ok.csv", None, ["-a", "sex", "--missing", "foo"], ["--missing 'foo'", "'drop'", "'category'"]),
        "threshold 2": ("ok.csv", None, ["-a", "sex", "--threshold", "2"], ["--threshold 2", "between 0 and 1"]),
        "threshold nan": ("ok.csv", None, ["-a", "sex", "--threshold", "nan"], ["--threshold 'nan'", "finite number"]),
        "threshold -1": ("ok.csv", None, ["-a", "sex", "--threshold", "-1"], ["--threshold -1", "between 0 and 1"]),
        "threshold rule": ("ok.csv", None, ["-a", "sex", "--threshold", "best"], ["'best_f1'", "'youden'"]),
        "bin nan": ("ok.csv", None, ["-a", "sex", "--bin", "age=>nan"], ["'age=>nan'", "finite"]),
        "bin repeated cut": ("ok.csv", None, ["--bin", "age=40,40"], ["repeats a cut point"]),
        "duplicated ids": ("dup.csv", dup, ["-a", "sex"], ["'id'", "duplicated", "rows [4, 5]", "patient-level"]),
        "nested parquet": ("nested.parquet", nested, ["-a", "nested"], ["'nested'", "nested values", "flatten"]),
        "intersect repeat": ("ok.csv", None, ["-a", "sex", "--intersect", "sex,sex"], ["repeats an attribute"]),
        "intersect unknown": ("ok.csv", None, ["-a", "sex", "--intersect", "sex,age"], ["['age']", "--attribute"]),
        "label twice": ("ok.csv", None, ["-a", "sex", "--label", "label", "--label", "label"], ["given twice"]),
        "attribute twice": ("ok.csv", None, ["-a", "sex", "-a", "sex"], ["'sex' is given twice"]),
        "probability scores": ("logit.csv", t.assign(score=np.log(t.score / (1 - t.score))),
                               ["-a", "sex", "--scores", "probability"], ["not probabilities", "--scores logit"]),
        "scores type": ("ok.csv", None, ["-a", "sex", "--scores", "odds"], ["'odds'", "--scores"]),
        "task kind": ("ok.csv", None, ["-a", "sex", "--task", "regression"], ["--task", "LABEL=SCORE"]),
    }


@pytest.mark.parametrize("case", list(_variants()))
def test_hostile_input_is_one_line_exit_2_and_leaves_the_earlier_report(earlier, case):
    tmp_path, out, before = earlier
    name, table, options, words = _variants()[case]
    path = tmp_path / name if table is None else _write(tmp_path, name, table)
    # The case's own options come last: a repeated single-valued option takes its last value.
    result = runner.invoke(app, ["audit", str(path), "--n-boot", "0", "--n-permutations", "0", "--no-html",
                                 "--out", str(out), *options])
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert text.startswith("error: ") and "\n" not in text, text  # one line: no traceback, no progress bar
    for word in words:
        assert word in text, (word, text)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_out_naming_a_file_is_refused_before_any_work(tmp_path):
    _table().to_csv(tmp_path / "ok.csv", index=False)
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["audit", str(tmp_path / "ok.csv"), "-a", "sex", "--out", str(tmp_path / "notes.txt")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --out {tmp_path / 'notes.txt'} is a file, not a folder; give a folder path " \
                                    "(new, or an earlier report's)"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failure_while_saving_leaves_the_earlier_report_whole(earlier, monkeypatch):
    """Rendering raises after report.json would have been written: nothing of the new report lands."""
    tmp_path, out, before = earlier
    import medequity.report.audit_html as audit_html

    def broken(report):
        raise OSError("disk full")

    monkeypatch.setattr(audit_html, "render_audit_html", broken)
    report = audit(_table(seed=1), attributes=["sex", "race"], n_boot=0, n_permutations=0)
    with pytest.raises(OSError, match="disk full"):
        report.save(out)
    assert _snapshot(out) == before
    result = runner.invoke(app, ["audit", str(tmp_path / "ok.csv"), "-a", "sex", "-a", "race", "--n-boot", "0",
                                 "--n-permutations", "0", "--out", str(out)])
    assert result.exit_code == 2
    assert "could not write the report" in result.output and "disk full" in result.output
    assert _snapshot(out) == before


def test_a_new_report_replaces_the_earlier_one_as_a_whole(earlier):
    """An earlier report with report.html, rerun with --no-html: the stale report.html goes too."""
    tmp_path, out, _ = earlier
    audit(_table(), attributes=["sex"], n_boot=0, n_permutations=0).save(out, html=True)
    assert (out / "report.html").exists()
    result = runner.invoke(app, ["audit", str(tmp_path / "ok.csv"), "-a", "race", "--n-boot", "0",
                                 "--n-permutations", "0", "--no-html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["contrasts.csv", "findings.csv", "gaps.csv", "groups.csv", "report.json"]
    assert set(pd.read_csv(out / "groups.csv").attribute) == {"race"}


def test_every_attribute_skipped_is_an_input_error_naming_each():
    table = _table()
    table["site"] = "A"
    table["sex"] = "Unknown"
    with pytest.raises(AuditInputError, match=r"nothing to audit: site has 1 group \['A'\].*sex has 0 groups \[\]"):
        audit(table, attributes=["site", "sex"], n_boot=0, n_permutations=0)


def test_an_unusable_attribute_beside_usable_ones_is_skipped_with_a_warning():
    table = _table()
    table["site"] = "A"
    report = audit(table, attributes=["site", "sex"], n_boot=0, n_permutations=0)
    assert list(report.tasks["positive"].results) == ["sex"]
    assert any(w.startswith("site: skipped — has 1 group ['A']") for w in report.warnings)


def test_progress_starts_only_after_the_inputs_are_checked():
    calls = []
    with pytest.raises(AuditInputError):
        audit(_table(), attributes=["sex"], ci=1.5, progress=lambda *a: calls.append(a))
    assert calls == []
    audit(_table(), attributes=["sex", "race"], n_boot=0, n_permutations=0, progress=lambda *a: calls.append(a))
    assert calls[0] == (0, 2, "auditing") and calls[-1][:2] == (2, 2)
