"""Spread per-part work over a Ray cluster: one Ray task per part, nothing home-made.

Only this module imports Ray (lazily: `ray.init()` costs seconds). The run folder must be on
storage every node sees (NFS, a shared disk, or one machine); each task writes its own part's
files atomically, so tasks never share a file.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterable


def _on_node(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    return socket.gethostname() + ":" + _node_id(), fn(*args)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:8]


def map_parts(fn: Callable[..., Any], parts: Iterable[int], *args: Any, address: str | None = None,
              num_cpus: float = 1, progress: bool = True) -> list[tuple[int, str, Any]]:
    """Run `fn(part, *args)` for each part as a Ray task; return (part, node, result) in part order.

    `address`: "auto", "ray://host:10001", "host:6379", or "local" for a Ray started here.
    A task that raises comes back as its exception object, so one bad part does not hide the rest.
    """
    import ray
    from tqdm import tqdm

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    task = ray.remote(num_cpus=num_cpus, max_retries=1)(_on_node)
    parts = list(parts)
    refs = {task.remote(fn, part, *args): part for part in parts}
    done: dict[int, tuple[str, Any]] = {}
    pending = list(refs)
    with tqdm(total=len(parts), desc="parts on ray", unit="part", disable=not progress) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            part = refs[ready[0]]
            try:
                done[part] = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - report per part, keep the others
                done[part] = ("?", exc)
            bar.update(1)
    return [(part, *done[part]) for part in parts]
