"""End to end: a reduced demo bundle rebuilt from rendered images with the real (random-weight) backbone,
then loaded, predicted on and evaluated; and the `acmr predict` / `acmr bundle` / `acmr evaluate --bundle`
command lines, including their one-line errors (exit 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from acmr_core.bundle.format import load_bundle
from acmr_core.cli import main
from acmr_core.data import demo_world
from acmr_core.pipelines import demo
from acmr_core.pipelines.calibrate import CALIBRATION_SEED
from acmr_core.pipelines.demo_backbone import QUICK_STEPS, BackboneTraining
from acmr_core.pipelines.evaluate import evaluate_bundle
from acmr_core.pipelines.predict import predict_images
from acmr_core.serving.locate import SHIPPED_CHECKPOINTS
from tests.test_bundle import rehash_manifest
from tests.test_evaluation import recomputed_metrics

# Three seen classes and two unseen classes that differ in colour and background (strong attributes); two
# unseen classes, so that ZSL (choosing among the unseen classes) is not right by construction.
MINI_CLASSES = (
    "large red plain square on dark",
    "small yellow dotted circle on light",
    "three large green striped squares on light",
    "small red striped circle on light",  # unseen
    "large blue dotted square on dark",  # unseen
)
N_SEEN = 3
EVAL_PER_CLASS = 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mini_world() -> demo_world.DemoWorld:
    world = demo_world.default_world().subset(MINI_CLASSES)
    assert world.seen_mask.tolist() == [True] * N_SEEN + [False] * (len(MINI_CLASSES) - N_SEEN)
    return world


@pytest.fixture(scope="module")
def mini_bundle(tmp_path_factory: pytest.TempPathFactory, mini_world: demo_world.DemoWorld) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo-mini"
    demo.build_demo_bundle(
        out, world=mini_world, train_per_class=4, plot_per_class=2, epochs=3, device="cpu", progress=False,
        calibration_per_class=3,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, mini_world: demo_world.DemoWorld) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for class_index in range(len(mini_world.classes)):
        path = folder / f"class{class_index}.png"
        mini_world.render(class_index, seed=99, index=0).save(path)
        paths.append(path)
    return paths


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_reduced_demo_bundle_loads_and_predicts(mini_bundle: Path, images: list[Path]) -> None:
    bundle = load_bundle(mini_bundle, device="cpu")
    assert bundle.catalog.names == MINI_CLASSES
    calibration = bundle.trained.selection["calibration"]  # fitted on fresh renders of every class
    assert calibration["render_seed"] == CALIBRATION_SEED and calibration["per_class"] == 3
    assert bundle.trained.temperature == pytest.approx(calibration["temperature"])
    assert bundle.provenance["demo_world"]["used_seeds"] == sorted(
        [demo_world.TRAIN_SEED, demo_world.GALLERY_SEED, CALIBRATION_SEED]
    )
    assert bundle.provenance["projection"] == "umap"
    assert "shape" in bundle.caveat  # the random-weight backbone's weakness, for the app to show
    results = predict_images(bundle, images, top_k=len(MINI_CLASSES), device="cpu")
    assert [r["image"] for r in results] == [str(p) for p in images]
    for result in results:
        assert sorted(e["class"] for e in result["top_k"]) == sorted(MINI_CLASSES)
        assert sum(e["probability"] for e in result["top_k"]) == pytest.approx(1.0, abs=1e-4)
    # Deterministic: predicting again gives exactly the same numbers.
    assert predict_images(bundle, images, top_k=len(MINI_CLASSES), device="cpu") == results


def test_predict_json_output(
    capsys: pytest.CaptureFixture[str], mini_bundle: Path, images: list[Path]
) -> None:
    code, out, err = _run(
        capsys, "predict", "--bundle", str(mini_bundle), "--top-k", "2", "--json", *map(str, images[:2])
    )
    assert code == 0, err
    results = json.loads(out)
    assert len(results) == 2
    for result in results:
        top = result["top_k"]
        assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
        kinds = {e["class"]: e["kind"] for e in top}
        assert all(kinds[name] == ("unseen" if name in MINI_CLASSES[N_SEEN:] else "seen") for name in kinds)


def test_predict_text_output(
    capsys: pytest.CaptureFixture[str], mini_bundle: Path, images: list[Path]
) -> None:
    code, out, _ = _run(capsys, "predict", "--bundle", str(mini_bundle), "--top-k", "3", str(images[0]))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(images[0]) and len(lines) == 4
    assert (
        lines[1].lstrip().startswith("1. ")
        and lines[1].rstrip().endswith(("seen", "unseen"))
        and "%" in lines[1]
    )


def test_predict_bad_image_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], mini_bundle: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image")
    code, out, err = _run(capsys, "predict", "--bundle", str(mini_bundle), str(bad))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("acmr predict: error:") and "broken.png" in err


def test_predict_missing_bundle_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], images: list[Path], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "predict", "--bundle", str(tmp_path / "nope"), str(images[0]))
    assert code == 2 and err.count("\n") == 1 and "not found" in err


def test_predict_takes_a_bundle_by_name_like_serve(
    capsys: pytest.CaptureFixture[str], images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here: the shipped bundle of that name is found
    code, out, err = _run(capsys, "predict", "--bundle", "demo-world", "--top-k", "1", str(images[0]))
    assert code == 0, err
    by_folder = _run(
        capsys, "predict", "--bundle", str(SHIPPED_CHECKPOINTS / "demo-world"), "--top-k", "1", str(images[0])
    )
    assert by_folder == (0, out, err)


def test_bundle_for_other_backbone_weights_is_refused(
    capsys: pytest.CaptureFixture[str], mini_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(mini_bundle, tampered)
    identity = json.loads((tampered / "backbone.json").read_text())
    identity["weights_sha256"] = "f" * 64  # trained on other weights than `random(seed=0)` gives
    (tampered / "backbone.json").write_text(json.dumps(identity))
    rehash_manifest(tampered)
    code, _, err = _run(capsys, "predict", "--bundle", str(tampered), str(images[0]))
    assert code == 2 and err.count("\n") == 1 and "backbone mismatch" in err


@pytest.fixture(scope="module")
def held_out(mini_bundle: Path, mini_world: demo_world.DemoWorld) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the renders `acmr evaluate --bundle` scores by default (its evaluation seed)."""
    backbone = load_bundle(mini_bundle, device="cpu").create_backbone(device="cpu")
    features, labels, _ = demo_world.extract_renders(
        mini_world, backbone, demo_world.DEFAULT_EVAL_SEED, EVAL_PER_CLASS, progress=False
    )
    return features, labels


