"""Download: RUN/candidates/part-N -> RUN/raw/part-N/ (img2dataset webdataset) + per-row outcome.

img2dataset does the fetching (as a library, one job per part); this module only decides
which rows to fetch, guards addresses, and maps img2dataset's per-URL `status` /
`error_message` onto our status vocabulary. `RUN/raw/part-N/_download.parquet` is written
last and marks the part's download as complete (resume is a file check).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..addressguard import check_url
from ..runfolder import RunFolder, read_parquet, write_parquet
from ..status import KEPT, TRANSIENT_DOWNLOAD_FAILURES, drop, reason_of

# OpenCV (img2dataset's decoder) would otherwise allocate up to 2^30 pixels for one image;
# hold it to Pillow's decompression-bomb limit. Read by cv2 at first decode, in the workers.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(89_478_485))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations, which phones home

# Columns the download result adds to a candidates table.
RESULT = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("raw_shard", pa.string()),
        pa.field("raw_key", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
)
_CARRIED = ["SAMPLE_ID", "LICENSE", "NSFW", "similarity"]  # kept in img2dataset's json/parquet
_KEY_COL = "laionface_key"  # our key, carried through img2dataset (its own `key` is positional)


@dataclass(frozen=True)
class DownloadConfig:
    resize_mode: str = "no"  # LAION-Face's recipe: keep the downloaded image; "max_side" downscales
    image_size: int = 1024  # the max side when resize_mode is "max_side" (detection needs <~1000 px)
    encode_quality: int = 95
    timeout: int = 10
    retries: int = 0  # img2dataset's in-job retries; --retry-failed re-runs transient failures later
    thread_count: int = 64
    processes_count: int = 1
    number_sample_per_shard: int = 10000
    min_image_size: int = 0
    max_image_area: float = math.inf
    max_aspect_ratio: float = math.inf
    user_agent_token: str | None = "laionface"
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    allow_private_addresses: bool = False


_FAILURE_PATTERNS: list[tuple[str, str]] = [
    (r"HTTP Error 429", "http_429"),
    (r"HTTP Error 5\d\d", "http_5xx"),
    (r"HTTP Error 30\d.*(infinite loop|redirect)", "redirect_loop"),
    (r"HTTP Error (4\d\d)", r"http_\1"),
    (r"timed out|timeout", "timeout"),
    (r"Name or service not known|nodename nor servname|name resolution|getaddrinfo|No address associated", "dns"),
    (r"CV_IO_MAX_IMAGE_PIXELS", "too_large"),  # OpenCV's pixel limit: a decompression bomb
    (r"[Cc]onnection|Remote end closed|IncompleteRead|reset by peer|Broken pipe|EOF occurred", "connection"),
    (r"[Ii]mage decoding error|cannot identify|decod", "decode"),
    (r"encod", "encode"),
    (r"image too small", "too_small"),
    (r"area too large", "too_large"),
    (r"aspect ratio too large", "aspect_ratio"),
    (r"unknown url type|no host given", "bad_url"),
    (r"[Cc]ertificate|SSL", "ssl"),
]


def classify_failure(message: str | None) -> str:
    """img2dataset error_message -> the short reason after `download_failed:`."""
    text = message or ""
    if "X-Robots-Tag" in text:
        return "opted_out"
    for pattern, reason in _FAILURE_PATTERNS:
        m = re.search(pattern, text)
        if m:
            return m.expand(reason)
    return "other"


def _status_for(i2d_status: str | None, message: str | None) -> tuple[str, str | None]:
    if i2d_status == "success":
        return KEPT, None
    reason = classify_failure(message)
    if reason == "opted_out":
        return drop("opted_out"), message
    return drop("download_failed", reason), message or "no error message from img2dataset"


def _img2dataset_args(config: DownloadConfig, url_list: Path, out: Path) -> dict:
    resize = config.resize_mode
    if resize not in ("no", "max_side"):
        from ..errors import ConfigError

        raise ConfigError(f"download.resize_mode: {resize!r} is not one of: no, max_side")
    return dict(
        url_list=str(url_list),
        input_format="parquet",
        url_col="URL",
        caption_col="TEXT",
        save_additional_columns=[_KEY_COL, *_CARRIED],
        output_format="webdataset",
        output_folder=str(out),
        processes_count=config.processes_count,
        thread_count=config.thread_count,
        number_sample_per_shard=config.number_sample_per_shard,
        resize_mode="no" if resize == "no" else "keep_ratio_largest",
        image_size=config.image_size,
        resize_only_if_bigger=True,
        skip_reencode=True,
        encode_quality=config.encode_quality,
        timeout=config.timeout,
        retries=config.retries,
        min_image_size=config.min_image_size,
        max_image_area=config.max_image_area,
        max_aspect_ratio=config.max_aspect_ratio,
        user_agent_token=config.user_agent_token,
        disallowed_header_directives=list(config.disallowed_header_directives),
        enable_wandb=False,
        incremental_mode="incremental",  # the caller clears half-done folders,
        compute_hash="sha256",
        extract_exif=False,
        distributor="multiprocessing",
    )


@contextlib.contextmanager
def _stdout_to(log: Path):
    """img2dataset and its spawned workers print per-shard chatter to fd 1: send it to a log."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def run_img2dataset(rows: pa.Table, config: DownloadConfig, out: Path, run_root: Path) -> pa.Table:
    """Fetch `rows` (key, URL, TEXT, carried columns) into `out`; one RESULT row per input row."""
    from img2dataset import download as i2d_download  # lazy: pulls in its own heavy deps

    out.parent.mkdir(parents=True, exist_ok=True)
    url_list = out.parent / f".{out.name}.urls.parquet"
    pq.write_table(rows.select(["URL", "TEXT", *_CARRIED]).append_column(_KEY_COL, rows["key"]), url_list)
    try:
        with _stdout_to(out.parent / f"{out.name}.img2dataset.log"):
            i2d_download(**_img2dataset_args(config, url_list, out))
    finally:
        url_list.unlink(missing_ok=True)
    by_key = {}
    for shard in sorted(out.glob("[0-9]*.parquet")):
        tar = str(shard.with_suffix(".tar").relative_to(run_root))
        for r in read_parquet(shard).to_pylist():
            r["shard_file"] = tar
            by_key[r[_KEY_COL]] = r
    out_rows = []
    for key in rows["key"].to_pylist():
        r = by_key.get(key)
        if r is None:  # img2dataset lost the row (a crashed shard): say so, never drop it
            out_rows.append({"key": key, "status": drop("download_failed", "lost"), "error": "img2dataset wrote no result for this row"})
            continue
        status, error = _status_for(r["status"], r["error_message"])
        ok = status == KEPT
        out_rows.append({
            "key": key, "status": status, "error": error,
            "raw_shard": r["shard_file"] if ok else None, "raw_key": r["key"] if ok else None,
            "sha256": r["sha256"] if ok else None,
            "original_width": r["original_width"], "original_height": r["original_height"],
            "width": r["width"], "height": r["height"],
        })
    return pa.Table.from_pylist(out_rows, schema=RESULT)


