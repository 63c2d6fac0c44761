"""Datasets: the common sample model, real loaders, the table loader, synthetic data, splits."""

# Importing registers the "nifti-volumes" dataset (volumes.py imports neither torch nor nibabel).
# Importing the loaders registers "table" and every real dataset (ham10000, chexpert, ...);
# synthetic_segmentation registers "synthetic-segmentation" (segmentation data with known bias).
from medequity.data import (
    loaders,  # noqa: E402,F401
    synthetic_segmentation,  # noqa: E402,F401
    volumes,  # noqa: E402,F401
)
from medequity.data.attributes import add_group_columns, intersect  # noqa: E402
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
from medequity.data.card import DataCard, build_data_card  # noqa: E402
from medequity.data.splits import (  # noqa: E402
    apply_splits,
    get_splits,
    load_splits,
    make_splits,
    save_splits,
)

# Importing registers the "synthetic" dataset (seeded images with known bias knobs).
from medequity.data.synthetic import (  # noqa: E402
    SyntheticConfig,
    list_presets,
    make_synthetic,
    oracle_group_auc,
)
from medequity.data.table import load_table  # noqa: E402

__all__ = [
    "DATASETS",
    "GROUP_PREFIX",
    "DatasetFormatError",
    "MedicalDataset",
    "create_dataset",
    "read_image",
    "register_dataset",
    "safe_join",
    "add_group_columns",
    "intersect",
    "DataCard",
    "build_data_card",
    "apply_splits",
    "get_splits",
    "load_splits",
    "make_splits",
    "save_splits",
    "load_table",
    "SyntheticConfig",
    "list_presets",
    "make_synthetic",
    "oracle_group_auc",
]
