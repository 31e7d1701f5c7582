"""Score: CLIP image-text similarity with open_clip, the caption filter, and embeddings.

One open_clip model per worker (`setup()`, torch imported there and nowhere at module level:
select, download and detect never pay for it). For the rows still kept, the full image, each
face crop (the `crops` column, when the crop stage ran) and the caption are embedded (no_grad,
in batches of `batch_size`, on the GPU when there is one) and L2-normalised; `clip_score` is
the cosine of image and caption, `crop_clip_scores` the cosine of each crop and the caption.
The threshold rule (`apply_to`) drops rows as `low_clip_score`. The float16 embeddings ride
along as `img_emb` / `text_emb` columns until `EmbeddingsWriter` takes them off the batch and
writes them in clip-retrieval's layout.

Weights load offline only: a checkpoint path, or an open_clip tag whose file is already in
the user's open_clip / Hugging Face cache. Nothing is downloaded; when nothing is found the
stage stops with one line saying how to provide weights, or `skip: true`.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, ModelNotFoundError
from ..imagedecode import DecodeError, decode_image
from ..runfolder import atomic_path, read_parquet
from ..status import KEPT, drop, set_drops
from .base import Stage

APPLY_TO = ("image", "crop_max", "none")
EMBEDDING_COLUMNS = ("img_emb", "text_emb")

# The one command line that fills the cache for a tag (run once, online); quoted in errors.
_FETCH_HINT = "python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{tag}')\""


@dataclass(frozen=True)
class ScoreConfig:
    model: str = "ViT-B-32"  # an open_clip model name (open_clip.list_models()), or hf-hub:/local-dir:
    # A checkpoint file (.pt/.bin/.safetensors, open_clip or OpenAI state dict), or an open_clip
    # tag for `model` (e.g. openai, laion400m_e32) whose weights are already in the user's
    # cache (~/.cache/huggingface/hub or ~/.cache/clip). Never downloaded. None: no weights
    # (an error, unless skip).
    pretrained: str | None = None
    # 0.28, applied to the full image by default. LAION-400M kept pairs with cosine >= 0.3 under
    # OpenAI's ViT-B/32, and every LAION-Face row already passed that test on the image LAION
    # crawled. Re-scoring today's bytes with the same model (`pretrained: openai`) mainly
    # catches URLs that now serve another image (those score ~0.1-0.2). 0.3 again would also
    # drop the pairs that sat just above the line and moved a little (re-encoded JPEGs, other
    # resizes): for face photos those are mostly captions naming a person, which CLIP scores
    # lower than described scenes. 0.28 keeps them and still removes swapped images.
    # The figure is for ViT-B/32 OpenAI weights; other weights need their own threshold.
    threshold: float = 0.28
    # image: clip_score of the full image; crop_max: the best crop's score (rows without a
    # scored crop fall back to the full image); none: record scores, drop nothing.
    apply_to: str = "image"
    batch_size: int = 64  # images (and captions) per forward pass
    threads: int | None = None  # image decode/preprocess threads; None: min(8, CPUs)
    # torch's intra-op threads for the model; None: the machine's CPUs. Set, never inherited:
    # Ray sets OMP_NUM_THREADS to an actor's CPU share, and CLIP's floats change with the
    # thread count for some batch sizes (measured: 5 and 7 rows, ~1e-7), so a local run and a
    # Ray run on one machine would not write the same scores.
    torch_threads: int | None = None
    device: str = "auto"  # auto: cuda when available, else cpu; or cpu, cuda, cuda:1
    # Decode the next batch on the `threads` pool while the model runs on this one. None: on
    # with a GPU; off on CPU, where the pool would fight torch's own threads for the cores
    # (then each batch is decoded by the whole pool first, and the model gets every core).
    prefetch: bool | None = None
    # True (`score: {skip: true}`, the pipeline's "clip: skip"): load nothing, leave clip_score
    # null and drop nothing; config.json and the config hash record that scoring was off.
    skip: bool = False


# ---------------------------------------------------------------- finding weights, offline


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face hub in offline mode (env var and the already-imported constant)."""
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants
    except ImportError:
        constants = None
    old_const = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_const