def _fetchable(table: pa.Table, config: DownloadConfig) -> tuple[pa.Table, pa.Table]:
    """Split alive rows into (to fetch, refused by the address guard) RESULT rows."""
    alive = table.filter(pc.equal(table["status"], KEPT))
    reasons = [check_url(u, config.allow_private_addresses) for u in alive["URL"].to_pylist()]
    refused = [{"key": k, "status": drop("refused_address"), "error": why} for k, why in zip(alive["key"].to_pylist(), reasons) if why]
    keep = pa.array([why is None for why in reasons], pa.bool_())
    return alive.filter(keep), pa.Table.from_pylist(refused, schema=RESULT)


def _merge(base: pa.Table, updates: pa.Table) -> pa.Table:
    """Replace `base` rows by key with `updates` rows, keeping base order."""
    if updates.num_rows == 0:
        return base
    new = {r["key"]: r for r in updates.to_pylist()}
    return pa.Table.from_pylist([new.get(r["key"], r) for r in base.to_pylist()], schema=RESULT)


def download_marker(run: RunFolder, part: int) -> Path:
    return run.raw(part) / "_download.parquet"


def read_download_result(run: RunFolder, part: int) -> pa.Table:
    """A finished part's RESULT rows, as `download_part` returned them."""
    return read_parquet(download_marker(run, part))


def download_part(run: RunFolder, part: int, config: DownloadConfig, retry_failed: bool = False) -> pa.Table:
    """Download one part (or re-download its transient failures); return one RESULT row per candidate.

    A finished part is not fetched again; a half-done one (no marker) is redone from scratch.
    """
    marker = download_marker(run, part)
    if marker.exists() and not retry_failed:
        return read_parquet(marker)
    candidates = run.read_candidates(part)
    if retry_failed:
        if not marker.exists():
            return download_part(run, part, config)
        result = read_parquet(marker)
        failed = [
            k for k, s in zip(result["key"].to_pylist(), result["status"].to_pylist())
            if reason_of(s) == "download_failed" and s.split(":", 1)[1] in TRANSIENT_DOWNLOAD_FAILURES
        ]
        if not failed:
            return result
        todo = candidates.filter(pc.is_in(candidates["key"], pa.array(failed))).set_column(
            candidates.schema.get_field_index("status"), "status", pa.array([KEPT] * len(failed)))
        todo, refused = _fetchable(todo, config)  # the guard applies to retries too
        attempt = 1 + sum(p.is_dir() for p in run.raw(part).glob("retry-*"))
        fetched = run_img2dataset(todo, config, run.raw(part) / f"retry-{attempt}", run.root) if todo.num_rows else refused.schema.empty_table()
        result = _merge(_merge(result, refused), fetched)
    else:
        if run.raw(part).exists():
            shutil.rmtree(run.raw(part))  # half-done: img2dataset shards without our marker
        fetch, refused = _fetchable(candidates, config)
        fetched = run_img2dataset(fetch, config, run.raw(part), run.root) if fetch.num_rows else pa.Table.from_pylist([], schema=RESULT)
        dropped = candidates.select(["key", "status", "error"])
        base = pa.Table.from_pylist(
            [{"key": k, "status": s, "error": e} for k, s, e in zip(*(dropped[c].to_pylist() for c in ("key", "status", "error")))],
            schema=RESULT,
        )
        result = _merge(_merge(base, refused), fetched)
    write_parquet(result, marker)
    return result
