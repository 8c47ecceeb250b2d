"""Training the demo backbone's learnt part (issue 33): renders drawn in worker processes give the batches of
one process, a stopped run resumes bit for bit, a part trained in another memory format (the GPU path) loads
and hashes the same on the CPU, and the levers (curriculum, schedule, trainable sets, CLI options)."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acmr_core.commands import build_demo
from acmr_core.data import demo_world
from acmr_core.errors import ACMRError
from acmr_core.features.backbone import create_backbone, eval_transform
from acmr_core.features.weights import load_model, resolve_weights, save_learnt_parameters, state_dict_sha256
from acmr_core.pipelines import demo_backbone
from acmr_core.pipelines.backbone_renders import SHAPE_FIRST, BatchPlan, render_loader
from acmr_core.pipelines.backbone_trainer import BackboneTrainer, dihedral
from acmr_core.pipelines.backbone_training import (
    BackboneTraining,
    learning_rate_factor,
    select_trainable,
    trainable_parts,
)

TINY = BackboneTraining(steps=5, batch_size=4, input_size=32, warmup_steps=1, repeats=2)
WORLD = demo_world.default_world()
ALLOWED = demo_world.backbone_training_combinations(WORLD)


def _trainer(config: BackboneTraining = TINY, channels_last: bool = False) -> BackboneTrainer:
    model, _ = load_model(resolve_weights("random", "resnet101", 0, demo_world.DEFAULT_RESIDUAL_SCALE))
    return BackboneTrainer(model, config, torch.device("cpu"), channels_last=channels_last)


def _assert_same_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, different[:5]


def test_worker_processes_draw_the_batches_of_one_process_in_step_order() -> None:
    model, _ = load_model(resolve_weights("random", "resnet101", 0, 0.1))
    _, transform = eval_transform(model, 32)
    plan = BatchPlan(tuple(ALLOWED), batch_size=3, seed=5)
    alone = list(render_loader(plan, transform, 2, 7, workers=0))
    shared = list(render_loader(plan, transform, 2, 7, workers=2))
    assert [s for s, _, _ in alone] == [s for s, _, _ in shared] == [2, 3, 4, 5, 6]
    for (_, images, labels), (_, images2, labels2) in zip(alone, shared, strict=True):
        assert torch.equal(images, images2) and torch.equal(labels, labels2)
    assert not torch.equal(alone[0][1], alone[1][1])  # each step draws new renders


def test_the_shape_first_curriculum_starts_with_single_large_plain_objects_then_fades_out() -> None:
    plan = BatchPlan(tuple(ALLOWED), batch_size=64, seed=0, curriculum_steps=4)
    first = plan.step_combinations(0)
    assert all(all(c[g] == v for g, v in SHAPE_FIRST.items()) for c in first)
    assert {c["shape"] for c in first} == {"circle", "square", "triangle"}
    assert all(c in ALLOWED for c in first)  # never a held-out combination
    shares = [
        sum(all(c[g] == v for g, v in SHAPE_FIRST.items()) for c in plan.step_combinations(s))
        for s in range(6)
    ]
    assert shares[0] == 64 and shares[0] > shares[2] > shares[4] and shares[4] < 8  # 8: ~30 of 324 by chance
    later = plan.step_combinations(4)
    assert {c["count"] for c in later} == {"one", "three"} and {c["pattern"] for c in later} > {"plain"}


def test_repeats_show_a_batch_under_flips_and_quarter_turns_as_a_function_of_the_step() -> None:
    images = torch.rand(16, 3, 8, 8)
    turned = dihedral(images, seed=0, step=3)
    assert torch.equal(turned, dihedral(images, seed=0, step=3))
    assert not torch.equal(turned, dihedral(images, seed=0, step=4))
    for image, view in zip(images, turned, strict=True):
        views = [torch.rot90(v, k, dims=(-2, -1)) for v in (image, image.flip(-1)) for k in range(4)]
        assert any(torch.equal(view, candidate) for candidate in views)


def test_the_schedule_warms_up_then_decays_as_a_function_of_the_step() -> None:
    config = BackboneTraining(steps=10, warmup_steps=2)
    factors = [learning_rate_factor(config, step) for step in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert all(a > b for a, b in itertools.pairwise(factors[2:])) and 0 < factors[-1] < 0.1


def test_trainable_sets_name_whole_stages_in_order() -> None:
    assert trainable_parts("all") is None and trainable_parts("batchnorm+layer4") == ("layer4",)
    for bad in ("batchnorm+layer2+layer1", "batchnorm+layer5", "convs", "batchnorm+stem+stem"):
        with pytest.raises(ACMRError, match="unknown trainable set"):
            BackboneTraining(trainable=bad)
    model, _ = load_model(resolve_weights("random", "resnet101", 0, 0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    chosen = {names[id(p)] for p in select_trainable(model, "batchnorm+layer4")}
    assert "layer4.0.conv2.weight" in chosen and "layer3.0.conv2.weight" not in chosen
    assert "layer3.0.bn2.weight" in chosen  # every BatchNorm
    assert len(select_trainable(model, "all")) == len(list(model.parameters()))


def test_a_stopped_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    whole = _trainer()
    assert whole.fit(ALLOWED, progress=False)
    checkpoint = tmp_path / "run.checkpoint.safetensors"
    first = _trainer()
    # stopped mid-way through a rendered batch's repeats
    assert not first.fit(ALLOWED, checkpoint=checkpoint, key="k", stop_at=3, progress=False)
    assert checkpoint.is_file() and first.step == 3
    again = _trainer()
    assert not again.resume(checkpoint, key="other settings")  # a checkpoint of other settings is ignored
    assert again.resume(checkpoint, key="k") and again.step == 3
    assert again.fit(ALLOWED, workers=2, progress=False)  # worker processes, too
    _assert_same_tensors(whole.learnt_tensors(), again.learnt_tensors())
    _assert_same_tensors(whole.heads.state_dict(), again.heads.state_dict())


def test_a_time_limit_stops_the_cached_run_and_the_next_run_finishes_it(tmp_path: Path) -> None:
    config = BackboneTraining(steps=3, batch_size=2, input_size=32, trainable="batchnorm")
    run = demo_backbone.TrainingRun(workers=0, time_limit_s=1e-9)  # stops after the first step
    with pytest.raises(demo_backbone.TrainingStopped, match="stopped at step 1 of 3"):
        demo_backbone.learnt_backbone(
            config, WORLD, device="cpu", cache_dir=tmp_path, progress=False, run=run
        )
    (checkpoint,) = tmp_path.glob("*.checkpoint.safetensors")
    done = demo_backbone.learnt_backbone(
        config,
        WORLD,
        device="cpu",
        cache_dir=tmp_path,
        progress=False,
        run=demo_backbone.TrainingRun(workers=0),
    )
    assert not checkpoint.exists() and done.is_file()
    uninterrupted = demo_backbone.learnt_backbone(
        config,
        WORLD,
        device="cpu",
        cache_dir=tmp_path / "b",
        progress=False,
        run=demo_backbone.TrainingRun(workers=0),
    )
    _assert_same_tensors(load_file(str(done)), load_file(str(uninterrupted)))


def _hash_loaded_on_the_cpu(trainer: BackboneTrainer, folder: Path, input_size: int) -> str:
    """The full-weight hash of the trainer's learnt part, saved, then loaded over the seeded weights (CPU)."""
    path = save_learnt_parameters(
        folder / "part.safetensors",
        trainer.learnt_tensors(),
        model_name="resnet101",
        seed=0,
        residual_scale=0.1,
        input_size=input_size,
    )
    return create_backbone(str(path), device="cpu", use_cache=False).identity.weights_sha256