def _no_weights(model: str, why: str) -> ModelNotFoundError:
    """One line: what is missing, and the three ways out (a file, a cached tag, skip)."""
    if model.startswith("hf-hub:"):
        hint = f"python -c \"import open_clip; open_clip.create_model('{model}')\""
    else:  # openai: the weights LAION's 0.3 (and our 0.28) threshold was set with
        hint = _FETCH_HINT.format(model=model, tag="openai" if model.startswith("ViT-B-32") else "TAG")
    return ModelNotFoundError(
        f"{why}; give score.pretrained (--pretrained) a checkpoint file, or an open_clip tag already in "
        f"your cache (fill it once, online: {hint}), or set score.skip: true to leave clip_score empty"
    )


def _cached_tag_file(tag_cfg: dict) -> str | None:
    """The weights file of an open_clip tag if it is already on disk; never downloads."""
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            # open_clip's convention: 'org/repo/' = the default file names, 'org/repo/file' = that file
            repo, filename = os.path.split(hub)
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            if filename.endswith((".bin", ".pth")):
                names.insert(0, filename[:-4] + ".safetensors")
            for name in names:
                found = try_to_load_from_cache(repo, name)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = tag_cfg.get("url", "")
    if url:
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def resolve_weights(model: str, pretrained: str | None) -> tuple[str | None, dict]:
    """(checkpoint file or None, the tag's preprocessing/quick_gelu facts); raises ModelNotFoundError.

    `hf-hub:` and `local-dir:` model names carry their own weights: the hub one must already
    be cached.
    """
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise _no_weights(model, f"score: {folder} holds no open_clip_config.json (a local-dir: model is a folder "
                                     "with open_clip_config.json and the weights, as `laionface pretrain` writes)")
        return None, {}
    if model.startswith("hf-hub:"):
        from huggingface_hub import try_to_load_from_cache

        repo = model[len("hf-hub:"):]
        if not isinstance(try_to_load_from_cache(repo, "open_clip_config.json"), str):
            raise _no_weights(model, f"score: {model} is not in your Hugging Face cache")
        return None, {}
    if not pretrained:
        raise _no_weights(model, f"score: no CLIP weights given for {model} (none ship with laionface)")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path), {}
    tag_cfg = get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        if os.sep in pretrained or path.suffix:
            raise _no_weights(model, f"score: CLIP checkpoint {pretrained} does not exist")
        known = list_pretrained_tags_by_model(model)
        tags = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "") if known else "none"
        raise _no_weights(model, f"score: {pretrained!r} is neither a file nor an open_clip tag of {model} (tags: {tags})")
    found = _cached_tag_file(tag_cfg)
    if found is None:
        raise ModelNotFoundError(
            f"score: the weights of {model}/{pretrained} are not in your open_clip or Hugging Face cache and "
            f"laionface never downloads them; fill the cache once, online: "
            f"{_FETCH_HINT.format(model=model, tag=pretrained)}, or give score.pretrained a checkpoint file, "
            "or set score.skip: true"
        )
    return found, tag_cfg


@dataclass
class ClipModel:
    """An open_clip model in eval mode on its device, with its preprocessing and tokenizer."""

    model: Any
    preprocess: Callable[[Any], Any]  # PIL image -> (3, H, W) float tensor
    tokenizer: Callable[[list[str]], Any]  # captions -> (n, context_length) int tensor
    device: str
    name: str  # for messages: model/weights


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"score.device is {device!r} but torch sees no CUDA device; use device: auto or cpu")
    return device


def check_weights(config: ScoreConfig) -> tuple[str | None, dict]:
    """What `load_clip` would load (see `resolve_weights`), building nothing: raises
    ModelNotFoundError / ConfigError with the one line to show, so a command can stop early."""
    try:
        import open_clip
        import torch  # noqa: F401
    except ImportError:
        raise ModelNotFoundError(
            "CLIP scoring needs open_clip and torch: pip install 'laionface[clip]', or set score.skip: true"
        ) from None
    name = config.model
    if not (name.startswith(("hf-hub:", "local-dir:")) or open_clip.get_model_config(name)):
        raise ConfigError(f"score.model {name!r} is not an open_clip model; open_clip.list_models() names them")
    return resolve_weights(name, config.pretrained)


