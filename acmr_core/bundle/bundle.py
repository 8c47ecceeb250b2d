"""Model bundles: one folder with everything needed to serve a trained ACMR model.

Layout (format version :data:`FORMAT_VERSION`; every part is JSON or safetensors — no pickle anywhere)::

    manifest.json          format, version, created, provenance, and {file: {sha256, bytes}} for every part
    backbone.json          BackboneIdentity of the feature extractor the model was trained on
    catalog.json           classes (names, descriptions, seen/unseen), grouped attribute names, matrix
    scaler.safetensors     MinMax feature scaler (fitted on the training images only)
    model.json             ACMR architecture + training schedule
    model.safetensors      ACMR weights (complete state_dict, incl. the fixed eval IEM permutation)
    classifier.json        GZSL classifier: calibration gamma, epochs, how they were selected
    classifier.safetensors GZSL linear classifier weights
    latent.json            image ids of the plotted images, placement settings
    latent.safetensors     latent-space cache: visual latents (sample per class) + labels, semantic latents
                           per class, their 2-D UMAP coordinates, the reference set used to place new points,
                           and the posterior (mu, logvar) of every training image so the classifier can be
                           re-fitted for user-defined classes without the features
    familiarity.json       "outside my world" threshold and how it was calibrated (held-out training images)
    familiarity.safetensors  per-feature mean and scale of the training images (acmr_core.bundle.familiarity)

:func:`load_bundle` verifies the manifest, the format version, each part's size and SHA-256, then the
contents' mutual consistency; any problem raises :class:`~acmr_core.errors.BundleError` with a one-line
reason.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acmr_core import __version__
from acmr_core.errors import ACMRError, BackboneError, BundleError, DataError

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "acmr-bundle"
#: Version 2 added the familiarity parts; version-1 bundles are refused with a request to rebuild.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
PARTS = (
    "backbone.json",
    "catalog.json",
    "scaler.safetensors",
    "model.json",
    "model.safetensors",
    "classifier.json",
    "classifier.safetensors",
    "latent.json",
    "latent.safetensors",
    "familiarity.json",
    "familiarity.safetensors",
)
DEFAULT_ROOT = Path("checkpoints")
GROUP_SEPARATORS = (": ", "::")
# Plotted images per class in the latent cache (the plot shows a sample, not every training image).
DEFAULT_PLOT_PER_CLASS = 12


# ============================================================================================ class catalog


def attribute_group(name: str) -> str:
    """The group of an attribute name: ``"colour: red" -> "colour"``, ``"has_bill::hooked" -> "has_bill"``."""
    for separator in GROUP_SEPARATORS:
        if separator in name:
            return name.split(separator, 1)[0].strip()
    return ""


@dataclass(frozen=True)
class ClassCatalog:
    """The classes a bundle knows: names, seen/unseen flags, and the class-attribute matrix."""

    names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    attribute_matrix: np.ndarray  # (classes, attributes) float32
    seen_mask: np.ndarray  # (classes,) bool
    descriptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        matrix = np.asarray(self.attribute_matrix, dtype=np.float32)
        seen = np.asarray(self.seen_mask, dtype=bool)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "attribute_names", tuple(str(a) for a in self.attribute_names))
        object.__setattr__(self, "attribute_matrix", matrix)
        object.__setattr__(self, "seen_mask", seen)
        descriptions = tuple(str(d) for d in self.descriptions) or ("",) * len(self.names)
        object.__setattr__(self, "descriptions", descriptions)
        self._validate()

    def _validate(self) -> None:
        n_classes, n_attributes = len(self.names), len(self.attribute_names)
        if n_classes < 2 or n_attributes < 1:
            raise DataError(
                f"a class catalog needs >= 2 classes and >= 1 attribute, got {n_classes} and {n_attributes}"
            )
        blank = [i for i, n in enumerate(self.names) if not n.strip()]
        if blank:
            raise DataError(f"class {blank[0]} has an empty name; every class needs a name")
        for what, values in (("class", self.names), ("attribute", self.attribute_names)):
            seen_before: set[str] = set()
            for value in values:
                if value.casefold() in seen_before:
                    raise DataError(f"duplicate {what} name {value!r}; names must be unique")
                seen_before.add(value.casefold())
        if self.attribute_matrix.shape != (n_classes, n_attributes):
            raise DataError(
                f"attribute matrix has shape {self.attribute_matrix.shape}; "
                f"expected ({n_classes}, {n_attributes})"
            )
        if not np.all(np.isfinite(self.attribute_matrix)):
            raise DataError("the attribute matrix contains NaN or infinite values")
        if self.seen_mask.shape != (n_classes,):
            raise DataError(f"seen flags have shape {self.seen_mask.shape}; expected ({n_classes},)")
        if not self.seen_mask.any() or self.seen_mask.all():
            raise DataError("a catalog needs at least one seen and one unseen class (set 'seen' per class)")
        if len(self.descriptions) != n_classes:
            raise DataError(f"{len(self.descriptions)} descriptions for {n_classes} classes")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def seen_classes(self) -> np.ndarray:
        return np.flatnonzero(self.seen_mask)

    @property
    def unseen_classes(self) -> np.ndarray:
        return np.flatnonzero(~self.seen_mask)

    def attribute_groups(self) -> dict[str, list[str]]:
        """Attribute names by group, in catalog order (ungrouped names under ``""``)."""
        groups: dict[str, list[str]] = {}
        for name in self.attribute_names:
            groups.setdefault(attribute_group(name), []).append(name)
        return groups

    def index_of(self, name: str) -> int:
        lookup = {n.casefold(): i for i, n in enumerate(self.names)}
        found = lookup.get(str(name).casefold())
        if found is None:
            raise DataError(f"class {name!r} is not in the catalog")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "attributes": [{"name": n, "group": attribute_group(n)} for n in self.attribute_names],
            "classes": [
                {
                    "name": name,
                    "seen": bool(seen),
                    "description": description,
                    "attributes": [float(v) for v in row],
                }
                for name, seen, description, row in zip(
                    self.names, self.seen_mask, self.descriptions, self.attribute_matrix, strict=True
                )
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "class metadata") -> ClassCatalog:
        """Parse the class-metadata JSON format (documented in docs/bundles.md)."""
        if not isinstance(data, Mapping):
            raise DataError(f"{source} must be a JSON object with 'attributes' and 'classes'")
        attributes, classes = data.get("attributes"), data.get("classes")
        if not isinstance(attributes, list) or not isinstance(classes, list):
            raise DataError(f"{source} needs an 'attributes' list and a 'classes' list")
        names = [a.get("name") if isinstance(a, Mapping) else a for a in attributes]
        if not all(isinstance(n, str) for n in names):
            raise DataError(f"{source}: every attribute must be a name (string) or an object with a 'name'")
        rows, class_names, seen, descriptions = [], [], [], []
        for position, entry in enumerate(classes):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise DataError(f"{source}: class {position} must be an object with a 'name' string")
            if not isinstance(entry.get("seen"), bool):
                raise DataError(f"{source}: class {entry['name']!r} needs 'seen': true or false")
            rows.append(_attribute_row(entry.get("attributes"), names, entry["name"], source))
            class_names.append(entry["name"])
            seen.append(entry["seen"])
            descriptions.append(str(entry.get("description", "")))
        return cls(
            names=tuple(class_names),
            attribute_names=tuple(names),
            attribute_matrix=np.array(rows, dtype=np.float32).reshape(len(rows), len(names)),
            seen_mask=np.array(seen, dtype=bool),
            descriptions=tuple(descriptions),
        )


def _attribute_row(values: Any, names: Sequence[str], class_name: str, source: str) -> list[float]:
    """A class's attribute values: a list in attribute order, or an object {name: value} (missing = 0)."""
    if isinstance(values, Mapping):
        unknown = [k for k in values if k not in names]
        if unknown:
            raise DataError(f"{source}: class {class_name!r} has unknown attribute {unknown[0]!r}")
        row = [values.get(n, 0.0) for n in names]
    elif isinstance(values, list):
        if len(values) != len(names):
            raise DataError(
                f"{source}: class {class_name!r} has {len(values)} attribute values for {len(names)} names"
            )
        row = values
    else:
        raise DataError(f"{source}: class {class_name!r} needs 'attributes' as a list or an object")
    try:
        floats = [float(v) for v in row]
    except (TypeError, ValueError):
        raise DataError(f"{source}: class {class_name!r} has a non-numeric attribute value") from None
    if not all(math.isfinite(v) for v in floats):
        raise DataError(f"{source}: class {class_name!r} has a NaN or infinite attribute value")
    return floats


