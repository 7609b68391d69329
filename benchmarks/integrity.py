"""What checking an index folder costs at search start-up, beside loading it.

    python -m benchmarks.integrity                 # 300,000 x 384 vectors, 3 repeats
    python -m benchmarks.integrity --n 1000000

Writes a Flat index of `n` seeded random `d`-d vectors as a stage output folder (manifest with
sizes and sha256), then times, medians of `repeats`: `faiss.read_index` (what a search
start-up pays anyway), the full check (sha256 of every file), and the fast check that
`embedpipe search` runs by default (sizes, and sha256 only of files whose stat changed since
they last hashed right). Writes benchmarks/out/integrity.json and integrity.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


def index_folder(dest: Path, n: int, d: int) -> Path:
    """A committed stage output holding a Flat index of `n` random `d`-d vectors."""
    from tasks.core.io import StageOutput

    x = np.random.default_rng(0).standard_normal((n, d), dtype="float32")
    index = faiss.IndexFlatIP(d)
    index.add(x)
    out = StageOutput(dest / "07_index", "index", "0" * 64)
    faiss.write_index(index, str(out.path("index.faiss")))
    return out.commit({})


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.core.integrity import folder_problems

    with tempfile.TemporaryDirectory() as tmp:
        folder = index_folder(Path(tmp), args.n, args.dim)
        records = Path(tmp) / "records"
        assert folder_problems(folder, records) == []  # the first check records the stats
        size = (folder / "index.faiss").stat().st_size
        load = timed(lambda: faiss.read_index(str(folder / "index.faiss")), args.repeats)
        full = timed(lambda: folder_problems(folder, fast=False), args.repeats)
        fast = timed(lambda: folder_problems(folder, records), args.repeats)
    return {"n": args.n, "d": args.dim, "index_mb": round(size / 2**20, 1), "cpu": cpu_label(),
            "seconds": {"read_index": load, "full_check": full, "fast_check": fast},
            "ratio_to_load": {"full_check": round(full / load, 3),
                              "fast_check": round(fast / load, 5)}}


def markdown(r: dict[str, Any]) -> str:
    s, q = r["seconds"], r["ratio_to_load"]
    return "\n".join([
        f"# Index folder check at search start-up ({r['n']:,} x {r['d']}, "
        f"{r['index_mb']} MB index; {r['cpu']})", "",
        "| step | seconds (median) | x faiss.read_index |", "|---|---|---|",
        f"| faiss.read_index | {s['read_index']} | 1 |",
        f"| full check (sha256 of every file) | {s['full_check']} | {q['full_check']} |",
        f"| fast check (sizes; sha256 only of changed files) | {s['fast_check']} | "
        f"{q['fast_check']} |", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = p.parse_args()
    report = run(args)
    save(args.out, "integrity", report, markdown(report))


if __name__ == "__main__":
    main()
