"""Named synthetic-data presets: one documented config dict per bias mechanism.

Each preset is a function registered under its name that returns a plain config dict (the same
YAML-able form :func:`medequity.data.synthetic.make_synthetic` accepts); its docstring says which
bias it plants and which metric should move. ``make_synthetic("cxr-sex-prevalence", n=2000)``
uses one; keyword overrides change any key, and a knob given as a dict is merged into the
preset's knob (``make_synthetic("derm-skin-tone-shortcut", shortcut={"strength": 0.5})``).

The knobs follow DATASETS.md "Synthetic data with known bias" and the causal picture of Fair
Diagnosis (Fig. 1): ``prevalence`` is the indirect path S→Y→X (fair to use: I(S;X|Y)=0), while
``shortcut`` and ``acquisition`` open the direct path S→X→Ŷ.
"""

from __future__ import annotations

from typing import Any

from medequity.registry import Registry

PRESETS: Registry[dict[str, Any]] = Registry("synthetic preset")
register_preset = PRESETS.register


def preset_descriptions() -> dict[str, str]:
    """Preset name -> the first line of its docstring (for CLI listings and data cards)."""
    return {
        name: (PRESETS.get(name).__doc__ or "").strip().splitlines()[0] for name in PRESETS.names()
    }


# --- unbiased references: every knob at zero -----------------------------------------------------


@register_preset("derm-unbiased")
def derm_unbiased() -> dict[str, Any]:
    """Dermatology, no bias: balanced groups, equal prevalence, no marker, no style shift.

    Skin tone is visible in every derm image by construction (the skin is painted in its
    Fitzpatrick tone), as in real dermatology; it is independent of the label, and lesions keep the
    same absolute contrast on every tone, so no group is harder. Sex and age are invisible.
    """
    return {"modality": "derm"}


@register_preset("cxr-unbiased")
def cxr_unbiased() -> dict[str, Any]:
    """Chest radiographs, no bias: no attribute is visible in the image or linked to the label."""
    return {"modality": "cxr"}


@register_preset("fundus-unbiased")
def fundus_unbiased() -> dict[str, Any]:
    """Fundus photographs with disc/cup masks, no bias (glaucoma = larger cup-to-disc ratio)."""
    return {"modality": "fundus"}


@register_preset("volume-unbiased")
def volume_unbiased() -> dict[str, Any]:
    """Small 3D volumes (16×32×32) with a lesion blob, no bias."""
    return {"modality": "volume"}


# --- one mechanism each ----------------------------------------------------------------------------


@register_preset("derm-skin-tone-shortcut")
def derm_skin_tone_shortcut() -> dict[str, Any]:
    """Dermatology, shortcut: a ruler marks 90% of malignant dark-skin (IV–VI) lesions in training.

    Direct path S→X→Ŷ: in the train and val splits the ruler appears only on malignant lesions of
    skin types IV–VI; in the test split it appears on IV–VI lesions at the same rate but
    independently of the label. A model that learns "ruler → malignant" loses worst-group AUC on
    test and its predictions depend on skin tone given the label (ADF = I(S;Ŷ|Y) rises).
    """
    return {
        "modality": "derm",
        "shortcut": {"attribute": "skin_tone", "strength": 0.9, "test": "decorrelated"},
    }


@register_preset("derm-skin-tone-representation")
def derm_skin_tone_representation() -> dict[str, Any]:
    """Dermatology, representation: only 15% of patients have skin types IV–VI.

    Under-representation alone (no other knob): group sizes and confidence-interval widths differ;
    any accuracy gap a model shows comes from having seen fewer dark-skin examples.
    """
    return {"modality": "derm", "representation": {"attribute": "skin_tone", "share": 0.15}}


@register_preset("cxr-sex-prevalence")
def cxr_sex_prevalence() -> dict[str, Any]:
    """Chest radiographs, prevalence: disease is 30 points more common in women (65% vs 35%).

    Indirect path S→Y→X: demographic parity of any good model moves, but the image depends on sex
    only through the disease, so the conditional dependence I(S;Ŷ|Y) (ADF) stays near zero.
    """
    return {"modality": "cxr", "prevalence": {"attribute": "sex", "strength": 0.3}}


