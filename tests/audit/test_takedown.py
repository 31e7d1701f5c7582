"""Takedown across shards: only the shards that held the removed samples change, and no trace
of them stays in manifests, shards (LAION-FACE, cropped, raw) or embeddings. Idempotent."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from laionface.demo import build_sample
from laionface.runfolder import RunFolder
from laionface.testing.server import FaultServer

ROOT = Path(__file__).parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture()
def run(tmp_path):
    pipeline = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    pipeline["stages"]["laion_face"]["max_count"] = 8  # several shards per part
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline))
    (tmp_path / "www").mkdir()
    with FaultServer(tmp_path / "www", timeout_delay=5) as server:
        meta, ids = build_sample(tmp_path, server.url, n_rows=96, parts=2)
        out = tmp_path / "run"
        cli("run", str(tmp_path / "p.yaml"), "--input", str(meta[0].parent), "--ids", str(ids), "--out", str(out), "--allow-private-addresses")
    rf = RunFolder(out)
    for part in rf.done_parts():  # embeddings in clip-retrieval's layout for the kept samples
        s = pq.read_table(rf.samples(part))
        kept = s.filter(pc.equal(s["status"], "kept"))
        emb = np.random.default_rng(part).standard_normal((kept.num_rows, 8)).astype(np.float16)
        for name in ("img_emb", "text_emb"):
            (out / "embeddings" / name).mkdir(parents=True, exist_ok=True)
            np.save(out / "embeddings" / name / f"{name}_{part}.npy", emb)
        (out / "embeddings" / "metadata").mkdir(parents=True, exist_ok=True)
        pq.write_table(kept.select(["key", "URL", "TEXT"]), out / "embeddings" / "metadata" / f"metadata_{part}.parquet")
    return rf


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def tar_text(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        return b"".join(tar.extractfile(m).read() for m in tar if m.isfile()) + "\n".join(tar.getnames()).encode()


def test_takedown_of_urls_spread_over_shards(run, tmp_path):
    samples = pa.concat_tables([pq.read_table(run.samples(p)) for p in run.done_parts()])
    kept = samples.filter(pc.equal(samples["status"], "kept")).to_pylist()
    by_shard = {}
    for r in kept:
        by_shard.setdefault(r["shard"], r)
    victims = list(by_shard.values())[:3]  # one sample from each of three shards
    assert len({v["shard"] for v in victims}) == 3
    request = tmp_path / "urls.txt"
    request.write_text("# removal request\n" + "\n".join(v["URL"] for v in victims) + "\nhttps://not.in.the/run.jpg\n")
    before = file_hashes(run.root)

    dry = cli("takedown", str(run.root), "--urls", str(request), "--dry-run")
    assert "3 samples" in dry.stdout and "nothing changed" in dry.stdout
    assert file_hashes(run.root) == before

    cli("takedown", str(run.root), "--urls", str(request), "--by", "auditor@example.org")
    after = file_hashes(run.root)
    changed = {k for k in before if before[k] != after.get(k)}
    held = {v["shard"] for v in victims} | {v["raw_shard"] for v in victims}
    tars_changed = {k for k in changed if k.endswith(".tar")}
    assert held <= tars_changed
    assert all(k.startswith(("raw/", "laion_face_cropped/")) or k in held for k in tars_changed)
    untouched = [k for k in before if k.endswith(".tar") and k.startswith("laion_face/") and k not in held]
    assert untouched and all(before[k] == after[k] for k in untouched)

    keys = {v["key"] for v in victims}
    urls = [v["URL"].encode() for v in victims]
    for tar in run.root.rglob("*.tar"):
        text = tar_text(tar)
        assert not any(u in text for u in urls), tar
        assert not any(f"{k}.".encode() in text or f"{k}_f".encode() in text for k in keys), tar
    for path in list(run.root.glob("candidates/*.parquet")) + list(run.root.glob("manifests/*/*.parquet")) \
            + list(run.root.glob("embeddings/metadata/*.parquet")) + list(run.root.glob("raw/*/*.parquet")):
        t = pq.read_table(path)
        for col in ("URL", "url", "TEXT", "caption"):
            if col in t.column_names:
                assert not set(t[col].to_pylist()) & {v[c] for v in victims for c in ("URL", "TEXT")}, path
        if path.parent.name in ("faces", "metadata"):
            assert not set(t["key"].to_pylist()) & keys, path
    for part in run.done_parts():
        meta = pq.read_table(run.embeddings / "metadata" / f"metadata_{part}.parquet")
        assert np.load(run.embeddings / "img_emb" / f"img_emb_{part}.npy").shape[0] == meta.num_rows
    gone = samples_after = pa.concat_tables([pq.read_table(run.samples(p)) for p in run.done_parts()])
    gone = samples_after.filter(pc.is_in(samples_after["key"], pa.array(sorted(keys))))
    assert gone["status"].to_pylist() == ["taken_down"] * 3 and gone["URL"].null_count == 3
    assert samples_after.num_rows == samples.num_rows  # the funnel still adds up

    log = pq.read_table(run.root / "takedowns.parquet").to_pylist()
    assert len(log) == 1 and log[0]["samples_removed"] == 3 and log[0]["by"] == "auditor@example.org"
    assert sorted(log[0]["shards_rewritten"]) == sorted(tars_changed)

    again = file_hashes(run.root)
    cli("takedown", str(run.root), "--urls", str(request))
    now = file_hashes(run.root)
    assert {k for k in again if again[k] != now.get(k)} == {"takedowns.parquet"}  # only the new record
    assert pq.read_table(run.root / "takedowns.parquet")["samples_removed"].to_pylist() == [3, 0]


def test_takedown_by_domain_and_by_id(run, tmp_path):
    samples = pq.read_table(run.samples(0))
    kept = samples.filter(pc.equal(samples["status"], "kept")).to_pylist()
    (tmp_path / "ids.txt").write_text(f"{kept[0]['SAMPLE_ID']}\n")
    out = cli("takedown", str(run.root), "--ids", str(tmp_path / "ids.txt"))
    assert "1 samples" in out.stdout
    (tmp_path / "domains.txt").write_text("127.0.0.1\n")  # every demo URL is on the loopback server
    out = cli("takedown", str(run.root), "--domains", str(tmp_path / "domains.txt"))
    assert "0 samples" not in out.stdout
    for part in run.done_parts():
        status = pq.read_table(run.samples(part))["status"].to_pylist()
        assert "kept" not in status and "taken_down" in status
        assert pq.read_table(run.faces(part)).num_rows == 0
    assert not any(tarfile.open(t).getnames() for t in run.root.glob("laion_face/*/*.tar"))
