"""MONAI segmenters (models/segmenters/monai_nets.py): UNet 2D/3D and SwinUNETR as trainable,
not promptable networks (training step, sliding-window inference, checkpoints), and VISTA3D as a
point-promptable 3D segmenter whose encode/decode equal its own forward."""

from __future__ import annotations

import pytest
import torch

from medequity.models import SEGMENTERS, create_segmenter

pytest.importorskip("monai")
from medequity.models.segmenters.monai_nets import sliding_window_predict  # noqa: E402

TINY_UNET = {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1, "roi_size": 16}
TINY_SWIN = {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "roi_size": 64}
TINY_VISTA = {"encoder_embed_dim": 8, "blocks_down": (1, 1, 1, 1, 1), "roi_size": 32}


def test_names_registered():
    assert {"monai_unet", "swin_unetr", "vista3d"} <= set(SEGMENTERS.names())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_unet_trains_and_is_not_promptable(spatial_dims):
    torch.manual_seed(0)
    segmenter = create_segmenter("monai_unet", spatial_dims=spatial_dims, **TINY_UNET)
    assert not segmenter.promptable and segmenter.config["roi_size"] == [16] * spatial_dims
    assert segmenter.config["profile"] == segmenter.profile.to_dict() and segmenter.profile.minmax
    x = torch.randn(2, 1, *([16] * spatial_dims))
    target = (x > 0).long()[:, 0]
    optimizer = torch.optim.SGD(segmenter.module.parameters(), lr=0.1)
    segmenter.module.train()
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(segmenter.module(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert segmenter.module(x).shape == (2, 2, *([16] * spatial_dims)) and losses[-1] < losses[0]
    with pytest.raises(TypeError, match="no image encoder"):
        segmenter.encode(x)
    with pytest.raises(TypeError, match="not promptable"):
        segmenter.decode(x[0], points=torch.zeros(1, 1, 2))


def test_sliding_window_covers_a_larger_volume_and_equals_forward_on_one_window():
    segmenter = create_segmenter("monai_unet", **TINY_UNET)
    segmenter.module.train()
    volume = torch.randn(1, 1, 24, 20, 28)
    logits = sliding_window_predict(segmenter, volume)
    assert logits.shape == (1, 2, 24, 20, 28) and segmenter.module.training  # mode restored
    one = torch.randn(1, 1, 16, 16, 16)
    segmenter.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(sliding_window_predict(segmenter, one), segmenter.module(one), atol=1e-5, rtol=1e-5)


def test_checkpoint_loads(tmp_path):
    source = create_segmenter("monai_unet", **TINY_UNET).module
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    path = tmp_path / "unet.pt"
    torch.save({"state_dict": state}, path)
    loaded = create_segmenter("monai_unet", checkpoint=path, **TINY_UNET)
    for key, value in loaded.module.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_swin_unetr_2d_trains_and_3d_checks_its_roi():
    torch.manual_seed(0)
    segmenter = create_segmenter("swin_unetr", spatial_dims=2, out_channels=3, **TINY_SWIN)
    assert not segmenter.promptable and segmenter.config["feature_size"] == 12
    segmenter.module.train()
    logits = segmenter.module(torch.randn(2, 1, 64, 64))
    assert logits.shape == (2, 3, 64, 64)
    logits.mean().backward()
    assert create_segmenter("swin_unetr", **TINY_SWIN).config["roi_size"] == [64, 64, 64]
    with pytest.raises(ValueError, match="multiple of 32 and >= 64"):
        create_segmenter("swin_unetr", **{**TINY_SWIN, "roi_size": 32})


@pytest.mark.slow
def test_swin_unetr_3d_sliding_window(request):
    """~1.3 s per 64^3 window on one CPU thread: run with ``-m slow`` (``make test`` does not
    deselect the marker, so it is skipped unless asked for)."""
    if "slow" not in (request.config.getoption("markexpr") or "") or "not slow" in request.config.getoption("markexpr"):
        pytest.skip("slow: run with -m slow")
    segmenter = create_segmenter("swin_unetr", **TINY_SWIN)
    assert sliding_window_predict(segmenter, torch.randn(1, 1, 64, 64, 70)).shape == (1, 2, 64, 64, 70)


@pytest.fixture
def vista():
    torch.manual_seed(0)
    return create_segmenter("vista3d", **TINY_VISTA)


def test_vista3d_decode_equals_its_forward(vista):
    """P point prompts decoded from one cached encoding = VISTA3D.forward's point-only path."""
    volume = torch.randn(1, 1, 32, 32, 32)
    embedding = vista.encode(volume)
    assert embedding.shape == (1, 8, 32, 32, 32)
    points = torch.tensor([[[5.0, 6.0, 7.0], [20.0, 20.0, 20.0]], [[20.0, 10.0, 3.0], [1.0, 2.0, 3.0]]])
    labels = torch.tensor([[1, 0], [1, -1]])
    logits, iou = vista.decode(embedding[0], points=points, point_labels=labels)
    assert logits.shape == (2, 1, 32, 32, 32) and iou.shape == (2, 1) and torch.isnan(iou).all()
    with torch.no_grad():
        reference = vista.module(volume, point_coords=points, point_labels=labels)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)
    alone, _ = vista.decode(embedding[0], points=points[1:], point_labels=labels[1:])
    torch.testing.assert_close(alone, logits[1:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="point prompts only"):
        vista.decode(embedding[0], boxes=torch.tensor([[0.0, 0.0, 5.0, 5.0]]))
    with pytest.raises(ValueError, match="multiples of 16"):
        vista.encode(torch.randn(1, 1, 24, 32, 32))
    assert vista.config["profile"] == vista.profile.to_dict() and vista.config["roi_size"] == [32, 32, 32]


def test_vista3d_default_keys_equal_monai_vista3d132():
    """The defaults are MONAI's vista3d132 (the released model's key names), built on the meta device."""
    from monai.networks.nets import vista3d132

    with torch.device("meta"):
        ours = create_segmenter("vista3d").module.state_dict()
        official = vista3d132().state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}
    assert "point_head.mask_tokens.weight" in ours and "class_head.class_embeddings.weight" in ours
