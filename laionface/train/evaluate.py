"""`laionface evaluate`: three probes for a checkpoint and for the same architecture at random init.

1. face vs non-face: a linear (ridge) classifier on frozen image features, accuracy.
   lfw: scikit-image's lfw_subset, faces vs non-faces (the 4 faces the demo composes are left
   out), 5-fold cross-validation. crops: face crops of the run's held-out images vs random crops
   of the non-face photos (coffee, chelsea, rocket, hubble_deep_field, brick); the probe is fit on
   crops of training images and other non-face crops.
2. landmarks: ridge regression of the detector's 5 landmarks from frozen features on unaligned
   face crops (random size 1.3-2x the box, random shift); fit on crops of training images, NME
   (mean point error / inter-ocular distance) on crops of held-out images. Lower is better.
3. retrieval: image -> text R@1 / R@5 over the held-out pairs (the gallery is their distinct
   captions; an image hits when its own caption text is among the top k).

Ridge penalties are chosen by 4-fold cross-validation on the probe's training data only.
sklearn is not a dependency: the ridge is closed form in numpy.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data

LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
MAX_FIT_IMAGES = 400  # training images whose face crops fit the crop probes
RANDOM_INIT_SEED = 0


# ---------------------------------------------------------------- ridge, numpy


@dataclass
class Ridge:
    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.w + self.b


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> Ridge:
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    b = y.mean(0)
    n, d = z.shape
    if n < d:  # dual form
        w = z.T @ np.linalg.solve(z @ z.T + lam * np.eye(n), y - b)
    else:
        w = np.linalg.solve(z.T @ z + lam * np.eye(d), z.T @ (y - b))
    return Ridge(mean, scale, w, b)


def _folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def ridge_cv(x: np.ndarray, y: np.ndarray, error, k: int = 4) -> Ridge:
    """The ridge whose penalty has the lowest k-fold error on (x, y), refit on all of it."""
    folds = _folds(len(x), k)
    best = None
    for lam in LAMBDAS:
        errs = []
        for f in folds:
            train = np.setdiff1d(np.arange(len(x)), f)
            errs.append(error(ridge_fit(x[train], y[train], lam).predict(x[f]), y[f]))
        score = float(np.mean(errs))
        if best is None or score < best[0]:
            best = (score, lam)
    return ridge_fit(x, y, best[1])


def _misclassified(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.sign(pred[:, 0]) != y[:, 0]))


def nme(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over faces of mean point distance / inter-ocular distance (points 0 and 1: the eyes)."""
    p, t = pred.reshape(-1, 5, 2), y.reshape(-1, 5, 2)
    iod = np.linalg.norm(t[:, 0] - t[:, 1], axis=1)
    return float(np.mean(np.linalg.norm(p - t, axis=2).mean(1) / np.maximum(iod, 1e-6)))


# ---------------------------------------------------------------- probe data


@dataclass
class ProbeData:
    lfw_images: list  # PIL
    lfw_labels: np.ndarray
    fit_crops: list  # face crops of training images
    fit_points: np.ndarray  # (n, 10) landmarks as fractions of the crop
    test_crops: list  # face crops of held-out images
    test_points: np.ndarray
    fit_non_faces: list
    test_non_faces: list
    pair_images: list  # held-out full images (or crops, for a cropped-trained model: the same source)
    pair_texts: list[str]


