"""`laionface takedown` of 1,000 URLs across 100 LAION-FACE shards: time, and only the shards that held them change.

    python benchmarks/takedown_bench.py [--quick] [--repeats 3] [--no-record] [--work DIR]
                                        [--parts 4] [--shards-per-part 25] [--samples-per-shard 200]
                                        [--urls 1000] [--hit-shards 60]

Generates once (cached under benchmarks/_work/takedown/pristine-*/) a synthetic, finished run folder
laid out as the runner writes it: --parts parts, each with candidates, a samples manifest (SAMPLES
schema, ~1.6 rows per kept sample: no_face, face_too_small, download failures and select drops too),
a faces manifest (1-2 faces per kept sample; one rejected face per face_too_small row), img2dataset
raw shards with their index parquet (every downloaded row, 2,000 input rows per shard),
--shards-per-part LAION-FACE shards of --samples-per-shard samples ({key}.jpg/.txt/.json, written
with laionface.shards.ShardWriter), LAION-FACE-cropped shards (300 crops each, so their edges do not
line up with the LAION-FACE shards), embeddings in clip-retrieval's layout (float16, 512-d) and
_done markers. Images are one small real JPEG (and one crop JPEG) with the key appended after the
end-of-image marker, so every sample's bytes differ.

The request: --urls URLs of kept samples spread over --hit-shards of the LAION-FACE shards (chosen
at random, seed 1; every chosen shard loses at least one), so the other shards must stay untouched.

Each of --repeats runs copies the pristine run folder afresh (not timed) and times what
`laionface takedown RUN --urls FILE` does in-process (Request.read + plan + apply + write_stats);
then one `laionface takedown` subprocess on another fresh copy (interpreter start and imports
included). After every run it checks, against what was counted before it from the pristine
manifests and, independently, by reading the URLs out of every pristine tar's .json members:
  - the tars whose bytes changed == the tars that held a removed URL (LAION-FACE, cropped, raw),
    and == the record's shards_rewritten; every other tar is byte-identical (sha256);
  - a rewritten LAION-FACE shard keeps every other member, in order, with the same bytes;
  - no removed key, face key or URL is left in any tar, raw index, faces manifest or embeddings
    metadata; every removed row is `taken_down` with URL and caption cleared in samples and
    candidates; no other row changed status; the row counts still add up.
--quick: 2 parts x 5 shards (10 LAION-FACE shards), 100 URLs over 6 shards, nothing recorded.
Appends a dated block to benchmarks/RESULTS.md otherwise (unless --no-record).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import inspect
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections import Counter, defaultdict
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
WORK = Path(__file__).with_name("_work") / "takedown"
GENERATOR = "2"  # bump when the generated run folder changes
RAW_PER_SHARD = 2000  # img2dataset input rows per raw shard
CROPS_PER_SHARD = 300
EMB_DIM = 512
N_DOMAINS = 500
SELECT_DROPS = ("empty_caption", "nsfw")
# status of the rows that are not kept, and their share
OTHERS = [("no_face", 0.35), ("face_too_small", 0.10), ("download_failed:http_404", 0.25),
          ("download_failed:timeout", 0.10), ("empty_caption", 0.10), ("nsfw", 0.10)]
DEFAULTS = {"parts": 4, "shards_per_part": 25, "samples_per_shard": 200, "urls": 1000, "hit_shards": 60}
QUICK = {"parts": 2, "shards_per_part": 5, "samples_per_shard": 200, "urls": 100, "hit_shards": 6}


# ------------------------------------------------------------------------------ generation
def _jpeg(side: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((side, side), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _write_raw_tar(path: Path, members: list[tuple[str, dict[str, bytes]]]) -> None:
    """A raw shard as img2dataset leaves it: {raw_key}.jpg/.txt/.json per downloaded row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for stem, files in members:
            for ext in sorted(files):
                info = tarfile.TarInfo(f"{stem}.{ext}")
                info.size, info.mtime, info.mode = len(files[ext]), 0, 0o644
                tar.addfile(info, io.BytesIO(files[ext]))


