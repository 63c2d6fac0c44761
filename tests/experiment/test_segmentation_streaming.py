"""A 3D segmentation run streams its volumes: training, validation and test prediction (and the
bench gallery) hold a bounded number of volumes at once, whatever the number of volumes.

Counted without the allocator (RSS depends on glibc's heap; ``benchmarks/seg_3d_memory.py``
measures it): every volume-sized object the run makes is registered with a ``weakref.finalize``
when it is created — each image and mask the dataset hands out, each batch the network takes in
and gives out (counted by its batch size) and each logit map brought back to the original size —
and the count alive is tracked. Before the fix the validation split went through the network as
one batch of up to ``eval_batch_size`` = 512 samples, so this count grew with the validation split.
"""

from __future__ import annotations

import warnings
import weakref

import numpy as np
import pytest

from medequity.bench.gallery import gallery_table
from medequity.data.base import MedicalDataset
from medequity.experiment import ExperimentSpec, prepare, run_experiment
from medequity.usages.seg_ft import MonaiTrained

BATCH = 2


class LiveVolumes:
    """How many tracked volumes are alive now, and the most at any one time."""

    def __init__(self) -> None:
        self.alive = self.peak = self.created = 0

    def track(self, obj, volumes: int = 1):
        self.alive += volumes
        self.created += volumes
        self.peak = max(self.peak, self.alive)
        weakref.finalize(obj, self._drop, volumes)
        return obj

    def _drop(self, volumes: int) -> None:
        self.alive -= volumes


def spec(n: int, method: str = "erm") -> ExperimentSpec:
    return ExperimentSpec(
        dataset="synthetic-segmentation", attribute="sex", task="segmentation", model="monai_unet", usage="seg_ft",
        method=method,
        dataset_options={"preset": "seg-organ-3d", "n": n, "volume_shape": [8, 16, 16],
                         "split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
        model_options={"spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0, "out_channels": 2,
                       "roi_size": [8, 16, 16]},
        n_boot=0, n_permutations=0, eval_attributes=["sex"],
        train={"epochs": 2, "batch_size": BATCH, "lr": 1e-2, "device": "cpu"})


def live_volumes(n: int, method: str = "erm") -> tuple[LiveVolumes, dict[str, int]]:
    prepared = prepare(spec(n, method))
    live = LiveVolumes()
    load_image, load_mask, original_logits = MedicalDataset.load_image, MedicalDataset.load_mask, MonaiTrained.original_logits
    network = prepared.backbone.module  # the one seg_ft trains (MonaiTrained.network)

    def batch_in(module, args) -> None:
        live.track(args[0], len(args[0]))

    def batch_out(module, args, out) -> None:
        live.track(out, len(out))

    network.register_forward_pre_hook(batch_in)
    network.register_forward_hook(batch_out)
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore")  # tiny groups warn that their metrics are unreliable
        # in-memory data hand out views of one array; a private copy per call makes each load a live object
        patch.setattr(MedicalDataset, "load_image", lambda self, i: live.track(np.array(load_image(self, i))))
        patch.setattr(MedicalDataset, "load_mask", lambda self, i: live.track(np.array(load_mask(self, i))))
        patch.setattr(MonaiTrained, "original_logits", lambda *a, **k: live.track(original_logits(*a, **k)))
        result = run_experiment(prepared)
        gallery = gallery_table(result.model, result.test_data, result.predictions, "sex", seed=0)
    assert len(gallery) and result.predictions.split.eq("test").any()
    return live, {name: len(split) for name, split in prepared.data.items()}


# seg_thresholds: its offsets are fitted on validation after training (several passes over it)
@pytest.mark.parametrize("method", ["erm", "seg_thresholds"])
def test_a_3d_run_holds_a_bounded_number_of_volumes_whatever_the_number_of_volumes(method):
    small, small_sizes = live_volumes(24, method)
    large, large_sizes = live_volumes(60, method)
    assert large_sizes["val"] >= small_sizes["val"] + 4 and large_sizes["test"] >= small_sizes["test"] + 4
    assert large.created > 2 * small.created  # every volume was loaded and went through the network
    # Alive at once (7 here): a batch in and out of the network (2 x BATCH; the loop holds the last
    # one while the next is loaded) and a sample being loaded or scored (its image, mask and
    # original-size logits) - never a split (before the fix: 15 at N=24, the 7 validation volumes
    # in and out at once).
    assert small.peak <= 2 * BATCH + 3
    assert large.peak == small.peak
    assert large.alive == small.alive == 0  # nothing kept after the run


def test_validation_batches_are_no_larger_than_training_batches_for_segmentation_models():
    from medequity.training.trainer import TrainConfig, eval_batch_size

    class Segmenter:
        def validation_scores(self, logits, batch): ...

    config = TrainConfig(batch_size=3, eval_batch_size=512)
    assert eval_batch_size(Segmenter(), config) == 3
    assert eval_batch_size(Segmenter(), config.replace(eval_batch_size=2)) == 2  # eval_batch_size still caps it
    assert eval_batch_size(object(), config) == 512  # classifiers: a score per sample, any batch
