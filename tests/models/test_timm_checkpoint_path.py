"""timm's own ``checkpoint_path`` model option goes through our safe loader (pickled code never
runs; the weights load as with ``checkpoint=``), and ``pretrained=True`` (a download) is refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from medequity.models import CheckpointError, create_backbone

VIT = dict(input_size=32, depth=2, embed_dim=32, num_heads=2, patch_size=8)
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def vit(seed: int, **options):
    torch.manual_seed(seed)
    return create_backbone("vit_tiny_patch16_224", **{**VIT, **options})


def features(backbone) -> torch.Tensor:
    with torch.no_grad():
        return backbone.module.eval()(IMAGES)


class Payload:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the pickle's code runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_path_loads_through_our_loader(tmp_path):
    source = vit(seed=1)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.module.state_dict().items()}, str(path))
    loaded = vit(seed=2, checkpoint_path=str(path))
    assert not torch.equal(features(vit(seed=2)), features(source))  # the seed-2 init differs...
    torch.testing.assert_close(features(loaded), features(source), rtol=0, atol=0)  # ...until loaded
    assert loaded.config["checkpoint_path"] == str(path)


def test_checkpoint_path_with_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {**vit(seed=1).module.state_dict(), "evil": Payload(marker)}}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        vit(seed=1, checkpoint_path=str(path))
    assert not marker.exists()


def test_pretrained_downloads_are_refused_with_the_local_alternative():
    with pytest.raises(ValueError, match=r"never downloaded here; give a local file with the model option checkpoint="):
        vit(seed=0, pretrained=True)
