"""Read SAMPLE_ID lists: the published `laion_face_ids.pth`, and plain .parquet/.txt/.npy lists.

An ID list is either per part (the .pth: list of 32 lists, index = LAION part) or one set for
every part. Both come back as `IdList`, whose `for_part(i)` gives a sorted int64 array.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, MissingInputError
from .runfolder import read_parquet

# LAION-Face 20M = these LAION-400M parts; 50M = all 32 (DESIGN.md).
SUBSETS: dict[str, tuple[int, ...]] = {
    "20M": (0, 2, 5, 8, 13, 15, 17, 18, 21, 22, 24, 25, 28),
    "50M": tuple(range(32)),
}


@dataclass(frozen=True)
class IdList:
    per_part: dict[int, np.ndarray] | None = None  # part -> sorted unique ids
    shared: np.ndarray | None = None  # one list for every part

    def for_part(self, part: int) -> np.ndarray:
        if self.per_part is not None:
            return self.per_part.get(part, np.empty(0, np.int64))
        return self.shared

    def __len__(self) -> int:
        if self.per_part is not None:
            return sum(len(v) for v in self.per_part.values())
        return len(self.shared)


class _PlainListUnpickler(pickle.Unpickler):
    """A torch.save'd list of lists of ints needs no class at all; refuse every global."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("tensor storage found")


def _ids(values) -> np.ndarray:
    """Sorted unique int64 (sort + adjacent compare: np.unique's hash path is slow on numpy 2.x)."""
    v = np.sort(np.asarray(values, dtype=np.int64))
    return v[np.r_[True, v[1:] != v[:-1]]] if len(v) else v


def _load_pth(path: Path) -> object:
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            # BufferedReader: on a bare BytesIO (no peek) the C unpickler asks Python for every
            # opcode's bytes, ~4x slower (45 vs 13 ms for 240k IDs; seconds for the 50M list)
            return _PlainListUnpickler(io.BufferedReader(io.BytesIO(zf.read(pkl)))).load()
    except (zipfile.BadZipFile, StopIteration, pickle.UnpicklingError):
        pass
    try:
        import torch  # lazy: ~5 s to import, only for .pth files holding tensors
    except ImportError:
        raise InputError(
            f"{path}: not a plain torch-saved list; install the train extra (pip install 'laionface[train]') to read it"
        ) from None
    return torch.load(path, map_location="cpu", weights_only=True)


def load_id_list(path: str | Path) -> IdList:
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"ID list {path} does not exist; pass --ids PATH to laion_face_ids.pth or a .parquet/.txt/.npy list")
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt"):
        obj = _load_pth(path)
        if isinstance(obj, dict):
            return IdList(per_part={int(k): _ids(v) for k, v in obj.items()})
        if isinstance(obj, (list, tuple)) and obj and all(isinstance(v, (list, tuple)) or hasattr(v, "tolist") for v in obj):
            return IdList(per_part={i: _ids(list(v)) for i, v in enumerate(obj)})
        return IdList(shared=_ids(list(obj)))
    if suffix == ".parquet":
        table = read_parquet(path)
        col = "SAMPLE_ID" if "SAMPLE_ID" in table.column_names else table.column_names[0]
        ids = table[col].to_numpy()
        if "part" in table.column_names:
            parts = table["part"].to_numpy()
            return IdList(per_part={int(p): _ids(ids[parts == p]) for p in np.unique(parts)})
        return IdList(shared=_ids(ids))
    if suffix == ".npy":
        return IdList(shared=_ids(np.load(path, allow_pickle=False)))
    if suffix in (".txt", ".csv", ".tsv", ""):
        try:
            return IdList(shared=_ids(np.loadtxt(path, dtype=np.int64, ndmin=1, comments="#")))
        except ValueError as exc:
            raise InputError(f"{path}: expected one integer SAMPLE_ID per line ({exc})") from None
    raise InputError(f"{path}: unknown ID list format {suffix!r}; use .pth, .parquet, .txt or .npy")
