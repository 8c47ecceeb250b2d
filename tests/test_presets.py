"""Presets are typed data: every registered preset is walked (as timm's tests walk ``list_models()``), loads
from its file, round-trips through its JSON form and gives configs the trainer accepts; a malformed preset
file or an unknown name is refused with one line."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acmr_core.errors import DataError
from acmr_core.fileio import json_text
from acmr_core.model import config
from acmr_core.model.config import (
    PRESET_DIR,
    ACMRConfig,
    Preset,
    TrainConfig,
    WarmUp,
    find_preset,
    get_preset,
    list_presets,
    load_preset,
    make_configs,
    register_preset,
    save_preset,
)

BUILT_IN = sorted(PRESET_DIR.glob("*.json"))


def test_the_registry_is_the_preset_files() -> None:
    assert BUILT_IN, f"no preset files in {PRESET_DIR}"
    # One file per preset, named after it; nothing registered in code beside them.
    assert [path.stem.upper() for path in BUILT_IN] == [load_preset(path).name for path in BUILT_IN]
    assert list_presets() == sorted(load_preset(path).name.upper() for path in BUILT_IN)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_is_typed_and_round_trips_through_its_data_form(name: str, tmp_path: Path) -> None:
    preset = find_preset(name)
    assert isinstance(preset, Preset) and preset.name.upper() == name and preset.description
    assert isinstance(preset.arch, ACMRConfig) and isinstance(preset.train, TrainConfig)
    assert all(
        isinstance(w, WarmUp) for w in (preset.train.beta, preset.train.distance, preset.train.classify)
    )
    assert find_preset(name.lower()) == preset  # names are case-insensitive
    # The file is the whole preset: no field comes from a default hidden in code.
    path = PRESET_DIR / f"{name.lower()}.json"
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(json_text(preset.to_dict()))
    assert Preset.from_dict(json.loads(json_text(preset.to_dict()))) == preset
    save_preset(preset, tmp_path / "copy.json")
    assert load_preset(tmp_path / "copy.json") == preset
    # The older (dict, TrainConfig) view says the same.
    assert get_preset(name) == (preset.arch.to_dict(), preset.train)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_gives_configs_the_trainer_trains_with(name: str) -> None:
    torch = pytest.importorskip("torch")
    from acmr_core.training.fit import fit_acmr, scale_epochs

    preset = find_preset(name)
    arch, train = make_configs(name, feature_dim=32, attribute_dim=6, num_classes=4)
    # The data's dims replace the preset's nominal ones; everything else is the preset's.
    assert arch == dataclasses.replace(preset.arch, feature_dim=32, attribute_dim=6, num_classes=4)
    assert train == preset.train
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 32)).astype(np.float32)
    labels = np.arange(8) % 4
    attributes = rng.random((4, 6)).astype(np.float32)
    # One epoch, one step: the trainer builds the preset's network and takes its schedule.
    trained = fit_acmr(
        features, labels, attributes, arch, scale_epochs(train, 1), device="cpu", progress=False
    )
    assert all(torch.isfinite(p).all() for p in trained.parameters())


def test_a_looked_up_preset_is_a_copy() -> None:
    preset = find_preset("CUB")
    preset.train.epochs = 1
    preset.arch.latent_dim = 3
    assert find_preset("CUB").train.epochs != 1 and find_preset("CUB").arch.latent_dim != 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.name = "other"  # type: ignore[misc]


def test_an_unknown_preset_is_refused_with_one_line_naming_the_choices() -> None:
    with pytest.raises(DataError) as caught:
        find_preset("nope")
    message = str(caught.value)
    assert "\n" not in message and "unknown preset 'nope'" in message
    assert all(name in message for name in list_presets())
    with pytest.raises(DataError, match="unknown preset"):
        make_configs("nope", feature_dim=4, attribute_dim=2, num_classes=2)


def _cub_data() -> dict[str, Any]:
    return find_preset("CUB").to_dict()


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = _cub_data()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps(_with(("colour",), "red")), "unknown keys ['colour']"),
        (json.dumps(_with(("train", "epoch"), 100)), "unknown keys ['epoch']"),
        (json.dumps(_with(("arch", "latent_size"), 8)), "unknown keys ['latent_size']"),
        (json.dumps(_with(("train", "beta", "slope"), 1.0)), "unknown keys ['slope']"),
        (json.dumps(_with(("train", "epochs"), "100")), "'epochs' must be an integer, got '100'"),
        (json.dumps(_with(("train", "epochs"), 100.5)), "'epochs' must be an integer"),
        (json.dumps(_with(("train", "lr_vae"), "fast")), "'lr_vae' must be a number"),
        (json.dumps(_with(("arch", "use_vsa"), 1)), "'use_vsa' must be true or false"),
        (json.dumps(_with(("arch", "latent_dim"), True)), "'latent_dim' must be an integer"),
        (json.dumps(_with(("train", "beta", "factor"), "x")), "'factor' must be a number"),
        (json.dumps(_with(("train", "beta"), [1, 0, 9])), "'beta' must be an object"),
        (
            json.dumps(_with(("train", "cls_gamma_grid"), [0, "a"])),
            "'cls_gamma_grid' must be a list of numbers",
        ),
        (json.dumps(_with(("train", "epochs"), 0)), "epochs and batch_size must be positive"),
        (json.dumps(_with(("arch", "reparameterization"), "odd")), "reparameterization must be one of"),
        (json.dumps(_with(("name",), "")), "needs a 'name'"),
        (json.dumps([1, 2]), "must be a JSON object, got list"),
        ('{"name": "X", ', "not valid JSON"),
    ],
)
def test_a_malformed_preset_file_is_refused_with_one_line(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "mine.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_preset(path)
    message = str(caught.value)
    assert "\n" not in message and "mine.json" in message
    assert expected in message, message


def test_a_missing_preset_file_is_refused_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"preset file absent\.json not found$"):
        load_preset(tmp_path / "absent.json")


def test_a_preset_loaded_from_a_file_can_be_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "_PRESETS", {})  # the registration ends with the test
    data = _with(("name",), "Mine")
    data["train"]["epochs"] = 7
    del data["arch"]["iem_hidden"]  # a hand-written preset may leave a field at its default
    (tmp_path / "mine.json").write_text(json.dumps(data), encoding="utf-8")
    mine = register_preset(load_preset(tmp_path / "mine.json"))
    assert "MINE" in list_presets() and find_preset("mine") == mine
    assert mine.arch.iem_hidden == ACMRConfig().iem_hidden
    assert make_configs("MINE", feature_dim=8, attribute_dim=3, num_classes=2)[1].epochs == 7
    with pytest.raises(TypeError, match="takes a Preset"):
        register_preset("MINE")  # type: ignore[arg-type]


def test_the_demo_build_reads_its_settings_from_its_preset_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from acmr_core.data.demo_world import default_world
    from acmr_core.pipelines import build, demo
    from acmr_core.training.fit import scale_epochs

    # The demo preset is the small DEMO preset's model and loss weights, its schedule scaled to the demo
    # bundle's 200 epochs, with a fine calibration grid: the values the pipeline used to override.
    world_preset, small = find_preset(demo.DEMO_PRESET), find_preset("DEMO")
    grid = tuple(round(0.1 * step, 1) for step in range(31))
    assert world_preset.arch == small.arch
    assert world_preset.train == dataclasses.replace(scale_epochs(small.train, 200), cls_gamma_grid=grid)
    assert world_preset.train.epochs == demo.DEMO_EPOCHS
    assert inspect.signature(demo.build_demo_bundle).parameters["epochs"].default is None

    # What the build hands the trainer is that preset, the data's dims aside: nothing overridden on the way.
    class Captured(Exception):
        pass

    def capture(*args: Any, arch: ACMRConfig, train: TrainConfig, **kwargs: Any) -> None:
        raise Captured(arch, train)

    monkeypatch.setattr(build, "train_gzsl", capture)
    world = default_world()
    labels = np.repeat(world.seen_classes, 2)
    features = np.random.default_rng(0).normal(size=(labels.size, 2048)).astype(np.float32)
    plot = build.LabelledFeatures(features[: len(world.classes)], np.arange(len(world.classes)))
    with pytest.raises(Captured) as caught:
        demo.build_demo_bundle(
            None, world=world, train_per_class=2, plot_per_class=1, device="cpu", progress=False,
            rendered=(build.LabelledFeatures(features, labels), plot),
        )  # fmt: skip
    arch, train = caught.value.args
    assert train == world_preset.train
    assert arch == dataclasses.replace(
        world_preset.arch, attribute_dim=len(world.attribute_names), num_classes=len(world.classes)
    )