def generate(root: Path, cfg: dict) -> Path:
    """The pristine run folder (cached: rebuilt only when missing or the settings differ)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from laionface.domains import domains as url_domains
    from laionface.runfolder import RunFolder, write_parquet
    from laionface.schema import (
        CANDIDATES,
        FACES,
        MANIFEST_VERSION,
        PIPELINE_VERSION,
        SAMPLES,
        empty_columns,
        sample_key,
    )
    from laionface.shards import ShardWriter
    from laionface.summary import write_stats

    code = hashlib.sha256("".join(inspect.getsource(f) for f in (generate, _jpeg, _write_raw_tar)).encode()).hexdigest()
    signature = json.dumps({**cfg, "generator": GENERATOR, "code": code, "manifest": MANIFEST_VERSION}, sort_keys=True)
    marker = root.with_name(root.name + ".complete")
    if marker.exists() and marker.read_text() == signature and root.is_dir():
        return root
    shutil.rmtree(root, ignore_errors=True)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    run = RunFolder(root)
    rng = np.random.default_rng(0)
    image, crop = _jpeg(64, 0), _jpeg(32, 1)
    config_hash = "benchbenchbench0"
    hosts = [f"{'www.' if i % 4 == 0 else ''}cdn{i}.photos{i % 13}.com" for i in range(N_DOMAINS)]
    other_names = [s for s, _ in OTHERS]
    other_p = np.array([p for _, p in OTHERS])
    other_p /= other_p.sum()
    for part in range(cfg["parts"]):
        n_kept = cfg["shards_per_part"] * cfg["samples_per_shard"]
        n = int(n_kept * 1.6)
        status = np.array(other_names, dtype=object)[rng.choice(len(OTHERS), size=n, p=other_p)]
        status[rng.choice(n, size=n_kept, replace=False)] = "kept"
        sids = 200_000_000 + part * 10_000_000 + np.arange(n) * 3
        host = rng.integers(0, N_DOMAINS, n)
        n_faces = 1 + (rng.random(n) < 0.4)
        rows, cand, faces, raw_index = [], [], [], defaultdict(list)
        raw_members: dict[str, list] = defaultdict(list)
        lf = ShardWriter(run.laion_face(part), root, max_count=cfg["samples_per_shard"])
        cropped = ShardWriter(run.laion_face_cropped(part), root, max_count=CROPS_PER_SHARD)
        passed = 0  # img2dataset input rows so far (rows that passed select)
        for i in range(n):
            st, sid = str(status[i]), int(sids[i])
            key = sample_key(part, sid, i)
            url = f"https://{hosts[host[i]]}/images/{sid}.jpg"
            text = "" if st == "empty_caption" else f"portrait photo {sid} of a person at an event"
            r = {"key": key, "part": part, "row": i, "SAMPLE_ID": sid, "URL": url, "TEXT": text,
                 "HEIGHT": 480, "WIDTH": 640, "LICENSE": "?", "NSFW": "NSFW" if st == "nsfw" else "UNLIKELY",
                 "similarity": 0.31, "status": st, "error": None}
            cand.append({**r, "status": st if st in SELECT_DROPS else "kept"})
            if st not in SELECT_DROPS:
                raw_shard = f"raw/part-{part:05d}/{passed // RAW_PER_SHARD:05d}.tar"
                raw_key = f"{passed // RAW_PER_SHARD:05d}{passed % RAW_PER_SHARD:04d}"
                passed += 1
                ok = not st.startswith("download_failed")
                raw_index[raw_shard].append({"key": raw_key, "url": url, "caption": text,
                                             "status": "success" if ok else "failed_to_download",
                                             "error_message": None if ok else st.split(":")[1],
                                             "width": 640 if ok else None, "height": 480 if ok else None})
                if ok:
                    jpg = image + key.encode()
                    sha = hashlib.sha256(jpg).hexdigest()
                    raw_members[raw_shard].append((raw_key, {
                        "jpg": jpg, "txt": text.encode(),
                        "json": json.dumps({"url": url, "key": raw_key, "caption": text, "status": "success",
                                            "width": 640, "height": 480, "sha256": sha}, sort_keys=True).encode()}))
                    fc = 0 if st == "no_face" else (1 if st == "face_too_small" else int(n_faces[i]))
                    r.update(raw_shard=raw_shard, raw_key=raw_key, sha256=sha, original_width=640, original_height=480,
                             width=640, height=480, face_count=fc, kept_face_count=fc if st == "kept" else 0,
                             best_face_score=0.99 if fc else None, clip_score=0.3)
                    mine = []
                    for f in range(fc):
                        mine.append({"face_key": f"{key}_f{f}", "key": key, "part": part, "SAMPLE_ID": sid,
                                     "face_index": f, "box": [10.0 + f, 12.0, 60.0, 70.0],
                                     "landmarks": [20.0, 30.0, 40.0, 30.0, 30.0, 40.0, 22.0, 50.0, 38.0, 50.0],
                                     "score": 0.99 - 0.01 * f, "kept": st == "kept",
                                     "reject_reason": None if st == "kept" else "face_too_small", "crop_shard": None,
                                     "crop_clip_score": None, "pipeline_version": PIPELINE_VERSION,
                                     "config_hash": config_hash})
                    if st == "kept":
                        meta = {"key": key, "SAMPLE_ID": sid, "URL": url, "LICENSE": "?", "NSFW": "UNLIKELY",
                                "similarity": 0.31, "sha256": sha, "original_width": 640, "original_height": 480,
                                "faces": [{k: x[k] for k in ("face_index", "box", "landmarks", "score", "kept")} for x in mine]}
                        r["shard"] = lf.write(key, {"jpg": jpg, "txt": text.encode(),
                                                    "json": json.dumps(meta, sort_keys=True).encode()})
                        for x in mine:
                            cm = {"key": key, "SAMPLE_ID": sid, "URL": url, "source_shard": r["shard"],
                                  "face_key": x["face_key"], "face_index": x["face_index"], "score": x["score"]}
                            x["crop_shard"] = cropped.write(x["face_key"], {
                                "jpg": crop + x["face_key"].encode(), "txt": text.encode(),
                                "json": json.dumps(cm, sort_keys=True).encode()})
                    faces.extend(mine)
            r.update(pipeline_version=PIPELINE_VERSION, config_hash=config_hash)
            rows.append({name: r.get(name) for name in SAMPLES.names if name != "domain"})  # from_pylist: first row's keys
        lf.close()
        cropped.close()
        for shard, members in raw_members.items():
            _write_raw_tar(root / shard, members)
        for shard, index in raw_index.items():
            pq.write_table(pa.Table.from_pylist(index), (root / shard).with_suffix(".parquet"))
        write_parquet(empty_columns(pa.Table.from_pylist(cand), CANDIDATES), run.candidates(part), CANDIDATES)
        samples = empty_columns(pa.Table.from_pylist(rows), SAMPLES)
        samples = samples.set_column(SAMPLES.get_field_index("domain"), SAMPLES.field("domain"), url_domains(samples["URL"]))
        write_parquet(samples, run.samples(part), SAMPLES)
        write_parquet(pa.Table.from_pylist(faces, schema=FACES), run.faces(part), FACES)
        kept = [r for r in rows if r["status"] == "kept"]
        emb = rng.standard_normal((len(kept), EMB_DIM)).astype(np.float16)
        for name in ("img_emb", "text_emb"):
            (run.embeddings / name).mkdir(parents=True, exist_ok=True)
            np.save(run.embeddings / name / f"{name}_{part}.npy", emb)
        (run.embeddings / "metadata").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("key", "URL", "TEXT")} for r in kept]),
                       run.embeddings / "metadata" / f"metadata_{part}.parquet")
        counts = dict(sorted(Counter(r["status"] for r in rows).items()))
        run.mark_done(part, {"part": part, "state": "done", "error": None, "rows": n, "kept": len(kept),
                             "faces": len(faces), "status_counts": counts, "host": "bench",
                             "started_at": None, "finished_at": None, "stage_seconds": {},
                             "pipeline_version": PIPELINE_VERSION, "config_hash": config_hash})
    write_stats(run)
    marker.write_text(signature)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"generated {root} ({size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
    return root


# ------------------------------------------------------------------------------ request and expectations
def choose_urls(root: Path, cfg: dict, out: Path) -> dict:
    """Write the request file; return what it should remove, counted from the pristine manifests."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from laionface.runfolder import RunFolder

    run = RunFolder(root)
    samples = [pq.read_table(run.samples(p)) for p in run.done_parts()]
    kept_by_shard: dict[str, list[dict]] = defaultdict(list)
    for t in samples:
        for r in t.filter(pc.equal(t["status"], "kept")).select(["key", "URL", "shard"]).to_pylist():
            kept_by_shard[r["shard"]].append(r)
    shards = sorted(kept_by_shard)
    rng = np.random.default_rng(1)
    hit = sorted(shards[i] for i in rng.choice(len(shards), size=cfg["hit_shards"], replace=False))
    per, extra = divmod(cfg["urls"], len(hit))
    victims = []
    for j, shard in enumerate(hit):
        pool = kept_by_shard[shard]
        victims += [pool[i] for i in rng.choice(len(pool), size=per + (j < extra), replace=False)]
    urls = sorted(v["URL"] for v in victims)
    out.write_text("# removal request (takedown_bench)\n" + "\n".join(urls) + "\n")

    wanted = set(urls)
    keys, held, raw_keys = set(), set(), defaultdict(set)
    for t in samples:
        for r in t.filter(pc.is_in(t["URL"], pa.array(urls))).to_pylist():
            keys.add(r["key"])
            held.update(s for s in (r["shard"], r["raw_shard"]) if s)
            raw_keys[r["raw_shard"]].add(r["raw_key"])
    face_keys, removed_faces = set(), 0
    for p in run.done_parts():
        f = pq.read_table(run.faces(p))
        for r in f.filter(pc.is_in(f["key"], pa.array(sorted(keys)))).to_pylist():
            face_keys.add(r["face_key"])
            removed_faces += 1
            if r["crop_shard"]:
                held.add(r["crop_shard"])
    return {"urls": wanted, "keys": keys, "face_keys": face_keys, "raw_keys": raw_keys, "faces": removed_faces,
            "held": held, "lf_shards": set(shards), "hit_lf": set(hit)}