def load_clip(config: ScoreConfig) -> ClipModel:
    """Load the model the config names, offline (see `resolve_weights`)."""
    import open_clip

    checkpoint, tag_cfg = check_weights(config)
    name = config.model
    device = pick_device(config.device)
    kwargs: dict[str, Any] = {}
    if tag_cfg.get("quick_gelu"):  # what open_clip does itself when given the tag
        kwargs["force_quick_gelu"] = True
    pp = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    if pp:
        kwargs["force_preprocess_cfg"] = pp
    label = f"{name}/{config.pretrained}" if config.pretrained else name
    try:
        with _offline():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=checkpoint, device=device, **kwargs
            )
            tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # open_clip raises RuntimeError/KeyError/OSError for bad files
        msg = " ".join(str(exc).split())[:300]
        raise ModelNotFoundError(
            f"score: cannot load CLIP weights {label} ({type(exc).__name__}: {msg}); "
            f"check that score.pretrained is a checkpoint of {name}"
        ) from None
    model.eval()
    return ClipModel(model, preprocess, tokenizer, device, label)


# ---------------------------------------------------------------- the stage


def _fixed_list(values: np.ndarray, present: np.ndarray) -> pa.Array:
    """(n, D) float16 rows -> fixed_size_list<halffloat, D>, null where not `present`."""
    n, dim = values.shape
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float16).reshape(-1), pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~present) if n else None)


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, values) if i >= 0 else table.append_column(name, values)


