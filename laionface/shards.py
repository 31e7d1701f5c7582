"""Webdataset tar shards, written reproducibly: our keys, fixed mtime/owner, atomic rename.

Ray's webdataset sink uses uuid keys and wall-clock mtimes; ours gives byte-identical tars
for the same samples in the same order.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

from .errors import LaionFaceError

_BAD_KEY = re.compile(r"[./\\\s]")


def check_key(key: str) -> str:
    """webdataset splits `{key}.{ext}` at the first dot: keys carry no dots, slashes or spaces."""
    if not key or _BAD_KEY.search(key):
        raise LaionFaceError(f"shard key {key!r} contains a dot, slash or space; build keys with laionface.schema.sample_key")
    return key


class ShardWriter:
    """Write samples into `folder/00000.tar`, `00001.tar`, … cutting at `max_count` or `max_bytes`."""

    def __init__(self, folder: Path, run_root: Path, max_count: int = 10000, max_bytes: int = 1_000_000_000):
        self.folder = Path(folder)
        self.run_root = Path(run_root)
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.index = -1
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._count = 0
        self._bytes = 0
        self.written: list[str] = []

    def _final(self) -> Path:
        return self.folder / f"{self.index:05d}.tar"

    def _open_next(self) -> None:
        self._close_current()
        self.index += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tmp = self.folder / f".{self.index:05d}.tar.tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._count = self._bytes = 0

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self._tmp, self._final())
            self.written.append(str(self._final().relative_to(self.run_root)))
            self._tar = None

    def write(self, key: str, files: dict[str, bytes]) -> str:
        """Add one sample (`{"jpg": b"...", "txt": b"...", "json": b"..."}`); return its RUN-relative tar."""
        check_key(key)
        size = sum(len(v) for v in files.values())
        if self._tar is None or self._count >= self.max_count or (self._count and self._bytes + size > self.max_bytes):
            self._open_next()
        for ext in sorted(files):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(files[ext])
            info.mtime = 0
            info.mode = 0o644
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(files[ext]))
        self._count += 1
        self._bytes += size
        return str(self._final().relative_to(self.run_root))

    def close(self) -> list[str]:
        self._close_current()
        return self.written

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        elif self._tar is not None:  # leave no half-written tar behind
            self._tar.close()
            self._tmp.unlink(missing_ok=True)
