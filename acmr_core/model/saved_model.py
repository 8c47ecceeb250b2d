"""The saved-model folder: a :class:`~acmr_core.model.predictor.TrainedModel` in safetensors + JSON.

What ``acmr train --out OUT`` writes per seed (``OUT/models/seed_N``) and ``acmr evaluate --model`` reads.
Not a bundle: a bundle (:mod:`acmr_core.bundle.format`, what ``checkpoints/`` holds) adds the class catalog,
backbone identity, latent cache and familiarity statistics; it reuses the state helpers defined here.

Public interface:

* :func:`save_trained` ``(directory, trained) -> Path`` — writes ``directory/acmr.safetensors`` (ACMR weights
  under ``model.``, classifier under ``classifier.``, scaler min/max under ``scaler.``, class attributes, seen
  and unseen class ids) and ``directory/acmr.json`` (format version, architecture, schedule, calibration
  gamma, classifier epochs, selection record, class names). Both are written atomically (temp file + rename).
* :func:`load_trained` ``(directory, device="cpu") -> TrainedModel`` — validates everything and raises a
  one-line :class:`~acmr_core.errors.BundleError` for a missing, corrupt or inconsistent part.
* :func:`is_trained_dir` ``(directory) -> bool``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from acmr_core.data.xlsa17 import FeatureScaler
from acmr_core.errors import ACMRError, BundleError, quote_value, shorten
from acmr_core.fileio import atomic_write, read_json, write_json
from acmr_core.model.calibration import check_temperature
from acmr_core.model.config import ACMRConfig, TrainConfig
from acmr_core.model.gzsl import GZSLClassifier
from acmr_core.model.network import ACMR
from acmr_core.model.predictor import TrainedModel
from acmr_core.runtime import resolve_device

FORMAT = "acmr-trained"
FORMAT_VERSION = 1
WEIGHTS_FILE = "acmr.safetensors"
CONFIG_FILE = "acmr.json"


def is_trained_dir(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file() and (Path(directory) / WEIGHTS_FILE).is_file()


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous CPU tensors, ready for safetensors (trained models and bundles)."""
    return {name: value.detach().cpu().contiguous() for name, value in module.state_dict().items()}


def read_tensors(path: Path, problem: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on the CPU; an unreadable file is a one-line :class:`BundleError`
    ``"<problem> (<reason>)"``."""
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types for bad headers / sizes
        reason = shorten(str(error).splitlines()[0]) if str(error) else type(error).__name__
        raise BundleError(f"{problem} ({reason})") from None


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], problem: str) -> None:
    """Load ``state`` strictly into ``module``; a mismatch is a one-line :class:`BundleError`
    ``"<problem> (<torch's reason, bounded>)"``."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = shorten(error)  # one line, bounded: torch lists every mismatched key
        raise BundleError(f"{problem} ({detail})") from None


def save_trained(directory: str | Path, trained: TrainedModel) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{name}": value for name, value in cpu_state(trained.model).items()}
    tensors.update({f"classifier.{name}": value for name, value in cpu_state(trained.classifier).items()})
    if trained.scaler is not None:
        for name, value in trained.scaler.state_dict().items():
            tensors[f"scaler.{name}"] = torch.from_numpy(np.ascontiguousarray(value))
    tensors["class_attributes"] = torch.from_numpy(
        np.ascontiguousarray(trained.class_attributes, dtype=np.float32)
    )
    tensors["seen_classes"] = torch.from_numpy(np.asarray(trained.seen_classes, dtype=np.int64))
    tensors["unseen_classes"] = torch.from_numpy(np.asarray(trained.unseen_classes, dtype=np.int64))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": trained.arch.to_dict(),
        "train": trained.train.to_dict(),
        "gamma": trained.gamma,
        "temperature": trained.temperature,
        "classifier_epochs": trained.classifier_epochs,
        "selection": trained.selection,
        "class_names": trained.class_names,
        "has_scaler": trained.scaler is not None,
    }
    atomic_write(directory / WEIGHTS_FILE, save(tensors, metadata={"format": FORMAT}))
    write_json(directory / CONFIG_FILE, config)
    return directory


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path} is missing; is {path.parent} a model saved by 'acmr train'?")
    config = read_json(path, advice="save the model again with 'acmr train'")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BundleError(f"{path} is not an ACMR model config (format '{FORMAT}' expected)")
    if config.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path} has format version {quote_value(config.get('format_version'))}; "
            f"this version reads {FORMAT_VERSION}"
        )
    return config


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BundleError(f"{path} is missing; the model folder is incomplete")
    return read_tensors(path, f"{path} is corrupt or truncated")


def _take(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}


def load_trained(directory: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"model folder {directory} does not exist")
    config = _read_config(directory / CONFIG_FILE)
    tensors = _read_tensors(directory / WEIGHTS_FILE)
    try:
        arch = ACMRConfig.from_dict(config["arch"])
        train = TrainConfig.from_dict(config["train"])
        gamma = float(config["gamma"])
        temperature = check_temperature(config.get("temperature", 1.0))  # absent: saved before calibration
        classifier_epochs = int(config["classifier_epochs"])
    except (KeyError, TypeError, ValueError, ACMRError) as error:
        raise BundleError(f"{directory / CONFIG_FILE} is incomplete or invalid ({shorten(error)})") from None
    for key in ("class_attributes", "seen_classes", "unseen_classes"):
        if key not in tensors:
            raise BundleError(
                f"{directory / WEIGHTS_FILE} has no '{key}' tensor; the model folder is corrupt"
            )
    class_attributes = tensors["class_attributes"].numpy()
    if class_attributes.shape != (arch.num_classes, arch.attribute_dim):
        raise BundleError(
            f"{directory / WEIGHTS_FILE}: class attributes {tuple(class_attributes.shape)} do not match "
            "the config "
            f"({arch.num_classes} x {arch.attribute_dim})"
        )
    model = ACMR(arch)
    weights = directory / WEIGHTS_FILE
    load_state(model, _take(tensors, "model."), f"{weights}: the ACMR weights do not match the saved config")
    classifier = GZSLClassifier(arch.latent_dim, arch.num_classes)
    load_state(
        classifier,
        _take(tensors, "classifier."),
        f"{weights}: the classifier weights do not match the saved config",
    )
    scaler = None
    if config.get("has_scaler", False):
        try:
            scaler = FeatureScaler.from_state_dict(
                {k: v.numpy() for k, v in _take(tensors, "scaler.").items()}
            )
        except ACMRError as error:
            raise BundleError(f"{directory / WEIGHTS_FILE}: {error}") from None
        if scaler.state_dict()["data_min"].size != arch.feature_dim:
            raise BundleError(
                f"{directory / WEIGHTS_FILE}: the scaler does not match {arch.feature_dim}-d features"
            )
    for key in ("seen_classes", "unseen_classes"):
        ids = tensors[key]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= arch.num_classes):
            raise BundleError(
                f"{directory / WEIGHTS_FILE}: '{key}' has ids outside 0..{arch.num_classes - 1}"
            )
    device = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(device).eval()
    classifier.to(device).eval()
    class_names = config.get("class_names")
    return TrainedModel(
        model=model,
        classifier=classifier,
        arch=arch,
        train=train,
        class_attributes=class_attributes,
        seen_classes=tensors["seen_classes"].numpy(),
        unseen_classes=tensors["unseen_classes"].numpy(),
        gamma=gamma,
        classifier_epochs=classifier_epochs,
        selection=config.get("selection") or {},
        scaler=scaler,
        class_names=list(class_names) if isinstance(class_names, list) else None,
        temperature=temperature,
    )
