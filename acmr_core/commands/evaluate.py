"""`acmr evaluate`: re-score saved models on a data root, or (``--bundle``) score a model bundle.

* ``acmr evaluate --model DIR --data-root ROOT [--dataset CUB]``: DIR is either one saved model
  (``acmr.json`` + ``acmr.safetensors``) or an ``acmr train`` output folder (all ``models/seed_*``).
  Prints U/S/H and ZSL top-1 (mean over the models); ``--json`` prints the full result as JSON.
* ``acmr evaluate --bundle B [--seed S] [--per-class N] [--features F] [--json]``: handled by
  :func:`run_bundle` (scores with :func:`acmr_core.pipelines.evaluate.evaluate_bundle`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acmr_core.commands._args import add_bundle_option, add_device_option, bundle_folder
from acmr_core.errors import ACMRError, BundleError, DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="re-score saved ACMR models on a data root, or a model bundle (--bundle)",
        description="Score a saved model (or every seed of an 'acmr train' output folder) on the test "
        "images of an xlsa17-layout dataset, or evaluate a model bundle with --bundle.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a saved model folder or an 'acmr train --out' folder")
    # --- bundle mode (run_bundle) ---
    add_bundle_option(source, "bundle evaluation")
    parser.add_argument(
        "--data-root", type=Path, help="folder containing <DATASET>/res101.mat (with --model)"
    )
    parser.add_argument(
        "--dataset", default=None, help="dataset sub-folder (default: from the training metrics)"
    )
    add_device_option(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    # Options read by the bundle evaluation (run_bundle).
    parser.add_argument("--seed", type=int, default=None, help="(--bundle) seed for fresh evaluation renders")
    parser.add_argument("--per-class", type=int, default=None, help="(--bundle) evaluation images per class")
    parser.add_argument("--features", type=Path, default=None, help="(--bundle) score a features file")
    parser.set_defaults(handler=run)


def _model_dirs(path: Path) -> list[Path]:
    # lazy: keeps acmr --help fast (these import torch)
    from acmr_core.model.saved_model import is_trained_dir

    if is_trained_dir(path):
        return [path]
    seeds = sorted(p for p in (path / "models").glob("seed_*") if is_trained_dir(p))
    if not seeds:
        raise BundleError(f"{path} holds no saved model (acmr.json + acmr.safetensors, or models/seed_*/)")
    return seeds


def _dataset_name(args: argparse.Namespace) -> str | None:
    """``--dataset``, else the dataset recorded in ``MODEL/metrics.json`` (None where there is none).

    A metrics.json that cannot be parsed (e.g. truncated) is refused naming it: ignoring it made the data
    root itself the dataset folder, and the error then blamed a res101.mat that was never the problem.
    """
    if args.dataset:
        return args.dataset
    # lazy: fileio imports numpy
    from acmr_core.fileio import read_json

    path = args.model / "metrics.json"
    if not path.is_file():
        return None
    metrics = read_json(path, error=DataError, advice="pass --dataset, or re-run acmr train to rewrite it")
    dataset = metrics.get("dataset") if isinstance(metrics, dict) else None
    return dataset if isinstance(dataset, str) and dataset else None


def run(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        return run_bundle(args)
    if args.data_root is None:
        raise ACMRError("--model needs --data-root (the folder containing <DATASET>/res101.mat)")
    if not args.model.exists():
        raise BundleError(f"model folder {args.model} does not exist")

    # lazy: keeps acmr --help fast (these import torch)
    from acmr_core.data.xlsa17 import load_xlsa17
    from acmr_core.model.saved_model import load_trained
    from acmr_core.runtime import resolve_device
    from acmr_core.training.metrics import aggregate_seeds
    from acmr_core.training.protocol import evaluate_on_data

    device = resolve_device(args.device)
    directories = _model_dirs(args.model)
    # A data root holding res101.mat itself is the dataset folder: no dataset name is needed then.
    root_has_data = (args.data_root / "res101.mat").is_file()
    dataset = None if root_has_data else _dataset_name(args)
    data = load_xlsa17(args.data_root, dataset)
    results = []
    for directory in directories:
        result = evaluate_on_data(load_trained(directory, device), data)
        results.append({"model": str(directory), **result})
    summary = aggregate_seeds(results)
    output = {key: summary[key]["mean"] for key in ("U", "S", "H", "zsl_top1")}
    output.update(std={key: summary[key]["std"] for key in ("U", "S", "H", "zsl_top1")}, per_model=results)
    if args.json:
        print(json.dumps(output, indent=2))
    else:
        print(
            f"{data.dataset} ({len(results)} model{'s' if len(results) > 1 else ''}): U {output['U']:.2f}  "
            f"S {output['S']:.2f}  H {output['H']:.2f}  ZSL {output['zsl_top1']:.2f}"
        )
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    """``acmr evaluate --bundle B [--json] [--seed S] [--per-class N] [--features F]``."""
    # lazy: keeps acmr --help fast (torch, the backbone)
    from acmr_core.bundle.format import load_bundle
    from acmr_core.features.extract import load_features
    from acmr_core.pipelines.evaluate import DEFAULT_EVAL_PER_CLASS, evaluate_bundle

    features = load_features(args.features) if args.features else None
    bundle = load_bundle(bundle_folder(args.bundle), device=args.device)
    if features is not None:
        bundle.check_backbone(features.identity)
    result = evaluate_bundle(
        bundle,
        features,
        seed=args.seed,
        per_class=int(args.per_class or DEFAULT_EVAL_PER_CLASS),
        device=args.device,
    )
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(
            f"{bundle.name}: GZSL U {result['U']:.1f}  S {result['S']:.1f}  H {result['H']:.1f}  "
            f"ZSL top-1 {result['zsl_top1']:.1f}  (chance: GZSL {result['chance_gzsl']:.1f}, "
            f"ZSL {result['chance_zsl']:.1f}; {result['images']['seen']} seen + {result['images']['unseen']} "
            f"unseen images, {result.get('source')}{_seed_note(result)})"
        )
    return 0


def _seed_note(result: Mapping[str, Any]) -> str:
    return f", seed {result['render_seed']}" if "render_seed" in result else ""
