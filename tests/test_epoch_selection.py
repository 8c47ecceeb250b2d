"""ACMR epochs chosen on the validation split (EpochStopper), and the reference mode's classifier schedule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from acmr_core.cli import main
from acmr_core.data.synthetic import write_synthetic_xlsa17
from acmr_core.data.xlsa17 import ZSLData
from acmr_core.model.config import ACMRConfig, TrainConfig, WarmUp, get_preset
from acmr_core.model.gzsl import GZSLClassifier, train_classifier
from acmr_core.model.network import ACMR
from acmr_core.training.fit import EpochStopper, fit_acmr
from tests.test_training import train_on_world, validation_classes, world  # noqa: F401 (fixture)


def replay(stopper: EpochStopper, curve: dict[int, float]) -> int:
    """Feed a validation curve ``{epochs: H}`` to ``stopper`` as training does; the epoch it stopped at."""
    for epochs in range(1, stopper.max_epochs + 1):
        if stopper.scores_after(epochs) and stopper.observe(epochs, curve[epochs]):
            return epochs
    raise AssertionError("the stopper never stopped")


def cub_stopper() -> EpochStopper:
    return EpochStopper.from_config(get_preset("CUB")[1])


def test_scoring_starts_after_the_warmups_on_a_grid_and_always_at_the_end() -> None:
    stopper = cub_stopper()  # CUB: distance warm-up ends at 22, classification at 21; every 5 epochs
    assert (stopper.first, stopper.every, stopper.patience, stopper.max_epochs) == (25, 5, 2, 100)
    scored = [e for e in range(1, 101) if stopper.scores_after(e)]
    assert scored == list(range(25, 101, 5))
    odd = EpochStopper(first=25, every=5, patience=2, min_delta=0.5, max_epochs=52)
    assert [e for e in range(1, 53) if odd.scores_after(e)][-2:] == [50, 52]


def test_rising_then_flat_curve_stops_after_patience_and_chooses_the_last_gain() -> None:
    stopper = cub_stopper()
    curve = {25: 40.0, 30: 42.0, 35: 42.3, 40: 42.4, 45: 50.0}  # 45 is never reached
    assert replay(stopper, curve) == 40
    assert (stopper.best_epoch, stopper.best_h) == (30, 42.0)


def test_small_gains_add_up_until_they_reach_min_delta() -> None:
    stopper = cub_stopper()
    curve = {25: 40.0, 30: 40.3, 35: 40.6, 40: 40.7, 45: 40.9, 50: 41.0}
    assert replay(stopper, curve) == 45  # 35 beat 25 by 0.6 >= 0.5; 40 and 45 did not beat 35 by 0.5
    assert stopper.best_epoch == 35


def test_a_drop_after_the_first_score_keeps_the_first_and_a_late_gain_resets_patience() -> None:
    stopper = cub_stopper()
    assert replay(stopper, {25: 45.0, 30: 44.0, 35: 44.9}) == 35
    assert stopper.best_epoch == 25
    stopper = cub_stopper()
    assert replay(stopper, {25: 40.0, 30: 40.2, 35: 41.0, 40: 40.0, 45: 40.5}) == 45
    assert stopper.best_epoch == 35


def test_a_curve_still_rising_at_the_end_trains_the_full_schedule() -> None:
    stopper = cub_stopper()
    curve = {e: float(e) for e in range(25, 101, 5)}
    assert replay(stopper, curve) == 100 and stopper.best_epoch == 100


def test_stopping_rule_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="val_every"):
        TrainConfig(val_every=0)
    with pytest.raises(ValueError, match="val_min_delta"):
        TrainConfig(val_min_delta=-1.0)


def tiny_model_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, ACMRConfig, TrainConfig]:
    rng = np.random.default_rng(0)
    features = rng.random((60, 16), dtype=np.float32)
    labels = np.repeat(np.arange(6), 10)
    attributes = rng.random((6, 5), dtype=np.float32)
    arch = ACMRConfig(
        feature_dim=16,
        attribute_dim=5,
        num_classes=6,
        visual_encoder_hidden=32,
        visual_decoder_hidden=32,
        semantic_encoder_hidden=16,
        semantic_decoder_hidden=16,
        iem_hidden=8,
    )
    warm = WarmUp(1.0, 0, 3)
    train = TrainConfig(epochs=6, batch_size=16, beta=warm, distance=warm, classify=warm)
    return features, labels, attributes, arch, train


def test_scoring_between_epochs_neither_changes_training_nor_runs_past_a_stop() -> None:
    features, labels, attributes, arch, train = tiny_model_inputs()
    plain = fit_acmr(features, labels, attributes, arch, train, "cpu", seed=3, progress=False)
    seen: list[int] = []

    def draw_and_stop_after_four(epoch: int, model: ACMR) -> bool:
        assert not model.training  # scored in eval mode
        torch.randn(1000)  # the validation classifier draws from the global RNG
        seen.append(epoch)
        return epoch == 3

    full = replace(train, epochs=4)
    scored = fit_acmr(
        features, labels, attributes, arch, train, "cpu", 3, False, on_epoch_end=draw_and_stop_after_four
    )
    four = fit_acmr(features, labels, attributes, arch, full, "cpu", seed=3, progress=False)
    assert seen == [0, 1, 2, 3]
    for name, tensor in scored.state_dict().items():
        assert torch.equal(tensor, four.state_dict()[name]), name
    six = plain.state_dict()
    assert any(not torch.equal(tensor, six[name]) for name, tensor in scored.state_dict().items())


def test_train_gzsl_trains_the_final_model_for_the_epochs_chosen_on_validation(world: ZSLData) -> None:  # noqa: F811
    def shorter(train: TrainConfig) -> TrainConfig:
        # 10 classifier epochs per scoring (not 30): each of the 7 scorings fits a validation classifier, and
        # what is checked is the bookkeeping between curve, stopper and final model, not accuracy. The curve
        # still peaks before the last scoring (at 18 of 24 epochs here), so "trains the chosen epochs" is
        # not "trains all epochs".
        warm = WarmUp(1.0, 0, 6)
        return replace(
            train, epochs=24, distance=warm, classify=warm, val_every=3, val_patience=2, cls_max_epochs=10
        )

    trained = train_on_world(world, shorter, choose_epochs=True, **validation_classes(world))
    selection = trained.selection
    curve = {point["epoch"]: point["val_H"] for point in selection["validation_curve"]}
    assert min(curve) == 6 and all((epoch - 6) % 3 == 0 or epoch == 24 for epoch in curve)
    stopper = EpochStopper(first=6, every=3, patience=2, min_delta=0.5, max_epochs=24)
    assert replay(stopper, curve) == selection["acmr_epochs_trained"] == max(curve)
    assert trained.train.epochs == selection["acmr_epochs"] == stopper.best_epoch
    best = selection["validation_curve"][list(curve).index(stopper.best_epoch)]
    assert selection["val_H"] == best["val_H"] and selection["gamma"] == best["gamma"] == trained.gamma


def test_epochs_are_only_chosen_with_validation_selection(world: ZSLData) -> None:  # noqa: F811
    from acmr_core.errors import DataError

    with pytest.raises(DataError, match="only be chosen"):
        train_on_world(world, choose_epochs=True, selection="reference")


@pytest.mark.slow
def test_acmr_train_chooses_epochs_by_default_and_records_the_curve(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_synthetic_xlsa17(root, "CUB", feature_dim=16, images_per_class=8, xlsa17_dir=root / "none")
    out = tmp_path / "out"
    args = ["train", "--dataset", "CUB", "--data-root", str(root), "--out", str(out), "--seeds", "0"]
    assert main([*args, "--device", "cpu", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    seed = metrics["per_seed"][0]
    assert metrics["epoch_selection"] == "validation" and metrics["acmr_epochs"] == [seed["acmr_epochs"]]
    curve = {point["epoch"]: point["val_H"] for point in seed["selection"]["validation_curve"]}
    stopper = cub_stopper()
    assert replay(stopper, curve) == max(curve) and seed["acmr_epochs"] == stopper.best_epoch
    saved = json.loads((out / "models" / "seed_0" / "acmr.json").read_text())
    assert saved["train"]["epochs"] == seed["acmr_epochs"]


def test_reference_mode_trains_the_classifier_50_epochs_300_on_awa2_dropping_the_last_batch() -> None:
    assert get_preset("CUB")[1].cls_reference_epochs == 50
    assert get_preset("SUN")[1].cls_reference_epochs == 50
    assert get_preset("AWA2")[1].cls_reference_epochs == 300
    reference = TrainConfig().classifier_optimizer(reference=True)
    assert reference["drop_last"] is True and reference["batch_size"] == 32
    assert TrainConfig().classifier_optimizer()["drop_last"] is False


@pytest.mark.parametrize(("drop_last", "steps_per_epoch"), [(True, 3), (False, 4)])
def test_drop_last_skips_the_incomplete_batch(
    drop_last: bool, steps_per_epoch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = torch.Generator().manual_seed(0)
    z, y = torch.randn(100, 8, generator=generator), torch.randint(0, 4, (100,), generator=generator)
    batches: list[int] = []  # the size of every training batch the classifier sees
    original = GZSLClassifier.forward

    def counting_forward(self: GZSLClassifier, latent: torch.Tensor) -> torch.Tensor:
        if self.training:
            batches.append(latent.shape[0])
        return original(self, latent)

    monkeypatch.setattr(GZSLClassifier, "forward", counting_forward)
    train_classifier(z, y, 4, epochs=2, lr=1e-3, beta1=0.3, batch_size=32, seed=0, drop_last=drop_last)
    assert len(batches) == 2 * steps_per_epoch
    assert set(batches) == ({32} if drop_last else {32, 4})
