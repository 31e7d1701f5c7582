"""The score stage inside a run: clip_score / crop_clip_score in the manifests, low_clip_score
drops that leave the shards and the embeddings, embeddings lined up with the kept rows, and
`laionface score` (redoes done parts from the cached download; no weights: one line, nothing lost).

The tiny CLIP is saved as an open_clip `local-dir:` folder, the form any worker can load."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from laionface.cli import _save_run_pipeline, main  # noqa: E402
from laionface.pipeline import Pipeline  # noqa: E402
from laionface.runfolder import RunFolder, write_parquet  # noqa: E402
from laionface.runner import LocalRunner  # noqa: E402
from laionface.schema import CANDIDATES, empty_columns  # noqa: E402
from laionface.stages.score import read_embeddings  # noqa: E402
from laionface.testing.tiny_clip import save_tiny_clip_dir  # noqa: E402

CAPTIONS = ["portrait of a woman", "an astronaut", "a man in a suit", "Grace Hopper", "a photo"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return f"local-dir:{save_tiny_clip_dir(tmp_path_factory.mktemp('tiny_clip_dir'))}"


def write_candidates(run: RunFolder, part: int, urls: list[str]) -> None:
    n = len(urls)
    t = pa.table({"key": [f"{part:05d}_{i}" for i in range(n)], "part": pa.array([part] * n, pa.int32()),
                  "row": pa.array(range(n), pa.int64()), "SAMPLE_ID": pa.array(range(n), pa.int64()),
                  "URL": urls, "TEXT": [CAPTIONS[(i + part) % len(CAPTIONS)] for i in range(n)], "status": ["kept"] * n})
    write_parquet(empty_columns(t, CANDIDATES), run.candidates(part), CANDIDATES)


def scored_run(tmp_path, fault_server, tiny_model: str, **score) -> tuple[RunFolder, Pipeline]:
    run = RunFolder(tmp_path / "run")
    faces = [fault_server.url_for(f"face_{i}.jpg") for i in range(4)]
    write_candidates(run, 0, faces[:3] + [fault_server.url + "/fault/404"])
    write_candidates(run, 1, faces[1:] + [fault_server.url_for("face_0.jpg")])
    pipeline = Pipeline.from_dict({"stages": {
        "download": {"allow_private_addresses": True, "timeout": 5}, "detect": {}, "crop": {"size": 96},
        "score": {"model": tiny_model, "threshold": -1.0, **score}}})
    _save_run_pipeline(run, pipeline)
    outcomes = LocalRunner(run, pipeline, progress=False).run_parts()
    assert [o.state for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    return run, pipeline


def shard_samples(run: RunFolder, folder: str) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted((run.root / folder).glob("part-*/*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                key, _, ext = m.name.partition(".")
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def reference_scores(model_name: str, images: list[bytes], captions: list[str]) -> np.ndarray:
    """Cosine of image and caption, computed with open_clip alone from the shard's bytes."""
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    model.eval()
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
        img = model.encode_image(x)
        txt = model.encode_text(tokenizer(captions))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (img * txt).sum(-1).numpy()


