"""`laionface pretrain`: train the tiny FaRL-style model on a run's shards.

Loss = open_clip's ClipLoss (image-text contrastive, on the whole view) + masked image modelling
(MAE/MCF style pixel regression of masked patches; see model.FarlPretrainer). AdamW with a
linear warm-up and cosine decay; CPU (torch threads = `threads`) or the GPU when there is one.
Held-out samples (data.is_held_out) are never read. The checkpoint is the CLIP's plain
state_dict with its config beside it (model.save_checkpoint).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import data
from .model import CHECKPOINT_FILE, MODEL_NAME


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1000
    # Wall-clock cap: training stops (and saves) after this many minutes even if `steps` are not
    # done, and the learning-rate schedule follows whichever of steps or time is further along,
    # so a slow or busy CPU still gets a full warm-up/decay within the budget. 0: no cap.
    max_minutes: float = 9.0
    batch_size: int = 64
    image_size: int = 64  # 64..112
    patch_size: int = 8
    width: int = 128
    layers: int = 4
    text_width: int = 128
    text_layers: int = 3
    context_length: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 40
    mask_ratio: float = 0.6  # MAE uses 0.75, MCF/FaRL's BEiT-style ~0.4; 0.6 suits 64 patches
    mim_weight: float = 1.0
    source: str | None = None  # cropped | full; None: cropped when the run has those shards
    seed: int = 0
    workers: int = 2  # DataLoader workers (shards are split between them)
    threads: int = 2  # torch CPU threads
    device: str = "auto"
    shuffle_buffer: int = 512

    def clip_config(self) -> dict:
        from .model import model_config

        return model_config(self.image_size, self.patch_size, self.width, self.layers, self.text_width, self.text_layers,
                            self.context_length)


@dataclass
class PretrainResult:
    checkpoint: Path
    losses: list[dict] = field(default_factory=list)  # one {"step", "loss", "contrastive", "mim"} per step
    seconds: float = 0.0
    samples_seen: int = 0
    clip: object = None  # the trained open_clip model (eval mode, on its device)


def default_checkpoint(run: Path | str) -> Path:
    return Path(run) / "pretrain" / CHECKPOINT_FILE


def _lr_at(step: int, config: PretrainConfig, elapsed: float = 0.0) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    if config.max_minutes:
        progress = max(progress, elapsed / (config.max_minutes * 60))
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(run: Path | str, config: PretrainConfig = PretrainConfig(), out: Path | str | None = None,
             progress: bool = True) -> PretrainResult:
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..stages.score import pick_device
    from .model import create_clip, pretrainer, save_checkpoint, tokenizer

    run = Path(run)
    source = data.pick_source(run, config.source)
    paths = data.shard_paths(run, source)
    device = pick_device(config.device)
    if device == "cpu":
        torch.set_num_threads(config.threads)
    clip_cfg = config.clip_config()
    clip = create_clip(clip_cfg, seed=config.seed)
    model = pretrainer(clip, config.mask_ratio, config.mim_weight).to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                               {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98))
    dataset = data.shard_dataset(paths, data.TrainTransform(config.image_size, tokenizer(clip_cfg), source, config.seed),
                                 split="train", shuffle_buffer=config.shuffle_buffer, seed=config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers, drop_last=True,
                        worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(config.seed))
    torch.manual_seed(config.seed)
    result = PretrainResult(Path(out) if out else default_checkpoint(run))
    t0 = time.perf_counter()
    step = 0
    bar = tqdm(total=config.steps, desc=f"pretrain ({source}, {device})", unit="step", disable=not progress)
    def out_of_time() -> bool:
        return bool(config.max_minutes) and time.perf_counter() - t0 > config.max_minutes * 60

    while step < config.steps and not out_of_time():
        got_batch = False
        for images, texts in loader:
            got_batch = True
            for group in optim.param_groups:
                group["lr"] = _lr_at(step, config, time.perf_counter() - t0)
            losses = model(images.to(device, non_blocking=True), texts.to(device, non_blocking=True))
            optim.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            record = {"step": step, **{k: round(float(v.detach()), 5) for k, v in losses.items()}}
            result.losses.append(record)
            result.samples_seen += images.shape[0]
            bar.set_postfix(loss=f"{record['loss']:.3f}", clip=f"{record['contrastive']:.3f}", mim=f"{record['mim']:.3f}")
            bar.update(1)
            step += 1
            if step >= config.steps or out_of_time():
                break
        if not got_batch:
            raise data.MissingInputError(
                f"fewer than {config.batch_size} training samples in {data.shard_folder(source)} shards of {run}; "
                "use a smaller --batch-size or a bigger run")
        dataset.epoch += 1
    bar.close()
    result.seconds = round(time.perf_counter() - t0, 1)
    record = {"model": MODEL_NAME, "run": str(run.resolve()), "source": source, "shards": [str(p.relative_to(run)) for p in paths],
              "held_out": f"sha1(image key) % 100 < {data.HELD_OUT_PERCENT}", "config": asdict(config), "device": device,
              "steps": step, "stopped_by": "steps" if step >= config.steps else "max_minutes", "samples_seen": result.samples_seen, "seconds": result.seconds,
              "first_loss": result.losses[0] if result.losses else None, "last_loss": result.losses[-1] if result.losses else None}
    result.checkpoint = save_checkpoint(clip, clip_cfg, result.checkpoint, record)
    result.clip = clip.eval()
    return result


def _seed_worker(worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)  # decoding workers must not fight the training threads for cores
