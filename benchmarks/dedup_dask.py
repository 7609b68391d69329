"""Dedup past one machine's memory: the near-duplicate pass in one process vs sharded by
k-means cell on a Dask LocalCluster, side by side on the same vector file.

    nice -n 10 python -m benchmarks.dedup_dask --sizes 1000000,3000000,5000000 --dim 128

Data: `benchmarks.dedup_scale.planted_duplicates` (a clustered mixture on the unit sphere,
1% planted duplicates, 1% near misses), written as a Parquet vector file like reduce's
(`fixed_size_list<float32>[d]`, row groups of `--row-group` rows). Both sides start from that
file and end with the keep mask and the audit of `tasks.dedup.dedup_rows` (near pass only,
`DedupConfig` defaults otherwise: threshold 0.95, nprobe 8, cells from 50,000 rows on):
- one process: the file read into one (n, d) matrix, `near_duplicate_pairs` on it, BLAS
  and FAISS on every core (today's method, `run.executor: local`);
- dask: `tasks.dedup.near_pairs_sharded` with a LocalCluster of `--workers` processes x 1
  thread (equal cores); the driver holds row numbers, the training sample and the pairs.
Each side runs in its own process (peak RSS per side, `ru_maxrss`); worker memory is sampled
from /proc every 0.2 s: VmHWM counts the scratch file's pages a worker has mapped (shared page
cache, not its own), RssAnon its own memory. Writes
benchmarks/out/dedup_dask-<dim>-nprobe<k>.json/.md.

    nice -n 10 python -m benchmarks.dedup_dask --cpu-in-one-thread --sizes 200000

compares the CPU seconds of both paths on one thread in one process instead (their work,
whatever the machine's load); writes benchmarks/out/dedup_cpu-<n>x<dim>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpu_s() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_mb(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of a process, in MB (empty if it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    return {k: round(int(v.split()[0]) / 1024, 1) for k, v in
            (line.split(":", 1) for line in lines if ":" in line) if k in keys}


def write_vectors(path: Path, n: int, d: int, seed: int, threshold: float,
                  row_group: int) -> dict[str, Any]:
    """The planted data as a Parquet vector file; the planted rows beside it (.npy)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.dedup_scale import planted_duplicates
    from tasks.core.catalog import VECTOR_COLUMN
    from tasks.core.vectors import vectors_to_arrow

    x, planted, near_miss = planted_duplicates(n, d, seed, threshold)
    schema = pa.schema([(VECTOR_COLUMN, pa.list_(pa.float32(), d))])
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, n, row_group):
            block = vectors_to_arrow(x[start:start + row_group])
            writer.write_table(pa.table({VECTOR_COLUMN: block}, schema=schema))
    np.save(path.with_suffix(".planted.npy"), planted)
    return {"bytes": path.stat().st_size, "planted": len(planted), "near_miss": len(near_miss)}


def read_matrix(path: Path) -> np.ndarray:
    """The whole vector file as one (n, d) float32 matrix, row group by row group."""
    import pyarrow.parquet as pq

    from tasks.core.catalog import VECTOR_COLUMN
    from tasks.core.vectors import arrow_to_vectors

    with pq.ParquetFile(path) as pf:
        d = pf.schema_arrow.field(VECTOR_COLUMN).type.list_size
        x = np.empty((pf.metadata.num_rows, d), dtype="float32")
        start = 0
        for g in range(pf.metadata.num_row_groups):
            part = arrow_to_vectors(pf.read_row_group(g, [VECTOR_COLUMN]).column(VECTOR_COLUMN))
            x[start:start + len(part)] = part
            start += len(part)
    return x


def run_local(path: Path, n: int, cfg: Any) -> tuple[dict[str, Any], Any]:
    from tasks.dedup import dedup_rows
    from tasks.duplicates.pairs import near_duplicate_pairs

    started, cpu0 = time.perf_counter(), _cpu_s()
    x = read_matrix(path)
    read_s = time.perf_counter() - started
    keep, drops = dedup_rows(n, None, lambda rows: near_duplicate_pairs(x[rows], cfg), cfg)
    return {"read_s": round(read_s, 2), "cpu_s": round(_cpu_s() - cpu0, 1)}, (keep, drops,
                                                                              started)