def _expected_metrics(bundle, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    seen = bundle.catalog.seen_mask[labels]
    return recomputed_metrics(bundle.trained, features[seen], labels[seen], features[~seen], labels[~seen])


def test_evaluate_renders_fresh_held_out_images(mini_bundle: Path, held_out: tuple) -> None:
    bundle = load_bundle(mini_bundle, device="cpu")
    result = evaluate_bundle(bundle, per_class=EVAL_PER_CLASS, device="cpu", progress=False)
    assert result["render_seed"] == demo_world.DEFAULT_EVAL_SEED
    n_unseen = len(MINI_CLASSES) - N_SEEN
    assert result["images"] == {"seen": N_SEEN * EVAL_PER_CLASS, "unseen": n_unseen * EVAL_PER_CLASS}
    assert result["chance_zsl"] == pytest.approx(100.0 / n_unseen)
    # The scores are the bundle's own predictions on those renders, recomputed independently.
    expected = _expected_metrics(bundle, *held_out)
    assert {key: result[key] for key in expected} == pytest.approx(expected, abs=1e-4)


def test_evaluate_a_bundle_on_a_features_file_text_and_json(
    capsys: pytest.CaptureFixture[str], mini_bundle: Path, mini_world, held_out: tuple, tmp_path: Path
) -> None:
    from acmr_core.features.extract import FeatureSet, save_features

    bundle = load_bundle(mini_bundle, device="cpu")
    features, labels = held_out
    feature_file = save_features(
        tmp_path / "held_out.safetensors",
        FeatureSet(
            features=features,
            labels=labels,
            image_paths=[f"{mini_world.class_names[c]}/{i}.png" for i, c in enumerate(labels)],
            class_names=list(mini_world.class_names),
            identity=bundle.identity,
        ),
    )
    args = ("evaluate", "--bundle", str(mini_bundle), "--features", str(feature_file), "--device", "cpu")
    code, out, err = _run(capsys, *args, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["source"] == "features" and "render_seed" not in result
    assert result["images"] == {"seen": int(bundle.catalog.seen_mask[labels].sum()),
                                "unseen": int((~bundle.catalog.seen_mask[labels]).sum())}  # fmt: skip
    expected = _expected_metrics(bundle, features, labels)
    assert {key: result[key] for key in expected} == pytest.approx(expected, abs=1e-4)

    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert out.splitlines() == [
        f"{mini_bundle.name}: GZSL U {result['U']:.1f}  S {result['S']:.1f}  H {result['H']:.1f}  "
        f"ZSL top-1 {result['zsl_top1']:.1f}  (chance: GZSL {result['chance_gzsl']:.1f}, "
        f"ZSL {result['chance_zsl']:.1f}; {result['images']['seen']} seen + {result['images']['unseen']} "
        "unseen images, features)"
    ]


def test_evaluate_refuses_a_training_seed(capsys: pytest.CaptureFixture[str], mini_bundle: Path) -> None:
    code, _, err = _run(
        capsys, "evaluate", "--bundle", str(mini_bundle), "--seed", str(demo_world.TRAIN_SEED)
    )
    assert code == 2 and err.count("\n") == 1 and "was used to build" in err


def test_bundle_command_builds_from_features_and_class_metadata(
    capsys: pytest.CaptureFixture[str], mini_bundle: Path, mini_world: demo_world.DemoWorld, tmp_path: Path
) -> None:
    from acmr_core.features.extract import FeatureSet, save_features

    identity = load_bundle(mini_bundle, device="cpu").identity
    rng = np.random.default_rng(0)
    # Features of the three seen classes (class folders = names); the unseen class has metadata only.
    labels = np.repeat(np.arange(3), 4)
    mixing = rng.normal(size=(mini_world.attribute_matrix().shape[1], 2048))
    features = np.maximum(mini_world.attribute_matrix()[labels] @ mixing + rng.normal(size=(12, 2048)), 0)
    feature_file = save_features(
        tmp_path / "train.safetensors",
        FeatureSet(
            features=features.astype(np.float32),
            labels=labels,
            image_paths=[f"{mini_world.class_names[c]}/{i}.png" for i, c in enumerate(labels)],
            class_names=list(mini_world.class_names[:3]),
            identity=identity,
        ),
    )
    classes = {
        "attributes": mini_world.attribute_names,
        "classes": [
            {"name": c.name, "seen": c.seen, "attributes": dict.fromkeys(c.attribute_names, 1.0)}
            for c in mini_world.classes
        ],
    }
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    out = tmp_path / "built"
    args = ("bundle", "--features", str(feature_file), "--classes", str(tmp_path / "classes.json"))
    code, stdout, err = _run(capsys, *args, "--out", str(out), "--epochs", "2", "--device", "cpu")
    assert code == 0, err
    assert "bundle written to" in stdout
    bundle = load_bundle(out, device="cpu")
    assert bundle.catalog.names == MINI_CLASSES
    residual = (
        demo_world.DEFAULT_RESIDUAL_SCALE
    )  # the mini demo bundle's backbone, inferred from its identity
    assert bundle.backbone_spec == {
        "model_name": "resnet101", "weights": "random", "seed": 0, "residual_scale": residual
    }  # fmt: skip
    assert bundle.latent.train_labels.tolist() == labels.tolist()

    (tmp_path / "bad.json").write_text(json.dumps({"attributes": ["a"], "classes": [{"name": "x"}]}))
    bad_args = ("bundle", "--features", str(feature_file), "--classes", str(tmp_path / "bad.json"))
    code, _, err = _run(capsys, *bad_args, "--out", str(tmp_path / "never"))
    assert code == 2 and err.count("\n") == 1 and "needs 'seen'" in err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (("build-demo", "--epochs", "0"), "--epochs must be at least 1"),
        (("build-demo", "--train-per-class", "1"), "--train-per-class must be at least 2"),
        (("build-demo", "--backbone-steps", "-1"), "--backbone-steps must be 0 or more"),
        (("build-demo", "--trainable", "everything"), "unknown trainable set 'everything'"),
        (("build-demo", "--weights", "tv_in1k", "--backbone-steps", "5"), "need --weights random"),
        (("predict", "--top-k", "0", "x.png"), "--top-k must be at least 1"),
    ],
)
def test_bad_options_fail_fast_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: tuple, message: str
) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_build_demo_refuses_a_folder_that_is_not_a_bundle_before_rendering(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    code, _, err = _run(capsys, "build-demo", "--out", str(tmp_path), "--quick")
    assert code == 2 and err.count("\n") == 1 and "is not a bundle" in err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_build_demo_help_states_the_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    # The command imports the demo pipeline only when it runs (keeps --help fast), so its help text repeats
    # the defaults: they must be the pipeline's.
    with pytest.raises(SystemExit):
        main(["build-demo", "--help"])
    # one entry per option: its lines up to the next line that starts an option
    entries = re.split(r"\n  (?=--)", capsys.readouterr().out)
    for option, default, quick in (
        ("--epochs", demo.DEMO_EPOCHS, demo.QUICK_EPOCHS),
        ("--train-per-class", demo.DEMO_TRAIN_PER_CLASS, demo.QUICK_TRAIN_PER_CLASS),
        ("--plot-per-class", demo.DEMO_PLOT_PER_CLASS, demo.QUICK_PLOT_PER_CLASS),
        ("--backbone-steps", BackboneTraining().steps, QUICK_STEPS),
    ):
        (entry,) = [" ".join(e.split()) for e in entries if e.startswith(option + " ")]
        assert f"(default {default}; --quick: {quick})" in entry, entry
