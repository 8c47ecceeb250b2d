"""Issue 27 (hardening), CLI side: bad numbers in a dataset or in ``--gamma`` are refused in one line (exit 2)
before they become a NaN model or NaN probabilities, and metrics.json is written atomically and, when
damaged, named in the error."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from acmr_core.bundle.bundle import Bundle
from acmr_core.bundle.format import load_bundle
from acmr_core.cli import main
from acmr_core.data.synthetic import write_synthetic_xlsa17
from acmr_core.data.xlsa17 import load_xlsa17
from acmr_core.errors import ACMRError, DataError
from tests.conftest import REPO_ROOT

DEMO_BUNDLE = REPO_ROOT / "checkpoints" / "demo-world"
TRAIN_ARGS = ("--seeds", "0", "--epochs", "1", "--device", "cpu", "--no-progress", "--no-vsa")


def _train(root: Path, out: Path) -> int:
    return main(["train", "--dataset", "CUB", "--data-root", str(root), "--out", str(out), *TRAIN_ARGS])


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert captured.err.startswith(f"acmr {command}: error:")
    return captured.err


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    # Built-in 20-class metadata (fast); named like a real dataset so the CUB preset applies.
    write_synthetic_xlsa17(root, "CUB", feature_dim=16, images_per_class=8, xlsa17_dir=root / "none")
    return root


def _poisoned_copy(clean_root: Path, tmp_path: Path, file: str, key: str, value: float) -> Path:
    """A copy of the clean data root whose ``file`` has one entry of matrix ``key`` set to ``value``."""
    root = tmp_path / "data"
    shutil.copytree(clean_root, root)
    path = root / "CUB" / file
    mat = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    matrix = np.array(mat[key], dtype=np.float64)
    matrix[3, 5] = value
    mat[key] = matrix
    scipy.io.savemat(str(path), mat)
    return root


@pytest.mark.parametrize(
    "file, key, value, shown",
    [
        ("res101.mat", "features", np.nan, "NaN"),  # D3: trained a model whose weights were all NaN
        ("res101.mat", "features", np.inf, "infinite"),  # D4: a 41-line sklearn traceback, exit 1
        ("res101.mat", "features", -1e30, "-1e+30"),  # finite, but overflows float32 arithmetic later
        ("res101.mat", "features", 1e39, "infinite"),  # beyond float32: becomes inf when loaded
        ("att_splits.mat", "att", np.nan, "NaN"),
        ("att_splits.mat", "att", np.inf, "infinite"),
    ],
)
def test_train_refuses_non_finite_data_in_one_line(
    clean_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    file: str,
    key: str,
    value: float,
    shown: str,
) -> None:
    root = _poisoned_copy(clean_root, tmp_path, file, key, value)
    assert _train(root, tmp_path / "out") == 2
    err = _one_error_line(capsys, "train")
    assert file in err and f"'{key}'" in err and shown in err and "1 value" in err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_the_data_layer_names_where_the_bad_value_is(clean_root: Path, tmp_path: Path) -> None:
    """Every command loading the data (train, evaluate --model, bootstrap) goes through load_xlsa17."""
    root = _poisoned_copy(clean_root, tmp_path, "res101.mat", "features", np.nan)
    with pytest.raises(DataError, match=r"first: NaN at image 6, feature 4"):  # stored (D, N): row 3 = dim 4
        load_xlsa17(root, "CUB")
    clean = load_xlsa17(clean_root, "CUB")
    assert clean.features.dtype == np.float32 and np.isfinite(clean.features).all()


# ------------------------------------------------------------------------------------------------------------
# γ


@pytest.mark.parametrize("gamma", ["nan", "inf", "-inf", "1e999"])
def test_predict_refuses_a_non_finite_gamma_as_a_usage_error(
    capsys: pytest.CaptureFixture[str], gamma: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["predict", f"--gamma={gamma}", "x.png"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    # One line, like every refusal (no argparse usage block above it).
    assert err.splitlines() == [
        f"acmr predict: error: argument --gamma: expected a finite number, got '{gamma}'"
    ]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize("gamma", ["1e308", "-1e308", "1000.5"])
def test_predict_refuses_a_huge_gamma_in_one_line(
    capsys: pytest.CaptureFixture[str], image: Path, gamma: str
) -> None:
    # 1e308 exited 0 and printed "nan%" for every class (--json: invalid NaN).
    code = main(["predict", "--bundle", str(DEMO_BUNDLE), f"--gamma={gamma}", "--device", "cpu", str(image)])
    assert code == 2
    err = _one_error_line(capsys, "predict")
    assert "calibration gamma must be a finite number between -1000 and 1000" in err


@pytest.fixture(scope="module")
def demo_bundle() -> Bundle:
    return load_bundle(DEMO_BUNDLE, device="cpu")


@pytest.mark.parametrize("gamma", [float("nan"), float("inf"), 1e308, -1e308])
def test_the_library_never_scores_with_a_bad_gamma(demo_bundle: Bundle, gamma: float) -> None:
    features = np.random.default_rng(0).random((3, demo_bundle.trained.arch.feature_dim), dtype=np.float32)
    with pytest.raises(ACMRError, match="calibration gamma must be a finite number"):
        demo_bundle.probabilities(features, gamma=gamma)
    with pytest.raises(ACMRError, match="calibration gamma"):
        demo_bundle.top_k(features, k=2, gamma=gamma)


@pytest.mark.parametrize("gamma", [-1000.0, 0.0, 1000.0])
def test_any_accepted_gamma_gives_probabilities(demo_bundle: Bundle, gamma: float) -> None:
    features = np.random.default_rng(0).random((3, demo_bundle.trained.arch.feature_dim), dtype=np.float32)
    probabilities = demo_bundle.probabilities(features, gamma=gamma)
    assert np.isfinite(probabilities).all()
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(3), abs=1e-4)


# ------------------------------------------------------------------------------------------------------------
# metrics.json


OLD_METRICS = {"written_by": "an earlier run"}


@pytest.fixture(scope="module")
def trained(clean_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """An `acmr train` output folder, trained over an earlier metrics.json while every rename is recorded:
    ``(out, renames)`` with, for each rename, its destination and what a reader saw just before it."""
    out = tmp_path_factory.mktemp("train")
    (out / "metrics.json").write_text(json.dumps(OLD_METRICS))
    renames: list[dict] = []
    real_replace: Callable[..., None] = os.replace

    def recording_replace(src: str | Path, dst: str | Path, **kwargs: object) -> None:
        target = Path(dst)
        if target.name == "metrics.json":
            renames.append(
                {
                    "dst": target,
                    "reader_saw": json.loads(target.read_text()),  # still the old file, whole
                    "new": json.loads(Path(src).read_text()),  # the complete new file, beside it
                }
            )
        real_replace(src, dst, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", recording_replace)
        assert _train(clean_root, out) == 0
    return out, renames


def test_metrics_json_is_written_atomically(trained: tuple[Path, list[dict]]) -> None:
    """D6: a plain write_text truncates metrics.json first; an interrupted run left half a file."""
    out, renames = trained
    assert [entry["dst"] for entry in renames] == [out / "metrics.json"]
    assert renames[0]["reader_saw"] == OLD_METRICS
    final = json.loads((out / "metrics.json").read_text())
    assert renames[0]["new"] == final and final["dataset"] == "CUB"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "models"]  # no temporary debris


def test_evaluate_names_a_truncated_metrics_json(
    trained: tuple[Path, list[dict]], clean_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(trained[0], out)
    metrics = out / "metrics.json"
    metrics.write_bytes(metrics.read_bytes()[:40])
    code = main(["evaluate", "--model", str(out), "--data-root", str(clean_root), "--device", "cpu"])
    assert code == 2
    err = _one_error_line(capsys, "evaluate")
    # It said "<root>/res101.mat not found", about a file that was never the problem.
    assert str(metrics) in err and "corrupt" in err and "--dataset" in err and "res101.mat" not in err
    # --dataset needs no metrics.json: the models evaluate.
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out),
                "--data-root",
                str(clean_root),
                "--dataset",
                "CUB",
                "--device",
                "cpu",
            ]
        )
        == 0
    )


def test_serve_chooses_whose_classes_from_its_two_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: per visitor by default (a public server), one shared set with --shared-classes [DIR]
    (``make run``); both at once is a one-line usage error."""
    import app.cli as serve_cli

    served: list[tuple[Path | None, bool]] = []
    monkeypatch.setattr(
        serve_cli,
        "serve",
        lambda **options: served.append((options["user_classes_dir"], options["per_visitor"])),
    )
    for arguments in ([], ["--user-classes", "visitors"], ["--shared-classes"], ["--shared-classes", "mine"]):
        assert main(["serve", *arguments]) == 0
    assert served == [(None, True), (Path("visitors"), True), (None, False), (Path("mine"), False)]
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--user-classes", "a", "--shared-classes", "b"])
    assert caught.value.code == 2
    assert "--shared-classes: not allowed with argument --user-classes" in _one_error_line(capsys, "serve")
