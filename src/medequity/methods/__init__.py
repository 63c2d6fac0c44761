"""Bias-mitigation methods, one file each, registered by name (``create_method("groupdro")``)."""

import importlib
import pkgutil

from medequity.methods.base import METHODS, Method, create_method, register_method

# Import every method module so that each registers itself.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base",) and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "create_method", "register_method"]
