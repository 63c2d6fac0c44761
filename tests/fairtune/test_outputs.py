"""FairTune outputs: Fig. 4 mask grid, Fig. 5 convergence, report files, the typer CLI with resume."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from medequity.cli.fairtune import fairtune_app
from medequity.fairtune.plots import convergence_figure, mask_figure, mask_frequency, mask_grid


def test_mask_grid_is_blocks_by_components_and_frequency_averages_masks():
    a = {"blocks.0.attn": 1, "blocks.0.mlp": 0, "blocks.0.norm": 1, "blocks.1.attn": 0, "blocks.1.mlp": 0, "blocks.1.norm": 1}
    b = {**a, "blocks.1.attn": 1, "blocks.0.norm": 0}
    grid = mask_grid(mask_frequency([a, b]))
    assert list(grid.columns) == ["Attention", "MLP", "LayerNorm"] and list(grid.index) == [0, 1]
    assert grid.loc[0].tolist() == [1.0, 0.0, 0.5] and grid.loc[1].tolist() == [0.5, 0.0, 1.0]
    assert mask_grid(mask_frequency({"layer1": 1, "layer2": 0})) is None  # non-ViT groups: plain list
    assert mask_figure(a, searched=[g for g in a if g.endswith(".attn")]).axes
    assert mask_figure({"layer1": 1, "layer2": 0}).axes


def test_convergence_best_so_far_ignores_pruned_trials():
    history = pd.DataFrame({"number": [0, 1, 2, 3], "state": ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"],
                            "value": [0.6, 0.9, 0.7, 0.65], "last_reported": [0.6, 0.9, 0.7, 0.65]})
    fig = convergence_figure(history)
    best_line = fig.axes[0].lines[0]
    assert list(best_line.get_ydata()) == [0.6, 0.6, 0.7, 0.7]


OPTIONS = ["--dataset", "synthetic", "--option", "preset=cxr-sex-prevalence", "--option", "n=300", "--option", "image_size=32",
           "--attribute", "sex", "--model", "vit_tiny_patch16_224", "--model-option", "input_size=32", "--model-option", "depth=2",
           "--model-option", "embed_dim=32", "--model-option", "num_heads=2", "--model-option", "patch_size=8",
           "--epochs", "1", "--batch-size", "64", "--n-boot", "0", "--no-progress", "--device", "cpu"]


def test_cli_search_writes_outputs_and_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'ft.db'}"
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(fairtune_app, ["search", *OPTIONS, "--trials", "2", "--storage", storage, "--out", str(out), "--no-retrain"])
    assert first.exit_code == 0, first.output
    best = json.loads((out / "best.json").read_text())
    assert len(best["mask_bits"]) == 6 and 1e-5 <= best["best_lr"] <= 1e-3 and best["n_trials"] == 2
    for name in ("history.csv", "mask.png", "convergence.png", "report.html"):
        assert (out / name).stat().st_size > 0
    second = runner.invoke(fairtune_app, ["search", *OPTIONS, "--trials", "3", "--storage", storage, "--out", str(out),
                                          "--space", "full"])
    assert second.exit_code == 0, second.output
    history = pd.read_csv(out / "history.csv")
    assert history["number"].tolist() == [0, 1, 2]
    assert (out / "final" / "predictions.parquet").exists()
    assert "Best mask" in (out / "report.html").read_text()
    bad = runner.invoke(fairtune_app, ["search", "--space", "attn", "--model", "resnet18", "--option", "n=100", "--out", str(out)])
    assert bad.exit_code == 2 and "no groups" in bad.output


def test_two_processes_search_one_study_on_shared_storage(tmp_path):
    """Two ``python -m medequity fairtune search`` processes with one --storage fill one study
    together: the trial budget is shared (not 2 × trials), both contribute, numbers are unique."""
    import os
    import subprocess
    import sys

    import optuna

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "medequity", "fairtune", "search", *OPTIONS, "--trials", "6", "--storage", storage,
               "--no-retrain"]
    workers = [subprocess.Popen([*command, "--sampler-seed", str(seed), "--out", str(tmp_path / f"out{seed}")], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for seed in (0, 1)]
    for worker in workers:
        output, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, output
    (name,) = optuna.study.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert 6 <= len(finished) <= 7  # the budget is the study's; a race may start one extra trial
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both processes ran trials


def _open_storage_at_once(url, barrier):
    from medequity.fairtune.search import _storage

    barrier.wait()
    _storage(url)


def test_workers_creating_one_new_sqlite_storage_at_once_all_succeed(tmp_path):
    """Optuna's schema creation races (``UNIQUE constraint failed: alembic_version``) when several
    workers open a new SQLite file at the same moment; without the creation lock 4 workers released
    together by a barrier fail in most rounds (measured: 11 of 24 processes)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for round_ in range(2):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        barrier = context.Barrier(4)
        workers = [context.Process(target=_open_storage_at_once, args=(url, barrier)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