def test_a_part_trained_in_the_gpu_memory_format_loads_and_hashes_the_same_on_the_cpu(tmp_path: Path) -> None:
    trainer = _trainer(BackboneTraining(steps=2, batch_size=2, input_size=32), channels_last=True)
    trainer.fit(ALLOWED, progress=False)
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert _hash_loaded_on_the_cpu(trainer, tmp_path, input_size=32) == state_dict_sha256(
        trainer.model.state_dict()
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_part_trained_on_the_gpu_loads_and_hashes_the_same_on_the_cpu(tmp_path: Path) -> None:
    model, _ = load_model(resolve_weights("random", "resnet101", 0, 0.1))
    trainer = BackboneTrainer(
        model, BackboneTraining(steps=2, batch_size=4, input_size=64), torch.device("cuda")
    )
    trainer.fit(ALLOWED, workers=2, progress=False)
    assert _hash_loaded_on_the_cpu(trainer, tmp_path, input_size=64) == state_dict_sha256(
        trainer.model.state_dict()
    )


def _parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    build_demo.register(parser.add_subparsers())
    return parser.parse_args(["build-demo", *argv])


def test_build_demo_options_set_the_levers_and_the_run() -> None:
    args = _parsed(
        "--trainable",
        "all",
        "--backbone-batch",
        "64",
        "--backbone-lr",
        "1e-3",
        "--conv-lr-scale",
        "0.1",
        "--backbone-optimiser",
        "sgd",
        "--warmup-steps",
        "5",
        "--curriculum-steps",
        "50",
        "--render-workers",
        "3",
        "--render-repeats",
        "4",
        "--checkpoint-minutes",
        "2",
        "--backbone-time-limit",
        "7.5",
    )
    config = build_demo._backbone_training(args, quick=False)
    assert config == BackboneTraining(
        trainable="all",
        batch_size=64,
        learning_rate=1e-3,
        conv_lr_scale=0.1,
        optimiser="sgd",
        warmup_steps=5,
        curriculum_steps=50,
        repeats=4,
    )
    assert build_demo._training_run(args) == demo_backbone.TrainingRun(3, 120.0, 450.0)
    with pytest.raises(ACMRError, match="need --weights random"):
        build_demo._backbone_training(_parsed("--weights", "tv_in1k", "--curriculum-steps", "5"), quick=False)
    with pytest.raises(ACMRError, match="curriculum steps at most"):
        build_demo._backbone_training(_parsed("--curriculum-steps", "601"), quick=False)
