"""The package layout is the architecture: layers import only downwards, no cycles, no god modules, no
private names borrowed across modules, in the library (``acmr_core``) and the app (``app``) alike.

Read from the source with ``ast`` (nothing is imported), so a violation names the file and the import.
Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import acmr_core

PACKAGE = Path(acmr_core.__file__).parent
ROOT = PACKAGE.parent
APP = ROOT / "app"

#: Layer of each top-level part of acmr_core, bottom (0) to top. A module may import its own layer or below.
LAYERS: dict[str, int] = {
    "errors": 0,
    "runtime": 0,
    "fileio": 0,
    "defaults": 0,
    "version": 0,
    "data": 1,
    "features": 1,
    "viz": 1,
    "model": 2,
    "training": 3,
    "bundle": 4,
    "describe": 4,
    "pipelines": 5,
    "serving": 6,
    "cli": 7,
    "commands": 7,
    "__main__": 7,
}
#: The package face (``acmr_core/__init__.py``) is above every layer: library modules import a name from the
#: module that defines it, never from ``acmr_core`` itself.
FACE = max(LAYERS.values()) + 1
#: Modules that are data tables (word lists, URL tables) rather than logic may be longer.
LONG_DATA_TABLES = {"describe/vocabulary.py"}
MAX_LINES = 500


def _modules(packages: tuple[Path, ...] = (PACKAGE,)) -> dict[str, Path]:
    modules = {}
    for path in sorted(path for package in packages for path in package.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(path: Path, module: str) -> set[str]:
    """Every acmr_core / app module imported anywhere in the file (module level or inside functions)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in {"acmr_core", "app", "gradio"}}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The acmr_core module ``name`` refers to (``from pkg import name`` may name a function)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return FACE  # acmr_core/__init__.py names the public API from every layer
    return LAYERS.get(parts[1])


def _graph(packages: tuple[Path, ...] = (PACKAGE,)) -> dict[str, set[str]]:
    modules = _modules(packages)
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path, module):
            if name.split(".")[0] not in {"acmr_core", "app"} or _resolve(name, modules) is None:
                targets.add(name)
                continue
            target = _resolve(name, modules)
            if target and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {module.split(".")[1] for module in _modules() if "." in module}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_the_library_never_imports_the_app_or_gradio() -> None:
    offenders = [
        (module, target)
        for module, targets in _graph().items()
        for target in targets
        if target.split(".")[0] in {"app", "gradio"}
    ]
    assert offenders == []


def test_imports_only_point_down() -> None:
    upward = []
    for module, targets in _graph().items():
        source = _layer(module)
        for target in targets:
            if target.startswith("acmr_core.") and source is not None:
                destination = _layer(target)
                if destination is not None and destination > source:
                    upward.append(f"{module} (layer {source}) imports {target} (layer {destination})")
    assert upward == [], "\n".join(upward)


def test_no_import_cycles() -> None:
    """Over the library and the app together (an app module importing the app package is an edge too)."""
    both = _graph((PACKAGE, APP))
    graph = {
        module: {t for t in targets if t.split(".")[0] in {"acmr_core", "app"}}
        for module, targets in both.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == [], "\n".join(cycles)


def test_no_module_is_a_god_module() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in [*PACKAGE.rglob("*.py"), *APP.rglob("*.py")]
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and str(path.relative_to(PACKAGE)) not in LONG_DATA_TABLES
    }
    assert long == {}


def test_no_private_name_is_imported_from_another_module() -> None:
    """``from x import _name`` couples a module to another's internals: make the name public, or keep the
    code together. (Tests may reach into modules; the library and the app may not.)"""
    borrowed = []
    for path in [*PACKAGE.rglob("*.py"), *APP.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {"acmr_core", "app"}:
                private = [
                    a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                ]
                if private:
                    borrowed.append(
                        f"{path.relative_to(ROOT)}: from {node.module} import {', '.join(private)}"
                    )
    assert borrowed == [], "\n".join(borrowed)


def test_the_app_package_face_is_not_imported_by_its_own_modules() -> None:
    """``app/__init__.py`` is the package's small face; its modules import from the module that defines a
    name, never from ``app`` itself (that made the cycle app -> app.ui -> app.define_panel -> app)."""
    inward = [
        f"{module} imports app"
        for module, targets in _graph((PACKAGE, APP)).items()
        if module.startswith("app.") and "app" in targets
    ]
    assert inward == [], "\n".join(inward)


def test_the_public_api_resolves_to_its_defining_modules() -> None:
    exported = set(acmr_core.__all__)
    assert set(acmr_core._EXPORTS) <= exported
    for name, module in acmr_core._EXPORTS.items():
        value = getattr(acmr_core, name)
        assert getattr(value, "__module__", module) == module, f"{name} is defined in {value.__module__}"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = acmr_core.not_a_name


def test_importing_the_package_does_not_import_torch() -> None:
    # `acmr --help` imports acmr_core: the public names must resolve lazily.
    code = (
        "import sys, acmr_core, acmr_core.cli; "
        "print(sorted(m for m in ('torch', 'timm', 'gradio') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
