"""The image backbone: a timm ResNet-101 that turns images into 2048-d pooled features.

Features from different weights (or different preprocessing) are not interchangeable, so every backbone
carries a :class:`BackboneIdentity` (architecture, weight source, SHA-256 of the weights, transform config)
that is written next to every feature file and every trained model, and checked with
:meth:`BackboneIdentity.ensure_matches` when they are used together.

Weight sources (the ``weights`` argument of :func:`create_backbone`):

* ``"random"``: seeded random weights, fully offline. The conv weights are drawn from a PCG64 bit stream
  (NumPy's stable, documented generator) with integer-exact arithmetic, so the same seed gives bit-identical
  weights, hence the same identity hash, on every machine, OS and CPU.
* a timm pretrained tag (``"tv_in1k"``, or a full name such as ``"resnet101.a1h_in1k"``): downloaded once from
  the Hugging Face hub into its cache. Without network it fails within seconds with a message saying how to
  supply weights instead.
* a local file (``.safetensors``, or ``.pth``/``.pt``/``.bin`` loaded with ``weights_only=True``), handed to
  timm through ``pretrained_cfg_overlay=dict(file=...)``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from acmr_core.errors import BackboneError
from acmr_core.runtime import resolve_device

log = logging.getLogger(__name__)

#: timm architecture used by default.
DEFAULT_MODEL = "resnet101"
#: Default ImageNet-1k weights: torchvision's original ResNet-101 (see docs/backbone.md for why).
DEFAULT_WEIGHTS_TAG = "tv_in1k"
#: The weights string meaning "seeded random weights, no download".
RANDOM_WEIGHTS = "random"
#: Images per forward pass by default.
DEFAULT_BATCH_SIZE = 32
#: Seconds allowed to find out whether the Hugging Face hub answers before giving up on a download
#: (the environment variable ``ACMR_HUB_TIMEOUT`` overrides it).
HUB_PROBE_TIMEOUT_S = 5.0

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
IDENTITY_FORMAT = 1
_HUB_WEIGHT_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_CACHE_SIZE = 2  # a ResNet-101 is ~170 MB; the app needs one, a rebuild may briefly need two


# --------------------------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class BackboneIdentity:
    """What makes features comparable: same architecture, same weights (by hash), same preprocessing."""

    model_name: str
    weight_source: str
    weights_sha256: str
    transform: dict[str, Any] = field(default_factory=dict)
    feature_dim: int = 2048

    # Fields that decide whether two backbones give the same features; ``weight_source`` is descriptive only
    # (a hub download and a local copy of the same file are the same backbone).
    COMPARED_FIELDS = ("model_name", "weights_sha256", "transform", "feature_dim")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": IDENTITY_FORMAT,
            "model_name": self.model_name,
            "weight_source": self.weight_source,
            "weights_sha256": self.weights_sha256,
            "transform": dict(self.transform),
            "feature_dim": self.feature_dim,
        }

    @classmethod
    def from_dict(cls, data: Any) -> BackboneIdentity:
        if not isinstance(data, dict):
            raise BackboneError(f"backbone identity must be a JSON object, got {type(data).__name__}")
        missing = [
            key for key in ("model_name", "weight_source", "weights_sha256", "transform") if key not in data
        ]
        if missing:
            raise BackboneError(f"backbone identity is missing {', '.join(missing)}; the file is incomplete")
        if not isinstance(data["transform"], dict):
            raise BackboneError("backbone identity 'transform' must be a JSON object; the file is corrupt")
        try:
            return cls(
                model_name=str(data["model_name"]),
                weight_source=str(data["weight_source"]),
                weights_sha256=str(data["weights_sha256"]),
                transform=_jsonable(data["transform"]),
                feature_dim=int(data.get("feature_dim", 2048)),
            )
        except (TypeError, ValueError) as error:
            raise BackboneError(f"backbone identity is malformed ({error}); the file is corrupt") from None

    def describe(self) -> str:
        return f"{self.model_name} [{self.weight_source}, sha256 {self.weights_sha256[:12]}]"

    def differences(self, other: BackboneIdentity) -> list[str]:
        """Names of the compared fields that differ."""
        return [name for name in self.COMPARED_FIELDS if getattr(self, name) != getattr(other, name)]

    def ensure_matches(self, other: BackboneIdentity, context: str = "") -> None:
        """Raise :class:`BackboneError` unless ``other`` gives the same features as ``self`` (expected)."""
        differing = self.differences(other)
        if not differing:
            return
        details = "; ".join(
            _describe_difference(name, getattr(self, name), getattr(other, name)) for name in differing
        )
        where = f"{context}: " if context else ""
        raise BackboneError(
            f"{where}backbone mismatch, {details} (expected {self.describe()}, got {other.describe()}); "
            "features, models and the backbone must come from the same --weights"
        )


def _describe_difference(name: str, expected: Any, got: Any) -> str:
    if name == "transform":
        keys = sorted({*expected, *got})
        changed = [key for key in keys if expected.get(key) != got.get(key)]
        return "transform differs in " + ", ".join(
            f"{key} ({expected.get(key)!r} vs {got.get(key)!r})" for key in changed
        )
    if name == "weights_sha256":
        return f"weights_sha256 differs ({expected[:12]}… vs {got[:12]}…)"
    return f"{name} differs ({expected!r} vs {got!r})"


def _jsonable(value: Any) -> Any:
    """Tuples → lists, recursively, so an identity compares equal after a JSON round trip."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors, in sorted-name order.

    BatchNorm's ``num_batches_tracked`` counters are skipped: they never affect inference, and checkpoints
    differ in whether they include them.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        if name.endswith("num_batches_tracked"):
            continue
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        # numpy has no bfloat16: hash its raw 16-bit patterns. Bytes are little-endian on every machine.
        array = (tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor).numpy()
        digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- backbone


