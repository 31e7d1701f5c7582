"""A tiny open_clip model for tests and offline checks: no CLIP weights ship anywhere, so tests
build one (random weights), save it with torch.save and load it as production loads weights
(`score.pretrained: PATH`). Needs the clip extra; torch is imported only when called."""

from __future__ import annotations

import json
from pathlib import Path

TINY_NAME = "laionface-tiny"
# 2 + 2 layers, width 64, 64 px images in 16 px patches, 32-d embeddings; the real tokenizer
# (vocab 49408, 77 tokens). About 13 MB on disk, mostly the token embedding.
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_tiny(folder: Path) -> str:
    """Register the architecture with open_clip (a model config JSON, as a user adds one)."""
    import open_clip

    path = Path(folder) / f"{TINY_NAME}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    return TINY_NAME


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Register the tiny architecture and save seeded random weights; the checkpoint path."""
    import open_clip
    import torch

    register_tiny(folder)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_NAME)
    path = Path(folder) / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return path


def save_tiny_clip_dir(folder: Path, seed: int = 0) -> Path:
    """The same tiny model as an open_clip `local-dir:` folder (open_clip_config.json + weights):
    any process, a Ray worker or a subprocess, loads it by name without registering it first."""
    import torch

    folder = Path(folder)
    weights = save_tiny_clip(folder, seed)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG}))
    torch.save(torch.load(weights, weights_only=True), folder / "open_clip_pytorch_model.bin")
    return folder