@register_preset("cxr-sex-shortcut")
def cxr_sex_shortcut() -> dict[str, Any]:
    """Chest radiographs, shortcut: a corner tag on 90% of diseased women's films in training, reversed in test.

    Direct path S→X→Ŷ with a reversed test split: the tag marks healthy women in test, so a
    model relying on it falls below chance for women.
    """
    return {
        "modality": "cxr",
        "shortcut": {"attribute": "sex", "strength": 0.9, "test": "reversed"},
    }


@register_preset("cxr-sex-shortcut-prevalence")
def cxr_sex_shortcut_prevalence() -> dict[str, Any]:
    """Chest radiographs, both paths: disease 30 points more common in women, and the corner tag shortcut.

    The indirect path S→Y→X of ``cxr-sex-prevalence`` plus the direct path of ``cxr-sex-shortcut``
    (tag on 90% of diseased women's training films, reversed in test). Fair Diagnosis' case for
    conditioning on Y (Theorem 1): removing the direct path must leave the prevalence difference,
    so DP stays while ADF falls; an unconditioned adversary (FAAP) fights both.
    """
    return {
        "modality": "cxr",
        "prevalence": {"attribute": "sex", "strength": 0.3},
        "shortcut": {"attribute": "sex", "strength": 0.9, "test": "reversed"},
    }


@register_preset("cxr-age-label-noise")
def cxr_age_label_noise() -> dict[str, Any]:
    """Chest radiographs, annotation bias: 20% of labels of patients over 60 are flipped.

    The observed ``label`` disagrees with ``true_label`` in 20% of the >60 group and never in the
    other; models trained on ``label`` are penalised against the noisy labels of that group.
    """
    return {"modality": "cxr", "label_noise": {"attribute": "age", "strength": 0.2}}


@register_preset("cxr-acquisition")
def cxr_acquisition() -> dict[str, Any]:
    """Chest radiographs, acquisition: films of patients over 60 are brighter, flatter and blurred.

    Like portable bedside films for older in-patients: the style makes age predictable from the
    image (a probe's AUC is high) although the label is independent of it; a shortcut waiting to
    be used whenever age is also linked to the label.
    """
    return {"modality": "cxr", "acquisition": {"attribute": "age", "strength": 1.0}}


@register_preset("cxr-race-minority-difficulty")
def cxr_race_minority_difficulty() -> dict[str, Any]:
    """Chest radiographs: non-White patients are 25% of the cohort and their disease is subtler on the film.

    Under-representation plus a weaker, noisier opacity for non-White patients (difficulty 0.3),
    with well-separated classes (positives' severity Beta(5, 2)) so that a good model reaches an
    AUC near 0.9. A model with one threshold under-diagnoses the minority: its true-positive rate
    falls far below the majority's although its AUC is only a little lower (part of that AUC gap
    is in the images: oracle_group_auc reports it). The case `make demo` shows: per-group
    thresholds (ThresholdOptimizer) close the TPR gap at a cost in false positives.
    """
    return {
        "modality": "cxr",
        "severity_positive": [5.0, 2.0],
        "representation": {"attribute": "race", "share": 0.25},
        "difficulty": {"attribute": "race", "strength": 0.3},
    }


@register_preset("fundus-race-difficulty")
def fundus_race_difficulty() -> dict[str, Any]:
    """Fundus, difficulty: the glaucoma signal is half as strong and noisier for non-White patients.

    The cup-to-disc ratio of non-White patients carries a weaker and noisier disease signal, so
    even the oracle (the rendered signal itself) has a lower AUC there: that part of a model's gap
    is not the model's fault (oracle_group_auc reports it).
    """
    return {"modality": "fundus", "difficulty": {"attribute": "race", "strength": 0.5}}


@register_preset("volume-sex-difficulty")
def volume_sex_difficulty() -> dict[str, Any]:
    """3D volumes, difficulty: the lesion is fainter and noisier in women (2.5D/3D paths)."""
    return {"modality": "volume", "difficulty": {"attribute": "sex", "strength": 0.5}}
