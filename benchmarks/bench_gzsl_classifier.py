"""GZSL classifier stage: the reference's (batch 32, 49 epochs, a test pass every epoch) vs acmr_core's.

Both classifiers are trained on the SAME sampled latents (200 per seen class from images, 390 per unseen class
from attributes) of the same ACMR model and scored on the same test latents, in one run:

* reference: :func:`benchmarks.reference_port.fit_reference_classifier` — reports its last epoch and its best
  test epoch (the reference's test-set selection, shown for comparison only);
* acmr_core: :func:`acmr_core.model.gzsl.train_classifier` (on-device batches of 256, Adam 3e-3) for the given
  number of epochs (default: the validation-selected count of the saved model, else 20), scored once,
  uncalibrated and with the model's validation-selected gamma.

Usage::

    python benchmarks/bench_gzsl_classifier.py --data-root /tmp/acmr_cub --model RUN/models/seed_0
    python benchmarks/bench_gzsl_classifier.py --data-root /tmp/acmr_cub --acmr-epochs 10   # trains a model

Prints and (``--out``) writes a JSON record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_port import fit_reference_classifier, hypers_from_config

from acmr_core.data.xlsa17 import FeatureScaler, load_xlsa17
from acmr_core.model.config import make_configs
from acmr_core.model.gzsl import predict_scores, sample_classifier_data, train_classifier
from acmr_core.model.saved_model import load_trained
from acmr_core.training.fit import fit_acmr, scale_epochs
from acmr_core.training.metrics import gzsl_scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--dataset", default="CUB")
    parser.add_argument("--model", type=Path, help="a saved model (acmr train --out .../models/seed_k)")
    parser.add_argument(
        "--acmr-epochs", type=int, default=10, help="epochs of a fresh ACMR when --model is absent"
    )
    parser.add_argument("--epochs", type=int, default=None, help="acmr_core classifier epochs")
    parser.add_argument("--reference-epochs", type=int, default=49)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # The first optimizer built in a process imports torch._dynamo (seconds); pay it before any timing.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    data = load_xlsa17(args.data_root, args.dataset)
    device = torch.device("cpu")
    gamma, epochs = 0.0, args.epochs or 20
    if args.model:
        trained = load_trained(args.model, device)
        model, scaler, train = trained.model, trained.scaler, trained.train
        gamma = trained.gamma
        epochs = args.epochs or trained.classifier_epochs
    else:
        arch, train = make_configs(
            args.dataset,
            feature_dim=data.features.shape[1],
            attribute_dim=data.attributes.shape[1],
            num_classes=data.attributes.shape[0],
        )
        scaler = FeatureScaler().fit(data.features[data.trainval])
        model = fit_acmr(
            scaler.transform(data.features[data.trainval]),
            data.labels[data.trainval],
            data.attributes,
            arch,
            scale_epochs(train, args.acmr_epochs),
            device,
            args.seed,
        )
    x_train = torch.as_tensor(scaler.transform(data.features[data.trainval]))
    y_train = torch.as_tensor(data.labels[data.trainval])
    attributes = torch.as_tensor(data.attributes)
    unseen = data.unseen_classes
    started = time.perf_counter()
    z, y = sample_classifier_data(
        model,
        x_train,
        y_train,
        attributes,
        unseen,
        seen_samples=train.cls_seen_samples,
        unseen_samples=train.cls_unseen_samples,
        seed=args.seed,
    )
    sampling_s = time.perf_counter() - started
    with torch.no_grad():
        z_seen = model.visual_latent(torch.as_tensor(scaler.transform(data.features[data.test_seen])))
        z_unseen = model.visual_latent(torch.as_tensor(scaler.transform(data.features[data.test_unseen])))
    y_seen = torch.as_tensor(data.labels[data.test_seen])
    y_unseen = torch.as_tensor(data.labels[data.test_unseen])
    n_classes = data.attributes.shape[0]

    hypers = {**hypers_from_config(train), "cls_epochs": args.reference_epochs}
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    best, history = fit_reference_classifier(z, y, (z_seen, y_seen), (z_unseen, y_unseen), hypers, n_classes)
    reference_s = time.perf_counter() - started

    started = time.perf_counter()
    classifier = train_classifier(
        z,
        y,
        n_classes,
        epochs=epochs,
        seed=args.seed,
        **train.classifier_optimizer(),
    )
    with torch.no_grad():
        logits_seen, logits_unseen = classifier(z_seen), classifier(z_unseen)
    ours_s = time.perf_counter() - started
    seen_mask = torch.zeros(n_classes)
    seen_mask[torch.as_tensor(data.seen_classes)] = 1.0

    def score(g: float) -> dict[str, float]:
        return gzsl_scores(
            y_seen,
            predict_scores(logits_seen, seen_mask, g).argmax(1),
            y_unseen,
            predict_scores(logits_unseen, seen_mask, g).argmax(1),
            data.seen_classes,
            unseen,
        )

    last = history[-1]
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(sys.argv),
        "torch_threads": torch.get_num_threads(),
        "latent_samples": int(z.shape[0]),
        "sampling_seconds": sampling_s,
        "reference": {
            "seconds": reference_s,
            "epochs": args.reference_epochs,
            "last_epoch": {"S": 100 * last[0], "U": 100 * last[1], "H": 100 * last[2]},
            "best_test_epoch": {"S": 100 * best[0], "U": 100 * best[1], "H": 100 * best[2]},
        },
        "acmr_core": {
            "seconds": ours_s,
            "epochs": epochs,
            "uncalibrated": score(0.0),
            "gamma": gamma,
            "calibrated": score(gamma),
        },
        "speedup": reference_s / ours_s,
    }
    record["H_difference_vs_reference_last_epoch"] = record["acmr_core"]["uncalibrated"]["H"] - 100 * last[2]
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
