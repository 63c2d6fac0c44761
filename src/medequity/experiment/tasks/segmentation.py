"""Segmentation: a mask per (sample, class); per-sample Dice and IoU, summarised per group.

The model is a :class:`~medequity.models.segmenter.Segmenter` (``create_segmenter``), the views are
lazy (image, mask) items at the original size, the predictions table has one row per (sample,
foreground class) — empty classes are kept as ``skipped`` rows and counted, never scored — and the
metrics are the per-group means of each sample's Dice, IoU, HD95 and NSD (mean over its classes) with
bootstrap CIs, gaps with permutation tests, STD of group means, skewness and the equity-scaled
forms (FairMedFM DSC_ES, FairSeg ES-Dice) from
:func:`medequity.metrics.segmentation.segmentation_group_metrics_from_values`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import pandas as pd

from medequity.data import GROUP_PREFIX
from medequity.data.base import MedicalDataset
from medequity.experiment.spec import ExperimentSpec
from medequity.experiment.tasks.base import TASKS, Task, tidy_results
from medequity.metrics import GroupMetricResult, GroupMetricWarning
from medequity.metrics.segmentation import SegmentationGroupResult, segmentation_group_metrics_from_values
from medequity.models.segmenter import Segmenter, create_segmenter
from medequity.training.data import SplitData, make_segmentation_split
from medequity.usages._segmentation import TrainedSegmenter

if TYPE_CHECKING:
    from medequity.experiment.train import TrainedModel

SEGMENTATION_METRICS = ("dice", "iou", "hd95", "nsd", "cdr_error")  # those the predictions have
SEGMENTATION_USAGES = ("seg_zs", "seg_decoder", "seg_lora", "seg_ft")


@TASKS.register("segmentation")
class Segmentation(Task):
    """Segmentation runs: zero-shot (``seg_zs``, nothing trained) or trained through the shared
    trainer (``seg_decoder``, ``seg_lora``, ``seg_ft``): the usage's model gives logits over C + 1
    classes and the label masks ride in the batches (``y``), any method trains it, checkpoints are
    selected by worst-group validation Dice (``train_defaults``); then every usage's model tables
    its masks scored at the original size (``model.segment``)."""

    name = "segmentation"
    train_defaults = {"selection": "worst_group_dice"}

    def build_backbone(self, spec: ExperimentSpec, model_options: dict[str, Any]) -> Segmenter:
        return create_segmenter(spec.model, **model_options)

    def make_views(self, spec: ExperimentSpec, parts: dict[str, MedicalDataset], backbone: Segmenter,
                   group_names: tuple[str, ...]) -> tuple[Any, dict[str, SplitData]]:
        return backbone.profile, {view: make_segmentation_split(part, spec.attribute, group_names) for view, part in parts.items()}

    def predict(self, trained: TrainedModel) -> tuple[pd.DataFrame, dict]:
        model, spec, method = trained.model, trained.prepared.spec, trained.method
        if not hasattr(model, "segment"):
            raise ValueError(f"usage {spec.usage!r} does not segment; segmentation usages: {SEGMENTATION_USAGES}")
        frames = []
        trains = isinstance(model, TrainedSegmenter)  # zero-shot prompting has no method inference path
        # trained models segment through the method's inference path (InD's group decoders, per-group
        # offsets), with the samples' groups only for methods that read them — as the trainer's predict
        method.extra.eval()
        with_groups = bool(method.needs_groups_at_inference)

        def inference(net, x, groups):
            return method.logits(net, x, groups if with_groups else None)

        for name in ("val", "test"):
            data = trained.data[name]
            rows = pd.DataFrame(list(model.segment(data, seed=spec.seed, **({"inference": inference} if trains else {}))))
            if rows.empty:
                raise ValueError(f"split {name!r} has no sample with a foreground class to segment")
            index = rows.pop("index").to_numpy()
            rows.insert(0, "split", name)
            for column in data.table.columns:
                if column.startswith(GROUP_PREFIX):
                    rows[column] = data.table[column].astype(object).to_numpy()[index]
            frames.append(rows)
        return pd.concat(frames, ignore_index=True), {"rule": "logit > 0", "value": 0.0, **model.record()}  # trained: argmax

    def evaluate(self, test: pd.DataFrame, attributes, *, n_boot: int, n_permutations: int,
                 seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, GroupMetricResult]]:
        scored = test[~test["skipped"].astype(bool)]
        measured = [m for m in SEGMENTATION_METRICS if m in scored.columns]
        per_sample = scored.groupby("sample_id", sort=False).agg(
            {**{m: "mean" for m in measured}, **{c: "first" for c in scored.columns if c.startswith(GROUP_PREFIX)}})
        skipped = test[test["skipped"].astype(bool)]
        results: dict[str, SegmentationGroupResult] = {}
        extra: dict[tuple[str, str], SegmentationGroupResult] = {}
        for attribute in attributes:
            groups = per_sample[GROUP_PREFIX + attribute].rename(attribute)
            if groups.dropna().nunique() < 2:  # e.g. a small test split: nothing to compare for this attribute
                warnings.warn(f"attribute {attribute!r} has fewer than two groups among the scored test samples "
                              f"({sorted(groups.dropna().astype(str).unique())}); it is not evaluated", GroupMetricWarning,
                              stacklevel=2)
                continue
            by_metric = {m: segmentation_group_metrics_from_values(
                per_sample[m].to_numpy(), sensitive_features=groups, metric=m, n_boot=n_boot, n_permutations=n_permutations,
                random_state=seed) for m in measured}
            for result in by_metric.values():
                result.extra_settings.update({
                    "n_skipped_empty_classes": int(len(skipped)),
                    "skipped_per_group": {str(k): int(v) for k, v in skipped[GROUP_PREFIX + attribute].value_counts().items()}})
            results[attribute] = by_metric["dice"]  # the headline; the other metrics ride in the tables
            extra.update({(attribute, m): by_metric[m] for m in measured if m != "dice"})
        if not results:
            raise ValueError(f"no attribute of {list(attributes)} has two groups among the scored test samples")
        metrics, summaries = tidy_results(results)
        for (attribute, _), result in extra.items():
            more_metrics, more_summaries = tidy_results({attribute: result})
            metrics = pd.concat([metrics, more_metrics], ignore_index=True)
            summaries = pd.concat([summaries, more_summaries], ignore_index=True)
        # FairMedFM's STD of group means (DSC_ES = mean / (1 + STD)) with its permutation p-value
        stds = [result.fairness_table().query("summary == 'std'").assign(attribute=attribute)
                for attribute, result in [*results.items(), *((a, r) for (a, _), r in extra.items())]]
        summaries = pd.concat([summaries, *[frame[summaries.columns] for frame in stds]], ignore_index=True)
        rates = prompt_inside_rates(scored, list(results))
        for attribute, result in results.items():
            part = rates[rates.attribute == attribute]
            result.extra_settings["prompt_inside_rate"] = {str(g): {"rate": float(v), "n": int(n)}
                                                           for g, v, n in zip(part.group, part.value, part.n)}
        headline: dict[str, GroupMetricResult] = dict(results)
        return metrics, summaries, headline


def prompt_inside_rates(scored: pd.DataFrame, attributes: list[str]) -> pd.DataFrame:
    """How often a point prompt landed inside its class, per group (recorded in the headline
    result's settings as ``prompt_inside_rate``):
    FairMedFM's ``bbox_center`` falls outside rings and concave shapes (e.g. in the cup for the
    fundus rim), and how often may differ between groups. Empty when no prompt recorded it (boxes)."""
    columns = ["attribute", "group", "value", "n"]
    known = scored[scored["prompt_inside"].notna()] if "prompt_inside" in scored else scored.iloc[:0]
    rows = []
    for attribute in attributes if len(known) else []:
        column = known[GROUP_PREFIX + attribute]
        for group, part in [("overall", known), *((str(g), known[column == g]) for g in sorted(column.dropna().unique()))]:
            rows.append({"attribute": attribute, "group": group, "value": float(part["prompt_inside"].astype(float).mean()),
                         "n": int(len(part))})
    return pd.DataFrame(rows, columns=columns)
