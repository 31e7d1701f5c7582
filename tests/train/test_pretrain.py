"""Pretrain: the shard DataLoader, the loss, the checkpoint through open_clip (tiny sizes, CPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from laionface.train import data  # noqa: E402
from laionface.train.model import CHECKPOINT_FILE, MODEL_NAME, create_clip, model_config, pretrainer, tokenizer  # noqa: E402
from laionface.train.pretrain import PretrainConfig, pretrain  # noqa: E402

from . import make_run  # noqa: E402

TINY = dict(image_size=64, patch_size=16, width=64, layers=2, text_width=64, text_layers=1, context_length=32)


def _key(sample: dict) -> str:  # module level: DataLoader workers may be spawned, and lambdas do not pickle
    return sample["key"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_run")
    return root, make_run(root, n=60, per_shard=12)


def test_two_workers_read_every_sample_once_and_the_splits_partition_the_keys(run):
    root, keys = run
    paths = data.shard_paths(root, "full")
    assert len(paths) >= 4
    seen = {}
    for split in ("all", "train", "heldout"):
        ds = data.shard_dataset(paths, _key, split=split, shuffle_buffer=8 if split == "train" else 0)
        seen[split] = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))
    assert sorted(seen["all"]) == sorted(keys)  # nothing twice, nothing missing
    assert len(seen["train"]) == len(set(seen["train"])) and len(seen["heldout"]) == len(set(seen["heldout"]))
    assert sorted(seen["train"] + seen["heldout"]) == sorted(keys)
    assert seen["heldout"] and all(data.is_held_out(k) for k in seen["heldout"])
    assert data.is_held_out("00000_1234_f0") == data.is_held_out("00000_1234")  # a crop goes with its image


def test_loss_decreases_over_a_few_steps():
    cfg = model_config(**{k: v for k, v in TINY.items()})
    model = pretrainer(create_clip(cfg, seed=0))
    tok = tokenizer(cfg)
    torch.manual_seed(0)
    images = torch.randn(8, 3, 64, 64)
    texts = tok([f"caption number {i}" for i in range(8)])
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(1)  # the same mask every step: the decrease is learning, not luck
        out = model(images, texts)
        optim.zero_grad()
        out["loss"].backward()
        optim.step()
        losses.append((out["contrastive"].item(), out["mim"].item()))
    assert losses[-1][0] < losses[0][0] * 0.8 and losses[-1][1] < losses[0][1]


def test_pretrain_checkpoint_round_trips_through_open_clip_and_score(run, tmp_path):
    root, _ = run
    out = tmp_path / "ckpt" / CHECKPOINT_FILE
    result = pretrain(root, PretrainConfig(steps=3, batch_size=8, workers=2, warmup=1, max_minutes=0, **TINY),
                      out=out, progress=False)
    assert result.checkpoint == out and out.is_file() and len(result.losses) == 3
    assert (out.parent / f"{MODEL_NAME}.json").is_file() and (out.parent / "open_clip_config.json").is_file()
    open_clip.add_model_config(out.parent / f"{MODEL_NAME}.json")
    plain = open_clip.create_model(MODEL_NAME)
    plain.load_state_dict(torch.load(out, weights_only=True))
    by_path = open_clip.create_model(MODEL_NAME, pretrained=str(out)).eval()
    local_dir, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out.parent}")
    x = torch.randn(2, 3, 64, 64)
    t = open_clip.get_tokenizer(MODEL_NAME)(["a face", "a cup of coffee"])
    with torch.no_grad():
        want = result.clip.encode_image(x), result.clip.encode_text(t)
        for model in (plain.eval(), by_path, local_dir.eval()):
            torch.testing.assert_close(model.encode_image(x), want[0])
            torch.testing.assert_close(model.encode_text(t), want[1])

    from laionface.stages.score import ScoreConfig, ScoreStage

    stage = ScoreStage(ScoreConfig(model=f"local-dir:{out.parent}", device="cpu", threshold=-1.0))
    stage.setup()
    assert stage.clip.model.visual.image_size == (64, 64)


def test_importing_the_train_package_does_not_import_torch():
    code = ("import sys, laionface.cli, laionface.train, laionface.train.data, laionface.train.model, "
            "laionface.train.pretrain, laionface.train.evaluate; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
