"""`laionface demo`: the whole pipeline on a bundled sample, served from 127.0.0.1.

Captions are real LAION rows (img2dataset's test list); images are composed at demo time from
real face photos that ship in scikit-image and matplotlib, plus non-face photos and broken
entries (404, HTML page, truncated JPEG, opted-out), so every status shows up in the funnel.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..runfolder import read_parquet

HERE = Path(__file__).parent
PARTS = 2


def _image_plan(n: int, rng: np.random.Generator) -> list[str]:
    """What each row's URL serves, in a fixed shuffled order."""
    kinds = (["face"] * 60 + ["small_face"] * 4 + ["non_face"] * 20 + ["404"] * 4 + ["html"] * 3
             + ["truncated"] * 3 + ["noai"] * 2 + ["ftp"] * 1 + ["dup_url"] * 2 + ["empty_caption"] * 1)
    plan = [kinds[i % len(kinds)] for i in range(n)]
    rng.shuffle(plan)
    return plan


# captions="describe": what each composed photo shows, so that image-text pairs carry a signal
# a model can learn (`laionface pretrain` / `evaluate`'s retrieval probe); "laion" (the default)
# keeps real LAION captions, assigned round-robin, which say nothing about the composed image.
CAPTION_MODES = ("laion", "describe")
_SUBJECTS = {
    "astronaut": "astronaut Eileen Collins in a white spacesuit", "camera": "a cameraman with a tripod, black and white",
    "grace_hopper": "Grace Hopper in navy uniform", "lfw_0": "a grey passport photo of a man with short hair",
    "lfw_2": "a grey photo of a smiling man", "lfw_3": "a grey close-up of a man in a suit",
    "lfw_41": "a grey snapshot of a woman",
}
_PLACES = {"coffee": "a cup of coffee", "chelsea": "a tabby cat", "rocket": "a rocket launch",
           "hubble_deep_field": "the night sky full of galaxies", "brick": "a brick wall"}


def _describe(source: str, face_px: int, place: str) -> str:
    size = "a close-up of" if face_px >= 150 else "a portrait of" if face_px >= 90 else "a small picture of"
    return f"{size} {_SUBJECTS.get(source, 'a person')} in front of {_PLACES.get(place, place)}"


