"""`acmr train`: train and evaluate ACMR on an xlsa17-layout dataset (GZSL protocol, several seeds).

Writes ``OUT/metrics.json`` (top-level "U", "S", "H", "zsl_top1" in percent = mean over seeds, their std,
per-seed values, "selection", epochs, wall seconds) and one model per seed under ``OUT/models/seed_<k>/``
(safetensors + JSON config), and prints a one-line summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from acmr_core.commands._args import add_device_option, positive_int
from acmr_core.errors import ACMRError
from acmr_core.model.config import PRECISION_CHOICES
from acmr_core.runtime import resolve_device

DATASETS = ("CUB", "SUN", "AWA1", "AWA2")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds expects comma-separated integers, got '{text}'") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return seeds


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train ACMR on an xlsa17 dataset and report GZSL U/S/H",
        description="Train ACMR on <data-root>/<DATASET>/{res101.mat,att_splits.mat}, select the ACMR "
        "epochs, the classifier epochs and the seen-class calibration on the validation split (never on test "
        "images), retrain on trainval, and evaluate once per seed.",
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument(
        "--data-root", required=True, type=Path, help="folder containing <DATASET>/res101.mat"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (metrics.json, models/)")
    parser.add_argument(
        "--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)"
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="a fixed number of ACMR epochs, warm-ups scaled (default: chosen on the validation split, at "
        "most the preset's 100; with --selection reference: the preset's 100)",
    )
    add_device_option(parser)
    parser.add_argument("--no-vsa", action="store_true", help="ablation: drop the VSA heads and their loss")
    parser.add_argument("--no-iem", action="store_true", help="ablation: drop the IEM gates")
    parser.add_argument(
        "--selection",
        choices=("validation", "reference"),
        default="validation",
        help="validation: choose ACMR epochs, classifier epochs + calibration on the validation split "
        "(default); reference: the reference's fixed schedules (100 ACMR, 50 classifier epochs), last epoch",
    )
    parser.add_argument(
        "--reparameterization",
        choices=("reference", "standard"),
        default="reference",
        help="reference: mu + exp(logvar)*eps with one eps per sample (faithful default); standard: textbook",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="auto (default): bf16 where the device has native bfloat16, else fp32; fp32: the reference's "
        "arithmetic; bf16: bfloat16 matrix products, fp32 weights",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="first write a synthetic xlsa17-layout dataset into --data-root (if none is there yet)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps acmr --help fast (these load torch, scipy and sklearn)
    from acmr_core.data.xlsa17 import load_xlsa17
    from acmr_core.fileio import write_json
    from acmr_core.training.protocol import run_protocol

    device = resolve_device(args.device)
    if args.synthetic and not (args.data_root / args.dataset / "res101.mat").is_file():
        from acmr_core.data.synthetic import write_synthetic_xlsa17  # lazy: only with --synthetic

        write_synthetic_xlsa17(args.data_root, args.dataset)
    data = load_xlsa17(args.data_root, args.dataset)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ACMRError(f"cannot create output folder {args.out}: {error.strerror}") from None
    metrics = run_protocol(
        data,
        args.seeds,
        device=device,
        selection=args.selection,
        epochs=args.epochs,
        use_vsa=not args.no_vsa,
        use_iem=not args.no_iem,
        reparameterization=args.reparameterization,
        precision=args.precision,
        progress=not args.no_progress,
        save_dir=args.out / "models",
    )
    metrics["data_root"] = str(args.data_root)
    metrics["ablation"] = {"vsa": not args.no_vsa, "iem": not args.no_iem}
    # Atomic: an interrupted write must not leave a truncated metrics.json for `acmr evaluate` to trip on.
    write_json(args.out / "metrics.json", metrics)
    std = metrics["std"]
    if metrics["epoch_selection"] == "validation":
        chosen = ",".join(str(e) for e in metrics["acmr_epochs"])
        epochs = f"ACMR epochs {chosen} chosen on validation"
    else:
        epochs = f"{metrics['epochs']} epochs"
    print(
        f"{args.dataset} ({len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}, {epochs}, "
        f"selection={args.selection}, {metrics['precision']}): U {metrics['U']:.2f}±{std['U']:.2f}  "
        f"S {metrics['S']:.2f}±{std['S']:.2f}  "
        f"H {metrics['H']:.2f}±{std['H']:.2f}  ZSL {metrics['zsl_top1']:.2f}  "
        f"({metrics['wall_seconds']:.0f} s) -> {args.out / 'metrics.json'}"
    )
    return 0
