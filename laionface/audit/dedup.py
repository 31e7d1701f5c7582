"""Dedup over a whole run: exact (sha256 of the downloaded bytes) and near (perceptual hash).

Order is deterministic: (part, row). The first sample of a group stays `kept`; each later one
gets status `duplicate` and `duplicate_of` = the first one's key, and leaves the LAION-FACE and
cropped shards and the embeddings (only the shards that held it are rewritten).

Near duplicates: 64-bit pHash (imagehash) compared by Hamming distance. Candidates come from
band buckets: split the hash into (threshold + 1) bands; two hashes within the threshold agree
exactly on at least one band (pigeonhole), so no pair is missed and no all-pairs scan is needed.
"""

from __future__ import annotations

import tarfile
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..runfolder import RunFolder, read_parquet, write_parquet
from ..schema import FACES, SAMPLES
from ..status import KEPT, drop
from .rewrite import remove_embedding_rows, remove_members


@dataclass(frozen=True)
class DedupConfig:
    exact: bool = True
    near: bool = True
    hamming: int = 4  # max pHash bit distance for a near duplicate (of 64); 4 catches re-encodes and resizes
    hash_size: int = 8  # pHash grid: 8 -> 64 bits


@dataclass
class DedupResult:
    duplicate_of: dict[str, str] = field(default_factory=dict)  # later key -> first key
    exact: int = 0
    near: int = 0
    shards_rewritten: list[str] = field(default_factory=list)


def _kept(run: RunFolder) -> pa.Table:
    tables = []
    for part in run.done_parts():
        t = read_parquet(run.samples(part), columns=["key", "part", "row", "sha256", "shard"])
        tables.append(t.filter(pc.equal(read_parquet(run.samples(part), columns=["status"])["status"], KEPT)))
    if not tables:
        return pa.table({"key": pa.array([], pa.string())})
    return pa.concat_tables(tables).sort_by([("part", "ascending"), ("row", "ascending")])


def perceptual_hashes(run: RunFolder, keys: list[str], shards: list[str], hash_size: int = 8) -> dict[str, int]:
    """pHash of each sample's image, read from its LAION-FACE shard (decoded like detect does)."""
    import imagehash
    from PIL import Image

    from ..imagedecode import DecodeError, decode_image

    wanted = defaultdict(set)
    for key, shard in zip(keys, shards):
        wanted[shard].add(key)
    out: dict[str, int] = {}
    for shard in sorted(wanted):
        with tarfile.open(run.root / shard) as tar:
            for member in tar:
                stem, _, ext = member.name.partition(".")
                if ext != "jpg" or stem not in wanted[shard]:
                    continue
                try:
                    rgb = decode_image(tar.extractfile(member).read(), max_side=256).rgb
                except DecodeError:
                    continue
                bits = imagehash.phash(Image.fromarray(rgb), hash_size=hash_size).hash.flatten()
                out[stem] = int("".join("1" if b else "0" for b in bits), 2)
    return out


def near_duplicates(hashes: list[int], threshold: int, bits: int = 64) -> dict[int, int]:
    """Index -> index of the earliest earlier item within `threshold` bits (that is not itself a duplicate)."""
    bands = threshold + 1
    edges = np.linspace(0, bits, bands + 1).astype(int)
    buckets: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(bands)]
    found: dict[int, int] = {}
    for i, h in enumerate(hashes):
        candidates = set()
        keys = [(h >> int(edges[b])) & ((1 << int(edges[b + 1] - edges[b])) - 1) for b in range(bands)]
        for b, k in enumerate(keys):
            candidates.update(buckets[b].get(k, ()))
        close = sorted(j for j in candidates if bin(h ^ hashes[j]).count("1") <= threshold)
        if close:
            found[i] = close[0]
            continue  # a duplicate is not an original for later items
        for b, k in enumerate(keys):
            buckets[b][k].append(i)
    return found


def find(run: RunFolder, config: DedupConfig) -> DedupResult:
    kept = _kept(run)
    result = DedupResult()
    keys = kept["key"].to_pylist()
    if config.exact and keys:
        first: dict[str, str] = {}
        for key, digest in zip(keys, kept["sha256"].to_pylist()):
            if digest in first:
                result.duplicate_of[key] = first[digest]
            elif digest:
                first[digest] = key
        result.exact = len(result.duplicate_of)
    if config.near and keys:
        rest = [(k, s) for k, s in zip(keys, kept["shard"].to_pylist()) if k not in result.duplicate_of and s]
        hashes = perceptual_hashes(run, [k for k, _ in rest], [s for _, s in rest], config.hash_size)
        ordered = [k for k, _ in rest if k in hashes]
        for i, j in near_duplicates([hashes[k] for k in ordered], config.hamming, config.hash_size**2).items():
            result.duplicate_of[ordered[i]] = ordered[j]
        result.near = len(result.duplicate_of) - result.exact
    return result


def apply(run: RunFolder, result: DedupResult) -> DedupResult:
    """Mark duplicates in the manifests and take them out of shards and embeddings."""
    by_part: dict[int, set[str]] = defaultdict(set)
    for key in result.duplicate_of:
        by_part[int(key[:5])].add(key)
    for part, keys in sorted(by_part.items()):
        samples = read_parquet(run.samples(part))
        stems: dict[str, set[str]] = defaultdict(set)
        rows = samples.to_pylist()
        for r in rows:
            if r["key"] in keys:
                if r["shard"]:
                    stems[r["shard"]].add(r["key"])
                r.update(status=drop("duplicate"), error=f"duplicate of {result.duplicate_of[r['key']]}",
                         duplicate_of=result.duplicate_of[r["key"]], shard=None)
        faces = read_parquet(run.faces(part)).to_pylist()
        for f in faces:
            if f["key"] in keys and f["crop_shard"]:
                stems[f["crop_shard"]].add(f["face_key"])
                f["crop_shard"] = None
        for tar, drop_stems in sorted(stems.items()):
            remove_members(run.root / tar, drop_stems)
            result.shards_rewritten.append(tar)
        remove_embedding_rows(run, part, keys)
        write_parquet(pa.Table.from_pylist(faces, schema=FACES), run.faces(part), FACES)
        write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), run.samples(part), SAMPLES)
    return result
