"""The fast classifier update for user classes (issue 24): ``Bundle.fast_classifier``, shipped demo bundle.

An extra class gets one row fitted against the bundle's trained rows; the bundle's rows stay as trained, a
delete drops the row, and the result depends only on the class set (not on the order of edits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from acmr_core.bundle.bundle import Bundle
from acmr_core.bundle.format import load_bundle
from acmr_core.errors import BundleError
from acmr_core.model.gzsl import GZSLClassifier, fit_extra_row, logit_offset

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "demo-world"


@pytest.fixture(scope="module")
def bundle(one_torch_thread: None) -> Bundle:
    if not (DEMO / "manifest.json").is_file():
        pytest.skip("the shipped demo bundle is absent")
    return load_bundle(DEMO, device="cpu")


def combination(bundle: Bundle, **values: str) -> np.ndarray:
    """An attribute row with one value on per group (e.g. colour="red"), on the catalog's scale (0/1)."""
    names = list(bundle.catalog.attribute_names)
    row = np.zeros(len(names), np.float32)
    for group, value in values.items():
        row[names.index(f"{group}: {value}")] = 1.0
    return row


@pytest.fixture(scope="module")
def new_classes(bundle: Bundle) -> np.ndarray:
    """Two combinations that are no class of the bundle."""
    known = {tuple(row) for row in np.asarray(bundle.catalog.attribute_matrix).tolist()}
    rows = [
        combination(bundle, colour="purple", pattern="striped", shape="triangle", size="small",
                    count="three", background="light"),
        combination(bundle, colour="green", pattern="dotted", shape="circle", size="large",
                    count="one", background="dark"),
    ]  # fmt: skip
    assert not any(tuple(row.tolist()) in known for row in rows)
    return np.stack(rows)


