"""The tiny FaRL-style model: an open_clip CLIP scaled down, plus a masked-image-modelling head.

The CLIP itself is a plain open_clip model built from a registered config (`laionface-farl-tiny`);
the MIM head (a learned mask token and a linear pixel decoder) lives beside it in
`FarlPretrainer` and is not part of the checkpoint, so the saved state_dict is exactly what
`open_clip.create_model(MODEL_NAME)` expects.

A checkpoint folder holds:
  open_clip_pytorch_model.bin   the CLIP state_dict (torch.save), the file `--out` names
  laionface-farl-tiny.json      the model config (open_clip.add_model_config registers it by file name)
  open_clip_config.json         {"model_cfg", "preprocess_cfg"}: the folder is an open_clip `local-dir:` model
  pretrain.json                 how it was trained (steps, losses, data, held-out rule, seconds)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

MODEL_NAME = "laionface-farl-tiny"
CHECKPOINT_FILE = "open_clip_pytorch_model.bin"  # the name open_clip's local-dir: loader looks for
MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's (OpenAI) defaults: what create_model_and_transforms uses
STD = (0.26862954, 0.26130258, 0.27577711)


def model_config(image_size: int = 64, patch_size: int = 8, width: int = 192, layers: int = 4,
                 text_width: int = 128, text_layers: int = 4, context_length: int = 32, embed_dim: int = 128) -> dict:
    """open_clip model config: a ViT image tower of `layers` x `width` on `image_size` px, patch `patch_size`."""
    if not 64 <= image_size <= 112 or image_size % patch_size:
        raise ValueError(f"image_size must be 64..112 and a multiple of patch_size (got {image_size}, {patch_size})")
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch_size, "head_width": 32},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": text_width, "heads": 4, "layers": text_layers},
    }


def register(config: dict, folder: Path) -> Path:
    """Write `folder/laionface-farl-tiny.json` and register it with open_clip; return the file."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{MODEL_NAME}.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    open_clip.add_model_config(path)
    return path


def create_clip(config: dict, seed: int | None = None):
    """A fresh open_clip CLIP of `config` (registered from a temporary folder), in fp32 on CPU."""
    import tempfile

    import open_clip
    import torch

    with tempfile.TemporaryDirectory(prefix="laionface-cfg-") as tmp:
        register(config, Path(tmp))
    if seed is not None:
        torch.manual_seed(seed)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights loaded": random init is the point here
    try:
        return open_clip.create_model(MODEL_NAME)
    finally:
        quiet.setLevel(level)


def tokenizer(config: dict):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=config["text_cfg"]["context_length"])


def checkpoint_files(ckpt: Path | str) -> tuple[Path, Path]:
    """(state_dict file, its folder) for a checkpoint given as the file or the folder holding it."""
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        ckpt = ckpt / CHECKPOINT_FILE
    return ckpt, ckpt.parent


def save_checkpoint(clip, config: dict, ckpt: Path | str, record: dict[str, Any]) -> Path:
    """The CLIP's state_dict at `ckpt` (atomically), its config files and training record beside it."""
    import torch

    from ..runfolder import atomic_path, write_json

    path, folder = checkpoint_files(ckpt)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in clip.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    (folder / f"{MODEL_NAME}.json").write_text(json.dumps(config, indent=2) + "\n")
    size = config["vision_cfg"]["image_size"]
    write_json({"model_cfg": config, "preprocess_cfg": {"size": size, "mean": list(MEAN), "std": list(STD),
                                                         "interpolation": "bicubic", "resize_mode": "shortest"}},
               folder / "open_clip_config.json")
    write_json(record, folder / "pretrain.json")
    return path


def load_checkpoint(ckpt: Path | str):
    """(CLIP with the checkpoint's weights, its config), through open_clip's own loader."""
    import open_clip

    path, folder = checkpoint_files(ckpt)
    cfg_file = folder / f"{MODEL_NAME}.json"
    if not path.is_file() or not cfg_file.is_file():
        from ..errors import ModelNotFoundError

        raise ModelNotFoundError(f"no checkpoint at {path} (with {cfg_file.name} beside it); make one with: laionface pretrain RUN --out {path}")
    open_clip.add_model_config(cfg_file)
    clip = open_clip.create_model(MODEL_NAME, pretrained=str(path))
    return clip.eval(), json.loads(cfg_file.read_text())


def _torch_modules():
    import torch
    from torch import nn

    class FarlPretrainer(nn.Module):
        """CLIP + MIM: contrastive loss on the whole image, pixel regression on masked patches.

        The masked view replaces `mask_ratio` of the patch embeddings by a learned token before
        the position embeddings, runs the same image transformer, and a linear decoder predicts
        each masked patch's pixels, normalised per patch (MAE's norm_pix target).
        """

        def __init__(self, clip, mask_ratio: float = 0.6, mim_weight: float = 1.0):
            super().__init__()
            import open_clip

            self.clip = clip
            self.mask_ratio = mask_ratio
            self.mim_weight = mim_weight
            width = clip.visual.conv1.out_channels
            self.patch = clip.visual.conv1.kernel_size[0]
            self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
            self.decoder = nn.Linear(width, self.patch * self.patch * 3)
            self.clip_loss = open_clip.ClipLoss()

        def patchify(self, images):
            b, c, h, w = images.shape
            p = self.patch
            x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
            return x.reshape(b, (h // p) * (w // p), p * p * c)

        def mim_loss(self, images):
            v = self.clip.visual
            x = v.conv1(images)
            b, width = x.shape[:2]
            x = x.reshape(b, width, -1).permute(0, 2, 1)
            n = x.shape[1]
            n_mask = max(1, int(round(n * self.mask_ratio)))
            order = torch.rand(b, n, device=x.device).argsort(dim=1)
            mask = torch.zeros(b, n, dtype=torch.bool, device=x.device)
            mask.scatter_(1, order[:, :n_mask], True)
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype).expand(b, n, width), x)
            cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, 1, width)
            x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
            x = v.transformer(v.ln_pre(x))
            pred = self.decoder(v.ln_post(x[:, 1:]))
            target = self.patchify(images)
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
            return ((pred - target) ** 2).mean(-1)[mask].mean()

        def forward(self, images, texts) -> dict:
            img = self.clip.encode_image(images, normalize=True)
            txt = self.clip.encode_text(texts, normalize=True)
            contrastive = self.clip_loss(img, txt, self.clip.logit_scale.exp())
            mim = self.mim_loss(images)
            return {"loss": contrastive + self.mim_weight * mim, "contrastive": contrastive, "mim": mim}

    return FarlPretrainer


def pretrainer(clip, mask_ratio: float = 0.6, mim_weight: float = 1.0):
    return _torch_modules()(clip, mask_ratio, mim_weight)


def image_features(clip, images):
    """Frozen features for linear probes: the pooled token plus the patch tokens pooled on a 2x2 grid.

    Taken before the projection (what a probe reads in FaRL's and MAE's linear evaluations); the
    grid keeps where things are, which the landmark probe needs.
    """
    import torch

    v = clip.visual
    with torch.no_grad():
        x = v.transformer(v._embeds(images))
        pooled, tokens = v._pool(x)
        b, n, width = tokens.shape
        g = int(round(n ** 0.5))
        grid = tokens.reshape(b, g, g, width).permute(0, 3, 1, 2)
        grid = torch.nn.functional.adaptive_avg_pool2d(grid, 2).reshape(b, -1)
        return torch.cat([pooled, grid], dim=1)
