"""Network bytes of the Dask driver on a dedup (near pass by k-means cell) + on-disk index
run: shard bytes sent through the driver vs workers reading and writing shards by name on
shared storage (a folder, or S3), side by side, on the same vectors in one run.

    nice -n 10 python -m benchmarks.driver_bytes --n 200000 --dim 128

Counting: every send and receive on a socket of this process (the driver) is counted by the
peer it talks to (`SocketBytes` wraps `socket.socket`'s send/recv methods, which Dask's
tornado comms and boto3's urllib3 both call): the Dask scheduler and workers, or S3 (a
moto server on loopback, the S3-speaking server the tests run). The scheduler runs in a
process of its own (`dask scheduler`, `dask worker --nworkers W --nthreads 1`): in a
LocalCluster it lives in the driver process, which would count its relaying too.

Sides (each calls the stage code the pipeline calls, on `--n` planted vectors of
`benchmarks.dedup_dask`):
- dedup exact pass: the chunk texts shipped to the workers in shards (the stage until now)
  vs read by path on the workers (`tasks.duplicates.sharded.digests_by_path`), on `--n`
  seeded texts of `--text-chars` characters;
- dedup near pass (`tasks.dedup.near_pairs_sharded`): scratch in a folder the workers share
  (the vector file read in place) vs `run.dask.scratch` on S3 (uploaded once, read by range);
- on-disk index fill of an IVF index trained once: vectors sent to the workers as arrays
  (`array_shards`: the index stage until now), read by path from the shared folder
  (`file_shards`), put on S3 by the driver (`put_shards`); lists merged on a worker;
- for reference, IVF in memory on Dask (`fill_on_cluster`: shards out, filled lists back).
Outputs are compared across sides: dedup pairs, and the lists file's sha256.
Writes benchmarks/out/driver_bytes-<n>x<dim>.json/.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.dedup_dask import REPO, read_matrix, write_vectors
from benchmarks.report import cpu_label, save

BIN = Path(sys.executable).parent
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIABENCH",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


class SocketBytes:
    """Bytes this process sends and receives on its sockets, by peer: `s3` (the port
    `s3_port`) or `dask` (any other TCP peer: scheduler and workers)."""

    METHODS = ("send", "sendall", "recv", "recv_into")

    def __init__(self, s3_port: int) -> None:
        self.s3_port, self.lock = s3_port, threading.Lock()
        self.counts: dict[str, int] = {}
        self.originals = {m: getattr(socket.socket, m) for m in self.METHODS}

    def reset(self) -> dict[str, int]:
        with self.lock:
            out, self.counts = self.counts, {}
        return out

    def _add(self, sock: socket.socket, way: str, n: int) -> None:
        try:
            port = sock.getpeername()[1]
        except (OSError, IndexError, TypeError):
            port = None
        key = f"{'s3' if port == self.s3_port else 'dask'}_{way}"
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def _wrap(self, name: str) -> Callable[..., Any]:
        original, counter = self.originals[name], self

        def method(sock: socket.socket, data: Any, *args: Any) -> Any:
            result = original(sock, data, *args)
            if name == "sendall":
                counter._add(sock, "sent", memoryview(data).nbytes)
            elif name == "send":
                counter._add(sock, "sent", result)
            else:
                counter._add(sock, "received", result if name == "recv_into" else len(result))
            return result

        return method

    def install(self) -> None:
        for name in self.METHODS:
            setattr(socket.socket, name, self._wrap(name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError as err:
            if getattr(err, "code", None):
                return
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def services(workers: int, log_dir: Path) -> Iterator[tuple[str, str]]:
    """A moto S3 server, a Dask scheduler and `workers` one-thread workers, each a process
    of its own; yields (S3 endpoint, scheduler address)."""
    s3_port, sched_port = _free_port(), _free_port()
    env = dict(os.environ, **S3_ENV)
    logs = [open(log_dir / f"{n}.log", "w") for n in ("moto", "scheduler", "workers")]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
            env=env,
        )
    ]
    address = f"tcp://127.0.0.1:{sched_port}"
    procs.append(
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(sched_port),
                "--no-dashboard",
            ],
            stdout=logs[1],
            stderr=subprocess.STDOUT,
            env=env,
        )
    )
    procs.append(
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--nworkers",
                str(workers),
                "--nthreads",
                "1",
                "--no-dashboard",
                "--memory-limit",
                "0",
            ],
            cwd=REPO,
            stdout=logs[2],
            stderr=subprocess.STDOUT,
            env=env,
        )
    )
    try:
        _wait_http(f"http://127.0.0.1:{s3_port}")
        yield f"http://127.0.0.1:{s3_port}", address
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=60)
        for log in logs:
            log.close()


def run_cfg(address: str, scratch: str | None, endpoint: str) -> Any:
    from tasks.core.config import RunConfig

    return RunConfig.model_validate(
        {
            "executor": "dask",
            "dask": {"address": address, "scratch": scratch, "s3_endpoint_url": endpoint},
        }
    )


def measured(counter: SocketBytes, step: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    counter.reset()
    started = time.perf_counter()
    result = step()
    return {"seconds": round(time.perf_counter() - started, 2), **counter.reset()}, result


def dedup_side(file: Path, n: int, cfg: Any, run: Any, where: Path) -> Any:
    from tasks.core.shards import open_executor
    from tasks.dedup import near_pairs_sharded

    with open_executor(run) as executor:
        return near_pairs_sharded(executor, file, np.arange(n), cfg, run, where)(np.arange(n))


def write_texts(path: Path, n: int, chars: int, seed: int) -> None:
    """`n` chunk-like texts of about `chars` characters (seeded words), 8,192 a row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(5000)])
    per = max(1, chars // 6)
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
        for start in range(0, n, 8192):
            rows = min(8192, n - start)
            picks = words[rng.integers(0, len(words), (rows, per))]
            writer.write_table(pa.table({"text": [" ".join(r) for r in picks]}))


def exact_side(how: str, path: Path, run: Any) -> np.ndarray:
    """Text digests on the cluster: texts shipped in shards (the stage until now) or read
    by path on the workers (`digests_by_path`)."""
    import pyarrow.parquet as pq

    from tasks.core.shards import map_ordered, open_executor
    from tasks.duplicates.pairs import shard_digests
    from tasks.duplicates.sharded import digests_by_path

    with open_executor(run) as executor:
        if how == "path":
            return digests_by_path(executor, path, run.dask.shard_rows)
        with pq.ParquetFile(path) as pf:
            shards = pf.iter_batches(run.dask.shard_rows, columns=["text"])
            parts = map_ordered(executor, shard_digests, (pa_table(b) for b in shards))
            return np.concatenate([np.zeros(0, "S32"), *parts])


def pa_table(batch: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_batches([batch])


def index_side(
    how: str, rows: tuple[np.ndarray, np.ndarray, Path], trained: Any, run: Any, folder: Path
) -> str:
    """Fill `trained` on the cluster `how` says; the lists file's sha256."""
    import faiss

    from tasks.core.shards import open_executor
    from tasks.indexing.build import fill_lists_on_disk, fill_on_cluster
    from tasks.indexing.ondisk import ONDISK_SHARD_ROWS, array_shards, build_on_disk
    from tasks.storage.scratch import open_scratch

    x, ids, source = rows
    lists = folder / f".{how}.lists"
    if how == "in-memory":
        with open_executor(run) as executor:
            index = fill_on_cluster(executor, faiss.clone_index(trained), x, ids)
        return hashlib.sha256(faiss.serialize_index(index).tobytes()).hexdigest()
    if how == "arrays":  # the index stage's on-disk fill before shards went by name
        lists.mkdir()
        with (
            open_executor(run) as executor,
            open_scratch(executor, run.dask, folder, "index") as store,
        ):
            index = build_on_disk(
                executor,
                faiss.clone_index(trained),
                array_shards(x, ids, ONDISK_SHARD_ROWS),
                lists / "index.ivfdata",
                store,
            )
    else:  # the index stage's fill now: by path in a shared folder, or through S3
        index = fill_lists_on_disk(run, faiss.clone_index(trained), rows, lists)
    del index
    digest = hashlib.sha256((lists / "index.ivfdata").read_bytes()).hexdigest()
    shutil.rmtree(lists)
    return digest


def run(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from tasks.core.config import DedupConfig
    from tasks.core.vectors import sample_rows

    file = args.data / f"vectors-{args.n}x{args.dim}-{args.seed}.parquet"
    if not file.exists():
        args.data.mkdir(parents=True, exist_ok=True)
        write_vectors(file, args.n, args.dim, args.seed, 0.95, 8192)
    work = Path(tempfile.mkdtemp(prefix="driver-bytes-", dir=args.data))
    report: dict[str, Any] = {
        "cpu": cpu_label(),
        "load_avg_start": os.getloadavg(),
        "n": args.n,
        "dim": args.dim,
        "workers": args.workers,
        "vector_file_bytes": file.stat().st_size,
        "matrix_bytes": args.n * args.dim * 4,
        "dedup": {},
        "index": {},
    }
    os.environ.update(S3_ENV)
    try:
        with services(args.workers, work) as (endpoint, address):
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="scratch")
            counter = SocketBytes(int(endpoint.rsplit(":", 1)[1]))
            counter.install()
            folder, s3 = (
                run_cfg(address, None, endpoint),
                run_cfg(address, "s3://scratch/bench", endpoint),
            )
            texts = work / "chunks.parquet"
            write_texts(texts, args.n, args.text_chars, args.seed)
            report["texts_file_bytes"] = texts.stat().st_size
            keys = {}
            for name in ("texts", "path"):
                report["dedup"][f"exact-{name}"], keys[name] = measured(
                    counter, lambda name=name: exact_side(name, texts, folder)
                )
            report["dedup"]["same_digests"] = bool(np.array_equal(keys["texts"], keys["path"]))
            cfg = DedupConfig(threshold=0.95, nprobe=args.nprobe, exact_search_below=1)
            pairs = {}
            for name, rc in (("folder", folder), ("s3", s3)):
                report["dedup"][name], pairs[name] = measured(
                    counter, lambda rc=rc: dedup_side(file, args.n, cfg, rc, work)
                )
            report["dedup"]["same_pairs"] = all(
                np.array_equal(a, b) for a, b in zip(pairs["folder"], pairs["s3"], strict=True)
            )
            report["dedup"]["pairs"] = len(pairs["folder"][0])
            x = read_matrix(file)
            trained = faiss.index_factory(args.dim, args.factory, faiss.METRIC_INNER_PRODUCT)
            trained.train(x[sample_rows(len(x), args.train_sample, args.seed)])
            rows = (x, np.arange(len(x), dtype="int64"), file)
            digests = {}
            for name, rc in (
                ("arrays", folder),
                ("path", folder),
                ("s3", s3),
                ("in-memory", folder),
            ):
                report["index"][name], digests[name] = measured(
                    counter, lambda name=name, rc=rc: index_side(name, rows, trained, rc, work)
                )
            report["index"]["same_lists"] = len({digests[k] for k in ("arrays", "path", "s3")}) == 1
            report["index"]["lists_bytes"] = args.n * (args.dim * 4 + 8)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _mb(row: dict[str, Any], key: str) -> str:
    return f"{row.get(key, 0) / 1e6:,.1f}"


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Driver network bytes: {r['n']:,} x {r['dim']} vectors, {r['workers']} workers",
        "",
        f"{r['cpu']}; load average at start {r['load_avg_start'][0]:.1f}. Vector "
        f"file {r['vector_file_bytes'] / 1e6:,.1f} MB, matrix {r['matrix_bytes'] / 1e6:,.1f}"
        " MB.",
        "",
        "| step | shards move | driver <-> Dask sent / received MB | "
        "driver <-> S3 sent / received MB | wall s |",
        "|---|---|---|---|---|",
    ]
    what = {
        ("dedup", "exact-texts"): "exact pass: texts through the driver (before)",
        ("dedup", "exact-path"): "exact pass: texts read by path",
        ("dedup", "folder"): "near pass: by path, folder under paths.data",
        ("dedup", "s3"): "near pass: by name, run.dask.scratch on S3",
        ("index", "arrays"): "as arrays through the driver (before)",
        ("index", "path"): "by path, folder under paths.data",
        ("index", "s3"): "by name, run.dask.scratch on S3",
        ("index", "in-memory"): "IVF in memory on Dask (reference)",
    }
    for (step, side), label in what.items():
        row = r[step][side]
        lines.append(
            f"| {step} | {label} | {_mb(row, 'dask_sent')} / "
            f"{_mb(row, 'dask_received')} | {_mb(row, 's3_sent')} / "
            f"{_mb(row, 's3_received')} | {row['seconds']} |"
        )
    lines += [
        "",
        f"Same dedup pairs on both sides: {r['dedup']['same_pairs']} "
        f"({r['dedup']['pairs']:,} pairs); same lists file bytes: "
        f"{r['index']['same_lists']}; same text digests: {r['dedup']['same_digests']} "
        f"(texts file {r['texts_file_bytes'] / 1e6:,.1f} MB).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nprobe", type=int, default=8, help="dedup.nprobe")
    parser.add_argument("--factory", default="IVF1024,Flat")
    parser.add_argument("--train-sample", type=int, default=40_000)
    parser.add_argument("--text-chars", type=int, default=600, help="characters a chunk text")
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "out" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    report = run(args)
    save(args.out, f"driver_bytes-{args.n}x{args.dim}", report, markdown(report))


if __name__ == "__main__":
    main()
