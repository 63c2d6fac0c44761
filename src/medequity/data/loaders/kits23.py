"""KiTS23 (Heller et al. 2023): kidney CT volumes, kidney/tumor/cyst segmentation, sex and BMI.

Layout of the official repository after ``kits23_download_data``: ``dataset/kits23.json`` (one
object per case: ``case_id``, ``gender``, ``bmi``, ``age_at_nephrectomy``, ``malignant``, ...) and
``dataset/case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` (``root`` may be the repository or
its ``dataset/`` folder; older releases name the JSON ``kits.json``). One row per volume (the
paper scores per volume). Masks: 0 background, 1 kidney, 2 tumor, 3 cyst (``info["classes"]``).
Groups (FairMedFM B.2): sex from ``gender``, BMI in WHO classes (underweight < 18.5 ≤ normal
< 25 ≤ overweight < 30 ≤ obese), age ≥ 60 also available. The work is done by
:func:`medequity.data.volumes.load_kits23_volumes` (also the ``"nifti-volumes"`` preset
``kits23``); a missing volume is an error naming the JSON row and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medequity.data.base import register_dataset
from medequity.data.volumes import VolumeDataset, load_kits23_volumes


@register_dataset("kits23")
def load_kits23(root: str | Path, metadata: str | Path | None = None, **kwargs: Any) -> VolumeDataset:
    return load_kits23_volumes(root, metadata, name="kits23", **kwargs)
