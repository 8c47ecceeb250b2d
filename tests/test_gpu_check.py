"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end as a CPU dry run on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import gpu_check


@pytest.mark.slow
def test_dry_run_measures_every_section_and_writes_the_report(tmp_path: Path) -> None:
    report, raw = tmp_path / "gpu.md", tmp_path / "gpu.json"
    args = ["--device", "cpu", "--tiny", "--workers", "0", "--xlsa17", str(tmp_path / "no-metadata")]
    assert gpu_check.main([*args, "--out-md", str(report), "--json", str(raw)]) == 0
    results = json.loads(raw.read_text())
    assert results["dry_run"] is True
    assert results["acmr_steps_per_s"]["fp32"] > 0
    assert set(results["extraction"]["forward_images_per_s"]) == {"1", "2"}
    assert all(rate > 0 for rate in results["extraction"]["forward_images_per_s"].values())
    assert results["extraction"]["jpeg_extraction_images_per_s"] > 0
    assert results["torchrun_extraction"] == {"skipped": "needs CUDA GPUs"}
    assert results["predict"]["runs"] == 1 and results["predict"]["median_ms"] > 0
    assert results["train"]["acmr_epochs"] == 2 and results["train"]["seconds"] > 0
    text = report.read_text()
    assert text.startswith("## GPU check DRY RUN") and "predict end to end" in text and "≤ 60 s" in text
