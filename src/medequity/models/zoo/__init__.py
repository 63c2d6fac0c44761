"""The foundation-model zoo: FairMedFM's classification FMs (App. A.2.1) from their official files.

Each module is one family; importing it registers its entries in ``ZOO`` (metadata for
``medequity models list``) and in the backbone registry, so ``create_backbone("dinov2-vitb14",
checkpoint="dinov2_vitb14_pretrain.pth")`` and specs with ``model: dinov2-vitb14`` work. Heavy
libraries (timm, open_clip, transformers, segment_anything) are imported when a model is built.

=================  ==============================================================  =========
name               architecture                                                    zero-shot
=================  ==============================================================  =========
clip-vit-b16       open_clip ViT-B-16-quickgelu (OpenAI)                           yes
pubmedclip         open_clip ViT-B-32-quickgelu (OpenAI CLIP fine-tuned on ROCO)   yes
biomedclip         open_clip timm ViT-B/16 + PubMedBERT                            yes
medclip            transformers Swin-T + Bio_ClinicalBERT                          yes
blip               transformers BlipForImageTextRetrieval (ITC)                    yes
dinov2-vitb14      timm ViT-B/14 (DINOv2)                                          no
rad-dino           transformers Dinov2Model (RAD-DINO)                             no
c2l                torchvision ResNet-18                                           no
moco-cxr           torchvision ResNet-18                                           no
lvm-med            segment_anything ImageEncoderViT ViT-B                          no
medmae             timm ViT-B/16                                                   no
=================  ==============================================================  =========
"""

from medequity.models.zoo import (  # noqa: F401  (each module registers its entries)
    biomedclip,
    blip,
    c2l,
    dinov2,
    lvm_med,
    medclip,
    medmae,
    moco_cxr,
    openai_clip,
)
from medequity.models.zoo.base import ZOO, ZooEntry

__all__ = ["ZOO", "ZooEntry"]
