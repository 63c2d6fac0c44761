"""Segmenter families, one module each, registered in :data:`medequity.models.segmenter.SEGMENTERS`
on import (found automatically: a new family is one new file here). Heavy packages
(segment_anything, sam2, monai) are imported inside the factories, on first use."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
