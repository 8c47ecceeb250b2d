"""The ACMR network: two VAEs (visual features <-> class attributes), IEM gates and VSA heads.

Public interface:

* ``ACMR(cfg: ACMRConfig)`` — an ``nn.Module`` whose children are all registered (complete ``state_dict``).

  - ``forward(features, attributes) -> ACMROutput`` — everything the training loss needs.
  - ``visual_latent(x) -> Tensor[N, latent]`` — μ of the visual posterior after IEM (deterministic in eval).
  - ``semantic_latent(a) -> Tensor[N, latent]`` — μ of the semantic posterior after IEM.
  - ``sample_visual_latent(x)`` / ``sample_semantic_latent(a)`` — reparameterised samples z (noisy).
  - ``decode_visual(z) -> Tensor[N, feature_dim]``, ``decode_semantic(z) -> Tensor[N, attribute_dim]``.

Faithfulness notes (reference: seeyourmind/ACMR, built on CADA-VAE):

* Reparameterisation ``"reference"`` (default): ``z = μ + exp(logσ²)·ε`` with a single ε per sample broadcast
  over all latent dimensions — the reference's quirk (it uses the variance, not the standard deviation, and
  one noise scalar per sample). ``"standard"`` gives the textbook ``μ + exp(logσ²/2)·ε`` with ε per dimension.
* IEM: an MLP 128 → 99 → 64 (ReLU, sigmoid) on a channel-shuffled ``[μ, logσ²]``; its output gates μ and
  logσ². The reference draws a fresh random channel permutation on every forward, including at inference,
  which makes its predictions random. Here training keeps the per-forward random permutation (the
  regulariser), and evaluation mode uses a fixed permutation stored as a buffer (drawn once at construction,
  saved in the state_dict), so the same input always gives the same latent.
* VSA: ``R = softmax_dim1(z_v z_sᵀ)`` per sample (64×64), both latents re-weighted as ``R z``, then classified
  by per-modality linear + log-softmax heads over all classes.
* No ``.squeeze()`` anywhere, so a batch of one keeps its batch dimension.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from acmr_core.model.config import ACMRConfig


def reference_init(module: nn.Module) -> None:
    """Xavier-uniform (gain 0.5) weights and zero biases on every Linear layer, as in the reference."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight, gain=0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class GaussianEncoder(nn.Module):
    """``input -> Linear -> ReLU -> (μ, logσ²)``."""

    def __init__(self, input_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU())
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.body(x)
        return self.mu(hidden), self.logvar(hidden)


