"""An IVF index larger than the driver's memory: built in one process in memory vs filled on
a Dask LocalCluster in shards and merged on disk, then searched memory-mapped, side by side.

    nice -n 10 python -m benchmarks.index_ondisk --sizes 1000000,5000000 --dim 128

Data: the vector files of `benchmarks.dedup_dask` (written here when absent). The IVF
quantizer (`--factory`, inner product) is trained once, in its own process, on a seeded
sample read row group by row group (`tasks.indexing.ondisk.read_rows`); both sides start from
that trained index:
- one process: the file read into one (n, d) matrix, every row added (FAISS on every core);
- dask: `tasks.indexing.ondisk.build_on_disk` with the workers reading row groups by path
  (`file_shards`), `--workers` processes x 1 thread, lists merged on disk by the driver.
Queries: `--queries` query-like probes (corpus rows moved to cosine `--probe-cosine` in a
random direction: away from their passage, often in another cell, as short queries are);
exact top-10 by streaming the file. The on-disk index is opened memory-mapped in a fresh
process (`read_index_file`): recall@10 vs exact and p50 ms per query (batch of one) for each
nprobe. Writes benchmarks/out/index_ondisk-<dim>.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.dedup_dask import REPO, Sampler, _proc_mb, _rss_mb, read_matrix
from benchmarks.report import cpu_label, save

NPROBES = (8, 16, 32, 64, 128, 256)


def train(file: Path, factory: str, sample: int, seed: int, out: Path) -> dict[str, Any]:
    import faiss
    import pyarrow.parquet as pq

    from tasks.core.vectors import sample_rows
    from tasks.indexing.ondisk import read_rows

    started = time.perf_counter()
    n = pq.ParquetFile(file).metadata.num_rows
    xt = read_rows(file, sample_rows(n, sample, seed))
    index = faiss.index_factory(xt.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(xt)
    faiss.write_index(index, str(out))
    return {"seconds": round(time.perf_counter() - started, 2), "sample": len(xt)}


def build_local(file: Path, trained: Path, folder: Path) -> dict[str, Any]:
    import faiss

    started = time.perf_counter()
    x = read_matrix(file)
    index = faiss.read_index(str(trained))
    index.add_with_ids(x, np.arange(len(x), dtype="int64"))
    del x
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / "index.faiss"))
    return {"seconds": round(time.perf_counter() - started, 2)}


def build_dask(file: Path, trained: Path, folder: Path, workers: int) -> dict[str, Any]:
    import faiss
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    from tasks.core.config import DaskConfig
    from tasks.core.shards import Executor
    from tasks.indexing.ondisk import (
        ONDISK_SHARD_ROWS,
        build_on_disk,
        file_shards,
        write_index_file,
    )
    from tasks.storage.scratch import open_scratch

    n = pq.ParquetFile(file).metadata.num_rows
    folder.mkdir(parents=True, exist_ok=True)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        sampler = Sampler([*pids, os.getpid()])
        sampler.start()
        started = time.perf_counter()
        shards = file_shards(file, np.arange(n, dtype="int64"), ONDISK_SHARD_ROWS)
        executor = Executor(client, 2 * workers)
        with open_scratch(executor, DaskConfig(), folder, "index") as store:
            index = build_on_disk(executor, faiss.read_index(str(trained)), shards,
                                  folder / "build.ivfdata", store)
        write_index_file(index, folder / "index.faiss")
        seconds = time.perf_counter() - started
        sampler.stop.set()
    return {"seconds": round(seconds, 2), "workers": [sampler.peak[p] for p in pids],
            "driver": sampler.peak[os.getpid()],
            "lists_bytes": (folder / "index.ivfdata").stat().st_size}


def probes(file: Path, count: int, cosine: float, seed: int) -> np.ndarray:
    import pyarrow.parquet as pq

    from benchmarks.dedup_scale import _at_cosine
    from tasks.core.vectors import sample_rows
    from tasks.indexing.ondisk import read_rows

    rng = np.random.default_rng(seed + 7)
    n = pq.ParquetFile(file).metadata.num_rows
    src = read_rows(file, sample_rows(n, count, seed + 7))
    return _at_cosine(src, np.full(len(src), cosine, dtype="float32"), rng)


def exact_top10(file: Path, xq: np.ndarray) -> np.ndarray:
    """Exact top-10 ids by inner product, the file streamed row group by row group."""
    import faiss
    import pyarrow.parquet as pq

    from tasks.core.catalog import VECTOR_COLUMN
    from tasks.core.vectors import arrow_to_vectors

    heap = faiss.ResultHeap(len(xq), 10, keep_max=True)
    start = 0
    with pq.ParquetFile(file) as pf:
        for g in range(pf.metadata.num_row_groups):
            xb = arrow_to_vectors(pf.read_row_group(g, [VECTOR_COLUMN]).column(VECTOR_COLUMN))
            dist, ids = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)
            heap.add_result(dist, np.where(ids >= 0, ids + start, -1))
            start += len(xb)
    heap.finalize()
    return heap.I


def query(folder: Path, xq: np.ndarray, truth: np.ndarray, mapped: bool) -> dict[str, Any]:
    """Recall@10 and p50 ms per query (batch of one) per nprobe; the hits at each nprobe."""
    import faiss

    from tasks.indexing.ondisk import read_index_file

    started = time.perf_counter()
    index = (read_index_file(folder / "index.faiss") if mapped
             else faiss.read_index(str(folder / "index.faiss")))
    load_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)  # one query, one core: what a user's search costs
    rows, hits = [], {}
    for nprobe in NPROBES:
        faiss.extract_index_ivf(index).nprobe = nprobe
        times, found = [], []
        for q in xq:
            t = time.perf_counter()
            found.append(index.search(q[None, :], 10)[1][0])
            times.append(time.perf_counter() - t)
        found = np.array(found)
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
        rows.append({"nprobe": nprobe, "recall_at_10": round(float(recall), 4),
                     "p50_ms": round(1e3 * float(np.median(times)), 3)})
        hits[nprobe] = found
    return {"load_s": round(load_s, 3), "sweep": rows, "peak_rss_mb": _rss_mb(),
            "now": _proc_mb(os.getpid())}, hits


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; its figures to `--result`."""
    file, work = Path(args.file), Path(args.work)
    if args.step == "train":
        out = train(file, args.factory, args.train_sample, args.seed, work / "trained.index")
    elif args.step == "local":
        out = build_local(file, work / "trained.index", work / "local")
    elif args.step == "dask":
        out = build_dask(file, work / "trained.index", work / "dask", args.workers)
    else:
        xq = np.load(work / "probes.npy")
        truth = np.load(work / "truth.npy")
        out, hits = query(work / args.step.split("-")[1], xq, truth, args.step.endswith("dask"))
        np.savez(work / f"hits-{args.step}.npz", **{str(k): v for k, v in hits.items()})
    out["peak_rss_mb"] = _rss_mb()
    Path(args.result).write_text(json.dumps(out))


