"""Defaults shared by the CLI, the app and the pipelines, each defined once."""

from __future__ import annotations

import os
from pathlib import Path

#: Folder of model bundles (the app lists them; ``acmr build-demo`` and ``acmr bootstrap`` write there).
CHECKPOINTS_DIR = Path("checkpoints")
#: The bundle served when none is named: the shipped demo world.
DEFAULT_BUNDLE = "demo-world"
#: Where user-defined classes are stored (one SQLite file per bundle) unless ``ACMR_USER_CLASSES_DIR`` is set.
USER_CLASSES_DIR = Path("user_classes")
#: Plotted images per class in a bundle's latent-space cache (the plot shows a sample, not every image).
DEFAULT_PLOT_PER_CLASS = 12


def default_user_classes_dir() -> Path:
    """The user-class folder: ``$ACMR_USER_CLASSES_DIR`` if set, else the default."""
    return Path(os.environ.get("ACMR_USER_CLASSES_DIR", USER_CLASSES_DIR))