class Sampler(threading.Thread):
    """Peak /proc memory figures of some processes, sampled until stopped."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak = pids, {p: {} for p in pids}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for pid in self.pids:
                for k, v in _proc_mb(pid).items():
                    self.peak[pid][k] = max(v, self.peak[pid].get(k, 0.0))


def run_dask(path: Path, n: int, cfg: Any, workers: int, where: Path
             ) -> tuple[dict[str, Any], Any]:
    from distributed import Client, LocalCluster

    from tasks.core.config import RunConfig
    from tasks.core.shards import Executor
    from tasks.dedup import dedup_rows, near_pairs_sharded

    started = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        start_s = time.perf_counter() - started
        pids = list(client.run(os.getpid).values())
        sampler = Sampler(pids)
        sampler.start()
        cpu0 = sum(client.run(_cpu_s).values()) + _cpu_s()
        started = time.perf_counter()
        near = near_pairs_sharded(Executor(client, 2 * workers), path, np.arange(n), cfg,
                                  RunConfig(), where)
        keep, drops = dedup_rows(n, None, near, cfg)
        wall = time.perf_counter() - started
        cpu = sum(client.run(_cpu_s).values()) + _cpu_s() - cpu0
        sampler.stop.set()
        maxrss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    info = {"cluster_start_s": round(start_s, 2), "cpu_s": round(cpu, 1), "workers": [
        {**sampler.peak[pid], "ru_maxrss_mb": round(maxrss[a] / 1024, 1)}
        for a, pid in zip(maxrss, pids, strict=True)]}
    return info, (keep, drops, time.perf_counter() - wall)


def side_main(args: argparse.Namespace) -> None:
    """One side in this process: its figures and its decisions (for the comparison)."""
    from tasks.core.config import DedupConfig

    path, n = Path(args.file), args.n
    cfg = DedupConfig(threshold=args.threshold, exact=False, nprobe=args.nprobe)
    if args.side == "local":
        info, (keep, drops, started) = run_local(path, n, cfg)
    else:
        info, (keep, drops, started) = run_dask(path, n, cfg, args.workers, path.parent)
    wall = time.perf_counter() - started
    planted = np.load(path.with_suffix(".planted.npy"))
    dropped = np.flatnonzero(~keep)
    hit = np.isin(dropped, planted)
    np.save(args.result + ".keep.npy", keep)
    np.save(args.result + ".drops.npy", np.array([(a, b, s) for a, b, s, _ in drops],
                                                 dtype=[("a", "i8"), ("b", "i8"), ("s", "f4")]))
    out = {"side": args.side, "n": n, "seconds": round(wall, 2), "peak_rss_mb": _rss_mb(),
           "driver_now": _proc_mb(os.getpid()), "dropped": len(dropped),
           "planted_recall": round(float(hit.sum()) / max(1, len(planted)), 5),
           "false_drops": int((~hit).sum()), **info}
    Path(args.result + ".json").write_text(json.dumps(out))


def cpu_in_one_thread(path: Path, n: int, nprobe: int, threshold: float, repeats: int = 2
                      ) -> dict[str, Any]:
    """CPU seconds of today's method and of the sharded path (on the in-process executor),
    both on one thread in this process: their work, whatever the machine's load."""
    import tempfile

    import faiss
    from threadpoolctl import threadpool_limits

    from tasks.core.config import DedupConfig
    from tasks.core.shards import Executor
    from tasks.dedup import near_pairs_sharded
    from tasks.duplicates.pairs import near_duplicate_pairs

    cfg = DedupConfig(threshold=threshold, exact=False, nprobe=nprobe)
    faiss.omp_set_num_threads(1)
    out: dict[str, Any] = {"n": n, "one_process_cpu_s": [], "sharded_cpu_s": []}
    with threadpool_limits(1):
        for _ in range(repeats):
            cpu = _cpu_s()
            a = near_duplicate_pairs(read_matrix(path), cfg)
            out["one_process_cpu_s"].append(round(_cpu_s() - cpu, 2))
            cpu = _cpu_s()
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                near = near_pairs_sharded(Executor(), path, np.arange(n), cfg, Path(tmp))
                b = near(np.arange(n))
            out["sharded_cpu_s"].append(round(_cpu_s() - cpu, 2))
    out["same_pairs"] = all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    return out


