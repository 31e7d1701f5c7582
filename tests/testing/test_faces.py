"""Composed faces have the boxes they claim (checked with the real detector), non-faces have
none, and each problem image has the property its name promises."""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps
from retinaface import detect_faces

from laionface.testing.faces import (
    BOMB_SIZE,
    NON_FACE_NAMES,
    background,
    compose,
    encode_jpeg,
    encode_png,
    fault_images,
    non_face_images,
)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detected_boxes(image: np.ndarray, threshold: float = 0.9) -> list[tuple]:
    return [(f.x, f.y, f.x + f.width, f.y + f.height) for f in detect_faces(image, score_threshold=threshold)]


def best_iou(truth, found) -> float:
    return max((iou(truth, box) for box in found), default=0.0)


# -- compose ------------------------------------------------------------------------------


def test_sources_are_rgb_with_box_inside(face_sources):
    assert {"astronaut", "camera", "grace_hopper"} <= {s.name for s in face_sources}
    for s in face_sources:
        h, w, c = s.image.shape
        x0, y0, x1, y1 = s.face_box
        assert (c, s.image.dtype) == (3, np.uint8)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, s.name


def test_composed_box_inside_canvas_and_scaled(composed_faces):
    from tests.fixtures.faces import COMPOSED_SIZES

    for composed, px in zip(composed_faces, COMPOSED_SIZES):
        h, w = composed.image.shape[:2]
        [(x0, y0, x1, y1)] = composed.boxes
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == pytest.approx(px)


def test_position_places_the_face_and_keeps_the_background(face_sources):
    source = face_sources[0]
    composed = compose(source, 100, canvas=(640, 480), background_name="brick", position=(300, 200))
    x0, y0, x1, y1 = composed.boxes[0]
    assert abs(x0 - 300) <= 0.5 and abs(y0 - 200) <= 0.5
    # Far from the pasted region the background is untouched.
    assert np.array_equal(composed.image[:50, :50], background("brick", (640, 480))[:50, :50])


@pytest.mark.parametrize("where", ["corners", "random"])
def test_box_stays_inside_canvas(face_sources, where):
    source, canvas = face_sources[2], (300, 260)  # grace_hopper: a face box with fractional edges
    face_w, face_h = 101, 101 * 221 / 176
    if where == "corners":
        spots = [dict(position=p) for p in [(0, 0), (300 - face_w, 260 - face_h), (0, 260 - face_h)]]
    else:
        spots = [dict(rng=np.random.default_rng(seed)) for seed in range(10)]
    for spot in spots:
        [(x0, y0, x1, y1)] = compose(source, 101, canvas=canvas, **spot).boxes
        assert 0 <= x0 and 0 <= y0 and x1 <= canvas[0] and y1 <= canvas[1], spot


def test_random_position_is_seeded(face_sources):
    a = compose(face_sources[1], 80, rng=np.random.default_rng(7))
    b = compose(face_sources[1], 80, rng=np.random.default_rng(7))
    assert a.boxes == b.boxes and np.array_equal(a.image, b.image)


def test_face_too_big_for_canvas_is_an_error(face_sources):
    with pytest.raises(ValueError, match="canvas"):
        compose(face_sources[0], 700, canvas=(640, 480))


def test_detector_finds_composed_faces(composed_faces):
    for composed in composed_faces:
        [truth] = composed.boxes
        if truth[2] - truth[0] < 64:
            continue  # below the detector's reliable size; kept in the fixture for size filters
        assert best_iou(truth, detected_boxes(composed.image)) >= 0.5, truth


def test_detector_finds_every_source_at_64px(face_sources):
    for source in face_sources:
        composed = compose(source, 64, background_name="chelsea")
        assert best_iou(composed.boxes[0], detected_boxes(composed.image)) >= 0.5, source.name


# -- non-faces ----------------------------------------------------------------------------


def test_non_face_images_have_no_face():
    images = non_face_images()
    assert set(images) == set(NON_FACE_NAMES)
    for name, image in images.items():
        assert image.ndim == 3 and image.dtype == np.uint8
        assert detected_boxes(image, threshold=0.9) == [], name


@pytest.mark.parametrize("size", [(640, 480), (100, 700), (2000, 200)])
def test_background_has_requested_size(size):
    assert background("coffee", size).shape == (size[1], size[0], 3)


def test_encoders_round_trip():
    image = background("rocket", (64, 48))
    assert Image.open(io.BytesIO(encode_jpeg(image))).size == (64, 48)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(image)))), image)


# -- problem images -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def faults() -> dict[str, bytes]:
    return fault_images()


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_truncated_jpeg_fails_to_load(faults):
    image = opened(faults["truncated.jpg"])
    with pytest.raises(OSError, match="truncated"):
        image.load()


@pytest.mark.parametrize(
    "name, mode, size",
    [
        ("tiny.jpg", "RGB", (8, 8)),
        ("cmyk.jpg", "CMYK", None),
        ("16bit.png", "I;16", None),
        ("rgba.png", "RGBA", None),
        ("huge_area.jpg", "RGB", (4000, 3000)),
    ],
)
def test_mode_and_size(faults, name, mode, size):
    image = opened(faults[name])
    image.load()
    assert image.mode == mode
    if size:
        assert image.size == size


def test_animated_gif_has_three_frames(faults):
    image = opened(faults["animated.gif"])
    assert image.is_animated and image.n_frames == 3


def test_wide_is_ten_to_one(faults):
    w, h = opened(faults["wide.jpg"]).size
    assert w / h == 10


def test_bomb_is_small_and_trips_pillow(faults):
    data = faults["bomb.png"]
    assert len(data) < 200_000
    assert struct.unpack(">II", data[16:24]) == BOMB_SIZE  # IHDR width, height
    assert Image.MAX_IMAGE_PIXELS and BOMB_SIZE[0] * BOMB_SIZE[1] > Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # either one counts
        with pytest.raises((Image.DecompressionBombError, Image.DecompressionBombWarning)):
            opened(data).load()


def test_exif_rotated_is_upright_after_transpose(faults, face_sources):
    grace = next(s for s in face_sources if s.name == "grace_hopper")
    stored = opened(faults["exif_rotated.jpg"])
    assert stored.getexif()[0x0112] == 6
    assert stored.size == (grace.image.shape[0], grace.image.shape[1])  # stored sideways
    upright = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    assert upright.shape == grace.image.shape
    assert best_iou(grace.face_box, detected_boxes(upright)) >= 0.5
