"""Explanations of model decisions: Grad-CAM maps for Ŷ and Ŝ and their overlap (Fair Diagnosis §4.5)."""

from medequity.explain.gradcam import (
    cam_overlap,
    classifier_cam,
    default_layer,
    grad_cam,
    plot_cams,
    sensitive_cam,
)

__all__ = ["cam_overlap", "classifier_cam", "default_layer", "grad_cam", "plot_cams", "sensitive_cam"]