def load_class_metadata(path: str | Path) -> ClassCatalog:
    """Read a class-metadata JSON file (``acmr bundle --classes``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"class metadata file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read class metadata {path}: {error}; it must be a JSON file") from None
    return ClassCatalog.from_dict(data, source=str(path))


# ============================================================================================ latent cache


@dataclass(frozen=True)
class LatentCache:
    """Precomputed latents for the latent-space plot, and the training posteriors for classifier re-fits."""

    visual: np.ndarray  # (N, d) visual latents (mu) of a sample of images
    visual_labels: np.ndarray  # (N,) class index of each
    image_ids: tuple[str, ...]  # (N,) where each image came from
    visual_xy: np.ndarray  # (N, 2)
    semantic: np.ndarray  # (C, d) semantic latents (mu) of every catalog class
    semantic_xy: np.ndarray  # (C, 2)
    reference: np.ndarray  # (R, d) latents the 2-D map was fitted on
    reference_xy: np.ndarray  # (R, 2)
    train_mu: np.ndarray  # (T, d) visual posterior of every training image
    train_logvar: np.ndarray  # (T, d)
    train_labels: np.ndarray  # (T,)
    neighbours: int = 8

    def projection(self) -> Any:
        from acmr_core.viz.latent_space import LatentProjection

        return LatentProjection(self.reference, self.reference_xy, self.neighbours)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            name: np.ascontiguousarray(getattr(self, name))
            for name in (
                "visual", "visual_labels", "visual_xy", "semantic", "semantic_xy",
                "reference", "reference_xy", "train_mu", "train_logvar", "train_labels",
            )
        }  # fmt: skip


# ============================================================================================ the bundle


@dataclass
class Bundle:
    """A loaded (or freshly built) model bundle.

    ``trained`` is a :class:`acmr_core.model.predictor.TrainedModel` (ACMR, GZSL classifier, gamma, scaler).
    """

    identity: Any  # acmr_core.features.backbone.BackboneIdentity
    catalog: ClassCatalog
    trained: Any  # acmr_core.model.predictor.TrainedModel
    latent: LatentCache
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    familiarity: Any = None  # acmr_core.bundle.familiarity.Familiarity of the training images
    _projection: Any = field(default=None, repr=False)

    # --- parts ------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else str(self.provenance.get("name", "bundle"))

    @property
    def model(self) -> Any:
        return self.trained.model

    @property
    def classifier(self) -> Any:
        return self.trained.classifier

    @property
    def scaler(self) -> Any:
        return self.trained.scaler

    @property
    def gamma(self) -> float:
        return float(self.trained.gamma)

    @property
    def device(self) -> torch.device:
        return self.trained.device

    @property
    def caveat(self) -> str:
        """A limitation to show next to predictions (e.g. the demo bundle's weak shape); may be empty."""
        return str(self.provenance.get("caveat", ""))

    @property
    def backbone_spec(self) -> dict[str, Any]:
        """``create_backbone`` arguments that reproduce the bundle's backbone (weights, model_name, seed)."""
        return dict(self.provenance.get("backbone", {}))

    @property
    def projection(self) -> Any:
        """The :class:`~acmr_core.viz.latent_space.LatentProjection` used to place new points (built once)."""
        if self._projection is None:
            self._projection = self.latent.projection()
        return self._projection

    # --- backbone --------------------------------------------------------------------------------------
    def check_backbone(self, backbone: Any) -> None:
        """Raise :class:`BundleError` unless ``backbone`` (or an identity) makes this bundle's features."""
        other = getattr(backbone, "identity", backbone)
        try:
            self.identity.ensure_matches(other, context=f"bundle {self.name}")
        except BackboneError as error:
            raise BundleError(str(error)) from None

    def create_backbone(self, device: str = "auto", **kwargs: Any) -> Any:
        """The backbone this bundle was built with (recorded weights), checked against its identity."""
        from acmr_core.features.backbone import create_backbone

        spec = self.backbone_spec
        if "weights" not in spec:
            raise BundleError(
                f"bundle {self.name} does not record how to create its backbone; pass one built with "
                f"the weights "
                f"of {self.identity.describe()}"
            )
        backbone = create_backbone(
            weights=spec["weights"],
            model_name=spec.get("model_name", self.identity.model_name),
            seed=int(spec.get("seed", 0)),
            residual_scale=float(spec.get("residual_scale", 0.0)),
            device=device,
            **kwargs,
        )
        self.check_backbone(backbone)
        return backbone

    # --- inference --------------------------------------------------------------------------------------
    def check_features(self, features: Any) -> np.ndarray:
        array = np.asarray(features, dtype=np.float32)
        if array.ndim == 1:
            array = array[None, :]
        expected = self.trained.arch.feature_dim
        if array.ndim != 2 or array.shape[1] != expected:
            raise BundleError(
                f"features have shape {array.shape}; bundle {self.name} expects (N, {expected})"
            )
        return array

    def latents(self, features: Any) -> np.ndarray:
        """Visual latents (posterior mean, deterministic) of raw backbone features ``(N, feature_dim)``."""
        return self.trained.latents(self.check_features(features)).cpu().numpy()

    def scores(self, features: Any, gamma: float | None = None) -> np.ndarray:
        """Calibrated log-probabilities ``(N, C)`` (seen classes penalised by ``gamma``)."""
        return self.trained.scores(self.check_features(features), gamma).cpu().numpy()

    def probabilities(self, features: Any, gamma: float | None = None) -> np.ndarray:
        """Class probabilities ``(N, C)``: softmax of the calibrated scores (they sum to 1 per image)."""
        return torch.softmax(torch.from_numpy(self.scores(features, gamma)), dim=1).numpy()

    def assess_familiarity(self, features: Any, images: Any = None) -> list[tuple[float, bool]]:
        """``(familiarity, unfamiliar)`` of each image: how much it resembles the training images.

        ``images`` (PIL, one per feature row) add the pixel measure where the bundle has one (demo world).
        """
        if self.familiarity is None:
            raise BundleError(f"bundle {self.name} has no familiarity statistics; rebuild it")
        return self.familiarity.assess(self.check_features(features), images)

    def top_k(self, features: Any, k: int = 5, gamma: float | None = None) -> list[list[tuple[int, float]]]:
        """Per image, the ``k`` most probable ``(class index, probability)``."""
        probs = self.probabilities(features, gamma)
        k = max(1, min(int(k), probs.shape[1]))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(int(c), float(row[c])) for c in top] for row, top in zip(probs, order, strict=True)]

    @torch.no_grad()
    def semantic_latents(self, attributes: Any) -> np.ndarray:
        """Semantic latents of attribute vectors ``(M, A)`` (e.g. a user-defined class)."""
        array = np.asarray(attributes, dtype=np.float32)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != len(self.catalog.attribute_names):
            raise BundleError(
                f"attributes have shape {array.shape}; expected (M, {len(self.catalog.attribute_names)})"
            )
        self.model.eval()
        return self.model.semantic_latent(torch.from_numpy(array).to(self.device)).cpu().numpy()

    @torch.no_grad()
    def decode_attributes(self, latents: Any) -> np.ndarray:
        """The semantic decoder's reading of latents ``(M, d)``: attributes ``(M, A)``, catalog scale."""
        z = torch.as_tensor(np.asarray(latents, dtype=np.float32), device=self.device)
        self.model.eval()
        return self.model.decode_semantic(z.reshape(-1, z.shape[-1])).cpu().numpy()

    def place(self, latents: Any) -> np.ndarray:
        """2-D positions of new latents in the bundle's latent-space map (k-NN interpolation, no UMAP)."""
        return self.projection.place(np.asarray(latents, dtype=np.float32))

    def alignment(self) -> list[Any]:
        """Per-class alignment scores (see :func:`acmr_core.viz.latent_space.alignment_scores`)."""
        from acmr_core.viz.latent_space import alignment_scores

        return alignment_scores(self.latent.visual, self.latent.visual_labels, self.latent.semantic)

    def refit_classifier(
        self,
        class_attributes: Any,
        seen_mask: Any,
        *,
        unseen_samples: int | None = None,
        seen_samples: int | None = None,
        seed: int = 0,
    ) -> Any:
        """A new GZSL classifier over ``class_attributes`` ``(C', A)`` (e.g. the catalog plus user classes).

        Seen classes (``seen_mask``; they must be the bundle's seen classes, in the same rows) are represented
        by latents sampled from the stored training posteriors; every other class by latents sampled from its
        attributes — the same recipe as training, without the training features. A few hundred ms on CPU.
        """
        from acmr_core.model.gzsl import train_classifier

        attributes = np.asarray(class_attributes, dtype=np.float32)
        mask = np.asarray(seen_mask, dtype=bool)
        if attributes.ndim != 2 or attributes.shape[1] != len(self.catalog.attribute_names):
            raise BundleError(
                f"attributes have shape {attributes.shape}; expected (C, {len(self.catalog.attribute_names)})"
            )
        if mask.shape != (attributes.shape[0],):
            raise BundleError(f"seen mask has shape {mask.shape}; expected ({attributes.shape[0]},)")
        bundle_seen = self.catalog.seen_classes
        if not np.array_equal(np.flatnonzero(mask), bundle_seen):
            raise BundleError("the seen classes of a re-fitted classifier must be the bundle's seen classes")
        train = self.trained.train
        device = self.device
        generator = torch.Generator(device=device).manual_seed(seed)
        rng = np.random.default_rng(seed)
        per_seen = seen_samples or train.cls_seen_samples
        per_unseen = unseen_samples or train.cls_unseen_samples
        latents, labels = [], []
        mu, logvar = self.latent.train_mu, self.latent.train_logvar
        for cls in bundle_seen:
            rows = np.resize(rng.permutation(np.flatnonzero(self.latent.train_labels == cls)), per_seen)
            latents.append(self.model.reparameterize(
                torch.from_numpy(mu[rows]).to(device),
                torch.from_numpy(logvar[rows]).to(device),
                generator=generator,
            ))  # fmt: skip
            labels.append(torch.full((per_seen,), int(cls), dtype=torch.int64, device=device))
        others = np.flatnonzero(~mask)
        with torch.no_grad():
            self.model.eval()
            repeated = torch.from_numpy(np.repeat(attributes[others], per_unseen, axis=0)).to(device)
            latents.append(self.model.sample_semantic_latent(repeated, generator=generator))
        labels.append(torch.from_numpy(np.repeat(others, per_unseen)).to(device))
        z = torch.cat(latents).detach()
        y = torch.cat(labels)
        return train_classifier(
            z, y, attributes.shape[0], epochs=max(int(self.trained.classifier_epochs), 1), seed=seed,
            **train.classifier_optimizer(),
        )  # fmt: skip


