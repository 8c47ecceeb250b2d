"""'Outside my world' for images with no object in them (issue 34): the content checks of every bundle."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from acmr_core.bundle.content import content_distance, content_distances
from acmr_core.bundle.familiarity import fit_familiarity
from acmr_core.data.demo_world import default_world
from acmr_core.errors import BundleError
from acmr_core.serving.results import Prediction, RankedClass

#: A render seed no bundle, benchmark or test elsewhere uses.
RENDER_SEED = 4321


def _renders(per_class: int = 1) -> list[Image.Image]:
    return [image for image, _, _ in default_world().renders(RENDER_SEED, per_class)]


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (224, 224), (1999, 640)])
@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (200, 30, 30), (90, 140, 200)])
def test_a_flat_image_of_any_colour_and_size_shows_nothing(size: tuple[int, int], colour: tuple) -> None:
    assert content_distance(Image.new("RGB", size, colour)) > 1


def test_a_faint_gradient_or_faint_noise_over_a_flat_colour_shows_nothing() -> None:
    rng = np.random.default_rng(0)
    ramp = np.linspace(-10, 10, 300)[None, :, None] + np.array([120.0, 160.0, 80.0])
    gradient = Image.fromarray(np.broadcast_to(ramp, (200, 300, 3)).astype(np.uint8))
    faint = Image.fromarray(
        (np.full((256, 256, 3), 128.0) + rng.normal(0, 3, (256, 256, 3))).astype(np.uint8)
    )
    assert content_distance(gradient) > 1 and content_distance(faint) > 1


def test_noise_and_tiny_crops_show_nothing() -> None:
    rng = np.random.default_rng(1)
    for side in (40, 224, 900):
        assert content_distance(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))) > 1
    render = _renders()[0]
    for side in (1, 5, 20):
        assert content_distance(render.crop((50, 50, 50 + side, 50 + side))) > 1


def test_fresh_renders_and_a_drawn_object_show_something() -> None:
    renders = _renders()
    assert len(renders) == len(default_world().classes)
    assert float(content_distances(renders).max()) < 1
    drawn = Image.new("RGB", (640, 480), (250, 250, 250))
    ImageDraw.Draw(drawn).ellipse((200, 150, 330, 280), fill=(20, 90, 200))  # one small object on a page
    assert content_distance(drawn) < 1


def test_every_bundle_flags_an_empty_image_even_without_pixel_statistics() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(60, 16)).astype(np.float32)
    familiarity = fit_familiarity(features, seed=0)  # features only: what a bootstrapped bundle has
    assert not familiarity.uses_pixels
    typical = features[:2]  # training-like features: only the content checks can tell these images apart
    (_, render_flag), (_, flat_flag) = familiarity.assess(
        typical, [_renders()[0], Image.new("RGB", (64, 64))]
    )
    assert not render_flag and flat_flag
    assert [flag for _, flag in familiarity.assess(typical)] == [False, False]  # no images: features only
    with pytest.raises(BundleError, match="1 images for 2 feature vectors"):
        familiarity.assess(typical, [Image.new("RGB", (64, 64))])


# ---- the Predict panel's wording for an image outside the world -------------------------------------------


def _prediction(unfamiliar: bool) -> Prediction:
    values = {"shape: square": 1.0, "colour: blue": 1.0}
    return Prediction(
        ranked=[RankedClass("large blue dotted <b>square</b>", "unseen", 0.97)],
        decoded=values, predicted_attributes=values, agreement=1.0, xy=(0.0, 0.0), gamma=0.0,
        familiarity=0.02 if unfamiliar else 0.9, unfamiliar=unfamiliar,
    )  # fmt: skip


def test_the_panel_leads_with_the_warning_and_gives_the_guess_for_what_it_is_worth() -> None:
    from app.predict_panel import outside_markdown, sees_markdown

    headline = outside_markdown(_prediction(True))
    assert "Outside this model's world" in headline and "familiarity 0.02" in headline
    assert "square" not in headline  # no class name in the headline
    summary = sees_markdown(_prediction(True))
    assert summary.startswith("*Best guess, for what it is worth:* large blue dotted &lt;b&gt;square")
    assert "mean little" in summary and "agree" not in summary
    plain = sees_markdown(_prediction(False))
    assert plain.startswith("**Prediction:**") and "agree" in plain and "Outside" not in plain


# ---- the issue's own examples, through the shipped bundle and `acmr predict --json` ------------------------


def test_blank_canvases_and_a_pixel_are_outside_the_demo_world_and_a_render_is_not(
    tmp_path, capsys: pytest.CaptureFixture[str], one_torch_thread: None
) -> None:
    import json

    from acmr_core.bundle.format import default_bundle_path
    from acmr_core.cli import main

    images = {
        "white.png": Image.new("RGB", (224, 224), (255, 255, 255)),
        "dark.png": Image.new("RGB", (3000, 2000), (20, 20, 24)),
        "pixel.png": Image.new("RGB", (1, 1), (255, 0, 0)),
        "render.png": default_world().render(0, seed=RENDER_SEED, index=1),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
    code = main(["predict", "--bundle", str(default_bundle_path()), "--json", "--top-k", "1",
                 *(str(tmp_path / name) for name in images)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    flags = {record["image"].rsplit("/", 1)[-1]: record["unfamiliar"] for record in json.loads(out)}
    assert flags == {"white.png": True, "dark.png": True, "pixel.png": True, "render.png": False}