class Backbone:
    """A ready-to-use feature extractor: model in eval mode on its device, timm transform, identity."""

    def __init__(
        self,
        model: torch.nn.Module,
        identity: BackboneIdentity,
        transform: Callable[[Image.Image], torch.Tensor],
        device: torch.device,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise BackboneError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.identity = identity
        self.transform = transform
        self.device = device
        self.batch_size = batch_size

    @property
    def feature_dim(self) -> int:
        return self.identity.feature_dim

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image → a normalised (3, H, W) tensor, exactly as timm's eval transform does it."""
        from acmr_core.data.images import to_rgb

        return self.transform(to_rgb(image))

    def features(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """Pooled features of PIL images, shape ``(n, feature_dim)``, float32."""
        size = batch_size or self.batch_size
        chunks = [
            self.features_from_tensor(
                torch.stack([self.preprocess(image) for image in images[start : start + size]])
            )
            for start in range(0, len(images), size)
        ]
        if not chunks:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def features_from_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Pooled features of an already preprocessed batch ``(n, 3, H, W)``, float32 on the CPU."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise BackboneError(f"expected a batch of shape (n, 3, H, W), got {tuple(batch.shape)}")
        with torch.inference_mode(), self._autocast():
            inputs = batch.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            output = self.model(inputs)
        return output.float().cpu().numpy()

    def _autocast(self) -> Any:
        # Mixed precision only on CUDA: on CPU float32 is both faster here and exactly reproducible.
        if self.device.type != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def __repr__(self) -> str:
        return f"Backbone({self.identity.describe()}, device={self.device}, batch_size={self.batch_size})"


# --------------------------------------------------------------------------------------------- factory

_cache: OrderedDict[tuple[Any, ...], tuple[torch.nn.Module, BackboneIdentity, Callable]] = OrderedDict()
_cache_lock = threading.Lock()


def create_backbone(
    weights: str = RANDOM_WEIGHTS,
    model_name: str = DEFAULT_MODEL,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    use_cache: bool = True,
    residual_scale: float = 0.0,
) -> Backbone:
    """Build (or reuse) a backbone.

    ``weights``: ``"random"`` (seeded by ``seed``), a timm pretrained tag (``"tv_in1k"``,
    ``"resnet101.a1h_in1k"``), or a path to a ``.safetensors`` / ``.pth`` file. ``model_name`` is a timm
    architecture, optionally with a tag whose preprocessing to use for random or file weights.
    ``residual_scale`` (random weights only): the weight of the last BatchNorm of every residual branch
    (see :func:`seeded_random_state_dict`); 0 keeps timm's zero-init.
    """
    torch_device = resolve_device(device)
    spec = _resolve_weights(weights, model_name, seed, residual_scale)
    key = (*spec.cache_key, str(torch_device))
    with _cache_lock:
        cached = _cache.get(key) if use_cache else None
        if cached is None:
            cached = _build(spec, torch_device)
            if use_cache:
                _cache[key] = cached
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
        else:
            _cache.move_to_end(key)
    model, identity, transform = cached
    return Backbone(model, identity, transform, torch_device, batch_size)


def clear_backbone_cache() -> None:
    with _cache_lock:
        _cache.clear()


@dataclass(frozen=True)
class _WeightsSpec:
    architecture: str
    tag: str  # the timm pretrained tag whose config (preprocessing, hub id) applies
    kind: str  # "random" | "hub" | "file"
    seed: int = 0
    path: Path | None = None
    residual_scale: float = 0.0

    @property
    def timm_name(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    @property
    def cache_key(self) -> tuple[Any, ...]:
        if self.kind == "file" and self.path is not None:
            stat = self.path.stat()
            return (self.kind, self.timm_name, str(self.path), stat.st_mtime_ns, stat.st_size)
        if self.kind == "random":
            return (self.kind, self.timm_name, self.seed, self.residual_scale)
        return (self.kind, self.timm_name, None)


def _resolve_weights(weights: str, model_name: str, seed: int, residual_scale: float = 0.0) -> _WeightsSpec:
    import timm

    weights = str(weights).strip()
    if residual_scale and weights.lower() != RANDOM_WEIGHTS:
        raise BackboneError(
            "--residual-scale only applies to --weights random (trained weights are used as is)"
        )
    if not math.isfinite(residual_scale) or residual_scale < 0:
        raise BackboneError(f"residual scale must be a finite number >= 0, got {residual_scale}")
    architecture, _, name_tag = model_name.partition(".")
    if not timm.is_model(architecture):
        raise BackboneError(
            f"unknown timm model '{architecture}'; use a timm architecture such as {DEFAULT_MODEL}"
        )
    tags = _pretrained_tags(architecture)
    default_tag = name_tag or (
        DEFAULT_WEIGHTS_TAG if DEFAULT_WEIGHTS_TAG in tags else (tags[0] if tags else "")
    )

    if weights.lower() == RANDOM_WEIGHTS:
        return _WeightsSpec(architecture, default_tag, "random", seed=seed, residual_scale=residual_scale)
    if _looks_like_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BackboneError(f"weights file not found: {path}; give an existing .safetensors/.pth file")
        return _WeightsSpec(architecture, default_tag, "file", path=path.resolve())

    requested_arch, _, tag = weights.rpartition(".")
    if requested_arch and requested_arch != architecture:
        if not timm.is_model(requested_arch):
            raise BackboneError(f"unknown timm model '{requested_arch}' in --weights {weights}")
        architecture, tags = requested_arch, _pretrained_tags(requested_arch)
    if tag not in tags:
        raise BackboneError(
            f"'{weights}' is not a pretrained tag of {architecture} "
            f"(available: {', '.join(tags) or 'none'}); or pass a weights file path, or 'random'"
        )
    return _WeightsSpec(architecture, tag, "hub")


def _pretrained_tags(architecture: str) -> list[str]:
    import timm

    return [name.partition(".")[2] for name in timm.list_pretrained(f"{architecture}.*")]


def _looks_like_path(weights: str) -> bool:
    return weights.lower().endswith(WEIGHT_FILE_SUFFIXES) or os.sep in weights or Path(weights).exists()


def _build(spec: _WeightsSpec, device: torch.device) -> tuple[torch.nn.Module, BackboneIdentity, Callable]:
    import timm
    from timm.data import create_transform, resolve_data_config

    if spec.kind == "random":
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
        model.load_state_dict(seeded_random_state_dict(model, spec.seed, spec.residual_scale))
        source = f"random(seed={spec.seed})"
        if spec.residual_scale:
            source = f"random(seed={spec.seed}, residual_scale={spec.residual_scale:g})"
    else:
        file = spec.path if spec.kind == "file" else _hub_weights_file(spec.timm_name)
        model = _create_from_file(spec.timm_name, file)
        source = f"file:{file.name}" if spec.kind == "file" else f"hub:{_hub_id(spec.timm_name)}"
    model.eval()
    # The hash is taken on the CPU float32 weights, before any device move or memory-format change.
    sha = state_dict_sha256(model.state_dict())
    data_config = resolve_data_config({}, model=model)
    transform = create_transform(**data_config, is_training=False)
    identity = BackboneIdentity(
        model_name=spec.architecture,
        weight_source=source,
        weights_sha256=sha,
        transform=_jsonable(data_config),
        feature_dim=int(model.num_features),
    )
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    log.info("backbone ready: %s on %s", identity.describe(), device)
    return model, identity, transform


def seeded_random_state_dict(
    model: torch.nn.Module, seed: int, residual_scale: float = 0.0
) -> dict[str, torch.Tensor]:
    """Portable random weights for ``model``: same seed → bit-identical tensors on any machine.

    Conv weights follow timm's ResNet init in variance (Kaiming, fan-out, ReLU gain: var = 2 / fan_out) but
    are uniform, drawn from PCG64 raw bits with exact arithmetic: torch's ``normal_`` uses vectorised
    transcendental functions whose last bits differ between CPUs. Everything else (BatchNorm affine and
    running statistics, including timm's zero-init of each block's last BN) is kept: it is constant.

    ``residual_scale``: the weight given to the last BatchNorm (``bn3``) of every bottleneck instead of timm's
    zero. With zero, every residual branch of a random network adds nothing and the "ResNet-101" reduces to a
    stem plus four strided 1×1 projections that look at isolated pixels of a sparse grid; a small scale (0.1)
    lets the 3×3 convolutions of the branches widen what each output sees while the identity paths still
    dominate (the demo world's probe: pattern, size and count read far better; docs/benchmarks/demo.md).
    The weights, hence the identity hash, change with it.
    """
    state = model.state_dict()
    conv_weights = {
        f"{module_name}.weight"
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear)
    }
    for name in sorted(conv_weights):
        tensor = state[name]
        fan_out = tensor.shape[0] * math.prod(tensor.shape[2:])
        bound = math.sqrt(6.0 / fan_out)
        state[name] = torch.from_numpy(_portable_uniform(seed, name, tensor.numel(), bound)).view(
            tensor.shape
        )
    if residual_scale:
        for module_name, module in model.named_modules():
            last_bn = getattr(module, "bn3", None)
            if isinstance(last_bn, torch.nn.BatchNorm2d):
                state[f"{module_name}.bn3.weight"] = torch.full_like(last_bn.weight, float(residual_scale))
    return state


def _portable_uniform(seed: int, name: str, count: int, bound: float) -> np.ndarray:
    """``count`` float32 values uniform in [-bound, bound), from a PCG64 stream keyed by (seed, name)."""
    bits = np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(name.encode()),)))
    raw = bits.random_raw(count)
    unit = (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)  # exact: 53-bit integers scaled by 2^-53
    return ((unit * 2.0 - 1.0) * bound).astype(np.float32)


