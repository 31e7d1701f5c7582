"""Score stage: a tiny open_clip model built here, saved, and loaded the way production loads weights."""

from __future__ import annotations

import io
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from laionface.errors import ConfigError, ModelNotFoundError  # noqa: E402
from laionface.stages.score import (  # noqa: E402
    EmbeddingsWriter,
    ScoreConfig,
    ScoreStage,
    crop_scores_for_faces,
    embedding_paths,
    read_embeddings,
)
from laionface.testing.faces import encode_jpeg, face_sources, non_face_images  # noqa: E402
from laionface.testing.tiny_clip import TINY_NAME, save_tiny_clip  # noqa: E402

TINY = TINY_NAME
CAPTIONS = [
    "portrait of a smiling woman", "an astronaut in a white suit", "a cup of coffee on a table",
    "a cat lying on a sofa", "rocket launch at night", "the deep field of the Hubble telescope",
    "a brick wall", "Grace Hopper in uniform", "a man at the premiere", "", "two people at a wedding",
]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A tiny CLIP (2+2 layers, width 64, 64 px images, embed 32), saved with torch.save."""
    return str(save_tiny_clip(tmp_path_factory.mktemp("tiny_clip")))


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    """The same weights loaded independently of the stage, with open_clip's own transforms."""
    model, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=tiny_checkpoint)
    return model.eval(), preprocess, open_clip.get_tokenizer(TINY)


