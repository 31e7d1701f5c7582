"""The duplicate rules' memory of what a run has seen: select's `_SeenSet` (sorted runs that
merge) against one sorted array grown with np.insert per batch (what select kept until
2026-12-02), over batches of 30,000 distinct 64-bit URL hashes (one window's listed rows).

    python benchmarks/select_bench.py is the stage's benchmark; this one isolates the set:
    python benchmarks/seen_set_bench.py [--quick] [--repeats 3] [--no-record]

Sizes: 240k values (one 2M-row part at 12%), 3M (two LAION parts' LAION-Face rows), 12M
(a quarter of LAION-Face 50M; --quick: 240k only). Both answer every batch identically
(checked); prints the median seconds per size and the ratio. The single array copies itself
on every insert, so its time grows with the square of the values; the runs' with n log n.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from laionface.stages.select import _in_sorted, _SeenSet  # noqa: E402

BATCH = 30_000
RESULTS = Path(__file__).with_name("RESULTS.md")


class OneSortedArray:
    """The reference: one sorted array, looked up with sorted needles, grown by np.insert."""

    def __init__(self) -> None:
        self.seen = np.empty(0, np.uint64)

    def add(self, values: np.ndarray) -> np.ndarray:
        order = np.argsort(values)
        ordered = values[order]
        found = _in_sorted(ordered, self.seen)
        fresh = ordered[~found]
        self.seen = np.insert(self.seen, np.searchsorted(self.seen, fresh), fresh)
        seen = np.empty(len(values), bool)
        seen[order] = found
        return seen


def batches(total: int, seed: int = 0) -> list[np.ndarray]:
    """Distinct-within-batch hashes; ~1% repeat an earlier batch's, as repeated URLs do."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for _ in range(total // BATCH):
        fresh = np.unique(rng.integers(1, 2**63, BATCH, dtype=np.int64).astype(np.uint64))
        if out:
            fresh[: BATCH // 100] = out[int(rng.integers(0, len(out)))][: BATCH // 100]
            fresh = np.unique(fresh)
        out.append(rng.permutation(fresh))
    return out


def run(kind, data: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    s = kind()
    t = time.perf_counter()
    answers = [s.add(b) for b in data]
    return time.perf_counter() - t, answers


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="240k values only, not recorded")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    sizes = [240_000] if args.quick else [240_000, 3_000_000, 12_000_000]
    lines = []
    for total in sizes:
        data = batches(total)
        ours, ref = [], []
        for _ in range(args.repeats):
            t_ours, a_ours = run(_SeenSet, data)
            t_ref, a_ref = run(OneSortedArray, data)
            if any(not np.array_equal(x, y) for x, y in zip(a_ours, a_ref)):
                raise SystemExit(f"{total}: the two sets disagree")
            ours.append(t_ours)
            ref.append(t_ref)
        o, r = statistics.median(ours), statistics.median(ref)
        repeats = sum(int(a.sum()) for a in a_ours)
        lines.append(f"- {total:,} values in batches of {BATCH:,} ({repeats:,} seen before): runs {o:.3f} s, "
                     f"one sorted array {r:.3f} s = {r / o:.2f}x")
        print(lines[-1], flush=True)
    if not args.quick and not args.no_record:
        with RESULTS.open("a") as f:
            command = " ".join(["python benchmarks/seen_set_bench.py", *argv])
            f.write(f"\n## seen_set — {datetime.now():%Y-%m-%d %H:%M}\n\n`{command}` (median of {args.repeats})\n\n"
                    + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
