"""Grad-CAM localises what a model looks at; the overlap score behaves at its extremes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medequity.explain import cam_overlap, classifier_cam, default_layer, grad_cam, plot_cams


class RegionModel(nn.Module):
    """Sees only one 8×8 region of the image (everything else is multiplied by 0 before the conv),
    then conv → ReLU → global average pool → linear: a model that only looks at that region."""

    def __init__(self, rows: slice, cols: slice):
        super().__init__()
        self.register_buffer("window", torch.zeros(1, 1, 32, 32))
        self.window[..., rows, cols] = 1.0
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand_like(self.conv.weight))  # positive filters
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        a = torch.relu(self.conv(x * self.window))
        return self.head(a.mean(dim=(2, 3))).squeeze(-1)


def test_grad_cam_peaks_in_the_region_the_model_uses():
    torch.manual_seed(0)
    model = RegionModel(slice(20, 28), slice(4, 12))
    with torch.no_grad():
        model.head.weight.fill_(1.0)  # every channel votes for the class
    x = torch.rand(3, 1, 32, 32) + 0.1  # positive everywhere: every activation is alive
    cams = grad_cam(model, model.conv, x)
    assert cams.shape == (3, 32, 32)
    for cam in cams:
        row, col = np.unravel_index(cam.argmax(), cam.shape)
        assert 20 <= row < 28 and 4 <= col < 12
        # Nothing outside the region (beyond bilinear spill of a pixel) carries weight.
        outside = cam.copy()
        outside[18:30, 2:14] = 0
        assert outside.max() < 1e-6


def test_default_layer_of_the_small_cnn_is_its_last_conv_block():
    from medequity.models import create_backbone
    from medequity.models.classifier import Classifier

    backbone = create_backbone("small_cnn", input_size=32)
    model = Classifier(backbone.module, backbone.feature_dim).eval()
    assert default_layer(model) is model.backbone.features
    cams = classifier_cam(model, torch.randn(2, 3, 32, 32))
    assert cams.shape == (2, 32, 32) and np.all((cams >= 0) & (cams <= 1))


def test_overlap_extremes():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16))
    same = cam_overlap(a, a)
    assert same["iou"] == pytest.approx(1.0) and same["pearson"] == pytest.approx(1.0)
    left = np.zeros((16, 16))
    left[:, :4] = 1.0  # hot regions of 25% each, disjoint
    right = np.zeros((16, 16))
    right[:, -4:] = 1.0
    disjoint = cam_overlap(left, right, top=0.25)
    assert disjoint["iou"] == 0.0
    assert disjoint["pearson"] < 0
    half = np.zeros((16, 16))
    half[:, 2:6] = 1.0  # shares half its hot pixels with `left`
    assert cam_overlap(left, half, top=0.25)["iou"] == pytest.approx(32 / 96)


def test_overlap_is_per_image_on_batches():
    a = np.random.default_rng(1).random((4, 8, 8))
    b = a.copy()
    b[2] = 1 - a[2]  # the reversed map: hot where a is cold
    out = cam_overlap(a, b)
    np.testing.assert_allclose(out["iou"][[0, 1, 3]], 1.0)
    assert out["iou"][2] == 0.0 and out["pearson"][2] == pytest.approx(-1.0)


def test_plot_cams_returns_a_three_column_figure():
    import matplotlib.figure

    images = torch.randn(2, 3, 16, 16)
    cams = np.random.default_rng(0).random((2, 16, 16))
    fig = plot_cams(images, cams, cams[::-1])
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 6
    assert "IoU" in fig.axes[2].get_title()


def test_yhat_and_shat_maps_of_a_fair_diagnosis_model_on_the_same_images():
    """Ŷ and Ŝ maps come from the same layer of f_θ (discriminator='encoder'); both are valid maps."""
    import pandas as pd

    from medequity.explain import sensitive_cam
    from medequity.methods import create_method
    from medequity.models import create_backbone
    from medequity.models.classifier import Classifier
    from medequity.training.data import ArrayItems, SplitData

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    y = np.array([0, 1] * 4)
    s = np.array([0, 0, 1, 1] * 2)
    train = SplitData(ArrayItems(x, y, s), y, s, ("F", "M"), pd.DataFrame({"sample_id": range(8)}))
    backbone = create_backbone("small_cnn", input_size=32)
    model = Classifier(backbone.module, backbone.feature_dim).eval()
    method = create_method("fair_diagnosis")
    method.build(model, train)
    cam_y = classifier_cam(model, x, method=method)
    cam_s = sensitive_cam(model, method, x, torch.as_tensor(y), groups=torch.as_tensor(s))
    assert cam_y.shape == cam_s.shape == (8, 32, 32)
    assert np.all((cam_s >= 0) & (cam_s <= 1)) and cam_s.max() > 0
    overlap = cam_overlap(cam_y, cam_s)
    assert overlap["iou"].shape == (8,) and np.all((overlap["iou"] >= 0) & (overlap["iou"] <= 1))
