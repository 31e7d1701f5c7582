"""Crop: the similarity fit and the pixel warp put landmarks on the template; crops are square at
the configured size, faces at the border work in both border modes, the box recipe frames the box."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from laionface.errors import ConfigError
from laionface.stages.crop import (
    CROPS_TYPE,
    CropConfig,
    CropStage,
    apply_transform,
    crop_face,
    encode_jpeg,
    face_key,
    similarity_transform,
    template_points,
    warp,
)
from laionface.stages.detect import FACES_TYPE


def _decode(jpg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))


def _inverse(m: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(m[:, :2])
    return np.concatenate([lin, (-lin @ m[:, 2])[:, None]], axis=1)


def _blobs(shape: tuple[int, int], points: np.ndarray, sigma: float) -> np.ndarray:
    """A dark image with one bright Gaussian dot centred on each (continuous) point."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w] + 0.5  # pixel centres in continuous coordinates
    img = np.zeros((h, w), np.float64)
    for x, y in points:
        img = np.maximum(img, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    return np.repeat((img * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)


def _dot_centres(gray: np.ndarray, near: np.ndarray, radius: float) -> np.ndarray:
    """Intensity-weighted centroid (continuous coordinates) of the dot around each expected point."""
    ys, xs = np.mgrid[0 : gray.shape[0], 0 : gray.shape[1]] + 0.5
    out = []
    for x, y in near:
        mask = ((xs - x) ** 2 + (ys - y) ** 2 <= radius**2) & (gray > 20)
        wgt = gray * mask
        out.append([(xs * wgt).sum() / wgt.sum(), (ys * wgt).sum() / wgt.sum()])
    return np.array(out)


def _face(landmarks, box=None, index=0, kept=True) -> dict:
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    if box is None:
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        pad = (hi - lo) * 0.6
        box = [*(lo - pad), *(hi + pad)]
    return {"face_index": index, "box": list(map(float, box)), "landmarks": lm.reshape(-1).tolist(),
            "score": 0.99, "kept": kept, "reject_reason": None if kept else "face_too_small"}


@pytest.mark.parametrize("recipe", ["aligned_farl", "aligned_arcface"])
@pytest.mark.parametrize("angle, zoom, shift", [(17.0, 0.7, (40.0, 25.0)), (-35.0, 2.6, (150.0, 180.0)), (0.0, 1.0, (0.0, 0.0))])
def test_known_similarity_puts_landmarks_on_the_template(recipe, angle, zoom, shift):
    size = 256
    template = template_points(recipe, size)
    # the true crop -> source map: rotate, scale and shift the template into a 1200x1000 image
    t = np.deg2rad(angle)
    true_inv = np.array([[zoom * np.cos(t), -zoom * np.sin(t), shift[0] + 200], [zoom * np.sin(t), zoom * np.cos(t), shift[1] + 150]])
    landmarks = apply_transform(true_inv, template)
    fitted = similarity_transform(landmarks, template)
    np.testing.assert_allclose(fitted, _inverse(true_inv), atol=1e-9)  # exact on exact data

    # the pixels: dots drawn at the landmarks land on the template after the warp
    source = _blobs((1000, 1200), landmarks, sigma=2.5 * zoom)
    crop = crop_face(source, _face(landmarks), CropConfig(recipe=recipe, size=size))
    pixels = _decode(crop["jpg"])
    assert pixels.shape == (size, size, 3)
    found = _dot_centres(pixels[:, :, 0].astype(np.float64), template, radius=7)
    assert np.abs(found - template).max() < 1.5, (found, template)
    np.testing.assert_allclose(np.array(crop["landmarks_crop"]).reshape(5, 2), template, atol=1e-6)
    np.testing.assert_allclose(np.array(crop["transform"]).reshape(2, 3), fitted, atol=1e-9)


def test_least_squares_fit_on_noisy_landmarks_is_close():
    rng = np.random.default_rng(3)
    template = template_points("aligned_farl", 256)
    true_inv = np.array([[1.4, -0.3, 120.0], [0.3, 1.4, 90.0]])
    noisy = apply_transform(true_inv, template) + rng.normal(0, 0.5, (5, 2))
    mapped = apply_transform(similarity_transform(noisy, template), noisy)
    assert np.abs(mapped - template).max() < 1.5


def test_scale_zooms_out_about_the_centre():
    tight, loose = template_points("aligned_farl", 256), template_points("aligned_farl", 256, scale=1.25)
    np.testing.assert_allclose(loose - 128, (tight - 128) / 1.25)


@pytest.mark.parametrize("size", [112, 224, 256, 300])
@pytest.mark.parametrize("recipe", ["aligned_farl", "aligned_arcface", "box"])
def test_every_crop_is_square_at_the_configured_size(size, recipe, composed_faces):
    image = composed_faces[0].image
    # landmarks for a face whose eyes sit at 40% of the box height (rough, but any 5 points will do)
    x0, y0, x1, y1 = composed_faces[0].boxes[0]
    w, h = x1 - x0, y1 - y0
    lm = [x0 + 0.3 * w, y0 + 0.4 * h, x0 + 0.7 * w, y0 + 0.4 * h, x0 + 0.5 * w, y0 + 0.6 * h,
          x0 + 0.35 * w, y0 + 0.8 * h, x0 + 0.65 * w, y0 + 0.8 * h]
    crop = crop_face(image, _face(lm, [x0, y0, x1, y1]), CropConfig(recipe=recipe, size=size))
    assert _decode(crop["jpg"]).shape == (size, size, 3)


@pytest.mark.parametrize("border", ["constant", "reflect"])
def test_faces_at_the_image_border(border):
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (300, 400, 3), dtype=np.uint8)  # no black pixels anywhere
    template = template_points("aligned_farl", 256)
    # a face in the top-left corner: its left eye 10 px from either edge, eyes 60 px apart
    landmarks = (template - template[0]) * (60 / 120) + 10
    for recipe in ("aligned_farl", "box"):
        crop = crop_face(image, _face(landmarks), CropConfig(recipe=recipe, border=border))
        pixels = warp(image, np.array(crop["transform"]).reshape(2, 3), 256, border)
        assert pixels.shape == (256, 256, 3)
        corner = pixels[:20, :20]  # maps to outside the image
        if border == "constant":
            assert corner.max() == 0
        else:
            assert corner.min() >= 50
        assert pixels[200:220, 200:220].min() >= 50  # inside the image: image pixels


def test_box_recipe_is_a_square_around_the_box_centre():
    image = np.full((400, 600, 3), 128, np.uint8)
    box = [200.0, 100.0, 300.0, 240.0]  # 100 x 140: the square side is 140 * expansion
    lm = [230, 150, 270, 150, 250, 175, 235, 200, 265, 200]
    crop = crop_face(image, _face(lm, box), CropConfig(recipe="box", box_expansion=2.0, size=280))
    m = np.array(crop["transform"]).reshape(2, 3)
    np.testing.assert_allclose(m[:, :2], np.eye(2))  # side 280 -> 280 px: no scale, no rotation
    np.testing.assert_allclose(crop["box_crop"], [90, 70, 190, 210])  # centred
    assert _decode(crop["jpg"]).shape == (280, 280, 3)


def test_large_faces_are_area_shrunk_without_aliasing():
    # fine stripes (period 2 px) on a face 10x larger than the crop average to grey, not moire
    stripes = np.zeros((2400, 2400, 3), np.uint8)
    stripes[:, ::2] = 255
    m = np.array([[0.1, 0.0, -8.0], [0.0, 0.1, -8.0]])  # 10x reduction, all inside the image
    out = warp(stripes, m, 200).astype(np.float64)
    assert abs(out.mean() - 127.5) < 3 and out[10:-10, 10:-10].std() < 8


def _table(images: list[bytes | None], faces: list[list[dict] | None], statuses: list[str]) -> pa.Table:
    n = len(images)
    return pa.table({"key": [f"00000_{i}" for i in range(n)], "status": statuses, "error": pa.nulls(n, pa.string()),
                     "image": pa.array(images, pa.binary()), "faces": pa.array(faces, FACES_TYPE)})


def test_stage_crops_kept_faces_of_kept_rows_only_and_is_deterministic():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    jpg = encode_jpeg(image, 90)
    template = template_points("aligned_farl", 256)
    a, b = template * 0.5 + 100, template * 0.4 + 300
    faces = [_face(a, index=0), _face(b, index=1, kept=False), _face(b + 20, index=2)]
    table = _table([jpg, jpg, b"not an image", None], [faces, faces, faces, None], ["kept", "no_face", "kept", "download_failed:http_404"])
    out = CropStage(CropConfig(threads=2))(table)
    assert out["crops"].type == CROPS_TYPE
    crops = out["crops"].to_pylist()
    assert [c["face_index"] for c in crops[0]] == [0, 2]
    assert crops[1] is None and crops[3] is None
    assert out["status"].to_pylist() == ["kept", "no_face", "decode_failed", "download_failed:http_404"]
    assert out["error"][2].as_py().startswith("crop: ")
    again = CropStage(CropConfig())(table)["crops"].to_pylist()
    assert again[0] == crops[0]  # same bytes, transforms and coordinates whatever the thread count
    assert face_key("00000_12", 2) == "00000_12_f2" and "." not in face_key("00000_x_r3", 0)


def test_stage_needs_detect_and_valid_settings():
    with pytest.raises(ConfigError, match="detect"):
        CropStage()(pa.table({"status": ["kept"], "image": pa.array([b""], pa.binary())}))
    with pytest.raises(ConfigError, match="aligned_farl, aligned_arcface, box"):
        CropStage(CropConfig(recipe="ffhq"))
    with pytest.raises(ConfigError, match="reflect"):
        CropStage(CropConfig(border="wrap"))