# ============================================================================================ save


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def check_output_dir(directory: str | Path) -> Path:
    """Refuse an output folder that holds something other than a bundle (it would be replaced)."""
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target} is a file; choose a folder for the bundle")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise BundleError(f"{target} exists and is not a bundle; choose an empty or new --out folder")
    return target


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write ``bundle`` to ``directory`` (replacing a previous bundle there) and return the path.

    Parts are written to a temporary sibling folder, the manifest last, then swapped into place, so an
    interrupted save never leaves a half-written bundle under the target name.
    """
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file as save_torch

    target = check_output_dir(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        trained = bundle.trained
        _write_json(staging / "backbone.json", bundle.identity.to_dict())
        _write_json(staging / "catalog.json", bundle.catalog.to_dict())
        save_numpy({k: np.asarray(v, np.float32) for k, v in trained.scaler.state_dict().items()},
                   str(staging / "scaler.safetensors"))  # fmt: skip
        _write_json(
            staging / "model.json", {"arch": trained.arch.to_dict(), "train": trained.train.to_dict()}
        )
        save_torch(_cpu_state(trained.model), str(staging / "model.safetensors"))
        _write_json(
            staging / "classifier.json",
            {
                "num_classes": int(trained.classifier.num_classes),
                "gamma": float(trained.gamma),
                "epochs": int(trained.classifier_epochs),
                "selection": _jsonable(trained.selection),
            },
        )
        save_torch(_cpu_state(trained.classifier), str(staging / "classifier.safetensors"))
        latent_meta = {
            "image_ids": list(bundle.latent.image_ids),
            "neighbours": int(bundle.latent.neighbours),
            "placement": "inverse-distance-weighted k-NN interpolation in latent space",
        }
        _write_json(staging / "latent.json", latent_meta)
        save_numpy(bundle.latent.arrays(), str(staging / "latent.safetensors"))
        if bundle.familiarity is None:
            raise BundleError(
                "a bundle needs familiarity statistics (acmr_core.bundle.familiarity.fit_familiarity)"
            )
        _write_json(staging / "familiarity.json", _jsonable(bundle.familiarity.meta()))
        save_numpy(bundle.familiarity.arrays(), str(staging / "familiarity.safetensors"))
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "acmr_version": __version__,
            "provenance": _jsonable(bundle.provenance),
            "files": {
                part: {"sha256": _sha256(staging / part), "bytes": (staging / part).stat().st_size}
                for part in PARTS
            },
        }
        _write_json(staging / MANIFEST, manifest)
        # mkdtemp makes a private (0700) folder; a bundle is meant to be readable (e.g. by a container user).
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    bundle.path, bundle.manifest = target, manifest
    log.info("bundle written to %s", target)
    return target


def _swap_into_place(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ============================================================================================ load


def _read_manifest(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise BundleError(
            f"no bundle at {directory} (not a folder); build one with 'acmr build-demo' or 'acmr bundle'"
        )
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{directory} has no {MANIFEST}; it is not a bundle (or an interrupted copy of one)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path} is corrupt ({error}); rebuild or re-copy the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not an ACMR bundle manifest (format is not '{BUNDLE_FORMAT}')")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"bundle {directory.name} has format version {version!r}; this acmr reads version "
            f"{FORMAT_VERSION} — "
            "rebuild the bundle with this version (or use the acmr that wrote it)"
        )
    if not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{path} has no 'files' table; the manifest is corrupt")
    return manifest


def verify_bundle(directory: str | Path) -> dict[str, Any]:
    """Check manifest, version, and every part's presence, size and SHA-256; return the manifest."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
    files = manifest["files"]
    for part in PARTS:
        entry = files.get(part)
        if not isinstance(entry, dict) or "sha256" not in entry or "bytes" not in entry:
            raise BundleError(
                f"bundle {directory.name}: manifest does not list {part}; the manifest is corrupt"
            )
        path = directory / part
        if not path.is_file():
            raise BundleError(f"bundle {directory.name} is missing {part}; rebuild or re-copy the bundle")
        size = path.stat().st_size
        if size != entry["bytes"]:
            state = "truncated" if size < entry["bytes"] else "longer than recorded"
            raise BundleError(
                f"bundle {directory.name}: {part} is {state} ({size} of {entry['bytes']} bytes); "
                "re-copy the bundle"
            )
        if _sha256(path) != entry["sha256"]:
            raise BundleError(
                f"bundle {directory.name}: {part} is corrupt (SHA-256 mismatch); re-copy the bundle"
            )
    return manifest


