"""The plain data the studio service answers with: ranked classes, a prediction and what the model reads,
a drawn example with its prediction, a class's alignment. The app formats them for its widgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from acmr_core.serving.separability import Separability


@dataclass(frozen=True)
class RankedClass:
    name: str
    kind: str  # "seen" | "unseen" | "user"
    probability: float


@dataclass(frozen=True)
class Prediction:
    """One image's prediction and what the model reads in it."""

    ranked: list[RankedClass]
    decoded: dict[str, float]  # attribute -> value in [0, 1] decoded from the image's latent
    predicted_attributes: dict[str, float]  # attribute -> value in [0, 1] of the top class
    agreement: float  # cosine between the two vectors above
    xy: tuple[float, float]  # the image in the latent-space plot
    gamma: float
    familiarity: float  # 1 = like the training images, 0.5 = at the bundle's threshold (see familiarity.py)
    unfamiliar: bool  # beyond the threshold: the answer is a guess
    latent: tuple[float, ...] = ()  # the image's visual latent (what a draft class's preview compares to)
    #: The separability warning of the top class (a user class added with one, issue 32), else "".
    warning: str = ""


@dataclass(frozen=True)
class RenderedExample:
    """A demo-world render of a class and what the model predicts for it."""

    image: Image.Image
    class_name: str
    prediction: Prediction

    @property
    def recognised(self) -> bool:
        """The top-1 prediction is the class that was drawn."""
        return self.prediction.ranked[0].name == self.class_name

    def record(self) -> dict[str, Any]:
        top = self.prediction.ranked[0]
        return {
            "class": self.class_name,
            "predicted": top.name,
            "kind": top.kind,
            "probability": top.probability,
            "recognised": self.recognised,
            "familiarity": self.prediction.familiarity,
            "unfamiliar": self.prediction.unfamiliar,
            "warning": self.prediction.warning,
        }


@dataclass(frozen=True)
class AlignedClass:
    """How well one class's description lines up with its images (see :class:`ClassAlignment`), by name."""

    name: str
    kind: str  # "seen" | "unseen" | "user"
    own_rank: int  # 1 = its own images are the nearest to its description; 0 = it has no images
    own_is_nearest: bool
    distance: float  # description -> centre of its own images (NaN without images)
    nearest: str  # the class whose images are nearest to this class's description


@dataclass(frozen=True)
class NearClass:
    name: str
    kind: str  # "seen" | "unseen" | "user"
    distance: float  # between the two descriptions (semantic latents)


@dataclass(frozen=True)
class ImageMatch:
    """How a draft class's description compares, on one image, with every class's (nearest prototype)."""

    rank: int  # 1 = the draft's description is the nearest to the image's latent
    candidates: int  # the visitor's classes plus the draft
    distance: float  # image latent -> the draft's description
    nearest: str  # the class whose description is nearest to the image (the draft aside)
    nearest_distance: float


@dataclass(frozen=True)
class NearImage:
    """A test image near a draft class's description (features-only bundles: their test split)."""

    image_id: str
    class_name: str  # its true class
    kind: str  # "seen" | "unseen"
    distance: float  # the draft's description -> the image's latent


@dataclass(frozen=True)
class DraftPreview:
    """A class being defined, before it is added: where it lands, what it is near, and how it would fare on
    the last image (no classifier is fitted: the semantic encoder and distances only)."""

    xy: tuple[float, float]
    nearest: tuple[NearClass, ...]
    image: ImageMatch | None
    #: Whether it could be told apart from every class (issue 32's guard); None where not judged.
    verdict: Separability | None = None
    images: tuple[NearImage, ...] = ()  # the nearest test images (features-only bundles)