def sample_images(n: int, seed: int = 0) -> list[bytes]:
    """Real photos (faces and non-faces) and noise, cycling, as JPEG bytes of varied sizes."""
    rng = np.random.default_rng(seed)
    photos = [s.image for s in face_sources()] + list(non_face_images().values())
    out = []
    for i in range(n):
        if i % 3 == 2:
            h, w = int(rng.integers(40, 200)), int(rng.integers(40, 200))
            out.append(encode_jpeg(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        else:
            out.append(encode_jpeg(photos[i % len(photos)]))
    return out


def sample_table(n: int = 10, seed: int = 0, part: int = 0) -> pa.Table:
    return pa.table(
        {
            "key": [f"{part:05d}_{i}" for i in range(n)],
            "part": pa.array([part] * n, pa.int32()),
            "SAMPLE_ID": pa.array(range(n), pa.int64()),
            "URL": [f"http://127.0.0.1/img/{i}.jpg" for i in range(n)],
            "TEXT": [CAPTIONS[i % len(CAPTIONS)] for i in range(n)],
            "status": ["kept"] * n,
            "error": pa.nulls(n, pa.string()),
            "image": pa.array(sample_images(n, seed), pa.binary()),
        }
    )


def stage_for(checkpoint: str, **settings) -> ScoreStage:
    settings.setdefault("threshold", -1.0)  # random weights score around 0: keep everything unless told
    stage = ScoreStage(ScoreConfig(model=TINY, pretrained=checkpoint, device="cpu", **settings))
    stage.setup()
    return stage


def reference_embeddings(reference, images: list[bytes], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    model, preprocess, tokenizer = reference
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
        img = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
        txt = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()
    return img, txt


def scores_by_key(table: pa.Table) -> dict[str, float | None]:
    return dict(zip(table["key"].to_pylist(), table["clip_score"].to_pylist()))


def emb(table: pa.Table, name: str) -> np.ndarray:
    col = table[name].combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size).astype(np.float32)


# ---------------------------------------------------------------- scores and embeddings


def test_score_is_the_diagonal_of_the_similarity_matrix_and_embeddings_are_normalised(tiny_checkpoint, reference):
    table = sample_table(10)
    out = stage_for(tiny_checkpoint, batch_size=4)(table)
    img, txt = reference_embeddings(reference, table["image"].to_pylist(), table["TEXT"].to_pylist())
    sim = img @ txt.T  # computed independently: open_clip's transforms on PIL images
    np.testing.assert_allclose(out["clip_score"].to_numpy(), np.diag(sim), atol=1e-5)
    assert np.abs(sim - np.diag(np.diag(sim))).max() > 1e-3  # the pairing matters (not one score for all)
    for name, ref in (("img_emb", img), ("text_emb", txt)):
        got = emb(out, name)
        assert out[name].type == pa.list_(pa.float16(), 32)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=2e-3)
        np.testing.assert_allclose(got, ref, atol=2e-3)  # float16 of the same vectors
    assert out["status"].to_pylist() == ["kept"] * 10


def test_rows_stay_aligned_across_batches_and_shuffled_input(tiny_checkpoint):
    table = sample_table(10)
    whole = scores_by_key(stage_for(tiny_checkpoint, batch_size=64)(table))
    in_threes = stage_for(tiny_checkpoint, batch_size=3, prefetch=True)(table)  # decode overlaps the model
    assert scores_by_key(in_threes) == pytest.approx(whole, abs=1e-5)
    order = np.random.default_rng(7).permutation(10)
    shuffled = stage_for(tiny_checkpoint, batch_size=3, prefetch=False)(table.take(order))
    assert scores_by_key(shuffled) == pytest.approx(whole, abs=1e-5)
    # the embedding rows move with their keys too
    by_key = dict(zip(in_threes["key"].to_pylist(), emb(in_threes, "img_emb")))
    for key, row in zip(shuffled["key"].to_pylist(), emb(shuffled, "img_emb")):
        np.testing.assert_allclose(row, by_key[key], atol=1e-3)


def test_embedding_files_line_up_with_metadata_per_part(tiny_checkpoint, tmp_path):
    stage = stage_for(tiny_checkpoint, batch_size=3)
    root = tmp_path / "embeddings"
    expected: dict[str, float] = {}
    for part in (0, 3):
        table = sample_table(7 if part == 0 else 5, seed=part, part=part)
        table = table.set_column(5, "status", pa.array(["kept"] * (table.num_rows - 1) + ["no_face"]))
        order = np.random.default_rng(part).permutation(table.num_rows)  # batches arrive in any order
        writer = EmbeddingsWriter(root, part)
        for start in range(0, table.num_rows, 2):
            scored = stage(table.take(order[start : start + 2]))
            expected.update({k: s for k, s in scores_by_key(scored).items() if s is not None})
            rest = writer.add(scored)
            assert "img_emb" not in rest.column_names and "text_emb" not in rest.column_names
        assert writer.close() == table.num_rows - 1  # the no_face row was not scored
    for part, n in ((0, 6), (3, 4)):
        paths = embedding_paths(root, part)
        assert paths["img_emb"] == root / "img_emb" / f"img_emb_{part}.npy"
        img, txt, meta = read_embeddings(root, part)
        assert img.dtype == txt.dtype == np.float16 and img.shape == txt.shape == (n, 32)
        assert meta.column_names == ["key", "url", "caption", "SAMPLE_ID", "clip_score"]
        assert meta["key"].to_pylist() == sorted(meta["key"].to_pylist())
        assert all(k.startswith(f"{part:05d}_") for k in meta["key"].to_pylist())
        np.testing.assert_allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1.0, atol=2e-3)
        # row i of both arrays is the sample in metadata row i: its cosine is its clip_score
        cos = np.einsum("ij,ij->i", img.astype(np.float32), txt.astype(np.float32))
        np.testing.assert_allclose(cos, meta["clip_score"].to_numpy(), atol=3e-3)
        np.testing.assert_allclose(meta["clip_score"].to_numpy(), [expected[k] for k in meta["key"].to_pylist()], atol=1e-6)
        assert meta["url"].to_pylist() == [f"http://127.0.0.1/img/{k.split('_')[1]}.jpg" for k in meta["key"].to_pylist()]
    assert not list(root.rglob("*.tmp"))


def test_a_part_with_no_kept_rows_leaves_no_files_and_removes_stale_ones(tiny_checkpoint, tmp_path):
    root = tmp_path / "embeddings"
    writer = EmbeddingsWriter(root, 1)
    writer.add(stage_for(tiny_checkpoint)(sample_table(3, part=1)))
    assert writer.close() == 3
    writer = EmbeddingsWriter(root, 1)
    writer.add(stage_for(tiny_checkpoint, threshold=1.0)(sample_table(3, part=1)))  # everything dropped
    assert writer.close() == 0
    assert not any(p.exists() for p in embedding_paths(root, 1).values())


