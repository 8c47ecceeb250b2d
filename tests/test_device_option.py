"""Issue 26: one ``--device`` option for every command, ``acmr serve`` (contributed by the app) included.

Every command takes the same names (auto, cpu, cuda, cuda:N), refuses anything else at parse time in one
line, and says so with the same help text; the library's own device resolution applies the same rule.
"""

from __future__ import annotations

import argparse

import pytest

from acmr_core.cli import build_parser
from acmr_core.errors import ACMRError
from acmr_core.runtime import resolve_device

#: The fewest arguments each command with ``--device`` parses with (nothing runs: only the parser is used).
REQUIRED_ARGS: dict[str, list[str]] = {
    "train": ["--dataset", "CUB", "--data-root", "data", "--out", "out"],
    "evaluate": ["--bundle", "demo-world"],
    "extract": ["--images", "images", "--out", "features.safetensors"],
    "bundle": ["--features", "features.safetensors", "--classes", "classes.json", "--out", "bundle"],
    "predict": ["image.png"],
    "build-demo": [],
    "serve": [],
    "bootstrap": ["cub"],
}
#: Commands without ``--device``: describe reads a bundle's catalog on the CPU, no model runs.
WITHOUT_DEVICE = {"describe"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _device_action(parser: argparse.ArgumentParser) -> argparse.Action | None:
    return next((a for a in parser._actions if "--device" in a.option_strings), None)


def test_every_command_but_describe_has_the_device_option_serve_included() -> None:
    commands = _commands()
    with_device = {name for name, parser in commands.items() if _device_action(parser) is not None}
    assert with_device == set(REQUIRED_ARGS)
    assert set(commands) == with_device | WITHOUT_DEVICE


@pytest.mark.parametrize("command", sorted(REQUIRED_ARGS))
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_every_command_accepts_every_device_name(command: str, device: str) -> None:
    args = build_parser().parse_args([command, *REQUIRED_ARGS[command], "--device", device])
    assert args.device == device


@pytest.mark.parametrize("command", sorted(REQUIRED_ARGS))
def test_every_command_defaults_to_auto(command: str) -> None:
    assert build_parser().parse_args([command, *REQUIRED_ARGS[command]]).device == "auto"


@pytest.mark.parametrize("command", sorted(REQUIRED_ARGS))
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "CPU", "mps"])
def test_every_command_refuses_other_device_names_in_one_line(
    command: str, device: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, *REQUIRED_ARGS[command], "--device", device])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"acmr {command}: error: argument --device") and f"'{device}'" in err
    assert "cuda:N" in err  # says what would have been accepted


def test_all_commands_share_one_help_text_and_one_validator() -> None:
    actions = [_device_action(parser) for name, parser in _commands().items() if name in REQUIRED_ARGS]
    assert len({action.help for action in actions}) == 1
    assert len({action.type for action in actions}) == 1
    assert "cuda:N" in actions[0].help


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "mps"])
def test_resolve_device_refuses_what_the_option_refuses(device: str) -> None:
    with pytest.raises(ACMRError, match=f"unknown device '{device}'"):
        resolve_device(device)


def test_resolve_device_still_maps_cpu_and_auto() -> None:
    assert str(resolve_device("cpu")) == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda"}
