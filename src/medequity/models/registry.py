"""The backbone registry: what a backbone is, the ``BACKBONES`` registry and how a name resolves.

A backbone family lives in its own module (``small_cnn``, ``timm_backbones``, ``clip``; later SAM,
MONAI …) which imports only this module (and :mod:`medequity.models.checkpoint`) and registers its
factory with :func:`register_backbone`. :mod:`medequity.models` imports the family modules, or
registers a slow-to-import one lazily with :meth:`BackboneRegistry.register_lazy` (the module is
imported the first time its name is created). This module imports no family module.

Names resolve as (:func:`resolve_backbone_name`):

* a registered name (``small_cnn``) -> that factory;
* ``<family>:<model>`` for a registered family (``timm:resnet18``, ``open_clip:ViT-B-32``) -> the
  family factory with ``model_name="<model>"``;
* any other name without a ``:`` (``resnet18``) -> the default family (timm) with that model name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medequity.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from medequity.registry import Registry

__all__ = ["BACKBONES", "DEFAULT_FAMILY", "IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "BackboneRegistry",
           "register_backbone", "resolve_backbone_name"]

#: The family that bare, unregistered names (``resnet18``, ``vit_base_patch16_224``) belong to.
DEFAULT_FAMILY = "timm"


@dataclass
class Backbone:
    """A feature extractor and what it needs: input size, normalisation, feature size."""

    name: str
    module: nn.Module
    feature_dim: int
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    config: dict[str, Any] = field(default_factory=dict)  # how it was created (for cache keys and records)
    # Module-name groups for PEFT masks (FairTune): name -> list of parameter-name prefixes.
    module_groups: Callable[[], dict[str, list[str]]] | None = None
    # How this backbone loads a checkpoint file (zoo models: into the right submodule, with their
    # own allowed unused keys); ``create_backbone`` calls it with (path, key_map=, allow_unexpected=,
    # allow_missing=) and records the returned LoadReport. None: the plain load_weights(module, path).
    load_checkpoint: Callable[..., Any] | None = None
    # The 2D transform config when the model's own differs from FairMedFM's resize-256/crop-224
    # (e.g. RAD-DINO's 518 pixels); None: :meth:`transform_config`'s default.
    preprocess: dict[str, Any] | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)

    def transform_config(self) -> dict[str, Any]:
        """The 2D preprocessing this backbone expects (FairMedFM D.1.1 for 224-pixel models)."""
        if self.preprocess is not None:
            return {"name": "2d", "mean": list(self.mean), "std": list(self.std), **self.preprocess}
        if self.input_size >= 224:
            return {"name": "2d", "resize": 256, "crop": 224, "mean": list(self.mean), "std": list(self.std)}
        return {"name": "2d", "resize": self.input_size, "crop": None, "mean": list(self.mean), "std": list(self.std)}


class BackboneRegistry(Registry[Backbone]):
    """A :class:`~medequity.registry.Registry` that also knows families and lazily imported modules.

    A *family* factory takes ``model_name=`` and is reached as ``<family>:<model>``. A *lazy*
    entry names the module that registers it; the module is imported on first use, so a heavy
    dependency (open_clip) is not imported with :mod:`medequity.models`.
    """

    def __init__(self, kind: str):
        super().__init__(kind)
        self._families: set[str] = set()
        self._lazy: dict[str, tuple[str, bool]] = {}  # name -> (module, family)

    def register(self, name: str, *, family: bool = False) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
        key = name.lower()
        if key in self._lazy and family != self._lazy[key][1]:
            raise ValueError(f"{self.kind} {name!r} was registered lazily with family={self._lazy[key][1]}")
        register = super().register(name)

        def decorator(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
            register(factory)
            self._lazy.pop(key, None)
            if family:
                self._families.add(key)
            return factory

        return decorator

    def register_lazy(self, name: str, module: str, *, family: bool = False) -> None:
        """``name`` is registered by importing ``module`` (a dotted path), done on first use."""
        key = name.lower()
        if key in self._entries or key in self._lazy:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._lazy[key] = (module, family)

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests and plugins that replace one)."""
        key = name.lower()
        self._entries.pop(key, None)
        self._lazy.pop(key, None)
        self._families.discard(key)

    def get(self, name: str) -> Callable[..., Backbone]:
        key = name.lower()
        if key in self._lazy and key not in self._entries:
            module = self._lazy[key][0]
            importlib.import_module(module)
            if key not in self._entries:
                raise RuntimeError(f"importing {module} did not register {self.kind} {name!r}")
        return super().get(name)

    def is_family(self, name: str) -> bool:
        key = name.lower()
        return key in self._families or (key in self._lazy and self._lazy[key][1])

    def names(self) -> list[str]:
        return sorted({*self._entries, *self._lazy})

    def families(self) -> list[str]:
        return sorted(n for n in self.names() if self.is_family(n))

    def __contains__(self, name: str) -> bool:
        key = name.lower()
        return key in self._entries or key in self._lazy


BACKBONES = BackboneRegistry("backbone")


def register_backbone(name: str, *, family: bool = False) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: register a backbone factory (``family=True``: it takes ``model_name=``)."""
    return BACKBONES.register(name, family=family)


def resolve_backbone_name(name: str) -> tuple[str, dict[str, Any]]:
    """(registry entry, extra factory arguments) for a backbone name; imports no family module.

    ``"small_cnn"`` -> ``("small_cnn", {})``; ``"open_clip:ViT-B-32"`` -> ``("open_clip",
    {"model_name": "ViT-B-32"})``; ``"resnet18"`` -> ``("timm", {"model_name": "resnet18"})``.
    Whether the model exists inside its family is for the family factory to say.
    """
    if name in BACKBONES:
        if BACKBONES.is_family(name):
            raise KeyError(f"backbone {name!r} is a family: name a model of it, e.g. '{name}:<model>'")
        return name, {}
    prefix, sep, model = name.partition(":")
    if sep:
        if prefix in BACKBONES and BACKBONES.is_family(prefix) and model:
            return prefix, {"model_name": model}
        raise KeyError(f"unknown backbone {name!r}; registered: {BACKBONES.names()}; "
                       f"families (written '<family>:<model>'): {BACKBONES.families()}")
    return DEFAULT_FAMILY, {"model_name": name}
