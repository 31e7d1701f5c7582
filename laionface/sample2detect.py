"""Read and write the published `sample2detect_{part}.pth` detections, without torch.

Format (LAION-Face, made with batch-face's RetinaFace): a torch-saved dict
int(SAMPLE_ID) -> list of (box [x0,y0,x1,y1], landmarks [[x,y] * 5], score). We write it as
torch's zip serialization does for plain Python containers: `<name>/data.pkl` (pickle
protocol 2), `<name>/byteorder` and `<name>/version`, stored uncompressed, so
`torch.load(path, weights_only=True)` reads it. We read it with a restricted unpickler that
allows no class except numpy's array reconstruction (in case a file holds numpy arrays), and
fall back to `torch.load(weights_only=True)` when torch is installed (files holding tensors).
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import InputError, MissingInputError
from .runfolder import atomic_path
from .stages.detect import DetectConfig, RawFaces, apply_detections, faces_table

_NAME_RE = re.compile(r"sample2detect_(\d+)\.pth$")

# numpy reconstruction globals a pickled ndarray / scalar needs; nothing else is allowed.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol 2 spells an array's raw bytes through it
}


class _DetectionsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return getattr(__import__(module, fromlist=[name]), name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("tensor storage found")


def part_path(directory: str | Path, part: int) -> Path:
    return Path(directory) / f"sample2detect_{part}.pth"


def part_of(path: str | Path) -> int | None:
    m = _NAME_RE.search(Path(path).name)
    return int(m.group(1)) if m else None


def to_dict(faces: pa.Table) -> dict[int, list[tuple[list[float], list[list[float]], float]]]:
    """FACES rows -> {SAMPLE_ID: [(box, [[x, y]] * 5, score), ...]} in face_index order."""
    if faces.num_rows and faces["SAMPLE_ID"].null_count:
        raise InputError("faces without a SAMPLE_ID cannot be exported to sample2detect (keys need it)")
    cols = faces.select(["SAMPLE_ID", "face_index", "box", "landmarks", "score"]).to_pydict()
    order = sorted(range(faces.num_rows), key=lambda i: (cols["SAMPLE_ID"][i], cols["face_index"][i]))
    out: dict[int, list] = {}
    for i in order:
        lm = cols["landmarks"][i]
        out.setdefault(int(cols["SAMPLE_ID"][i]), []).append(
            (list(cols["box"][i]), [[lm[2 * k], lm[2 * k + 1]] for k in range(5)], float(cols["score"][i]))
        )
    return out


def _zip_bytes(obj: object, name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for member, payload in (
            ("data.pkl", pickle.dumps(obj, protocol=2)),
            ("byteorder", b"little"),
            ("version", b"3\n"),
        ):
            info = zipfile.ZipInfo(f"{name}/{member}", date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, payload)
    return buf.getvalue()


def export_part(faces: pa.Table, path: str | Path) -> Path:
    """Write one part's faces as sample2detect.

    `path` is a directory (the file is named `sample2detect_{part}.pth` from the faces' part)
    or a file path. Every detection is written, kept or not, as the published files hold the
    detector's output. Returns the file written.
    """
    path = Path(path)
    if path.suffix != ".pth":
        parts = set(faces["part"].unique().to_pylist()) if faces.num_rows else set()
        if len(parts) != 1:
            raise InputError(f"export_part needs the faces of exactly one part to name the file (got parts {sorted(parts)})")
        path.mkdir(parents=True, exist_ok=True)
        path = part_path(path, parts.pop())
    data = _zip_bytes(to_dict(faces), path.stem)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


def _normalise(obj: object, path: Path) -> dict[int, list[tuple[list[float], list[list[float]], float]]]:
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict SAMPLE_ID -> detections, found {type(obj).__name__}")

    def floats(v) -> list:
        return np.asarray(v.tolist() if hasattr(v, "tolist") else v, dtype=np.float64).tolist()

    out = {}
    for sid, dets in obj.items():
        faces = []
        for det in dets or []:
            try:
                box, landmarks, score = det[0], det[1], det[2]
                box = floats(box)
                lm = np.asarray(floats(landmarks), dtype=np.float64).reshape(5, 2).tolist()
                faces.append((box[:4], lm, float(score)))
            except (TypeError, ValueError, IndexError) as exc:
                raise InputError(f"{path}: SAMPLE_ID {sid}: detection {det!r:.80} is not (box, 5 landmarks, score): {exc}") from None
        out[int(sid)] = faces
    return out


def import_part(path: str | Path) -> dict[int, list[tuple[list[float], list[list[float]], float]]]:
    """Read a sample2detect .pth into {SAMPLE_ID: [(box, [[x, y]] * 5, score), ...]}."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist; pass the folder holding sample2detect_<part>.pth files")
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            return _normalise(_DetectionsUnpickler(io.BytesIO(zf.read(pkl))).load(), path)
    except (zipfile.BadZipFile, StopIteration, pickle.UnpicklingError, EOFError):
        pass
    try:
        import torch  # lazy: ~5 s to import, only for files holding tensors or legacy pickles
    except ImportError:
        raise InputError(
            f"{path}: not a plain torch-saved dict of lists; install the train extra (pip install 'laionface[train]') to read it"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read as sample2detect: {exc}") from None
    return _normalise(obj, path)


def raw_faces(dets: list, image_size: tuple[int, int] | None, min_score: float) -> RawFaces:
    """Published detections of one image -> RawFaces (score >= min_score, by descending score)."""
    dets = [d for d in dets if d[2] >= min_score]
    dets.sort(key=lambda d: -d[2])
    n = len(dets)
    boxes = np.asarray([d[0] for d in dets], np.float32).reshape(n, 4)
    landmarks = np.asarray([d[1] for d in dets], np.float32).reshape(n, 10)
    scores = np.asarray([d[2] for d in dets], np.float32).reshape(n)
    return RawFaces(boxes, landmarks, scores, image_size)


def _image_sizes(samples: pa.Table) -> list[tuple[int, int] | None]:
    for w, h in (("original_width", "original_height"), ("width", "height"), ("WIDTH", "HEIGHT")):
        if w in samples.column_names and h in samples.column_names:
            ws, hs = samples[w].to_pylist(), samples[h].to_pylist()
            return [(int(a), int(b)) if a and b else None for a, b in zip(ws, hs)]
    return [None] * samples.num_rows


def apply_sample2detect(
    d: dict[int, list], samples: pa.Table, config: DetectConfig | None = None, missing: str = "no_face"
) -> pa.Table:
    """Fill detect's columns and statuses of `samples` from published detections.

    Rows still `kept` are looked up by SAMPLE_ID. A SAMPLE_ID absent from `d` is treated as an
    image with no face (`missing="no_face"`) or left untouched (`missing="skip"`). The area
    fraction rule uses original_width/height (else width/height, else WIDTH/HEIGHT) when known.
    """
    config = config or DetectConfig()
    if missing not in ("no_face", "skip"):
        raise ValueError(f"missing must be 'no_face' or 'skip', not {missing!r}")
    status = samples["status"].to_pylist()
    ids = samples["SAMPLE_ID"].to_pylist()
    sizes = _image_sizes(samples)
    detections: dict[int, RawFaces] = {}
    for row, (s, sid) in enumerate(zip(status, ids)):
        if s != "kept" or sid is None:
            continue
        if sid not in d and missing == "skip":
            continue
        detections[row] = raw_faces(list(d.get(sid, [])), sizes[row], config.min_score)
    return apply_detections(samples, detections, config)


def faces_from_sample2detect(
    d: dict[int, list],
    samples: pa.Table,
    config: DetectConfig | None = None,
    pipeline_version: str | None = None,
    config_hash: str = "",
    missing: str = "no_face",
) -> pa.Table:
    """FACES rows for the samples' keys from published detections, keep rules from `config`."""
    from .schema import PIPELINE_VERSION

    table = apply_sample2detect(d, samples, config, missing)
    return faces_table(table, pipeline_version or PIPELINE_VERSION, config_hash)


class ImportedDetections:
    """Stands in for DetectStage when the published detections of a part were imported:
    same input and output columns, no model."""

    name = "detect"

    def __init__(self, config: DetectConfig, path: str | Path) -> None:
        self.config = config
        self.detections = import_part(path)

    def setup(self) -> None:
        pass

    def __call__(self, table: pa.Table) -> pa.Table:
        return apply_sample2detect(self.detections, table, self.config, missing="no_face")
