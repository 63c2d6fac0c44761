"""The Fair Diagnosis / FAAP explanation files of a run (Grad-CAM of Ŷ and Ŝ and their overlap,
Fair Diagnosis §4.5): :func:`~medequity.explain.adversarial_mask.explain_adversarial_mask` computes
them, :func:`~medequity.report.explanations.write_explanations` writes
``explanations.{html,json,png}``. ``save_run`` writes them for every run whose method explains
itself; this module does it for one run, raising instead of logging."""

from __future__ import annotations

from pathlib import Path

from medequity.experiment import RunResult, rebuild_split_data
from medequity.explain.adversarial_mask import explain_adversarial_mask, select_balanced
from medequity.methods.fair_diagnosis import AdversarialMask
from medequity.report.explanations import write_explanations

__all__ = ["explain_fair_diagnosis", "select_balanced", "write_fair_diagnosis_explanations"]


def explain_fair_diagnosis(result: RunResult, out_dir: str | Path, n_images: int = 8) -> dict[str, Path] | None:
    """Write the explanation files; their paths (``html``, ``json``, ``png``), or None for feature inputs."""
    if not isinstance(result.method, AdversarialMask):
        raise ValueError(f"method {getattr(result.method, 'name', result.method)!r} is not Fair Diagnosis/FAAP")
    if result.model is None:
        raise ValueError("the run result carries no trained model")
    data = result.test_data if result.test_data is not None else rebuild_split_data(result.spec)
    explanation = explain_adversarial_mask(result.model, result.method, data, n_images=n_images, seed=result.spec.seed)
    if explanation is None:
        return None
    spec = result.spec
    title = f"{result.method.name} ({spec.usage}, {spec.model}) on {spec.dataset}, attribute {spec.attribute}"
    return write_explanations(explanation, out_dir, title=title, settings={"attribute": spec.attribute})


def write_fair_diagnosis_explanations(result: RunResult, out_dir: str | Path, n_images: int = 8) -> Path | None:
    """Write ``explanations.{html,json,png}`` for a Fair Diagnosis / FAAP run; the HTML's path, or
    None (with a logged message) when the run's inputs are features rather than images."""
    paths = explain_fair_diagnosis(result, out_dir, n_images)
    return None if paths is None else paths["html"]