def _load_json(directory: Path, part: str) -> Any:
    try:
        return json.loads((directory / part).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"bundle {directory.name}: {part} is not valid JSON ({error})") from None


def _load_tensors(directory: Path, part: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(directory / part))
    except Exception as error:  # safetensors raises its own error types for bad headers / sizes
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BundleError(
            f"bundle {directory.name}: {part} is not a valid safetensors file ({reason})"
        ) from None


def _require(tensors: Mapping[str, torch.Tensor], names: Sequence[str], where: str) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise BundleError(f"{where} lacks {', '.join(missing)}; the bundle is incomplete")


def load_bundle(directory: str | Path, device: str | torch.device = "auto") -> Bundle:
    """Load and validate a bundle folder; every problem is a one-line :class:`BundleError`."""
    from acmr_core.bundle.familiarity import Familiarity
    from acmr_core.data.xlsa17 import FeatureScaler
    from acmr_core.features.backbone import BackboneIdentity
    from acmr_core.model.config import ACMRConfig, TrainConfig
    from acmr_core.model.gzsl import GZSLClassifier
    from acmr_core.model.network import ACMR
    from acmr_core.model.predictor import TrainedModel
    from acmr_core.runtime import resolve_device

    directory = Path(directory)
    manifest = verify_bundle(directory)
    name = directory.name
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)

    try:
        identity = BackboneIdentity.from_dict(_load_json(directory, "backbone.json"))
        catalog = ClassCatalog.from_dict(
            _load_json(directory, "catalog.json"), source=f"bundle {name} catalog.json"
        )
        model_meta = _load_json(directory, "model.json")
        arch = ACMRConfig.from_dict(model_meta.get("arch") if isinstance(model_meta, dict) else None)
        train = TrainConfig.from_dict(model_meta.get("train") if isinstance(model_meta, dict) else None)
    except (DataError, BackboneError) as error:
        raise BundleError(f"bundle {name}: {error}") from None

    scaler_state = _load_tensors(directory, "scaler.safetensors")
    _require(scaler_state, ("data_min", "data_max"), f"bundle {name}: scaler.safetensors")
    try:
        scaler = FeatureScaler.from_state_dict({k: v.numpy() for k, v in scaler_state.items()})
    except DataError as error:
        raise BundleError(f"bundle {name}: {error}") from None

    # Cross-part consistency: one line naming the first thing that does not fit.
    checks = (
        (arch.feature_dim == identity.feature_dim,
         f"model expects {arch.feature_dim}-d features, backbone gives {identity.feature_dim}"),
        (scaler_state["data_min"].numel() == arch.feature_dim,
         "scaler and model disagree on the feature size"),
        (arch.attribute_dim == len(catalog.attribute_names),
         f"model expects {arch.attribute_dim} attributes, catalog has {len(catalog.attribute_names)}"),
        (arch.num_classes == catalog.num_classes,
         f"model has {arch.num_classes} classes, catalog has {catalog.num_classes}"),
    )  # fmt: skip
    for ok, reason in checks:
        if not ok:
            raise BundleError(f"bundle {name} is inconsistent: {reason}")

    model = ACMR(arch)
    _load_state(model, _load_tensors(directory, "model.safetensors"), f"bundle {name}: model.safetensors")
    classifier_meta = _load_json(directory, "classifier.json")
    gamma = classifier_meta.get("gamma") if isinstance(classifier_meta, dict) else None
    if not isinstance(gamma, (int, float)) or not np.isfinite(gamma):  # NaN parses as JSON, and scores NaN
        raise BundleError(f"bundle {name}: classifier.json lacks a numeric 'gamma' (a finite number)")
    classifier = GZSLClassifier(arch.latent_dim, catalog.num_classes)
    _load_state(
        classifier,
        _load_tensors(directory, "classifier.safetensors"),
        f"bundle {name}: classifier.safetensors",
    )

    latent = _load_latent(directory, catalog, arch.latent_dim)
    familiarity = Familiarity.from_parts(
        _load_json(directory, "familiarity.json"),
        {k: v.numpy() for k, v in _load_tensors(directory, "familiarity.safetensors").items()},
        f"bundle {name}",
    )
    if familiarity.feature_dim != arch.feature_dim:
        raise BundleError(
            f"bundle {name} is inconsistent: familiarity statistics are {familiarity.feature_dim}-d, "
            f"the model expects {arch.feature_dim}-d features"
        )
    trained = TrainedModel(
        model=model.to(torch_device).eval(),
        classifier=classifier.to(torch_device).eval(),
        arch=arch,
        train=train,
        class_attributes=catalog.attribute_matrix,
        seen_classes=catalog.seen_classes,
        unseen_classes=catalog.unseen_classes,
        gamma=float(classifier_meta["gamma"]),
        classifier_epochs=int(classifier_meta.get("epochs", train.cls_max_epochs)),
        selection=dict(classifier_meta.get("selection") or {}),
        scaler=scaler,
        class_names=list(catalog.names),
    )
    provenance = manifest.get("provenance") if isinstance(manifest.get("provenance"), dict) else {}
    return Bundle(identity, catalog, trained, latent, provenance, directory, manifest, familiarity)


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:200]  # one line, bounded: torch lists every mismatched key
        raise BundleError(f"{where} does not fit its config ({detail})") from None