def _create_from_file(timm_name: str, file: Path) -> torch.nn.Module:
    """A timm model with the weights of ``file``, checked strictly: every backbone tensor must be there.

    timm's ``pretrained_cfg_overlay=dict(file=...)`` route loads non-strictly whenever the classifier is
    removed (``num_classes=0``), so a checkpoint missing a layer would silently keep random values there.
    ``timm.models.load_checkpoint`` with a filter that drops only the classifier keeps timm's file handling
    (safetensors, ``weights_only`` torch files, EMA / ``state_dict`` / ``module.`` unwrapping), strictly.
    """
    import timm
    from timm.models import load_checkpoint

    model = timm.create_model(timm_name, pretrained=False, num_classes=0)
    try:
        load_checkpoint(model, str(file), strict=True, filter_fn=_drop_classifier, weights_only=True)
    except Exception as error:
        first_line = _one_line(error)
        raise BackboneError(
            f"cannot load {timm_name.partition('.')[0]} weights from {file} "
            f"({type(error).__name__}: {first_line}); "
            "give a timm/torchvision state dict saved as .safetensors or .pth"
        ) from None
    return model


def _one_line(error: BaseException, limit: int = 240) -> str:
    """An exception's text on one line (state-dict errors span several), shortened for a message."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _drop_classifier(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone has no classifier (``num_classes=0``): ignore the checkpoint's ImageNet head."""
    head = str(model.pretrained_cfg.get("classifier", "fc"))
    return {key: value for key, value in state_dict.items() if key != head and not key.startswith(f"{head}.")}


