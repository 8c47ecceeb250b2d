"""The shipped example images (assets/examples): one per class, with its class and kind for the captions."""

from __future__ import annotations

import json
from pathlib import Path


def example_entries(folder: Path) -> list[dict[str, str]]:
    """One example image per class (the first listed in the folder's index.json): path, class and kind.

    Without a usable index, every PNG of the folder (class and kind unknown).
    """
    index_file = folder / "index.json"
    try:
        entries = json.loads(index_file.read_text(encoding="utf-8")) if index_file.is_file() else []
    except (OSError, ValueError):
        entries = []
    first_per_class: dict[str, dict[str, str]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and (folder / str(entry.get("file", ""))).is_file():
            first_per_class.setdefault(
                str(entry.get("class")),
                {
                    "path": str(folder / entry["file"]),
                    "class": str(entry.get("class")),
                    "kind": str(entry.get("kind", "")),
                },
            )
    if first_per_class:
        return list(first_per_class.values())
    return [{"path": str(path), "class": "", "kind": ""} for path in sorted(folder.glob("*.png"))]


def example_gallery(folder: Path) -> list[str]:
    """The example images' paths (see :func:`example_entries`)."""
    return [entry["path"] for entry in example_entries(folder)]


def captioned_examples(folder: Path) -> list[tuple[str, str]]:
    """(path, caption) per example: its class and whether the model saw photos of it in training."""
    return [
        (entry["path"], f"{entry['class']} ({entry['kind']})" if entry["class"] else Path(entry["path"]).stem)
        for entry in example_entries(folder)
    ]
