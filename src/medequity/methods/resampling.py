"""Resampling / group rebalancing: every (group, label) cell equally likely in each batch.

FairMedFM's "Resampling" baseline (Zong et al., MEDFAIR; Idrissi et al. 2022 "group-balanced
sampling"): the training loss is plain mean BCE, only the sampler changes. Each sample ``i`` in cell
``k = (a_i, y_i)`` is drawn with probability

    P(i) = 1 / (K · n_k)

(``K`` = number of non-empty cells, ``n_k`` = the cell's training count), so each cell is drawn with
probability 1/K per draw. Draws are with replacement (``torch.utils.data.WeightedRandomSampler``)
and an epoch has as many draws as the training set has samples (``num_samples``, changeable). The
sampler is seeded by the trainer's generator, so a run is reproducible.

Samples whose sensitive attribute is missing (group code -1) have no cell. Parameter
``missing_attribute``:

* ``"natural"`` (default): they keep their natural share ``n_missing / N`` of the draws (each is
  drawn with probability 1/N), and the known cells split the remaining ``1 − n_missing / N``
  equally — the known groups are balanced and no data are discarded or inflated;
* ``"group"``: "missing" is one more attribute value, so (missing, y) cells get their 1/K share too;
* ``"drop"``: they are never drawn.

(This parameter was called ``unknown``, with values ``natural``/``cell``/``drop``, as groupdro's
was; the old name is refused with an error that gives the new one and the value to write.)

Empty cells (e.g. a group with no positives) simply do not take part; the rebalancing is over the
cells that exist. ``self.log["cells"]`` records the cells, their counts and their target shares.
"""

from __future__ import annotations

import numpy as np
import torch

from medequity.methods.base import Method, register_method

MISSING_POLICIES = ("natural", "group", "drop")


def balanced_weights(labels: np.ndarray, groups: np.ndarray, missing_attribute: str = "natural") -> np.ndarray:
    """Per-sample draw probabilities (summing to 1) that make each (group, label) cell equally likely.

    See the module docstring for ``missing_attribute`` (how samples with group -1 are treated).
    """
    if missing_attribute not in MISSING_POLICIES:
        raise ValueError(f"resampling's missing_attribute must be one of {MISSING_POLICIES}; got {missing_attribute!r}")
    labels = np.asarray(labels).astype(np.int64)
    groups = np.asarray(groups).astype(np.int64)
    if labels.shape != groups.shape or labels.ndim != 1:
        raise ValueError("labels and groups must be 1-D arrays of the same length")
    n = len(labels)
    if n == 0:
        raise ValueError("cannot resample an empty training set")
    known = groups >= 0
    weights = np.zeros(n, dtype=np.float64)
    balanced = known if missing_attribute != "group" else np.ones(n, dtype=bool)
    if missing_attribute == "natural":
        weights[~known] = 1.0 / n
    mass = 1.0 - weights.sum()
    cells = {}
    for g, y in zip(groups[balanced], labels[balanced]):
        cells[(int(g), int(y))] = cells.get((int(g), int(y)), 0) + 1
    if not cells:
        if missing_attribute == "drop":
            raise ValueError("every training sample has a missing sensitive attribute and missing_attribute='drop': "
                             "nothing to sample; use missing_attribute='natural' or 'group'")
        return np.full(n, 1.0 / n)
    for (g, y), count in cells.items():
        members = balanced & (groups == g) & (labels == y)
        weights[members] = mass / (len(cells) * count)
    return weights / weights.sum()


@register_method
class Resampling(Method):
    """Group-balanced sampling: each (group, label) cell equally likely per draw; loss = mean BCE.

    Parameters: ``missing_attribute`` ("natural" | "group" | "drop", see module docstring) and
    ``num_samples`` (draws per epoch; None = the training-set size).
    """

    name = "resampling"
    tasks = ("classification", "segmentation")
    defaults = {"missing_attribute": "natural", "num_samples": None}
    #: Earlier parameter names -> current ones (spec validation names the new one).
    renamed = {"unknown": "missing_attribute"}

    def __init__(self, **params):
        if "unknown" in params:
            value = {"cell": "group"}.get(params["unknown"], params["unknown"])
            raise ValueError(f"resampling's parameter 'unknown' is now called 'missing_attribute' (what to do with "
                             f"samples whose sensitive attribute is missing): write missing_attribute={value!r}")
        super().__init__(**params)
        if self.params["missing_attribute"] not in MISSING_POLICIES:
            raise ValueError(f"resampling's missing_attribute must be one of {MISSING_POLICIES} (see its docstring); "
                             f"got {self.params['missing_attribute']!r}")
        n = self.params["num_samples"]
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"num_samples must be a positive integer or None; got {n!r}")

    def sampler(self, train, generator: torch.Generator) -> torch.utils.data.Sampler:
        weights = balanced_weights(train.labels, train.groups, self.params["missing_attribute"])
        groups = np.asarray(train.groups)
        labels = np.asarray(train.labels).astype(np.int64)
        cells = []
        for g in sorted(set(groups.tolist())):
            for y in (0, 1):
                members = (groups == g) & (labels == y)
                if members.any():
                    name = train.group_names[g] if 0 <= g < len(train.group_names) else "unknown"
                    cells.append({"group": name, "label": y, "n": int(members.sum()), "share": float(weights[members].sum())})
        self.log["cells"] = cells
        num_samples = self.params["num_samples"] or len(weights)
        return torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples,
                                                      replacement=True, generator=generator)
