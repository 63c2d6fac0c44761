"""A FairTune storage is never joined silently by a study of other settings, --resume insists on
the existing study, and trials left RUNNING by a killed process are marked FAILED on the next run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import optuna
import pytest
from typer.testing import CliRunner

from medequity.cli.fairtune import fairtune_app
from medequity.fairtune import FairTuneConfig, search
from medequity.fairtune.search import StudyMismatch, fail_stale_trials, open_study, settings_difference, study_name_for

from .conftest import tiny_spec


def test_changed_settings_are_refused_with_their_differences_unless_new_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'ft.db'}"
    notes: list[str] = []
    first = search(tiny_spec(epochs=1), FairTuneConfig(trials=1, storage=storage, space="attn"))
    assert first.study.user_attrs["settings"]["spec"]["train"]["epochs"] == 1
    with pytest.raises(StudyMismatch, match=r"already holds the study 'fairtune-mask-.*train\.epochs: 1 → 2.*--new-study"):
        search(tiny_spec(epochs=2), FairTuneConfig(trials=1, storage=storage, space="attn"))
    with pytest.raises(StudyMismatch, match=r"--resume: .* holds no study"):
        search(tiny_spec(epochs=2), FairTuneConfig(trials=1, storage=storage, space="attn"), mode="resume")
    assert optuna.study.get_all_study_names(storage) == [first.study.study_name]  # nothing was created
    # the same settings resume (the trial count is not a setting), and say so
    again = search(tiny_spec(epochs=1), FairTuneConfig(trials=2, storage=storage, space="attn"), mode="resume",
                   notice=notes.append)
    assert again.study.study_name == first.study.study_name and len(again.study.trials) == 2
    assert any("resuming study" in note and "1 of 2" in note for note in notes)
    second = search(tiny_spec(epochs=2), FairTuneConfig(trials=1, storage=storage, space="attn"), mode="new")
    assert sorted(optuna.study.get_all_study_names(storage)) == sorted([first.study.study_name, second.study.study_name])


def test_explicit_study_name_with_other_settings_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'ft.db'}"
    spec = tiny_spec(epochs=1)
    config = FairTuneConfig(trials=1, storage=storage, study_name="mine", space="attn")
    name = study_name_for(spec, config)
    open_study("mine", config, "maximize", settings={"spec": {"train": {"epochs": 1}}, "config": {}, "kind": "mask"})
    assert name != "mine"
    with pytest.raises(StudyMismatch, match=r"study 'mine' .* other settings \(.*train\.epochs: 1 → 3"):
        open_study("mine", config, "maximize", settings={"spec": {"train": {"epochs": 3}}, "config": {}, "kind": "mask"})


def test_settings_difference_lists_changed_added_and_removed_keys():
    text = settings_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 5, "d": 3}})
    assert text == "a.b: 1 → 5; a.c: 2 → '(none)'; a.d: '(none)' → 3"


def test_cli_refuses_a_changed_setting_before_any_training(tmp_path):
    storage = f"sqlite:///{tmp_path / 'ft.db'}"
    config = FairTuneConfig(trials=1, storage=storage)
    spec = tiny_spec(epochs=1)
    open_study(study_name_for(spec, config), config, "maximize", settings={"spec": {}, "config": {}, "kind": "mask"})
    result = CliRunner().invoke(fairtune_app, ["search", "--option", "n=100", "--storage", storage, "--no-progress",
                                               "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "already holds the study" in result.output and "--new-study" in result.output
    both = CliRunner().invoke(fairtune_app, ["search", "--new-study", "--resume", "--out", str(tmp_path / "out")])
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_trials_of_a_dead_process_are_failed_on_resume_and_live_ones_kept(tmp_path):
    storage = f"sqlite:///{tmp_path / 'ft.db'}"
    config = FairTuneConfig(trials=3, storage=storage)
    study = open_study("s", config, "maximize")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process that existed and is gone (as after SIGKILL)
    orphan, alive, done = study.ask(), study.ask(), study.ask()
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # a concurrent worker that still runs
    study.tell(done, 0.5)
    notes: list[str] = []
    reopened = open_study("s", config, "maximize", notice=notes.append)
    states = {t.number: t.state for t in reopened.trials}
    assert states == {0: optuna.trial.TrialState.FAIL, 1: optuna.trial.TrialState.RUNNING, 2: optuna.trial.TrialState.COMPLETE}
    assert len(notes) == 1 and f"trial 0 (process {socket.gethostname()}:{dead.pid}" in notes[0] and "FAILED" in notes[0]
    assert fail_stale_trials(reopened) == []  # nothing left to fail


@pytest.mark.slow  # a real process killed mid-trial: ~15 s alone, more on a busy machine; the logic is covered above
def test_killed_search_leaves_no_running_trial_after_rerun(tmp_path):
    """SIGKILL a search in the middle of a trial; the rerun marks that trial FAILED and completes the budget."""
    import signal
    import time

    storage = f"sqlite:///{tmp_path / 'ft.db'}"
    script = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from conftest import tiny_spec\n"
        "from medequity.fairtune import FairTuneConfig, search\n"
        f"search(tiny_spec(epochs=50), FairTuneConfig(trials=1, storage={storage!r}, space='attn'))\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        names = optuna.study.get_all_study_names(storage) if (tmp_path / "ft.db").exists() else []
        if names and any(t.state == optuna.trial.TrialState.RUNNING and "worker" in t.user_attrs
                         for t in optuna.load_study(study_name=names[0], storage=storage).trials):
            break
        time.sleep(0.5)
    else:
        worker.kill()
        pytest.fail("the search never started a trial")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert optuna.load_study(study_name=names[0], storage=storage).trials[0].state == optuna.trial.TrialState.RUNNING
    notes: list[str] = []
    # what the rerun of the same search does first (search() then trains the budget's missing trial)
    reopened = open_study(names[0], FairTuneConfig(trials=1, storage=storage, space="attn"), "maximize", notice=notes.append)
    assert [t.state for t in reopened.trials] == [optuna.trial.TrialState.FAIL]
    assert len(notes) == 1 and "trial 0 (process" in notes[0]