def run_side(side: str, n: int, file: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One side in a child process (its own peak RSS); its result or how it failed."""
    result = str(args.out / f".dedup_dask-{side}-{n}-{args.nprobe}")
    cmd = [sys.executable, "-m", "benchmarks.dedup_dask", "--side", side, "--n", str(n),
           "--file", str(file), "--threshold", str(args.threshold), "--workers",
           str(args.workers), "--nprobe", str(args.nprobe), "--result", result]
    proc = subprocess.run(cmd, cwd=REPO, check=False)
    if proc.returncode != 0 or not Path(result + ".json").exists():
        return {"side": side, "n": n, "failure": f"exit code {proc.returncode}"}
    return json.loads(Path(result + ".json").read_text())


def same_decisions(out: Path, n: int, nprobe: int) -> dict[str, Any]:
    """Whether both sides kept the same rows and wrote the same audit (bytes)."""
    a, b = (out / f".dedup_dask-{s}-{n}-{nprobe}" for s in ("local", "dask"))
    keep_a, keep_b = np.load(f"{a}.keep.npy"), np.load(f"{b}.keep.npy")
    drops_a, drops_b = np.load(f"{a}.drops.npy"), np.load(f"{b}.drops.npy")
    return {"same_keep": bool(np.array_equal(keep_a, keep_b)),
            "keep_disagreements": int((keep_a != keep_b).sum()),
            "same_audit_bytes": drops_a.tobytes() == drops_b.tobytes()}


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [f"dedup near pass, {cfg['dim']}-d, nprobe {cfg.get('nprobe', 8)}, one process vs "
             "Dask LocalCluster "
             f"({cfg['workers']} workers x 1 thread); {report['cpu']}; load average "
             f"{report['load_avg_start']} at start", "",
             "| n | one process s | dask s | dask / one | CPU s one / dask (all processes) | "
             "one process peak RSS MB | "
             "dask driver peak RSS MB | worker peak RssAnon MB | worker VmHWM MB (incl. "
             "mapped scratch) | identical keep + audit | planted recall |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["sizes"]:
        loc, dsk = row["local"], row["dask"]
        if "failure" in loc or "failure" in dsk:
            lines.append(f"| {row['n']:,} | {loc.get('failure', loc.get('seconds'))} | "
                         f"{dsk.get('failure', dsk.get('seconds'))} | | | | | | | | |")
            continue
        anon = max(w.get("RssAnon", 0) for w in dsk["workers"])
        hwm = max(w.get("VmHWM", 0) for w in dsk["workers"])
        same = row["agreement"]["same_keep"] and row["agreement"]["same_audit_bytes"]
        lines.append(f"| {row['n']:,} | {loc['seconds']} | {dsk['seconds']} | "
                     f"{dsk['seconds'] / loc['seconds']:.2f}x | {loc.get('cpu_s')} / "
                     f"{dsk.get('cpu_s')} | {loc['peak_rss_mb']:,} | "
                     f"{dsk['peak_rss_mb']:,} | {anon:,} | {hwm:,} | {same} | "
                     f"{loc['planted_recall']} / {dsk['planted_recall']} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,3000000,5000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nprobe", type=int, default=8,
                        help="dedup.nprobe (cells each vector searches; the default is 8)")
    parser.add_argument("--row-group", type=int, default=8192,
                        help="rows per Parquet row group (reduce writes ~4 MB groups)")
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "out" / "data",
                        help="where the vector files are written (kept for reruns)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--side", choices=["local", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu-in-one-thread", action="store_true",
                        help="only compare the CPU seconds of both paths on one thread, in "
                        "this process, at the first size")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.write:
        info = write_vectors(Path(args.file), args.n, args.dim, args.seed, args.threshold,
                             args.row_group)
        Path(args.result).write_text(json.dumps(info))
        return
    if args.side:
        side_main(args)
        return
    args.data.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cpu_in_one_thread:
        n = int(args.sizes.split(",")[0])
        file = args.data / f"vectors-{n}x{args.dim}-{args.seed}.parquet"
        if not file.exists():
            write_vectors(file, n, args.dim, args.seed, args.threshold, args.row_group)
        result = cpu_in_one_thread(file, n, args.nprobe, args.threshold)
        (args.out / f"dedup_cpu-{n}x{args.dim}.json").write_text(json.dumps(result))
        print(json.dumps(result))
        return
    report: dict[str, Any] = {"cpu": cpu_label(), "load_avg_start": os.getloadavg(),
                              "config": {k: v for k, v in vars(args).items()
                                         if k in ("dim", "seed", "threshold", "workers",
                                                  "row_group", "nprobe")}, "sizes": []}
    for n in (int(s) for s in args.sizes.split(",") if s):
        file = args.data / f"vectors-{n}x{args.dim}-{args.seed}.parquet"
        if not file.exists():  # in a child: the generator's n x d matrix is not ours
            subprocess.run([sys.executable, "-m", "benchmarks.dedup_dask", "--write", "--n",
                            str(n), "--dim", str(args.dim), "--seed", str(args.seed),
                            "--threshold", str(args.threshold), "--row-group",
                            str(args.row_group), "--file", str(file), "--result",
                            str(file.with_suffix(".json"))], cwd=REPO, check=True)
        row = {"n": n, "file_bytes": file.stat().st_size, "load_avg": os.getloadavg(),
               "local": run_side("local", n, file, args),
               "dask": run_side("dask", n, file, args)}
        if "failure" not in row["local"] and "failure" not in row["dask"]:
            row["agreement"] = same_decisions(args.out, n, args.nprobe)
        report["sizes"].append(row)
        print(json.dumps(row), flush=True)
        save(args.out, f"dedup_dask-{args.dim}-nprobe{args.nprobe}", report, markdown(report))
    report["load_avg_end"] = os.getloadavg()
    save(args.out, f"dedup_dask-{args.dim}-nprobe{args.nprobe}", report, markdown(report))


if __name__ == "__main__":
    main()