class Decoder(nn.Module):
    """``latent -> Linear -> ReLU -> Linear -> output``."""

    def __init__(self, latent_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, output_dim)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class InformationEnhancement(nn.Module):
    """IEM: a sigmoid gate computed from a channel-shuffled ``[μ, logσ²]``, applied to both μ and logσ²."""

    eval_permutation: Tensor

    def __init__(self, latent_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(2 * latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, latent_dim), nn.Sigmoid()
        )
        # Fixed permutation for evaluation mode (persistent: saved and restored with the weights).
        self.register_buffer("eval_permutation", torch.randperm(2 * latent_dim))

    def forward(self, mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
        mixed = torch.cat((mu, logvar), dim=1)
        if self.training:
            permutation = torch.randperm(mixed.shape[1], device=mixed.device)
        else:
            permutation = self.eval_permutation
        weights = self.gate(mixed[:, permutation])
        return weights * mu, weights * logvar


class LinearLogSoftmax(nn.Module):
    """A linear classifier returning log-probabilities (the reference LINEAR_LOGSOFTMAX)."""

    def __init__(self, input_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(input_dim, num_classes)

    def forward(self, z: Tensor) -> Tensor:
        return F.log_softmax(self.fc(z), dim=1)


def cross_alignment_weights(z_visual: Tensor, z_semantic: Tensor) -> Tensor:
    """VSA relation matrix: per sample ``softmax over the first axis of z_v z_sᵀ`` -> ``(N, L, L)``."""
    relation = z_visual.unsqueeze(2) * z_semantic.unsqueeze(1)
    return F.softmax(relation, dim=1)


def vsa_reweight(z_visual: Tensor, z_semantic: Tensor) -> tuple[Tensor, Tensor]:
    """Re-weight both latents with the shared relation matrix: ``R z`` per sample."""
    weights = cross_alignment_weights(z_visual, z_semantic)
    return torch.bmm(weights, z_visual.unsqueeze(2))[..., 0], torch.bmm(weights, z_semantic.unsqueeze(2))[
        ..., 0
    ]


@dataclass
class ACMROutput:
    """What one training forward produces (all tensors batch-first)."""

    features_reconstruction: Tensor
    attributes_reconstruction: Tensor
    mu_visual: Tensor
    logvar_visual: Tensor
    mu_semantic: Tensor
    logvar_semantic: Tensor
    log_probs_visual: Tensor | None
    log_probs_semantic: Tensor | None

    def float(self) -> ACMROutput:
        """Every tensor as float32: the losses sum thousands of terms, which bfloat16 would round away."""
        return ACMROutput(**{f.name: _as_float(getattr(self, f.name)) for f in dataclasses.fields(self)})


def _as_float(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.float()


class ACMR(nn.Module):
    """Aligned Cross-Modal Representations (Fang et al., AAAI 2022)."""

    def __init__(self, cfg: ACMRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        latent = cfg.latent_dim
        self.visual_encoder = GaussianEncoder(cfg.feature_dim, cfg.visual_encoder_hidden, latent)
        self.semantic_encoder = GaussianEncoder(cfg.attribute_dim, cfg.semantic_encoder_hidden, latent)
        self.visual_decoder = Decoder(latent, cfg.visual_decoder_hidden, cfg.feature_dim)
        self.semantic_decoder = Decoder(latent, cfg.semantic_decoder_hidden, cfg.attribute_dim)
        self.visual_iem = InformationEnhancement(latent, cfg.iem_hidden) if cfg.use_iem else None
        self.semantic_iem = InformationEnhancement(latent, cfg.iem_hidden) if cfg.use_iem else None
        self.visual_head = LinearLogSoftmax(latent, cfg.num_classes) if cfg.use_vsa else None
        self.semantic_head = LinearLogSoftmax(latent, cfg.num_classes) if cfg.use_vsa else None
        self.apply(reference_init)

    # --- parameter groups (three learning rates in the reference) -------------------------------------------
    def vae_parameters(self) -> list[nn.Parameter]:
        modules = (self.visual_encoder, self.semantic_encoder, self.visual_decoder, self.semantic_decoder)
        return [p for m in modules for p in m.parameters()]

    def iem_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.visual_iem, self.semantic_iem) if m is not None for p in m.parameters()]

    def vsa_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.visual_head, self.semantic_head) if m is not None for p in m.parameters()]

    # --- encoders -------------------------------------------------------------------------------------------
    def encode_visual(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Visual posterior ``(μ, logσ²)`` after IEM."""
        mu, logvar = self.visual_encoder(features)
        return self.visual_iem(mu, logvar) if self.visual_iem is not None else (mu, logvar)

    def encode_semantic(self, attributes: Tensor) -> tuple[Tensor, Tensor]:
        """Semantic posterior ``(μ, logσ²)`` after IEM."""
        mu, logvar = self.semantic_encoder(attributes)
        return self.semantic_iem(mu, logvar) if self.semantic_iem is not None else (mu, logvar)

    def reparameterize(self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.cfg.reparameterization == "reference":
            # Reference quirk: the scale is exp(logvar) and one eps per sample is shared by all dimensions.
            eps = torch.randn(mu.shape[0], 1, device=mu.device, dtype=mu.dtype, generator=generator)
            return mu + torch.exp(logvar) * eps
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps

    def visual_latent(self, features: Tensor) -> Tensor:
        """μ of the visual posterior after IEM (no noise): how test images are encoded."""
        return self.encode_visual(features)[0]

    def semantic_latent(self, attributes: Tensor) -> Tensor:
        """μ of the semantic posterior after IEM (no noise)."""
        return self.encode_semantic(attributes)[0]

    def sample_visual_latent(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.reparameterize(*self.encode_visual(features), generator=generator)

    def sample_semantic_latent(self, attributes: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.reparameterize(*self.encode_semantic(attributes), generator=generator)

    # --- decoders -------------------------------------------------------------------------------------------
    def decode_visual(self, z: Tensor) -> Tensor:
        return self.visual_decoder(z)

    def decode_semantic(self, z: Tensor) -> Tensor:
        return self.semantic_decoder(z)

    # --- training forward -----------------------------------------------------------------------------------
    def forward(self, features: Tensor, attributes: Tensor) -> ACMROutput:
        mu_v, logvar_v = self.encode_visual(features)
        mu_s, logvar_s = self.encode_semantic(attributes)
        z_v = self.reparameterize(mu_v, logvar_v)
        z_s = self.reparameterize(mu_s, logvar_s)
        log_probs_v = log_probs_s = None
        if self.visual_head is not None and self.semantic_head is not None:
            weighted_v, weighted_s = vsa_reweight(z_v, z_s)
            log_probs_v = self.visual_head(weighted_v)
            log_probs_s = self.semantic_head(weighted_s)
        return ACMROutput(
            features_reconstruction=self.visual_decoder(z_v),
            attributes_reconstruction=self.semantic_decoder(z_s),
            mu_visual=mu_v,
            logvar_visual=logvar_v,
            mu_semantic=mu_s,
            logvar_semantic=logvar_s,
            log_probs_visual=log_probs_v,
            log_probs_semantic=log_probs_s,
        )
