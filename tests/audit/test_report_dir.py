"""utils.io.atomic_directory: a report folder is written all or none."""

import os

import pytest

from medequity.utils.io import atomic_directory

REPORT = ("report.json", "groups.csv")


def _files(folder):
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_new_folder_is_created_whole_with_plain_permissions(tmp_path):
    out = tmp_path / "a" / "report"
    with atomic_directory(out, replaceable=REPORT) as scratch:
        assert scratch.parent == out.parent and scratch != out and not out.exists()
        (scratch / "report.json").write_text("new")
    assert _files(out) == {"report.json": "new"}
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert [p.name for p in out.parent.iterdir()] == ["report"]


def test_earlier_report_is_replaced_as_a_whole(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text("old")
    (out / "groups.csv").write_text("old")
    with atomic_directory(out, replaceable=REPORT) as scratch:
        (scratch / "report.json").write_text("new")
    assert _files(out) == {"report.json": "new"}  # the old groups.csv is not left beside the new report
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_failure_leaves_the_earlier_report_untouched_and_no_temporary_folder(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(out, replaceable=REPORT) as scratch:
        (scratch / "report.json").write_text("half")
        raise RuntimeError("rendering failed")
    assert _files(out) == {"report.json": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_other_files_in_the_folder_are_kept_and_stale_report_files_removed(tmp_path):
    """A training run's folder holds the model too: only the report's files are replaced."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_text("weights")
    (out / "report.json").write_text("old")
    (out / "groups.csv").write_text("old")
    with atomic_directory(out, replaceable=REPORT) as scratch:
        (scratch / "report.json").write_text("new")
    assert _files(out) == {"model.safetensors": "weights", "report.json": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_file_is_refused_before_anything_is_written(tmp_path):
    target = tmp_path / "report"
    target.write_text("mine")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"), atomic_directory(target) as scratch:
        (scratch / "x").write_text("never")
    assert target.read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
