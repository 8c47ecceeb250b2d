"""Small features-only bundles for the tests (issue 36): synthetic CUB / AWA2 in the res101.mat layout (real
xlsa17 attributes, class names and splits; synthetic features), ``acmr train --seeds 0`` on them, then
``acmr bundle --run``. Built once per test session and dataset, kept small: 32-d features, a few images per
class, 2 epochs, the PCA map (UMAP's numba compilation alone takes tens of seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from acmr_core.cli import main
from acmr_core.data.synthetic import default_xlsa17_dir, write_synthetic_xlsa17
from acmr_core.data.xlsa17 import ZSLData, load_xlsa17

#: Images per class: enough for one test_seen image of every seen class (and a few unseen ones).
IMAGES_PER_CLASS = {"CUB": 4, "AWA2": 6}
FEATURE_DIM = 32
EPOCHS = 2


@dataclass(frozen=True)
class FeaturesRun:
    dataset: str
    data_root: Path
    run: Path
    bundle: Path

    def data(self) -> ZSLData:
        return load_xlsa17(self.data_root, self.dataset)


_BUILT: dict[str, FeaturesRun] = {}


def require_xlsa17(dataset: str) -> None:
    if not (default_xlsa17_dir() / dataset / "att_splits.mat").is_file():
        pytest.skip(f"no xlsa17 metadata for {dataset} at {default_xlsa17_dir()}")


def features_run(tmp_path_factory: pytest.TempPathFactory, dataset: str) -> FeaturesRun:
    """The synthetic data, the training run and its bundle for ``dataset`` (built on first use)."""
    if dataset in _BUILT:
        return _BUILT[dataset]
    require_xlsa17(dataset)
    root = tmp_path_factory.mktemp(f"features-{dataset.lower()}")
    data_root, run, bundle = root / "data", root / "run", root / f"{dataset.lower()}-seed0"
    write_synthetic_xlsa17(
        data_root, dataset, feature_dim=FEATURE_DIM, images_per_class=IMAGES_PER_CLASS[dataset]
    )
    train = ["train", "--dataset", dataset, "--data-root", str(data_root), "--out", str(run)]
    assert main([*train, "--seeds", "0", "--epochs", str(EPOCHS), "--device", "cpu", "--no-progress"]) == 0
    command = ["bundle", "--run", str(run), "--out", str(bundle), "--projection", "pca", "--device", "cpu"]
    assert main(command) == 0
    _BUILT[dataset] = FeaturesRun(dataset, data_root, run, bundle)
    return _BUILT[dataset]
