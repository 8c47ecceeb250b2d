"""What the model sees vs. the class: does each attribute group's reading agree, on the gallery examples?

    .venv/bin/python benchmarks/sees_agreement.py [--bundle checkpoints/demo-world]
        [--examples assets/examples] [--json]

Each gallery example (the first image per class of ``--examples``/index.json, as the app shows them) is
predicted with the app's service (the bundle's γ, all classes competing). Reports how many are right at
top-1, and how many have every attribute group's reading (the group's strongest decoded value, the Predict
tab's "what the model sees" table) agree with the TRUE class's attributes and with the PREDICTED class's;
per group, how often the reading agrees with the true class; and how many are flagged as unlike the world.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def measure(bundle: Path, examples: Path) -> dict[str, Any]:
    from acmr_core.serving.readings import all_agree, group_readings, prediction_readings
    from acmr_core.serving.service import StudioService
    from app.examples import example_entries

    entries = [entry for entry in example_entries(examples) if entry["class"]]
    per_group: dict[str, int] = {}
    right = agree_true = agree_predicted = unfamiliar = 0
    with tempfile.TemporaryDirectory() as folder:
        service = StudioService.open(bundle, device="cpu", user_classes_dir=folder, warm=False)
        try:
            for entry in entries:
                prediction = service.predict(entry["path"], top_k=1)
                right += prediction.ranked[0].name == entry["class"]
                unfamiliar += prediction.unfamiliar  # the gallery is the model's world: should not be flagged
                truth = group_readings(prediction.decoded, service.class_values(entry["class"]))
                agree_true += all_agree(truth)
                agree_predicted += all_agree(prediction_readings(prediction))
                # Ungrouped rows are whichever attributes read strongest: no stable key to count by.
                for reading in (reading for reading in truth if reading.group):
                    per_group[reading.group] = per_group.get(reading.group, 0) + reading.agree
                log.info("%s -> %s", entry["class"], prediction.ranked[0].name)
        finally:
            service.store.close()
    return {
        "bundle": bundle.name,
        "examples": len(entries),
        "top1_right": right,
        "all_groups_agree_with_true_class": agree_true,
        "all_groups_agree_with_predicted_class": agree_predicted,
        "flagged_unfamiliar": unfamiliar,
        "per_group_agree_with_true_class": per_group,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("checkpoints/demo-world"))
    parser.add_argument("--examples", type=Path, default=Path("assets/examples"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.bundle, args.examples)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    total = result["examples"]
    for key, value in result.items():
        if key == "per_group_agree_with_true_class":
            for group, count in value.items():
                print(f"  {group:38s} {count} / {total}")
        elif key in ("bundle", "examples"):
            print(f"{key:40s} {value}")
        else:
            print(f"{key:40s} {value} / {total}")


if __name__ == "__main__":
    main()