def _load_latent(directory: Path, catalog: ClassCatalog, latent_dim: int) -> LatentCache:
    name = directory.name
    meta = _load_json(directory, "latent.json")
    tensors = _load_tensors(directory, "latent.safetensors")
    where = f"bundle {name}: latent.safetensors"
    fields = ("visual", "visual_labels", "visual_xy", "semantic", "semantic_xy", "reference", "reference_xy",
              "train_mu", "train_logvar", "train_labels")  # fmt: skip
    _require(tensors, fields, where)
    arrays = {k: tensors[k].numpy() for k in fields}
    if not isinstance(meta, dict) or not isinstance(meta.get("image_ids"), list):
        raise BundleError(f"bundle {name}: latent.json lacks the 'image_ids' list")
    n_visual, n_classes = arrays["visual"].shape[0], catalog.num_classes
    expected = {
        "visual": (n_visual, latent_dim),
        "visual_labels": (n_visual,),
        "visual_xy": (n_visual, 2),
        "semantic": (n_classes, latent_dim),
        "semantic_xy": (n_classes, 2),
        "reference": (arrays["reference"].shape[0], latent_dim),
        "reference_xy": (arrays["reference"].shape[0], 2),
        "train_mu": (arrays["train_mu"].shape[0], latent_dim),
        "train_logvar": arrays["train_mu"].shape,
        "train_labels": (arrays["train_mu"].shape[0],),
    }
    for key, shape in expected.items():
        if tuple(arrays[key].shape) != tuple(shape):
            raise BundleError(
                f"{where}: '{key}' has shape {tuple(arrays[key].shape)}, expected {tuple(shape)}"
            )
    if len(meta["image_ids"]) != n_visual:
        raise BundleError(
            f"bundle {name}: latent.json lists {len(meta['image_ids'])} image ids for {n_visual} latents"
        )
    for key in ("visual_labels", "train_labels"):
        labels = arrays[key]
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise BundleError(f"{where}: '{key}' has class indices outside 0..{n_classes - 1}")
    missing_seen = np.setdiff1d(catalog.seen_classes, arrays["train_labels"])
    if missing_seen.size:
        raise BundleError(
            f"{where}: no training latents for seen class {catalog.names[int(missing_seen[0])]!r}"
        )
    try:
        neighbours = int(meta.get("neighbours", 8))
    except (TypeError, ValueError):
        raise BundleError(f"bundle {name}: latent.json 'neighbours' is not a number") from None
    return LatentCache(
        visual=arrays["visual"].astype(np.float32),
        visual_labels=arrays["visual_labels"].astype(np.int64),
        image_ids=tuple(str(i) for i in meta["image_ids"]),
        visual_xy=arrays["visual_xy"].astype(np.float32),
        semantic=arrays["semantic"].astype(np.float32),
        semantic_xy=arrays["semantic_xy"].astype(np.float32),
        reference=arrays["reference"].astype(np.float32),
        reference_xy=arrays["reference_xy"].astype(np.float32),
        train_mu=arrays["train_mu"].astype(np.float32),
        train_logvar=arrays["train_logvar"].astype(np.float32),
        train_labels=arrays["train_labels"].astype(np.int64),
        neighbours=neighbours,
    )


