"""The latent-space map: a 2-D UMAP projection of visual and semantic latents, and per-class alignment.

At bundle-build time :func:`fit_projection` runs UMAP once on a sample of visual latents (images) together
with the semantic latents (classes) and stores the result as a :class:`LatentProjection`: the reference
latents and their 2-D coordinates, nothing else.

New points (an uploaded image, a user-defined class) are placed *without* UMAP and without pickle by
inverse-distance-weighted k-nearest-neighbour interpolation in latent space (:meth:`LatentProjection.place`):
a new latent lands at the weighted mean of the 2-D positions of its ``k`` nearest reference latents. This is
exactly how ``umap.UMAP.transform`` initialises new points before its optional refinement; skipping the
refinement keeps placement deterministic, instant (no numba JIT) and independent of umap's pickled internals.
A point that coincides with a reference latent gets that reference's position.

:func:`alignment_scores` measures, per class, how well ACMR aligned the two modalities: the distance from
the class's semantic latent to the centroid of its images' visual latents, and whether that centroid is the
nearest visual centroid to the semantic latent (the quantity zero-shot classification depends on).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from acmr_core.errors import ACMRError

log = logging.getLogger(__name__)

DEFAULT_NEIGHBOURS = 8
# A neighbour closer than this (in latent units) counts as "the same point".
_COINCIDENT = 1e-9
# Queries per distance block (bounds memory at chunk x references x latent_dim floats).
_QUERY_CHUNK = 256


@dataclass(frozen=True)
class LatentProjection:
    """Reference latents with their fitted 2-D coordinates; places new latents by k-NN interpolation."""

    reference_latents: np.ndarray  # (R, latent_dim) float32
    reference_xy: np.ndarray  # (R, 2) float32
    neighbours: int = DEFAULT_NEIGHBOURS

    def __post_init__(self) -> None:
        latents, xy = self.reference_latents, self.reference_xy
        if latents.ndim != 2 or xy.shape != (latents.shape[0], 2) or latents.shape[0] == 0:
            raise ACMRError(
                f"latent projection needs (R, d) latents and (R, 2) coordinates, "
                f"got {latents.shape} and {xy.shape}"
            )
        if not (np.all(np.isfinite(latents)) and np.all(np.isfinite(xy))):
            raise ACMRError("latent projection contains non-finite values; rebuild the bundle")
        if self.neighbours < 1:
            raise ACMRError(f"neighbours must be >= 1, got {self.neighbours}")

    @property
    def latent_dim(self) -> int:
        return int(self.reference_latents.shape[1])

    def place(self, latents: np.ndarray) -> np.ndarray:
        """2-D coordinates ``(M, 2)`` for new latents ``(M, latent_dim)``; deterministic, no refitting."""
        return place_points(latents, self)


def place_points(latents: np.ndarray, projection: LatentProjection) -> np.ndarray:
    """Inverse-distance-weighted mean of the 2-D positions of each latent's nearest reference latents."""
    query = np.asarray(latents, dtype=np.float32)
    if query.ndim == 1:
        query = query[None, :]
    if query.ndim != 2 or query.shape[1] != projection.latent_dim:
        raise ACMRError(f"latents have shape {query.shape}; expected (M, {projection.latent_dim})")
    if query.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if not np.all(np.isfinite(query)):
        raise ACMRError("cannot place non-finite latents in the latent-space plot")
    distances, indices = _nearest(query, projection.reference_latents, projection.neighbours)
    neighbour_xy = projection.reference_xy[indices]  # (M, k, 2)
    coincident = distances[:, 0] <= _COINCIDENT
    weights = 1.0 / np.maximum(distances, _COINCIDENT)
    weights /= weights.sum(axis=1, keepdims=True)
    placed = np.einsum("mk,mkd->md", weights, neighbour_xy)
    placed[coincident] = neighbour_xy[coincident, 0]
    return placed.astype(np.float32)


PROJECTION_METHODS = ("umap", "pca")


