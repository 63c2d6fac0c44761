"""``medequity bench init``: a template spec that loads, refuses to overwrite, and documents the grid."""

from __future__ import annotations

from typer.testing import CliRunner

from medequity.bench import load_spec
from medequity.cli import app


def test_init_writes_a_valid_template_and_keeps_an_existing_file(tmp_path):
    path = tmp_path / "my_spec.yaml"
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "init", str(path)])
    assert result.exit_code == 0, result.output
    spec = load_spec(path)
    assert spec.warnings == []  # equal tuning budgets: no MEDFAIR warning in a template
    assert len(spec.cells) == 6  # 2 usages x 3 methods x 1 attribute x 1 seed
    assert "grid:" in path.read_text()  # the grid syntax is shown (commented out)
    path.write_text("mine")
    again = runner.invoke(app, ["bench", "init", str(path)])
    assert again.exit_code == 2 and "exists" in again.output and "--force" in again.output
    assert path.read_text() == "mine"
    forced = runner.invoke(app, ["bench", "init", str(path), "--force"])
    assert forced.exit_code == 0 and load_spec(path).name == "my-benchmark"


def test_the_commented_grid_expands_as_the_template_says(tmp_path):
    """Uncommenting the template's grid line (instead of params) gives "one run per combination (here 4)"."""
    path = tmp_path / "my_spec.yaml"
    CliRunner().invoke(app, ["bench", "init", str(path)])
    text = path.read_text()
    grid_line = next(line for line in text.splitlines() if line.strip().startswith("# grid:"))
    text = text.replace("    params: {step_size: 0.01}\n", "").replace(grid_line, grid_line.replace("# grid:", "grid:", 1))
    path.write_text(text)
    spec = load_spec(path)
    groupdro = sorted((c.spec.method_params["step_size"], c.spec.method_params["adjustment"])
                      for c in spec.cells if c.spec.method == "groupdro" and c.spec.usage == "ft")
    assert groupdro == [(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]
    assert len(spec.cells) == 2 * (1 + 1 + 4) and spec.warnings  # and the unequal-budget warning appears