def build_sample(folder: Path, base_url: str, n_rows: int, seed: int = 0, parts: int = PARTS,
                 captions: str = "laion") -> tuple[list[Path], Path]:
    """Write images under folder/www, metadata parts under folder/meta, and an ID list; return them."""
    from ..testing.faces import compose, encode_jpeg, face_sources, fault_images, non_face_images

    rng = np.random.default_rng(seed)
    www = folder / "www"
    www.mkdir(parents=True, exist_ok=True)
    if captions not in CAPTION_MODES:
        raise ValueError(f"captions must be one of {', '.join(CAPTION_MODES)}, not {captions!r}")
    laion_captions = read_parquet(HERE / "laion_sample_captions.parquet")["TEXT"].to_pylist()
    sources = face_sources()
    non_faces = list(non_face_images().items())
    backgrounds = ["coffee", "chelsea", "rocket", "hubble_deep_field", "brick"]
    faults = fault_images()
    (www / "truncated.jpg").write_bytes(faults["truncated.jpg"])
    rows = []
    for i, kind in enumerate(_image_plan(n_rows, rng)):
        name = f"img_{i:05d}.jpg"
        width, height = 400, 300  # what the metadata claims, also for URLs that will fail
        url = f"{base_url}/{name}"
        if kind in ("face", "small_face", "dup_url", "empty_caption", "noai"):
            face_px = int(rng.integers(20, 30)) if kind == "small_face" else int(rng.integers(64, 220))
            w, h = int(rng.integers(360, 720)), int(rng.integers(300, 600))
            comp = compose(sources[i % len(sources)], face_px, (w, h), backgrounds[i % len(backgrounds)], rng=rng)
            (www / name).write_bytes(encode_jpeg(comp.image, quality=int(rng.integers(70, 95))))
            width, height = w, h
            described = _describe(sources[i % len(sources)].name, face_px, backgrounds[i % len(backgrounds)])
        elif kind == "non_face":
            place, img = non_faces[i % len(non_faces)]
            (www / name).write_bytes(encode_jpeg(img))
            width, height = img.shape[1], img.shape[0]
            described = f"a photo of {_PLACES.get(place, place)}"
        if kind == "404":
            url = f"{base_url}/fault/404?i={i}"
        elif kind == "html":
            url = f"{base_url}/fault/html?i={i}"
        elif kind == "truncated":
            url = f"{base_url}/truncated.jpg?i={i}"
        elif kind == "noai":
            url = f"{base_url}/fault/noai/{name}"
        elif kind == "ftp":
            url = f"ftp://127.0.0.1/{name}"
        elif kind == "dup_url" and rows:
            url = rows[-1]["URL"]
        caption = "" if kind == "empty_caption" else (
            described if captions == "describe" and kind in ("face", "non_face", "dup_url", "noai") else laion_captions[i % len(laion_captions)])
        rows.append({"SAMPLE_ID": 1_000_000 + 7 * i, "URL": url, "TEXT": caption, "HEIGHT": float(height), "WIDTH": float(width),
                     "LICENSE": "?", "NSFW": "UNLIKELY" if i % 29 else "NSFW", "similarity": float(rng.uniform(0.3, 0.42))})
    meta = folder / "meta"
    meta.mkdir(exist_ok=True)
    per_part = -(-len(rows) // parts)
    paths = []
    for part in range(parts):
        path = meta / f"part-{part:05d}-5b54c5d5-bbcf-484d-a2ce-0d6f73df1a36-c000.snappy.parquet"
        pq.write_table(pa.Table.from_pylist(rows[part * per_part:(part + 1) * per_part]), path, compression="snappy")
        paths.append(path)
    # The ID list leaves out every 16th row, as LAION-Face leaves out images without faces.
    ids = folder / "laion_face_ids.txt"
    ids.write_text("\n".join(str(r["SAMPLE_ID"]) for i, r in enumerate(rows) if i % 16 != 15) + "\n")
    return paths, ids


def run_demo(out: Path, n_rows: int = 320, captions: str = "laion") -> int:
    from ..idlists import load_id_list
    from ..pipeline import Pipeline
    from ..runfolder import RunFolder, write_json
    from ..runner import LocalRunner
    from ..metaparts import plan_parts
    from ..stages.select import select
    from ..summary import format_funnel, format_stages, funnel, outputs_listing, write_stats
    from ..testing.server import FaultServer
    from ..contactsheet import contact_sheet

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # the demo always starts clean
    run = RunFolder(out)
    pipeline = Pipeline.from_yaml(HERE / "demo.yaml").with_settings("download", allow_private_addresses=True)
    with tempfile.TemporaryDirectory(prefix="laionface-demo-") as tmp, FaultServer(Path(tmp) / "www", timeout_delay=5) as server:
        print(f"building {n_rows} sample rows from real face photos, served at {server.url}")
        (Path(tmp) / "www").mkdir(exist_ok=True)
        meta_paths, ids_path = build_sample(Path(tmp), server.url, n_rows, captions=captions)
        results = select(plan_parts(str(meta_paths[0].parent)), load_id_list(ids_path), pipeline.get("select"), run.candidates)
        write_json({"pipeline": pipeline.to_dict(), "config_hash": pipeline.hash}, run.config)
        write_stats(run, {"select": {str(r.part): vars(r) for r in results}})
        outcomes = LocalRunner(run, pipeline).run_parts()
    write_stats(run)
    sheet, n_crops, n_full = contact_sheet(out, out / "contact_sheet.png")
    counts: Counter = funnel(run)
    not_in_list = sum(r.input_rows - r.matched_rows for r in results)
    counts["not_in_id_list"] = not_in_list
    print()
    print(format_funnel(counts, f"funnel: {n_rows} input rows"))
    assert sum(counts.values()) == n_rows, "funnel does not add up to the input"
    print()
    print(format_stages(outcomes))
    print(f"contact sheet: {sheet} ({n_crops} crops, {n_full} source images with boxes and landmarks)")
    print(f"outputs under {out}:\n{outputs_listing(out)}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0 if all(o.state == "done" for o in outcomes) else 1