def _read_tar(tar_path: Path) -> tuple[list[tuple[str, str]], set[str]]:
    """(member name, sha256 of its bytes) in order, and the URLs its .json members name."""
    members, urls = [], set()
    with tarfile.open(tar_path) as tar:
        for m in tar:
            if m.isfile():
                data = tar.extractfile(m).read()
                members.append((m.name, hashlib.sha256(data).hexdigest()))
                if m.name.endswith(".json"):
                    meta = json.loads(data)
                    urls.add(meta.get("URL") or meta.get("url"))
    return members, urls


def _json_urls(tar_path: Path) -> set[str]:
    return _read_tar(tar_path)[1]


def tar_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.tar"))}


# ------------------------------------------------------------------------------ checks
def check(pristine: Path, root: Path, want: dict, before: dict[str, str], record: dict | None) -> tuple[list[str], dict]:
    """Every check of the docstring; returns (failures, figures)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from laionface.runfolder import RunFolder

    bad: list[str] = []
    run, old = RunFolder(root), RunFolder(pristine)
    after = tar_hashes(root)
    changed = {k for k in before if before[k] != after.get(k)}
    if set(after) != set(before):
        bad.append(f"tars added or removed: {sorted(set(after) ^ set(before))[:5]}")
    held = want["held"]
    if changed != held:
        bad.append(f"changed tars != tars that held a removed URL: {len(changed - held)} extra, {len(held - changed)} missing")
    if record is not None and set(record["shards_rewritten"]) != held:
        bad.append(f"record lists {len(record['shards_rewritten'])} shards_rewritten, {len(held)} held")
    untouched = [k for k in before if k not in held]
    same = sum(before[k] == after.get(k) for k in untouched)
    if same != len(untouched):
        bad.append(f"{len(untouched) - same} tars that held nothing changed bytes")
    for tar in sorted(changed | held):  # rewritten: nothing removed left, everything else kept as it was
        names, urls = _read_tar(root / tar)
        if urls & want["urls"]:
            bad.append(f"{tar} still holds {len(urls & want['urls'])} removed URL(s)")
        drop = want["raw_keys"].get(tar, set()) if tar.startswith("raw/") else want["keys"] | want["face_keys"]
        if any(name.split(".", 1)[0] in drop for name, _ in names):
            bad.append(f"{tar} still holds a removed key")
        if tar.startswith("laion_face/"):
            expect = [m for m in _read_tar(pristine / tar)[0] if m[0].split(".", 1)[0] not in drop]
            if names != expect:
                bad.append(f"{tar}: the members that stay differ from the pristine shard's")
    keys = pa.array(sorted(want["keys"]))
    for part in run.done_parts():
        for kind in ("samples", "candidates"):
            path_new, path_old = getattr(run, kind)(part), getattr(old, kind)(part)
            new, prev = pq.read_table(path_new), pq.read_table(path_old)
            if new.num_rows != prev.num_rows or new["key"].to_pylist() != prev["key"].to_pylist():
                bad.append(f"{path_new}: rows changed ({prev.num_rows} -> {new.num_rows})")
                continue
            gone = pc.is_in(new["key"], keys)
            mine = new.filter(gone)
            if set(mine["status"].to_pylist()) - {"taken_down"} or mine["URL"].null_count != mine.num_rows \
                    or mine["TEXT"].null_count != mine.num_rows:
                bad.append(f"{path_new}: a removed row is not taken_down with URL and TEXT cleared")
            if set(new["URL"].to_pylist()) & want["urls"]:
                bad.append(f"{path_new}: a removed URL remains")
            rest_new, rest_old = new.filter(pc.invert(gone)), prev.filter(pc.invert(gone))
            if not rest_new.select(["key", "status", "URL"]).equals(rest_old.select(["key", "status", "URL"])):
                bad.append(f"{path_new}: rows not in the request changed")
        f = pq.read_table(run.faces(part))
        if set(f["key"].to_pylist()) & want["keys"]:
            bad.append(f"{run.faces(part)}: faces of a removed sample remain")
        meta = pq.read_table(run.embeddings / "metadata" / f"metadata_{part}.parquet")
        if set(meta["key"].to_pylist()) & want["keys"] or set(meta["URL"].to_pylist()) & want["urls"]:
            bad.append(f"embeddings metadata of part {part}: a removed sample remains")
        for name in ("img_emb", "text_emb"):
            if np.load(run.embeddings / name / f"{name}_{part}.npy", mmap_mode="r").shape[0] != meta.num_rows:
                bad.append(f"{name}_{part}.npy rows != metadata rows")
    for index in sorted(root.glob("raw/*/*.parquet")):
        if set(pq.read_table(index)["url"].to_pylist()) & want["urls"]:
            bad.append(f"{index}: a removed URL remains")
    faces_old = sum(pq.read_metadata(old.faces(p)).num_rows for p in old.done_parts())
    faces_new = sum(pq.read_metadata(run.faces(p)).num_rows for p in run.done_parts())
    if faces_old - faces_new != want["faces"]:
        bad.append(f"faces rows {faces_old} -> {faces_new}, expected {want['faces']} removed")
    log = pq.read_table(root / "takedowns.parquet").to_pylist()
    if len(log) != 1 or log[0]["samples_removed"] != len(want["keys"]) or log[0]["faces_removed"] != want["faces"]:
        bad.append(f"takedowns.parquet: {log[:1]}")
    def lf(tars):
        return {k for k in tars if k.startswith("laion_face/")}

    figures = {"changed_lf": len(lf(changed)), "held_lf": len(lf(held)), "changed_all": len(changed),
               "held_all": len(held), "untouched": len(untouched), "untouched_same": same,
               "untouched_lf": len(lf(untouched)), "untouched_lf_same": sum(before[k] == after.get(k) for k in lf(untouched)),
               "recorded": len(log[0]["shards_rewritten"]) if log else 0}
    return bad, figures


# ------------------------------------------------------------------------------ main
def fresh_copy(pristine: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(pristine, dest)
    return dest


def takedown_in_process(root: Path, urls: Path) -> tuple[dict, dict[str, float]]:
    """What cmd_takedown does, minus its printing."""
    from laionface.audit.takedown import Request, apply, plan
    from laionface.runfolder import RunFolder
    from laionface.summary import write_stats

    t0 = time.perf_counter()
    run = RunFolder(root)
    request = Request.read("urls", urls)
    plans = plan(run, request)
    t1 = time.perf_counter()
    record = apply(run, request, plans, by="takedown_bench")
    t2 = time.perf_counter()
    write_stats(run)
    t3 = time.perf_counter()
    return record, {"total": t3 - t0, "plan": t1 - t0, "apply": t2 - t1, "stats": t3 - t2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 parts x 5 shards, 100 URLs over 6 shards, nothing recorded")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--work", type=Path, default=WORK, help=f"generated run folders and copies (default {WORK})")
    for name, value in DEFAULTS.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value} ({QUICK[name]} with --quick)")
    args = ap.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    cfg = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    n_shards = cfg["parts"] * cfg["shards_per_part"]
    if not 0 < cfg["hit_shards"] <= min(n_shards, cfg["urls"]):
        ap.error(f"--hit-shards must be between 1 and min(shards {n_shards}, urls {cfg['urls']})")
    if cfg["urls"] > cfg["hit_shards"] * cfg["samples_per_shard"]:
        ap.error("more URLs than the chosen shards hold")

    args.work.mkdir(parents=True, exist_ok=True)
    tag = "-".join(str(cfg[k]) for k in ("parts", "shards_per_part", "samples_per_shard"))
    pristine = generate(args.work / f"pristine-{tag}", cfg)
    urls_file = args.work / f"urls-{tag}-{cfg['urls']}-{cfg['hit_shards']}.txt"
    want = choose_urls(pristine, cfg, urls_file)
    held_scan = {str(p.relative_to(pristine)) for p in sorted(pristine.rglob("*.tar")) if _json_urls(p) & want["urls"]}
    before = tar_hashes(pristine)
    lf_tars = {k for k in before if k.startswith("laion_face/")}
    print(f"run: {cfg['parts']} parts, {len(lf_tars)} LAION-FACE shards of {cfg['samples_per_shard']} samples, "
          f"{sum(k.startswith('laion_face_cropped/') for k in before)} cropped, {sum(k.startswith('raw/') for k in before)} raw; "
          f"request: {len(want['urls']):,} URLs in {len(want['hit_lf'])} LAION-FACE shards "
          f"({len(want['keys']):,} samples, {want['faces']:,} faces); tars holding them: {len(want['held'])} by the manifests, "
          f"{len(held_scan)} by reading the tars", flush=True)
    failures = []
    if held_scan != want["held"] or {k for k in want["held"] if k.startswith("laion_face/")} != want["hit_lf"] \
            or len(want["keys"]) != cfg["urls"]:
        failures.append("the pristine run does not hold the request as planned (manifests vs tars)")

    load_before = os.getloadavg()[0]
    dest = args.work / "run"
    times, parts_t, figures = [], [], None
    for i in range(args.repeats):
        fresh_copy(pristine, dest)
        record, t = takedown_in_process(dest, urls_file)
        times.append(t["total"])
        parts_t.append(t)
        bad, figures = check(pristine, dest, want, before, record)
        failures += [f"repeat {i + 1}: {b}" for b in bad]
        print(f"  repeat {i + 1}: {t['total']:.2f} s (plan {t['plan']:.2f}, apply {t['apply']:.2f}, stats {t['stats']:.2f}); "
              f"{'ok' if not bad else f'{len(bad)} check(s) failed'}", flush=True)
    fresh_copy(pristine, dest)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", "takedown", str(dest), "--urls", str(urls_file),
                           "--by", "takedown_bench"], capture_output=True, text=True, check=False)
    cli_s = time.perf_counter() - t
    if proc.returncode:
        failures.append(f"CLI exit {proc.returncode}: {proc.stderr[-2000:]}")
    else:
        bad, _ = check(pristine, dest, want, before, None)
        failures += [f"CLI: {b}" for b in bad]
        print(f"  CLI: {cli_s:.2f} s; {proc.stdout.splitlines()[0]}; {'ok' if not bad else f'{len(bad)} check(s) failed'}")
    load_after = os.getloadavg()[0]
    shutil.rmtree(dest, ignore_errors=True)

    med = statistics.median(times)
    mid = parts_t[times.index(sorted(times)[(len(times) - 1) // 2])]
    f = figures
    size_lf = sum((pristine / k).stat().st_size for k in lf_tars) / len(lf_tars)
    verdict = "PASS" if not failures else "FAIL"
    lines = [
        f"- run: {cfg['parts']} parts x {cfg['shards_per_part']} = {len(lf_tars)} LAION-FACE shards of "
        f"{cfg['samples_per_shard']} samples ({size_lf / 1e6:.2f} MB each), {sum(k.startswith('laion_face_cropped/') for k in before)} "
        f"LAION-FACE-cropped shards of {CROPS_PER_SHARD} crops, {sum(k.startswith('raw/') for k in before)} raw shards "
        f"(img2dataset, {RAW_PER_SHARD} rows each), faces manifests, embeddings ({EMB_DIM}-d float16)",
        f"- request: {len(want['urls']):,} URLs of kept samples spread over {len(want['hit_lf'])} of the {len(lf_tars)} "
        f"LAION-FACE shards ({len(want['keys']):,} samples, {want['faces']:,} faces)",
        f"- in-process (Request.read + plan + apply + write_stats, as cmd_takedown): median {med:.2f} s; "
        f"runs {', '.join(f'{x:.2f}' for x in times)}; median run: plan {mid['plan']:.2f} s, apply {mid['apply']:.2f} s, "
        f"write_stats {mid['stats']:.2f} s",
        f"- one `laionface takedown RUN --urls FILE` subprocess (interpreter start + imports included): {cli_s:.2f} s",
    ]
    if f:
        lines += [
            f"- LAION-FACE shards rewritten (bytes changed) {f['changed_lf']} == shards that held a removed URL "
            f"{f['held_lf']} (counted from the manifests before, and by reading the tars): "
            f"{'yes' if f['changed_lf'] == f['held_lf'] else 'NO'}; untouched LAION-FACE shards byte-identical "
            f"{f['untouched_lf_same']}/{f['untouched_lf']}",
            f"- all tars (LAION-FACE, cropped, raw): rewritten {f['changed_all']} == held {f['held_all']} == "
            f"takedowns.parquet shards_rewritten {f['recorded']}; untouched byte-identical {f['untouched_same']}/{f['untouched']}",
        ]
    lines += [
        f"- no removed key, face key or URL left in any tar, raw index, faces manifest or embeddings; removed rows "
        f"taken_down with URL/TEXT cleared in samples and candidates; other rows unchanged: {'yes' if not failures else 'NO'}",
        f"- 1-min load average {load_before:.2f} before, {load_after:.2f} after; copies of the pristine run are in the "
        "page cache when timed",
        f"- RESULT: {verdict} takedown of {len(want['urls']):,} URLs across {len(lf_tars)} shards in {med:.2f} s "
        f"(CLI {cli_s:.2f} s); shards rewritten {f['changed_lf'] if f else '?'} == holding {f['held_lf'] if f else '?'}",
    ]
    print("\n".join(lines))
    for failure in failures:
        print(f"FAIL: {failure}")
    if not (args.no_record or args.quick):
        import pyarrow

        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, pyarrow {pyarrow.__version__}"
        extra = "".join(f" --{k.replace('_', '-')} {getattr(args, k)}" for k in DEFAULTS if getattr(args, k) is not None)
        cmd = "python benchmarks/takedown_bench.py" + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + extra
        block = [f"\n## takedown — {datetime.date.today().isoformat()}", "",
                 f"`{cmd}` (median of {args.repeats}; {machine}; a fresh copy of the pristine run folder before each run)", ""] + lines
        with RESULTS.open("a") as fh:
            fh.write("\n".join(block) + "\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