def _nearest(query: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest references (Euclidean), sorted by distance; ties broken by reference order.

    Brute force in NumPy: the reference set is a few hundred to a few thousand latents, where this takes well
    under a millisecond per query and, unlike a tree or a threaded search, costs nothing to build or warm up.
    """
    k = min(k, reference.shape[0])
    distances, indices = [], []
    for start in range(0, query.shape[0], _QUERY_CHUNK):
        chunk = query[start : start + _QUERY_CHUNK].astype(np.float64)
        squared = ((chunk[:, None, :] - reference[None, :, :].astype(np.float64)) ** 2).sum(axis=2)
        order = np.argsort(squared, axis=1, kind="stable")[:, :k]
        indices.append(order)
        distances.append(np.sqrt(np.take_along_axis(squared, order, axis=1)))
    return np.concatenate(distances), np.concatenate(indices)


def fit_projection(
    visual_latents: np.ndarray,
    semantic_latents: np.ndarray,
    *,
    method: str = "umap",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> tuple[LatentProjection, np.ndarray, np.ndarray]:
    """Fit a 2-D map of visual + semantic latents together; return the projection and both coordinate sets.

    ``method="umap"`` (default) is the map the app shows. ``"pca"`` is a linear stand-in that needs no numba
    compilation (tens of seconds on a busy CPU): for quick smoke builds and tests only.
    """
    visual = np.asarray(visual_latents, dtype=np.float32)
    semantic = np.asarray(semantic_latents, dtype=np.float32)
    if visual.ndim != 2 or semantic.ndim != 2 or visual.shape[1] != semantic.shape[1]:
        raise ACMRError(f"visual {visual.shape} and semantic {semantic.shape} latents must be (N, d), same d")
    everything = np.concatenate([visual, semantic])
    if everything.shape[0] < 4:
        raise ACMRError(f"a latent-space map needs at least 4 points, got {everything.shape[0]}")
    if method == "umap":
        xy = _umap_coordinates(everything, n_neighbors, min_dist, seed)
    elif method == "pca":
        from sklearn.decomposition import PCA  # lazy: only for method='pca'

        xy = PCA(n_components=2, random_state=seed).fit_transform(everything).astype(np.float32)
    else:
        raise ACMRError(
            f"unknown projection method {method!r}; choose one of {', '.join(PROJECTION_METHODS)}"
        )
    projection = LatentProjection(reference_latents=everything, reference_xy=xy, neighbours=neighbours)
    return projection, xy[: visual.shape[0]], xy[visual.shape[0] :]


def _umap_coordinates(points: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    import umap  # heavy (numba JIT); imported only when a map is fitted, never when a bundle is loaded
    from sklearn.neighbors import NearestNeighbors

    neighbours = max(2, min(n_neighbors, points.shape[0] - 1))
    # Exact neighbours from scikit-learn, handed to UMAP: its own approximate search (pynndescent) spends
    # most of a build compiling numba code — 122 s of a 4 931-point map on the busy 2-core machine, 29 s
    # with these (docs/benchmarks/app.md, issue 36); exact is also what small maps deserve.
    distances, indices = NearestNeighbors(n_neighbors=neighbours).fit(points).kneighbors(points)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=neighbours,
        min_dist=min_dist,
        random_state=seed,  # fixed seed: the shipped map is reproducible (UMAP then runs single-threaded)
        n_jobs=1,
        # spectral initialisation needs a connected-enough graph; "random" always works on tiny inputs.
        init="spectral" if points.shape[0] > 20 else "random",
        precomputed_knn=(indices, distances, None),
    )
    log.info("fitting the 2-D UMAP map on %d latents (the first call compiles numba code)", points.shape[0])
    with warnings.catch_warnings():  # "transform will be unavailable": new points are placed by k-NN here
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return reducer.fit_transform(points).astype(np.float32)


@dataclass(frozen=True)
class ClassAlignment:
    """How close one class's semantic latent is to its images' visual latents."""

    class_index: int
    distance: float  # semantic latent -> own visual centroid (NaN when the class has no images)
    nearest_class: int  # class whose visual centroid is nearest to this class's semantic latent
    own_is_nearest: bool
    own_rank: int  # 1 = own centroid is the nearest; 0 when the class has no images


def alignment_scores(
    visual_latents: np.ndarray, visual_labels: np.ndarray, semantic_latents: np.ndarray
) -> list[ClassAlignment]:
    """Per-class alignment between semantic latents ``(C, d)`` and visual centroids of ``visual_labels`` (N,).

    Classes without any visual latent (e.g. a user-defined class) get ``distance = NaN`` and ``own_rank = 0``;
    their nearest visual centroid is still reported.
    """
    visual = np.asarray(visual_latents, dtype=np.float64)
    labels = np.asarray(visual_labels, dtype=np.int64)
    semantic = np.asarray(semantic_latents, dtype=np.float64)
    if visual.ndim != 2 or semantic.ndim != 2 or visual.shape[1] != semantic.shape[1]:
        raise ACMRError(
            f"visual {visual.shape} and semantic {semantic.shape} latents must be (N, d) with equal d"
        )
    if labels.shape != (visual.shape[0],):
        raise ACMRError(
            f"expected one label per visual latent, got {labels.shape} for {visual.shape[0]} latents"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= semantic.shape[0]):
        raise ACMRError(f"visual labels must be class indices in [0, {semantic.shape[0]})")
    with_images = np.unique(labels)
    if with_images.size == 0:
        raise ACMRError("alignment scores need at least one visual latent")
    centroids = np.stack([visual[labels == c].mean(axis=0) for c in with_images])
    # (C, K) distances from every semantic latent to every visual centroid.
    distances = np.linalg.norm(semantic[:, None, :] - centroids[None, :, :], axis=2)
    scores = []
    for class_index in range(semantic.shape[0]):
        row = distances[class_index]
        nearest = int(with_images[int(np.argmin(row))])
        hit = np.flatnonzero(with_images == class_index)
        if hit.size:
            own = float(row[hit[0]])
            rank = int(np.sum(row < own)) + 1
            scores.append(ClassAlignment(class_index, own, nearest, nearest == class_index, rank))
        else:
            scores.append(ClassAlignment(class_index, float("nan"), nearest, False, 0))
    return scores


@dataclass(frozen=True)
class AlignmentSummary:
    """One overall alignment figure: of the classes with images, how many have their own images nearest."""

    classes_with_images: int
    own_nearest: int

    @property
    def fraction(self) -> float:
        return self.own_nearest / self.classes_with_images if self.classes_with_images else float("nan")

    def sentence(self) -> str:
        """The figure and its meaning in plain words (no jargon: shown to newcomers)."""
        if not self.classes_with_images:
            return "No class has images in the map, so alignment cannot be measured."
        return (
            f"{self.own_nearest} of {self.classes_with_images} classes ({self.fraction:.0%}): "
            "the point computed from a class's description lies closer to that class's own photos "
            "than to any other class's. "
            "The higher, the better the model can recognise a class from its description alone."
        )


def summarise_alignment(scores: list[ClassAlignment]) -> AlignmentSummary:
    """Top-1 alignment over the classes that have images (a user class has none, so it is not counted)."""
    with_images = [item for item in scores if item.own_rank]
    return AlignmentSummary(len(with_images), sum(item.own_is_nearest for item in with_images))
