"""CLIP zero-shot's prompts come from the dataset (FairMedFM's per-dataset wording), are overridable
by the usage's parameters part by part, and are recorded with the run."""

from __future__ import annotations

import json
import warnings

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medequity.data import create_dataset
from medequity.data.zero_shot import brset_prompts, cxr_prompts, zero_shot_prompts
from medequity.usages import UsageContext
from medequity.usages.clip_usages import GENERIC_CLASS_NAMES, GENERIC_TEMPLATES, resolve_prompts


def prototypes_of(module, negative: list[str], positive: list[str]) -> torch.Tensor:
    """Class prototypes computed directly: open_clip's tokenizer, unit-norm text embeddings, mean, renormalised."""
    tokenizer = open_clip.SimpleTokenizer(context_length=16)  # medequity-tiny's context length
    module.eval()
    with torch.no_grad():
        return torch.stack([F.normalize(F.normalize(module.encode_text(tokenizer(p)), dim=-1).mean(0), dim=-1)
                            for p in (negative, positive)])


def run(usage: str, usage_params: dict | None = None):
    from medequity.experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec(dataset_options={"preset": "cxr-sex-prevalence", "n": 120, "image_size": 32}, attribute="sex",
                          model="open_clip:medequity-tiny", transform={"name": "2d", "resize": 32, "crop": None},
                          usage=usage, usage_params=usage_params or {}, train={"epochs": 1, "batch_size": 64}, n_boot=5,
                          eval_attributes=["sex"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fewer than 30 samples")  # tiny test groups
        return run_experiment(spec)


def test_the_dataset_prompts_are_the_ones_encoded_and_recorded(tmp_path, monkeypatch):
    # The synthetic chest X-rays (label 1 = disease) declare FairMedFM's chest X-ray wording.
    result = run("clip_zs")
    record = result.model.usage_record["prompts"]
    assert record["negative"] == ["a chest X-ray of a normal"] and record["positive"] == ["a chest X-ray of a diseased"]
    assert record["source"]["class_names"].startswith("dataset 'synthetic:cxr-sex-prevalence'")
    encoder = result.model.backbone
    want = prototypes_of(encoder, ["a chest X-ray of a normal"], ["a chest X-ray of a diseased"])
    torch.testing.assert_close(result.model.head.prototypes.detach(), want, rtol=1e-5, atol=1e-6)
    generic = prototypes_of(encoder, *[[t.format(c) for t in GENERIC_TEMPLATES] for c in GENERIC_CLASS_NAMES])
    assert not torch.allclose(result.model.head.prototypes.detach(), generic, atol=1e-3)  # the test can tell them apart

    from medequity.experiment import save

    # run.json is what this checks; the audit report and explanations (~20 s) are other tests' subject
    monkeypatch.setattr(save, "save_classification_report", lambda *a, **k: {})
    monkeypatch.setattr(save, "save_artifacts", lambda *a, **k: {})
    save.save_run(result, tmp_path / "run", n_boot=5)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["usage_record"]
    assert saved == {"usage": "clip_zs", "prompts": record}


def test_usage_class_names_replace_the_dataset_names_and_keep_its_template():
    result = run("clip_adapt", {"class_names": ["no opacity", "lung opacity"]})
    record = result.model.usage_record["prompts"]
    assert record["negative"] == ["a chest X-ray of a no opacity"] and record["positive"] == ["a chest X-ray of a lung opacity"]
    assert record["source"]["class_names"] == "usage parameter 'class_names'"
    assert record["source"]["templates"].startswith("dataset 'synthetic:cxr-sex-prevalence'")
    scores = result.predictions["score"].to_numpy()
    assert np.all((scores >= 0) & (scores <= 1)) and np.isfinite(result.history["train_loss"]).all()


def test_precedence_prompts_then_usage_parts_then_dataset_then_generic():
    chexpert = UsageContext(zero_shot=cxr_prompts(), dataset="chexpert")
    prompts, record = resolve_prompts({"templates": ["{} chest."]}, chexpert)
    assert prompts == [["diseased chest."], ["normal chest."]]  # CheXpert's label 1 is healthy: "normal" is positive
    assert record["source"] == {"class_names": "dataset 'chexpert' (FairMedFM's dataset config)",
                                "templates": "usage parameter 'templates'"}
    prompts, record = resolve_prompts({"prompts": {"negative": "sick", "positive": ["well", "fine"]}}, chexpert)
    assert prompts == [["sick"], ["well", "fine"]] and record["source"] == "usage parameter 'prompts'"
    prompts, record = resolve_prompts({}, UsageContext())
    assert prompts[1] == [t.format("disease") for t in GENERIC_TEMPLATES] and "generic" in record["source"]["templates"]


def test_loaders_declare_their_wording_in_label_order(tmp_path):
    rows = [("HAM_1", "ISIC_1", "mel", "histo", 60.0, "female", "back"), ("HAM_2", "ISIC_2", "nv", "histo", 40.0, "male", "back")]
    pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]).to_csv(
        tmp_path / "HAM10000_metadata.csv", index=False)
    (tmp_path / "HAM10000_images_part_1").mkdir()
    for row in rows:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "HAM10000_images_part_1" / f"{row[1]}.jpg")
    ham = create_dataset("ham10000", tmp_path)
    assert ham.info["zero_shot"]["class_names"] == ["benign lesion", "malignant lesion"]  # label 1 = malignant
    assert ham.info["zero_shot"]["templates"] == ["a photo of a {}"]
    assert create_dataset("synthetic", preset="fundus-unbiased", n=40).info["zero_shot"]["class_names"] == ["normal", "glaucoma"]
    # a finding as the label: label 1 = disease, so the finding is the positive class
    assert cxr_prompts("Pleural Effusion")["class_names"] == ["no pleural effusion", "pleural effusion"]
    assert brset_prompts()["class_names"] == ["normal", "retinopathy"]
    assert brset_prompts("macular_edema")["class_names"] == ["no macular edema", "macular edema"]
    with pytest.raises(ValueError, match="2 class names"):
        zero_shot_prompts(["a", "b", "c"], "{}", "test")
