"""Download stage against real HTTP on 127.0.0.1 (the FaultServer), no mocks.

img2dataset starts its worker processes with the spawn method and needs ~2-3 s per call,
so the fault tests share ONE download_part call (one candidates part holding every fault
URL) and assert per row; the other scenarios make one or a few small calls each.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from laionface.runfolder import RunFolder, write_parquet
from laionface.schema import CANDIDATES, empty_columns
from laionface.stages.download import (
    RESULT,
    DownloadConfig,
    classify_failure,
    download_marker,
    download_part,
)
from laionface.status import KEPT, TRANSIENT_DOWNLOAD_FAILURES, is_valid

# The server is shared by the whole session and counts hits per path *with* the query:
# a unique ?k= per URL gives fresh hit and flaky counters.
TOKEN = uuid.uuid4().hex[:8]


def make_run(root, urls: list[str], part: int = 0, statuses: list[str] | None = None) -> RunFolder:
    """A run folder whose candidates part holds `urls` (all `kept` unless `statuses`)."""
    run = RunFolder(root)
    n = len(urls)
    t = pa.table({
        "key": [f"{part:05d}_{i}" for i in range(n)],
        "part": pa.array([part] * n, pa.int32()),
        "row": pa.array(range(n), pa.int64()),
        "SAMPLE_ID": pa.array(range(n), pa.int64()),
        "URL": urls,
        "TEXT": ["caption"] * n,
        "status": statuses or [KEPT] * n,
    })
    write_parquet(empty_columns(t, CANDIDATES), run.candidates(part), CANDIDATES)
    return run


def path_of(url: str) -> str:
    """The request path (with query) the FaultServer counts hits under."""
    return "/" + url.split("/", 3)[3]


def assert_complete(run: RunFolder, part: int, result: pa.Table) -> None:
    """Nothing lost: one RESULT row per candidate, same keys in the same order, valid statuses,
    the marker holds the same table, every download failure says why."""
    candidates = run.read_candidates(part)
    assert result.schema.equals(RESULT, check_metadata=False)
    assert result.num_rows == candidates.num_rows
    assert result["key"].to_pylist() == candidates["key"].to_pylist()
    assert pq.read_table(download_marker(run, part)).to_pylist() == result.to_pylist()
    for r in result.to_pylist():
        assert is_valid(r["status"]), r
        if r["status"] == KEPT:
            assert r["error"] is None and r["raw_shard"] and r["raw_key"] and r["sha256"], r
        elif r["status"].split(":")[0] in ("download_failed", "opted_out", "refused_address"):
            assert isinstance(r["error"], str) and r["error"].strip(), r
            assert "no error message" not in r["error"], r
            assert r["raw_shard"] is None and r["sha256"] is None, r


def raw_bytes(run: RunFolder, row: dict) -> bytes:
    """The image bytes img2dataset stored for a kept row."""
    with tarfile.open(run.root / row["raw_shard"]) as tar:
        return tar.extractfile(f"{row['raw_key']}.jpg").read()


# ------------------------------------------------------------------ every fault, one call

# name -> (path on the fault server, expected status). Run with STRICT below.
FAULTS = {
    "ok": ("face_0.jpg", "kept"),
    "ok_other": ("face_3.jpg", "kept"),
    "http_404": ("fault/404", "download_failed:http_404"),
    "http_500": ("fault/500", "download_failed:http_5xx"),
    "http_429": ("fault/429", "download_failed:http_429"),
    # the server sleeps 5 s, the client gives up after DownloadConfig(timeout=2)
    "timeout": ("fault/delay/5/face_1.jpg", "download_failed:timeout"),
    "reset": ("fault/reset", "download_failed:connection"),
    "redirect": ("fault/redirect/face_2.jpg", "kept"),  # urllib follows the 302
    "redirect_loop": ("fault/redirect-loop/3", "download_failed:redirect_loop"),
    "noai": ("fault/noai/face_0.jpg", "opted_out"),  # X-Robots-Tag: noai (default opt-out list)
    "html": ("fault/html", "download_failed:decode"),
    "empty": ("fault/empty", "download_failed:decode"),
    # Content-Length promises the whole file, half arrives, then the socket closes
    "cut_off_body": ("fault/truncated/face_0.jpg", "download_failed:connection"),
    # A whole response whose bytes are half a JPEG: OpenCV refuses it (no grey-filled half image)
    "truncated_jpeg": ("truncated.jpg", "download_failed:decode"),
    # The Content-Type is ignored, the bytes decide: a JPEG served as text/plain is an image
    "wrong_type": ("fault/wrong-type/face_1.jpg", "kept"),
    "tiny": ("tiny.jpg", "download_failed:too_small"),  # 8x8 < min_image_size=10
    "huge_area": ("huge_area.jpg", "download_failed:too_large"),  # 4000x3000 > max_image_area=1e7
    "wide": ("wide.jpg", "download_failed:aspect_ratio"),  # 10:1 > max_aspect_ratio=5
    # 30000x30000 1-bit PNG: the stage sets OPENCV_IO_MAX_IMAGE_PIXELS (Pillow's bomb limit), so
    # OpenCV refuses to allocate 900 Mpx; it must never be kept. The refusal is an image that is
    # too large, so it belongs with max_image_area's `too_large`, not in `other`.
    "bomb": ("bomb.png", "download_failed:too_large"),
    # Kept formats: img2dataset re-encodes anything that is not a JFIF/Exif JPEG to JPEG.
    "cmyk": ("cmyk.jpg", "kept"),  # OpenCV converts CMYK to BGR; stored as an RGB JPEG
    "rgba": ("rgba.png", "kept"),  # alpha matted onto white, stored as an RGB JPEG
    "gif": ("animated.gif", "kept"),  # first frame only, stored as an RGB JPEG
    # 16-bit PNG: kept, but OpenCV's JPEG encoder saturates 16-bit values to 8 bits without
    # scaling (a 0..65535 gradient comes out almost all white). Acceptable: such images are rare
    # on the web, the row stays auditable (sha256 is of the served bytes), and a blank image
    # leaves the pipeline later as `no_face` rather than producing a wrong face crop.
    "png16": ("16bit.png", "kept"),
    "exif_rotated": ("exif_rotated.jpg", "kept"),  # stored as served: detect applies EXIF
}
STRICT = DownloadConfig(
    timeout=2, min_image_size=10, max_image_area=10_000_000, max_aspect_ratio=5, allow_private_addresses=True
)


@pytest.fixture(scope="module")
def faults(fault_server, tmp_path_factory):
    names = list(FAULTS)
    urls = [f"{fault_server.url}/{FAULTS[n][0]}?k={TOKEN}-{n}" for n in names]
    run = make_run(tmp_path_factory.mktemp("faults"), urls)
    result = download_part(run, 0, STRICT)
    return run, urls, result, dict(zip(names, result.to_pylist()))


def test_nothing_is_lost(faults):
    run, _, result, _ = faults
    assert_complete(run, 0, result)


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_ends_as_expected_status(faults, name):
    _, _, _, rows = faults
    row = rows[name]
    assert row["status"] == FAULTS[name][1], row


def test_failure_errors_are_img2dataset_messages(faults):
    _, _, _, rows = faults
    assert "404" in rows["http_404"]["error"]
    assert "429" in rows["http_429"]["error"]
    assert "timed out" in rows["timeout"]["error"]
    assert "X-Robots-Tag" in rows["noai"]["error"]
    assert "too small" in rows["tiny"]["error"]
    assert "infinite loop" in rows["redirect_loop"]["error"]


def test_kept_row_has_hash_shard_and_sizes(faults, fault_server):
    run, _, _, rows = faults
    served = (fault_server.root / "face_0.jpg").read_bytes()
    row = rows["ok"]
    assert row["sha256"] == hashlib.sha256(served).hexdigest()
    assert row["raw_shard"] == "raw/part-00000/00000.tar"
    assert (run.root / row["raw_shard"]).is_file()
    data = raw_bytes(run, row)
    assert data == served  # skip_reencode: a JFIF JPEG is stored byte for byte
    w, h = Image.open(io.BytesIO(served)).size
    assert (row["original_width"], row["original_height"], row["width"], row["height"]) == (w, h, w, h)
    # the redirect's row holds the file it was redirected to
    redirected = (fault_server.root / "face_2.jpg").read_bytes()
    assert rows["redirect"]["sha256"] == hashlib.sha256(redirected).hexdigest()
    # img2dataset's webdataset sample carries our key and SAMPLE_ID in its json
    with tarfile.open(run.root / row["raw_shard"]) as tar:
        names = set(tar.getnames())
        assert {f"{row['raw_key']}.jpg", f"{row['raw_key']}.txt", f"{row['raw_key']}.json"} <= names


def test_kept_odd_formats_are_stored_as_decodable_rgb_or_grey_jpeg(faults, fault_server):
    run, _, _, rows = faults
    expected = (("cmyk", "RGB", None), ("rgba", "RGB", (128, 128)), ("gif", "RGB", (64, 64)), ("png16", "L", (64, 64)))
    for name, mode, size in expected:
        row = rows[name]
        served = (fault_server.root / FAULTS[name][0]).read_bytes()
        assert row["sha256"] == hashlib.sha256(served).hexdigest(), name  # hash of what was served
        img = Image.open(io.BytesIO(raw_bytes(run, row)))
        img.load()
        assert img.format == "JPEG" and img.mode == mode, (name, img.format, img.mode)
        if size:
            assert img.size == size == (row["width"], row["height"]), name
    # the GIF's first frame is pure red
    r, g, b = Image.open(io.BytesIO(raw_bytes(run, rows["gif"]))).convert("RGB").getpixel((32, 32))
    assert r > 200 and g < 50 and b < 50


def test_bomb_is_never_kept_at_full_size(faults):
    _, _, _, rows = faults
    row = rows["bomb"]
    assert row["status"] != KEPT and row["raw_shard"] is None
    assert "CV_IO_MAX_IMAGE_PIXELS" in row["error"]  # refused by the pixel limit, not by memory


def test_finished_part_is_not_fetched_again(faults, fault_server):
    run, urls, result, _ = faults
    before = {p: fault_server.hits[p] for p in map(path_of, urls)}
    assert before[path_of(urls[0])] == 1
    again = download_part(run, 0, STRICT)
    assert again.to_pylist() == result.to_pylist()
    assert {p: fault_server.hits[p] for p in before} == before


# ------------------------------------------------------------------ limits off, max_side, half-done

def test_default_limits_keep_small_large_and_wide_and_max_side_downscales(fault_server, tmp_path):
    # Without min_image_size / max_image_area / max_aspect_ratio the 8x8, 4000x3000 and 10:1
    # images are kept. The same call checks resize_mode="max_side" (only bigger images shrink,
    # the original size is recorded) and that a half-done part is redone: a stale raw folder
    # without the marker is thrown away and the part is fetched again.
    names = ["tiny.jpg", "huge_area.jpg", "wide.jpg", "face_0.jpg"]
    urls = [f"{fault_server.url}/{n}?k={TOKEN}-lenient" for n in names]
    run = make_run(tmp_path, urls)
    stale = run.raw(0) / "00000.tar"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half-written by a crashed run")
    (run.raw(0) / "junk.parquet").write_bytes(b"junk")
    config = DownloadConfig(resize_mode="max_side", image_size=1000, allow_private_addresses=True)
    result = download_part(run, 0, config)
    assert_complete(run, 0, result)
    cols = ("status", "original_width", "original_height", "width", "height")
    sizes = [tuple(r[c] for c in cols) for r in result.to_pylist()]
    assert sizes == [
        ("kept", 8, 8, 8, 8),
        ("kept", 4000, 3000, 1000, 750),
        ("kept", 2000, 200, 1000, 100),
        ("kept", 640, 480, 640, 480),
    ]
    big = result.to_pylist()[1]
    assert Image.open(io.BytesIO(raw_bytes(run, big))).size == (1000, 750)
    assert big["sha256"] == hashlib.sha256((fault_server.root / "huge_area.jpg").read_bytes()).hexdigest()
    with tarfile.open(stale) as tar:  # redone from scratch, not appended to
        assert len(tar.getnames()) == 3 * len(names)
    assert not (run.raw(0) / "junk.parquet").exists()
    assert all(fault_server.hits[path_of(u)] == 1 for u in urls)


# ------------------------------------------------------------------ --retry-failed

@pytest.fixture(scope="module")
def retried(fault_server, tmp_path_factory):
    """First run + three --retry-failed rounds over: a good file, a URL that fails once, one that
    fails twice, and a 404 (the third round has nothing transient left to retry). Snapshots of
    results, hits and folders after each call."""
    urls = [
        f"{fault_server.url}/face_0.jpg?k={TOKEN}-r-ok",
        f"{fault_server.url}/fault/flaky/1/face_1.jpg?k={TOKEN}-r-once",
        f"{fault_server.url}/fault/flaky/2/face_2.jpg?k={TOKEN}-r-twice",
        f"{fault_server.url}/fault/404?k={TOKEN}-r-404",
    ]
    run = make_run(tmp_path_factory.mktemp("retry"), urls)
    config = DownloadConfig(allow_private_addresses=True)
    snaps = []
    for retry in (False, True, True, True):
        result = download_part(run, 0, config, retry_failed=retry)
        snaps.append({
            "rows": result.to_pylist(),
            "hits": [fault_server.hits[path_of(u)] for u in urls],
            "folders": sorted(p.name for p in run.raw(0).iterdir() if p.is_dir()),
        })
    return run, urls, snaps


def test_first_run_fails_the_flaky_rows_as_transient(retried):
    _, _, snaps = retried
    statuses = [r["status"] for r in snaps[0]["rows"]]
    assert statuses == ["kept", "download_failed:http_5xx", "download_failed:http_5xx", "download_failed:http_404"]
    assert "http_5xx" in TRANSIENT_DOWNLOAD_FAILURES and "http_404" not in TRANSIENT_DOWNLOAD_FAILURES
    assert snaps[0]["hits"] == [1, 1, 1, 1]


def test_retry_turns_recovered_servers_into_successes(retried, fault_server):
    run, _, snaps = retried
    assert_complete(run, 0, pa.Table.from_pylist(snaps[2]["rows"], schema=RESULT))
    first, second, third, _ = ([r["status"] for r in s["rows"]] for s in snaps)
    assert second == ["kept", "kept", "download_failed:http_5xx", "download_failed:http_404"]
    assert third == ["kept", "kept", "kept", "download_failed:http_404"]
    once, twice = snaps[2]["rows"][1], snaps[2]["rows"][2]
    for row, name in ((once, "face_1.jpg"), (twice, "face_2.jpg")):
        served = (fault_server.root / name).read_bytes()
        assert row["sha256"] == hashlib.sha256(served).hexdigest()
        assert raw_bytes(run, row) == served
        assert row["raw_shard"].startswith("raw/part-00000/retry-")


def test_retry_touches_neither_successes_nor_permanent_failures(retried):
    _, _, snaps = retried
    ok = [s["rows"][0] for s in snaps]
    assert ok[0] == ok[1] == ok[2] == ok[3]  # same raw_shard, raw_key, sha256: not fetched again
    assert [s["hits"][0] for s in snaps] == [1, 1, 1, 1]
    assert [s["hits"][3] for s in snaps] == [1, 1, 1, 1]  # a 404 is not retried
    assert snaps[1]["rows"][1] == snaps[2]["rows"][1]  # a row kept by round 1 stays put in round 2
    assert [s["hits"][1] for s in snaps] == [1, 2, 2, 2]
    assert [s["hits"][2] for s in snaps] == [1, 2, 3, 3]


def test_retry_rounds_are_numbered_one_two(retried):
    # BUG (download.py): `attempt = 1 + len(glob("retry-*"))` also counts the
    # `retry-N.img2dataset.log` files written beside the folders, so round 2 lands in retry-3.
    _, _, snaps = retried
    assert snaps[1]["folders"] == ["retry-1"]
    assert snaps[2]["folders"] == ["retry-1", "retry-2"]
    assert snaps[2]["rows"][2]["raw_shard"] == "raw/part-00000/retry-2/00000.tar"


def test_retry_without_transient_failures_fetches_nothing(retried):
    _, _, snaps = retried
    assert snaps[3]["rows"] == snaps[2]["rows"]
    assert snaps[3]["hits"] == snaps[2]["hits"]
    assert snaps[3]["folders"] == snaps[2]["folders"]  # img2dataset not started


def test_retry_still_applies_the_address_guard(fault_server, tmp_path):
    # A part fetched with --allow-private-addresses, then retried without it: the guard's
    # promise ("refused before any request unless allowed") holds for retries too.
    url = f"{fault_server.url}/fault/flaky/1/face_0.jpg?k={TOKEN}-retry-guard"
    run = make_run(tmp_path, [url])
    first = download_part(run, 0, DownloadConfig(allow_private_addresses=True))
    assert first["status"].to_pylist() == ["download_failed:http_5xx"]
    again = download_part(run, 0, DownloadConfig(allow_private_addresses=False), retry_failed=True)
    assert fault_server.hits[path_of(url)] == 1  # no request
    assert again["status"].to_pylist() == ["refused_address"]


# ------------------------------------------------------------------ address guard in the stage

def test_guard_refuses_loopback_before_any_request(fault_server, tmp_path):
    port = fault_server.port
    urls = [
        f"http://127.0.0.1:{port}/face_0.jpg?k={TOKEN}-guard",
        f"http://localhost:{port}/face_1.jpg?k={TOKEN}-guard",  # a name resolving to 127.0.0.1
        f"http://[::1]:{port}/face_2.jpg?k={TOKEN}-guard",
        f"file://{fault_server.root / 'face_0.jpg'}",
        f"http://127.0.0.1:{port}/face_3.jpg?k={TOKEN}-guard-already-dropped",
    ]
    statuses = [KEPT] * 4 + ["nsfw"]
    run = make_run(tmp_path, urls, statuses=statuses)
    result = download_part(run, 0, DownloadConfig())  # allow_private_addresses defaults to False
    assert_complete(run, 0, result)
    rows = result.to_pylist()
    assert [r["status"] for r in rows] == ["refused_address"] * 4 + ["nsfw"]  # first drop wins
    assert "127.0.0.1" in rows[0]["error"] and "allow-private-addresses" in rows[0]["error"]
    assert "localhost resolves to 127.0.0.1" in rows[1]["error"]
    assert "file" in rows[3]["error"]
    assert all(fault_server.hits[path_of(u)] == 0 for u in urls if u.startswith("http"))
    # nothing to fetch, so img2dataset never ran: only the marker is there
    assert sorted(p.name for p in run.raw(0).iterdir()) == ["_download.parquet"]


# ------------------------------------------------------------------ classify_failure

CV_BOMB = (
    "OpenCV(5.0.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:79: error: (-215:Assertion failed) "
    "pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'\n"
)
CV_EMPTY = (
    "OpenCV(5.0.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:1291: error: (-215:Assertion failed) "
    "!buf.empty() in function 'imdecode_'\n"
)


@pytest.mark.parametrize(
    "message, reason",
    [
        ("HTTP Error 404: Not Found", "http_404"),
        ("HTTP Error 403: Forbidden", "http_403"),
        ("HTTP Error 410: Gone", "http_410"),
        ("HTTP Error 500: Internal Server Error", "http_5xx"),
        ("HTTP Error 503: Service Unavailable", "http_5xx"),
        ("HTTP Error 429: Too Many Requests", "http_429"),
        (
            "HTTP Error 302: The HTTP server returned a redirect error that would lead to an infinite loop.\n"
            "The last 30x error message was:\nFound",
            "redirect_loop",
        ),
        ("timed out", "timeout"),
        ("<urlopen error timed out>", "timeout"),
        ("The read operation timed out", "timeout"),
        ("<urlopen error [Errno -2] Name or service not known>", "dns"),
        ("<urlopen error [Errno -3] Temporary failure in name resolution>", "dns"),
        ("<urlopen error [Errno -5] No address associated with hostname>", "dns"),
        ("[Errno 104] Connection reset by peer", "connection"),
        ("<urlopen error [Errno 111] Connection refused>", "connection"),
        ("Remote end closed connection without response", "connection"),
        ("IncompleteRead(40173 bytes read, 40173 more expected)", "connection"),
        ("Image decoding error", "decode"),
        pytest.param(CV_EMPTY, "decode", id="opencv-empty-buffer"),
        pytest.param(CV_BOMB, "too_large", id="opencv-pixel-limit-bomb"),
        ("image too small", "too_small"),
        ("image area too large", "too_large"),
        ("aspect ratio too large", "aspect_ratio"),
        ("<urlopen error unknown url type: ftp>", "bad_url"),
        (
            "<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "unable to get local issuer certificate (_ssl.c:1006)>",
            "ssl",
        ),
        ("Use of image disallowed by X-Robots-Tag directive", "opted_out"),
        ("hash mismatch", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_classify_failure(message, reason):
    assert classify_failure(message) == reason


def test_transient_reasons_are_ones_classify_failure_produces():
    messages = ("timed out", "Connection reset by peer", "HTTP Error 502: Bad Gateway", "HTTP Error 429: x")
    produced = {classify_failure(m) for m in messages}
    assert produced == set(TRANSIENT_DOWNLOAD_FAILURES)


def test_importing_the_stage_turns_off_albumentations_update_check():
    # Regression guard: img2dataset imports albumentations, whose import sends an HTTP request to
    # PyPI (2 s timeout) unless NO_ALBUMENTATIONS_UPDATE is set, in this process and in every
    # spawned img2dataset worker. DESIGN.md: nothing is fetched at run time that the user did not
    # name. Like OPENCV_IO_MAX_IMAGE_PIXELS, the stage sets it at import (workers inherit it).
    import laionface.stages.download  # noqa: F401

    assert os.environ.get("NO_ALBUMENTATIONS_UPDATE", "").lower() in ("1", "true")
