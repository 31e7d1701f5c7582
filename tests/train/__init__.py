"""A small run folder with LAION-FACE shards of composed real faces (known boxes), for the train tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from laionface.shards import ShardWriter
from laionface.testing.faces import compose, encode_jpeg, face_sources

PLACES = ("coffee", "chelsea", "rocket", "hubble_deep_field", "brick")


def landmarks_for(box) -> list[float]:
    """Plausible 5 points inside a face box: eyes, nose, mouth corners."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    rel = [(0.32, 0.4), (0.68, 0.4), (0.5, 0.58), (0.36, 0.76), (0.64, 0.76)]
    return [float(v) for rx, ry in rel for v in (x0 + rx * w, y0 + ry * h)]


def make_run(root: Path, n: int = 60, parts: int = 2, per_shard: int = 12, seed: int = 0) -> list[str]:
    """`n` samples over `parts` parts, `per_shard` a tar: RUN/laion_face/part-NNNNN/NNNNN.tar. Returns the keys."""
    rng = np.random.default_rng(seed)
    sources = face_sources()
    keys = []
    per_part = -(-n // parts)
    for part in range(parts):
        folder = Path(root) / "laion_face" / f"part-{part:05d}"
        with ShardWriter(folder, root, max_count=per_shard) as writer:
            for i in range(part * per_part, min(n, (part + 1) * per_part)):
                src, place = sources[i % len(sources)], PLACES[i % len(PLACES)]
                comp = compose(src, int(rng.integers(50, 90)), (160, 128), place, rng=rng)
                key = f"{part:05d}_{1000 + i}"
                box = [float(v) for v in comp.boxes[0]]
                meta = {"key": key, "faces": [{"box": box, "landmarks": landmarks_for(box), "score": 0.99,
                                               "face_index": 0, "kept": True}]}
                writer.write(key, {"jpg": encode_jpeg(comp.image), "txt": f"{src.name} in front of {place}".encode(),
                                   "json": json.dumps(meta).encode()})
                keys.append(key)
    (Path(root) / "candidates").mkdir(parents=True, exist_ok=True)
    return keys
