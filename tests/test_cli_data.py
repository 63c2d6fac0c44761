import json

from typer.testing import CliRunner

from medequity.cli import app

runner = CliRunner()


def test_data_card_of_a_synthetic_preset(tmp_path):
    result = runner.invoke(app, ["data", "card", "synthetic", "--option", "preset=cxr-sex-prevalence",
                                 "--option", "n=400", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["n_samples"] == 400
    prevalence = {row["group"]: row["prevalence"] for row in card["groups"] if row["attribute"] == "sex"}
    # the preset's prevalence knob (+30 points for women) shows in the card
    assert prevalence["female"] - prevalence["male"] > 0.15
    assert (tmp_path / "card.csv").is_file()


def test_data_card_unknown_dataset_lists_known_ones():
    result = runner.invoke(app, ["data", "card", "nope"])
    assert result.exit_code == 2
    assert "ham10000" in result.output and "synthetic" in result.output