# --------------------------------------------------------------------------------------------- hub access


def _hub_id(timm_name: str) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub_id or f"timm/{timm_name}"


def _supply_hint(timm_name: str) -> str:
    return (
        f"to supply weights, pre-populate the Hugging Face cache (HF_HOME) with {_hub_id(timm_name)} on a "
        "machine with internet, pass a local file with --weights /path/model.safetensors, "
        "or use --weights random (offline, seeded; not ImageNet features)"
    )


def _hub_settings() -> tuple[str, Path, bool]:
    """Endpoint, cache folder and offline flag, read from the environment *now* (huggingface_hub reads them
    once at import, which is too early for callers that change them afterwards, like the test suite)."""
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")
    if os.environ.get("HF_HUB_CACHE"):
        cache = Path(os.environ["HF_HUB_CACHE"])
    elif os.environ.get("HF_HOME"):
        cache = Path(os.environ["HF_HOME"]) / "hub"
    else:
        cache = Path(constants.HF_HUB_CACHE)
    offline_env = os.environ.get("HF_HUB_OFFLINE")
    offline = (
        offline_env.strip().upper() in {"1", "ON", "YES", "TRUE"}
        if offline_env is not None
        else constants.HF_HUB_OFFLINE
    )
    return endpoint, cache.expanduser(), offline


