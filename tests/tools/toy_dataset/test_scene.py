import math

import numpy as np
import pytest

from tools.toy_dataset.sampling import item_rng, photo_scene
from tools.toy_dataset.scene import (
    SHAPE_KINDS,
    Shape,
    polygon_area,
    polygon_mask,
    sample_scene,
    shape_polygon,
    star_parts,
)

SCENES = [photo_scene(0, "scene tests", item, 96) for item in range(150)]


def test_shapes_lie_inside_the_picture_and_never_touch():
    for scene in SCENES:
        masks = [polygon_mask(s.polygon, scene.height, scene.width) for s in scene.shapes]
        assert 2 <= len(masks) <= 4
        assert (np.sum(masks, axis=0) <= 1).all()
        for shape in scene.shapes:
            x, y = shape.polygon[:, 0], shape.polygon[:, 1]
            assert x.min() >= 0 and y.min() >= 0
            assert x.max() < scene.width and y.max() < scene.height


def test_kind_and_colour_pairs_are_unique_in_a_scene():
    for scene in SCENES:
        assert len({shape.name for shape in scene.shapes}) == len(scene.shapes)


def test_all_kinds_occur_in_square_and_landscape_pictures():
    assert {shape.kind for scene in SCENES for shape in scene.shapes} == set(SHAPE_KINDS)
    assert {(scene.width, scene.height) for scene in SCENES} == {(96, 96), (96, 72)}


def test_faded_shapes_stay_clear_of_the_solid_ones():
    rng = item_rng(0, "faded", 0)
    for _ in range(50):
        scene = sample_scene(rng, 96, 96, faded_count=1)
        solid = np.sum([polygon_mask(s.polygon, 96, 96) for s in scene.shapes], axis=0)
        for faded in scene.faded_shapes:
            assert not (polygon_mask(faded.polygon, 96, 96) & (solid > 0)).any()
            assert faded.name not in {shape.name for shape in scene.shapes}


def test_required_kinds_are_always_present():
    for item in range(30):
        scene = photo_scene(0, "stars", item, 64, required_kinds=("star",))
        assert "star" in [shape.kind for shape in scene.shapes]


def test_circle_polygon_is_close_to_the_disc():
    polygon = shape_polygon("circle", (50.0, 50.0), 30.0, tilt=0.0, upright=False)
    ys, xs = np.mgrid[0:100, 0:100]
    disc = (xs - 50) ** 2 + (ys - 50) ** 2 <= 30**2
    mask = polygon_mask(polygon, 100, 100)
    assert (mask & disc).sum() / (mask | disc).sum() > 0.95  # pixel truncation costs a little


@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_polygons_have_the_corners_and_size_of_their_kind(kind):
    polygon = shape_polygon(kind, (50.0, 50.0), 30.0, tilt=0.1, upright=True)
    distances = np.hypot(polygon[:, 0] - 50, polygon[:, 1] - 50)
    assert distances.max() == pytest.approx(30.0, abs=0.02)  # inscribed in the circle
    expected_vertices = {"circle": 48, "star": 10}.get(
        kind, Shape(kind, "red", (0, 0), 1, polygon).corners
    )
    assert len(polygon) == expected_vertices


def test_rectangles_are_twice_as_long_as_wide():
    polygon = shape_polygon("rectangle", (50.0, 50.0), 30.0, tilt=0.0, upright=True)
    width, height = np.ptp(polygon, axis=0)
    assert height == pytest.approx(2 * width, rel=0.01)


def test_star_parts_cover_the_star_exactly():
    polygon = shape_polygon("star", (40.0, 40.0), 30.0, tilt=0.05, upright=False)
    star = Shape("star", "red", (40.0, 40.0), 30.0, polygon)
    tips, center = star_parts(star)
    assert len(tips) == 5 and center.shape == (5, 2)
    total = sum(polygon_area(tip) for tip in tips) + polygon_area(center)
    assert total == pytest.approx(star.area, rel=1e-6)
    assert star.area == pytest.approx(0.5 * 10 * 30 * 30 * 0.45 * math.sin(math.pi / 5), rel=1e-3)
