"""Usages of a backbone, one file each, registered by name (``create_usage("lp")``)."""

import importlib
import pkgutil

from medequity.usages.base import USAGES, Usage, UsageContext, create_usage, register_usage

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["USAGES", "Usage", "UsageContext", "create_usage", "register_usage"]
