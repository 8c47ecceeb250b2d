"""Whole training (ACMR + GZSL classifier stage): a straight port of the reference vs acmr_core, in one run.

Same data (MinMax fitted on trainval), same architecture, loss, warm-ups, learning rates, batch size and
number of ACMR epochs. Measured for each implementation:

* reference port (:mod:`benchmarks.reference_port`): ``train_vae`` (host randperm per step, 3 ``.item()`` per
  step, for-loop Adam) + its classifier stage (DataLoader batch 32, 50 epochs, test pass every epoch); H of
  its last epoch and of its best test epoch (the reference's test-set selection, for comparison only);
* acmr_core, one training: :func:`acmr_core.training.fit.fit_acmr` (on-device batches, fused
Adam, no per-step
  sync) + the fast classifier (:func:`acmr_core.model.gzsl.fit_gzsl_classifier`, ``cls_max_epochs`` epochs),
  uncalibrated H; once per precision in ``--precisions`` (fp32 = the reference's arithmetic; bf16 = autocast
  matrix products);
* ``acmr train`` as a whole, once per precision in ``--protocol-precisions``:
  :func:`acmr_core.training.protocol.run_protocol` with its defaults (validation stage with ACMR
  epochs chosen by the
  patience rule, classifier epochs and calibration chosen there, then the final training and one test
  evaluation), timed end to end, with the chosen epochs and the validation curve.

Usage (the issue-14 comparison: whole ``acmr train`` vs the port, no separate single trainings)::

    python benchmarks/bench_train.py --data-root /tmp/acmr_cub --epochs 100 --step-rounds 0 --precisions "" \
        --protocol-precisions bf16,fp32 --out result.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_port import ReferenceModel, classifier_stage, hypers_from_config, train_vae

from acmr_core.data.xlsa17 import FeatureScaler, load_xlsa17
from acmr_core.model.config import make_configs
from acmr_core.model.gzsl import fit_gzsl_classifier
from acmr_core.training.fit import fit_acmr, scale_epochs
from acmr_core.training.metrics import gzsl_scores
from acmr_core.training.protocol import run_protocol


def interleaved_step_timing(x_train, y_train, attributes, arch, train, args) -> dict:
    """Median ms per training step of each implementation, measured in alternating rounds so that both see the
    same machine load (this machine is shared). One "step" = one batch of 50 (forward, backward, update)."""
    steps = 2 * (x_train.shape[0] // train.batch_size // 10)  # ~20 batches
    short = replace(train, epochs=1)
    hidden = {
        "resnet_features": (arch.visual_encoder_hidden, arch.visual_decoder_hidden),
        "attributes": (arch.semantic_encoder_hidden, arch.semantic_decoder_hidden),
    }
    ref_hypers = hypers_from_config(short)
    sub = steps * train.batch_size
    ours: dict[str, list[float]] = {precision: [] for precision in args.precisions}
    theirs = []
    for _ in range(args.step_rounds):
        for precision in args.precisions:
            started = time.perf_counter()
            variant = replace(short, precision=precision)
            fit_acmr(
                x_train[:sub], y_train[:sub], attributes, arch, variant, "cpu", args.seed, progress=False
            )
            ours[precision].append((time.perf_counter() - started) / steps * 1e3)
        started = time.perf_counter()  # model construction is timed on both sides (fit_acmr builds its own)
        ref = ReferenceModel(arch.feature_dim, arch.attribute_dim, arch.num_classes, hidden)
        sub_x, sub_y = torch.as_tensor(x_train[:sub]), torch.as_tensor(y_train[:sub])
        train_vae(ref, sub_x, sub_y, torch.as_tensor(attributes), ref_hypers)
        theirs.append((time.perf_counter() - started) / steps * 1e3)
    port = float(np.median(theirs))
    result = {"steps_per_round": steps, "rounds": args.step_rounds, "reference_port": port}
    for precision, times in ours.items():
        result[f"acmr_core_{precision}"] = float(np.median(times))
        result[f"ratio_{precision}"] = port / float(np.median(times))
    return result


def compile_lever(x_train, y_train, attributes, arch, train, args) -> dict:
    """ms per step of fit_acmr eager vs ``torch.compile(mode=args.compile_mode)``, in alternating rounds: a
    2-epoch run on ~20 batches, timed per epoch, so epoch 1 carries the compilation and epoch 2 is the steady
    state."""
    steps = min(
        max(2 * (x_train.shape[0] // train.batch_size // 10), 1), x_train.shape[0] // train.batch_size
    )
    sub = steps * train.batch_size
    two = replace(train, epochs=2)
    times: dict[str, list[list[float]]] = {"eager": [], args.compile_mode: []}
    for _ in range(max(args.step_rounds, 1)):
        for name in times:
            marks = [time.perf_counter()]

            def mark(epoch: int, model, marks: list[float] = marks) -> bool:
                marks.append(time.perf_counter())
                return False

            fit_acmr(
                x_train[:sub], y_train[:sub], attributes, arch, two, "cpu", args.seed, progress=False,
                on_epoch_end=mark, compile_mode=None if name == "eager" else name,
            )  # fmt: skip
            times[name].append([(b - a) / steps * 1e3 for a, b in itertools.pairwise(marks)])
    return {
        name: {
            "first_epoch_ms_per_step": float(np.median([t[0] for t in rounds])),
            "steady_ms_per_step": float(np.median([t[1] for t in rounds])),
        }
        for name, rounds in times.items()
    } | {"steps_per_epoch": steps, "rounds": max(args.step_rounds, 1)}


def whole_training(train, arch, data, x_train, y_train, test, args) -> dict:
    """One acmr_core training (ACMR + fast classifier, uncalibrated) timed, with its test U/S/H."""
    x_seen, y_seen, x_unseen, y_unseen = test
    started = time.perf_counter()
    model = fit_acmr(x_train, y_train, data.attributes, arch, train, "cpu", args.seed, progress=True)
    acmr_s = time.perf_counter() - started
    started = time.perf_counter()
    classifier = fit_gzsl_classifier(
        model,
        x_train,
        y_train,
        data.attributes,
        data.unseen_classes,
        seen_samples=train.cls_seen_samples,
        unseen_samples=train.cls_unseen_samples,
        epochs=train.cls_max_epochs,
        device="cpu",
        seed=args.seed,
        **train.classifier_optimizer(),
    )
    with torch.no_grad():
        pred_seen = classifier(model.visual_latent(torch.as_tensor(x_seen))).argmax(1).numpy()
        pred_unseen = classifier(model.visual_latent(torch.as_tensor(x_unseen))).argmax(1).numpy()
    classifier_s = time.perf_counter() - started
    return {
        "precision": train.precision,
        "acmr_seconds": acmr_s,
        "classifier_seconds": classifier_s,
        "total_seconds": acmr_s + classifier_s,
        "classifier_epochs": train.cls_max_epochs,
        **gzsl_scores(y_seen, pred_seen, y_unseen, pred_unseen, data.seen_classes, data.unseen_classes),
    }


def reference_run(arch, train, tensors, epochs: int, with_classifier: bool, args) -> dict:
    """The straight port: ``epochs`` ACMR epochs of the schedule (warm-ups as in ``train``, so fewer epochs
    are the full schedule's first ones), then, with ``with_classifier``, its classifier stage (50 epochs, a
    test pass after each); seconds and the last / best-test-epoch U, S, H."""
    x_train, y_train, attributes, x_seen, y_seen, x_unseen, y_unseen = tensors
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    hidden = {
        "resnet_features": (arch.visual_encoder_hidden, arch.visual_decoder_hidden),
        "attributes": (arch.semantic_encoder_hidden, arch.semantic_decoder_hidden),
    }
    ref = ReferenceModel(arch.feature_dim, arch.attribute_dim, arch.num_classes, hidden)
    hypers = hypers_from_config(replace(train, epochs=epochs))
    started = time.perf_counter()
    train_vae(ref, x_train, y_train, attributes, hypers, progress=lambda e: print(f"reference epoch {e + 1}"))
    result: dict = {"epochs": epochs, "acmr_seconds": time.perf_counter() - started}
    if with_classifier:
        started = time.perf_counter()
        best, history = classifier_stage(
            ref,
            x_train,
            y_train,
            attributes,
            (x_seen, y_seen),
            (x_unseen, y_unseen),
            hypers,
            arch.num_classes,
        )
        result["classifier_seconds"] = time.perf_counter() - started
        result["classifier_epochs"] = len(history)
        last = history[-1]
        result["last_epoch"] = {"S": 100 * last[0], "U": 100 * last[1], "H": 100 * last[2]}
        result["best_test_epoch"] = {"S": 100 * best[0], "U": 100 * best[1], "H": 100 * best[2]}
        result["total_seconds"] = result["acmr_seconds"] + result["classifier_seconds"]
    print(json.dumps(result), flush=True)
    return result


def whole_protocol(data, precision: str, args) -> dict:
    """``acmr train``'s protocol (run_protocol defaults: ACMR epochs chosen on validation), timed end to
    end."""
    started = time.perf_counter()
    metrics = run_protocol(data, [args.seed], device="cpu", precision=precision, progress=True)
    seed = metrics["per_seed"][0]
    return {
        "precision": metrics["precision"],
        "total_seconds": time.perf_counter() - started,
        "acmr_epochs": seed["acmr_epochs"],
        "acmr_epochs_trained_on_validation": seed["selection"]["acmr_epochs_trained"],
        "classifier_epochs": seed["classifier_epochs"],
        "gamma": seed["gamma"],
        "validation_curve": seed["selection"]["validation_curve"],
        **{k: seed[k] for k in ("U", "S", "H", "H_uncalibrated", "zsl_top1")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--dataset", default="CUB")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--reference-epochs",
        type=int,
        default=0,
        help="time only this many of the port's ACMR epochs, before and after acmr train, and estimate its "
        "full schedule from them (for a machine too loaded to run the full port in time); 0: run it in full",
    )
    parser.add_argument(
        "--step-rounds", type=int, default=5, help="rounds of the interleaved per-step timing"
    )
    parser.add_argument(
        "--precisions",
        type=lambda text: [p for p in text.split(",") if p],
        default=["fp32", "bf16"],
        help="acmr_core precisions to time, comma-separated (default fp32,bf16; the port is fp32)",
    )
    parser.add_argument(
        "--protocol-precisions",
        type=lambda text: [p for p in text.split(",") if p],
        default=[],
        help="time the whole acmr train protocol once per precision, comma-separated (default: none)",
    )
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="also time fit_acmr under torch.compile with this mode (e.g. default) against eager",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # The first optimizer built in a process imports torch._dynamo (seconds); pay it before any timing.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    data = load_xlsa17(args.data_root, args.dataset)
    arch, train = make_configs(
        args.dataset,
        feature_dim=data.features.shape[1],
        attribute_dim=data.attributes.shape[1],
        num_classes=data.attributes.shape[0],
    )
    if args.epochs != train.epochs:
        train = scale_epochs(train, args.epochs)
    scaler = FeatureScaler().fit(data.features[data.trainval])
    x_train = scaler.transform(data.features[data.trainval])
    y_train = data.labels[data.trainval]
    x_seen, x_unseen = (scaler.transform(data.features[i]) for i in (data.test_seen, data.test_unseen))
    y_seen, y_unseen = data.labels[data.test_seen], data.labels[data.test_unseen]
    record: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(sys.argv),
        "torch_threads": torch.get_num_threads(),
        "epochs": train.epochs,
        "train_images": int(y_train.size),
    }

    if args.compile_mode:
        record["compile_lever"] = compile_lever(x_train, y_train, data.attributes, arch, train, args)
        print(json.dumps(record["compile_lever"]), flush=True)
    if args.step_rounds:
        record["per_step_ms"] = interleaved_step_timing(x_train, y_train, data.attributes, arch, train, args)
        print(json.dumps(record["per_step_ms"]), flush=True)

    # --- acmr_core: one full training per precision ------------------------------------------------------
    for precision in args.precisions:
        record[f"acmr_core_{precision}"] = whole_training(
            replace(train, precision=precision),
            arch,
            data,
            x_train,
            y_train,
            (x_seen, y_seen, x_unseen, y_unseen),
            args,
        )
        print(json.dumps(record[f"acmr_core_{precision}"]), flush=True)

    def save() -> None:
        if args.out:  # partial results survive an interrupted run
            args.out.write_text(json.dumps(record, indent=2))

    tensors = tuple(torch.as_tensor(a) for a in (x_train, y_train, data.attributes, x_seen, y_seen))
    tensors += (torch.as_tensor(x_unseen), torch.as_tensor(y_unseen))
    sandwich = not args.skip_reference and args.reference_epochs
    if sandwich:  # the port's epochs timed before AND after acmr train, so both sides see the same load drift
        record["reference_port_before"] = reference_run(
            arch, train, tensors, args.reference_epochs, True, args
        )
        save()

    # --- acmr train as a whole (validation stage included), ACMR epochs chosen on validation ---------------
    for precision in args.protocol_precisions:
        record[f"acmr_train_{precision}"] = whole_protocol(data, precision, args)
        print(json.dumps(record[f"acmr_train_{precision}"]), flush=True)
        save()

    # --- straight port of the reference --------------------------------------------------------------------
    if sandwich:
        after = reference_run(arch, train, tensors, args.reference_epochs, False, args)
        record["reference_port_after"] = after
        before = record["reference_port_before"]
        per_epoch = (before["acmr_seconds"] + after["acmr_seconds"]) / (2 * args.reference_epochs)
        record["reference_port"] = {
            "estimated": True,
            "how": f"mean seconds per ACMR epoch over 2 x {args.reference_epochs} measured epochs x "
            f"{train.epochs} epochs (every epoch runs the same ceil(images / batch) steps) + the measured "
            "classifier stage",
            "acmr_seconds_per_epoch": per_epoch,
            "acmr_seconds": per_epoch * train.epochs,
            "classifier_seconds": before["classifier_seconds"],
            "total_seconds": per_epoch * train.epochs + before["classifier_seconds"],
        }
    elif not args.skip_reference:
        record["reference_port"] = reference_run(arch, train, tensors, train.epochs, True, args)
    if "reference_port" in record:
        port = record["reference_port"]
        for precision in args.precisions:
            ours = record[f"acmr_core_{precision}"]
            record[f"speedup_{precision}"] = {
                "total": port["total_seconds"] / ours["total_seconds"],
                "acmr": port["acmr_seconds"] / ours["acmr_seconds"],
                "classifier": port["classifier_seconds"] / ours["classifier_seconds"],
            }
        for precision in args.protocol_precisions:
            ours = record[f"acmr_train_{precision}"]
            record[f"speedup_acmr_train_{precision}"] = {
                "total": port["total_seconds"] / ours["total_seconds"]
            }
            if "last_epoch" in port:
                record[f"speedup_acmr_train_{precision}"]["H_minus_port_last_epoch_H"] = (
                    ours["H"] - port["last_epoch"]["H"]
                )
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