def test_scores_reach_manifests_and_embeddings_line_up_with_kept_rows(tmp_path, fault_server, tiny_model):
    run, _ = scored_run(tmp_path, fault_server, tiny_model)
    full = shard_samples(run, "laion_face")
    for part in (0, 1):
        samples = pq.read_table(run.samples(part)).to_pylist()
        kept = [r for r in samples if r["status"] == "kept"]
        assert len(kept) == {0: 3, 1: 4}[part] and all(r["clip_score"] is not None for r in kept)
        assert all(r["clip_score"] is None for r in samples if r["status"] != "kept")  # the 404 row

        # the score in the manifest is the cosine of the bytes in the LAION-FACE shard and the caption
        ref = reference_scores(tiny_model, [full[r["key"]]["jpg"] for r in kept], [r["TEXT"] for r in kept])
        np.testing.assert_allclose([r["clip_score"] for r in kept], ref, atol=2e-3)

        # embeddings: row i of img_emb, text_emb and metadata is the same kept sample, sorted by key
        img, txt, meta = read_embeddings(run.embeddings, part)
        assert meta["key"].to_pylist() == sorted(r["key"] for r in kept)
        assert img.dtype == np.float16 and img.shape == txt.shape == (len(kept), 32)
        np.testing.assert_allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1, atol=2e-3)
        by_key = {r["key"]: r for r in kept}
        cos = (img.astype(np.float32) * txt.astype(np.float32)).sum(1)
        np.testing.assert_allclose(cos, [by_key[k]["clip_score"] for k in meta["key"].to_pylist()], atol=5e-3)
        assert meta["caption"].to_pylist() == [by_key[k]["TEXT"] for k in meta["key"].to_pylist()]
        assert meta["url"].to_pylist() == [by_key[k]["URL"] for k in meta["key"].to_pylist()]

        # each kept face's crop is scored against the caption and the crop is in its shard
        faces = pq.read_table(run.faces(part)).to_pylist()
        kept_faces = [f for f in faces if f["kept"]]
        assert kept_faces and all(f["crop_clip_score"] is not None and f["crop_shard"] for f in kept_faces)
    record = json.loads(run.done_marker(0).read_text())
    assert record["stage_seconds"]["score"] > 0


def test_threshold_drops_low_scores_from_shards_and_embeddings_via_the_cli(tmp_path, fault_server, tiny_model, capsys):
    run, _ = scored_run(tmp_path, fault_server, tiny_model)
    before = {p: pq.read_table(run.samples(p)).to_pylist() for p in (0, 1)}
    scores = sorted(r["clip_score"] for rows in before.values() for r in rows if r["clip_score"] is not None)
    threshold = float(np.mean(scores[2:4]))  # between the 3rd and 4th lowest: 3 of 7 drop
    low = {r["key"] for rows in before.values() for r in rows if r["clip_score"] is not None and r["clip_score"] < threshold}
    assert len(low) == 3

    assert main(["score", str(run.root), "--model", tiny_model, "--threshold", str(threshold)]) == 0
    assert "low_clip_score" in capsys.readouterr().out  # the funnel names the new drop
    full, cropped = shard_samples(run, "laion_face"), shard_samples(run, "laion_face_cropped")
    for part in (0, 1):
        after = pq.read_table(run.samples(part)).to_pylist()
        assert [r["key"] for r in after] == [r["key"] for r in before[part]]  # nothing lost, same order
        for r, old in zip(after, before[part]):
            if r["key"] in low:
                assert r["status"] == "low_clip_score" and f"< {threshold}" in r["error"]
                assert r["key"] not in full and not any(k.startswith(r["key"] + "_f") for k in cropped)
            else:
                assert r["status"] == old["status"]
                assert (r["key"] in full) == (r["status"] == "kept")
        _, _, meta = read_embeddings(run.embeddings, part)
        assert meta["key"].to_pylist() == sorted(r["key"] for r in after if r["status"] == "kept")


def test_score_without_weights_stops_in_one_line_and_skip_records_nothing(tmp_path, fault_server, tiny_model, capsys):
    run, _ = scored_run(tmp_path, fault_server, tiny_model)
    done = {p: run.done_marker(p).read_bytes() for p in (0, 1)}
    capsys.readouterr()  # img2dataset's own progress output from the run above

    assert main(["score", str(run.root), "--model", "ViT-B-32", "--pretrained", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "score.skip" in err[0]
    assert {p: run.done_marker(p).read_bytes() for p in (0, 1)} == done  # nothing was redone

    assert main(["score", str(run.root), "--skip"]) == 0
    for part in (0, 1):
        samples = pq.read_table(run.samples(part)).to_pylist()
        assert all(r["clip_score"] is None for r in samples)
        assert sum(r["status"] == "kept" for r in samples) == {0: 3, 1: 4}[part]
        assert not any(p.exists() for p in run.embeddings.glob(f"*/*_{part}.*"))
