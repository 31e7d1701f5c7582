"""`laionface show`: one PNG a person can look at to judge what was built.

Top: face crops from the LAION-FACE-cropped shards, taken round-robin over parts so every part
shows. Bottom: a few of their source images from the LAION-FACE shards with every detection drawn
(green box: kept, red: not kept), the 5 landmarks (left eye blue, right eye red, nose green,
mouth corners yellow) and, in cyan, the region each crop was cut from (the crop square mapped
back through its transform).
"""

from __future__ import annotations

import io
import json
import tarfile
from itertools import zip_longest
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import MissingInputError
from .runfolder import RunFolder, atomic_path

LANDMARK_COLOURS = [(40, 90, 255), (255, 40, 40), (40, 220, 40), (255, 220, 0), (255, 220, 0)]
KEPT_COLOUR, REJECTED_COLOUR, FOOTPRINT_COLOUR = (0, 220, 0), (230, 0, 0), (0, 230, 230)


def _samples(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample of one webdataset tar, in tar order."""
    with tarfile.open(tar_path) as tar:
        current, files = None, {}
        for member in tar:
            key, _, ext = member.name.partition(".")
            if key != current and current is not None:
                yield current, files
                files = {}
            current = key
            files[ext] = tar.extractfile(member).read()
        if current is not None:
            yield current, files


def _round_robin(folder: Path, n: int) -> list[tuple[str, dict[str, bytes]]]:
    """Up to n samples from the part-*/ tars under folder, one part at a time in turn."""
    per_part = [(s for tar in sorted(part.glob("*.tar")) for s in _samples(tar)) for part in sorted(folder.glob("part-*"))]
    out: list = []
    for round_ in zip_longest(*per_part):
        out.extend(s for s in round_ if s is not None)
        if len(out) >= n:
            break
    return out[:n]


def _full_image(run: RunFolder, shard: str, key: str) -> dict[str, bytes] | None:
    for k, files in _samples(run.root / shard):
        if k == key:
            return files
    return None


def _draw_full(files: dict[str, bytes], footprints: list[np.ndarray], height: int):
    """The upright image scaled to `height`, with boxes, landmarks and crop footprints drawn."""
    from PIL import Image, ImageDraw

    from .imagedecode import decode_image

    meta = json.loads(files["json"])
    img = Image.fromarray(decode_image(files["jpg"], max_side=None).rgb)
    s = height / img.height
    img = img.resize((max(1, round(img.width * s)), height), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(img)
    line = max(2, height // 150)
    for quad in footprints:
        pts = [tuple(p) for p in (quad * s)[[0, 1, 3, 2]]]
        draw.polygon(pts, outline=FOOTPRINT_COLOUR, width=line)
    for face in meta.get("faces", []):
        x0, y0, x1, y1 = (v * s for v in face["box"])
        draw.rectangle([x0, y0, x1, y1], outline=KEPT_COLOUR if face["kept"] else REJECTED_COLOUR, width=line)
        r = max(2, line + 1)
        for (x, y), colour in zip(np.asarray(face["landmarks"]).reshape(5, 2) * s, LANDMARK_COLOURS):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return img


def contact_sheet(run_dir: Path, out: Path | None = None, n: int = 64, full_images: int = 4,
                  cell: int = 128, columns: int = 8) -> tuple[Path, int, int]:
    """Write the sheet (default RUN/contact_sheet.png); return (path, crops drawn, full images drawn)."""
    from PIL import Image, ImageDraw

    run = RunFolder(run_dir)
    out = Path(out) if out else run.root / "contact_sheet.png"
    crops = _round_robin(run.root / "laion_face_cropped", n)
    if not crops:
        raise MissingInputError(f"no LAION-FACE-cropped shards under {run.root / 'laion_face_cropped'}; make them with: laionface crop {run.root}")
    metas = [json.loads(files["json"]) for _, files in crops]

    # source images of the first crops shown, each with the footprints of all its crops on the sheet
    sources: dict[str, list] = {}
    for meta in metas:
        if meta["key"] not in sources and len(sources) < full_images and meta.get("source_shard"):
            sources[meta["key"]] = [meta["source_shard"], []]
        if meta["key"] in sources:
            size = meta["size"]
            m = np.array(meta["transform"], np.float64)
            inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
            corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
            sources[meta["key"]][1].append(corners @ inv[:, :2].T + inv[:, 2])
    full_height = 2 * cell
    panels = []
    for key, (shard, footprints) in sources.items():
        files = _full_image(run, shard, key)
        if files and "jpg" in files and "json" in files:
            panels.append(_draw_full(files, footprints, full_height))

    width = columns * (cell + 4)
    rows = -(-len(crops) // columns)
    header = 22
    panel_rows, x, y_panel = [], 0, 0
    for p in panels:  # wrap full images into rows of the sheet's width
        p.thumbnail((width - 4, full_height))
        if x + p.width + 4 > width and x:
            y_panel += full_height + 4
            x = 0
        panel_rows.append((p, x, y_panel))
        x += p.width + 4
    full_block = (y_panel + full_height + 4 + header) if panels else 0
    sheet = Image.new("RGB", (width, header + rows * (cell + 4) + full_block), "white")
    draw = ImageDraw.Draw(sheet)
    recipe = metas[0].get("recipe", "?")
    draw.text((4, 5), f"{run.root.name}: {len(crops)} LAION-FACE-cropped crops ({recipe}), round-robin over parts", fill="black")
    for i, (_, files) in enumerate(crops):
        thumb = Image.open(io.BytesIO(files["jpg"])).convert("RGB")
        thumb.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        x, y = (i % columns) * (cell + 4) + 2, header + (i // columns) * (cell + 4) + 2
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
    if panels:
        top = header + rows * (cell + 4)
        draw.text((4, top + 5), "sources: green kept / red rejected box, landmarks (blue left eye, red right eye, "
                  "green nose, yellow mouth), cyan: crop region", fill="black")
        for p, x, y in panel_rows:
            sheet.paste(p, (x + 2, top + header + y))
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out, len(crops), len(panels)

