"""The bundles an app can serve: the default one loaded at start, the others in ``checkpoints`` on demand."""

from __future__ import annotations

import threading
from pathlib import Path

from acmr_core.bundle.format import list_bundles
from acmr_core.defaults import CHECKPOINTS_DIR, DEFAULT_BUNDLE, default_user_classes_dir
from acmr_core.errors import BundleError
from acmr_core.serving.locate import find_bundle
from acmr_core.serving.service import StudioService


class ServiceRegistry:
    """Bundles an app can serve: the default one loaded at start, the others in ``checkpoints`` on demand."""

    def __init__(
        self,
        checkpoints: str | Path = CHECKPOINTS_DIR,
        default_bundle: str | Path = DEFAULT_BUNDLE,
        device: str = "auto",
        user_classes_dir: str | Path | None = None,
        warm_default: bool = True,
        per_visitor: bool = False,
        refine: bool = False,
    ) -> None:
        """Load the default bundle now (warmed up unless ``warm_default`` is False: the caller warms it).

        ``per_visitor``: each visitor has their own classes (a public server) rather than one shared set;
        ``refine``: visitors' classifiers are re-fitted in the background after each edit.
        """
        self.checkpoints = Path(checkpoints)
        self.device = device
        self.user_classes_dir = Path(user_classes_dir) if user_classes_dir else default_user_classes_dir()
        self.per_visitor = per_visitor
        self.refine = refine
        default_dir = find_bundle(default_bundle, self.checkpoints)
        self.default_name = default_dir.name
        self._paths: dict[str, Path] = {self.default_name: default_dir}
        self._services: dict[str, StudioService] = {}
        self._lock = threading.Lock()
        self._services[self.default_name] = StudioService.open(
            default_dir,
            device=device,
            user_classes_dir=self.user_classes_dir,
            warm=warm_default,
            per_visitor=per_visitor,
            refine=refine,
        )

    def names(self) -> list[str]:
        """The default bundle first, then every bundle folder in ``checkpoints``."""
        found = [Path(path) for path in list_bundles(self.checkpoints)] if self.checkpoints.is_dir() else []
        for path in found:
            self._paths.setdefault(path.name, path.resolve())
        return [self.default_name, *sorted(name for name in self._paths if name != self.default_name)]

    def default(self) -> StudioService:
        return self._services[self.default_name]

    def get(self, name: str) -> StudioService:
        """The service of a listed bundle, loaded on first use (refused with a one-line reason if broken)."""
        with self._lock:
            service = self._services.get(name)
            if service is None:
                if name not in self._paths:
                    self.names()
                if name not in self._paths:
                    raise BundleError(
                        f"unknown bundle {name[:80]!r}; choose one of {', '.join(self.names())}"
                    )
                service = StudioService.open(
                    self._paths[name],
                    device=self.device,
                    user_classes_dir=self.user_classes_dir,
                    per_visitor=self.per_visitor,
                    refine=self.refine,
                )
                self._services[name] = service
            return service
