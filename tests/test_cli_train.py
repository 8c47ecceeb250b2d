"""`acmr train` / `acmr evaluate` on a tiny synthetic folder, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from acmr_core.cli import main
from acmr_core.data.synthetic import write_synthetic_xlsa17
from acmr_core.data.xlsa17 import load_xlsa17
from acmr_core.model.saved_model import load_trained
from tests.test_evaluation import recomputed_metrics


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    # Built-in 20-class metadata (fast); the folder is named like a real dataset so the CUB preset applies.
    write_synthetic_xlsa17(root, "CUB", feature_dim=16, images_per_class=8, xlsa17_dir=root / "none")
    return root


@pytest.fixture(scope="module")
def train_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    code = main(
        [
            "train",
            "--dataset",
            "CUB",
            "--data-root",
            str(data_root),
            "--out",
            str(out),
            "--seeds",
            "0,1",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--no-progress",
            "--no-vsa",
        ]
    )
    assert code == 0
    return out


def test_train_writes_metrics_and_models(train_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = json.loads((train_out / "metrics.json").read_text())
    assert [seed["seed"] for seed in metrics["per_seed"]] == [0, 1]
    for key in ("U", "S", "H", "zsl_top1"):
        assert metrics[key] == pytest.approx(np.mean([seed[key] for seed in metrics["per_seed"]]))
    assert metrics["selection"] == "validation" and metrics["epochs"] == 2
    assert metrics["seeds"] == [0, 1] and metrics["wall_seconds"] > 0
    assert metrics["ablation"] == {"vsa": False, "iem": True} and metrics["validation_split"] == "locs"
    for seed in (0, 1):
        assert (train_out / "models" / f"seed_{seed}" / "acmr.safetensors").is_file()
        assert (train_out / "models" / f"seed_{seed}" / "acmr.json").is_file()


def test_train_metrics_are_the_saved_models_scores_on_the_test_split(
    train_out: Path, data_root: Path
) -> None:
    """Each seed's U / S / H / ZSL equal the saved model's own predictions on the test images, recomputed."""
    data = load_xlsa17(data_root, "CUB")
    metrics = json.loads((train_out / "metrics.json").read_text())
    for entry in metrics["per_seed"]:
        trained = load_trained(train_out / "models" / f"seed_{entry['seed']}", "cpu")
        expected = recomputed_metrics(
            trained,
            data.features[data.test_seen], data.labels[data.test_seen],
            data.features[data.test_unseen], data.labels[data.test_unseen],
        )  # fmt: skip
        assert {key: entry[key] for key in expected} == pytest.approx(expected, abs=1e-4)


def test_train_in_bf16_records_it_and_saves_float32_weights(data_root: Path, tmp_path: Path) -> None:
    args = ["train", "--dataset", "CUB", "--data-root", str(data_root), "--out", str(tmp_path)]
    args += ["--seeds", "0", "--epochs", "2", "--device", "cpu", "--no-progress", "--precision", "bf16"]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["train"]["precision"] == "bf16"
    weights = load_file(tmp_path / "models" / "seed_0" / "acmr.safetensors")
    floating = {tensor.dtype for tensor in weights.values() if tensor.is_floating_point()}
    assert floating == {torch.float32}  # autocast never changes what is stored


def test_evaluate_rescores_saved_models(
    train_out: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(train_out),
                "--data-root",
                str(data_root),
                "--json",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    metrics = json.loads((train_out / "metrics.json").read_text())
    assert result["H"] == pytest.approx(metrics["H"]) and result["U"] == pytest.approx(metrics["U"])
    assert len(result["per_model"]) == 2


def _single_stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("acmr ")
    return err


def test_bad_data_root_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["train", "--dataset", "CUB", "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path)]
    )
    assert code == 2
    assert "does not exist" in _single_stderr_line(capsys)


def test_evaluate_missing_model_exits_2(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", "--model", str(tmp_path / "none"), "--data-root", str(data_root)])
    assert code == 2
    assert "does not exist" in _single_stderr_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", str(tmp_path / "empty"), "--data-root", str(data_root)]) == 2
    assert "no saved model" in _single_stderr_line(capsys)


def test_bad_seeds_are_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as error:
        main(
            [
                "train",
                "--dataset",
                "CUB",
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path),
                "--seeds",
                "a,b",
            ]
        )
    assert error.value.code == 2
