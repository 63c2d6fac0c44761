"""Datasets: the common sample model, real loaders, the table loader, synthetic data, splits."""

from medequity.data.base import (
    DATASETS,
    GROUP_PREFIX,
    DatasetFormatError,
    MedicalDataset,
    create_dataset,
    read_image,
    register_dataset,
    safe_join,
)

# Importing registers the "nifti-volumes" dataset (volumes.py imports neither torch nor nibabel).
from medequity.data import volumes  # noqa: E402,F401

__all__ = [
    "DATASETS",
    "GROUP_PREFIX",
    "DatasetFormatError",
    "MedicalDataset",
    "create_dataset",
    "read_image",
    "register_dataset",
    "safe_join",
]
