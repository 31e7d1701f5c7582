"""polars, loaded once with its allocator bounded; laionface modules import it from here.

polars configures its jemalloc to keep freed pages a further second as "muzzy" (MADV_FREE: still
counted in RSS until the kernel needs them): at the pace select frees decoded windows, its RSS
grew with the part (+27% at 4x the rows; 1.11-1.17x with this, no measured time cost). polars
appends this to its own settings; it applies only if polars is not loaded yet, and a user's own
_RJEM_MALLOC_CONF is left alone. Importing polars only through here makes whichever laionface
module loads it first set this.
"""

import os

os.environ.setdefault("_RJEM_MALLOC_CONF", "muzzy_decay_ms:0")

import polars as pl  # noqa: E402

__all__ = ["pl"]
