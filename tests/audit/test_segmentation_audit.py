"""``audit_segmentation`` and ``medequity audit --task segmentation``: PNG and NIfTI tables, errors, CLI, example."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medequity.audit import AuditInputError, SegmentationAuditReport, audit_segmentation
from medequity.cli import app
from medequity.metrics.segmentation import dice_per_sample
from medequity.metrics.surface import hd95_per_sample

runner = CliRunner()
FAST = {"n_boot": 60, "n_permutations": 60, "min_group_size": 5}


def _disk(shape, center, radius):
    grid = np.indices(shape)
    return (sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius**2).astype(np.uint8)


def _png_table(folder, n=24, seed=0):
    """2D masks: group 'B' predictions are shifted further than group 'A' ones (lower Dice)."""
    rng = np.random.default_rng(seed)
    (folder / "gt").mkdir()
    (folder / "pred").mkdir()
    truths, preds, rows = [], [], []
    for i in range(n):
        group = "A" if i % 2 == 0 else "B"
        center = rng.integers(12, 20, size=2)
        shift = rng.integers(0, 2) if group == "A" else rng.integers(3, 6)
        truth = _disk((32, 32), center, rng.integers(5, 8))
        pred = _disk((32, 32), center + np.array([shift, 0]), rng.integers(5, 8))
        Image.fromarray(truth * 255).save(folder / "gt" / f"{i}.png")
        Image.fromarray(pred * 255).save(folder / "pred" / f"{i}.png")
        truths.append(truth)
        preds.append(pred)
        rows.append({"image_id": f"img{i}", "mask_path": f"gt/{i}.png", "pred_path": f"pred/{i}.png", "sex": group})
    table = pd.DataFrame(rows)
    table.to_csv(folder / "table.csv", index=False)
    return table, np.stack(truths), np.stack(preds)


@pytest.fixture
def png(tmp_path):
    return (tmp_path, *_png_table(tmp_path))


def test_png_table_per_group_dice_matches_direct_computation(png):
    folder, table, truths, preds = png
    report = audit_segmentation(folder / "table.csv", attributes=["sex"], mask_values="binary", **FAST)
    assert isinstance(report, SegmentationAuditReport)
    direct = dice_per_sample(preds, truths).values
    np.testing.assert_allclose(report.samples["dice"].to_numpy(), direct)
    result = report.results["sex"]["dice"]
    assert result.groups == ("A", "B")
    expected = [direct.mean(), direct[table["sex"] == "A"].mean(), direct[table["sex"] == "B"].mean()]
    np.testing.assert_allclose(result.values["dice"], expected)
    assert expected[1] > expected[2]
    hd = hd95_per_sample(preds, truths, one_empty="diagonal").values
    np.testing.assert_allclose(report.samples["hd95"].to_numpy(), hd)
    groups = report.groups_frame()
    assert set(groups["metric"]) == {"dice", "iou", "hd95", "nsd"}
    gaps = report.gaps_frame()
    assert {"delta", "std", "skew", "es_std", "es_sum_abs_dev"} <= set(gaps.loc[gaps.metric == "dice", "summary"])
    # best and worst case per group, as 2D overlays
    kinds = {(c.group, c.kind) for c in report.cases}
    assert kinds == {("A", "best"), ("A", "worst"), ("B", "best"), ("B", "worst")}
    worst_b = next(c for c in report.cases if (c.group, c.kind) == ("B", "worst"))
    assert worst_b.dice == pytest.approx(direct[table["sex"] == "B"].min())
    assert worst_b.truth is not None and worst_b.truth.ndim == 2


def test_detected_columns_and_raw_labels(png):
    folder, table, truths, preds = png
    # 0/255 PNGs without mask_values: 255 is the (only) class, the same Dice.
    report = audit_segmentation(table, root=folder, metrics=["dice"], **FAST)
    assert report.settings["truth_column"] == "mask_path" and report.settings["prediction_column"] == "pred_path"
    assert report.settings["attributes"] == ["sex"]
    np.testing.assert_allclose(report.samples["dice"].to_numpy(), dice_per_sample(preds, truths).values)


def test_nifti_3d_table_uses_header_spacing(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(1)
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    truths, preds, rows = [], [], []
    for i in range(10):
        group = "old" if i < 5 else "young"
        truth = _disk((20, 20, 10), (10, 10, 5), 4)
        pred = _disk((20, 20, 10), (10 + (1 if group == "young" else 3), 10, 5 + rng.integers(0, 2)), 4)
        nib.save(nib.Nifti1Image(truth.astype(np.int16), affine), tmp_path / f"gt{i}.nii.gz")
        nib.save(nib.Nifti1Image(pred.astype(np.int16), affine), tmp_path / f"pr{i}.nii.gz")
        truths.append(truth)
        preds.append(pred)
        rows.append({"id": i, "truth": f"gt{i}.nii.gz", "prediction": f"pr{i}.nii.gz", "age_group": group})
    report = audit_segmentation(pd.DataFrame(rows), root=tmp_path, attributes=["age_group"], **FAST)
    truths, preds = np.stack(truths), np.stack(preds)
    direct = dice_per_sample(preds, truths).values
    np.testing.assert_allclose(report.samples["dice"].to_numpy(), direct)
    np.testing.assert_allclose(report.results["age_group"]["dice"].values["dice"][1:], [direct[:5].mean(), direct[5:].mean()])
    hd = hd95_per_sample(preds, truths, spacing=(1.0, 1.0, 2.5), one_empty="diagonal").values
    np.testing.assert_allclose(report.samples["hd95"].to_numpy(), hd)
    assert set(report.samples["spacing"]) == {"1,1,2.5"}
    case = report.cases[0]
    assert case.truth.shape == (20, 20) and "slice" in case.where
    paths = report.save(tmp_path / "out")
    assert "Best and worst case per group" in paths["html"].read_text()


def _write_table(folder, table):
    table.to_csv(folder / "table.csv", index=False)
    return folder / "table.csv"


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd"])
def test_path_escaping_the_root_is_refused_naming_row_and_column(png, bad):
    folder, table, _, _ = png
    table.loc[3, "pred_path"] = bad
    with pytest.raises(AuditInputError, match=r"row 3.*'pred_path'.*outside"):
        audit_segmentation(_write_table(folder, table), metrics=["dice"], **FAST)


def test_missing_file_is_named(png):
    folder, table, _, _ = png
    (folder / "gt" / "5.png").unlink()
    with pytest.raises(AuditInputError, match=r"row 5.*'mask_path'.*not found.*gt/5\.png"):
        audit_segmentation(folder / "table.csv", metrics=["dice"], **FAST)


def test_mis_shaped_mask_is_named(png):
    folder, table, _, _ = png
    Image.fromarray(np.zeros((16, 32), dtype=np.uint8)).save(folder / "pred" / "7.png")
    with pytest.raises(AuditInputError, match=r"row 7.*pred/7\.png.*\(16, 32\).*\(32, 32\)"):
        audit_segmentation(folder / "table.csv", metrics=["dice"], **FAST)


def test_per_sample_dice_column_and_column_errors(tmp_path):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"image_id": range(40), "dsc": rng.uniform(0.5, 0.9, 40), "site": ["x", "y"] * 20})
    report = audit_segmentation(table, root=tmp_path, attributes=["site"], **FAST)
    assert report.metrics == ["dice"]
    expected = table.groupby("site")["dsc"].mean().to_numpy()
    np.testing.assert_allclose(report.results["site"]["dice"].values["dice"][1:], expected)
    assert report.cases and all(c.truth is None for c in report.cases)
    assert "No overlays" in report.save(tmp_path / "out")["html"].read_text()
    with pytest.raises(AuditInputError, match=r"no predicted-mask column.*Available columns.*'site'"):
        audit_segmentation(table.drop(columns="dsc"), root=tmp_path, attributes=["site"], **FAST)
    with pytest.raises(AuditInputError, match=r"values outside \[0, 1\]"):
        audit_segmentation(table.assign(dsc=table.dsc * 2), root=tmp_path, attributes=["site"], **FAST)


def test_cli_segmentation_audit_writes_report(png):
    folder, _, _, _ = png
    out = folder / "out"
    result = runner.invoke(app, ["audit", str(folder / "table.csv"), "--task", "segmentation", "--root", str(folder),
                                 "--truth", "mask_path", "--prediction", "pred_path", "-a", "sex", "--mask-values", "binary",
                                 "--n-boot", "50", "--n-permutations", "50", "--min-group-size", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"report.html", "report.json", "groups.csv", "gaps.csv"}
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["task"] == "segmentation"
    assert set(report["attributes"]["sex"]["metrics"]) == {"dice", "iou", "hd95", "nsd"}
    html = (out / "report.html").read_text()
    assert "ES-Dice" in html and "DSC_ES" in html and "Dice distributions" in html
    assert "Dice Δ" in result.output


def test_cli_segmentation_errors_exit_with_message(png):
    folder, table, _, _ = png
    table.loc[0, "mask_path"] = "../../secret.png"
    path = _write_table(folder, table)
    result = runner.invoke(app, ["audit", str(path), "--task", "segmentation", "--out", str(folder / "o")])
    assert result.exit_code == 2
    assert "row 0" in result.output and "outside" in result.output


def test_cli_example_shows_the_built_in_bias(tmp_path):
    out = tmp_path / "example"
    result = runner.invoke(app, ["audit", "--example", "--task", "segmentation", "--n-boot", "200",
                                 "--n-permutations", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    groups = pd.read_csv(out / "groups.csv")
    dice = groups[(groups.metric == "dice") & (groups.attribute == "skin_tone")].set_index("group")
    assert dice.loc["IV-VI", "ci_high"] < dice.loc["I-III", "ci_low"]  # the affected group's Dice is lower
    gaps = pd.read_csv(out / "gaps.csv")
    delta = gaps[(gaps.metric == "dice") & (gaps.summary == "delta")].set_index("attribute")
    assert delta.loc["skin_tone", "p_value"] < 0.05 and delta.loc["sex", "p_value"] > 0.05
    assert (out / "report.html").exists()
    # the finding first: the affected group, significantly below all samples, in the terminal and the page
    findings = pd.read_csv(out / "findings.csv").set_index(["attribute", "metric"])
    skin = findings.loc[("skin_tone", "dice")]
    assert skin.group == "IV-VI" and bool(skin.significant) and skin.ci_high < 0
    assert not bool(findings.loc[("sex", "dice")].significant)
    assert "IV-VI has the lowest Dice" in " ".join(result.output.split())
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.index("IV-VI has the lowest Dice") < html.index('id="settings"')
    # each group vs all samples, as on the classification page: the numbers of contrasts.csv, IV-VI's Dice marked
    contrasts = pd.read_csv(out / "contrasts.csv")
    for attribute in ("skin_tone", "sex"):
        shown = _contrast_cells(html, attribute)
        expected = contrasts[contrasts.attribute == attribute]
        assert len(shown) == len(expected) == 8  # 2 groups x Dice, IoU, HD95, NSD
        for row in expected.itertuples(index=False):
            value, low, high, p, significant = shown[(row.group, row.metric)]
            assert value == pytest.approx(row.difference, abs=5e-4)
            assert (low, high) == pytest.approx((row.ci_low, row.ci_high), abs=5e-4)
            assert p == pytest.approx(row.p_adjusted, rel=0.05)
            assert significant == bool(row.significant)
    assert _shown_significant(html, "skin_tone", "IV-VI", "dice") and not _shown_significant(html, "sex", "female", "dice")
    skin_dice = contrasts.set_index(["attribute", "group", "metric"]).loc[("skin_tone", "IV-VI", "dice")]
    assert bool(skin_dice.significant) and skin_dice.ci_high < 0
    assert not contrasts[(contrasts.attribute == "sex") & (contrasts.metric == "dice")].significant.any()


_HEADER_METRICS = {"Dice": "dice", "IoU": "iou", "HD95 ↓": "hd95", "NSD": "nsd"}


def _contrast_cells(html: str, attribute: str) -> dict:
    """(group, metric) -> (difference, CI low, CI high, adjusted p, marked significant) read off the
    'Each group vs all samples' table of one attribute's section of the page."""
    section = html[html.index(f"<h2>{attribute}</h2>"):]
    section = section[:section.index("</section>")]
    assert section.count("<h3>Each group vs all samples</h3>") == 1
    table = section[section.index('<table class="contrasts">'):]
    table = table[:table.index("</table>")]
    metrics = [_HEADER_METRICS[m] for m in re.findall(r'<th class="num">([^<:]+): group − all', table)]
    cells = {}
    for group, body in re.findall(r"<tr><td>([^<]+)</td>(.*?)</tr>", table, flags=re.S):
        found = re.findall(r'<td class="num( significant)?">([-+][\d.]+)<span class="ci">\[([-\d.]+), ([-\d.]+)\]</span> '
                           r'<span class="p">p = ([\d.e-]+)</span></td>', body)
        assert len(found) == len(metrics), body
        for metric, (mark, value, low, high, p) in zip(metrics, found):
            cells[(group, metric)] = (float(value), float(low), float(high), float(p), bool(mark))
    return cells


def _shown_significant(html: str, attribute: str, group: str, metric: str) -> bool:
    return _contrast_cells(html, attribute)[(group, metric)][4]
