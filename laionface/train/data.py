"""Reading a run's webdataset shards for training and probes.

`ShardDataset` is a torch IterableDataset over `{key}.jpg/.txt/.json` tars. Each DataLoader
worker reads the shards `i, i + workers, ...` (webdataset's split by worker), so no sample is
read twice however many workers there are. Samples whose *image* key hashes into the held-out
split (`is_held_out`) are skipped by pretraining and used by `evaluate`: a crop
(`{key}_f{n}`) is held out with its image.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import MissingInputError

SOURCES = ("cropped", "full")
HELD_OUT_PERCENT = 20
_FACE_SUFFIX = re.compile(r"_f\d+$")


def image_key(key: str) -> str:
    """The sample key of a face crop `{key}_f{n}` (or the key itself for a full image)."""
    return _FACE_SUFFIX.sub("", key)


def is_held_out(key: str, percent: int = HELD_OUT_PERCENT) -> bool:
    """Deterministic: sha1 of the image key, so a crop goes with its image and reruns agree."""
    digest = hashlib.sha1(image_key(key).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def shard_folder(source: str) -> str:
    return {"cropped": "laion_face_cropped", "full": "laion_face"}[source]


def shard_paths(run: Path | str, source: str) -> list[Path]:
    return sorted(Path(run).glob(f"{shard_folder(source)}/part-*/*.tar"))


def pick_source(run: Path | str, source: str | None) -> str:
    """`source`, or cropped when the run has LAION-FACE-cropped shards, else full; error if none."""
    run = Path(run)
    if source is None:
        source = "cropped" if shard_paths(run, "cropped") else "full"
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if not shard_paths(run, source):
        hint = f"laionface crop {run}" if source == "cropped" else f"laionface run ... --out {run} (or laionface demo --out {run})"
        raise MissingInputError(f"no {shard_folder(source)} shards under {run}; make them with: {hint}")
    return source


def iter_tar(path: Path) -> Iterator[dict[str, Any]]:
    """Samples of one tar: {"__key__": key, "jpg": bytes, "txt": bytes, "json": bytes}, in tar order."""
    current: dict[str, Any] = {}
    with tarfile.open(path) as tf:
        for member in tf:
            if not member.isfile():
                continue
            name = member.name.rsplit("/", 1)[-1]
            key, _, ext = name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[ext] = tf.extractfile(member).read()
    if current:
        yield current


def decode(sample: dict[str, Any]) -> dict[str, Any]:
    """RGB PIL image, caption str and metadata dict of a raw sample."""
    from PIL import Image

    image = Image.open(io.BytesIO(sample["jpg"]))
    return {"key": sample["__key__"], "image": image.convert("RGB"),
            "text": sample.get("txt", b"").decode("utf-8", "replace"),
            "meta": json.loads(sample["json"]) if "json" in sample else {}}


def iter_samples(paths: list[Path], split: str = "all") -> Iterator[dict[str, Any]]:
    """Decoded samples of `paths` in order; split: train (not held out), heldout, or all."""
    for path in paths:
        for raw in iter_tar(path):
            if split != "all" and is_held_out(raw["__key__"]) != (split == "heldout"):
                continue
            yield decode(raw)


def _torch_dataset():
    from torch.utils.data import IterableDataset, get_worker_info

    class ShardDataset(IterableDataset):
        """Samples of `paths` (split train/heldout/all) through `transform`, split over workers by shard.

        `shuffle_buffer` > 0 shuffles shard order and samples within a buffer, seeded by
        (seed, epoch, worker): set `.epoch` before each pass for a new order.
        """

        def __init__(self, paths: list[Path], transform: Callable[[dict], Any], split: str = "train",
                     shuffle_buffer: int = 0, seed: int = 0):
            super().__init__()
            self.paths = [Path(p) for p in paths]
            self.transform = transform
            self.split = split
            self.shuffle_buffer = shuffle_buffer
            self.seed = seed
            self.epoch = 0

        def worker_paths(self) -> tuple[list[Path], int]:
            info = get_worker_info()
            wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
            paths = list(self.paths)
            if self.shuffle_buffer:
                random.Random(f"{self.seed}-{self.epoch}").shuffle(paths)  # same order in every worker
            return paths[wid::workers], wid

        def __iter__(self):
            paths, wid = self.worker_paths()
            samples = (self.transform(s) for s in iter_samples(paths, self.split))
            if not self.shuffle_buffer:
                yield from samples
                return
            rng = random.Random(f"{self.seed}-{self.epoch}-{wid}")
            buffer: list = []
            for item in samples:
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(item)
                    continue
                i = rng.randrange(len(buffer))
                buffer[i], item = item, buffer[i]
                yield item
            rng.shuffle(buffer)
            yield from buffer

    return ShardDataset


def shard_dataset(paths: list[Path], transform: Callable[[dict], Any], split: str = "train",
                  shuffle_buffer: int = 0, seed: int = 0):
    return _torch_dataset()(paths, transform, split, shuffle_buffer, seed)


# ---------------------------------------------------------------- images -> tensors


def to_tensor(image, size: int):
    """PIL image -> normalised (3, size, size) float tensor (the image is squashed to the square)."""
    import torch
    from PIL import Image

    from .model import MEAN, STD

    arr = np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    arr = (arr - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def center_square(image):
    """The largest centred square of a PIL image (what CLIP's preprocess sees)."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s))


def kept_faces(meta: dict) -> list[dict]:
    return [f for f in meta.get("faces", []) if f.get("kept", True)]


def face_crop(image, box, landmarks, rng: random.Random, scale: tuple[float, float] = (1.3, 2.0), shift: float = 0.1):
    """An unaligned square crop around `box` (random size `scale` x the box's longer side, random
    centre shift up to `shift` x the crop side); landmarks in the crop's coordinates, as fractions."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * rng.uniform(*scale)
    cx = (x0 + x1) / 2 + rng.uniform(-shift, shift) * side
    cy = (y0 + y1) / 2 + rng.uniform(-shift, shift) * side
    left, top = cx - side / 2, cy - side / 2
    crop = image.crop((round(left), round(top), round(left + side), round(top + side)))  # pads with black outside
    points = None
    if landmarks is not None:
        pts = np.asarray(landmarks, np.float32).reshape(5, 2)
        points = (pts - np.array([round(left), round(top)], np.float32)) / max(1.0, round(left + side) - round(left))
    return crop, points


class TrainTransform:
    """Decoded sample -> (image tensor, token ids) for pretraining.

    cropped: a random resized crop (70-100% of the face crop) and a flip. full: half the time a
    loose crop around a random kept face (FaRL's random crops, biased to the faces the run kept,
    so a 64-112 px model sees them at a usable size), otherwise a random resized crop of the
    whole image; then a flip.
    """

    def __init__(self, size: int, tokenizer, source: str, seed: int = 0):
        self.size = size
        self.tokenizer = tokenizer
        self.source = source
        self.rng = random.Random(seed)

    def _random_resized(self, image, area: tuple[float, float]):
        w, h = image.size
        frac = self.rng.uniform(*area)
        side = max(8, int(min(w, h, (w * h * frac) ** 0.5)))
        left, top = self.rng.randint(0, w - side), self.rng.randint(0, h - side)
        return image.crop((left, top, left + side, top + side))

    def __call__(self, sample: dict):
        from PIL import Image

        image = sample["image"]
        faces = kept_faces(sample["meta"]) if self.source == "full" else []
        if faces and self.rng.random() < 0.5:
            face = self.rng.choice(faces)
            image, _ = face_crop(image, face["box"], None, self.rng, scale=(1.2, 3.0), shift=0.2)
        else:
            image = self._random_resized(image, (0.7, 1.0) if self.source == "cropped" else (0.3, 1.0))
        if self.rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(image, self.size), self.tokenizer([sample["text"]])[0]
