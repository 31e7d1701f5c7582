"""Pretrain-and-evaluate: a tiny FaRL-style model trained on a run's shards, probed against random init.

`model.py` — the scaled-down open_clip CLIP config, its registration, the masked-image-modelling
head, saving/loading checkpoints open_clip reads. `data.py` — shard reading (a torch
IterableDataset split across DataLoader workers by shard), the held-out split, image transforms,
face crops with landmarks. `pretrain.py` — the training loop (`laionface pretrain`).
`evaluate.py` — the three probes (`laionface evaluate`).

Torch and open_clip are imported inside these modules only; importing `laionface` (or select,
download, detect) never pays for them.
"""
