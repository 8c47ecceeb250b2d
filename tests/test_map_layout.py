"""The latent map's layout (issue 35): photo clouds round their class, classes apart, labels apart."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from acmr_core.viz.map_layout import (
    BOX_HEIGHT,
    BOX_WIDTH,
    cached_layout,
    label_box,
    layout_map,
    place_labels,
)


def _collapsed_world(n_classes: int = 48, per_class: int = 5, seed: int = 0):
    """What UMAP makes of a well-aligned model: each class's photos on one spot under its description, some
    classes almost on top of each other."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 25, size=(n_classes, 2))
    centres[1] = centres[0] + 0.05  # two classes nearly coincident
    image_class = np.repeat(np.arange(n_classes), per_class)
    image_xy = centres[image_class] + rng.normal(scale=0.05, size=(len(image_class), 2))
    class_xy = centres + rng.normal(scale=0.05, size=centres.shape)
    return class_xy, image_xy, image_class


def test_photos_form_a_cloud_round_their_own_description_and_no_two_markers_overlap() -> None:
    class_xy, image_xy, image_class = _collapsed_world()
    layout = layout_map(class_xy, image_xy, image_class)
    photos, size = layout.image_xy, layout.photo_size
    apart = np.linalg.norm(photos[:, None] - photos[None], axis=2) + np.eye(len(photos)) * 1e9
    assert apart.min() >= size  # every photo marker whole (no photo covers another)
    to_descriptions = np.linalg.norm(photos[:, None] - layout.class_xy[None], axis=2)
    # A photo is nearer its own class's description than any other's: who goes with whom reads by eye.
    assert (to_descriptions.argmin(axis=1) == image_class).all()
    assert to_descriptions.min() >= (size + layout.description_size) / 2  # no photo under a description
    # Every marker lies inside the box the map is drawn in.
    everything = np.vstack([photos, layout.class_xy])
    assert (everything >= 0).all() and (everything[:, 0] <= BOX_WIDTH).all()
    assert (everything[:, 1] <= BOX_HEIGHT).all()


def test_the_order_round_a_cloud_follows_each_photo_direction_and_a_stray_photo_stays_out() -> None:
    class_xy = np.array([[0.0, 0.0], [10.0, 10.0]])
    image_xy = np.array([[0.01, 0.0], [0.0, 0.01], [-0.01, 0.0], [0.0, -0.01], [10.0, 10.0], [10.0, 10.01]])
    image_class = np.array([0, 0, 0, 0, 1, 1])
    layout = layout_map(class_xy, image_xy, image_class)
    offsets = layout.image_xy[:4] - layout.cloud_centre[0]
    angles = np.arctan2(offsets[:, 1], offsets[:, 0])
    # Right, up, left, down keep their turn round the cloud.
    assert np.all(np.diff(np.unwrap(angles[np.argsort(np.arctan2([0, 1, 0, -1], [1, 0, -1, 0]))])) > 0)
    # A photo of class 0 that landed among class 1's photos is drawn there, not in class 0's cloud.
    stray_xy = np.vstack([image_xy, [[10.0, 9.99]]])
    stray = layout_map(class_xy, stray_xy, np.append(image_class, 0))
    home = np.linalg.norm(stray.image_xy[-1] - stray.cloud_centre[0])
    away = np.linalg.norm(stray.image_xy[-1] - stray.cloud_centre[1])
    assert away < home


def test_other_points_move_with_their_nearest_class_and_the_layout_is_reused() -> None:
    class_xy, image_xy, image_class = _collapsed_world(n_classes=12)
    layout = layout_map(class_xy, image_xy, image_class)
    for index in (0, 5, 11):  # a point at a class's description is drawn at (or in the hole of) its cloud
        drawn = np.asarray(layout.place(tuple(class_xy[index])))
        assert np.linalg.norm(drawn - layout.class_xy[index]) <= layout.cloud_radius[index]
    again = layout_map(class_xy, image_xy, image_class)
    assert np.array_equal(layout.image_xy, again.image_xy)  # deterministic
    assert cached_layout(class_xy, image_xy, image_class) is cached_layout(class_xy, image_xy, image_class)


def test_labels_never_overlap_each_other_even_when_their_points_coincide() -> None:
    points = [(150.0, 220.0)] * 6 + [(152.0, 225.0)] * 4
    items = [(f"user class number {i}", point, 8.0) for i, point in enumerate(points)]
    placed = place_labels(items, obstacles=np.array([[150.0, 220.0, 8.0]]))
    boxes = []
    for label in placed:
        width, height = label_box(label.text, 11.0)
        x, y = label.centre
        boxes.append((x - width / 2, y - height / 2, x + width / 2, y + height / 2))
        assert boxes[-1][0] >= 0 and boxes[-1][2] <= BOX_WIDTH and boxes[-1][1] >= 0
    for a, b in itertools.combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert placed[0].leader is False  # the first label sits beside its point
    assert any(label.leader for label in placed)  # the others further out, joined by a line


@pytest.mark.parametrize("n_photos", [0, 1, 3000])
def test_any_number_of_photos_lays_out(n_photos: int) -> None:
    rng = np.random.default_rng(n_photos)
    class_xy = rng.normal(size=(20, 2))
    image_class = rng.integers(0, 20, size=n_photos)
    layout = layout_map(class_xy, rng.normal(size=(n_photos, 2)), image_class)
    assert layout.image_xy.shape == (n_photos, 2) and np.isfinite(layout.class_xy).all()
    assert 4 <= layout.photo_size <= 7  # smaller photos when there are thousands


def test_long_labels_at_the_edge_slide_inside_and_stay_apart() -> None:
    text = "given: three small blue dotted squa…"
    items = [
        ("your image", (5.0, 100.0), 8.0),
        (text, (6.0, 98.0), 8.0),
        (text + " 2", (BOX_WIDTH - 3, 5.0), 6.0),
    ]
    placed = place_labels(items, obstacles=np.zeros((0, 3)), y_scale=0.8)
    boxes = []
    for label in placed:
        width, height = label_box(label.text, 11.0)
        height /= 0.8
        x, y = label.centre
        box = (x - width / 2, y - height / 2, x + width / 2, y + height / 2)
        assert box[0] >= 0 and box[2] <= BOX_WIDTH and box[1] >= 0 and box[3] <= BOX_HEIGHT
        assert all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes)
        boxes.append(box)