def with_extra(bundle: Bundle, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    catalog = bundle.catalog
    attributes = np.concatenate([np.asarray(catalog.attribute_matrix, np.float32), extra.reshape(-1, 17)])
    return attributes, np.concatenate([catalog.seen_mask, np.zeros(len(extra), bool)])


def predictions(bundle: Bundle, classifier: GZSLClassifier, latents: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return bundle.trained.scores_of_latents(latents, classifier=classifier).argmax(1).numpy()


def own_latents(bundle: Bundle, row: np.ndarray, seed: int = 123, count: int = 200) -> torch.Tensor:
    """Fresh noisy latents of a class from its attributes (another seed than the fit's)."""
    with torch.inference_mode():
        mu, logvar = bundle.model.encode_semantic(torch.from_numpy(row[None]))
        generator = torch.Generator().manual_seed(seed)
        return bundle.model.reparameterize(
            mu.expand(count, -1), logvar.expand(count, -1), generator=generator
        )


def test_bundle_rows_are_kept_and_one_row_is_added(bundle: Bundle, new_classes: np.ndarray) -> None:
    classifier = bundle.fast_classifier(*with_extra(bundle, new_classes[:1]))
    n = bundle.catalog.num_classes
    assert classifier.num_classes == n + 1
    assert torch.equal(classifier.fc.weight[:n], bundle.classifier.fc.weight)
    assert torch.equal(classifier.fc.bias[:n], bundle.classifier.fc.bias)
    state = classifier.state_dict()
    assert set(state) == {"fc.weight", "fc.bias"}
    assert state["fc.weight"].shape == (n + 1, bundle.model.cfg.latent_dim) and state["fc.bias"].shape == (
        n + 1,
    )
    reloaded = GZSLClassifier(bundle.model.cfg.latent_dim, n + 1)
    reloaded.load_state_dict(state)
    latents = own_latents(bundle, new_classes[0])
    with torch.inference_mode():
        assert torch.equal(reloaded.eval()(latents), classifier(latents))


def test_added_class_takes_the_top1_on_its_own_latents(bundle: Bundle, new_classes: np.ndarray) -> None:
    classifier = bundle.fast_classifier(*with_extra(bundle, new_classes))
    n = bundle.catalog.num_classes
    for index, row in enumerate(new_classes):
        share = np.mean(predictions(bundle, classifier, own_latents(bundle, row)) == n + index)
        assert share >= 0.9, f"new class {index} took only {share:.0%} of its own latents"


def test_bundle_classes_are_still_predicted_as_before(bundle: Bundle, new_classes: np.ndarray) -> None:
    """On the bundle's own image latents (the plot's renders), a prediction changes only to a new class, and
    no more often than with a full re-fit (a new class one attribute from a bundle class takes some of its
    renders either way: the demo backbone barely sees shape)."""
    latents = torch.from_numpy(np.asarray(bundle.latent.visual, np.float32))
    before = predictions(bundle, bundle.classifier, latents)
    after = predictions(bundle, bundle.fast_classifier(*with_extra(bundle, new_classes)), latents)
    full = predictions(bundle, bundle.refit_classifier(*with_extra(bundle, new_classes)), latents)
    changed = before != after
    assert np.all(after[changed] >= bundle.catalog.num_classes)  # never one bundle class for another
    assert np.mean(after == before) >= np.mean(full == before) - 0.02
    assert np.mean(after == before) >= 0.8


def test_delete_drops_the_row_and_restores_the_predictions(bundle: Bundle, new_classes: np.ndarray) -> None:
    both = bundle.fast_classifier(*with_extra(bundle, new_classes))
    first_only = bundle.fast_classifier(*with_extra(bundle, new_classes[:1]))
    second_only = bundle.fast_classifier(*with_extra(bundle, new_classes[1:]))
    n = bundle.catalog.num_classes
    # Deleting the second leaves exactly the classifier of the first alone; deleting the first, the second's.
    assert torch.equal(both.fc.weight[: n + 1], first_only.fc.weight)
    assert torch.equal(both.fc.weight[[*range(n), n + 1]], second_only.fc.weight)
    assert torch.equal(both.fc.bias[[*range(n), n + 1]], second_only.fc.bias)
    # Deleting every user class gives the bundle's own classifier back.
    assert bundle.fast_classifier(*with_extra(bundle, new_classes[:0])) is bundle.classifier
    latents = torch.from_numpy(np.asarray(bundle.latent.visual, np.float32))
    np.testing.assert_array_equal(
        predictions(bundle, bundle.fast_classifier(*with_extra(bundle, new_classes[:0])), latents),
        predictions(bundle, bundle.classifier, latents),
    )


def test_same_class_set_gives_identical_weights_in_a_fresh_bundle(
    bundle: Bundle, new_classes: np.ndarray
) -> None:
    """Deterministic: a restart (fresh load, nothing cached) rebuilds bit-identical rows, in any order."""
    original = bundle.fast_classifier(*with_extra(bundle, new_classes))
    fresh = load_bundle(DEMO, device="cpu")
    reversed_order = fresh.fast_classifier(*with_extra(fresh, new_classes[::-1]))
    n = bundle.catalog.num_classes
    assert torch.equal(reversed_order.fc.weight[[*range(n), n + 1, n]], original.fc.weight)
    assert torch.equal(reversed_order.fc.bias[[*range(n), n + 1, n]], original.fc.bias)


def test_extra_row_is_the_softmax_row_against_fixed_rows(bundle: Bundle) -> None:
    """fit_extra_row minimises the extended softmax's cross-entropy over the new row: its loss is lower
    than at the start (zero row) and than with the row scaled down; scaling it up gains next to nothing."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(300, bundle.model.cfg.latent_dim, generator=generator)
    z[:50] += 3.0  # the new class's latents, shifted
    offset = logit_offset(bundle.classifier, z)
    target = torch.zeros(300)
    target[:50] = 1
    weight, bias = fit_extra_row(z, offset, target, steps=500)
    with torch.no_grad():
        fixed = bundle.classifier(z)
    extended = torch.cat((fixed, (z @ weight + bias)[:, None]), 1)
    labels = torch.where(target > 0, bundle.classifier.num_classes, fixed.argmax(1))

    def loss(scale: float) -> float:
        logits = torch.cat((extended[:, :-1], scale * extended[:, -1:]), 1)
        return float(torch.nn.functional.cross_entropy(logits, labels))

    assert loss(1.0) < min(loss(0.0), loss(0.8))
    # Where the shifted latents are (nearly) separable from the rest, scaling the row up keeps lowering the
    # loss a little (logistic regression then has no finite optimum): the fit must be at the flat end.
    assert loss(1.25) > loss(1.0) - 1e-3


def test_bad_class_sets_are_refused(bundle: Bundle, new_classes: np.ndarray) -> None:
    attributes, mask = with_extra(bundle, new_classes)
    with pytest.raises(BundleError, match="seen classes"):
        bundle.fast_classifier(attributes, np.ones_like(mask))
    with pytest.raises(BundleError, match="seen mask has shape"):
        bundle.fast_classifier(attributes, mask[:-1])
    with pytest.raises(BundleError, match="attributes have shape"):
        bundle.fast_classifier(attributes[:, :-1], mask)
