"""A segmentation benchmark run in two processes (``bench run --jobs 2``) or on a local Ray cluster
gives what the inline run gives: the same runs, per-run metrics equal to the last digit, the same
predictions, training histories, validation summaries and overlay gallery. Workers share only the
embedding cache folder (written atomically), so the order runs finish in cannot change a result.

One column is not bit-equal: zero-shot SAM's own predicted IoU (a float32 diagnostic in the
predictions, no metric reads it) differs in its last float32 bit (measured 6e-8), because pool
workers run torch with cpu_count // jobs threads and Ray workers with one, the inline run with all
cores, and a float32 reduction split over another number of threads rounds differently (an inline
run with one thread matches the workers bit for bit). It is compared at float32 resolution."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medequity.bench import load_results, load_spec, run_benchmark

pytestmark = pytest.mark.filterwarnings("ignore::medequity.metrics._validation.GroupMetricWarning",
                                        "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")

# sam_tiny zero-shot (its gallery decodes prompts again) and its decoder on cached embeddings, a tiny
# 2D MONAI UNet, ERM and FEBS, one seed: 5 runs
SPEC = {
    "name": "tiny-seg-parallel",
    "task": "segmentation",
    "datasets": [{"name": "synthetic-segmentation", "label": "derm",
                  "options": {"preset": "seg-derm-contrast", "n": 40, "image_size": 32}}],
    "models": ["sam_tiny", {"name": "monai_unet", "options": {"spatial_dims": 2, "channels": [4, 8], "strides": [2],
                                                              "num_res_units": 0}}],
    "usages": ["seg_zs", "seg_decoder", "seg_ft"],
    "methods": ["erm", "febs"],
    "attributes": ["skin_tone"],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 8},
    "evaluation": {"n_boot": 10, "probe": False},
}
# what a run's tables and record may differ in between executors: wall-clock times and timestamps
VOLATILE = {"seconds", "created", "provenance"}
FLOAT32_DIAGNOSTIC = "predicted_iou"  # zero-shot rows: SAM's IoU head output (module doc)


def _spec(tmp_path) -> dict:
    return {**SPEC, "cache_dir": str(tmp_path / "cache")}


@pytest.fixture(scope="module")
def inline(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg-inline")
    out = root / "out"
    run_benchmark(_spec(root), out)
    return out


def _snapshot(out) -> dict:
    """Every run's stored tables and its record without the volatile fields, by run id."""
    results = load_results(out)
    assert results.failed.empty, results.failed.to_dict("records")
    snapshot = {}
    for run_id in sorted(results.runs.run_id):
        folder = out / "runs" / run_id
        record = json.loads((folder / "run.json").read_text())
        tables = {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}
        tables = {name: table.drop(columns=[c for c in table.columns if c in VOLATILE]) for name, table in tables.items()}
        record = {k: v for k, v in record.items() if k not in VOLATILE}
        record["spec"].pop("cache_dir")  # each benchmark here has its own cache folder (a cold cache each)
        snapshot[run_id] = (record, tables)
    return snapshot


def _assert_same(parallel_out, inline_out) -> None:
    got, expected = _snapshot(parallel_out), _snapshot(inline_out)
    assert sorted(got) == sorted(expected) == sorted(c.run_id for c in load_spec(SPEC).cells)
    for run_id, (record, tables) in expected.items():
        other_record, other_tables = got[run_id]
        assert other_record == record, run_id
        assert sorted(other_tables) == sorted(tables) and {"metrics", "predictions", "gallery"} <= set(tables)
        for name, table in tables.items():
            other = other_tables[name]
            if FLOAT32_DIAGNOSTIC in table.columns:  # see the module doc
                pd.testing.assert_series_equal(other.pop(FLOAT32_DIAGNOSTIC), table.pop(FLOAT32_DIAGNOSTIC),
                                               check_exact=False, rtol=1e-6, atol=0, obj=f"{run_id}/{name}")
            # exact: check_exact compares floats bit for bit, the gallery's mask bytes byte for byte
            pd.testing.assert_frame_equal(other, table, check_exact=True, obj=f"{run_id}/{name}")
    # and the table selection and the leaderboards read (selected runs, validation scores)
    runs = [load_results(folder).runs.sort_values("run_id").reset_index(drop=True) for folder in (parallel_out, inline_out)]
    volatile = [c for c in runs[1].columns if c in VOLATILE]
    pd.testing.assert_frame_equal(runs[0].drop(columns=volatile), runs[1].drop(columns=volatile), check_exact=True)


def test_the_inline_run_trains_both_segmenters_with_both_methods(inline):
    runs = load_results(inline).runs
    assert sorted(zip(runs.model, runs.usage, runs.method)) == [
        ("monai_unet", "seg_ft", "erm"), ("monai_unet", "seg_ft", "febs"),
        ("sam_tiny", "seg_decoder", "erm"), ("sam_tiny", "seg_decoder", "febs"), ("sam_tiny", "seg_zs:center", "erm")]
    assert (runs.task == "segmentation").all()


def test_two_worker_processes_give_the_inline_results(tmp_path, inline):
    out = tmp_path / "out"
    run_benchmark(_spec(tmp_path), out, n_jobs=2)
    _assert_same(out, inline)


def test_a_local_ray_cluster_gives_the_inline_results(tmp_path, inline):
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # a sandbox without the sockets/shared memory Ray needs
        pytest.skip(f"Ray cannot start here: {type(exc).__name__}: {exc}")
    try:
        out = tmp_path / "out"
        run_benchmark(_spec(tmp_path), out, ray_address="local")
    finally:
        ray.shutdown()
    _assert_same(out, inline)
