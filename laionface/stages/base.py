"""The shape every stage has (after NeMo Curator's ProcessingStage, without its executor ties).

A stage declares the columns it reads and writes and whether it holds a model; the runner
decides where it runs (in-process, a Ray task, a Ray actor). Stages never import Ray.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa


class Stage:
    name: ClassVar[str]
    Config: ClassVar[type]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    holds_model: ClassVar[bool] = False  # run as an actor pool on Ray, set up once per worker

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def setup(self) -> None:
        """Load models or other per-worker state. Called once before the first batch."""

    def __call__(self, table: pa.Table) -> pa.Table:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