# ---------------------------------------------------------------- the rule


def test_threshold_drops_low_scores_with_reason_and_leaves_dropped_rows_alone(tiny_checkpoint):
    table = sample_table(10)
    table = table.set_column(5, "status", pa.array(["kept"] * 9 + ["no_face"]))
    scores = stage_for(tiny_checkpoint)(table)["clip_score"].to_numpy(zero_copy_only=False)[:9]
    threshold = float(np.median(scores))
    out = stage_for(tiny_checkpoint, threshold=threshold)(table)
    status, error = out["status"].to_pylist(), out["error"].to_pylist()
    for i in range(9):
        if scores[i] < threshold:
            assert status[i] == "low_clip_score"
            assert f"< {threshold}" in error[i] and TINY in error[i]
        else:
            assert status[i] == "kept" and error[i] is None
    assert status.count("low_clip_score") == int((scores < threshold).sum()) > 0
    assert status[9] == "no_face" and out["clip_score"][9].as_py() is None and out["img_emb"][9].as_py() is None
    none = stage_for(tiny_checkpoint, threshold=threshold, apply_to="none")(table)
    assert none["status"].to_pylist() == ["kept"] * 9 + ["no_face"]
    assert none["clip_score"].to_pylist() == out["clip_score"].to_pylist()


def crops_column(images: list[list[bytes]]) -> pa.Array:
    typ = pa.list_(pa.struct([pa.field("face_index", pa.int16()), pa.field("jpg", pa.binary())]))
    return pa.array([[{"face_index": i, "jpg": b} for i, b in enumerate(row)] for row in images], typ)


def test_crops_are_scored_against_their_caption_and_crop_max_rule(tiny_checkpoint, reference):
    table = sample_table(6)
    extra = sample_images(9, seed=5)
    crops = [[extra[0], extra[1]], [], [extra[2]], [extra[3], extra[4], extra[5]], [extra[6]], [extra[7], extra[8]]]
    table = table.append_column("crops", crops_column(crops))
    out = stage_for(tiny_checkpoint, batch_size=2)(table)
    got = out["crop_clip_scores"].to_pylist()
    assert [len(g) for g in got] == [len(c) for c in crops]
    for row, (row_crops, caption) in enumerate(zip(crops, table["TEXT"].to_pylist())):
        if row_crops:
            img, txt = reference_embeddings(reference, row_crops, [caption])
            np.testing.assert_allclose(got[row], (img @ txt.T)[:, 0], atol=1e-5)

    # crop_max judges the best crop; a row without crops falls back to its full-image score
    best = [max(g) if g else out["clip_score"][i].as_py() for i, g in enumerate(got)]
    threshold = float(np.median(best))
    ruled = stage_for(tiny_checkpoint, threshold=threshold, apply_to="crop_max")(table)
    assert ruled["status"].to_pylist() == ["low_clip_score" if b < threshold else "kept" for b in best]
    assert "best crop_clip_score" in next(e for e in ruled["error"].to_pylist() if e and "crop" in e)

    # into the faces manifest, by key and face_index
    faces = pa.table({"key": ["00000_0", "00000_0", "00000_3", "00000_1"], "face_index": pa.array([1, 0, 2, 0], pa.int16()),
                      "crop_clip_score": pa.nulls(4, pa.float32())})
    filled = crop_scores_for_faces(faces, out)["crop_clip_score"].to_pylist()
    assert filled[:3] == pytest.approx([got[0][1], got[0][0], got[3][2]]) and filled[3] is None


def test_undecodable_image_is_decode_failed_and_others_still_score(tiny_checkpoint):
    table = sample_table(5)
    images = table["image"].to_pylist()
    images[2] = b"<html>not an image</html>"
    table = table.set_column(7, "image", pa.array(images, pa.binary()))
    out = stage_for(tiny_checkpoint, batch_size=2)(table)
    assert out["status"][2].as_py() == "decode_failed" and out["clip_score"][2].as_py() is None
    assert out["status"].to_pylist().count("kept") == 4 and out["clip_score"].null_count == 1


