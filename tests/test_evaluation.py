"""Metric functions against hand-computed values; the on-device selection table agrees with sklearn; a
demo-world bundle is evaluated on fresh renders at its recorded size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acmr_core.errors import BundleError
from acmr_core.model.gzsl import gzsl_selection_table, predict_scores
from acmr_core.training.metrics import (
    aggregate_seeds,
    gzsl_scores,
    harmonic_mean,
    per_class_accuracy,
    zsl_top1,
)


def test_per_class_accuracy_is_mean_of_class_accuracies() -> None:
    y_true = [0, 0, 0, 0, 1]
    y_pred = [0, 0, 0, 1, 1]
    # class 0: 3/4, class 1: 1/1 -> mean 0.875 (plain accuracy would be 0.8)
    assert per_class_accuracy(y_true, y_pred, [0, 1]) == pytest.approx(87.5)


def test_predicting_another_class_counts_as_wrong() -> None:
    # unseen classes 2, 3; predictions of seen class 0 are misses, not ignored
    assert per_class_accuracy([2, 2, 3, 3], [2, 0, 0, 0], [2, 3]) == pytest.approx(25.0)


def test_gzsl_scores_and_harmonic_mean() -> None:
    scores = gzsl_scores([0, 1], [0, 0], [2, 2], [2, 2], seen_classes=[0, 1], unseen_classes=[2])
    assert scores["S"] == pytest.approx(50.0) and scores["U"] == pytest.approx(100.0)
    assert scores["H"] == pytest.approx(2 * 50 * 100 / 150)
    assert harmonic_mean(0.0, 80.0) == 0.0


def test_zsl_top1_only_unseen_classes_compete() -> None:
    scores = np.array([[9.0, 0.0, 1.0, 0.5], [9.0, 0.0, 0.1, 0.5]])
    assert zsl_top1([2, 3], scores, [2, 3]) == pytest.approx(100.0)


def test_aggregate_seeds_mean_and_sample_std() -> None:
    summary = aggregate_seeds([{"H": 10.0, "name": "a"}, {"H": 20.0, "name": "b"}])
    assert summary["H"]["mean"] == pytest.approx(15.0)
    assert summary["H"]["std"] == pytest.approx(np.std([10, 20], ddof=1))
    assert "name" not in summary


def test_calibrated_stacking_shifts_seen_scores() -> None:
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    seen = torch.tensor([1.0, 0.0, 0.0])
    assert predict_scores(logits, seen, 0.0).argmax().item() == 0
    assert predict_scores(logits, seen, 0.5).argmax().item() == 1


def test_selection_table_matches_sklearn_metrics() -> None:
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    logits_seen, logits_unseen = (
        torch.randn(40, 6, generator=generator),
        torch.randn(30, 6, generator=generator),
    )
    labels_seen = torch.as_tensor(rng.integers(0, 3, 40))
    labels_unseen = torch.as_tensor(rng.integers(3, 6, 30))
    seen_mask = torch.tensor([1.0, 1, 1, 0, 0, 0])
    gammas = torch.tensor([0.0, 1.0])
    table = gzsl_selection_table(logits_seen, labels_seen, logits_unseen, labels_unseen, seen_mask, gammas)
    for row, gamma in zip(table, gammas, strict=True):
        pred_s = predict_scores(logits_seen, seen_mask, gamma).argmax(1)
        pred_u = predict_scores(logits_unseen, seen_mask, gamma).argmax(1)
        expected = gzsl_scores(labels_seen, pred_s, labels_unseen, pred_u, [0, 1, 2], [3, 4, 5])
        assert row.tolist() == pytest.approx([expected["U"] / 100, expected["S"] / 100, expected["H"] / 100])


def recomputed_metrics(
    trained, seen_x: np.ndarray, seen_y: np.ndarray, unseen_x: np.ndarray, unseen_y: np.ndarray
) -> dict[str, float]:
    """U, S, H and ZSL top-1 (percent) of a trained model, recomputed with scikit-learn from its predictions
    (per-class accuracy = macro recall over the classes present), for end-to-end tests to compare with."""
    from sklearn.metrics import recall_score

    def per_class(truth: np.ndarray, predicted: np.ndarray) -> float:
        return 100.0 * recall_score(
            truth, predicted, labels=np.unique(truth), average="macro", zero_division=0
        )

    s = per_class(seen_y, trained.predict(seen_x))
    u = per_class(unseen_y, trained.predict(unseen_x))
    unseen = np.asarray(trained.unseen_classes)
    among_unseen = unseen[trained.scores(unseen_x).cpu().numpy()[:, unseen].argmax(1)]
    return {
        "U": u,
        "S": s,
        "H": 2 * u * s / (u + s) if u + s else 0.0,
        "zsl_top1": per_class(unseen_y, among_unseen),
    }


# ---- a demo-world bundle evaluated on fresh renders ------------------------------------------------------


class _RecordingBackbone:
    """Stands in for the bundle's backbone: keeps the images it is given, returns zero features."""

    batch_size = 16

    def __init__(self, feature_dim: int) -> None:
        self.feature_dim = feature_dim
        self.images: list = []

    def features(self, images) -> np.ndarray:
        self.images.extend(images)
        return np.zeros((len(images), self.feature_dim), np.float32)


def test_evaluation_renders_at_the_bundles_recorded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation reads the same demo-world record as serving: 64 px recorded, 64 px rendered, and each
    class drawn from its attribute values is the world's class of that name."""
    import dataclasses

    from acmr_core.bundle.bundle import Bundle
    from acmr_core.bundle.format import load_bundle
    from acmr_core.data import demo_world
    from acmr_core.pipelines.evaluate import evaluate_bundle
    from tests.test_service import DEMO_BUNDLE

    shipped = load_bundle(DEMO_BUNDLE, device="cpu")
    record = {**shipped.provenance["demo_world"], "render_size": 64}
    bundle = dataclasses.replace(shipped, provenance={**shipped.provenance, "demo_world": record})
    backbone = _RecordingBackbone(shipped.identity.feature_dim)
    monkeypatch.setattr(Bundle, "create_backbone", lambda self, device="auto": backbone)
    result = evaluate_bundle(bundle, seed=99, per_class=1, device="cpu", progress=False)
    assert result["images"] == {"seen": 42, "unseen": 6}
    assert {image.size for image in backbone.images} == {(64, 64)}
    world = demo_world.default_world()
    assert np.array_equal(np.asarray(backbone.images[5]), np.asarray(world.render(5, 99, 0, size=64)))
    bad = dataclasses.replace(shipped, provenance={**shipped.provenance, "demo_world": {"render_size": 9}})
    with pytest.raises(BundleError, match="render_size 9; expected 16 to 1024 px"):
        evaluate_bundle(bad, seed=99, per_class=1, device="cpu", progress=False)
