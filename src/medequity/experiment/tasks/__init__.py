"""Tasks of the experiment layer, one module each, registered by name in :data:`TASKS`."""

import importlib
import pkgutil

from medequity.experiment.tasks.base import SUMMARY_COLUMNS, TASKS, Task, create_task

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SUMMARY_COLUMNS", "TASKS", "Task", "create_task"]