def run_child(step: str, file: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    result = work / f".{step}.json"
    cmd = [sys.executable, "-m", "benchmarks.index_ondisk", "--step", step, "--file", str(file),
           "--work", str(work), "--factory", args.factory, "--train-sample",
           str(args.train_sample), "--seed", str(args.seed), "--workers", str(args.workers),
           "--result", str(result)]
    proc = subprocess.run(cmd, cwd=REPO, check=False)
    if proc.returncode != 0 or not result.exists():
        return {"failure": f"exit code {proc.returncode}"}
    return json.loads(result.read_text())


def chosen(sweep: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The smallest nprobe reaching `target` recall@10 (else the largest measured)."""
    return next((r for r in sweep if r["recall_at_10"] >= target), sweep[-1])


def same_hits(work: Path) -> dict[str, float]:
    """Per nprobe, the share of probes whose top-10 ids are the same in both indexes."""
    a, b = np.load(work / "hits-query-local.npz"), np.load(work / "hits-query-dask.npz")
    return {k: round(float(np.mean(np.all(a[k] == b[k], axis=1))), 4) for k in a.files}


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [f"IVF index, {cfg['dim']}-d, factory {cfg['factory']}, trained on "
             f"{cfg['train_sample']:,} vectors; one process (in memory) vs Dask LocalCluster "
             f"({cfg['workers']} workers x 1 thread, lists merged on disk, searched mmapped); "
             f"{cfg['queries']} query-like probes at cosine {cfg['probe_cosine']}; "
             f"{report['cpu']}", "",
             "| n | train s | one process build s / peak RSS MB | dask build s / driver peak "
             "RSS MB (its RssAnon) | worker RssAnon / VmHWM MB | lists GB | nprobe | recall@10 "
             "| p50 ms mmap / in memory | same top-10 | query process RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["sizes"]:
        if any("failure" in row.get(k, {}) for k in ("train", "local", "dask", "query-dask")):
            lines.append(f"| {row['n']:,} | failed: {json.dumps(row)[:300]} |")
            continue
        tr, lo, dk, qd, ql = (row[k] for k in ("train", "local", "dask", "query-dask",
                                               "query-local"))
        pick = chosen(qd["sweep"], cfg["target_recall"])
        mem = next(r for r in ql["sweep"] if r["nprobe"] == pick["nprobe"])
        anon = max(w.get("RssAnon", 0) for w in dk["workers"])
        hwm = max(w.get("VmHWM", 0) for w in dk["workers"])
        lines.append(
            f"| {row['n']:,} | {tr['seconds']} | {lo['seconds']} / {lo['peak_rss_mb']:,} | "
            f"{dk['seconds']} / {dk['peak_rss_mb']:,} ({dk.get('driver', {}).get('RssAnon')}) | "
            f"{anon:,} / {hwm:,} | "
            f"{dk['lists_bytes'] / 2**30:.2f} | {pick['nprobe']} | {pick['recall_at_10']} | "
            f"{pick['p50_ms']} / {mem['p50_ms']} | {row['same_hits'][str(pick['nprobe'])]} | "
            f"{qd['peak_rss_mb']:,} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,5000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--factory", default="IVF4096,Flat")
    parser.add_argument("--train-sample", type=int, default=160_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--probe-cosine", type=float, default=0.8)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "out" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    for hidden in ("--step", "--file", "--work", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser.parse_args()


def measure_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    file = args.data / f"vectors-{n}x{args.dim}-{args.seed}.parquet"
    if not file.exists():
        subprocess.run([sys.executable, "-m", "benchmarks.dedup_dask", "--write", "--n", str(n),
                        "--dim", str(args.dim), "--seed", str(args.seed), "--file", str(file),
                        "--result", str(file.with_suffix(".json"))], cwd=REPO, check=True)
    slug = args.factory.replace(",", "_").replace("{", "").replace("}", "")
    work = args.data / f"index-{n}-{slug}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    xq = probes(file, args.queries, args.probe_cosine, args.seed)
    np.save(work / "probes.npy", xq)
    started = time.perf_counter()
    np.save(work / "truth.npy", exact_top10(file, xq))
    row: dict[str, Any] = {"n": n, "load_avg": os.getloadavg(),
                           "exact_s": round(time.perf_counter() - started, 2)}
    for step in ("train", "local", "dask", "query-local", "query-dask"):
        row[step] = run_child(step, file, work, args)
        print(step, json.dumps(row[step])[:400], flush=True)
    if "failure" not in row["query-local"] and "failure" not in row["query-dask"]:
        row["same_hits"] = same_hits(work)
    shutil.rmtree(work / "local", ignore_errors=True)  # the on-disk one is kept for reruns
    return row


def main() -> None:
    args = parse_args()
    if args.step:
        child(args)
        return
    args.data.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"cpu": cpu_label(), "load_avg_start": os.getloadavg(),
                              "config": {k: v for k, v in vars(args).items() if k in (
                                  "dim", "seed", "factory", "train_sample", "workers",
                                  "queries", "probe_cosine", "target_recall")},
                              "sizes": []}
    slug = args.factory.replace(",", "_").replace("{", "").replace("}", "")
    for n in (int(s) for s in args.sizes.split(",") if s):
        report["sizes"].append(measure_size(n, args))
        save(args.out, f"index_ondisk-{args.dim}-{slug}", report, markdown(report))
    report["load_avg_end"] = os.getloadavg()
    save(args.out, f"index_ondisk-{args.dim}-{slug}", report, markdown(report))


if __name__ == "__main__":
    main()
