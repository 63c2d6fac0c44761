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