def list_bundles(root: str | Path = DEFAULT_ROOT) -> list[Path]:
    """Sub-folders of ``root`` that look like bundles (have a manifest), sorted by name; not validated."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


# ============================================================================================ build


@dataclass
class TrainingSet:
    """Raw backbone features of training images with class indices into a catalog."""

    features: np.ndarray  # (N, D) float32, raw (unscaled)
    labels: np.ndarray  # (N,) int64 catalog class indices
    image_ids: tuple[str, ...] = ()


def build_bundle(
    features: Any,
    catalog: ClassCatalog,
    out_dir: str | Path | None,
    *,
    identity: Any = None,
    plot_features: Any = None,
    preset: str = "DEMO",
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    plot_per_class: int = DEFAULT_PLOT_PER_CLASS,
    projection: str = "umap",
    val_unseen_classes: Sequence[int] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    progress: bool = True,
    pixel_histograms: Any = None,
) -> Bundle:
    """Train ACMR + GZSL classifier on ``features`` and assemble (and, with ``out_dir``, save) a bundle.

    ``features``: an :class:`acmr_core.features.extract.FeatureSet` (labels matched to catalog
    classes by name) or a
    :class:`TrainingSet`. Only images of *seen* classes train the model; images of unseen classes, if present,
    only appear in the latent-space plot. ``plot_features`` (same types) chooses the plotted images instead
    (e.g. renders never used in training). ``identity`` defaults to the features' backbone identity.
    ``projection``: ``"umap"`` (the latent-space map) or ``"pca"`` (a fast stand-in for smoke tests).
    ``val_unseen_classes``: seen classes that play "unseen" in the validation split that picks the classifier
    epochs and calibration gamma (default: a seeded random choice). ``train_overrides``: TrainConfig fields
    to change (e.g. ``cls_gamma_grid``). ``pixel_histograms``:
    :func:`acmr_core.bundle.familiarity.pixel_histogram`
    of the training images, where they are at hand, for the familiarity's pixel measure.
    """
    from acmr_core.runtime import resolve_device
    from acmr_core.training.fit import scale_epochs
    from acmr_core.training.protocol import train_gzsl

    if out_dir is not None:
        check_output_dir(out_dir)  # fail before training, not after
    training = as_training_set(features, catalog)
    identity = identity if identity is not None else getattr(features, "identity", None)
    if identity is None:
        raise BundleError("the features carry no backbone identity; extract them with 'acmr extract'")
    if training.features.shape[1] != identity.feature_dim:
        raise BundleError(
            f"features are {training.features.shape[1]}-d but the backbone gives {identity.feature_dim}-d"
        )
    seen_rows = np.flatnonzero(catalog.seen_mask[training.labels])
    missing = np.setdiff1d(catalog.seen_classes, training.labels[seen_rows])
    if missing.size:
        raise BundleError(f"no training images for seen class {catalog.names[int(missing[0])]!r}")
    torch_device = resolve_device(device)

    from acmr_core.model.config import TrainConfig, make_configs

    arch, train = make_configs(
        preset,
        feature_dim=training.features.shape[1],
        attribute_dim=len(catalog.attribute_names),
        num_classes=catalog.num_classes,
    )
    if epochs is not None:
        train = scale_epochs(train, epochs)
    if train_overrides:
        train = TrainConfig.from_dict({**train.to_dict(), **dict(train_overrides)})
    validation: dict[str, Any] = {}
    if val_unseen_classes is not None:
        val_unseen = np.unique(np.asarray(val_unseen_classes, dtype=np.int64))
        subset = np.isin(val_unseen, catalog.seen_classes).all()
        if not subset or val_unseen.size >= catalog.seen_classes.size:
            raise BundleError("validation 'unseen' classes must be some (not all) of the seen classes")
        validation = {
            "val_seen_classes": np.setdiff1d(catalog.seen_classes, val_unseen),
            "val_unseen_classes": val_unseen,
        }
    trained = train_gzsl(
        training.features[seen_rows], training.labels[seen_rows], catalog.attribute_matrix,
        catalog.seen_classes, catalog.unseen_classes, arch=arch, train=train, device=torch_device, seed=seed,
        selection="validation", class_names=list(catalog.names), progress=progress, **validation,
    )  # fmt: skip

    # Latent cache: plotted images (by default a sample of every class's images), semantic latents, UMAP map.
    plot = as_training_set(plot_features, catalog) if plot_features is not None else training
    plot_rows = sample_per_class(plot.labels, plot_per_class, seed)
    ids = plot.image_ids or tuple(f"image-{i}" for i in range(plot.labels.size))
    plot_ids = tuple(ids[i] for i in plot_rows)
    record = {
        "projection": projection,
        "builder": "acmr_core.bundle.bundle.build_bundle",
        "preset": preset,
        "seed": seed,
        **dict(provenance or {}),
    }
    bundle = assemble_bundle(
        trained,
        catalog,
        identity,
        training=TrainingSet(training.features[seen_rows], training.labels[seen_rows], ()),
        plotted=TrainingSet(plot.features[plot_rows], plot.labels[plot_rows], plot_ids),
        projection=projection,
        seed=seed,
        provenance=record,
        pixel_histograms=pixel_histograms,
    )
    if out_dir is not None:
        save_bundle(bundle, out_dir)
    return bundle


def assemble_bundle(
    trained: Any,
    catalog: ClassCatalog,
    identity: Any,
    *,
    training: TrainingSet,
    plotted: TrainingSet,
    projection: str = "umap",
    seed: int = 0,
    provenance: Mapping[str, Any] | None = None,
    pixel_histograms: Any = None,
) -> Bundle:
    """A bundle around an already trained model: computes its latent cache and fits the 2-D map.

    ``training``: the (seen-class) images the model was trained on; their posterior statistics let the app
    re-fit the GZSL classifier without the features. ``plotted``: the images shown in the latent-space plot.
    The familiarity statistics are fitted on the training features, their threshold calibrated on a held-out
    share of them (:func:`acmr_core.bundle.familiarity.fit_familiarity`; ``pixel_histograms`` of
    the training images
    add its pixel measure where the images are at hand).
    Used by :func:`build_bundle` and by the bootstrap, which bundles the model it trained and evaluated.
    """
    from acmr_core.bundle.familiarity import fit_familiarity
    from acmr_core.viz.latent_space import fit_projection

    device = trained.device
    with torch.no_grad():
        scaled = torch.from_numpy(trained.scaler.transform(training.features)).to(device)
        train_mu, train_logvar = (t.cpu().numpy() for t in trained.model.encode_visual(scaled))
        semantic = trained.model.semantic_latent(torch.from_numpy(catalog.attribute_matrix).to(device))
        semantic = semantic.cpu().numpy()
    visual = trained.latents(plotted.features).cpu().numpy()
    fitted, visual_xy, semantic_xy = fit_projection(visual, semantic, method=projection, seed=seed)
    latent = LatentCache(
        visual=visual,
        visual_labels=plotted.labels,
        image_ids=tuple(plotted.image_ids),
        visual_xy=visual_xy,
        semantic=semantic,
        semantic_xy=semantic_xy,
        reference=fitted.reference_latents,
        reference_xy=fitted.reference_xy,
        train_mu=train_mu,
        train_logvar=train_logvar,
        train_labels=training.labels,
        neighbours=fitted.neighbours,
    )
    record = {
        "training_images": int(training.labels.size),
        "plotted_images": int(plotted.labels.size),
        "selection": trained.selection,
        "gamma": trained.gamma,
        **dict(provenance or {}),
    }
    provenance_record = _jsonable(record)
    return Bundle(
        identity=identity, catalog=catalog, trained=trained, latent=latent, provenance=provenance_record,
        familiarity=fit_familiarity(training.features, seed=seed, pixel_histograms=pixel_histograms),
    )  # fmt: skip


def as_training_set(features: Any, catalog: ClassCatalog) -> TrainingSet:
    """A :class:`TrainingSet` from a TrainingSet or an extract ``FeatureSet`` (class names → catalog rows)."""
    if isinstance(features, TrainingSet):
        labels = np.asarray(features.labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= catalog.num_classes):
            raise BundleError(f"labels must be class indices in 0..{catalog.num_classes - 1}")
        return TrainingSet(np.asarray(features.features, np.float32), labels, tuple(features.image_ids))
    array = np.asarray(getattr(features, "features", None), dtype=np.float32)
    class_names = getattr(features, "class_names", None)
    raw_labels = getattr(features, "labels", None)
    if array.ndim != 2 or raw_labels is None or class_names is None:
        raise BundleError("features must be a FeatureSet with features, labels and class names")
    lookup = {n.casefold(): i for i, n in enumerate(catalog.names)}
    mapping = []
    for name in class_names:
        if str(name).casefold() not in lookup:
            raise BundleError(f"features have class {name!r} which the class metadata does not define")
        mapping.append(lookup[str(name).casefold()])
    raw = np.asarray(raw_labels, dtype=np.int64)
    labelled = np.flatnonzero(raw >= 0)  # extract marks images outside any class folder with -1
    if labelled.size < raw.size:
        log.warning("ignoring %d unlabelled images (not in a class folder)", raw.size - labelled.size)
    labels = np.asarray(mapping, dtype=np.int64)[raw[labelled]]
    paths = list(getattr(features, "image_paths", None) or ())
    ids = tuple(str(paths[i]) for i in labelled) if len(paths) == raw.size else ()
    return TrainingSet(array[labelled], labels, ids)


def sample_per_class(
    labels: np.ndarray, per_class: int, seed: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Sorted indices of at most ``per_class`` seeded random rows per class (among ``rows``, default all)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(labels.size) if rows is None else np.asarray(rows)
    picked = [rng.permutation(rows[labels[rows] == c])[:per_class] for c in np.unique(labels[rows])]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


# ============================================================================================ evaluate


def evaluate_bundle(
    bundle: Bundle,
    features: Any = None,
    *,
    seed: int | None = None,
    per_class: int = 20,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """GZSL U / S / H and ZSL top-1 (percent) of a bundle.

    With ``features`` (a FeatureSet or TrainingSet of held-out images) they are scored; without, a demo-world
    bundle renders ``per_class`` fresh images per class with ``seed`` (default
    :data:`acmr_core.data.demo_world.DEFAULT_EVAL_SEED`), which must not be a seed its training used.
    """
    from acmr_core.training.protocol import evaluate_trained

    if features is None:
        test, source = _render_evaluation_set(bundle, seed, per_class, device, progress)
    else:
        test, source = as_training_set(features, bundle.catalog), {"source": "features"}
    seen_rows = np.flatnonzero(bundle.catalog.seen_mask[test.labels])
    unseen_rows = np.flatnonzero(~bundle.catalog.seen_mask[test.labels])
    if seen_rows.size == 0 or unseen_rows.size == 0:
        raise BundleError("evaluation needs images of both seen and unseen classes")
    metrics = evaluate_trained(
        bundle.trained, test.features[seen_rows], test.labels[seen_rows],
        test.features[unseen_rows], test.labels[unseen_rows],
    )  # fmt: skip
    return {
        "bundle": bundle.name,
        **{k: float(v) for k, v in metrics.items()},
        "chance_gzsl": 100.0 / bundle.catalog.num_classes,
        "chance_zsl": 100.0 / bundle.catalog.unseen_classes.size,
        "images": {"seen": int(seen_rows.size), "unseen": int(unseen_rows.size)},
        **source,
    }


def _render_evaluation_set(
    bundle: Bundle, seed: int | None, per_class: int, device: str, progress: bool
) -> tuple[TrainingSet, dict[str, Any]]:
    from acmr_core.data import demo_world

    demo = bundle.provenance.get("demo_world")
    if not isinstance(demo, dict):
        raise BundleError(
            f"bundle {bundle.name} is not a demo-world bundle, so there is nothing to render; score it on "
            "held-out extracted features (acmr_core.bundle.bundle.evaluate_bundle)"
        )
    seed = demo_world.DEFAULT_EVAL_SEED if seed is None else int(seed)
    used = {int(s) for s in demo.get("used_seeds", [])}
    if seed in used:
        raise BundleError(
            f"render seed {seed} was used to build bundle {bundle.name}; choose a seed not in {sorted(used)}"
        )
    if per_class < 1:
        raise BundleError(f"--per-class must be at least 1, got {per_class}")
    try:
        world = demo_world.default_world().subset(list(bundle.catalog.names))
    except ACMRError:
        raise BundleError(f"bundle {bundle.name} has classes the demo world does not define") from None
    backbone = bundle.create_backbone(device=device)
    features, labels, _ = demo_world.extract_renders(
        world, backbone, seed, per_class, progress=progress, description=f"evaluate (render seed {seed})"
    )
    rendered = {"source": "demo-world renders", "render_seed": seed, "per_class": per_class}
    return TrainingSet(features, labels), rendered


def evaluate_bundle_command(args: Any) -> int:
    """``acmr evaluate --bundle B [--json] [--seed S] [--per-class N] [--features F]``."""
    features = None
    if getattr(args, "features", None):
        from acmr_core.features.extract import load_features

        features = load_features(args.features)
    bundle = load_bundle(args.bundle, device=getattr(args, "device", "auto"))
    if features is not None:
        bundle.check_backbone(features.identity)
    result = evaluate_bundle(
        bundle,
        features,
        seed=getattr(args, "seed", None),
        per_class=int(getattr(args, "per_class", None) or 20),
        device=getattr(args, "device", "auto"),
    )
    if getattr(args, "json", False):
        print(json.dumps(result, indent=1))
    else:
        print(
            f"{bundle.name}: GZSL U {result['U']:.1f}  S {result['S']:.1f}  H {result['H']:.1f}  "
            f"ZSL top-1 {result['zsl_top1']:.1f}  (chance: GZSL {result['chance_gzsl']:.1f}, "
            f"ZSL {result['chance_zsl']:.1f}; {result['images']['seen']} seen + {result['images']['unseen']} "
            f"unseen images, {result.get('source')}{_seed_note(result)})"
        )
    return 0


def _seed_note(result: Mapping[str, Any]) -> str:
    return f", seed {result['render_seed']}" if "render_seed" in result else ""


# ============================================================================================ helpers


def default_bundle_path() -> Path:
    """``checkpoints/demo-world`` under the working directory, else the one shipped beside this package."""
    local = DEFAULT_ROOT / "demo-world"
    if (local / MANIFEST).is_file():
        return local
    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "demo-world"
    return shipped if (shipped / MANIFEST).is_file() else local


def backbone_spec_from_identity(
    identity: Any, weights: str | None = None, seed: int | None = None
) -> dict[str, Any]:
    """``create_backbone`` arguments for a bundle's provenance, inferred from a backbone identity's source.

    ``random(seed=N[, residual_scale=R])`` → random weights with seed N (and residual scale R);
    ``hub:timm/<arch>.<tag>`` → that timm tag. A local
    weights file cannot be inferred (only its name is recorded): pass ``weights`` (its path) explicitly.
    """
    source = str(identity.weight_source)
    spec: dict[str, Any] = {"model_name": identity.model_name}
    if weights is not None:
        spec["weights"] = weights
    elif source.startswith("random"):
        spec["weights"] = "random"
    elif source.startswith("hub:"):
        spec["weights"] = source.split("/", 1)[-1]
    else:
        raise BundleError(
            f"cannot tell how to recreate backbone '{identity.describe()}' at serving time; pass --weights "
            "with the weights file used for extraction"
        )
    random_source = re.fullmatch(r"random\(seed=(\d+)(?:, residual_scale=([^)]+))?\)", source)
    if seed is not None:
        spec["seed"] = int(seed)
    elif random_source:
        spec["seed"] = int(random_source.group(1))
    if random_source and random_source.group(2):
        spec["residual_scale"] = float(random_source.group(2))
    return spec


def class_kind(bundle: Bundle, class_index: int) -> str:
    return "seen" if bool(bundle.catalog.seen_mask[class_index]) else "unseen"


def predict_images(
    bundle: Bundle,
    images: Sequence[str | Path],
    *,
    top_k: int = 5,
    gamma: float | None = None,
    backbone: Any = None,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Top-k classes for image files: ``[{"image", "familiarity", "unfamiliar", "top_k": [{"class",
    "probability", "kind"}]}]`` (``unfamiliar``: the image is unlike the bundle's training images)."""
    from acmr_core.data.images import load_image

    loaded = [load_image(path) for path in images]  # a bad image raises a one-line ImageError first
    backbone = backbone if backbone is not None else bundle.create_backbone(device=device)
    bundle.check_backbone(backbone)
    features = backbone.features(loaded)
    ranked = bundle.top_k(features, k=top_k, gamma=gamma)
    assessed = bundle.assess_familiarity(features, loaded)
    return [
        {
            "image": str(path),
            "familiarity": familiarity,
            "unfamiliar": unfamiliar,
            "top_k": [
                {"class": bundle.catalog.names[c], "probability": p, "kind": class_kind(bundle, c)}
                for c, p in row
            ],
        }
        for path, row, (familiarity, unfamiliar) in zip(images, ranked, assessed, strict=True)
    ]
