"""FairTune search spaces: which module groups may be fine-tuned, plus the learning rate.

FairTune (§3.2, §4.1 "Search Space") searches a binary mask ω over the modules of a 12-block ViT:
per block {attention (MHSA), MLP, LayerNorms (LN1+LN2)} — 36 bits — with two 12-bit ablations
(attention only, LayerNorm only; Table 2). The searched groups are those of the backbone's
``module_groups()`` (the same groups the ``mask`` usage freezes or trains), so the space works for
any depth and, with :func:`group_space`, for any timm model: one bit per named module group.
Groups outside the searched ones stay frozen (e.g. the MLPs in the 12-bit attention space).

The learning rate α is searched jointly (§3.3 "Besides the selective-update mask ω…"). The paper
gives no range; the public FairTune code samples ``suggest_float("lr", 1e-5, 1e-3, log=True)``,
which is our default :data:`LR_RANGE`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LR_RANGE: tuple[float, float] = (1e-5, 1e-3)
LR_PARAM = "lr"
SPACES = ("full", "attn", "ln", "groups")
_PART = {"attn": ".attn", "ln": ".norm"}


@dataclass(frozen=True)
class SearchSpace:
    """One bit per searched group (Optuna parameter named after the group) and a log-uniform LR.

    ``groups``: every module group of the backbone, in order (the mask usage's order).
    ``searched``: the groups that get a bit; the others are always frozen.
    """

    name: str
    groups: tuple[str, ...]
    searched: tuple[str, ...]
    lr_range: tuple[float, float] = LR_RANGE

    def __post_init__(self) -> None:
        unknown = sorted(set(self.searched) - set(self.groups))
        if unknown:
            raise ValueError(f"searched group(s) {unknown} are not module groups of the backbone: {list(self.groups)}")
        if not self.searched:
            raise ValueError(f"search space {self.name!r} has no groups to search (backbone groups: {list(self.groups)[:8]}…)")
        low, high = self.lr_range
        if not 0 < low <= high:
            raise ValueError(f"lr_range must satisfy 0 < low <= high; got {self.lr_range}")

    @property
    def n_bits(self) -> int:
        return len(self.searched)

    def suggest(self, trial) -> tuple[dict[str, int], float]:
        """Sample (mask over all groups, learning rate) in an Optuna trial.

        Bits are categorical {0, 1} (TPE models each as a categorical, App. A.5); fixed groups are 0.
        """
        bits = {group: int(trial.suggest_categorical(group, [0, 1])) for group in self.searched}
        low, high = self.lr_range
        lr = float(trial.suggest_float(LR_PARAM, low, high, log=True)) if low < high else float(low)
        return self.mask(bits), lr

    def mask(self, bits: Mapping[str, int]) -> dict[str, int]:
        """A full mask {group: 0/1} in group order from the searched bits (others frozen)."""
        return {group: int(bits.get(group, 0)) if group in self.searched else 0 for group in self.groups}

    def from_params(self, params: Mapping[str, object]) -> tuple[dict[str, int], float]:
        """(mask, lr) from an Optuna trial's ``params``."""
        mask = self.mask({g: int(params[g]) for g in self.searched if g in params})
        lr = float(params.get(LR_PARAM, self.lr_range[0]))
        return mask, lr


def vit_groups(depth: int = 12) -> tuple[str, ...]:
    """The module groups of a timm ViT with ``depth`` blocks, as ``timm_module_groups`` names them."""
    return tuple(f"blocks.{i}.{part}" for i in range(depth) for part in ("attn", "mlp", "norm"))


def vit_space(kind: str = "full", depth: int = 12, lr_range: tuple[float, float] = LR_RANGE) -> SearchSpace:
    """FairTune's ViT spaces without building a model: ``full`` (3·depth bits, 36 for ViT-B),
    ``attn`` or ``ln`` (depth bits, 12 for ViT-B)."""
    return _select(kind, vit_groups(depth), lr_range)


def group_space(groups: Sequence[str], lr_range: tuple[float, float] = LR_RANGE) -> SearchSpace:
    """One bit per named module group, for any model (FairTune's space generalised)."""
    return SearchSpace("groups", tuple(groups), tuple(groups), tuple(lr_range))


def search_space(kind: str, backbone, lr_range: tuple[float, float] = LR_RANGE) -> SearchSpace:
    """The space ``kind`` (``full``/``groups``, ``attn``, ``ln``) over ``backbone.module_groups()``.

    For a timm ViT, ``full`` is the 36-bit space; for CNNs (one group per stage) ``full`` and
    ``groups`` are the same and ``attn``/``ln`` have no groups (an error says so).
    """
    if backbone.module_groups is None:
        raise ValueError(f"backbone {backbone.name!r} defines no module groups to search")
    return _select(kind, tuple(backbone.module_groups()), lr_range)


def _select(kind: str, groups: tuple[str, ...], lr_range) -> SearchSpace:
    if kind not in SPACES:
        raise ValueError(f"unknown search space {kind!r}; choose one of {SPACES}")
    if kind in ("full", "groups"):
        return SearchSpace(kind, groups, groups, tuple(lr_range))
    searched = tuple(g for g in groups if g.endswith(_PART[kind]))
    return SearchSpace(kind, groups, searched, tuple(lr_range))