class ScoreStage(Stage):
    name = "score"
    Config = ScoreConfig
    reads = ("status", "error", "image", "TEXT", "crops")
    writes = ("clip_score", "crop_clip_scores", "img_emb", "text_emb", "status", "error")
    holds_model = True

    def __init__(self, config: ScoreConfig | None = None, clip: ClipModel | None = None) -> None:
        """`clip`: an already-loaded model (benchmarks, tools); otherwise `setup()` loads one."""
        super().__init__(config)
        c = self.config
        if c.apply_to not in APPLY_TO:
            raise ConfigError(f"score.apply_to must be one of {', '.join(APPLY_TO)}, not {c.apply_to!r}")
        if c.batch_size < 1 or any(t is not None and t < 1 for t in (c.threads, c.torch_threads)) or not -1 <= c.threshold <= 1:
            raise ConfigError(
                f"score: batch_size >= 1, threads >= 1 and -1 <= threshold <= 1 "
                f"(got {c.batch_size}, {c.threads}, {c.threshold})"
            )
        self.clip = clip
        self._pool: ThreadPoolExecutor | None = None

    def setup(self) -> None:
        if self.config.skip or self.clip is not None:
            return
        import torch

        torch.set_num_threads(self.config.torch_threads or os.cpu_count() or 1)
        self.clip = load_clip(self.config)

    @property
    def workers(self) -> int:
        return self.config.threads or max(1, min(8, os.cpu_count() or 1))

    # -- encoding ----------------------------------------------------------------------

    def _prepare(self, data: bytes | None):
        """Image bytes -> preprocessed tensor, or a readable error string."""
        from PIL import Image

        if not data:
            return "no image bytes"
        try:
            rgb = decode_image(data, None, fast=False).rgb  # EXIF-upright 8-bit RGB, full size
        except DecodeError as exc:
            return str(exc)
        return self.clip.preprocess(Image.fromarray(rgb))

    @property
    def prefetch(self) -> bool:
        if self.config.prefetch is not None:
            return self.config.prefetch
        return self.clip is not None and str(self.clip.device).startswith("cuda")

    def _pool_get(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="score-decode")
        return self._pool

    def encode_images(self, blobs: list[bytes | None]) -> tuple[np.ndarray, list[str | None]]:
        """L2-normalised float32 embeddings (NaN rows where decoding failed) and per-image errors.

        Batch k+1 is decoded on the thread pool while the model runs on batch k.
        """
        import torch

        n, bs = len(blobs), self.config.batch_size
        errors: list[str | None] = [None] * n
        chunks = [range(s, min(s + bs, n)) for s in range(0, n, bs)]
        pool = self._pool_get()

        def submit(chunk: range) -> list[Future]:
            return [pool.submit(self._prepare, blobs[i]) for i in chunk]

        prefetch = self.prefetch
        out: np.ndarray | None = None
        pending = submit(chunks[0]) if chunks else []
        for k, chunk in enumerate(chunks):
            futures = pending
            if prefetch and k + 1 < len(chunks):
                pending = submit(chunks[k + 1])
            results = [f.result() for f in futures]
            good = [(i, r) for i, r in zip(chunk, results) if not isinstance(r, str)]
            for i, r in zip(chunk, results):
                if isinstance(r, str):
                    errors[i] = r
            if good:
                batch = torch.stack([r for _, r in good]).to(self.clip.device, non_blocking=True)
                with torch.no_grad():
                    emb = self.clip.model.encode_image(batch)
                    emb = torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
                if out is None:
                    out = np.full((n, emb.shape[1]), np.nan, np.float32)
                out[[i for i, _ in good]] = emb
            if not prefetch and k + 1 < len(chunks):  # decode only once the model is done
                pending = submit(chunks[k + 1])
        return (out if out is not None else np.full((n, 0), np.nan, np.float32)), errors

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 caption embeddings, one row per caption."""
        import torch

        bs = self.config.batch_size
        parts = []
        for s in range(0, len(texts), bs):
            tokens = self.clip.tokenizer(texts[s : s + bs]).to(self.clip.device)
            with torch.no_grad():
                emb = self.clip.model.encode_text(tokens)
                parts.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    # -- the batch ---------------------------------------------------------------------

    def _skipped(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        table = _set(table, "clip_score", pa.nulls(n, pa.float32()))
        if "crops" in table.column_names:
            table = _set(table, "crop_clip_scores", pa.nulls(n, pa.list_(pa.float32())))
        return table

    def __call__(self, table: pa.Table) -> pa.Table:
        if self.config.skip:
            return self._skipped(table)
        self.setup()
        n = table.num_rows
        alive = np.flatnonzero(pc.fill_null(pc.equal(table["status"], KEPT), False).to_numpy(zero_copy_only=False))
        images = table["image"]
        texts = table["TEXT"]
        img, img_err = self.encode_images([images[int(r)].as_py() for r in alive])
        txt = self.encode_texts([texts[int(r)].as_py() or "" for r in alive])
        dim = txt.shape[1] if len(alive) else 0
        if img.shape[1] == 0:
            img = np.full((len(alive), dim), np.nan, np.float32)
        scores = np.einsum("ij,ij->i", img, txt) if len(alive) else np.zeros(0, np.float32)

        clip_score: list[float | None] = [None] * n
        for j, r in enumerate(alive):
            clip_score[r] = None if img_err[j] else float(scores[j])

        crop_scores: list[list[float | None] | None] | None = None
        best_crop: dict[int, float] = {}
        if "crops" in table.column_names:
            crop_scores = [None] * n
            crops = table["crops"]
            owners, blobs = [], []
            for j, r in enumerate(alive):
                row_crops = crops[int(r)].as_py() or []
                crop_scores[r] = []
                for c in row_crops:
                    owners.append(j)
                    blobs.append(c.get("jpg"))
            if blobs:
                cemb, cerr = self.encode_images(blobs)
                if cemb.shape[1] == 0:
                    cemb = np.full((len(blobs), dim), np.nan, np.float32)
                cs = np.einsum("ij,ij->i", cemb, txt[owners])
                for k, j in enumerate(owners):
                    r = alive[j]
                    s = None if cerr[k] else float(cs[k])
                    crop_scores[r].append(s)
                    if s is not None:
                        best_crop[int(r)] = max(best_crop.get(int(r), -2.0), s)

        new_status: list[str | None] = [None] * n
        new_error: list[str | None] = [None] * n
        c = self.config
        for j, r in enumerate(alive):
            if img_err[j]:
                new_status[r], new_error[r] = drop("decode_failed"), img_err[j]
                continue
            if c.apply_to == "none":
                continue
            judged, what = clip_score[r], "clip_score"
            if c.apply_to == "crop_max" and int(r) in best_crop:
                judged, what = best_crop[int(r)], "best crop_clip_score"
            if judged is not None and judged < c.threshold:
                new_status[r] = drop("low_clip_score")
                new_error[r] = f"{what} {judged:.4f} < {c.threshold} ({self.clip.name})"

        present = np.zeros(n, bool)
        ok = [j for j in range(len(alive)) if not img_err[j]]
        present[alive[ok]] = True
        img_full = np.zeros((n, dim), np.float16)
        txt_full = np.zeros((n, dim), np.float16)
        if ok:
            img_full[alive[ok]] = img[ok]
            txt_full[alive[ok]] = txt[ok]
        table = _set(table, "clip_score", pa.array(clip_score, pa.float32()))
        if crop_scores is not None:
            table = _set(table, "crop_clip_scores", pa.array(crop_scores, pa.list_(pa.float32())))
        if dim:  # a batch with nothing scored carries no embedding columns
            table = _set(table, "img_emb", _fixed_list(img_full, present))
            table = _set(table, "text_emb", _fixed_list(txt_full, present))
        return set_drops(table, new_status, new_error)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def crop_scores_for_faces(faces: pa.Table, batch: pa.Table) -> pa.Table:
    """Fill the FACES table's `crop_clip_score` from a scored batch (by key and face_index)."""
    if "crop_clip_scores" not in batch.column_names or not faces.num_rows:
        return faces
    by_face: dict[tuple[str, int], float | None] = {}
    for key, crops, scores in zip(
        batch["key"].to_pylist(), batch["crops"].to_pylist(), batch["crop_clip_scores"].to_pylist()
    ):
        for crop, score in zip(crops or [], scores or []):
            by_face[(key, int(crop["face_index"]))] = score
    values = [by_face.get((k, int(i))) for k, i in zip(faces["key"].to_pylist(), faces["face_index"].to_pylist())]
    i = faces.schema.get_field_index("crop_clip_score")
    return faces.set_column(i, faces.schema.field(i), pa.array(values, pa.float32()))


