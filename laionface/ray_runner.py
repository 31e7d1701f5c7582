"""The Ray runner: the same per-part pipeline as the local runner, one Ray task per part.

A part is the unit of work, resume and distribution: each task runs `LocalRunner` on one
part and writes only that part's files (atomically, `_done` last), so the manifests and
shards are the same bytes whichever node ran the part. Timing and the node go to the parts
records only.
"""

from __future__ import annotations

from .distributed import map_parts
from .pipeline import Pipeline
from .runfolder import RunFolder
from .runner import LocalRunner, PartOutcome


def _run_part(part: int, run_root: str, pipeline: dict, retry_failed: bool) -> PartOutcome:
    import socket

    import ray

    worker = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    runner = LocalRunner(RunFolder(run_root), Pipeline.from_dict(pipeline), progress=False, worker=worker)
    return runner.run_parts([part], retry_failed=retry_failed)[0]


class RayRunner:
    def __init__(self, run: RunFolder, pipeline: Pipeline, address: str | None = None, progress: bool = True):
        self.run = run
        self.pipeline = pipeline
        self.address = address or "local"
        self.progress = progress

    def run_parts(self, parts: list[int] | None = None, retry_failed: bool = False) -> list[PartOutcome]:
        todo = parts if parts is not None else self.run.candidate_parts()
        skipped = [PartOutcome(p, "skipped") for p in todo if self.run.is_done(p) and not retry_failed]
        pending = [p for p in todo if retry_failed or not self.run.is_done(p)]
        outcomes = list(skipped)
        if pending:
            results = map_parts(_run_part, pending, str(self.run.root), self.pipeline.to_dict(), retry_failed,
                                address=self.address, progress=self.progress)
            for part, _node, result in results:
                if isinstance(result, Exception):  # the task itself died (node lost, OOM): record it
                    error = f"{type(result).__name__}: {result}"
                    self.run.mark_failed(part, {"part": part, "state": "failed", "error": error})
                    result = PartOutcome(part, "failed", error=error)
                outcomes.append(result)
        return sorted(outcomes, key=lambda o: o.part)
