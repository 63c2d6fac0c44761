"""Our own "foundation" weights for CPU demos: a small CNN pre-trained on unbiased synthetic data.

No weights can be downloaded here, and linear probing a randomly initialised encoder measures
little. ``checkpoint="synthetic:<modality>"`` trains ``small_cnn`` once on the unbiased preset of
that modality (its own seed, so its patients are not the benchmark's), stores the backbone weights
as safetensors in the cache, and reuses them afterwards — the role a public checkpoint plays in
FairMedFM: an encoder trained elsewhere, frozen for LP or adapted for FT.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medequity.experiment.spec import ExperimentSpec
from medequity.experiment.train import train_model
from medequity.experiment.views import build_prepared
from medequity.models.feature_cache import DEFAULT_CACHE_DIR
from medequity.utils.io import atomic_save_safetensors

PRETRAIN_SEED = 1_000_003
PREFIX = "synthetic:"
# Bumped whenever the pre-training changes, so weights cached by an older recipe are not reused
# (2: seeded with PRETRAIN_SEED before the backbone is built, through the experiment layer).
RECIPE = 2


def synthetic_checkpoint(backbone_name: str, spec: str, *, cache_dir: str | Path | None = None, n: int = 2000,
                         epochs: int = 6, backbone_options: dict | None = None) -> Path:
    """Path of the pre-trained weights for ``spec`` = ``"synthetic:<modality>"`` (trained if absent).

    The pre-training is an ordinary experiment (:func:`~medequity.experiment.prepare.prepare` and
    :func:`~medequity.experiment.run.train_model`): ERM, full fine-tuning, on the train and test
    splits of the unbiased preset, validated on its val split, seeded with its own seed — so the
    weights are the same whichever run, seed or process first asks for them.
    """

    modality = spec[len(PREFIX):]
    options = {k: v for k, v in (backbone_options or {}).items() if k != "checkpoint"}
    key = hashlib.sha256(json.dumps({"backbone": backbone_name, "options": options, "modality": modality, "n": n,
                                     "epochs": epochs, "seed": PRETRAIN_SEED, "recipe": RECIPE},
                                    sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    path = folder / "pretrained" / f"{backbone_name}-{modality}-{key}.safetensors"
    if path.is_file():
        return path
    preset = f"{modality}-unbiased"
    pretraining = ExperimentSpec(dataset="synthetic", dataset_options={"preset": preset, "n": n, "seed": PRETRAIN_SEED},
                                 attribute=_first_attribute(preset, n), model=backbone_name, model_options=options,
                                 usage="ft", method="erm", seed=PRETRAIN_SEED, cache_dir=None if cache_dir is None else str(cache_dir),
                                 train={"epochs": epochs, "lr": 2e-3, "batch_size": 64, "patience": None, "selection": "auc"})
    prepared = build_prepared(pretraining, options, splits={"train": ["train", "test"], "val": ["val"]})
    trained = train_model(prepared)
    weights = {k: v.detach().cpu().contiguous() for k, v in trained.model.backbone.state_dict().items()}
    metadata = {"pretrained_on": f"synthetic {preset} n={n} seed={PRETRAIN_SEED}", "epochs": str(epochs)}
    return atomic_save_safetensors(path, weights, metadata)


def _first_attribute(preset: str, n: int) -> str:
    """The preset's first sensitive attribute (any one serves: pre-training ignores groups)."""
    from medequity.data import create_dataset

    return create_dataset("synthetic", preset=preset, n=n, seed=PRETRAIN_SEED).attributes[0]
