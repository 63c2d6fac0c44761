"""The experiment layer: one spec, ``prepare`` (data, split, views, backbone), ``run``, ``save``."""

from medequity.experiment.run import *  # noqa: F401,F403
from medequity.experiment.run import ExperimentSpec, RunResult, load_experiment_data, rebuild_split_data, run_experiment, save_run  # noqa: F401