def _hub_weights_file(timm_name: str) -> Path:
    """The local path of the hub weights for ``timm_name``: from the cache, else downloaded; never a hang."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id = _hub_id(timm_name)
    endpoint, cache_dir, offline = _hub_settings()
    for filename in _HUB_WEIGHT_FILENAMES:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=True))
        except (LocalEntryNotFoundError, EntryNotFoundError, OSError):
            continue
    if offline:
        raise BackboneError(
            f"weights {repo_id} are not in the Hugging Face cache ({cache_dir}) and HF_HUB_OFFLINE is set; "
            + _supply_hint(timm_name)
        )
    problem = _hub_unreachable_reason(endpoint)
    if problem:
        raise BackboneError(f"cannot download weights {repo_id}: {problem}; " + _supply_hint(timm_name))
    for filename in _HUB_WEIGHT_FILENAMES:
        try:
            log.info("downloading %s/%s from %s", repo_id, filename, endpoint)
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    cache_dir=cache_dir,
                    endpoint=endpoint,
                    etag_timeout=_probe_timeout(),
                )
            )
        except EntryNotFoundError:
            continue  # this repo has the other file format
        except Exception as error:
            first_line = _one_line(error)
            raise BackboneError(
                f"downloading weights {repo_id} failed ({first_line}); " + _supply_hint(timm_name)
            ) from None
    raise BackboneError(f"the hub repository {repo_id} has no weight file; " + _supply_hint(timm_name))


def _probe_timeout() -> float:
    try:
        return float(os.environ.get("ACMR_HUB_TIMEOUT", HUB_PROBE_TIMEOUT_S))
    except ValueError:
        return HUB_PROBE_TIMEOUT_S


def _hub_unreachable_reason(endpoint: str, timeout: float | None = None) -> str | None:
    """``None`` when the hub answers an HTTP request within ``timeout`` seconds, else why not.

    huggingface_hub retries failed connections with back-off for ~25 s; this single short probe (in a
    daemon thread, because DNS resolution ignores socket timeouts) lets an offline machine fail in seconds.
    """
    from huggingface_hub.utils import get_session

    limit = _probe_timeout() if timeout is None else timeout
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            get_session().head(endpoint, timeout=limit, follow_redirects=False)
            outcome.append(None)
        except Exception as error:
            outcome.append(f"{type(error).__name__}: {str(error).strip()[:160] or 'no answer'}")

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(limit + 1.0)
    if not outcome:
        return f"no answer from {endpoint} within {limit:.0f} s (no network?)"
    reason = outcome[0]
    return f"{endpoint} is unreachable ({reason}) (no network?)" if reason else None
