"""ACMR zero-shot studio: Aligned Cross-Modal Representations (Fang et al., AAAI 2022) for GZSL.

The package face, in the way timm's is: the names most code needs, importable from ``acmr_core`` directly::

    import acmr_core

    bundle = acmr_core.load_bundle("checkpoints/demo-world")
    backbone = bundle.create_backbone()
    print(acmr_core.predict_images(bundle, ["cat.jpg"], backbone=backbone))

    data = acmr_core.load_xlsa17("data/xlsa17/data/CUB")
    metrics = acmr_core.run_protocol(data, preset="cub", seeds=[0])

Layers, bottom to top (each imports only from the ones below it): ``errors``, ``runtime``, ``fileio``,
``version``, ``defaults``; ``data``, ``features``, ``viz``; ``model``; ``training``; ``bundle``, ``describe``;
``pipelines``; ``serving``; ``cli`` and ``commands``. See docs/architecture.md.

The names are resolved on first use (PEP 562): ``import acmr_core`` stays instant, so ``acmr --help`` does not
pay for importing torch, timm or umap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from acmr_core.errors import (
    ACMRError,
    BackboneError,
    BundleError,
    DataError,
    DownloadError,
    ImageError,
    UserClassError,
)
from acmr_core.version import __version__

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # the method
    "ACMR": "acmr_core.model.network",
    "ACMRConfig": "acmr_core.model.config",
    "TrainConfig": "acmr_core.model.config",
    "make_configs": "acmr_core.model.config",
    "list_presets": "acmr_core.model.config",
    "find_preset": "acmr_core.model.config",
    "load_preset": "acmr_core.model.config",
    "Preset": "acmr_core.model.config",
    "get_preset": "acmr_core.model.config",
    "register_preset": "acmr_core.model.config",
    "GZSLClassifier": "acmr_core.model.gzsl",
    "TrainedModel": "acmr_core.model.predictor",
    "save_trained": "acmr_core.model.saved_model",
    "load_trained": "acmr_core.model.saved_model",
    # training and evaluation
    "fit_acmr": "acmr_core.training.fit",
    "train_gzsl": "acmr_core.training.protocol",
    "run_protocol": "acmr_core.training.protocol",
    "evaluate_trained": "acmr_core.training.protocol",
    "gzsl_scores": "acmr_core.training.metrics",
    # data and features
    "ZSLData": "acmr_core.data.xlsa17",
    "load_xlsa17": "acmr_core.data.xlsa17",
    "load_image": "acmr_core.data.images",
    "Backbone": "acmr_core.features.backbone",
    "BackboneIdentity": "acmr_core.features.backbone",
    "create_backbone": "acmr_core.features.backbone",
    "extract_features": "acmr_core.features.extract",
    "save_features": "acmr_core.features.extract",
    "load_features": "acmr_core.features.extract",
    # bundles and pipelines
    "Bundle": "acmr_core.bundle.bundle",
    "ClassCatalog": "acmr_core.bundle.catalog",
    "load_bundle": "acmr_core.bundle.format",
    "save_bundle": "acmr_core.bundle.format",
    "verify_bundle": "acmr_core.bundle.format",
    "list_bundles": "acmr_core.bundle.format",
    "build_bundle": "acmr_core.pipelines.build",
    "evaluate_bundle": "acmr_core.pipelines.evaluate",
    "predict_images": "acmr_core.pipelines.predict",
    "bootstrap": "acmr_core.pipelines.bootstrap",
    # describing classes and serving
    "read_description": "acmr_core.describe.reader",
    "StudioService": "acmr_core.serving.service",
    "ServiceRegistry": "acmr_core.serving.registry",
}

__all__ = [
    "ACMR",
    "ACMRConfig",
    "ACMRError",
    "Backbone",
    "BackboneError",
    "BackboneIdentity",
    "Bundle",
    "BundleError",
    "ClassCatalog",
    "DataError",
    "DownloadError",
    "GZSLClassifier",
    "ImageError",
    "Preset",
    "ServiceRegistry",
    "StudioService",
    "TrainConfig",
    "TrainedModel",
    "UserClassError",
    "ZSLData",
    "__version__",
    "bootstrap",
    "build_bundle",
    "create_backbone",
    "evaluate_bundle",
    "evaluate_trained",
    "extract_features",
    "find_preset",
    "fit_acmr",
    "get_preset",
    "gzsl_scores",
    "list_bundles",
    "list_presets",
    "load_bundle",
    "load_features",
    "load_image",
    "load_preset",
    "load_trained",
    "load_xlsa17",
    "make_configs",
    "predict_images",
    "read_description",
    "register_preset",
    "run_protocol",
    "save_bundle",
    "save_features",
    "save_trained",
    "train_gzsl",
    "verify_bundle",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'acmr_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what static checkers and IDEs see
    from acmr_core.bundle.bundle import Bundle
    from acmr_core.bundle.catalog import ClassCatalog
    from acmr_core.bundle.format import list_bundles, load_bundle, save_bundle, verify_bundle
    from acmr_core.data.images import load_image
    from acmr_core.data.xlsa17 import ZSLData, load_xlsa17
    from acmr_core.describe.reader import read_description
    from acmr_core.features.backbone import Backbone, BackboneIdentity, create_backbone
    from acmr_core.features.extract import extract_features, load_features, save_features
    from acmr_core.model.config import (
        ACMRConfig,
        Preset,
        TrainConfig,
        find_preset,
        get_preset,
        list_presets,
        load_preset,
        make_configs,
        register_preset,
    )
    from acmr_core.model.gzsl import GZSLClassifier
    from acmr_core.model.network import ACMR
    from acmr_core.model.predictor import TrainedModel
    from acmr_core.model.saved_model import load_trained, save_trained
    from acmr_core.pipelines.bootstrap import bootstrap
    from acmr_core.pipelines.build import build_bundle
    from acmr_core.pipelines.evaluate import evaluate_bundle
    from acmr_core.pipelines.predict import predict_images
    from acmr_core.serving.registry import ServiceRegistry
    from acmr_core.serving.service import StudioService
    from acmr_core.training.fit import fit_acmr
    from acmr_core.training.metrics import gzsl_scores
    from acmr_core.training.protocol import evaluate_trained, run_protocol, train_gzsl
