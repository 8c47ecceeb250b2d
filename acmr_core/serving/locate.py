"""Where a bundle named on the command line or in the app is: light (no torch), so ``acmr serve`` can refuse
a wrong ``--bundle`` before it spends seconds importing torch and gradio."""

from __future__ import annotations

from pathlib import Path

from acmr_core.errors import BundleError, quote_value

#: The bundles shipped beside the package (a source checkout or the Docker image): found from any folder.
SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def find_bundle(bundle: str | Path, checkpoints: str | Path) -> Path:
    """The folder ``bundle`` itself, else ``checkpoints/<bundle>``, else a shipped bundle of that name,
    resolved; BundleError if none. Every command that takes ``--bundle`` looks it up here."""
    candidates = (Path(bundle), Path(checkpoints) / str(bundle), SHIPPED_CHECKPOINTS / str(bundle))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise BundleError(
        f"bundle {quote_value(str(bundle))} not found (neither a folder nor in {checkpoints}/); "
        "give a bundle folder, or rebuild the demo with 'acmr build-demo'"
    )