def _rng(key: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big"))


def _lfw() -> tuple[list, np.ndarray]:
    import skimage.data
    from PIL import Image

    from ..testing.faces import _LFW_INDICES

    lfw = skimage.data.lfw_subset()
    idx = [i for i in range(100) if i not in _LFW_INDICES] + list(range(100, 200))
    images = [Image.fromarray(np.round(lfw[i] * 255).astype(np.uint8)).convert("RGB") for i in idx]
    return images, np.array([1.0 if i < 100 else -1.0 for i in idx])


def non_face_crops(n: int, seed: int) -> list:
    """`n` random square crops (48-256 px) of the non-face photos."""
    from PIL import Image

    from ..testing.faces import non_face_images

    photos = [Image.fromarray(img) for img in non_face_images().values()]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side = rng.randint(48, min(256, *photo.size))
        left, top = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
        out.append(photo.crop((left, top, left + side, top + side)))
    return out


def probe_data(run: Path | str, source: str = "full") -> ProbeData:
    """Everything the probes read, deterministic for a run (crop jitter is seeded by the key)."""
    run = Path(run)
    full = data.shard_paths(run, "full")
    if not full:
        raise data.MissingInputError(f"no laion_face shards under {run}: evaluate needs the full images and their detections")
    crops: dict[str, tuple[list, list]] = {"train": ([], []), "heldout": ([], [])}
    pair_images, pair_texts = [], []
    fit_images = 0
    for sample in data.iter_samples(full, "all"):
        split = "heldout" if data.is_held_out(sample["key"]) else "train"
        if split == "train":
            if fit_images >= MAX_FIT_IMAGES:
                continue
            fit_images += 1
        rng = _rng(sample["key"])
        faces = [f for f in data.kept_faces(sample["meta"]) if f.get("landmarks")]
        for face in faces:
            crop, points = data.face_crop(sample["image"], face["box"], face["landmarks"], rng)
            crops[split][0].append(crop)
            crops[split][1].append(points.reshape(-1))
        if split == "heldout" and sample["text"].strip() and source == "full":
            pair_images.append(sample["image"])
            pair_texts.append(sample["text"])
    if source == "cropped":  # the pairs the model learned from: a held-out image's first crop and its caption
        seen = set()
        for sample in data.iter_samples(data.shard_paths(run, "cropped"), "heldout"):
            if sample["text"].strip() and data.image_key(sample["key"]) not in seen:
                seen.add(data.image_key(sample["key"]))
                pair_images.append(sample["image"])
                pair_texts.append(sample["text"])
    lfw_images, lfw_labels = _lfw()
    n_fit, n_test = len(crops["train"][0]), len(crops["heldout"][0])
    if n_test < 10 or n_fit < 10 or len(pair_texts) < 5:
        raise data.MissingInputError(
            f"too few samples to probe: {n_fit} training and {n_test} held-out face crops, {len(pair_texts)} held-out pairs; "
            "build a bigger run (e.g. laionface demo --rows 800 --captions describe)")
    return ProbeData(lfw_images, lfw_labels, crops["train"][0], np.stack(crops["train"][1]),
                     crops["heldout"][0], np.stack(crops["heldout"][1]),
                     non_face_crops(n_fit, seed=1), non_face_crops(n_test, seed=2), pair_images, pair_texts)


# ---------------------------------------------------------------- features and probes


def _encode(clip, images: list, size: int, device: str, batch: int = 128) -> np.ndarray:
    import torch

    from .model import image_features

    out = []
    for i in range(0, len(images), batch):
        x = torch.stack([data.to_tensor(im, size) for im in images[i:i + batch]]).to(device)
        out.append(image_features(clip, x).float().cpu().numpy())
    return np.concatenate(out)


def _retrieval(clip, config: dict, images: list, texts: list[str], device: str) -> dict[str, float]:
    import torch

    from .model import tokenizer

    size = config["vision_cfg"]["image_size"]
    gallery = sorted(set(texts))
    truth = np.array([gallery.index(t) for t in texts])
    tok = tokenizer(config)
    with torch.no_grad():
        img = torch.cat([clip.encode_image(torch.stack([data.to_tensor(im, size) for im in images[i:i + 128]]).to(device),
                                           normalize=True) for i in range(0, len(images), 128)])
        txt = torch.cat([clip.encode_text(tok(gallery[i:i + 128]).to(device), normalize=True)
                         for i in range(0, len(gallery), 128)])
        sim = (img @ txt.T).float().cpu().numpy()
    # rank of the true caption; ties count against the model (a constant model gets no free hits)
    true_score = sim[np.arange(len(truth)), truth]
    rank = (sim >= true_score[:, None]).sum(1) - 1
    return {"r1": float(np.mean(rank < 1)), "r5": float(np.mean(rank < 5)), "gallery": len(gallery), "images": len(images)}


def few_shot_accuracy(x_pos: np.ndarray, x_neg: np.ndarray, test_x: np.ndarray, test_y: np.ndarray | None = None,
                      shots: int = 10, repeats: int = 20, seed: int = 0) -> float:
    """Mean accuracy of ridge classifiers fit on `shots` positives + `shots` negatives, `repeats` draws.

    test_y None: the test set is whatever the draw left out of (x_pos, x_neg).
    """
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(repeats):
        ip, ineg = rng.permutation(len(x_pos)), rng.permutation(len(x_neg))
        x = np.concatenate([x_pos[ip[:shots]], x_neg[ineg[:shots]]])
        y = np.concatenate([np.ones(shots), -np.ones(shots)])[:, None]
        if test_y is None:
            tx = np.concatenate([x_pos[ip[shots:]], x_neg[ineg[shots:]]])
            ty = np.concatenate([np.ones(len(ip) - shots), -np.ones(len(ineg) - shots)])[:, None]
        else:
            tx, ty = test_x, test_y
        accs.append(1 - _misclassified(ridge_cv(x, y, _misclassified).predict(tx), ty))
    return float(np.mean(accs))


def run_probes(clip, config: dict, pd: ProbeData, device: str = "cpu") -> dict[str, float]:
    size = config["vision_cfg"]["image_size"]
    clip = clip.to(device).eval()
    # (1a) lfw: all-data 5-fold CV, and 10-shot
    x = _encode(clip, pd.lfw_images, size, device)
    y = pd.lfw_labels[:, None]
    wrong = []
    for f in _folds(len(x), 5, seed=1):
        train = np.setdiff1d(np.arange(len(x)), f)
        wrong.append(_misclassified(ridge_cv(x[train], y[train], _misclassified).predict(x[f]), y[f]))
    lfw_acc = 1 - float(np.mean(wrong))
    lfw_few = few_shot_accuracy(x[y[:, 0] > 0], x[y[:, 0] < 0], None)
    # (1b) held-out face crops vs non-face crops, fit on crops of training images; (2) landmarks
    fit_faces, test_faces = _encode(clip, pd.fit_crops, size, device), _encode(clip, pd.test_crops, size, device)
    fit_non, test_non = _encode(clip, pd.fit_non_faces, size, device), _encode(clip, pd.test_non_faces, size, device)
    xf = np.concatenate([fit_faces, fit_non])
    yf = np.concatenate([np.ones(len(fit_faces)), -np.ones(len(fit_non))])[:, None]
    xt = np.concatenate([test_faces, test_non])
    yt = np.concatenate([np.ones(len(test_faces)), -np.ones(len(test_non))])[:, None]
    crop_acc = 1 - _misclassified(ridge_cv(xf, yf, _misclassified).predict(xt), yt)
    crop_few = few_shot_accuracy(fit_faces, fit_non, xt, yt)
    lm = ridge_cv(fit_faces, pd.fit_points, nme)
    landmark_nme = nme(lm.predict(test_faces), pd.test_points)
    # (3) retrieval
    r = _retrieval(clip, config, pd.pair_images, pd.pair_texts, device)
    return {"face_lfw_acc_10shot": lfw_few, "face_crops_acc_10shot": crop_few, "face_lfw_acc": lfw_acc,
            "face_crops_acc": crop_acc, "landmark_nme": landmark_nme, "retrieval_r1": r["r1"], "retrieval_r5": r["r5"]}


# name, label, higher is better
METRICS = (
    ("face_lfw_acc_10shot", "face vs non-face, lfw_subset (acc, 10-shot)", True),
    ("face_crops_acc_10shot", "face vs non-face, held-out crops (acc, 10-shot)", True),
    ("face_lfw_acc", "face vs non-face, lfw_subset (acc, 5-fold CV)", True),
    ("face_crops_acc", "face vs non-face, held-out crops (acc, all fit)", True),
    ("landmark_nme", "5-landmark NME, held-out crops (lower better)", False),
    ("retrieval_r1", "image->text R@1, held-out pairs", True),
    ("retrieval_r5", "image->text R@5, held-out pairs", True),
)


# The probes the acceptance reads: the all-data face probes saturate (random init ~0.97) on
# sets this small, so the 10-shot ones are the face probe; the others are reported beside them.
ACCEPTANCE = ("face_lfw_acc_10shot", "face_crops_acc_10shot", "landmark_nme", "retrieval_r1", "retrieval_r5")


def format_table(result: dict) -> str:
    rows = [f"{'probe':<48} {'random':>8} {'pretrained':>10} {'margin':>8}"]
    for name, label, higher in METRICS:
        r, p = result["random_init"][name], result["pretrained"][name]
        margin = (p - r) if higher else (r - p)
        rows.append(f"{label:<48} {r:>8.3f} {p:>10.3f} {margin:>+8.3f}")
    rows.append(f"(margin > 0: the checkpoint is better; {result['counts']})")
    return "\n".join(rows)


def margins(result: dict) -> dict[str, float]:
    return {name: round((result["pretrained"][name] - result["random_init"][name]) * (1 if higher else -1), 4)
            for name, _, higher in METRICS}


def evaluate(run: Path | str, ckpt: Path | str, device: str = "auto", threads: int = 2) -> dict:
    import json

    import torch

    from ..runfolder import write_json
    from ..stages.score import pick_device
    from .model import checkpoint_files, create_clip, load_checkpoint

    run = Path(run)
    device = pick_device(device)
    if device == "cpu":
        torch.set_num_threads(threads)
    trained, config = load_checkpoint(ckpt)
    record_file = checkpoint_files(ckpt)[1] / "pretrain.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    source = record.get("source", "full")
    pd = probe_data(run, source)
    result = {
        "checkpoint": str(checkpoint_files(ckpt)[0]),
        "pretrained": run_probes(trained, config, pd, device),
        "random_init": run_probes(create_clip(config, seed=RANDOM_INIT_SEED), config, pd, device),
        "random_init_seed": RANDOM_INIT_SEED,
        "held_out": f"sha1(image key) % 100 < {data.HELD_OUT_PERCENT}",
        "counts": {"lfw": len(pd.lfw_images), "fit_crops": len(pd.fit_crops), "test_crops": len(pd.test_crops),
                   "held_out_pairs": len(pd.pair_texts), "distinct_captions": len(set(pd.pair_texts))},
        "pretrain": {k: record.get(k) for k in ("source", "steps", "seconds", "first_loss", "last_loss")},
    }
    result["margins"] = margins(result)
    result["beats_random_init"] = all(result["margins"][name] > 0 for name in ACCEPTANCE)
    write_json(result, run / "eval.json")
    result["report_updated"] = add_to_report(run, result)
    return result


def add_to_report(run: Path, result: dict) -> bool:
    """Put (or replace) an "Evaluation" section in RUN/report.html when the report exists."""
    import html
    import re

    report = run / "report.html"
    if not report.exists():
        return False
    from ..runfolder import atomic_path

    page = report.read_text(encoding="utf-8")
    section = (f'<section id="evaluation"><h2>Evaluation (laionface evaluate)</h2><pre>{html.escape(format_table(result))}</pre>'
               f'<p class="note">checkpoint <code>{html.escape(result["checkpoint"])}</code>; the numbers are in '
               '<code>eval.json</code>.</p></section>')
    page = re.sub(r'<section id="evaluation">.*?</section>', "", page, flags=re.S)
    page = page.replace("</body>", section + "</body>", 1) if "</body>" in page else page + section
    with atomic_path(report) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return True
