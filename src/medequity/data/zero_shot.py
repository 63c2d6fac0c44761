"""The zero-shot prompts a binary dataset declares (FairMedFM §3.2 "CLIP-ZS and CLIP-Adapt").

A vision–language model classifies zero-shot by comparing an image with a text prototype per
class, so a dataset has to say how its two classes are named. Each loader puts its declaration in
``info["zero_shot"]``: ``class_names`` = [name of label 0, name of label 1] (in the dataset's own
label order: CheXpert's label 1 is *healthy*), ``templates`` (``{}`` = a class name) and
``source`` (where the wording comes from). CLIP zero-shot and CLIP-Adapt read it through the
experiment's usage context unless the usage's parameters say otherwise, and record the prompts
they used with the run.

FairMedFM's per-dataset wording (its dataset configs' ``text_template`` and ``class_names``, one
template each, classes in label order):

- CheXpert, MIMIC-CXR: ``a chest X-ray of a {}`` × (diseased, normal);
- HAM10000: ``a photo of a {}`` × (benign lesion, malignant lesion);
- PAPILA: ``a fundus image of a {}`` × (normal, glaucoma);
- FairVLMed10k: ``a scanning laser ophthalmoscope fundus image of a {}`` × (normal, glaucoma);
- Harvard-GF3300: ``a photo of a {}`` × (normal, glaucoma);
- BRSET: ``a fundus image of a {}`` × (normal, retinopathy).

Datasets or label choices FairMedFM did not use get wording of ours in the same style (stated by
``source``): NIH ChestX-ray14 as CheXpert; a chest X-ray finding as the label (``finding=``)
"a chest X-ray with {}" × ("no <finding>", "<finding>"); Fitzpatrick17k as HAM10000; another
BRSET label column "a fundus image with {}" × ("no <column>", "<column>").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FAIRMEDFM = "FairMedFM's dataset config"
OURS = "medequity (FairMedFM has no prompt for this label)"

CXR_TEMPLATE = "a chest X-ray of a {}"
DERM_TEMPLATE = "a photo of a {}"
FUNDUS_TEMPLATE = "a fundus image of a {}"
SLO_FUNDUS_TEMPLATE = "a scanning laser ophthalmoscope fundus image of a {}"
DERM_CLASSES = ("benign lesion", "malignant lesion")
GLAUCOMA_CLASSES = ("normal", "glaucoma")


def zero_shot_prompts(class_names: Sequence[str], templates: Sequence[str] | str, source: str) -> dict[str, Any]:
    """A dataset's ``info["zero_shot"]``: class names in label order (0, 1), templates, source."""
    templates = [templates] if isinstance(templates, str) else list(templates)
    if len(class_names) != 2 or not templates or any("{}" not in t for t in templates):
        raise ValueError(f"zero-shot prompts need 2 class names (label 0, label 1) and templates with '{{}}'; "
                         f"got {list(class_names)!r}, {templates!r}")
    return {"class_names": list(class_names), "templates": templates, "source": source}


def cxr_prompts(finding: str = "No Finding") -> dict[str, Any]:
    """Chest X-rays labelled by ``finding``: FairMedFM's healthy-vs-diseased wording for "No
    Finding" (label 1 = healthy), otherwise "a chest X-ray with [no] <finding>"."""
    if finding == "No Finding":
        return zero_shot_prompts(("diseased", "normal"), CXR_TEMPLATE, FAIRMEDFM)
    name = finding.lower()
    return zero_shot_prompts((f"no {name}", name), "a chest X-ray with {}", OURS)


def derm_prompts(source: str = FAIRMEDFM) -> dict[str, Any]:
    """Dermatology, label 1 = malignant (HAM10000 in FairMedFM; Fitzpatrick17k likewise)."""
    return zero_shot_prompts(DERM_CLASSES, DERM_TEMPLATE, source)


def fundus_prompts(disease: str = "glaucoma", template: str = FUNDUS_TEMPLATE, source: str = FAIRMEDFM) -> dict[str, Any]:
    """Fundus/retinal images, label 1 = ``disease``."""
    return zero_shot_prompts(("normal", disease), template, source)


#: FairMedFM's template per Harvard dataset (GF3300's RNFLT maps kept its generic "a photo of a {}").
HARVARD_TEMPLATES = {"harvard_gf3300": "a photo of a {}", "fairvlmed10k": SLO_FUNDUS_TEMPLATE}


def brset_prompts(label_column: str = "diabetic_retinopathy") -> dict[str, Any]:
    """BRSET: FairMedFM's normal/retinopathy for its diabetic-retinopathy label; another label
    column is named after itself."""
    if label_column == "diabetic_retinopathy":
        return fundus_prompts("retinopathy")
    name = label_column.replace("_", " ").lower()
    return zero_shot_prompts((f"no {name}", name), "a fundus image with {}", OURS)


def synthetic_prompts(modality: str) -> dict[str, Any] | None:
    """The synthetic images' modality in FairMedFM's wording for it, in their label order (cxr:
    label 1 = disease, so (normal, diseased)); volumes have none (no 3D zero-shot)."""
    source = "FairMedFM's wording for the modality (synthetic images)"
    prompts = {"cxr": (("normal", "diseased"), CXR_TEMPLATE), "derm": (DERM_CLASSES, DERM_TEMPLATE),
               "fundus": (GLAUCOMA_CLASSES, FUNDUS_TEMPLATE)}.get(modality)
    return None if prompts is None else zero_shot_prompts(*prompts, source)
