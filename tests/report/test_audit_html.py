"""The self-contained HTML page of ``medequity audit``."""

from __future__ import annotations

import html
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from medequity.audit import audit
from medequity.report.audit_html import build_context, expected_figure_count, format_ci, format_value, render_audit_html

WEIRD = "<b>x&y</b>"  # a group name that must be escaped
WEIRD_ATTRIBUTE = "site <&>"


def _table(n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    site = rng.choice(["north", "south", WEIRD], size=n, p=[0.5, 0.44, 0.06]).astype(object)
    sex = rng.choice(["F", "M"], size=n).astype(object)
    sex[:5] = None  # missing attribute values
    label = rng.integers(0, 2, size=n)
    label[site == WEIRD] = 0  # one class: AUC and TPR undefined for that group, and it is small
    score = np.clip(0.5 + 0.3 * (label - 0.5) + rng.normal(0, 0.2, size=n), 0, 1)
    return pd.DataFrame({"label": label, "score": score, "sex": sex, WEIRD_ATTRIBUTE: site})


@pytest.fixture(scope="module")
def report():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit(_table(), attributes=["sex", WEIRD_ATTRIBUTE], intersections=True, n_boot=50, n_permutations=50)


@pytest.fixture(scope="module")
def page(report):
    return render_audit_html(report)


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)


def test_page_is_self_contained(page):
    assert page.lstrip().startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    lowered = page.lower()
    for pattern in ('src="http', "src='http", 'href="http', "href='http", "url(http", "@import", "<script src",
                    '<link'):
        assert pattern not in lowered, pattern
    assert not re.search(r'(src|href)="//', lowered)  # protocol-relative
    assert all(src.startswith("data:image/png;base64,") for src in _img_sources(page))


def test_every_attribute_and_group_is_named_and_escaped(report, page):
    assert WEIRD not in page and WEIRD_ATTRIBUTE not in page  # never raw
    assert html.escape(WEIRD, quote=False) in page
    assert html.escape(WEIRD_ATTRIBUTE, quote=False) in page
    for task in report.tasks.values():
        for attribute, result in task.results.items():
            assert html.escape(attribute, quote=False) in page
            for group in result.groups:
                assert html.escape(group, quote=False) in page
    assert "sex &amp; site &lt;&amp;&gt;" in page  # the intersection


def test_nan_groups_are_shown_as_undefined(report, page):
    result = report.tasks["positive"].results[WEIRD_ATTRIBUTE]
    assert np.isnan(result.values["auc"][1 + result.groups.index(WEIRD)])
    row = re.search(r"<tr[^>]*>\s*<td>&lt;b&gt;x&amp;y&lt;/b&gt;.*?</tr>", page, re.S).group(0)
    assert 'class="badge small"' in row  # flagged as a small group
    cells = re.findall(r'<td class="num">(.*?)</td>', row, re.S)
    auc_cell = cells[3]  # n, n_pos, n_neg, then AUC
    assert "undefined" in auc_cell and "0.000" not in auc_cell
    assert not re.search(r">\s*nan\s*<", page, re.I)  # no raw NaN anywhere


def test_one_image_per_expected_plot(report, page):
    n_attributes = sum(len(t.results) for t in report.tasks.values())
    assert n_attributes == 3  # sex, site, sex & site
    # per attribute: metric bars, ROC, calibration, score distributions, gap forest
    assert len(_img_sources(page)) == expected_figure_count(report) == 5 * n_attributes


def test_report_values_appear(report, page):
    result = report.tasks["positive"].results["sex"]
    gap = result.summaries().set_index(["metric", "summary"]).loc[("auc", "gap")]
    assert format_value(gap.value) in page
    assert format_ci(gap.ci_low, gap.ci_high) in page
    adf = report.tasks["positive"].adf["sex"]
    assert format_value(adf["value"]) in page
    assert "fixed, score &gt; 0.5" in page  # threshold rule and value
    assert "B = 50" in page and "single-step min-P" in page  # the gap test says what it is
    assert report.settings["provenance"]["versions"]["numpy"] in page


def test_warnings_box_lists_group_problems(page):
    box = re.search(r'<div class="warnings".*?</div>', page, re.S).group(0)
    assert "undefined (NaN)" in box
    assert "fewer than 30 samples" in box
    assert "missing" in box


def test_glossary_cites_the_papers(page):
    glossary = page[page.index('id="glossary"'):]
    for text in ("FairMedFM", "FairDi", "Harvard", "eq. 24", "MeanPSD", "equalized_odds_difference",
                 "½ |ΔTPR| + ½ |ΔFPR|", "1 − (ΔTPR + ΔTNR) / 2"):
        assert text in glossary, text


def test_headline_cards(report):
    context = build_context(report)
    section = next(s for s in context["sections"] if s["attribute"] == "sex")
    titles = [c["title"] for c in section["cards"]]
    assert titles == ["AUC gap", "Worst-group AUC", "ES-AUC", "DP (selection-rate gap)", "EO (TPR gap)", "EOdds",
                      "ADF I(S;Ŷ|Y)"]
    weird = next(s for s in context["sections"] if s["attribute"] == WEIRD_ATTRIBUTE)
    auc_gap = weird["cards"][0]
    assert auc_gap["value"] == "undefined" and auc_gap["ci"] == ""  # never a fair-looking 0


def test_save_writes_the_page(report, tmp_path):
    paths = report.save(tmp_path)
    text = paths["html"].read_text(encoding="utf-8")
    assert len(_img_sources(text)) == expected_figure_count(report)


def test_without_sample_data_only_summary_plots(report):
    from dataclasses import replace

    bare = replace(report, data=None)
    page = render_audit_html(bare, fmt="svg")
    sources = _img_sources(page)
    assert len(sources) == expected_figure_count(bare) == 2 * 3
    assert all(src.startswith("data:image/svg+xml;base64,") for src in sources)
    assert "need the audited table" in page


def test_prediction_only_audit():
    table = _table(200, seed=3)
    table["pred"] = (table["score"] > 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = audit(table.drop(columns="score"), prediction="pred", attributes=["sex"], n_boot=20, n_permutations=20)
    page = render_audit_html(report)
    assert len(_img_sources(page)) == expected_figure_count(report) == 2
    assert "No score column" in page and "hard predictions given" in page


def test_format_helpers():
    assert format_value(np.nan) == "undefined" and format_value(None) == "undefined"
    assert format_value(0.12345) == "0.123"
    assert format_value(0.000123) == "0.00012"
    assert format_ci(0.1, np.nan) == ""
    assert format_ci(0.1, 0.2) == "[0.100, 0.200]"
