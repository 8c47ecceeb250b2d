"""The prepared GPU run of issue 33 (benchmarks/gpu_shape_run.py), dry-run on the CPU with a tiny setting:
it calibrates, trains with render workers, scores per group, checks the part hashes the same when loaded on
the CPU, and prints an ``acmr build-demo`` command whose settings are the run's (so the build finds the part
in its cache instead of training it)."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from acmr_core.commands import build_demo
from acmr_core.data import demo_world
from acmr_core.data.demo_render import ATTRIBUTE_GROUPS
from acmr_core.pipelines import demo_backbone
from acmr_core.pipelines.backbone_training import BackboneTraining
from benchmarks import gpu_shape_run


def test_the_gpu_run_dry_runs_on_the_cpu_and_names_a_build_that_reuses_its_part(tmp_path: Path) -> None:
    code = gpu_shape_run.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--workers", "1"])
    assert code == 0
    report = json.loads((tmp_path / "gpu_shape_run.json").read_text())
    assert report["portability"]["same_hash"] and report["calibration"]["steps_per_s"] > 0
    for split in ("seen", "held_out"):
        assert set(report["scores"][split]) == set(ATTRIBUTE_GROUPS)
    assert report["history"] and report["history"][-1][0] == report["config"]["steps"]
    part = tmp_path / report["learnt_part"]["file"]
    assert part.is_file() and not list(tmp_path.glob("*.checkpoint.safetensors"))

    parser = argparse.ArgumentParser()
    build_demo.register(parser.add_subparsers())
    args = parser.parse_args(shlex.split(report["build_command"])[1:])
    config = build_demo._backbone_training(args, quick=False)
    assert config == BackboneTraining(**report["config"])
    key = demo_backbone.cache_key(
        config, "resnet101", 0, args.residual_scale,
        demo_world.backbone_training_combinations(demo_world.default_world()),
    )  # fmt: skip
    assert part.name == f"demo-backbone-{key[:16]}.safetensors"
