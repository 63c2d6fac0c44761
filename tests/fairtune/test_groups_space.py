"""The "groups" search space over small_cnn (one bit per conv block), the space FairTune's Fig. 1
validation searches (tests/validation/test_seed_methods.py checks Fig. 1 itself)."""

from __future__ import annotations

import torch

from medequity.fairtune.space import search_space
from medequity.models import create_backbone


def test_small_cnn_groups_space_has_one_bit_per_conv_block():
    backbone = create_backbone("small_cnn")
    space = search_space("groups", backbone)
    assert space.n_bits == 4
    assert space.searched == ("features.0-3", "features.4-7", "features.8-11", "features.12-14")
    # Each group holds exactly its block's conv and BatchNorm parameters; together, all of the backbone's.
    names = [name for name, _ in backbone.module.named_parameters()]
    covered = {name for prefixes in backbone.module_groups().values() for name in names if name.startswith(tuple(prefixes))}
    assert covered == set(names)
    for i, prefixes in enumerate(backbone.module_groups().values()):
        assert prefixes == [f"features.{4 * i}.", f"features.{4 * i + 1}."]
        assert isinstance(backbone.module.features[4 * i], torch.nn.Conv2d)
        assert isinstance(backbone.module.features[4 * i + 1], torch.nn.BatchNorm2d)
