"""SAMPLE_ID lists (the published `laion_face_ids.pth`, and plain .parquet/.txt/.npy lists) and
their rows in a metadata part.

An ID list is either per part (the .pth: list of 32 lists, index = LAION part) or one set for
every part; `for_part(i)` gives its IDs as an Int64 polars Series (order and repeats do not
matter). `rows_in` finds the listed rows of a part file with one scan of its SAMPLE_ID column;
`prefetch` starts that scan on a background thread. This module loads polars and nothing heavier
(no numpy, no pyarrow), so the command line starts the first part's scan while the rest of
select is still importing.
"""

from __future__ import annotations

import io
import pickle
import threading
import zipfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from ._polars import pl
from .errors import InputError, MissingInputError


@dataclass(frozen=True)
class IdList:
    per_part: dict[int, pl.Series] | None = None  # part -> its IDs
    shared: pl.Series | None = None  # one list for every part
    # (path, part) -> the scan `prefetch` started; `rows_in` takes it
    _scans: dict[tuple[str, int], Future] = field(default_factory=dict, compare=False, repr=False)

    def for_part(self, part: int) -> pl.Series:
        if self.per_part is not None:
            return self.per_part.get(part, pl.Series("SAMPLE_ID", [], pl.Int64))
        return self.shared

    def __len__(self) -> int:
        """Distinct IDs."""
        if self.per_part is not None:
            return sum(ids.n_unique() for ids in self.per_part.values())
        return self.shared.n_unique()

    def prefetch(self, path: Path, part: int) -> None:
        """Start `rows_in(path, part)` on a background thread (polars scans without the GIL, so
        the caller's own work goes on meanwhile)."""
        key = (str(path), part)
        if key not in self._scans:
            self._scans[key] = _in_background(_listed_rows, path, self.for_part(part))

    def rows_in(self, path: Path, part: int) -> pl.DataFrame:
        """The rows of metadata file `path` (LAION part `part`) whose SAMPLE_ID is listed: `row`,
        `SAMPLE_ID`, and `first` (no earlier row of the part has this ID). A prefetched scan is
        waited for and forgotten; otherwise the scan runs now."""
        started = self._scans.pop((str(path), part), None)
        return started.result() if started is not None else _listed_rows(path, self.for_part(part))

    def forget_prefetched(self) -> None:
        """Drop scans started but never taken (a part that failed before reading): a later
        select must scan the file as it is then."""
        self._scans.clear()


def _listed_rows(path: Path, ids: pl.Series) -> pl.DataFrame:
    """One multithreaded scan of the SAMPLE_ID column against one hash set of the list (~0.04 s per
    2M rows); ~13 bytes per listed row: a 13M-row LAION part with 12% listed holds ~20 MB."""
    if ids.is_empty():  # a part the list has nothing for: nothing to scan
        return pl.DataFrame(schema={"row": pl.get_index_type(), "SAMPLE_ID": pl.Int64, "first": pl.Boolean})
    sid = pl.col("SAMPLE_ID")
    return (pl.scan_parquet(path, row_index_name="row").select("row", sid.cast(pl.Int64, strict=False))
            .filter(sid.is_in(ids.implode()))
            .with_columns(first=sid.is_first_distinct())
            .collect())


def _in_background(fn, *args) -> Future:
    """fn(*args) on a daemon thread: it never holds up the command's exit."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="laionface-listed-rows", daemon=True).start()
    return future


class _PlainListUnpickler(pickle.Unpickler):
    """A torch.save'd list of lists of ints needs no class at all; refuse every global."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("tensor storage found")


def _ids(path: Path, values) -> pl.Series:
    """IDs as Int64 from a list of ints, a numpy array, a torch tensor or a polars Series."""
    try:
        if isinstance(values, pl.Series):
            return values.cast(pl.Int64, strict=True).rename("SAMPLE_ID")
        if hasattr(values, "numpy"):  # a torch tensor
            values = values.numpy()
        return pl.Series("SAMPLE_ID", values, pl.Int64, strict=True)
    except Exception as exc:  # a string, a float, an int past int64
        raise InputError(f"{path}: SAMPLE_IDs must be 64-bit integers ({type(exc).__name__}: {exc})") from None


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
            return IdList(per_part={int(k): _ids(path, v) for k, v in obj.items()})
        if isinstance(obj, (list, tuple)) and obj and all(isinstance(v, (list, tuple)) or hasattr(v, "tolist") for v in obj):
            return IdList(per_part={i: _ids(path, v) for i, v in enumerate(obj)})
        return IdList(shared=_ids(path, obj))
    if suffix == ".parquet":
        table = pl.read_parquet(path)
        col = "SAMPLE_ID" if "SAMPLE_ID" in table.columns else table.columns[0]
        if "part" in table.columns:
            groups = table.partition_by("part", as_dict=True)
            return IdList(per_part={int(part): _ids(path, rows[col]) for (part,), rows in groups.items()})
        return IdList(shared=_ids(path, table[col]))
    if suffix == ".npy":
        import numpy as np  # lazy: only these lists need it

        return IdList(shared=_ids(path, np.load(path, allow_pickle=False)))
    if suffix in (".txt", ".csv", ".tsv", ""):
        import numpy as np

        try:
            return IdList(shared=_ids(path, np.loadtxt(path, dtype=np.int64, ndmin=1, comments="#")))
        except ValueError as exc:
            raise InputError(f"{path}: expected one integer SAMPLE_ID per line ({exc})") from None
    raise InputError(f"{path}: unknown ID list format {suffix!r}; use .pth, .parquet, .txt or .npy")
