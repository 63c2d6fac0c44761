"""The experiment layer, the same for every task: a spec (:class:`ExperimentSpec`, plain data),
``prepare(spec)`` (dataset, split, views, backbone; ``synthetic:`` pre-training resolved here),
``run_experiment`` (train through the shared trainer, evaluate with the spec's task) and
``save_run`` (weights, predictions, audit report, the method's own artifacts).

Everything that trains a model — ``medequity train``, the benchmark, FairTune's search, the FairDi
ablation, the validations, our synthetic pre-training — goes through here.
"""

from medequity.experiment.prepare import prepare, rebuild_split_data
from medequity.experiment.run import evaluate_model, run_experiment
from medequity.experiment.save import save_run
from medequity.experiment.spec import SPLITS, ExperimentSpec, RunResult
from medequity.experiment.tasks import TASKS, Task, create_task
from medequity.experiment.train import TrainedModel, train_config, train_model
from medequity.experiment.views import Prepared, load_experiment_data

__all__ = ["SPLITS", "TASKS", "ExperimentSpec", "Prepared", "RunResult", "Task", "TrainedModel", "create_task",
           "evaluate_model", "load_experiment_data", "prepare", "rebuild_split_data", "run_experiment", "save_run",
           "train_config", "train_model"]