# ---------------------------------------------------------------- clip-retrieval layout


def embedding_paths(root: Path, part: int) -> dict[str, Path]:
    """clip-retrieval's layout under RUN/embeddings/, N = the part number (unpadded, as
    clip-retrieval numbers its own files): img_emb/img_emb_N.npy, text_emb/text_emb_N.npy,
    metadata/metadata_N.parquet."""
    root = Path(root)
    return {
        "img_emb": root / "img_emb" / f"img_emb_{part}.npy",
        "text_emb": root / "text_emb" / f"text_emb_{part}.npy",
        "metadata": root / "metadata" / f"metadata_{part}.parquet",
    }


METADATA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string()),  # clip-retrieval's column names: url, caption
        pa.field("caption", pa.string()),
        pa.field("SAMPLE_ID", pa.int64()),
        pa.field("clip_score", pa.float32()),
    ],
    metadata={"laionface.table": "embeddings_metadata"},
)


class EmbeddingsWriter:
    """Collects one part's embeddings from scored batches; `close()` writes the three files.

    Rows: those still `kept` after scoring (the LAION-FACE samples), sorted by key, so the
    files do not depend on batch order. Row i of img_emb_N.npy, text_emb_N.npy and
    metadata_N.parquet is the same sample. Each file is written atomically; a part with no
    row leaves no files (stale ones from an earlier run of the part are removed).
    """

    def __init__(self, root: Path, part: int) -> None:
        self.paths = embedding_paths(root, part)
        self._meta: list[pa.Table] = []
        self._img: list[np.ndarray] = []
        self._txt: list[np.ndarray] = []

    def add(self, batch: pa.Table) -> pa.Table:
        """Take the embeddings of the batch's kept rows; return the batch without embedding columns."""
        if "img_emb" not in batch.column_names:
            return batch
        mask = pc.and_(pc.equal(batch["status"], KEPT), pc.is_valid(batch["img_emb"]))
        rows = batch.filter(pc.fill_null(mask, False))
        if rows.num_rows:
            for name, sink in (("img_emb", self._img), ("text_emb", self._txt)):
                col = rows[name].combine_chunks()
                dim = col.type.list_size
                sink.append(col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float16))
            n = rows.num_rows
            col = lambda name: rows[name] if name in rows.column_names else pa.nulls(n)  # noqa: E731
            self._meta.append(
                pa.Table.from_arrays(
                    [col("key"), col("URL"), col("TEXT"), col("SAMPLE_ID"), col("clip_score")],
                    names=METADATA.names,
                ).cast(METADATA)
            )
        return batch.drop_columns([c for c in EMBEDDING_COLUMNS if c in batch.column_names])

    def close(self) -> int:
        """Write (or remove) the part's files; the number of rows written."""
        if not self._meta:
            for p in self.paths.values():
                p.unlink(missing_ok=True)
            return 0
        meta = pa.concat_tables(self._meta)
        order = pc.sort_indices(meta, [("key", "ascending")]).to_numpy()
        meta = meta.take(order)
        for name, arrays in (("img_emb", self._img), ("text_emb", self._txt)):
            with atomic_path(self.paths[name]) as tmp, open(tmp, "wb") as f:
                np.save(f, np.concatenate(arrays)[order])
        with atomic_path(self.paths["metadata"]) as tmp:
            pq.write_table(meta, tmp, compression="zstd")
        return meta.num_rows


def read_embeddings(root: Path, part: int) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """(img_emb, text_emb, metadata) of one part, as written by EmbeddingsWriter."""
    paths = embedding_paths(root, part)
    return np.load(paths["img_emb"]), np.load(paths["text_emb"]), read_parquet(paths["metadata"])

