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
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from medequity.experiment.spec import ExperimentSpec
from medequity.experiment.train import train_model
from medequity.experiment.views import build_prepared
from medequity.models.feature_cache import DEFAULT_CACHE_DIR
from medequity.training.trainer import Trainer
from medequity.utils.io import atomic_save_safetensors

PRETRAIN_SEED = 1_000_003
PREFIX = "synthetic:"
# Bumped whenever the pre-training changes, so weights cached by an older recipe are not reused
# (2: seeded with PRETRAIN_SEED before the backbone is built, through the experiment layer).
RECIPE = 2


def synthetic_checkpoint(backbone_name: str, spec: str, *, cache_dir: str | Path | None = None, n: int = 2000,
                         epochs: int = 6, backbone_options: dict | None = None,
                         progress: Callable[[str], None] | None = None) -> Path:
    """Path of the pre-trained weights for ``spec`` = ``"synthetic:<modality>"`` (trained if absent).

    The pre-training is an ordinary experiment (:func:`~medequity.experiment.prepare.prepare` and
    :func:`~medequity.experiment.run.train_model`): ERM, full fine-tuning, on the train and test
    splits of the unbiased preset, validated on its val split, seeded with its own seed — so the
    weights are the same whichever run, seed or process first asks for them. ``progress`` receives a
    line per epoch when the weights are trained (a minute or two on a CPU, once).
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
    with preserved_random_state():
        return _pretrain(backbone_name, modality, path, n=n, epochs=epochs, options=options, cache_dir=cache_dir,
                         progress=progress)


def _pretrain(backbone_name: str, modality: str, path: Path, *, n: int, epochs: int, options: dict,
              cache_dir: str | Path | None, progress: Callable[[str], None] | None = None) -> Path:
    preset = f"{modality}-unbiased"
    pretraining = ExperimentSpec(dataset="synthetic", dataset_options={"preset": preset, "n": n, "seed": PRETRAIN_SEED},
                                 attribute=_first_attribute(preset, n), model=backbone_name, model_options=options,
                                 usage="ft", method="erm", seed=PRETRAIN_SEED, cache_dir=None if cache_dir is None else str(cache_dir),
                                 train={"epochs": epochs, "lr": 2e-3, "batch_size": 64, "patience": None, "selection": "auc"})
    prepared = build_prepared(pretraining, options, splits={"train": ["train", "test"], "val": ["val"]})
    trainer = None
    if progress is not None:
        def on_epoch(info: dict) -> None:
            progress(f"pre-training {backbone_name} on {preset}: epoch {info['epoch'] + 1}/{info['epochs']}")

        progress(f"pre-training {backbone_name} on {preset} (first use; cached after)")
        trainer = Trainer(progress=on_epoch)
    trained = train_model(prepared, trainer=trainer)
    weights = {k: v.detach().cpu().contiguous() for k, v in trained.model.backbone.state_dict().items()}
    metadata = {"pretrained_on": f"synthetic {preset} n={n} seed={PRETRAIN_SEED}", "epochs": str(epochs)}
    return atomic_save_safetensors(path, weights, metadata)


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run the block (pre-training) without changing the caller's random state: Python's, NumPy's
    and torch's global generators (CPU and every CUDA device) are restored afterwards.

    Pre-training seeds and draws from the global generators; whether it runs depends on the cache
    (cold: in this process; warm: not at all). Restoring them keeps everything the caller draws
    afterwards independent of the cache — :func:`~medequity.experiment.prepare.prepare` also seeds
    with the run's seed after resolving the checkpoint, and this makes any other caller safe too.
    CUDA generators are restored when CUDA was already started; if pre-training is what started
    it, there was no earlier CUDA state to restore (``prepare`` then seeds them with the run's seed).
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _first_attribute(preset: str, n: int) -> str:
    """The preset's first sensitive attribute (any one serves: pre-training ignores groups)."""
    from medequity.data import create_dataset

    return create_dataset("synthetic", preset=preset, n=n, seed=PRETRAIN_SEED).attributes[0]
