"""The status vocabulary: every row ends as `kept` or the first reason it was dropped.

A status is a word from DROP_REASONS, optionally followed by `:<detail>` for families
(`download_failed:timeout`). While a part is in flight, `kept` means "still alive";
each stage only touches rows that are still `kept` and sets the first drop reason.
"""

from __future__ import annotations

import pyarrow as pa

KEPT = "kept"

# reason -> one line for the manifest docs and the report legend
DROP_REASONS: dict[str, str] = {
    # select
    "null_url": "URL is missing",
    "bad_url": "URL is not http(s)",
    "null_sample_id": "SAMPLE_ID is missing",
    "duplicate_sample_id": "SAMPLE_ID already seen earlier in the part",
    "duplicate_url": "URL already seen earlier in the run (first wins)",
    "empty_caption": "caption is empty",
    "small_meta_size": "metadata WIDTH/HEIGHT below min_width/min_height",
    "nsfw": "NSFW tag not in allowed_nsfw",
    "low_laion_similarity": "LAION similarity below min_similarity",
    # download
    "refused_address": "URL host is loopback/private/link-local/reserved (address guard)",
    "opted_out": "server sent a disallowed X-Robots-Tag directive (noai, ...)",
    "download_failed": "download or decode failed; detail after ':'",
    # detect
    "decode_failed": "downloaded bytes could not be decoded as an image",
    "no_face": "no face above min_score",
    "face_too_small": "faces found but all smaller than min_face_size / min_face_fraction",
    # score
    # With score.skip (the pipeline's "clip: skip") nothing is dropped: clip_score stays null and
    # config.json / config_hash record that scoring was off. A status would have to drop the row.
    "low_clip_score": "CLIP image-text similarity below score.threshold (see score.apply_to)",
    # audit
    "duplicate": "exact or near duplicate of an earlier sample (see duplicate_of)",
    "taken_down": "removed on request (see takedowns.parquet)",
}

# Download failures worth retrying with --retry-failed (transient on the server side).
TRANSIENT_DOWNLOAD_FAILURES = frozenset({"timeout", "connection", "http_5xx", "http_429"})


def drop(reason: str, detail: str | None = None) -> str:
    """Build a status string, checking the reason is in the vocabulary."""
    if reason not in DROP_REASONS:
        raise KeyError(f"unknown drop reason {reason!r}; add it to laionface.status.DROP_REASONS")
    return f"{reason}:{detail}" if detail else reason


def is_valid(status: str) -> bool:
    return status == KEPT or status.split(":", 1)[0] in DROP_REASONS


def reason_of(status: str) -> str:
    """`download_failed:timeout` -> `download_failed`."""
    return status.split(":", 1)[0]


def alive_mask(table: pa.Table) -> pa.ChunkedArray:
    """Rows a stage should still process."""
    import pyarrow.compute as pc  # here, not at the top: `laionface select` never needs it (~70 ms)

    return pc.equal(table["status"], KEPT)


def set_drops(table: pa.Table, new_status: list[str | None], new_error: list[str | None]) -> pa.Table:
    """Apply per-row drop statuses (None = unchanged) to rows that are still kept.

    The first drop reason wins: a row already dropped keeps its status and error.
    """
    status = table["status"].to_pylist()
    error = table["error"].to_pylist()
    for i, (s, e) in enumerate(zip(new_status, new_error)):
        if s is not None and status[i] == KEPT:
            status[i] = s
            error[i] = e
    table = table.set_column(table.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
    return table.set_column(table.schema.get_field_index("error"), "error", pa.array(error, pa.string()))
