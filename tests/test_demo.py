"""The demo end to end (real HTTP on 127.0.0.1, real img2dataset, real RetinaFace), then the
contracts it must satisfy: the funnel adds up, the layout is DESIGN.md's, every manifest
validates against the schema module, a re-run of done parts changes nothing, shards open."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from laionface.runfolder import RunFolder
from laionface.schema import CANDIDATES, FACES, SAMPLES, validate
from laionface.status import is_valid


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", "demo", "--out", str(out), "--rows", "200"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_demo_funnel_adds_up_to_the_input(demo_run):
    out, stdout = demo_run
    assert "funnel: 200 input rows" in stdout
    total = [line for line in stdout.splitlines() if line.startswith("total")]
    assert total and total[0].split()[1] == "200"
    assert "kept" in stdout and "download_failed:http_404" in stdout and "no_face" in stdout
    # the end-of-run table: rows, seconds and img/s per stage, and what the run made
    stages = {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.split()[:1] in (["detect"], ["crop"], ["write"])}
    assert set(stages) == {"detect", "crop", "write"} and all(float(v[2]) > 0 for v in stages.values())
    assert "parts: 2 done, 0 skipped, 0 failed; faces " in stdout and "crops " in stdout and "shards " in stdout


def test_demo_layout_matches_design(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    parts = run.candidate_parts()
    assert parts == [0, 1]
    for part in parts:
        for path in (run.candidates(part), run.samples(part), run.faces(part), run.done_marker(part)):
            assert path.exists(), path
        assert (run.raw(part) / "00000.tar").exists()
        assert (run.laion_face(part) / "00000.tar").exists()
    assert run.stats.exists() and run.config.exists()


def test_every_manifest_validates_and_counts_match(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    for part in run.candidate_parts():
        cand, samples, faces = (pq.read_table(p) for p in (run.candidates(part), run.samples(part), run.faces(part)))
        validate(cand, CANDIDATES, "candidates")
        validate(samples, SAMPLES, "samples")
        validate(faces, FACES, "faces")
        assert samples["key"].to_pylist() == cand["key"].to_pylist()
        assert all(is_valid(s) for s in samples["status"].to_pylist())
        kept = samples.filter(pc.equal(samples["status"], "kept"))
        assert all(kept["kept_face_count"].to_pylist()) and all(kept["shard"].to_pylist())
        record = json.loads(run.done_marker(part).read_text())
        assert record["rows"] == samples.num_rows and record["config_hash"] == samples["config_hash"][0].as_py()


def test_laion_face_shards_hold_exactly_the_kept_samples(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    for part in run.candidate_parts():
        samples = pq.read_table(run.samples(part))
        kept = set(samples.filter(pc.equal(samples["status"], "kept"))["key"].to_pylist())
        keys = set()
        for tar_path in sorted(run.laion_face(part).glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                names = tar.getnames()
                assert all(m.mtime == 0 for m in tar.getmembers())
            for name in names:
                keys.add(name.split(".", 1)[0])
            meta = [n for n in names if n.endswith(".json")]
            assert len(meta) * 3 == len(names)  # jpg, txt, json per sample
        assert keys == kept


def test_rerun_skips_done_parts_and_leaves_manifests_byte_identical(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    before = {p: run.samples(p).read_bytes() for p in run.candidate_parts()}
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", "detect", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: run.samples(p).read_bytes() for p in run.candidate_parts()} == before


def _tar_keys(tar_path) -> list[str]:
    with tarfile.open(tar_path) as tar:
        return sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})


def test_demo_writes_both_shard_sets_and_a_contact_sheet(demo_run):
    out, stdout = demo_run
    run = RunFolder(out)
    for part in run.candidate_parts():
        assert (run.laion_face(part) / "00000.tar").exists() and (run.laion_face_cropped(part) / "00000.tar").exists()
    from PIL import Image

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.width >= 8 * 128 and "contact sheet:" in stdout


def test_every_crop_key_is_in_one_shard_and_one_kept_faces_row_and_points_back(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    for part in run.candidate_parts():
        faces = pq.read_table(run.faces(part))
        kept_faces = {r["face_key"]: r for r in faces.to_pylist() if r["kept"]}
        samples = {r["key"]: r for r in pq.read_table(run.samples(part)).to_pylist()}
        seen: dict[str, str] = {}
        for tar_path in sorted(run.laion_face_cropped(part).glob("*.tar")):
            shard = str(tar_path.relative_to(out))
            with tarfile.open(tar_path) as tar:
                files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
                assert all(m.mtime == 0 for m in tar.getmembers())
            for key in _tar_keys(tar_path):
                assert key not in seen, f"{key} in {seen.get(key)} and {shard}"
                seen[key] = shard
                assert "." not in key and {f"{key}.{e}" for e in ("jpg", "txt", "json")} <= set(files)
                face = kept_faces[key]  # matches one faces row, a kept face
                assert face["crop_shard"] == shard
                meta = json.loads(files[f"{key}.json"])
                source = samples[meta["key"]]  # points back to its source sample
                assert source["status"] == "kept" and source["shard"] == meta["source_shard"]
                assert (meta["SAMPLE_ID"], meta["URL"], meta["face_index"]) == (source["SAMPLE_ID"], source["URL"], face["face_index"])
                assert meta["key"] in _tar_keys(out / meta["source_shard"])
                assert meta["box"] == face["box"] and meta["landmarks"] == face["landmarks"]
                assert meta["recipe"] == "aligned_farl" and len(meta["transform"]) == 2 and len(meta["landmarks_crop"]) == 10
                assert files[f"{key}.txt"].decode() == (source["TEXT"] or "")
        # one crop per kept face of a kept sample
        assert set(seen) == {k for k, f in kept_faces.items() if samples[f["key"]]["status"] == "kept"}


def test_cropped_shards_open_with_webdataset(demo_run):
    import webdataset as wds

    out, _ = demo_run
    tars = sorted(str(p) for p in (out / "laion_face_cropped").glob("part-*/*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("rgb8").to_tuple("__key__", "jpg", "json"))
    assert samples and len({k for k, _, _ in samples}) == len(samples)
    for key, image, meta in samples:
        assert image.shape == (256, 256, 3) and meta["face_key"] == key


def test_torch_dataloader_yields_batches_of_crops(demo_run):
    torch = pytest.importorskip("torch")
    import webdataset as wds

    out, _ = demo_run
    tars = sorted(str(p) for p in (out / "laion_face_cropped").glob("part-*/*.tar"))
    dataset = wds.WebDataset(tars, shardshuffle=False).decode("torchrgb").to_tuple("jpg", "txt").batched(8)
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0))
    images, captions = batches[0]
    assert images.shape == (8, 3, 256, 256) and len(captions) == 8