# ---------------------------------------------------------------- loading, offline


def test_missing_weights_is_one_line_naming_what_to_do(tmp_path):
    for settings in ({}, {"pretrained": str(tmp_path / "missing.pt")}, {"pretrained": "no_such_tag"}):
        with pytest.raises(ModelNotFoundError) as info:
            ScoreStage(ScoreConfig(**settings)).setup()
        msg = str(info.value)
        assert "\n" not in msg and "score.pretrained" in msg and "skip: true" in msg
        assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ConfigError, match="not an open_clip model"):
        ScoreStage(ScoreConfig(model="No-Such-Model", pretrained="x")).setup()
    with pytest.raises(ConfigError, match="apply_to"):
        ScoreStage(ScoreConfig(apply_to="faces"))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the score stage tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_tags_load_only_from_the_cache_never_the_network(tiny_checkpoint, tmp_path, monkeypatch, no_network):
    from huggingface_hub import constants
    from open_clip import pretrained as oc_pretrained

    hub = tmp_path / "hub"
    snapshot = hub / "models--laionface-test--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(open(tiny_checkpoint, "rb").read())
    (hub / "models--laionface-test--tiny" / "refs").mkdir()
    (hub / "models--laionface-test--tiny" / "refs" / "main").write_text("abc123")
    home = tmp_path / "home"
    (home / ".cache" / "clip").mkdir(parents=True)
    (home / ".cache" / "clip" / "tiny-url.pt").write_bytes(open(tiny_checkpoint, "rb").read())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY, {
        "hubtag": {"hf_hub": "laionface-test/tiny/"},
        "urltag": {"url": "https://example.invalid/weights/tiny-url.pt"},
        "absent": {"hf_hub": "laionface-test/absent/", "url": "https://example.invalid/weights/absent.pt"},
    })
    table = sample_table(4)
    want = scores_by_key(stage_for(tiny_checkpoint)(table))
    for tag in ("hubtag", "urltag"):
        assert scores_by_key(stage_for(tag)(table)) == pytest.approx(want, abs=1e-6)
    with pytest.raises(ModelNotFoundError, match="not in your open_clip or Hugging Face cache") as info:
        stage_for("absent")
    assert "pretrained='absent'" in str(info.value) and "\n" not in str(info.value)


def test_skip_mode_loads_nothing_scores_null_and_drops_nothing():
    table = sample_table(4).append_column("crops", crops_column([[b"x"], [], [b"y"], []]))
    stage = ScoreStage(ScoreConfig(skip=True))  # no weights anywhere: fine when skipping
    stage.setup()
    out = stage(table)
    assert stage.clip is None
    assert out["clip_score"].null_count == 4 and out["crop_clip_scores"].null_count == 4
    assert out["status"].to_pylist() == ["kept"] * 4 and "img_emb" not in out.column_names


def test_importing_the_package_and_cheap_stages_does_not_import_torch():
    code = (
        "import sys; import laionface.cli, laionface.stages.select, laionface.stages.download, "
        "laionface.stages.detect, laionface.stages.score, laionface.pipeline; "
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_alive_mask_matches_what_was_scored(tiny_checkpoint):
    table = sample_table(6)
    table = table.set_column(5, "status", pa.array(["kept", "no_face", "kept", "download_failed:http_404", "kept", "kept"]))
    out = stage_for(tiny_checkpoint)(table)
    scored = pc.is_valid(out["clip_score"]).to_pylist()
    assert scored == [s == "kept" for s in table["status"].to_pylist()]


def test_a_batch_with_nothing_alive_passes_through(tiny_checkpoint, tmp_path):
    table = sample_table(3).append_column("crops", crops_column([[b"x"], [], []]))
    table = table.set_column(5, "status", pa.array(["no_face"] * 3))
    for t in (table, table.slice(0, 0)):
        out = stage_for(tiny_checkpoint)(t)
        assert out["status"].to_pylist() == t["status"].to_pylist() and out["clip_score"].null_count == t.num_rows
        writer = EmbeddingsWriter(tmp_path / "embeddings", 0)
        writer.add(out)
        assert writer.close() == 0
