"""End-to-end training on a small synthetic world, the GZSL classifier, and checkpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from acmr_core.data.synthetic import write_synthetic_xlsa17
from acmr_core.data.xlsa17 import ZSLData, load_xlsa17
from acmr_core.errors import ACMRError, BundleError, DataError
from acmr_core.model.config import ACMRConfig, TrainConfig, WarmUp
from acmr_core.model.gzsl import fit_gzsl_classifier
from acmr_core.model.predictor import TrainedModel
from acmr_core.model.saved_model import CONFIG_FILE, WEIGHTS_FILE, load_trained, save_trained
from acmr_core.training import selection as selection_module
from acmr_core.training.fit import scale_epochs
from acmr_core.training.protocol import evaluate_on_data, run_protocol, train_gzsl
from acmr_core.training.selection import select_on_validation

real_selection_table = selection_module.gzsl_selection_table

# The shortest schedule that still learns the tiny world well (measured: at 30 epochs ZSL 58 %, U 39 %,
# S 72 %, H 50 % against the bounds 50 / 20 / 50 / 20 below; at 20 epochs U collapses to 0). 60 epochs took
# ~1.8x as long (the module fixture, A/B at the same load) for no check that needs them.
EPOCHS = 30


def small_configs(feature_dim: int, attribute_dim: int, num_classes: int) -> tuple[ACMRConfig, TrainConfig]:
    """Narrow MLPs and a short schedule; beta is small because 64-d features reconstruct with little loss."""
    arch = ACMRConfig(
        feature_dim=feature_dim,
        attribute_dim=attribute_dim,
        num_classes=num_classes,
        visual_encoder_hidden=128,
        visual_decoder_hidden=128,
        semantic_encoder_hidden=64,
        semantic_decoder_hidden=64,
        iem_hidden=32,
    )
    train = TrainConfig(
        epochs=EPOCHS,
        lr_vae=1e-3,
        lr_iem=2.5e-4,
        lr_vsa=5e-3,
        beta=WarmUp(0.1, 0, EPOCHS),
        distance=WarmUp(1.0, 0, EPOCHS // 3),
        classify=WarmUp(5.0, 0, EPOCHS // 3),
        cls_seen_samples=100,
        cls_unseen_samples=100,
        cls_batch_size=64,
        cls_max_epochs=30,
        cls_reference_epochs=3,
    )
    return arch, train


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ZSLData:
    root = tmp_path_factory.mktemp("world")
    write_synthetic_xlsa17(root, "TINY", feature_dim=64, images_per_class=40, xlsa17_dir=root / "none")
    return load_xlsa17(root, "TINY")


def train_on_world(
    world: ZSLData,
    adjust: Callable[[TrainConfig], TrainConfig] = lambda t: t,
    *,
    seen: np.ndarray | None = None,
    unseen: np.ndarray | None = None,
    **kwargs: Any,
):
    """``train_gzsl`` on the world's trainval images with the small configs (``adjust``-ed), and the world's
    seen and unseen classes unless ``seen`` / ``unseen`` are given."""
    arch, train = small_configs(64, world.attributes.shape[1], world.attributes.shape[0])
    return train_gzsl(
        world.features[world.trainval],
        world.labels[world.trainval],
        world.attributes,
        world.seen_classes if seen is None else seen,
        world.unseen_classes if unseen is None else unseen,
        arch=arch,
        train=adjust(train),
        device="cpu",
        seed=0,
        progress=False,
        **kwargs,
    )


def validation_classes(world: ZSLData) -> dict[str, np.ndarray]:
    return {
        "val_seen_classes": np.unique(world.labels[world.train]),
        "val_unseen_classes": np.unique(world.labels[world.val]),
    }


@pytest.fixture(scope="module")
def trained_and_table(world: ZSLData) -> tuple[TrainedModel, np.ndarray]:
    """The model trained with validation selection, and the (epoch, gamma, U/S/H) table it was selected on
    (in percent), recorded as the real ``gzsl_selection_table`` computes it."""
    tables: list[torch.Tensor] = []

    def recording_table(*args: Any, **kwargs: Any) -> torch.Tensor:
        table = real_selection_table(*args, **kwargs)
        tables.append(table.clone())
        return table

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection_module, "gzsl_selection_table", recording_table)
        model = train_on_world(world, class_names=world.class_names, **validation_classes(world))
    return model, torch.stack(tables).cpu().numpy() * 100.0


@pytest.fixture(scope="module")
def trained(trained_and_table: tuple[TrainedModel, np.ndarray]) -> TrainedModel:
    return trained_and_table[0]


@pytest.mark.slow
def test_unseen_accuracy_far_above_chance(trained: TrainedModel, world: ZSLData) -> None:
    metrics = evaluate_on_data(trained, world)
    n_unseen, n_all = world.unseen_classes.size, world.attributes.shape[0]
    assert metrics["zsl_top1"] > 2.5 * 100 / n_unseen  # 5 unseen classes: chance is 20 %
    assert metrics["U"] > 4 * 100 / n_all  # GZSL: chance over all 20 classes is 5 %
    assert metrics["S"] > 50.0 and metrics["H"] > 20.0
    assert trained.selection["val_images"]["unseen_test"] > 0


def test_validation_selects_the_best_h_epoch_and_gamma(
    trained_and_table: tuple[TrainedModel, np.ndarray],
) -> None:
    trained, table = trained_and_table
    grid = trained.train.cls_gamma_grid
    assert table.shape == (trained.train.cls_max_epochs, len(grid), 3)  # one row per classifier epoch
    # The first (epoch, gamma) cell with the highest validation H, in epoch-major order.
    epoch, gamma = np.unravel_index(int(np.argmax(table[:, :, 2])), table.shape[:2])
    selection = trained.selection
    assert selection["mode"] == "validation"
    assert (selection["classifier_epochs"], selection["gamma"]) == (epoch + 1, grid[gamma])
    assert (trained.classifier_epochs, trained.gamma) == (epoch + 1, grid[gamma])  # the final model uses them
    u, s, h = table[epoch, gamma]
    assert (selection["val_U"], selection["val_S"], selection["val_H"]) == pytest.approx((u, s, h))
    assert h == pytest.approx(2 * u * s / (u + s))
    assert selection["val_H_uncalibrated_best"] == pytest.approx(table[:, grid.index(0.0), 2].max())


def test_predictions_are_deterministic_and_accept_one_image(trained: TrainedModel, world: ZSLData) -> None:
    one = world.features[world.test_unseen[:1]]
    assert trained.predict(one).shape == (1,)
    batch = world.features[world.test_unseen[:20]]
    assert np.array_equal(trained.predict(batch), trained.predict(batch))
    assert trained.latents(one).shape == (1, 64)


def test_checkpoint_round_trip(trained: TrainedModel, world: ZSLData, tmp_path: Path) -> None:
    save_trained(tmp_path / "m", trained)
    loaded = load_trained(tmp_path / "m", "cpu")
    images = world.features[world.test_seen]
    assert torch.equal(loaded.scores(images), trained.scores(images))
    assert loaded.gamma == trained.gamma and loaded.classifier_epochs == trained.classifier_epochs
    assert loaded.class_names == world.class_names and loaded.selection["mode"] == "validation"
    assert np.array_equal(loaded.unseen_classes, trained.unseen_classes)


def _one_line_bundle_error(directory: Path) -> str:
    with pytest.raises(BundleError) as error:
        load_trained(directory)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_checkpoint_refuses_missing_corrupt_or_mismatched_parts(
    trained: TrainedModel, tmp_path: Path
) -> None:
    folder = save_trained(tmp_path / "m", trained)
    weights = (folder / WEIGHTS_FILE).read_bytes()
    config = json.loads((folder / CONFIG_FILE).read_text())

    (folder / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    assert "corrupt or truncated" in _one_line_bundle_error(folder)
    (folder / WEIGHTS_FILE).unlink()
    assert "missing" in _one_line_bundle_error(folder)
    (folder / WEIGHTS_FILE).write_bytes(weights)

    (folder / CONFIG_FILE).write_text("{not json")
    assert "not valid JSON" in _one_line_bundle_error(folder)
    bigger = {**config, "arch": {**config["arch"], "visual_encoder_hidden": 129}}
    (folder / CONFIG_FILE).write_text(json.dumps(bigger))
    assert "do not match" in _one_line_bundle_error(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "format_version": 99}))
    assert "format version" in _one_line_bundle_error(folder)
    assert "does not exist" in _one_line_bundle_error(tmp_path / "nothing")


def test_classifier_refits_for_any_class_set(trained: TrainedModel, world: ZSLData) -> None:
    # e.g. the app adding a user class: keep 3 seen classes, treat 2 others as attribute-only classes.
    seen = world.seen_classes[:3]
    extra = world.unseen_classes[:2]
    rows = np.flatnonzero(np.isin(world.labels[world.trainval], seen))
    features = trained.scaler.transform(world.features[world.trainval][rows])
    classifier = fit_gzsl_classifier(
        trained.model,
        features,
        world.labels[world.trainval][rows],
        world.attributes,
        extra,
        seen_samples=30,
        unseen_samples=30,
        epochs=10,
        device="cpu",
        seed=1,
    )
    assert classifier.num_classes == world.attributes.shape[0]
    with torch.no_grad():
        z = trained.model.semantic_latent(torch.as_tensor(world.attributes[extra]))
        predicted = classifier(z).argmax(1).numpy()
    assert set(predicted) <= set(np.concatenate([seen, extra]).tolist())


def test_reference_selection_runs_the_fixed_schedule(world: ZSLData) -> None:
    result = train_on_world(world, lambda train: scale_epochs(train, 2), selection="reference")
    assert result.selection["mode"] == "reference"
    assert result.classifier_epochs == result.train.cls_reference_epochs == 3 and result.gamma == 0.0


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (lambda world: {"seen": world.seen_classes[1:]}, "not in the seen classes"),
        (lambda world: {"unseen": world.seen_classes[:1]}, "both seen and unseen"),
        (lambda world: {"selection": "test"}, "selection"),
    ],
    ids=["label-outside-seen", "seen-and-unseen", "unknown-selection"],
)
def test_train_gzsl_rejects_inconsistent_inputs(
    world: ZSLData, inputs: Callable[[ZSLData], dict[str, Any]], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        train_on_world(world, lambda train: replace(train, epochs=1), **inputs(world))


def test_scale_epochs_keeps_warmup_shape() -> None:
    short = scale_epochs(TrainConfig(), 10)
    assert short.epochs == 10 and short.beta.end_epoch == 9 and short.distance.start_epoch == 1


@pytest.mark.slow
def test_bf16_training_learns_and_keeps_float32_weights(world: ZSLData) -> None:
    # The float32 schedule: bfloat16 is emulated (~3x slower) on most CPUs, but at half of it (15 epochs) the
    # model has not learnt the unseen classes yet, and learning is what is checked.
    validation = validation_classes(world)
    trained = train_on_world(world, lambda train: replace(train, precision="bf16"), **validation)
    assert {p.dtype for p in trained.model.parameters()} == {torch.float32}
    metrics = evaluate_on_data(trained, world)
    assert metrics["zsl_top1"] > 2.5 * 100 / world.unseen_classes.size
    assert metrics["U"] > 4 * 100 / world.attributes.shape[0]


def test_precision_is_validated_and_defaults_to_fp32_for_older_configs() -> None:
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
    older = TrainConfig().to_dict()
    del older["precision"]  # configs saved before the precision option existed
    assert TrainConfig.from_dict(older).precision == "fp32"


def test_training_autocast_by_precision(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from acmr_core import runtime

    cpu = torch.device("cpu")
    with runtime.training_autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(runtime, "has_native_bf16", lambda device: False)
    with runtime.training_autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    assert "no native bfloat16" in caplog.text  # emulated bf16 is slower: the user is told
    with pytest.raises(ACMRError, match="unknown precision"):
        runtime.training_autocast(cpu, "fp8")


# ---- the validation protocol: choice, tie-break, never a test image -------------------------------------

# Scripted validation H (percent) per classifier epoch (rows) and calibration gamma (columns).
TIED_TABLE = [
    [10.0, 20.0, 30.0],
    [40.0, 50.0, 50.0],  # the best H, reached at gamma 0.5 and 1.0 ...
    [50.0, 45.0, 20.0],  # ... and again at a later epoch
    [30.0, 30.0, 30.0],
]
UNIQUE_TABLE = [[10.0, 20.0, 30.0], [40.0, 50.0, 50.0], [50.0, 45.0, 20.0], [30.0, 30.0, 90.0]]


@pytest.mark.parametrize(
    ("h_table", "expected_epoch", "expected_gamma"),
    [(TIED_TABLE, 2, 0.5), (UNIQUE_TABLE, 4, 1.0)],
    ids=["tie-earliest-epoch-then-smallest-gamma", "unique-best"],
)
def test_select_on_validation_on_a_scripted_table(
    world: ZSLData, monkeypatch: pytest.MonkeyPatch, h_table: list, expected_epoch: int, expected_gamma: float
) -> None:
    h = torch.tensor(h_table) / 100.0
    u, s = h + 0.01 * torch.arange(h.numel()).view(h.shape) / 100.0, h  # U tells the cells apart
    epochs_scored: list[int] = []

    def scripted_table(*args: Any, **kwargs: Any) -> torch.Tensor:
        real_selection_table(*args, **kwargs)  # the real computation still runs on the real latents
        epoch = len(epochs_scored)
        epochs_scored.append(epoch)
        return torch.stack((u[epoch], s[epoch], h[epoch]), dim=1)

    monkeypatch.setattr(selection_module, "gzsl_selection_table", scripted_table)
    arch, train = small_configs(64, world.attributes.shape[1], world.attributes.shape[0])
    train = replace(scale_epochs(train, 1), cls_max_epochs=len(h_table), cls_gamma_grid=(0.0, 0.5, 1.0))
    classes = validation_classes(world)
    chosen = select_on_validation(
        world.features[world.trainval], world.labels[world.trainval], world.attributes,
        classes["val_seen_classes"], classes["val_unseen_classes"], arch, train, torch.device("cpu"), 0,
        progress=False,
    )  # fmt: skip
    assert epochs_scored == list(range(len(h_table)))  # scored after every classifier epoch
    assert (chosen["classifier_epochs"], chosen["gamma"]) == (expected_epoch, expected_gamma)
    row, column = expected_epoch - 1, train.cls_gamma_grid.index(expected_gamma)
    assert chosen["val_H"] == pytest.approx(h_table[row][column])
    assert chosen["val_U"] == pytest.approx(100.0 * float(u[row, column]))
    assert chosen["val_H_uncalibrated_best"] == pytest.approx(max(line[0] for line in h_table))


def _with_noise_test_features(world: ZSLData, seed: int) -> ZSLData:
    """The world with every test image's features replaced by seeded noise on the features' own scale."""
    features = world.features.copy()
    test_rows = np.concatenate([world.test_seen, world.test_unseen])
    rng = np.random.default_rng(seed)
    scale = features[world.trainval].std(axis=0)
    features[test_rows] = np.abs(rng.normal(size=(test_rows.size, features.shape[1])) * 3 * scale)
    return replace(world, features=features)


@pytest.mark.slow
def test_the_protocol_never_looks_at_test_images(world: ZSLData) -> None:
    """Two runs whose test images are different noise select and train exactly the same."""
    runs = [
        run_protocol(_with_noise_test_features(world, seed), [0], preset="DEMO", epochs=2, device="cpu",
                     progress=False)
        for seed in (1, 2)
    ]  # fmt: skip
    first, second = (run["per_seed"][0] for run in runs)
    for entry in (first, second):
        entry["selection"].pop("train_seconds")
    assert first["selection"] == second["selection"] and first["selection"]["mode"] == "validation"
    assert first["classifier_epochs"] == second["classifier_epochs"]
    # The noise did reach the evaluation: the test scores differ, so the equal selections are not a fluke.
    assert (first["U"], first["S"]) != (second["U"], second["S"])


def test_the_protocol_refuses_data_without_a_validation_split(world: ZSLData) -> None:
    no_split = replace(world, train=np.zeros(0, np.int64), val=np.zeros(0, np.int64), val_split_source="")
    with pytest.raises(DataError, match="no validation split"):
        run_protocol(no_split, [0], preset="DEMO", epochs=1, device="cpu", progress=False)
