"""Where a bundle named on the command line or in the app is: light (no torch), so ``acmr serve`` can refuse
a wrong ``--bundle`` before it spends seconds importing torch and gradio."""

from __future__ import annotations

from pathlib import Path

from acmr_core.errors import BundleError, quote_value


def find_bundle(bundle: str | Path, checkpoints: str | Path) -> Path:
    """The folder ``bundle`` itself, else ``checkpoints/<bundle>``, resolved; BundleError if neither."""
    for candidate in (Path(bundle), Path(checkpoints) / str(bundle)):
        if candidate.is_dir():
            return candidate.resolve()
    raise BundleError(
        f"bundle {quote_value(str(bundle))} not found (neither a folder nor in {checkpoints}/); "
        "give a bundle folder, or rebuild the demo with 'acmr build-demo'"
    )
