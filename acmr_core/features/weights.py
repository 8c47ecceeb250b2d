"""Where a backbone's weights come from: seeded random, a local file, or a timm pretrained tag on the hub.

The weight side of a backbone, as timm keeps ``_pretrained.py`` / ``_hub.py`` apart from the architectures
(:mod:`acmr_core.features.backbone` holds the feature extractor and its identity):

* :func:`resolve_weights` turns the ``weights`` argument of
  :func:`acmr_core.features.backbone.create_backbone` into a :class:`WeightsSpec` (which timm pretrained
  config applies, which source), and :func:`load_model` creates the timm model with those weights:

  * ``"random"``: seeded random weights, fully offline (:func:`seeded_random_state_dict`). The conv weights
    are drawn from a PCG64 bit stream (NumPy's stable, documented generator) with integer-exact arithmetic,
    so the same seed gives bit-identical weights, hence the same identity hash, on every machine, OS and CPU.
  * a timm pretrained tag (``"tv_in1k"``, or a full name such as ``"resnet101.a1h_in1k"``): downloaded once
    from the Hugging Face hub into its cache. Without network it fails within seconds with a message saying
    how to supply weights instead.
  * a local file (:data:`WEIGHT_FILE_SUFFIXES`: ``.safetensors``, or ``.pth``/``.pt``/``.bin`` loaded with
    ``weights_only=True``), checked strictly against the architecture.

* :func:`state_dict_sha256`: the hash of the weights that backbone identities record.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from huggingface_hub.utils import get_session

from acmr_core.errors import BackboneError

log = logging.getLogger(__name__)

#: timm architecture used by default.
DEFAULT_MODEL = "resnet101"
#: Default ImageNet-1k weights: torchvision's original ResNet-101 (see docs/backbone.md for why).
DEFAULT_WEIGHTS_TAG = "tv_in1k"
#: The weights string meaning "seeded random weights, no download".
RANDOM_WEIGHTS = "random"
#: Seconds allowed to find out whether the Hugging Face hub answers before giving up on a download
#: (the environment variable ``ACMR_HUB_TIMEOUT`` overrides it).
HUB_PROBE_TIMEOUT_S = 5.0
#: File names that ``--weights`` treats as a local weights file (not a timm tag).
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_HUB_WEIGHT_FILENAMES = ("model.safetensors", "pytorch_model.bin")


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


# --------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class WeightsSpec:
    """A resolved ``weights`` argument: the timm model name and tag, and where the weights come from."""

    architecture: str
    tag: str  # the timm pretrained tag whose config (preprocessing, hub id) applies
    kind: str  # "random" | "hub" | "file"
    seed: int = 0
    path: Path | None = None
    residual_scale: float = 0.0
    input_size: int | None = None  # square input side the weights were made for (None: timm's config)

    @property
    def timm_name(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    @property
    def cache_key(self) -> tuple[Any, ...]:
        if self.kind in ("file", "learnt") and self.path is not None:
            stat = self.path.stat()
            return (self.kind, self.timm_name, str(self.path), stat.st_mtime_ns, stat.st_size)
        if self.kind == "random":
            return (self.kind, self.timm_name, self.seed, self.residual_scale)
        return (self.kind, self.timm_name, None)


def resolve_weights(weights: str, model_name: str, seed: int, residual_scale: float = 0.0) -> WeightsSpec:
    """Which timm pretrained config and which weight source ``weights`` names (see the module docstring)."""
    import timm  # lazy: timm takes seconds to import; identities and feature files never need it

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
        return WeightsSpec(architecture, default_tag, "random", seed=seed, residual_scale=residual_scale)
    if _looks_like_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise BackboneError(f"weights file not found: {path}; give an existing .safetensors/.pth file")
        learnt = read_learnt_header(path)
        if learnt is not None:
            return _learnt_spec(path.resolve(), learnt, architecture, default_tag)
        return WeightsSpec(architecture, default_tag, "file", path=path.resolve())

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
    return WeightsSpec(architecture, tag, "hub")


def _pretrained_tags(architecture: str) -> list[str]:
    import timm  # lazy: timm takes seconds to import; identities and feature files never need it

    return [name.partition(".")[2] for name in timm.list_pretrained(f"{architecture}.*")]


def _looks_like_path(weights: str) -> bool:
    return weights.lower().endswith(WEIGHT_FILE_SUFFIXES) or os.sep in weights or Path(weights).exists()


def load_model(spec: WeightsSpec) -> tuple[torch.nn.Module, str]:
    """The timm model of ``spec`` (no classifier) with its weights, and a description of their source."""
    import timm  # lazy: timm takes seconds to import; identities and feature files never need it

    if spec.kind == "random":
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
        model.load_state_dict(seeded_random_state_dict(model, spec.seed, spec.residual_scale))
        source = f"random(seed={spec.seed})"
        if spec.residual_scale:
            source = f"random(seed={spec.seed}, residual_scale={spec.residual_scale:g})"
        return model, source
    if spec.kind == "learnt" and spec.path is not None:
        return _load_learnt(spec)
    file = spec.path if spec.kind == "file" else _hub_weights_file(spec.timm_name)
    model = _create_from_file(spec.timm_name, file)
    return model, f"file:{file.name}" if spec.kind == "file" else f"hub:{_hub_id(spec.timm_name)}"


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


# --------------------------------------------------------------------------------------------- learnt part

#: ``format`` metadata of a learnt-parameters file: seeded random weights plus the tensors training changed.
LEARNT_FORMAT = "acmr-learnt-backbone"
LEARNT_FORMAT_VERSION = "1"


def save_learnt_parameters(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    *,
    model_name: str,
    seed: int,
    residual_scale: float,
    input_size: int,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write the learnt part of a seeded random backbone: only ``tensors`` (the ones training changed), and
    in the header what they overlay (architecture, seed, residual scale) and the input side they expect.

    Shipping this instead of the full network keeps a bundle small: the rest is re-drawn bit-identically
    from the seed (:func:`seeded_random_state_dict`).
    """
    from safetensors.torch import save_file

    metadata = {
        "format": LEARNT_FORMAT,
        "format_version": LEARNT_FORMAT_VERSION,
        "model_name": model_name,
        "seed": str(int(seed)),
        "residual_scale": repr(float(residual_scale)),
        "input_size": str(int(input_size)),
        **(extra or {}),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    save_file({name: t.detach().to("cpu", torch.float32).contiguous() for name, t in tensors.items()},
              str(partial), metadata=metadata)  # fmt: skip
    os.replace(partial, target)
    return target


def read_learnt_header(path: Path) -> dict[str, str] | None:
    """The header of a learnt-parameters file, or ``None`` for any other weights file."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # not readable as safetensors: the full-weights loader refuses it with its reason
        return None
    return dict(metadata) if metadata.get("format") == LEARNT_FORMAT else None


def _learnt_spec(path: Path, header: dict[str, str], architecture: str, tag: str) -> WeightsSpec:
    if header.get("format_version") != LEARNT_FORMAT_VERSION:
        raise BackboneError(
            f"{path.name} is learnt-backbone format version {header.get('format_version')!r}; this acmr "
            f"reads version {LEARNT_FORMAT_VERSION}"
        )
    if header.get("model_name", architecture) != architecture:
        raise BackboneError(
            f"{path.name} holds learnt parameters of {header.get('model_name')}, not of {architecture}"
        )
    try:
        seed, scale, size = int(header["seed"]), float(header["residual_scale"]), int(header["input_size"])
    except (KeyError, ValueError) as error:
        raise BackboneError(f"{path.name} has a malformed learnt-backbone header ({error})") from None
    if not (math.isfinite(scale) and scale >= 0 and 16 <= size <= 1024):
        raise BackboneError(
            f"{path.name} has a malformed learnt-backbone header (residual scale {scale}, input size {size})"
        )
    return WeightsSpec(
        architecture, tag, "learnt", seed=seed, path=path, residual_scale=scale, input_size=size
    )


def _load_learnt(spec: WeightsSpec) -> tuple[torch.nn.Module, str]:
    """Seeded random weights with the file's tensors put over them; every tensor must fit the model."""
    import timm  # lazy: timm takes seconds to import; identities and feature files never need it
    from safetensors.torch import load_file

    assert spec.path is not None
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    state = seeded_random_state_dict(model, spec.seed, spec.residual_scale)
    try:
        learnt = load_file(str(spec.path))
    except Exception as error:
        raise BackboneError(f"cannot read weights file {spec.path} ({_one_line(error)})") from None
    problems = [
        f"unknown {name}" if name not in state else f"{name} has another shape"
        for name in sorted(learnt)
        if name not in state or tuple(learnt[name].shape) != tuple(state[name].shape)
    ]
    if problems:
        raise BackboneError(f"{spec.path.name} does not fit {spec.architecture}: {', '.join(problems[:3])}")
    state.update({name: tensor.to(state[name].dtype) for name, tensor in learnt.items()})
    model.load_state_dict(state)
    base = f"random(seed={spec.seed}, residual_scale={spec.residual_scale:g})"
    return model, f"{base}+learnt:{spec.path.name}"


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
    import timm  # lazy: timm takes seconds to import; identities and feature files never need it

    model = timm.create_model(timm_name, pretrained=False, num_classes=0)
    try:
        timm.models.load_checkpoint(
            model, str(file), strict=True, filter_fn=_drop_classifier, weights_only=True
        )
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
    import timm  # lazy: timm takes seconds to import; identities and feature files never need it

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
