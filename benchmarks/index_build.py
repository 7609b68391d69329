"""Index build: embedpipe's own build path vs FAISS called directly, on the same vectors.

    python -m benchmarks.index_build --n 200000 --dim 128
    python -m benchmarks.index_build --n 1000000 --dim 128 --repeats 2

embedpipe side: `resolve_factory` (factory 'auto', nlist 'auto') -> `train_index` (seeded
sample of `train_sample` rows) -> `fill_index` (60-bit chunk ids, batched add_with_ids), the
functions `build_index` chains for the index stage. Raw side: `faiss.index_factory` with the
same factory string, `train` on the same sample rows, `add` of all rows. The two sides
alternate `--repeats` times; train and add are timed separately. Then embedpipe's nprobe
tuning (target recall@10 vs exact, leave-one-out rows + held-out tuning queries) and
recall@10 vs IndexFlatIP on other held-out queries from the same distribution.
Writes benchmarks/out/index_build-<n>-<dim>.json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.dedup_scale import _rss_mb, clustered_unit_vectors
from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]


def time_embedpipe(x: np.ndarray, factory: str, cfg: Any, ids: np.ndarray
                   ) -> tuple[faiss.Index, dict[str, float]]:
    from tasks.indexing.build import fill_index, train_index

    started = time.perf_counter()
    index = train_index(x, factory, cfg)
    trained = time.perf_counter()
    index = fill_index(index, x, ids)
    done = time.perf_counter()
    return index, {"train_s": trained - started, "add_s": done - trained}


def time_raw(x: np.ndarray, xt: np.ndarray, factory: str) -> tuple[faiss.Index,
                                                                     dict[str, float]]:
    started = time.perf_counter()
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(xt)
    trained = time.perf_counter()
    index.add(x)
    done = time.perf_counter()
    return index, {"train_s": trained - started, "add_s": done - trained}


def recall_vs_exact(index: faiss.Index, x: np.ndarray, xq: np.ndarray,
                    id_rows: Any = None, k: int = 10) -> dict[str, float]:
    """recall@k of `index` as set against IndexFlatIP on `x`, and ms per query."""
    from tasks.indexing.recall import recall_at_k

    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    gt = exact.search(xq, k)[1]
    started = time.perf_counter()
    found = index.search(xq, k)[1]
    ms = 1e3 * (time.perf_counter() - started) / len(xq)
    if id_rows is not None:
        found = id_rows.rows(found)
    return {"recall_at_10": recall_at_k(found, gt), "ms_per_query": round(ms, 4)}


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    total = [r["train_s"] + r["add_s"] for r in runs]
    return {"train_s_median": round(statistics.median(r["train_s"] for r in runs), 3),
            "add_s_median": round(statistics.median(r["add_s"] for r in runs), 3),
            "total_s_median": round(statistics.median(total), 3),
            "total_s_min": round(min(total), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.core.config import IndexConfig
    from tasks.indexing.factory import resolve_factory
    from tasks.indexing.ids import IdMap, chunk_int_ids
    from tasks.indexing.recall import set_search_param
    from tasks.indexing.tuning import tune_search_param

    both = clustered_unit_vectors(args.n + 2 * args.queries, args.dim, args.seed)
    x = np.ascontiguousarray(both[:args.n])
    xq_tune = np.ascontiguousarray(both[args.n:args.n + args.queries])
    xq_eval = np.ascontiguousarray(both[args.n + args.queries:])
    del both
    cfg = IndexConfig(seed=args.seed)
    factory, nlist = resolve_factory(cfg, args.n, args.dim)
    ids = chunk_int_ids([f"chunk-{i:09d}" for i in range(args.n)])
    rng = np.random.default_rng(cfg.seed)  # the rows train_index samples
    xt = x[np.sort(rng.choice(args.n, size=min(args.n, cfg.train_sample), replace=False))]
    runs: dict[str, list[dict[str, float]]] = {"embedpipe": [], "raw": []}
    index = raw = None
    for rep in range(args.repeats):
        for side in (("embedpipe", "raw") if rep % 2 == 0 else ("raw", "embedpipe")):
            if side == "embedpipe":
                index = None  # one index at a time in memory
                index, times = time_embedpipe(x, factory, cfg, ids)
            else:
                raw = None
                raw, times = time_raw(x, xt, factory)
            runs[side].append({k: round(v, 3) for k, v in times.items()})
            print(side, rep, runs[side][-1], flush=True)
    assert index is not None and raw is not None
    started = time.perf_counter()
    name, value, sweep = tune_search_param(index, x, nlist, cfg, xq_tune, ids)
    tune_s = time.perf_counter() - started
    quality = recall_vs_exact(index, x, xq_eval, IdMap(ids))
    if name is not None:
        set_search_param(raw, name, value)
    raw_quality = recall_vs_exact(raw, x, xq_eval)
    emb, rw = _summary(runs["embedpipe"]), _summary(runs["raw"])
    return {"n": args.n, "dim": args.dim, "factory": factory, "nlist": nlist,
            "train_sample": len(xt), "repeats": args.repeats, "runs": runs,
            "embedpipe": emb, "raw": rw,
            "ratio_median": round(emb["total_s_median"] / rw["total_s_median"], 3),
            "ratio_min": round(emb["total_s_min"] / rw["total_s_min"], 3),
            "search_param": name, "search_value": value, "tune_s": round(tune_s, 2),
            "target_recall": cfg.target_recall, "sweep": sweep,
            "eval_queries": len(xq_eval), "embedpipe_quality": quality,
            "raw_quality_same_param": raw_quality, "peak_rss_mb": _rss_mb()}


def markdown(r: dict[str, Any]) -> str:
    e, w = r["embedpipe"], r["raw"]
    lines = [f"index build: n={r['n']:,}, d={r['dim']}, {r['factory']} (nlist {r['nlist']}), "
             f"train sample {r['train_sample']:,}, {r['repeats']} alternating repeats "
             f"(medians); {r['cpu']}; load avg {r['load_avg_start'][0]:.1f} -> "
             f"{r['load_avg_end'][0]:.1f}", "",
             "| side | train s | add s | train+add s (median) | train+add s (min) |",
             "|---|---|---|---|---|",
             f"| embedpipe (train_index + fill_index) | {e['train_s_median']} | "
             f"{e['add_s_median']} | {e['total_s_median']} | {e['total_s_min']} |",
             f"| raw FAISS (index_factory, train, add) | {w['train_s_median']} | "
             f"{w['add_s_median']} | {w['total_s_median']} | {w['total_s_min']} |", "",
             f"ratio embedpipe / raw, train+add: {r['ratio_median']} (medians), "
             f"{r['ratio_min']} (minima); target <= 1.2", "",
             f"tuned {r['search_param']} = {r['search_value']} (target recall@10 "
             f"{r['target_recall']}, tuning {r['tune_s']} s); on {r['eval_queries']} held-out "
             f"queries: recall@10 {r['embedpipe_quality']['recall_at_10']} "
             f"({r['embedpipe_quality']['ms_per_query']} ms/query); raw index at the same "
             f"setting: {r['raw_quality_same_param']['recall_at_10']}; "
             f"peak RSS {r['peak_rss_mb']} MB"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000,
                        help="held-out queries for tuning and, as many again, for recall")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    load = os.getloadavg()
    report = {**run(args), "cpu": cpu_label(), "load_avg_start": load,
              "load_avg_end": os.getloadavg()}
    name = f"index_build-{args.n}-{args.dim}"
    save(args.out, name, report, markdown(report))


if __name__ == "__main__":
    main()
