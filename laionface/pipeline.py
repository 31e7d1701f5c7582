"""A pipeline: which stages run and their settings, read from YAML. Its hash goes into every row."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import config_hash, from_dict, to_dict
from .errors import ConfigError, MissingInputError


@dataclass(frozen=True)
class LaionFaceShardsConfig:
    """RUN/laion_face/: full images with at least one kept face, bytes as downloaded."""

    max_count: int = 10000  # samples per tar (img2dataset's default)
    max_bytes: int = 1_000_000_000


@dataclass(frozen=True)
class LaionFaceCroppedShardsConfig:
    """RUN/laion_face_cropped/: one square crop per kept face (the crop stage's output)."""

    max_count: int = 10000
    max_bytes: int = 1_000_000_000


@dataclass(frozen=True)
class RayConfig:
    """How the Ray runner spreads the batch stages (`ray:` in a pipeline file). Parallelism
    only: left out of the config hash, like thread counts."""

    # Ray CPUs a part's download task reserves: img2dataset mostly waits on the network, so less
    # than 1 lets the model stages run beside the downloads instead of queueing behind them.
    download_cpus: float = 0.5
    downloads_in_flight: int = 0  # parts downloading at once; 0: half the cluster's CPUs, at least 1
    detect_actors: int = 4  # most detector actors (Ray Data autoscales from 1); one model each
    score_actors: int = 1  # most CLIP actors; on a GPU cluster, one per GPU
    gpus_per_score_actor: float = 1.0  # used only when the cluster has GPUs and score.device is not cpu

    def __post_init__(self) -> None:
        if min(self.detect_actors, self.score_actors) < 1 or self.gpus_per_score_actor <= 0 or self.download_cpus <= 0 or self.downloads_in_flight < 0:
            raise ConfigError(f"ray: detect_actors and score_actors >= 1, gpus_per_score_actor and download_cpus > 0, downloads_in_flight >= 0 (got {self})")


_NOT_SHAPING = {"thread_count", "processes_count", "threads", "torch_threads", "batch_size", "prefetch", "device", "allow_private_addresses",
                "compression"}

# stage key in YAML -> its settings class (module:name), in the order they run. A class is
# imported when a pipeline uses its stage: the stage modules pull in PIL, pyarrow.compute and
# the rest (~0.25 s), which `laionface select` alone does not need.
STAGE_CONFIGS: dict[str, str] = {
    "select": "laionface.stages.select:SelectConfig",
    "download": "laionface.stages.download:DownloadConfig",
    "detect": "laionface.stages.detect:DetectConfig",
    "crop": "laionface.stages.crop:CropConfig",
    "score": "laionface.stages.score:ScoreConfig",
    "laion_face": "laionface.pipeline:LaionFaceShardsConfig",
    "laion_face_cropped": "laionface.pipeline:LaionFaceCroppedShardsConfig",
}


def stage_config(key: str) -> type:
    """The settings class of stage `key`."""
    module, name = STAGE_CONFIGS[key].split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Pipeline:
    name: str = "default"
    stages: dict[str, Any] = field(default_factory=dict)  # stage key -> settings dataclass
    ray: RayConfig = field(default_factory=RayConfig)  # the Ray runner's parallelism; not hashed

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "pipeline") -> "Pipeline":
        data = dict(data or {})
        unknown = sorted(set(data) - {"name", "stages", "ray"})
        if unknown:
            raise ConfigError(f"{where}: unknown top-level key {unknown[0]!r}; valid keys: name, stages, ray")
        stages = data.get("stages") or {}
        bad = sorted(set(stages) - set(STAGE_CONFIGS))
        if bad:
            raise ConfigError(f"{where}: unknown stage {bad[0]!r}; valid stages: {', '.join(STAGE_CONFIGS)}")
        built = {key: from_dict(stage_config(key), stages[key], f"{where}.stages.{key}") for key in STAGE_CONFIGS if key in stages}
        ray = from_dict(RayConfig, data.get("ray") or {}, f"{where}.ray")
        return cls(name=str(data.get("name", "default")), stages=built, ray=ray)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Pipeline":
        path = Path(path)
        if not path.exists():
            raise MissingInputError(f"pipeline file {path} does not exist; see pipelines/ for examples")
        import yaml  # only for pipeline files (~20 ms)

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        return cls.from_dict(data, where=str(path))

    def get(self, key: str) -> Any:
        """Settings for a stage; defaults when the file does not name it."""
        return self.stages.get(key) or stage_config(key)()

    def with_settings(self, key: str, **changes: Any) -> "Pipeline":
        current = to_dict(self.get(key))
        current.update(changes)
        stages = dict(self.stages)
        stages[key] = from_dict(stage_config(key), current, f"--{key}")
        return Pipeline(self.name, stages, self.ray)

    def runs(self, key: str) -> bool:
        return key in self.stages

    @property
    def hash(self) -> str:
        """Hash of the settings that shape the outputs; parallelism settings are left out so a
        laptop run and a cluster run of the same recipe carry the same hash."""
        shaping = {k: {n: v for n, v in to_dict(c).items() if n not in _NOT_SHAPING} for k, c in self.stages.items()}
        return config_hash(shaping)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "stages": {k: to_dict(v) for k, v in self.stages.items()}, "ray": to_dict(self.ray)}
